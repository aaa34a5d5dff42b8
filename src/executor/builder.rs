//! [`ExecutorBuilder`]: the options, their validation, and `start()`. What container they
//! make is [`ContainerSpec`]'s business (`src/spec.rs`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::Value;

use super::start::{ProgressFn, PullPolicy};
use super::{Executor, Parts, STOP_REMOVE_TIMEOUT};
use crate::device::DeviceRequest;
use crate::docker::api;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::execution::OutputLimit;
use crate::host;
use crate::lifetime::Keeper;
use crate::redact::{REDACTED, Redactor};
use crate::runner::Strategy;
use crate::spec::{DEFAULT_MEMORY, DEFAULT_NOFILE, DEFAULT_PIDS, TmpSize, UserChoice, Volume};

/// Default for [`ExecutorBuilder::image`].
pub const DEFAULT_IMAGE: &str = "python:3-slim";
/// Default for [`ExecutorBuilder::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default for [`ExecutorBuilder::max_output_bytes`]: 64 MiB.
///
/// Large enough that no ordinary script meets it (a 10 MB dump passes untouched), small enough
/// that a `while True: print(...)` loop cannot take the host's memory: with the default 60 s
/// timeout such a loop writes some gigabytes, all but 64 MiB of which are dropped.
pub const DEFAULT_MAX_OUTPUT: usize = 64 * 1024 * 1024;
/// Default for [`ExecutorBuilder::session_grace`].
pub const DEFAULT_SESSION_GRACE: Duration = Duration::from_secs(2);
/// Default for [`ExecutorBuilder::api_timeout`]: 30 s.
///
/// A healthy daemon answers in milliseconds, and in a few seconds when the host is loaded;
/// 30 s is far past that, and short enough that a hung daemon is reported while someone
/// still waits for the answer.
pub const DEFAULT_API_TIMEOUT: Duration = api::DEFAULT_API_TIMEOUT;
/// Default for [`ExecutorBuilder::init_timeout`]: 10 min.
///
/// Enough for a large `pip install` on a slow mirror; an init command is run once per
/// executor, so a generous bound costs nothing when all goes well.
pub const DEFAULT_INIT_TIMEOUT: Duration = Duration::from_secs(600);

/// Configures and starts an [`Executor`]. Every option has a documented default; all can be
/// saved and loaded as an [`ExecutorConfig`](crate::ExecutorConfig) ([`Self::to_config`]).
///
/// ```no_run
/// # fn main() -> dockexec::Result<()> {
/// use std::time::Duration;
/// let executor = dockexec::Executor::builder()
///     .image("python:3-slim")
///     .timeout(Some(Duration::from_secs(30)))
///     .env("GREETING", "hello")
///     .start()?;
/// # Ok(()) }
/// ```
pub struct ExecutorBuilder {
    pub(crate) image: String,
    pub(crate) name: Option<String>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) work_dir: Option<PathBuf>,
    pub(crate) bind_dir: Option<PathBuf>,
    pub(crate) auto_remove: bool,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) volumes: Vec<Volume>,
    pub(crate) extra_hosts: Vec<(String, String)>,
    pub(crate) init_command: Option<String>,
    pub(crate) init_timeout: Option<Duration>,
    pub(crate) api_timeout: Duration,
    pub(crate) user: UserChoice,
    pub(crate) network: String,
    pub(crate) drop_caps: bool,
    pub(crate) cap_add: Vec<String>,
    pub(crate) no_new_privileges: bool,
    pub(crate) seccomp: bool,
    pub(crate) read_only_root: bool,
    pub(crate) tmp_size: TmpSize,
    pub(crate) workspace_size: TmpSize,
    pub(crate) nofile: Option<u64>,
    pub(crate) memory: Option<u64>,
    /// In CPUs, as given: checked by `validate`, converted to Docker's `NanoCpus` there.
    pub(crate) cpus: Option<f64>,
    pub(crate) pids_limit: Option<i64>,
    pub(crate) delete_code_files: bool,
    pub(crate) max_output: Option<usize>,
    pub(crate) on_output_limit: OutputLimit,
    pub(crate) pull: PullPolicy,
    pub(crate) progress: Option<Mutex<ProgressFn>>,
    pub(crate) engine: Option<Engine>,
    pub(crate) gc_orphans: bool,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) strategy: Strategy,
    pub(crate) python_zygote: bool,
    pub(crate) session_grace: Duration,
    /// Secret variables: in the container's `Env`, redacted from everything shown.
    pub(crate) secret_env: BTreeMap<String, String>,
    pub(crate) device_requests: Vec<DeviceRequest>,
    /// Merged over the `HostConfig` built from the options above, last.
    pub(crate) host_config: Option<Value>,
    /// Run even where the engine says it cannot enforce a limit asked for (`podman`).
    pub(crate) allow_unenforced: bool,
    /// The OCI runtime; `None`: the daemon's default.
    pub(crate) runtime: Option<crate::Runtime>,
}

impl fmt::Debug for ExecutorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecutorBuilder")
            .field("image", &self.image)
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .field("work_dir", &self.work_dir)
            .field("network", &self.network)
            .field("max_output", &self.max_output)
            // Names only: a secret's value never appears in a Debug.
            .field(
                "secret_env",
                &self
                    .secret_env
                    .keys()
                    .map(|k| format!("{k}={REDACTED}"))
                    .collect::<Vec<_>>(),
            )
            .field("device_requests", &self.device_requests)
            .field("host_config_json", &self.host_config)
            .field("runtime", &self.runtime)
            .finish_non_exhaustive()
    }
}

impl Default for ExecutorBuilder {
    fn default() -> Self {
        ExecutorBuilder {
            image: DEFAULT_IMAGE.to_string(),
            name: None,
            timeout: Some(DEFAULT_TIMEOUT),
            work_dir: None,
            bind_dir: None,
            auto_remove: true,
            env: BTreeMap::new(),
            volumes: Vec::new(),
            extra_hosts: Vec::new(),
            init_command: None,
            init_timeout: Some(DEFAULT_INIT_TIMEOUT),
            api_timeout: DEFAULT_API_TIMEOUT,
            user: UserChoice::Default,
            network: "none".to_string(),
            drop_caps: true,
            cap_add: Vec::new(),
            no_new_privileges: true,
            seccomp: true,
            read_only_root: true,
            tmp_size: TmpSize::Auto,
            workspace_size: TmpSize::Auto,
            nofile: Some(DEFAULT_NOFILE),
            memory: Some(DEFAULT_MEMORY),
            cpus: None,
            pids_limit: Some(DEFAULT_PIDS),
            delete_code_files: false,
            max_output: Some(DEFAULT_MAX_OUTPUT),
            on_output_limit: OutputLimit::Discard,
            pull: PullPolicy::Missing,
            progress: None,
            engine: None,
            gc_orphans: true,
            labels: BTreeMap::new(),
            strategy: Strategy::Auto,
            python_zygote: true,
            session_grace: DEFAULT_SESSION_GRACE,
            secret_env: BTreeMap::new(),
            device_requests: Vec::new(),
            host_config: None,
            allow_unenforced: false,
            runtime: None,
        }
    }
}

impl ExecutorBuilder {
    /// A builder with every option at its default.
    pub fn new() -> ExecutorBuilder {
        ExecutorBuilder::default()
    }

    /// The image to run. Defaults to `python:3-slim`.
    pub fn image(&mut self, image: impl Into<String>) -> &mut Self {
        self.image = image.into();
        self
    }

    /// The container's name. Defaults to a unique `dockexec-<id>`.
    pub fn name(&mut self, name: impl Into<String>) -> &mut Self {
        self.name = Some(name.into());
        self
    }

    /// Each block's time limit; `None` for none. Defaults to 60 s.
    ///
    /// A zero duration is refused by [`start`](ExecutorBuilder::start).
    pub fn timeout(&mut self, timeout: Option<Duration>) -> &mut Self {
        self.timeout = timeout;
        self
    }

    /// The host directory mounted at `/workspace`, where code files are written. It is created
    /// if missing (then given to the block user like a temporary one) and kept at stop. An
    /// existing directory is left as it is, so it must be writable by the block user (see
    /// [`user`](Self::user); [`host_user`](Self::host_user) runs blocks as you). Defaults to a
    /// fresh temporary directory `dockexec-<id>` under the host's temp dir, mode `0711` and the
    /// block user's, removed at stop; this process holds a `flock` on it until then, and
    /// [`gc`](crate::gc) (or the next `start()`) removes it once that lock is free, when this
    /// process died without stopping. On an engine that does not share this host's filesystem
    /// ([`Engine::host_filesystem_shared`]) there is no host dir: the workspace is a tmpfs in
    /// the container (see [`workspace_size`](Self::workspace_size)), and `start()` refuses
    /// this option with [`Error::InvalidInput`] saying why.
    pub fn work_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.work_dir = Some(dir.into());
        self
    }

    /// The work dir's path as the *daemon* sees it, when that differs from ours (dockexec
    /// itself running in a container, with the daemon's socket mounted). Defaults to the work
    /// dir. Refused, as [`work_dir`](Self::work_dir) is, on an engine without a shared
    /// filesystem.
    pub fn bind_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.bind_dir = Some(dir.into());
        self
    }

    /// Whether the daemon removes the container by itself when it stops (Docker's
    /// `AutoRemove`). Defaults to `true`: with it, the dead-man's switch leaves nothing behind.
    /// The container's main process (its *keeper*) holds this process's connection and exits
    /// when that closes, so a container never outlives its owner, however the owner dies
    /// (SIGKILL included, in any PID namespace or on another host); `AutoRemove` then removes
    /// it, in about a second, with no [`gc`](crate::gc) run by anyone. With `false` the ended
    /// container stays, exited, until `gc` removes it (to read its logs first, say).
    /// `stop()` removes the container either way.
    ///
    /// [`Executor::restart`](crate::Executor::restart) does not restart the container, so it
    /// does not race `AutoRemove`: see its docs.
    pub fn auto_remove(&mut self, yes: bool) -> &mut Self {
        self.auto_remove = yes;
        self
    }

    /// Sets an environment variable for every block. Defaults to none beyond
    /// `PYTHONUNBUFFERED=1`, which keeps Python's output live, and `HOME=/tmp` (see
    /// [`read_only_root`](Self::read_only_root)).
    pub fn env(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Mounts a host path into the container. Defaults to none.
    pub fn volume(
        &mut self,
        host: impl Into<PathBuf>,
        container: impl Into<String>,
        read_only: bool,
    ) -> &mut Self {
        self.volumes.push(Volume {
            host: host.into(),
            container: container.into(),
            read_only,
        });
        self
    }

    /// Adds a line to the container's `/etc/hosts`. Defaults to none.
    pub fn extra_host(&mut self, name: impl Into<String>, ip: impl Into<String>) -> &mut Self {
        self.extra_hosts.push((name.into(), ip.into()));
        self
    }

    /// A shell command run once, in `/workspace`, after the container starts; if it exits
    /// non-zero, `start()` fails with [`Error::InitCommand`] with its output. Defaults to none.
    pub fn init_command(&mut self, command: impl Into<String>) -> &mut Self {
        self.init_command = Some(command.into());
        self
    }

    /// How long the [`init_command`](Self::init_command) may run, output or not, before
    /// `start()` gives up with [`Error::Timeout`] and removes the container; `None` for no
    /// limit. Defaults to [`DEFAULT_INIT_TIMEOUT`] (10 min).
    ///
    /// A whole-run limit rather than a limit on silence: a quiet `pip install -q` is normal,
    /// and a daemon that hangs mid-command looks exactly like one.
    pub fn init_timeout(&mut self, limit: Option<Duration>) -> &mut Self {
        self.init_timeout = limit;
        self
    }

    /// How long the Docker daemon may take to answer, on every call this executor makes.
    /// Defaults to [`DEFAULT_API_TIMEOUT`] (30 s).
    ///
    /// It bounds the sending of each request and the wait for its response head (for a
    /// block's output stream too, whose body then lasts as long as the block, ended by the
    /// block's own timeout, cancel or `stop()`), and the longest silence in an image pull's
    /// progress stream (twice this: a registry may pause between layers). Each ordinary call
    /// also has an overall limit of at least 60 s. When a limit passes, the call fails with
    /// [`Error::Timeout`] naming what stalled and the limit, so `start()` and `spawn()` fail
    /// rather than wait on a hung daemon. [`stop()`](Executor::stop) and the Ctrl-C handler
    /// have shorter limits of their own. The in-container agent's own answers (its start,
    /// each block's start) have a fixed 30 s limit.
    ///
    /// A zero duration is refused by `start()` with [`Error::InvalidInput`].
    pub fn api_timeout(&mut self, limit: Duration) -> &mut Self {
        self.api_timeout = limit;
        self
    }

    /// Deletes each code file after its block has run. Defaults to `false` (AutoGen's
    /// `delete_tmp_files`).
    pub fn delete_code_files(&mut self, yes: bool) -> &mut Self {
        self.delete_code_files = yes;
        self
    }

    /// The most output (stdout plus stderr) kept per block; `None` keeps everything. Past it
    /// the output is truncated with a marker and the status says
    /// [`truncated`](crate::ExitStatus::truncated). Defaults to [`DEFAULT_MAX_OUTPUT`] (64 MiB).
    pub fn max_output_bytes(&mut self, bytes: Option<usize>) -> &mut Self {
        self.max_output = bytes;
        self
    }

    /// What happens to a block whose output passes the limit. Defaults to
    /// [`OutputLimit::Discard`]: it keeps running, its further output is dropped.
    pub fn on_output_limit(&mut self, policy: OutputLimit) -> &mut Self {
        self.on_output_limit = policy;
        self
    }

    /// Whether `start()` first removes dockexec containers that are no longer running, and the
    /// temporary work dirs of owners that are gone (see [`gc`](crate::gc); running containers
    /// and live owners' dirs are never touched). Defaults to `true`.
    pub fn gc_orphans(&mut self, yes: bool) -> &mut Self {
        self.gc_orphans = yes;
        self
    }

    /// Adds a label to the container. Defaults to dockexec's own labels only.
    pub fn label(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// How blocks are run. Defaults to [`Strategy::Auto`]: the warm in-container agent when
    /// the image has Python (many times faster per block, and it keeps
    /// [`Session`](crate::Session)s), else one `docker exec` per block. Both keep the same
    /// contract: statuses, timeouts, cancellation, output limits.
    pub fn strategy(&mut self, strategy: Strategy) -> &mut Self {
        self.strategy = strategy;
        self
    }

    /// With the agent, whether Python blocks are forked from its warm, already initialised
    /// interpreter (a zygote: ~1-3 ms) instead of a fresh `python3` (~15-20 ms). Defaults to
    /// `true`: the fork is faithful to a fresh run in everything a script can observe but the
    /// few differences listed under [`Strategy::Agent`]. Ignored by the exec strategy.
    pub fn python_zygote(&mut self, yes: bool) -> &mut Self {
        self.python_zygote = yes;
        self
    }

    /// How long a cancelled or timed-out [`Session`](crate::Session) block has to stop after
    /// its `KeyboardInterrupt` before the session's process is killed (and the session
    /// lost). Defaults to 2 s.
    pub fn session_grace(&mut self, grace: Duration) -> &mut Self {
        self.session_grace = grace;
        self
    }

    /// Sets a secret environment variable for every block (and the init command): its value
    /// reaches the code as an ordinary variable, and is replaced by [`REDACTED`]
    /// (`[REDACTED]`) wherever dockexec shows it: [`Output`](crate::Output)'s `stdout` and
    /// `stderr`, every [`Chunk`](crate::Chunk) (a value split across two writes or chunks
    /// included), every [`Error`] (the init command's output, the daemon's and the agent's
    /// messages) and the builder's `Debug`. Defaults to none.
    ///
    /// To catch a value split across chunks, a chunk that ends with the start of a secret
    /// keeps that start back until the stream's next bytes (or its end) show whether the
    /// secret follows; other output is not delayed. A value printed in pieces that are not
    /// written one after the other, or transformed (reversed, base64-encoded, `repr` of
    /// non-ASCII), is not recognised: redaction protects logs from accidents, not from code
    /// that means to leak. Files the block writes are not redacted.
    /// [`max_output_bytes`](Self::max_output_bytes) counts the output as redacted. Order
    /// within a stream is kept; while one stream holds a tail back, the other stream's output
    /// may overtake it in [`Output::pieces`](crate::Output::pieces).
    ///
    /// The value is in the container's configuration (`Config.Env`), where it must be for
    /// the code to read it: anyone with access to the daemon sees it with `docker inspect`,
    /// as does every process in the container (`/proc/*/environ`). It is never put in a
    /// label.
    ///
    /// A short value redacts every occurrence of those characters in the output: a secret
    /// `1` turns every `1` into `[REDACTED]`. [`start`](Self::start) refuses an empty value
    /// (it cannot be redacted), a value with a NUL byte, a key that is empty or holds `=`,
    /// and a key also set with [`env`](Self::env).
    ///
    /// ```no_run
    /// # fn main() -> dockexec::Result<()> {
    /// use dockexec::{CodeBlock, Executor};
    ///
    /// let executor = Executor::builder().secret_env("API_TOKEN", "s3cr3t").start()?;
    /// let out = executor.run(&CodeBlock::sh("echo token=$API_TOKEN"))?;
    /// assert_eq!(out.stdout, b"token=[REDACTED]\n");
    /// # Ok(()) }
    /// ```
    pub fn secret_env(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.secret_env.insert(key.into(), value.into());
        self
    }

    /// Checks the daemon, ensures the image, creates and starts the container, runs the init
    /// command. The container is running when this returns.
    ///
    /// # Errors
    /// [`Error::Connect`] when the daemon is unreachable or does not answer within
    /// [`api_timeout`](Self::api_timeout); [`Error::ImageNotFound`] or
    /// [`Error::Pull`] when the image cannot be had; [`Error::InvalidInput`] for a zero
    /// timeout, a bad [`secret_env`](Self::secret_env) or
    /// [`host_config_json`](Self::host_config_json); [`Error::InitCommand`] when the init
    /// command fails; [`Error::Timeout`] when a call gets no answer within `api_timeout`, a
    /// pull's progress stalls, or the init command outlasts
    /// [`init_timeout`](Self::init_timeout); [`Error::Docker`] for anything else the daemon
    /// refuses (a [`device_request`](Self::device_request) it cannot meet included). Nothing
    /// is left behind on failure, except a container that a hung daemon did not remove in
    /// time, which [`gc`](crate::gc) finds; no error shows a secret's value.
    pub fn start(&self) -> Result<Executor> {
        let redactor = Arc::new(Redactor::new(self.secret_env.values().map(String::as_str)));
        self.start_redacted(&redactor)
            .map_err(|e| redactor.error(e))
    }

    fn start_redacted(&self, redactor: &Arc<Redactor>) -> Result<Executor> {
        self.validate()?;
        let client = self.connect()?;
        self.ensure_image(&client)?;
        let user = self.block_user(&client)?;
        let id = host::random_id();
        let workspace = Arc::new(self.workspace(&client, &id, user.as_deref())?);
        let container = self
            .create_container(&client, &id, &workspace)
            .inspect_err(|_| workspace.teardown())?;
        // From here on, a failure removes the container, then the workspace.
        let fail = |e: Error| {
            let _ = client.container_remove(&container, STOP_REMOVE_TIMEOUT);
            workspace.teardown();
            e
        };
        // Attached before the start, so the container never runs without its switch; shared
        // with the runners, whose kills fall back on it.
        let keeper = Arc::new(Keeper::attach(&client, &container).map_err(fail)?);
        client
            .container_start(&container)
            .map_err(|e| self.explain_device_requests(e))
            .map_err(fail)?;
        self.run_init_command(&client, &container, user.as_deref())
            .map_err(fail)?;
        let (runner, strategy) = self
            .runner(&client, &container, &workspace, &id, user.clone(), &keeper)
            .map_err(fail)?;
        Ok(Executor::new(
            Parts {
                client,
                runner,
                strategy,
                name: self
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("dockexec-{id}")),
                id,
                container,
                keeper,
                block_user: user,
                // A block that may become root (no `no-new-privileges`), or a PID namespace
                // shared with others (`PidMode` in the raw host config), whose processes the
                // agent's kill of every non-root one would reach: the pool's reset restarts.
                keep_agent_at_reset: self.no_new_privileges
                    && self
                        .host_config
                        .as_ref()
                        .is_none_or(|c| c.get("PidMode").is_none()),
                image: self.image.clone(),
                workspace,
                timeout: self.timeout,
                delete_code_files: self.delete_code_files,
                max_output: self.max_output,
                on_output_limit: self.on_output_limit,
                watch_container: self.runtime == Some(crate::Runtime::Gvisor),
            },
            Arc::clone(redactor),
        ))
    }

    fn validate(&self) -> Result<()> {
        if self.timeout == Some(Duration::ZERO) {
            return Err(Error::invalid(
                "timeout must be more than zero (use None for no timeout)",
            ));
        }
        if self.api_timeout.is_zero() || self.init_timeout == Some(Duration::ZERO) {
            return Err(Error::invalid(
                "api_timeout and init_timeout must be more than zero",
            ));
        }
        if self.image.trim().is_empty() {
            return Err(Error::invalid("image must not be empty"));
        }
        if let Some(c) = self.cpus {
            if !(c.is_finite() && c > 0.0) || self.nano_cpus() == Some(0) {
                return Err(Error::invalid(format!(
                    "cpu_limit must be a positive, finite number of CPUs, not {c} (use None for \
                     no limit)"
                )));
            }
        }
        // Messages name the key, never the value.
        for (key, value) in &self.secret_env {
            if key.is_empty() || key.contains(['=', '\0']) {
                return Err(Error::invalid(format!(
                    "secret_env key {key:?} must be non-empty, without '=' or NUL"
                )));
            }
            if value.is_empty() {
                return Err(Error::invalid(format!(
                    "secret_env {key} is empty: an empty secret cannot be redacted (set a value, \
                     or use env for a variable that is not secret)"
                )));
            }
            if value.contains('\0') {
                return Err(Error::invalid(format!(
                    "secret_env {key} holds a NUL byte, which an environment variable cannot"
                )));
            }
            if self.env.contains_key(key) {
                return Err(Error::invalid(format!(
                    "{key} is set with both env and secret_env; keep one"
                )));
            }
        }
        if let Some(c) = &self.host_config {
            if !c.is_object() {
                return Err(Error::invalid(format!(
                    "host_config_json must be a JSON object of HostConfig fields, not {c}"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod validate_tests {
    use super::*;

    #[test]
    fn bad_secrets_are_refused_by_name_without_the_value() {
        let cases: [(&str, &str, &str); 4] = [
            ("EMPTY", "", "EMPTY is empty"),
            ("", "v4lue", "key \"\""),
            ("A=B", "v4lue", "\"A=B\""),
            ("NUL", "v4l\0ue", "NUL holds a NUL"),
        ];
        for (k, v, want) in cases {
            let mut b = ExecutorBuilder::new();
            let e = b.secret_env(k, v).validate().unwrap_err();
            let shown = e.to_string();
            assert!(
                matches!(e, Error::InvalidInput(_)) && shown.contains(want),
                "{shown}"
            );
            assert!(v.is_empty() || !shown.contains(v), "{shown}");
        }
        let mut b = ExecutorBuilder::new();
        let e = b
            .env("X", "1")
            .secret_env("X", "v4lue")
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("both env and secret_env"), "{e}");
    }

    #[test]
    fn a_cpu_limit_must_be_positive_and_finite() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e-12] {
            let mut b = ExecutorBuilder::new();
            b.cpu_limit(Some(bad));
            match b.validate() {
                Err(Error::InvalidInput(msg)) => assert!(msg.contains("cpu_limit"), "{msg}"),
                other => panic!("cpu_limit({bad}) gave {other:?}"),
            }
        }
        let mut b = ExecutorBuilder::new();
        b.cpu_limit(Some(1.5));
        b.validate().unwrap();
        assert_eq!(b.nano_cpus(), Some(1_500_000_000));
        b.cpu_limit(None);
        b.validate().unwrap();
    }
}
