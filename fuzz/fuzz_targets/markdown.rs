//! Markdown code-block extraction, the language guess and the `# filename:` directive
//! (`src/code.rs`).
//!
//! Invariants: no panic; every block's tag is non-empty and one word; every body is empty or
//! ends in a newline, and the bodies together are no longer than the document; an untagged
//! block's guessed tag is `guess_language` of its body; a requested file name is relative, has
//! no `..`, is not in `.dockexec`, and is exactly what `workspace_relative` makes of it.
#![no_main]

use std::path::{Component, Path};

use dockexec::__fuzz::{STATE_DIR, workspace_relative};
use dockexec::{CodeBlock, Language, extract_code_blocks, guess_language};
use libfuzzer_sys::fuzz_target;

fn check_filename(block: &CodeBlock) {
    let Ok(Some(path)) = block.filename() else {
        return;
    };
    check_relative(&path);
}

fn check_relative(path: &Path) {
    assert!(path.is_relative(), "{path:?}");
    assert!(!path.as_os_str().is_empty());
    assert!(
        path.components().all(|c| matches!(c, Component::Normal(_))),
        "{path:?} has a non-normal component"
    );
    assert!(!path.starts_with(STATE_DIR), "{path:?} is in the state dir");
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let blocks = extract_code_blocks(&text);
    let total: usize = blocks.iter().map(|b| b.code().len()).sum();
    assert!(
        total <= text.len() + 1,
        "bodies ({total}) longer than the document"
    );
    for b in &blocks {
        let tag = b.language_tag();
        assert!(!tag.is_empty(), "empty tag for {b:?}");
        assert!(!tag.contains(char::is_whitespace), "tag {tag:?}");
        assert!(b.code().is_empty() || b.code().ends_with('\n'), "{b:?}");
        if let Ok(lang) = b.language() {
            assert_eq!(lang.name().parse::<Language>().unwrap(), lang);
        }
        check_filename(b);
    }

    // A block written out between fences comes back as it was, when nothing in it closes
    // the fence early: the first line (if one word) is the tag, the rest the code.
    if let Some((tag, code)) = text.split_once('\n') {
        let tag_ok =
            !tag.is_empty() && !tag.contains(|c: char| c.is_whitespace() || "`{,~".contains(c));
        let code_ok = !code.contains('\r')
            && (code.is_empty() || code.ends_with('\n'))
            && code.lines().all(|l| !l.trim_start().starts_with("```"));
        if tag_ok && code_ok {
            let md = format!("Some text.\n\n```{tag}\n{code}```\n\nMore text.\n");
            let got = extract_code_blocks(&md);
            assert_eq!(got, vec![CodeBlock::new(tag, code)], "{md:?}");
        }
    }

    // The whole input as a block: the guess, the language tag, the directive.
    let guess = guess_language(&text);
    assert!(Language::ALL.contains(&guess));
    let _ = text.parse::<Language>();
    let block = CodeBlock::new(guess, text.as_ref());
    check_filename(&block);

    // An explicit `# filename:` line names exactly what workspace_relative makes of it.
    if let Some(line) = text.lines().next() {
        let name = line.trim();
        let block = CodeBlock::python(format!("# filename: {line}\nprint(1)\n"));
        match (block.filename(), name.is_empty()) {
            (Ok(None), true) => {}
            (got, false) => {
                let want = workspace_relative(name);
                match (&got, &want) {
                    (Ok(Some(g)), Ok(w)) => {
                        assert_eq!(g, w);
                        check_relative(g);
                    }
                    (Err(g), Err(w)) => assert_eq!(g.to_string(), w.to_string()),
                    _ => panic!("{name:?}: directive gives {got:?}, workspace_relative {want:?}"),
                }
            }
            (got, true) => panic!("empty name gave {got:?}"),
        }
    }
});
