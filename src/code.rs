//! Code blocks, their languages, the `# filename:` directive, and markdown extraction.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::workspace::workspace_relative;

/// A language dockexec can run.
///
/// Parsed case-insensitively from the usual fence tags:
///
/// | tags | runs |
/// |---|---|
/// | `python`, `py`, `python3` | `python3` (or `python` when the image has no `python3`), unbuffered |
/// | `sh`, `shell` | `sh` |
/// | `bash` | `bash`; an image without bash gives exit code 127 and says so on stderr |
/// | `pwsh`, `powershell`, `ps1` | `pwsh`; likewise 127 when the image has none |
///
/// ```
/// use dockexec::Language;
/// assert_eq!("PY".parse::<Language>().unwrap(), Language::Python);
/// assert!("cobol".parse::<Language>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Language {
    /// Python 3.
    Python,
    /// POSIX shell.
    Shell,
    /// Bash.
    Bash,
    /// PowerShell (`pwsh`).
    PowerShell,
}

impl Language {
    /// Every language, in a stable order.
    pub const ALL: [Language; 4] = [
        Language::Python,
        Language::Shell,
        Language::Bash,
        Language::PowerShell,
    ];

    /// The canonical tag: `python`, `sh`, `bash` or `pwsh`.
    pub fn name(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::Shell => "sh",
            Language::Bash => "bash",
            Language::PowerShell => "pwsh",
        }
    }

    /// The extension of generated code files.
    pub fn extension(self) -> &'static str {
        match self {
            Language::Python => "py",
            Language::Shell | Language::Bash => "sh",
            Language::PowerShell => "ps1",
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Language {
    type Err = Error;

    /// # Errors
    /// [`Error::InvalidInput`] naming the tag and the supported ones.
    fn from_str(s: &str) -> Result<Language> {
        match s.trim().to_ascii_lowercase().as_str() {
            "python" | "py" | "python3" => Ok(Language::Python),
            "sh" | "shell" => Ok(Language::Shell),
            "bash" => Ok(Language::Bash),
            "pwsh" | "powershell" | "ps1" => Ok(Language::PowerShell),
            _ => Err(Error::invalid(format!(
                "unknown language {s:?}; supported: python (py, python3), sh (shell), bash, \
                 pwsh (powershell, ps1)"
            ))),
        }
    }
}

impl From<Language> for String {
    fn from(l: Language) -> String {
        l.name().to_string()
    }
}

/// A block of code and the language it is written in.
///
/// The language is kept as the tag it was given (`"py"`, `"Bash"`, even `"json"`): it is
/// checked when the block runs, so a markdown reply can be extracted whole and its unknown
/// blocks reported, not lost.
///
/// ```
/// use dockexec::{CodeBlock, Language};
/// let a = CodeBlock::python("print('hi')");
/// let b = CodeBlock::new(Language::Shell, "echo hi");
/// let c = CodeBlock::new("BASH", "echo hi");
/// assert_eq!(c.language().unwrap(), Language::Bash);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeBlock {
    language: String,
    code: String,
}

impl CodeBlock {
    /// A block in `language` (a [`Language`] or any tag).
    pub fn new(language: impl Into<String>, code: impl Into<String>) -> CodeBlock {
        CodeBlock {
            language: language.into(),
            code: code.into(),
        }
    }

    /// A Python block.
    pub fn python(code: impl Into<String>) -> CodeBlock {
        CodeBlock::new(Language::Python, code)
    }

    /// A POSIX shell block.
    pub fn sh(code: impl Into<String>) -> CodeBlock {
        CodeBlock::new(Language::Shell, code)
    }

    /// A bash block.
    pub fn bash(code: impl Into<String>) -> CodeBlock {
        CodeBlock::new(Language::Bash, code)
    }

    /// The language tag as given.
    pub fn language_tag(&self) -> &str {
        &self.language
    }

    /// The parsed language.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a tag dockexec does not know.
    pub fn language(&self) -> Result<Language> {
        self.language.parse()
    }

    /// The code.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The file name requested by the block's first line, if any.
    ///
    /// `# filename: path/x.py`, `// filename: x.py` and the short `# x.py` are recognised
    /// (the short form only for a single word with an extension). The path is checked to stay
    /// inside the workspace.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] "filename is not in the workspace" for an absolute path or one
    /// whose `..` climbs out.
    pub fn filename(&self) -> Result<Option<PathBuf>> {
        match filename_directive(&self.code) {
            None => Ok(None),
            Some(name) => workspace_relative(name).map(Some),
        }
    }
}

fn filename_directive(code: &str) -> Option<&str> {
    let first = code.lines().next()?.trim();
    let rest = first
        .strip_prefix('#')
        .or_else(|| first.strip_prefix("//"))?
        .trim();
    if let Some(name) = rest.strip_prefix("filename:") {
        let name = name.trim();
        return (!name.is_empty()).then_some(name);
    }
    // The short form `# x.py`: one word that looks like a file name, so that an ordinary
    // comment (`# compute the sum`) is not taken for one.
    let looks_like_file = !rest.is_empty()
        && !rest.contains(char::is_whitespace)
        && rest.rsplit_once('.').is_some_and(|(stem, ext)| {
            !stem.is_empty() && !ext.is_empty() && ext.chars().all(|c| c.is_ascii_alphanumeric())
        })
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c));
    looks_like_file.then_some(rest)
}

/// Extracts the fenced code blocks of a markdown document (an LLM's reply).
///
/// Fences are three or more backticks or tildes; the info string's first word is the
/// language. An untagged block's language is guessed by [`guess_language`]. Blocks whose
/// language is unknown are kept: running one gives [`Error::InvalidInput`].
///
/// ```
/// let md = "Try this:\n\n```python\nprint(1)\n```\n\nand\n\n```\necho hi\n```\n";
/// let blocks = dockexec::extract_code_blocks(md);
/// assert_eq!(blocks.len(), 2);
/// assert_eq!(blocks[0].language_tag(), "python");
/// assert_eq!(blocks[1].language_tag(), "sh");
/// ```
pub fn extract_code_blocks(markdown: &str) -> Vec<CodeBlock> {
    let mut blocks = Vec::new();
    let mut lines = markdown.lines();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if indent > 3 {
            continue;
        }
        let Some(fence_char) = trimmed.chars().next().filter(|c| *c == '`' || *c == '~') else {
            continue;
        };
        let fence_len = trimmed.chars().take_while(|c| *c == fence_char).count();
        if fence_len < 3 {
            continue;
        }
        let info = trimmed[fence_len..].trim();
        if fence_char == '`' && info.contains('`') {
            continue;
        }
        let tag = info
            .split(|c: char| c.is_whitespace() || c == '{' || c == ',')
            .next()
            .unwrap_or("");
        let mut body = String::new();
        for l in lines.by_ref() {
            let t = l.trim_start();
            let close = t.chars().take_while(|c| *c == fence_char).count();
            if close >= fence_len && t[close..].trim().is_empty() && l.len() - t.len() <= 3 {
                break;
            }
            body.push_str(l);
            body.push('\n');
        }
        let language = if tag.is_empty() {
            guess_language(&body).name().to_string()
        } else {
            tag.to_string()
        };
        blocks.push(CodeBlock::new(language, body));
    }
    blocks
}

/// Guesses an untagged block's language.
///
/// In order: a `#!` line naming python, bash or sh decides; then Python is chosen when a line
/// starts with `import `, `from … import`, `def `, `class `, `print(`, or `if __name__`; anything
/// else is shell (`sh`), the usual content of an untagged block in an LLM reply.
///
/// ```
/// use dockexec::{guess_language, Language};
/// assert_eq!(guess_language("import os\nprint(os.getcwd())"), Language::Python);
/// assert_eq!(guess_language("ls -la"), Language::Shell);
/// assert_eq!(guess_language("#!/bin/bash\necho $BASH_VERSION"), Language::Bash);
/// ```
pub fn guess_language(code: &str) -> Language {
    if let Some(shebang) = code.lines().next().and_then(|l| l.strip_prefix("#!")) {
        if shebang.contains("python") {
            return Language::Python;
        }
        if shebang.contains("bash") {
            return Language::Bash;
        }
        if shebang.contains("pwsh") {
            return Language::PowerShell;
        }
        if shebang.trim_end().ends_with("sh") {
            return Language::Shell;
        }
    }
    let pythonic = code.lines().any(|l| {
        let l = l.trim_start();
        l.starts_with("import ")
            || (l.starts_with("from ") && l.contains(" import "))
            || l.starts_with("def ")
            || l.starts_with("class ")
            || l.starts_with("print(")
            || l.starts_with("if __name__")
    });
    if pythonic {
        Language::Python
    } else {
        Language::Shell
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_parse_case_insensitively() {
        for (tag, lang) in [
            ("python", Language::Python),
            ("Py", Language::Python),
            ("PYTHON3", Language::Python),
            ("sh", Language::Shell),
            ("Shell", Language::Shell),
            ("bash", Language::Bash),
            ("pwsh", Language::PowerShell),
            ("PowerShell", Language::PowerShell),
            ("ps1", Language::PowerShell),
        ] {
            assert_eq!(tag.parse::<Language>().unwrap(), lang, "{tag}");
        }
        let err = "rust".parse::<Language>().unwrap_err().to_string();
        assert!(err.contains("unknown language \"rust\""), "{err}");
        for l in Language::ALL {
            assert_eq!(l.name().parse::<Language>().unwrap(), l);
        }
    }

    #[test]
    fn filename_directives() {
        let f = |code: &str| CodeBlock::python(code).filename();
        assert_eq!(
            f("# filename: a/b.py\nprint(1)").unwrap(),
            Some("a/b.py".into())
        );
        assert_eq!(f("# test.py\nprint(1)").unwrap(), Some("test.py".into()));
        assert_eq!(f("// filename: x.sh\n").unwrap(), Some("x.sh".into()));
        assert_eq!(f("# compute the sum\nprint(1)").unwrap(), None);
        assert_eq!(f("# see file.py for details").unwrap(), None);
        assert_eq!(f("print(1)").unwrap(), None);
        assert_eq!(f("").unwrap(), None);
        assert_eq!(f("# filename: ./a/../b.py").unwrap(), Some("b.py".into()));
    }

    #[test]
    fn filenames_outside_the_workspace_are_refused() {
        for bad in [
            "/etc/passwd",
            "../x.py",
            "a/../../x.py",
            "filename: /tmp/x.py",
        ] {
            let code = format!("# filename: {}\n", bad.trim_start_matches("filename: "));
            let err = CodeBlock::python(code).filename().unwrap_err().to_string();
            assert!(
                err.contains("filename is not in the workspace"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn markdown_extraction() {
        let md = "Intro\n```python\nprint('a')\n```\ntext\n~~~bash\necho b\n~~~\n\
                  ````\n```\nnested\n```\n````\n```json {x}\n{}\n```\n``not a fence``\n";
        let b = extract_code_blocks(md);
        assert_eq!(b.len(), 4, "{b:?}");
        assert_eq!(
            (b[0].language_tag(), b[0].code()),
            ("python", "print('a')\n")
        );
        assert_eq!((b[1].language_tag(), b[1].code()), ("bash", "echo b\n"));
        assert_eq!(b[2].code(), "```\nnested\n```\n");
        assert_eq!(b[3].language_tag(), "json");
        assert!(b[3].language().is_err());
        // An unclosed fence runs to the end of the document.
        let b = extract_code_blocks("```sh\necho x");
        assert_eq!(b[0].code(), "echo x\n");
        assert!(extract_code_blocks("no code here").is_empty());
    }

    #[test]
    fn guessing() {
        assert_eq!(guess_language("from x import y"), Language::Python);
        assert_eq!(
            guess_language("#!/usr/bin/env python3\nx=1"),
            Language::Python
        );
        assert_eq!(guess_language("#!/bin/sh\necho"), Language::Shell);
        assert_eq!(guess_language("echo hi"), Language::Shell);
        assert_eq!(guess_language(""), Language::Shell);
    }
}
