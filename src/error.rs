//! The crate's error type.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a block could not be run or observed.
///
/// A non-zero exit, a timeout, a cancellation or truncated output are *not* errors: they are
/// results, reported by [`ExitStatus`](crate::ExitStatus). An `Error` means dockexec could not
/// do what was asked. Every message says what happened and, where it helps, what to check;
/// nothing in dockexec panics on a fault outside it.
///
/// # Failure modes
///
/// | what happened | what you get |
/// |---|---|
/// | no daemon at the socket, or it refuses the connection | [`Error::Connect`], naming the socket |
/// | `DOCKER_HOST` is `tcp://`, `ssh://`, … | [`Error::Connect`]: only `unix://` is supported |
/// | the daemon dies or drops the connection mid-call | [`Error::Transport`] (a call), or the block's status [`lost`](crate::ExitStatus::lost) with its output so far; later calls, `stop()` included, give [`Error::Connect`] ("connection refused: is the docker daemon running?") at once |
/// | the daemon is restarted after a crash | the crash ended the container through the dead-man's switch, `live-restore` or not: calls give [`Error::ContainerGone`], `stop()` succeeds, a new executor works |
/// | the daemon stops answering | [`Error::Timeout`] naming the call and the limit that passed ([`api_timeout`](crate::ExecutorBuilder::api_timeout) for any answer, [`init_timeout`](crate::ExecutorBuilder::init_timeout) for the init command); a running block's worker cuts its own stream, and `stop()` still returns |
/// | something listens at the socket but never answers | [`Error::Connect`] naming the socket, after [`api_timeout`](crate::ExecutorBuilder::api_timeout) |
/// | the image is absent and cannot be pulled | [`Error::ImageNotFound`] / [`Error::Pull`], with the registry's message |
/// | the container is removed or killed from outside | the running blocks end [`lost`](crate::ExitStatus::lost); later calls give [`Error::ContainerGone`] |
/// | the container is paused from outside | the timeout still fires and the block ends [`timed_out`](crate::ExitStatus::timed_out); new blocks get [`Error::ContainerPaused`] until it is unpaused |
/// | a block exhausts the memory limit | its status says [`oom_killed`](crate::ExitStatus::oom_killed) |
/// | a block is killed by a signal (its own `kill -9 $$`, the OOM killer) | its status says [`signal`](crate::ExitStatus::signal) |
/// | a [`runtime`](crate::ExecutorBuilder::runtime) the daemon has not registered (no `runsc`) | [`Error::RuntimeNotFound`] at `start()`, naming it, the runtimes the daemon has, and how to install and register it |
/// | a [`device_request`](crate::ExecutorBuilder::device_request) the host cannot meet (no GPU, no driver) | [`Error::Docker`] at `start()`, naming the request |
/// | any message that would show a [`secret_env`](crate::ExecutorBuilder::secret_env) value | the value is replaced by [`REDACTED`](crate::REDACTED) |
/// | the code file cannot be written (disk full, permissions) | [`Error::Io`] naming the path and the cause, e.g. "its filesystem is full" (exec); [`Error::Agent`] with the reason, e.g. "No space left on device" (agent) |
/// | a bad request: unknown language, a path outside the workspace, zero timeout | [`Error::InvalidInput`], and nothing is run or written |
/// | the image has no Python but [`Strategy::Agent`](crate::Strategy::Agent) was forced | [`Error::Agent`] at `start()` ([`Strategy::Auto`](crate::Strategy::Auto) falls back to exec) |
/// | the in-container agent dies or its channel breaks | its blocks end [`lost`](crate::ExitStatus::lost); the next block starts a fresh agent |
/// | a session block ignores the interrupt past the grace | the block ends cancelled; later blocks get [`Error::SessionLost`] until [`reset`](crate::Session::reset) |
/// | a session's process dies under a block (it exits, forks and exits, is killed from outside or by the OOM killer, a block closes its control pipe) | the block ends [`lost`](crate::ExitStatus::lost), never a success; later blocks get [`Error::SessionLost`] with that cause until [`reset`](crate::Session::reset) |
/// | anything after [`Executor::stop`](crate::Executor::stop) | [`Error::Stopped`] |
/// | [`Pool::acquire`](crate::Pool::acquire) finds no free executor within its timeout | [`Error::PoolTimeout`], naming each engine's state and last error |
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The Docker daemon could not be reached: the socket is missing, refused the connection, or
    /// `DOCKER_HOST` names a transport dockexec does not support.
    Connect {
        /// The socket (or `DOCKER_HOST` value) that was tried.
        endpoint: String,
        /// What went wrong, in words.
        reason: String,
        /// The underlying I/O error, if any.
        source: Option<io::Error>,
    },
    /// The daemon answered a request with an error status.
    Docker {
        /// The HTTP status code.
        status: u16,
        /// The daemon's message (from its JSON `message` field, or the plain-text body).
        message: String,
    },
    /// The image does not exist locally, and pulling it failed or was not allowed.
    ImageNotFound {
        /// The image reference.
        image: String,
        /// The daemon's or registry's explanation.
        message: String,
    },
    /// Pulling an image failed part-way (an `error` in the pull's progress stream).
    Pull {
        /// The image reference.
        image: String,
        /// The registry's or daemon's message.
        message: String,
    },
    /// The executor's container is gone: removed or killed from outside.
    ContainerGone {
        /// The container id.
        container: String,
    },
    /// The executor's container is paused (`docker pause`, from outside): it is still there,
    /// and `docker unpause` lets the executor go on. Running blocks still end at their
    /// timeout, and [`stop`](crate::Executor::stop) still removes the container.
    ContainerPaused {
        /// The container id.
        container: String,
    },
    /// The executor has been stopped; it runs nothing more.
    Stopped,
    /// The caller asked for something that cannot be done: empty code, an unknown language, a
    /// zero timeout, a file name outside the workspace, no blocks.
    InvalidInput(String),
    /// The daemon's answer could not be understood (bad JSON, a broken frame stream).
    Protocol {
        /// What could not be understood, in words.
        message: String,
        /// The parser's error, if any.
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The `init_command` given to the builder exited non-zero; the container was removed.
    InitCommand {
        /// The command's exit code.
        code: Option<i64>,
        /// Its standard output and standard error, merged in arrival order, lossily decoded.
        output: String,
    },
    /// A request to the daemon took longer than its limit.
    Timeout {
        /// Which call timed out.
        what: String,
    },
    /// A local file operation failed (writing a code file, creating the workspace).
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Talking to the daemon failed below HTTP (a reset connection, a read error).
    Transport {
        /// The call that failed, e.g. `"exec start"`.
        what: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A process-wide hook could not be installed (for example a Ctrl-C handler already exists).
    Hook {
        /// Which hook.
        what: &'static str,
        /// Why it could not be installed.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The in-container agent ([`Strategy::Agent`](crate::Strategy::Agent)) could not be
    /// started (the image has no Python), could not start a block or session, or went away.
    Agent(String),
    /// The [`Session`](crate::Session) was lost: its process is gone. The string says why,
    /// e.g. "a block did not stop within 2 s of an interrupt, so the session's process was
    /// killed", "the session's process exited (status 0) during a block", "the session's
    /// process was killed by signal 9 (SIGKILL) during a block".
    /// [`Session::reset`](crate::Session::reset) starts afresh.
    SessionLost(String),
    /// The [`runtime`](crate::ExecutorBuilder::runtime) asked for is not registered with the
    /// daemon. The message names it, the runtimes the daemon has, and how to install and
    /// register it.
    RuntimeNotFound {
        /// The runtime asked for (`runsc`).
        runtime: crate::Runtime,
        /// The engine, and the runtimes it has, in words.
        engine: String,
    },
    /// [`Pool::acquire`](crate::Pool::acquire) found no free executor in time: every one
    /// is leased, or the engines are down or full, or their starts fail.
    PoolTimeout {
        /// How long it waited.
        waited: std::time::Duration,
        /// Each engine's state and last error, in words.
        why: String,
    },
    /// A worker thread could not be started (the process is out of threads or memory).
    Thread(io::Error),
    /// A bug in dockexec: a worker thread ended without a result.
    Internal(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Connect {
                endpoint, reason, ..
            } => write!(
                f,
                "cannot connect to the docker daemon at {endpoint}: {reason}"
            ),
            Error::Docker { status, message } => {
                write!(f, "docker daemon error {status}: {message}")
            }
            Error::ImageNotFound { image, message } => {
                write!(f, "image {image} not found: {message}")
            }
            Error::Pull { image, message } => write!(f, "pulling image {image} failed: {message}"),
            Error::ContainerGone { container } => {
                write!(
                    f,
                    "container {container} is gone (removed or killed from outside)"
                )
            }
            Error::ContainerPaused { container } => write!(
                f,
                "container {container} is paused (docker unpause it to go on)"
            ),
            Error::Stopped => f.write_str("the executor has been stopped"),
            Error::InvalidInput(msg) => write!(f, "invalid input: {msg}"),
            Error::Protocol { message, .. } => write!(
                f,
                "unexpected answer from the docker daemon: {message} (is DOCKER_HOST a docker \
                 daemon?)"
            ),
            Error::InitCommand { code, output } => {
                let code = code.map_or_else(|| "unknown".to_string(), |c| c.to_string());
                write!(
                    f,
                    "init command failed with exit code {code}: {}",
                    output.trim_end()
                )
            }
            Error::Timeout { what } => {
                write!(
                    f,
                    "{what} timed out; is the docker daemon hung or overloaded?"
                )
            }
            Error::Io { path, source } => {
                write!(f, "i/o error on {}", path.display())?;
                // What to check, by cause; the cause's own words stay in `source()`.
                match source.kind() {
                    io::ErrorKind::StorageFull => f.write_str(
                        ": its filesystem is full (free some space, or choose another work dir)",
                    ),
                    io::ErrorKind::QuotaExceeded => {
                        f.write_str(": the disk quota of its filesystem is exceeded")
                    }
                    io::ErrorKind::ReadOnlyFilesystem => {
                        f.write_str(": its filesystem is read-only")
                    }
                    io::ErrorKind::PermissionDenied => f.write_str(": permission denied"),
                    _ => Ok(()),
                }
            }
            Error::Transport { what, .. } => write!(
                f,
                "the connection to the docker daemon failed during {what}; is the daemon still \
                 running?"
            ),
            Error::Hook { what, .. } => write!(f, "cannot install the {what} handler"),
            Error::Thread(_) => f.write_str("cannot start a worker thread"),
            Error::Agent(msg) => write!(f, "in-container agent: {msg}"),
            Error::SessionLost(cause) => write!(
                f,
                "the session was lost: {cause} (reset() starts a fresh one)"
            ),
            Error::RuntimeNotFound { runtime, engine } => write!(
                f,
                "the OCI runtime {runtime} is not registered with the docker daemon {engine}: \
                 {}",
                runtime.install_hint()
            ),
            Error::PoolTimeout { waited, why } => write!(
                f,
                "no pooled executor became free within {waited:?} (engines: {why})"
            ),
            Error::Internal(msg) => write!(f, "internal error: {msg}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Connect {
                source: Some(e), ..
            } => Some(e),
            Error::Io { source, .. } | Error::Transport { source, .. } | Error::Thread(source) => {
                Some(source)
            }
            Error::Protocol {
                source: Some(e), ..
            }
            | Error::Hook { source: e, .. } => Some(&**e),
            _ => None,
        }
    }
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Error {
        Error::InvalidInput(msg.into())
    }

    /// A [`Error::Protocol`] with no underlying error.
    pub(crate) fn protocol(message: impl Into<String>) -> Error {
        Error::Protocol {
            message: message.into(),
            source: None,
        }
    }

    /// A [`Error::Protocol`] caused by `source`.
    pub(crate) fn protocol_from(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        Error::Protocol {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// True when the daemon answered 404 (no such container, exec or image).
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, Error::Docker { status: 404, .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_stays_small() {
        // Results travel through every call; a fat error makes every `Result` fat.
        assert!(
            std::mem::size_of::<Error>() <= 80,
            "{}",
            std::mem::size_of::<Error>()
        );
    }

    #[test]
    fn io_errors_name_their_cause() {
        let full = Error::io("/w/x.py", io::Error::from_raw_os_error(28));
        assert_eq!(
            full.to_string(),
            "i/o error on /w/x.py: its filesystem is full (free some space, or choose another \
             work dir)"
        );
        let other = Error::io("/w/x.py", io::Error::other("boom"));
        assert_eq!(other.to_string(), "i/o error on /w/x.py");
    }

    #[test]
    fn error_is_send_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<Error>();
    }
}
