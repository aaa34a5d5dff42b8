//! Run code blocks — Python, shell, bash, PowerShell — inside a Docker container,
//! synchronously.
//!
//! dockexec talks to the Docker Engine over its Unix socket with blocking HTTP. Each
//! execution has one worker thread; every handle is `Send + Sync`; cancellation travels over
//! channels and kills the block's whole process tree; [`Executor::stop`] cancels what is
//! running, joins every worker and removes the container, from any thread.
//!
//! Blocks run through a warm agent inside the container when the image has Python (a few
//! milliseconds per block, and stateful [`Session`]s), else through one `docker exec` each,
//! with nothing but POSIX `sh` needed; [`Strategy`] chooses, and both keep the same contract.
//!
//! ```
//! # fn main() -> dockexec::Result<()> {
//! use dockexec::{CodeBlock, Executor};
//!
//! let executor = Executor::builder().image("python:3-slim").start()?;
//! let output = executor.run(&CodeBlock::python("print(6 * 7)"))?;
//! assert!(output.status.success());
//! assert_eq!(output.stdout_lossy(), "42\n");
//! executor.stop()?;
//! # Ok(()) }
//! ```
//!
//! A non-zero exit, a timeout and a cancellation are results, reported by
//! [`ExitStatus`]; an [`Error`] means the block could not be run or observed.
//!
//! # Threads, cancellation and stopping
//!
//! * [`Executor::spawn`] creates and starts the block's exec before it returns (so a bad
//!   request fails right there), then hands the stream to one worker thread and returns an
//!   [`Execution`]. Every method of both types takes `&self`; both are `Send + Sync`.
//! * Any number of threads may [`wait`](Execution::wait) on one execution; they all receive
//!   the same `&Output`. [`cancel`](Execution::cancel) only signals the worker, over a channel,
//!   and returns at once; the worker kills the block's whole process tree from inside the
//!   container with a POSIX `sh` script (no `pkill` needed), keeps the partial output, and the
//!   status says [`cancelled`](ExitStatus::cancelled).
//! * The timeout is enforced by the worker on the host: a block that ignores every signal and
//!   prints nothing still returns at its deadline, [`timed_out`](ExitStatus::timed_out).
//! * [`Executor::stop`] may be called from any thread, at any time, concurrently: it cancels
//!   every live execution (including those whose handles were dropped), removes the container,
//!   and joins every worker before it returns. Dropping the executor does the same,
//!   ignoring errors. If the daemon stops answering, each worker shuts its own socket down
//!   after a grace period, so `stop` still returns.
//! * [`cleanup_on_ctrlc`] (opt-in) stops every live executor on Ctrl-C; [`gc`] removes the
//!   containers of processes that died without stopping theirs.
//!
//! ```
//! # fn main() -> dockexec::Result<()> {
//! use std::time::Duration;
//! use dockexec::{CodeBlock, Executor};
//!
//! let executor = Executor::builder().start()?;
//! let execution = executor.spawn(&CodeBlock::sh("sleep 1000"))?;
//! std::thread::scope(|s| {
//!     s.spawn(|| execution.cancel()); // from another thread
//!     let output = execution.wait_timeout(Duration::from_secs(10))?.expect("cancelled");
//!     assert!(output.status.cancelled());
//!     dockexec::Result::Ok(())
//! })?;
//! executor.stop()?;
//! # Ok(()) }
//! ```

mod code;
mod docker;
mod error;
mod execution;
mod executor;
pub mod labels;
mod orphans;
mod output;
mod registry;
mod runner;
mod session;
mod workspace;

/// The channel crate whose [`Receiver`](crossbeam_channel::Receiver) [`Execution::chunks`]
/// returns, re-exported so that callers can `select!` over it without naming a version.
pub use crossbeam_channel;

pub use code::{CodeBlock, Language, extract_code_blocks, guess_language};
pub use error::{Error, Result};
pub use execution::{Execution, OutputLimit};
pub use executor::{
    DEFAULT_IMAGE, DEFAULT_MAX_OUTPUT, DEFAULT_MEMORY, DEFAULT_NOFILE, DEFAULT_PIDS,
    DEFAULT_SESSION_GRACE, DEFAULT_TIMEOUT, DEFAULT_TMP_SIZE, EXEC_KILL_CAPABILITIES, Executor,
    ExecutorBuilder, KEPT_CAPABILITIES, NOBODY, PullPolicy, PullProgress,
};
pub use orphans::gc;
pub use output::{BlocksResult, Chunk, ExitStatus, Output, Stream};
pub use registry::{cleanup_on_ctrlc, stop_all};
pub use runner::Strategy;
pub use session::Session;
pub use workspace::WORKSPACE;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// Not part of the API: hooks for this crate's own benches, behind the `bench` feature. May
/// change at any time.
#[cfg(feature = "bench")]
#[doc(hidden)]
pub mod __bench {
    use std::path::Path;

    /// The wrapper every block runs under, so a baseline can run the floor the same way.
    pub const RUN_SCRIPT: &str = crate::runner::exec::RUN_SCRIPT;

    /// The newest Engine API version dockexec asks for, so a baseline client asks for the same.
    pub const MAX_API: (u32, u32) = crate::docker::api::MAX_API;

    /// The private Engine client, for measuring it against a hand-written one.
    #[derive(Debug, Clone)]
    pub struct BenchClient(crate::docker::api::Client);

    impl BenchClient {
        /// Connects (ping + version negotiation).
        pub fn connect(socket: &Path) -> crate::Result<BenchClient> {
            crate::docker::api::Client::connect(socket).map(BenchClient)
        }

        /// `GET /_ping` over a pooled connection.
        pub fn ping(&self) -> crate::Result<()> {
            self.0.ping()
        }

        /// The negotiated API version, e.g. "1.41".
        pub fn api_version(&self) -> String {
            self.0.api_version().to_string()
        }

        /// One exec round trip: create, start (reading the stream to its end), inspect.
        /// Returns the exit code.
        pub fn exec_round_trip(&self, container: &str, cmd: &[&str]) -> crate::Result<Option<i64>> {
            let body = serde_json::json!({
                "Cmd": cmd,
                "AttachStdout": true,
                "AttachStderr": true,
            });
            self.0
                .exec_collect(container, &body, None)
                .map(|(code, _, _)| code)
        }
    }

    /// Demultiplexes a whole framed buffer; returns (stdout bytes, stderr bytes).
    pub fn demux(input: &[u8], piece: usize) -> (usize, usize) {
        let mut d = crate::docker::frames::Demuxer::new(false);
        let (mut o, mut e) = (0, 0);
        for chunk in input.chunks(piece.max(1)) {
            d.feed(chunk, |s, b| match s {
                crate::Stream::Stdout => o += b.len(),
                crate::Stream::Stderr => e += b.len(),
            })
            .expect("well-formed frames");
        }
        (o, e)
    }
}
