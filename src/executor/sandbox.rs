//! The sandbox options of [`ExecutorBuilder`]: who blocks run as, what the container's
//! root processes may do, and the limits. Each is a hardened default with its own opt-out;
//! [`ContainerSpec`](crate::spec::ContainerSpec) turns them into the container.

use serde_json::Value;

use super::ExecutorBuilder;
use crate::device::DeviceRequest;
#[allow(unused_imports)] // in the docs' links
use crate::spec::{DEFAULT_MEMORY, DEFAULT_NOFILE, DEFAULT_PIDS, DEFAULT_TMP_SIZE};
use crate::spec::{TmpSize, UserChoice};

impl ExecutorBuilder {
    /// The user blocks run as (`"1000"`, `"1000:1000"`, `"nobody"`, `"0"` for root).
    ///
    /// Defaults to a user that is never root: the image's `USER` when it names one other than
    /// root; else the calling host user's uid:gid (as [`host_user`](Self::host_user)) when
    /// dockexec does not run as root; else [`NOBODY`](crate::NOBODY) (`65534:65534`). The host user comes
    /// first because the files a block leaves in the workspace are then the caller's own, and
    /// the temporary workspace needs no permission for anyone else; a host root must not hand
    /// its uid to hostile code, hence `nobody`.
    ///
    /// A root block (`user("0")`, or [`trusted`](Self::trusted) on an image without `USER`)
    /// owns its container. With the default capabilities it holds
    /// [`KEPT_CAPABILITIES`](crate::KEPT_CAPABILITIES), so it can: signal every process
    /// (dockexec's agent, the keeper, the other blocks) and so end the container
    /// (`kill -9 -1`); change its uid; with the exec strategy, stop its own kill (which runs as
    /// the block's user, so as root here), in which case the keeper's kill, the backstop,
    /// ends every process of the container but the keeper. It still cannot write the
    /// read-only root, leave the limits, reach the network, read files of other users without
    /// `DAC_OVERRIDE`/`DAC_READ_SEARCH`, or open files by handle (see
    /// [`seccomp`](Self::seccomp)); and the host still never follows a link it plants in the
    /// workspace. When it ends the
    /// container, the executor says so and loses nothing else: the running blocks end
    /// [`lost`](crate::ExitStatus::lost), later calls fail with
    /// [`Error::ContainerGone`](crate::Error::ContainerGone), [`Executor::stop`](crate::Executor::stop) still succeeds, the work dir keeps its
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
        self.tmp_size = TmpSize::Set(None);
        self.nofile = None;
        self.memory = None;
        self.cpus = None;
        self.pids_limit = None;
        self
    }

    /// Whether the container drops every capability but those it needs. Defaults to `true`:
    /// the container keeps only [`KEPT_CAPABILITIES`](crate::KEPT_CAPABILITIES), used by its root processes, never by a
    /// non-root block (which holds no capability at all):
    /// - `SETUID`, `SETGID`: the agent drops from root to each block's user;
    /// - `KILL`: the agent, as root, signals the block's processes, which belong to another
    ///   user; so does the keeper, the exec strategy's root backstop, when a block stopped its
    ///   kill (the kill itself runs as the block's user and needs no capability).
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
    /// [`DEFAULT_TMP_SIZE`] (512 MiB), or half the [`memory_limit`](Self::memory_limit) when
    /// that is less: a full `/tmp` (whose pages no process is charged for, so the OOM killer
    /// cannot free them) then still leaves the other half to the blocks and the control
    /// plane. A size set here is used as given, even above the memory limit.
    pub fn tmp_size(&mut self, bytes: Option<u64>) -> &mut Self {
        self.tmp_size = TmpSize::Set(bytes);
        self
    }

    /// The size of the workspace when it lives in the container: on an engine that does not
    /// share this host's filesystem
    /// ([`Engine::host_filesystem_shared`](crate::Engine::host_filesystem_shared)),
    /// `/workspace` is a tmpfs on the engine's side (`nosuid`, `nodev`, executables allowed),
    /// the block user's, and its pages count against the memory limit like `/tmp`'s. `None`
    /// for the kernel's default (half the engine host's memory). Defaults to
    /// [`DEFAULT_TMP_SIZE`] (512 MiB), or half the [`memory_limit`](Self::memory_limit) when
    /// that is less. Ignored when the workspace is a host directory (whose size is the
    /// host disk's).
    pub fn workspace_size(&mut self, bytes: Option<u64>) -> &mut Self {
        self.workspace_size = TmpSize::Set(bytes);
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
    /// fairly between executors. A limit that is not a positive, finite number (or rounds to
    /// less than a billionth of a CPU) makes [`start`](Self::start) fail with
    /// [`Error::InvalidInput`](crate::Error::InvalidInput).
    pub fn cpu_limit(&mut self, cpus: Option<f64>) -> &mut Self {
        self.cpus = cpus;
        self
    }

    /// Docker's `NanoCpus` for [`cpu_limit`](Self::cpu_limit), once `validate` has passed.
    pub(crate) fn nano_cpus(&self) -> Option<u64> {
        self.cpus.map(|c| (c * 1e9).round() as u64)
    }

    /// The container's process (and thread) limit; `None` for none. Defaults to
    /// [`DEFAULT_PIDS`] (1024), which stops a fork bomb.
    pub fn pids_limit(&mut self, limit: Option<i64>) -> &mut Self {
        self.pids_limit = limit;
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
    /// [`start`](Self::start) fails with [`Error::Docker`](crate::Error::Docker), naming the request, when the
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
    /// [`start`](Self::start) fails with [`Error::InvalidInput`](crate::Error::InvalidInput) when `config` is not a JSON
    /// object, and with [`Error::Docker`](crate::Error::Docker) when the daemon refuses a field.
    pub fn host_config_json(&mut self, config: Value) -> &mut Self {
        self.host_config = Some(config);
        self
    }

    // --- Podman (issue 17): the opt-out of the fail-closed limits ---
    /// Whether [`start`](Self::start) may run where the engine says it cannot enforce a
    /// limit this executor asks for. Defaults to `false`: `start()` then fails with
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) naming each limit and the reason,
    /// since dockexec never runs with a limit silently missing. The cases known:
    /// - rootless Podman on cgroup v1 or with the cgroupfs manager drops
    ///   [`pids_limit`](Self::pids_limit) (without a warning),
    ///   [`memory_limit`](Self::memory_limit) and [`cpu_limit`](Self::cpu_limit);
    /// - any engine whose `/info` says `PidsLimit`, `MemoryLimit` or `CpuCfsQuota` is `false`;
    /// - Podman drops every [`device_request`](Self::device_request) without an error.
    ///
    /// With `true` the executor runs without those limits (or devices): your explicit choice.
    /// See the README's "Docker and Podman" table.
    pub fn allow_unenforced_limits(&mut self, yes: bool) -> &mut Self {
        self.allow_unenforced = yes;
        self
    }

    /// What this executor asks the engine to enforce, for `podman::check_enforceable`.
    pub(crate) fn asked(&self) -> crate::podman::Asked {
        crate::podman::Asked {
            pids_limit: self.pids_limit.is_some_and(|p| p > 0),
            memory: self.memory.is_some(),
            cpus: self.cpus.is_some(),
            devices: !self.device_requests.is_empty(),
        }
    }
    // --- end Podman ---

    /// The OCI runtime the container runs under, by name as the daemon registers it: Docker's
    /// `--runtime`. Defaults to the daemon's default (`runc`).
    ///
    /// [`Runtime::Gvisor`](crate::Runtime::Gvisor) (or `"runsc"`) runs the container under
    /// gVisor: a block's system calls meet gVisor's own kernel, in user space, instead of the
    /// host's, so a kernel bug or a capability too many no longer puts it on the host. Every
    /// other default (user, capabilities, read-only root, limits, no network) still applies;
    /// the README's sandbox section says what differs and what it costs. The daemon must run
    /// `runsc` with `--network=none` in its `runtimeArgs` (dockexec's default network is
    /// none, and runsc refuses to share the root network namespace).
    ///
    /// ```no_run
    /// # fn main() -> dockexec::Result<()> {
    /// use dockexec::{Executor, Runtime};
    ///
    /// let executor = Executor::builder().runtime(Runtime::Gvisor).start()?;
    /// let out = executor.run(&dockexec::CodeBlock::sh("uname -r"))?; // gVisor's kernel: 4.4.0
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`start`](Self::start) fails with
    /// [`Error::RuntimeNotFound`](crate::Error::RuntimeNotFound) when the daemon has not
    /// registered the runtime: the message names it, the runtimes the daemon has, and how to
    /// install and register it.
    pub fn runtime(&mut self, runtime: impl Into<crate::Runtime>) -> &mut Self {
        self.runtime = Some(runtime.into());
        self
    }
}
