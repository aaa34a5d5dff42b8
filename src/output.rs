//! What an execution produced: [`Output`], [`ExitStatus`], and live [`Chunk`]s.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which output stream a piece of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// A piece of live output, as delivered by [`Execution::chunks`](crate::Execution::chunks).
///
/// Its `Debug` shows the bytes as text (`Stdout("hi\n")`), escaped where they are not UTF-8.
#[derive(Clone, PartialEq, Eq)]
pub enum Chunk {
    /// Bytes the block wrote to standard output.
    Stdout(Vec<u8>),
    /// Bytes the block wrote to standard error.
    Stderr(Vec<u8>),
}

impl Chunk {
    /// The stream this chunk came from.
    pub fn stream(&self) -> Stream {
        match self {
            Chunk::Stdout(_) => Stream::Stdout,
            Chunk::Stderr(_) => Stream::Stderr,
        }
    }

    /// The chunk's bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Stdout(b) | Chunk::Stderr(b) => b,
        }
    }

    pub(crate) fn new(stream: Stream, bytes: Vec<u8>) -> Chunk {
        match stream {
            Stream::Stdout => Chunk::Stdout(bytes),
            Stream::Stderr => Chunk::Stderr(bytes),
        }
    }
}

/// What made a [`RichResult`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResultKind {
    /// `display(obj)` in the block.
    Display,
    /// A matplotlib figure: shown with `plt.show()`, or still open when the block ended.
    Figure,
    /// The value of a [`Session`](crate::Session) block's last expression, as a notebook
    /// cell's (`None` gives nothing).
    Value,
}

impl ResultKind {
    /// `display`, `figure` or `value`: the name the CLI's file names and `--json` use.
    pub fn name(self) -> &'static str {
        match self {
            ResultKind::Display => "display",
            ResultKind::Figure => "figure",
            ResultKind::Value => "value",
        }
    }
}

/// One MIME type's bytes in a [`RichResult`].
#[derive(Clone, PartialEq, Eq)]
pub struct MimeData {
    /// The MIME type: `image/png`, `text/html`, `text/plain`, …
    pub mime: String,
    /// The bytes kept: all of them unless [`truncated`](MimeData::truncated). Text types
    /// (`text/*`, JSON, SVG, …) have the executor's secret values redacted, as stdout has.
    pub data: Vec<u8>,
    /// How many bytes the block sent.
    pub size: u64,
    /// The item passed its cap (16 MiB per item, 32 MiB per block): a text type keeps its
    /// first bytes (less the first part of a secret the cut went through, which the bytes
    /// after it could have completed), any other type (half an image is no image) keeps none.
    pub truncated: bool,
}

impl MimeData {
    /// Whether the MIME type is text: `text/*`, JSON, JavaScript, SVG and `+json`/`+xml`.
    pub fn is_text(&self) -> bool {
        is_text_mime(&self.mime)
    }
}

pub(crate) fn is_text_mime(mime: &str) -> bool {
    [
        "text/",
        "application/json",
        "application/javascript",
        "image/svg+xml",
    ]
    .iter()
    .any(|p| mime.starts_with(p))
        || mime.ends_with("+json")
        || mime.ends_with("+xml")
}

impl fmt::Debug for MimeData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("MimeData");
        d.field("mime", &self.mime);
        if self.is_text() {
            d.field("data", &Text(&self.data));
        } else {
            d.field("data", &format_args!("<{} bytes>", self.data.len()));
        }
        d.field("size", &self.size)
            .field("truncated", &self.truncated)
            .finish()
    }
}

/// A rich result of a block: a figure, a `display(obj)`, or a session block's last value,
/// as one MIME bundle (like Jupyter's `display_data` and `execute_result`).
///
/// Only [`Strategy::Agent`](crate::Strategy::Agent) gives them, to Python blocks that run in
/// its warm interpreter (a zygote block, the default; a [`Session`](crate::Session) block).
/// A block run as a fresh `python3 FILE` (the exec strategy, or
/// [`python_zygote(false)`](crate::ExecutorBuilder::python_zygote)) is exactly that: it has no
/// `display` and its figures are never sent. They travel apart from stdout, so nothing a
/// block prints can pass for one.
///
/// `display(obj)` builds the bundle with IPython's formatter
/// (`IPython.core.formatters.DisplayFormatter().format(obj)`) when the block could import
/// IPython (where its own `import IPython` would find it: `sys.path` as the block left it, any
/// finder on `sys.meta_path`), and otherwise, or when that formatter raises or gives nothing,
/// from the object's `_repr_mimebundle_` and `_repr_*_` methods.
///
/// A result belongs to the block that is running when the agent reads it. In a
/// [`Session`](crate::Session), a thread an earlier block left running may `display()` at any
/// time: while a later block runs, its result is that block's; between blocks, when no block
/// runs, it is dropped (`display()` still returns as usual, once the agent has read it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RichResult {
    /// What made it.
    pub kind: ResultKind,
    /// Its MIME types with their bytes, in the order the block gave them; `text/plain` is
    /// always among them.
    pub data: Vec<MimeData>,
    /// Where it came in the output: after this many bytes of [`Output::stdout`].
    pub stdout_at: usize,
    /// After this many bytes of [`Output::stderr`].
    pub stderr_at: usize,
}

impl RichResult {
    /// The bytes of MIME type `mime`, if the bundle has them.
    pub fn get(&self, mime: &str) -> Option<&[u8]> {
        self.data
            .iter()
            .find(|d| d.mime == mime)
            .map(|d| d.data.as_slice())
    }

    /// The `text/plain` form, decoded (lossy).
    pub fn text(&self) -> Option<Cow<'_, str>> {
        self.get("text/plain").map(String::from_utf8_lossy)
    }

    /// The richest item worth saving as a file: an image first, then HTML, SVG, Markdown,
    /// LaTeX, JSON, and `text/plain` last. Truncated binary items (kept empty) are skipped.
    pub fn best(&self) -> Option<&MimeData> {
        const RANK: [&str; 9] = [
            "image/png",
            "image/jpeg",
            "image/gif",
            "image/svg+xml",
            "text/html",
            "text/markdown",
            "text/latex",
            "application/json",
            "text/plain",
        ];
        let usable = |d: &&MimeData| !(d.truncated && d.data.is_empty());
        RANK.iter()
            .find_map(|m| self.data.iter().filter(usable).find(|d| d.mime == *m))
            .or_else(|| self.data.iter().find(usable))
    }

    /// True when an item of it passed its cap.
    pub fn truncated(&self) -> bool {
        self.data.iter().any(|d| d.truncated)
    }
}

/// How an execution ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The process exited by itself.
    Exited,
    /// The executor's timeout killed it.
    TimedOut,
    /// `cancel()`, `stop()` or `restart()` killed it.
    Cancelled,
    /// It was killed because its output passed `max_output_bytes`.
    OutputLimit,
    /// Its container vanished, or the daemon stopped answering, before it ended.
    Lost,
    /// A [`Session`](crate::Session) block whose session's process ended (exited, was
    /// killed from outside or by the OOM killer, or was killed by the agent) before it did.
    SessionLost,
}

/// The status of a finished execution, modelled on [`std::process::ExitStatus`].
///
/// A non-zero exit, a timeout and a cancellation are all ordinary statuses: the block ran and
/// this says how it ended.
///
/// Three exit codes, three meanings:
///
/// | method | what it is | a block killed on timeout |
/// |---|---|---|
/// | [`code`](ExitStatus::code) | the process's own code, as the daemon reports it; `None` when unknown | `Some(137)` |
/// | [`shell_code`](ExitStatus::shell_code) | what a shell would report for the whole run, never unknown | `124` |
/// | [`BlocksResult::exit_code`] | `shell_code` of the last block that ran (AutoGen's `exit_code`) | `124` |
///
/// How `code`, `signal` and `oom_killed` relate, for a block that ended by itself:
///
/// | the block | [`code`](ExitStatus::code) | [`signal`](ExitStatus::signal) | [`oom_killed`](ExitStatus::oom_killed) |
/// |---|---|---|---|
/// | exits with `n` (`exit 3`, `sys.exit(3)`) | `Some(n)` | `None` | `false` |
/// | is killed by signal `N` (`kill -9 $$`, `os.kill(os.getpid(), SIGTERM)`) | `Some(128 + N)` | `Some(N)` | `false` |
/// | passes the memory limit | `Some(137)` | `Some(9)` | `true` |
/// | dies of a SIGKILL dockexec did not send, the exec strategy's OOM probe failing (see [`kill_unexplained`](ExitStatus::kill_unexplained)) | `Some(137)` | `Some(9)` | `false` |
/// | is cancelled, timed out or killed at the output limit | usually `Some(137)` | usually `Some(9)` | `false` |
/// | is lost (container gone) | usually `None` | `None` | `false` |
/// | is lost with its [`Session`](crate::Session)'s process | that process's code | that process's signal | as above |
///
/// `oom_killed` comes from the container's memory cgroup OOM-kill counter, never from the
/// code. With [`Strategy::Agent`](crate::Strategy::Agent) the signal is the one `waitpid`
/// reported, so `exit 137` is code 137 with no signal. With
/// [`Strategy::Exec`](crate::Strategy::Exec) the daemon reports a signal death as code
/// `128 + N`, just as it reports `exit 128 + N`, so a code from 129 to 192 is read as signal
/// `N` there: the two cannot be told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    pub(crate) end: End,
    pub(crate) code: Option<i32>,
    /// The signal that ended the process, when it is known (see the table above).
    pub(crate) signal: Option<i32>,
    pub(crate) oom_killed: bool,
    /// See [`ExitStatus::kill_unexplained`].
    pub(crate) kill_unexplained: bool,
    pub(crate) truncated: bool,
}

impl ExitStatus {
    /// True when the block exited by itself with code 0.
    pub fn success(&self) -> bool {
        self.end == End::Exited && self.code == Some(0)
    }

    /// The exit code, as the daemon reported it; `None` when it could not be learnt (the
    /// container vanished, or the daemon stopped answering).
    ///
    /// A process killed by signal N reports `128 + N`, as a shell would; a cancelled or timed
    /// out block usually reports 137 (SIGKILL).
    pub fn code(&self) -> Option<i32> {
        self.code
    }

    /// The signal that killed the block's process (`Some(9)` for SIGKILL), or `None` when it
    /// exited by itself or its end is unknown.
    ///
    /// The agent reports the signal `waitpid` saw; the exec strategy can only read it from a
    /// code of `128 + N`, which a process that exits with that code gives too (see the table
    /// on [`ExitStatus`]). A cancelled or timed-out block usually reports `Some(9)`.
    pub fn signal(&self) -> Option<i32> {
        self.signal
    }

    /// True when the executor's timeout killed the block.
    pub fn timed_out(&self) -> bool {
        self.end == End::TimedOut
    }

    /// True when `cancel()`, `stop()` or `restart()` killed the block.
    pub fn cancelled(&self) -> bool {
        self.end == End::Cancelled
    }

    /// True when the block was killed because its output passed `max_output_bytes`
    /// (with [`OutputLimit::Kill`](crate::OutputLimit::Kill)).
    pub fn output_limit_killed(&self) -> bool {
        self.end == End::OutputLimit
    }

    /// True when the kernel's OOM killer ended the block (the container's memory limit):
    /// the block died of SIGKILL and the container's memory cgroup counted an OOM kill.
    pub fn oom_killed(&self) -> bool {
        self.oom_killed
    }

    /// True when the block died of a SIGKILL that dockexec did not send, and whether the
    /// kernel's OOM killer sent it could not be learnt, so neither
    /// [`oom_killed`](ExitStatus::oom_killed) nor a plain "killed by signal 9" would be the
    /// truth. Only with [`Strategy::Exec`](crate::Strategy::Exec): after such a kill it asks the
    /// container's memory cgroup for its OOM-kill count in an exec of its own, and that exec
    /// fails when the container is at its process limit (or its memory limit, or the daemon
    /// refuses). When the probe runs, a kill it does not explain is reported as the plain
    /// signal: the block itself (`kill -9 $$`), another process of the same user, and a kill
    /// from outside the container all look alike to the exec strategy (the agent's `waitpid`
    /// cannot tell them apart either).
    pub fn kill_unexplained(&self) -> bool {
        self.kill_unexplained
    }

    /// True when the output passed `max_output_bytes` and the kept output was truncated.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// True when the block could not be followed to its end: its container was removed or
    /// killed from outside, or the daemon stopped answering; or, for a
    /// [`Session`](crate::Session) block, its session's process ended under it (then
    /// [`code`](ExitStatus::code) and [`signal`](ExitStatus::signal) are that process's, and
    /// the session's later blocks get [`Error::SessionLost`](crate::Error::SessionLost) with
    /// the cause). The output is what arrived.
    pub fn lost(&self) -> bool {
        matches!(self.end, End::Lost | End::SessionLost)
    }

    /// The exit code the CLI uses: the block's code, 124 for a timeout (as `timeout(1)`),
    /// 130 for a cancellation, 1 when no code is known.
    pub fn shell_code(&self) -> i32 {
        match self.end {
            End::TimedOut => 124,
            End::Cancelled => 130,
            // Never 0: the block did not finish, whatever its session's process exited with.
            End::SessionLost => self.code.filter(|c| *c != 0).unwrap_or(1),
            _ => self.code.unwrap_or(1),
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.end {
            End::Exited => match (self.signal, self.code) {
                (Some(n), _) => match signal_name(n) {
                    Some(name) => write!(f, "killed by signal {n} ({name})")?,
                    None => write!(f, "killed by signal {n}")?,
                },
                (None, Some(c)) => write!(f, "exit code {c}")?,
                (None, None) => f.write_str("exited")?,
            },
            End::TimedOut => f.write_str("timed out")?,
            End::Cancelled => f.write_str("cancelled")?,
            End::OutputLimit => f.write_str("killed at the output limit")?,
            End::Lost => f.write_str("lost (container gone or daemon not answering)")?,
            End::SessionLost => match (self.signal, self.code) {
                (Some(n), _) => write!(
                    f,
                    "lost with its session (the session's process was killed by signal {n})"
                )?,
                (None, Some(c)) => write!(
                    f,
                    "lost with its session (the session's process exited with code {c})"
                )?,
                (None, None) => f.write_str("lost with its session")?,
            },
        }
        if self.oom_killed {
            f.write_str(", oom-killed")?;
        }
        if self.kill_unexplained {
            f.write_str(", not sent by dockexec, OOM killer unknown (the probe could not run)")?;
        }
        if self.truncated {
            f.write_str(", output truncated")?;
        }
        Ok(())
    }
}

/// The usual name of Linux signal `n`, for display.
fn signal_name(n: i32) -> Option<&'static str> {
    Some(match n {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        _ => return None,
    })
}

/// The signal a code of `128 + N` stands for, as a shell reports a signal death (the exec
/// strategy's only evidence).
pub(crate) fn signal_from_code(code: Option<i32>) -> Option<i32> {
    match code {
        Some(c) if (129..=128 + 64).contains(&c) => Some(c - 128),
        _ => None,
    }
}

/// Everything a finished execution produced, modelled on [`std::process::Output`].
///
/// `stdout` and `stderr` are kept apart, as raw bytes; [`pieces`](Output::pieces) and
/// [`merged`](Output::merged) give both in the order they arrived. Nothing is decoded, so
/// output that is not UTF-8 is never an error: the `_lossy` helpers decode for display. Its
/// `Debug` shows both streams as text, escaped where they are not UTF-8.
#[derive(Clone, PartialEq, Eq)]
pub struct Output {
    /// How the execution ended.
    pub status: ExitStatus,
    /// Everything written to standard output (up to the output limit).
    pub stdout: Vec<u8>,
    /// Everything written to standard error (up to the output limit).
    pub stderr: Vec<u8>,
    /// The code file on the host, inside the work dir; `None` if it was deleted after the run.
    /// When the workspace lives in the container (no [`work_dir`](crate::Executor::work_dir)),
    /// its path in the container, under `/workspace`.
    pub code_file: Option<PathBuf>,
    /// From the start of the execution to the end of its output.
    pub duration: Duration,
    /// The block's rich results (figures, `display()`, a session block's last value), in
    /// arrival order; each says where it came among `stdout` and `stderr`. Empty for
    /// anything that is not Python run by the agent's warm interpreter: see [`RichResult`].
    pub results: Vec<RichResult>,
    /// Arrival order: runs of (stream, length) over `stdout` and `stderr`.
    pub(crate) order: Vec<(Stream, usize)>,
}

impl Output {
    /// Standard output, decoded as UTF-8 with invalid bytes replaced by U+FFFD.
    pub fn stdout_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.stdout)
    }

    /// Standard error, decoded as UTF-8 with invalid bytes replaced by U+FFFD.
    pub fn stderr_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.stderr)
    }

    /// Both streams' pieces in the order they arrived.
    ///
    /// Order within one stream is exact. Across the two it is the order the daemon delivered
    /// them in: Docker reads stdout and stderr through separate pipes, so writes to different
    /// streams made within a few milliseconds of each other may arrive swapped.
    ///
    /// ```
    /// # fn show(output: &dockexec::Output) {
    /// for (stream, bytes) in output.pieces() {
    ///     println!("{stream:?}: {}", String::from_utf8_lossy(bytes));
    /// }
    /// # }
    /// ```
    pub fn pieces(&self) -> impl Iterator<Item = (Stream, &[u8])> + '_ {
        let (mut o, mut e) = (0usize, 0usize);
        self.order.iter().map(move |&(s, n)| match s {
            Stream::Stdout => {
                o += n;
                (s, &self.stdout[o - n..o])
            }
            Stream::Stderr => {
                e += n;
                (s, &self.stderr[e - n..e])
            }
        })
    }

    /// Standard output and standard error merged in arrival order, as a terminal shows them.
    pub fn merged(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.stdout.len() + self.stderr.len());
        for (_, b) in self.pieces() {
            v.extend_from_slice(b);
        }
        v
    }

    /// [`merged`](Output::merged), decoded lossily.
    pub fn merged_lossy(&self) -> String {
        String::from_utf8_lossy(&self.merged()).into_owned()
    }
}

/// Shows bytes as a string literal when they are UTF-8, else as an escaped byte string.
struct Text<'a>(&'a [u8]);

impl fmt::Debug for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(self.0) {
            Ok(s) => fmt::Debug::fmt(s, f),
            Err(_) => write!(f, "b\"{}\"", self.0.escape_ascii()),
        }
    }
}

impl fmt::Debug for Chunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Chunk::Stdout(_) => "Stdout",
            Chunk::Stderr(_) => "Stderr",
        };
        f.debug_tuple(name).field(&Text(self.bytes())).finish()
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Output")
            .field("status", &self.status)
            .field("stdout", &Text(&self.stdout))
            .field("stderr", &Text(&self.stderr))
            .field("code_file", &self.code_file)
            .field("duration", &self.duration)
            .field("results", &self.results)
            .finish_non_exhaustive()
    }
}

/// Output under construction: appends pieces, keeps the arrival order, enforces the cap.
#[derive(Debug, Default)]
pub(crate) struct OutputBuf {
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
    pub(crate) results: Vec<RichResult>,
    pub(crate) order: Vec<(Stream, usize)>,
    pub(crate) truncated: bool,
}

/// Appended to a stream when the output limit cuts it.
pub(crate) const TRUNCATION_MARKER: &[u8] = b"\n[dockexec: output truncated at max_output_bytes]\n";

impl OutputBuf {
    pub(crate) fn len(&self) -> usize {
        self.stdout.len() + self.stderr.len()
    }

    /// Appends what fits under `cap`; returns the bytes kept (to forward live), and whether
    /// this piece crossed the cap (the marker is then part of the kept bytes).
    pub(crate) fn push<'a>(
        &mut self,
        stream: Stream,
        bytes: &'a [u8],
        cap: Option<usize>,
    ) -> (Cow<'a, [u8]>, bool) {
        if self.truncated || bytes.is_empty() {
            return (Cow::Borrowed(&[]), false);
        }
        let room = cap.map_or(usize::MAX, |c| c.saturating_sub(self.len()));
        let (kept, crossed): (Cow<'a, [u8]>, bool) = if bytes.len() <= room {
            (Cow::Borrowed(bytes), false)
        } else {
            let mut v = bytes[..room].to_vec();
            v.extend_from_slice(TRUNCATION_MARKER);
            self.truncated = true;
            (Cow::Owned(v), true)
        };
        match stream {
            Stream::Stdout => self.stdout.extend_from_slice(&kept),
            Stream::Stderr => self.stderr.extend_from_slice(&kept),
        }
        match self.order.last_mut() {
            Some((s, n)) if *s == stream => *n += kept.len(),
            _ => self.order.push((stream, kept.len())),
        }
        (kept, crossed)
    }

    /// Copies of every piece so far, for a receiver that subscribes late.
    pub(crate) fn replay(&self) -> Vec<Chunk> {
        let (mut o, mut e) = (0usize, 0usize);
        self.order
            .iter()
            .map(|&(s, n)| match s {
                Stream::Stdout => {
                    o += n;
                    Chunk::Stdout(self.stdout[o - n..o].to_vec())
                }
                Stream::Stderr => {
                    e += n;
                    Chunk::Stderr(self.stderr[e - n..e].to_vec())
                }
            })
            .collect()
    }
}

/// The outcome of [`Executor::execute`](crate::Executor::execute): each block's output, plus the combined view AutoGen
/// users know.
#[derive(Debug, Clone)]
pub struct BlocksResult {
    /// One output per block that ran, in order; the last is the first that failed, if any.
    pub outputs: Vec<Output>,
}

impl BlocksResult {
    /// The last block's exit code as a shell reports it (124 for a timeout, as AutoGen).
    pub fn exit_code(&self) -> i32 {
        self.outputs.last().map_or(0, |o| o.status.shell_code())
    }

    /// True when every block succeeded.
    pub fn success(&self) -> bool {
        self.outputs.iter().all(|o| o.status.success())
    }

    /// Every block's merged output, concatenated, decoded lossily (AutoGen's `output`).
    pub fn output(&self) -> String {
        self.outputs.iter().map(Output::merged_lossy).collect()
    }

    /// The first block's code file (AutoGen's `code_file`).
    pub fn code_file(&self) -> Option<&Path> {
        self.outputs.first().and_then(|o| o.code_file.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(buf: OutputBuf) -> Output {
        Output {
            status: ExitStatus {
                end: End::Exited,
                code: Some(0),
                signal: None,
                oom_killed: false,
                kill_unexplained: false,
                truncated: buf.truncated,
            },
            stdout: buf.stdout,
            stderr: buf.stderr,
            code_file: None,
            duration: Duration::ZERO,
            results: buf.results,
            order: buf.order,
        }
    }

    #[test]
    fn merged_keeps_arrival_order() {
        let mut b = OutputBuf::default();
        b.push(Stream::Stdout, b"a", None);
        b.push(Stream::Stdout, b"b", None);
        b.push(Stream::Stderr, b"E", None);
        b.push(Stream::Stdout, b"c", None);
        assert_eq!(b.order.len(), 3, "adjacent pieces of one stream merge");
        let o = out(b);
        assert_eq!(o.merged(), b"abEc");
        assert_eq!(o.stdout, b"abc");
        assert_eq!(o.stderr, b"E");
        let pieces: Vec<_> = o.pieces().collect();
        assert_eq!(
            pieces,
            vec![
                (Stream::Stdout, &b"ab"[..]),
                (Stream::Stderr, &b"E"[..]),
                (Stream::Stdout, &b"c"[..])
            ]
        );
    }

    #[test]
    fn cap_truncates_with_marker_once() {
        let mut b = OutputBuf::default();
        let (k, crossed) = b.push(Stream::Stdout, b"12345", Some(8));
        assert_eq!((&*k, crossed), (&b"12345"[..], false));
        let (k, crossed) = b.push(Stream::Stderr, b"6789", Some(8));
        assert!(crossed);
        assert!(k.starts_with(b"678") && k.ends_with(TRUNCATION_MARKER));
        let (k, crossed) = b.push(Stream::Stdout, b"more", Some(8));
        assert!(k.is_empty() && !crossed);
        assert!(b.truncated);
        assert_eq!(b.stdout, b"12345");
        assert_eq!(b.replay().len(), 2);
    }

    #[test]
    fn debug_shows_text() {
        let mut b = OutputBuf::default();
        b.push(Stream::Stdout, b"hi\n", None);
        b.push(Stream::Stderr, &[0xff, b'x'], None);
        let shown = format!("{:?}", out(b));
        assert!(shown.contains(r#"stdout: "hi\n""#), "{shown}");
        assert!(shown.contains(r#"stderr: b"\xffx""#), "{shown}");
        assert_eq!(
            format!("{:?}", Chunk::Stdout(b"ok".to_vec())),
            r#"Stdout("ok")"#
        );
    }

    #[test]
    fn lossy_helpers_never_fail() {
        let mut b = OutputBuf::default();
        b.push(Stream::Stdout, &[0xff, b'o', b'k'], None);
        let o = out(b);
        assert_eq!(o.stdout_lossy(), "\u{fffd}ok");
    }

    #[test]
    fn status_helpers() {
        let s = |end, code| ExitStatus {
            end,
            code,
            signal: signal_from_code(code),
            oom_killed: false,
            kill_unexplained: false,
            truncated: false,
        };
        assert!(s(End::Exited, Some(0)).success());
        assert!(!s(End::Exited, Some(1)).success());
        assert!(!s(End::Cancelled, Some(0)).success());
        assert_eq!(s(End::TimedOut, Some(137)).signal(), Some(9));
        assert_eq!(s(End::TimedOut, Some(137)).shell_code(), 124);
        assert_eq!(s(End::Exited, Some(3)).shell_code(), 3);
        assert_eq!(s(End::Exited, Some(0)).to_string(), "exit code 0");
        assert_eq!(
            s(End::Exited, Some(143)).to_string(),
            "killed by signal 15 (SIGTERM)"
        );
        assert_eq!(s(End::Exited, Some(200)).signal(), None);
        assert_eq!(
            s(End::Exited, Some(128 + 40)).to_string(),
            "killed by signal 40"
        );
        // A session block whose session's process exited 0 under it never succeeded.
        let lost = s(End::SessionLost, Some(0));
        assert!(!lost.success() && lost.lost());
        assert_eq!(lost.shell_code(), 1);
        assert_eq!(
            lost.to_string(),
            "lost with its session (the session's process exited with code 0)"
        );
        assert_eq!(s(End::SessionLost, Some(3)).shell_code(), 3);
    }
}
