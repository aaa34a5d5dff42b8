//! The remote engines of `scripts/test-env.sh` (issue 16): a second, private daemon
//! ("engine2") on a unix socket and on TLS `tcp://127.0.0.1`, and an sshd on 127.0.0.1 whose
//! `docker system dial-stdio` reaches it. The script writes every fact the tests need to
//! `${TMPDIR:-/tmp}/dockexec-test-env/engines.env` (`KEY=VALUE` lines); [`test_engines`]
//! reads it.
//!
//! Locally, a missing file means "the engines were not set up": tests skip (`None`). In CI
//! (`CI` true) it panics, so that a broken environment can never pass as a silent skip.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// What `scripts/test-env.sh` wrote to `engines.env`.
#[derive(Debug, Clone)]
pub struct TestEngines {
    /// The file this was read from.
    pub file: PathBuf,
    /// engine2's unix socket (`DOCKEXEC_TEST_ENGINE2_SOCK`).
    pub engine2_sock: PathBuf,
    /// The same as a `DOCKER_HOST` value, `unix://...` (`DOCKEXEC_TEST_ENGINE2_HOST`).
    pub engine2_host: String,
    /// engine2 over TLS, `tcp://127.0.0.1:<port>` (`DOCKEXEC_TEST_TLS_HOST`); client
    /// certificates are required.
    pub tls_host: String,
    /// A `DOCKER_CERT_PATH` dir (`ca.pem`, `cert.pem`, `key.pem`) that works
    /// (`DOCKEXEC_TEST_TLS_CERTS`).
    pub tls_certs: PathBuf,
    /// The same layout with another CA's `ca.pem` (the client cert and key are valid): only
    /// the CA is wrong (`DOCKEXEC_TEST_WRONG_CA_CERTS`).
    pub wrong_ca_certs: PathBuf,
    /// `ssh://root@127.0.0.1:<port>/<engine2 socket>` (`DOCKEXEC_TEST_SSH_HOST`).
    pub ssh_host: String,
    /// An `ssh -F` config for that host: key, known_hosts, `StrictHostKeyChecking yes`,
    /// `BatchMode yes` (`DOCKEXEC_TEST_SSH_CONFIG`).
    pub ssh_config: PathBuf,
    /// The client's private key (`DOCKEXEC_TEST_SSH_KEY`).
    pub ssh_key: PathBuf,
    /// A known_hosts file holding the sshd's host key (`DOCKEXEC_TEST_SSH_KNOWN_HOSTS`).
    pub ssh_known_hosts: PathBuf,
    /// `ssh://root@127.0.0.1:<port>`, without the socket path, as the docker CLI takes it
    /// (`DOCKEXEC_TEST_SSH_HOST_CLI`). It reaches engine2 too: the sshd sets `DOCKER_HOST`
    /// to engine2's socket for its sessions, so a plain `docker system dial-stdio` never lands
    /// on the shared daemon.
    pub ssh_host_cli: String,
    /// A dir holding an `ssh` that runs the system ssh with `-F` [`ssh_config`]: put it first
    /// in a child's `PATH` to make a plain `ssh` (the docker CLI's, the library's default)
    /// use the test key and known_hosts (`DOCKEXEC_TEST_SSH_BIN_DIR`). ssh takes `~` from
    /// the passwd entry, not `$HOME`, so a temp `HOME` cannot do this.
    ///
    /// [`ssh_config`]: TestEngines::ssh_config
    pub ssh_bin_dir: PathBuf,
    // --- Podman (issue 17) ---
    /// The rootful Podman service's socket (`DOCKEXEC_TEST_PODMAN_SOCK`); `None` when
    /// test-env.sh ran with `DOCKEXEC_TEST_PODMAN=0` (see [`TestEngines::podman`]).
    pub podman_sock: Option<PathBuf>,
    /// The same as a `DOCKER_HOST` value, `unix://...` (`DOCKEXEC_TEST_PODMAN_HOST`).
    pub podman_host: Option<String>,
    /// A rootless Podman service on this cgroup v1 machine, with no images
    /// (`DOCKEXEC_TEST_PODMAN_ROOTLESS_HOST`).
    pub podman_rootless_host: Option<String>,
    // --- end Podman ---
}

/// `${TMPDIR:-/tmp}/dockexec-test-env/engines.env`, as scripts/test-env.sh spells it (an
/// empty `TMPDIR` counts as unset).
pub fn engines_env_path() -> PathBuf {
    let tmp = std::env::var_os("TMPDIR")
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "/tmp".into());
    Path::new(&tmp)
        .join("dockexec-test-env")
        .join("engines.env")
}

/// True when `CI` says this is a CI run (the values scripts/test.sh accepts).
pub fn in_ci() -> bool {
    matches!(
        std::env::var("CI").as_deref(),
        Ok("true" | "TRUE" | "True" | "1" | "yes")
    )
}

/// The engines of the test environment; `None` when `engines.env` is missing, except in CI.
///
/// # Panics
///
/// In CI when the file is missing, and always when it is present but unreadable or lacks a
/// key: a broken environment fails loudly.
pub fn test_engines() -> Option<TestEngines> {
    let file = engines_env_path();
    match std::fs::read_to_string(&file) {
        Ok(text) => Some(parse_engines_env(&text, &file)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !in_ci() => {
            eprintln!(
                "SKIP: {} is missing (run scripts/test-env.sh to start the remote test engines)",
                file.display()
            );
            None
        }
        Err(e) => panic!(
            "cannot read {} ({e}){}: run scripts/test-env.sh, which starts the remote test \
             engines and writes it",
            file.display(),
            if in_ci() { " and CI is set" } else { "" }
        ),
    }
}

/// Parses the `KEY=VALUE` lines of `engines.env` (`#` comments, blank lines ignored).
///
/// # Panics
///
/// When a key is missing or empty (`file` names the file in the message).
pub fn parse_engines_env(text: &str, file: &Path) -> TestEngines {
    let get = |key: &str| -> String {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| {
                panic!(
                    "{} has no {key}: rerun scripts/test-env.sh (an older version wrote it?)",
                    file.display()
                )
            })
    };
    // Optional: test-env.sh leaves Podman out with DOCKEXEC_TEST_PODMAN=0.
    let maybe = |key: &str| -> Option<String> {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    TestEngines {
        file: file.to_path_buf(),
        engine2_sock: get("DOCKEXEC_TEST_ENGINE2_SOCK").into(),
        engine2_host: get("DOCKEXEC_TEST_ENGINE2_HOST"),
        tls_host: get("DOCKEXEC_TEST_TLS_HOST"),
        tls_certs: get("DOCKEXEC_TEST_TLS_CERTS").into(),
        wrong_ca_certs: get("DOCKEXEC_TEST_WRONG_CA_CERTS").into(),
        ssh_host: get("DOCKEXEC_TEST_SSH_HOST"),
        ssh_config: get("DOCKEXEC_TEST_SSH_CONFIG").into(),
        ssh_key: get("DOCKEXEC_TEST_SSH_KEY").into(),
        ssh_known_hosts: get("DOCKEXEC_TEST_SSH_KNOWN_HOSTS").into(),
        ssh_host_cli: get("DOCKEXEC_TEST_SSH_HOST_CLI"),
        ssh_bin_dir: get("DOCKEXEC_TEST_SSH_BIN_DIR").into(),
        podman_sock: maybe("DOCKEXEC_TEST_PODMAN_SOCK").map(PathBuf::from),
        podman_host: maybe("DOCKEXEC_TEST_PODMAN_HOST"),
        podman_rootless_host: maybe("DOCKEXEC_TEST_PODMAN_ROOTLESS_HOST"),
    }
}

impl TestEngines {
    /// The Podman service's `DOCKER_HOST` value; `None` (with a SKIP line) when engines.env
    /// names none, except in CI, where that panics: the Podman lane never passes as a skip.
    ///
    /// # Panics
    ///
    /// In CI when engines.env has no `DOCKEXEC_TEST_PODMAN_HOST`.
    pub fn podman(&self) -> Option<String> {
        if self.podman_host.is_none() {
            assert!(
                !in_ci(),
                "{} has no DOCKEXEC_TEST_PODMAN_HOST and CI is set: run scripts/test-env.sh \
                 without DOCKEXEC_TEST_PODMAN=0",
                self.file.display()
            );
            eprintln!(
                "SKIP: {} names no Podman (test-env.sh ran with DOCKEXEC_TEST_PODMAN=0)",
                self.file.display()
            );
        }
        self.podman_host.clone()
    }

    /// `GET path` on engine2's unix socket with std only; returns (HTTP status, body).
    /// `Connection: close` and no chunked bodies expected: for small answers such as
    /// `/_ping` (a chunked body comes back with its chunk framing).
    pub fn engine2_get(&self, path: &str) -> std::io::Result<(u16, String)> {
        let mut s = UnixStream::connect(&self.engine2_sock)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.set_write_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: engine2\r\nConnection: close\r\n\r\n"
        )?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let raw = String::from_utf8_lossy(&raw);
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("not an HTTP answer: {head:?}"),
                )
            })?;
        Ok((status, body.to_string()))
    }

    /// Runs the docker CLI against the Podman service (its Docker-compatible socket); returns
    /// (success, stdout), or (false, "") when engines.env names no Podman.
    pub fn podman_docker(&self, args: &[&str]) -> (bool, String) {
        match &self.podman_host {
            Some(host) => cli_at(host, args),
            None => (false, String::new()),
        }
    }

    /// Runs the docker CLI against engine2 (`--host unix://...`); returns (success, stdout).
    pub fn engine2_docker(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("docker")
            // The test's own engine settings must not redirect or break this CLI call.
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .arg("--host")
            .arg(&self.engine2_host)
            .args(args)
            .output()
            .expect("run the docker CLI");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )
    }
}

/// The docker CLI against `host`, whatever the test's own engine settings; (success, stdout).
fn cli_at(host: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("docker")
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .arg("--host")
        .arg(host)
        .args(args)
        .output()
        .expect("run the docker CLI");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

// ---- gVisor (issue 22) ----

/// The gVisor facts of `engines.env`: the daemon that has runsc registered.
#[derive(Debug, Clone)]
pub struct TestGvisor {
    /// The daemon with runsc registered, as a `DOCKER_HOST` value
    /// (`DOCKEXEC_TEST_GVISOR_HOST`): engine2's unix socket.
    pub host: String,
    /// The runtime's registered name, `runsc` (`DOCKEXEC_TEST_GVISOR_RUNTIME`).
    pub runtime: String,
}

/// The gVisor facts of the test environment, as [`test_engines`] reads the rest: `None` when
/// `engines.env` is missing or lacks them (an older test-env.sh wrote it), except in CI,
/// where that panics.
pub fn test_gvisor() -> Option<TestGvisor> {
    let file = engines_env_path();
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(_) => return test_engines().and(None),
    };
    let get = |key: &str| {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    match (
        get("DOCKEXEC_TEST_GVISOR_HOST"),
        get("DOCKEXEC_TEST_GVISOR_RUNTIME"),
    ) {
        (Some(host), Some(runtime)) => Some(TestGvisor { host, runtime }),
        _ if in_ci() => panic!(
            "{} has no DOCKEXEC_TEST_GVISOR_* lines and CI is set: rerun scripts/test-env.sh, \
             which registers runsc on engine2",
            file.display()
        ),
        _ => {
            eprintln!(
                "SKIP: {} has no DOCKEXEC_TEST_GVISOR_* lines (rerun scripts/test-env.sh)",
                file.display()
            );
            None
        }
    }
}

// ---- end of gVisor ----
