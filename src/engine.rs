//! Where the Docker daemon is, found the way the `docker` CLI finds it, and how to reach it.
//!
//! [`Engine::from_env`] looks, in this order, at:
//!
//! | # | where | gives |
//! |---|---|---|
//! | 1 | `DOCKER_HOST` | `unix://PATH`, `tcp://HOST[:PORT]` (TLS when `DOCKER_TLS_VERIFY` is set, with `DOCKER_CERT_PATH`'s `ca.pem`, `cert.pem`, `key.pem`, default `~/.docker`), `ssh://[USER@]HOST[:PORT][/SOCKET]` |
//! | 2 | `DOCKER_CONTEXT` | that context of the `docker` CLI's store |
//! | 3 | `currentContext` in `$DOCKER_CONFIG/config.json` (default `~/.docker`) | that context |
//! | 4 | `/var/run/docker.sock` | the system daemon |
//! | 5 | `$XDG_RUNTIME_DIR/docker.sock` | rootless Docker, when 4 does not answer |
//! | 6 | `~/.docker/run/docker.sock` | Docker Desktop, when 4 and 5 do not answer |
//!
//! A context is read from the CLI's store under `$DOCKER_CONFIG/contexts`: its endpoint and
//! `SkipTLSVerify` from `meta/<sha256(name)>/meta.json`, its certificates from
//! `tls/<sha256(name)>/docker/{ca,cert,key}.pem`. The context `default` is steps 1, 4, 5, 6.
//!
//! Transports:
//! - `unix://`: the socket;
//! - `tcp://` with TLS (rustls, client certificates; the `tls` cargo feature), or plain TCP
//!   only to a loopback address or after [`Engine::allow_plaintext`]: the Engine API is root
//!   on the daemon's host, and plain TCP hands it to anyone on the path;
//! - `ssh://`: `ssh [OPTIONS] [-p PORT] [USER@]HOST -- docker [--host unix://SOCKET] system
//!   dial-stdio` per connection, as the `docker` CLI does; its stdin and stdout are the
//!   connection. Extra `ssh` options come from [`Engine::ssh_options`] or, for an engine
//!   found in the environment, from `DOCKEXEC_SSH_OPTS` (split on whitespace, e.g.
//!   `-F /path/to/ssh_config`).
//!
//! Every TCP connection has keepalive on (idle 10 s, then every 5 s, 3 probes), and `ssh` runs
//! with `ServerAliveInterval=5` and `ServerAliveCountMax=3`: a peer that vanishes without
//! closing is noticed within about 25 s.

use std::fmt;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};

/// The system daemon's socket.
pub(crate) const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// A Docker Engine API endpoint: where the daemon is, how to reach it, and why it was chosen.
///
/// ```no_run
/// # fn main() -> dockexec::Result<()> {
/// use dockexec::{Engine, Executor, Tls};
/// // As the `docker` CLI would find it (DOCKER_HOST, contexts, sockets).
/// let engine = Engine::from_env()?;
/// println!("{} ({})", engine.endpoint(), engine.origin());
/// // Or said outright.
/// let remote = Engine::tcp("build-host.example:2376")?.tls(Tls::from_dir("/etc/docker-client")?);
/// let executor = Executor::builder().engine(remote).start()?;
/// # Ok(()) }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Engine {
    pub(crate) endpoint: Endpoint,
    /// Why this endpoint: "DOCKER_HOST", "context `x` (DOCKER_CONTEXT)", …
    origin: String,
    /// Every place looked at before this one, in order, with why it was passed over.
    tried: Vec<String>,
    /// Whether this host's paths are the daemon's; `None`: decided from the endpoint.
    shared_fs: Option<bool>,
}

/// How to reach the daemon.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum Endpoint {
    Unix(PathBuf),
    Tcp {
        host: String,
        port: u16,
        tls: Option<Tls>,
        /// Plain TCP to a non-loopback host was asked for explicitly.
        plaintext_ok: bool,
    },
    Ssh(Ssh),
}

/// An `ssh://` endpoint.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct Ssh {
    pub(crate) user: Option<String>,
    pub(crate) host: String,
    pub(crate) port: Option<u16>,
    /// The daemon's socket on the far side; `None`: the far side's default.
    pub(crate) socket: Option<String>,
    /// Options given to `ssh` before the destination.
    pub(crate) options: Vec<String>,
}

impl Ssh {
    /// `ssh`'s arguments, as the `docker` CLI's connection helper builds them.
    #[cfg(test)]
    pub(crate) fn args(&self) -> Vec<String> {
        self.args_with(&[], None)
    }

    /// `ssh`'s arguments: `control` (the multiplexing options) before the destination, and
    /// `remote` as the far side's command (`None`: `docker … system dial-stdio`).
    pub(crate) fn args_with(&self, control: &[String], remote: Option<&str>) -> Vec<String> {
        let mut args: Vec<String> = vec![
            // No tty: the connection is binary.
            "-T".into(),
            "-o".into(),
            "ConnectTimeout=30".into(),
            // A far side that vanishes without closing is noticed within ~15 s.
            "-o".into(),
            "ServerAliveInterval=5".into(),
            "-o".into(),
            "ServerAliveCountMax=3".into(),
        ];
        args.extend(self.options.iter().cloned());
        args.extend(control.iter().cloned());
        if let Some(port) = self.port {
            args.extend(["-p".into(), port.to_string()]);
        }
        args.push(match &self.user {
            Some(u) => format!("{u}@{}", self.host),
            None => self.host.clone(),
        });
        args.push("--".into());
        if let Some(remote) = remote {
            args.push(remote.into());
            return args;
        }
        args.push("docker".into());
        if let Some(s) = &self.socket {
            args.extend(["--host".into(), format!("unix://{s}")]);
        }
        args.extend(["system".into(), "dial-stdio".into()]);
        args
    }
}

/// TLS settings for a `tcp://` engine: the CA that signed the daemon's certificate, and the
/// client certificate the daemon asks for (Docker's `--tlsverify` daemons require one).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Tls {
    pub(crate) ca: Option<PathBuf>,
    pub(crate) cert: Option<PathBuf>,
    pub(crate) key: Option<PathBuf>,
    pub(crate) verify: bool,
}

impl Tls {
    /// The `ca.pem`, `cert.pem` and `key.pem` of `dir`, as `DOCKER_CERT_PATH` lays them out,
    /// verifying the daemon's certificate against `ca.pem`.
    ///
    /// # Errors
    /// [`Error::Connect`] naming the file when `ca.pem` is missing, or exactly one of
    /// `cert.pem` and `key.pem` is.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Tls> {
        Tls::in_dir(dir.as_ref(), true)
    }

    /// The files of `dir` that are there, checked: the one reading of a certificate dir
    /// (`DOCKER_CERT_PATH`'s, a context's).
    fn in_dir(dir: &Path, verify: bool) -> Result<Tls> {
        let file = |name: &str| {
            let p = dir.join(name);
            p.is_file().then_some(p)
        };
        let tls = Tls {
            ca: file("ca.pem"),
            cert: file("cert.pem"),
            key: file("key.pem"),
            verify,
        };
        tls.check(&dir.display().to_string())?;
        Ok(tls)
    }

    /// TLS with the given files: `ca` verifies the daemon, `cert` and `key` (both or
    /// neither) identify this client.
    pub fn files(
        ca: impl Into<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Result<Tls> {
        let tls = Tls {
            ca: Some(ca.into()),
            cert,
            key,
            verify: true,
        };
        tls.check("TLS settings")?;
        Ok(tls)
    }

    /// Does not verify the daemon's certificate: anyone on the path can read and change the
    /// traffic. What a context's `SkipTLSVerify` asks for; a client certificate is still sent.
    pub fn skip_verify(mut self) -> Tls {
        self.verify = false;
        self
    }

    fn check(&self, whose: &str) -> Result<()> {
        let err = |reason: String| Error::Connect {
            endpoint: whose.to_string(),
            reason,
            source: None,
        };
        if self.verify && self.ca.is_none() {
            return Err(err(
                "no ca.pem: the daemon's certificate cannot be verified".into(),
            ));
        }
        match (&self.cert, &self.key) {
            (Some(c), None) => Err(err(format!(
                "client certificate {} has no key.pem beside it",
                c.display()
            ))),
            (None, Some(k)) => Err(err(format!(
                "client key {} has no cert.pem beside it",
                k.display()
            ))),
            _ => Ok(()),
        }
    }
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("endpoint", &self.endpoint())
            .field("origin", &self.origin)
            .field("shares_host_filesystem", &self.host_filesystem_shared())
            .finish_non_exhaustive()
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.endpoint())
    }
}

impl Default for Engine {
    /// The system daemon's socket, `/var/run/docker.sock`.
    fn default() -> Engine {
        Engine::unix(DEFAULT_SOCKET)
    }
}

impl Engine {
    fn new(endpoint: Endpoint, origin: impl Into<String>) -> Engine {
        Engine {
            endpoint,
            origin: origin.into(),
            tried: Vec::new(),
            shared_fs: None,
        }
    }

    /// The daemon on the Unix socket `path`.
    pub fn unix(path: impl Into<PathBuf>) -> Engine {
        Engine::new(Endpoint::Unix(path.into()), "given")
    }

    /// The daemon on `addr` (`HOST:PORT`, or `HOST` for port 2376), over plain TCP until
    /// [`tls`](Self::tls) is given. Plain TCP is refused at connect time unless `HOST` is a
    /// loopback address or [`allow_plaintext`](Self::allow_plaintext) was called.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an address that does not parse.
    pub fn tcp(addr: &str) -> Result<Engine> {
        let (host, port) = split_host_port(addr, 2376)
            .ok_or_else(|| Error::InvalidInput(format!("not a HOST[:PORT] address: {addr:?}")))?;
        Ok(Engine::new(
            Endpoint::Tcp {
                host,
                port,
                tls: None,
                plaintext_ok: false,
            },
            "given",
        ))
    }

    /// The daemon behind `ssh://[USER@]HOST[:PORT][/SOCKET]`, reached through the system's
    /// `ssh` running `docker system dial-stdio` on the far side.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a URL that does not parse.
    pub fn ssh(url: &str) -> Result<Engine> {
        Ok(Engine::new(Endpoint::Ssh(parse_ssh(url)?), "given"))
    }

    /// The engine a `DOCKER_HOST` value names (`unix://`, `tcp://`, `ssh://`), without TLS;
    /// add it with [`tls`](Self::tls).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for another scheme or a value that does not parse.
    pub fn host(url: &str) -> Result<Engine> {
        Ok(Engine::new(parse_host(url, None)?, "given"))
    }

    /// The `docker` CLI's context `name`, from its store under `$DOCKER_CONFIG` (default
    /// `~/.docker`); `default` is what the environment gives without a context.
    ///
    /// # Errors
    /// [`Error::Connect`] for an unknown context, or one whose files cannot be read.
    pub fn context(name: &str) -> Result<Engine> {
        resolve(&Env::process(), Some(Pick::Context(name.to_string())))
    }

    /// The context `name` of the store under the docker config dir `config` (what
    /// `DOCKER_CONFIG` names), e.g. another user's or a test's.
    ///
    /// # Errors
    /// As [`context`](Self::context).
    pub fn context_in(config: impl AsRef<Path>, name: &str) -> Result<Engine> {
        let mut env = Env::process();
        let config = config.as_ref().to_string_lossy().into_owned();
        let outer = env.vars;
        env.vars = Box::new(move |k| {
            if k == "DOCKER_CONFIG" {
                Some(config.clone())
            } else {
                outer(k)
            }
        });
        resolve(&env, Some(Pick::Context(name.to_string())))
    }

    /// The engine the `docker` CLI would use: see the table in the README (`DOCKER_HOST`, `DOCKER_CONTEXT`, `currentContext`, then the system, rootless and Desktop sockets).
    ///
    /// # Errors
    /// [`Error::Connect`] when `DOCKER_HOST`, the context or its files are unusable (a bad
    /// URL, an unknown context, a missing certificate); not when the daemon is down: that is
    /// found when connecting.
    pub fn from_env() -> Result<Engine> {
        resolve(&Env::process(), None)
    }

    /// Resolves as `docker -H HOST` / `docker -c CONTEXT` would: `host` and `context` win over
    /// the environment; giving both is an error, as in the CLI.
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env), and [`Error::InvalidInput`] for both at once.
    pub fn from_flags(host: Option<&str>, context: Option<&str>) -> Result<Engine> {
        let pick = match (host, context) {
            (Some(_), Some(_)) => {
                return Err(Error::InvalidInput(
                    "conflicting options: either specify --host or --context, not both".into(),
                ));
            }
            (Some(h), None) => Some(Pick::Host(h.to_string())),
            (None, Some(c)) => Some(Pick::Context(c.to_string())),
            (None, None) => None,
        };
        resolve(&Env::process(), pick)
    }

    /// Talks TLS to a `tcp://` engine with `tls`; ignored by other transports.
    pub fn tls(mut self, tls: Tls) -> Engine {
        if let Endpoint::Tcp { tls: t, .. } = &mut self.endpoint {
            *t = Some(tls);
        }
        self
    }

    /// Allows plain TCP (no TLS) to a host that is not a loopback address. Anyone on the path
    /// can then drive the daemon, which is root on its host.
    pub fn allow_plaintext(mut self) -> Engine {
        if let Endpoint::Tcp { plaintext_ok, .. } = &mut self.endpoint {
            *plaintext_ok = true;
        }
        self
    }

    /// Options passed to `ssh` before the destination, e.g. `["-F", "/path/ssh_config"]`;
    /// ignored by other transports.
    pub fn ssh_options<I, S>(mut self, options: I) -> Engine
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        if let Endpoint::Ssh(s) = &mut self.endpoint {
            s.options = options.into_iter().map(Into::into).collect();
        }
        self
    }

    /// Says whether the daemon sees this host's filesystem, overriding the guess (see
    /// [`host_filesystem_shared`](Self::host_filesystem_shared)).
    pub fn shares_host_filesystem(mut self, yes: bool) -> Engine {
        self.shared_fs = Some(yes);
        self
    }

    /// Whether a host path means the same file to the daemon, so that the workspace can be a
    /// host directory bind-mounted into the container. Unless said with
    /// [`shares_host_filesystem`](Self::shares_host_filesystem): `true` for a Unix socket,
    /// except Docker Desktop's (`~/.docker/run/docker.sock`) and the sockets colima, lima,
    /// Rancher Desktop and Podman machine forward from a VM (under `~/.colima`, `~/.lima`,
    /// `~/.rd`, `~/.local/share/containers/podman/machine`); `false` for TCP and SSH, even
    /// to this host: a remote path means nothing here.
    pub fn host_filesystem_shared(&self) -> bool {
        self.shared_fs.unwrap_or_else(|| match &self.endpoint {
            Endpoint::Unix(p) => !is_vm_socket(p),
            Endpoint::Tcp { .. } | Endpoint::Ssh(_) => false,
        })
    }

    /// What [`shares_host_filesystem`](Self::shares_host_filesystem) said, if it was called
    /// (for [`EngineConfig`](crate::EngineConfig), which keeps the setting, not the guess).
    pub(crate) fn shared_fs_setting(&self) -> Option<bool> {
        self.shared_fs
    }

    /// The endpoint as a `DOCKER_HOST` value, e.g. `unix:///var/run/docker.sock`.
    pub fn endpoint(&self) -> String {
        match &self.endpoint {
            Endpoint::Unix(p) => format!("unix://{}", p.display()),
            Endpoint::Tcp { host, port, .. } => {
                if host.contains(':') {
                    format!("tcp://[{host}]:{port}")
                } else {
                    format!("tcp://{host}:{port}")
                }
            }
            Endpoint::Ssh(s) => {
                let mut out = "ssh://".to_string();
                if let Some(u) = &s.user {
                    out.push_str(u);
                    out.push('@');
                }
                out.push_str(&s.host);
                if let Some(p) = s.port {
                    out.push_str(&format!(":{p}"));
                }
                if let Some(sock) = &s.socket {
                    out.push_str(sock);
                }
                out
            }
        }
    }

    /// Which transport: `"unix"`, `"tcp+tls"`, `"tcp"` or `"ssh"`.
    pub fn transport(&self) -> &'static str {
        match &self.endpoint {
            Endpoint::Unix(_) => "unix",
            Endpoint::Tcp { tls: Some(_), .. } => "tcp+tls",
            Endpoint::Tcp { tls: None, .. } => "tcp",
            Endpoint::Ssh(_) => "ssh",
        }
    }

    /// Why this endpoint was chosen, e.g. `"DOCKER_HOST"` or ``"context `remote`
    /// (currentContext in ~/.docker/config.json)"``.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The places looked at before this one, each with why it was passed over (empty unless
    /// the default socket did not answer).
    pub fn tried(&self) -> &[String] {
        &self.tried
    }

    /// A key naming the daemon, for caches of what it said.
    pub(crate) fn key(&self) -> String {
        self.endpoint()
    }

    /// Refuses what must not be dialled: plain TCP beyond loopback unless allowed.
    pub(crate) fn check_dialable(&self) -> Result<()> {
        if let Endpoint::Tcp {
            host,
            tls: None,
            plaintext_ok: false,
            ..
        } = &self.endpoint
        {
            if !is_loopback(host) {
                return Err(Error::Connect {
                    endpoint: self.endpoint(),
                    reason: "plain TCP to a host that is not loopback: anyone on the path could \
                             drive the daemon. Use TLS (DOCKER_TLS_VERIFY=1 with \
                             DOCKER_CERT_PATH, or Engine::tls), ssh://, or allow it \
                             explicitly (Engine::allow_plaintext, DOCKEXEC_ALLOW_PLAINTEXT=1)"
                        .into(),
                    source: None,
                });
            }
        }
        Ok(())
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// The sockets a desktop VM forwards: the daemon behind them sees the VM's paths, not ours.
fn is_vm_socket(p: &Path) -> bool {
    let Some(home) = home_dir() else {
        return false;
    };
    [
        ".docker/run",
        ".colima",
        ".lima",
        ".rd",
        ".local/share/containers/podman/machine",
    ]
    .iter()
    .any(|d| p.starts_with(home.join(d)))
}

fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// `HOST[:PORT]` or `[V6]:PORT`.
fn split_host_port(s: &str, default_port: u16) -> Option<(String, u16)> {
    let s = s.trim_end_matches('/');
    if s.is_empty() {
        return None;
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            (!host.is_empty()).then_some(())?;
            Some((host.to_string(), port.parse().ok()?))
        }
        Some(_) => None,
        None => Some((s.to_string(), default_port)),
    }
}

fn parse_ssh(url: &str) -> Result<Ssh> {
    let bad = |why: &str| Error::InvalidInput(format!("bad ssh:// engine {url:?}: {why}"));
    let rest = url
        .strip_prefix("ssh://")
        .ok_or_else(|| bad("it must start with ssh://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i..])),
        None => (rest, None),
    };
    let (user, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    if user.is_some_and(|u| u.is_empty() || u.contains(':')) {
        return Err(bad("a user, if given, is a name without a password"));
    }
    let (host, port) = if hostport.contains(':') {
        let (h, p) = split_host_port(hostport, 22).ok_or_else(|| bad("bad host or port"))?;
        (h, Some(p))
    } else {
        (hostport.to_string(), None)
    };
    // `ssh` would take a host starting with '-' for an option.
    if host.is_empty() || host.starts_with('-') || host.chars().any(char::is_whitespace) {
        return Err(bad("no host, or a host ssh would misread"));
    }
    let socket = match path {
        None | Some("/") => None,
        Some(p) if p.chars().any(|c| c.is_whitespace() || c == '?' || c == '#') => {
            return Err(bad("the socket path has spaces, a query or a fragment"));
        }
        Some(p) => Some(p.to_string()),
    };
    Ok(Ssh {
        user: user.map(str::to_string),
        host,
        port,
        socket,
        options: Vec::new(),
    })
}

/// A `DOCKER_HOST` value; `tls` for `tcp://`.
fn parse_host(url: &str, tls: Option<Tls>) -> Result<Endpoint> {
    let bad = |why: &str| Error::InvalidInput(format!("bad docker host {url:?}: {why}"));
    if let Some(path) = url.strip_prefix("unix://") {
        if path.is_empty() {
            return Err(bad("no socket path"));
        }
        return Ok(Endpoint::Unix(PathBuf::from(path)));
    }
    if let Some(addr) = url.strip_prefix("tcp://") {
        let default_port = if tls.is_some() { 2376 } else { 2375 };
        let (host, port) =
            split_host_port(addr, default_port).ok_or_else(|| bad("not tcp://HOST[:PORT]"))?;
        return Ok(Endpoint::Tcp {
            host,
            port,
            tls,
            plaintext_ok: false,
        });
    }
    if url.starts_with("ssh://") {
        return Ok(Endpoint::Ssh(parse_ssh(url)?));
    }
    if url.starts_with("npipe://") {
        return Err(bad("named pipes are Windows-only"));
    }
    if url.starts_with('/') {
        return Ok(Endpoint::Unix(PathBuf::from(url)));
    }
    Err(bad("the scheme must be unix://, tcp:// or ssh://"))
}

/// Reads an environment variable, empty values being unset.
type Vars = Box<dyn Fn(&str) -> Option<String>>;

/// The environment, as discovery reads it: a seam for the unit tests.
pub(crate) struct Env {
    vars: Vars,
    home: Option<PathBuf>,
    /// Whether a Unix socket answers a connect (probed for the fallbacks).
    answers: Box<dyn Fn(&Path) -> bool>,
}

impl Env {
    fn process() -> Env {
        Env {
            vars: Box::new(|k| std::env::var(k).ok().filter(|v| !v.is_empty())),
            home: home_dir(),
            answers: Box::new(|p| std::os::unix::net::UnixStream::connect(p).is_ok()),
        }
    }

    fn var(&self, k: &str) -> Option<String> {
        (self.vars)(k)
    }

    fn config_dir(&self) -> Option<PathBuf> {
        self.var("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| self.home.as_ref().map(|h| h.join(".docker")))
    }

    fn ssh_options(&self) -> Vec<String> {
        self.var("DOCKEXEC_SSH_OPTS")
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    }
}

/// What the caller named (the CLI's `-H` / `-c`).
pub(crate) enum Pick {
    Host(String),
    Context(String),
}

/// Resolves the engine as the `docker` CLI does.
pub(crate) fn resolve(env: &Env, pick: Option<Pick>) -> Result<Engine> {
    let mut engine = match pick {
        Some(Pick::Host(h)) => from_host(env, &h, "--host")?,
        Some(Pick::Context(c)) => from_context(env, &c, "--context")?,
        None => {
            if let Some(h) = env.var("DOCKER_HOST") {
                from_host(env, &h, "DOCKER_HOST")?
            } else if let Some(c) = env.var("DOCKER_CONTEXT") {
                from_context(env, &c, "DOCKER_CONTEXT")?
            } else {
                let (current, config) = current_context(env)?;
                match current {
                    Some(c) => {
                        from_context(env, &c, &format!("currentContext in {}", config.display()))?
                    }
                    None => default_engine(env),
                }
            }
        }
    };
    if let Endpoint::Ssh(s) = &mut engine.endpoint {
        if s.options.is_empty() {
            s.options = env.ssh_options();
        }
    }
    if let Endpoint::Tcp { plaintext_ok, .. } = &mut engine.endpoint {
        if env.var("DOCKEXEC_ALLOW_PLAINTEXT").as_deref() == Some("1") {
            *plaintext_ok = true;
        }
    }
    Ok(engine)
}

/// `DOCKER_HOST` (or `-H`), with TLS from `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH`.
fn from_host(env: &Env, url: &str, origin: &str) -> Result<Engine> {
    let tls = if url.starts_with("tcp://") && env.var("DOCKER_TLS_VERIFY").is_some() {
        let dir = env
            .var("DOCKER_CERT_PATH")
            .map(PathBuf::from)
            .or_else(|| env.config_dir())
            .ok_or_else(|| Error::Connect {
                endpoint: url.to_string(),
                reason: "DOCKER_TLS_VERIFY is set, but neither DOCKER_CERT_PATH nor HOME".into(),
                source: None,
            })?;
        Some(Tls::from_dir(&dir).map_err(|e| with_endpoint(e, url, "DOCKER_CERT_PATH"))?)
    } else {
        None
    };
    let endpoint = parse_host(url, tls).map_err(|e| match e {
        Error::InvalidInput(m) => Error::Connect {
            endpoint: url.to_string(),
            reason: format!("{origin}: {m}"),
            source: None,
        },
        e => e,
    })?;
    Ok(Engine::new(endpoint, origin))
}

fn with_endpoint(e: Error, endpoint: &str, what: &str) -> Error {
    match e {
        Error::Connect {
            endpoint: f,
            reason,
            source,
        } => Error::Connect {
            endpoint: endpoint.to_string(),
            reason: format!("{what} {f}: {reason}"),
            source,
        },
        e => e,
    }
}

/// `currentContext` of `config.json`, and the file's path.
fn current_context(env: &Env) -> Result<(Option<String>, PathBuf)> {
    let Some(dir) = env.config_dir() else {
        return Ok((None, PathBuf::from("~/.docker/config.json")));
    };
    let path = dir.join("config.json");
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((None, path)),
        Err(e) => {
            return Err(Error::Connect {
                endpoint: path.display().to_string(),
                reason: format!("cannot read the docker CLI's config: {e}"),
                source: Some(e),
            });
        }
    };
    let v: Value = serde_json::from_str(&text).map_err(|e| Error::Connect {
        endpoint: path.display().to_string(),
        reason: format!("the docker CLI's config is not JSON: {e}"),
        source: None,
    })?;
    let name = v
        .get("currentContext")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    Ok((name, path))
}

/// The context `name` from the CLI's store.
fn from_context(env: &Env, name: &str, origin: &str) -> Result<Engine> {
    let origin = format!("context `{name}` ({origin})");
    if name == "default" {
        let mut e = match env.var("DOCKER_HOST") {
            Some(h) => from_host(env, &h, "DOCKER_HOST")?,
            None => default_engine(env),
        };
        e.origin = format!("{origin}: {}", e.origin);
        return Ok(e);
    }
    let unknown = |reason: String| Error::Connect {
        endpoint: format!("context {name}"),
        reason,
        source: None,
    };
    let store = env
        .config_dir()
        .ok_or_else(|| unknown("no DOCKER_CONFIG and no HOME: no context store".into()))?
        .join("contexts");
    // The store names each context's directory sha256(name); the name is also inside its
    // meta.json, so reading the few entries finds it without hashing.
    let meta_root = store.join("meta");
    let mut found = None;
    if let Ok(entries) = fs::read_dir(&meta_root) {
        for entry in entries.flatten() {
            let meta = entry.path().join("meta.json");
            let Ok(text) = fs::read_to_string(&meta) else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            if v.get("Name").and_then(Value::as_str) == Some(name) {
                found = Some((entry.file_name(), v));
                break;
            }
        }
    }
    let Some((dir_name, meta)) = found else {
        return Err(unknown(format!(
            "no such context in {} ({origin}); `docker context ls` lists them",
            meta_root.display()
        )));
    };
    let docker = meta.get("Endpoints").and_then(|e| e.get("docker"));
    let host = docker
        .and_then(|d| d.get("Host"))
        .and_then(Value::as_str)
        .filter(|h| !h.is_empty())
        .ok_or_else(|| unknown("its meta.json has no docker endpoint Host".into()))?;
    let skip_verify = docker
        .and_then(|d| d.get("SkipTLSVerify"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let tls_dir = store.join("tls").join(&dir_name).join("docker");
    let tls = if host.starts_with("tcp://") && (tls_dir.is_dir() || skip_verify) {
        Some(
            Tls::in_dir(&tls_dir, !skip_verify)
                .map_err(|e| with_endpoint(e, host, "context TLS files"))?,
        )
    } else {
        None
    };
    let endpoint = parse_host(host, tls).map_err(|e| unknown(e.to_string()))?;
    Ok(Engine::new(endpoint, origin))
}

/// No `DOCKER_HOST` and no context: the system socket, else the first of the rootless and
/// Desktop sockets that answers.
fn default_engine(env: &Env) -> Engine {
    let system = PathBuf::from(DEFAULT_SOCKET);
    if (env.answers)(&system) {
        return Engine::new(Endpoint::Unix(system), "the default socket");
    }
    let mut tried = vec![format!(
        "unix://{DEFAULT_SOCKET} (the default socket): no answer"
    )];
    let mut candidates = Vec::new();
    if let Some(run) = env.var("XDG_RUNTIME_DIR") {
        candidates.push((
            PathBuf::from(run).join("docker.sock"),
            "rootless Docker ($XDG_RUNTIME_DIR/docker.sock)",
        ));
    }
    if let Some(home) = &env.home {
        candidates.push((
            home.join(".docker/run/docker.sock"),
            "Docker Desktop (~/.docker/run/docker.sock)",
        ));
    }
    for (path, what) in candidates {
        if (env.answers)(&path) {
            let mut e = Engine::new(Endpoint::Unix(path), what);
            e.tried = tried;
            return e;
        }
        tried.push(format!("unix://{} ({what}): no answer", path.display()));
    }
    // Nothing answers: keep the system socket, so the connect error names it and the list.
    let mut e = Engine::new(Endpoint::Unix(system), "the default socket");
    e.tried = tried;
    e
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// An engine whose discovery passed over `tried`.
    pub(crate) fn engine_with_tried(tried: Vec<String>) -> Engine {
        let mut e = Engine::unix(DEFAULT_SOCKET);
        e.tried = tried;
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)], home: &Path, answering: &[&str]) -> Env {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let answering: Vec<PathBuf> = answering.iter().map(PathBuf::from).collect();
        Env {
            vars: Box::new(move |k| vars.get(k).cloned()),
            home: Some(home.to_path_buf()),
            answers: Box::new(move |p| answering.iter().any(|a| a == p)),
        }
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "dockexec-engine-test-{tag}-{}",
            crate::host::random_id()
        ));
        fs::create_dir_all(&d).unwrap();
        d
    }

    /// Writes a context as `docker context create` does (the dir name is only a key here).
    fn write_context(config: &Path, name: &str, host: &str, skip: bool, tls: &[&str]) {
        let key = format!("k-{name}");
        let meta = config.join("contexts/meta").join(&key);
        fs::create_dir_all(&meta).unwrap();
        fs::write(
            meta.join("meta.json"),
            serde_json::json!({"Name": name, "Metadata": {},
                "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": skip}}})
            .to_string(),
        )
        .unwrap();
        if !tls.is_empty() {
            let t = config.join("contexts/tls").join(&key).join("docker");
            fs::create_dir_all(&t).unwrap();
            for f in tls {
                fs::write(t.join(f), "x").unwrap();
            }
        }
    }

    #[test]
    fn docker_host_wins_over_contexts() {
        let home = tempdir("host");
        let config = home.join(".docker");
        write_context(&config, "remote", "unix:///remote.sock", false, &[]);
        fs::write(config.join("config.json"), r#"{"currentContext":"remote"}"#).unwrap();
        let e = resolve(
            &env(
                &[
                    ("DOCKER_HOST", "unix:///h.sock"),
                    ("DOCKER_CONTEXT", "remote"),
                ],
                &home,
                &[],
            ),
            None,
        )
        .unwrap();
        assert_eq!(e.endpoint(), "unix:///h.sock");
        assert_eq!(e.origin(), "DOCKER_HOST");
        // DOCKER_CONTEXT before currentContext.
        write_context(&config, "other", "unix:///other.sock", false, &[]);
        let e = resolve(&env(&[("DOCKER_CONTEXT", "other")], &home, &[]), None).unwrap();
        assert_eq!(e.endpoint(), "unix:///other.sock");
        assert!(e.origin().contains("DOCKER_CONTEXT"), "{}", e.origin());
        let e = resolve(&env(&[], &home, &[]), None).unwrap();
        assert_eq!(e.endpoint(), "unix:///remote.sock");
        assert!(e.origin().contains("currentContext"), "{}", e.origin());
        // Flags win over everything; both at once is refused by from_flags.
        let e = resolve(
            &env(&[("DOCKER_HOST", "unix:///h.sock")], &home, &[]),
            Some(Pick::Context("other".into())),
        )
        .unwrap();
        assert_eq!(e.endpoint(), "unix:///other.sock");
        fs::remove_dir_all(&home).unwrap();
    }

    #[test]
    fn context_tls_files_and_skip_verify_are_read() {
        let home = tempdir("tls");
        let config = home.join("cfg");
        write_context(
            &config,
            "tls",
            "tcp://10.0.0.1:2376",
            false,
            &["ca.pem", "cert.pem", "key.pem"],
        );
        write_context(&config, "skip", "tcp://10.0.0.2", true, &[]);
        write_context(
            &config,
            "halfkey",
            "tcp://10.0.0.3",
            false,
            &["ca.pem", "cert.pem"],
        );
        let e = resolve(
            &env(&[("DOCKER_CONFIG", config.to_str().unwrap())], &home, &[]),
            Some(Pick::Context("tls".into())),
        )
        .unwrap();
        match &e.endpoint {
            Endpoint::Tcp {
                tls: Some(t), port, ..
            } => {
                assert!(t.verify && t.ca.is_some() && t.cert.is_some() && t.key.is_some());
                assert_eq!(*port, 2376);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(e.transport(), "tcp+tls");
        assert!(!e.host_filesystem_shared());
        let e = resolve(
            &env(&[("DOCKER_CONFIG", config.to_str().unwrap())], &home, &[]),
            Some(Pick::Context("skip".into())),
        )
        .unwrap();
        assert!(matches!(&e.endpoint, Endpoint::Tcp { tls: Some(t), .. } if !t.verify));
        let err = resolve(
            &env(&[("DOCKER_CONFIG", config.to_str().unwrap())], &home, &[]),
            Some(Pick::Context("halfkey".into())),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("no key.pem"), "{err}");
        let err = resolve(
            &env(&[("DOCKER_CONFIG", config.to_str().unwrap())], &home, &[]),
            Some(Pick::Context("nope".into())),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("no such context") && err.contains("nope"),
            "{err}"
        );
        fs::remove_dir_all(&home).unwrap();
    }

    #[test]
    fn docker_tls_verify_reads_the_cert_path() {
        let home = tempdir("certpath");
        let certs = home.join("certs");
        fs::create_dir_all(&certs).unwrap();
        let vars = [
            ("DOCKER_HOST", "tcp://127.0.0.1"),
            ("DOCKER_TLS_VERIFY", "1"),
            ("DOCKER_CERT_PATH", certs.to_str().unwrap()),
        ];
        let err = resolve(&env(&vars, &home, &[]), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no ca.pem"), "{err}");
        for f in ["ca.pem", "cert.pem", "key.pem"] {
            fs::write(certs.join(f), "x").unwrap();
        }
        let e = resolve(&env(&vars, &home, &[]), None).unwrap();
        assert_eq!(e.endpoint(), "tcp://127.0.0.1:2376");
        assert_eq!(e.transport(), "tcp+tls");
        fs::remove_dir_all(&home).unwrap();
    }

    #[test]
    fn the_fallback_sockets_are_tried_in_order_and_listed() {
        let home = PathBuf::from("/home/u");
        let vars = [("XDG_RUNTIME_DIR", "/run/user/1000")];
        let e = resolve(&env(&vars, &home, &[DEFAULT_SOCKET]), None).unwrap();
        assert_eq!(e.endpoint(), "unix:///var/run/docker.sock");
        assert!(e.tried().is_empty());
        let e = resolve(&env(&vars, &home, &["/run/user/1000/docker.sock"]), None).unwrap();
        assert_eq!(e.endpoint(), "unix:///run/user/1000/docker.sock");
        assert!(e.origin().contains("rootless"));
        assert_eq!(e.tried().len(), 1);
        let e = resolve(
            &env(&vars, &home, &["/home/u/.docker/run/docker.sock"]),
            None,
        )
        .unwrap();
        assert!(e.origin().contains("Desktop"));
        assert_eq!(e.tried().len(), 2);
        let e = resolve(&env(&vars, &home, &[]), None).unwrap();
        assert_eq!(e.endpoint(), "unix:///var/run/docker.sock");
        assert_eq!(e.tried().len(), 3, "{:?}", e.tried());
    }

    #[test]
    fn hosts_parse_or_say_why_not() {
        let ok = |u: &str| parse_host(u, None).unwrap();
        assert_eq!(ok("unix:///x.sock"), Endpoint::Unix("/x.sock".into()));
        assert!(matches!(ok("tcp://h"), Endpoint::Tcp { port: 2375, .. }));
        assert!(
            matches!(ok("tcp://[::1]:9"), Endpoint::Tcp { ref host, port: 9, .. } if host == "::1")
        );
        let Endpoint::Ssh(s) = ok("ssh://me@h:2222/run/d.sock") else {
            panic!()
        };
        assert_eq!(
            (
                s.user.as_deref(),
                s.host.as_str(),
                s.port,
                s.socket.as_deref()
            ),
            (Some("me"), "h", Some(2222), Some("/run/d.sock"))
        );
        let args = s.args();
        let dest = args.iter().position(|a| a == "me@h").unwrap();
        assert_eq!(
            &args[dest..],
            [
                "me@h",
                "--",
                "docker",
                "--host",
                "unix:///run/d.sock",
                "system",
                "dial-stdio"
            ]
        );
        for bad in [
            "tcp://",
            "unix://",
            "http://h",
            "npipe:////./pipe/x",
            "ssh://",
            "ssh://-oProxyCommand=x",
            "ssh://a:b@h",
            "ssh://h/so ck",
            "tcp://h:port",
        ] {
            assert!(parse_host(bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn plain_tcp_beyond_loopback_is_refused_unless_allowed() {
        for ok in ["tcp://127.0.0.1:2375", "tcp://localhost:1", "tcp://[::1]:2"] {
            Engine::host(ok).unwrap().check_dialable().unwrap();
        }
        let e = Engine::host("tcp://10.1.2.3:2375").unwrap();
        let err = e.check_dialable().unwrap_err().to_string();
        assert!(err.contains("plain TCP"), "{err}");
        e.clone().allow_plaintext().check_dialable().unwrap();
    }

    #[test]
    fn a_vm_socket_or_a_remote_engine_shares_no_filesystem() {
        assert!(Engine::unix("/var/run/docker.sock").host_filesystem_shared());
        assert!(
            !Engine::host("tcp://127.0.0.1:1")
                .unwrap()
                .host_filesystem_shared()
        );
        assert!(!Engine::ssh("ssh://h").unwrap().host_filesystem_shared());
        assert!(
            Engine::ssh("ssh://h")
                .unwrap()
                .shares_host_filesystem(true)
                .host_filesystem_shared()
        );
        if let Some(home) = home_dir() {
            let desktop = home.join(".docker/run/docker.sock");
            assert!(!Engine::unix(desktop).host_filesystem_shared());
        }
    }
}
