//! The executor's lifecycle: start-time validation, stopped and vanished containers, the
//! thread-safety contract.
use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use dockexec::{BlocksResult, CodeBlock, Error, Execution, ExecutorBuilder, Output};

/// Compile-time: every handle can be shared across threads.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<dockexec::Executor>();
    send_sync::<Execution>();
    send_sync::<Output>();
    send_sync::<BlocksResult>();
    send_sync::<Error>();
    send_sync::<ExecutorBuilder>();
};

#[test]
fn executor_is_usable_from_other_threads() {
    // The same property at run time: moved into an Arc and used by another thread.
    let ex = std::sync::Arc::new(common::start());
    let ex2 = std::sync::Arc::clone(&ex);
    let out = std::thread::spawn(move || ex2.run(&CodeBlock::sh("echo from a thread")))
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(out.stdout, b"from a thread\n");
    // Stopped from a thread other than the one that started it.
    let ex3 = std::sync::Arc::clone(&ex);
    std::thread::spawn(move || ex3.stop())
        .join()
        .unwrap()
        .unwrap();
    ex.stop().expect("a second stop() is no error");
}

#[test]
fn zero_timeout_is_refused_by_start() {
    let (mut builder, case) = common::case_builder("zero-timeout");
    let err = builder.timeout(Some(Duration::ZERO)).start().unwrap_err();
    match &err {
        Error::InvalidInput(msg) => assert!(msg.contains("timeout"), "{msg}"),
        other => panic!("expected InvalidInput, got {other:?}"),
    }
    assert!(case.containers().is_empty());
}

#[test]
fn no_timeout_is_accepted() {
    let ex = common::builder().timeout(None).start().unwrap();
    let out = ex.run(&CodeBlock::sh("echo ok")).unwrap();
    assert!(out.status.success());
}

#[test]
fn everything_after_stop_gives_stopped() {
    let ex = common::start();
    ex.run(&CodeBlock::sh("true")).unwrap();
    ex.stop().unwrap();
    let block = CodeBlock::python("print('never')");
    assert!(matches!(ex.run(&block), Err(Error::Stopped)));
    assert!(matches!(ex.spawn(&block), Err(Error::Stopped)));
    assert!(matches!(
        ex.execute(std::slice::from_ref(&block)),
        Err(Error::Stopped)
    ));
    assert!(matches!(ex.restart(), Err(Error::Stopped)));
    ex.stop().expect("a second stop() is no error");
}

#[test]
fn container_removed_from_outside_gives_container_gone() {
    let ex = common::start();
    let id = ex.container_id().to_string();
    ex.run(&CodeBlock::sh("true")).unwrap();
    let (ok, _) = common::docker(&["rm", "-f", &id]);
    assert!(ok, "docker rm -f {id}");
    match ex.spawn(&CodeBlock::sh("echo hi")) {
        Err(Error::ContainerGone { container }) => assert_eq!(container, id),
        other => panic!("expected ContainerGone, got {other:?}"),
    }
    match ex.run(&CodeBlock::python("print(1)")) {
        Err(Error::ContainerGone { .. }) => {}
        other => panic!("expected ContainerGone, got {other:?}"),
    }
    // stop() still cleans up what is left, in bounded time, whatever it reports.
    // None on an engine that shares no filesystem: no host dir to remove.
    let work = ex.work_dir().map(Path::to_path_buf);
    let t0 = Instant::now();
    let _ = ex.stop();
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    assert!(!work.is_some_and(|w| w.exists()));
    ex.stop().expect("a second stop() is no error");
}

#[test]
fn restart_cancels_a_running_block() {
    let ex = common::start();
    let execution = ex
        .spawn(&CodeBlock::sh("echo started; sleep 30; echo finished"))
        .unwrap();
    // Wait until the block is really running.
    let first = execution
        .chunks()
        .recv_timeout(Duration::from_secs(10))
        .unwrap();
    assert_eq!(first.bytes(), b"started\n");
    let t0 = Instant::now();
    ex.restart().unwrap();
    let out = common::watchdog(Duration::from_secs(20), move || {
        execution.into_output().unwrap()
    });
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    assert!(out.status.cancelled(), "{}", out.status);
    assert_eq!(out.stdout, b"started\n");
    let out = ex.run(&CodeBlock::sh("echo after")).unwrap();
    assert_eq!(out.stdout, b"after\n");
}

#[test]
fn dropping_the_executor_removes_its_container() {
    let id;
    let work;
    {
        let ex = common::start();
        id = ex.container_id().to_string();
        work = ex.work_dir().map(Path::to_path_buf);
        ex.run(&CodeBlock::sh("true")).unwrap();
    }
    assert!(!common::container_exists(&id));
    assert!(!work.is_some_and(|w| w.exists()));
}

/// Dropping a session whose agent died returns at once and starts no agent: before, the drop
/// started a fresh agent (up to 30 s) only to close a session that died with the old one.
#[test]
fn dropping_a_session_whose_agent_died_is_quick_and_starts_nothing() {
    if common::strategy() == dockexec::Strategy::Exec {
        return; // sessions need the agent
    }
    let (b, _guard) = common::case_builder("session-drop-dead-agent");
    let ex = b.start().unwrap();
    let session = ex.session().unwrap();
    assert_eq!(session.run("x = 1\nprint(x)").unwrap().stdout, b"1\n");
    let id = ex.container_id().to_string();
    common::kill_agent(&id);
    assert!(
        common::eventually(Duration::from_secs(5), || common::agent_pid(&id).is_none()),
        "the agent is gone"
    );
    let t0 = Instant::now();
    drop(session);
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "drop took {:?}",
        t0.elapsed()
    );
    assert_eq!(common::agent_pid(&id), None, "the drop started an agent");
    // The executor itself goes on: the next block starts a fresh agent.
    common::assert_success(&ex.run(&CodeBlock::python("print('on')")).unwrap());
    ex.stop().unwrap();
}
