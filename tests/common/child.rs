//! The child-process kit of the Ctrl-C and orphan tests: building an example program,
//! running it with its output on a channel, signalling, waiting for and killing it, and
//! looking for processes on this machine.

use std::io::BufRead;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::eventually;

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
    // The features these tests were built with: another set would rebuild the library.
    let features: Vec<&str> = [
        ("cli", cfg!(feature = "cli")),
        ("bench", cfg!(feature = "bench")),
    ]
    .into_iter()
    .filter_map(|(f, on)| on.then_some(f))
    .collect();
    if !features.is_empty() {
        cmd.args(["--features", &features.join(",")]);
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
pub fn wait_child(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let mut status = None;
    if eventually(limit, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    }) {
        return status;
    }
    kill_and_reap(child);
    None
}

/// SIGKILLs and reaps `child` unless it has been reaped already.
fn kill_and_reap(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
        let _ = child.wait();
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
    pub child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl ChildProc {
    /// Spawns `cmd` with piped stdout and stderr.
    pub fn spawn(cmd: &mut Command) -> ChildProc {
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
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
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
        kill_and_reap(&mut self.child);
    }
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
