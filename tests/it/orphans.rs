//! Orphans and the dead-man's switch (issue 9 §4, issue 12): a SIGKILLed owner's container
//! ends and is removed by itself, with no gc run by anyone, under every strategy and on
//! busybox; `gc` removes only containers that are no longer running, never a live one (not
//! even from another PID namespace, issue 9 defect 2), unless forced. The owners are child
//! processes (examples/sigkill_owner.rs).
//!
//! `start()` sweeps containers that are no longer running (the library's default), but the
//! suite's builder turns that off (`gc_orphans(false)`): the tests here make orphans on
//! purpose, and a concurrent test's `start()` would take them. The tests of the sweep ask for
//! it and run one at a time; such a container can still be swept by another process's
//! `start()` before the test's own gc, if one runs on this daemon at that moment.
use crate::common;

use std::time::{Duration, Instant};

use dockexec::{CodeBlock, GcOptions, Strategy};

const LIMIT: Duration = Duration::from_secs(60);
/// How long a SIGKILLed owner's container may take to vanish: the switch takes well under a
/// second; the rest is slack for a loaded machine.
const VANISH: Duration = Duration::from_secs(10);

use common::{Owner, OwnerSetup as Setup};

const PYTHON_EXEC: Setup = Setup::python("exec");

/// After a sweep: the owner's container and temporary work dir are gone.
fn assert_swept(owner: &Owner, context: &str) {
    assert!(
        !common::container_exists(&owner.container),
        "the orphan {} is still there: {context}",
        owner.container
    );
    assert!(
        !owner.work_dir.exists(),
        "the orphan's temporary work dir {} is still there: {context}",
        owner.work_dir.display()
    );
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
    let mut owner = Owner::start(case, setup);
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
    let out = std::process::Command::new(bin)
        .args(args)
        .output()
        .expect("run dockexec");
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
    if std::process::Command::new("unshare")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: unshare(1) is not installed");
        return;
    }
    let (b, guard) = common::case_builder("defect2");
    common::watchdog(LIMIT * 2, move || {
        let ex = b.start().unwrap();
        let running = ex.spawn(&CodeBlock::sh("echo up\nsleep 1887\n")).unwrap();
        common::await_stdout(&running.chunks(), "up", Duration::from_secs(20));

        let bin = env!("CARGO_BIN_EXE_dockexec");
        let out = std::process::Command::new("unshare")
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
        let mut owner = Owner::start("orphan-kept", setup);
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
        assert_swept(&owner, "gc");
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
        let mut owner = Owner::start("orphan-cli", setup);
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
        assert_swept(&owner, &said);
    });
}

#[test]
fn gc_leaves_running_containers_alone_whoever_owns_them() {
    let _serial = common::serial();
    let (b, _guard) = common::case_builder("orphan-live-self");
    common::watchdog(LIMIT * 2, move || {
        // A live owner in another process, and one in this process with a block running.
        let owner = Owner::start("orphan-live", PYTHON_EXEC);
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
        assert!(mine.work_dir().unwrap().is_dir());
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
            // Named, as dockexec names them on Podman: Podman's own defaults (1048576) are
            // above this machine's hard limits, where root lacks CAP_SYS_RESOURCE.
            args.extend(["--ulimit", "nproc=1024", "--ulimit", "nofile=1024"]);
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
    // The library's default, which the suite's builder turns off.
    sweeping.gc_orphans(true).strategy(Strategy::Exec);
    common::watchdog(LIMIT * 2, move || {
        let setup = Setup {
            keep: true,
            ..PYTHON_EXEC
        };
        let mut owner = Owner::start("orphan-start", setup);
        owner.sigkill();
        assert!(common::eventually(VANISH, || owner.state().as_deref() == Some("exited")));
        let ex = quiet.start().unwrap();
        assert!(
            common::container_exists(&owner.container),
            "start() with gc_orphans(false) removed an orphan"
        );
        ex.stop().unwrap();
        let ex = sweeping.start().unwrap();
        assert_swept(&owner, "start() with the default gc_orphans(true)");
        assert!(common::container_exists(ex.container_id()));
        ex.stop().unwrap();
    });
}

/// A live owner's kept container, killed from outside, is spared by gc (and so by every other
/// executor's `start()`): its owner may still restart it. Seen failing before the owner labels
/// could spare one: gc removed it and `restart()` said `ContainerGone`.
#[test]
fn gc_spares_the_stopped_container_of_a_live_owner_until_forced() {
    let _serial = common::serial();
    common::watchdog(LIMIT * 2, || {
        let (mut b, guard) = common::case_builder("orphan-live-kept");
        b.auto_remove(false);
        let ex = b.start().unwrap();
        assert!(common::docker(&["kill", ex.container_id()]).0);
        assert!(common::eventually(LIMIT, || {
            common::docker(&["inspect", "-f", "{{.State.Status}}", ex.container_id()])
                .1
                .trim()
                == "exited"
        }));
        let removed = dockexec::gc_with(&options(&guard, false)).unwrap();
        assert!(removed.is_empty(), "gc removed a live owner's container");
        ex.restart().unwrap();
        let out = ex.run(&CodeBlock::sh("echo back")).unwrap();
        assert_eq!(out.stdout_lossy(), "back\n");
        // Forced, gc takes a stopped one all the same.
        assert!(common::docker(&["kill", ex.container_id()]).0);
        assert!(common::eventually(LIMIT, || {
            dockexec::gc_with(&options(&guard, true)).unwrap()
                == vec![ex.container_id().to_string()]
        }));
        let _ = ex.stop();
    });
}

/// The suite's own executors leave other tests' orphans alone: a container made by hand,
/// exited, with an owner that cannot be alive, outlives a `start()` of the suite's builder.
/// (Before, every test's `start()` swept it: the rehearsal's
/// `gc_removes_exited_and_long_created_…` waited 20 s for its exited container, gone.)
#[test]
fn the_suites_executors_sweep_no_other_tests_fixture() {
    let _serial = common::serial();
    let guard = common::CaseGuard::new("gc-fixture");
    common::watchdog(LIMIT, move || {
        let label = format!("{}={}", common::CASE_LABEL, guard.value);
        let executor = format!("dockexec.executor={}", common::unique_name("gc-fixture"));
        let bb = common::busybox();
        let (ok, out) = common::docker(&[
            "create",
            "--network",
            "none",
            "--label",
            &executor,
            "--label",
            "dockexec.test=1",
            "--label",
            &label,
            "--label",
            "dockexec.owner.pid=999999999",
            &bb,
            "true",
        ]);
        assert!(ok, "docker create: {out}");
        let fixture = out.trim().to_string();
        assert!(common::docker(&["start", &fixture]).0);
        assert!(common::eventually(Duration::from_secs(20), || {
            common::docker(&["inspect", "-f", "{{.State.Status}}", &fixture])
                .1
                .trim()
                == "exited"
        }));
        let (b, _guard) = common::case_builder("gc-fixture-start");
        let ex = b.start().unwrap();
        assert!(
            common::container_exists(&fixture),
            "a test's start() swept another test's fixture"
        );
        ex.stop().unwrap();
    });
}
