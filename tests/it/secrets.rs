//! Issue 9 §6: exit reasons (the signal that killed a block), secret environment variables
//! redacted from everything the caller sees, GPU device requests and the raw `HostConfig`
//! passthrough.
use crate::common;

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

/// A value no test output contains by chance.
const SECRET: &str = "tok-5f3a9c1e7b-SECRET";

fn assert_clean(what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    assert!(!text.contains(SECRET), "{what} shows the secret: {text:?}");
    // Nor a good part of it: the longest piece of the secret shown must be short.
    for n in [8, SECRET.len() / 2] {
        for w in SECRET.as_bytes().windows(n) {
            assert!(
                !bytes.windows(n).any(|b| b == w),
                "{what} shows {:?} of the secret: {text:?}",
                String::from_utf8_lossy(w)
            );
        }
    }
}

/// Runs `block`, collecting every chunk while it runs; checks none shows the secret.
fn run_watched(ex: &dockexec::Executor, block: &CodeBlock) -> dockexec::Output {
    let e = ex.spawn(block).unwrap();
    let chunks: Vec<dockexec::Chunk> = e.chunks().iter().collect();
    let out = e.into_output().unwrap();
    for c in &chunks {
        assert_clean("a chunk", c.bytes());
    }
    let (mut o, mut r) = (Vec::new(), Vec::new());
    for c in &chunks {
        match c {
            dockexec::Chunk::Stdout(b) => o.extend_from_slice(b),
            dockexec::Chunk::Stderr(b) => r.extend_from_slice(b),
        }
    }
    assert_eq!(
        o,
        out.stdout,
        "chunks and output differ: {:?}",
        block.code()
    );
    assert_eq!(
        r,
        out.stderr,
        "chunks and output differ: {:?}",
        block.code()
    );
    assert_clean("stdout", &out.stdout);
    assert_clean("stderr", &out.stderr);
    assert_clean("the output's Debug", format!("{out:?}").as_bytes());
    out
}

#[test]
fn a_secret_reaches_the_code_but_never_the_output_or_chunks() {
    let (mut b, _guard) = common::case_builder("secret-out");
    let ex = b.secret_env("DOCKEXEC_SECRET", SECRET).start().unwrap();
    let redacted = dockexec::REDACTED;

    // The code sees the very value (its length and a digest, never the value itself).
    let out = run_watched(
        &ex,
        &CodeBlock::python(
            "import os, hashlib\ns = os.environ['DOCKEXEC_SECRET']\nprint(len(s), hashlib.sha256(s.encode()).hexdigest())",
        ),
    );
    let digest = {
        // sha256 of SECRET, computed in the same image so the test needs no hashing crate.
        let o = ex
            .run(&CodeBlock::python(format!(
                "import hashlib\nprint({}, hashlib.sha256({:?}.encode()).hexdigest())",
                SECRET.len(),
                SECRET
            )))
            .unwrap();
        o.stdout
    };
    assert_eq!(out.stdout, digest, "{}", out.stderr_lossy());

    // Whole, on both streams, in the shell.
    let out = run_watched(
        &ex,
        &CodeBlock::sh(
            "echo \"a $DOCKEXEC_SECRET b\"; echo \"c $DOCKEXEC_SECRET\" >&2; echo $DOCKEXEC_SECRET$DOCKEXEC_SECRET",
        ),
    );
    assert_eq!(
        out.stdout_lossy(),
        format!("a {redacted} b\n{redacted}{redacted}\n")
    );
    assert_eq!(out.stderr_lossy(), format!("c {redacted}\n"));

    // Byte by byte, each byte flushed on its own, on both streams in turn: chunks split it
    // everywhere.
    let out = run_watched(
        &ex,
        &CodeBlock::python(
            "import os, sys, time\ns = os.environ['DOCKEXEC_SECRET']\nfor c in s:\n    for f in (sys.stdout, sys.stderr):\n        f.write(c); f.flush()\n    time.sleep(0.01)\nprint('|')\nsys.stderr.write('|\\n')",
        ),
    );
    assert_eq!(out.stdout_lossy(), format!("{redacted}|\n"));
    assert_eq!(out.stderr_lossy(), format!("{redacted}|\n"));

    // Across a write boundary, with a pause between the halves so they arrive apart.
    let out = run_watched(
        &ex,
        &CodeBlock::python(
            "import os, sys, time\ns = os.environ['DOCKEXEC_SECRET']\nsys.stdout.write('x' + s[:7]); sys.stdout.flush()\ntime.sleep(0.3)\nsys.stdout.write(s[7:] + 'y\\n')",
        ),
    );
    assert_eq!(out.stdout_lossy(), format!("x{redacted}y\n"));

    // Inside a large write, and at its very end (the hold-back is flushed at the end).
    let out = run_watched(
        &ex,
        &CodeBlock::python(
            "import os, sys\ns = os.environ['DOCKEXEC_SECRET']\nsys.stdout.write('x' * 300000 + s + 'y' * 300000 + s)",
        ),
    );
    assert_eq!(out.stdout.len(), 600000 + 2 * redacted.len());
    assert!(out.stdout.ends_with(redacted.as_bytes()));

    // A prefix of the secret that never completes is shown as it is, at the end.
    let out = run_watched(
        &ex,
        &CodeBlock::python("import os, sys\nsys.stdout.write(os.environ['DOCKEXEC_SECRET'][:3])"),
    );
    assert_eq!(out.stdout, &SECRET.as_bytes()[..3]);

    // A session's blocks go through the same output path.
    if ex.strategy() == Strategy::Agent {
        let session = ex.session().unwrap();
        session
            .run("import os\ns = os.environ['DOCKEXEC_SECRET']")
            .unwrap();
        let e = session
            .spawn("print(s[:4], end='', flush=True)\nprint(s[4:])")
            .unwrap();
        let chunks: Vec<dockexec::Chunk> = e.chunks().iter().collect();
        for c in &chunks {
            assert_clean("a session chunk", c.bytes());
        }
        assert_eq!(
            e.into_output().unwrap().stdout_lossy(),
            format!("{redacted}\n")
        );
    }
    ex.stop().unwrap();
}

#[test]
fn a_secret_at_the_output_limit_is_still_redacted() {
    let (mut b, _guard) = common::case_builder("secret-cap");
    let ex = b
        .secret_env("DOCKEXEC_SECRET", SECRET)
        .max_output_bytes(Some(30))
        .start()
        .unwrap();
    for code in [
        // The cut falls inside the mask.
        "import os\nprint('x' * 25 + os.environ['DOCKEXEC_SECRET'] * 3)",
        // The secret arrives split, right at the limit.
        "import os, sys, time\ns = os.environ['DOCKEXEC_SECRET']\nsys.stdout.write('x' * 26 + s[:3]); sys.stdout.flush(); time.sleep(0.2)\nprint(s[3:] * 3)",
    ] {
        let out = run_watched(&ex, &CodeBlock::python(code));
        assert!(out.status.truncated(), "{}", out.status);
        assert!(
            out.stdout.starts_with(&[b'x'; 25]),
            "{}",
            out.stdout_lossy()
        );
    }
    ex.stop().unwrap();
}

#[test]
fn a_secret_never_appears_in_errors_or_debug() {
    let (mut b, _guard) = common::case_builder("secret-err");
    b.secret_env("DOCKEXEC_SECRET", SECRET);
    let shown = format!("{b:?}");
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(shown.contains("DOCKEXEC_SECRET=[REDACTED]"), "{shown}");

    // The init command's output.
    b.init_command("echo \"token $DOCKEXEC_SECRET\"; echo \"$DOCKEXEC_SECRET\" >&2; exit 3");
    let err = b.start().unwrap_err();
    assert!(
        matches!(err, dockexec::Error::InitCommand { code: Some(3), .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("token [REDACTED]"), "{err}");
    assert_clean("the init command error", err.to_string().as_bytes());
    assert_clean(
        "the init command error's Debug",
        format!("{err:?}").as_bytes(),
    );

    // A daemon error that echoes the create body's values.
    let (mut b, _guard2) = common::case_builder("secret-err-daemon");
    b.secret_env("DOCKEXEC_SECRET", SECRET)
        .extra_host("h", SECRET);
    let err = b.start().unwrap_err();
    assert!(matches!(err, dockexec::Error::Docker { .. }), "{err:?}");
    assert!(err.to_string().contains("[REDACTED]"), "{err}");
    assert_clean("the daemon's error", err.to_string().as_bytes());
    assert_clean("the daemon's error's Debug", format!("{err:?}").as_bytes());
    assert!(_guard2.containers().is_empty());

    // An empty secret is refused, by name.
    let (mut b, _guard3) = common::case_builder("secret-empty");
    let err = b.secret_env("EMPTY_ONE", "").start().unwrap_err();
    assert!(matches!(err, dockexec::Error::InvalidInput(_)), "{err:?}");
    assert!(err.to_string().contains("EMPTY_ONE"), "{err}");
    assert!(_guard3.containers().is_empty());
}

#[test]
fn a_secret_is_in_the_env_only_not_the_labels() {
    let (mut b, guard) = common::case_builder("secret-inspect");
    let ex = b.secret_env("DOCKEXEC_SECRET", SECRET).start().unwrap();
    let (ok, labels) = common::docker(&[
        "inspect",
        "-f",
        "{{json .Config.Labels}}",
        ex.container_id(),
    ]);
    assert!(ok);
    assert!(!labels.contains(SECRET), "{labels}");
    let (ok, env) = common::docker(&["inspect", "-f", "{{json .Config.Env}}", ex.container_id()]);
    assert!(ok);
    assert!(
        env.contains(&format!("DOCKEXEC_SECRET={SECRET}")),
        "documented: {env}"
    );
    assert_clean("the executor's Debug", format!("{ex:?}").as_bytes());
    ex.stop().unwrap();
    drop(guard);
}

#[test]
fn host_config_json_reaches_the_daemon() {
    let (mut b, _guard) = common::case_builder("hostconfig");
    let ex = b
        .host_config_json(serde_json::json!({
            "ShmSize": 67108864,
            "Ulimits": [{ "Name": "nofile", "Soft": 321, "Hard": 321 }],
        }))
        .start()
        .unwrap();
    let out = ex
        .run(&CodeBlock::sh("df -k /dev/shm | tail -n 1; ulimit -n"))
        .unwrap();
    let text = out.stdout_lossy();
    assert!(
        out.status.success(),
        "{} {}",
        out.status,
        out.stderr_lossy()
    );
    let mut lines = text.lines();
    let shm: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(shm.get(1), Some(&"65536"), "{text}");
    assert_eq!(lines.next(), Some("321"), "{text}");
    ex.stop().unwrap();
}

#[test]
fn host_config_json_must_be_an_object() {
    let (mut b, guard) = common::case_builder("hostconfig-bad");
    let err = b
        .host_config_json(serde_json::json!([1, 2]))
        .start()
        .unwrap_err();
    assert!(matches!(err, dockexec::Error::InvalidInput(_)), "{err:?}");
    assert!(err.to_string().contains("host_config_json"), "{err}");
    assert!(guard.containers().is_empty());
}

#[test]
fn a_device_request_on_a_host_without_the_device_fails_clearly() {
    let (mut b, guard) = common::case_builder("gpu");
    let err = b
        .device_request(dockexec::DeviceRequest::gpus_all())
        .start()
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, dockexec::Error::Docker { .. }), "{err:?}");
    assert!(msg.contains("device_request"), "{msg}");
    assert!(msg.contains(r#"capabilities [["gpu"]]"#), "{msg}");
    assert!(
        guard.containers().is_empty(),
        "left behind: {:?}",
        guard.containers()
    );
}
