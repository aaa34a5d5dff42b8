//! The `dockexec` command line, run as a process against the real daemon.
mod common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_dockexec");

/// `dockexec run --image <test image> --pull never <args…>`.
fn run(args: &[&str]) -> Output {
    let image = common::image();
    let mut full = vec!["run", "--image", image.as_str(), "--pull", "never"];
    full.extend_from_slice(args);
    Command::new(BIN)
        .args(&full)
        .stdin(Stdio::null())
        .output()
        .expect("run the dockexec binary")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    fs::write(&path, content).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn run_py_file_passes_streams_and_exit_code_through() {
    let dir = TempDir::new("cli-py");
    let file = write(
        dir.path(),
        "prog.py",
        "import sys\nprint('to stdout')\nprint('to stderr', file=sys.stderr)\nsys.exit(3)\n",
    );
    let out = run(&[&file]);
    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "to stdout\n");
    assert!(
        text(&out.stderr).contains("to stderr\n"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stderr).contains("to stdout"));
}

#[test]
fn run_succeeding_file_exits_zero() {
    let dir = TempDir::new("cli-ok");
    let file = write(dir.path(), "ok.sh", "echo fine\n");
    let out = run(&[&file]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "fine\n");
}

#[test]
fn markdown_file_runs_every_block_in_order() {
    let dir = TempDir::new("cli-md");
    let file = write(
        dir.path(),
        "doc.md",
        "# Title\n\nFirst:\n\n```python\nprint('one')\n```\n\nThen:\n\n```sh\necho two\n```\n",
    );
    let out = run(&[&file]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "one\ntwo\n");
}

#[test]
fn session_flag_keeps_variables_from_block_to_block() {
    let dir = TempDir::new("cli-session");
    let file = write(
        dir.path(),
        "doc.md",
        "```python\nx = 41\n```\n\n```sh\necho between\n```\n\n```python\nprint(x + 1)\n```\n",
    );
    let out = run(&["--session", &file]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "between\n42\n");
    // Without it, each block is a fresh interpreter.
    let out = run(&["--strategy", "agent", &file]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("NameError"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["--strategy", "exec", "--session", &file]);
    assert_eq!(
        out.status.code(),
        Some(125),
        "a usage error: {}",
        text(&out.stderr)
    );
}

#[test]
fn markdown_stops_at_the_first_failing_block() {
    let dir = TempDir::new("cli-md-fail");
    let file = write(
        dir.path(),
        "doc.md",
        "```sh\necho one\n```\n```sh\necho two; exit 4\n```\n```sh\necho three\n```\n",
    );
    let out = run(&[&file]);
    assert_eq!(out.status.code(), Some(4), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "one\ntwo\n");
}

#[test]
fn timeout_exits_124() {
    let dir = TempDir::new("cli-timeout");
    let file = write(dir.path(), "slow.sh", "sleep 10\necho late\n");
    let t0 = Instant::now();
    let out = run(&["--timeout", "1", &file]);
    let elapsed = t0.elapsed();
    assert_eq!(
        out.status.code(),
        Some(124),
        "stderr: {}",
        text(&out.stderr)
    );
    assert!(elapsed < Duration::from_secs(8), "took {elapsed:?}");
    assert!(
        text(&out.stderr).contains("timed out"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn help_mentions_every_option() {
    for flag in ["--help", "-h"] {
        let out = Command::new(BIN).arg(flag).output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        let help = text(&out.stdout);
        for option in [
            "--lang",
            "--image",
            "--timeout",
            "--work-dir",
            "--env",
            "--secret-env",
            "--network",
            "--max-output",
            "--pull",
            "--strategy",
            "--session",
            "--user",
            "--memory",
            "--pids",
            "--cpus",
            "--read-write-root",
            "--trusted",
            "--outputs",
            "--json",
            "--pool",
            "-u,",
            "-l,",
            "-i,",
            "-t,",
            "-w,",
            "-e,",
        ] {
            assert!(
                help.contains(option),
                "{flag}: {option} missing from:\n{help}"
            );
        }
    }
}

#[test]
fn run_help_prints_the_usage() {
    // `dockexec run --help` is where a user looks for the run options.
    let out = Command::new(BIN).args(["run", "--help"]).output().unwrap();
    let all = text(&out.stdout) + &text(&out.stderr);
    for option in ["--lang", "--image", "--timeout", "--work-dir", "--env"] {
        assert!(
            all.contains(option),
            "`dockexec run --help` (exit {:?}) does not mention {option}; it printed:\n{all}",
            out.status.code()
        );
    }
}

#[test]
fn unknown_flag_exits_125() {
    let dir = TempDir::new("cli-flag");
    let file = write(dir.path(), "x.py", "print('never')\n");
    let out = run(&["--no-such-flag", &file]);
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stdout).is_empty());
    assert!(
        text(&out.stderr).contains("--no-such-flag"),
        "{}",
        text(&out.stderr)
    );
    let out = Command::new(BIN).arg("--no-such-flag").output().unwrap();
    assert_eq!(out.status.code(), Some(125));
    // A flag missing its value is a usage error too.
    let out = Command::new(BIN)
        .args(["run", &file, "--timeout"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
}

#[test]
fn env_reaches_the_block() {
    let dir = TempDir::new("cli-env");
    let file = write(
        dir.path(),
        "env.py",
        "import os\nprint(os.environ['GREETING'], os.environ['WITH_EQUALS'], os.environ['INLINE'])\n",
    );
    let out = run(&[
        "-e",
        "GREETING=hello",
        "--env",
        "WITH_EQUALS=a=b",
        "--env=INLINE=yes",
        &file,
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello a=b yes\n");
}

#[test]
fn secret_env_reaches_the_block_redacted() {
    let dir = TempDir::new("cli-secret");
    let file = write(
        dir.path(),
        "secret.sh",
        "echo \"token=$CLI_SECRET\"; echo \"$CLI_SECRET\" >&2; exit 3\n",
    );
    let secret = "cli-s3cr3t-9d2e41";
    let out = Command::new(BIN)
        .args(["run", "--image", &common::image(), "--pull", "never"])
        .args(["--secret-env", "CLI_SECRET", &file])
        .env("CLI_SECRET", secret)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "token=[REDACTED]\n");
    assert!(
        text(&out.stderr).contains("[REDACTED]"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stderr).contains(secret), "{}", text(&out.stderr));
    // Unset: a usage error naming the variable, before any container.
    let out = Command::new(BIN)
        .args(["run", "--secret-env", "CLI_SECRET_UNSET", &file])
        .env_remove("CLI_SECRET_UNSET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("CLI_SECRET_UNSET is not set"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_block_killed_by_a_signal_says_so() {
    let dir = TempDir::new("cli-signal");
    let file = write(dir.path(), "k.sh", "kill -TERM $$\n");
    let out = run(&[&file]);
    assert_eq!(out.status.code(), Some(143), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("killed by signal 15 (SIGTERM)"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn work_dir_is_used_and_kept() {
    let dir = TempDir::new("cli-wd");
    let work = dir.path().join("ws");
    let file = write(
        dir.path(),
        "w.py",
        "# filename: saved.py\nopen('result.txt', 'w').write('done')\n",
    );
    let out = run(&["--work-dir", work.to_str().unwrap(), &file]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(work.join("saved.py").is_file());
    assert_eq!(fs::read_to_string(work.join("result.txt")).unwrap(), "done");
}

#[test]
fn lang_flag_and_standard_input() {
    let image = common::image();
    let mut child = Command::new(BIN)
        .args([
            "run", "--image", &image, "--pull", "never", "--lang", "py", "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"print(6 * 7)\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "42\n");
}

#[test]
fn missing_image_exits_1_with_a_clear_message() {
    let dir = TempDir::new("cli-noimg");
    let file = write(dir.path(), "x.py", "print('never')\n");
    let out = Command::new(BIN)
        .args([
            "run",
            "--image",
            "dockexec-test/never-existed:nope",
            "--pull",
            "never",
            &file,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "dockexec's own failure");
    let err = text(&out.stderr);
    assert!(
        err.contains("dockexec-test/never-existed:nope") && err.contains("not found"),
        "{err}"
    );
}

#[test]
fn output_streams_live_before_the_block_ends() {
    use std::io::{BufRead, BufReader};
    let dir = TempDir::new("cli-live");
    let file = write(
        dir.path(),
        "live.py",
        "import sys, time\nprint('first')\nprint('err-first', file=sys.stderr)\ntime.sleep(3)\nprint('last')\n",
    );
    let image = common::image();
    let mut child = Command::new(BIN)
        .args([
            "run",
            "--image",
            image.as_str(),
            "--pull",
            "never",
            file.as_str(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "first\n");
    let first_at = started.elapsed();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut eline = String::new();
    err.read_line(&mut eline).unwrap();
    assert_eq!(eline, "err-first\n", "stderr stays on stderr, live");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first lines arrive while the block still runs (after {first_at:?})"
    );
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!(rest, "last\n");
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_pull_shows_its_progress_on_stderr() {
    let reference = common::registry_busybox();
    // Removed afterwards only if this test brought it in.
    let _guard = (!common::image_exists(&reference)).then(|| common::ImageGuard(reference.clone()));
    let out = Command::new(BIN)
        .args([
            "run",
            "--lang",
            "sh",
            "--image",
            reference.as_str(),
            "--pull",
            "always",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(b"echo pulled-and-ran\n")?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "pulled-and-ran\n");
    let err = text(&out.stderr);
    assert!(
        err.contains("Status:"),
        "the pull's progress is shown: {err}"
    );
}

#[test]
fn sandbox_options_reach_the_container() {
    let dir = TempDir::new("cli-sandbox");
    let probe = "id -u\ncat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max\n\
                 cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max\n\
                 echo x > /usr/planted && echo root-writable\n";
    let file = write(dir.path(), "probe.sh", probe);
    let out = run(&[
        "--user",
        "0",
        "--memory",
        "256M",
        "--pids",
        "100",
        "--cpus",
        "1.5",
        "--read-write-root",
        &file,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("0\n100\n{}\nroot-writable\n", 256 * 1024 * 1024)
    );
    // --trusted relaxes; the defaults do not.
    let out = run(&["--trusted", &file]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("0\nmax\n"),
        "{}",
        text(&out.stdout)
    );
    let out = run(&[&file]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        !text(&out.stdout).starts_with("0\n"),
        "{}",
        text(&out.stdout)
    );
    // Bad values are usage errors.
    for bad in [["--memory", "lots"], ["--pids", "0"], ["--cpus", "-1"]] {
        let out = run(&[bad[0], bad[1], &file]);
        assert_eq!(
            out.status.code(),
            Some(125),
            "{bad:?}: {}",
            text(&out.stderr)
        );
    }
}

/// The binary with `args` as given.
fn cli(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run the dockexec binary")
}

/// `dockexec engine` says which engine and why; `-H` and `-c` name one as `docker` takes
/// them (global, before the command, or after it), both at once is a usage error, and an
/// unknown context or an unusable endpoint exits 125 with the reason. A closed stdout
/// (`| head -1`) is no panic.
#[test]
fn engine_command_and_the_host_and_context_flags() {
    let out = cli(&["engine"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains("endpoint:") && said.contains("filesystem:"),
        "{said}"
    );
    let out = cli(&["-H", "unix:///var/run/docker.sock", "engine"]);
    assert!(
        text(&out.stdout).contains("chosen by:   --host"),
        "{}",
        text(&out.stdout)
    );
    let out = cli(&["engine", "--host", "unix:///var/run/docker.sock"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cli(&["-H", "unix:///x.sock", "-c", "y", "engine"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("either specify --host or --context"),
        "{}",
        text(&out.stderr)
    );
    let config = std::env::temp_dir().join(format!("dockexec-cli-ctx-{}", std::process::id()));
    std::fs::create_dir_all(&config).unwrap();
    let out = Command::new(BIN)
        .args(["-c", "nope", "engine"])
        .env("DOCKER_CONFIG", &config)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&config);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("no such context"),
        "{}",
        text(&out.stderr)
    );
    let out = cli(&["-H", "ftp://x", "engine"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("unix://, tcp:// or ssh://"),
        "{}",
        text(&out.stderr)
    );
    // stdout closed at once: the output is lost, the exit is not a panic (101).
    let mut child = Command::new(BIN)
        .arg("engine")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
}

/// `run --config FILE`: writes `config` (with this test's case label) to a file in `dir`.
fn config_file(dir: &Path, config: &dockexec::ExecutorConfig) -> String {
    write(dir, "dockexec.json", &config.to_json().unwrap())
}

#[test]
fn config_file_runs_hello_md_and_the_options_after_it_change_it() {
    let dir = TempDir::new("cli-config");
    let (mut b, guard) = common::case_builder("cli-config");
    // Created by the executor, so the block user can write it.
    let work = dir.path().join("work");
    b.work_dir(&work)
        .env("GREETING", "from-config")
        .init_command("echo \"$GREETING\" > marker")
        .secret_env("DOCKEXEC_CLI_CFG_SECRET", "not-this-value");
    let config = b.to_config();
    let file = config_file(dir.path(), &config);
    assert!(
        !fs::read_to_string(&file)
            .unwrap()
            .contains("not-this-value")
    );
    let hello = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hello.md");
    let out = Command::new(BIN)
        .args(["run", "--config", &file, hello])
        .env("DOCKEXEC_CLI_CFG_SECRET", "s3cr3t-from-env")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("hello from Python 3."), "{stdout}");
    assert!(stdout.contains("working in /workspace"), "{stdout}");
    // `ls -a` shows what the config's init command wrote, in the config's work dir.
    assert!(stdout.contains("marker\n"), "{stdout}");
    assert_eq!(
        fs::read_to_string(work.join("marker")).unwrap(),
        "from-config\n"
    );

    // Options after --config change what it set; the secret's value comes from the
    // environment, and is redacted.
    let show = write(
        dir.path(),
        "show.sh",
        "echo \"token=$DOCKEXEC_CLI_CFG_SECRET\"\n",
    );
    let out = Command::new(BIN)
        .args([
            "run",
            "--config",
            &file,
            "--env",
            "GREETING=from-flag",
            &show,
        ])
        .env("DOCKEXEC_CLI_CFG_SECRET", "s3cr3t-from-env")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "token=[REDACTED]\n");
    assert_eq!(
        fs::read_to_string(work.join("marker")).unwrap(),
        "from-flag\n"
    );

    // -H wins over the config's engine (a socket that is not there).
    let mut elsewhere = config.clone();
    elsewhere.engine = Some(dockexec::EngineConfig::from(&dockexec::Engine::unix(
        "/nonexistent/dockexec-cfg.sock",
    )));
    let file = config_file(dir.path(), &elsewhere);
    let host = std::env::var("DOCKER_HOST").unwrap_or("unix:///var/run/docker.sock".into());
    let out = Command::new(BIN)
        .args(["-H", &host, "run", "--config", &file, &show])
        .env("DOCKEXEC_CLI_CFG_SECRET", "s3cr3t-from-env")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "token=[REDACTED]\n");
    assert_eq!(
        guard.containers(),
        Vec::<String>::new(),
        "the CLI removes its container"
    );
}

#[test]
fn a_bad_config_file_is_refused_naming_the_key_and_the_file() {
    let dir = TempDir::new("cli-config-bad");
    let hello = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hello.md");
    let refused = |args: &[&str], want: &[&str]| {
        let out = Command::new(BIN)
            .arg("run")
            .args(args)
            .arg(hello)
            .env_remove("DOCKEXEC_CLI_CFG_MISSING")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {stderr}");
        for w in want {
            assert!(stderr.contains(w), "{args:?}: {w:?} not in {stderr}");
        }
        assert!(!stderr.contains("panicked"), "{stderr}");
    };
    let unknown = write(
        dir.path(),
        "unknown.json",
        "{\n  \"imgae\": \"python:3-slim\"\n}\n",
    );
    refused(
        &["--config", &unknown],
        &[&unknown, "unknown field `imgae`", "line 2"],
    );
    let bad_type = write(dir.path(), "type.json", r#"{"memory_limit": "2G"}"#);
    refused(
        &["--config", &bad_type],
        &[&bad_type, "field `memory_limit`"],
    );
    let missing = dir.path().join("missing.json");
    refused(&["--config", &missing.to_string_lossy()], &["missing.json"]);
    let secret = write(
        dir.path(),
        "secret.json",
        r#"{"secret_env": ["DOCKEXEC_CLI_CFG_MISSING"]}"#,
    );
    refused(
        &["--config", &secret],
        &["DOCKEXEC_CLI_CFG_MISSING is not set"],
    );
    let ok = write(dir.path(), "ok.json", "{}");
    refused(
        &["--image", "x", "--config", &ok],
        &["--config comes once, before"],
    );
    refused(
        &["--config", &ok, "--config", &ok],
        &["--config comes once, before"],
    );
    // The config's engine is the one used (no -H or -c): here, a socket that is not there.
    let engine = write(
        dir.path(),
        "engine.json",
        r#"{"engine": {"host": "unix:///nonexistent/dockexec-cfg.sock"}, "gc_orphans": false}"#,
    );
    refused(&["--config", &engine], &["/nonexistent/dockexec-cfg.sock"]);
}

/// `dockexec run --image <the matplotlib image> --pull never <args…>`.
fn run_mpl(args: &[&str]) -> Output {
    let image = common::mpl_image();
    let mut full = vec!["run", "--image", image.as_str(), "--pull", "never"];
    full.extend_from_slice(args);
    Command::new(BIN)
        .args(&full)
        .stdin(Stdio::null())
        .output()
        .expect("run the dockexec binary")
}

/// Issue 19: `dockexec run --outputs out/ examples/plot.md` writes the figure's PNG, one
/// line per file on stderr; without the flag, stderr says how many were not saved.
#[test]
fn outputs_writes_the_plot_examples_figure() {
    let dir = TempDir::new("cli-outputs");
    let outputs = dir.path().join("out");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/plot.md");
    let out = run_mpl(&["--outputs", outputs.to_str().unwrap(), example]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "50 points, max 48.0\n");
    let png = outputs.join("block-2-fig-1.png");
    let bytes = fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 1000);
    assert_eq!(
        common::files_under(&outputs),
        [std::path::PathBuf::from("block-2-fig-1.png")]
    );
    assert!(
        text(&out.stderr).contains(&format!("wrote {}", png.display())),
        "{}",
        text(&out.stderr)
    );

    let out = run_mpl(&[example]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("1 rich result(s) not saved"),
        "{}",
        text(&out.stderr)
    );
}

/// `--json`: one record per block, the output in it (not streamed), results in base64.
#[test]
fn json_prints_one_record_per_block() {
    let dir = TempDir::new("cli-json");
    let file = write(
        dir.path(),
        "r.md",
        "```python\nprint('hi')\ndisplay({'a': 1})\n```\n\n```sh\necho there >&2; exit 3\n```\n",
    );
    let out = run(&["--json", "--strategy", "agent", &file]);
    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 2, "{}", text(&out.stdout));
    let (a, b) = (&lines[0], &lines[1]);
    assert_eq!(a["block"], 1);
    assert_eq!(a["language"], "python");
    assert_eq!(a["stdout"], "hi\n");
    assert_eq!(a["status"]["success"], true);
    let r = &a["results"][0];
    assert_eq!(r["kind"], "display");
    assert_eq!(r["stdout_at"], 3);
    assert_eq!(r["data"][0]["mime"], "text/plain");
    assert_eq!(r["data"][0]["base64"], "eydhJzogMX0="); // {'a': 1}
    assert_eq!(b["block"], 2);
    assert_eq!(b["stderr"], "there\n");
    assert_eq!(b["status"]["code"], 3);
    assert!(b["results"].as_array().unwrap().is_empty());
    assert!(
        !text(&out.stderr).contains("not saved"),
        "{}",
        text(&out.stderr)
    );
}

/// `dockexec run --config <this case's config> --pool …`: the config carries the test image,
/// `--pull never` and the case label, so that every container of the batch is this test's.
fn batch(dir: &Path, case: &str, args: &[&str]) -> (Output, common::CaseGuard) {
    let (b, guard) = common::case_builder(case);
    let config = config_file(dir, &b.to_config());
    let out = Command::new(BIN)
        .args(["run", "--config", &config])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run the dockexec binary");
    (out, guard)
}

/// stdout of a batch, cut at its `==> FILE <==` headers: (file, the bytes under it).
fn sections(stdout: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut found: Vec<(String, Vec<u8>)> = Vec::new();
    for line in stdout.split_inclusive(|b| *b == b'\n') {
        let header = std::str::from_utf8(line)
            .ok()
            .and_then(|l| l.strip_prefix("==> "))
            .and_then(|l| l.strip_suffix(" <==\n"));
        match (header, found.last_mut()) {
            (Some(file), _) => found.push((file.to_string(), Vec::new())),
            (None, Some((_, bytes))) => bytes.extend_from_slice(line),
            (None, None) => panic!("output before the first header: {:?}", text(line)),
        }
    }
    found
}

/// Issue 18 item 4: `run --pool 3 DIR` runs the folder's six documents, three at a time, each
/// in its own sandbox. Each document's output comes whole under its header although the
/// documents print a line at a time side by side (a failing one and one printing bytes that
/// are not UTF-8 among them); the summary lists the six with their statuses; the exit code is
/// xargs's 123 (one failed); no container of the batch is left.
#[test]
fn pool_runs_a_folder_each_document_whole_with_a_summary() {
    let dir = TempDir::new("cli-batch");
    let docs = dir.path().join("docs");
    fs::create_dir(&docs).unwrap();
    // Lines with pauses between them: three at a time, unbuffered, they would interleave.
    let lines = |name: &str| {
        format!(
            "```python\nimport time\nfor i in range(4):\n    print('{name} line', i, flush=True)\n    \
             time.sleep(0.2)\n```\n"
        )
    };
    let mut want: Vec<(&str, Vec<u8>)> = Vec::new();
    for name in ["a", "b", "c"] {
        fs::write(docs.join(format!("{name}.md")), lines(name)).unwrap();
        let out: String = (0..4).map(|i| format!("{name} line {i}\n")).collect();
        want.push((name, out.into_bytes()));
    }
    fs::write(
        docs.join("d-fails.md"),
        format!(
            "{}```sh\necho d failing >&2\nexit 3\n```\n```sh\necho never\n```\n",
            lines("d")
        ),
    )
    .unwrap();
    let out: String = (0..4).map(|i| format!("d line {i}\n")).collect();
    want.push(("d-fails", out.into_bytes()));
    fs::write(
        docs.join("e-bytes.md"),
        "```python\nimport sys\nsys.stdout.buffer.write(b'e raw \\xff\\xfe end\\n')\n```\n",
    )
    .unwrap();
    want.push(("e-bytes", b"e raw \xff\xfe end\n".to_vec()));
    fs::write(
        docs.join("f-two.md"),
        "```sh\necho f one\n```\nText between.\n```python\nprint('f two')\n```\n",
    )
    .unwrap();
    want.push(("f-two", b"f one\nf two\n".to_vec()));
    // Not a document: not run.
    fs::write(docs.join("notes.txt"), "```sh\necho notes\n```\n").unwrap();

    let docs_arg = docs.to_string_lossy().into_owned();
    let (out, guard) = batch(dir.path(), "cli-batch", &["--pool", "3", &docs_arg]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(123), "stderr:\n{stderr}");

    let got = sections(&out.stdout);
    let names: Vec<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        got.len(),
        6,
        "one section per document: {names:?}\n{stderr}"
    );
    for (name, bytes) in &want {
        let file = docs
            .join(format!("{name}.md"))
            .to_string_lossy()
            .into_owned();
        let mine: Vec<_> = got.iter().filter(|(f, _)| *f == file).collect();
        assert_eq!(mine.len(), 1, "{file} once in {names:?}");
        assert_eq!(
            text(&mine[0].1),
            text(bytes),
            "{file}: its output, whole and alone"
        );
        assert_eq!(&mine[0].1, bytes, "{file}: the very bytes");
    }
    // The failing document's stderr, under its header on stderr.
    let failing = docs.join("d-fails.md").to_string_lossy().into_owned();
    assert!(
        stderr.contains(&format!("==> {failing} <==\nd failing\n")),
        "{stderr}"
    );

    // The summary: every document once, in order, with its status and blocks.
    let table: Vec<&str> = stderr
        .lines()
        .skip_while(|l| !l.starts_with("FILE "))
        .collect();
    assert!(
        table.len() >= 8,
        "a header, six rows and the totals:\n{stderr}"
    );
    for (row, (name, status, blocks)) in table[1..7].iter().zip([
        ("a", "ok", "1/1"),
        ("b", "ok", "1/1"),
        ("c", "ok", "1/1"),
        ("d-fails", "failed (exit code 3)", "2/3"),
        ("e-bytes", "ok", "1/1"),
        ("f-two", "ok", "2/2"),
    ]) {
        let file = docs
            .join(format!("{name}.md"))
            .to_string_lossy()
            .into_owned();
        assert!(row.starts_with(&file), "{row:?} for {file}\n{stderr}");
        assert!(row.ends_with(status), "{row:?}: {status}");
        assert!(row.contains(&format!(" {blocks} ")), "{row:?}: {blocks}");
    }
    assert!(
        table[7].starts_with("6 document(s) in ") && table[7].ends_with(": 5 ok, 1 failed"),
        "{:?}",
        table[7]
    );
    assert!(
        !stderr.contains('\x1b'),
        "no control characters off a terminal"
    );
    assert_eq!(guard.containers(), Vec::<String>::new(), "{stderr}");
}

/// Each document of a batch has a sandbox no other saw: with `--pool 1` (one at a time, so
/// a reused container would show), what the first leaves — a file in the workspace, `/tmp`
/// and `$HOME`, a background process — is not there for the second, whose host name (its
/// container's) differs.
#[test]
fn pool_documents_do_not_see_each_other() {
    let dir = TempDir::new("cli-batch-iso");
    let a = write(
        dir.path(),
        "a.md",
        "```sh\nfor d in /workspace /tmp \"$HOME\"; do echo left > \"$d/a-left\"; done\n\
         (sleep 1779 > /dev/null 2>&1 &)\ncat /workspace/a-left /tmp/a-left\nhostname\n```\n",
    );
    let b = write(
        dir.path(),
        "b.md",
        r#"```python
import glob, os
left = [d for d in ['/workspace', '/tmp', os.environ['HOME']] if os.path.exists(d + '/a-left')]
marker = b'sleep ' + b'1779'
procs = 0
for p in glob.glob('/proc/[0-9]*/cmdline'):
    try:
        procs += marker in open(p, 'rb').read().replace(b'\0', b' ')
    except OSError:
        pass
print('files', left, 'procs', procs)
print(os.uname().nodename)
```
"#,
    );
    let (out, guard) = batch(dir.path(), "cli-batch-iso", &["--pool", "1", &a, &b]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let got = sections(&out.stdout);
    assert_eq!(got.len(), 2, "{}", text(&out.stdout));
    assert_eq!(got[0].0, a, "one at a time, in order");
    let first = text(&got[0].1);
    let second = text(&got[1].1);
    let a_lines: Vec<&str> = first.lines().collect();
    assert_eq!(a_lines[..2], ["left", "left"], "{first}");
    let b_lines: Vec<&str> = second.lines().collect();
    assert_eq!(b_lines[0], "files [] procs 0", "{second}");
    assert_ne!(a_lines[2], b_lines[1], "one container each");
    assert_eq!(guard.containers(), Vec::<String>::new(), "{stderr}");
    assert!(common::host_processes_matching("sleep 1779").is_empty());
}

/// Bad input is one clear usage error (125) before anything starts: `--pool 0` or not a
/// number, a FILE that is not there (nothing else runs), a directory with no document,
/// standard input, `--work-dir`, an engine that cannot be reached. Without `--pool`, several
/// FILEs are refused as before.
#[test]
fn pool_bad_input_is_one_error_before_anything_runs() {
    let dir = TempDir::new("cli-batch-bad");
    let ok = write(dir.path(), "ok.md", "```sh\necho ran\n```\n");
    let missing = dir.path().join("missing.md").to_string_lossy().into_owned();
    let empty = dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let empty = empty.to_string_lossy().into_owned();
    let work = dir.path().join("work").to_string_lossy().into_owned();
    for (args, want) in [
        (
            vec!["--pool", "0", &ok],
            "--pool takes a number above 0, not \"0\"",
        ),
        (vec!["--pool", "two", &ok], "--pool takes a number above 0"),
        (
            vec!["--pool", "2", &ok, &missing],
            "missing.md: No such file",
        ),
        (vec!["--pool", "2", &empty], "no *.md or *.markdown file"),
        (vec!["--pool", "2", "-"], "not standard input"),
        (
            vec!["--pool", "2", "--work-dir", &work, &ok],
            "--work-dir cannot be used with --pool",
        ),
        (vec![&ok, &ok], "run takes one FILE"),
    ] {
        let (out, guard) = batch(dir.path(), "cli-batch-bad", &args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {want:?} not in {stderr}");
        assert_eq!(
            stderr.lines().count(),
            1 + usize::from(stderr.contains("Try ")),
            "{stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?}: nothing ran");
        assert_eq!(guard.containers(), Vec::<String>::new(), "{args:?}");
    }
    let out = cli(&[
        "-H",
        "unix:///nonexistent/dockexec-batch.sock",
        "run",
        "--pool",
        "2",
        &ok,
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one error: {stderr}");
    assert!(
        stderr.contains("/nonexistent/dockexec-batch.sock"),
        "{stderr}"
    );
}

/// Ctrl-C in a batch cancels the running documents: nothing is left running, the summary
/// says `cancelled` for those and `not run` for the rest, and the exit code is 130.
#[test]
fn pool_ctrl_c_cancels_the_batch_and_exits_130() {
    const LIMIT: Duration = Duration::from_secs(60);
    let dir = TempDir::new("cli-batch-int");
    let (b, guard) = common::case_builder("cli-batch-int");
    let config = config_file(dir.path(), &b.to_config());
    let docs = dir.path().join("docs");
    fs::create_dir(&docs).unwrap();
    for name in ["a", "b", "c", "d"] {
        fs::write(
            docs.join(format!("{name}.md")),
            "```sh\necho started\nsleep 1780\n```\n",
        )
        .unwrap();
    }
    let mut child = common::ChildProc::spawn(Command::new(BIN).args([
        "run",
        "--config",
        &config,
        "--pool",
        "2",
        &docs.to_string_lossy(),
    ]));
    assert!(
        common::eventually(LIMIT, || common::host_processes_matching("sleep 1780")
            .len()
            >= 2),
        "two documents running: {}",
        child.transcript()
    );
    common::send_signal(child.pid(), "INT");
    let status = common::wait_child(&mut child.child, LIMIT);
    let transcript = child.transcript();
    let status = status.unwrap_or_else(|| panic!("no exit within {LIMIT:?}:\n{transcript}"));
    assert_eq!(status.code(), Some(130), "{transcript}");
    for (name, ending) in [
        ("a", "cancelled"),
        ("b", "cancelled"),
        ("c", "not run"),
        ("d", "not run"),
    ] {
        let file = docs
            .join(format!("{name}.md"))
            .to_string_lossy()
            .into_owned();
        assert!(
            transcript
                .lines()
                .any(|l| l.starts_with(&format!("[stderr] {file} ")) && l.ends_with(ending)),
            "{file}: {ending} in the summary:\n{transcript}"
        );
    }
    assert!(transcript.contains("(interrupted)"), "{transcript}");
    assert_eq!(guard.containers(), Vec::<String>::new(), "{transcript}");
    assert!(common::host_processes_matching("sleep 1780").is_empty());
}

/// A batch takes the run options for each document: `--timeout` (the summary says `timed
/// out`, the exit code is 123) and `--json` (stdout is the records alone, each naming its
/// file; no header).
#[test]
fn pool_applies_the_run_options_to_each_document() {
    let dir = TempDir::new("cli-batch-opts");
    let ok = write(
        dir.path(),
        "ok.md",
        "```sh\necho fine\n```\n```sh\necho again\n```\n",
    );
    let slow = write(dir.path(), "slow.md", "```sh\necho begun\nsleep 30\n```\n");
    let (out, guard) = batch(
        dir.path(),
        "cli-batch-opts",
        &["--pool", "2", "--timeout", "1", "--json", &ok, &slow],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(123), "{stderr}");
    let records: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let of = |file: &str| -> Vec<&serde_json::Value> {
        records.iter().filter(|r| r["file"] == file).collect()
    };
    assert_eq!(of(&ok).len(), 2, "{records:?}");
    assert_eq!(of(&ok)[1]["stdout"], "again\n");
    assert_eq!(of(&slow).len(), 1, "{records:?}");
    assert_eq!(of(&slow)[0]["status"]["timed_out"], true);
    assert_eq!(of(&slow)[0]["stdout"], "begun\n");
    let row = stderr
        .lines()
        .find(|l| l.starts_with(&slow))
        .unwrap_or_else(|| panic!("no summary row for {slow}:\n{stderr}"));
    assert!(row.ends_with("timed out"), "{row}");
    assert!(
        stderr.contains(&format!("==> {slow} <==\ndockexec: timed out\n")),
        "{stderr}"
    );
    assert_eq!(guard.containers(), Vec::<String>::new(), "{stderr}");
}

/// On a terminal (`script` gives the batch one), the progress is one line on stderr redrawn
/// in place, and cleared before each document's output and before the summary; no plain
/// per-document lines. Skipped where util-linux's `script` is missing.
#[test]
fn pool_progress_is_one_line_redrawn_on_a_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` to give the batch a terminal");
        return;
    }
    let dir = TempDir::new("cli-batch-tty");
    let (b, guard) = common::case_builder("cli-batch-tty");
    let config = config_file(dir.path(), &b.to_config());
    let one = write(dir.path(), "one.md", "```sh\necho one\n```\n");
    let two = write(dir.path(), "two.md", "```sh\necho two\n```\n");
    let line = format!("{BIN} run --config {config} --pool 2 {one} {two}");
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("run script");
    let all = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{all:?}");
    for want in [
        "\r\x1b[2K[0/2] 0 running, 0 failed",
        "\r\x1b[2K[2/2] 0 running, 0 failed\r\x1b[2KFILE ",
        "==> ",
        "2 document(s) in ",
    ] {
        assert!(all.contains(want), "{want:?} in {all:?}");
    }
    assert!(!all.contains("dockexec: [1/2]"), "{all:?}");
    assert_eq!(guard.containers(), Vec::<String>::new(), "{all:?}");
}

/// With SIGINT ignored, as in a shell's background job (`dockexec run --pool 2 … &`), no
/// Ctrl-C handler can be set; the batch runs to its end all the same. (It once took the
/// handler's dropped channel for a Ctrl-C: every document `not run`, exit 130.)
#[test]
fn pool_runs_to_its_end_with_sigint_ignored() {
    let dir = TempDir::new("cli-batch-bg");
    let (b, guard) = common::case_builder("cli-batch-bg");
    let config = config_file(dir.path(), &b.to_config());
    let one = write(dir.path(), "one.md", "```sh\necho one\n```\n");
    let out = Command::new("sh")
        .args(["-c", "trap '' INT; exec \"$@\"", "sh"])
        .args([BIN, "run", "--config", &config, "--pool", "2", &one])
        .stdin(Stdio::null())
        .output()
        .expect("run sh");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(text(&out.stdout), format!("==> {one} <==\none\n"));
    assert!(!stderr.contains("interrupted"), "{stderr}");
    assert_eq!(guard.containers(), Vec::<String>::new(), "{stderr}");
}

/// `--outputs DIR` in a batch: each document's figures in `DIR/<its name>/`, two documents
/// of the same name apart (`plot`, `plot-2`); `--session` holds for each document.
#[test]
fn pool_outputs_go_to_a_directory_per_document() {
    let dir = TempDir::new("cli-batch-outputs");
    let (mut b, guard) = common::case_builder("cli-batch-outputs");
    b.image(common::mpl_image());
    let config = config_file(dir.path(), &b.to_config());
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/plot.md");
    for sub in ["a", "b"] {
        fs::create_dir(dir.path().join(sub)).unwrap();
        fs::copy(example, dir.path().join(sub).join("plot.md")).unwrap();
    }
    let session = write(
        dir.path(),
        "session.md",
        "```python\nx = 41\n```\n```python\nprint(x + 1)\n```\n",
    );
    let outputs = dir.path().join("out");
    let out = Command::new(BIN)
        .args(["run", "--config", &config, "--pool", "2", "--session"])
        .args(["--outputs", &outputs.to_string_lossy()])
        .args([dir.path().join("a"), dir.path().join("b")])
        .arg(&session)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let got = sections(&out.stdout);
    assert_eq!(got.len(), 3, "{}", text(&out.stdout));
    for (file, bytes) in &got {
        let want = if *file == session {
            "42\n"
        } else {
            "50 points, max 48.0\n"
        };
        assert_eq!(text(bytes), want, "{file}");
    }
    assert_eq!(
        common::files_under(&outputs),
        ["plot/block-2-fig-1.png", "plot-2/block-2-fig-1.png"]
            .map(std::path::PathBuf::from)
            .to_vec()
    );
    assert_eq!(guard.containers(), Vec::<String>::new(), "{stderr}");
}
