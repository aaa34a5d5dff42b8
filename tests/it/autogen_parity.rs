//! The scenarios of AutoGen's `DockerCommandLineCodeExecutor` tests, against the real daemon.
use crate::common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::TempDir;
use dockexec::{CodeBlock, Error, Language};

#[test]
fn hello_world() {
    let ex = common::start();
    let out = ex.run(&CodeBlock::python("print('hello world!')")).unwrap();
    assert!(out.status.success(), "{}", out.status);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"hello world!\n");
    assert!(out.stderr.is_empty(), "{}", out.stderr_lossy());
}

#[test]
fn two_blocks_run_in_order_with_combined_output() {
    let ex = common::start();
    let blocks = [
        CodeBlock::python("print('hello world!')"),
        CodeBlock::sh("echo 'hello again'"),
    ];
    let res = ex.execute(&blocks).unwrap();
    assert!(res.success());
    assert_eq!(res.exit_code(), 0);
    assert_eq!(res.outputs.len(), 2);
    assert_eq!(res.output(), "hello world!\nhello again\n");
    let code_file = res.code_file().expect("the first block's code file");
    assert_eq!(Some(code_file), res.outputs[0].code_file.as_deref());
    assert!(
        code_file.starts_with(ex.work_dir().unwrap()),
        "{}",
        code_file.display()
    );
    assert_eq!(
        fs::read_to_string(code_file).unwrap(),
        "print('hello world!')"
    );
}

#[test]
fn execute_stops_at_the_first_failing_block() {
    let ex = common::start();
    let blocks = [
        CodeBlock::sh("echo first"),
        CodeBlock::sh("echo second; exit 3"),
        CodeBlock::sh("touch third_ran; echo third"),
    ];
    let res = ex.execute(&blocks).unwrap();
    assert!(!res.success());
    assert_eq!(res.outputs.len(), 2, "the third block must not run");
    assert_eq!(res.exit_code(), 3);
    assert_eq!(res.output(), "first\nsecond\n");
    assert!(!ex.work_dir().unwrap().join("third_ran").exists());
}

#[test]
fn bash_block() {
    let ex = common::start();
    let out = ex
        .run(&CodeBlock::bash(
            "a=(one two three)\necho \"${#a[@]} ${a[1]}\"\n[[ -n $BASH_VERSION ]] && echo bash",
        ))
        .unwrap();
    common::assert_success(&out);
    assert_eq!(out.stdout_lossy(), "3 two\nbash\n");
    assert_eq!(
        out.code_file.as_deref().and_then(Path::extension),
        Some("sh".as_ref())
    );
}

#[test]
fn multi_line_file_is_saved_exactly() {
    let ex = common::start();
    let code = "# filename: multi_line.py\n\
                import sys\n\
                \n\
                def greet(name):   \n\
                \treturn f\"héllo {name} ✓\"\n\
                \n\
                print(greet('world'))\n\
                print(len(sys.argv))\n\
                # no newline at the end";
    let out = ex.run(&CodeBlock::python(code)).unwrap();
    common::assert_success(&out);
    assert_eq!(out.stdout_lossy(), "héllo world ✓\n1\n");
    let file = out.code_file.as_deref().unwrap();
    assert_eq!(file, ex.work_dir().unwrap().join("multi_line.py"));
    assert_eq!(fs::read(file).unwrap(), code.as_bytes());

    // An unnamed block's generated file holds its source byte for byte too.
    let code = "for i in range(3):\n    print(i)\n\n\n";
    let out = ex.run(&CodeBlock::python(code)).unwrap();
    assert_eq!(out.stdout, b"0\n1\n2\n");
    assert_eq!(fs::read(out.code_file.unwrap()).unwrap(), code.as_bytes());
}

#[test]
fn timeout_gives_timed_out_status_quickly() {
    let ex = common::builder()
        .timeout(Some(Duration::from_secs(1)))
        .start()
        .unwrap();
    let t0 = Instant::now();
    let res = ex
        .execute(&[CodeBlock::python(
            "import time\ntime.sleep(10)\nprint('hello world!')",
        )])
        .unwrap();
    let elapsed = t0.elapsed();
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    let status = res.outputs[0].status;
    assert!(status.timed_out(), "{status}");
    assert!(!status.success());
    assert_eq!(res.exit_code(), 124);
    assert!(!res.outputs[0].stdout_lossy().contains("hello world"));
    // The block's process is really gone.
    // The agent's own processes (the agent, its idle spare) run its source with `python3 -c`;
    // a block's shows `python3 FILE`, forked from the agent or not.
    let python = |procs: &[String]| {
        procs
            .iter()
            .filter(|p| p.contains("python") && !p.contains("dockexec warm agent"))
            .count()
    };
    common::eventually(Duration::from_secs(5), || {
        python(&common::processes_matching(ex.container_id(), "")) == 0
    });
    let procs = common::processes_matching(ex.container_id(), "");
    assert!(python(&procs) == 0, "left running: {procs:?}");

    // The executor keeps working after a timeout.
    let out = ex.run(&CodeBlock::sh("echo still alive")).unwrap();
    assert!(out.status.success(), "{}", out.status);
    assert_eq!(out.stdout, b"still alive\n");
}

#[test]
fn filename_inside_the_workspace_creates_sub_directories() {
    let ex = common::start();
    let code = "# filename: sub/dir/test.py\nprint('hello from sub/dir')";
    let out = ex.run(&CodeBlock::python(code)).unwrap();
    common::assert_success(&out);
    assert_eq!(out.stdout, b"hello from sub/dir\n");
    let expected = ex.work_dir().unwrap().join("sub/dir/test.py");
    assert!(expected.is_file(), "{} missing", expected.display());
    assert_eq!(out.code_file.as_deref(), Some(expected.as_path()));
    assert_eq!(fs::read_to_string(&expected).unwrap(), code);
}

#[test]
fn filename_outside_the_workspace_is_refused_and_nothing_is_written() {
    // A work dir nested in a directory of our own, so "../x.py" would land where we can look.
    let parent = TempDir::new("outside");
    let work = parent.path().join("work");
    let ex = common::builder().work_dir(&work).start().unwrap();
    let before = common::files_under(&work);
    let _ = fs::remove_file("/etc/x.py"); // never ours; make sure a stale one cannot fool us
    for name in ["/etc/x.py", "../x.py", "sub/../../x.py"] {
        let block = CodeBlock::python(format!("# filename: {name}\nprint('escaped')"));
        for result in [
            ex.run(&block).map(|_| ()),
            ex.execute(std::slice::from_ref(&block)).map(|_| ()),
        ] {
            match result {
                Err(Error::InvalidInput(msg)) => assert!(
                    msg.contains("filename is not in the workspace"),
                    "{name}: {msg}"
                ),
                other => panic!("{name}: expected InvalidInput, got {other:?}"),
            }
        }
        // Display carries the text too (AutoGen users grep the message).
        let err = ex.run(&block).unwrap_err().to_string();
        assert!(err.contains("filename is not in the workspace"), "{err}");
    }
    assert!(!Path::new("/etc/x.py").exists());
    assert!(!parent.path().join("x.py").exists());
    assert_eq!(common::files_under(&work), before);
    let names: Vec<_> = fs::read_dir(parent.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        names,
        ["work"],
        "something was written next to the work dir"
    );
}

#[test]
fn writing_to_a_wrong_path_reports_no_such_file() {
    let ex = common::start();
    let out = ex
        .run(&CodeBlock::python(
            "with open('/nonexistent_dir/test.txt', 'w') as f:\n    f.write('hello world!')",
        ))
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr_lossy().contains("No such file or directory"),
        "{}",
        out.stderr_lossy()
    );
}

#[test]
fn stop_removes_container_and_temp_work_dir() {
    let ex = common::start();
    let id = ex.container_id().to_string();
    let work = ex.work_dir().unwrap().to_path_buf();
    assert!(common::container_exists(&id));
    assert!(work.is_dir());
    let out = ex.run(&CodeBlock::sh("echo hi > file.txt")).unwrap();
    assert!(out.status.success());
    assert!(work.join("file.txt").is_file());
    ex.stop().unwrap();
    assert!(
        !common::container_exists(&id),
        "container {id} still exists"
    );
    assert!(!work.exists(), "temp work dir {} kept", work.display());
    ex.stop().expect("a second stop() is no error");
}

#[test]
fn stop_keeps_a_user_given_work_dir() {
    let dir = TempDir::new("keep");
    let work = dir.path().join("ws");
    let ex = common::builder().work_dir(&work).start().unwrap();
    let id = ex.container_id().to_string();
    let out = ex
        .run(&CodeBlock::python(
            "# filename: kept.py\nopen('out.txt','w').write('x')",
        ))
        .unwrap();
    assert!(out.status.success(), "{}", out.stderr_lossy());
    ex.stop().unwrap();
    assert!(!common::container_exists(&id));
    assert!(work.is_dir());
    assert!(work.join("kept.py").is_file());
    assert_eq!(fs::read_to_string(work.join("out.txt")).unwrap(), "x");
}

#[test]
fn extra_volumes_read_only_and_read_write() {
    let ro = TempDir::new("ro");
    let rw = TempDir::new("rw");
    fs::write(ro.path().join("input.txt"), "from the host\n").unwrap();
    // The blocks write into the caller's own directory: run them as the caller.
    let ex = common::builder()
        .host_user()
        .volume(ro.path(), "/mnt/ro", true)
        .volume(rw.path(), "/mnt/rw", false)
        .start()
        .unwrap();

    let out = ex.run(&CodeBlock::sh("cat /mnt/ro/input.txt")).unwrap();
    assert!(out.status.success(), "{}", out.stderr_lossy());
    assert_eq!(out.stdout, b"from the host\n");

    let out = ex
        .run(&CodeBlock::sh("echo nope > /mnt/ro/new.txt"))
        .unwrap();
    assert!(!out.status.success(), "writing a read-only mount succeeded");
    assert!(
        out.stderr_lossy().contains("Read-only file system"),
        "{}",
        out.stderr_lossy()
    );
    assert!(!ro.path().join("new.txt").exists());

    let out = ex
        .run(&CodeBlock::python(
            "open('/mnt/rw/written.txt', 'w').write('from the container')",
        ))
        .unwrap();
    assert!(out.status.success(), "{}", out.stderr_lossy());
    assert_eq!(
        fs::read_to_string(rw.path().join("written.txt")).unwrap(),
        "from the container"
    );
}

#[test]
fn init_command_runs_before_blocks() {
    let ex = common::builder()
        .init_command("echo initialised > init.txt && mkdir -p made/by/init")
        .start()
        .unwrap();
    assert_eq!(
        fs::read_to_string(ex.work_dir().unwrap().join("init.txt")).unwrap(),
        "initialised\n"
    );
    let out = ex
        .run(&CodeBlock::sh(
            "cat init.txt; test -d made/by/init && echo dir",
        ))
        .unwrap();
    assert_eq!(out.stdout_lossy(), "initialised\ndir\n");
}

#[test]
fn failing_init_command_fails_start_and_leaves_nothing() {
    let (mut builder, case) = common::case_builder("init-fail");
    let leftovers = || case.containers();
    let dir = TempDir::new("init-fail");
    let work = dir.path().join("ws");
    let result = builder
        .work_dir(&work)
        .init_command("echo to-stdout; echo to-stderr >&2; exit 3")
        .start();
    match result {
        Err(Error::InitCommand { code, output }) => {
            assert_eq!(code, Some(3));
            assert!(output.contains("to-stdout"), "{output:?}");
            assert!(output.contains("to-stderr"), "{output:?}");
        }
        other => panic!("expected InitCommand, got {other:?}"),
    }
    assert!(leftovers().is_empty(), "left behind: {:?}", leftovers());
    // A user-given work dir is kept, minus dockexec's own state.
    assert!(work.is_dir());
    assert!(!work.join(".dockexec").exists());

    // With a temporary work dir, that goes too: no new dockexec-* dir may survive.
    let temp_before = dockexec_temp_dirs();
    let (mut builder, case2) = common::case_builder("init-fail-temp");
    let err = builder.init_command("false").start().unwrap_err();
    assert!(
        matches!(err, Error::InitCommand { code: Some(1), .. }),
        "{err:?}"
    );
    assert!(case2.containers().is_empty());
    let new_dirs: Vec<_> = dockexec_temp_dirs()
        .into_iter()
        .filter(|d| !temp_before.contains(d))
        .collect();
    // Other tests create and remove temp work dirs meanwhile. Each is named after its
    // executor (`dockexec-<id>`, the container's `dockexec.executor` label), created just
    // before its container and removed just after it: a dir that stays without its container
    // for a second has leaked.
    let orphaned = |d: &Path| {
        let name = d.file_name().unwrap().to_string_lossy().into_owned();
        let id = name.trim_start_matches("dockexec-");
        d.exists() && common::labelled(dockexec::labels::EXECUTOR, id).is_empty()
    };
    let suspects: Vec<_> = new_dirs.into_iter().filter(|d| orphaned(d)).collect();
    common::eventually(Duration::from_secs(1), || {
        !suspects.iter().any(|d| orphaned(d))
    });
    let leaked: Vec<_> = suspects.into_iter().filter(|d| orphaned(d)).collect();
    assert!(leaked.is_empty(), "temp work dirs left behind: {leaked:?}");
}

fn dockexec_temp_dirs() -> Vec<std::path::PathBuf> {
    fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("dockexec-") && !n.starts_with("dockexec-test-"))
        })
        .collect()
}

#[test]
fn extra_hosts_appear_in_etc_hosts() {
    let ex = common::builder()
        .extra_host("myhost", "127.0.0.1")
        .extra_host("otherhost", "10.1.2.3")
        .start()
        .unwrap();
    let out = ex.run(&CodeBlock::sh("cat /etc/hosts")).unwrap();
    assert!(out.status.success());
    let hosts = out.stdout_lossy();
    let has = |ip: &str, name: &str| {
        hosts.lines().any(|l| {
            let mut f = l.split_whitespace();
            f.next() == Some(ip) && f.any(|n| n == name)
        })
    };
    assert!(has("127.0.0.1", "myhost"), "{hosts}");
    assert!(has("10.1.2.3", "otherhost"), "{hosts}");
}

#[test]
fn delete_code_files_removes_them_after_the_run() {
    let ex = common::builder().delete_code_files(true).start().unwrap();
    let out = ex
        .run(&CodeBlock::python("# filename: gone.py\nprint('ran')"))
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, b"ran\n");
    assert_eq!(out.code_file, None);
    assert!(!ex.work_dir().unwrap().join("gone.py").exists());

    let res = ex
        .execute(&[CodeBlock::sh("echo a"), CodeBlock::python("print('b')")])
        .unwrap();
    assert_eq!(res.output(), "a\nb\n");
    assert_eq!(res.code_file(), None);
    assert!(res.outputs.iter().all(|o| o.code_file.is_none()));
    assert_eq!(
        common::files_under(ex.work_dir().unwrap()),
        Vec::<std::path::PathBuf>::new()
    );
}

#[test]
fn restart_keeps_working_and_workspace_files_survive() {
    let ex = common::start();
    let id = ex.container_id().to_string();
    let out = ex
        .run(&CodeBlock::python(
            "open('state.txt', 'w').write('before restart')",
        ))
        .unwrap();
    assert!(out.status.success(), "{}", out.stderr_lossy());
    ex.restart().unwrap();
    assert_eq!(ex.container_id(), id);
    let out = ex
        .run(&CodeBlock::python("print(open('state.txt').read())"))
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        out.stderr_lossy()
    );
    assert_eq!(out.stdout, b"before restart\n");
    let out = ex
        .run(&CodeBlock::new(Language::Shell, "echo again"))
        .unwrap();
    assert_eq!(out.stdout, b"again\n");
}

/// The container shares the workspace and can plant symlinks in it; the host-side write of
/// the next code file must never follow one out of the workspace.
#[test]
fn symlinks_planted_by_a_block_never_lead_a_code_file_out_of_the_workspace() {
    let host_dir = common::TempDir::new("symlink-target");
    let target = host_dir.path().to_string_lossy().into_owned();
    let victim = host_dir.path().join("victim.py");
    std::fs::write(&victim, "untouched\n").unwrap();
    let ex = common::start();
    let plant = format!("ln -s {target} escape && ln -s {target}/victim.py f.py && echo planted");
    let out = ex.run(&CodeBlock::sh(plant)).unwrap();
    assert_eq!(out.stdout, b"planted\n", "{}", out.stderr_lossy());

    for name in ["escape/pwned.py", "escape/sub/pwned.py"] {
        let err = ex
            .run(&CodeBlock::python(format!("# filename: {name}\nprint(1)")))
            .unwrap_err();
        // By exec, the host refuses the path; with the agent, the block's user cannot write
        // through the (in the container, dangling) link, and the agent refuses the block.
        let msg = err.to_string();
        assert!(
            msg.contains("filename is not in the workspace")
                || (common::strategy() != dockexec::Strategy::Exec
                    && msg.contains("cannot write the code file")),
            "{name}: {err}"
        );
    }
    assert!(!host_dir.path().join("pwned.py").exists());
    assert!(
        !host_dir.path().join("sub").exists(),
        "no directory made through the link"
    );

    // A link as the file itself is replaced, not written through.
    let out = ex
        .run(&CodeBlock::python(
            "# filename: f.py\nprint('replaced the link')",
        ))
        .unwrap();
    assert_eq!(out.stdout, b"replaced the link\n");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched\n");
}

#[test]
fn two_executors_can_share_a_work_dir() {
    let dir = common::TempDir::new("shared-work-dir");
    let mut b = common::builder();
    // The blocks write into the caller's own (existing) directory: run them as the caller.
    b.work_dir(dir.path()).host_user();
    let (first, second) = (b.start().unwrap(), b.start().unwrap());
    let running = second
        .spawn(&CodeBlock::sh(
            "echo up; trap '' TERM; while :; do sleep 1; done",
        ))
        .unwrap();
    common::await_stdout(
        &running.chunks(),
        "up\n",
        std::time::Duration::from_secs(10),
    );
    first.stop().unwrap();
    // Neither strategy keeps state in the work dir (the exec one keeps its marker in the
    // container), so the first stop has nothing of the second's to touch there.
    assert!(!dir.path().join(".dockexec").exists());
    running.cancel().unwrap();
    let out = running
        .wait_timeout(std::time::Duration::from_secs(10))
        .unwrap()
        .expect("cancelled in time");
    assert!(out.status.cancelled(), "{}", out.status);
    second.stop().unwrap();
    assert!(!dir.path().join(".dockexec").exists());
}
