//! What an engine says of itself: [`EngineInfo`], read once from `GET /version` and
//! `GET /info`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::docker::api::Client;
use crate::engine::Engine;
use crate::error::Result;

/// What an engine is and can do, as it says itself.
///
/// ```no_run
/// # fn main() -> dockexec::Result<()> {
/// let info = dockexec::EngineInfo::probe(&dockexec::Engine::from_env()?)?;
/// println!("{} {} on {}", info.product, info.server_version, info.operating_system);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineInfo {
    /// The endpoint, as a `DOCKER_HOST` value.
    pub endpoint: String,
    /// `unix`, `tcp+tls`, `tcp` or `ssh`.
    pub transport: String,
    /// Why this endpoint was chosen.
    pub origin: String,
    /// The places looked at before it, and why each was passed over.
    pub tried: Vec<String>,
    /// `"Docker Engine"` or `"Podman Engine"`: the first of the version's `Components`.
    pub product: String,
    /// The server's version, e.g. `"26.1.5+dfsg1"`.
    pub server_version: String,
    /// The Engine API version negotiated with it.
    pub api_version: String,
    /// The daemon host's OS, e.g. `"Debian GNU/Linux 12 (bookworm)"`.
    pub operating_system: String,
    /// The daemon host's kernel.
    pub kernel_version: String,
    /// The daemon host's name: compare it with this host's to see where containers run.
    pub name: String,
    /// `"1"` or `"2"`, empty when not said.
    pub cgroup_version: String,
    /// `"cgroupfs"`, `"systemd"`, or empty.
    pub cgroup_driver: String,
    /// The daemon runs rootless (a `name=rootless` security option, or Podman's own flag).
    pub rootless: bool,
    /// The daemon's security options, e.g. `name=seccomp,profile=builtin`.
    pub security_options: Vec<String>,
    /// The OCI runtimes it has (`runc`, `runsc`, …), sorted.
    pub runtimes: Vec<String>,
    /// The runtime a container gets by default.
    pub default_runtime: String,
    /// Whether a host path means the same file to the daemon (see
    /// [`Engine::host_filesystem_shared`]): if not, nothing is bind-mounted from this host.
    pub host_filesystem_shared: bool,
    // --- Podman (issue 17): the limits the daemon says it can enforce ---
    /// The daemon can enforce a pids limit (`/info` `PidsLimit`; `true` when not said).
    pub pids_limit: bool,
    /// The daemon can enforce a memory limit (`/info` `MemoryLimit`; `true` when not said).
    pub memory_limit: bool,
    /// The daemon can enforce a CPU quota (`/info` `CpuCfsQuota`; `true` when not said).
    pub cpu_quota: bool,
    // --- end Podman ---
}

impl EngineInfo {
    /// Whether this is Podman's Docker-compatible service.
    pub fn is_podman(&self) -> bool {
        self.product.to_ascii_lowercase().contains("podman")
    }

    /// Whether the daemon has the OCI runtime `name` registered.
    pub fn has_runtime(&self, name: &str) -> bool {
        self.runtimes.iter().any(|r| r == name)
    }
}

/// What each engine said, this process: asked once per engine (two calls, ~10 ms), since
/// the answers cannot change while the daemon runs.
static KNOWN: parking_lot::Mutex<BTreeMap<String, Arc<EngineInfo>>> =
    parking_lot::Mutex::new(BTreeMap::new());

/// The facts of `client`'s engine, asked once per process and engine: the one place that
/// `start()` consults for what the engine is and can do (runtimes, cgroups, rootless,
/// Podman).
///
/// # Errors
/// The daemon's, when it cannot answer `/version` or `/info`.
pub(crate) fn facts(client: &Client) -> Result<Arc<EngineInfo>> {
    let key = client.engine().key();
    if let Some(known) = KNOWN.lock().get(&key) {
        return Ok(Arc::clone(known));
    }
    // Not held across the calls: two first starts may both ask, and the answers agree.
    let info = Arc::new(EngineInfo::from_client(client)?);
    KNOWN.lock().insert(key, Arc::clone(&info));
    Ok(info)
}

// ---- the runtime option (issue 22) ----

/// Whether `client`'s engine has `runtime` registered; `facts` is what it said earlier. A
/// runtime missing from them is asked about once more (a daemon reloads its runtimes on
/// SIGHUP, without a restart), and the answer replaces the cached one. An engine that names
/// no runtimes at all (some Podman versions) is left to judge the create itself.
///
/// # Errors
/// [`Error::RuntimeNotFound`](crate::Error::RuntimeNotFound) naming the runtime, the
/// runtimes the daemon has, and how to install and register it.
pub(crate) fn check_runtime(
    client: &Client,
    facts: Arc<EngineInfo>,
    runtime: &crate::Runtime,
) -> Result<()> {
    let name = runtime.name();
    if facts.runtimes.is_empty() || facts.has_runtime(name) {
        return Ok(());
    }
    let fresh = Arc::new(EngineInfo::from_client(client)?);
    KNOWN
        .lock()
        .insert(client.engine().key(), Arc::clone(&fresh));
    if fresh.has_runtime(name) {
        return Ok(());
    }
    Err(crate::Error::RuntimeNotFound {
        runtime: runtime.clone(),
        engine: format!(
            "{} ({} {}), which has {}",
            fresh.endpoint,
            fresh.product,
            fresh.server_version,
            fresh.runtimes.join(", ")
        ),
    })
}

// ---- end of the runtime option ----

impl EngineInfo {
    fn from_client(client: &Client) -> Result<EngineInfo> {
        let version = client.version_json()?;
        let info = client.info()?;
        Ok(EngineInfo::from_json(
            client.engine(),
            client.api_version(),
            &version,
            &info,
        ))
    }

    /// Connects to `engine` and asks it.
    ///
    /// # Errors
    /// [`Error::Connect`](crate::Error::Connect) when it cannot be reached, with every place
    /// discovery tried; a daemon error if it refuses.
    pub fn probe(engine: &Engine) -> Result<EngineInfo> {
        EngineInfo::from_client(&Client::connect(engine)?)
    }

    pub(crate) fn from_json(
        engine: &Engine,
        api: &str,
        version: &Value,
        info: &Value,
    ) -> EngineInfo {
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let security_options: Vec<String> = info
            .get("SecurityOptions")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let mut runtimes: Vec<String> = info
            .get("Runtimes")
            .and_then(Value::as_object)
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        runtimes.sort();
        let product = version
            .get("Components")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
            .map(|c| s(c, "Name"))
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "Docker Engine".into());
        // Podman's compat `/info` says `Rootless` at the top; its own API under `Host`.
        let podman_rootless = [
            info.get("Rootless"),
            info.pointer("/Host/Security/Rootless"),
        ]
        .into_iter()
        .any(|v| v.and_then(Value::as_bool) == Some(true));
        let can = |k: &str| info.get(k).and_then(Value::as_bool).unwrap_or(true);
        EngineInfo {
            endpoint: engine.endpoint(),
            transport: engine.transport().into(),
            origin: engine.origin().into(),
            tried: engine.tried().to_vec(),
            product,
            server_version: s(version, "Version"),
            api_version: api.into(),
            operating_system: s(info, "OperatingSystem"),
            kernel_version: s(info, "KernelVersion"),
            name: s(info, "Name"),
            cgroup_version: s(info, "CgroupVersion"),
            cgroup_driver: s(info, "CgroupDriver"),
            rootless: podman_rootless || security_options.iter().any(|o| o == "name=rootless"),
            security_options,
            runtimes,
            default_runtime: s(info, "DefaultRuntime"),
            host_filesystem_shared: engine.host_filesystem_shared(),
            pids_limit: can("PidsLimit"),
            memory_limit: can("MemoryLimit"),
            cpu_quota: can("CpuCfsQuota"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn docker_and_podman_answers_are_read() {
        let engine = Engine::unix("/var/run/docker.sock");
        let version = json!({"Version": "26.1.5", "Components": [{"Name": "Engine"}]});
        let info = json!({"OperatingSystem": "Debian", "CgroupVersion": "1",
            "CgroupDriver": "cgroupfs", "SecurityOptions": ["name=seccomp,profile=builtin",
            "name=rootless"], "Runtimes": {"runsc": {}, "runc": {}}, "DefaultRuntime": "runc"});
        let i = EngineInfo::from_json(&engine, "1.45", &version, &info);
        assert!(i.rootless);
        assert_eq!(i.runtimes, ["runc", "runsc"]);
        assert_eq!(
            (i.product.as_str(), i.cgroup_version.as_str()),
            ("Engine", "1")
        );
        assert!(i.host_filesystem_shared);
        let podman = json!({"Version": "4.3.1", "Components": [{"Name": "Podman Engine"}]});
        let info = json!({"Host": {"Security": {"Rootless": true}}});
        let i = EngineInfo::from_json(&engine, "1.41", &podman, &info);
        assert_eq!(i.product, "Podman Engine");
        assert!(i.rootless);
        assert!(i.runtimes.is_empty());
    }
}
