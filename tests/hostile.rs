//! Blocks that attack their own sandbox. Each attack is a regression test, run under every
//! strategy (`DOCKEXEC_TEST_STRATEGY`).
mod common;

use std::time::Duration;

use dockexec::CodeBlock;

const LIMIT: Duration = Duration::from_secs(60);

/// `kill -9 -1` as a non-root user kills every process that user may signal. When the
/// container's own keeper ran as the blocks' user, that ended the container, and every later
/// block failed; the keeper (and the agent) now run as root, so only the user's processes die.
#[test]
fn a_non_root_block_that_kills_everything_it_can_see_ends_only_its_users_processes() {
    common::watchdog(LIMIT, || {
        let (mut b, _guard) = common::case_builder("hostile-kill-all");
        b.user("65534:65534");
        let ex = b.start().unwrap();
        let bystander = ex.spawn(&CodeBlock::sh("echo up; sleep 1999")).unwrap();
        common::await_stdout(&bystander.chunks(), "up", Duration::from_secs(20));
        // kill(-1) spares the caller: the shell lives on to say so.
        let out = ex.run(&CodeBlock::sh("kill -9 -1; echo survived")).unwrap();
        common::assert_success(&out);
        assert_eq!(out.stdout_lossy(), "survived\n", "{out:?}");
        let b = bystander.wait().unwrap();
        assert!(!b.status.success() && !b.status.lost(), "{b:?}");
        let next = ex.run(&CodeBlock::sh("echo next")).unwrap();
        common::assert_success(&next);
        assert_eq!(next.stdout_lossy(), "next\n");
        ex.stop().unwrap();
    });
}

/// Issue 9, defect 1: a block wrote `1` into its own `.pid` marker, and the (root) kill
/// script then killed session 1, so the container died with every later block. The kill now
/// trusts a recorded session only for a live process that is not root's (and the agent has no
/// markers at all).
#[test]
fn a_block_that_forges_its_pid_marker_ends_only_itself() {
    common::watchdog(LIMIT, || {
        let (mut b, _guard) = common::case_builder("hostile-forged-pid");
        b.timeout(Some(Duration::from_secs(1)));
        let ex = b.start().unwrap();
        let out = ex
            .run(&CodeBlock::sh(
                r#"t=${DOCKEXEC_EXECUTION%.}; echo 1 > /workspace/.dockexec/$t.pid 2>/dev/null; sleep 99"#,
            ))
            .unwrap();
        assert!(out.status.timed_out(), "{out:?}");
        let next = ex.run(&CodeBlock::sh("echo next")).unwrap();
        common::assert_success(&next);
        assert_eq!(next.stdout_lossy(), "next\n");
        ex.stop().unwrap();
    });
}
