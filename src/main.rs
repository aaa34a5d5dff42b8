//! `dockexec`: run a code file, or the code blocks of a markdown document, in a container.

use std::io::{self, Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use dockexec::{Chunk, CodeBlock, Executor, Language, PullProgress};

const HELP: &str = "\
dockexec — run code blocks inside a Docker container

USAGE:
    dockexec run [OPTIONS] FILE|-
    dockexec gc
    dockexec --help | --version

COMMANDS:
    run     Run FILE (or standard input, `-`). A markdown file (.md, .markdown), or input
            holding ``` fences when --lang is not given, runs each fenced block in order and
            stops at the first that fails. Output streams live: the blocks' stdout to stdout,
            their stderr to stderr. Exits with the last block's exit code, 124 on timeout.
    gc      Remove containers left by dockexec processes that died without cleaning up.

RUN OPTIONS:
    -l, --lang LANG        python (py), sh (shell), bash or pwsh; default: from the file's
                           extension, else guessed (python if it looks like Python, else sh)
    -i, --image IMAGE      image to run [default: python:3-slim]
    -t, --timeout SECS     per-block time limit, or `none` [default: 60]
    -w, --work-dir DIR     host directory mounted at /workspace [default: a temporary one]
    -e, --env KEY=VALUE    environment variable for the blocks (repeatable)
        --network MODE     docker network mode [default: none]
        --max-output BYTES keep at most this much output per block, or `none` [default: 64 MiB]
        --pull POLICY      missing, always or never [default: missing]

ENVIRONMENT:
    DOCKER_HOST            unix:///path/to/docker.sock [default: /var/run/docker.sock]

EXIT STATUS:
    the block's exit code; 124 timed out; 130 interrupted; 2 usage error; 1 other errors
";

struct RunArgs {
    file: String,
    lang: Option<String>,
    builder: dockexec::ExecutorBuilder,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("-h" | "--help" | "help") => {
            print!("{HELP}");
            ExitCode::SUCCESS
        }
        Some("-V" | "--version") => {
            println!("dockexec {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("gc") => match dockexec::gc(None) {
            Ok(ids) => {
                for id in &ids {
                    println!("removed {id}");
                }
                eprintln!("dockexec gc: removed {} orphaned container(s)", ids.len());
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        Some("run") => match parse_run(&args[1..]) {
            Ok(Some(run)) => run_command(run),
            Ok(None) => {
                print!("{HELP}");
                ExitCode::SUCCESS
            }
            Err(msg) => {
                eprintln!("dockexec: {msg}\nTry 'dockexec --help'.");
                ExitCode::from(2)
            }
        },
        Some(other) => {
            eprintln!("dockexec: unknown command {other:?}\nTry 'dockexec --help'.");
            ExitCode::from(2)
        }
    }
}

fn fail(e: &dockexec::Error) -> ExitCode {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    eprintln!("dockexec: {msg}");
    ExitCode::from(1)
}

/// `Ok(None)` when help was asked for.
fn parse_run(args: &[String]) -> Result<Option<RunArgs>, String> {
    let mut builder = Executor::builder();
    let mut file = None;
    let mut lang = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag {
            "-l" | "--lang" => {
                let v = value(flag)?;
                v.parse::<Language>().map_err(|e| e.to_string())?;
                lang = Some(v);
            }
            "-i" | "--image" => {
                builder.image(value(flag)?);
            }
            "-t" | "--timeout" => {
                let v = value(flag)?;
                let t = if v == "none" {
                    None
                } else {
                    let secs: f64 = v
                        .parse()
                        .ok()
                        .filter(|s: &f64| s.is_finite() && *s > 0.0)
                        .ok_or_else(|| {
                            format!("--timeout takes seconds above 0 or `none`, not {v:?}")
                        })?;
                    Some(Duration::from_secs_f64(secs))
                };
                builder.timeout(t);
            }
            "-w" | "--work-dir" => {
                builder.work_dir(value(flag)?);
            }
            "-e" | "--env" => {
                let v = value(flag)?;
                let (k, val) = v
                    .split_once('=')
                    .filter(|(k, _)| !k.is_empty())
                    .ok_or_else(|| format!("--env takes KEY=VALUE, not {v:?}"))?;
                builder.env(k, val);
            }
            "--network" => {
                builder.network(value(flag)?);
            }
            "--max-output" => {
                let v = value(flag)?;
                let cap = if v == "none" {
                    None
                } else {
                    Some(v.parse::<usize>().map_err(|_| {
                        format!("--max-output takes a byte count or `none`, not {v:?}")
                    })?)
                };
                builder.max_output_bytes(cap);
            }
            "--pull" => {
                let policy = match value(flag)?.as_str() {
                    "missing" => dockexec::PullPolicy::Missing,
                    "always" => dockexec::PullPolicy::Always,
                    "never" => dockexec::PullPolicy::Never,
                    other => {
                        return Err(format!(
                            "--pull takes missing, always or never, not {other:?}"
                        ));
                    }
                };
                builder.pull_policy(policy);
            }
            "-h" | "--help" => return Ok(None),
            f if f.starts_with('-') && f != "-" => return Err(format!("unknown option {f:?}")),
            _ => {
                if file.replace(arg.clone()).is_some() {
                    return Err("run takes one FILE".into());
                }
            }
        }
    }
    let file = file.ok_or("run needs a FILE (or - for standard input)")?;
    Ok(Some(RunArgs {
        file,
        lang,
        builder,
    }))
}

fn blocks_of(run: &RunArgs, text: String) -> Result<Vec<CodeBlock>, String> {
    let path = Path::new(&run.file);
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let markdown = matches!(ext.as_deref(), Some("md" | "markdown"))
        || (run.lang.is_none()
            && ext.is_none()
            && text.lines().any(|l| l.trim_start().starts_with("```")));
    if markdown && run.lang.is_none() {
        let blocks = dockexec::extract_code_blocks(&text);
        if blocks.is_empty() {
            return Err(format!("{} holds no fenced code blocks", run.file));
        }
        return Ok(blocks);
    }
    let lang = match (&run.lang, ext.as_deref()) {
        (Some(l), _) => l.clone(),
        (None, Some("py")) => "python".into(),
        (None, Some("sh")) => "sh".into(),
        (None, Some("bash")) => "bash".into(),
        (None, Some("ps1")) => "pwsh".into(),
        _ => dockexec::guess_language(&text).to_string(),
    };
    Ok(vec![CodeBlock::new(lang, text)])
}

fn run_command(run: RunArgs) -> ExitCode {
    let text = if run.file == "-" {
        let mut s = String::new();
        if let Err(e) = io::stdin().read_to_string(&mut s) {
            eprintln!("dockexec: reading standard input: {e}");
            return ExitCode::from(1);
        }
        s
    } else {
        match std::fs::read(&run.file) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => {
                eprintln!("dockexec: reading {}: {e}", run.file);
                return ExitCode::from(1);
            }
        }
    };
    let blocks = match blocks_of(&run, text) {
        Ok(b) => b,
        Err(msg) => {
            eprintln!("dockexec: {msg}");
            return ExitCode::from(1);
        }
    };
    for b in &blocks {
        if let Err(e) = b.language().and_then(|_| b.filename()) {
            return fail(&e);
        }
    }
    // Ctrl-C removes the container before exiting with 130.
    let _ = dockexec::cleanup_on_ctrlc();

    let mut builder = run.builder;
    let tty = io::IsTerminal::is_terminal(&io::stderr());
    builder.on_pull_progress(move |p: &PullProgress| show_progress(p, tty));
    let executor = match builder.start() {
        Ok(e) => e,
        Err(e) => return fail(&e),
    };
    let mut code = 0;
    for block in &blocks {
        let execution = match executor.spawn(block) {
            Ok(e) => e,
            Err(e) => return fail(&e),
        };
        let (mut out, mut err) = (io::stdout().lock(), io::stderr().lock());
        for chunk in execution.chunks() {
            // A closed pipe (`| head`) is not our failure: keep draining, stay quiet.
            let _ = match &chunk {
                Chunk::Stdout(b) => out.write_all(b).and_then(|_| out.flush()),
                Chunk::Stderr(b) => err.write_all(b).and_then(|_| err.flush()),
            };
        }
        drop((out, err));
        let output = match execution.wait() {
            Ok(o) => o,
            Err(e) => return fail(&e),
        };
        if output.status.truncated() {
            eprintln!("dockexec: output truncated at the output limit");
        }
        if output.status.timed_out() {
            eprintln!("dockexec: timed out");
        }
        code = output.status.shell_code();
        if !output.status.success() {
            break;
        }
    }
    if let Err(e) = executor.stop() {
        eprintln!("dockexec: warning: {e}");
    }
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn show_progress(p: &PullProgress, tty: bool) {
    let layer = p.layer.as_deref().unwrap_or("");
    let line = match (p.current, p.total) {
        (Some(c), Some(t)) if t > 0 => {
            let width = 30usize;
            let filled = ((c.min(t) * width as u64) / t) as usize;
            format!(
                "{layer} {} [{}{}] {:.1}/{:.1} MB",
                p.status,
                "=".repeat(filled),
                " ".repeat(width - filled),
                c as f64 / 1e6,
                t as f64 / 1e6
            )
        }
        _ => format!("{layer} {}", p.status).trim().to_string(),
    };
    if tty {
        eprint!("\r\x1b[2K{line}");
        if p.status.starts_with("Status:") || p.status.starts_with("Digest:") {
            eprintln!();
        }
    } else if p.current.is_none() {
        eprintln!("{line}");
    }
}
