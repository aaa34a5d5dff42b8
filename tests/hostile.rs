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

/// Issue 9, defect 3 as written: a process left by one block swaps `workspace/sub` between a
/// directory and a link to a host directory while blocks named `sub/x.py` run in a loop. The
/// host once wrote `x.py` through the link, outside the workspace, with its own rights; it
/// now never follows a link the container can plant, so the host directory keeps exactly what
/// it had (the blocks themselves may fail, which is fine). The code files are deleted after
/// each block, so the clean-up is raced too: it must never delete the host's own `x.py`.
#[test]
fn a_symlink_swap_in_the_workspace_never_makes_the_host_write_outside_it() {
    common::watchdog(Duration::from_secs(240), || {
        let outside = common::TempDir::new("hostile-outside");
        let canary = outside.path().join("x.py");
        std::fs::write(&canary, "canary").unwrap();
        let (mut b, _guard) = common::case_builder("hostile-swap");
        b.delete_code_files(true);
        let ex = b.start().unwrap();
        // The swap is one atomic `renameat2(RENAME_EXCHANGE)` of `sub` (a directory) with
        // `alt` (the link), in a tight loop: `sub` always exists, half the time as the link.
        let swapper = ex
            .spawn(&CodeBlock::python(format!(
                r#"import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
os.mkdir("sub")
os.symlink({:?}, "alt")
print("swapping", flush=True)
while True:
    libc.renameat2(-100, b"sub", -100, b"alt", 2)
"#,
                outside.path().display().to_string()
            )))
            .unwrap();
        common::await_stdout(&swapper.chunks(), "swapping", Duration::from_secs(20));
        // Before the fix the host wrote outside within the first ~600 attempts (most of them
        // refused at once, as `sub` was the link when checked); each attempt that gets past
        // the check runs a block.
        let runs: usize = std::env::var("DOCKEXEC_SWAP_RUNS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(2000);
        let bound = std::time::Instant::now() + Duration::from_secs(60);
        let block = CodeBlock::python("# filename: sub/x.py\nprint(1)");
        let mut errors = 0;
        for i in 0..runs {
            if ex.run(&block).is_err() {
                errors += 1;
            }
            let there = common::files_under(outside.path());
            assert!(
                there == [std::path::Path::new("x.py")]
                    && std::fs::read_to_string(&canary).is_ok_and(|c| c == "canary"),
                "run {i}: the host wrote or deleted outside the workspace: {there:?} ({errors} runs failed)"
            );
            if std::time::Instant::now() > bound {
                break;
            }
        }
        swapper.cancel().unwrap();
        let _ = swapper.wait_timeout(Duration::from_secs(20)).unwrap();
        ex.stop().unwrap();
    });
}
