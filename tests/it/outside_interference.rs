//! The container killed or removed from outside, and a daemon that stops answering.
use crate::common;

use std::time::{Duration, Instant};

use dockexec::{CodeBlock, Error};

#[test]
fn container_removed_from_outside_while_a_block_runs() {
    let ex = common::start();
    let execution = ex.spawn(&CodeBlock::sh("echo before; sleep 1000")).unwrap();
    common::await_stdout(&execution.chunks(), "before\n", Duration::from_secs(10));
    assert!(common::docker(&["rm", "-f", ex.container_id()]).0);
    let out = execution
        .wait_timeout(Duration::from_secs(10))
        .unwrap()
        .expect("the execution ends when its container goes");
    assert!(out.status.lost(), "{}", out.status);
    assert!(!out.status.success());
    assert_eq!(out.stdout, b"before\n", "partial output is kept");
    match ex.spawn(&CodeBlock::sh("true")) {
        Err(Error::ContainerGone { container }) => assert_eq!(container, ex.container_id()),
        other => panic!("expected ContainerGone, got {other:?}"),
    }
    // stop() still cleans up and reports success: the container is already gone.
    ex.stop().unwrap();
}

#[test]
fn container_paused_from_outside_still_times_out_and_stops() {
    let (mut b, _guard) = common::case_builder("outside-pause");
    b.timeout(Some(Duration::from_secs(2)));
    common::watchdog(Duration::from_secs(60), move || {
        let ex = b.start().unwrap();
        let e = ex.spawn(&CodeBlock::sh("echo up; sleep 1000")).unwrap();
        common::await_stdout(&e.chunks(), "up\n", Duration::from_secs(20));
        assert!(
            common::docker(&["pause", ex.container_id()]).0,
            "docker pause"
        );
        let t0 = Instant::now();
        let out = e.wait().unwrap();
        assert!(out.status.timed_out(), "{}", out.status);
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
        assert_eq!(out.stdout, b"up\n", "the output so far is kept");
        // A new block is refused with the reason, not called gone: the container is there.
        // (The agent says so only after its 30 s start limit: checked on exec alone.)
        if common::strategy() == dockexec::Strategy::Exec {
            match ex.spawn(&CodeBlock::sh("echo never")) {
                Err(dockexec::Error::ContainerPaused { container }) => {
                    assert_eq!(container, ex.container_id());
                }
                other => panic!("a spawn into a paused container gave {other:?}"),
            }
        }
        let t0 = Instant::now();
        let _ = ex.stop();
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "stop took {:?}",
            t0.elapsed()
        );
        assert!(!common::container_exists(ex.container_id()));
    });
}

#[test]
fn container_killed_from_outside_while_a_block_runs() {
    let mut b = common::builder();
    b.auto_remove(false);
    let ex = b.start().unwrap();
    let execution = ex
        .spawn(&CodeBlock::python(
            "import time\nprint('up', flush=True)\ntime.sleep(1000)",
        ))
        .unwrap();
    common::await_stdout(&execution.chunks(), "up\n", Duration::from_secs(10));
    assert!(common::docker(&["kill", ex.container_id()]).0);
    let out = execution
        .wait_timeout(Duration::from_secs(10))
        .unwrap()
        .expect("the execution ends when its container dies");
    assert!(!out.status.success(), "{}", out.status);
    assert!(out.status.lost(), "{}", out.status);
    assert_eq!(out.stdout, b"up\n");
    // The container exists but is not running: spawning says so.
    assert!(matches!(
        ex.spawn(&CodeBlock::sh("true")),
        Err(Error::ContainerGone { .. })
    ));
    // restart() brings it back.
    ex.restart().unwrap();
    let again = ex.run(&CodeBlock::sh("echo back")).unwrap();
    assert_eq!(again.stdout, b"back\n");
}

#[test]
fn stop_returns_in_bounded_time_when_the_daemon_hangs() {
    let proxy = common::Proxy::start();
    // Removes the container stop() could not remove through the hung daemon.
    let (mut b, _case) = common::case_builder("hang");
    b.socket(&proxy.path);
    let ex = b.start().unwrap();
    let execution = ex.spawn(&CodeBlock::sh("echo up; sleep 1000")).unwrap();
    common::await_stdout(&execution.chunks(), "up\n", Duration::from_secs(10));

    proxy.freeze();
    let t = Instant::now();
    let result = common::watchdog(Duration::from_secs(30), move || {
        let r = ex.stop();
        (r, execution.try_wait().unwrap().map(|o| o.status))
    });
    let took = t.elapsed();
    proxy.thaw();

    let (stopped, status) = result;
    assert!(took < Duration::from_secs(12), "stop took {took:?}");
    assert!(
        matches!(
            stopped,
            Err(Error::Timeout { .. }) | Err(Error::Transport { .. })
        ),
        "removing through a hung daemon fails: {stopped:?}"
    );
    let status = status.expect("the execution has ended after stop()");
    assert!(status.cancelled(), "{status}");
}
