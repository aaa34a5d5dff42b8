//! Workspace-relative path resolution and container path splitting (`src/workspace.rs`).
//!
//! Invariants: no panic; a path `workspace_relative` returns is non-empty, relative, made of
//! normal components only (no `..`, no `.`), not inside `.dockexec`, and maps to itself again;
//! a name with no `..` and no root that is not in `.dockexec` is accepted;
//! `split_container_path` gives an absolute directory and a plain file name that join back to
//! the path.
#![no_main]

use std::path::{Component, Path};

use dockexec::__fuzz::{STATE_DIR, split_container_path, workspace_relative};
use dockexec::WORKSPACE;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let name = String::from_utf8_lossy(data);
    let name = name.as_ref();

    match workspace_relative(name) {
        Ok(p) => {
            assert!(
                p.is_relative() && !p.as_os_str().is_empty(),
                "{name:?} -> {p:?}"
            );
            assert!(
                p.components().all(|c| matches!(c, Component::Normal(_))),
                "{name:?} -> {p:?}"
            );
            let first = p
                .components()
                .next()
                .map(|c| c.as_os_str().to_string_lossy());
            assert!(
                !first.is_some_and(|f| f.eq_ignore_ascii_case(STATE_DIR)),
                "{name:?} -> {p:?}"
            );
            assert!(Path::new(WORKSPACE).join(&p).starts_with(WORKSPACE));
            let again = workspace_relative(p.to_str().expect("utf-8 in, utf-8 out"));
            assert_eq!(again.ok().as_ref(), Some(&p), "not idempotent for {name:?}");
        }
        Err(e) => {
            let path = Path::new(name);
            let climbs = path
                .components()
                .any(|c| matches!(c, Component::ParentDir | Component::RootDir));
            let normal: Vec<_> = path
                .components()
                .filter(|c| matches!(c, Component::Normal(_)))
                .collect();
            // Case-insensitively: on a case-insensitive host file system `.DOCKEXEC` is it too.
            let in_state = normal.first().is_some_and(|c| {
                c.as_os_str()
                    .to_string_lossy()
                    .eq_ignore_ascii_case(STATE_DIR)
            });
            assert!(
                climbs || normal.is_empty() || in_state,
                "{name:?} refused for no reason: {e}"
            );
        }
    }

    if let Ok((dir, file)) = split_container_path(name) {
        assert!(dir.starts_with('/'), "{name:?} -> {dir:?}");
        assert!(
            !file.is_empty() && !file.contains('/'),
            "{name:?} -> {file:?}"
        );
        assert!(file != "." && file != "..");
        let full = if name.starts_with('/') {
            name.to_string()
        } else {
            format!("{WORKSPACE}/{name}")
        };
        let joined = if dir == "/" {
            format!("/{file}")
        } else {
            format!("{dir}/{file}")
        };
        assert!(
            joined == full || (dir == "/" && full == format!("//{file}")),
            "{name:?} -> ({dir:?}, {file:?})"
        );
    }
});
