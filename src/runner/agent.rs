//! The warm agent: one long-lived Python process per executor that starts every block itself.
//!
//! The agent (the Python files under `agent/`, joined into one script by `agent_source!` and
//! shipped in the crate) is started by a single `docker exec` as root, whose stdin and stdout
//! are hijacked onto one connection (see [`Client::exec_attach`]). Over it go the
//! length-prefixed frames of [`protocol`](super::protocol); its stderr carries the agent's
//! diagnostics. Per block the agent forks a subreaper shepherd, drops to the block's
//! user, writes the code file *inside* the container, and runs the interpreter with its own
//! pipes (or, for Python, forks its own warm interpreter: the zygote). A cancel freezes and
//! kills the shepherd's whole tree, which nothing in the block can leave.
//!
//! On the host, nothing changes for the worker: each execution gets a [`Source`] fed by a
//! channel and a [`Control`] that sends frames. One reader thread per agent connection routes
//! the agent's frames to those channels; when the connection ends, every execution still
//! routed ends as lost.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::Shutdown;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded, unbounded};
use parking_lot::{Mutex, RwLock};
use serde::Deserialize;
use serde_json::{Value, json};

use super::protocol::{self, Decoder, ErrorCode, Frame, Kind};
use super::{Control, Launch, Reaped, Runner, Running, Source};
use crate::docker::api::Client;
use crate::docker::frames::Demuxer;
use crate::docker::transport::Duplex;
use crate::error::{Error, Result};
use crate::output::{MimeData, ResultKind, RichResult, Stream};
use crate::workspace::{WORKSPACE, Workspace};

/// Joins the agent's files (`src/runner/agent/*.py`, one per concept) into [`AGENT_SOURCE`], in
/// the order given, and keeps each file's name and text for the unit tests that check that order
/// against `agent/order.txt` (which the Python harness reads to join them the same way).
macro_rules! agent_source {
    ($($file:literal),+ $(,)?) => {
        /// The agent's source: one script, its files joined in order. It travels on the exec's
        /// stdin (see [`agent_preamble`]), never in argv: Linux refuses one argument of 128 KiB
        /// or more, and the agent grows.
        pub(crate) const AGENT_SOURCE: &str = concat!($(include_str!(concat!("agent/", $file))),+);

        /// `(file name, text)` of each part of [`AGENT_SOURCE`], in order.
        #[cfg(test)]
        const AGENT_PARTS: &[(&str, &str)] =
            &[$(($file, include_str!(concat!("agent/", $file)))),+];
    };
}

// Module-level names are defined before use: prelude (imports), protocol, users, shepherd,
// zygote, sessions, rich results, then the loop and the top level. Keep `agent/order.txt` the same list.
agent_source!(
    "prelude.py",
    "protocol.py",
    "users.py",
    "shepherd.py",
    "zygote.py",
    "sessions.py",
    "rich.py",
    "main.py",
);

/// What starts the agent's stdin, before the source's length and the source (`agent_boot.py`'s
/// `_MAGIC`).
const AGENT_MAGIC: &[u8; 8] = b"DXAGENT1";

/// How long the agent may take to start and say READY, and a block to say STARTED.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one write to the agent: it reads its stdin all the time, so only a hung agent or
/// daemon makes a write wait, and then `stop()` must not wait with it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the agent may take to answer RESET: its own bound on the kills (5 s,
/// `RESET_KILL_WAIT` in `agent/shepherd.py`) and some.
const RESET_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of the agent's stderr is kept, to explain a connection that ends.
const DIAG_KEEP: usize = 4096;

/// The bootstrap that checks the image, reads the agent from its stdin and execs it (see
/// `agent_boot.py`), run as `python3 -I -S -c BOOT_SOURCE NAME`.
pub(crate) const BOOT_SOURCE: &str = include_str!("agent_boot.py");

/// Starts a POSIX `sh` (as `/bin/sh`, never through the container's `PATH`, which a user may
/// point at the workspace) that execs the bootstrap with an interpreter found only in root-owned
/// fixed dirs, isolated and from `/`, or says plainly that the image has no Python there. The
/// bootstrap prints the `starting` line once its checks pass, which tells the host that Python
/// is there, long before the agent is ready; a refusal ends the exec before it.
const BOOT_SCRIPT: &str = r#"for p in python3 python; do
  for d in /usr/local/bin /usr/bin /bin; do
    if [ -f "$d/$p" ] && [ -x "$d/$p" ]; then
      cd / || exit 127
      exec "$d/$p" -I -S -c "$1" "$p"
    fi
  done
done
echo "dockexec-agent: the image has neither python3 nor python in /usr/local/bin, /usr/bin or /bin" >&2
exit 127"#;

/// Kills every process in the container but PID 1 and the keeper (the keeper's `kill N`,
/// see [`crate::lifetime::KEEPER_SCRIPT`]), and waits until it is done; bounded in time.
pub(crate) trait KillAll: fmt::Debug + Send + Sync {
    /// # Errors
    /// When the keeper cannot be asked or does not answer in time.
    fn kill_all(&self) -> Result<()>;
}

/// What the agent told us about itself.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Ready {
    /// What the agent cannot guarantee in this image (no `ctypes`, so no subreaper, …).
    #[serde(default)]
    pub(crate) warnings: Vec<String>,
}

/// How a block ended, as the agent reports it.
#[derive(Debug, Clone, Default, Deserialize)]
struct ExitInfo {
    code: Option<i32>,
    signal: Option<i32>,
    #[serde(default)]
    oom: bool,
    /// The block's session process ended during the block (killed by the agent, or not).
    #[serde(default)]
    session_lost: bool,
    /// With `session_lost`: why, in words.
    #[serde(default)]
    cause: Option<String>,
}

/// An ERROR's payload, field by field (a field of a type this crate does not expect, from a
/// newer agent, spoils no other): `message`, for people; `code`, an [`ErrorCode`]'s name (one
/// this crate does not know comes from a newer agent); `cause`, with
/// [`ErrorCode::SessionLost`], why the session is lost.
struct ErrorFrame {
    message: Option<String>,
    code: Option<ErrorCode>,
    cause: Option<String>,
}

impl ErrorFrame {
    fn parse(payload: &[u8]) -> ErrorFrame {
        let v = serde_json::from_slice::<Value>(payload).unwrap_or(Value::Null);
        let text = |key: &str| v[key].as_str().map(str::to_string);
        ErrorFrame {
            message: text("message"),
            code: v["code"].as_str().and_then(ErrorCode::parse),
            cause: text("cause"),
        }
    }
}

/// What the host makes of an ERROR for a block or session. It branches on the frame's code,
/// never on its message, which is for people.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    /// [`ErrorCode::SessionLost`]: the block's session is lost, and why.
    SessionLost(String),
    /// Any other code, one this crate does not know (a newer agent's), or none: the agent's
    /// message, which the user sees in an [`Error::Agent`].
    Other(String),
}

impl Refusal {
    /// An ERROR's payload, whatever it holds: a bad one is a refusal without a message.
    fn parse(payload: &[u8]) -> Refusal {
        let r = ErrorFrame::parse(payload);
        match r.code {
            Some(ErrorCode::SessionLost) => {
                Refusal::SessionLost(r.cause.unwrap_or_else(|| "no cause given".into()))
            }
            Some(_) | None => Refusal::Other(r.message.unwrap_or_else(|| "no message".into())),
        }
    }
}

/// What an ERROR with id 0 (about the agent itself, which then exits) ends the connection
/// with.
fn agent_error(payload: &[u8]) -> String {
    let r = ErrorFrame::parse(payload);
    let msg = r.message.unwrap_or_else(|| "no message".into());
    match r.code {
        Some(ErrorCode::Internal) => format!("the agent failed: {msg}"),
        _ => format!("the agent reported a protocol error: {msg}"),
    }
}

/// Session ids whose process is gone → why.
type LostSessions = Arc<Mutex<HashMap<u32, String>>>;

/// What the reader hands to one execution's or session's route.
#[derive(Debug)]
enum Event {
    Started,
    Out(Stream, Vec<u8>),
    Exit(ExitInfo),
    /// The agent could not start the block or session.
    Refused(Refusal),
    SessionReady,
    /// A rich result (RESULT; see `agent/rich.py`).
    Result(RichResult),
    /// RESET is done: every process of the blocks' users is gone.
    ResetDone,
    /// The connection to the agent ended.
    Lost(String),
}

/// RESULT's payload: `u32` header length, the JSON header `{"kind", "items": [{"mime",
/// "len", "size", "truncated"}]}`, then each item's `len` bytes (see `agent/rich.py`). Its
/// place among the output is filled in when it is recorded.
fn parse_result(payload: &[u8]) -> std::result::Result<RichResult, String> {
    #[derive(Deserialize)]
    struct Item {
        mime: String,
        len: usize,
        size: u64,
        truncated: bool,
    }
    #[derive(Deserialize)]
    struct Header {
        kind: String,
        items: Vec<Item>,
    }
    let bad = |why: &str| format!("bad RESULT from the agent: {why}");
    let hlen = payload
        .get(..4)
        .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize)
        .ok_or_else(|| bad("no header length"))?;
    let header = payload
        .get(4..4usize.saturating_add(hlen))
        .ok_or_else(|| bad("the header is cut short"))?;
    let header: Header = serde_json::from_slice(header).map_err(|e| bad(&e.to_string()))?;
    let kind = match header.kind.as_str() {
        "display" => ResultKind::Display,
        "figure" => ResultKind::Figure,
        "result" => ResultKind::Value,
        other => return Err(bad(&format!("unknown kind {other:?}"))),
    };
    let mut rest = &payload[4 + hlen..];
    let mut data = Vec::with_capacity(header.items.len());
    for item in header.items {
        if rest.len() < item.len {
            return Err(bad("an item is cut short"));
        }
        let (bytes, tail) = rest.split_at(item.len);
        rest = tail;
        data.push(MimeData {
            mime: item.mime,
            data: bytes.to_vec(),
            size: item.size,
            truncated: item.truncated,
        });
    }
    if !rest.is_empty() {
        return Err(bad("bytes after the last item"));
    }
    Ok(RichResult {
        kind,
        data,
        stdout_at: 0,
        stderr_at: 0,
    })
}

/// Options every block of this runner shares.
#[derive(Debug, Clone)]
pub(crate) struct AgentConfig {
    pub(crate) user: Option<String>,
    pub(crate) zygote: bool,
    pub(crate) delete_code_files: bool,
    /// How long a session block has to stop after `KeyboardInterrupt` before its session is
    /// killed.
    pub(crate) session_grace: Duration,
}

/// One connection to one agent process.
struct Conn {
    /// Frames from many threads must not interleave, so every write holds this.
    writer: Mutex<Duplex>,
    /// Execution and session ids → their event channels. Locked briefly by the reader to
    /// route, and by launches to register.
    routes: Mutex<HashMap<u32, Sender<Event>>>,
    /// Why the connection ended, once it has.
    dead: OnceLock<String>,
    reader: Mutex<Option<JoinHandle<()>>>,
    /// Set by the reader when READY arrives.
    ready: OnceLock<Ready>,
    /// Never carries a message: the reader drops its sender once READY is stored or the
    /// connection has ended, which wakes every waiter at once.
    ready_rx: Receiver<()>,
    /// Kills what this agent started once its connection is lost (see [`Conn::sweep`]).
    killer: Arc<dyn KillAll>,
    /// Set before an intended end ([`Conn::shutdown`]): the end is then no loss.
    closing: AtomicBool,
    /// Whether the processes of this agent have been killed since its end (or need not be).
    /// Held across the keeper's kill on purpose: a second caller (the reader, a request
    /// about to start a fresh agent, a restart) waits until the kill is done, so a fresh agent
    /// never starts before the old one's processes are gone, and is never killed by it.
    swept: Mutex<bool>,
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("dead", &self.dead.get())
            .field("ready", &self.ready)
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// Starts the agent in `container` and waits until Python is known to be there; READY
    /// (the interpreter up and the agent's ~100 KB source compiled, some 40 ms more) is awaited
    /// by the first request instead, so `start()` does not pay for it.
    fn start(client: &Client, container: &str, killer: &Arc<dyn KillAll>) -> Result<Arc<Conn>> {
        let exec = client.exec_create(container, &exec_body())?;
        let hijacked = client.exec_attach(&exec, START_TIMEOUT)?;
        let stream = hijacked.stream;
        stream
            .set_write_timeout(Some(WRITE_TIMEOUT))
            .map_err(|e| transport("agent connection", e))?;
        let read_half = stream
            .try_clone()
            .map_err(|e| transport("agent connection", e))?;
        // Capacity 1: the reader says once whether Python is starting.
        let (boot_tx, boot_rx) = bounded::<std::result::Result<(), String>>(1);
        let (ready_tx, ready_rx) = bounded::<()>(0);
        // The reader needs the connection to route into, and the connection holds the
        // reader's handle: the Conn is made first, its reader slot filled after the spawn.
        let conn = Arc::new(Conn {
            writer: Mutex::new(stream),
            routes: Mutex::new(HashMap::new()),
            dead: OnceLock::new(),
            reader: Mutex::new(None),
            ready: OnceLock::new(),
            ready_rx,
            killer: Arc::clone(killer),
            closing: AtomicBool::new(false),
            swept: Mutex::new(false),
        });
        let reader_conn = Arc::clone(&conn);
        let leftover = hijacked.leftover;
        let handle = thread::Builder::new()
            .name("dockexec-agent".into())
            .spawn(move || read_loop(&reader_conn, read_half, leftover, boot_tx, ready_tx))
            .map_err(Error::Thread)?;
        *conn.reader.lock() = Some(handle);
        // The source goes first, before any frame. Written once the reader runs: an image
        // without Python reads none of it, and its reason still arrives on stderr.
        let wrote = conn.writer.lock().write_all(&agent_preamble());
        match boot_rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(())) => match wrote {
                Ok(()) => Ok(conn),
                Err(e) => {
                    conn.shutdown();
                    Err(transport("sending the agent's source", e))
                }
            },
            Ok(Err(why)) => {
                conn.shutdown();
                let why = explain_boot_failure(client, &exec, why);
                Err(Error::Agent(format!("the agent did not start: {why}")))
            }
            Err(_) => {
                conn.shutdown();
                Err(Error::Agent(format!(
                    "the agent did not start within {} s",
                    START_TIMEOUT.as_secs()
                )))
            }
        }
    }

    /// Waits (at most `timeout`) for the agent's READY.
    fn wait_ready(&self, timeout: Duration) -> Result<&Ready> {
        if let Some(r) = self.ready.get() {
            return Ok(r);
        }
        // Disconnected once READY is stored or the connection ended; a timeout otherwise.
        let _ = self.ready_rx.recv_timeout(timeout);
        if let Some(r) = self.ready.get() {
            return Ok(r);
        }
        Err(match self.dead.get() {
            Some(why) => Error::Agent(format!("the agent did not start: {why}")),
            None => Error::Agent(format!(
                "the agent did not start within {} s",
                timeout.as_secs()
            )),
        })
    }

    fn is_dead(&self) -> bool {
        self.dead.get().is_some()
    }

    /// Writes one frame.
    fn send(&self, kind: Kind, id: u32, payload: &[u8]) -> Result<()> {
        if let Some(why) = self.dead.get() {
            return Err(Error::Agent(format!(
                "the agent connection is closed: {why}"
            )));
        }
        let frame = protocol::encode(kind, id, payload);
        self.writer
            .lock()
            .write_all(&frame)
            .map_err(|e| transport("writing to the agent", e))
    }

    /// Registers a route; the agent's frames for `id` go to the returned receiver.
    fn route(&self, id: u32) -> Result<Receiver<Event>> {
        let (tx, rx) = unbounded();
        let mut routes = self.routes.lock();
        // Checked under the routes lock: the reader marks the connection dead before it
        // drains the routes under this same lock, so no route is added after the drain.
        if let Some(why) = self.dead.get() {
            return Err(Error::Agent(format!(
                "the agent connection is closed: {why}"
            )));
        }
        routes.insert(id, tx);
        Ok(rx)
    }

    fn unroute(&self, id: u32) {
        self.routes.lock().remove(&id);
    }

    /// After the connection was lost: kills every process in the container but PID 1 and the
    /// keeper (the agent, if still alive, its shepherds and every block and session they
    /// started, which would otherwise live on, reparented, with nothing left to time them out
    /// or cancel them), once; a later call waits for the first to finish. `/tmp` stays: this
    /// is no user's restart.
    fn sweep(&self) {
        // Held across the keeper call: see `swept`. The conn RwLock of the runner is never
        // held here, so requests that find a live connection are never held up by it.
        let mut swept = self.swept.lock();
        if !*swept {
            *swept = true;
            let _ = self.killer.kill_all();
        }
    }

    /// Ends a connection whose container ended under it (the container watch): nothing is left
    /// to kill, and the reader, blocked on a stream the runtime keeps open, must see its end,
    /// so that its blocks end lost and the next request finds the container gone.
    fn container_ended(&self) {
        self.swept_elsewhere();
        // Shut, not closed: the reader still owns its clone, and reads the end.
        let _ = self.writer.lock().shutdown(Shutdown::Both);
    }

    /// Marks this (lost) connection's processes as killed by someone else (a restart).
    /// Waits for a sweep already under way: it must not kill the agent started next.
    fn swept_elsewhere(&self) {
        *self.swept.lock() = true;
    }

    /// Asks the agent to exit, closes the connection, and joins the reader.
    fn shutdown(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let _ = self.send(Kind::Shutdown, 0, b"");
        let _ = self.writer.lock().shutdown(Shutdown::Both);
        // Taken out first: never hold a lock across a join.
        let reader = self.reader.lock().take();
        if let Some(r) = reader {
            if r.thread().id() != thread::current().id() {
                let _ = r.join();
            }
        }
        // Then what carries the connection (a TLS pump, an ssh process) ends too, now: the
        // agent reads the end of its stdin either way.
        self.writer.lock().close();
    }
}

/// The agent's exec: a small argv (the bootstrap), the agent itself on stdin.
fn exec_body() -> Value {
    json!({
        "Cmd": ["/bin/sh", "-c", BOOT_SCRIPT, "dockexec-agent", BOOT_SOURCE],
        // The loader's variables set to "", so that the root `sh` and `python3` load nothing a
        // block planted; not `PATH` (the first entry), which the blocks get back from the
        // bootstrap with the rest of the container's environment.
        "Env": &super::ROOT_EXEC_ENV[1..],
        "AttachStdin": true,
        "AttachStdout": true,
        "AttachStderr": true,
        // Root in the container: it must drop to each block's user and kill their trees.
        "User": "0",
        // No block can write `/`; the bootstrap goes there anyway.
        "WorkingDir": "/",
    })
}

/// `why` the agent did not start, with the launcher's reason when the engine lost it: Podman
/// can drop a short-lived exec's output, its attach saying only `read unixpacket …:
/// connection reset by peer` (issue 17), so the launcher's exit code 127 (no Python) is read
/// from the exec instead. Bounded: ten looks, 50 ms apart.
fn explain_boot_failure(client: &Client, exec: &str, why: String) -> String {
    if why.contains("neither python3 nor python") {
        return why;
    }
    for _ in 0..10 {
        match client.exec_inspect(exec) {
            Ok(i) if !i.running => {
                return match i.exit_code {
                    Some(127) => format!(
                        "{why} (exit code 127: the image has neither python3 nor python in \
                         /usr/local/bin, /usr/bin or /bin)"
                    ),
                    _ => why,
                };
            }
            Ok(_) => thread::sleep(Duration::from_millis(50)),
            Err(_) => return why,
        }
    }
    why
}

/// What the host writes on the agent's stdin first: the magic, the source's length (4 bytes,
/// big-endian) and the source, which the bootstrap reads exactly.
fn agent_preamble() -> Vec<u8> {
    let len = u32::try_from(AGENT_SOURCE.len()).expect("the agent's source is under 4 GiB");
    let mut out = Vec::with_capacity(AGENT_MAGIC.len() + 4 + AGENT_SOURCE.len());
    out.extend_from_slice(AGENT_MAGIC);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(AGENT_SOURCE.as_bytes());
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn transport(what: &str, source: io::Error) -> Error {
    Error::Transport {
        what: what.to_string(),
        source,
    }
}

/// The connection's reader: demultiplexes Docker's frames, decodes the agent's, and routes
/// them. Ends at EOF or on the first malformed frame; then every route learns the end.
fn read_loop(
    conn: &Conn,
    mut stream: Duplex,
    leftover: Vec<u8>,
    boot_tx: Sender<std::result::Result<(), String>>,
    ready_tx: Sender<()>,
) {
    let mut demux = Demuxer::new(false);
    let mut decoder = Decoder::new();
    let mut diag: Vec<u8> = Vec::new();
    let mut ready_tx = Some(ready_tx);
    let mut boot_tx = Some(boot_tx);
    let mut buf = vec![0u8; 128 * 1024];
    let mut pending = leftover;
    let why: String = loop {
        let mut broken: Option<String> = None;
        let fed = demux.feed(&pending, |s, b| match s {
            Stream::Stdout => {
                if broken.is_some() {
                    return;
                }
                if let Err(e) = decoder.feed(b, |f| {
                    if let Err(e) = route(conn, f, &mut ready_tx, &mut boot_tx) {
                        broken.get_or_insert(e);
                    }
                }) {
                    broken = Some(format!("malformed frame from the agent: {e}"));
                }
            }
            Stream::Stderr => {
                diag.extend_from_slice(b);
                if boot_tx.is_some() && contains(&diag, b"dockexec-agent: starting ") {
                    let _ = boot_tx.take().map(|tx| tx.send(Ok(())));
                }
                if diag.len() > 2 * DIAG_KEEP {
                    diag.drain(..diag.len() - DIAG_KEEP);
                }
            }
        });
        if let Err(e) = fed {
            break format!("malformed stream from the daemon: {}", e.0);
        }
        if let Some(b) = broken {
            break b;
        }
        match stream.read(&mut buf) {
            Ok(0) => {
                break match decoder.finish() {
                    Ok(()) => "the agent exited".to_string(),
                    Err(e) => format!("the agent exited mid-frame: {e}"),
                };
            }
            Ok(n) => pending = buf[..n].to_vec(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => pending.clear(),
            Err(e) => break format!("reading from the agent failed: {e}"),
        }
    };
    let diag = String::from_utf8_lossy(&diag);
    let diag = diag.trim();
    let why = if diag.is_empty() {
        why
    } else {
        let tail: String = diag
            .chars()
            .rev()
            .take(DIAG_KEEP)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("{why}; it said: {tail}")
    };
    // Marked dead before the routes are drained, under the routes lock: see `Conn::route`.
    let mut routes = conn.routes.lock();
    let _ = conn.dead.set(why.clone());
    for (_, tx) in routes.drain() {
        let _ = tx.send(Event::Lost(why.clone()));
    }
    drop(routes);
    // Dropped only now, with `dead` set: a woken waiter finds why.
    drop(ready_tx);
    if let Some(tx) = boot_tx {
        let _ = tx.send(Err(why));
    }
    let _ = stream.shutdown(Shutdown::Both);
    // Lost, not closed on purpose: kill what the agent started at once, not only when the
    // next request starts a fresh agent. (Its executions have already been told they are
    // lost, above, so their workers' cancels and timeouts no longer matter.)
    if !conn.closing.load(Ordering::SeqCst) {
        conn.sweep();
    }
}

/// Hands one frame to its route. `Err` for a frame that breaks the protocol.
fn route(
    conn: &Conn,
    f: Frame,
    ready_tx: &mut Option<Sender<()>>,
    boot_tx: &mut Option<Sender<std::result::Result<(), String>>>,
) -> std::result::Result<(), String> {
    let event = match Kind::from_u8(f.kind) {
        Some(Kind::Ready) => {
            let ready = serde_json::from_slice::<Ready>(&f.payload)
                .map_err(|e| format!("bad READY from the agent: {e}"))?;
            let _ = conn.ready.set(ready);
            // Stored first, then every waiter woken by the disconnection.
            drop(ready_tx.take());
            let _ = boot_tx.take().map(|tx| tx.send(Ok(())));
            return Ok(());
        }
        Some(Kind::Error) if f.id == 0 => return Err(agent_error(&f.payload)),
        Some(Kind::Pong) => return Ok(()),
        Some(Kind::Started) => Event::Started,
        Some(Kind::Stdout) => Event::Out(Stream::Stdout, f.payload),
        Some(Kind::Stderr) => Event::Out(Stream::Stderr, f.payload),
        Some(Kind::Exit) => Event::Exit(
            serde_json::from_slice(&f.payload)
                .map_err(|e| format!("bad EXIT from the agent: {e}"))?,
        ),
        Some(Kind::Error) => Event::Refused(Refusal::parse(&f.payload)),
        Some(Kind::SessionReady) => Event::SessionReady,
        Some(Kind::Result) => Event::Result(parse_result(&f.payload)?),
        Some(Kind::ResetDone) => Event::ResetDone,
        _ => {
            return Err(format!("unknown frame kind {:#04x} from the agent", f.kind));
        }
    };
    let last = matches!(
        event,
        Event::Exit(_) | Event::Refused(..) | Event::ResetDone
    );
    let mut routes = conn.routes.lock();
    if let Some(tx) = routes.get(&f.id) {
        // A receiver that is gone (the worker cut its stream) just drops the frame.
        let _ = tx.send(event);
    }
    if last {
        routes.remove(&f.id);
    }
    Ok(())
}

/// Runs blocks through the warm agent.
pub(crate) struct AgentRunner {
    client: Client,
    container: String,
    workspace: Arc<Workspace>,
    config: AgentConfig,
    /// The live connection; replaced when the agent is restarted (after a container restart,
    /// or when it died). Read-locked only to clone the `Arc`.
    conn: RwLock<Arc<Conn>>,
    /// Sessions whose process is gone, and why: their later blocks are refused on the host.
    /// Locked briefly, by launches and by the sources that learn of a loss.
    lost_sessions: LostSessions,
    /// The keeper, to kill everything a lost agent started.
    killer: Arc<dyn KillAll>,
}

impl fmt::Debug for AgentRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentRunner")
            .field("container", &self.container)
            .field("conn", &*self.conn.read())
            .finish_non_exhaustive()
    }
}

impl AgentRunner {
    /// Starts the agent in `container`.
    ///
    /// # Errors
    /// [`Error::Agent`] when the image cannot host it (no Python) or it does not come up;
    /// the daemon's errors otherwise.
    pub(crate) fn start(
        client: &Client,
        container: &str,
        workspace: Arc<Workspace>,
        config: AgentConfig,
        killer: Arc<dyn KillAll>,
    ) -> Result<AgentRunner> {
        let conn = Conn::start(client, container, &killer)?;
        Ok(AgentRunner {
            client: client.clone(),
            container: container.to_string(),
            workspace,
            config,
            conn: RwLock::new(conn),
            lost_sessions: Arc::default(),
            killer,
        })
    }

    /// What the running agent said of itself, waiting (at most [`START_TIMEOUT`]) for it to
    /// be ready, and starting a fresh one if it died.
    ///
    /// # Errors
    /// [`Error::Agent`] with the reason the agent did not come up.
    pub(crate) fn ready(&self) -> Result<Ready> {
        let conn = self.conn()?;
        conn.wait_ready(START_TIMEOUT).cloned()
    }

    /// The live connection, restarting the agent first if it died.
    fn conn(&self) -> Result<Arc<Conn>> {
        let current = Arc::clone(&self.conn.read());
        if !current.is_dead() {
            return Ok(current);
        }
        // Nothing new starts before the lost agent's processes are gone (usually the reader
        // has done it already). Outside the conn lock: it may take the keeper's time.
        current.sweep();
        let mut slot = self.conn.write();
        // Another thread may have restarted it while we waited for the write lock.
        if !slot.is_dead() {
            return Ok(Arc::clone(&slot));
        }
        // The slot may hold a connection other than `current` (lost in turn): swept as well.
        // Held under the write lock only when it is not `current`, a rare double loss.
        if !Arc::ptr_eq(&slot, &current) {
            slot.sweep();
        }
        let fresh = Conn::start(&self.client, &self.container, &self.killer)?;
        let old = std::mem::replace(&mut *slot, Arc::clone(&fresh));
        drop(slot);
        old.shutdown();
        Ok(fresh)
    }

    fn user(&self) -> Value {
        self.config
            .user
            .as_deref()
            .map_or(Value::Null, |u| json!(u))
    }

    /// Sends a request for `id` and waits for its first answer.
    fn request(
        &self,
        kind: Kind,
        id: u32,
        payload: &Value,
    ) -> Result<(Arc<Conn>, Receiver<Event>)> {
        let conn = self.conn()?;
        conn.wait_ready(START_TIMEOUT)?;
        let rx = conn.route(id)?;
        let bytes = serde_json::to_vec(payload).expect("a Value always serializes");
        if bytes.len() + 5 > protocol::MAX_FRAME as usize {
            conn.unroute(id);
            return Err(Error::invalid(format!(
                "the block is too large for the agent: {} bytes (at most {} MiB)",
                bytes.len(),
                (protocol::MAX_FRAME - 5) >> 20
            )));
        }
        if let Err(e) = conn.send(kind, id, &bytes) {
            conn.unroute(id);
            return Err(e);
        }
        Ok((conn, rx))
    }

    /// Opens a session `id` whose Python blocks share one namespace.
    pub(crate) fn open_session(&self, id: u32) -> Result<()> {
        let payload = json!({ "user": self.user(), "cwd": WORKSPACE, "env": {} });
        let (conn, rx) = self.request(Kind::SessionOpen, id, &payload)?;
        await_session(&conn, id, &rx)
    }

    /// Replaces session `id`'s process with a fresh one: a clean namespace.
    pub(crate) fn reset_session(&self, id: u32) -> Result<()> {
        let (conn, rx) = self.request(Kind::SessionReset, id, &json!({}))?;
        let r = await_session(&conn, id, &rx);
        if r.is_ok() {
            self.lost_sessions.lock().remove(&id);
        }
        r
    }

    /// The pool's fast reset (RESET, request id `id`): the agent ends every block and session
    /// it has and kills every process in the container whose uid is not root's; it stays, and
    /// so does its connection. Only the current agent: one that
    /// died is not started again here (the caller falls back on the full restart).
    ///
    /// # Errors
    /// [`Error::Agent`] when the agent refuses (the blocks' user is root) or could not kill
    /// every process in time, or is gone; [`Error::Timeout`] when it does not answer.
    pub(crate) fn reset(&self, id: u32) -> Result<()> {
        // Cloned out of the lock: the wait below must not hold the slot.
        let conn = Arc::clone(&self.conn.read());
        if let Some(why) = conn.dead.get() {
            return Err(Error::Agent(format!("the agent is gone: {why}")));
        }
        conn.wait_ready(START_TIMEOUT)?;
        let rx = conn.route(id)?;
        let payload =
            serde_json::to_vec(&json!({ "user": self.user() })).expect("a Value always serializes");
        if let Err(e) = conn.send(Kind::Reset, id, &payload) {
            conn.unroute(id);
            return Err(e);
        }
        let r = match rx.recv_timeout(RESET_TIMEOUT) {
            Ok(Event::ResetDone) => Ok(()),
            Ok(Event::Refused(Refusal::Other(msg) | Refusal::SessionLost(msg))) => Err(
                Error::Agent(format!("the agent could not reset the container: {msg}")),
            ),
            Ok(Event::Lost(why)) => Err(Error::Agent(format!("the agent is gone: {why}"))),
            Ok(other) => Err(Error::Agent(format!(
                "the agent answered a reset with {other:?}"
            ))),
            Err(_) => Err(Error::Timeout {
                what: "the agent's reset".into(),
            }),
        };
        conn.unroute(id);
        if r.is_ok() {
            // Every session went with its process; the host forgets their losses as a
            // restart does.
            self.lost_sessions.lock().clear();
        }
        r
    }

    /// Kills session `id`'s process; best effort, and never slow: it runs from `Session`'s
    /// drop. Only the current connection is told: a dead agent took the session with it, and
    /// starting a fresh one here (up to [`START_TIMEOUT`]) would close nothing.
    pub(crate) fn close_session(&self, id: u32) {
        let conn = Arc::clone(&self.conn.read());
        if !conn.is_dead() {
            // The write is bounded by WRITE_TIMEOUT; the agent reads its stdin all the time.
            let _ = conn.send(Kind::SessionClose, id, b"");
        }
        self.lost_sessions.lock().remove(&id);
    }

    /// Why session `id`'s process is gone, when it is.
    pub(crate) fn session_lost(&self, id: u32) -> Option<String> {
        self.lost_sessions.lock().get(&id).cloned()
    }

    /// Why the agent's channel broke: the daemon's own error when the daemon is no longer
    /// there (its death ends every hijacked stream), so the user is told to check the daemon,
    /// not the agent; else [`Error::Agent`] with what the agent left.
    fn gone(&self, why: String) -> Error {
        match self.client.ping() {
            Err(daemon) => daemon,
            Ok(()) => Error::Agent(format!("the agent is gone: {why}")),
        }
    }

    /// Starts a block, in session `session` if given.
    pub(crate) fn launch_in(&self, l: &Launch<'_>, session: Option<u32>) -> Result<Running> {
        if let Some(s) = session {
            if let Some(cause) = self.session_lost(s) {
                return Err(Error::SessionLost(cause));
            }
        }
        let id = execution_id(l.n);
        let payload = json!({
            "lang": l.language.name(),
            "file": Workspace::container_path(l.file),
            "code": l.code,
            "user": self.user(),
            "cwd": WORKSPACE,
            "env": {},
            "zygote": self.config.zygote,
            "session": session,
            "delete": self.config.delete_code_files,
            "grace_ms": u64::try_from(self.config.session_grace.as_millis()).unwrap_or(u64::MAX),
        });
        let (conn, rx) = self.request(Kind::Run, id, &payload)?;
        // STARTED comes first; should output or the end ever overtake it, the block has
        // started all the same, and that event is kept for the source.
        let mut first = None;
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(Event::Started) => {}
            Ok(e @ (Event::Out(..) | Event::Exit(_) | Event::Result(_))) => first = Some(e),
            Ok(Event::Refused(Refusal::SessionLost(cause))) => {
                if let Some(s) = session {
                    self.lost_sessions.lock().insert(s, cause.clone());
                }
                return Err(Error::SessionLost(cause));
            }
            Ok(Event::Refused(Refusal::Other(msg))) => {
                return Err(Error::Agent(format!(
                    "the agent could not start the block: {msg}"
                )));
            }
            Ok(Event::Lost(why)) => return Err(self.gone(why)),
            Ok(e @ (Event::SessionReady | Event::ResetDone)) => {
                conn.unroute(id);
                let _ = conn.send(Kind::Cancel, id, b"");
                return Err(Error::Agent(format!(
                    "the agent answered a new block with {e:?}"
                )));
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                conn.unroute(id);
                let _ = conn.send(Kind::Cancel, id, b"");
                return Err(Error::Timeout {
                    what: "starting a block in the agent".into(),
                });
            }
        }
        let exit = Arc::new(OnceLock::new());
        Ok(Running {
            output: Box::new(AgentSource {
                first,
                rx,
                exit: Arc::clone(&exit),
                session: session.map(|s| (s, Arc::clone(&self.lost_sessions))),
                result: None,
            }),
            control: Box::new(AgentControl {
                conn,
                id,
                exit,
                client: self.client.clone(),
                container: self.container.clone(),
            }),
            code_file: self.workspace.shown_path(l.file),
        })
    }
}

/// Waits for a session's SESSION_READY.
fn await_session(conn: &Conn, id: u32, rx: &Receiver<Event>) -> Result<()> {
    let r = match rx.recv_timeout(START_TIMEOUT) {
        Ok(Event::SessionReady) => Ok(()),
        Ok(Event::Refused(Refusal::Other(msg))) => Err(Error::Agent(format!(
            "the agent could not start the session: {msg}"
        ))),
        // Not sent for a session (only for its blocks); a newer agent's would still be an error.
        Ok(Event::Refused(Refusal::SessionLost(cause))) => Err(Error::Agent(format!(
            "the agent could not start the session: session lost: {cause}"
        ))),
        Ok(Event::Lost(why)) => Err(Error::Agent(format!("the agent is gone: {why}"))),
        Ok(other) => Err(Error::Agent(format!(
            "the agent answered a session request with {other:?}"
        ))),
        Err(_) => Err(Error::Timeout {
            what: "starting a session in the agent".into(),
        }),
    };
    conn.unroute(id);
    r
}

/// The protocol's ids are 32 bits; execution numbers wrap there, far beyond any live set.
pub(crate) fn execution_id(n: u64) -> u32 {
    (n % u64::from(u32::MAX)) as u32 + 1
}

impl Runner for AgentRunner {
    fn launch(&self, launch: &Launch<'_>) -> Result<Running> {
        self.launch_in(launch, None)
    }

    fn container_ended(&self) {
        // Read-locked only to clone the Arc: the shutdown below must not hold the slot.
        let conn = Arc::clone(&self.conn.read());
        conn.container_ended();
    }

    fn as_agent(&self) -> Option<&AgentRunner> {
        Some(self)
    }

    fn restarting(&self) {
        // The restart kills everything: the reader, seeing its agent die, need not ask the
        // keeper to do it again (a round trip that `restarted` would wait for). Should the
        // restart fail with the agent alive, a later loss of it goes unswept: the restart's
        // error says the keeper did not answer, which is worse.
        // Cloned first: the call may wait for a sweep under way, never under the conn lock.
        let current = Arc::clone(&self.conn.read());
        current.swept_elsewhere();
    }

    fn restarted(&self) -> Result<()> {
        // The restart killed the agent; its reader has seen the end (or soon will). Start a
        // new one now, so the first block after the restart does not pay for it.
        // The restart killed everything: the old reader must not kill again once the fresh
        // agent is up. This waits for a sweep it already began: outside the conn lock, which
        // requests need meanwhile.
        let current = Arc::clone(&self.conn.read());
        current.swept_elsewhere();
        let mut slot = self.conn.write();
        // Replaced meanwhile (a request restarted a lost agent): that one too.
        if !Arc::ptr_eq(&slot, &current) {
            slot.swept_elsewhere();
        }
        let fresh = Conn::start(&self.client, &self.container, &self.killer)?;
        let old = std::mem::replace(&mut *slot, fresh);
        drop(slot);
        old.shutdown();
        self.lost_sessions.lock().clear();
        Ok(())
    }

    fn teardown(&self) {
        self.conn.read().shutdown();
    }
}

/// A block's output, fed by the connection's reader.
struct AgentSource {
    /// An event that arrived before STARTED, handed out first.
    first: Option<Event>,
    rx: Receiver<Event>,
    exit: Arc<OnceLock<ExitInfo>>,
    /// For a session block: its session, and where to mark the session lost.
    session: Option<(u32, LostSessions)>,
    /// A rich result `next` received, until the reader takes it.
    result: Option<RichResult>,
}

impl Source for AgentSource {
    fn take_result(&mut self) -> Option<RichResult> {
        self.result.take()
    }

    fn next(&mut self, sink: &mut dyn FnMut(Stream, &[u8])) -> std::result::Result<bool, String> {
        loop {
            let event = match self.first.take() {
                Some(e) => Ok(e),
                None => self.rx.recv(),
            };
            match event {
                Ok(Event::Out(s, bytes)) => {
                    sink(s, &bytes);
                    return Ok(true);
                }
                Ok(Event::Result(r)) => {
                    self.result = Some(r);
                    return Ok(true);
                }
                Ok(Event::Exit(info)) => {
                    if info.session_lost {
                        if let Some((id, lost)) = &self.session {
                            let cause = info
                                .cause
                                .clone()
                                .unwrap_or_else(|| "no cause given".into());
                            lost.lock().insert(*id, cause);
                        }
                    }
                    let _ = self.exit.set(info);
                    return Ok(false);
                }
                Ok(Event::Lost(why)) => return Err(why),
                Ok(_) => {}
                // The route was removed: the worker cut the stream.
                Err(_) => return Err("the output was cut".into()),
            }
        }
    }
}

struct AgentControl {
    conn: Arc<Conn>,
    id: u32,
    exit: Arc<OnceLock<ExitInfo>>,
    /// To learn, for a block lost with its agent, whether the container was OOM-killed.
    client: Client,
    container: String,
}

/// How long a block lost with its agent waits to see the container stopped before asking
/// whether it was OOM-killed: a container that lives on (only the agent died) costs this wait
/// once, on that error path only.
const OOM_END_WINDOW: Duration = Duration::from_millis(500);

impl AgentControl {
    /// True when the container ended by the OOM killer. Under gVisor the host's OOM killer
    /// sees one sandbox, not the block's processes: memory a block makes gVisor's kernel spend
    /// (socket buffers) ends the whole container when it meets the limit, and Docker records
    /// that as the container's `OOMKilled` (issue 22). Best effort: the container's AutoRemove
    /// may take the record first, and then this says false.
    fn container_oom_killed(&self) -> bool {
        let client = self.client.with_timeout(OOM_END_WINDOW * 4);
        matches!(
            client.container_stopped_within(&self.container, OOM_END_WINDOW),
            Ok(true)
        ) && client
            .container_inspect(&self.container)
            .is_ok_and(|i| i.state.oom_killed)
    }
}

impl Control for AgentControl {
    fn kill(&self) {
        let _ = self.conn.send(Kind::Cancel, self.id, b"");
    }

    fn cut(&self) {
        self.conn.unroute(self.id);
    }

    fn reap(&self, _killed: bool) -> Reaped {
        match self.exit.get() {
            Some(e) => Reaped {
                code: e.code.or(e.signal.map(|s| 128 + s)),
                // From the agent's `waitpid`: an `exit 137` is no signal.
                signal: e.signal,
                lost: false,
                // Whatever its code: the session's process ended under the block, so the block
                // never finished (a fork of it may even run on until the agent kills it).
                session_lost: e.session_lost,
                oom_killed: e.oom,
                kill_unexplained: false,
            },
            None => Reaped {
                lost: true,
                oom_killed: self.container_oom_killed(),
                ..Reaped::default()
            },
        }
    }

    fn release(&self, _delete_code_file: bool) {
        // The agent deleted the code file itself when asked (RUN's `delete`).
        self.conn.unroute(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 20 §6: the agent's source never travels in argv (Linux refuses one argument of
    /// 128 KiB or more, and the agent grows every round); the exec's whole Cmd stays small.
    #[test]
    fn the_agents_exec_keeps_argv_small_and_sends_the_source_on_stdin() {
        let body = exec_body();
        let cmd = body["Cmd"].as_array().expect("Cmd is an array");
        let total: usize = cmd
            .iter()
            .map(|a| a.as_str().expect("Cmd holds strings").len() + 1)
            .sum();
        assert!(total < 16 * 1024, "the agent's Cmd is {total} bytes");
        assert!(
            !cmd.iter().any(|a| a.as_str() == Some(AGENT_SOURCE)),
            "the agent's source is in argv"
        );
        let pre = agent_preamble();
        assert_eq!(&pre[..8], AGENT_MAGIC);
        assert_eq!(
            u32::from_be_bytes(pre[8..12].try_into().unwrap()) as usize,
            AGENT_SOURCE.len()
        );
        assert_eq!(&pre[12..], AGENT_SOURCE.as_bytes());
        // The bootstrap's side of the contract.
        assert!(BOOT_SOURCE.contains("_MAGIC = b\"DXAGENT1\""));
    }

    fn result_payload(header: &str, body: &[u8]) -> Vec<u8> {
        let mut v = (header.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v.extend_from_slice(body);
        v
    }

    /// Issue 19: RESULT's payload, item by item; a malformed one is a protocol error.
    #[test]
    fn a_result_frame_is_parsed_item_by_item_and_a_malformed_one_refused() {
        let h = r#"{"kind":"figure","items":[{"mime":"image/png","len":3,"size":3,"truncated":false},{"mime":"text/plain","len":2,"size":9,"truncated":true}]}"#;
        let r = parse_result(&result_payload(h, b"PNGhi")).unwrap();
        assert_eq!(r.kind, ResultKind::Figure);
        assert_eq!(r.get("image/png"), Some(&b"PNG"[..]));
        assert_eq!(r.text().as_deref(), Some("hi"));
        assert!(r.truncated() && r.data[1].size == 9);
        for (payload, why) in [
            (result_payload(h, b"PNGh"), "cut short"),
            (result_payload(h, b"PNGhi!"), "bytes after"),
            (
                result_payload(r#"{"kind":"x","items":[]}"#, b""),
                "unknown kind",
            ),
            (result_payload("{", b""), "bad RESULT"),
            (vec![0, 0, 0, 9, b'{'], "header is cut short"),
            (vec![0, 0], "no header length"),
        ] {
            let e = parse_result(&payload).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }

    /// Issue 20 §5: the host branches on an ERROR's code, never on its message. A session
    /// block's refusal is `SessionLost` only by its code (a message that says so is not); any
    /// other code, one from a newer agent, or none, is the agent's message for an
    /// `Error::Agent`.
    #[test]
    fn an_error_frame_is_read_by_its_code() {
        let lost = br#"{"message":"session lost: killed","code":"session_lost","cause":"killed"}"#;
        assert_eq!(Refusal::parse(lost), Refusal::SessionLost("killed".into()));
        assert_eq!(
            Refusal::parse(br#"{"code":"session_lost"}"#),
            Refusal::SessionLost("no cause given".into())
        );
        for payload in [
            &br#"{"message":"session lost: a block said so","code":"spawn_failed"}"#[..],
            br#"{"message":"session lost: a block said so"}"#,
            br#"{"message":"session lost: a block said so","code":"a_code_from_a_newer_agent"}"#,
            br#"{"message":"session lost: a block said so","code":7}"#,
        ] {
            assert_eq!(
                Refusal::parse(payload),
                Refusal::Other("session lost: a block said so".into()),
                "{}",
                payload.escape_ascii()
            );
        }
        for code in ErrorCode::ALL {
            let payload = json!({"message": "m", "code": code.as_str(), "cause": "c"});
            let want = if code == ErrorCode::SessionLost {
                Refusal::SessionLost("c".into())
            } else {
                Refusal::Other("m".into())
            };
            assert_eq!(Refusal::parse(payload.to_string().as_bytes()), want);
        }
        assert_eq!(
            Refusal::parse(b"not json"),
            Refusal::Other("no message".into())
        );
        assert_eq!(
            agent_error(
                br#"{"message":"protocol error: bad frame length 3","code":"protocol_error"}"#
            ),
            "the agent reported a protocol error: protocol error: bad frame length 3"
        );
        assert_eq!(
            agent_error(
                br#"{"message":"internal agent error: KeyError(1)","code":"internal_error"}"#
            ),
            "the agent failed: internal agent error: KeyError(1)"
        );
        assert_eq!(
            agent_error(br#"{"message":"m","code":"a_code_from_a_newer_agent"}"#),
            "the agent reported a protocol error: m"
        );
    }

    /// The agent is authored as several files joined in one order (`agent_source!`); the
    /// harness and the latency script join them by `agent/order.txt`. The two lists must be the
    /// same, every `.py` file there must be in them, and each file must end its last line (else
    /// the join would glue it to the next file's first).
    #[test]
    fn the_agents_files_join_in_order_txts_order() {
        let listed: Vec<&str> = include_str!("agent/order.txt")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let joined: Vec<&str> = AGENT_PARTS.iter().map(|(name, _)| *name).collect();
        assert_eq!(listed, joined, "agent/order.txt and agent_source! disagree");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/runner/agent");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .expect("src/runner/agent")
            .map(|e| {
                e.expect("a dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|n| n.ends_with(".py"))
            .collect();
        on_disk.sort();
        let mut sorted = joined.clone();
        sorted.sort_unstable();
        assert_eq!(
            on_disk, sorted,
            "a .py file under src/runner/agent is not joined"
        );
        for (name, text) in AGENT_PARTS {
            assert!(text.ends_with('\n'), "{name} does not end with a newline");
        }
        assert_eq!(
            AGENT_SOURCE,
            AGENT_PARTS.iter().map(|(_, t)| *t).collect::<String>()
        );
    }
}
