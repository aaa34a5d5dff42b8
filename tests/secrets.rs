//! Issue 9 §6: exit reasons (the signal that killed a block), secret environment variables
//! redacted from everything the caller sees, GPU device requests and the raw `HostConfig`
//! passthrough.
mod common;

use std::time::Duration;

use dockexec::{CodeBlock, Strategy};

#[test]
fn a_block_killed_by_a_signal_reports_it() {
    let (b, _guard) = common::case_builder("signal");
    let ex = b.start().unwrap();
    let cases = [
        (CodeBlock::sh("echo before; kill -9 $$; echo after"), 9),
        (CodeBlock::sh("kill -TERM $$"), 15),
        (
            CodeBlock::python(
                "import os, signal\nprint('before', flush=True)\nos.kill(os.getpid(), signal.SIGTERM)",
            ),
            15,
        ),
        (
            CodeBlock::python("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"),
            9,
        ),
    ];
    for (block, sig) in &cases {
        let out = ex.run(block).unwrap();
        let st = out.status;
        assert_eq!(st.signal(), Some(*sig), "{:?}: {st}", block.code());
        assert_eq!(st.code(), Some(128 + sig), "{:?}: {st}", block.code());
        assert!(!st.success() && !st.cancelled() && !st.timed_out() && !st.lost());
        assert!(!st.oom_killed(), "{:?}: {st}", block.code());
        assert!(
            st.to_string().contains(&format!("killed by signal {sig}")),
            "{st}"
        );
        assert!(!out.stdout_lossy().contains("after"));
    }
    ex.stop().unwrap();
}

#[test]
fn an_exit_code_above_128_is_no_signal_with_the_agent() {
    if common::strategy() == Strategy::Exec {
        // Documented: the exec strategy cannot tell `exit 137` from a SIGKILL.
        return;
    }
    let (mut b, _guard) = common::case_builder("signal-exit");
    let ex = b.strategy(Strategy::Agent).start().unwrap();
    for block in [
        CodeBlock::sh("exit 137"),
        CodeBlock::python("import sys\nsys.exit(143)"),
    ] {
        let st = ex.run(&block).unwrap().status;
        assert_eq!(st.signal(), None, "{:?}: {st}", block.code());
        assert!(st.to_string().starts_with("exit code 1"), "{st}");
    }
    ex.stop().unwrap();
}

#[test]
fn a_cancelled_block_still_reports_cancelled() {
    let (b, _guard) = common::case_builder("signal-cancel");
    let ex = b.start().unwrap();
    let e = ex.spawn(&CodeBlock::sh("echo up; sleep 60")).unwrap();
    let first = e.chunks().recv_timeout(Duration::from_secs(30));
    assert!(first.is_ok(), "no output: {first:?}");
    e.cancel().unwrap();
    let st = e.wait().unwrap().status;
    assert!(st.cancelled(), "{st}");
    assert_eq!(st.to_string(), "cancelled");
    assert_eq!(st.shell_code(), 130);
    assert_eq!(st.code(), Some(137), "{st}");
    assert_eq!(st.signal(), Some(9), "{st}");
    ex.stop().unwrap();
}
