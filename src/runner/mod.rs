//! The seam between the executor and *how* a block runs inside the container: started,
//! streamed, killed and reaped.
//!
//! Everything a strategy needs lives behind [`Runner`], [`Source`] and [`Control`]: where the
//! code file goes, any marker files or scripts, how the process tree is found and killed, how
//! the exit code is learnt. The executor and the worker see none of it: the worker pumps a
//! [`Source`] into the shared output and drives a [`Control`] on cancel, timeout and end.
//!
//! Strategies ([`Strategy`] chooses):
//! * [`exec::ExecRunner`]: one `docker exec` per block under a POSIX `sh` wrapper, killed by a
//!   second exec. Works in any image with `sh`.
//! * [`agent::AgentRunner`]: a warm agent in the container starts every block itself, in a
//!   few milliseconds. Needs Python in the image.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::code::Language;
use crate::error::Result;
use crate::output::Stream;

/// The environment of every root `docker exec` of dockexec's own (kill, OOM probe): a `PATH`
/// of root-owned dirs and a loader that preloads nothing, whatever the user set for the
/// container (a `PATH` or `LD_PRELOAD` into the workspace or `/tmp` would otherwise make root
/// run what a block planted there). Paired with `/bin/sh`, never `sh` looked up on the
/// container's `PATH`. `PATH` comes first: the agent's exec takes only the rest.
pub(crate) const ROOT_EXEC_ENV: [&str; 8] = [
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LD_PRELOAD=",
    "LD_LIBRARY_PATH=",
    "LD_AUDIT=",
    "LD_PROFILE=",
    "LD_PROFILE_OUTPUT=",
    "LD_DEBUG=",
    "LD_DEBUG_OUTPUT=",
];

pub(crate) mod agent;
pub(crate) mod exec;
pub(crate) mod protocol;

/// Adds to `spec` what the runners of `strategy` need in the container, before it is created
/// (the runners themselves exist only once it runs). [`Strategy::Auto`] may fall back to
/// exec, so it gets both.
pub(crate) fn prepare(strategy: Strategy, spec: &mut crate::spec::ContainerSpec) {
    if strategy != Strategy::Agent {
        exec::ExecRunner::prepare(spec);
    }
}

/// How an executor runs its blocks. The host side is the same for both: one worker thread per
/// execution, the same timeouts, cancellation, output limits and statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Strategy {
    /// The agent when the image has Python, else exec. The default.
    #[default]
    Auto,
    /// A warm agent process inside the container starts each block itself (fork and exec,
    /// or a fork of its own warm Python interpreter), in a few milliseconds instead of
    /// Docker's ~60-90 ms per exec; it also keeps [`Session`](crate::Session)s. Needs
    /// `python3` (or `python`) in the image: [`ExecutorBuilder::start`](crate::ExecutorBuilder::start)
    /// fails with [`Error::Agent`](crate::Error::Agent) otherwise.
    ///
    #[doc = include_str!("zygote_differences.md")]
    Agent,
    /// One `docker exec` per block, under a POSIX `sh` wrapper. Works in any image that has
    /// `sh` (busybox included).
    Exec,
}

/// What to start.
#[derive(Debug)]
pub(crate) struct Launch<'a> {
    /// The execution's number, unique within the executor.
    pub(crate) n: u64,
    pub(crate) language: Language,
    pub(crate) code: &'a str,
    /// The code file, relative to the workspace (already checked to stay inside it).
    pub(crate) file: &'a Path,
}

/// How the block ended, as far as the strategy can tell.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Reaped {
    pub(crate) code: Option<i32>,
    /// The signal that ended the block's process, when the strategy can tell.
    pub(crate) signal: Option<i32>,
    /// The container vanished or died, or the block's end could not be learnt.
    pub(crate) lost: bool,
    /// A session block whose session's process ended under it (agent only).
    pub(crate) session_lost: bool,
    pub(crate) oom_killed: bool,
    /// A SIGKILL the executor did not send, and whether it was the OOM killer's could not be
    /// learnt (exec strategy: the OOM probe itself failed).
    pub(crate) kill_unexplained: bool,
}

/// A strategy for running blocks in one container.
pub(crate) trait Runner: fmt::Debug + Send + Sync {
    /// Saves the code and starts the block; its output is flowing when this returns.
    ///
    /// # Errors
    /// The daemon's refusal (mapped by the caller to `Error::ContainerGone` and co), or the
    /// code file's failure.
    fn launch(&self, launch: &Launch<'_>) -> Result<Running>;

    /// Called just before the keeper kills every process for a restart: what the strategy
    /// would do when it sees its processes die is done by the restart.
    fn restarting(&self) {}

    /// Called after the container was restarted: whatever lived in it is gone.
    ///
    /// # Errors
    /// When the strategy cannot be brought back up.
    fn restarted(&self) -> Result<()> {
        Ok(())
    }

    /// Called by the executor's container watch when the container ended while the runtime
    /// may keep exec streams open (runsc): whatever the strategy waits on in the container
    /// must end now.
    fn container_ended(&self) {}

    /// The agent runner, for what only it can do (sessions).
    fn as_agent(&self) -> Option<&agent::AgentRunner> {
        None
    }

    /// Called once, after the container is gone: removes whatever the strategy keeps on the
    /// host. Never fails.
    fn teardown(&self);
}

/// A started block: its output and the means to cut, kill and reap it.
pub(crate) struct Running {
    pub(crate) output: Box<dyn Source>,
    pub(crate) control: Box<dyn Control>,
    /// The code file as the host sees it, inside the work dir.
    pub(crate) code_file: PathBuf,
}

impl fmt::Debug for Running {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Running")
            .field("code_file", &self.code_file)
            .finish_non_exhaustive()
    }
}

/// A block's output, read by blocking calls on the worker's reader thread.
pub(crate) trait Source: Send {
    /// Waits for the next output and hands each piece of it to `sink`. `Ok(false)` once the
    /// output has ended; `Err` with a description when it broke off.
    fn next(&mut self, sink: &mut dyn FnMut(Stream, &[u8])) -> std::result::Result<bool, String>;

    /// A rich result that the last [`next`](Source::next) received (it then handed nothing to
    /// its sink), to be recorded where it stands among the output. Only the agent has them.
    fn take_result(&mut self) -> Option<crate::output::RichResult> {
        None
    }
}

/// What the worker can do to a running block. Every call is bounded in time.
pub(crate) trait Control: Send + Sync {
    /// Kills the block's whole process tree; failures are swallowed (the cut is the backstop).
    fn kill(&self);
    /// Ends the output at once: a [`Source::next`] blocked on it returns.
    fn cut(&self);
    /// After the output ended: the exit code, and whether the container is still there.
    /// `killed` says the worker killed the block, so a SIGKILL status is expected.
    fn reap(&self, killed: bool) -> Reaped;
    /// After the end: removes the strategy's per-block state, and the code file if asked.
    fn release(&self, delete_code_file: bool);
}
