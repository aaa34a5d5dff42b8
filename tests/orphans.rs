//! Orphans and the dead-man's switch (issue 9 §4, issue 12): a SIGKILLed owner's container
//! ends and is removed by itself, with no gc run by anyone, under every strategy and on
//! busybox; `gc` removes only containers that are no longer running, never a live one (not
//! even from another PID namespace, issue 9 defect 2), unless forced. The owners are child
//! processes (examples/sigkill_owner.rs).
//!
//! Every `start()` sweeps containers that are no longer running, so the tests whose owners
//! keep their ended container (`auto_remove(false)`) run one at a time; such a container can
//! still be swept by another process's `start()` before the test's own gc, if one runs on
//! this daemon at that moment.
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use dockexec::{CodeBlock, GcOptions, Strategy};

const LIMIT: Duration = Duration::from_secs(60);
/// How long a SIGKILLed owner's container may take to vanish: the switch takes well under a
/// second; the rest is slack for a loaded machine.
const VANISH: Duration = Duration::from_secs(10);

/// A running owner process with its container.
struct Owner {
    child: common::ChildProc,
    container: String,
    /// Its temporary work dir (a sweep removes it with a kept container).
    work_dir: std::path::PathBuf,
    guard: common::CaseGuard,
}

/// How the owner is started.
#[derive(Debug, Clone, Copy)]
struct Setup {
    image: &'static str,
    strategy: &'static str,
    /// `auto_remove(false)`: the ended container stays, for gc.
    keep: bool,
    restart: bool,
}

const PYTHON_EXEC: Setup = Setup {
    image: "python",
    strategy: "exec",
    keep: false,
    restart: false,
};

fn start_owner(case: &str, setup: Setup) -> Owner {
    let guard = common::CaseGuard::new(case);
    let image = match setup.image {
        "busybox" => common::busybox(),
        _ => common::image(),
    };
    let flag = |on: bool| if on { "1" } else { "0" };
    let mut child = common::ChildProc::spawn(
        Command::new(common::example_bin("sigkill_owner"))
            .arg(&guard.value)
            .env("DOCKEXEC_TEST_IMAGE", image)
            .env("DOCKEXEC_TEST_STRATEGY", setup.strategy)
            .env("DOCKEXEC_OWNER_KEEP", flag(setup.keep))
            .env("DOCKEXEC_OWNER_RESTART", flag(setup.restart)),
    );
    let container = child.expect_line("container ", LIMIT);
    let work_dir = child.expect_line("workdir ", LIMIT).into();
    child.expect_line("ready", LIMIT);
    Owner {
        child,
        container,
        work_dir,
        guard,
    }
}

impl Owner {
    /// SIGKILLs the owner and reaps it.
    fn sigkill(&mut self) {
        common::send_signal(self.child.pid(), "KILL");
        let status = common::wait_child(&mut self.child.child, LIMIT).expect("the owner died");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
    }

    /// The owner's container's state (`running`, `exited`, …), or `None` once it is gone.
    fn state(&self) -> Option<String> {
        let (ok, out) = common::docker(&["inspect", "-f", "{{.State.Status}}", &self.container]);
        ok.then(|| out.trim().to_string())
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
        // The switch removes the container, not the host's work dir: a test must not leave it.
        if self.work_dir.starts_with(std::env::temp_dir()) {
            let _ = std::fs::remove_dir_all(&self.work_dir);
        }
    }
}

/// Only this case's containers: a test must not sweep other tests' (or people's).
fn options(guard: &common::CaseGuard, force: bool) -> GcOptions {
    let mut o = GcOptions::default();
    o.force = force;
    o.labels
        .push(format!("{}={}", common::CASE_LABEL, guard.value));
    o
}

/// SIGKILLs an owner set up as `setup` and checks that its container and block vanish with
/// no gc; returns how long the container took to go.
fn owner_killed_leaves_nothing(case: &str, setup: Setup) -> Duration {
    let mut owner = start_owner(case, setup);
    assert_eq!(owner.state().as_deref(), Some("running"));
    let t0 = Instant::now();
    owner.sigkill();
    let gone = common::eventually(VANISH, || owner.state().is_none());
    let took = t0.elapsed();
    assert!(
        gone,
        "{setup:?}: the container of a SIGKILLed owner is still there after {took:?} \
         (state {:?}), with no gc",
        owner.state()
    );
    // With a local daemon the container's processes are this machine's: none is left.
    assert!(
        common::eventually(VANISH, || common::host_processes_matching("sleep 1888")
            .is_empty()),
        "{setup:?}: the block outlived its container: {:?}",
        common::host_processes_matching("sleep 1888")
    );
    assert!(owner.guard.containers().is_empty());
    eprintln!("{setup:?}: container gone {took:?} after the SIGKILL");
    took
}

#[test]
fn a_sigkilled_owners_container_goes_away_by_itself_exec() {
    let _serial = common::serial();
    common::watchdog(LIMIT * 2, || {
        owner_killed_leaves_nothing("deadman-exec", PYTHON_EXEC);
    });
}

#[test]
fn a_sigkilled_owners_container_goes_away_by_itself_agent() {
    let _serial = common::serial();
    common::watchdog(LIMIT * 2, || {
        let setup = Setup {
            strategy: "agent",
            ..PYTHON_EXEC
        };
        owner_killed_leaves_nothing("deadman-agent", setup);
    });
}

#[test]
fn a_sigkilled_owners_container_goes_away_by_itself_busybox() {
    let _serial = common::serial();
    common::watchdog(LIMIT * 2, || {
        let setup = Setup {
            image: "busybox",
            strategy: "auto",
            ..PYTHON_EXEC
        };
        owner_killed_leaves_nothing("deadman-busybox", setup);
    });
}

/// `restart()` must not lose the switch: the keeper outlives it.
#[test]
fn a_sigkilled_owners_container_goes_away_by_itself_after_a_restart() {
    let _serial = common::serial();
    common::watchdog(LIMIT * 2, || {
        for strategy in ["exec", "agent"] {
            let setup = Setup {
                strategy,
                restart: true,
                ..PYTHON_EXEC
            };
            owner_killed_leaves_nothing(&format!("deadman-restart-{strategy}"), setup);
        }
    });
}

#[cfg(feature = "cli")]
fn run_cli(args: &[&str]) -> (bool, String) {
    let bin = env!("CARGO_BIN_EXE_dockexec");
    let out = Command::new(bin).args(args).output().expect("run dockexec");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Issue 9, defect 2, as written: `unshare --pid --fork --mount-proc dockexec gc` removed a
/// live executor, its owner being invisible from the sweeper's PID namespace. Now gc never
/// removes a running container; `--force` does.
#[cfg(feature = "cli")]
#[test]
fn gc_from_another_pid_namespace_leaves_a_live_executor_and_force_removes_it() {
    let _serial = common::serial();
    if Command::new("unshare").arg("--version").output().is_err() {
        eprintln!("SKIPPED: unshare(1) is not installed");
        return;
    }
    let (b, guard) = common::case_builder("defect2");
    common::watchdog(LIMIT * 2, move || {
        let ex = b.start().unwrap();
        let running = ex.spawn(&CodeBlock::sh("echo up\nsleep 1887\n")).unwrap();
        common::await_stdout(&running.chunks(), "up", Duration::from_secs(20));

        let bin = env!("CARGO_BIN_EXE_dockexec");
        let out = Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", bin, "gc"])
            .output()
            .expect("run unshare");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() && said.contains("unshare:") {
            // No right to make namespaces here (not root, no user namespaces).
            eprintln!("SKIPPED: unshare cannot make a PID namespace here: {said}");
            ex.stop().unwrap();
            return;
        }
        assert!(
            out.status.success(),
            "gc in a new PID namespace failed: {said}"
        );
        assert!(
            !said.contains(ex.container_id()),
            "gc removed a live executor: {said}"
        );
        assert!(common::container_exists(ex.container_id()), "{said}");
        assert!(
            running.try_wait().unwrap().is_none(),
            "the block was disturbed: {said}"
        );
        let out = ex.run(&CodeBlock::sh("echo fine")).unwrap();
        assert_eq!(out.stdout_lossy(), "fine\n");

        // Told to, gc does remove it (only this case's, by label).
        let label = format!("{}={}", common::CASE_LABEL, guard.value);
        let (ok, said) = run_cli(&["gc", "--force", "--label", &label]);
        assert!(ok, "gc --force failed: {said}");
        assert!(
            said.contains(&format!("removed {}", ex.container_id())),
            "gc --force should name {}: {said}",
            ex.container_id()
        );
        assert!(!common::container_exists(ex.container_id()));
        let out = running.wait().unwrap();
        assert!(!out.status.success(), "{out:?}");
        let _ = ex.stop();
    });
}

#[test]
fn gc_removes_the_kept_container_of_a_sigkilled_owner_and_its_work_dir() {
    let _serial = common::serial();
    common::watchdog(LIMIT * 2, || {
        let setup = Setup {
            keep: true,
            ..PYTHON_EXEC
        };
        let mut owner = start_owner("orphan-kept", setup);
        owner.sigkill();
        // The switch ends it; auto_remove(false) keeps it, exited.
        assert!(
            common::eventually(VANISH, || owner.state().as_deref() == Some("exited")),
            "state {:?}",
            owner.state()
        );
        assert!(common::host_processes_matching("sleep 1888").is_empty());
        assert!(owner.work_dir.is_dir(), "its work dir is left too");
        let removed = dockexec::gc_with(&options(&owner.guard, false)).unwrap();
        assert_eq!(removed, vec![owner.container.clone()]);
        owner.assert_swept("gc");
        assert!(
            dockexec::gc_with(&options(&owner.guard, false))
                .unwrap()
                .is_empty()
        );
    });
}

#[cfg(feature = "cli")]
#[test]
fn dockexec_gc_cli_removes_the_kept_container_of_a_sigkilled_owner() {
    let _serial = common::serial();
    common::watchdog(LIMIT * 2, || {
        let setup = Setup {
            keep: true,
            ..PYTHON_EXEC
        };
        let mut owner = start_owner("orphan-cli", setup);
        owner.sigkill();
        assert!(common::eventually(VANISH, || owner.state().as_deref() == Some("exited")));
        let label = format!("{}={}", common::CASE_LABEL, owner.guard.value);
        let (ok, said) = run_cli(&["gc", "--label", &label]);
        assert!(ok, "dockexec gc failed: {said}");
        assert!(
            said.contains(&format!("removed {}", owner.container)),
            "dockexec gc should name {}: {said}",
            owner.container
        );
        owner.assert_swept(&said);
    });
}

#[test]
fn gc_leaves_running_containers_alone_whoever_owns_them() {
    let _serial = common::serial();
    let (b, _guard) = common::case_builder("orphan-live-self");
    common::watchdog(LIMIT * 2, move || {
        // A live owner in another process, and one in this process with a block running.
        let owner = start_owner("orphan-live", PYTHON_EXEC);
        let mine = b.start().unwrap();
        let running = mine.spawn(&CodeBlock::sh("echo up\nsleep 1889\n")).unwrap();
        common::await_stdout(&running.chunks(), "up", Duration::from_secs(20));

        let removed = dockexec::gc(None).unwrap();
        assert!(
            !removed.contains(&owner.container),
            "gc removed a live owner's container"
        );
        assert!(!removed.iter().any(|id| id == mine.container_id()));
        assert!(common::container_exists(&owner.container));
        assert!(
            owner.work_dir.is_dir(),
            "gc removed a live owner's work dir"
        );
        assert!(common::container_exists(mine.container_id()));
        assert!(mine.work_dir().is_dir());
        assert!(
            running.try_wait().unwrap().is_none(),
            "the block was disturbed"
        );
        assert_eq!(
            common::processes_matching(&owner.container, "sleep 1888").len(),
            1,
            "the live owner's block was disturbed"
        );
        let out = mine.run(&CodeBlock::sh("echo fine")).unwrap();
        assert!(out.status.success());
        running.cancel().unwrap();
        assert!(running.wait().unwrap().status.cancelled());
        mine.stop().unwrap();
    });
}

/// Containers made by hand with dockexec's label: an exited one is an orphan at once, a
/// created one once [`dockexec::GC_CREATED_GRACE`] has passed (its owner may be about to
/// start it), a running one never (unless forced), whatever its labels say of its owner.
#[test]
fn gc_removes_exited_and_long_created_containers_and_only_force_takes_running_ones() {
    let _serial = common::serial();
    let guard = common::CaseGuard::new("gc-states");
    common::watchdog(LIMIT * 2, move || {
        let bb = common::busybox();
        let labels = [
            "--label",
            &format!("dockexec.executor={}", common::unique_name("gc-states")),
            "--label",
            "dockexec.test=1",
            "--label",
            &format!("{}={}", common::CASE_LABEL, guard.value),
            // An owner that cannot be alive: no label is trusted.
            "--label",
            "dockexec.owner.pid=999999999",
        ]
        .map(str::to_string);
        let create = |extra: &[&str]| -> String {
            let mut args = vec!["create", "--network", "none"];
            args.extend(labels.iter().map(String::as_str));
            args.push(&bb);
            args.extend(extra);
            let (ok, out) = common::docker(&args);
            assert!(ok, "docker create: {out}");
            out.trim().to_string()
        };
        let t0 = Instant::now();
        let created = create(&["true"]);
        let exited = create(&["true"]);
        let running = create(&["sleep", "1886"]);
        for id in [&exited, &running] {
            assert!(common::docker(&["start", id]).0);
        }
        assert!(common::eventually(Duration::from_secs(20), || {
            common::docker(&["inspect", "-f", "{{.State.Status}}", &exited])
                .1
                .trim()
                == "exited"
        }));

        let removed = dockexec::gc_with(&options(&guard, false)).unwrap();
        assert_eq!(removed, vec![exited.clone()], "only the exited one at once");
        assert!(common::container_exists(&created) && common::container_exists(&running));

        let grace = dockexec::GC_CREATED_GRACE + Duration::from_secs(2);
        std::thread::sleep(grace.saturating_sub(t0.elapsed()));
        let removed = dockexec::gc_with(&options(&guard, false)).unwrap();
        assert_eq!(removed, vec![created.clone()], "then the created one");
        assert!(common::container_exists(&running), "never a running one");

        let removed = dockexec::gc_with(&options(&guard, true)).unwrap();
        assert_eq!(removed, vec![running.clone()], "unless forced");
        assert!(guard.containers().is_empty());
    });
}

#[test]
fn start_sweeps_kept_orphans_unless_told_not_to() {
    let _serial = common::serial();
    let (mut quiet, _guard1) = common::case_builder("orphan-start-quiet");
    quiet.gc_orphans(false).strategy(Strategy::Exec);
    let (mut sweeping, _guard2) = common::case_builder("orphan-start-sweep");
    sweeping.strategy(Strategy::Exec);
    common::watchdog(LIMIT * 2, move || {
        let setup = Setup {
            keep: true,
            ..PYTHON_EXEC
        };
        let mut owner = start_owner("orphan-start", setup);
        owner.sigkill();
        assert!(common::eventually(VANISH, || owner.state().as_deref() == Some("exited")));
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
