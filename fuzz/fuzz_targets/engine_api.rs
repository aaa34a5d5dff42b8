//! The Engine responses the client parses (`src/docker/api.rs`): error bodies, pull errors,
//! the JSON bodies of `/version`, exec and container inspect and the pull progress stream, image
//! references, API versions, and tar archives.
//!
//! Input: `[selector, rest...]`; the selector (mod 4) picks the parser so that each grows its
//! own corpus: 0 error/JSON bodies, 1 `/version` + negotiation, 2 references and API versions,
//! 3 tar archives.
//!
//! Invariants: no panic; an error message is non-empty and trimmed; status 404 is always "image
//! not found"; a reference splits into parts that join back; a parsed API version prints back
//! to itself; a negotiated version lies in dockexec's range; an untarred file is no larger than
//! the archive; a tar of one file untars to that file.
#![no_main]

use dockexec::__fuzz::{
    API_RANGE, error_message, negotiate, parse_api, parse_bodies, pull_error, split_reference,
    tar_one_file, untar_first_file, untar_path,
};
use dockexec::Error;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [selector, rest @ ..] = data else { return };
    let text = String::from_utf8_lossy(rest);
    match selector % 4 {
        0 => {
            let status = 400 + u16::from(*selector);
            let m = error_message(&text, status, "inspect");
            assert!(!m.is_empty() && m.trim() == m, "{m:?}");
            let e = pull_error("img", 404, m.clone());
            assert!(matches!(e, Error::ImageNotFound { .. }), "{e:?}");
            let _ = pull_error("img", status, m).to_string();
            let _ = parse_bodies(rest);
        }
        1 => {
            if let Some(Ok(v)) = negotiate(rest) {
                let got = parse_api(&v).expect("negotiated version parses");
                assert!(API_RANGE.0 <= got && got <= API_RANGE.1, "{v}");
            }
        }
        2 => {
            let s = text.as_ref();
            let (name, tag) = split_reference(s);
            match tag {
                None => assert_eq!(name, s),
                Some(tag) => {
                    let at = format!("{name}@{tag}");
                    let colon = format!("{name}:{tag}");
                    // name:tag@digest gives (name, digest): the digest decides.
                    let both =
                        s.starts_with(&format!("{name}:")) && s.ends_with(&format!("@{tag}"));
                    assert!(at == s || colon == s || both, "{s:?} -> {name:?} {tag:?}");
                }
            }
            if let Some((a, b)) = parse_api(s) {
                assert_eq!(parse_api(&format!("{a}.{b}")), Some((a, b)));
            }
        }
        _ => {
            if let Ok((_, contents)) = untar_first_file(rest) {
                assert!(contents.len() <= rest.len());
            }
            if let Ok(Some(contents)) = untar_path(rest) {
                assert!(contents.len() <= rest.len());
            }
            // Build one: the name is the first line (a few plain characters), the rest is data.
            let (name, contents) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (&b"f"[..], rest),
            };
            let plain = !name.is_empty()
                && name.len() <= 200
                && name
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(b))
                && name != b"."
                && name != b"..";
            if plain {
                let name = std::str::from_utf8(name).unwrap();
                let tar = tar_one_file(name, contents, 0o644).expect("plain names tar");
                let (got_name, got) = untar_first_file(&tar).expect("our own tar untars");
                assert_eq!((got_name.as_str(), got.as_slice()), (name, contents));
            }
        }
    }
});
