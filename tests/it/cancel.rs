//! Cancellation and timeouts: `cancel()` from another thread, many waiters, the whole process
//! tree dies (children, grandchildren, `&` jobs, SIGTERM-ignoring loops), the deadline holds
//! for a silent block that ignores signals, and the executor stays usable afterwards.
//!
//! "Nothing of the block runs afterwards" is proved by listing /proc inside the container: each
//! block's processes carry a marker (`sleep 10NN`, or a script name) unique to its test.
use crate::common;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use dockexec::{CodeBlock, Executor};

const LIMIT: Duration = Duration::from_secs(60);

/// Asserts that no process of the container's carries any of `markers`.
fn assert_none_left(ex: &Executor, markers: &[&str]) {
    let procs = common::processes_matching(ex.container_id(), "");
    for m in markers {
        let left: Vec<_> = procs.iter().filter(|l| l.contains(m)).collect();
        assert!(
            left.is_empty(),
            "processes of the block still run after it ended ({m}): {left:?}\nall: {procs:#?}"
        );
    }
}

/// Asserts that every marker has a live process (so the later absence proves a kill).
fn assert_all_running(ex: &Executor, markers: &[&str]) {
    let procs = common::processes_matching(ex.container_id(), "");
    for m in markers {
        assert!(
            procs.iter().any(|l| l.contains(m)),
            "the block should be running {m:?} before the cancel: {procs:#?}"
        );
    }
}

#[test]
fn one_thread_waits_while_another_cancels() {
    let (b, _guard) = common::case_builder("wait-cancel");
    let (out, elapsed_after_cancel) = common::watchdog(LIMIT, move || {
        let ex = b.start().unwrap();
        let execution = ex
            .spawn(&CodeBlock::python(
                "import time\nprint('started', flush=True)\ntime.sleep(1000)\nprint('never')",
            ))
            .unwrap();
        let waiter = execution.clone();
        let rx = execution.chunks();
        let handle = thread::spawn(move || waiter.wait().unwrap().clone());
        // The whole line: print() writes the text and its newline apart, and a fast cancel can
        // land between the two.
        common::await_stdout(&rx, "started\n", Duration::from_secs(20));
        assert!(execution.try_wait().unwrap().is_none(), "still running");
        let t = Instant::now();
        execution.cancel().unwrap();
        // cancel() does not wait: it only signals the worker.
        assert!(t.elapsed() < Duration::from_millis(500), "cancel() blocked");
        let out = handle.join().expect("the waiting thread");
        (out, t.elapsed())
    });
    assert!(out.status.cancelled(), "status: {}", out.status);
    assert!(!out.status.success() && !out.status.timed_out());
    assert_eq!(out.stdout_lossy(), "started\n", "partial output is kept");
    assert!(
        elapsed_after_cancel < Duration::from_secs(10),
        "the waiter woke {elapsed_after_cancel:?} after the cancel"
    );
}

#[test]
fn ten_waiters_then_one_cancel_all_see_the_same_output() {
    let (b, _guard) = common::case_builder("ten-waiters");
    let results = common::watchdog(LIMIT, move || {
        let ex = b.start().unwrap();
        let execution = ex
            .spawn(&CodeBlock::sh("echo partial\necho err >&2\nsleep 1010\n"))
            .unwrap();
        let rx = execution.chunks();
        common::await_stdout(&rx, "partial", Duration::from_secs(20));
        let barrier = Arc::new(Barrier::new(11));
        let waiters: Vec<_> = (0..10)
            .map(|_| {
                let e = execution.clone();
                let b = Arc::clone(&barrier);
                thread::spawn(move || {
                    b.wait();
                    let out = e.wait().unwrap();
                    (out as *const _ as usize, out.clone())
                })
            })
            .collect();
        barrier.wait();
        // Give the waiters time to block in wait(); they are correct either way.
        thread::sleep(Duration::from_millis(200));
        assert!(execution.try_wait().unwrap().is_none());
        execution.cancel().unwrap();
        let mine = execution.wait().unwrap();
        let mine_addr = mine as *const _ as usize;
        let mine = mine.clone();
        let results: Vec<_> = waiters.into_iter().map(|h| h.join().unwrap()).collect();
        (mine_addr, mine, results)
    });
    let (addr, out, others) = results;
    assert!(out.status.cancelled(), "status: {}", out.status);
    assert_eq!(out.stdout, b"partial\n");
    // Not equal: a shell whose foreground child dies first may report it ("Killed") before
    // it is killed itself.
    assert!(
        out.stderr.starts_with(b"err\n"),
        "stderr: {}",
        out.stderr_lossy()
    );
    assert_eq!(others.len(), 10);
    for (i, (a, o)) in others.iter().enumerate() {
        assert_eq!(
            *a, addr,
            "waiter {i} got another Output, not the shared one"
        );
        assert_eq!(*o, out, "waiter {i} saw a different output");
    }
}

#[test]
fn cancel_after_the_block_finished_is_a_no_op() {
    let (b, _guard) = common::case_builder("cancel-after");
    common::watchdog(LIMIT, move || {
        let ex = b.start().unwrap();
        let execution = ex.spawn(&CodeBlock::python("print('done')")).unwrap();
        let before = execution.wait().unwrap().clone();
        assert!(before.status.success(), "status: {}", before.status);
        execution.cancel().unwrap();
        execution.cancel().unwrap();
        thread::sleep(Duration::from_millis(200));
        let after = execution.try_wait().unwrap().expect("still finished");
        assert_eq!(
            *after, before,
            "cancel changed a finished execution's output"
        );
        assert!(after.status.success() && !after.status.cancelled());
        assert_eq!(execution.wait().unwrap().stdout, b"done\n");
        let owned = execution.into_output().unwrap();
        assert!(owned.status.success());
    });
}

#[test]
fn cancel_kills_background_jobs_grandchildren_and_term_trapping_loops() {
    let (b, _guard) = common::case_builder("cancel-tree");
    common::watchdog(LIMIT, move || {
        let ex = b.start().unwrap();
        let markers = [
            "sleep 1021",
            "sleep 1022",
            "sleep 1023",
            "sleep 1024",
            "sleep 1025",
        ];
        // `&` jobs, a subshell's orphaned grandchild, a nested sh with its own child, a loop
        // that ignores SIGTERM, and the main process (ignoring SIGTERM too) in the foreground.
        let code = r#"
sleep 1021 &
( sleep 1022 & )
sh -c 'sleep 1023 & wait' &
sh -c 'trap "" TERM; while :; do sleep 1024; done' &
trap '' TERM
echo ready
sleep 1025
wait
"#;
        let execution = ex.spawn(&CodeBlock::sh(code)).unwrap();
        let rx = execution.chunks();
        common::await_stdout(&rx, "ready", Duration::from_secs(20));
        assert!(common::eventually(Duration::from_secs(10), || {
            let procs = common::processes_matching(ex.container_id(), "");
            markers.iter().all(|m| procs.iter().any(|l| l.contains(m)))
        }));
        assert_all_running(&ex, &markers);

        execution.cancel().unwrap();
        let out = execution.wait().unwrap();
        assert!(out.status.cancelled(), "status: {}", out.status);
        assert_eq!(out.stdout_lossy(), "ready\n", "partial output is kept");
        assert_none_left(&ex, &markers);

        // The executor is still usable after a cancel.
        let next = ex.run(&CodeBlock::python("print(6 * 7)")).unwrap();
        assert!(next.status.success(), "status: {}", next.status);
        assert_eq!(next.stdout, b"42\n");
        assert_none_left(&ex, &markers);
    });
}

#[test]
fn cancel_kills_a_python_tree_that_ignores_sigterm() {
    if !common::exec_strategy()
        && common::differs_here(
            "cancel_kills_a_python_tree_that_ignores_sigterm",
            common::Differs::ZygoteCmdline,
        )
    {
        return;
    }
    let (b, _guard) = common::case_builder("cancel-python");
    common::watchdog(LIMIT, move || {
        let ex = b.start().unwrap();
        // The script's name is the marker; it forks a child and starts a subprocess, all of
        // which ignore SIGTERM.
        let code = r#"# filename: cancel_marker_py1031.py
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
subprocess.Popen(["sh", "-c", "trap '' TERM; sleep 1032"])
if os.fork() == 0:
    while True:
        time.sleep(0.1)
print("ready", flush=True)
while True:
    time.sleep(0.1)
"#;
        let execution = ex.spawn(&CodeBlock::python(code)).unwrap();
        let rx = execution.chunks();
        common::await_stdout(&rx, "ready", Duration::from_secs(20));
        let markers = ["cancel_marker_py1031", "sleep 1032"];
        assert!(common::eventually(Duration::from_secs(10), || {
            let procs = common::processes_matching(ex.container_id(), "");
            markers.iter().all(|m| procs.iter().any(|l| l.contains(m)))
        }));
        let forks = common::processes_matching(ex.container_id(), "cancel_marker_py1031");
        assert!(forks.len() >= 2, "parent and forked child: {forks:?}");

        execution.cancel().unwrap();
        let out = execution.wait().unwrap();
        assert!(out.status.cancelled(), "status: {}", out.status);
        assert_eq!(out.stdout_lossy(), "ready\n");
        assert_none_left(&ex, &markers);
        assert!(ex.run(&CodeBlock::sh("true")).unwrap().status.success());
    });
}

#[test]
fn timeout_kills_a_silent_sigterm_ignoring_tree_within_the_deadline_plus_1s() {
    let deadline = Duration::from_secs(2);
    let (mut b, _guard) = common::case_builder("timeout-tree");
    b.timeout(Some(deadline));
    common::watchdog(LIMIT, move || {
        let ex = b.start().unwrap();
        let markers = ["sleep 1041", "sleep 1042", "sleep 1043"];
        // Prints once, then goes silent; every process ignores SIGTERM.
        let code = r#"
trap '' TERM
echo before-silence
sh -c 'trap "" TERM; while :; do sleep 1041; done' &
( trap '' TERM; sleep 1042 & wait ) &
while :; do sleep 1043; done
"#;
        let t = Instant::now();
        let execution = ex.spawn(&CodeBlock::sh(code)).unwrap();
        let out = execution.wait().unwrap();
        let elapsed = t.elapsed();
        eprintln!("returned after {elapsed:?}");
        assert!(out.status.timed_out(), "status: {}", out.status);
        assert!(!out.status.cancelled() && !out.status.success());
        assert_eq!(out.status.shell_code(), 124);
        assert_eq!(
            out.stdout_lossy(),
            "before-silence\n",
            "partial output is kept"
        );
        // Measured from before spawn(), so it includes creating the exec.
        assert!(
            elapsed >= deadline,
            "returned after {elapsed:?}, before the {deadline:?} deadline"
        );
        assert!(
            elapsed <= deadline + Duration::from_secs(1),
            "returned after {elapsed:?}: more than the deadline ({deadline:?}) plus 1 s"
        );
        assert_none_left(&ex, &markers);
        let o = ex.run(&CodeBlock::sh("echo ok")).unwrap();
        assert!(o.status.success(), "{o:?}");
    });
}

#[test]
fn timeout_ends_a_python_block_that_ignores_signals_and_prints_nothing() {
    let deadline = Duration::from_secs(2);
    let (mut b, _guard) = common::case_builder("timeout-python");
    b.timeout(Some(deadline));
    common::watchdog(LIMIT, move || {
        let ex = b.start().unwrap();
        let code = r#"# filename: silent_marker_py1051.py
import signal, time
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
while True:
    time.sleep(0.05)
"#;
        let t = Instant::now();
        let out = ex.run(&CodeBlock::python(code)).unwrap();
        let elapsed = t.elapsed();
        eprintln!("returned after {elapsed:?}");
        assert!(out.status.timed_out(), "status: {}", out.status);
        assert!(out.stdout.is_empty() && out.stderr.is_empty());
        assert!(
            elapsed <= deadline + Duration::from_secs(1),
            "returned after {elapsed:?}: more than the deadline ({deadline:?}) plus 1 s"
        );
        assert_none_left(&ex, &["silent_marker_py1051"]);
    });
}

/// A child that starts its own session (`setsid`, Python's `start_new_session=True`) is still
/// part of the block's process tree, and must die with it.
#[test]
fn cancel_kills_children_that_start_their_own_session() {
    let (b, _guard) = common::case_builder("cancel-setsid");
    common::watchdog(LIMIT, move || {
        let ex = b.start().unwrap();
        let code = r#"
setsid sleep 1061 &
python3 -c 'import subprocess, time; subprocess.Popen(["sleep", "1062"], start_new_session=True); time.sleep(1000)' &
echo ready
sleep 1063
"#;
        let markers = ["sleep 1061", "sleep 1062", "sleep 1063"];
        let execution = ex.spawn(&CodeBlock::sh(code)).unwrap();
        let rx = execution.chunks();
        common::await_stdout(&rx, "ready", Duration::from_secs(20));
        assert!(common::eventually(Duration::from_secs(10), || {
            let procs = common::processes_matching(ex.container_id(), "");
            markers.iter().all(|m| procs.iter().any(|l| l.contains(m)))
        }));
        execution.cancel().unwrap();
        let out = execution.wait().unwrap();
        assert!(out.status.cancelled(), "status: {}", out.status);
        assert_none_left(&ex, &markers);
    });
}
