//! [`Execution`]: a handle to one running block, and the worker thread behind it.
//!
//! Each execution has one worker thread. The worker owns the execution's life: it enforces
//! the deadline, carries out cancellation and the output limit, and stores the final
//! [`Output`]. Its scoped reader thread does nothing but blocking reads, demultiplexing
//! straight into the shared output (which forwards live chunks). Handles only *signal* the
//! worker, over a channel, so any thread may cancel, and none ever waits on another's lock for
//! long.
//!
//! "Finished" is signalled by disconnection: the worker stores the [`Output`], then drops the
//! only sender of the `done` channel, which wakes every waiter at once.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, after, bounded, never, select, unbounded};
use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::output::{Chunk, End, ExitStatus, Output, OutputBuf, RichResult, Stream};
use crate::redact::Redactor;
use crate::runner::{Reaped, Running, Source};

/// What happens when a block's output passes `max_output_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OutputLimit {
    /// Keep the block running; discard its further output. The default: the block's work is
    /// not lost because it talks too much.
    #[default]
    Discard,
    /// Kill the block's process tree at once; its status says
    /// [`output_limit_killed`](crate::ExitStatus::output_limit_killed).
    Kill,
}

/// Why the worker kills a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// `Execution::cancel`.
    Cancel,
    /// The executor's per-block timeout.
    Timeout,
    /// `max_output_bytes` with `OutputLimit::Kill`.
    OutputLimit,
    /// `stop()`: the container itself is being removed, so no kill exec is sent.
    Shutdown,
    /// The container ended under a stream its runtime keeps open (the executor's container
    /// watch): nothing is left to kill, the stream is cut at once, and the block ends lost.
    Gone,
}

/// How long the worker waits for the stream to end after killing the process tree, before it
/// shuts the socket down itself (a process that escaped the tree, or a daemon that hangs).
pub(crate) const KILL_GRACE: Duration = Duration::from_millis(1500);
/// Everything a worker needs that is not shared with handles.
#[derive(Debug)]
pub(crate) struct WorkerCtx {
    pub(crate) cap: Option<usize>,
    pub(crate) on_limit: OutputLimit,
    pub(crate) deadline: Option<Instant>,
    pub(crate) delete_code_file: bool,
    pub(crate) started: Instant,
    /// The executor's secret values, redacted from the output before anyone sees it.
    pub(crate) redactor: Arc<Redactor>,
}

/// State shared between an [`Execution`] handle, the executor's registry and the worker.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) id: u64,
    pub(crate) code_file: PathBuf,
    /// The output so far and the live receivers. Held only to append a piece or subscribe, so
    /// a late subscriber's replay and the worker's appends never interleave.
    live: Mutex<Live>,
    /// Set exactly once, by the worker, before it disconnects `done_rx`.
    done: OnceLock<Output>,
    /// Never carries a message: it disconnects when the output is stored.
    done_rx: Receiver<()>,
    /// Capacity 1: one pending kill request is enough, later ones change nothing.
    cancel_tx: Sender<Reason>,
}

#[derive(Debug, Default)]
struct Live {
    buf: OutputBuf,
    subscribers: Vec<Sender<Chunk>>,
    /// The receivers of [`Execution::results`], fed as `subscribers` are.
    result_subscribers: Vec<Sender<RichResult>>,
}

impl Shared {
    /// Builds the shared state; returns it with the worker's ends of the two channels.
    pub(crate) fn new(id: u64, code_file: PathBuf) -> (Arc<Shared>, Sender<()>, Receiver<Reason>) {
        let (done_tx, done_rx) = bounded(0);
        let (cancel_tx, cancel_rx) = bounded(1);
        let shared = Arc::new(Shared {
            id,
            code_file,
            live: Mutex::new(Live::default()),
            done: OnceLock::new(),
            done_rx,
            cancel_tx,
        });
        (shared, done_tx, cancel_rx)
    }

    pub(crate) fn is_done(&self) -> bool {
        self.done.get().is_some()
    }

    /// Asks the worker to kill the block; never blocks.
    pub(crate) fn request(&self, reason: Reason) {
        if !self.is_done() {
            // Full means a request is already pending; disconnected means the worker is gone.
            let _ = self.cancel_tx.try_send(reason);
        }
    }

    /// Appends a piece and forwards the kept bytes to every live receiver; returns true when
    /// this piece crossed the output limit.
    fn record(&self, stream: Stream, bytes: &[u8], cap: Option<usize>) -> bool {
        let mut live = self.live.lock();
        let (kept, crossed) = live.buf.push(stream, bytes, cap);
        if !kept.is_empty() && !live.subscribers.is_empty() {
            // A receiver that was dropped is forgotten; the others never block (unbounded).
            live.subscribers
                .retain(|tx| tx.send(Chunk::new(stream, kept.to_vec())).is_ok());
        }
        crossed
    }

    /// Appends a rich result where it stands among the output so far, and forwards it to
    /// every live results receiver. `held` is the output of each stream (stdout, stderr) that
    /// came before the result but is not recorded yet (the redactor holds back what may start
    /// a secret): the result stands after it, as far as the output limit lets it be recorded.
    fn record_result(&self, mut r: RichResult, held: (usize, usize), cap: Option<usize>) {
        let mut live = self.live.lock();
        let buf = &live.buf;
        let room = if buf.truncated {
            0
        } else {
            cap.map_or(usize::MAX, |c| c.saturating_sub(buf.len()))
        };
        r.stdout_at = buf.stdout.len() + held.0.min(room);
        r.stderr_at = buf.stderr.len() + held.1.min(room - held.0.min(room));
        if !live.result_subscribers.is_empty() {
            // As in `record`: dropped receivers are forgotten, the others never block.
            live.result_subscribers
                .retain(|tx| tx.send(r.clone()).is_ok());
        }
        live.buf.results.push(r);
    }

    fn subscribe_results(&self) -> Receiver<RichResult> {
        let (tx, rx) = unbounded();
        if let Some(out) = self.done.get() {
            for r in &out.results {
                let _ = tx.send(r.clone());
            }
            return rx; // `tx` drops here: the replay ends the stream.
        }
        let mut live = self.live.lock();
        // Re-checked under the lock, as in `subscribe`.
        if let Some(out) = self.done.get() {
            drop(live);
            for r in &out.results {
                let _ = tx.send(r.clone());
            }
            return rx;
        }
        for r in &live.buf.results {
            let _ = tx.send(r.clone());
        }
        live.result_subscribers.push(tx);
        rx
    }

    fn subscribe(&self) -> Receiver<Chunk> {
        let (tx, rx) = unbounded();
        if let Some(out) = self.done.get() {
            for (s, b) in out.pieces() {
                let _ = tx.send(Chunk::new(s, b.to_vec()));
            }
            return rx; // `tx` drops here: the replay ends the stream.
        }
        let mut live = self.live.lock();
        // Re-checked under the lock: `finish` takes the buffer under this same lock, so either
        // we replay from the buffer and register before it, or we see the stored output.
        if let Some(out) = self.done.get() {
            drop(live);
            for (s, b) in out.pieces() {
                let _ = tx.send(Chunk::new(s, b.to_vec()));
            }
            return rx;
        }
        for chunk in live.buf.replay() {
            let _ = tx.send(chunk);
        }
        live.subscribers.push(tx);
        rx
    }

    /// Stores the output and ends every receiver's stream.
    fn finish(&self, make: impl FnOnce(OutputBuf) -> Output) {
        let mut live = self.live.lock();
        let buf = std::mem::take(&mut live.buf);
        let _ = self.done.set(make(buf));
        // Dropping the senders ends every `for chunk in rx` loop.
        live.subscribers.clear();
        live.result_subscribers.clear();
    }
}

/// A running (or finished) block, returned by [`Executor::spawn`](crate::Executor::spawn).
///
/// Every method takes `&self` and the handle is `Send + Sync`: one thread can wait while
/// another cancels, and any number of threads can wait at once, all receiving the same
/// [`Output`].
///
/// ```no_run
/// # fn main() -> dockexec::Result<()> {
/// use std::time::Duration;
/// use dockexec::{CodeBlock, Executor};
///
/// let executor = Executor::builder().start()?;
/// let execution = executor.spawn(&CodeBlock::python("import time\nprint('tick')\ntime.sleep(60)"))?;
/// for chunk in execution.chunks().iter().take(1) {
///     print!("{}", String::from_utf8_lossy(chunk.bytes()));
/// }
/// execution.cancel()?;
/// let output = execution.wait()?;
/// assert!(output.status.cancelled());
/// # Ok(()) }
/// ```
///
/// # Drop
///
/// Dropping the handle (every clone of it) does not stop the block: it runs on to its end or
/// its timeout, the executor still tracks it, and [`Executor::stop`](crate::Executor::stop)
/// cancels it and joins its worker. To end it, call [`cancel`](Execution::cancel) first.
///
/// # Differences from [`std::process::Child`]
///
/// * Every method takes `&self`, so waiting and cancelling happen from different threads
///   without a lock; `Child::wait` and `Child::kill` take `&mut self`.
/// * [`wait`](Execution::wait) returns the whole [`Output`], stdout and stderr included, by
///   reference, to every waiter; the output is collected by a worker thread as it arrives, so
///   the block never stalls on a full pipe and nobody has to read it.
/// * [`cancel`](Execution::cancel) kills the block's whole process tree, not one process, and
///   returns without waiting; the status then says [`cancelled`](crate::ExitStatus::cancelled).
///   (A session block's own process is interrupted instead: see [`cancel`](Execution::cancel).)
/// * Live output is a channel ([`chunks`](Execution::chunks)) that any number of readers may
///   take, each starting from the first byte; there are no pipe handles to take.
/// * There is no stdin: blocks read an empty one.
#[derive(Debug, Clone)]
#[must_use = "a spawned block runs on unobserved; wait for it, watch it, or cancel it"]
pub struct Execution {
    pub(crate) shared: Arc<Shared>,
}

/// The executor's hold on one execution: asks it to stop, and joins its worker.
#[derive(Debug)]
pub(crate) struct Worker {
    /// Weak: the worker and the caller's handles own the state, so that `into_output` can
    /// take the output without a copy once both are done with it.
    shared: Weak<Shared>,
    handle: JoinHandle<()>,
}

impl Worker {
    /// Asks a still-running execution's worker to kill the block; never blocks.
    pub(crate) fn request(&self, reason: Reason) {
        if let Some(shared) = self.shared.upgrade() {
            shared.request(reason);
        }
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Waits for the worker thread to end. Each worker bounds its own life (the timeout, the
    /// kill grace, then the cut), so this cannot hang on a live block forever.
    pub(crate) fn join(self) {
        let _ = self.handle.join();
    }
}

impl Execution {
    /// Starts the worker that follows `running` to its end, and returns the handle with the
    /// executor's hold on the worker.
    ///
    /// # Errors
    /// [`Error::Thread`] when no thread can be had; the block is killed first, so it never runs
    /// on unobserved.
    pub(crate) fn start(n: u64, running: Running, ctx: WorkerCtx) -> Result<(Execution, Worker)> {
        let (shared, done_tx, cancel_rx) = Shared::new(n, running.code_file.clone());
        let worker_shared = Arc::clone(&shared);
        // `running` goes to the thread only once it exists: should no thread be had, it is
        // still here to kill, so the block never runs on unobserved.
        let (hand_tx, hand_rx) = bounded::<Running>(1);
        let handle = thread::Builder::new()
            .name(format!("dockexec-{n}"))
            .spawn(move || {
                // Disconnected without a message only if `start` failed after the spawn,
                // which it cannot: the send below is the next thing it does.
                if let Ok(running) = hand_rx.recv() {
                    work(ctx, worker_shared, running, done_tx, cancel_rx);
                }
            });
        let handle = match handle {
            Ok(h) => h,
            Err(e) => {
                running.control.kill();
                running.control.release(false);
                return Err(Error::Thread(e));
            }
        };
        // Capacity 1 and the receiver alive: this never blocks and never fails.
        let _ = hand_tx.send(running);
        let worker = Worker {
            shared: Arc::downgrade(&shared),
            handle,
        };
        Ok((Execution { shared }, worker))
    }

    /// This execution's number, unique within its executor and counting from 1 in spawn
    /// order. (Not to be confused with [`Executor::id`](crate::Executor::id), the executor's
    /// random hex id, which names its container.)
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// The block's code file on the host (inside the executor's work dir); its path in the
    /// container when the workspace lives there (see [`Executor::work_dir`](crate::Executor::work_dir)).
    pub fn code_file(&self) -> &Path {
        &self.shared.code_file
    }

    /// Live output: a receiver of the block's stdout and stderr pieces, in arrival order
    /// (exact within a stream; see [`Output::pieces`] for the order across the two).
    ///
    /// Each call gives a new receiver that starts with everything written so far, then follows
    /// the stream; iteration ends by itself when the execution ends. Receivers are unbounded,
    /// so the worker never waits for a slow or absent reader, yet memory stays bounded: a
    /// receiver carries only the output the executor keeps, which `max_output_bytes` caps
    /// (plus one truncation marker). A dropped receiver costs nothing.
    pub fn chunks(&self) -> Receiver<Chunk> {
        self.shared.subscribe()
    }

    /// Live rich results (figures, `display()`, a session block's last value): a sibling of
    /// [`chunks`](Execution::chunks) with the same rules. Each call gives a new receiver that
    /// starts with every result so far, then follows; iteration ends when the execution ends.
    /// Each result's [`stdout_at`](RichResult::stdout_at) and
    /// [`stderr_at`](RichResult::stderr_at) place it among the chunks. Only the agent's
    /// Python blocks have them: see [`RichResult`].
    ///
    /// ```no_run
    /// # fn main() -> dockexec::Result<()> {
    /// use dockexec::{CodeBlock, Executor};
    ///
    /// let executor = Executor::builder().start()?;
    /// let execution = executor.spawn(&CodeBlock::python("display({'a': 1})"))?;
    /// for result in execution.results() {
    ///     println!("{:?}: {:?}", result.kind, result.text());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn results(&self) -> Receiver<RichResult> {
        self.shared.subscribe_results()
    }

    /// Blocks until the execution ends and returns its output.
    ///
    /// # Errors
    /// [`Error::Internal`] if the worker ended without storing a result (a bug).
    pub fn wait(&self) -> Result<&Output> {
        // Returns Err(Disconnected) when the worker drops the sender: the output is stored.
        let _ = self.shared.done_rx.recv();
        self.stored()
    }

    /// The output if the execution has ended, without blocking.
    ///
    /// # Errors
    /// As [`wait`](Execution::wait).
    pub fn try_wait(&self) -> Result<Option<&Output>> {
        Ok(self.shared.done.get())
    }

    /// Waits at most `timeout`; `Ok(None)` if the execution is still running.
    ///
    /// # Errors
    /// As [`wait`](Execution::wait).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Option<&Output>> {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.wait_deadline(deadline),
            None => self.wait().map(Some),
        }
    }

    /// Waits until `deadline`; `Ok(None)` if the execution is still running then.
    ///
    /// # Errors
    /// As [`wait`](Execution::wait).
    pub fn wait_deadline(&self, deadline: Instant) -> Result<Option<&Output>> {
        match self.shared.done_rx.recv_deadline(deadline) {
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => Ok(None),
            _ => self.stored().map(Some),
        }
    }

    /// Kills the block's whole process tree; returns at once, without waiting.
    ///
    /// Children, grandchildren, background jobs and processes that ignore SIGTERM all die
    /// (SIGKILL to every process of the block's session). The output so far is kept, and the
    /// status says [`cancelled`](crate::ExitStatus::cancelled). Cancelling a finished execution
    /// does nothing.
    ///
    /// A [`Session`](crate::Session) block is the exception in one point: its session's
    /// process is interrupted (`KeyboardInterrupt`), not killed, so that the namespace lives
    /// on. Every process the block started dies as above (children, those in a session of
    /// their own, double-forked daemons); processes that earlier blocks of the session started
    /// (a server from block 1) are not the cancelled block's and live on. See
    /// [`Session`](crate::Session).
    ///
    /// # Errors
    /// None today; the `Result` leaves room for a future transport that can fail here.
    pub fn cancel(&self) -> Result<()> {
        self.shared.request(Reason::Cancel);
        Ok(())
    }

    /// Waits for the end and returns the output by value.
    ///
    /// # Errors
    /// As [`wait`](Execution::wait).
    pub fn into_output(self) -> Result<Output> {
        self.wait()?;
        match Arc::try_unwrap(self.shared) {
            Ok(shared) => shared
                .done
                .into_inner()
                .ok_or_else(|| Error::Internal("output vanished".into())),
            Err(shared) => shared
                .done
                .get()
                .cloned()
                .ok_or_else(|| Error::Internal("output vanished".into())),
        }
    }

    fn stored(&self) -> Result<&Output> {
        self.shared
            .done
            .get()
            .ok_or_else(|| Error::Internal("the worker thread ended without a result".into()))
    }
}

/// Blocking reads only: pumps the source straight into the shared output, with no copy and
/// no hand-off per piece; asks the worker to kill the block when the output limit says so.
/// Returns how the output ended.
///
/// With secrets, each stream is redacted before it is recorded, so neither the stored output
/// nor any chunk ever holds a secret; what a stream held back (the start of a possible
/// secret) is recorded when the output ends, however it ends.
fn read_loop(
    mut source: Box<dyn Source>,
    shared: &Shared,
    cap: Option<usize>,
    on_limit: OutputLimit,
    redactor: &Redactor,
) -> std::result::Result<(), String> {
    if redactor.is_empty() {
        loop {
            let mut crossed = false;
            let more = source.next(&mut |s, b| crossed |= shared.record(s, b, cap));
            if crossed && on_limit == OutputLimit::Kill {
                shared.request(Reason::OutputLimit);
            }
            if let Some(r) = source.take_result() {
                shared.record_result(r, (0, 0), cap);
            }
            if !more? {
                return Ok(());
            }
        }
    }
    let (mut out, mut err) = (redactor.stream(), redactor.stream());
    let end = loop {
        let mut crossed = false;
        let more = source.next(&mut |s, b| {
            let shown = match s {
                Stream::Stdout => out.feed(redactor, b),
                Stream::Stderr => err.feed(redactor, b),
            };
            crossed |= shared.record(s, &shown, cap);
        });
        if crossed && on_limit == OutputLimit::Kill {
            shared.request(Reason::OutputLimit);
        }
        if let Some(mut r) = source.take_result() {
            // Each text item whole: the agent sends an item in one piece. One cut at its cap
            // loses a secret's first part at the cut too (the rest of it never came).
            for d in r.data.iter_mut().filter(|d| d.is_text()) {
                d.data = if d.truncated {
                    redactor.bytes_cut(&d.data)
                } else {
                    redactor.bytes(&d.data)
                };
            }
            shared.record_result(r, (out.held(), err.held()), cap);
        }
        match more {
            Ok(true) => {}
            Ok(false) => break Ok(()),
            Err(e) => break Err(redactor.text(&e)),
        }
    };
    shared.record(Stream::Stdout, &out.flush(redactor), cap);
    shared.record(Stream::Stderr, &err.flush(redactor), cap);
    end
}

/// The worker: runs until the block's stream ends, then stores the output.
fn work(
    ctx: WorkerCtx,
    shared: Arc<Shared>,
    running: Running,
    done_tx: Sender<()>,
    cancel_rx: Receiver<Reason>,
) {
    let Running {
        output: stream,
        control,
        code_file: _,
    } = running;
    let control = &*control;
    // Capacity 1: the reader's only message is how the stream ended.
    let (end_tx, end_rx) = bounded::<std::result::Result<(), String>>(1);
    let mut reason: Option<Reason> = None;
    let mut cut = false;
    // The container watch said the container ended: the block is lost, whatever the cut's
    // end of the stream looks like.
    let mut gone = false;
    let mut cancel_rx = cancel_rx;

    let end = thread::scope(|scope| {
        let reader_shared = &*shared;
        let reader = thread::Builder::new()
            .name("dockexec-reader".into())
            .spawn_scoped(scope, move || {
                let end = read_loop(stream, reader_shared, ctx.cap, ctx.on_limit, &ctx.redactor);
                let _ = end_tx.send(end);
            });
        if let Err(e) = reader {
            // Nobody will read its output: the block must not run on unobserved.
            control.kill();
            return Err(format!("cannot start the reader thread: {e}"));
        }
        let mut timer = match ctx.deadline {
            Some(d) => after(d.saturating_duration_since(Instant::now())),
            None => never(),
        };
        // The kill runs on a thread of its own while the reader keeps draining the stream: the
        // daemon will not finish the kill exec while the killed exec's output sits unread.
        let kill = || {
            let spawned = thread::Builder::new()
                .name("dockexec-kill".into())
                .spawn_scoped(scope, move || control.kill());
            if spawned.is_err() {
                // No thread to be had: cut the stream, which ends the read at least.
                control.cut();
            }
        };
        // The scope joins the reader (and any kill thread) on exit. Every path out of this
        // loop either saw the reader's end or cut its socket first, so that join cannot hang;
        // a kill thread is bounded by its own timeouts.
        loop {
            select! {
                recv(end_rx) -> end => {
                    return end.unwrap_or_else(|_| Err("the reader thread vanished".into()));
                }
                recv(cancel_rx) -> r => match r {
                    Ok(Reason::Gone) => {
                        if !cut {
                            control.cut();
                            cut = true;
                            gone = true;
                        }
                    }
                    Ok(r) if reason.is_none() => {
                        reason = Some(r);
                        if r != Reason::Shutdown {
                            kill();
                        }
                        timer = after(KILL_GRACE);
                    }
                    Ok(_) => {}
                    // Cannot happen while `shared` holds the sender; never spin if it does.
                    Err(_) => cancel_rx = never(),
                },
                recv(timer) -> _ => {
                    if reason.is_none() {
                        reason = Some(Reason::Timeout);
                        kill();
                        timer = after(KILL_GRACE);
                    } else {
                        // The tree was killed but the stream lives on: cut it, the reader's
                        // blocked read fails at once, and it reports the end.
                        control.cut();
                        cut = true;
                        timer = never();
                    }
                }
            }
        }
    });

    // The exit code, unless the stream was cut (daemon unresponsive) or the container is
    // being removed anyway.
    let mut reaped = Reaped {
        lost: end.is_err() || gone,
        ..Reaped::default()
    };
    if !cut && reason != Some(Reason::Shutdown) {
        let r = control.reap(reason.is_some());
        reaped = Reaped {
            lost: reaped.lost || r.lost,
            ..r
        };
    }
    let lost = reaped.lost && reason.is_none();
    let end_kind = match reason {
        Some(Reason::Timeout) => End::TimedOut,
        Some(Reason::Cancel | Reason::Shutdown) => End::Cancelled,
        // Never set as the reason: `Gone` only cuts (above).
        Some(Reason::Gone) => End::Lost,
        Some(Reason::OutputLimit) => End::OutputLimit,
        None if lost => End::Lost,
        None if reaped.session_lost => End::SessionLost,
        None => End::Exited,
    };

    control.release(ctx.delete_code_file);
    let code_file = (!ctx.delete_code_file).then(|| shared.code_file.clone());
    let duration = ctx.started.elapsed();
    shared.finish(|mut buf| {
        // A result placed after held-back bytes that turned out to be a secret (a shorter
        // marker) or were cut stands no further than the output's end.
        for r in &mut buf.results {
            r.stdout_at = r.stdout_at.min(buf.stdout.len());
            r.stderr_at = r.stderr_at.min(buf.stderr.len());
        }
        Output {
            status: ExitStatus {
                end: end_kind,
                code: reaped.code,
                signal: reaped.signal,
                oom_killed: reaped.oom_killed,
                kill_unexplained: reaped.kill_unexplained && end_kind == End::Exited,
                truncated: buf.truncated,
            },
            stdout: buf.stdout,
            stderr: buf.stderr,
            code_file,
            duration,
            results: buf.results,
            order: buf.order,
        }
    });
    // Our reference goes first, so a waiter that owns the only handle can take the output
    // without a copy; only then, with the output stored, wake every waiter.
    drop(shared);
    drop(done_tx);
}
