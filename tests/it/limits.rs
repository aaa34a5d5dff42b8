//! Resource limits: memory (the OOM killer), processes, CPUs.
use crate::common;

use std::time::Duration;

use dockexec::CodeBlock;

#[test]
fn the_oom_killer_is_reported() {
    if common::differs_here(
        "the_oom_killer_is_reported",
        common::Differs::LimitsEndTheSandbox,
    ) {
        return;
    }
    let mut b = common::builder();
    b.memory_limit(Some(64 * 1024 * 1024));
    let ex = b.start().unwrap();
    let out = ex
        .run(&CodeBlock::python(
            "print('allocating', flush=True)\nblocks = []\nwhile True:\n    blocks.append(bytearray(16 * 1024 * 1024))",
        ))
        .unwrap();
    assert!(!out.status.success(), "{}", out.status);
    assert_eq!(out.status.code(), Some(137), "{}", out.status);
    assert!(out.status.oom_killed(), "{}", out.status);
    assert!(!out.status.lost(), "the container lives on: {}", out.status);
    assert_eq!(out.stdout, b"allocating\n");
    // The executor is still usable.
    let again = ex.run(&CodeBlock::sh("echo fine")).unwrap();
    assert_eq!(again.stdout, b"fine\n");
}

#[test]
fn a_fork_bomb_meets_the_pids_limit_and_is_cancelled() {
    if common::differs_here(
        "a_fork_bomb_meets_the_pids_limit_and_is_cancelled",
        common::Differs::LimitsEndTheSandbox,
    ) {
        return;
    }
    let mut b = common::builder();
    b.pids_limit(Some(64)).timeout(Some(Duration::from_secs(3)));
    let ex = b.start().unwrap();
    let out = ex
        .run(&CodeBlock::sh("sleep 100 & b() { b | b & }; b; wait"))
        .unwrap();
    assert!(out.status.timed_out(), "{}", out.status);
    let left = common::watchdog(Duration::from_secs(30), {
        let id = ex.container_id().to_string();
        move || common::processes_matching(&id, "")
    });
    assert!(
        !left.iter().any(|p| p.contains("tmp_code")),
        "the bomb is gone: {left:?}"
    );
    assert_eq!(
        ex.run(&CodeBlock::sh("echo fine")).unwrap().stdout,
        b"fine\n"
    );
}
