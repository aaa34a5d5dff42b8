//! [`Session`]: Python blocks that share one namespace, like a notebook's cells.

use crate::code::{CodeBlock, Language};
use crate::error::{Error, Result};
use crate::execution::Execution;
use crate::executor::Executor;
use crate::output::Output;
use crate::runner::agent::execution_id;

/// A stateful Python session in an executor's container, from [`Executor::session`].
///
/// Its blocks run in one long-lived Python process and share one namespace: a variable, a
/// function or an import made by one block is there for the next. Each block still returns
/// an ordinary [`Output`] (stdout, stderr, status); an uncaught exception prints its
/// traceback on stderr and gives exit code 1, and `sys.exit(n)` gives `n`, and the session
/// lives on after both.
///
/// Blocks of one session run one at a time, in the order they were spawned; sessions and
/// ordinary blocks of the same executor run in parallel.
///
/// # Cancel and timeout
///
/// [`cancel`](Execution::cancel) and the timeout kill every process the running block
/// started (children, children in a session of their own, double-forked daemons: whatever
/// appeared under the session's process since the block began, except what a process of an
/// earlier block started), then interrupt the block with `KeyboardInterrupt` and keep the
/// session's state. Processes that *earlier* blocks started and left running (a server from
/// block 1) are not the cancelled block's: they live on until the session is reset, closed or
/// lost. A block that has not stopped within the executor's
/// [`session_grace`](crate::ExecutorBuilder::session_grace) is killed with its session's
/// whole process, and later blocks get [`Error::SessionLost`] until [`reset`](Session::reset).
///
/// # A lost session
///
/// When the session's process ends under a block (the block exits it, forks and lets the
/// parent exit, closes the session's control pipe; it is killed from outside or by the OOM
/// killer), that block ends [`lost`](crate::ExitStatus::lost), never a success, and later
/// blocks get [`Error::SessionLost`] saying why, until [`reset`](Session::reset).
///
/// # Standard streams
///
/// Each block's stdout and stderr are its own [`Output`]'s, not namespace state: a block that
/// closes fd 1 or 2, or `sys.stdout`/`sys.stderr`, does not silence the next block (the
/// session reopens whatever is closed before each block). A descriptor a block redirected
/// (`os.dup2`) stays redirected, as the namespace's own choice.
///
/// # Rich results
///
/// A block that ends with an expression returns its value as a
/// [`RichResult`](crate::RichResult) of kind [`Value`](crate::ResultKind::Value), as a
/// notebook cell does. A result that a thread left running by an earlier block sends between
/// blocks, when no block runs, is dropped; one it sends while a block runs is that block's.
///
/// ```no_run
/// # fn main() -> dockexec::Result<()> {
/// let executor = dockexec::Executor::builder().start()?;
/// let session = executor.session()?;
/// session.run("x = 20")?;
/// let out = session.run("print(x + 22)")?;
/// assert_eq!(out.stdout, b"42\n");
/// session.reset()?; // a clean namespace
/// assert!(!session.run("print(x)")?.status.success()); // NameError
/// # Ok(()) }
/// ```
///
/// # Drop
///
/// Dropping the session ends its process (a block still running in it is killed).
#[derive(Debug)]
pub struct Session<'a> {
    executor: &'a Executor,
    n: u64,
}

impl<'a> Session<'a> {
    pub(crate) fn new(executor: &'a Executor, n: u64) -> Session<'a> {
        Session { executor, n }
    }

    /// This session's number, from the same sequence as its executor's
    /// [`Execution::id`]s.
    pub fn id(&self) -> u64 {
        self.n
    }

    /// Runs Python `code` in the session to its end.
    ///
    /// # Errors
    /// As [`spawn`](Session::spawn).
    pub fn run(&self, code: &str) -> Result<Output> {
        self.spawn(code)?.into_output()
    }

    /// Queues Python `code` in the session and returns at once; it starts when the blocks
    /// spawned before it in this session have ended.
    ///
    /// # Errors
    /// [`Error::SessionLost`] when the session's process is gone; [`Error::Stopped`]
    /// after the executor's `stop()`; [`Error::Agent`] when the agent is gone.
    pub fn spawn(&self, code: &str) -> Result<Execution> {
        self.spawn_block(&CodeBlock::new(Language::Python, code))
    }

    /// Queues a Python [`CodeBlock`] (its `# filename:` line names the file its code is
    /// saved in, for tracebacks).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a block that is not Python; otherwise as
    /// [`spawn`](Session::spawn).
    pub fn spawn_block(&self, block: &CodeBlock) -> Result<Execution> {
        if block.language()? != Language::Python {
            return Err(Error::invalid(format!(
                "sessions run Python blocks, not {}",
                block.language_tag()
            )));
        }
        self.executor.inner().spawn(block, Some(self.n))
    }

    /// Replaces the session's process with a fresh one: a clean namespace, and a lost session
    /// usable again.
    ///
    /// # Errors
    /// [`Error::Agent`] when the agent cannot start a new one.
    pub fn reset(&self) -> Result<()> {
        self.agent()?
            .reset_session(execution_id(self.n))
            .map_err(|e| self.executor.inner().redact(e))
    }

    fn agent(&self) -> Result<&crate::runner::agent::AgentRunner> {
        self.executor
            .inner()
            .runner()
            .as_agent()
            .ok_or_else(|| Error::Agent("sessions need the in-container agent".into()))
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        if let Ok(agent) = self.agent() {
            agent.close_session(execution_id(self.n));
        }
    }
}
