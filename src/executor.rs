//! [`ExecutorBuilder`] and [`Executor`]: the container's lifecycle and the live executions.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde_json::{Value, json};

use crate::code::CodeBlock;
use crate::docker::api::{self, Client, PullEvent};
use crate::error::{Error, Result};
use crate::execution::{self, Execution, OutputLimit, Reason, Shared, WorkerCtx};
use crate::orphans;
use crate::output::Output;
use crate::runner::{ExecRunner, Launch, Runner};

/// Where the workspace is mounted inside the container.
pub const WORKSPACE: &str = "/workspace";
/// dockexec's own directory inside the workspace (pid and cancel markers).
pub(crate) const STATE_DIR: &str = ".dockexec";
/// Label carrying the executor's id; every container dockexec creates has it.
pub const LABEL_EXECUTOR: &str = "dockexec.executor";

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
/// How long `stop()` lets the daemon take to remove the container.
const STOP_REMOVE_TIMEOUT: Duration = Duration::from_secs(5);

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

    /// Checks the daemon, ensures the image, creates and starts the container, runs the init
    /// command. The container is running when this returns.
    ///
    /// # Errors
    /// [`Error::Connect`] when the daemon is unreachable; [`Error::ImageNotFound`] or
    /// [`Error::Pull`] when the image cannot be had; [`Error::InvalidInput`] for a zero
    /// timeout; [`Error::InitCommand`] when the init command fails; [`Error::Docker`] for
    /// anything else the daemon refuses. Nothing is left behind on failure.
    pub fn start(&self) -> Result<Executor> {
        if self.timeout == Some(Duration::ZERO) {
            return Err(Error::invalid(
                "timeout must be more than zero (use None for no timeout)",
            ));
        }
        if self.image.trim().is_empty() {
            return Err(Error::invalid("image must not be empty"));
        }
        let socket = match &self.socket {
            Some(s) => s.clone(),
            None => api::socket_from_env()?,
        };
        let client = Client::connect(&socket)?;
        if self.gc_orphans {
            // Best effort: a failed sweep must not stop this executor from starting.
            let _ = orphans::sweep(&client);
        }
        self.ensure_image(&client)?;

        let id = orphans::random_id();
        let (workspace, temp_workspace) = match &self.work_dir {
            Some(dir) => {
                fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
                (fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?, false)
            }
            None => {
                let dir = std::env::temp_dir().join(format!("dockexec-{id}"));
                fs::create_dir(&dir).map_err(|e| Error::io(&dir, e))?;
                let dir = fs::canonicalize(&dir).map_err(|e| Error::io(&dir, e))?;
                (dir, true)
            }
        };
        let cleanup_workspace = |e: Error| {
            if temp_workspace {
                let _ = fs::remove_dir_all(&workspace);
            } else {
                // Nothing of ours is in it yet; removed only if no other executor uses it.
                let _ = fs::remove_dir(workspace.join(STATE_DIR));
            }
            e
        };
        let state = workspace.join(STATE_DIR);
        fs::create_dir_all(&state)
            .and_then(|_| fs::set_permissions(&state, fs::Permissions::from_mode(0o1777)))
            .map_err(|e| cleanup_workspace(Error::io(&state, e)))?;
        if temp_workspace && self.user.is_some() {
            // A non-root block must be able to write its own files next to its code.
            let _ = fs::set_permissions(&workspace, fs::Permissions::from_mode(0o1777));
        }

        let name = self
            .name
            .clone()
            .unwrap_or_else(|| format!("dockexec-{id}"));
        let mut body = self.create_body(&id, &workspace);
        if temp_workspace {
            body["Labels"][orphans::LABEL_TEMP_WORKSPACE] = json!(workspace);
        }
        let container = client
            .container_create(Some(&name), &body)
            .map_err(cleanup_workspace)?;
        let fail = |e: Error| {
            let _ = client.container_remove(&container, STOP_REMOVE_TIMEOUT);
            cleanup_workspace(e)
        };
        client.container_start(&container).map_err(fail)?;
        if let Some(cmd) = &self.init_command {
            let mut body = json!({
                "Cmd": ["sh", "-c", cmd],
                "AttachStdout": true,
                "AttachStderr": true,
                "WorkingDir": WORKSPACE,
            });
            if let Some(user) = &self.user {
                body["User"] = json!(user);
            }
            let (code, out, err) = client.exec_collect(&container, &body, None).map_err(fail)?;
            if code != Some(0) {
                let mut output = String::from_utf8_lossy(&out).into_owned();
                output.push_str(&String::from_utf8_lossy(&err));
                return Err(fail(Error::InitCommand { code, output }));
            }
        }

        let runner = Box::new(ExecRunner {
            client: client.clone(),
            container: container.clone(),
            oom_kills: Default::default(),
        });
        let inner = Arc::new(Inner {
            client,
            runner,
            id,
            container,
            name,
            image: self.image.clone(),
            workspace,
            temp_workspace,
            timeout: self.timeout,
            user: self.user.clone(),
            delete_code_files: self.delete_code_files,
            max_output: self.max_output,
            on_output_limit: self.on_output_limit,
            gate: RwLock::new(false),
            stop_lock: Mutex::new(false),
            live: Mutex::new(Vec::new()),
            next: AtomicU64::new(1),
        });
        crate::registry::register(&inner);
        Ok(Executor { inner })
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

    fn create_body(&self, id: &str, workspace: &Path) -> Value {
        let mut env: Vec<String> = vec!["PYTHONUNBUFFERED=1".into()];
        env.extend(self.env.iter().map(|(k, v)| format!("{k}={v}")));
        let mut labels: BTreeMap<String, String> = self.labels.clone();
        labels.insert(LABEL_EXECUTOR.into(), id.into());
        labels.extend(orphans::owner_labels());
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
        let mut body = json!({
            "Image": self.image,
            // Keeps the container alive with nothing but `sh` and `sleep`.
            "Entrypoint": ["sh", "-c", "while :; do sleep 3600; done"],
            "Cmd": [],
            "WorkingDir": WORKSPACE,
            "Env": env,
            "Labels": labels,
            "Tty": false,
            "OpenStdin": false,
            "HostConfig": host,
        });
        if let Some(user) = &self.user {
            body["User"] = json!(user);
        }
        body
    }
}

/// A running container that executes code blocks.
///
/// `Send + Sync`: share it with `&` across [`std::thread::scope`] or in an `Arc`; any number of
/// threads may run blocks at once, and any thread may stop it.
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

/// One live or finished execution the executor tracks until its worker is joined.
#[derive(Debug)]
struct Tracked {
    /// Weak: the worker and the caller's handles own the state, so that `into_output` can
    /// take the output without a copy once both are done with it.
    shared: Weak<Shared>,
    worker: JoinHandle<()>,
}

impl Tracked {
    /// Asks a still-running execution's worker to kill the block.
    fn request(&self, reason: Reason) {
        if let Some(shared) = self.shared.upgrade() {
            shared.request(reason);
        }
    }
}

#[derive(Debug)]
pub(crate) struct Inner {
    client: Client,
    /// How blocks are started, streamed, killed and reaped in the container.
    runner: Box<dyn Runner>,
    id: String,
    container: String,
    name: String,
    image: String,
    workspace: PathBuf,
    temp_workspace: bool,
    timeout: Option<Duration>,
    user: Option<String>,
    delete_code_files: bool,
    max_output: Option<usize>,
    on_output_limit: OutputLimit,
    /// `true` once stopping has begun. Spawns hold the read side for their whole duration,
    /// so once `stop` has flipped it under the write side, no spawn is half-way through and
    /// the registry below is complete.
    gate: RwLock<bool>,
    /// `true` once stopped. Held for all of `stop`, so concurrent callers wait for the first
    /// to finish and then see `Stopped`.
    stop_lock: Mutex<bool>,
    /// Every execution whose worker has not been joined yet.
    live: Mutex<Vec<Tracked>>,
    next: AtomicU64,
}

impl Executor {
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

    /// This executor's id, also the value of its container's `dockexec.executor` label.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The image the container runs.
    pub fn image(&self) -> &str {
        &self.inner.image
    }

    /// The host directory mounted at `/workspace`.
    pub fn work_dir(&self) -> &Path {
        &self.inner.workspace
    }

    /// Copies `contents` into the container as the file `path` (absolute, or relative to
    /// `/workspace`), through the daemon's archive API: it works whatever the mounts, and a
    /// symlink inside the container is resolved inside the container.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a path without a file name;
    /// [`Error::Docker`] when the directory does not exist or cannot be written.
    pub fn put_file(&self, path: &str, contents: &[u8]) -> Result<()> {
        let (dir, name) = split_container_path(path)?;
        let tar = api::tar_one_file(&name, contents, 0o644)?;
        self.inner
            .client
            .archive_put(&self.inner.container, &dir, tar)
            .map_err(|e| self.inner.gone_or(e))
    }

    /// Reads the file `path` (absolute, or relative to `/workspace`) out of the container.
    ///
    /// # Errors
    /// [`Error::Docker`] with status 404 when there is no such file; [`Error::Protocol`] when
    /// the path is a directory.
    pub fn get_file(&self, path: &str) -> Result<Vec<u8>> {
        let (dir, name) = split_container_path(path)?;
        let full = format!("{}/{name}", dir.trim_end_matches('/'));
        let tar = self
            .inner
            .client
            .archive_get(&self.inner.container, &full)
            .map_err(|e| self.inner.gone_or(e))?;
        api::untar_first_file(&tar).map(|(_, data)| data)
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
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an unknown language or a file name outside the workspace
    /// (nothing is written); [`Error::Stopped`] after `stop()`; [`Error::ContainerGone`] when
    /// the container was removed from outside; [`Error::Io`] when the code file cannot be
    /// written.
    pub fn spawn(&self, block: &CodeBlock) -> Result<Execution> {
        self.inner.spawn(block)
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

    /// Restarts the container. Running blocks are killed and report
    /// [`cancelled`](crate::ExitStatus::cancelled); files in the workspace stay.
    ///
    /// # Errors
    /// [`Error::Stopped`] after `stop()`; [`Error::Docker`] if the daemon refuses.
    pub fn restart(&self) -> Result<()> {
        let gate = self.inner.gate.read();
        if *gate {
            return Err(Error::Stopped);
        }
        // Cancelled, not merely shut down: should the restart fail, each worker's own kill
        // still ends its block (and it races the restart harmlessly when it succeeds).
        for t in self.inner.live.lock().iter() {
            t.request(Reason::Cancel);
        }
        self.inner
            .client
            .container_restart(&self.inner.container, Duration::ZERO)
            .map_err(|e| self.inner.gone_or(e))?;
        drop(gate);
        Ok(())
    }

    /// Stops the executor: cancels every live execution (handles dropped or not), joins every
    /// worker thread, removes the container, and removes a temporary work dir.
    ///
    /// Safe from any thread, any number of times, concurrently: the first call does the work
    /// and the others wait for it, then return [`Error::Stopped`], as every later call does.
    /// It returns in bounded time even if the daemon hangs: each worker's socket is shut down
    /// after a grace period.
    ///
    /// # Errors
    /// [`Error::Stopped`] if already stopped; [`Error::Docker`] or [`Error::Connect`] if the
    /// container could not be removed (everything else is still cleaned up).
    pub fn stop(&self) -> Result<()> {
        self.inner.stop()
    }
}

impl Drop for Executor {
    /// A best-effort [`stop`](Executor::stop); errors are ignored.
    fn drop(&mut self) {
        let _ = self.inner.stop();
    }
}

impl Inner {
    fn spawn(&self, block: &CodeBlock) -> Result<Execution> {
        let language = block.language()?;
        let requested = block.filename()?;
        // Held until the worker is registered: see `gate`.
        let gate = self.gate.read();
        if *gate {
            return Err(Error::Stopped);
        }
        self.reap();

        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}_{n}", &self.id[..self.id.len().min(12)]);
        let rel = requested
            .unwrap_or_else(|| PathBuf::from(format!("tmp_code_{tag}.{}", language.extension())));
        let host_file = write_code_file(&self.workspace, &rel, block.code())?;
        let in_container = format!("{WORKSPACE}/{}", rel.to_string_lossy());
        let marker = format!("{WORKSPACE}/{STATE_DIR}/{tag}");
        let host_marker = self.workspace.join(STATE_DIR).join(&tag);

        let started = Instant::now();
        let running = self
            .runner
            .launch(&Launch {
                language,
                file: &in_container,
                marker: &marker,
                tag: &tag,
                user: self.user.as_deref(),
            })
            .map_err(|e| self.gone_or(e))?;

        let (shared, done_tx, cancel_rx) = Shared::new(n, host_file);
        let ctx = WorkerCtx {
            host_marker,
            cap: self.max_output,
            on_limit: self.on_output_limit,
            deadline: self.timeout.and_then(|t| started.checked_add(t)),
            delete_code_file: self.delete_code_files,
            started,
        };
        let worker_shared = Arc::clone(&shared);
        let worker = thread::Builder::new()
            .name(format!("dockexec-{n}"))
            .spawn(move || execution::work(ctx, worker_shared, running, done_tx, cancel_rx))
            .map_err(|e| Error::Internal(format!("cannot start a worker thread: {e}")))?;
        self.live.lock().push(Tracked {
            shared: Arc::downgrade(&shared),
            worker,
        });
        drop(gate);
        Ok(Execution { shared })
    }

    /// Removes this executor's markers from a work dir the user gave, and the state dir with
    /// them unless another executor sharing the work dir still has markers there.
    fn remove_own_state(&self) {
        let state = self.workspace.join(STATE_DIR);
        let prefix = format!("{}_", &self.id[..self.id.len().min(12)]);
        if let Ok(entries) = fs::read_dir(&state) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        let _ = fs::remove_dir(&state);
    }

    /// Joins workers that have finished, so the registry holds only live ones.
    fn reap(&self) {
        let finished: Vec<Tracked> = {
            let mut live = self.live.lock();
            let (done, running): (Vec<_>, Vec<_>) =
                live.drain(..).partition(|t| t.worker.is_finished());
            *live = running;
            done
        };
        // Joined outside the lock: they have finished, so this is instant, but never hold a
        // lock across a join.
        for t in finished {
            let _ = t.worker.join();
        }
    }

    /// Maps "no such container" / "is not running" to [`Error::ContainerGone`].
    fn gone_or(&self, e: Error) -> Error {
        match &e {
            // Only the container's own 404: a missing file or exec is a 404 too.
            Error::Docker {
                status: 404,
                message,
            } if message.contains("No such container") => Error::ContainerGone {
                container: self.container.clone(),
            },
            Error::Docker {
                status: 409,
                message,
            } if message.contains("not running") || message.contains("is paused") => {
                Error::ContainerGone {
                    container: self.container.clone(),
                }
            }
            _ => e,
        }
    }

    pub(crate) fn stop(&self) -> Result<()> {
        let mut stopped = self.stop_lock.lock();
        if *stopped {
            return Err(Error::Stopped);
        }
        // Waits for spawns in flight to register; none can start after this.
        *self.gate.write() = true;
        let tracked: Vec<Tracked> = std::mem::take(&mut *self.live.lock());
        for t in &tracked {
            t.request(Reason::Shutdown);
        }
        // Removing the container kills every process in it at once, which ends every exec
        // stream; a worker whose stream does not end cuts its own socket after KILL_GRACE.
        let removed = self
            .client
            .with_timeout(STOP_REMOVE_TIMEOUT)
            .container_remove(&self.container, STOP_REMOVE_TIMEOUT);
        // Join after the removal, so that no worker waits on a process that is still alive.
        for t in tracked {
            let _ = t.worker.join();
        }
        if self.temp_workspace {
            let _ = fs::remove_dir_all(&self.workspace);
        } else {
            self.remove_own_state();
        }
        *stopped = true;
        drop(stopped);
        crate::registry::unregister(self);
        removed
    }
}

/// `path` as (directory, file name), relative paths taken from `/workspace`.
fn split_container_path(path: &str) -> Result<(String, String)> {
    let full = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{WORKSPACE}/{path}")
    };
    match full.rsplit_once('/') {
        Some((dir, name)) if !name.is_empty() && name != "." && name != ".." => {
            let dir = if dir.is_empty() { "/" } else { dir };
            Ok((dir.to_string(), name.to_string()))
        }
        _ => Err(Error::invalid(format!("not a file path: {path:?}"))),
    }
}

/// Writes a code file inside the workspace without ever following a symlink out of it.
///
/// The container can create symlinks in the shared workspace; a name like `x/passwd` where
/// `x -> /etc` must not write on the host. Each parent directory is created one level at a
/// time and resolved before the next is made, so nothing is ever created through a link that
/// leads out; the file is written to a fresh temporary name (`create_new`, which does not
/// follow a symlink) and renamed into place (rename replaces a link, it does not follow it).
fn write_code_file(workspace: &Path, rel: &Path, code: &str) -> Result<PathBuf> {
    let outside = || {
        Error::invalid(format!(
            "filename is not in the workspace: {} resolves outside it",
            rel.display()
        ))
    };
    let file_name = rel
        .file_name()
        .ok_or_else(|| Error::invalid(format!("not a file name: {}", rel.display())))?;
    let mut real_parent = workspace.to_path_buf();
    for part in rel.parent().into_iter().flat_map(Path::components) {
        let next = real_parent.join(part);
        match fs::create_dir(&next) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(&next, e)),
        }
        real_parent = fs::canonicalize(&next).map_err(|e| Error::io(&next, e))?;
        if !real_parent.starts_with(workspace) {
            return Err(outside());
        }
    }
    let final_path = real_parent.join(file_name);
    let tmp = real_parent.join(format!(
        ".{}.dockexec-{}",
        file_name.to_string_lossy(),
        orphans::random_id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(code.as_bytes())?;
        fs::rename(&tmp, &final_path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(&final_path, e)
    })?;
    Ok(final_path)
}

/// The outcome of [`Executor::execute`]: each block's output, plus the combined view AutoGen
/// users know.
#[derive(Debug, Clone)]
pub struct BlocksResult {
    /// One output per block that ran, in order; the last is the first that failed, if any.
    pub outputs: Vec<Output>,
}

impl BlocksResult {
    /// The last block's exit code as a shell reports it (124 for a timeout, as AutoGen).
    pub fn exit_code(&self) -> i32 {
        self.outputs.last().map_or(0, |o| o.status.shell_code())
    }

    /// True when every block succeeded.
    pub fn success(&self) -> bool {
        self.outputs.iter().all(|o| o.status.success())
    }

    /// Every block's merged output, concatenated, decoded lossily (AutoGen's `output`).
    pub fn output(&self) -> String {
        self.outputs.iter().map(Output::merged_lossy).collect()
    }

    /// The first block's code file (AutoGen's `code_file`).
    pub fn code_file(&self) -> Option<&Path> {
        self.outputs.first().and_then(|o| o.code_file.as_deref())
    }
}
