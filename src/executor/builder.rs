//! [`ExecutorBuilder`]: the options, the container's create body, the image, and `start()`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{Value, json};

use std::sync::atomic::AtomicU64;

use parking_lot::RwLock;

use super::{Executor, Inner, STOP_REMOVE_TIMEOUT};
use crate::docker::api::{self, Client, PullEvent};
use crate::error::{Error, Result};
use crate::execution::OutputLimit;
use crate::labels;
use crate::orphans;
use crate::runner::Runner;
use crate::runner::Strategy;
use crate::runner::agent::{AgentConfig, AgentRunner};
use crate::runner::exec::ExecRunner;
use crate::workspace::{WORKSPACE, Workspace};

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

/// When [`ExecutorBuilder::start`] pulls the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PullPolicy {
    /// Pull only when the image is not present locally. The default.
    #[default]
    Missing,
    /// Always pull (to refresh a moving tag).
    Always,
    /// Never pull: an absent image is [`Error::ImageNotFound`].
    Never,
}

/// One event of an image pull, as passed to [`ExecutorBuilder::on_pull_progress`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PullProgress {
    /// The daemon's status line, e.g. `"Downloading"`, `"Pull complete"`.
    pub status: String,
    /// The layer the event is about, if any.
    pub layer: Option<String>,
    /// Bytes done, for download and extraction events.
    pub current: Option<u64>,
    /// Bytes in all, when known.
    pub total: Option<u64>,
}

type ProgressFn = Box<dyn FnMut(&PullProgress) + Send>;

/// A read-only or read-write bind mount added with [`ExecutorBuilder::volume`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct Volume {
    host: PathBuf,
    container: String,
    read_only: bool,
}

/// Configures and starts an [`Executor`]. Every option has a documented default.
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
    image: String,
    name: Option<String>,
    timeout: Option<Duration>,
    work_dir: Option<PathBuf>,
    bind_dir: Option<PathBuf>,
    auto_remove: bool,
    env: BTreeMap<String, String>,
    volumes: Vec<Volume>,
    extra_hosts: Vec<(String, String)>,
    init_command: Option<String>,
    user: Option<String>,
    network: String,
    memory: Option<u64>,
    nano_cpus: Option<u64>,
    pids_limit: Option<i64>,
    delete_code_files: bool,
    max_output: Option<usize>,
    on_output_limit: OutputLimit,
    pull: PullPolicy,
    progress: Option<Mutex<ProgressFn>>,
    socket: Option<PathBuf>,
    gc_orphans: bool,
    labels: BTreeMap<String, String>,
    strategy: Strategy,
    python_zygote: bool,
    session_grace: Duration,
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
            user: None,
            network: "none".to_string(),
            memory: None,
            nano_cpus: None,
            pids_limit: None,
            delete_code_files: false,
            max_output: Some(DEFAULT_MAX_OUTPUT),
            on_output_limit: OutputLimit::Discard,
            pull: PullPolicy::Missing,
            progress: None,
            socket: None,
            gc_orphans: true,
            labels: BTreeMap::new(),
            strategy: Strategy::Auto,
            python_zygote: true,
            session_grace: DEFAULT_SESSION_GRACE,
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
    /// if missing and kept at stop. Defaults to a fresh temporary directory, removed at stop.
    pub fn work_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.work_dir = Some(dir.into());
        self
    }

    /// The work dir's path as the *daemon* sees it, when that differs from ours (dockexec
    /// itself running in a container, with the daemon's socket mounted). Defaults to the work
    /// dir.
    pub fn bind_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.bind_dir = Some(dir.into());
        self
    }

    /// Whether the daemon removes the container by itself when it stops (Docker's
    /// `AutoRemove`). `stop()` removes it either way. Defaults to `true`.
    pub fn auto_remove(&mut self, yes: bool) -> &mut Self {
        self.auto_remove = yes;
        self
    }

    /// Sets an environment variable for every block. Defaults to none beyond
    /// `PYTHONUNBUFFERED=1`, which keeps Python's output live.
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
    /// non-zero, `start()` fails with [`Error::InitCommand`] carrying its output. Defaults to
    /// none.
    pub fn init_command(&mut self, command: impl Into<String>) -> &mut Self {
        self.init_command = Some(command.into());
        self
    }

    /// The user blocks run as (`"1000"`, `"1000:1000"`, `"nobody"`). Defaults to the image's.
    pub fn user(&mut self, user: impl Into<String>) -> &mut Self {
        self.user = Some(user.into());
        self
    }

    /// Docker's network mode. Defaults to `"none"`: blocks get loopback only.
    pub fn network(&mut self, mode: impl Into<String>) -> &mut Self {
        self.network = mode.into();
        self
    }

    /// The container's memory limit in bytes. Defaults to none.
    pub fn memory_limit(&mut self, bytes: Option<u64>) -> &mut Self {
        self.memory = bytes;
        self
    }

    /// The container's CPU limit, in CPUs (`1.5`). Defaults to none.
    pub fn cpu_limit(&mut self, cpus: Option<f64>) -> &mut Self {
        self.nano_cpus = cpus.map(|c| (c * 1e9) as u64);
        self
    }

    /// The container's process limit. Defaults to none.
    pub fn pids_limit(&mut self, limit: Option<i64>) -> &mut Self {
        self.pids_limit = limit;
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

    /// When to pull the image. Defaults to [`PullPolicy::Missing`].
    pub fn pull_policy(&mut self, policy: PullPolicy) -> &mut Self {
        self.pull = policy;
        self
    }

    /// Called for every event of an image pull. Defaults to none.
    pub fn on_pull_progress(
        &mut self,
        callback: impl FnMut(&PullProgress) + Send + 'static,
    ) -> &mut Self {
        self.progress = Some(Mutex::new(Box::new(callback)));
        self
    }

    /// The daemon's Unix socket. Defaults to `DOCKER_HOST` when it is `unix://…`, else
    /// `/var/run/docker.sock`.
    pub fn socket(&mut self, path: impl Into<PathBuf>) -> &mut Self {
        self.socket = Some(path.into());
        self
    }

    /// Whether `start()` first removes containers left by dockexec processes that died
    /// without stopping (see [`gc`](crate::gc)). Defaults to `true`.
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
    /// few differences the [`Strategy`] docs list. Ignored by the exec strategy.
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

    /// Checks the daemon, ensures the image, creates and starts the container, runs the init
    /// command. The container is running when this returns.
    ///
    /// # Errors
    /// [`Error::Connect`] when the daemon is unreachable; [`Error::ImageNotFound`] or
    /// [`Error::Pull`] when the image cannot be had; [`Error::InvalidInput`] for a zero
    /// timeout; [`Error::InitCommand`] when the init command fails; [`Error::Docker`] for
    /// anything else the daemon refuses. Nothing is left behind on failure.
    pub fn start(&self) -> Result<Executor> {
        self.validate()?;
        let client = self.connect()?;
        self.ensure_image(&client)?;
        let user = self.block_user(&client)?;
        let id = orphans::random_id();
        let workspace = Arc::new(Workspace::create(
            self.work_dir.as_deref(),
            &id,
            user.is_some(),
        )?);
        let container = self
            .create_container(&client, &id, &workspace)
            .inspect_err(|_| {
                workspace.teardown();
            })?;
        // From here on, a failure removes the container, then the workspace.
        let fail = |e: Error| {
            let _ = client.container_remove(&container, STOP_REMOVE_TIMEOUT);
            workspace.teardown();
            e
        };
        client.container_start(&container).map_err(fail)?;
        self.run_init_command(&client, &container, user.as_deref())
            .map_err(fail)?;
        let (runner, strategy) = self
            .runner(&client, &container, &workspace, &id, user)
            .map_err(fail)?;
        let inner = Arc::new(Inner {
            client,
            runner,
            strategy,
            name: self
                .name
                .clone()
                .unwrap_or_else(|| format!("dockexec-{id}")),
            id,
            container,
            image: self.image.clone(),
            workspace,
            timeout: self.timeout,
            delete_code_files: self.delete_code_files,
            max_output: self.max_output,
            on_output_limit: self.on_output_limit,
            gate: RwLock::new(false),
            stop_lock: Mutex::new(false),
            live: Mutex::new(Vec::new()),
            next: AtomicU64::new(1),
        });
        crate::registry::register(Arc::clone(&inner) as Arc<dyn crate::registry::Stop>);
        Ok(Executor { inner })
    }

    /// The strategy's runner, and which strategy that is ([`Strategy::Auto`] resolved).
    fn runner(
        &self,
        client: &Client,
        container: &str,
        workspace: &Arc<Workspace>,
        id: &str,
        user: Option<String>,
    ) -> Result<(Box<dyn Runner>, Strategy)> {
        let exec = || -> Result<(Box<dyn Runner>, Strategy)> {
            let r = ExecRunner::new(
                client,
                container,
                Arc::clone(workspace),
                id,
                user.as_deref(),
            )?;
            Ok((Box::new(r), Strategy::Exec))
        };
        if self.strategy == Strategy::Exec {
            return exec();
        }
        let config = AgentConfig {
            user: user.clone(),
            zygote: self.python_zygote,
            delete_code_files: self.delete_code_files,
            session_grace: self.session_grace,
        };
        match AgentRunner::start(client, container, Arc::clone(workspace), config) {
            Ok(r) => Ok((Box::new(r), Strategy::Agent)),
            Err(Error::Agent(_)) if self.strategy == Strategy::Auto => exec(),
            Err(e) => Err(e),
        }
    }

    /// The user blocks run as: the configured one, else the image's own (`USER`), else
    /// `None` for root.
    fn block_user(&self, client: &Client) -> Result<Option<String>> {
        match &self.user {
            Some(u) => Ok(Some(u.clone())),
            None => Ok(Some(client.image_user(&self.image)?).filter(|u| !u.is_empty())),
        }
    }

    fn validate(&self) -> Result<()> {
        if self.timeout == Some(Duration::ZERO) {
            return Err(Error::invalid(
                "timeout must be more than zero (use None for no timeout)",
            ));
        }
        if self.image.trim().is_empty() {
            return Err(Error::invalid("image must not be empty"));
        }
        Ok(())
    }

    /// Connects to the daemon, and sweeps orphans first if asked to.
    fn connect(&self) -> Result<Client> {
        let socket = match &self.socket {
            Some(s) => s.clone(),
            None => api::socket_from_env()?,
        };
        let client = Client::connect(&socket)?;
        if self.gc_orphans {
            // Best effort: a failed sweep must not stop this executor from starting.
            let _ = orphans::sweep(&client);
        }
        Ok(client)
    }

    /// Creates (does not start) the container; returns its id.
    fn create_container(&self, client: &Client, id: &str, workspace: &Workspace) -> Result<String> {
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| format!("dockexec-{id}"));
        let mut body = self.create_body(id, workspace.path());
        if workspace.is_temp() {
            body["Labels"][labels::TEMP_WORKSPACE] = json!(workspace.path());
        }
        client.container_create(Some(&name), &body)
    }

    /// Runs `init_command`, if any; a non-zero exit is [`Error::InitCommand`].
    fn run_init_command(&self, client: &Client, container: &str, user: Option<&str>) -> Result<()> {
        let Some(cmd) = &self.init_command else {
            return Ok(());
        };
        let mut body = json!({
            "Cmd": ["sh", "-c", cmd],
            "AttachStdout": true,
            "AttachStderr": true,
            "WorkingDir": WORKSPACE,
        });
        if let Some(user) = user {
            body["User"] = json!(user);
        }
        let (code, out, err) = client.exec_collect(container, &body, None)?;
        if code != Some(0) {
            let mut output = String::from_utf8_lossy(&out).into_owned();
            output.push_str(&String::from_utf8_lossy(&err));
            return Err(Error::InitCommand { code, output });
        }
        Ok(())
    }

    fn ensure_image(&self, client: &Client) -> Result<()> {
        let present = client.image_exists(&self.image)?;
        let pull = match self.pull {
            PullPolicy::Always => true,
            PullPolicy::Missing => !present,
            PullPolicy::Never => false,
        };
        if !pull {
            return if present {
                Ok(())
            } else {
                Err(Error::ImageNotFound {
                    image: self.image.clone(),
                    message: "not present locally, and the pull policy is Never".into(),
                })
            };
        }
        let mut forward = |e: &PullEvent| {
            if let Some(cb) = &self.progress {
                let p = PullProgress {
                    status: e.status.clone().unwrap_or_default(),
                    layer: e.id.clone(),
                    current: e.progress_detail.and_then(|d| d.current),
                    total: e.progress_detail.and_then(|d| d.total),
                };
                (cb.lock())(&p);
            }
        };
        client.image_pull(&self.image, &mut forward)?;
        if client.image_exists(&self.image)? {
            Ok(())
        } else {
            Err(Error::ImageNotFound {
                image: self.image.clone(),
                message: "the pull finished but the image is not present".into(),
            })
        }
    }

    fn create_body(&self, id: &str, workspace: &std::path::Path) -> Value {
        let mut env: Vec<String> = vec!["PYTHONUNBUFFERED=1".into()];
        env.extend(self.env.iter().map(|(k, v)| format!("{k}={v}")));
        let mut all_labels: BTreeMap<String, String> = self.labels.clone();
        all_labels.insert(labels::EXECUTOR.into(), id.into());
        all_labels.extend(orphans::owner_labels());
        let source = self.bind_dir.as_deref().unwrap_or(workspace);
        let mut mounts = vec![json!({
            "Type": "bind",
            "Source": source,
            "Target": WORKSPACE,
            "ReadOnly": false,
        })];
        for v in &self.volumes {
            mounts.push(json!({
                "Type": "bind",
                "Source": v.host,
                "Target": v.container,
                "ReadOnly": v.read_only,
            }));
        }
        let mut host = json!({
            // docker-init as PID 1: signals are forwarded and orphans reaped.
            "Init": true,
            "Mounts": mounts,
            "NetworkMode": self.network,
            "AutoRemove": self.auto_remove,
            "ExtraHosts": self.extra_hosts.iter().map(|(n, ip)| format!("{n}:{ip}")).collect::<Vec<_>>(),
        });
        if let Some(m) = self.memory {
            host["Memory"] = json!(m);
        }
        if let Some(c) = self.nano_cpus {
            host["NanoCpus"] = json!(c);
        }
        if let Some(p) = self.pids_limit {
            host["PidsLimit"] = json!(p);
        }
        let body = json!({
            "Image": self.image,
            // Keeps the container alive with nothing but `sh` and `sleep`.
            "Entrypoint": ["sh", "-c", "while :; do sleep 3600; done"],
            "Cmd": [],
            "WorkingDir": WORKSPACE,
            "Env": env,
            "Labels": all_labels,
            "Tty": false,
            "OpenStdin": false,
            "HostConfig": host,
            // The container's own processes (init and the keeper) run as root, and only the
            // blocks as their user: a block that signals everything it can (`kill -9 -1`)
            // must not be able to end its own container.
            "User": "0",
        });
        body
    }
}
