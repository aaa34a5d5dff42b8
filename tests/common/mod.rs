//! Shared helpers for the integration tests. Every test talks to the real daemon.
#![allow(dead_code)]

mod test_images;

use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use dockexec::{Executor, ExecutorBuilder, PullPolicy};

/// Label every test container carries, so leftovers can be found and removed by label.
pub const TEST_LABEL: &str = "dockexec.test";

/// The python test image (built locally by scripts/test-env.sh).
pub fn image() -> String {
    test_images::get("DOCKEXEC_TEST_IMAGE")
}

/// The busybox-only image: nothing but a static busybox, no python.
pub fn busybox() -> String {
    test_images::get("DOCKEXEC_TEST_BUSYBOX")
}

/// The loopback registry (`127.0.0.1:5000`); the only place a test may pull from.
pub fn registry() -> String {
    let r = test_images::get("DOCKEXEC_TEST_REGISTRY");
    assert!(
        r.starts_with("127.0.0.1:") || r.starts_with("localhost:"),
        "tests may only pull from a loopback registry, not {r}"
    );
    r
}

/// The busybox image as the loopback registry holds it (`<registry>/dockexec/busybox:latest`).
pub fn registry_busybox() -> String {
    format!(
        "{}/{}:latest",
        registry(),
        test_images::get("DOCKEXEC_TEST_REGISTRY_BUSYBOX")
    )
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
    builder()
        .start()
        .expect("start an executor on the test image")
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

// ---- Helpers for the executor-core tests (autogen_parity, executor_lifecycle, blocks,
// ---- output_bytes, images, files, cli). Appended; nothing above is changed. They use
// ---- CASE_LABEL, unique_name and case_builder from the section below.

/// Ids of the containers (running or not) carrying `label=value`.
pub fn labelled(label: &str, value: &str) -> Vec<String> {
    let (ok, ids) = docker(&["ps", "-aq", "--filter", &format!("label={label}={value}")]);
    assert!(ok, "docker ps --filter label={label}={value}");
    ids.lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
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

/// True when the image is present locally.
pub fn image_exists(image: &str) -> bool {
    docker(&["image", "inspect", image]).0
}

/// Removes an image reference on drop (`docker rmi`), for tests that pull or tag one. Only
/// the reference goes: an image that still has other tags keeps them.
#[derive(Debug)]
pub struct ImageGuard(pub String);

impl Drop for ImageGuard {
    fn drop(&mut self) {
        if image_exists(&self.0) {
            let _ = docker(&["rmi", &self.0]);
        }
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

// ---- Helpers for the cancellation, stop, Ctrl-C, orphan and output tests ----

/// Label naming the test case that created a container, for per-test cleanup.
pub const CASE_LABEL: &str = "dockexec.test.case";

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

/// Removes every container labelled `dockexec.test.case=<value>` when dropped, so a test
/// that panics or hangs (its executor stuck in a watchdog thread) still leaves nothing.
#[derive(Debug)]
pub struct CaseGuard {
    pub value: String,
}

impl Drop for CaseGuard {
    fn drop(&mut self) {
        remove_labelled(CASE_LABEL, &self.value);
    }
}

/// [`builder`] plus a unique case label, and the guard that removes that label's containers.
/// Declare the guard before the executor so it drops after it.
pub fn case_builder(case: &str) -> (ExecutorBuilder, CaseGuard) {
    let value = unique_name(case);
    let mut b = builder();
    b.label(CASE_LABEL, value.clone());
    (b, CaseGuard { value })
}

/// Serialises the tests of one test binary that observe process-wide state (thread counts,
/// orphan sweeps). Poison-tolerant: one failed test must not fail the others.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
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

/// Processes in the container whose command line contains `marker`.
pub fn processes_matching(id: &str, marker: &str) -> Vec<String> {
    container_processes(id)
        .into_iter()
        .filter(|l| l.contains(marker))
        .collect()
}

/// Processes on this machine whose command line contains `marker` (zombies have none). With a
/// local daemon, containers' processes are visible here too, so this proves a process is gone
/// even after its container was removed; with a remote daemon it proves nothing.
pub fn host_processes_matching(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    let me = std::process::id().to_string();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == me || !name.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            if let Ok(raw) = std::fs::read(e.path().join("cmdline")) {
                let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
                if cmd.contains(marker) {
                    found.push(format!("{name}: {}", cmd.trim_end()));
                }
            }
        }
    }
    found
}

/// Polls `cond` every 50 ms until it holds or `limit` passes; returns whether it held.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= end {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Reads live chunks until the stdout seen so far contains `needle`; panics after `limit` or
/// if the stream ends first. Returns the stdout seen.
pub fn await_stdout(
    rx: &crossbeam_channel::Receiver<dockexec::Chunk>,
    needle: &str,
    limit: Duration,
) -> String {
    let deadline = std::time::Instant::now() + limit;
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

/// Builds `examples/<name>.rs` (with the cargo that builds these tests) and returns the path
/// of its executable, as cargo reports it: right whatever the target dir or profile.
pub fn example_bin(name: &str) -> std::path::PathBuf {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args([
        "build",
        "--quiet",
        "--message-format=json",
        "--example",
        name,
    ])
    .args(["--manifest-path", manifest]);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let out = cmd.output().expect("run cargo build --example");
    assert!(
        out.status.success(),
        "cargo build --example {name} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact" && msg["target"]["name"] == name {
            if let Some(exe) = msg["executable"].as_str() {
                return exe.into();
            }
        }
    }
    panic!("cargo did not report an executable for example {name}");
}

/// Waits up to `limit` for a child process; SIGKILLs and reaps it if it has not exited, and
/// returns `None` then.
pub fn wait_child(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let end = std::time::Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if std::time::Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `signal` (e.g. "INT", "KILL") to `pid` with kill(1).
pub fn send_signal(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill(1)")
        .success();
    assert!(ok, "kill -{signal} {pid}");
}

/// A child process whose stdout and stderr lines arrive on a channel (stderr lines prefixed
/// `[stderr] `). Dropping it SIGKILLs and reaps the child if it is still running.
#[derive(Debug)]
pub struct ChildProc {
    pub child: std::process::Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl ChildProc {
    /// Spawns `cmd` with piped stdout and stderr.
    pub fn spawn(cmd: &mut Command) -> ChildProc {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn a child process");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("piped stdout");
        let err = child.stderr.take().expect("piped stderr");
        let tx2 = tx.clone();
        thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(|l| l.ok()) {
                let _ = tx.send(l);
            }
        });
        thread::spawn(move || {
            for l in std::io::BufReader::new(err).lines().map_while(|l| l.ok()) {
                let _ = tx2.send(format!("[stderr] {l}"));
            }
        });
        ChildProc {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `limit` for a stdout line starting with `prefix`; returns the rest of it.
    pub fn expect_line(&mut self, prefix: &str, limit: Duration) -> String {
        let end = std::time::Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if let Some(rest) = l.strip_prefix(prefix) {
                        return rest.trim().to_string();
                    }
                }
                Err(e) => panic!(
                    "child: no line starting with {prefix:?} ({e}); its output so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Everything the child printed so far (for failure messages).
    pub fn transcript(&mut self) -> String {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        self.seen.join("\n")
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads live chunks until their concatenation contains `needle`; returns what was read.
/// A single `print` may arrive in several chunks (Python writes the text and the newline
/// separately), so tests wait for content, never for "the first chunk".
pub fn wait_for_output(execution: &dockexec::Execution, needle: &[u8], limit: Duration) -> Vec<u8> {
    let rx = execution.chunks();
    let deadline = std::time::Instant::now() + limit;
    let mut seen = Vec::new();
    while !seen.windows(needle.len().max(1)).any(|w| w == needle) {
        match rx.recv_deadline(deadline) {
            Ok(chunk) => seen.extend_from_slice(chunk.bytes()),
            Err(e) => panic!(
                "waiting for {:?}: {e}; saw {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(&seen)
            ),
        }
    }
    seen
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
