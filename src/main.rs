//! `dockexec`: run a code file, or the code blocks of a markdown document, in a container.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, IsTerminal, Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use dockexec::{Chunk, CodeBlock, Executor, Language, PullPolicy, PullProgress, Strategy};

#[path = "cli/batch.rs"]
mod batch;

/// The help text; `{name}`s are filled from the library's own defaults by [`help`].
const HELP: &str = "\
dockexec — run code blocks inside a Docker container

USAGE:
    dockexec [-H HOST | -c CONTEXT] run [OPTIONS] FILE|-
    dockexec [-H HOST | -c CONTEXT] run --pool N [OPTIONS] FILE|DIR...
    dockexec [-H HOST | -c CONTEXT] gc [--force] [--label KEY[=VALUE]]...
    dockexec [-H HOST | -c CONTEXT] engine
    dockexec --help | --version

GLOBAL OPTIONS (as the docker CLI's; before or after the command):
    -H, --host HOST        the engine: unix:///PATH, tcp://HOST[:PORT] (TLS with
                           DOCKER_TLS_VERIFY and DOCKER_CERT_PATH), ssh://[USER@]HOST[:PORT][/SOCKET]
    -c, --context NAME     the docker CLI's context NAME

COMMANDS:
    run     Run FILE (or standard input, `-`). A markdown file (.md, .markdown), or input
            holding ``` fences when --lang is not given, runs each fenced block in order and
            stops at the first that fails. Output streams live: the blocks' stdout to stdout,
            their stderr to stderr. Exits with the last block's exit code, 124 on timeout.
            With --pool N, a batch: see BATCH.
    gc      Remove dockexec containers that are no longer running (exited, or created and
            never started), and the temporary work dirs of owners that are gone (each owner
            holds a lock on its dir while it lives). A running one is never removed:
            its owner is alive, since a container ends by itself once its owner is gone.
            --force also removes running ones, killing their blocks; --label (repeatable)
            keeps to the containers that carry it.
    engine  Print the engine dockexec would use, why (which variable, context or socket),
            what it is (version, OS, cgroups, rootless, runtimes, security options) and
            whether it shares this host's filesystem; exits 125 if it cannot be reached.

RUN OPTIONS:
    -l, --lang LANG        python (py), sh (shell), bash or pwsh; default: from the file's
                           extension, else guessed (python if it looks like Python, else sh)
        --config FILE      start from the executor options in the JSON file FILE (see the
                           README's Configuration file section); give it before the other
                           run options, which change what it sets; its engine is used
                           unless -H or -c is given
    -i, --image IMAGE      image to run [default: {image}]
    -t, --timeout SECS     per-block time limit, or `none` [default: {timeout}]
    -w, --work-dir DIR     host directory mounted at /workspace [default: a temporary one]
    -e, --env KEY=VALUE    environment variable for the blocks (repeatable)
        --secret-env NAME  pass your environment's NAME to the blocks as a secret: its value
                           is shown as [REDACTED] in their output and in errors (repeatable;
                           `docker inspect` still shows it)
        --network MODE     docker network mode [default: none]
        --max-output BYTES keep at most this much output per block, or `none` [default: {max_output}]
        --pull POLICY      missing, always or never [default: missing]
        --strategy S       exec (one docker exec per block), agent (a warm agent in the
                           container: milliseconds per block; needs python3 in the image)
                           or auto (agent when the image has python3) [default: auto]
        --session          run the Python blocks in one session (implies the agent): a
                           variable defined by one block is there in the next
        --outputs DIR      write each rich result (a matplotlib figure, a display(obj), a
                           session block's last value; agent only) to DIR as
                           block-N-fig-M.png, block-N-display-M.html, …, one line on stderr
                           per file [default: not saved; stderr says how many]
        --json             print one JSON line per block instead of its output: block,
                           language, status, stdout, stderr (text, invalid UTF-8 replaced)
                           and results (each MIME type's bytes in base64)

BATCH (run --pool N FILE|DIR...), as `xargs -P N` or `parallel -j N`:
        --pool N           run the documents N at a time, each in a fresh sandbox of its own
                           (a new container: no file or process of one is seen by another);
                           every run and sandbox option above applies to each document, but
                           --work-dir (each gets its own workspace)
    A DIR means its *.md and *.markdown files, sorted by name; not its subdirectories (use
    `find DIR -name '*.md' -print0 | xargs -0 dockexec run --pool N` for those). Every
    FILE and DIR must exist, and a DIR must hold a document, or nothing runs (exit 125).
    One sandbox is started first to pull the image and check the options (an engine
    that cannot be reached is one error); it runs nothing.
    Output: each document's, kept until it ends, then printed whole, in the order they
    end: `==> FILE <==` then its stdout on stdout (with --json, its records alone, each
    with its \"file\"), and, if it wrote any, the same header and its stderr on stderr.
    --outputs DIR saves a document's results in DIR/<its name without extension>/.
    Progress on stderr: on a terminal, one line redrawn in place, `[12/40] 3 running,
    1 failed`; elsewhere, a plain line per document as it ends. At the end, on stderr, a
    table: each FILE with its blocks run (of all), time and status (ok; failed (exit code
    N); timed out; error: why; cancelled; not run), then the totals.
    Exit status: 0 when every document succeeded, 123 when one did not (as xargs),
    130 after Ctrl-C. The first Ctrl-C cancels the running documents (their sandboxes are
    removed) and starts no more; a second exits at once.

SANDBOX OPTIONS (hardened by default; see ExecutorBuilder's docs for each reason):
    -u, --user USER        user the blocks run as: UID[:GID], a name, `host` (your own
                           uid:gid) or 0 for root [default: the image's USER unless root, else
                           your uid:gid unless root, else {nobody}]
        --memory BYTES     memory limit, swap included; K, M, G suffixes, or `none`
                           [default: {memory}]
        --pids N           process and thread limit, or `none` [default: {pids}]
        --cpus N           CPU quota (e.g. 1.5), or `none` [default: none]
        --read-write-root  make the root filesystem writable [default: read-only, with a
                           {tmp} tmpfs at /tmp (at most half of --memory) and HOME=/tmp]
        --trusted          relax every default above for trusted code: the image's user
                           (root if none), Docker's default capabilities, no
                           no-new-privileges, a writable root, no limits (the network stays
                           --network's); options after it still apply
        --runtime NAME     the OCI runtime the daemon has registered, e.g. runsc (gVisor: a
                           second kernel between the blocks and the host's; `dockexec engine`
                           lists the daemon's runtimes) [default: the daemon's, runc]

ENVIRONMENT (the engine is found as the docker CLI finds it, in this order):
    DOCKER_HOST            unix://, tcp:// or ssh:// engine
    DOCKER_TLS_VERIFY, DOCKER_CERT_PATH
                           TLS for a tcp:// DOCKER_HOST: ca.pem, cert.pem, key.pem
                           [default cert path: ~/.docker]
    DOCKER_CONTEXT         a docker CLI context, else currentContext of
                           $DOCKER_CONFIG/config.json [default: ~/.docker]
                           then /var/run/docker.sock, $XDG_RUNTIME_DIR/docker.sock (rootless),
                           ~/.docker/run/docker.sock (Docker Desktop): the first that answers
    DOCKEXEC_SSH_OPTS      extra options for ssh:// engines' ssh, e.g. `-F ~/.ssh/dockexec`
    DOCKEXEC_ALLOW_PLAINTEXT=1
                           allow plain tcp:// beyond loopback (else refused: no TLS)

EXIT STATUS:
    the last block's exit code (a batch: 0, or 123 when a document did not succeed); 124
    timed out; 130 interrupted; 125 dockexec itself failed (a usage error, an unreadable
    file, no engine, a missing image, …), as `docker run` and `timeout` do, so that a
    script can tell it from a block's own exit code
";

/// [`HELP`] with the library's defaults written in, so that the text cannot drift from them.
fn help() -> String {
    let mib = |b: u64| format!("{} MiB", b >> 20);
    HELP.replace("{image}", dockexec::DEFAULT_IMAGE)
        .replace(
            "{timeout}",
            &dockexec::DEFAULT_TIMEOUT.as_secs().to_string(),
        )
        .replace("{max_output}", &mib(dockexec::DEFAULT_MAX_OUTPUT as u64))
        .replace("{nobody}", dockexec::NOBODY)
        .replace("{memory}", &format!("{}G", dockexec::DEFAULT_MEMORY >> 30))
        .replace("{pids}", &dockexec::DEFAULT_PIDS.to_string())
        .replace("{tmp}", &mib(dockexec::DEFAULT_TMP_SIZE))
}

/// The exit code of dockexec's own failures (usage, I/O, the engine, the image), apart from
/// any a block can give: 125, as `docker run`, `timeout` and `env` use.
const OWN_FAILURE: u8 = 125;

struct RunArgs {
    /// One FILE (or `-`), or with `pool` the FILEs and directories of a batch.
    files: Vec<OsString>,
    /// `--pool N`: run the files as a batch, N at a time, each in a fresh sandbox.
    pool: Option<usize>,
    lang: Option<String>,
    session: bool,
    builder: dockexec::ExecutorBuilder,
    rich: RichArgs,
}

enum Command {
    Help,
    Version,
    Gc(dockexec::GcOptions),
    Run(Box<RunArgs>),
    Engine,
}

/// `-H` / `-c`, wherever they were given.
#[derive(Default)]
struct EngineFlags {
    host: Option<String>,
    context: Option<String>,
    /// `run --config` gave an engine.
    config_engine: bool,
}

impl EngineFlags {
    /// Whether `arg` is `-H` (`Some(true)`) or `-c` (`Some(false)`).
    fn which(arg: &lexopt::Arg<'_>) -> Option<bool> {
        use lexopt::prelude::*;
        match arg {
            Short('H') | Long("host") => Some(true),
            Short('c') | Long("context") => Some(false),
            _ => None,
        }
    }

    /// Takes the value of `-H` (`host`) or `-c`.
    fn set(&mut self, host: bool, args: &mut lexopt::Parser) -> Result<(), lexopt::Error> {
        use lexopt::ValueExt;
        let v = Some(args.value()?.string()?);
        if host {
            self.host = v
        } else {
            self.context = v
        }
        Ok(())
    }

    fn engine(&self) -> dockexec::Result<dockexec::Engine> {
        dockexec::Engine::from_flags(self.host.as_deref(), self.context.as_deref())
    }
}

fn main() -> ExitCode {
    let mut flags = EngineFlags::default();
    let parsed = parse(lexopt::Parser::from_env(), &mut flags);
    // The engine is resolved only for the commands that use one: --help needs none.
    let engine = match &parsed {
        Ok(Command::Run(_))
            if flags.config_engine && flags.host.is_none() && flags.context.is_none() =>
        {
            None
        }
        Ok(Command::Gc(_) | Command::Run(_) | Command::Engine) => match flags.engine() {
            Ok(e) => Some(e),
            Err(e) => return fail(&e),
        },
        _ => None,
    };
    match parsed {
        Ok(Command::Help) => {
            print!("{}", help());
            ExitCode::SUCCESS
        }
        Ok(Command::Version) => {
            println!("dockexec {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Ok(Command::Engine) => engine_command(&engine.expect("resolved above")),
        Ok(Command::Gc(mut options)) => {
            options.engine = engine;
            gc_command(&options)
        }
        Ok(Command::Run(mut run)) => {
            if let Some(engine) = engine {
                run.builder.engine(engine);
            }
            run_command(*run)
        }
        Err(e) => {
            eprintln!("dockexec: {e}\nTry 'dockexec --help'.");
            ExitCode::from(OWN_FAILURE)
        }
    }
}

fn gc_command(options: &dockexec::GcOptions) -> ExitCode {
    match dockexec::gc_with(options) {
        Ok(ids) => {
            // A closed stdout (`| head`) is no failure: never a panic.
            let mut out = io::stdout().lock();
            for id in &ids {
                let _ = writeln!(out, "removed {id}");
            }
            eprintln!("dockexec gc: removed {} container(s)", ids.len());
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

/// `dockexec engine`: which engine, why, and what it is.
fn engine_command(engine: &dockexec::Engine) -> ExitCode {
    use std::fmt::Write as _;
    // Written at once, and a closed stdout (`| head`) is no failure: never a panic.
    let mut text = String::new();
    let _ = writeln!(text, "endpoint:    {}", engine.endpoint());
    let _ = writeln!(text, "transport:   {}", engine.transport());
    let _ = writeln!(text, "chosen by:   {}", engine.origin());
    for t in engine.tried() {
        let _ = writeln!(text, "passed over: {t}");
    }
    let info = match dockexec::EngineInfo::probe(engine) {
        Ok(i) => i,
        Err(e) => {
            let _ = io::stdout().write_all(text.as_bytes());
            return fail(&e);
        }
    };
    let or_none = |s: &str| {
        if s.is_empty() {
            "(not said)".to_string()
        } else {
            s.to_string()
        }
    };
    let _ = writeln!(
        text,
        "server:      {} {}",
        info.product, info.server_version
    );
    let _ = writeln!(text, "api:         {}", info.api_version);
    let _ = writeln!(
        text,
        "host:        {} ({}), kernel {}",
        or_none(&info.name),
        or_none(&info.operating_system),
        or_none(&info.kernel_version)
    );
    let _ = writeln!(
        text,
        "cgroups:     v{} ({})",
        or_none(&info.cgroup_version),
        or_none(&info.cgroup_driver)
    );
    let _ = writeln!(
        text,
        "rootless:    {}",
        if info.rootless { "yes" } else { "no" }
    );
    let _ = writeln!(
        text,
        "runtimes:    {} (default {})",
        info.runtimes.join(", "),
        or_none(&info.default_runtime)
    );
    let _ = writeln!(text, "security:    {}", info.security_options.join("; "));
    let _ = writeln!(
        text,
        "filesystem:  {}",
        if info.host_filesystem_shared {
            "shared with this host: the workspace is a host directory bind-mounted at /workspace"
        } else {
            "not shared: the workspace lives in the container, code travels over the API"
        }
    );
    let _ = io::stdout().write_all(text.as_bytes());
    ExitCode::SUCCESS
}

fn fail(e: &dockexec::Error) -> ExitCode {
    eprintln!("dockexec: {}", describe(e));
    ExitCode::from(OWN_FAILURE)
}

/// `e` with its sources, `: `-separated.
fn describe(e: &dockexec::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    msg
}

fn parse(mut args: lexopt::Parser, flags: &mut EngineFlags) -> Result<Command, lexopt::Error> {
    use lexopt::prelude::*;
    let command = loop {
        match args.next()? {
            None | Some(Short('h') | Long("help")) => return Ok(Command::Help),
            Some(Short('V') | Long("version")) => return Ok(Command::Version),
            Some(Value(command)) => break command,
            Some(other) => match EngineFlags::which(&other) {
                Some(host) => flags.set(host, &mut args)?,
                None => return Err(other.unexpected()),
            },
        }
    };
    match command.to_str() {
        Some("help") => Ok(Command::Help),
        Some("run") => parse_run(args, flags),
        Some("engine" | "info") => {
            while let Some(arg) = args.next()? {
                match arg {
                    Short('h') | Long("help") => return Ok(Command::Help),
                    other => match EngineFlags::which(&other) {
                        Some(host) => flags.set(host, &mut args)?,
                        None => return Err(other.unexpected()),
                    },
                }
            }
            Ok(Command::Engine)
        }
        Some("gc") => {
            let mut options = dockexec::GcOptions::default();
            while let Some(arg) = args.next()? {
                if let Some(host) = EngineFlags::which(&arg) {
                    flags.set(host, &mut args)?;
                    continue;
                }
                match arg {
                    Long("force") => options.force = true,
                    Long("label") => options.labels.push(args.value()?.string()?),
                    Short('h') | Long("help") => return Ok(Command::Help),
                    other => return Err(other.unexpected()),
                }
            }
            Ok(Command::Gc(options))
        }
        _ => Err(format!("unknown command {command:?}").into()),
    }
}

fn parse_run(mut args: lexopt::Parser, flags: &mut EngineFlags) -> Result<Command, lexopt::Error> {
    use lexopt::prelude::*;
    let mut builder = Executor::builder();
    let mut files = Vec::new();
    let mut pool = None;
    let mut lang = None;
    let mut session = false;
    let mut strategy = None;
    let mut options_seen = false;
    let mut rich = RichArgs::default();
    while let Some(arg) = args.next()? {
        if let Some(host) = EngineFlags::which(&arg) {
            flags.set(host, &mut args)?;
            continue;
        }
        if arg == Long("config") {
            builder = config_builder(&args.value()?, options_seen, flags)?;
            options_seen = true;
            continue;
        }
        options_seen |= !matches!(arg, Value(_));
        match arg {
            Short('l') | Long("lang") => {
                let v = args.value()?.string()?;
                v.parse::<Language>().map_err(|e| e.to_string())?;
                lang = Some(v);
            }
            Short('i') | Long("image") => {
                builder.image(args.value()?.string()?);
            }
            Short('t') | Long("timeout") => {
                builder.timeout(timeout(&args.value()?.string()?)?);
            }
            Short('w') | Long("work-dir") => {
                builder.work_dir(args.value()?);
            }
            Short('e') | Long("env") => {
                let v = args.value()?.string()?;
                let (k, val) = v
                    .split_once('=')
                    .filter(|(k, _)| !k.is_empty())
                    .ok_or_else(|| format!("--env takes KEY=VALUE, not {v:?}"))?;
                builder.env(k, val);
            }
            Long("secret-env") => {
                // From our environment, so the value never sits in argv (`ps` shows that).
                let name = args.value()?.string()?;
                let value = std::env::var_os(&name)
                    .ok_or_else(|| format!("--secret-env {name}: {name} is not set"))?
                    .into_string()
                    .map_err(|_| format!("--secret-env {name}: its value is not UTF-8"))?;
                builder.secret_env(name, value);
            }
            Long("network") => {
                builder.network(args.value()?.string()?);
            }
            Long("runtime") => {
                builder.runtime(args.value()?.string()?);
            }
            Long("max-output") => {
                builder.max_output_bytes(max_output(&args.value()?.string()?)?);
            }
            Long("pull") => {
                builder.pull_policy(pull_policy(&args.value()?.string()?)?);
            }
            Long("strategy") => {
                strategy = Some(match args.value()?.string()?.as_str() {
                    "exec" => Strategy::Exec,
                    "agent" => Strategy::Agent,
                    "auto" => Strategy::Auto,
                    other => {
                        return Err(
                            format!("--strategy takes exec, agent or auto, not {other:?}").into(),
                        );
                    }
                });
            }
            Long("session") => session = true,
            Short('u') | Long("user") => match args.value()?.string()?.as_str() {
                "host" => {
                    builder.host_user();
                }
                u => {
                    builder.user(u);
                }
            },
            Long("memory") => {
                builder.memory_limit(none_or(&args.value()?.string()?, bytes)?);
            }
            Long("pids") => {
                let v = args.value()?.string()?;
                builder.pids_limit(none_or(&v, |s| {
                    s.parse::<i64>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| format!("--pids takes a positive number or none, not {s:?}"))
                })?);
            }
            Long("cpus") => {
                let v = args.value()?.string()?;
                builder.cpu_limit(none_or(&v, |s| {
                    s.parse::<f64>()
                        .ok()
                        .filter(|n| n.is_finite() && *n > 0.0)
                        .ok_or_else(|| format!("--cpus takes a positive number or none, not {s:?}"))
                })?);
            }
            Long("read-write-root") => {
                builder.read_only_root(false);
            }
            Long("trusted") => {
                builder.trusted();
            }
            Long("outputs") => rich.outputs = Some(args.value()?.into()),
            Long("json") => rich.json = true,
            Long("pool") => {
                let v = args.value()?.string()?;
                pool = Some(
                    v.parse::<usize>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| format!("--pool takes a number above 0, not {v:?}"))?,
                );
            }
            Short('h') | Long("help") => return Ok(Command::Help),
            Value(v) => files.push(v),
            _ => return Err(arg.unexpected()),
        }
    }
    if files.is_empty() {
        return Err(match pool {
            None => "run needs a FILE (or - for standard input)",
            Some(_) => "run --pool needs one or more FILEs or directories",
        }
        .into());
    }
    if pool.is_none() && files.len() > 1 {
        return Err("run takes one FILE".into());
    }
    match (strategy, session) {
        (Some(Strategy::Exec), true) => {
            return Err("--session needs the agent: use it without --strategy exec".into());
        }
        (Some(s), _) => {
            builder.strategy(s);
        }
        (None, true) => {
            builder.strategy(Strategy::Agent);
        }
        (None, false) => {}
    }
    Ok(Command::Run(Box::new(RunArgs {
        files,
        pool,
        lang,
        session,
        builder,
        rich,
    })))
}

/// `--config FILE`: the builder FILE describes, secrets' values from our environment. An
/// option given before it would be silently replaced, so that is refused.
fn config_builder(
    file: &std::ffi::OsStr,
    options_seen: bool,
    flags: &mut EngineFlags,
) -> Result<dockexec::ExecutorBuilder, String> {
    if options_seen {
        return Err(
            "--config comes once, before the other run options (which change what it sets)".into(),
        );
    }
    let shown = |e: dockexec::Error| match std::error::Error::source(&e) {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    };
    let config = dockexec::ExecutorConfig::from_file(file).map_err(shown)?;
    flags.config_engine = config.engine.is_some();
    config.to_builder().map_err(shown)
}

fn timeout(v: &str) -> Result<Option<Duration>, String> {
    if v == "none" {
        return Ok(None);
    }
    v.parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s > 0.0)
        .map(|s| Some(Duration::from_secs_f64(s)))
        .ok_or_else(|| format!("--timeout takes seconds above 0 or `none`, not {v:?}"))
}

fn max_output(v: &str) -> Result<Option<usize>, String> {
    if v == "none" {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .map_err(|_| format!("--max-output takes a byte count or `none`, not {v:?}"))
}

fn pull_policy(v: &str) -> Result<PullPolicy, String> {
    match v {
        "missing" => Ok(PullPolicy::Missing),
        "always" => Ok(PullPolicy::Always),
        "never" => Ok(PullPolicy::Never),
        _ => Err(format!("--pull takes missing, always or never, not {v:?}")),
    }
}

/// The code blocks of the document at `path` (whose text is `text`); `lang` is `--lang`.
fn blocks_of(path: &Path, lang: Option<&str>, text: String) -> Result<Vec<CodeBlock>, String> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let markdown = matches!(ext.as_deref(), Some("md" | "markdown"))
        || (lang.is_none()
            && ext.is_none()
            && text.lines().any(|l| l.trim_start().starts_with("```")));
    if markdown && lang.is_none() {
        let blocks = dockexec::extract_code_blocks(&text);
        if blocks.is_empty() {
            return Err(format!("{} holds no fenced code blocks", path.display()));
        }
        return Ok(blocks);
    }
    let lang = match (lang, ext.as_deref()) {
        (Some(l), _) => l.to_string(),
        (None, Some("py")) => "python".into(),
        (None, Some("sh")) => "sh".into(),
        (None, Some("bash")) => "bash".into(),
        (None, Some("ps1")) => "pwsh".into(),
        _ => dockexec::guess_language(&text).to_string(),
    };
    Ok(vec![CodeBlock::new(lang, text)])
}

/// The blocks of the file at `path`, each with a known language and file name.
fn load_blocks(path: &Path, lang: Option<&str>) -> Result<Vec<CodeBlock>, String> {
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    let blocks = blocks_of(path, lang, text)?;
    for b in &blocks {
        b.language()
            .and_then(|_| b.filename())
            .map_err(|e| describe(&e))?;
    }
    Ok(blocks)
}

fn run_command(run: RunArgs) -> ExitCode {
    if let Some(n) = run.pool {
        return batch::run(run, n);
    }
    let file = &run.files[0];
    let blocks = if file == "-" {
        let mut s = String::new();
        if let Err(e) = io::stdin().read_to_string(&mut s) {
            eprintln!("dockexec: reading standard input: {e}");
            return ExitCode::from(OWN_FAILURE);
        }
        blocks_of(Path::new(file), run.lang.as_deref(), s).and_then(|blocks| {
            for b in &blocks {
                b.language()
                    .and_then(|_| b.filename())
                    .map_err(|e| describe(&e))?;
            }
            Ok(blocks)
        })
    } else {
        load_blocks(Path::new(file), run.lang.as_deref())
    };
    let blocks = match blocks {
        Ok(b) => b,
        Err(msg) => {
            eprintln!("dockexec: {msg}");
            return ExitCode::from(OWN_FAILURE);
        }
    };
    // Ctrl-C removes the container before exiting with 130.
    let _ = dockexec::cleanup_on_ctrlc();

    let executor = match start_showing_pulls(run.builder) {
        Ok(e) => e,
        Err(e) => return fail(&e),
    };
    // Live: each chunk written and flushed as it comes.
    let (mut out, mut err) = (io::stdout(), io::stderr());
    let done = run_blocks(
        &executor,
        run.session,
        &blocks,
        &run.rich,
        &mut out,
        &mut err,
    );
    if let Some(msg) = done.error {
        eprintln!("dockexec: {msg}");
        return ExitCode::from(OWN_FAILURE);
    }
    if done.unsaved > 0 {
        eprintln!(
            "dockexec: {} rich result(s) not saved (--outputs DIR saves them)",
            done.unsaved
        );
    }
    if let Err(e) = executor.stop() {
        eprintln!("dockexec: warning: {e}");
    }
    ExitCode::from(done.code().clamp(0, 255) as u8)
}

/// Pull progress on stderr: bars like `docker pull`'s on a terminal, else a line per event.
/// Starts `builder`'s executor with the image pull's progress shown (see
/// [`show_pull_progress`]); the bars are dropped, as they last were, before anything else
/// goes to stderr.
fn start_showing_pulls(
    mut builder: dockexec::ExecutorBuilder,
) -> dockexec::Result<dockexec::Executor> {
    show_pull_progress(&mut builder);
    builder.start()
}

fn show_pull_progress(builder: &mut dockexec::ExecutorBuilder) {
    if io::stderr().is_terminal() {
        let mut bars = PullBars::new();
        builder.on_pull_progress(move |p| bars.show(p));
    } else {
        builder.on_pull_progress(show_pull_line);
    }
}

/// What running a document's blocks came to.
#[derive(Default)]
struct BlocksRun {
    /// How many blocks were started.
    started: usize,
    /// The status of the last block that ended (`None`: none did).
    last: Option<dockexec::ExitStatus>,
    /// Rich results neither saved nor printed.
    unsaved: usize,
    /// Why the blocks could not all be run or observed (dockexec's own failure).
    error: Option<String>,
}

impl BlocksRun {
    /// The exit code: the last block's, as a shell gives it; 0 when none ran.
    fn code(&self) -> i32 {
        self.last.map_or(0, |s| s.shell_code())
    }
}

/// Runs `blocks` on `executor` in order and stops at the first that fails (in one session
/// for the Python blocks with `session`). Each block's output goes to `out` and `err` as it
/// comes, flushed chunk by chunk, and so do the messages about it (`dockexec: timed out`).
fn run_blocks(
    executor: &Executor,
    session: bool,
    blocks: &[CodeBlock],
    rich: &RichArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> BlocksRun {
    let mut done = BlocksRun::default();
    let session = if session {
        match executor.session() {
            Ok(s) => Some(s),
            Err(e) => {
                done.error = Some(describe(&e));
                return done;
            }
        }
    } else {
        None
    };
    for (n, block) in (1..).zip(blocks) {
        let spawned = match (&session, block.language()) {
            (Some(s), Ok(Language::Python)) => s.spawn_block(block),
            _ => executor.spawn(block),
        };
        let execution = match spawned {
            Ok(e) => e,
            Err(e) => {
                done.error = Some(describe(&e));
                return done;
            }
        };
        done.started += 1;
        // With --json the output goes into the block's record instead.
        for chunk in execution.chunks().iter().filter(|_| !rich.json) {
            // A closed pipe (`| head`) is not our failure: keep draining, stay quiet.
            let _ = match &chunk {
                Chunk::Stdout(b) => out.write_all(b).and_then(|_| out.flush()),
                Chunk::Stderr(b) => err.write_all(b).and_then(|_| err.flush()),
            };
        }
        let output = match execution.wait() {
            Ok(o) => o,
            Err(e) => {
                done.error = Some(describe(&e));
                return done;
            }
        };
        match rich.finish_block(n, block, output, out, err) {
            Ok(left) => done.unsaved += left,
            Err(msg) => {
                done.error = Some(msg);
                return done;
            }
        }
        // A closed stderr is no failure: these lines are lost with it.
        if output.status.truncated() {
            let _ = writeln!(err, "dockexec: output truncated at the output limit");
        }
        if output.status.timed_out() {
            let _ = writeln!(err, "dockexec: timed out");
        } else if output.status.lost()
            || (output.status.signal().is_some() && !output.status.cancelled())
        {
            // The exit code alone (137) does not say the block was killed, nor by what; nor
            // does it say that the block's session (or container) went away under it.
            let _ = writeln!(err, "dockexec: {}", output.status);
        }
        done.last = Some(output.status);
        if !output.status.success() {
            break;
        }
    }
    done
}

/// `--outputs DIR` and `--json`: what the CLI does with a block's rich results and output.
#[derive(Default, Clone)]
struct RichArgs {
    outputs: Option<std::path::PathBuf>,
    json: bool,
    /// In a batch: the document, named in each `--json` record (as `"file"`).
    file: Option<String>,
}

impl RichArgs {
    /// After block `n`: saves its results (with `--outputs`) and prints its JSON record (with
    /// `--json`). Returns how many results went unsaved (none with either flag).
    fn finish_block(
        &self,
        n: usize,
        block: &CodeBlock,
        output: &dockexec::Output,
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> Result<usize, String> {
        let mut files = Vec::new();
        if let Some(dir) = &self.outputs {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("--outputs {}: {e}", dir.display()))?;
            let mut counts = HashMap::new();
            for r in &output.results {
                let Some(best) = r.best() else {
                    files.push(None);
                    continue;
                };
                let short = match r.kind {
                    dockexec::ResultKind::Figure => "fig",
                    other => other.name(),
                };
                let m = counts.entry(short).or_insert(0);
                *m += 1;
                let path = dir.join(format!("block-{n}-{short}-{m}.{}", extension(&best.mime)));
                std::fs::write(&path, &best.data)
                    .map_err(|e| format!("writing {}: {e}", path.display()))?;
                let _ = writeln!(err, "dockexec: wrote {}", path.display());
                files.push(Some(path));
            }
        }
        if self.json {
            let mut record = json_record(n, block, output, &files);
            if let Some(file) = &self.file {
                record["file"] = file.as_str().into();
            }
            // A closed pipe is not our failure (as for the streamed output).
            let _ = writeln!(out, "{record}").and_then(|_| out.flush());
        }
        Ok(if self.outputs.is_some() || self.json {
            0
        } else {
            output.results.len()
        })
    }
}

/// A file name extension for a MIME type.
fn extension(mime: &str) -> &'static str {
    match mime {
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "image/gif" => "gif",
        "image/svg+xml" => "svg",
        "text/html" => "html",
        "text/markdown" => "md",
        "text/latex" => "tex",
        "application/json" => "json",
        "text/plain" => "txt",
        _ => "bin",
    }
}

/// `--json`'s record of one block.
fn json_record(
    n: usize,
    block: &CodeBlock,
    output: &dockexec::Output,
    files: &[Option<std::path::PathBuf>],
) -> serde_json::Value {
    let st = &output.status;
    let results: Vec<_> = output
        .results
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let data: Vec<_> = r
                .data
                .iter()
                .map(|d| {
                    serde_json::json!({
                        "mime": d.mime,
                        "base64": base64(&d.data),
                        "size": d.size,
                        "truncated": d.truncated,
                    })
                })
                .collect();
            serde_json::json!({
                "kind": r.kind.name(),
                "stdout_at": r.stdout_at,
                "stderr_at": r.stderr_at,
                "data": data,
                "file": files.get(i).cloned().flatten().map(|p| p.display().to_string()),
            })
        })
        .collect();
    serde_json::json!({
        "block": n,
        "language": block.language().map(|l| l.to_string()).ok(),
        "status": {
            "success": st.success(),
            "code": st.code(),
            "shell_code": st.shell_code(),
            "signal": st.signal(),
            "timed_out": st.timed_out(),
            "cancelled": st.cancelled(),
            "lost": st.lost(),
            "truncated": st.truncated(),
            "text": st.to_string(),
        },
        "stdout": output.stdout_lossy(),
        "stderr": output.stderr_lossy(),
        "duration_ms": output.duration.as_millis() as u64,
        "results": results,
    })
}

/// Standard base64 (RFC 4648, padded): no dependency for one encoder.
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// A pull on a terminal, drawn like `docker pull`: one line per layer with its status, and a
/// bar with byte counts while it downloads or extracts.
struct PullBars {
    multi: MultiProgress,
    layers: HashMap<String, Layer>,
    line: ProgressStyle,
    text: ProgressStyle,
    bytes: ProgressStyle,
}

struct Layer {
    bar: ProgressBar,
    /// Whether `bar` has the style with byte counts.
    bytes: bool,
}

impl PullBars {
    fn new() -> PullBars {
        let style = |template| ProgressStyle::with_template(template).expect("a valid template");
        PullBars {
            multi: MultiProgress::new(),
            layers: HashMap::new(),
            line: style("{msg}"),
            text: style("{prefix}: {msg}"),
            bytes: style("{prefix}: {msg:<11} [{bar:40}] {decimal_bytes}/{decimal_total_bytes}")
                .progress_chars("=> "),
        }
    }

    fn show(&mut self, p: &PullProgress) {
        // "<tag>: Pulling from …", "Digest: …", "Status: …": lines in the order they come, so
        // finished bars rather than `println`, which would put them all above the layers.
        let Some(layer) = p.layer.as_deref() else {
            self.line(p.status.clone());
            return;
        };
        if p.status.starts_with("Pulling from") {
            self.line(format!("{layer}: {}", p.status));
            return;
        }
        let layer = self.layers.entry(layer.to_string()).or_insert_with(|| {
            let bar = ProgressBar::new(0)
                .with_style(self.text.clone())
                .with_prefix(layer.to_string());
            Layer {
                bar: self.multi.add(bar),
                bytes: false,
            }
        });
        if matches!(p.status.as_str(), "Pull complete" | "Already exists") {
            layer.bar.set_style(self.text.clone());
            layer.bar.finish_with_message(p.status.clone());
            return;
        }
        // The message first: a redraw may come between any two of these calls.
        layer.bar.set_message(p.status.clone());
        let counts = p.current.zip(p.total).filter(|&(_, total)| total > 0);
        if counts.is_some() != layer.bytes {
            layer.bytes = counts.is_some();
            let style = if layer.bytes { &self.bytes } else { &self.text };
            layer.bar.set_style(style.clone());
        }
        if let Some((current, total)) = counts {
            layer.bar.set_length(total);
            layer.bar.set_position(current.min(total));
        }
    }

    fn line(&self, text: String) {
        let line = self
            .multi
            .add(ProgressBar::new(0).with_style(self.line.clone()));
        line.finish_with_message(text);
    }
}

/// A pull when stderr is not a terminal: one line per event, byte counts left out.
fn show_pull_line(p: &PullProgress) {
    if p.current.is_none() {
        let layer = p.layer.as_deref().unwrap_or("");
        eprintln!("{}", format!("{layer} {}", p.status).trim());
    }
}

/// `none` as `None`, anything else through `parse`.
fn none_or<T>(v: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<Option<T>, String> {
    if v == "none" {
        Ok(None)
    } else {
        parse(v).map(Some)
    }
}

/// A byte count with an optional K, M or G (binary) suffix: `512M`, `2G`, `1048576`.
fn bytes(v: &str) -> Result<u64, String> {
    let err =
        || format!("--memory takes BYTES with an optional K, M or G suffix, or none, not {v:?}");
    let (num, shift) = match v.char_indices().last() {
        Some((i, 'k' | 'K')) => (&v[..i], 10),
        Some((i, 'm' | 'M')) => (&v[..i], 20),
        Some((i, 'g' | 'G')) => (&v[..i], 30),
        _ => (v, 0),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|n| *n > 0)
        .ok_or_else(err)
}

#[cfg(test)]
mod help_tests {
    #[test]
    fn the_help_names_the_librarys_own_defaults_and_leaves_no_placeholder() {
        let text = super::help();
        assert!(
            !text.contains("{image}") && !text.contains("{tmp}"),
            "{text}"
        );
        for default in [
            format!("[default: {}]", dockexec::DEFAULT_IMAGE),
            format!("[default: {}]", dockexec::DEFAULT_TIMEOUT.as_secs()),
            format!("[default: {}]", dockexec::DEFAULT_PIDS),
            format!("else {}]", dockexec::NOBODY),
        ] {
            assert!(text.contains(&default), "{default} in:\n{text}");
        }
    }
}

#[cfg(test)]
mod rich_tests {
    #[test]
    fn base64_is_rfc_4648s() {
        for (raw, want) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foobar", "Zm9vYmFy"),
            (b"\xff\xfe\x00", "//4A"),
        ] {
            assert_eq!(super::base64(raw), want);
        }
    }
}
