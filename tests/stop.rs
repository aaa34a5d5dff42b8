//! `stop()`: from any thread, any number of times, concurrently; it cancels every live
//! execution (detached ones too), wakes every waiter with the cancelled output, joins every
//! worker thread and removes the container; later calls succeed at once, and anything else then returns `Error::Stopped`.
//!
//! The tests here count this process's `dockexec-*` threads, so they run one at a time
//! (`common::serial()`), and no other test in this binary may run blocks.
mod common;

use std::sync::{Arc, Barrier, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use dockexec::{CodeBlock, Error, Execution, Executor};

const LIMIT: Duration = Duration::from_secs(90);

/// Waits until `n` processes with `marker` run in the container.
fn await_processes(ex: &Executor, marker: &str, n: usize) {
    let ok = common::eventually(Duration::from_secs(30), || {
        common::processes_matching(ex.container_id(), marker).len() >= n
    });
    assert!(
        ok,
        "expected {n} processes {marker:?}: {:#?}",
        common::processes_matching(ex.container_id(), "")
    );
}

/// What must hold once `stop()` has returned: no worker thread, no container, no process.
fn assert_all_gone(threads_before: usize, container: &str, markers: &[&str]) {
    // Up to 2 s: a joined thread can stay in /proc/self/task for a moment (the join returns
    // when the kernel clears its tid, before the task is released); CI saw a joined TLS pump
    // thread there once.
    assert!(
        common::eventually(Duration::from_secs(2), || common::dockexec_threads()
            == threads_before),
        "dockexec threads left after stop(): {:?} (before: {threads_before})",
        common::thread_names()
    );
    assert!(
        !common::container_exists(container),
        "the container {container} still exists after stop()"
    );
    for m in markers {
        let left = common::host_processes_matching(m);
        assert!(
            left.is_empty(),
            "processes still run after stop(): {left:?}"
        );
    }
}

fn assert_stopped(ex: &Executor) {
    ex.stop().expect("stop() again is no error");
    assert!(matches!(
        ex.spawn(&CodeBlock::sh("true")),
        Err(Error::Stopped)
    ));
    assert!(matches!(
        ex.run(&CodeBlock::sh("true")),
        Err(Error::Stopped)
    ));
    assert!(matches!(ex.restart(), Err(Error::Stopped)));
}

#[test]
fn stop_with_16_running_executions_joins_every_worker_and_removes_everything() {
    let _serial = common::serial();
    let (b, _guard) = common::case_builder("stop-16");
    common::watchdog(LIMIT, move || {
        let before = common::dockexec_threads();
        let ex = b.start().unwrap();
        let container = ex.container_id().to_string();
        let mut kept: Vec<Execution> = Vec::new();
        for i in 0..16 {
            let e = ex
                .spawn(&CodeBlock::sh(format!(
                    "echo started {i}\nsleep 1101 &\nsleep 1102\nwait\n"
                )))
                .unwrap();
            // Half of them detached: their handles are dropped, stop() must still cancel them.
            if i % 2 == 0 {
                kept.push(e);
            }
        }
        await_processes(&ex, "sleep 1102", 16);
        await_processes(&ex, "sleep 1101", 16);
        let during = common::dockexec_threads();
        assert!(
            during >= before + 16,
            "one worker thread per execution: {before} before, {during} now"
        );
        // A thread blocked in wait() wakes with the cancelled output.
        let blocked = kept[0].clone();
        let waiter = thread::spawn(move || blocked.wait().unwrap().clone());
        thread::sleep(Duration::from_millis(100));

        let t = Instant::now();
        ex.stop().unwrap();
        let took = t.elapsed();

        assert_all_gone(before, &container, &["sleep 1101", "sleep 1102"]);
        for (i, e) in kept.iter().enumerate() {
            let out = e
                .try_wait()
                .unwrap()
                .expect("finished once stop() returned");
            assert!(out.status.cancelled(), "execution {i}: {}", out.status);
            assert!(
                out.stdout_lossy().starts_with("started"),
                "partial output kept"
            );
        }
        let woke = waiter.join().unwrap();
        assert!(woke.status.cancelled(), "the waiter saw {}", woke.status);
        assert_eq!(woke.stdout_lossy(), "started 0\n");
        assert_stopped(&ex);
        eprintln!("stop() with 16 running executions took {took:?}");
    });
}

/// The seed scenario: an executor created on thread A, executions spawned and cancelled from
/// threads B and C (each cancels the other's, each waits on its own), stopped from thread D.
#[test]
fn seed_scenario_create_on_a_spawn_and_cancel_on_b_and_c_stop_on_d() {
    let _serial = common::serial();
    let (b, _guard) = common::case_builder("seed");
    common::watchdog(LIMIT, move || {
        let before = common::dockexec_threads();
        let ex: Arc<Executor> = Arc::new(
            thread::Builder::new()
                .name("thread-a".into())
                .spawn(move || b.start().unwrap())
                .unwrap()
                .join()
                .unwrap(),
        );
        let container = ex.container_id().to_string();
        let (to_c, from_b) = mpsc::channel::<Execution>();
        let (to_b, from_c) = mpsc::channel::<Execution>();

        let ex_b = Arc::clone(&ex);
        let thread_b = thread::Builder::new()
            .name("thread-b".into())
            .spawn(move || {
                let mine = ex_b
                    .spawn(&CodeBlock::sh("echo b-started\nsleep 1111\n"))
                    .unwrap();
                common::await_stdout(&mine.chunks(), "b-started", Duration::from_secs(20));
                to_c.send(mine.clone()).unwrap();
                // A detached execution: only stop() can end it.
                drop(
                    ex_b.spawn(&CodeBlock::sh("echo detached\nsleep 1113\n"))
                        .unwrap(),
                );
                let theirs = from_c.recv().unwrap();
                theirs.cancel().unwrap();
                let out = mine.wait().unwrap().clone();
                // Still usable after cancels, from this thread.
                let after = ex_b.run(&CodeBlock::python("print('b-after')")).unwrap();
                (out, after)
            })
            .unwrap();
        let ex_c = Arc::clone(&ex);
        let thread_c = thread::Builder::new()
            .name("thread-c".into())
            .spawn(move || {
                let mine = ex_c
                    .spawn(&CodeBlock::python(
                        "import time\nprint('c-started')\ntime.sleep(1000)",
                    ))
                    .unwrap();
                common::await_stdout(&mine.chunks(), "c-started\n", Duration::from_secs(20));
                to_b.send(mine.clone()).unwrap();
                let theirs = from_b.recv().unwrap();
                theirs.cancel().unwrap();
                mine.wait().unwrap().clone()
            })
            .unwrap();
        let (b_out, b_after) = thread_b.join().unwrap();
        let c_out = thread_c.join().unwrap();
        assert!(b_out.status.cancelled(), "B's block: {}", b_out.status);
        assert_eq!(b_out.stdout_lossy(), "b-started\n");
        assert!(c_out.status.cancelled(), "C's block: {}", c_out.status);
        assert_eq!(c_out.stdout_lossy(), "c-started\n");
        assert!(b_after.status.success(), "{}", b_after.status);
        assert_eq!(b_after.stdout, b"b-after\n");
        // The cancelled blocks are gone; the detached one still runs.
        assert!(common::processes_matching(&container, "sleep 1111").is_empty());
        await_processes(&ex, "sleep 1113", 1);

        let ex_d = Arc::clone(&ex);
        let stopped = thread::Builder::new()
            .name("thread-d".into())
            .spawn(move || ex_d.stop())
            .unwrap()
            .join()
            .unwrap();
        stopped.unwrap();
        assert_all_gone(before, &container, &["sleep 1111", "sleep 1113"]);
        assert_stopped(&ex);
    });
}

#[test]
fn stop_from_8_threads_at_once_all_succeed_once_the_work_is_done() {
    let _serial = common::serial();
    let (b, _guard) = common::case_builder("stop-8");
    common::watchdog(LIMIT, move || {
        let before = common::dockexec_threads();
        let ex = Arc::new(b.start().unwrap());
        let container = ex.container_id().to_string();
        let kept: Vec<Execution> = (0..4)
            .map(|_| ex.spawn(&CodeBlock::sh("sleep 1121\n")).unwrap())
            .collect();
        for _ in 0..4 {
            drop(ex.spawn(&CodeBlock::sh("sleep 1122\n")).unwrap());
        }
        await_processes(&ex, "sleep 1121", 4);
        await_processes(&ex, "sleep 1122", 4);

        let barrier = Arc::new(Barrier::new(8));
        let stoppers: Vec<_> = (0..8)
            .map(|_| {
                let ex = Arc::clone(&ex);
                let barrier = Arc::clone(&barrier);
                thread::spawn(move || {
                    barrier.wait();
                    ex.stop()
                })
            })
            .collect();
        let results: Vec<_> = stoppers.into_iter().map(|h| h.join().unwrap()).collect();
        // One call does the work; stop() is idempotent, so the others wait for it and succeed.
        assert!(results.iter().all(Result::is_ok), "results: {results:?}");
        // Every call returned only after the work was done: nothing is left.
        assert_all_gone(before, &container, &["sleep 1121", "sleep 1122"]);
        for e in &kept {
            assert!(e.try_wait().unwrap().expect("finished").status.cancelled());
        }
        assert_stopped(&ex);
    });
}

#[test]
fn dropping_the_executor_stops_it() {
    let _serial = common::serial();
    let (b, _guard) = common::case_builder("stop-drop");
    common::watchdog(LIMIT, move || {
        let before = common::dockexec_threads();
        let ex = b.start().unwrap();
        let container = ex.container_id().to_string();
        let e = ex
            .spawn(&CodeBlock::sh("echo running\nsleep 1131\n"))
            .unwrap();
        common::await_stdout(&e.chunks(), "running", Duration::from_secs(20));
        drop(ex);
        let out = e
            .try_wait()
            .unwrap()
            .expect("finished once the executor dropped");
        assert!(out.status.cancelled(), "{}", out.status);
        assert_eq!(out.stdout_lossy(), "running\n");
        assert_all_gone(before, &container, &["sleep 1131"]);
        // The handle outlives its executor; it still answers.
        assert!(e.wait().unwrap().status.cancelled());
        let _ = e.chunks().iter().count();
    });
}
