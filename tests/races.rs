//! Race loops: wait / try_wait / cancel on one execution from three threads, and spawns and
//! cancels racing stop(). Each runs for DOCKEXEC_STRESS_SECS (default 3 s) and names the
//! iteration it failed in.
//!
//! Both count this process's `dockexec-*` threads, so they run one at a time.
mod common;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use dockexec::{CodeBlock, Error, Execution, Executor};

/// One iteration: a short block, raced by a waiter, a poller and a canceller.
fn wait_poll_cancel(ex: &Executor, lane: usize, i: usize) -> Result<bool, String> {
    let expected = format!("out {lane} {i}\n");
    let e = ex
        .spawn(&CodeBlock::sh(format!("echo out {lane} {i}\nsleep 0.05\n")))
        .map_err(|e| format!("spawn: {e}"))?;
    // 0..=400 ms: before the block prints, while it sleeps, and after it ended.
    let delay = Duration::from_millis(((i * 7 + lane * 3) % 11) as u64 * 40);
    let barrier = Barrier::new(3);
    let (waited, polled, cancelled) = thread::scope(|s| {
        let waiter = s.spawn(|| {
            barrier.wait();
            e.wait().map(|o| (o as *const _ as usize, o.clone()))
        });
        let poller = s.spawn(|| {
            barrier.wait();
            let end = Instant::now() + Duration::from_secs(30);
            loop {
                match e.try_wait() {
                    Ok(Some(o)) => return Ok((o as *const _ as usize, o.clone())),
                    Ok(None) if Instant::now() < end => thread::yield_now(),
                    Ok(None) => return Err("try_wait: still running after 30 s".to_string()),
                    Err(err) => return Err(format!("try_wait: {err}")),
                }
            }
        });
        barrier.wait();
        thread::sleep(delay);
        let cancelled = e.cancel();
        (waiter.join().unwrap(), poller.join().unwrap(), cancelled)
    });
    cancelled.map_err(|e| format!("cancel: {e}"))?;
    let (wa, wo) = waited.map_err(|e| format!("wait: {e}"))?;
    let (pa, po) = polled?;
    if wa != pa || wo != po {
        return Err(format!(
            "wait and try_wait saw different outputs: {wo:?} / {po:?}"
        ));
    }
    let s = wo.status;
    if s.success() {
        if wo.stdout != expected.as_bytes() {
            return Err(format!("succeeded with stdout {:?}", wo.stdout_lossy()));
        }
    } else if s.cancelled() {
        if !expected.as_bytes().starts_with(&wo.stdout) {
            return Err(format!("cancelled with stdout {:?}", wo.stdout_lossy()));
        }
    } else {
        return Err(format!("neither success nor cancelled: {s} ({wo:?})"));
    }
    // Later calls agree with the first answers.
    let again = e.wait().map_err(|e| format!("wait again: {e}"))?;
    if *again != wo {
        return Err("a second wait() saw another output".into());
    }
    Ok(s.cancelled())
}

#[test]
fn wait_try_wait_and_cancel_race_on_one_execution() {
    let _serial = common::serial();
    let (b, _guard) = common::case_builder("race-wait");
    let stress = common::stress_duration();
    common::watchdog(stress + Duration::from_secs(90), move || {
        let before = common::dockexec_threads();
        let ex = Arc::new(b.start().unwrap());
        let container = ex.container_id().to_string();
        let lanes: Vec<_> = (0..3)
            .map(|lane| {
                let ex = Arc::clone(&ex);
                thread::spawn(move || {
                    let end = Instant::now() + stress;
                    let (mut i, mut cancelled) = (0, 0);
                    while i == 0 || Instant::now() < end {
                        match wait_poll_cancel(&ex, lane, i) {
                            Ok(c) => cancelled += usize::from(c),
                            Err(msg) => panic!(
                                "lane {lane}, iteration {i} (after {i} clean iterations): {msg}"
                            ),
                        }
                        i += 1;
                    }
                    (i, cancelled)
                })
            })
            .collect();
        let counts: Vec<(usize, usize)> = lanes.into_iter().map(|h| h.join().unwrap()).collect();
        let total: usize = counts.iter().map(|c| c.0).sum();
        eprintln!(
            "race: {total} iterations in {stress:?}, (iterations, cancelled) per lane: {counts:?}"
        );

        // Nothing of any block runs any more, and the executor still works.
        let left = common::processes_matching(&container, "tmp_code_");
        assert!(
            left.is_empty(),
            "after {total} iterations, blocks still run: {left:?}"
        );
        let out = ex.run(&CodeBlock::sh("echo still-usable")).unwrap();
        assert!(
            out.status.success(),
            "after {total} iterations: {}",
            out.status
        );
        ex.stop().unwrap();
        assert_eq!(
            common::dockexec_threads(),
            before,
            "after {total} iterations, threads: {:?}",
            common::thread_names()
        );
        assert!(!common::container_exists(&container));
    });
}

#[test]
fn spawns_and_cancels_racing_stop() {
    let _serial = common::serial();
    let (b, _guard) = common::case_builder("race-stop");
    let stress = common::stress_duration();
    common::watchdog(stress + Duration::from_secs(90), move || {
        let before = common::dockexec_threads();
        let end = Instant::now() + stress;
        let mut i = 0usize;
        let mut spawned_total = 0usize;
        while i == 0 || Instant::now() < end {
            let ex = Arc::new(
                b.start()
                    .unwrap_or_else(|e| panic!("iteration {i}: start: {e}")),
            );
            let container = ex.container_id().to_string();
            let barrier = Arc::new(Barrier::new(4));
            let spawners: Vec<_> = (0..3)
                .map(|k| {
                    let ex = Arc::clone(&ex);
                    let barrier = Arc::clone(&barrier);
                    thread::spawn(move || {
                        barrier.wait();
                        let mut mine: Vec<Execution> = Vec::new();
                        loop {
                            match ex.spawn(&CodeBlock::sh("echo x\nsleep 1141\n")) {
                                Ok(e) => {
                                    // Cancel every other one ourselves, racing stop().
                                    if mine.len() % 2 == k % 2 {
                                        e.cancel().unwrap();
                                    }
                                    mine.push(e);
                                }
                                Err(Error::Stopped) => return Ok(mine),
                                Err(e) => return Err(format!("spawner {k}: {e}")),
                            }
                        }
                    })
                })
                .collect();
            barrier.wait();
            // 0..=300 ms: stop lands after a varying number of spawns.
            thread::sleep(Duration::from_millis((i * 37 % 7) as u64 * 50));
            let stopped = ex.stop();
            let mut executions = Vec::new();
            for h in spawners {
                match h.join().unwrap() {
                    Ok(mine) => executions.extend(mine),
                    Err(msg) => panic!("iteration {i}: {msg}"),
                }
            }
            if let Err(e) = stopped {
                panic!("iteration {i}: stop: {e}");
            }
            spawned_total += executions.len();
            for (n, e) in executions.iter().enumerate() {
                match e.try_wait() {
                    Ok(Some(o)) if o.status.cancelled() => {}
                    other => panic!(
                        "iteration {i}: execution {n} after stop() returned: {:?}",
                        other.map(|o| o.map(|o| o.status.to_string()))
                    ),
                }
            }
            assert_eq!(
                common::dockexec_threads(),
                before,
                "iteration {i}: threads after stop(): {:?}",
                common::thread_names()
            );
            assert!(
                !common::container_exists(&container),
                "iteration {i}: the container is still there"
            );
            i += 1;
        }
        let left = common::host_processes_matching("sleep 1141");
        assert!(left.is_empty(), "after {i} iterations: {left:?}");
        eprintln!("stop race: {i} iterations, {spawned_total} executions");
    });
}
