//! [`Executor`]: the container's lifecycle, its live executions, spawn, restart and stop.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::code::CodeBlock;
use crate::docker::api::{self, Client};
use crate::error::{Error, Result};
use crate::execution::{Execution, OutputLimit, Reason, Worker, WorkerCtx};
use crate::lifetime::Keeper;
use crate::output::{BlocksResult, Output};
use crate::redact::Redactor;
use crate::runner::{Launch, Runner, Strategy};
use crate::session::Session;
use crate::workspace::{self, Workspace};

mod builder;
mod sandbox;
mod start;
mod watch;

pub use builder::{
    DEFAULT_API_TIMEOUT, DEFAULT_IMAGE, DEFAULT_INIT_TIMEOUT, DEFAULT_MAX_OUTPUT,
    DEFAULT_SESSION_GRACE, DEFAULT_TIMEOUT, ExecutorBuilder,
};
pub use start::{PullPolicy, PullProgress};

/// Bound on the exec that empties `/tmp` and `/dev/shm` as the blocks' user at a restart.
const TMP_CLEAN_TIMEOUT: Duration = Duration::from_secs(10);
/// What a pool's reset leaves behind it is checked: the workspace, `$HOME`, `/tmp` and
/// `/dev/shm` are emptied as the blocks' user (after every process of theirs was killed, so
/// nothing races it), then found empty, else the reset fails. `find` without `-L` and `rm -rf`
/// never follow a link: a block's link to `/` or to a volume is removed, its target untouched.
const WIPE: &str = r#"for d in /workspace "$HOME" /tmp /dev/shm; do
  case "$d" in /workspace|/tmp|/dev/shm|/tmp/*|/home/*|/root) ;; *) continue ;; esac
  [ -d "$d" ] || continue
  find "$d" -mindepth 1 -type d ! -perm -700 -exec chmod u+rwx {} \; 2>/dev/null
  rm -rf "$d"/* "$d"/.[!.]* "$d"/..?* 2>/dev/null
  [ -z "$(ls -A "$d")" ] || { echo "dockexec: $d not empty after reset" >&2; exit 1; }
done
exit 0"#;

/// [`WIPE`] in Python, for the fast reset (the agent's path, so Python is there): the same
/// dirs, emptied and checked the same way, with no process started (a zygote block: some
/// 3 ms, where `WIPE` forks a dozen, some 20). Every entry is reached from its parent's
/// descriptor (`dir_fd`), a directory is opened with `O_NOFOLLOW`, and a link or fifo is
/// unlinked, never opened. Anything it cannot do (a tree deeper than Python recurses) fails
/// it, and [`WIPE`] runs next.
const PY_WIPE: &str = r#"import os
F = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
def empty(d):
    for e in list(os.scandir(d)):
        try:
            if e.is_dir(follow_symlinks=False):
                try:
                    fd = os.open(e.name, F, dir_fd=d)
                except PermissionError:
                    os.chmod(e.name, 0o700, dir_fd=d)
                    fd = os.open(e.name, F, dir_fd=d)
                try:
                    empty(fd)
                finally:
                    os.close(fd)
                os.rmdir(e.name, dir_fd=d)
            else:
                os.unlink(e.name, dir_fd=d)
        except OSError:
            pass
left = []
for p in ('/workspace', os.environ.get('HOME', ''), '/tmp', '/dev/shm'):
    if p not in ('/workspace', '/tmp', '/dev/shm', '/root') and not p.startswith(('/tmp/', '/home/')):
        continue
    try:
        d = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        continue
    empty(d)
    if os.listdir(d):
        left.append(p)
    os.close(d)
if left:
    os.write(2, ('dockexec: %s not empty after reset\n' % ' '.join(left)).encode())
    raise SystemExit(1)"#;

/// Bound on the inspect that tells a paused container from a hung agent.
const PAUSE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `stop()` lets the daemon take to remove the container.
const STOP_REMOVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `stop()` waits for spawns (and restarts, session opens) in flight to finish,
/// before it goes on without them: they may be stuck in a call to a hung daemon.
const STOP_GATE_WAIT: Duration = Duration::from_secs(2);

/// How long an agent failure waits to see the container stopping before it is reported as
/// [`Error::ContainerGone`]. `spawn` may hold the gate's read side meanwhile, so `stop()`
/// waits at most this long more. 2 s: Podman takes longer than Docker to be seen stopping
/// (its conmon tears down), and 500 ms gave a root block's `kill -9 -1` an `Error::Agent`
/// there under load.
const AGENT_GONE_WINDOW: Duration = Duration::from_secs(2);

/// A running container that executes code blocks.
///
/// `Send + Sync`: share it with `&` across [`std::thread::scope`] or in an `Arc`; any number of
/// threads may run blocks at once, and any thread may stop it.
///
/// # Drop
///
/// Dropping the executor does what [`stop`](Executor::stop) does (cancels every block, joins
/// every worker, removes the container and a temporary work dir) but ignores its errors, and
/// is bounded in time like `stop`. Call `stop` to learn whether the container was removed.
///
/// ```no_run
/// # fn main() -> dockexec::Result<()> {
/// use dockexec::{CodeBlock, Executor};
///
/// let executor = Executor::builder().start()?;
/// let output = executor.run(&CodeBlock::python("print('hello')"))?;
/// assert_eq!(output.stdout, b"hello\n");
/// executor.stop()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Executor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    client: Client,
    /// How blocks are started, streamed, killed and reaped in the container.
    runner: Box<dyn Runner>,
    /// Which strategy `runner` is.
    strategy: Strategy,
    id: String,
    container: String,
    /// The owner's end of the dead-man's switch: held until `stop`, and the means of
    /// `restart`. Shared with the runners: the agent's has it kill every process when its
    /// agent is lost, and the exec kill falls back on it.
    keeper: Arc<Keeper>,
    /// The user blocks run as (`None`: root), for emptying `/tmp` at `restart`.
    block_user: Option<String>,
    /// Whether [`Executor::reset_for_pool`] may keep the agent: the agent strategy, a block
    /// user that is not root, `no-new-privileges` (else a block may become root and tamper
    /// with the agent) and a PID namespace of the container's own.
    fast_reset: bool,
    name: String,
    image: String,
    workspace: Arc<Workspace>,
    timeout: Option<Duration>,
    delete_code_files: bool,
    max_output: Option<usize>,
    on_output_limit: OutputLimit,
    /// `true` once stopping has begun. Spawns hold the read side for their whole duration,
    /// so once `stop` has flipped it under the write side, no spawn is half-way through and
    /// the registry below is complete.
    gate: RwLock<bool>,
    /// `true` once `stop` has had the gate (or waited `STOP_GATE_WAIT` for it in vain), set
    /// before it empties the registry: a spawn that outlasted the wait sees it when it
    /// registers its worker, and one that gets the read side only then sees it at once.
    stopping: std::sync::atomic::AtomicBool,
    /// `true` once stopped. Held for all of `stop`, so concurrent callers wait for the first
    /// to finish, and then return at once.
    stop_lock: Mutex<bool>,
    /// Every execution whose worker has not been joined yet.
    live: Mutex<Vec<Worker>>,
    next: AtomicU64,
    /// The secret values, kept out of every output, chunk and error this executor gives.
    redactor: Arc<Redactor>,
    /// The container watch, under a runtime that keeps exec streams open after the container
    /// ends (see [`watch`]).
    watch: OnceLock<watch::Watch>,
}

/// The agent runner has the keeper kill every process when its agent is lost. (Here, not in
/// `lifetime`, which the runners' modules reach through the container spec.)
impl crate::runner::agent::KillAll for Keeper {
    fn kill_all(&self) -> Result<()> {
        Keeper::kill_all(self)
    }
}

/// What [`ExecutorBuilder::start`] made and configured, to become a running executor.
pub(crate) struct Parts {
    pub(crate) client: Client,
    pub(crate) runner: Box<dyn Runner>,
    pub(crate) strategy: Strategy,
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) container: String,
    pub(crate) keeper: Arc<Keeper>,
    pub(crate) block_user: Option<String>,
    /// Whether the container allows [`Executor::reset_for_pool`] to keep the agent, given a
    /// non-root block user (see `Inner::fast_reset`).
    pub(crate) keep_agent_at_reset: bool,
    pub(crate) image: String,
    pub(crate) workspace: Arc<Workspace>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) delete_code_files: bool,
    pub(crate) max_output: Option<usize>,
    pub(crate) on_output_limit: OutputLimit,
    /// Whether to start the container watch (see [`watch`]).
    pub(crate) watch_container: bool,
}

impl Executor {
    /// The executor over a started container, registered for [`stop_all`](crate::stop_all).
    pub(crate) fn new(p: Parts, redactor: Arc<Redactor>) -> Executor {
        let watch_container = p.watch_container;
        let inner = Arc::new(Inner {
            watch: OnceLock::new(),
            client: p.client,
            runner: p.runner,
            strategy: p.strategy,
            id: p.id,
            container: p.container,
            keeper: p.keeper,
            fast_reset: p.strategy == Strategy::Agent
                && p.keep_agent_at_reset
                && p.block_user
                    .as_deref()
                    .is_some_and(|u| !crate::spec::is_root(u)),
            block_user: p.block_user,
            name: p.name,
            image: p.image,
            workspace: p.workspace,
            timeout: p.timeout,
            delete_code_files: p.delete_code_files,
            max_output: p.max_output,
            on_output_limit: p.on_output_limit,
            gate: RwLock::new(false),
            stopping: std::sync::atomic::AtomicBool::new(false),
            stop_lock: Mutex::new(false),
            live: Mutex::new(Vec::new()),
            next: AtomicU64::new(1),
            redactor,
        });
        // Started once the executor exists: the thread's first look at it must find it.
        if watch_container {
            let weak = Arc::downgrade(&inner);
            if let Some(w) =
                watch::Watch::start(inner.client.clone(), inner.container.clone(), weak)
            {
                let _ = inner.watch.set(w);
            }
        }
        crate::registry::register(Arc::clone(&inner) as Arc<dyn crate::registry::Stop>);
        Executor { inner }
    }

    /// A builder with every option at its default.
    pub fn builder() -> ExecutorBuilder {
        ExecutorBuilder::default()
    }

    /// The container's id.
    pub fn container_id(&self) -> &str {
        &self.inner.container
    }

    /// The container's name.
    pub fn container_name(&self) -> &str {
        &self.inner.name
    }

    /// This executor's id: 16 random hex digits, also the value of its container's
    /// [`labels::EXECUTOR`](crate::labels::EXECUTOR) label and part of its default name.
    /// (Each [`Execution::id`](crate::Execution::id) is a number within one executor.)
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// How this executor runs blocks: [`Strategy::Agent`] or [`Strategy::Exec`] (never
    /// `Auto`, which [`start`](ExecutorBuilder::start) resolves).
    pub fn strategy(&self) -> Strategy {
        self.inner.strategy
    }

    /// Warnings the in-container agent gave when it started, e.g. what it cannot guarantee
    /// in this image; empty with the exec strategy.
    ///
    /// The agent finishes starting in the background of [`start`](ExecutorBuilder::start),
    /// so this waits for it to say it is ready: some 40 ms after `start()`, and at most 30 s.
    ///
    /// # Errors
    /// [`Error::Agent`] when the agent did not come up (or has died and a fresh one did not
    /// start), with the reason; [`Error::Stopped`] after `stop()`.
    pub fn agent_warnings(&self) -> Result<Vec<String>> {
        if self.inner.stopping.load(Ordering::SeqCst) {
            return Err(Error::Stopped);
        }
        match self.inner.runner.as_agent() {
            Some(agent) => agent.ready().map(|r| r.warnings),
            None => Ok(Vec::new()),
        }
    }

    /// Opens a stateful Python session: its blocks share one namespace, like a notebook's
    /// cells. See [`Session`].
    ///
    /// # Errors
    /// [`Error::Agent`] with the exec strategy (sessions need the agent, so Python in the
    /// image); [`Error::Stopped`] after `stop()`.
    pub fn session(&self) -> Result<Session<'_>> {
        let gate = self.inner.gate.read();
        if *gate || self.inner.stopping.load(Ordering::SeqCst) {
            return Err(Error::Stopped);
        }
        let agent = self.inner.runner.as_agent().ok_or_else(|| {
            Error::Agent("sessions need the in-container agent (Strategy::Agent)".into())
        })?;
        let n = self.inner.next.fetch_add(1, Ordering::Relaxed);
        agent
            .open_session(crate::runner::agent::execution_id(n))
            .map_err(|e| self.inner.redactor.error(e))?;
        drop(gate);
        Ok(Session::new(self, n))
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// The image the container runs.
    pub fn image(&self) -> &str {
        &self.inner.image
    }

    /// The host directory mounted at `/workspace`; `None` when the workspace lives in the
    /// container, which is so on an engine that does not share this host's filesystem
    /// ([`Engine::host_filesystem_shared`](crate::Engine::host_filesystem_shared)): there
    /// `/workspace` is a tmpfs on the engine's side, reached with
    /// [`put_file`](Self::put_file) and [`get_file`](Self::get_file), and each code file's
    /// path ([`Output::code_file`](crate::Output::code_file)) is its path in the container.
    pub fn work_dir(&self) -> Option<&Path> {
        self.inner.workspace.path()
    }

    /// Copies `contents` into the container as the file `path` (absolute, or relative to
    /// `/workspace`), through the daemon's archive API: it works whatever the mounts, and a
    /// symlink inside the container is resolved inside the container. The file is root's,
    /// mode `0644`. With the default read-only root
    /// ([`read_only_root`](ExecutorBuilder::read_only_root)), only `/workspace` and the
    /// volumes take files this way: the daemon refuses the root filesystem, and would write
    /// beneath the `/tmp` tmpfs, where no process sees the file.
    ///
    /// When the workspace lives in the container (no [`work_dir`](Self::work_dir)), it is a
    /// volume of the engine's, which the archive API reaches as it reaches a host work dir,
    /// with the same guarantees.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a path without a file name;
    /// [`Error::Docker`] when the directory does not exist or cannot be written (status 500
    /// "container rootfs is marked read-only" outside `/workspace` and the volumes, under the
    /// default read-only root).
    pub fn put_file(&self, path: &str, contents: &[u8]) -> Result<()> {
        let (dir, name) = workspace::split_container_path(path)?;
        let tar = api::tar_one_file(&name, contents, 0o644)?;
        self.inner
            .client
            .archive_put(&self.inner.container, &dir, tar)
            .map_err(|e| self.inner.gone_or(e))
    }

    /// Reads the file `path` (absolute, or relative to `/workspace`) out of the container.
    ///
    /// # Errors
    /// [`Error::Docker`] with status 404 when there is no such file; [`Error::InvalidInput`]
    /// when the path is a directory, a link or another file that is not a regular one.
    pub fn get_file(&self, path: &str) -> Result<Vec<u8>> {
        let (dir, name) = workspace::split_container_path(path)?;
        let full = format!("{}/{name}", dir.trim_end_matches('/'));
        let tar = self
            .inner
            .client
            .archive_get(&self.inner.container, &full)
            .map_err(|e| self.inner.gone_or(e))?;
        match api::untar_path(&tar)? {
            api::PathEntry::File(data) => Ok(data),
            api::PathEntry::Other(what) => Err(Error::invalid(format!(
                "{path} is {what}: get_file reads one regular file"
            ))),
        }
    }

    /// Runs a block to its end: [`spawn`](Executor::spawn) then
    /// [`into_output`](Execution::into_output).
    ///
    /// # Errors
    /// As [`spawn`](Executor::spawn). A non-zero exit, a timeout or a cancellation is `Ok`,
    /// with the [`ExitStatus`](crate::ExitStatus) saying so.
    pub fn run(&self, block: &CodeBlock) -> Result<Output> {
        self.spawn(block)?.into_output()
    }

    /// Starts a block and returns at once with its [`Execution`].
    ///
    /// The code is saved in the work dir (named by its `# filename:` line, else uniquely),
    /// and the exec is created and started before this returns, so a bad request fails here.
    /// When the workspace lives in the container (no [`work_dir`](Self::work_dir)), the code
    /// is written there inside the container, as the block's user; with the exec strategy a
    /// file that cannot be written there fails the block itself (exit code 126, a
    /// `dockexec:` line on stderr) rather than this call.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an unknown language or a file name outside the workspace
    /// (nothing is written); [`Error::Stopped`] after `stop()`, or when `stop()` began while
    /// this call waited on the daemon; [`Error::ContainerGone`] when the container was removed
    /// from outside; [`Error::Io`] when the code file cannot be written; [`Error::Timeout`]
    /// when the daemon does not answer within
    /// [`api_timeout`](ExecutorBuilder::api_timeout).
    pub fn spawn(&self, block: &CodeBlock) -> Result<Execution> {
        self.inner.spawn(block, None)
    }

    /// Runs blocks in order, stopping at the first that does not succeed (AutoGen's
    /// semantics).
    ///
    /// Every block's language and file name is checked before any runs.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an empty list, an unknown language or a bad file name
    /// (nothing runs); otherwise as [`run`](Executor::run).
    pub fn execute(&self, blocks: &[CodeBlock]) -> Result<BlocksResult> {
        if blocks.is_empty() {
            return Err(Error::invalid("no code blocks to execute"));
        }
        for b in blocks {
            b.language()?;
            b.filename()?;
        }
        let mut outputs = Vec::with_capacity(blocks.len());
        for b in blocks {
            let out = self.run(b)?;
            let ok = out.status.success();
            outputs.push(out);
            if !ok {
                break;
            }
        }
        Ok(BlocksResult { outputs })
    }

    /// Restarts the executor: every process in the container is killed (running blocks
    /// report [`cancelled`](crate::ExitStatus::cancelled), sessions are lost), `/tmp` and
    /// `/dev/shm` are emptied, and the strategy starts afresh; files in the workspace stay, and so does the
    /// container (same id, same dead-man's switch).
    ///
    /// They are emptied after the kill (so no block races it), first by the keeper as root,
    /// then, if that left anything, by one `docker exec` as the blocks' user, which can open
    /// the directories a block closed to everyone (root here lacks `DAC_OVERRIDE`). Links are removed, never followed
    /// to their targets. Before, `/tmp` survived a restart: a full `/tmp` (whose pages count
    /// against the memory limit and that no kill frees) then wedged the executor for good, and
    /// files planted there outlived it. What neither root nor the blocks' user may remove (the
    /// files of another user that a root block made) stays.
    ///
    /// The container itself is not restarted while it runs: its keeper kills every other
    /// process in it. A Docker restart would close the keeper's stdin, which the owner's
    /// switch hangs on, and race [`auto_remove`](ExecutorBuilder::auto_remove). A container
    /// that is no longer running (killed from outside, with `auto_remove(false)`) is started
    /// again, with a fresh switch.
    ///
    /// # Errors
    /// [`Error::Stopped`] after `stop()`; [`Error::ContainerGone`] when the container was
    /// removed; [`Error::Docker`] if the daemon refuses; [`Error::Timeout`] when the keeper
    /// does not answer.
    pub fn restart(&self) -> Result<()> {
        let gate = self.inner.gate.read();
        if *gate || self.inner.stopping.load(Ordering::SeqCst) {
            return Err(Error::Stopped);
        }
        // Cancelled, not merely shut down: should the restart fail, each worker's own kill
        // still ends its block (and it races the restart harmlessly when it succeeds).
        for w in self.inner.live.lock().iter() {
            w.request(Reason::Cancel);
        }
        let inner = &self.inner;
        // Whether the keeper left something in `/tmp`: a container started afresh has an
        // empty tmpfs, but no tmpfs at all when `tmp_size(None)`.
        let mut tmp_left = true;
        inner.runner.restarting();
        match inner.keeper.restart() {
            Ok(left) => tmp_left = left,
            Err(e) => {
                // The keeper did not answer: unless the container has stopped, that is the error.
                let state = inner
                    .client
                    .container_inspect(&inner.container)
                    .map_err(|e| inner.gone_or(e))?
                    .state;
                if state.running {
                    return Err(e);
                }
                // Attached before the start, as at `start()`: never running without the switch.
                inner
                    .keeper
                    .reattach(&inner.client, &inner.container)
                    .map_err(|e| inner.gone_or(e))?;
                inner
                    .client
                    .container_start(&inner.container)
                    .map_err(|e| inner.gone_or(e))?;
            }
        }
        // Only when root left something: a block's directories it closed to everyone.
        if tmp_left {
            inner.empty_tmp_as_block_user();
        }
        // Whatever the strategy kept in the container (the agent) died with it.
        inner.runner.restarted().map_err(|e| inner.gone_or(e))?;
        drop(gate);
        Ok(())
    }

    /// The pool's reset between two tasks ([`Policy::Reset`](crate::Policy::Reset)): every
    /// process of the task is killed and the workspace, `$HOME`, `/tmp` and `/dev/shm` are
    /// emptied (by [`PY_WIPE`] or [`WIPE`], as the blocks' user, checked).
    ///
    /// The fast way keeps the agent (no `docker exec`, no keeper round trip): it asks the
    /// agent to end every block and session and to kill every process in the container whose
    /// uid is not root's (its warm, root-owned spares stay). Taken when blocks cannot be root
    /// (see `fast_reset`). Any failure of it (the agent gone, a process that outlives the
    /// kills, a wipe that leaves something) falls back on the full way,
    /// [`restart`](Self::restart) then the wipe, rather than retiring the executor at once:
    /// most such failures are a lost agent (an OOM kill, a crash), which the restart replaces
    /// at the cost of one exec rather than a whole container, and the wipe still checks what
    /// the restart left. Only a failure of that retires the executor.
    ///
    /// # Errors
    /// As [`restart`](Self::restart), or [`Error::Internal`] when the wipe leaves something.
    /// Without `keep_agent` ([`Policy::Restart`](crate::Policy::Restart)), always the full way.
    pub(crate) fn reset_for_pool(&self, keep_agent: bool) -> Result<ResetPath> {
        if keep_agent && self.inner.fast_reset {
            match self.fast_reset() {
                Ok(()) => return Ok(ResetPath::Fast),
                Err(Error::Stopped) => return Err(Error::Stopped),
                Err(_) => {} // the full way, below
            }
        }
        self.restart()?;
        self.wipe()?;
        Ok(ResetPath::Full)
    }

    /// The agent's RESET, then the wipe ([`PY_WIPE`], else [`WIPE`]).
    fn fast_reset(&self) -> Result<()> {
        let agent = self
            .inner
            .runner
            .as_agent()
            .ok_or_else(|| Error::Agent("no agent to reset".into()))?;
        {
            // Held for the request only: the wipe's spawn takes the read side itself.
            let gate = self.inner.gate.read();
            if *gate || self.inner.stopping.load(Ordering::SeqCst) {
                return Err(Error::Stopped);
            }
            // Cancelled as at a restart: a block still running ends killed (the agent also
            // ends it and says so; whichever comes first).
            for w in self.inner.live.lock().iter() {
                w.request(Reason::Cancel);
            }
            let n = self.inner.next.fetch_add(1, Ordering::Relaxed);
            agent
                .reset(crate::runner::agent::execution_id(n))
                .map_err(|e| self.inner.redact(e))?;
            drop(gate);
        }
        self.wipe_with(&CodeBlock::python(PY_WIPE))
            .or_else(|_| self.wipe())
    }

    /// Runs [`WIPE`] as a block.
    fn wipe(&self) -> Result<()> {
        self.wipe_with(&CodeBlock::sh(WIPE))
    }

    /// Runs a wipe as a block: `Ok` when it succeeds.
    fn wipe_with(&self, block: &CodeBlock) -> Result<()> {
        let out = self.run(block)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(Error::Internal(format!(
                "the reset's wipe failed ({:?}): {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).trim_end()
            )))
        }
    }

    /// Stops the executor: cancels every live execution (handles dropped or not), joins every
    /// worker thread, removes the container, and removes a temporary work dir.
    ///
    /// Safe from any thread, any number of times, concurrently: the first call does the work
    /// and reports its errors; the others wait for it, then return `Ok(())`, as every later
    /// call does (stopping a stopped executor is no error, as with `Drop`).
    /// It returns in bounded time even if the daemon hangs: each worker's socket is shut down
    /// after a grace period, the removal is abandoned after 5 s, and a
    /// [`spawn`](Executor::spawn) (or restart, or session open) stuck in a call to the daemon
    /// is waited for 2 s at most; that call then fails on its own, within
    /// [`api_timeout`](ExecutorBuilder::api_timeout).
    ///
    /// # Errors
    /// [`Error::Docker`] or [`Error::Connect`] if the container could not be removed
    /// (everything else is still cleaned up); only the first call reports it.
    pub fn stop(&self) -> Result<()> {
        self.inner.stop()
    }
}

/// Which way [`Executor::reset_for_pool`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResetPath {
    /// The agent kept: its RESET, then the wipe.
    Fast,
    /// [`Executor::restart`], then the wipe.
    Full,
}

impl Drop for Executor {
    /// A best-effort [`stop`](Executor::stop); errors are ignored.
    fn drop(&mut self) {
        let _ = self.inner.stop();
    }
}

impl Inner {
    pub(crate) fn runner(&self) -> &dyn Runner {
        &*self.runner
    }

    /// Starts a block, in the agent's session `session` if given.
    pub(crate) fn spawn(&self, block: &CodeBlock, session: Option<u64>) -> Result<Execution> {
        let language = block.language()?;
        let requested = block.filename()?;
        // Held until the worker is registered: see `gate`.
        let gate = self.gate.read();
        if *gate || self.stopping.load(Ordering::SeqCst) {
            return Err(Error::Stopped);
        }
        self.reap();

        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let file = requested.unwrap_or_else(|| {
            format!(
                "tmp_code_{}_{n}.{}",
                &self.id[..self.id.len().min(12)],
                language.extension()
            )
            .into()
        });
        let started = Instant::now();
        let launch = Launch {
            n,
            language,
            code: block.code(),
            file: &file,
        };
        let running = match (session, self.runner.as_agent()) {
            (None, _) => self.runner.launch(&launch),
            (Some(s), Some(agent)) => {
                agent.launch_in(&launch, Some(crate::runner::agent::execution_id(s)))
            }
            (Some(_), None) => Err(Error::Agent("sessions need the in-container agent".into())),
        }
        .map_err(|e| {
            // The daemon call failed because stop() tore the runner down under it: say so.
            if self.stopping.load(Ordering::SeqCst) {
                Error::Stopped
            } else {
                self.gone_or(e)
            }
        })?;
        let ctx = WorkerCtx {
            cap: self.max_output,
            on_limit: self.on_output_limit,
            deadline: self.timeout.and_then(|t| started.checked_add(t)),
            delete_code_file: self.delete_code_files,
            started,
            redactor: Arc::clone(&self.redactor),
        };
        // Checked under the registry lock: `stop` sets `stopping` before it empties the
        // registry under this same lock, so this worker is either taken (and ended) by that
        // `stop`, or never started. The lock is held across a thread spawn, never a join.
        let mut live = self.live.lock();
        if self.stopping.load(Ordering::SeqCst) {
            drop(live);
            // `stop` went on without this spawn (stuck in a hung daemon past the gate wait):
            // the block may have started all the same, and nothing else will end it.
            running.control.kill();
            running.control.cut();
            running.control.release(self.delete_code_files);
            return Err(Error::Stopped);
        }
        let (execution, worker) = Execution::start(n, running, ctx)?;
        live.push(worker);
        drop(live);
        drop(gate);
        Ok(execution)
    }

    /// The second half of emptying `/tmp` and `/dev/shm` at a restart (the keeper did what root can): as the
    /// blocks' user, opens up the directories a block closed, then removes every entry. Best
    /// effort and bounded: what stays is what this user may not remove. `find` without `-L`
    /// never follows a link; `chmod` only touches directories `find` found as directories, as
    /// a user who owns them.
    fn empty_tmp_as_block_user(&self) {
        const SCRIPT: &str = r#"for d in /tmp /dev/shm; do
  [ -d "$d" ] || continue
  find "$d" -mindepth 1 -type d ! -perm -700 -exec chmod u+rwx {} \; 2>/dev/null
  rm -rf "$d"/* "$d"/.[!.]* "$d"/..?* 2>/dev/null
done
exit 0"#;
        let body = serde_json::json!({
            "Cmd": ["sh", "-c", SCRIPT],
            "AttachStdout": true,
            "AttachStderr": true,
            "User": self.block_user.as_deref().unwrap_or("0"),
        });
        let _ = self
            .client
            .exec_collect(&self.container, &body, Some(TMP_CLEAN_TIMEOUT));
    }

    /// Joins workers that have finished, so the registry holds only live ones.
    fn reap(&self) {
        let finished: Vec<Worker> = {
            let mut live = self.live.lock();
            let (done, running): (Vec<_>, Vec<_>) = live.drain(..).partition(Worker::is_finished);
            *live = running;
            done
        };
        // Joined outside the lock: they have finished, so this is instant, but never hold a
        // lock across a join.
        for w in finished {
            w.join();
        }
    }

    /// `e` without the secrets' values.
    pub(crate) fn redact(&self, e: Error) -> Error {
        self.redactor.error(e)
    }

    /// Maps "no such container" / "is not running" to [`Error::ContainerGone`], and redacts
    /// the secrets from any other error.
    fn gone_or(&self, e: Error) -> Error {
        let e = self.redactor.error(e);
        match &e {
            Error::Docker { status, message } if says_container_paused(*status, message) => {
                Error::ContainerPaused {
                    container: self.container.clone(),
                }
            }
            Error::Docker { status, message } if says_container_gone(*status, message) => {
                Error::ContainerGone {
                    container: self.container.clone(),
                }
            }
            // The agent's channel broke, or a fresh agent could not start: when that is
            // because the container is dying (a root block can end it), the daemon may not
            // say so yet. Give it a moment to be seen stopping; only this error path waits.
            Error::Agent(_)
                if matches!(
                    self.client
                        .container_stopped_within(&self.container, AGENT_GONE_WINDOW),
                    Ok(true)
                ) =>
            {
                Error::ContainerGone {
                    container: self.container.clone(),
                }
            }
            // The agent did not answer a block in time: a paused container is one reason. Only
            // the agent's own limit: a daemon call that timed out says the daemon is hung, and
            // asking it once more would only double the wait (the exec path learns of a pause
            // from the daemon's 409 above). Bounded apart, for the same reason.
            // The same look tells a container that is gone under an agent stream its runtime
            // kept open (a remote engine that vanished it, a runtime without the watch).
            Error::Timeout { .. } if self.strategy == Strategy::Agent => {
                let seen = self
                    .client
                    .with_timeout(PAUSE_CHECK_TIMEOUT)
                    .container_inspect(&self.container);
                let container = self.container.clone();
                match seen {
                    Ok(i) if i.state.status == "paused" => Error::ContainerPaused { container },
                    Ok(i) if !i.state.running => Error::ContainerGone { container },
                    Err(ref d) if d.is_not_found() => Error::ContainerGone { container },
                    _ => e,
                }
            }
            _ => e,
        }
    }

    fn stop(&self) -> Result<()> {
        self.stop_once().map(|_| ())
    }

    /// Stops the executor unless already stopped; `Ok(true)` when this call did the work.
    fn stop_once(&self) -> Result<bool> {
        let mut stopped = self.stop_lock.lock();
        if *stopped {
            // Idempotent: the first stop() did the work and reported its errors.
            return Ok(false);
        }
        // Waits, for a bounded while, for spawns in flight to register: a spawn stuck in a
        // call to a hung daemon holds the read side until its own limit passes, and stop()
        // must not wait that long.
        if let Some(mut gate) = self.gate.try_write_for(STOP_GATE_WAIT) {
            *gate = true;
        }
        // Set before the registry is emptied below: from here on a spawn that outlasted the
        // wait, or that gets the read side only now, registers no worker this stop misses.
        self.stopping.store(true, Ordering::SeqCst);
        let workers: Vec<Worker> = std::mem::take(&mut *self.live.lock());
        for w in &workers {
            w.request(Reason::Shutdown);
        }
        // Removing the container kills every process in it at once, which ends every exec
        // stream; a worker whose stream does not end cuts its own socket after KILL_GRACE.
        let removed = self
            .client
            .with_timeout(STOP_REMOVE_TIMEOUT)
            .container_remove(&self.container, STOP_REMOVE_TIMEOUT);
        // The container is gone (or going): the switch has nothing left to hold. Were the
        // removal refused, closing it still ends the container.
        self.keeper.close();
        // The removal ended the watch's wait: it sees `stopping` and ends.
        if let Some(w) = self.watch.get() {
            w.end();
        }
        // Join after the removal, so that no worker waits on a process that is still alive.
        for w in workers {
            w.join();
        }
        // The runner's files go before the workspace, which keeps a user's dir and its state
        // dir while another executor still has files there.
        self.runner.teardown();
        self.workspace.teardown();
        *stopped = true;
        drop(stopped);
        crate::registry::unregister(self);
        removed.map(|()| true).map_err(|e| self.redactor.error(e))
    }
}

impl crate::registry::Stop for Inner {
    fn stop(&self) -> Result<bool> {
        self.stop_once()
    }
}

/// Whether a daemon error says the container itself is gone or going: its own 404 (a missing
/// file or exec is a 404 too, so only "No such container"), or a refusal because it is not
/// running, or being removed. The last comes as a 500 ("is not running: Removal In
/// Progress") while `AutoRemove` takes a container whose keeper ended. A paused container is
/// not gone: see [`says_container_paused`].
fn says_container_gone(status: u16, message: &str) -> bool {
    match status {
        // Podman says it in lower case: "no container with name or ID … found: no such
        // container".
        404 => message.to_ascii_lowercase().contains("no such container"),
        409 | 500 => {
            message.contains("not running")
                || message.contains("Removal In Progress")
                || message.contains("marked for removal")
                // Podman's exec create on a stopped container (issue 17).
                || message.contains("can only create exec sessions on running containers")
                // Podman's exec on a container its cleanup is removing: a 500, not its 404.
                || message.contains("does not exist in database: no such container")
        }
        _ => false,
    }
}

/// Whether a daemon error is its refusal to exec into a paused container (409, "Container
/// … is paused, unpause the container before exec").
fn says_container_paused(status: u16, message: &str) -> bool {
    status == 409 && message.contains("is paused")
}

#[cfg(test)]
mod gone_tests {
    use super::{says_container_gone, says_container_paused};

    #[test]
    fn the_daemons_ways_of_saying_the_container_is_gone() {
        assert!(says_container_gone(404, "No such container: 55ec"));
        assert!(!says_container_gone(404, "No such exec instance: 9f2a"));
        assert!(says_container_gone(409, "Container 55ec is not running"));
        assert!(!says_container_gone(
            409,
            "Container 55ec is paused, unpause the container"
        ));
        assert!(says_container_paused(
            409,
            "Container 55ec is paused, unpause the container before exec"
        ));
        assert!(!says_container_paused(409, "Container 55ec is not running"));
        // Seen in CI: an exec create while AutoRemove takes the container.
        assert!(says_container_gone(
            500,
            "Container 55ec is not running: Removal In Progress"
        ));
        assert!(says_container_gone(
            500,
            "container is marked for removal and cannot be started"
        ));
        assert!(!says_container_gone(500, "could not select device driver"));
        // Podman (issue 17): its 404, and its exec create on a stopped container.
        assert!(says_container_gone(
            404,
            "no container with name or ID \"0dd4\" found: no such container"
        ));
        assert!(says_container_gone(
            500,
            "can only create exec sessions on running containers: container state improper"
        ));
        // Podman, an exec while its cleanup removes the container (seen in the Podman lane).
        assert!(says_container_gone(
            500,
            "container 748a does not exist in database: no such container"
        ));
        assert!(!says_container_gone(400, "not running"));
    }
}
