//! Blocks that attack their own sandbox. Each attack is a regression test, run under every
//! strategy (`DOCKEXEC_TEST_STRATEGY`).
use crate::common;

use std::time::Duration;

use dockexec::CodeBlock;

const LIMIT: Duration = Duration::from_secs(60);

/// The case's builder on the test image, or on the busybox one (no Python: the exec path
/// whatever the suite's strategy, with nothing but busybox `sh`).
fn case_builder(case: &str, busybox: bool) -> (dockexec::ExecutorBuilder, common::CaseGuard) {
    let (mut b, guard) = common::case_builder(case);
    if busybox {
        b.image(common::busybox())
            .strategy(dockexec::Strategy::Auto);
    }
    (b, guard)
}

/// `kill -9 -1` as a non-root user kills every process that user may signal. When the
/// container's own keeper ran as the blocks' user, that ended the container, and every later
/// block failed; the keeper (and the agent) now run as root, so only the user's processes die.
#[test]
fn a_non_root_block_that_kills_everything_it_can_see_ends_only_its_users_processes() {
    kill_all_as_nobody(false);
}

#[test]
fn a_non_root_block_that_kills_everything_it_can_see_ends_only_its_users_processes_in_busybox() {
    kill_all_as_nobody(true);
}

fn kill_all_as_nobody(busybox: bool) {
    common::watchdog(LIMIT, move || {
        let (mut b, _guard) = case_builder("hostile-kill-all", busybox);
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

/// Issue 9, defect 1 as written, as `nobody`: the block user owns nothing of the control plane.
#[test]
fn a_nobody_block_that_forges_its_pid_marker_ends_only_itself() {
    common::watchdog(LIMIT, || {
        let (mut b, _guard) = common::case_builder("hostile-forged-pid-nobody");
        b.user("65534:65534").timeout(Some(Duration::from_secs(1)));
        let ex = b.start().unwrap();
        let out = ex
            .run(&CodeBlock::sh(
                r#"t=${DOCKEXEC_EXECUTION%.}; echo 1 > /workspace/.dockexec/$t.pid 2>/dev/null; echo 1 > /run/dockexec/$t.pid 2>/dev/null; sleep 99"#,
            ))
            .unwrap();
        assert!(out.status.timed_out(), "{out:?}");
        let next = ex.run(&CodeBlock::sh("echo next")).unwrap();
        common::assert_success(&next);
        assert_eq!(next.stdout_lossy(), "next\n");
        ex.stop().unwrap();
    });
}

/// Issue 9, defect 1 variant: a FIFO planted where the kill script writes its `.cancel`
/// marker or reads the `.pid` one used to block the (root) kill forever, so the block outlived
/// its timeout and a stuck kill stayed behind. Now the kill reads nothing the block can
/// plant: the block's processes are gone when its timeout returns, and no kill is left.
#[test]
fn a_fifo_planted_in_place_of_a_marker_does_not_hang_the_kill() {
    fifo_in_place_of_a_marker(false);
}

#[test]
fn a_fifo_planted_in_place_of_a_marker_does_not_hang_the_kill_in_busybox() {
    fifo_in_place_of_a_marker(true);
}

fn fifo_in_place_of_a_marker(busybox: bool) {
    common::watchdog(LIMIT, move || {
        let (mut b, _guard) = case_builder("hostile-fifo", busybox);
        b.timeout(Some(Duration::from_secs(1)));
        let ex = b.start().unwrap();
        // Both marker names, where the markers were and where they are now (writable by the
        // block user since the kill runs as that user: the marker is a directory, so a FIFO in
        // its place only makes the mkdir fail).
        let plant = r#"t=${DOCKEXEC_EXECUTION%.}
for d in /workspace/.dockexec /run/dockexec; do
  for x in cancel pid; do rm -f "$d/$t.$x"; mkfifo "$d/$t.$x"; done
done 2>/dev/null
n=43; sleep "${n}21""#;
        let out = ex.run(&CodeBlock::sh(plant)).unwrap();
        assert!(out.status.timed_out(), "{out:?}");
        // The marker (4321) is built at run time, so the listing's own command line (and the
        // block's code) never contains it.
        let left = || {
            let mut p = common::processes_matching(ex.container_id(), "sleep 4321");
            p.extend(common::processes_matching(
                ex.container_id(),
                "dockexec-kill",
            ));
            p
        };
        assert!(
            common::eventually(Duration::from_secs(5), || left().is_empty()),
            "left behind: {:?}",
            left()
        );
        let next = ex.run(&CodeBlock::sh("echo next")).unwrap();
        common::assert_success(&next);
        assert_eq!(next.stdout_lossy(), "next\n");
        ex.stop().unwrap();
    });
}

/// Issue 9, defect 1 variant: tags were predictable (`<executor>_<n>`), and a `.cancel`
/// marker planted for a later tag made that block exit 137 before it started. No marker a
/// block can write is read any more (and tags carry a random part).
#[test]
fn markers_planted_for_later_blocks_do_not_end_them() {
    preplanted_markers(false);
}

#[test]
fn markers_planted_for_later_blocks_do_not_end_them_in_busybox() {
    preplanted_markers(true);
}

fn preplanted_markers(busybox: bool) {
    common::watchdog(LIMIT, move || {
        let (b, _guard) = case_builder("hostile-preplant", busybox);
        let ex = b.start().unwrap();
        let plant = r#"t=${DOCKEXEC_EXECUTION%.}; p=${t%_*}; n=${t##*_}
case $n in *[!0-9]*|'') n=0 ;; esac
i=1
while [ "$i" -le 20 ]; do
  for d in /workspace/.dockexec /run/dockexec; do
    echo > "$d/${p}_$((n + i)).cancel"; echo 1 > "$d/${p}_$((n + i)).pid"
  done 2>/dev/null
  i=$((i + 1))
done
echo planted"#;
        let out = ex.run(&CodeBlock::sh(plant)).unwrap();
        common::assert_success(&out);
        for k in 0..5 {
            let next = ex.run(&CodeBlock::sh("echo next")).unwrap();
            assert!(next.status.success(), "block {k} after the plant: {next:?}");
            assert_eq!(next.stdout_lossy(), "next\n");
        }
        ex.stop().unwrap();
    });
}

/// Issue 9, defect 1 variant: a block wrote the session id of another block of the same user
/// into its own `.pid` marker, and its own cancel then killed the other block. The kill now
/// finds a block by what only the exec itself has, never by what a block wrote.
#[test]
fn a_forged_pid_naming_another_block_does_not_let_a_cancel_kill_it() {
    forged_pid_of_another_block(false);
}

#[test]
fn a_forged_pid_naming_another_block_does_not_let_a_cancel_kill_it_in_busybox() {
    forged_pid_of_another_block(true);
}

fn forged_pid_of_another_block(busybox: bool) {
    common::watchdog(LIMIT, move || {
        let (b, _guard) = case_builder("hostile-forged-other", busybox);
        let ex = b.start().unwrap();
        let victim = ex.spawn(&CodeBlock::sh("echo pid=$$; sleep 1999")).unwrap();
        let seen = common::await_stdout(&victim.chunks(), "\n", Duration::from_secs(20));
        let pid: u32 = seen
            .trim()
            .strip_prefix("pid=")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("victim's pid: {seen:?}"));
        let attacker = ex
            .spawn(&CodeBlock::sh(format!(
                r#"t=${{DOCKEXEC_EXECUTION%.}}
for d in /workspace/.dockexec /run/dockexec; do echo {pid} > "$d/$t.pid"; done 2>/dev/null
echo planted; sleep 1999"#
            )))
            .unwrap();
        common::await_stdout(&attacker.chunks(), "planted", Duration::from_secs(20));
        attacker.cancel().unwrap();
        let a = attacker
            .wait_timeout(Duration::from_secs(20))
            .unwrap()
            .expect("the attacker is cancelled in time");
        assert!(a.status.cancelled(), "{a:?}");
        assert!(
            victim
                .wait_timeout(Duration::from_secs(3))
                .unwrap()
                .is_none(),
            "the attacker's cancel ended the victim: {:?}",
            victim.try_wait()
        );
        victim.cancel().unwrap();
        let v = victim
            .wait_timeout(Duration::from_secs(20))
            .unwrap()
            .expect("the victim is cancelled in time");
        assert!(v.status.cancelled(), "{v:?}");
        // Each kill removes the markers of the kills before it whose blocks ended: of the two
        // cancels, at most the last one's marker is left. (The dir is writable by the block
        // user since the kill runs as that user, so the attacker's own `.pid` file stays.)
        let left = ex
            .run(&CodeBlock::sh(
                "ls -A /run/dockexec 2>/dev/null | grep -c '[.]cancel$'",
            ))
            .unwrap();
        let n: usize = left.stdout_lossy().trim().parse().unwrap_or(usize::MAX);
        assert!(n <= 1, "markers left: {left:?}");
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
        let bound = std::time::Instant::now() + Duration::from_secs(20);
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

/// A root block (opt-in `user("0")`) owns its container: `kill -9 -1` as root ends the
/// container's keeper, and with it the container. The executor says so plainly: the block
/// ends [`lost`](dockexec::ExitStatus::lost), later calls fail with `ContainerGone`, `stop()`
/// still succeeds, the work dir keeps its files, and another executor runs on untouched.
#[test]
fn a_root_block_can_end_its_own_container_and_the_executor_says_so() {
    common::watchdog(LIMIT, || {
        let work = common::TempDir::new("hostile-root-work");
        let (mut b, _guard) = common::case_builder("hostile-root");
        let other = b.start().unwrap();
        let bystander = other
            .spawn(&CodeBlock::sh("echo up; sleep 3; echo done"))
            .unwrap();
        common::await_stdout(&bystander.chunks(), "up", Duration::from_secs(20));
        b.user("0").work_dir(work.path());
        let ex = b.start().unwrap();
        common::assert_success(&ex.run(&CodeBlock::sh("echo kept > kept.txt")).unwrap());
        // Its own end is either seen (lost) or, when the container went first, reported; seen,
        // not waited out: under runsc the exec's stream outlives the container, and only the
        // executor's container watch ends it before the `sleep 30` (and the timeout).
        let t = std::time::Instant::now();
        let ended = ex.run(&CodeBlock::sh("kill -9 -1; sleep 30; echo survived"));
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the end of the container took {:?} to be seen: {ended:?}",
            t.elapsed()
        );
        match ended {
            Ok(out) => {
                assert!(out.status.lost(), "{out:?}");
                assert!(!out.stdout_lossy().contains("survived"), "{out:?}");
            }
            Err(dockexec::Error::ContainerGone { .. }) => {}
            Err(e) => panic!("expected a lost block or ContainerGone, got {e:?}"),
        }
        match ex.run(&CodeBlock::sh("echo next")) {
            Err(dockexec::Error::ContainerGone { .. }) => {}
            other => panic!("expected ContainerGone, got {other:?}"),
        }
        ex.stop().unwrap();
        assert_eq!(
            std::fs::read_to_string(work.path().join("kept.txt")).unwrap(),
            "kept\n"
        );
        let b = bystander.wait().unwrap();
        common::assert_success(b);
        assert_eq!(b.stdout_lossy(), "up\ndone\n");
        other.stop().unwrap();
    });
}

/// Issue 21, item 2: the exec strategy's kill runs as the block's own user (no capability
/// that reaches the host), so a block can stop it, here with `kill -STOP -1` in a loop,
/// which freezes every other process of its user, the kill's own shell included. The host's
/// call to the kill is bounded; then a root backstop, which the block cannot signal, kills
/// every process of the block's user. The cancel is reported, and nothing of the block, nor
/// a stuck kill, is left.
#[test]
fn a_block_that_stops_its_own_kill_is_still_cancelled() {
    stop_the_kill(false);
}

#[test]
fn a_block_that_stops_its_own_kill_is_still_cancelled_in_busybox() {
    stop_the_kill(true);
}

fn stop_the_kill(busybox: bool) {
    common::watchdog(LIMIT, move || {
        let (b, _guard) = case_builder("hostile-stop-kill", busybox);
        let ex = b.start().unwrap();
        // The marker (4323) is built at run time, so only the sleeper's command line holds it.
        let e = ex
            .spawn(&CodeBlock::sh(
                r#"n=43; sleep "${n}23" & echo up; while :; do kill -STOP -1; done"#,
            ))
            .unwrap();
        common::await_stdout(&e.chunks(), "up", Duration::from_secs(20));
        e.cancel().unwrap();
        let out = e
            .wait_timeout(Duration::from_secs(40))
            .unwrap()
            .expect("the cancel returns");
        assert!(out.status.cancelled(), "{out:?}");
        let id = ex.container_id().to_string();
        let left = || {
            let mut p = common::processes_matching(&id, "sleep 4323");
            p.extend(common::processes_matching(&id, "kill -STOP"));
            p.extend(common::processes_matching(&id, "dockexec-kill"));
            p
        };
        assert!(
            common::eventually(Duration::from_secs(10), || left().is_empty()),
            "left behind: {:?}",
            left()
        );
        let next = ex.run(&CodeBlock::sh("echo next")).unwrap();
        common::assert_success(&next);
        assert_eq!(next.stdout_lossy(), "next\n");
        ex.stop().unwrap();
    });
}

/// Issue 21, D5: the exec strategy's kill read only the first line of `/proc/<pid>/stat`,
/// and a block whose name (`/proc/$$/comm`, 15 bytes of its own choosing) is `x) Z 0 0 0\n`
/// passed for a zombie: it survived its cancel and its timeout, both reported as done. The
/// variants: a name with several `) `, a renamed child in the block's session, and a renamed
/// child that left the session (found by its tag).
#[test]
fn a_block_renamed_as_a_zombie_does_not_survive_its_cancel() {
    renamed_as_zombie(false, false);
}

#[test]
fn a_block_renamed_as_a_zombie_does_not_survive_its_cancel_in_busybox() {
    renamed_as_zombie(true, false);
}

#[test]
fn a_block_renamed_as_a_zombie_does_not_survive_its_timeout() {
    renamed_as_zombie(false, true);
}

#[test]
fn a_block_renamed_as_a_zombie_does_not_survive_its_timeout_in_busybox() {
    renamed_as_zombie(true, true);
}

fn renamed_as_zombie(busybox: bool, timeout: bool) {
    common::watchdog(LIMIT, move || {
        let (mut b, _guard) = case_builder("hostile-zombie-name", busybox);
        if timeout {
            b.timeout(Some(Duration::from_secs(3)));
        }
        let ex = b.start().unwrap();
        // Each process loops on `sleep 1` (so killing its child alone does not end it) and
        // carries `hide4324` on its command line; the names are set at run time.
        let child = r#"printf "$1" > /proc/$$/comm; while :; do sleep 1; done"#;
        let script = format!(
            r#"sh -c '{child}' hide4324 'a) b) Z 0 0 0' &
setsid sh -c '{child}' hide4324 ') ) Z 1 1 1
' &
printf 'x) Z 0 0 0\n' > /proc/$$/comm
echo up
while :; do sleep 1; done
: hide4324"#
        );
        let e = ex.spawn(&CodeBlock::sh(script)).unwrap();
        common::await_stdout(&e.chunks(), "up", Duration::from_secs(20));
        let id = ex.container_id().to_string();
        // The leader's own command line names its code file, the children's the marker.
        assert!(
            common::eventually(Duration::from_secs(10), || {
                common::processes_matching(&id, "hide4324").len() == 2
                    && !common::processes_matching(&id, "tmp_code").is_empty()
            }),
            "the block's three processes run: {:?}",
            common::processes_matching(&id, "")
        );
        if !timeout {
            e.cancel().unwrap();
        }
        let out = e
            .wait_timeout(Duration::from_secs(30))
            .unwrap()
            .expect("the block ends");
        if timeout {
            assert!(out.status.timed_out(), "{out:?}");
        } else {
            assert!(out.status.cancelled(), "{out:?}");
        }
        let left = || {
            let mut p = common::processes_matching(&id, "hide4324");
            p.extend(common::processes_matching(&id, "tmp_code"));
            p
        };
        assert!(
            common::eventually(Duration::from_secs(5), || left().is_empty()),
            "survived the {}: {:?}",
            if timeout { "timeout" } else { "cancel" },
            left()
        );
        ex.stop().unwrap();
    });
}

/// A root block (opt-in `user("0")`): on the exec strategy its kill runs as root, its own
/// uid, with no capability beyond the kept ones, and still ends its whole tree, a `setsid`
/// child included.
#[test]
fn a_root_blocks_cancel_ends_its_whole_tree() {
    common::watchdog(LIMIT, || {
        let (mut b, _guard) = case_builder("hostile-root-cancel", true);
        b.user("0");
        let ex = b.start().unwrap();
        let e = ex
            .spawn(&CodeBlock::sh(
                r#"n=43; setsid sleep "${n}25" & sleep "${n}26" & echo up; wait"#,
            ))
            .unwrap();
        common::await_stdout(&e.chunks(), "up", Duration::from_secs(20));
        e.cancel().unwrap();
        let out = e
            .wait_timeout(Duration::from_secs(20))
            .unwrap()
            .expect("the cancel returns");
        assert!(out.status.cancelled(), "{out:?}");
        let id = ex.container_id().to_string();
        let left = || {
            let mut p = common::processes_matching(&id, "sleep 4325");
            p.extend(common::processes_matching(&id, "sleep 4326"));
            p
        };
        assert!(
            common::eventually(Duration::from_secs(5), || left().is_empty()),
            "left behind: {:?}",
            left()
        );
        let next = ex.run(&CodeBlock::sh("echo next")).unwrap();
        common::assert_success(&next);
        ex.stop().unwrap();
    });
}
