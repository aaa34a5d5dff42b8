//! An executor's owner in a child process (`examples/sigkill_owner.rs`), for the tests that
//! SIGKILL it: the dead-man's switch, gc, and the temporary work dir's lock.

use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use super::{CaseGuard, ChildProc, busybox, docker, example_bin, image, send_signal, wait_child};

/// How long the owner may take to start, or to die once killed.
const LIMIT: Duration = Duration::from_secs(60);

/// How the owner is started.
#[derive(Debug, Clone, Copy)]
pub struct OwnerSetup {
    /// `"python"` (the test image) or `"busybox"`.
    pub image: &'static str,
    /// `DOCKEXEC_TEST_STRATEGY` for the owner: `exec`, `agent`, `auto`, or `""` for the
    /// default.
    pub strategy: &'static str,
    /// `auto_remove(false)`: the ended container stays, for gc.
    pub keep: bool,
    /// Restart the executor once before reporting ready.
    pub restart: bool,
}

impl OwnerSetup {
    /// The test image under `strategy`, nothing kept, no restart.
    pub const fn python(strategy: &'static str) -> OwnerSetup {
        OwnerSetup {
            image: "python",
            strategy,
            keep: false,
            restart: false,
        }
    }
}

/// A running owner process with its container and its running block.
pub struct Owner {
    pub child: ChildProc,
    pub container: String,
    /// Its temporary work dir (empty when the engine does not share this host's files).
    pub work_dir: PathBuf,
    /// Labels the owner's container with the case, and removes it whatever happens.
    pub guard: CaseGuard,
}

impl Owner {
    /// Starts an owner for `case` and waits until its block runs.
    pub fn start(case: &str, setup: OwnerSetup) -> Owner {
        Owner::start_env(case, setup, &[])
    }

    /// [`start`](Owner::start), with `env` set for the owner (e.g. a `DOCKER_HOST`).
    pub fn start_env(case: &str, setup: OwnerSetup, env: &[(String, String)]) -> Owner {
        let guard = CaseGuard::new(case);
        let image = match setup.image {
            "busybox" => busybox(),
            _ => image(),
        };
        let flag = |on: bool| if on { "1" } else { "0" };
        let mut child = ChildProc::spawn(
            Command::new(example_bin("sigkill_owner"))
                .arg(&guard.value)
                .env("DOCKEXEC_TEST_IMAGE", image)
                .env("DOCKEXEC_TEST_STRATEGY", setup.strategy)
                .env("DOCKEXEC_OWNER_KEEP", flag(setup.keep))
                .env("DOCKEXEC_OWNER_RESTART", flag(setup.restart))
                .envs(env.iter().map(|(k, v)| (k, v))),
        );
        let container = child.expect_line("container ", LIMIT);
        let work_dir: PathBuf = child.expect_line("workdir ", LIMIT).into();
        child.expect_line("ready", LIMIT);
        // Empty on an engine that does not share this host's files: no host dir is made.
        assert!(
            work_dir.as_os_str().is_empty() || work_dir.is_dir(),
            "{}",
            work_dir.display()
        );
        Owner {
            child,
            container,
            work_dir,
            guard,
        }
    }

    /// SIGKILLs the owner and reaps it.
    pub fn sigkill(&mut self) -> ExitStatus {
        send_signal(self.child.pid(), "KILL");
        let status = wait_child(&mut self.child.child, LIMIT).expect("the owner died");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        status
    }

    /// The owner's container's state (`running`, `exited`, …), or `None` once it is gone.
    pub fn state(&self) -> Option<String> {
        let (ok, out) = docker(&["inspect", "-f", "{{.State.Status}}", &self.container]);
        ok.then(|| out.trim().to_string())
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        // The switch removes the container, not the host's work dir: a test must not leave it.
        if self.work_dir.starts_with(std::env::temp_dir()) {
            let _ = std::fs::remove_dir_all(&self.work_dir);
        }
    }
}
