//! Shared helpers for the integration tests. Every test talks to the real daemon.
#![allow(dead_code)]

use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use dockexec::{Executor, ExecutorBuilder, PullPolicy};

/// Label every test container carries, so leftovers can be found and removed by label.
pub const TEST_LABEL: &str = "dockexec.test";

/// The python test image (built locally by scripts/test-env.sh).
pub fn image() -> String {
    std::env::var("DOCKEXEC_TEST_IMAGE").unwrap_or_else(|_| "dockexec-test/python:latest".into())
}

/// The busybox-only image: nothing but a static busybox, no python.
pub fn busybox() -> String {
    std::env::var("DOCKEXEC_TEST_BUSYBOX")
        .unwrap_or_else(|_| "dockexec-test/busybox:latest".into())
}

/// The loopback registry (`127.0.0.1:5000`); the only place a test may pull from.
pub fn registry() -> String {
    let r = std::env::var("DOCKEXEC_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into());
    assert!(
        r.starts_with("127.0.0.1:") || r.starts_with("localhost:"),
        "tests may only pull from a loopback registry, not {r}"
    );
    r
}

/// How long stress loops run, from DOCKEXEC_STRESS_SECS (short by default, longer in CI).
pub fn stress_duration() -> Duration {
    let secs = std::env::var("DOCKEXEC_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(secs)
}

/// A builder for the test image that never pulls, labelled for cleanup.
pub fn builder() -> ExecutorBuilder {
    let mut b = Executor::builder();
    b.image(image())
        .pull_policy(PullPolicy::Never)
        .label(TEST_LABEL, "1")
        .timeout(Some(Duration::from_secs(60)));
    b
}

/// Starts an executor on the test image.
pub fn start() -> Executor {
    builder().start().expect("start an executor on the test image")
}

/// Runs `f` on another thread and fails the test if it has not finished within `limit`: a
/// deadlock fails fast instead of hanging the suite.
pub fn watchdog<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => {
            let _ = handle.join();
            v
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("watchdog: not finished within {limit:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(p) => std::panic::resume_unwind(p),
            Ok(()) => unreachable!("sent nothing but did not panic"),
        },
    }
}

/// Runs the docker CLI; returns (success, stdout).
pub fn docker(args: &[&str]) -> (bool, String) {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run the docker CLI");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

/// True when a container with this id or name exists (running or not).
pub fn container_exists(id: &str) -> bool {
    docker(&["container", "inspect", id]).0
}

/// Process command lines inside a container, read from /proc with plain sh (no procps).
pub fn container_processes(id: &str) -> Vec<String> {
    let script = r#"for d in /proc/[0-9]*; do
  [ -r "$d/cmdline" ] || continue
  c=$(tr '\000' ' ' < "$d/cmdline" 2>/dev/null)
  [ -n "$c" ] && echo "${d#/proc/}: $c"
done"#;
    let (ok, out) = docker(&["exec", id, "sh", "-c", script]);
    assert!(ok, "listing processes in {id}");
    out.lines().map(str::to_string).collect()
}

/// Removes every container carrying `label=value`, e.g. after a test that can leak by design.
pub fn remove_labelled(label: &str, value: &str) {
    let (_, ids) = docker(&["ps", "-aq", "--filter", &format!("label={label}={value}")]);
    for id in ids.lines().filter(|l| !l.is_empty()) {
        let _ = docker(&["rm", "-f", id]);
    }
}
