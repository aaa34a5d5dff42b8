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
use crate::device::DeviceRequest;
use crate::docker::api::{self, Client, PullEvent};
use crate::error::{Error, Result};
use crate::execution::OutputLimit;
use crate::labels;
use crate::orphans::{self, KEEPER_SCRIPT, Keeper};
use crate::redact::{REDACTED, Redactor};
use crate::runner::Runner;
use crate::runner::Strategy;
use crate::runner::agent::{AgentConfig, AgentRunner};
use crate::runner::exec::{self, ExecRunner};
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
/// Default for [`ExecutorBuilder::memory_limit`]: 2 GiB, swap included (no swap on top).
///
/// Enough for ordinary data work (a pandas frame of some hundred MB, a scikit-learn fit, a
/// plotted figure), little enough that a runaway `list.append` loop meets the OOM killer in
/// seconds instead of pushing the host into swap. `/tmp` is a tmpfs charged to the same limit.
pub const DEFAULT_MEMORY: u64 = 2 * 1024 * 1024 * 1024;
/// Default for [`ExecutorBuilder::pids_limit`]: 1024 processes and threads in the container.
///
/// A fork bomb stops at it within milliseconds (and the block at its timeout), while a
/// process pool of 16 workers with 32 threads each (NumPy's BLAS starts one per core) still
/// fits. The agent and its shepherds count too: two plus one per running block.
pub const DEFAULT_PIDS: i64 = 1024;
/// Default for [`ExecutorBuilder::tmp_size`]: a 512 MiB tmpfs at `/tmp`.
///
/// Room for the scratch files libraries write (matplotlib's cache, joblib's spill, pip's
/// build dirs), bounded, and charged to the memory limit. Large outputs belong in
/// `/workspace`, which is the host's disk.
pub const DEFAULT_TMP_SIZE: u64 = 512 * 1024 * 1024;
/// Default for [`ExecutorBuilder::nofile`]: 4096 open files per process, soft and hard.
///
/// Four times the usual 1024 soft limit of a Linux login, so nothing ordinary meets it; it
/// bounds the kernel memory a descriptor hog can pin (Docker's own default is 1048576).
pub const DEFAULT_NOFILE: u64 = 4096;
/// The user blocks run as by default when neither [`ExecutorBuilder::user`] nor the image
/// names one and dockexec itself runs as root: `nobody:nogroup`.
pub const NOBODY: &str = "65534:65534";
/// The capabilities the container keeps by default (all others are dropped). See
/// [`ExecutorBuilder::drop_capabilities`].
pub const KEPT_CAPABILITIES: [&str; 3] = ["SETUID", "SETGID", "KILL"];

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

/// Who blocks run as: see [`ExecutorBuilder::user`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum UserChoice {
    /// The image's `USER` unless it is root, else the calling host user unless that is root,
    /// else [`NOBODY`]: never root.
    Default,
    /// Exactly this user.
    Given(String),
    /// The calling host user's uid:gid, whatever it is.
    Host,
    /// The image's `USER`, root included, else root.
    Image,
}

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
    init_timeout: Option<Duration>,
    api_timeout: Duration,
    user: UserChoice,
    network: String,
    drop_caps: bool,
    cap_add: Vec<String>,
    no_new_privileges: bool,
    seccomp: bool,
    read_only_root: bool,
    tmp_size: Option<u64>,
    nofile: Option<u64>,
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
    /// Secret variables: in the container's `Env`, redacted from everything shown.
    secret_env: BTreeMap<String, String>,
    device_requests: Vec<DeviceRequest>,
    /// Merged over the `HostConfig` built from the options above, last.
    host_config: Option<Value>,
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
            tmp_size: Some(DEFAULT_TMP_SIZE),
            nofile: Some(DEFAULT_NOFILE),
            memory: Some(DEFAULT_MEMORY),
            nano_cpus: None,
            pids_limit: Some(DEFAULT_PIDS),
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
            secret_env: BTreeMap::new(),
            device_requests: Vec::new(),
            host_config: None,
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
    /// process died without stopping.
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
    /// non-zero, `start()` fails with [`Error::InitCommand`] carrying its output. Defaults to
    /// none.
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

    /// The user blocks run as (`"1000"`, `"1000:1000"`, `"nobody"`, `"0"` for root).
    ///
    /// Defaults to a user that is never root: the image's `USER` when it names one other than
    /// root; else the calling host user's uid:gid (as [`host_user`](Self::host_user)) when
    /// dockexec does not run as root; else [`NOBODY`] (`65534:65534`). The host user comes
    /// first because the files a block leaves in the workspace are then the caller's own, and
    /// the temporary workspace needs no permission for anyone else; a host root must not hand
    /// its uid to hostile code, hence `nobody`.
    ///
    /// A root block (`user("0")`, or [`trusted`](Self::trusted) on an image without `USER`)
    /// owns its container. With the default capabilities it holds [`KEPT_CAPABILITIES`], so
    /// it can: signal every process (dockexec's agent, the keeper, the other blocks) and so
    /// end the container (`kill -9 -1`); change its uid; with the exec strategy, stop its own
    /// kill (which runs as the block's user, so as root here, and has no root backstop: that
    /// would end the container's own processes), so it may outlive a cancel or timeout until
    /// the executor stops. It still cannot write the read-only root, leave the limits, reach
    /// the network, read files of other users without `DAC_OVERRIDE`/`DAC_READ_SEARCH`, or
    /// open files by handle (see [`seccomp`](Self::seccomp)); and the host still never
    /// follows a link it plants in the workspace. When it ends the
    /// container, the executor says so and loses nothing else: the running blocks end
    /// [`lost`](crate::ExitStatus::lost), later calls fail with
    /// [`Error::ContainerGone`], [`Executor::stop`] still succeeds, the work dir keeps its
    /// files (written as root), and other executors are untouched.
    ///
    /// Whatever the user, the container's own processes (its init, keeper and the agent) run
    /// as root, so a non-root block cannot end them, nor touch what the kill relies on.
    pub fn user(&mut self, user: impl Into<String>) -> &mut Self {
        self.user = UserChoice::Given(user.into());
        self
    }

    /// Runs blocks as the calling host user's uid:gid (root when dockexec runs as root), so
    /// that every file they write in the workspace or a volume is the caller's. Defaults to
    /// off: see [`user`](Self::user) for the default.
    pub fn host_user(&mut self) -> &mut Self {
        self.user = UserChoice::Host;
        self
    }

    /// Relaxes every hardened default at once, for code you trust: blocks run as the image's
    /// user (root when it names none), the container keeps Docker's default capabilities and
    /// Docker's default seccomp profile (not dockexec's, see [`seccomp`](Self::seccomp)),
    /// without `no-new-privileges`, with a writable root filesystem and no `/tmp` tmpfs, and
    /// with no memory, process, CPU or open-file limit. The network is not opened: that stays
    /// [`network`](Self::network)'s call. Options set after this one still apply, so
    /// `trusted()` then `memory_limit(Some(…))` keeps a memory limit.
    pub fn trusted(&mut self) -> &mut Self {
        self.user = UserChoice::Image;
        self.drop_caps = false;
        self.cap_add.clear();
        self.no_new_privileges = false;
        self.seccomp = false;
        self.read_only_root = false;
        self.tmp_size = None;
        self.nofile = None;
        self.memory = None;
        self.nano_cpus = None;
        self.pids_limit = None;
        self
    }

    /// Whether the container drops every capability but those it needs. Defaults to `true`:
    /// the container keeps only [`KEPT_CAPABILITIES`], used by its root processes, never by a
    /// non-root block (which holds no capability at all):
    /// - `SETUID`, `SETGID`: the agent drops from root to each block's user;
    /// - `KILL`: the agent, as root, signals the block's processes, which belong to another
    ///   user; so does the exec strategy's root backstop, when a block stopped its kill (the
    ///   kill itself runs as the block's user and needs no capability).
    ///
    /// Nothing that reaches outside the container is kept: no `DAC_READ_SEARCH` (with it,
    /// `open_by_handle_at` opens any file of the host filesystem behind a bind mount, the
    /// "Shocker" escape) and no `SYS_PTRACE`. A non-root block never holds a capability; a
    /// root one holds these three.
    ///
    /// `false` keeps Docker's default set (`CHOWN`, `DAC_OVERRIDE`, `FOWNER`, `NET_RAW`, …).
    pub fn drop_capabilities(&mut self, yes: bool) -> &mut Self {
        self.drop_caps = yes;
        self
    }

    /// Adds a capability (`"NET_ADMIN"`, `"CAP_CHOWN"`) to those the container keeps.
    /// Defaults to none beyond the ones [`drop_capabilities`](Self::drop_capabilities) lists.
    ///
    /// A non-root block never holds an added capability (`no-new-privileges` and the switch
    /// of user drop it); the container's root processes and a root block (`user("0")`) do.
    /// What some give a root block: `DAC_OVERRIDE`/`DAC_READ_SEARCH` read (and the first
    /// writes) every file of the container, other blocks' included (`open_by_handle_at`,
    /// which would reach the host's files with `DAC_READ_SEARCH`, stays denied by
    /// [`seccomp`](Self::seccomp)); `SYS_PTRACE` reads and rewrites the memory of any
    /// process there, dockexec's own included; `CHOWN`/`FOWNER` take or change any file;
    /// `NET_RAW`/`NET_ADMIN` forge packets or reconfigure the container's network;
    /// `SYS_ADMIN` is close to everything (mounts, namespaces) and should not be given to
    /// code you do not trust.
    pub fn cap_add(&mut self, capability: impl Into<String>) -> &mut Self {
        self.cap_add.push(capability.into());
        self
    }

    /// Whether the container runs with `no-new-privileges`: no process can gain privileges
    /// by executing a set-user-ID or file-capability binary (`su`, `sudo`, `ping`). Defaults
    /// to `true`. The agent still changes user: it drops privileges, it gains none.
    pub fn no_new_privileges(&mut self, yes: bool) -> &mut Self {
        self.no_new_privileges = yes;
        self
    }

    /// Whether the container runs under dockexec's own seccomp profile. Defaults to `true`.
    ///
    /// The profile allows every syscall but a deny list: the file-handle syscalls
    /// (`open_by_handle_at`, `name_to_handle_at`, the "Shocker" escape from a container,
    /// denied even to a root block with `cap_add("DAC_READ_SEARCH")`), namespaces (`unshare`,
    /// `setns`, `clone` with `CLONE_NEW*`; `clone3` reports `ENOSYS` so libc falls back to
    /// `clone`), `bpf`, `perf_event_open`, `userfaultfd`, `io_uring_*`, the key-ring calls,
    /// `kcmp`, `AF_VSOCK` sockets, mounts, modules, `kexec`, clocks, `reboot`, `swapon`,
    /// `syslog`, `quotactl`, `iopl`/`ioperm`, and a few obsolete ones. Denied calls fail with
    /// `EPERM`.
    ///
    /// It *replaces* Docker's default profile, an allowlist: a profile given to Docker cannot
    /// extend the default, and dockexec does not ship a copy of Docker's. Its deny list holds
    /// every call Docker's default refuses that a container without capabilities could still
    /// make, so nothing that matters is lost, but a syscall added to the kernel later is
    /// allowed here where Docker's would refuse it. `false` (and [`trusted`](Self::trusted))
    /// leaves Docker's default profile in place; `host_config_json` with a `SecurityOpt`
    /// replaces this option's entry (and `no-new-privileges`) whole.
    pub fn seccomp(&mut self, yes: bool) -> &mut Self {
        self.seccomp = yes;
        self
    }

    /// Whether the container's root filesystem is read-only. Defaults to `true`: a block
    /// cannot plant a binary or edit `/etc` for the blocks after it. Writable are
    /// `/workspace`, `/tmp` (see [`tmp_size`](Self::tmp_size)), `/dev/shm` and any
    /// [`volume`](Self::volume); `HOME` is `/tmp` (`/workspace` without the tmpfs) unless
    /// [`env`](Self::env) sets it. `false`
    /// (or the CLI's `--read-write-root`) makes it writable, e.g. for `pip install`.
    pub fn read_only_root(&mut self, yes: bool) -> &mut Self {
        self.read_only_root = yes;
        self
    }

    /// The size of the tmpfs mounted at `/tmp` (`nosuid`, `nodev`; its pages count against
    /// the memory limit); `None` for no tmpfs (the image's own `/tmp`). Defaults to
    /// [`DEFAULT_TMP_SIZE`] (512 MiB).
    pub fn tmp_size(&mut self, bytes: Option<u64>) -> &mut Self {
        self.tmp_size = bytes;
        self
    }

    /// The open-file limit (`RLIMIT_NOFILE`, soft and hard) of every process in the
    /// container; `None` for Docker's. Defaults to [`DEFAULT_NOFILE`] (4096).
    pub fn nofile(&mut self, limit: Option<u64>) -> &mut Self {
        self.nofile = limit;
        self
    }

    /// Docker's network mode. Defaults to `"none"`: blocks get loopback only.
    pub fn network(&mut self, mode: impl Into<String>) -> &mut Self {
        self.network = mode.into();
        self
    }

    /// The container's memory limit in bytes, swap included (Docker's `MemorySwap` is set to
    /// the same value, so a hog is killed instead of swapping); `None` for none. Past it the
    /// kernel's OOM killer ends a process, and the block's status says
    /// [`oom_killed`](crate::ExitStatus::oom_killed). Defaults to [`DEFAULT_MEMORY`] (2 GiB).
    pub fn memory_limit(&mut self, bytes: Option<u64>) -> &mut Self {
        self.memory = bytes;
        self
    }

    /// The container's CPU limit, in CPUs (`1.5`); `None` for none. Defaults to none: the
    /// timeout already bounds each block's CPU time, and a quota would only slow down the
    /// parallel code (NumPy, a process pool) that ordinary scripts run. Set it to share a host
    /// fairly between executors.
    pub fn cpu_limit(&mut self, cpus: Option<f64>) -> &mut Self {
        self.nano_cpus = cpus.map(|c| (c * 1e9) as u64);
        self
    }

    /// The container's process (and thread) limit; `None` for none. Defaults to
    /// [`DEFAULT_PIDS`] (1024), which stops a fork bomb.
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

    /// Asks the daemon for host devices such as GPUs (Docker's `HostConfig.DeviceRequests`,
    /// AutoGen's `device_requests`); may be called more than once. Defaults to none.
    ///
    /// ```no_run
    /// # fn main() -> dockexec::Result<()> {
    /// use dockexec::{DeviceRequest, Executor};
    ///
    /// let executor = Executor::builder()
    ///     .device_request(DeviceRequest::gpus_all())
    ///     .start()?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`start`](Self::start) fails with [`Error::Docker`], naming the request, when the
    /// daemon cannot meet it (no such device, or no driver for it, as on a host without
    /// GPUs or without the NVIDIA container toolkit).
    pub fn device_request(&mut self, request: DeviceRequest) -> &mut Self {
        self.device_requests.push(request);
        self
    }

    /// Raw Engine API `HostConfig` fields for what the typed options lack (`ShmSize`,
    /// `Sysctls`, `Devices`, `Runtime`, …), merged over the `HostConfig` built from the other
    /// options, last: each top-level field given replaces that field whole (a `Ulimits` given
    /// here replaces the default `nofile` one; it is not appended to). Defaults to none.
    ///
    /// Nothing is checked but that it is a JSON object; the daemon judges the rest. **A field
    /// that weakens a default is your explicit choice and dockexec honours it**:
    /// `{"Privileged": true}`, `{"CapDrop": []}`, `{"SecurityOpt": []}`,
    /// `{"ReadonlyRootfs": false}`, `{"NetworkMode": "host"}` or `{"PidsLimit": 0}` undo the
    /// sandbox's defaults, and `{"Binds": [...]}` or `{"Mounts": [...]}` can expose host files
    /// (replacing `Mounts` also drops the workspace mount the executor needs). A `Tmpfs` given
    /// here still gets the executor's own control dir (`/run/dockexec`) unless it names it.
    ///
    /// ```no_run
    /// # fn main() -> dockexec::Result<()> {
    /// use dockexec::Executor;
    /// use serde_json::json;
    ///
    /// let executor = Executor::builder()
    ///     .host_config_json(json!({ "ShmSize": 1u64 << 30, "Sysctls": { "net.ipv4.ip_forward": "0" } }))
    ///     .start()?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`start`](Self::start) fails with [`Error::InvalidInput`] when `config` is not a JSON
    /// object, and with [`Error::Docker`] when the daemon refuses a field.
    pub fn host_config_json(&mut self, config: Value) -> &mut Self {
        self.host_config = Some(config);
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
        let id = orphans::random_id();
        let workspace = Arc::new(Workspace::create(
            self.work_dir.as_deref(),
            &id,
            numeric_ids(user.as_deref().unwrap_or("0")),
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
        // Attached before the start, so the container never runs without its switch.
        // Shared with the exec runner, whose kill falls back on it (see `runner::exec`).
        let keeper = Arc::new(Keeper::attach(&client, &container).map_err(fail)?);
        client
            .container_start(&container)
            .map_err(|e| self.explain_device_requests(e))
            .map_err(fail)?;
        self.run_init_command(&client, &container, user.as_deref())
            .map_err(fail)?;
        let (runner, strategy) = self
            .runner(&client, &container, &workspace, &id, user, &keeper)
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
            keeper,
            image: self.image.clone(),
            workspace,
            timeout: self.timeout,
            delete_code_files: self.delete_code_files,
            max_output: self.max_output,
            on_output_limit: self.on_output_limit,
            gate: RwLock::new(false),
            stopping: std::sync::atomic::AtomicBool::new(false),
            stop_lock: Mutex::new(false),
            live: Mutex::new(Vec::new()),
            next: AtomicU64::new(1),
            redactor: Arc::clone(redactor),
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
        keeper: &Arc<Keeper>,
    ) -> Result<(Box<dyn Runner>, Strategy)> {
        let exec = || -> Result<(Box<dyn Runner>, Strategy)> {
            let r = ExecRunner::new(
                client,
                container,
                Arc::clone(workspace),
                id,
                user.as_deref(),
                Arc::clone(keeper),
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

    /// The user blocks run as (see [`user`](Self::user)); `None` for root.
    fn block_user(&self, client: &Client) -> Result<Option<String>> {
        let image = || -> Result<Option<String>> {
            Ok(Some(client.image_user(&self.image)?).filter(|u| !u.trim().is_empty()))
        };
        let (uid, gid) = host_ids();
        Ok(match &self.user {
            UserChoice::Given(u) => Some(u.clone()),
            UserChoice::Host => Some(format!("{uid}:{gid}")),
            UserChoice::Image => image()?,
            UserChoice::Default => match image()? {
                Some(u) if !is_root(&u) => Some(u),
                _ if uid != 0 => Some(format!("{uid}:{gid}")),
                _ => Some(NOBODY.to_string()),
            },
        })
    }

    /// The capabilities the container keeps on top of none, when it drops them.
    fn kept_capabilities(&self) -> Vec<String> {
        let mut caps: Vec<String> = KEPT_CAPABILITIES.iter().map(|c| c.to_string()).collect();
        caps.extend(self.cap_add.iter().cloned());
        caps
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

    /// Names the device requests in a start failure, which is where the daemon meets them
    /// (`could not select device driver "" with capabilities: [[gpu]]`).
    fn explain_device_requests(&self, e: Error) -> Error {
        match e {
            Error::Docker { status, message } if !self.device_requests.is_empty() => {
                let asked: Vec<String> =
                    self.device_requests.iter().map(|r| r.to_string()).collect();
                Error::Docker {
                    status,
                    message: format!(
                        "{message} (while meeting device_request {}; does this host have the \
                         devices and their driver, e.g. the NVIDIA container toolkit for GPUs?)",
                        asked.join("; ")
                    ),
                }
            }
            e => e,
        }
    }

    /// Connects to the daemon, and sweeps orphans first if asked to.
    fn connect(&self) -> Result<Client> {
        let socket = match &self.socket {
            Some(s) => s.clone(),
            None => api::socket_from_env()?,
        };
        let client = Client::connect_with(&socket, self.api_timeout)?;
        if self.gc_orphans {
            // Best effort: a failed sweep must not stop this executor from starting.
            let _ = orphans::sweep(&client, false, &[]);
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
        let (code, out, err) = client
            .exec_collect(container, &body, self.init_timeout)
            .map_err(|e| match e {
                Error::Timeout { what } => Error::Timeout {
                    what: format!("the init command: {what}"),
                },
                e => e,
            })?;
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

    /// The container-create body `start` sends (also what `__bench` hands the async rival).
    pub(crate) fn create_body(&self, id: &str, workspace: &std::path::Path) -> Value {
        let mut env: Vec<String> = vec!["PYTHONUNBUFFERED=1".into()];
        if !self.env.contains_key("HOME") {
            // A read-only root leaves no writable home (and nobody's is /nonexistent anyway).
            if self.tmp_size.is_some() {
                env.push("HOME=/tmp".into());
            } else if self.read_only_root {
                env.push(format!("HOME={WORKSPACE}"));
            }
        }
        env.extend(self.env.iter().map(|(k, v)| format!("{k}={v}")));
        // Here, in Config.Env, and nowhere else (no label): see `secret_env`.
        env.extend(self.secret_env.iter().map(|(k, v)| format!("{k}={v}")));
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
        if let Some(m) = self.memory {
            // Swap included: a hog is killed at the limit rather than swapping past it.
            host["MemorySwap"] = json!(m);
        }
        if self.drop_caps {
            host["CapDrop"] = json!(["ALL"]);
            host["CapAdd"] = json!(self.kept_capabilities());
        } else if !self.cap_add.is_empty() {
            host["CapAdd"] = json!(self.cap_add);
        }
        let mut security = Vec::new();
        if self.no_new_privileges {
            security.push("no-new-privileges".to_string());
        }
        if self.seccomp {
            security.push(crate::seccomp::security_opt());
        }
        if !security.is_empty() {
            host["SecurityOpt"] = json!(security);
        }
        if self.read_only_root {
            host["ReadonlyRootfs"] = json!(true);
        }
        if let Some(size) = self.tmp_size {
            host["Tmpfs"] = json!({ "/tmp": format!("rw,nosuid,nodev,mode=1777,size={size}") });
        }
        if let Some(n) = self.nofile {
            host["Ulimits"] = json!([{ "Name": "nofile", "Soft": n, "Hard": n }]);
        }
        if !self.device_requests.is_empty() {
            host["DeviceRequests"] = self
                .device_requests
                .iter()
                .map(DeviceRequest::to_json)
                .collect();
        }
        // Last, so that it overrides whatever the options above set: the user's explicit call.
        if let Some(Value::Object(fields)) = &self.host_config {
            for (k, v) in fields {
                host[k.as_str()] = v.clone();
            }
        }
        // The exec strategy's marker dir: root's, out of the blocks' reach and out of the
        // workspace (see `runner::exec`); mounted whatever the strategy, as Auto may fall back.
        // After the passthrough: it is the executor's own machinery, not a default to weaken,
        // so a `Tmpfs` given there gains it unless it mounts that path itself.
        // (A non-object `Tmpfs` is left for the daemon to refuse: indexing it would panic.)
        match &mut host["Tmpfs"] {
            t @ Value::Null => *t = json!({ exec::CONTROL_DIR: exec::CONTROL_DIR_OPTIONS }),
            Value::Object(t) => {
                t.entry(exec::CONTROL_DIR)
                    .or_insert_with(|| json!(exec::CONTROL_DIR_OPTIONS));
            }
            _ => {}
        }
        let body = json!({
            "Image": self.image,
            // The keeper: the dead-man's switch, in nothing but `sh` (see `orphans`).
            "Entrypoint": ["sh", "-c", KEEPER_SCRIPT],
            "Cmd": [],
            "WorkingDir": WORKSPACE,
            "Env": env,
            "Labels": all_labels,
            "Tty": false,
            // The keeper's stdin is the owner's attach; closed when that ends.
            "OpenStdin": true,
            "StdinOnce": true,
            "HostConfig": host,
            // The container's own processes (init and the keeper) run as root, and only the
            // blocks as their user: a block that signals everything it can (`kill -9 -1`)
            // must not be able to end its own container.
            "User": "0",
        });
        body
    }
}

/// The calling process's effective uid and gid, read from the owner of `/proc/self` (no
/// `unsafe` libc call); root when that cannot be read.
pub(crate) fn host_ids() -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map_or((0, 0), |m| (m.uid(), m.gid()))
}

/// True for a user spec that means root: `0`, `root`, `0:…`, `root:…`.
fn is_root(user: &str) -> bool {
    matches!(user.split(':').next().map(str::trim), Some("0" | "root"))
}

/// A user spec's numeric uid and gid, when both are written as numbers (`"1000:1000"`); a uid
/// alone gives `(uid, None)`. `None` for a name, which only the image's `/etc/passwd` resolves.
fn numeric_ids(user: &str) -> Option<(u32, Option<u32>)> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let uid = if u == "root" { 0 } else { u.parse().ok()? };
    let gid = match g {
        Some(g) => Some(g.parse().ok()?),
        None => None,
    };
    Some((uid, gid))
}

#[cfg(test)]
mod create_body_tests {
    use super::*;

    #[test]
    fn a_tmpfs_passthrough_keeps_the_control_dir_and_a_bad_one_does_not_panic() {
        let mut b = ExecutorBuilder::new();
        b.host_config_json(json!({ "Tmpfs": { "/scratch": "size=1m" } }));
        let body = b.create_body("0123456789abcdef", std::path::Path::new("/w"));
        let tmpfs = &body["HostConfig"]["Tmpfs"];
        assert_eq!(tmpfs["/scratch"], json!("size=1m"));
        assert_eq!(tmpfs[exec::CONTROL_DIR], json!(exec::CONTROL_DIR_OPTIONS));
        assert!(
            tmpfs.get("/tmp").is_none(),
            "the passthrough replaces the field: {tmpfs}"
        );
        b.host_config_json(json!({ "Tmpfs": "not a map" }));
        let body = b.create_body("0123456789abcdef", std::path::Path::new("/w"));
        assert_eq!(body["HostConfig"]["Tmpfs"], json!("not a map"));
    }

    #[test]
    fn secrets_devices_and_the_passthrough_in_the_create_body() {
        let mut b = ExecutorBuilder::new();
        b.secret_env("TOKEN", "s3cr3t")
            .env("PLAIN", "1")
            .device_request(DeviceRequest::gpus(2))
            .host_config_json(json!({
                "ShmSize": 67108864,
                "Ulimits": [{ "Name": "nofile", "Soft": 10, "Hard": 10 }],
                "ReadonlyRootfs": false,
            }));
        let body = b.create_body("0123456789abcdef", std::path::Path::new("/w"));
        let env: Vec<&str> = body["Env"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            env.contains(&"TOKEN=s3cr3t") && env.contains(&"PLAIN=1"),
            "{env:?}"
        );
        let rest = body
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| *k != "Env");
        for (k, v) in rest {
            assert!(!v.to_string().contains("s3cr3t"), "{k}: {v}");
        }
        let host = &body["HostConfig"];
        assert_eq!(
            host["DeviceRequests"],
            json!([{"Driver": "", "Count": 2, "DeviceIDs": [], "Capabilities": [["gpu"]],
                    "Options": {}}])
        );
        // The passthrough wins over the defaults, field by field, and leaves the rest.
        assert_eq!(host["ShmSize"], json!(67108864));
        assert_eq!(
            host["Ulimits"],
            json!([{ "Name": "nofile", "Soft": 10, "Hard": 10 }])
        );
        assert_eq!(host["ReadonlyRootfs"], json!(false));
        assert_eq!(host["CapDrop"], json!(["ALL"]));
        assert_eq!(host["NetworkMode"], json!("none"));
        assert!(host["Tmpfs"].get(exec::CONTROL_DIR).is_some(), "{host}");
        let shown = format!("{b:?}");
        assert!(
            !shown.contains("s3cr3t") && shown.contains("TOKEN=[REDACTED]"),
            "{shown}"
        );
    }

    #[test]
    fn security_opt_holds_no_new_privileges_and_the_seccomp_profile_unless_turned_off() {
        let opts = |b: &ExecutorBuilder| -> Value {
            b.create_body("0123456789abcdef", std::path::Path::new("/w"))["HostConfig"]
                ["SecurityOpt"]
                .clone()
        };
        let mut b = ExecutorBuilder::new();
        assert_eq!(
            opts(&b),
            json!(["no-new-privileges", crate::seccomp::security_opt()])
        );
        b.seccomp(false);
        assert_eq!(opts(&b), json!(["no-new-privileges"]));
        b.seccomp(true).no_new_privileges(false);
        assert_eq!(opts(&b), json!([crate::seccomp::security_opt()]));
        let mut t = ExecutorBuilder::new();
        t.trusted();
        assert_eq!(
            opts(&t),
            Value::Null,
            "trusted keeps Docker's default profile"
        );
        t.host_config_json(json!({ "SecurityOpt": ["seccomp=unconfined"] }));
        assert_eq!(opts(&t), json!(["seccomp=unconfined"]));
        // The capabilities kept: nothing that reaches the host, on every strategy.
        for strategy in [Strategy::Auto, Strategy::Exec, Strategy::Agent] {
            let mut b = ExecutorBuilder::new();
            b.strategy(strategy);
            let body = b.create_body("0123456789abcdef", std::path::Path::new("/w"));
            assert_eq!(
                body["HostConfig"]["CapAdd"],
                json!(["SETUID", "SETGID", "KILL"])
            );
        }
    }

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
}
