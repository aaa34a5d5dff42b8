//! The Engine client against the real daemon (scripts/test-env.sh starts one).
//!
//! These drive the private client directly; the executor's behaviour is tested in `tests/`.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use super::api::{self, Client};
use crate::error::Error;

const LABEL: &str = "dockexec.test";

fn client() -> Client {
    let engine = crate::Engine::from_env().expect("DOCKER_HOST, if set, parses");
    Client::connect(&engine).expect("the test daemon answers (run scripts/test-env.sh)")
}

fn image() -> String {
    std::env::var("DOCKEXEC_TEST_IMAGE").unwrap_or_else(|_| "dockexec-test/python:latest".into())
}

fn registry() -> String {
    let r = std::env::var("DOCKEXEC_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into());
    assert!(
        r.starts_with("127.0.0.1:"),
        "pull only from loopback, not {r}"
    );
    r
}

/// A labelled container, force-removed on drop even when the test panics.
struct Container<'a> {
    client: &'a Client,
    id: String,
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = self
            .client
            .container_remove(&self.id, Duration::from_secs(10));
    }
}

fn running_container(client: &Client) -> Container<'_> {
    let body = json!({
        "Image": image(),
        "Entrypoint": ["sh", "-c", "while :; do sleep 3600; done"],
        "Labels": { LABEL: "1" },
        "HostConfig": { "Init": true, "NetworkMode": "none" },
    });
    let id = client.container_create(None, &body).expect("create");
    let c = Container { client, id };
    client.container_start(&c.id).expect("start");
    c
}

fn sh(cmd: &str) -> Value {
    json!({ "Cmd": ["sh", "-c", cmd], "AttachStdout": true, "AttachStderr": true })
}

#[test]
fn ping_and_version_negotiation() {
    let c = client();
    c.ping().unwrap();
    let v = c.version().unwrap();
    let negotiated = c.api_version();
    let (maj, min) = negotiated.split_once('.').unwrap();
    assert_eq!(maj, "1");
    let min: u32 = min.parse().unwrap();
    let daemon_min: u32 = v.api_version.split_once('.').unwrap().1.parse().unwrap();
    assert!(
        min <= daemon_min,
        "never above the daemon's {}",
        v.api_version
    );
    assert!(min >= 25);
}

#[test]
fn round_trip_separates_streams_and_keeps_exit_codes() {
    let c = client();
    let ctr = running_container(&c);
    assert!(c.container_inspect(&ctr.id).unwrap().state.running);
    let (code, out, err) = c
        .exec_collect(&ctr.id, &sh("echo out; echo err >&2; echo more"), None)
        .unwrap();
    assert_eq!(code, Some(0));
    assert_eq!(out, b"out\nmore\n");
    assert_eq!(err, b"err\n");
    for (cmd, want) in [
        ("exit 1", 1),
        ("touch /tmp/x && chmod -x /tmp/x && /tmp/x", 126),
        ("no-such-command-here", 127),
    ] {
        let (code, _, _) = c.exec_collect(&ctr.id, &sh(cmd), None).unwrap();
        assert_eq!(code, Some(want), "{cmd}");
    }
    let id = ctr.id.clone();
    drop(ctr);
    assert!(c.container_inspect(&id).unwrap_err().is_not_found());
}

#[test]
fn five_megabytes_arrive_complete() {
    let c = client();
    let ctr = running_container(&c);
    let (code, out, err) = c
        .exec_collect(
            &ctr.id,
            &sh("i=0; while [ $i -lt 5 ]; do head -c 1048576 /dev/zero | tr '\\0' \"$i\"; i=$((i+1)); done"),
            None,
        )
        .unwrap();
    assert_eq!(code, Some(0), "{}", String::from_utf8_lossy(&err));
    assert_eq!(out.len(), 5 * 1024 * 1024);
    for (i, chunk) in out.chunks(1024 * 1024).enumerate() {
        assert!(
            chunk.iter().all(|&b| b == b'0' + i as u8),
            "megabyte {i} intact"
        );
    }
}

#[test]
fn exec_stream_is_read_incrementally() {
    let c = client();
    let ctr = running_container(&c);
    let id = c
        .exec_create(&ctr.id, &sh("echo first; sleep 2; echo second"))
        .unwrap();
    let (mut stream, _cutter) = c.exec_start(&id, false, None).unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 256];
    let n = std::io::Read::read(&mut stream, &mut buf).unwrap();
    assert!(n > 0);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "the first line arrives before the process ends"
    );
    assert!(c.exec_inspect(&id).unwrap().running);
}

#[test]
fn cutting_a_stream_unblocks_its_reader() {
    let c = client();
    let ctr = running_container(&c);
    let id = c.exec_create(&ctr.id, &sh("sleep 30")).unwrap();
    let (mut stream, cutter) = c.exec_start(&id, false, None).unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        std::io::Read::read(&mut stream, &mut buf)
    });
    std::thread::sleep(Duration::from_millis(200));
    let t = std::time::Instant::now();
    cutter.cut();
    let _ = reader.join().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "cut returned the read at once"
    );
}

#[test]
fn kill_and_wait() {
    let c = client();
    let ctr = running_container(&c);
    c.container_kill(&ctr.id, "KILL").unwrap();
    let code = c.container_wait(&ctr.id).unwrap();
    assert_eq!(code, 137);
    assert!(!c.container_inspect(&ctr.id).unwrap().state.running);
}

#[test]
fn archive_put_and_get() {
    let c = client();
    let ctr = running_container(&c);
    let data = b"hello\xff\x00world\n".to_vec();
    let tar = api::tar_one_file("greeting.bin", &data, 0o600).unwrap();
    c.archive_put(&ctr.id, "/tmp", tar).unwrap();
    let (code, out, _) = c
        .exec_collect(&ctr.id, &sh("wc -c < /tmp/greeting.bin"), None)
        .unwrap();
    assert_eq!(code, Some(0));
    assert_eq!(String::from_utf8_lossy(&out).trim(), data.len().to_string());
    let back = c.archive_get(&ctr.id, "/tmp/greeting.bin").unwrap();
    let (name, contents) = api::untar_first_file(&back).unwrap();
    assert_eq!(name, "greeting.bin");
    assert_eq!(contents, data);
    let err = c.archive_put(
        &ctr.id,
        "/no/such/dir",
        api::tar_one_file("x", b"", 0o644).unwrap(),
    );
    assert!(
        matches!(err, Err(Error::Docker { status: 404, .. })),
        "{err:?}"
    );
}

#[test]
fn archive_long_name_both_ways() {
    // Over ustar's 100-byte name field: a GNU long name going in, whatever the daemon uses
    // (PAX) coming back.
    let c = client();
    let ctr = running_container(&c);
    let name = format!("{}.txt", "long-name-".repeat(20));
    let tar = api::tar_one_file(&name, b"far\n", 0o644).unwrap();
    c.archive_put(&ctr.id, "/tmp", tar).unwrap();
    let back = c.archive_get(&ctr.id, &format!("/tmp/{name}")).unwrap();
    assert_eq!(
        api::untar_first_file(&back).unwrap(),
        (name, b"far\n".to_vec())
    );
}

#[test]
fn list_by_label() {
    let c = client();
    let ctr = running_container(&c);
    let found = c.container_list(LABEL).unwrap();
    assert!(found.iter().any(|s| s.id == ctr.id));
    assert!(
        c.container_list("dockexec.no-such-label")
            .unwrap()
            .is_empty()
    );
}

/// Removes an image reference on drop.
struct ImageGuard<'a>(&'a Client, String);

impl Drop for ImageGuard<'_> {
    fn drop(&mut self) {
        let _ = self.0.image_remove(&self.1);
    }
}

#[test]
fn pull_from_the_loopback_registry_reports_progress() {
    let c = client();
    // A tag no other test uses, so removing it afterwards races with nobody.
    let reference = format!("{}/dockexec/busybox:latest", registry());
    let local = format!("{}/dockexec/busybox:client-pull-test", registry());
    let _ = c.image_remove(&local);
    let _guard = ImageGuard(&c, local.clone());
    // Pull by the registry's tag, then re-tag, and remove the registry tag only if we made it.
    let had = c.image_exists(&reference).unwrap();
    let mut events = Vec::new();
    c.image_pull(&reference, &mut |e| {
        events.push(e.status.clone().unwrap_or_default())
    })
    .unwrap();
    assert!(!events.is_empty(), "the pull reports progress");
    assert!(
        events
            .iter()
            .any(|s| s.contains("Digest") || s.contains("Status")),
        "{events:?}"
    );
    assert!(c.image_exists(&reference).unwrap());
    let (repo, tag) = api::split_reference(&local);
    c.image_tag(&reference, repo, tag.unwrap()).unwrap();
    assert!(c.image_exists(&local).unwrap());
    if !had {
        let _ = c.image_remove(&reference);
    }
}

#[test]
fn missing_image_in_the_registry_is_image_not_found() {
    let c = client();
    let reference = format!("{}/dockexec/no-such-image:latest", registry());
    let err = c.image_pull(&reference, &mut |_| {}).unwrap_err();
    match &err {
        Error::ImageNotFound { image, message } => {
            assert_eq!(image, &reference);
            assert!(!message.is_empty());
        }
        other => panic!("expected ImageNotFound, got {other:?}"),
    }
    assert!(err.to_string().contains(&reference));
    assert!(!c.image_exists(&reference).unwrap());
}

#[test]
fn no_such_container_is_a_404_with_the_daemons_message() {
    let c = client();
    let err = c
        .container_inspect("dockexec-no-such-container")
        .unwrap_err();
    match err {
        Error::Docker { status, message } => {
            assert_eq!(status, 404);
            assert!(message.contains("No such container"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        c.exec_create("dockexec-no-such-container", &sh("true"))
            .unwrap_err()
            .is_not_found()
    );
}

#[test]
fn a_socket_that_does_not_exist_names_the_socket() {
    let path = Path::new("/nonexistent/dockexec-test.sock");
    let err = Client::connect(&crate::Engine::unix(path)).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(text.contains("/nonexistent/dockexec-test.sock"), "{text}");
    assert!(text.contains("daemon"), "{text}");
}

#[test]
fn a_refused_socket_says_connection_refused() {
    // A socket file with no listener behind it: bind, then drop the listener.
    let dir = std::env::temp_dir().join(format!("dockexec-refused-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("d.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let err = Client::connect(&crate::Engine::unix(&path)).unwrap_err();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains("connection refused"), "{err}");
}
