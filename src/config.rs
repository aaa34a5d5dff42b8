//! [`ExecutorConfig`]: every [`ExecutorBuilder`] option as data, to save and load (JSON, or
//! any other `serde` format), converted to and from the builder with no loss.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::device::DeviceRequest;
use crate::engine::{Endpoint, Engine, Tls};
use crate::error::{Error, Result};
use crate::execution::OutputLimit;
use crate::executor::{ExecutorBuilder, PullPolicy};
use crate::runner::Strategy;
use crate::spec::{TmpSize, UserChoice, Volume};

mod forms;
#[cfg(test)]
mod tests;

pub use forms::BlockUser;

/// Every [`ExecutorBuilder`] option, as data: `serde` Serialize and Deserialize, so that an
/// executor's configuration can be saved and loaded (the CLI's `--config FILE`; AutoGen's
/// `_to_config`/`_from_config`).
///
/// [`ExecutorBuilder::to_config`] and [`to_builder`](Self::to_builder) convert with no loss:
/// builder → config → JSON → config → builder gives the same options. Each field is named
/// after the builder's setter (in the plural for the repeatable ones) and documented there;
/// a missing field is the builder's default, an unknown one is an error that names it.
/// Durations are seconds (`60`, `1.5`) or a string with a unit (`"500ms"`, `"10m"`); `null`
/// is "none" where the setter takes an `Option`.
///
/// **It never holds a secret's value.** [`secret_env`](Self::secret_env) holds names only;
/// [`to_builder`](Self::to_builder) reads each value from this process's environment, as
/// the CLI's `--secret-env NAME` does. The one thing not kept is the
/// [`on_pull_progress`](ExecutorBuilder::on_pull_progress) callback, which is code.
///
/// ```
/// # fn main() -> dockexec::Result<()> {
/// use dockexec::{Executor, ExecutorConfig};
///
/// let mut builder = Executor::builder();
/// builder.image("python:3-slim").memory_limit(Some(1 << 30)).env("LANG", "C.UTF-8");
/// let json = builder.to_config().to_json()?;
///
/// let config = ExecutorConfig::from_json(&json)?;
/// assert_eq!(config.memory_limit, Some(1 << 30));
/// let again = config.to_builder()?; // then .start()
/// assert_eq!(again.to_config(), config);
///
/// let err = ExecutorConfig::from_json(r#"{"imgae": "python:3-slim"}"#).unwrap_err();
/// assert!(err.to_string().contains("unknown field `imgae`"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
#[allow(missing_docs)] // each field is its setter's, documented there
pub struct ExecutorConfig {
    pub image: String,
    pub name: Option<String>,
    #[serde(with = "forms::opt_duration")]
    pub timeout: Option<Duration>,
    pub work_dir: Option<PathBuf>,
    pub bind_dir: Option<PathBuf>,
    pub auto_remove: bool,
    pub env: BTreeMap<String, String>,
    pub volumes: Vec<VolumeConfig>,
    pub extra_hosts: Vec<ExtraHost>,
    pub init_command: Option<String>,
    #[serde(with = "forms::opt_duration")]
    pub init_timeout: Option<Duration>,
    #[serde(with = "forms::duration")]
    pub api_timeout: Duration,
    /// [`user`](ExecutorBuilder::user), [`host_user`](ExecutorBuilder::host_user) or the
    /// image's user ([`trusted`](ExecutorBuilder::trusted)).
    pub user: BlockUser,
    pub network: String,
    pub drop_capabilities: bool,
    pub cap_add: Vec<String>,
    pub no_new_privileges: bool,
    pub seccomp: bool,
    pub read_only_root: bool,
    /// `None` (`"auto"`): the default size; `Some(None)` (`null`): no tmpfs; else bytes.
    #[serde(with = "forms::tmpfs")]
    pub tmp_size: Option<Option<u64>>,
    /// As [`tmp_size`](Self::tmp_size).
    #[serde(with = "forms::tmpfs")]
    pub workspace_size: Option<Option<u64>>,
    pub nofile: Option<u64>,
    pub memory_limit: Option<u64>,
    #[serde(serialize_with = "forms::finite_cpus")]
    pub cpu_limit: Option<f64>,
    pub pids_limit: Option<i64>,
    pub delete_code_files: bool,
    pub max_output_bytes: Option<usize>,
    #[serde(with = "forms::OutputLimitForm")]
    pub on_output_limit: OutputLimit,
    #[serde(with = "forms::PullForm")]
    pub pull_policy: PullPolicy,
    /// `None`: [`Engine::from_env`] when the executor starts.
    pub engine: Option<EngineConfig>,
    pub gc_orphans: bool,
    pub labels: BTreeMap<String, String>,
    #[serde(with = "forms::StrategyForm")]
    pub strategy: Strategy,
    pub python_zygote: bool,
    #[serde(with = "forms::duration")]
    pub session_grace: Duration,
    /// The *names* of the secret variables; their values come from the environment of the
    /// process that calls [`to_builder`](Self::to_builder), never from the config.
    pub secret_env: Vec<String>,
    pub device_requests: Vec<DeviceRequest>,
    pub host_config_json: Option<Value>,
    pub allow_unenforced_limits: bool,
    /// The runtime's name (`"runsc"` for [`Runtime::Gvisor`](crate::Runtime::Gvisor)).
    pub runtime: Option<String>,
}

/// A host path mounted into the container ([`ExecutorBuilder::volume`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // the setter's arguments
pub struct VolumeConfig {
    pub host: PathBuf,
    pub container: String,
    #[serde(default)]
    pub read_only: bool,
}

/// A line of the container's `/etc/hosts` ([`ExecutorBuilder::extra_host`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // the setter's arguments
pub struct ExtraHost {
    pub name: String,
    pub ip: String,
}

/// An [`Engine`] as data: `{"host": "tcp://build:2376", "tls": {"ca": "/certs/ca.pem",
/// "cert": "/certs/cert.pem", "key": "/certs/key.pem"}}`. Only what says where and how to
/// connect is kept; not why the engine was chosen ([`Engine::origin`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct EngineConfig {
    /// The endpoint as a `DOCKER_HOST` value ([`Engine::host`]): `unix:///PATH`,
    /// `tcp://HOST:PORT`, `ssh://[USER@]HOST[:PORT][/SOCKET]`.
    pub host: String,
    /// TLS for a `tcp://` host ([`Engine::tls`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// [`Engine::allow_plaintext`].
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_plaintext: bool,
    /// [`Engine::ssh_options`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_options: Vec<String>,
    /// [`Engine::shares_host_filesystem`]; `None`: guessed from the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shares_host_filesystem: Option<bool>,
}

/// [`Tls`] as data: its files, and whether the daemon's certificate is verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // as Tls::files
pub struct TlsConfig {
    #[serde(default)]
    pub ca: Option<PathBuf>,
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// `false`: [`Tls::skip_verify`]. Defaults to `true`.
    #[serde(default = "yes")]
    pub verify: bool,
}

fn is_false(b: &bool) -> bool {
    !b
}

fn yes() -> bool {
    true
}

impl Default for ExecutorConfig {
    /// The builder's defaults.
    fn default() -> ExecutorConfig {
        ExecutorBuilder::default().to_config()
    }
}

impl From<&ExecutorBuilder> for ExecutorConfig {
    fn from(b: &ExecutorBuilder) -> ExecutorConfig {
        // Every field named, none with `..`: a builder option added without a config field
        // does not compile here.
        let ExecutorBuilder {
            image,
            name,
            timeout,
            work_dir,
            bind_dir,
            auto_remove,
            env,
            volumes,
            extra_hosts,
            init_command,
            init_timeout,
            api_timeout,
            user,
            network,
            drop_caps,
            cap_add,
            no_new_privileges,
            seccomp,
            read_only_root,
            tmp_size,
            workspace_size,
            nofile,
            memory,
            cpus,
            pids_limit,
            delete_code_files,
            max_output,
            on_output_limit,
            pull,
            // Code, not configuration: see the struct's docs.
            progress: _,
            engine,
            gc_orphans,
            labels,
            strategy,
            python_zygote,
            session_grace,
            secret_env,
            device_requests,
            host_config,
            allow_unenforced,
            runtime,
        } = b;
        let tmpfs = |t: &TmpSize| match t {
            TmpSize::Auto => None,
            TmpSize::Set(bytes) => Some(*bytes),
        };
        ExecutorConfig {
            image: image.clone(),
            name: name.clone(),
            timeout: *timeout,
            work_dir: work_dir.clone(),
            bind_dir: bind_dir.clone(),
            auto_remove: *auto_remove,
            env: env.clone(),
            volumes: volumes
                .iter()
                .map(|v| VolumeConfig {
                    host: v.host.clone(),
                    container: v.container.clone(),
                    read_only: v.read_only,
                })
                .collect(),
            extra_hosts: extra_hosts
                .iter()
                .map(|(name, ip)| ExtraHost {
                    name: name.clone(),
                    ip: ip.clone(),
                })
                .collect(),
            init_command: init_command.clone(),
            init_timeout: *init_timeout,
            api_timeout: *api_timeout,
            user: match user {
                UserChoice::Default => BlockUser::Default,
                UserChoice::Given(u) => BlockUser::Named(u.clone()),
                UserChoice::Host => BlockUser::Host,
                UserChoice::Image => BlockUser::Image,
            },
            network: network.clone(),
            drop_capabilities: *drop_caps,
            cap_add: cap_add.clone(),
            no_new_privileges: *no_new_privileges,
            seccomp: *seccomp,
            read_only_root: *read_only_root,
            tmp_size: tmpfs(tmp_size),
            workspace_size: tmpfs(workspace_size),
            nofile: *nofile,
            memory_limit: *memory,
            cpu_limit: *cpus,
            pids_limit: *pids_limit,
            delete_code_files: *delete_code_files,
            max_output_bytes: *max_output,
            on_output_limit: *on_output_limit,
            pull_policy: *pull,
            engine: engine.as_ref().map(EngineConfig::from),
            gc_orphans: *gc_orphans,
            labels: labels.clone(),
            strategy: *strategy,
            python_zygote: *python_zygote,
            session_grace: *session_grace,
            // The names only: a value never leaves the builder.
            secret_env: secret_env.keys().cloned().collect(),
            device_requests: device_requests.clone(),
            host_config_json: host_config.clone(),
            allow_unenforced_limits: *allow_unenforced,
            runtime: runtime.as_ref().map(|r| r.name().to_string()),
        }
    }
}

impl TryFrom<&ExecutorConfig> for ExecutorBuilder {
    type Error = Error;

    /// [`ExecutorConfig::to_builder`].
    fn try_from(config: &ExecutorConfig) -> Result<ExecutorBuilder> {
        config.to_builder()
    }
}

impl ExecutorBuilder {
    /// These options as an [`ExecutorConfig`], to save (e.g. as JSON with
    /// [`ExecutorConfig::to_json`]). Secret variables are kept by name only, and the
    /// [`on_pull_progress`](Self::on_pull_progress) callback is not kept.
    pub fn to_config(&self) -> ExecutorConfig {
        ExecutorConfig::from(self)
    }
}

impl ExecutorConfig {
    /// A builder with these options; each [`secret_env`](Self::secret_env) value is read
    /// from this process's environment variable of that name.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when a secret's variable is not set (or not UTF-8), the
    /// engine's `host` does not parse, or its TLS files are incomplete. Every other option is
    /// checked by [`start`](ExecutorBuilder::start), as when set on the builder.
    pub fn to_builder(&self) -> Result<ExecutorBuilder> {
        self.to_builder_with(|name| std::env::var(name).ok())
    }

    /// As [`to_builder`](Self::to_builder), with each secret's value from `secret` (a vault,
    /// a keyring, a test's table) instead of the environment.
    ///
    /// # Errors
    /// As [`to_builder`](Self::to_builder); a secret for which `secret` gives `None` is
    /// [`Error::InvalidInput`] naming it.
    pub fn to_builder_with(
        &self,
        mut secret: impl FnMut(&str) -> Option<String>,
    ) -> Result<ExecutorBuilder> {
        // Every field named, none with `..`, as in `From<&ExecutorBuilder>`.
        let ExecutorConfig {
            image,
            name,
            timeout,
            work_dir,
            bind_dir,
            auto_remove,
            env,
            volumes,
            extra_hosts,
            init_command,
            init_timeout,
            api_timeout,
            user,
            network,
            drop_capabilities,
            cap_add,
            no_new_privileges,
            seccomp,
            read_only_root,
            tmp_size,
            workspace_size,
            nofile,
            memory_limit,
            cpu_limit,
            pids_limit,
            delete_code_files,
            max_output_bytes,
            on_output_limit,
            pull_policy,
            engine,
            gc_orphans,
            labels,
            strategy,
            python_zygote,
            session_grace,
            secret_env,
            device_requests,
            host_config_json,
            allow_unenforced_limits,
            runtime,
        } = self;
        let secret_env = secret_env
            .iter()
            .map(|key| {
                let value = secret(key).ok_or_else(|| {
                    Error::invalid(format!(
                        "secret_env {key}: the variable {key} is not set (a config holds a \
                         secret's name; its value comes from the environment)"
                    ))
                })?;
                Ok((key.clone(), value))
            })
            .collect::<Result<_>>()?;
        let tmpfs = |t: &Option<Option<u64>>| t.map_or(TmpSize::Auto, TmpSize::Set);
        // A struct literal, not `..Default::default()`: a new builder field fails here too.
        Ok(ExecutorBuilder {
            image: image.clone(),
            name: name.clone(),
            timeout: *timeout,
            work_dir: work_dir.clone(),
            bind_dir: bind_dir.clone(),
            auto_remove: *auto_remove,
            env: env.clone(),
            volumes: volumes
                .iter()
                .map(|v| Volume {
                    host: v.host.clone(),
                    container: v.container.clone(),
                    read_only: v.read_only,
                })
                .collect(),
            extra_hosts: extra_hosts
                .iter()
                .map(|h| (h.name.clone(), h.ip.clone()))
                .collect(),
            init_command: init_command.clone(),
            init_timeout: *init_timeout,
            api_timeout: *api_timeout,
            user: match user {
                BlockUser::Default => UserChoice::Default,
                BlockUser::Named(u) => UserChoice::Given(u.clone()),
                BlockUser::Host => UserChoice::Host,
                BlockUser::Image => UserChoice::Image,
            },
            network: network.clone(),
            drop_caps: *drop_capabilities,
            cap_add: cap_add.clone(),
            no_new_privileges: *no_new_privileges,
            seccomp: *seccomp,
            read_only_root: *read_only_root,
            tmp_size: tmpfs(tmp_size),
            workspace_size: tmpfs(workspace_size),
            nofile: *nofile,
            memory: *memory_limit,
            cpus: *cpu_limit,
            pids_limit: *pids_limit,
            delete_code_files: *delete_code_files,
            max_output: *max_output_bytes,
            on_output_limit: *on_output_limit,
            pull: *pull_policy,
            progress: None,
            engine: engine.as_ref().map(EngineConfig::to_engine).transpose()?,
            gc_orphans: *gc_orphans,
            labels: labels.clone(),
            strategy: *strategy,
            python_zygote: *python_zygote,
            session_grace: *session_grace,
            secret_env,
            device_requests: device_requests.clone(),
            host_config: host_config_json.clone(),
            allow_unenforced: *allow_unenforced_limits,
            runtime: runtime.as_deref().map(crate::Runtime::from),
        })
    }

    /// The config in `text`, JSON.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for text that is not a JSON object of config fields: the
    /// message names an unknown field, or the field whose value has the wrong type, with the
    /// line and column.
    pub fn from_json(text: &str) -> Result<ExecutorConfig> {
        parse(text).map_err(|msg| Error::invalid(format!("config: {msg}")))
    }

    /// The config in the JSON file `path`.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read; [`Error::InvalidInput`] naming the file
    /// and, as [`from_json`](Self::from_json), the field at fault.
    pub fn from_file(path: impl AsRef<Path>) -> Result<ExecutorConfig> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        parse(&text).map_err(|msg| Error::invalid(format!("config {}: {msg}", path.display())))
    }

    /// The config as pretty-printed JSON, every field written.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for what JSON cannot hold: a path that is not UTF-8, a
    /// `cpu_limit` that is not finite.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| Error::invalid(format!("config: {e}")))
    }
}

/// `text` as a config, or what is wrong with it, naming the field.
fn parse(text: &str) -> std::result::Result<ExecutorConfig, String> {
    let err = match serde_json::from_str(text) {
        Ok(config) => return Ok(config),
        Err(e) => e,
    };
    // serde names an unknown field, not the one whose value is of the wrong type: find it
    // by reading each field alone.
    let culprit = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(fields)) => fields.into_iter().find_map(|(key, value)| {
            let alone = Value::Object([(key.clone(), value)].into_iter().collect());
            serde_json::from_value::<ExecutorConfig>(alone)
                .is_err()
                .then_some(key)
        }),
        _ => None,
    };
    match culprit {
        // An unknown field's message already names it.
        Some(key) if !err.to_string().contains(&format!("`{key}`")) => {
            Err(format!("field `{key}`: {err}"))
        }
        _ => Err(err.to_string()),
    }
}

impl From<&Engine> for EngineConfig {
    fn from(engine: &Engine) -> EngineConfig {
        let (tls, allow_plaintext, ssh_options) = match &engine.endpoint {
            Endpoint::Unix(_) => (None, false, Vec::new()),
            Endpoint::Tcp {
                tls, plaintext_ok, ..
            } => (tls.as_ref().map(TlsConfig::from), *plaintext_ok, Vec::new()),
            Endpoint::Ssh(ssh) => (None, false, ssh.options.clone()),
        };
        EngineConfig {
            host: engine.endpoint(),
            tls,
            allow_plaintext,
            ssh_options,
            shares_host_filesystem: engine.shared_fs_setting(),
        }
    }
}

impl From<&Tls> for TlsConfig {
    fn from(tls: &Tls) -> TlsConfig {
        TlsConfig {
            ca: tls.ca.clone(),
            cert: tls.cert.clone(),
            key: tls.key.clone(),
            verify: tls.verify,
        }
    }
}

impl EngineConfig {
    /// The engine this describes.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `host` does not parse ([`Engine::host`]), or `tls` is
    /// given with verification but no `ca`, or with only one of `cert` and `key`.
    pub fn to_engine(&self) -> Result<Engine> {
        let mut engine = Engine::host(&self.host)?;
        if let Some(t) = &self.tls {
            let whole = t.cert.is_some() == t.key.is_some();
            if !whole || (t.verify && t.ca.is_none()) {
                return Err(Error::invalid(format!(
                    "engine {}: tls needs a ca (unless verify is false), and cert and key \
                     together or neither",
                    self.host
                )));
            }
            engine = engine.tls(Tls {
                ca: t.ca.clone(),
                cert: t.cert.clone(),
                key: t.key.clone(),
                verify: t.verify,
            });
        }
        if self.allow_plaintext {
            engine = engine.allow_plaintext();
        }
        if !self.ssh_options.is_empty() {
            engine = engine.ssh_options(self.ssh_options.iter().cloned());
        }
        if let Some(shared) = self.shares_host_filesystem {
            engine = engine.shares_host_filesystem(shared);
        }
        Ok(engine)
    }
}
