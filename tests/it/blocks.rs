//! Running blocks: exit codes, languages, empty code, many blocks at once.
use crate::common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use dockexec::{CodeBlock, Error, Language};

#[test]
fn exit_codes_come_back_faithfully() {
    let ex = common::start();
    let cases = [
        (CodeBlock::sh("true"), 0),
        (CodeBlock::sh("exit 1"), 1),
        (CodeBlock::sh("touch x; chmod -x x; ./x"), 126),
        (CodeBlock::sh("no_such_command_dockexec"), 127),
        (CodeBlock::sh("exit 42"), 42),
        (CodeBlock::python("import sys\nsys.exit(3)"), 3),
        (CodeBlock::python("raise SystemExit(0)"), 0),
        (CodeBlock::bash("exit 255"), 255),
    ];
    for (block, code) in &cases {
        let out = ex.run(block).unwrap();
        assert_eq!(
            out.status.code(),
            Some(*code),
            "{:?}: {} / {}",
            block.code(),
            out.status,
            out.stderr_lossy()
        );
        assert_eq!(out.status.success(), *code == 0, "{:?}", block.code());
        assert_eq!(out.status.shell_code(), *code);
        assert!(!out.status.timed_out() && !out.status.cancelled() && !out.status.lost());
    }
    let out = ex.run(&CodeBlock::sh("no_such_command_dockexec")).unwrap();
    assert!(
        out.stderr_lossy().contains("not found"),
        "{}",
        out.stderr_lossy()
    );
}

#[test]
fn exit_code_of_a_signalled_block() {
    let ex = common::start();
    let out = ex.run(&CodeBlock::sh("kill -TERM $$")).unwrap();
    assert_eq!(out.status.code(), Some(143), "{}", out.status);
    assert_eq!(out.status.signal(), Some(15));
    assert!(!out.status.success());
}

#[test]
fn unknown_language_is_invalid_input_and_writes_no_file() {
    let ex = common::start();
    let before = common::workspace_files(&ex);
    let block = CodeBlock::new("cobol", "DISPLAY 'HELLO'.");
    for result in [
        ex.run(&block).map(|_| ()),
        ex.spawn(&block).map(|_| ()),
        ex.execute(&[CodeBlock::sh("touch ran"), block.clone()])
            .map(|_| ()),
    ] {
        match result {
            Err(Error::InvalidInput(msg)) => assert!(msg.contains("cobol"), "{msg}"),
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }
    // No file, not even `ran`: execute ran no block.
    assert_eq!(common::workspace_files(&ex), before);
}

#[test]
fn languages_by_tag() {
    let ex = common::start();
    for (tag, code) in [
        ("py", "print('ok')"),
        ("Python3", "print('ok')"),
        ("shell", "echo ok"),
        ("SH", "echo ok"),
        ("Bash", "echo ok"),
    ] {
        let out = ex.run(&CodeBlock::new(tag, code)).unwrap();
        assert!(out.status.success(), "{tag}: {}", out.stderr_lossy());
        assert_eq!(out.stdout, b"ok\n", "{tag}");
    }
    // No pwsh in the test image: a clear 127, not an error.
    let out = ex
        .run(&CodeBlock::new(Language::PowerShell, "Write-Output hi"))
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert!(
        out.stderr_lossy().contains("pwsh"),
        "{}",
        out.stderr_lossy()
    );
}

#[test]
fn empty_code_runs_and_exits_zero() {
    let ex = common::start();
    for block in [
        CodeBlock::python(""),
        CodeBlock::sh(""),
        CodeBlock::bash(""),
        CodeBlock::python("\n\n"),
    ] {
        let out = ex.run(&block).unwrap();
        assert!(out.status.success(), "{:?}: {}", block, out.status);
        assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
        let file = out.code_file.as_deref().unwrap();
        assert_eq!(common::read_code_file(&ex, file), block.code().as_bytes());
    }
}

#[test]
fn eight_threads_run_identical_blocks_at_once() {
    const THREADS: usize = 8;
    let ex = common::start();
    // Identical code; each run prints the file it was started from, so two runs sharing a
    // code file would show as a duplicate.
    let block = CodeBlock::python("import time\ntime.sleep(0.2)\nprint(__file__)");
    let outputs: Vec<_> = std::thread::scope(|s| {
        let (ex, block) = (&ex, &block);
        let handles: Vec<_> = (0..THREADS)
            .map(|_| s.spawn(move || ex.run(block)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().expect("run from a thread"))
            .collect()
    });
    assert_eq!(outputs.len(), THREADS);
    let mut files = HashSet::new();
    let mut printed = HashSet::new();
    for (i, out) in outputs.iter().enumerate() {
        assert!(
            out.status.success(),
            "thread {i}: {} {}",
            out.status,
            out.stderr_lossy()
        );
        let file = out.code_file.clone().unwrap();
        assert_eq!(common::read_code_file(&ex, &file), block.code().as_bytes());
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            out.stdout_lossy(),
            format!("{}/{name}\n", dockexec::WORKSPACE),
            "thread {i} ran another thread's file"
        );
        assert!(files.insert(file), "thread {i}: code file collided");
        assert!(printed.insert(out.stdout.clone()));
    }
    assert_eq!(files.len(), THREADS);
}

#[test]
fn timeout_stops_the_block_itself_not_only_its_running_child() {
    // A fresh container, so the block's shell has a one-digit pid and its children two- and
    // three-digit ones. The child (pid 10) has 100 background siblings; the block's shell
    // waits on it. When the timeout fires, nothing of the block may run any more: in
    // particular its shell must not go on to the next command.
    let mut b = common::builder();
    b.timeout(Some(Duration::from_secs(1)));
    if let Some(pids) = common::pids_for_a_hundred_processes(
        "timeout_stops_the_block_itself_not_only_its_running_child",
    ) {
        b.pids_limit(Some(pids));
    }
    let ex = b.start().unwrap();
    let t0 = Instant::now();
    let out = ex
        .run(&CodeBlock::sh(
            "sh -c 'i=0; while [ $i -lt 100 ]; do sleep 100 & i=$((i+1)); done; exec sleep 10'\n\
             echo after-the-timeout",
        ))
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert!(out.status.timed_out(), "{}", out.status);
    let left = common::processes_matching(ex.container_id(), "sleep 100");
    assert!(
        left.is_empty(),
        "{} background processes survived",
        left.len()
    );
    assert!(
        !out.stdout_lossy().contains("after-the-timeout"),
        "the block's shell ran its next command after the timeout killed its child: \
         stdout {:?}, stderr {:?}, exit code {:?}",
        out.stdout_lossy(),
        out.stderr_lossy(),
        out.status.code()
    );
}

#[test]
fn code_larger_than_the_argument_limit_runs() {
    // MAX_ARG_STRLEN is 128 KiB: a block this size could never go through argv.
    let ex = common::start();
    let mut code = String::from("total = 0\n");
    while code.len() < 1024 * 1024 {
        code.push_str("total += 1\n");
    }
    code.push_str("print(total)\n");
    let lines = code.lines().count() - 2;
    let out = ex.run(&CodeBlock::python(code)).unwrap();
    common::assert_success(&out);
    assert_eq!(out.stdout_lossy().trim(), lines.to_string());
}

#[test]
fn a_non_root_user_runs_blocks_and_is_still_cancellable() {
    let mut b = common::builder();
    b.user("65534:65534");
    let ex = b.start().unwrap();
    let out = ex
        .run(&CodeBlock::sh(
            "id -u; echo data > mine.txt && cat mine.txt",
        ))
        .unwrap();
    common::assert_success(&out);
    assert_eq!(out.stdout_lossy(), "65534\ndata\n");
    let running = ex
        .spawn(&CodeBlock::sh(
            "echo up; trap '' TERM; sleep 1777 & while :; do sleep 1; done",
        ))
        .unwrap();
    common::await_stdout(
        &running.chunks(),
        "up\n",
        std::time::Duration::from_secs(10),
    );
    running.cancel().unwrap();
    let out = running
        .wait_timeout(std::time::Duration::from_secs(10))
        .unwrap()
        .expect("cancelled in time");
    assert!(out.status.cancelled());
    let left = common::processes_matching(ex.container_id(), "");
    assert!(
        !left.iter().any(|p| p.contains("sleep 1777")),
        "nothing of the block survives: {left:?}"
    );
}
