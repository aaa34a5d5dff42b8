//! Shared helpers for the integration tests. Every test talks to the real daemon.
//!
//! - [`docker`]: the test images, builders, labels, guards and container helpers;
//! - [`child`]: the child-process kit of the Ctrl-C and orphan tests;
//! - [`owner`]: an executor's owner in a child process, to SIGKILL;
//! - [`engines`]: the remote test engines (engine2 on a unix socket, TLS and SSH, Podman);
//! - [`podman`]: the tests that cannot hold on Podman, and why ([`podman_skips`]);
//! - [`gvisor`]: the gVisor lane's runtime, and the one list of what differs under it;
//! - here: what any test uses (watchdog, polling, names, temp dirs, thread counts, output).
//!
//! Each test binary uses only part of this, hence the `allow`s.
#![allow(dead_code, unused_imports)]

mod child;
mod docker;
mod engines;
mod gvisor;
mod owner;
mod podman;
mod private_engine;
mod proxy;
mod test_images;

pub use child::*;
pub use docker::*;
pub use engines::*;
pub use gvisor::*;
pub use owner::*;
pub use podman::*;
pub use private_engine::*;
pub use proxy::*;

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long stress loops run, from DOCKEXEC_STRESS_SECS (short by default, longer in CI).
pub fn stress_duration() -> Duration {
    let secs = std::env::var("DOCKEXEC_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(secs)
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

/// Polls `cond` every 50 ms until it holds or `limit` passes; returns whether it held.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Serialises the tests of one test binary that observe process-wide state (thread counts,
/// orphan sweeps). Poison-tolerant: one failed test must not fail the others.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A value unique to this process and call, for labels and markers.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A fresh directory under the system temp dir, removed with its contents on drop.
#[derive(Debug)]
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("dockexec-test-{}", unique_name(tag)));
        std::fs::create_dir_all(&dir).expect("create a test temp dir");
        TempDir(dir.canonicalize().expect("canonicalize the test temp dir"))
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every file under `dir` (relative paths, sorted), except dockexec's own `.dockexec` dir.
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    fn walk(root: &std::path::Path, d: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(d) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if rel.starts_with(".dockexec") {
                continue;
            }
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Names of this process's threads, from /proc/self/task/*/comm.
pub fn thread_names() -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            if let Ok(n) = std::fs::read_to_string(t.path().join("comm")) {
                names.push(n.trim().to_string());
            }
        }
    }
    names
}

/// How many of this process's threads are dockexec's (`dockexec-<n>` workers and
/// `dockexec-reader`s).
pub fn dockexec_threads() -> usize {
    thread_names()
        .iter()
        .filter(|n| n.starts_with("dockexec-"))
        .count()
}

/// Reads live chunks until the stdout seen so far contains `needle`; panics after `limit` or
/// if the stream ends first. Returns the stdout seen. A single `print` may arrive in several
/// chunks (Python writes the text and the newline separately), so tests wait for content,
/// never for "the first chunk".
pub fn await_stdout(
    rx: &crossbeam_channel::Receiver<dockexec::Chunk>,
    needle: &str,
    limit: Duration,
) -> String {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        if String::from_utf8_lossy(&seen).contains(needle) {
            return String::from_utf8_lossy(&seen).into_owned();
        }
        match rx.recv_deadline(deadline) {
            Ok(dockexec::Chunk::Stdout(b)) => seen.extend_from_slice(&b),
            Ok(_) => {}
            Err(e) => panic!(
                "waiting for {needle:?} on stdout: {e}; seen {:?}",
                String::from_utf8_lossy(&seen)
            ),
        }
    }
}

/// Asserts that a block succeeded, showing its status and stderr when it did not.
#[track_caller]
pub fn assert_success(out: &dockexec::Output) {
    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        out.stderr_lossy()
    );
}
