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
mod device;
mod docker;
mod error;
mod execution;
mod executor;
pub mod labels;
mod orphans;
mod output;
mod redact;
mod registry;
mod runner;
mod seccomp;
mod session;
mod workspace;

/// The channel crate whose [`Receiver`](crossbeam_channel::Receiver) [`Execution::chunks`]
/// returns, re-exported so that callers can `select!` over it without naming a version.
pub use crossbeam_channel;

pub use code::{CodeBlock, Language, extract_code_blocks, guess_language};
pub use device::DeviceRequest;
pub use error::{Error, Result};
pub use execution::{Execution, OutputLimit};
pub use executor::{
    DEFAULT_API_TIMEOUT, DEFAULT_IMAGE, DEFAULT_INIT_TIMEOUT, DEFAULT_MAX_OUTPUT, DEFAULT_MEMORY,
    DEFAULT_NOFILE, DEFAULT_PIDS, DEFAULT_SESSION_GRACE, DEFAULT_TIMEOUT, DEFAULT_TMP_SIZE,
    Executor, ExecutorBuilder, KEPT_CAPABILITIES, NOBODY, PullPolicy, PullProgress,
};
pub use orphans::{GC_CREATED_GRACE, GcOptions, gc, gc_with};
pub use output::{BlocksResult, Chunk, ExitStatus, Output, Stream};
pub use redact::REDACTED;
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

    /// The kill script the exec path runs in a second exec (args: marker prefix, tag), so the
    /// async rival in `benches/rival` kills a block exactly the same way.
    pub const KILL_SCRIPT: &str = crate::runner::exec::KILL_SCRIPT;

    /// The container-create body `builder.start()` would send for a workspace at `workspace`
    /// (labels carry `id`), so the async rival creates the very same container.
    pub fn create_body(
        builder: &crate::ExecutorBuilder,
        id: &str,
        workspace: &Path,
    ) -> serde_json::Value {
        builder.create_body(id, workspace)
    }

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

/// Not part of the API: the private parsers, for this crate's cargo-fuzz targets (`fuzz/`),
/// behind the `fuzz` feature. Thin wrappers only; may change at any time.
#[cfg(feature = "fuzz")]
#[doc(hidden)]
pub mod __fuzz {
    use std::path::PathBuf;

    pub use crate::output::Stream;

    /// Docker's stdout/stderr frame demultiplexer (`docker::frames`).
    #[derive(Debug)]
    pub struct Demuxer(crate::docker::frames::Demuxer);

    impl Demuxer {
        /// A demuxer for a framed stream (`raw = false`) or a TTY stream (`raw = true`).
        pub fn new(raw: bool) -> Demuxer {
            Demuxer(crate::docker::frames::Demuxer::new(raw))
        }

        /// Feeds the next bytes; `emit` gets each payload piece.
        pub fn feed(
            &mut self,
            input: &[u8],
            emit: impl FnMut(Stream, &[u8]),
        ) -> Result<(), String> {
            self.0.feed(input, emit).map_err(|e| e.0)
        }

        /// Checks that the stream ended on a frame boundary.
        pub fn finish(&self) -> Result<(), String> {
            self.0.finish().map_err(|e| e.0)
        }
    }

    /// The agent protocol's largest frame length.
    pub const MAX_FRAME: u32 = crate::runner::protocol::MAX_FRAME;

    /// Encodes one agent protocol frame.
    pub fn encode(kind: u8, id: u32, payload: &[u8]) -> Vec<u8> {
        crate::runner::protocol::encode(kind, id, payload)
    }

    /// The agent protocol's incremental decoder (`runner::protocol`).
    #[derive(Debug, Default)]
    pub struct Decoder(crate::runner::protocol::Decoder);

    impl Decoder {
        /// A fresh decoder.
        pub fn new() -> Decoder {
            Decoder::default()
        }

        /// Feeds the next bytes; `emit` gets each whole frame as (kind, id, payload).
        pub fn feed(
            &mut self,
            bytes: &[u8],
            mut emit: impl FnMut(u8, u32, Vec<u8>),
        ) -> Result<(), String> {
            self.0
                .feed(bytes, |f| emit(f.kind, f.id, f.payload))
                .map_err(|e| e.0)
        }

        /// An error if the stream ended inside a frame.
        pub fn finish(&self) -> Result<(), String> {
            self.0.finish().map_err(|e| e.0)
        }
    }

    /// dockexec's state directory inside the workspace.
    pub const STATE_DIR: &str = crate::workspace::STATE_DIR;

    /// A block's requested file name as a workspace-relative path.
    pub fn workspace_relative(name: &str) -> crate::Result<PathBuf> {
        crate::workspace::workspace_relative(name)
    }

    /// A container path as (directory, file name).
    pub fn split_container_path(path: &str) -> crate::Result<(String, String)> {
        crate::workspace::split_container_path(path)
    }

    /// The message of an Engine error body.
    pub fn error_message(body: &str, status: u16, what: &str) -> String {
        crate::docker::api::error_message(body, status, what)
    }

    /// An image pull failure, classified.
    pub fn pull_error(image: &str, status: u16, message: String) -> crate::Error {
        crate::docker::api::pull_error(image, status, message)
    }

    /// `repo[:tag][@digest]` as (repository, tag or digest).
    pub fn split_reference(image: &str) -> (&str, Option<&str>) {
        crate::docker::api::split_reference(image)
    }

    /// `"1.41"` as `(1, 41)`.
    pub fn parse_api(s: &str) -> Option<(u32, u32)> {
        crate::docker::api::parse_api(s)
    }

    /// Parses a `GET /version` body and negotiates the API version from it, as `connect`
    /// does: `None` when the body does not parse.
    pub fn negotiate(body: &[u8]) -> Option<crate::Result<String>> {
        let v: crate::docker::api::Version = serde_json::from_slice(body).ok()?;
        Some(crate::docker::api::negotiate(&v))
    }

    /// The oldest and newest Engine API versions dockexec speaks.
    pub const API_RANGE: ((u32, u32), (u32, u32)) =
        (crate::docker::api::MIN_API, crate::docker::api::MAX_API);

    /// Parses the JSON bodies the client reads (exec inspect, container inspect, one pull
    /// progress line), as the client does; the results' `Debug` text, so that they are used.
    pub fn parse_bodies(body: &[u8]) -> [Option<String>; 3] {
        use crate::docker::api::{ContainerInfo, ExecInfo, PullEvent};
        let exec = serde_json::from_slice::<ExecInfo>(body).ok();
        let container = serde_json::from_slice::<ContainerInfo>(body).ok();
        let pull = std::str::from_utf8(body)
            .ok()
            .and_then(|s| serde_json::from_str::<PullEvent>(s).ok());
        [
            exec.map(|v| format!("{v:?}")),
            container.map(|v| format!("{v:?}")),
            pull.map(|v| format!("{v:?}")),
        ]
    }

    /// The first regular file of a tar archive.
    pub fn untar_first_file(tar: &[u8]) -> crate::Result<(String, Vec<u8>)> {
        crate::docker::api::untar_first_file(tar)
    }

    /// A tar archive holding one regular file.
    pub fn tar_one_file(name: &str, data: &[u8], mode: u32) -> crate::Result<Vec<u8>> {
        crate::docker::api::tar_one_file(name, data, mode)
    }
}
