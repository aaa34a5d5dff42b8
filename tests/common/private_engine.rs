//! A private `dockerd` of one test's own (issue 18's "one engine killed mid-run"): own unix
//! socket, data root, exec root, pid file and containerd namespace under a temp dir, no bridge,
//! no iptables. The test SIGKILLs it and starts it again on the same data root. Only this
//! dockerd (by the pid of the child we spawned) and the containerd, shims and containers
//! whose command lines name its temp dir are ever killed; its mounts are undone and its dir
//! removed on drop, also when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The namespace of this daemon's containers in its containerd.
const NAMESPACE: &str = "dockexec-pooltest";

#[derive(Debug)]
pub struct PrivateEngine {
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateEngine {
    /// Starts a private dockerd and waits for it to answer; `None` (with a SKIP line) where
    /// there is no `dockerd`, except in CI, where that panics.
    pub fn start(tag: &str) -> Option<PrivateEngine> {
        if Command::new("dockerd").arg("--version").output().is_err() {
            assert!(!super::in_ci(), "no dockerd and CI is set");
            eprintln!("SKIP: no dockerd to start a private engine with");
            return None;
        }
        // Short: a unix socket path is at most 107 bytes.
        let dir = PathBuf::from(format!("/tmp/dx-{}", super::unique_name(tag)));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::create_dir_all(dir.join("exec")).unwrap();
        std::fs::write(dir.join("daemon.json"), "{}").unwrap();
        let mut e = PrivateEngine { dir, child: None };
        e.spawn();
        Some(e)
    }

    /// Its `DOCKER_HOST` value.
    pub fn host(&self) -> String {
        format!("unix://{}", self.sock().display())
    }

    pub fn sock(&self) -> PathBuf {
        self.dir.join("sock")
    }

    /// (Re)starts the daemon on the same data root; waits up to 30 s for its ping.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let _ = std::fs::remove_file(self.sock());
        // A SIGKILLed dockerd leaves its containerd's pid file: the next one then waits for
        // that containerd (its pid maybe another process's by now) and gives up.
        let _ = std::fs::remove_file(self.dir.join("exec/containerd/containerd.pid"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("log"))
            .unwrap();
        let d = &self.dir;
        let child = Command::new("dockerd")
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("pid"))
            .args(["--containerd-namespace", NAMESPACE])
            .args([
                "--containerd-plugins-namespace",
                "dockexec-pooltest-plugins",
            ])
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
            .arg("-H")
            .arg(self.host())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        self.child = Some(child);
        let t = Instant::now();
        while !self.ping() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(8).collect();
                panic!("dockerd ended ({status}); its log ends: {tail:#?}");
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "private dockerd not up in 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("private dockerd up in {:?}", t.elapsed());
    }

    pub fn ping(&self) -> bool {
        Command::new("curl")
            .args(["-sf", "-m", "2", "--unix-socket"])
            .arg(self.sock())
            .arg("http://d/_ping")
            .output()
            .is_ok_and(|o| o.status.success() && o.stdout == b"OK")
    }

    /// `docker save IMAGE` from the shared daemon into this one (faster here than a pull
    /// from the loopback registry: 4.7 s against 6.9 s for the python image).
    pub fn load(&self, image: &str) {
        let t = Instant::now();
        let mut save = Command::new("docker")
            .args(["save", image])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let ok = Command::new("docker")
            .arg("--host")
            .arg(self.host())
            .arg("load")
            .stdin(save.stdout.take().unwrap())
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(
            save.wait().unwrap().success() && ok,
            "docker save | load {image}"
        );
        eprintln!("loaded {image} in {:?}", t.elapsed());
    }

    /// SIGKILLs the daemon (only it: the child we spawned), then what it leaves running:
    /// its containers, shims and containerd.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.reap_leftovers();
    }

    fn reap_leftovers(&self) {
        let root = self.dir.join("exec/runtime-runc").join(NAMESPACE);
        if let Ok(out) = Command::new("runc")
            .arg("--root")
            .arg(&root)
            .args(["list", "-q"])
            .output()
        {
            for id in String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| !l.is_empty())
            {
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(&root)
                    .args(["delete", "-f", id])
                    .output();
            }
        }
        let needle = format!("{}/", self.dir.display());
        for _ in 0..20 {
            let pids = pids_naming(&needle);
            if pids.is_empty() {
                return;
            }
            for p in pids {
                let _ = Command::new("kill")
                    .args(["-KILL", &p.to_string()])
                    .status();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Processes whose command line contains `needle`.
fn pids_naming(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmd).contains(needle) {
                out.push(pid);
            }
        }
    }
    out
}

/// Mount points at or under `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<String> {
    let d = dir.display().to_string();
    let mut m: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| m.replace("\\040", " "))
        .filter(|m| m == &d || m.starts_with(&format!("{d}/")))
        .collect();
    m.sort_by_key(|m| std::cmp::Reverse(m.len()));
    m
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        // No panic here: this also runs while a failed test unwinds.
        self.kill();
        for m in mounts_under(&self.dir) {
            let _ = Command::new("umount").args(["-l", &m]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
