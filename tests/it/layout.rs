//! The crate's layout, checked: no import circle among `src/` files but the two the design
//! allows (`executor` ↔ `executor/builder` and `executor` ↔ `session`).
//!
//! Every reference counts: `use` lines and paths written inline (`crate::host::ids()`,
//! `super::Inner`), a name re-exported at the root (`crate::Strategy`) counting as its
//! defining module. Needs no daemon.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The circles the design allows: the executor owns its builder and sessions, which build or
/// borrow it.
const ALLOWED: [(&str, &str); 2] = [("executor", "executor::builder"), ("executor", "session")];

/// Every `.rs` file under `src/`, as its module path (`executor::builder`, `lib` for the
/// root), except the CLI (`main`), a crate of its own.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    fn walk(src: &Path, dir: &Path, out: &mut BTreeMap<String, PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(src, &p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(src).unwrap().with_extension("");
                let mut parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if parts.last().is_some_and(|l| l == "mod") {
                    parts.pop();
                }
                let name = parts.join("::");
                if name != "main" {
                    out.insert(name, p);
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(src, src, &mut out);
    out
}

/// The text with comments and string literals blanked, so that only code is read.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            'r' if chars.peek() == Some(&'#') || chars.peek() == Some(&'"') => {
                // A raw string: r"…" or r#"…"#.
                let mut hashes = 0;
                while chars.peek() == Some(&'#') {
                    chars.next();
                    hashes += 1;
                }
                if chars.peek() != Some(&'"') {
                    out.push('r');
                    continue;
                }
                chars.next();
                let close: String = std::iter::once('"')
                    .chain(std::iter::repeat_n('#', hashes))
                    .collect();
                let mut seen = String::new();
                for c in chars.by_ref() {
                    seen.push(c);
                    if seen.ends_with(&close) {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    match (escaped, c) {
                        (false, '\\') => escaped = true,
                        (false, '"') => break,
                        _ => escaped = false,
                    }
                }
                out.push_str("\"\"");
            }
            _ => out.push(c),
        }
    }
    out
}

/// The code without its `#[cfg(test)]` modules: the layout is the library's, and a unit test
/// may reach anywhere.
fn without_test_modules(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(i) = rest.find("#[cfg(test)]") {
        let after = &rest[i + "#[cfg(test)]".len()..];
        let is_mod = after.trim_start().starts_with("mod ");
        let open = after.find('{');
        match (is_mod, open) {
            (true, Some(open)) => {
                out.push_str(&rest[..i]);
                let mut depth = 0;
                let mut end = after.len();
                for (k, c) in after[open..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = open + k + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                rest = &after[end..];
            }
            _ => {
                out.push_str(&rest[..i + "#[cfg(test)]".len()]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The root's re-exports: item name → the module that defines it (`Strategy` → `runner`).
fn root_exports(lib: &str, mods: &BTreeMap<String, PathBuf>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let code = code_only(lib);
    for stmt in code.split(';') {
        let Some(rest) = stmt.trim().strip_prefix("pub use ") else {
            continue;
        };
        let rest: String = rest.split_whitespace().collect();
        let (prefix, names) = match rest.split_once("::{") {
            Some((p, n)) => (p.to_string(), n.trim_end_matches('}').to_string()),
            None => match rest.rsplit_once("::") {
                Some((p, n)) => (p.to_string(), n.to_string()),
                None => continue,
            },
        };
        let module = resolve_module(&prefix, mods);
        for n in names.split(',').filter(|n| !n.is_empty()) {
            if let Some(m) = &module {
                out.insert(n.to_string(), m.clone());
            }
        }
    }
    out
}

/// The longest prefix of `path` (`a::b::Item`) that names a module file.
fn resolve_module(path: &str, mods: &BTreeMap<String, PathBuf>) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .map(|n| parts[..n].join("::"))
        .find(|m| mods.contains_key(m))
}

/// The modules `module`'s code refers to through `crate::` and `super::` paths.
fn references(
    module: &str,
    code: &str,
    mods: &BTreeMap<String, PathBuf>,
    exports: &BTreeMap<String, String>,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
    let is_ident = |c: char| c.is_alphanumeric() || c == '_' || c == ':';
    for (start, word) in ["crate::", "super::"]
        .iter()
        .flat_map(|w| code.match_indices(w).map(move |(i, _)| (i, *w)))
    {
        if code[..start].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let tail: String = code[start + word.len()..]
            .chars()
            .take_while(|&c| is_ident(c) || c == '{' || c.is_whitespace() || c == ',')
            .collect();
        // `crate::a::{b, c::D}` names several paths.
        let (head, group) = match tail.split_once('{') {
            Some((h, g)) => (h.trim().trim_end_matches("::").to_string(), Some(g)),
            None => (
                tail.split(|c: char| !is_ident(c))
                    .next()
                    .unwrap_or("")
                    .trim_end_matches(':')
                    .to_string(),
                None,
            ),
        };
        let base = if word == "super::" {
            parent.to_string()
        } else {
            String::new()
        };
        let join = |a: &str, b: &str| match (a.is_empty(), b.is_empty()) {
            (true, _) => b.to_string(),
            (_, true) => a.to_string(),
            _ => format!("{a}::{b}"),
        };
        let mut paths = vec![join(&base, &head)];
        if let Some(g) = group {
            for item in g.split(',') {
                let item: String = item.chars().take_while(|&c| is_ident(c)).collect();
                if !item.is_empty() && item != "self" {
                    paths.push(join(&join(&base, &head), &item));
                }
            }
        }
        for p in paths {
            let first = p.split("::").next().unwrap_or("");
            let target = match resolve_module(&p, mods) {
                Some(m) => Some(m),
                None if base.is_empty() => exports.get(first).cloned(),
                None => None,
            };
            let target = target.unwrap_or_else(|| {
                if base.is_empty() {
                    "lib".into()
                } else {
                    base.clone()
                }
            });
            if target != module && target != "lib" {
                out.insert(target);
            }
        }
    }
    out
}

/// A circle through `from`, if any: the path back to it.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    fn dfs(
        graph: &BTreeMap<String, BTreeSet<String>>,
        goal: &str,
        at: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in graph.get(at).into_iter().flatten() {
            if next == goal {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if dfs(graph, goal, next, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![from.to_string()];
    dfs(graph, from, from, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn no_import_circle_but_the_allowed_ones() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mods = modules(&src);
    let exports = root_exports(&std::fs::read_to_string(&mods["lib"]).unwrap(), &mods);
    let allowed = |a: &str, b: &str| {
        ALLOWED
            .iter()
            .any(|&(x, y)| (x, y) == (a, b) || (y, x) == (a, b))
    };
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, path) in &mods {
        if m == "lib" || m == "hooks" {
            continue; // the root re-exports everything; the hooks only wrap
        }
        let code = without_test_modules(&code_only(&std::fs::read_to_string(path).unwrap()));
        let refs = references(m, &code, &mods, &exports)
            .into_iter()
            .filter(|r| !allowed(m, r) && r != "hooks")
            .collect();
        graph.insert(m.clone(), refs);
    }
    // The check itself must see inline paths: `workspace` names `host` only inline.
    assert!(
        graph["workspace"].contains("host"),
        "{:?}",
        graph["workspace"]
    );
    let circles: Vec<String> = graph
        .keys()
        .filter_map(|m| circle(&graph, m))
        .map(|c| c.join(" -> "))
        .collect();
    assert!(
        circles.is_empty(),
        "import circles in src/:\n{}",
        circles.join("\n")
    );
}

#[test]
fn code_only_keeps_code_and_drops_comments_and_strings() {
    let text =
        "use crate::a; // crate::b\nlet s = \"crate::c\"; let r = r#\"crate::d\"#; crate::e();";
    let code = code_only(text);
    assert!(code.contains("crate::a") && code.contains("crate::e"));
    assert!(!code.contains("crate::b") && !code.contains("crate::c") && !code.contains("crate::d"));
    let code = without_test_modules(
        "use crate::a;\n#[cfg(test)]\nmod tests { fn f() { crate::b(); } }\ncrate::c();",
    );
    assert!(code.contains("crate::a") && code.contains("crate::c") && !code.contains("crate::b"));
}
