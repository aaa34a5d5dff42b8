//! Every Engine call is bounded in time: a daemon that stops answering (a freezing proxy in
//! front of the real one) gives clear errors, and `stop()` / `stop_all()` still return.
//!
//! Every test here holds `common::serial()`: one of them calls `stop_all`, which would stop
//! the executors of any test running beside it.
mod common;

use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{Proxy, Toward};
use dockexec::{CodeBlock, Error, PullPolicy, Strategy};

/// The limit these tests give every daemon call: short, so a test does not wait long, yet
/// long enough for a container start on a loaded machine.
const API: Duration = Duration::from_secs(10);

/// Waits for the proxy to freeze (its trigger fired); panics after `limit`.
fn await_frozen(proxy: &Proxy, limit: Duration) {
    assert!(
        common::eventually(limit, || proxy.is_frozen()),
        "the proxy's trigger did not fire within {limit:?}"
    );
}

#[test]
fn spawn_while_the_daemon_hangs_fails_and_stop_returns() {
    let _serial = common::serial();
    let proxy = Proxy::start();
    let (mut b, _case) = common::case_builder("bounded-spawn");
    b.socket(&proxy.path).api_timeout(API);
    let ex = Arc::new(b.start().unwrap());
    // A block already running, so that stop() has a worker to end as well.
    let running = ex.spawn(&CodeBlock::sh("echo up; sleep 1000")).unwrap();
    common::await_stdout(&running.chunks(), "up\n", Duration::from_secs(20));

    proxy.freeze();
    let spawner = {
        let ex = Arc::clone(&ex);
        thread::spawn(move || {
            let t = Instant::now();
            let r = ex.spawn(&CodeBlock::sh("echo never"));
            (r.map(|_| ()), t.elapsed())
        })
    };
    // Let the spawn get stuck inside the daemon call, holding the executor's gate.
    thread::sleep(Duration::from_millis(500));
    let stopper = Arc::clone(&ex);
    let (stopped, took) = common::watchdog(Duration::from_secs(40), move || {
        let t = Instant::now();
        let r = stopper.stop();
        (r, t.elapsed())
    });
    let (spawned, spawn_took) =
        common::watchdog(Duration::from_secs(40), move || spawner.join().unwrap());
    proxy.thaw();

    eprintln!("stop: {stopped:?} after {took:?}; spawn: {spawned:?} after {spawn_took:?}");
    assert!(took < Duration::from_secs(25), "stop took {took:?}");
    assert!(stopped.is_err(), "removing through a hung daemon fails");
    let e = spawned.expect_err("a spawn through a hung daemon fails");
    assert!(
        matches!(e, Error::Timeout { .. } | Error::Stopped | Error::Agent(_)),
        "{e:?}"
    );
    assert!(
        spawn_took < Duration::from_secs(25),
        "spawn took {spawn_took:?}"
    );
    let status = running.try_wait().unwrap().map(|o| o.status);
    assert!(status.expect("stop() ended the running block").cancelled());
}

#[test]
fn spawn_fails_when_exec_start_gets_no_answer() {
    let _serial = common::serial();
    let proxy = Proxy::start();
    let (mut b, _case) = common::case_builder("bounded-exec-start");
    // The exec path: one exec start per block, whose answer never comes.
    b.socket(&proxy.path)
        .api_timeout(API)
        .strategy(Strategy::Exec);
    let ex = b.start().unwrap();
    proxy.freeze_after(Toward::Daemon, b"/start HTTP/1.1");
    let (spawned, took, ex) = common::watchdog(Duration::from_secs(40), move || {
        let t = Instant::now();
        let r = ex.spawn(&CodeBlock::sh("echo never")).map(|_| ());
        (r, t.elapsed(), ex)
    });
    assert!(proxy.is_frozen(), "the spawn reached exec start");
    let e = spawned.expect_err("a spawn whose exec start gets no answer fails");
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    let msg = e.to_string();
    eprintln!("{msg} (after {took:?})");
    assert!(
        msg.contains("exec start") && msg.contains(&format!("{} s", API.as_secs())),
        "says what stalled and for how long: {msg}"
    );
    assert!(took < Duration::from_secs(20), "spawn took {took:?}");
    let t = Instant::now();
    let _ = common::watchdog(Duration::from_secs(40), move || ex.stop());
    assert!(
        t.elapsed() < Duration::from_secs(25),
        "stop took {:?}",
        t.elapsed()
    );
    proxy.thaw();
}

#[test]
fn start_fails_in_bounded_time_when_the_daemon_hangs_during_init_command() {
    let _serial = common::serial();
    let proxy = Proxy::start();
    let (mut b, case) = common::case_builder("bounded-init");
    b.socket(&proxy.path)
        .api_timeout(API)
        .init_command("echo init-begin; sleep 2; echo init-end")
        .init_timeout(Some(Duration::from_secs(5)));
    proxy.freeze_after(Toward::Client, b"init-begin");
    let starting = thread::spawn(move || {
        let t = Instant::now();
        let r = b.start().map(|_| ());
        (r, t.elapsed())
    });
    await_frozen(&proxy, Duration::from_secs(60));
    // An application's shutdown handler, while start() waits: it must not hang either.
    let stopped_all = common::watchdog(Duration::from_secs(20), dockexec::stop_all);
    assert_eq!(stopped_all, 0, "the starting executor is not live yet");
    let (started, took) =
        common::watchdog(Duration::from_secs(60), move || starting.join().unwrap());
    proxy.thaw();

    let e = started.expect_err("start() fails when its init command hangs");
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    let msg = e.to_string();
    eprintln!("{msg} (after {took:?})");
    assert!(msg.contains("init command"), "says what stalled: {msg}");
    assert!(took < Duration::from_secs(40), "start took {took:?}");
    assert!(
        common::eventually(Duration::from_secs(20), || case.containers().is_empty()),
        "the container is removed once the daemon answers again: {:?}",
        case.containers()
    );
}

#[test]
fn pull_fails_when_the_daemon_hangs_mid_pull() {
    let _serial = common::serial();
    let proxy = Proxy::start();
    let (mut b, _case) = common::case_builder("bounded-pull");
    b.socket(&proxy.path)
        .api_timeout(API)
        .image(common::registry_busybox())
        .strategy(Strategy::Auto)
        .pull_policy(PullPolicy::Always);
    // The first progress event reaches us; then nothing more does.
    proxy.freeze_after(Toward::Client, b"Pulling from");
    let (started, took) = common::watchdog(Duration::from_secs(60), move || {
        let t = Instant::now();
        let r = b.start().map(|_| ());
        (r, t.elapsed())
    });
    proxy.thaw();
    let e = started.expect_err("start() fails when the pull hangs");
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    let msg = e.to_string();
    eprintln!("{msg} (after {took:?})");
    assert!(msg.contains("pull"), "says what stalled: {msg}");
    assert!(took < Duration::from_secs(40), "start took {took:?}");
}

#[test]
fn connect_to_a_socket_that_never_answers() {
    let _serial = common::serial();
    let dir = common::TempDir::new("mute-daemon");
    let path = dir.path().join("docker.sock");
    let listener = UnixListener::bind(&path).unwrap();
    listener.set_nonblocking(true).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    // Accepts every connection and never answers (nor closes) any.
    let mute = {
        let done = Arc::clone(&done);
        thread::spawn(move || {
            let mut held = Vec::new();
            while !done.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((c, _)) => held.push(c),
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        })
    };
    let mut b = common::builder();
    b.socket(&path).api_timeout(API);
    let (started, took) = common::watchdog(Duration::from_secs(45), move || {
        let t = Instant::now();
        let r = b.start().map(|_| ());
        (r, t.elapsed())
    });
    done.store(true, Ordering::SeqCst);
    mute.join().unwrap();
    let e = started.expect_err("nothing answers there");
    assert!(matches!(e, Error::Connect { .. }), "{e:?}");
    let msg = e.to_string();
    eprintln!("{msg} (after {took:?})");
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains(&format!("{} s", API.as_secs())),
        "names the socket and the limit: {msg}"
    );
    assert!(took < Duration::from_secs(30), "start took {took:?}");
}

#[test]
fn a_spawn_that_outlives_stop_does_not_leave_its_block_running() {
    let _serial = common::serial();
    let proxy = Proxy::start();
    let (mut b, case) = common::case_builder("bounded-straggler");
    // Long enough that the spawn is still waiting on the daemon when stop() gives up on it.
    b.socket(&proxy.path).api_timeout(Duration::from_secs(20));
    let ex = Arc::new(b.start().unwrap());
    let threads_before = common::dockexec_threads();
    proxy.freeze();
    let spawner = {
        let ex = Arc::clone(&ex);
        thread::spawn(move || {
            ex.spawn(&CodeBlock::sh("echo straggler; sleep 1000"))
                .map(|e| e.id())
        })
    };
    thread::sleep(Duration::from_millis(500));
    let stopper = Arc::clone(&ex);
    let t = Instant::now();
    let stopped = common::watchdog(Duration::from_secs(40), move || stopper.stop());
    let took = t.elapsed();
    // The daemon answers again while the spawn still waits: its calls go through now.
    proxy.thaw();
    let spawned = common::watchdog(Duration::from_secs(60), move || spawner.join().unwrap());
    eprintln!("stop: {stopped:?} after {took:?}; the straggling spawn: {spawned:?}");
    assert!(took < Duration::from_secs(15), "stop took {took:?}");
    assert!(
        spawned.is_err(),
        "a spawn that stop() went on without fails: {spawned:?}"
    );
    assert!(matches!(
        ex.spawn(&CodeBlock::sh("true")),
        Err(Error::Stopped)
    ));
    assert!(
        common::eventually(Duration::from_secs(20), || common::dockexec_threads()
            <= threads_before),
        "no worker is left: {:?}",
        common::thread_names()
    );
    // Removed by the removal stop() queued, once the daemon answers again.
    assert!(
        common::eventually(Duration::from_secs(20), || case.containers().is_empty()),
        "the container is gone: {:?}",
        case.containers()
    );
}

#[test]
fn stop_all_stops_executors_in_parallel_when_the_daemon_hangs() {
    let _serial = common::serial();
    let proxy = Proxy::start();
    let (mut b, case) = common::case_builder("bounded-stop-all");
    b.socket(&proxy.path).api_timeout(API);
    let executors: Vec<_> = (0..4).map(|_| b.start().unwrap()).collect();
    // One stop alone, through the hung daemon, for scale.
    proxy.freeze();
    let t = Instant::now();
    let one = common::watchdog(Duration::from_secs(40), {
        let ex = executors.into_iter();
        move || {
            let mut rest: Vec<_> = ex.collect();
            let first = rest.remove(0);
            let _ = first.stop();
            rest
        }
    });
    let single = t.elapsed();
    let t = Instant::now();
    let n = common::watchdog(Duration::from_secs(60), dockexec::stop_all);
    let all = t.elapsed();
    proxy.thaw();
    eprintln!("one stop: {single:?}; stop_all of {n}: {all:?}");
    assert_eq!(n, 3, "the three remaining executors were stopped");
    // Sequential stops would take three times as long as one; parallel ones about as long.
    assert!(
        all < single * 2,
        "stop_all took {all:?}, one stop {single:?}"
    );
    drop(one);
    assert!(
        common::eventually(Duration::from_secs(20), || case.containers().is_empty()),
        "removed once the daemon answers again: {:?}",
        case.containers()
    );
}
