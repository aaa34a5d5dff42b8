//! [`ContainerSpec`]: what container to create, resolved from the builder's options (by
//! `ExecutorBuilder::spec`), the image's `USER` and the caller's ids. Pure: no I/O, so all of it (the create body, the
//! block user, the capabilities) is unit-tested without a daemon, and one spec can create
//! many containers. Each runner adds what it needs itself ([`crate::runner::prepare`]), so
//! neither the builder nor the spec names a runner's paths.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::device::DeviceRequest;
use crate::lifetime::KEEPER_SCRIPT;

/// Default for [`ExecutorBuilder::memory_limit`](crate::ExecutorBuilder::memory_limit): 2 GiB, swap included (no swap on top).
///
/// Enough for ordinary data work (a pandas frame of some hundred MB, a scikit-learn fit, a
/// plotted figure), little enough that a runaway `list.append` loop meets the OOM killer in
/// seconds instead of pushing the host into swap. `/tmp` is a tmpfs charged to the same limit.
pub const DEFAULT_MEMORY: u64 = 2 * 1024 * 1024 * 1024;
/// Default for [`ExecutorBuilder::pids_limit`](crate::ExecutorBuilder::pids_limit): 1024 processes and threads in the container.
///
/// A fork bomb stops at it within milliseconds (and the block at its timeout), while a
/// process pool of 16 workers with 32 threads each (NumPy's BLAS starts one per core) still
/// fits. The agent and its shepherds count too: two plus one per running block.
pub const DEFAULT_PIDS: i64 = 1024;
/// Default for [`ExecutorBuilder::tmp_size`](crate::ExecutorBuilder::tmp_size): a 512 MiB tmpfs at `/tmp`, or half the
/// [`memory_limit`](crate::ExecutorBuilder::memory_limit) when that is less.
///
/// Room for the scratch files libraries write (matplotlib's cache, joblib's spill, pip's
/// build dirs), bounded, and charged to the memory limit. Large outputs belong in
/// `/workspace`, which is the host's disk.
pub const DEFAULT_TMP_SIZE: u64 = 512 * 1024 * 1024;
/// Default for [`ExecutorBuilder::nofile`](crate::ExecutorBuilder::nofile): 4096 open files per process, soft and hard.
///
/// Four times the usual 1024 soft limit of a Linux login, so nothing ordinary meets it; it
/// bounds the kernel memory a descriptor hog can pin (Docker's own default is 1048576).
pub const DEFAULT_NOFILE: u64 = 4096;
/// The user blocks run as by default when neither [`ExecutorBuilder::user`](crate::ExecutorBuilder::user) nor the image
/// names one and dockexec itself runs as root: `nobody:nogroup`.
pub const NOBODY: &str = "65534:65534";
/// The capabilities the container keeps by default (all others are dropped). See
/// [`ExecutorBuilder::drop_capabilities`](crate::ExecutorBuilder::drop_capabilities).
pub const KEPT_CAPABILITIES: [&str; 3] = ["SETUID", "SETGID", "KILL"];

/// Who blocks run as: see [`ExecutorBuilder::user`](crate::ExecutorBuilder::user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UserChoice {
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

impl UserChoice {
    /// Whether resolving it needs the image's `USER` (an Engine call the builder makes).
    pub(crate) fn needs_image_user(&self) -> bool {
        matches!(self, UserChoice::Default | UserChoice::Image)
    }

    /// The user blocks run as, `None` for root, given the image's `USER` (`None` or empty
    /// when it names none) and the caller's `(uid, gid)`.
    pub(crate) fn resolve(
        &self,
        image_user: Option<&str>,
        (uid, gid): (u32, u32),
    ) -> Option<String> {
        let image = image_user
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_string);
        match self {
            UserChoice::Given(u) => Some(u.clone()),
            UserChoice::Host => Some(format!("{uid}:{gid}")),
            UserChoice::Image => image,
            UserChoice::Default => match image {
                Some(u) if !is_root(&u) => Some(u),
                _ if uid != 0 => Some(format!("{uid}:{gid}")),
                _ => Some(NOBODY.to_string()),
            },
        }
    }
}

/// The `/tmp` tmpfs: see [`ExecutorBuilder::tmp_size`](crate::ExecutorBuilder::tmp_size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TmpSize {
    /// Not set: [`DEFAULT_TMP_SIZE`], at most half the memory limit.
    Auto,
    /// Set by the caller (`None`: no tmpfs), used as given.
    Set(Option<u64>),
}

impl TmpSize {
    /// The tmpfs size to ask for, given the memory limit.
    pub(crate) fn bytes(self, memory: Option<u64>) -> Option<u64> {
        match self {
            TmpSize::Set(bytes) => bytes,
            TmpSize::Auto => Some(memory.map_or(DEFAULT_TMP_SIZE, |m| DEFAULT_TMP_SIZE.min(m / 2))),
        }
    }
}

/// Where the workspace is mounted inside the container.
pub const WORKSPACE: &str = "/workspace";

/// What is mounted at [`WORKSPACE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WorkspaceMount {
    /// A host directory (its path as the daemon sees it), bind-mounted.
    Host(PathBuf),
    /// Nothing of this host: an anonymous volume of the engine's `local` driver whose device is
    /// a tmpfs, with these mount options (`size`, `mode`, `uid`, ...). A volume, not a
    /// container tmpfs, because the daemon's archive API (`put_file`/`get_file`) sees
    /// volumes and, before Docker 25, not a container's tmpfs mounts. The daemon removes it
    /// with the container (`AutoRemove`, and dockexec's own removals ask for it).
    Engine(String),
}

/// A read-only or read-write bind mount added with [`ExecutorBuilder::volume`](crate::ExecutorBuilder::volume).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Volume {
    pub(crate) host: PathBuf,
    pub(crate) container: String,
    pub(crate) read_only: bool,
}

/// The capabilities a container keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Capabilities {
    /// Docker's default set, plus these.
    DockerDefault(Vec<String>),
    /// None but these (`CapDrop: ["ALL"]`).
    Only(Vec<String>),
}

/// What container to create: every input of the create body, resolved.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ContainerSpec {
    pub(crate) image: String,
    /// `KEY=VALUE`, in order: dockexec's defaults, the caller's env, the secrets.
    pub(crate) env: Vec<String>,
    pub(crate) labels: BTreeMap<String, String>,
    /// What `/workspace` is.
    pub(crate) workspace: WorkspaceMount,
    /// The caller's bind mounts ([`ExecutorBuilder::volume`](crate::ExecutorBuilder::volume)).
    pub(crate) mounts: Vec<Volume>,
    pub(crate) network: String,
    pub(crate) auto_remove: bool,
    /// `name:ip`.
    pub(crate) extra_hosts: Vec<String>,
    pub(crate) memory: Option<u64>,
    pub(crate) nano_cpus: Option<u64>,
    pub(crate) pids_limit: Option<i64>,
    pub(crate) capabilities: Capabilities,
    pub(crate) no_new_privileges: bool,
    /// dockexec's seccomp profile (see `crate::seccomp`), instead of Docker's default.
    pub(crate) seccomp: bool,
    pub(crate) read_only_root: bool,
    /// The tmpfs at `/tmp`, in bytes.
    pub(crate) tmp_size: Option<u64>,
    pub(crate) nofile: Option<u64>,
    pub(crate) devices: Vec<DeviceRequest>,
    /// `HostConfig` fields merged over the ones above, last: the caller's explicit call.
    pub(crate) host_config: Option<Value>,
    /// The OCI runtime by name (`HostConfig.Runtime`); `None`: the daemon's default.
    pub(crate) runtime: Option<String>,
    /// Tmpfs mounts of the runners' own machinery (path → options): added after the
    /// passthrough, unless it mounts that path itself, as they are not defaults to weaken.
    pub(crate) machinery_tmpfs: BTreeMap<String, String>,
}

impl ContainerSpec {
    /// The body of `POST /containers/create`.
    pub(crate) fn to_create_body(&self) -> Value {
        let workspace = match &self.workspace {
            WorkspaceMount::Host(dir) => json!({
                "Type": "bind",
                "Source": dir,
                "Target": WORKSPACE,
                "ReadOnly": false,
            }),
            WorkspaceMount::Engine(options) => json!({
                "Type": "volume",
                "Target": WORKSPACE,
                "VolumeOptions": {
                    "Labels": self.labels.get(crate::labels::EXECUTOR)
                        .map(|id| json!({ crate::labels::EXECUTOR: id }))
                        .unwrap_or_else(|| json!({})),
                    "DriverConfig": {
                        "Name": "local",
                        "Options": { "type": "tmpfs", "device": "tmpfs", "o": options },
                    },
                },
            }),
        };
        let mounts: Vec<Value> = std::iter::once(workspace)
            .chain(self.mounts.iter().map(|m| {
                json!({
                    "Type": "bind",
                    "Source": m.host,
                    "Target": m.container,
                    "ReadOnly": m.read_only,
                })
            }))
            .collect();
        let mut host = json!({
            // docker-init as PID 1: signals are forwarded and orphans reaped.
            "Init": true,
            "Mounts": mounts,
            "NetworkMode": self.network,
            "AutoRemove": self.auto_remove,
            "ExtraHosts": self.extra_hosts,
        });
        if let Some(m) = self.memory {
            host["Memory"] = json!(m);
            // Swap included: a hog is killed at the limit rather than swapping past it.
            host["MemorySwap"] = json!(m);
        }
        if let Some(c) = self.nano_cpus {
            host["NanoCpus"] = json!(c);
        }
        if let Some(p) = self.pids_limit {
            host["PidsLimit"] = json!(p);
        }
        match &self.capabilities {
            Capabilities::Only(kept) => {
                host["CapDrop"] = json!(["ALL"]);
                host["CapAdd"] = json!(kept);
            }
            Capabilities::DockerDefault(add) if !add.is_empty() => host["CapAdd"] = json!(add),
            Capabilities::DockerDefault(_) => {}
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
        if !self.devices.is_empty() {
            host["DeviceRequests"] = self.devices.iter().map(DeviceRequest::to_json).collect();
        }
        if let Some(runtime) = &self.runtime {
            host["Runtime"] = json!(runtime);
        }
        // Last, so that it overrides whatever the options above set: the user's explicit call.
        if let Some(Value::Object(fields)) = &self.host_config {
            for (k, v) in fields {
                host[k.as_str()] = v.clone();
            }
        }
        // After the passthrough: a `Tmpfs` given there gains the machinery's mounts unless it
        // mounts those paths itself. (A non-object `Tmpfs` is left for the daemon to refuse:
        // indexing it would panic.)
        for (path, options) in &self.machinery_tmpfs {
            match &mut host["Tmpfs"] {
                t @ Value::Null => *t = json!({ path: options }),
                Value::Object(t) => {
                    t.entry(path.clone()).or_insert_with(|| json!(options));
                }
                _ => {}
            }
        }
        json!({
            "Image": self.image,
            // The keeper: the dead-man's switch, in nothing but `sh` (see `lifetime`). By its
            // absolute path: it runs as root, and the container's `PATH` is the user's, which
            // may name a dir a block writes (`/workspace`).
            "Entrypoint": ["/bin/sh", "-c", KEEPER_SCRIPT],
            "Cmd": [],
            "WorkingDir": WORKSPACE,
            "Env": self.env,
            "Labels": self.labels,
            "Tty": false,
            // The keeper's stdin is the owner's attach; closed when that ends.
            "OpenStdin": true,
            "StdinOnce": true,
            "HostConfig": host,
            // The container's own processes (init and the keeper) run as root, and only the
            // blocks as their user: a block that signals everything it can (`kill -9 -1`)
            // must not be able to end its own container.
            "User": "0",
        })
    }
}

/// True for a user spec that means root: `0`, `root`, `0:…`, `root:…`.
pub(crate) fn is_root(user: &str) -> bool {
    matches!(user.split(':').next().map(str::trim), Some("0" | "root"))
}

/// A user spec's numeric uid and gid, when both are written as numbers (`"1000:1000"`); a uid
/// alone gives `(uid, None)`. `None` for a name, which only the image's `/etc/passwd` resolves.
pub(crate) fn numeric_ids(user: &str) -> Option<(u32, Option<u32>)> {
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
mod tests {
    use super::*;

    #[test]
    fn the_block_user_is_never_root_by_default() {
        let d = UserChoice::Default;
        assert_eq!(d.resolve(Some("app"), (0, 0)), Some("app".into()));
        assert_eq!(
            d.resolve(Some("root"), (1000, 1000)),
            Some("1000:1000".into())
        );
        assert_eq!(d.resolve(Some("0:0"), (0, 0)), Some(NOBODY.into()));
        assert_eq!(d.resolve(None, (0, 0)), Some(NOBODY.into()));
        assert_eq!(d.resolve(Some("  "), (1000, 100)), Some("1000:100".into()));
        assert!(d.needs_image_user());
        assert_eq!(UserChoice::Image.resolve(None, (1000, 1000)), None);
        assert_eq!(
            UserChoice::Image.resolve(Some("root"), (1000, 1000)),
            Some("root".into())
        );
        assert_eq!(
            UserChoice::Host.resolve(Some("app"), (0, 0)),
            Some("0:0".into())
        );
        assert!(!UserChoice::Host.needs_image_user());
        let given = UserChoice::Given("42:42".into());
        assert_eq!(given.resolve(Some("app"), (0, 0)), Some("42:42".into()));
    }

    #[test]
    fn user_specs_read_as_ids_only_when_numeric() {
        assert!(is_root("0") && is_root("root:root") && is_root(" 0:5"));
        assert!(!is_root("1000") && !is_root("rootless"));
        assert_eq!(numeric_ids("1000:100"), Some((1000, Some(100))));
        assert_eq!(numeric_ids("root"), Some((0, None)));
        assert_eq!(numeric_ids("app"), None);
        assert_eq!(numeric_ids("1000:staff"), None);
    }
}
