//! gVisor as a runtime (issue 22): `ExecutorBuilder::runtime` asks for an OCI runtime by name;
//! one the daemon has not registered is a clear error that creates nothing; `runsc` really
//! runs the blocks under gVisor's kernel.
//!
//! The contract suite itself runs under gVisor as a lane of scripts/test.sh
//! (`DOCKEXEC_TEST_RUNTIME=runsc`, which `common::builder` honours); what differs there is
//! listed once, in `common::Differs`.

use crate::common;

use dockexec::{CodeBlock, Engine, EngineInfo, Error, Runtime};

/// The host's kernel release, as `uname -r` says it.
fn host_kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .expect("read the host's kernel release")
        .trim()
        .to_string()
}

#[test]
fn a_runtime_the_daemon_lacks_is_a_clear_error_that_creates_nothing() {
    let (mut b, guard) = common::case_builder("gvisor-missing-runtime");
    b.runtime("dockexec-test-no-such-runtime");
    let err = b.start().expect_err("no daemon has this runtime");
    let msg = err.to_string();
    assert!(
        matches!(&err, Error::RuntimeNotFound { runtime, .. }
            if runtime.name() == "dockexec-test-no-such-runtime"),
        "{err:?}"
    );
    // It names the runtime, the runtimes the daemon has, and how to register one.
    for want in [
        "dockexec-test-no-such-runtime",
        "runc",
        "daemon.json",
        "runtimes",
    ] {
        assert!(msg.contains(want), "{want:?} not in: {msg}");
    }
    assert!(guard.containers().is_empty(), "{:?}", guard.containers());
}

#[test]
fn gvisor_on_a_daemon_without_runsc_says_how_to_install_it() {
    // The shared daemon has no runsc (scripts/test-env.sh registers it on engine2 only).
    let engine = Engine::unix("/var/run/docker.sock");
    let info = EngineInfo::probe(&engine).expect("the shared daemon answers");
    if info.has_runtime("runsc") {
        eprintln!("SKIP: the shared daemon has runsc registered: no daemon without it here");
        return;
    }
    let mut b = common::builder();
    b.engine(engine).runtime(Runtime::Gvisor);
    let err = b.start().expect_err("the shared daemon has no runsc");
    let msg = err.to_string();
    for want in [
        "runsc",
        "apt install runsc",
        "runtimeArgs",
        "--network=none",
    ] {
        assert!(msg.contains(want), "{want:?} not in: {msg}");
    }
    for has in &info.runtimes {
        assert!(msg.contains(has.as_str()), "{has:?} not in: {msg}");
    }
}

/// Removes engine2's containers of one case label when dropped (the CLI helpers of
/// `common` talk to the suite's daemon, which need not be engine2).
struct Engine2Guard<'a>(&'a common::TestEngines, String);

impl Drop for Engine2Guard<'_> {
    fn drop(&mut self) {
        let filter = format!("label={}={}", common::CASE_LABEL, self.1);
        let (_, ids) = self.0.engine2_docker(&["ps", "-aq", "--filter", &filter]);
        for id in ids.lines().filter(|l| !l.is_empty()) {
            let _ = self.0.engine2_docker(&["rm", "-f", id]);
        }
    }
}

#[test]
fn runsc_runs_the_blocks_under_gvisors_kernel() {
    let (Some(engines), Some(gvisor)) = (common::test_engines(), common::test_gvisor()) else {
        return;
    };
    let case = common::unique_name("gvisor-runs");
    let _guard = Engine2Guard(&engines, case.clone());
    let mut b = common::builder();
    b.engine(Engine::host(&gvisor.host).expect("the gVisor host"))
        .runtime(gvisor.runtime.as_str())
        .label(common::CASE_LABEL, case.clone());
    let ex = b.start().expect("start under runsc");
    let (_, runtime) = engines.engine2_docker(&[
        "inspect",
        "-f",
        "{{.HostConfig.Runtime}}",
        ex.container_id(),
    ]);
    assert_eq!(runtime, "runsc");
    let out = ex.run(&CodeBlock::sh("uname -r")).unwrap();
    assert!(out.status.success(), "{out:?}");
    let kernel = out.stdout_lossy().trim().to_string();
    assert_ne!(
        kernel,
        host_kernel(),
        "a block under runsc saw the host's kernel"
    );
    let out = ex
        .run(&CodeBlock::python(
            "import platform; print(platform.release())",
        ))
        .unwrap();
    assert_eq!(out.stdout_lossy().trim(), kernel, "{out:?}");
    ex.stop().unwrap();
}

#[test]
fn the_gvisor_lane_really_runs_under_gvisor() {
    if !common::under_gvisor() {
        eprintln!("SKIP: not the gVisor lane (DOCKEXEC_TEST_RUNTIME is not runsc)");
        return;
    }
    let (b, _guard) = common::case_builder("gvisor-lane");
    let ex = b.start().expect("start under the lane's runtime");
    let (_, runtime) = common::docker(&[
        "inspect",
        "-f",
        "{{.HostConfig.Runtime}}",
        ex.container_id(),
    ]);
    assert_eq!(runtime, "runsc");
    let out = ex.run(&CodeBlock::sh("uname -r")).unwrap();
    assert_ne!(out.stdout_lossy().trim(), host_kernel(), "{out:?}");
    ex.stop().unwrap();
}

/// Under gVisor the memory and pids limits bound the whole sandbox (see
/// `common::Differs::LimitsEndTheSandbox`): a fork bomb and a memory hog never succeed, end
/// within their timeout, and leave another executor of the same daemon working.
#[test]
fn a_fork_bomb_and_a_memory_hog_end_only_their_own_sandbox() {
    if !common::under_gvisor() {
        eprintln!("SKIP: not the gVisor lane (limits:: and sandbox:: check this under runc)");
        return;
    }
    common::watchdog(std::time::Duration::from_secs(240), || {
        let (b, _bystander_guard) = common::case_builder("gvisor-bystander");
        let bystander = b.start().unwrap();
        let attacks = [
            ("gvisor-forkbomb", CodeBlock::sh("b() { b | b & }; b; wait")),
            (
                "gvisor-hog",
                CodeBlock::python(
                    "blocks = []\nwhile True:\n    blocks.append(bytearray(64 << 20))",
                ),
            ),
        ];
        for (case, block) in attacks {
            let (mut b, _guard) = common::case_builder(case);
            b.timeout(Some(std::time::Duration::from_secs(20)));
            let ex = b.start().unwrap();
            // The hog never succeeds; the bomb may also fizzle (its forks fail at the limit
            // and its shell's `wait` returns). Either way it ends within its timeout.
            match ex.run(&block) {
                Ok(out) if case == "gvisor-hog" => assert!(!out.status.success(), "{out:?}"),
                Ok(out) => eprintln!("{case}: {}", out.status),
                Err(e) => eprintln!("{case}: the sandbox ended: {e}"),
            }
            let out = bystander.run(&CodeBlock::sh("echo fine")).unwrap();
            assert_eq!(out.stdout, b"fine\n", "{case}: the bystander");
            drop(ex);
        }
        bystander.stop().unwrap();
    });
}

/// The other way a container ends under runsc: killed from outside. The exec-strategy block
/// ends `lost` at once (here runsc ends the exec's stream itself; for a container that ends
/// from inside it does not, and the executor's container watch does it: see
/// hostile::a_root_block_can_end_its_own_container_and_the_executor_says_so), later calls say
/// `ContainerGone`, and `stop()` is quick.
#[test]
fn an_exec_block_sees_its_container_killed_from_outside_under_runsc() {
    let (Some(engines), Some(gvisor)) = (common::test_engines(), common::test_gvisor()) else {
        return;
    };
    let case = common::unique_name("gvisor-killed");
    let _guard = Engine2Guard(&engines, case.clone());
    let mut b = common::builder();
    b.engine(Engine::host(&gvisor.host).expect("the gVisor host"))
        .runtime(gvisor.runtime.as_str())
        .strategy(dockexec::Strategy::Exec)
        .timeout(Some(std::time::Duration::from_secs(60)))
        .label(common::CASE_LABEL, case.clone());
    let ex = b.start().expect("start under runsc");
    let running = ex
        .spawn(&CodeBlock::sh("echo up; sleep 50; echo survived"))
        .unwrap();
    common::await_stdout(&running.chunks(), "up", std::time::Duration::from_secs(20));
    let t = std::time::Instant::now();
    let (ok, said) = engines.engine2_docker(&["kill", ex.container_id()]);
    assert!(ok, "docker kill: {said}");
    let out = running
        .wait_timeout(std::time::Duration::from_secs(20))
        .unwrap()
        .expect("the block still ran 20 s after its container was killed")
        .clone();
    assert!(out.status.lost(), "{out:?}");
    assert!(!out.stdout_lossy().contains("survived"), "{out:?}");
    eprintln!("seen lost {:?} after the kill", t.elapsed());
    match ex.run(&CodeBlock::sh("echo next")) {
        Err(Error::ContainerGone { .. }) => {}
        other => panic!("expected ContainerGone, got {other:?}"),
    }
    let t = std::time::Instant::now();
    ex.stop().unwrap();
    assert!(
        t.elapsed() < std::time::Duration::from_secs(10),
        "stop() took {:?}",
        t.elapsed()
    );
}
