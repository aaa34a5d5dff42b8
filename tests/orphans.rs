//! Orphans: the container of an owner killed with SIGKILL stays behind, and `dockexec gc`,
//! `dockexec::gc(None)` or the next `start()` removes it; a live owner's container is never
//! touched. The owners are child processes (examples/sigkill_owner.rs).
//!
//! Every `start()` sweeps orphans by default, so the tests here run one at a time; an owner's
//! container can still be swept by another process's `start()` between the SIGKILL and the
//! check that it survived, if such a process runs on this daemon at that moment.
mod common;

use std::process::Command;
use std::time::Duration;

use dockexec::CodeBlock;

const LIMIT: Duration = Duration::from_secs(60);

/// A running owner process with its container.
struct Owner {
    child: common::ChildProc,
    container: String,
    /// Its temporary work dir, which a sweep removes with the container.
    work_dir: std::path::PathBuf,
    _guard: common::CaseGuard,
}

fn start_owner(case: &str) -> Owner {
    let guard = common::CaseGuard::new(case);
    let mut child = common::ChildProc::spawn(
        Command::new(common::example_bin("sigkill_owner"))
            .arg(&guard.value)
            .env("DOCKEXEC_TEST_IMAGE", common::image()),
    );
    let container = child.expect_line("container ", LIMIT);
    let work_dir = child.expect_line("workdir ", LIMIT).into();
    child.expect_line("ready", LIMIT);
    Owner {
        child,
        container,
        work_dir,
        _guard: guard,
    }
}

impl Owner {
    /// SIGKILLs the owner and reaps it (a zombie still has its pid and start time, so it
    /// would still count as alive); its container must survive.
    fn sigkill(&mut self) {
        common::send_signal(self.child.pid(), "KILL");
        let status = common::wait_child(&mut self.child.child, LIMIT).expect("the owner died");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        assert!(
            common::container_exists(&self.container),
            "the container of a SIGKILLed owner should still exist until a sweep"
        );
        if common::strategy() == dockexec::Strategy::Exec {
            let procs = common::processes_matching(&self.container, "sleep 1888");
            assert_eq!(procs.len(), 1, "its block still runs: {procs:?}");
        } else {
            // The agent lost its channel with the owner: it kills every block and exits.
            assert!(
                common::eventually(Duration::from_secs(10), || {
                    common::processes_matching(&self.container, "sleep 1888").is_empty()
                }),
                "the agent should kill the block of an owner that died: {:?}",
                common::processes_matching(&self.container, "sleep 1888")
            );
        }
        assert!(self.work_dir.is_dir(), "its work dir is left too");
    }

    /// After a sweep: container and temporary work dir gone.
    fn assert_swept(&self, context: &str) {
        assert!(
            !common::container_exists(&self.container),
            "the orphan {} is still there: {context}",
            self.container
        );
        assert!(
            !self.work_dir.exists(),
            "the orphan's temporary work dir {} is still there: {context}",
            self.work_dir.display()
        );
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        // A failed test must not leave the dead owner's work dir behind either.
        if self.work_dir.starts_with(std::env::temp_dir()) {
            let _ = std::fs::remove_dir_all(&self.work_dir);
        }
    }
}

fn run_gc_cli() -> (bool, String) {
    // The binary is built only with the `cli` feature; without it the library's gc stands in.
    let Some(bin) = option_env!("CARGO_BIN_EXE_dockexec") else {
        return match dockexec::gc(None) {
            Ok(ids) => (
                true,
                ids.iter().map(|id| format!("removed {id}\n")).collect(),
            ),
            Err(e) => (false, e.to_string()),
        };
    };
    let out = Command::new(bin)
        .arg("gc")
        .output()
        .expect("run dockexec gc");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[cfg(feature = "cli")]
#[test]
fn dockexec_gc_cli_removes_the_container_of_a_sigkilled_owner() {
    let _serial = common::serial();
    common::watchdog(LIMIT * 2, || {
        let mut owner = start_owner("orphan-cli");
        owner.sigkill();
        let (ok, said) = run_gc_cli();
        assert!(ok, "dockexec gc failed: {said}");
        assert!(
            said.contains(&format!("removed {}", owner.container)),
            "dockexec gc should name {}: {said}",
            owner.container
        );
        owner.assert_swept(&said);
        assert!(common::host_processes_matching("sleep 1888").is_empty());
    });
}

#[test]
fn gc_function_removes_the_container_of_a_sigkilled_owner() {
    let _serial = common::serial();
    common::watchdog(LIMIT * 2, || {
        let mut owner = start_owner("orphan-fn");
        owner.sigkill();
        let removed = dockexec::gc(None).unwrap();
        assert!(
            removed.contains(&owner.container),
            "gc(None) returned {removed:?}, not {}",
            owner.container
        );
        owner.assert_swept("gc(None)");
        // A second sweep has nothing of ours left to remove.
        assert!(!dockexec::gc(None).unwrap().contains(&owner.container));
    });
}

#[test]
fn gc_leaves_the_containers_of_live_owners_alone() {
    let _serial = common::serial();
    let (b, _guard) = common::case_builder("orphan-live-self");
    common::watchdog(LIMIT * 2, move || {
        // A live owner in another process, and one in this process with a block running.
        let mut owner = start_owner("orphan-live");
        let mine = b.start().unwrap();
        let running = mine.spawn(&CodeBlock::sh("echo up\nsleep 1889\n")).unwrap();
        common::await_stdout(&running.chunks(), "up", Duration::from_secs(20));

        let removed = dockexec::gc(None).unwrap();
        assert!(
            !removed.contains(&owner.container),
            "gc removed a live owner's container"
        );
        assert!(!removed.iter().any(|id| id == mine.container_id()));
        let (ok, said) = run_gc_cli();
        assert!(ok, "{said}");
        assert!(common::container_exists(&owner.container), "{said}");
        assert!(
            owner.work_dir.is_dir(),
            "gc removed a live owner's work dir"
        );
        assert!(common::container_exists(mine.container_id()), "{said}");
        assert!(
            mine.work_dir().is_dir(),
            "gc removed this process's work dir"
        );
        assert!(
            running.try_wait().unwrap().is_none(),
            "the block was disturbed"
        );
        assert_eq!(
            common::processes_matching(&owner.container, "sleep 1888").len(),
            1,
            "the live owner's block was disturbed"
        );
        // Still usable.
        let out = mine.run(&CodeBlock::sh("echo fine")).unwrap();
        assert!(out.status.success());
        running.cancel().unwrap();
        assert!(running.wait().unwrap().status.cancelled());
        mine.stop().unwrap();

        // Once the owner dies, the same sweep does remove it.
        owner.sigkill();
        assert!(dockexec::gc(None).unwrap().contains(&owner.container));
        owner.assert_swept("gc(None) after the owner died");
    });
}

#[test]
fn start_sweeps_orphans_unless_told_not_to() {
    let _serial = common::serial();
    let (mut quiet, _guard1) = common::case_builder("orphan-start-quiet");
    quiet.gc_orphans(false);
    let (sweeping, _guard2) = common::case_builder("orphan-start-sweep");
    common::watchdog(LIMIT * 2, move || {
        let mut owner = start_owner("orphan-start");
        owner.sigkill();
        let ex = quiet.start().unwrap();
        assert!(
            common::container_exists(&owner.container),
            "start() with gc_orphans(false) removed an orphan"
        );
        ex.stop().unwrap();
        let ex = sweeping.start().unwrap();
        owner.assert_swept("start() with the default gc_orphans(true)");
        assert!(common::container_exists(ex.container_id()));
        ex.stop().unwrap();
    });
}
