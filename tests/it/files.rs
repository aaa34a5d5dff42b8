//! Copying files into and out of the container through the daemon's archive API.
use crate::common;

use std::fs;

use dockexec::{CodeBlock, Error};

#[test]
fn put_file_and_get_file_round_trip() {
    let ex = common::start();
    let text = b"hello, file\n".to_vec();
    ex.put_file("hello.txt", &text).unwrap();
    assert_eq!(ex.get_file("hello.txt").unwrap(), text);
    // Relative paths are taken from /workspace, which is the work dir on the host.
    assert_eq!(ex.get_file("/workspace/hello.txt").unwrap(), text);
    if let Some(dir) = ex.work_dir() {
        assert_eq!(fs::read(dir.join("hello.txt")).unwrap(), text);
    }
    // A block sees it.
    let out = ex.run(&CodeBlock::sh("cat hello.txt")).unwrap();
    assert_eq!(out.stdout, text);
}

#[test]
fn put_file_and_get_file_keep_non_utf8_bytes() {
    // put_file into /tmp needs a writable root with no tmpfs over /tmp: the daemon refuses a
    // read-only root, and would write beneath a tmpfs.
    let ex = common::builder()
        .read_only_root(false)
        .tmp_size(None)
        .start()
        .unwrap();
    let data: Vec<u8> = (0..=255u8).chain([0xff, 0xfe, 0x00, 0x80, b'\n']).collect();
    ex.put_file("/tmp/binary.bin", &data).unwrap();
    assert_eq!(ex.get_file("/tmp/binary.bin").unwrap(), data);
    let seen = !common::differs_here(
        "put_file_and_get_file_keep_non_utf8_bytes",
        common::Differs::PutFileIntoRootfs,
    );
    let out = ex
        .run(&CodeBlock::python(
            "import hashlib, sys\n\
             d = open('/tmp/binary.bin', 'rb').read()\n\
             print(len(d), d[:3].hex(), d[-5:].hex())",
        ))
        .unwrap();
    if seen {
        assert!(out.status.success(), "{}", out.stderr_lossy());
        assert_eq!(out.stdout_lossy(), "261 000102 fffe00800a\n");
    }

    // And the other way: bytes a block writes come back exact.
    let out = ex
        .run(&CodeBlock::python(
            "open('made.bin', 'wb').write(bytes(range(256))[::-1] + b'\\xc3\\x28')",
        ))
        .unwrap();
    assert!(out.status.success(), "{}", out.stderr_lossy());
    let mut expected: Vec<u8> = (0..=255u8).rev().collect();
    expected.extend_from_slice(b"\xc3\x28");
    assert_eq!(ex.get_file("made.bin").unwrap(), expected);
}

#[test]
fn put_file_of_empty_and_larger_content() {
    let ex = common::start();
    ex.put_file("empty", b"").unwrap();
    assert_eq!(ex.get_file("empty").unwrap(), b"");
    // Larger than one tar block and not a multiple of 512.
    let big: Vec<u8> = (0..300_001u32).map(|i| (i * 7 % 251) as u8).collect();
    ex.put_file("big.bin", &big).unwrap();
    assert_eq!(ex.get_file("big.bin").unwrap(), big);
    // Overwriting replaces the content.
    ex.put_file("big.bin", b"small").unwrap();
    assert_eq!(ex.get_file("big.bin").unwrap(), b"small");
}

#[test]
fn get_file_of_a_missing_file_is_a_docker_404() {
    let ex = common::start();
    match ex.get_file("no-such-file.txt") {
        Err(Error::Docker { status: 404, .. }) => {}
        other => panic!("expected Error::Docker with status 404 (as documented), got {other:?}"),
    }
    // The container is alive and well: this was about the file, not the container.
    assert!(common::container_exists(ex.container_id()));
    assert!(ex.run(&CodeBlock::sh("true")).unwrap().status.success());
}

#[test]
fn get_file_of_a_directory_or_a_link_says_so() {
    let ex = common::start();
    let out = ex
        .run(&CodeBlock::sh(
            "mkdir -p sub/deeper && echo inner > sub/f && ln -s sub/f link && echo made",
        ))
        .unwrap();
    common::assert_success(&out);
    for (path, what) in [
        ("sub", "is a directory"),
        ("/workspace/sub/deeper", "is a directory"),
        ("link", "is a link"),
    ] {
        match ex.get_file(path) {
            Err(Error::InvalidInput(msg)) => {
                assert!(msg.contains(what) && msg.contains(path), "{path}: {msg}");
            }
            other => panic!("get_file({path}) gave {other:?}"),
        }
    }
    // The file itself still reads.
    assert_eq!(ex.get_file("sub/f").unwrap(), b"inner\n");
    ex.stop().unwrap();
}

#[test]
fn put_file_into_a_missing_directory_is_a_docker_error() {
    let ex = common::start();
    match ex.put_file("/no/such/dir/x.txt", b"x") {
        Err(Error::Docker { .. }) => {}
        other => panic!("expected Error::Docker (as documented), got {other:?}"),
    }
    assert!(common::container_exists(ex.container_id()));
}

#[test]
fn put_file_needs_a_file_name() {
    let ex = common::start();
    for bad in ["dir/", "/", "..", "a/."] {
        match ex.put_file(bad, b"x") {
            Err(Error::InvalidInput(_)) => {}
            other => panic!("{bad:?}: expected InvalidInput, got {other:?}"),
        }
        assert!(
            matches!(ex.get_file(bad), Err(Error::InvalidInput(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn files_after_stop_or_removal() {
    let ex = common::start();
    ex.put_file("x", b"1").unwrap();
    let (ok, _) = common::docker(&["rm", "-f", ex.container_id()]);
    assert!(ok);
    match ex.get_file("x") {
        Err(Error::ContainerGone { .. }) => {}
        other => panic!("expected ContainerGone, got {other:?}"),
    }
    match ex.put_file("y", b"2") {
        Err(Error::ContainerGone { .. }) => {}
        other => panic!("expected ContainerGone, got {other:?}"),
    }
}
