//! `dockexec run --pool N FILE|DIR…`: a batch of documents, each in a fresh sandbox leased
//! from a [`Pool`] ([`Policy::Fresh`]), N at a time, as `xargs -P N` or `parallel -j N` run
//! commands. Each document's output is kept and printed whole when it ends (as `parallel`'s
//! default `--group`), under a `==> FILE <==` header (as `tail` names its files); a progress
//! line and, at the end, a summary table go to stderr.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dockexec::crossbeam_channel::{self as channel, select};
use dockexec::{Policy, Pool, PullPolicy};

use super::{
    OWN_FAILURE, RichArgs, RunArgs, describe, fail, load_blocks, run_blocks, start_showing_pulls,
};

/// The exit code when a document did not succeed: `xargs`'s, distinct from 124 (timeout),
/// 125 (dockexec's own failure) and 130 (interrupted).
const SOME_FAILED: u8 = 123;
/// The exit code after Ctrl-C.
const INTERRUPTED: u8 = 130;
/// How long a document waits for its sandbox, at least: starts take well under a second
/// here, but a loaded daemon may take many.
const MIN_ACQUIRE: Duration = Duration::from_secs(60);

/// Runs the batch `run.files` names, `n` documents at a time.
pub(super) fn run(run: RunArgs, n: usize) -> ExitCode {
    let docs = match documents(&run.files) {
        Ok(d) => d,
        Err(msg) => return usage(&msg),
    };
    let mut config = run.builder.to_config();
    if config.work_dir.is_some() || config.bind_dir.is_some() {
        return usage(
            "--work-dir cannot be used with --pool: each document gets a fresh workspace of its own",
        );
    }
    if config.name.is_some() {
        return usage(
            "a container name (the config's `name`) cannot be used with --pool: each document \
             gets a container of its own",
        );
    }
    // The values of the secrets, read once (as --secret-env and --config read them): the
    // pool builds an executor from the config for each document.
    let mut secrets = HashMap::new();
    for name in &config.secret_env {
        match std::env::var(name) {
            Ok(v) => secrets.insert(name.clone(), v),
            Err(_) => return usage(&format!("--secret-env {name}: {name} is not set")),
        };
    }
    let engine = match config.engine.take().map(|e| e.to_engine()) {
        Some(Ok(e)) => e,
        Some(Err(e)) => return fail(&e),
        None => match dockexec::Engine::from_env() {
            Ok(e) => e,
            Err(e) => return fail(&e),
        },
    };

    // Ctrl-C: before the batch runs, remove what exists and exit at once (as `run FILE`);
    // while it runs, the first cancels the batch (the summary says what became of each
    // document), a second exits at once.
    let running = Arc::new(AtomicBool::new(false));
    // One slot: the handler must never block, and one Ctrl-C is all the batch needs to hear.
    let (int_tx, int_rx) = channel::bounded::<()>(1);
    {
        let running = Arc::clone(&running);
        let told = AtomicBool::new(false);
        // Refused when SIGINT is not at its default: ignored, as in a shell's background job
        // (then no Ctrl-C reaches us), or handled already. `int_rx` then never fires.
        let _ = ctrlc::try_set_handler(move || {
            if running.load(Ordering::SeqCst) && !told.swap(true, Ordering::SeqCst) {
                let _ = int_tx.try_send(());
                return;
            }
            dockexec::stop_all();
            std::process::exit(i32::from(INTERRUPTED));
        });
    }

    // One sandbox started first, as `run FILE` starts its own: the image is pulled once
    // (with its progress), and options the engine refuses, or an engine that cannot be
    // reached, are one error before any document runs. It runs nothing.
    let first = match start_showing_pulls(run.builder) {
        Ok(e) => e,
        Err(e) => return fail(&e),
    };
    if config.pull_policy == PullPolicy::Always {
        // Pulled just now.
        config.pull_policy = PullPolicy::Missing;
    }

    let slots = n.min(docs.len());
    let acquire = match (&config.init_command, config.init_timeout) {
        (None, _) => MIN_ACQUIRE,
        (Some(_), Some(t)) => t + MIN_ACQUIRE,
        // An init command with no limit: no limit on the wait either, in effect.
        (Some(_), None) => Duration::from_secs(365 * 24 * 3600),
    };
    let pool = Pool::builder()
        .engine(engine, slots)
        .executor(move || {
            config
                .to_builder_with(|name| secrets.get(name).cloned())
                // Every secret's value is in `secrets`, and the engine (the pool's) is not
                // converted: nothing here can fail.
                .expect("a builder from a config that built one already")
        })
        .policy(Policy::Fresh)
        .min_idle(slots)
        .acquire_timeout(acquire)
        .build();
    let pool = match pool {
        Ok(p) => p,
        Err(e) => {
            let _ = first.stop();
            return fail(&e);
        }
    };

    let batch = Batch {
        docs: &docs,
        outputs: output_dirs(&run.rich, &docs),
        rich: &run.rich,
        lang: run.lang.as_deref(),
        session: run.session,
        pool: &pool,
        interrupted: AtomicBool::new(false),
        next: AtomicUsize::new(0),
    };
    running.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    // The scope joins the workers (and the removal of `first`) before the summary: every
    // document has its report, and no worker holds a lease past it.
    let reports = std::thread::scope(|s| {
        // Removed while the pool warms up (here, with no thread to spare).
        let stop_first = || {
            let _ = first.stop();
        };
        if std::thread::Builder::new()
            .name("dockexec-batch-stop".into())
            .spawn_scoped(s, stop_first)
            .is_err()
        {
            stop_first();
        }
        // Unbounded: a worker never waits for the main thread's printing.
        let (tx, rx) = channel::unbounded();
        for k in 0..slots {
            let tx = tx.clone();
            let batch = &batch;
            let spawned = std::thread::Builder::new()
                .name("dockexec-batch".into())
                .spawn_scoped(s, move || batch.work(&tx));
            if let Err(e) = spawned {
                // Fewer at a time (none: every document `not run`), never a panic.
                eprintln!("dockexec: warning: {k} document(s) at a time, not {n}: {e}");
                break;
            }
        }
        // The workers hold the only senders: `rx` ends when the last worker does.
        drop(tx);
        batch.coordinate(s, &rx, &int_rx)
    });
    running.store(false, Ordering::SeqCst);
    if let Err(e) = pool.stop() {
        eprintln!("dockexec: warning: {}", describe(&e));
    }
    let interrupted = batch.interrupted.load(Ordering::SeqCst);
    summary(&docs, &reports, t0.elapsed(), interrupted);
    if interrupted {
        ExitCode::from(INTERRUPTED)
    } else if reports.iter().all(|r| matches!(r.ending, Ending::Ok)) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(SOME_FAILED)
    }
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("dockexec: {msg}");
    ExitCode::from(OWN_FAILURE)
}

/// The documents the arguments name, in order: a FILE as it is, a directory as its `*.md`
/// and `*.markdown` files (not in its subdirectories, not hidden ones), sorted by name.
/// Checked before anything starts: a path that is not there, or a directory with no
/// document, is an error.
fn documents(args: &[OsString]) -> Result<Vec<PathBuf>, String> {
    let mut docs = Vec::new();
    for arg in args {
        if arg == "-" {
            return Err("--pool runs FILEs and directories, not standard input (-)".into());
        }
        let path = Path::new(arg);
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if !meta.is_dir() {
            docs.push(path.to_path_buf());
            continue;
        }
        let entries = std::fs::read_dir(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| format!("{}: {e}", path.display()))?;
            let name = entry.file_name();
            let shown = Path::new(&name);
            let ext = shown
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase);
            let hidden = name.to_string_lossy().starts_with('.');
            let p = entry.path();
            // Through a link, as a shell's `*.md` would.
            if !hidden && matches!(ext.as_deref(), Some("md" | "markdown")) && p.is_file() {
                found.push(p);
            }
        }
        if found.is_empty() {
            return Err(format!(
                "{}: no *.md or *.markdown file in this directory (its subdirectories are not \
                 searched)",
                path.display()
            ));
        }
        found.sort();
        docs.extend(found);
    }
    Ok(docs)
}

/// With `--outputs DIR`, each document's own subdirectory: its file name without the
/// extension, with `-2`, `-3`, … after a name taken already.
fn output_dirs(rich: &RichArgs, docs: &[PathBuf]) -> Vec<Option<PathBuf>> {
    let Some(dir) = &rich.outputs else {
        return vec![None; docs.len()];
    };
    let mut taken = HashSet::new();
    docs.iter()
        .map(|d| {
            let stem = d
                .file_stem()
                .map_or_else(|| "document".into(), |s| s.to_string_lossy().into_owned());
            let mut name = stem.clone();
            let mut k = 1;
            while !taken.insert(name.clone()) {
                k += 1;
                name = format!("{stem}-{k}");
            }
            Some(dir.join(name))
        })
        .collect()
}

/// What became of a document.
#[derive(Debug, Clone)]
enum Ending {
    /// Every block succeeded.
    Ok,
    /// A block failed: its status (`exit code 3`, `killed by signal 9 (SIGKILL)`, `lost …`).
    Failed(String),
    /// A block ran out of time.
    TimedOut,
    /// The document could not be run: dockexec's own failure (unreadable, no blocks, no
    /// sandbox).
    Error(String),
    /// Stopped by Ctrl-C while it ran.
    Cancelled,
    /// Ctrl-C came before it started.
    NotRun,
}

impl Ending {
    fn text(&self) -> String {
        match self {
            Ending::Ok => "ok".into(),
            Ending::Failed(status) => format!("failed ({status})"),
            Ending::TimedOut => "timed out".into(),
            Ending::Error(msg) => format!("error: {msg}"),
            Ending::Cancelled => "cancelled".into(),
            Ending::NotRun => "not run".into(),
        }
    }

    /// Counted as a failure on the progress line.
    fn failed(&self) -> bool {
        matches!(
            self,
            Ending::Failed(_) | Ending::TimedOut | Ending::Error(_)
        )
    }
}

/// One document's run.
struct Report {
    ending: Ending,
    /// Blocks started and blocks in the document (`None`: it could not be read).
    blocks: (usize, Option<usize>),
    duration: Duration,
    /// Whether it had a sandbox (a `Started` was sent).
    started: bool,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Report {
    fn not_run() -> Report {
        Report {
            ending: Ending::NotRun,
            blocks: (0, None),
            duration: Duration::ZERO,
            started: false,
            stdout: Vec::new(),
            stderr: Vec::new(),
        }
    }
}

enum Msg {
    /// A document has its sandbox and runs.
    Started,
    Finished(usize, Report),
}

/// What the workers share.
struct Batch<'a> {
    docs: &'a [PathBuf],
    outputs: Vec<Option<PathBuf>>,
    rich: &'a RichArgs,
    lang: Option<&'a str>,
    session: bool,
    pool: &'a Pool,
    /// Set by the first Ctrl-C: no document starts after it.
    interrupted: AtomicBool,
    /// The next document to take.
    next: AtomicUsize,
}

impl Batch<'_> {
    /// A worker: takes the next document until none is left, or Ctrl-C.
    fn work(&self, tx: &channel::Sender<Msg>) {
        while !self.interrupted.load(Ordering::SeqCst) {
            let i = self.next.fetch_add(1, Ordering::SeqCst);
            if i >= self.docs.len() {
                return;
            }
            let report = self.run_one(i, tx);
            // The coordinator outlives the workers (the scope joins them first).
            let _ = tx.send(Msg::Finished(i, report));
        }
    }

    fn run_one(&self, i: usize, tx: &channel::Sender<Msg>) -> Report {
        let t0 = Instant::now();
        let path = &self.docs[i];
        let mut report = Report::not_run();
        let blocks = match load_blocks(path, self.lang) {
            Ok(b) => b,
            Err(msg) => {
                report.stderr = format!("dockexec: {msg}\n").into_bytes();
                report.ending = Ending::Error(msg);
                return report;
            }
        };
        report.blocks.1 = Some(blocks.len());
        let lease = match self.pool.acquire() {
            Ok(l) => l,
            Err(_) if self.interrupted.load(Ordering::SeqCst) => return report,
            Err(e) => {
                let msg = describe(&e);
                report.stderr = format!("dockexec: {msg}\n").into_bytes();
                report.ending = Ending::Error(msg);
                report.duration = t0.elapsed();
                return report;
            }
        };
        if self.interrupted.load(Ordering::SeqCst) {
            return report;
        }
        report.started = true;
        let _ = tx.send(Msg::Started);
        let rich = RichArgs {
            outputs: self.outputs[i].clone(),
            json: self.rich.json,
            file: Some(path.display().to_string()),
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let done = run_blocks(&lease, self.session, &blocks, &rich, &mut out, &mut err);
        report.duration = t0.elapsed();
        // The sandbox goes (the pool removes it and starts a fresh one for what is left).
        drop(lease);
        if done.unsaved > 0 {
            let _ = writeln!(
                err,
                "dockexec: {} rich result(s) not saved (--outputs DIR saves them)",
                done.unsaved
            );
        }
        report.blocks.0 = done.started;
        // Checked after the run: a document that ended on its own before Ctrl-C keeps its
        // ending; one that Ctrl-C cut short comes back cancelled, lost or in error.
        let cut = self.interrupted.load(Ordering::SeqCst);
        report.ending = match (&done.error, done.last) {
            (Some(_), _) if cut => Ending::Cancelled,
            (Some(msg), _) => {
                let _ = writeln!(err, "dockexec: {msg}");
                Ending::Error(msg.clone())
            }
            (None, Some(s)) if !s.success() && cut => Ending::Cancelled,
            (None, Some(s)) if s.timed_out() => Ending::TimedOut,
            (None, Some(s)) if !s.success() => Ending::Failed(s.to_string()),
            (None, _) => Ending::Ok,
        };
        report.stdout = out;
        report.stderr = err;
        report
    }

    /// The main thread's part: prints each document as it ends, keeps the progress line,
    /// and stops everything on Ctrl-C. Returns every document's report, in order.
    fn coordinate<'s>(
        &'s self,
        s: &'s std::thread::Scope<'s, '_>,
        rx: &channel::Receiver<Msg>,
        int_rx: &channel::Receiver<()>,
    ) -> Vec<Report> {
        let total = self.docs.len();
        let mut reports: Vec<Option<Report>> = (0..total).map(|_| None).collect();
        let mut progress = Progress::new(total);
        // Documents that have a sandbox or are done without one: when all have, the pool
        // starts no more sandboxes (it is stopped; the leases out are removed as they end).
        let mut taken = 0;
        let mut pool_stopping = false;
        // Disconnected when no handler could be set: then it must not fire.
        let mut int_rx = int_rx.clone();
        progress.draw();
        loop {
            let mut take = |taken: &mut usize| {
                *taken += 1;
                if *taken == total && !pool_stopping {
                    pool_stopping = true;
                    // Off this thread: `stop` joins the starts under way, and the documents
                    // still running must be printed as they end. The scope joins it.
                    let stop = || {
                        let _ = self.pool.stop();
                    };
                    if std::thread::Builder::new()
                        .name("dockexec-batch-stop".into())
                        .spawn_scoped(s, stop)
                        .is_err()
                    {
                        stop();
                    }
                }
            };
            select! {
                recv(rx) -> msg => match msg {
                    Ok(Msg::Started) => {
                        take(&mut taken);
                        progress.running += 1;
                        progress.draw();
                    }
                    Ok(Msg::Finished(i, report)) => {
                        if report.started {
                            progress.running -= 1;
                        } else {
                            take(&mut taken);
                        }
                        progress.done += 1;
                        progress.failed += usize::from(report.ending.failed());
                        progress.clear();
                        print_document(&self.docs[i], &report, self.rich.json);
                        progress.finished(&self.docs[i], &report);
                        progress.draw();
                        reports[i] = Some(report);
                    }
                    // Every worker is done.
                    Err(_) => break,
                },
                recv(int_rx) -> msg => {
                    int_rx = channel::never();
                    if msg.is_err() {
                        continue;
                    }
                    self.interrupted.store(true, Ordering::SeqCst);
                    progress.clear();
                    eprintln!("dockexec: interrupted: cancelling the running documents");
                    // The running blocks first (every executor of this process, the pool's
                    // idle ones too), then the pool: no lease after this, and what it was
                    // starting is removed once started.
                    dockexec::stop_all();
                    let _ = self.pool.stop();
                    progress.draw();
                }
            }
        }
        progress.clear();
        reports
            .into_iter()
            .map(|r| r.unwrap_or_else(Report::not_run))
            .collect()
    }
}

/// Prints a finished document's output, whole: `==> FILE <==` and its stdout on stdout
/// (with `--json`, its records alone: each names its file), then, if it wrote any, the
/// same header and its stderr on stderr.
fn print_document(path: &Path, report: &Report, json: bool) {
    let header = format!("==> {} <==\n", path.display());
    let whole = |header: Option<&str>, bytes: &[u8]| {
        let mut text = Vec::with_capacity(bytes.len() + 64);
        if let Some(h) = header {
            text.extend_from_slice(h.as_bytes());
        }
        text.extend_from_slice(bytes);
        // The next header starts a line.
        if !bytes.is_empty() && !bytes.ends_with(b"\n") {
            text.push(b'\n');
        }
        text
    };
    {
        let mut out = io::stdout().lock();
        // A closed pipe (`| head`) is not our failure: the batch goes on, quietly.
        let text = whole((!json).then_some(header.as_str()), &report.stdout);
        let _ = out.write_all(&text).and_then(|_| out.flush());
    }
    if !report.stderr.is_empty() {
        let _ = io::stderr().write_all(&whole(Some(&header), &report.stderr));
    }
}

/// The progress line on stderr: `[12/40] 3 running, 1 failed`, redrawn in place on a
/// terminal; elsewhere, a plain line per finished document and no control characters.
struct Progress {
    tty: bool,
    total: usize,
    done: usize,
    running: usize,
    failed: usize,
    /// The line is on the screen.
    shown: bool,
}

impl Progress {
    fn new(total: usize) -> Progress {
        Progress {
            tty: io::stderr().is_terminal(),
            total,
            done: 0,
            running: 0,
            failed: 0,
            shown: false,
        }
    }

    fn line(&self) -> String {
        format!(
            "[{}/{}] {} running, {} failed",
            self.done, self.total, self.running, self.failed
        )
    }

    fn draw(&mut self) {
        if self.tty {
            let _ = write!(io::stderr(), "\r\x1b[2K{}", self.line());
            self.shown = true;
        }
    }

    /// Takes the line off the screen, before other output.
    fn clear(&mut self) {
        if self.shown {
            let _ = write!(io::stderr(), "\r\x1b[2K");
            self.shown = false;
        }
    }

    /// Off a terminal: one line per finished document.
    fn finished(&self, path: &Path, report: &Report) {
        if !self.tty {
            eprintln!(
                "dockexec: [{}/{}] {}: {}",
                self.done,
                self.total,
                path.display(),
                report.ending.text()
            );
        }
    }
}

/// The table on stderr: each document in the order given, with its blocks (started / in
/// the document), time and ending; then the totals.
fn summary(docs: &[PathBuf], reports: &[Report], elapsed: Duration, interrupted: bool) {
    let rows: Vec<[String; 4]> = docs
        .iter()
        .zip(reports)
        .map(|(d, r)| {
            let blocks = match r.blocks {
                (_, None) => "-".to_string(),
                (ran, Some(all)) => format!("{ran}/{all}"),
            };
            let time = match r.ending {
                Ending::NotRun => "-".to_string(),
                _ => secs(r.duration),
            };
            [d.display().to_string(), blocks, time, r.ending.text()]
        })
        .collect();
    let head = [
        "FILE".to_string(),
        "BLOCKS".into(),
        "TIME".into(),
        "STATUS".into(),
    ];
    let width = |c: usize| {
        rows.iter()
            .chain([&head])
            .map(|r| r[c].chars().count())
            .max()
            .unwrap_or(0)
    };
    let (w0, w1, w2) = (width(0), width(1), width(2));
    let mut text = String::new();
    for r in std::iter::once(&head).chain(&rows) {
        text.push_str(&format!(
            "{:<w0$}  {:>w1$}  {:>w2$}  {}\n",
            r[0], r[1], r[2], r[3]
        ));
    }
    let count = |f: fn(&Ending) -> bool| reports.iter().filter(|r| f(&r.ending)).count();
    let mut parts = Vec::new();
    for (n, what) in [
        (count(|e| matches!(e, Ending::Ok)), "ok"),
        (count(|e| matches!(e, Ending::Failed(_))), "failed"),
        (count(|e| matches!(e, Ending::TimedOut)), "timed out"),
        (count(|e| matches!(e, Ending::Error(_))), "in error"),
        (count(|e| matches!(e, Ending::Cancelled)), "cancelled"),
        (count(|e| matches!(e, Ending::NotRun)), "not run"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    text.push_str(&format!(
        "{} document(s) in {}: {}{}\n",
        reports.len(),
        secs(elapsed),
        parts.join(", "),
        if interrupted { " (interrupted)" } else { "" }
    ));
    let _ = io::stderr().write_all(text.as_bytes());
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_dirs_are_the_file_names_made_unique() {
        let rich = RichArgs {
            outputs: Some("out".into()),
            ..RichArgs::default()
        };
        let docs: Vec<PathBuf> = ["a/x.md", "b/x.md", "c/y.markdown", "x-2.md"]
            .iter()
            .map(PathBuf::from)
            .collect();
        let dirs: Vec<_> = output_dirs(&rich, &docs).into_iter().flatten().collect();
        let want: Vec<PathBuf> = ["out/x", "out/x-2", "out/y", "out/x-2-2"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(dirs, want);
        assert_eq!(output_dirs(&RichArgs::default(), &docs), vec![None; 4]);
    }

    #[test]
    fn a_directory_means_its_markdown_files_sorted_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("dockexec-batch-docs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::create_dir_all(dir.join("empty")).unwrap();
        for f in [
            "b.md",
            "a.MD",
            "c.markdown",
            ".hidden.md",
            "notes.txt",
            "sub/d.md",
        ] {
            std::fs::write(dir.join(f), "```sh\ntrue\n```\n").unwrap();
        }
        let arg = |p: &str| dir.join(p).into_os_string();
        let got = documents(&[arg(""), arg("notes.txt")]);
        let sub = documents(&[arg("sub")]);
        let missing = documents(&[arg("b.md"), arg("nope.md")]);
        let empty = documents(&[arg("empty")]);
        let stdin = documents(&["-".into()]);
        let _ = std::fs::remove_dir_all(&dir);
        let names: Vec<String> = got
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.MD", "b.md", "c.markdown", "notes.txt"]);
        assert_eq!(
            sub.unwrap().len(),
            1,
            "sub/d.md, not searched from the parent"
        );
        let missing = missing.unwrap_err();
        assert!(missing.contains("nope.md: No such file"), "{missing}");
        let empty = empty.unwrap_err();
        assert!(empty.contains("no *.md or *.markdown file"), "{empty}");
        assert!(stdin.unwrap_err().contains("not standard input"));
    }
}
