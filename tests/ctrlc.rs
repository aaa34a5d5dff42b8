//! Ctrl-C: `cleanup_on_ctrlc()` stops every live executor and exits 130; an application with
//! its own handler calls `stop_all()`. The handlers run in child processes
//! (examples/ctrlc_child.rs) that get a real SIGINT.
//!
//! `stop_all()` stops every executor of the process, so the one test that calls it in this
//! process is the only one here that starts executors in-process.
mod common;

use std::process::Command;
use std::time::Duration;

use dockexec::CodeBlock;

const LIMIT: Duration = Duration::from_secs(60);

/// Runs `ctrlc_child MODE`, interrupts it once its block runs; returns (exit code, transcript,
/// container id).
fn interrupt_child(mode: &str, case: &str) -> (Option<i32>, String, String) {
    let bin = common::example_bin("ctrlc_child");
    let mut child = common::ChildProc::spawn(
        Command::new(bin)
            .args([mode, case])
            .env("DOCKEXEC_TEST_IMAGE", common::image()),
    );
    let container = child.expect_line("container ", LIMIT);
    child.expect_line("ready", LIMIT);
    assert!(common::container_exists(&container));
    common::send_signal(child.pid(), "INT");
    let status = common::wait_child(&mut child.child, LIMIT);
    let transcript = child.transcript();
    let status = status.unwrap_or_else(|| {
        panic!("the child did not exit within {LIMIT:?} of SIGINT:\n{transcript}")
    });
    (status.code(), transcript, container)
}

#[test]
fn ctrl_c_in_a_child_stops_its_executor_and_exits_130() {
    let guard = common::CaseGuard::new("ctrlc-library");
    let (code, transcript, container) = interrupt_child("library", &guard.value);
    assert_eq!(code, Some(130), "exit code; child said:\n{transcript}");
    assert!(
        transcript.contains("second install refused"),
        "a second cleanup_on_ctrlc() must fail with Error::Hook:\n{transcript}"
    );
    assert!(
        !common::container_exists(&container),
        "the container survived Ctrl-C:\n{transcript}"
    );
    let left = common::host_processes_matching("sleep 1777");
    assert!(left.is_empty(), "the block survived Ctrl-C: {left:?}");
}

#[test]
fn an_application_handler_can_call_stop_all() {
    let guard = common::CaseGuard::new("ctrlc-own");
    let (code, transcript, container) = interrupt_child("own", &guard.value);
    assert_eq!(code, Some(3), "exit code; child said:\n{transcript}");
    assert!(
        transcript.contains("library install refused"),
        "cleanup_on_ctrlc() must fail when the application has a handler:\n{transcript}"
    );
    assert!(
        transcript.contains("stop_all stopped 1"),
        "stop_all() should report one executor stopped:\n{transcript}"
    );
    assert!(!common::container_exists(&container), "{transcript}");
    let left = common::host_processes_matching("sleep 1778");
    assert!(left.is_empty(), "the block survived stop_all(): {left:?}");
}

#[test]
fn stop_all_stops_every_live_executor_of_the_process() {
    let (b1, _guard1) = common::case_builder("stop-all-1");
    let (b2, _guard2) = common::case_builder("stop-all-2");
    let (b3, _guard3) = common::case_builder("stop-all-3");
    common::watchdog(LIMIT, move || {
        let ex1 = b1.start().unwrap();
        let ex2 = b2.start().unwrap();
        // Stopped already but still alive: stop_all() skips it and does not count it.
        let ex3 = b3.start().unwrap();
        ex3.stop().unwrap();
        let e1 = ex1.spawn(&CodeBlock::sh("echo one\nsleep 1781\n")).unwrap();
        drop(ex2.spawn(&CodeBlock::sh("echo two\nsleep 1782\n")).unwrap());
        common::await_stdout(&e1.chunks(), "one", Duration::from_secs(20));
        let ids = [
            ex1.container_id().to_string(),
            ex2.container_id().to_string(),
        ];

        // No other test of this binary has an executor in this process.
        assert_eq!(
            dockexec::stop_all(),
            2,
            "stop_all() counts the executors it stopped"
        );
        for id in &ids {
            assert!(!common::container_exists(id), "{id} survived stop_all()");
        }
        let out = e1.try_wait().unwrap().expect("finished after stop_all()");
        assert!(out.status.cancelled(), "{}", out.status);
        assert_eq!(out.stdout_lossy(), "one\n");
        ex1.stop().expect("stop() after stop_all() is no error");
        ex2.stop().expect("stop() after stop_all() is no error");
        assert_eq!(dockexec::stop_all(), 0, "nothing left to stop");
        for m in ["sleep 1781", "sleep 1782"] {
            let left = common::host_processes_matching(m);
            assert!(left.is_empty(), "the block survived stop_all(): {left:?}");
        }
    });
}
