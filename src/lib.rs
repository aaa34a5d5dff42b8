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
//! For many short tasks that must not see each other, a [`Pool`] keeps executors warm over
//! one or more engines and leases one per task, reset or replaced in between ([`Policy`]).
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
//! With the agent, a Python block's matplotlib figures, its `display(obj)` calls and a
//! session block's last expression come back too, as [`RichResult`]s (MIME bundles) in
//! [`Output::results`] and live through [`Execution::results`].
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
//! * [`cleanup_on_ctrlc`] (opt-in) stops every live executor on Ctrl-C. A container never
//!   outlives its owner: its main process holds the owner's connection and ends it when that
//!   closes, however the owner died (a dead-man's switch; see
//!   [`auto_remove`](ExecutorBuilder::auto_remove)). [`gc`] removes the containers that are
//!   no longer running and were kept; it never touches a running one unless [`GcOptions::force`] says so.
//!   It also removes the temporary work dirs of owners that died without stopping: each
//!   owner holds a `flock` on its own while it lives.
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
//!
//! # Security: what a block can reach
//!
//! The block is treated as hostile code and the container as its sandbox (see
//! [`ExecutorBuilder`] for the hardened defaults and how to relax them).
//!
//! * **The control plane is out of a non-root block's reach.** The container's init, its
//!   keeper and the agent run as root, with no capability that reaches the host (no
//!   `DAC_READ_SEARCH`, no `SYS_PTRACE`). The exec strategy's kill runs as the block's own
//!   user and finds a block's processes by what only its exec has (a parent outside the
//!   container, its own session, the tag Docker set), never by a file the block could write;
//!   its one marker lives in `/run/dockexec`, a sticky tmpfs outside the workspace. A block
//!   that stops its kill meets a root backstop that kills every process of its user. A
//!   non-root block that forges, replaces or pre-plants markers, plants FIFOs, or runs
//!   `kill -9 -1` ends only its own user's processes: the container survives and the next
//!   block runs normally.
//! * **The host never follows a path the container can change.** Code files are written
//!   and removed beneath the work dir one directory fd at a time, never through a link, so a
//!   block that swaps a directory for a link to a host directory gets a refused file name,
//!   not a write (or a delete) on the host.
//! * **A root block owns its container** (opt-in, [`ExecutorBuilder::user`]`("0")`): it can
//!   signal every process in it, forge the kill's marker, and end the container. The
//!   executor then reports [`Error::ContainerGone`] (the running blocks end
//!   [`lost`](ExitStatus::lost)), [`Executor::stop`] still succeeds, and nothing outside the
//!   container is lost: not the work dir, not other executors.

mod code;
mod config;
pub mod design;
mod device;
mod docker;
mod engine;
mod engine_info;
mod error;
mod execution;
mod executor;
mod host;
pub mod labels;
mod lifetime;
mod output;
mod podman;
mod pool;
mod redact;
mod registry;
mod runner;
mod runtime;
mod seccomp;
mod session;
mod spec;
mod sweep;
mod workspace;

/// The channel crate whose [`Receiver`](crossbeam_channel::Receiver) [`Execution::chunks`]
/// returns, re-exported so that callers can `select!` over it without naming a version.
pub use crossbeam_channel;

pub use code::{CodeBlock, Language, extract_code_blocks, guess_language};
pub use config::{BlockUser, EngineConfig, ExecutorConfig, ExtraHost, TlsConfig, VolumeConfig};
pub use device::DeviceRequest;
pub use engine::{Engine, Tls};
pub use engine_info::EngineInfo;
pub use error::{Error, Result};
pub use execution::{Execution, OutputLimit};
pub use executor::{
    DEFAULT_API_TIMEOUT, DEFAULT_IMAGE, DEFAULT_INIT_TIMEOUT, DEFAULT_MAX_OUTPUT,
    DEFAULT_SESSION_GRACE, DEFAULT_TIMEOUT, Executor, ExecutorBuilder, PullPolicy, PullProgress,
};
pub use output::{
    BlocksResult, Chunk, ExitStatus, MimeData, Output, ResultKind, RichResult, Stream,
};
pub use pool::{
    DEFAULT_ACQUIRE_TIMEOUT, DEFAULT_CAPACITY, DEFAULT_HEALTH_INTERVAL, DEFAULT_MIN_IDLE,
    EngineStatus, Lease, Policy, Pool, PoolBuilder, PoolStatus,
};
pub use redact::REDACTED;
pub use registry::{cleanup_on_ctrlc, stop_all};
pub use runner::Strategy;
pub use runtime::Runtime;
pub use session::Session;
pub use spec::{
    DEFAULT_MEMORY, DEFAULT_NOFILE, DEFAULT_PIDS, DEFAULT_TMP_SIZE, KEPT_CAPABILITIES, NOBODY,
};
pub use sweep::{GC_CREATED_GRACE, GcOptions, gc, gc_with};
pub use workspace::WORKSPACE;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[cfg(any(feature = "bench", feature = "fuzz"))]
mod hooks;
#[cfg(feature = "bench")]
#[doc(hidden)]
pub use hooks::__bench;
#[cfg(feature = "fuzz")]
#[doc(hidden)]
pub use hooks::__fuzz;
