//! The steps of [`ExecutorBuilder::start`] that talk to the daemon: connecting, the image,
//! the block user, creating the container, the init command and the runner.

use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::json;

use super::ExecutorBuilder;
use crate::docker::api::{Client, PullEvent};
use crate::engine::Engine;
use crate::engine_info;
use crate::error::{Error, Result};
use crate::host;
use crate::labels;
use crate::lifetime::Keeper;
use crate::runner::agent::{AgentConfig, AgentRunner, KillAll};
use crate::runner::exec::ExecRunner;
use crate::runner::{Runner, Strategy};
use crate::spec::{ContainerSpec, WorkspaceMount, numeric_ids};
use crate::sweep;
use crate::workspace::{WORKSPACE, Workspace};
use std::collections::BTreeMap;

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

pub(crate) type ProgressFn = Box<dyn FnMut(&PullProgress) + Send>;

impl ExecutorBuilder {
    /// The engine to run on. Defaults to [`Engine::from_env`]: `DOCKER_HOST`, the `docker`
    /// CLI's context, then the default, rootless and Desktop sockets.
    ///
    /// On an engine that does not share this host's filesystem
    /// ([`Engine::host_filesystem_shared`]), the workspace lives in the container and nothing
    /// is bind-mounted from this host.
    pub fn engine(&mut self, engine: Engine) -> &mut Self {
        self.engine = Some(engine);
        self
    }

    /// The daemon's Unix socket: [`engine`](Self::engine)`(Engine::unix(path))`.
    pub fn socket(&mut self, path: impl Into<std::path::PathBuf>) -> &mut Self {
        self.engine(Engine::unix(path))
    }

    /// The container spec for executor `id` with `workspace` at `/workspace`: these options,
    /// resolved (pure: no I/O).
    pub(crate) fn spec(&self, id: &str, workspace: WorkspaceMount) -> ContainerSpec {
        let o = self;
        let mut env: Vec<String> = vec!["PYTHONUNBUFFERED=1".into()];
        if !o.env.contains_key("HOME") {
            // A read-only root leaves no writable home (and nobody's is /nonexistent anyway).
            if o.tmp_size.bytes(o.memory).is_some() {
                env.push("HOME=/tmp".into());
            } else if o.read_only_root {
                env.push(format!("HOME={WORKSPACE}"));
            }
        }
        env.extend(o.env.iter().map(|(k, v)| format!("{k}={v}")));
        // Here, in Config.Env, and nowhere else (no label): see `secret_env`.
        env.extend(o.secret_env.iter().map(|(k, v)| format!("{k}={v}")));
        let mut all_labels = o.labels.clone();
        all_labels.insert(labels::EXECUTOR.into(), id.into());
        all_labels.extend(crate::lifetime::owner_labels());
        let mounts = o.volumes.clone();
        let capabilities = if o.drop_caps {
            let mut kept: Vec<String> = crate::KEPT_CAPABILITIES
                .iter()
                .map(|c| c.to_string())
                .collect();
            kept.extend(o.cap_add.iter().cloned());
            crate::spec::Capabilities::Only(kept)
        } else {
            crate::spec::Capabilities::DockerDefault(o.cap_add.clone())
        };
        ContainerSpec {
            image: o.image.clone(),
            env,
            labels: all_labels,
            workspace,
            mounts,
            network: o.network.clone(),
            auto_remove: o.auto_remove,
            extra_hosts: o
                .extra_hosts
                .iter()
                .map(|(n, ip)| format!("{n}:{ip}"))
                .collect(),
            memory: o.memory,
            nano_cpus: o.nano_cpus(),
            pids_limit: o.pids_limit,
            capabilities,
            no_new_privileges: o.no_new_privileges,
            seccomp: o.seccomp,
            read_only_root: o.read_only_root,
            tmp_size: o.tmp_size.bytes(o.memory),
            nofile: o.nofile,
            devices: o.device_requests.clone(),
            host_config: o.host_config.clone(),
            runtime: o.runtime.as_ref().map(|r| r.name().to_string()),
            machinery_tmpfs: BTreeMap::new(),
        }
    }

    /// When to pull the image. Defaults to [`PullPolicy::Missing`].
    pub fn pull_policy(&mut self, policy: PullPolicy) -> &mut Self {
        self.pull = policy;
        self
    }

    /// Called for every event of an image pull. Defaults to none. Not kept by
    /// [`to_config`](Self::to_config): a callback is code, not configuration.
    pub fn on_pull_progress(
        &mut self,
        callback: impl FnMut(&PullProgress) + Send + 'static,
    ) -> &mut Self {
        self.progress = Some(Mutex::new(Box::new(callback)));
        self
    }

    /// The strategy's runner, and which strategy that is ([`Strategy::Auto`] resolved).
    pub(super) fn runner(
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
        let killer: Arc<dyn KillAll> = Arc::clone(keeper) as Arc<dyn KillAll>;
        match AgentRunner::start(client, container, Arc::clone(workspace), config, killer) {
            Ok(r) => Ok((Box::new(r), Strategy::Agent)),
            Err(Error::Agent(_)) if self.strategy == Strategy::Auto => exec(),
            Err(e) => Err(e),
        }
    }

    /// The user blocks run as (see [`user`](Self::user)); `None` for root. Asks the
    /// daemon for the image's `USER` only when the choice depends on it.
    pub(super) fn block_user(&self, client: &Client) -> Result<Option<String>> {
        let image_user = match self.user.needs_image_user() {
            true => Some(client.image_user(&self.image)?),
            false => None,
        };
        Ok(self.user.resolve(image_user.as_deref(), host::ids()))
    }

    /// Names the device requests in a start failure, which is where the daemon meets them
    /// (`could not select device driver "" with capabilities: [[gpu]]`).
    pub(super) fn explain_device_requests(&self, e: Error) -> Error {
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
    pub(super) fn connect(&self) -> Result<Client> {
        let engine = match &self.engine {
            Some(e) => e.clone(),
            None => Engine::from_env()?,
        };
        if !engine.host_filesystem_shared() {
            let given = [("work_dir", &self.work_dir), ("bind_dir", &self.bind_dir)];
            if let Some((what, Some(dir))) = given.iter().find(|(_, d)| d.is_some()) {
                return Err(Error::InvalidInput(format!(
                    "{what} {} is a directory of this host, but the engine {} ({}) does not \
                     see this host's files, so it cannot be mounted: drop {what} (the workspace \
                     then lives in the container; use put_file/get_file), or say the engine \
                     shares them with Engine::shares_host_filesystem(true)",
                    dir.display(),
                    engine.endpoint(),
                    engine.origin()
                )));
            }
        }
        let client = Client::connect_with(&engine, self.api_timeout)?;
        // What the engine is and can do, asked once per process: the Podman and runtime
        // checks read it from here.
        let facts = engine_info::facts(&client)?;
        // --- Podman (issue 17): fail closed on a limit the engine cannot enforce ---
        if !self.allow_unenforced {
            crate::podman::check_enforceable(&facts, self.asked())?;
        }
        // --- end Podman ---
        if let Some(runtime) = &self.runtime {
            engine_info::check_runtime(&client, facts, runtime)?;
        }
        if self.gc_orphans {
            // Best effort: a failed sweep must not stop this executor from starting.
            let _ = sweep::sweep(&client, false, &[]);
        }
        Ok(client)
    }

    /// The workspace for executor `id` whose blocks run as `user`: a host directory (the
    /// [`work_dir`](Self::work_dir), else a temporary one) when the engine sees this host's
    /// files, else a tmpfs on the engine's side, and nothing on this host
    /// ([`connect`](Self::connect) has refused a `work_dir` there).
    pub(super) fn workspace(
        &self,
        client: &Client,
        id: &str,
        user: Option<&str>,
    ) -> Result<Workspace> {
        let block = numeric_ids(user.unwrap_or("0"));
        if client.engine().host_filesystem_shared() {
            Workspace::create(self.work_dir.as_deref(), id, block)
        } else {
            Ok(Workspace::in_container(
                self.workspace_size.bytes(self.memory),
                block,
            ))
        }
    }

    /// Creates (does not start) the container; returns its id.
    pub(super) fn create_container(
        &self,
        client: &Client,
        id: &str,
        workspace: &Workspace,
    ) -> Result<String> {
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| format!("dockexec-{id}"));
        let mut spec = self.spec(id, workspace.mount(self.bind_dir.as_deref()));
        if let Some(dir) = workspace.path().filter(|_| workspace.is_temp()) {
            spec.labels.insert(
                labels::TEMP_WORKSPACE.into(),
                dir.to_string_lossy().into_owned(),
            );
        }
        crate::runner::prepare(self.strategy, &mut spec);
        let mut body = spec.to_create_body();
        // Podman (issue 17): the body as Podman reads it (the facts are cached by connect()).
        crate::podman::adapt_create_body(&mut body, &*engine_info::facts(client)?)?;
        client.container_create(Some(&name), &body)
    }

    /// Runs `init_command`, if any; a non-zero exit is [`Error::InitCommand`].
    pub(super) fn run_init_command(
        &self,
        client: &Client,
        container: &str,
        user: Option<&str>,
    ) -> Result<()> {
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

    pub(super) fn ensure_image(&self, client: &Client) -> Result<()> {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::DeviceRequest;
    use crate::runner::exec;
    use crate::spec::{DEFAULT_MEMORY, DEFAULT_PIDS};
    use serde_json::Value;

    /// The create body `start()` would send for `b`, with the runners' additions as for its
    /// strategy.
    fn body(b: &ExecutorBuilder) -> Value {
        let mut spec = b.spec("0123456789abcdef", WorkspaceMount::Host("/w".into()));
        crate::runner::prepare(b.strategy, &mut spec);
        spec.to_create_body()
    }

    /// No shared filesystem: nothing of this host in the body, the workspace a tmpfs volume.
    #[test]
    fn an_in_container_workspace_is_an_engine_side_tmpfs_volume() {
        let mut b = ExecutorBuilder::new();
        b.volume("/data", "/data", true);
        let ws = Workspace::in_container(b.workspace_size.bytes(b.memory), Some((1000, None)));
        let mut spec = b.spec("0123456789abcdef", ws.mount(None));
        crate::runner::prepare(b.strategy, &mut spec);
        let body = spec.to_create_body();
        let mounts = body["HostConfig"]["Mounts"].as_array().unwrap().clone();
        assert_eq!(mounts.len(), 2, "{mounts:?}");
        let w = &mounts[0];
        assert_eq!(w["Type"], json!("volume"));
        assert_eq!(w["Target"], json!(WORKSPACE));
        assert!(w.get("Source").is_none(), "{w}");
        let o = format!(
            "nosuid,nodev,uid=1000,mode=0711,size={}",
            crate::DEFAULT_TMP_SIZE
        );
        assert_eq!(
            w["VolumeOptions"]["DriverConfig"],
            json!({ "Name": "local",
                    "Options": { "type": "tmpfs", "device": "tmpfs", "o": o } })
        );
        assert_eq!(
            w["VolumeOptions"]["Labels"],
            json!({ labels::EXECUTOR: "0123456789abcdef" })
        );
        assert_eq!(mounts[1]["Type"], json!("bind"), "the caller's own volume");
        b.memory_limit(Some(256 << 20)).workspace_size(None);
        assert_eq!(b.workspace_size.bytes(b.memory), None);
        b.workspace_size(Some(1 << 20));
        assert_eq!(b.workspace_size.bytes(b.memory), Some(1 << 20));
        let mut auto = ExecutorBuilder::new();
        auto.memory_limit(Some(256 << 20));
        assert_eq!(auto.workspace_size.bytes(auto.memory), Some(128 << 20));
    }

    #[test]
    fn the_runtime_is_asked_for_by_name_and_the_passthrough_still_wins() {
        let mut b = ExecutorBuilder::new();
        assert_eq!(body(&b)["HostConfig"].get("Runtime"), None);
        b.runtime(crate::Runtime::Gvisor);
        assert_eq!(body(&b)["HostConfig"]["Runtime"], json!("runsc"));
        b.runtime("kata");
        assert_eq!(body(&b)["HostConfig"]["Runtime"], json!("kata"));
        b.host_config_json(json!({ "Runtime": "runc" }));
        assert_eq!(body(&b)["HostConfig"]["Runtime"], json!("runc"));
    }

    #[test]
    fn a_tmpfs_passthrough_keeps_the_control_dir_and_a_bad_one_does_not_panic() {
        let mut b = ExecutorBuilder::new();
        b.host_config_json(json!({ "Tmpfs": { "/scratch": "size=1m" } }));
        let tmpfs = body(&b)["HostConfig"]["Tmpfs"].clone();
        assert_eq!(tmpfs["/scratch"], json!("size=1m"));
        assert_eq!(tmpfs[exec::CONTROL_DIR], json!(exec::CONTROL_DIR_OPTIONS));
        assert!(
            tmpfs.get("/tmp").is_none(),
            "the passthrough replaces the field: {tmpfs}"
        );
        b.host_config_json(json!({ "Tmpfs": "not a map" }));
        assert_eq!(body(&b)["HostConfig"]["Tmpfs"], json!("not a map"));
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
        let body = body(&b);
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
    fn the_default_body_is_hardened_and_trusted_relaxes_it() {
        let b = ExecutorBuilder::new();
        let host = body(&b)["HostConfig"].clone();
        assert_eq!(host["CapDrop"], json!(["ALL"]));
        assert_eq!(
            host["SecurityOpt"],
            json!(["no-new-privileges", crate::seccomp::security_opt()])
        );
        assert_eq!(host["ReadonlyRootfs"], json!(true));
        assert_eq!(host["Memory"], json!(DEFAULT_MEMORY));
        assert_eq!(host["MemorySwap"], json!(DEFAULT_MEMORY));
        assert_eq!(host["PidsLimit"], json!(DEFAULT_PIDS));
        assert_eq!(host["Init"], json!(true));
        let mut t = ExecutorBuilder::new();
        t.trusted();
        let host = body(&t)["HostConfig"].clone();
        for field in [
            "CapDrop",
            "CapAdd",
            "SecurityOpt",
            "ReadonlyRootfs",
            "Memory",
        ] {
            assert!(host.get(field).is_none(), "{field} in {host}");
        }
        assert_eq!(
            host["NetworkMode"],
            json!("none"),
            "trusted() keeps the network"
        );
    }

    /// Issue 21, D4: a `/tmp` larger than the memory limit could fill the container with pages
    /// no process is charged for. Unless set, it is at most half the limit.
    #[test]
    fn the_tmp_tmpfs_is_at_most_half_the_memory_limit_unless_set() {
        let tmp = |b: &ExecutorBuilder| body(b)["HostConfig"]["Tmpfs"]["/tmp"].clone();
        let opts = |size: u64| json!(format!("rw,nosuid,nodev,mode=1777,size={size}"));
        let mut b = ExecutorBuilder::new();
        assert_eq!(tmp(&b), opts(crate::DEFAULT_TMP_SIZE));
        b.memory_limit(Some(256 << 20));
        assert_eq!(tmp(&b), opts(128 << 20));
        b.memory_limit(None);
        assert_eq!(tmp(&b), opts(crate::DEFAULT_TMP_SIZE));
        b.memory_limit(Some(256 << 20)).tmp_size(Some(300 << 20));
        assert_eq!(tmp(&b), opts(300 << 20));
        b.tmp_size(None);
        assert_eq!(tmp(&b), Value::Null);
        b.trusted();
        assert_eq!(tmp(&b), Value::Null);
    }

    #[test]
    fn security_opt_holds_no_new_privileges_and_the_seccomp_profile_unless_turned_off() {
        let opts = |b: &ExecutorBuilder| -> Value { body(b)["HostConfig"]["SecurityOpt"].clone() };
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
            assert_eq!(
                body(&b)["HostConfig"]["CapAdd"],
                json!(["SETUID", "SETGID", "KILL"])
            );
        }
    }
}
