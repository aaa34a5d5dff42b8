//! Typed calls to the Docker Engine API.
//!
//! One [`Client`] per executor. JSON calls share a pooled, keep-alive [`Agent`] with a bounded
//! timeout; calls that stream for as long as a process runs (exec start, image pull) get an
//! agent of their own, so that exactly that connection can be shut down from another thread.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use ureq::http::Response;
use ureq::{Agent, Body};

use super::dial::dial_reason;
use super::transport::{self, BASE_URL, Dialer, Limits};
use crate::engine::Engine;
use crate::error::{Error, Result};

/// The oldest Engine API we speak (Docker 1.13). `Init` (1.25) and exec `WorkingDir` (1.35)
/// are ignored by daemons older than they are.
pub(crate) const MIN_API: (u32, u32) = (1, 25);
/// The newest Engine API this code was written against; a newer daemon is asked for this one.
pub(crate) const MAX_API: (u32, u32) = (1, 47);

/// The API version negotiated with each engine's daemon, this process.
static NEGOTIATED: parking_lot::Mutex<std::collections::BTreeMap<String, String>> =
    parking_lot::Mutex::new(std::collections::BTreeMap::new());

/// How long an ordinary JSON call may take, body included, before it is abandoned (at least:
/// a longer `api_timeout` raises it).
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the daemon may take to answer any call: see `ExecutorBuilder::api_timeout`.
pub(crate) const DEFAULT_API_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection to one daemon, with the API version negotiated.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    dialer: Arc<Dialer>,
    agent: Agent,
    /// What bounds `agent`'s calls.
    limits: Limits,
    /// How long the daemon may take to answer (connect, request, response head) on any call.
    api_timeout: Duration,
    /// `"/v1.41"`: the negotiated version, prefixed to every versioned path.
    prefix: String,
}

/// What `GET /version` says (the parts we use).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Version {
    pub(crate) version: String,
    pub(crate) api_version: String,
    #[serde(default)]
    pub(crate) min_api_version: Option<String>,
}

/// What exec inspect says.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ExecInfo {
    pub(crate) running: bool,
    pub(crate) exit_code: Option<i64>,
}

/// What container inspect says (the parts we use).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ContainerInfo {
    pub(crate) state: ContainerState,
}

/// A container's state.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ContainerState {
    /// `running`, `exited`, `removing`, `dead`, …
    #[serde(default)]
    pub(crate) status: String,
    #[serde(default)]
    pub(crate) running: bool,
    #[serde(default, rename = "OOMKilled")]
    pub(crate) oom_killed: bool,
}

/// One row of a container list.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ContainerSummary {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) labels: HashMap<String, String>,
    /// `created`, `running`, `paused`, `restarting`, `removing`, `exited` or `dead`.
    #[serde(default)]
    pub(crate) state: String,
    /// When it was created, in seconds since the Unix epoch (the daemon's clock).
    #[serde(default)]
    pub(crate) created: i64,
}

/// One line of an image pull's progress stream.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PullEvent {
    #[serde(default)]
    pub(crate) status: Option<String>,
    #[serde(default)]
    pub(crate) id: Option<String>,
    #[serde(default)]
    pub(crate) progress_detail: Option<ProgressDetail>,
    #[serde(default)]
    pub(crate) error: Option<String>,
}

/// Byte counts of one layer's download or extraction.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub(crate) struct ProgressDetail {
    #[serde(default)]
    pub(crate) current: Option<u64>,
    #[serde(default)]
    pub(crate) total: Option<u64>,
}

/// A live exec output stream, and the means to cut it from another thread.
pub(crate) struct ExecStream {
    reader: ureq::BodyReader<'static>,
}

impl std::fmt::Debug for ExecStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecStream").finish_non_exhaustive()
    }
}

impl Read for ExecStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }
}

/// Shuts down the one connection a stream reads from; a blocked read returns an error at once.
#[derive(Debug, Clone)]
pub(crate) struct StreamCutter(Agent);

impl StreamCutter {
    pub(crate) fn cut(&self) {
        self.0.clone().shutdown();
    }
}

impl Client {
    /// [`connect_with`](Client::connect_with) the default `api_timeout`.
    pub(crate) fn connect(engine: &Engine) -> Result<Client> {
        Client::connect_with(engine, DEFAULT_API_TIMEOUT)
    }

    /// Connects to `engine`'s daemon: pings it and negotiates the API version. Every call of
    /// the client must be answered within `api_timeout`.
    ///
    /// # Errors
    /// [`Error::Connect`] when nothing listens there, the transport fails (TLS, ssh), or
    /// nothing answers the ping within `api_timeout`, listing the places discovery tried;
    /// [`Error::Protocol`] when the daemon's API range and ours do not overlap.
    pub(crate) fn connect_with(engine: &Engine, api_timeout: Duration) -> Result<Client> {
        let limits = Limits {
            total: Some(CALL_TIMEOUT.max(api_timeout)),
            head: api_timeout,
            idle: None,
        };
        let dialer = Arc::new(Dialer::new(engine)?);
        let mut client = Client {
            agent: transport::agent(&dialer, limits),
            dialer,
            limits,
            api_timeout,
            prefix: String::new(),
        };
        client.ping().map_err(|e| {
            let e = match e {
                // Something listens there but does not answer: a hung daemon, or not a daemon.
                Error::Timeout { .. } => Error::Connect {
                    endpoint: engine.endpoint(),
                    reason: format!(
                        "no answer to a ping within {}: is the docker daemon hung or \
                         overloaded, and is this its endpoint?",
                        secs(api_timeout)
                    ),
                    source: None,
                },
                // Plain HTTP to a TLS port: Go's server answers this 400.
                Error::Docker {
                    status: 400,
                    message,
                } if message.contains("HTTPS server") => Error::Connect {
                    endpoint: engine.endpoint(),
                    reason: "the daemon speaks TLS: set DOCKER_TLS_VERIFY=1 and \
                                 DOCKER_CERT_PATH (or give Engine::tls)"
                        .into(),
                    source: None,
                },
                e => e,
            };
            with_tried(e, engine)
        })?;
        // `GET /version` costs the daemon ~5 ms; the answer cannot change while it runs, so
        // it is asked once per socket per process. Held across the call: concurrent first
        // connections ask once, not each.
        let mut cache = NEGOTIATED.lock();
        let version = match cache.get(&engine.key()) {
            Some(v) => v.clone(),
            None => {
                let v = negotiate(&client.version()?)?;
                cache.insert(engine.key(), v.clone());
                v
            }
        };
        drop(cache);
        client.prefix = format!("/v{version}");
        Ok(client)
    }

    /// The same daemon and API version, with every call bounded by `timeout` (on connections
    /// of its own, so a hung call never holds a pooled one).
    pub(crate) fn with_timeout(&self, timeout: Duration) -> Client {
        let limits = Limits {
            total: Some(timeout),
            head: self.api_timeout.min(timeout),
            idle: None,
        };
        Client {
            dialer: Arc::clone(&self.dialer),
            agent: transport::agent(&self.dialer, limits),
            limits,
            api_timeout: self.api_timeout,
            prefix: self.prefix.clone(),
        }
    }

    /// How long the daemon may take to answer (see `ExecutorBuilder::api_timeout`).
    pub(crate) fn api_timeout(&self) -> Duration {
        self.api_timeout
    }

    /// The engine this client talks to.
    pub(crate) fn engine(&self) -> &Engine {
        self.dialer.engine()
    }

    /// The negotiated API version, e.g. `"1.41"`.
    #[cfg_attr(
        not(any(all(test, feature = "engine-tests"), feature = "bench")),
        allow(dead_code)
    )]
    pub(crate) fn api_version(&self) -> &str {
        self.prefix.trim_start_matches("/v")
    }

    fn url(&self, path: &str) -> String {
        format!("{BASE_URL}{}{path}", self.prefix)
    }

    fn map_err(&self, what: &str, e: ureq::Error) -> Error {
        self.map_err_within(what, e, self.limits)
    }

    /// As `map_err`, for a call bounded by `limits` rather than the client's own: a timeout
    /// says which limit passed.
    fn map_err_within(&self, what: &str, e: ureq::Error, limits: Limits) -> Error {
        match e {
            ureq::Error::Timeout(reason) => timeout_error(what, reason, limits),
            e => map_ureq_error(&self.dialer.describe(), what, e),
        }
    }

    /// Turns an error status into [`Error::Docker`] with the daemon's message.
    fn check(&self, what: &str, resp: Response<Body>) -> Result<Response<Body>> {
        let status = resp.status().as_u16();
        if status < 400 {
            return Ok(resp);
        }
        let mut body = resp.into_body();
        let text = body
            .with_config()
            .limit(64 * 1024)
            .read_to_vec()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        Err(Error::Docker {
            status,
            message: error_message(&text, status, what),
        })
    }

    fn get(&self, what: &str, path: &str) -> Result<Response<Body>> {
        let resp = self
            .agent
            .get(self.url(path))
            .call()
            .map_err(|e| self.map_err(what, e))?;
        self.check(what, resp)
    }

    fn post(&self, what: &str, path: &str, body: Option<&Value>) -> Result<Response<Body>> {
        let req = self.agent.post(self.url(path));
        let resp = match body {
            Some(v) => req
                .header("Content-Type", "application/json")
                .send(serde_json::to_vec(v).expect("a Value always serializes")),
            None => req.send_empty(),
        }
        .map_err(|e| self.map_err(what, e))?;
        self.check(what, resp)
    }

    fn json<T: for<'de> Deserialize<'de>>(&self, what: &str, resp: Response<Body>) -> Result<T> {
        let bytes = resp
            .into_body()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_vec()
            .map_err(|e| self.map_err(what, e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::protocol_from(format!("{what}: {}", preview(&bytes)), e))
    }

    /// Drains a small response body so its connection goes back to the pool.
    fn drain(&self, what: &str, resp: Response<Body>) -> Result<()> {
        resp.into_body()
            .with_config()
            .limit(1024 * 1024)
            .read_to_vec()
            .map(|_| ())
            .map_err(|e| self.map_err(what, e))
    }

    /// `GET /_ping`, unversioned.
    pub(crate) fn ping(&self) -> Result<()> {
        let resp = self
            .agent
            .get(format!("{BASE_URL}/_ping"))
            .call()
            .map_err(|e| self.map_err("ping", e))?;
        let resp = self.check("ping", resp)?;
        self.drain("ping", resp)
    }

    /// `GET /version`, unversioned.
    pub(crate) fn version(&self) -> Result<Version> {
        let resp = self
            .agent
            .get(format!("{BASE_URL}/version"))
            .call()
            .map_err(|e| self.map_err("version", e))?;
        let resp = self.check("version", resp)?;
        self.json("version", resp)
    }

    /// `GET /info`, as JSON: what the daemon says of its host (cgroups, security options,
    /// runtimes). Kept as a `Value`: Docker and Podman fill different parts of it.
    pub(crate) fn info(&self) -> Result<Value> {
        let resp = self.get("info", "/info")?;
        self.json("info", resp)
    }

    /// `GET /version`, whole, as JSON (its `Components` say whether it is Podman).
    pub(crate) fn version_json(&self) -> Result<Value> {
        let resp = self.get("version", "/version")?;
        self.json("version", resp)
    }

    /// The user an image's processes run as (its `USER`); empty for root.
    pub(crate) fn image_user(&self, image: &str) -> Result<String> {
        #[derive(Deserialize, Default)]
        #[serde(rename_all = "PascalCase")]
        struct Config {
            #[serde(default)]
            user: String,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Inspect {
            #[serde(default)]
            config: Option<Config>,
        }
        let resp = self.get(
            "image inspect",
            &format!("/images/{}/json", encode_path(image)),
        )?;
        let info: Inspect = self.json("image inspect", resp)?;
        Ok(info.config.unwrap_or_default().user)
    }

    /// Image inspect: whether the image is present locally.
    pub(crate) fn image_exists(&self, image: &str) -> Result<bool> {
        match self.get(
            "image inspect",
            &format!("/images/{}/json", encode_path(image)),
        ) {
            Ok(resp) => self.drain("image inspect", resp).map(|_| true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Pulls `image`, calling `progress` for each event of the daemon's progress stream.
    ///
    /// # Errors
    /// [`Error::ImageNotFound`] when the registry has no such image; [`Error::Pull`] for any
    /// other failure reported in the stream or by status.
    pub(crate) fn image_pull(
        &self,
        image: &str,
        progress: &mut dyn FnMut(&PullEvent),
    ) -> Result<()> {
        let (name, tag) = split_reference(image);
        let mut path = format!("/images/create?fromImage={}", encode_query(name));
        if let Some(tag) = tag {
            path.push_str("&tag=");
            path.push_str(&encode_query(tag));
        }
        // A pull can take minutes: no overall limit, but its progress stream must not go
        // quiet for long. Its own agent, so the stream never holds a pooled connection.
        let limits = Limits {
            total: None,
            head: self.api_timeout,
            idle: Some(self.api_timeout * 2),
        };
        let agent = transport::agent(&self.dialer, limits);
        let resp = agent
            .post(self.url(&path))
            .send_empty()
            .map_err(|e| self.map_err_within("image pull", e, limits))?;
        let resp = match self.check("image pull", resp) {
            Ok(r) => r,
            Err(Error::Docker { status, message }) => {
                return Err(pull_error(image, status, message));
            }
            Err(e) => return Err(e),
        };
        let reader = BufReader::new(resp.into_body().into_reader());
        for line in reader.lines() {
            let line = line.map_err(|e| match from_io(e) {
                ureq::Error::Timeout(reason) => timeout_error("image pull", reason, limits),
                e => Error::Pull {
                    image: image.to_string(),
                    message: format!("reading the progress stream: {e}"),
                },
            })?;
            if line.trim().is_empty() {
                continue;
            }
            let event: PullEvent = serde_json::from_str(&line).map_err(|e| {
                Error::protocol(format!(
                    "image pull progress: {e}: {}",
                    preview(line.as_bytes())
                ))
            })?;
            if let Some(msg) = &event.error {
                return Err(pull_error(image, 500, msg.clone()));
            }
            progress(&event);
        }
        Ok(())
    }

    // Used by the client's real-daemon tests, which drive the daemon directly.
    #[cfg_attr(not(all(test, feature = "engine-tests")), allow(dead_code))]
    /// Tags `image` as `repo:tag`.
    pub(crate) fn image_tag(&self, image: &str, repo: &str, tag: &str) -> Result<()> {
        let path = format!(
            "/images/{}/tag?repo={}&tag={}",
            encode_path(image),
            encode_query(repo),
            encode_query(tag)
        );
        let resp = self.post("image tag", &path, None)?;
        self.drain("image tag", resp)
    }

    // Used by the client's real-daemon tests, which drive the daemon directly.
    #[cfg_attr(not(all(test, feature = "engine-tests")), allow(dead_code))]
    /// Removes an image reference (the tag; the layers go when nothing else names them).
    pub(crate) fn image_remove(&self, image: &str) -> Result<()> {
        let resp = self
            .agent
            .delete(self.url(&format!("/images/{}", encode_path(image))))
            .call()
            .map_err(|e| self.map_err("image remove", e))?;
        let resp = self.check("image remove", resp)?;
        self.drain("image remove", resp)
    }

    /// Creates a container from a full create body; returns its id.
    pub(crate) fn container_create(&self, name: Option<&str>, body: &Value) -> Result<String> {
        let path = match name {
            Some(n) => format!("/containers/create?name={}", encode_query(n)),
            None => "/containers/create".to_string(),
        };
        let resp = self.post("container create", &path, Some(body))?;
        #[derive(Deserialize)]
        struct Created {
            #[serde(rename = "Id")]
            id: String,
        }
        let created: Created = self.json("container create", resp)?;
        Ok(created.id)
    }

    /// Starts a created container.
    pub(crate) fn container_start(&self, id: &str) -> Result<()> {
        let resp = self.post("container start", &format!("/containers/{id}/start"), None)?;
        self.drain("container start", resp)
    }

    /// Inspects a container.
    pub(crate) fn container_inspect(&self, id: &str) -> Result<ContainerInfo> {
        let resp = self.get("container inspect", &format!("/containers/{id}/json"))?;
        self.json("container inspect", resp)
    }

    // Used by the client's real-daemon tests, which drive the daemon directly.
    #[cfg_attr(not(all(test, feature = "engine-tests")), allow(dead_code))]
    /// Waits for a container to stop; returns its exit code.
    pub(crate) fn container_wait(&self, id: &str) -> Result<i64> {
        let resp = self.post("container wait", &format!("/containers/{id}/wait"), None)?;
        #[derive(Deserialize)]
        struct Waited {
            #[serde(rename = "StatusCode")]
            status_code: i64,
        }
        let w: Waited = self.json("container wait", resp)?;
        Ok(w.status_code)
    }

    /// Waits up to `limit` for a container to stop running: `Ok(true)` if it did (or is
    /// gone), `Ok(false)` if it still runs when the limit passes.
    pub(crate) fn container_stopped_within(&self, id: &str, limit: Duration) -> Result<bool> {
        let resp = self
            .agent
            .post(self.url(&format!("/containers/{id}/wait?condition=not-running")))
            .config()
            .timeout_global(Some(limit))
            .build()
            .send_empty();
        // The daemon sends the headers at once and the body when the container stops, so
        // the limit usually passes while the body is read.
        match resp {
            Ok(resp) => match self.check("container wait", resp) {
                Ok(resp) => match self.drain("container wait", resp) {
                    Ok(()) => Ok(true),
                    Err(Error::Timeout { .. }) => Ok(false),
                    Err(e) => Err(e),
                },
                Err(e) if e.is_not_found() => Ok(true),
                Err(e) => Err(e),
            },
            Err(ureq::Error::Timeout(_)) => Ok(false),
            Err(e) => Err(self.map_err("container wait", e)),
        }
    }

    // Used by the client's real-daemon tests, which drive the daemon directly.
    #[cfg_attr(not(all(test, feature = "engine-tests")), allow(dead_code))]
    /// Sends `signal` (e.g. `"KILL"`) to a container's PID 1.
    pub(crate) fn container_kill(&self, id: &str, signal: &str) -> Result<()> {
        let path = format!("/containers/{id}/kill?signal={}", encode_query(signal));
        let resp = self.post("container kill", &path, None)?;
        self.drain("container kill", resp)
    }

    /// Force-removes a container (and its anonymous volumes); a missing container is `Ok`.
    ///
    /// `timeout` bounds the call, so that `stop()` returns even when the daemon hangs.
    pub(crate) fn container_remove(&self, id: &str, timeout: Duration) -> Result<()> {
        let resp = self
            .agent
            .delete(self.url(&format!("/containers/{id}?force=true&v=true")))
            .config()
            .timeout_global(Some(timeout))
            .build()
            .call()
            .map_err(|e| self.map_err("container remove", e))?;
        match self.check("container remove", resp) {
            Ok(resp) => self.drain("container remove", resp),
            Err(e) if e.is_not_found() => Ok(()),
            // Removal already under way (e.g. auto-remove, or a concurrent stop): done.
            Err(Error::Docker {
                status: 409,
                ref message,
            }) if message.contains("in progress") => Ok(()),
            Err(e) => Err(e),
        }
    }

    // Used by the client's real-daemon tests, which drive the daemon directly.
    #[cfg_attr(not(all(test, feature = "engine-tests")), allow(dead_code))]
    /// Lists all containers (running or not) carrying `label` (`key` or `key=value`).
    pub(crate) fn container_list(&self, label: &str) -> Result<Vec<ContainerSummary>> {
        self.container_list_all(&[label])
    }

    /// Lists all containers (running or not) carrying every one of `labels`.
    pub(crate) fn container_list_all(&self, labels: &[&str]) -> Result<Vec<ContainerSummary>> {
        let filters = json!({ "label": labels }).to_string();
        let path = format!(
            "/containers/json?all=true&filters={}",
            encode_query(&filters)
        );
        let resp = self.get("container list", &path)?;
        self.json("container list", resp)
    }

    /// Names of the volumes carrying `label` that no container uses (Docker's `dangling`): a
    /// volume created with its container is referenced from the start, so these are orphans.
    pub(crate) fn volume_list_dangling(&self, label: &str) -> Result<Vec<String>> {
        let filters = json!({ "label": [label], "dangling": ["true"] }).to_string();
        let path = format!("/volumes?filters={}", encode_query(&filters));
        let resp = self.get("volume list", &path)?;
        #[derive(Deserialize)]
        struct Listed {
            #[serde(rename = "Volumes", default)]
            volumes: Option<Vec<Named>>,
        }
        #[derive(Deserialize)]
        struct Named {
            #[serde(rename = "Name")]
            name: String,
        }
        let listed: Listed = self.json("volume list", resp)?;
        Ok(listed
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.name)
            .collect())
    }

    /// Removes a volume; one already gone is no error (a volume in use is: the daemon's 409).
    pub(crate) fn volume_remove(&self, name: &str) -> Result<()> {
        let resp = self
            .agent
            .delete(self.url(&format!("/volumes/{}", encode_path(name))))
            .call()
            .map_err(|e| self.map_err("volume remove", e))?;
        match self.check("volume remove", resp) {
            Ok(resp) => self.drain("volume remove", resp),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Creates an exec; returns its id.
    pub(crate) fn exec_create(&self, container: &str, body: &Value) -> Result<String> {
        let resp = self.post(
            "exec create",
            &format!("/containers/{container}/exec"),
            Some(body),
        )?;
        #[derive(Deserialize)]
        struct Created {
            #[serde(rename = "Id")]
            id: String,
        }
        let created: Created = self.json("exec create", resp)?;
        Ok(created.id)
    }

    /// Starts an exec and returns its output stream, read incrementally as the process writes.
    ///
    /// No `Upgrade` header is sent: Docker then answers 200 and streams the multiplexed output
    /// until the process ends (with `Upgrade: tcp` it would answer 101 and ureq sees no body).
    /// The stream has a connection of its own, which the returned [`StreamCutter`] shuts down.
    /// The daemon must answer (the response head) within `api_timeout`, even when the
    /// process then stays silent; `timeout` bounds the whole stream, and `None` lets it run
    /// as long as the process does (a block's own timeout, cancel and stop end it then).
    pub(crate) fn exec_start(
        &self,
        exec: &str,
        tty: bool,
        timeout: Option<Duration>,
    ) -> Result<(ExecStream, StreamCutter)> {
        let limits = Limits {
            total: timeout,
            head: timeout.map_or(self.api_timeout, |t| t.min(self.api_timeout)),
            idle: None,
        };
        let agent = transport::agent(&self.dialer, limits);
        let body = json!({ "Detach": false, "Tty": tty });
        let resp = agent
            .post(self.url(&format!("/exec/{exec}/start")))
            .header("Content-Type", "application/json")
            .send(serde_json::to_vec(&body).expect("a Value always serializes"))
            .map_err(|e| self.map_err_within("exec start", e, limits))?;
        let resp = self.check("exec start", resp)?;
        let reader = resp.into_body().into_reader();
        Ok((ExecStream { reader }, StreamCutter(agent)))
    }

    /// Starts an exec with its stdin, stdout and stderr hijacked onto one connection of its
    /// own (`Upgrade: tcp`): what is written to the returned stream is the process's stdin, and
    /// what is read is its stdout and stderr, multiplexed as by [`exec_start`](Client::exec_start).
    /// `timeout` bounds the request and the response head only.
    pub(crate) fn exec_attach(&self, exec: &str, timeout: Duration) -> Result<transport::Hijacked> {
        let body = serde_json::to_vec(&json!({ "Detach": false, "Tty": false }))
            .expect("a Value always serializes");
        let path = format!("{}/exec/{exec}/start", self.prefix);
        self.hijack(&path, &body, timeout, "exec attach")
    }

    /// Attaches to a container's stdin, stdout and stderr on a connection of its own
    /// (`Upgrade: tcp`), as `docker run -i` does before it starts the container: what is
    /// written to the returned stream is the main process's stdin, and what is read is its
    /// output, multiplexed as by [`exec_start`](Client::exec_start). `timeout` bounds the
    /// request and the response head only.
    pub(crate) fn container_attach(
        &self,
        container: &str,
        timeout: Duration,
    ) -> Result<transport::Hijacked> {
        let path = format!(
            "{}/containers/{container}/attach?stream=1&stdin=1&stdout=1&stderr=1",
            self.prefix
        );
        self.hijack(&path, b"", timeout, "container attach")
    }

    /// POSTs `body` to `path` asking for `Upgrade: tcp`, and returns the hijacked stream; a
    /// refusal is the daemon's error, named `what`.
    fn hijack(
        &self,
        path: &str,
        body: &[u8],
        timeout: Duration,
        what: &str,
    ) -> Result<transport::Hijacked> {
        match transport::upgrade(&self.dialer, path, body, timeout) {
            Ok(transport::Upgrade::Switched(h)) => Ok(h),
            Ok(transport::Upgrade::Refused { status, body }) => Err(Error::Docker {
                status,
                message: error_message(&body, status, what),
            }),
            Err(e) => Err(map_ureq_error(
                &self.dialer.describe(),
                what,
                ureq::Error::Io(e),
            )),
        }
    }

    /// Inspects an exec.
    pub(crate) fn exec_inspect(&self, exec: &str) -> Result<ExecInfo> {
        let resp = self.get("exec inspect", &format!("/exec/{exec}/json"))?;
        self.json("exec inspect", resp)
    }

    /// Runs a short command to completion and returns `(exit code, stdout, stderr)`.
    ///
    /// For housekeeping (the kill script, `init_command`): no cancellation, no streaming.
    pub(crate) fn exec_collect(
        &self,
        container: &str,
        body: &Value,
        timeout: Option<Duration>,
    ) -> Result<(Option<i64>, Vec<u8>, Vec<u8>)> {
        let id = self.exec_create(container, body)?;
        let (mut stream, _cutter) = self.exec_start(&id, false, timeout)?;
        let mut demux = super::frames::Demuxer::new(false);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match stream.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(match from_io(e) {
                        // The only limit on the body is the whole-run one.
                        ureq::Error::Timeout(_) => Error::Timeout {
                            what: match timeout {
                                Some(t) => format!("docker exec (not done within {})", secs(t)),
                                None => "docker exec".into(),
                            },
                        },
                        ureq::Error::Io(e) => Error::Transport {
                            what: "reading exec output".into(),
                            source: e,
                        },
                        e => Error::Transport {
                            what: "reading exec output".into(),
                            source: io::Error::other(e),
                        },
                    });
                }
            };
            if n == 0 {
                break;
            }
            demux
                .feed(&buf[..n], |s, b| match s {
                    super::frames::Stream::Stdout => out.extend_from_slice(b),
                    super::frames::Stream::Stderr => err.extend_from_slice(b),
                })
                .map_err(|e| Error::protocol(e.0))?;
        }
        demux.finish().map_err(|e| Error::protocol(e.0))?;
        let info = self.exec_inspect(&id)?;
        Ok((info.exit_code, out, err))
    }

    /// Extracts a tar archive into `path` inside the container.
    pub(crate) fn archive_put(&self, container: &str, path: &str, tar: Vec<u8>) -> Result<()> {
        let url = self.url(&format!(
            "/containers/{container}/archive?path={}",
            encode_query(path)
        ));
        let resp = self
            .agent
            .put(url)
            .header("Content-Type", "application/x-tar")
            .send(tar)
            .map_err(|e| self.map_err("archive put", e))?;
        let resp = self.check("archive put", resp)?;
        self.drain("archive put", resp)
    }

    /// Fetches `path` from the container as a tar archive.
    pub(crate) fn archive_get(&self, container: &str, path: &str) -> Result<Vec<u8>> {
        let path = format!(
            "/containers/{container}/archive?path={}",
            encode_query(path)
        );
        let resp = self.get("archive get", &path)?;
        resp.into_body()
            .with_config()
            .limit(1024 * 1024 * 1024)
            .read_to_vec()
            .map_err(|e| self.map_err("archive get", e))
    }
}

/// Picks the API version: the newest both sides speak.
pub(crate) fn negotiate(v: &Version) -> Result<String> {
    let daemon_max = parse_api(&v.api_version).ok_or_else(|| {
        Error::protocol(format!(
            "daemon reports an unreadable ApiVersion {:?}",
            v.api_version
        ))
    })?;
    let daemon_min = v
        .min_api_version
        .as_deref()
        .and_then(parse_api)
        .unwrap_or(daemon_max);
    let chosen = daemon_max.min(MAX_API);
    if chosen < MIN_API || chosen < daemon_min {
        return Err(Error::protocol(format!(
            "docker {} speaks API {}..{}, dockexec needs {}.{}..{}.{}",
            v.version,
            v.min_api_version.as_deref().unwrap_or("?"),
            v.api_version,
            MIN_API.0,
            MIN_API.1,
            MAX_API.0,
            MAX_API.1
        )));
    }
    Ok(format!("{}.{}", chosen.0, chosen.1))
}

pub(crate) fn parse_api(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// A timeout of a call bounded by `limits`, saying what stalled and which limit passed.
fn timeout_error(what: &str, reason: ureq::Timeout, limits: Limits) -> Error {
    use ureq::Timeout as T;
    let limit = match reason {
        T::PerRead => format!(
            "nothing received for {}",
            secs(limits.idle.unwrap_or(limits.head))
        ),
        T::Global | T::PerCall | T::RecvBody => match limits.total {
            Some(t) => format!("not done within {}", secs(t)),
            None => "not done in time".to_string(),
        },
        // The connect, the request, and the wait for the response head.
        _ => format!("no answer within {}", secs(limits.head)),
    };
    Error::Timeout {
        what: format!("docker {what} ({limit})"),
    }
}

/// `30 s`, `1.5 s`: a limit as the error messages give it.
pub(crate) fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// A body read's error as ureq's own when it is one: ureq hands its errors, timeouts
/// included, to `Read` callers wrapped in an `io::Error`.
fn from_io(e: io::Error) -> ureq::Error {
    if !e.get_ref().is_some_and(|inner| inner.is::<ureq::Error>()) {
        return ureq::Error::Io(e);
    }
    match e.into_inner().map(|inner| inner.downcast::<ureq::Error>()) {
        Some(Ok(u)) => *u,
        // Checked just above; kept total rather than panicking.
        Some(Err(inner)) => ureq::Error::Io(io::Error::other(inner)),
        None => ureq::Error::Io(io::Error::other("unknown i/o error")),
    }
}

/// Adds the places discovery tried before `engine` to a connect error.
fn with_tried(e: Error, engine: &Engine) -> Error {
    match e {
        Error::Connect {
            endpoint,
            reason,
            source,
        } if !engine.tried().is_empty() => Error::Connect {
            endpoint,
            reason: format!(
                "{reason} (also tried, in order: {}; see Engine::from_env)",
                engine.tried().join("; ")
            ),
            source,
        },
        e => e,
    }
}

/// Maps a ureq failure to our error, naming the endpoint when the daemon is not there.
pub(crate) fn map_ureq_error(endpoint: &str, what: &str, e: ureq::Error) -> Error {
    match e {
        // What the transport said (TLS, ssh), in words that name the file or the peer.
        // No source: the reason is the whole of it, and a chain would say it twice.
        ureq::Error::Io(io) if dial_reason(&io).is_some() => Error::Connect {
            endpoint: endpoint.to_string(),
            reason: dial_reason(&io).unwrap_or_default().to_string(),
            source: None,
        },
        ureq::Error::Io(io) => match io.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => Error::Connect {
                endpoint: endpoint.to_string(),
                reason: if io.kind() == io::ErrorKind::NotFound {
                    "no socket there: is the docker daemon running?".into()
                } else {
                    "connection refused: is the docker daemon running?".into()
                },
                source: Some(io),
            },
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Error::Timeout {
                what: format!("docker {what}"),
            },
            io::ErrorKind::PermissionDenied => Error::Connect {
                endpoint: endpoint.to_string(),
                reason: "permission denied: is this user allowed to use docker?".into(),
                source: Some(io),
            },
            _ => Error::Transport {
                what: what.to_string(),
                source: io,
            },
        },
        ureq::Error::Timeout(_) => Error::Timeout {
            what: format!("docker {what}"),
        },
        other => Error::Transport {
            what: what.to_string(),
            source: io::Error::other(other),
        },
    }
}

/// Docker's error bodies are JSON `{"message": …}`, but a few are plain text.
pub(crate) fn error_message(body: &str, status: u16, what: &str) -> String {
    let from_json = serde_json::from_str::<Value>(body).ok().and_then(|v| {
        v.get("message")
            .and_then(Value::as_str)
            .map(|s| s.trim().to_string())
    });
    match from_json {
        Some(m) if !m.is_empty() => m,
        _ if !body.trim().is_empty() => body.trim().to_string(),
        _ => format!("{what} failed with HTTP {status} and no message"),
    }
}

pub(crate) fn pull_error(image: &str, status: u16, message: String) -> Error {
    let lower = message.to_ascii_lowercase();
    if status == 404
        || lower.contains("manifest unknown")
        || lower.contains("not found")
        || lower.contains("does not exist")
    {
        Error::ImageNotFound {
            image: image.to_string(),
            message,
        }
    } else {
        Error::Pull {
            image: image.to_string(),
            message,
        }
    }
}

/// Splits `repo[:tag][@digest]` into the repository and the tag (or digest).
///
/// A colon inside the registry host (`127.0.0.1:5000/x`) is not a tag separator.
pub(crate) fn split_reference(image: &str) -> (&str, Option<&str>) {
    let (image, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match image[last_slash..].rfind(':') {
        Some(i) => (&image[..last_slash + i], Some(&image[last_slash + i + 1..])),
        None => (image, None),
    };
    // With both, the digest names the image (as `docker pull name:tag@digest` does).
    (name, digest.or(tag))
}

fn preview(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]);
    s.into_owned()
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Percent-encodes a path segment, keeping `/` and `:` (image names contain both).
fn encode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'~'
            | b'/'
            | b':'
            | b'@' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A tar archive holding one regular file; enough for `archive_put` of a code file. A name
/// over 100 bytes gets a GNU long-name entry, which the daemon reads.
pub(crate) fn tar_one_file(name: &str, data: &[u8], mode: u32) -> Result<Vec<u8>> {
    if name.is_empty() {
        return Err(Error::invalid("tar entry name must not be empty"));
    }
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(data.len() as u64);
    header.set_mode(mode);
    let mut archive = tar::Builder::new(Vec::with_capacity(data.len() + 2560));
    archive
        .append_data(&mut header, name, data)
        .and_then(|()| archive.into_inner())
        .map_err(|e| Error::invalid(format!("tar entry {name:?}: {e}")))
}

/// What the archive API gave for one path: the archive's first entry is the path itself.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PathEntry {
    /// A regular file, with its contents.
    File(Vec<u8>),
    /// Anything else, named for an error message: "a directory", "a symbolic link", ….
    Other(&'static str),
}

/// Reads the archive of one path (`GET /containers/{id}/archive?path=…`): its first entry is
/// that path, so a directory (followed by its contents) or a link is said to be one.
pub(crate) fn untar_path(tar: &[u8]) -> Result<PathEntry> {
    let bad = |e: std::io::Error| Error::protocol_from("bad tar archive", e);
    let mut archive = tar::Archive::new(tar);
    let Some(entry) = archive.entries().map_err(bad)?.next() else {
        return Err(Error::protocol("tar archive holds no entry"));
    };
    let mut entry = entry.map_err(bad)?;
    Ok(match entry.header().entry_type() {
        tar::EntryType::Regular => PathEntry::File(read_entry(tar.len(), &mut entry)?),
        tar::EntryType::Directory => PathEntry::Other("a directory"),
        tar::EntryType::Symlink | tar::EntryType::Link => PathEntry::Other("a link"),
        _ => PathEntry::Other("not a regular file (a device, fifo or socket)"),
    })
}

/// An entry's data, read whole; `len` (the archive's) bounds the allocation.
fn read_entry(len: usize, entry: &mut tar::Entry<'_, &[u8]>) -> Result<Vec<u8>> {
    let bad = |e: std::io::Error| Error::protocol_from("bad tar archive", e);
    // The size comes from the archive: never trust it for an allocation beyond its length.
    let mut data = Vec::with_capacity(len.min(entry.size() as usize));
    std::io::Read::read_to_end(entry, &mut data).map_err(bad)?;
    // A short read is the end of the input, not of the entry.
    if data.len() as u64 != entry.size() {
        return Err(Error::protocol("tar entry runs past the archive"));
    }
    Ok(data)
}

/// The first regular file of a tar archive: `(name, contents)`. Entries of other kinds
/// (directories, links) before it are skipped. (`get_file` reads [`untar_path`]; this one
/// serves the tests and the fuzz targets.)
#[cfg(any(test, feature = "fuzz"))]
pub(crate) fn untar_first_file(tar: &[u8]) -> Result<(String, Vec<u8>)> {
    let bad = |e: std::io::Error| Error::protocol_from("bad tar archive", e);
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        return Ok((name, read_entry(tar.len(), &mut entry)?));
    }
    Err(Error::protocol("tar archive holds no regular file"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connect_error_lists_the_places_tried() {
        let engine = crate::engine::tests_support::engine_with_tried(vec![
            "unix:///var/run/docker.sock (the default socket): no answer".into(),
            "unix:///run/user/1/docker.sock (rootless): no answer".into(),
        ]);
        let e = with_tried(
            Error::Connect {
                endpoint: engine.endpoint(),
                reason: "no socket there".into(),
                source: None,
            },
            &engine,
        )
        .to_string();
        assert!(
            e.contains("also tried, in order") && e.contains("rootless"),
            "{e}"
        );
    }

    #[test]
    fn version_negotiation() {
        let v = |api: &str, min: Option<&str>| Version {
            version: "x".into(),
            api_version: api.into(),
            min_api_version: min.map(Into::into),
        };
        assert_eq!(negotiate(&v("1.41", Some("1.12"))).unwrap(), "1.41");
        assert_eq!(negotiate(&v("1.51", Some("1.24"))).unwrap(), "1.47");
        assert!(negotiate(&v("1.24", Some("1.12"))).is_err());
        assert!(negotiate(&v("1.60", Some("1.50"))).is_err());
        assert!(negotiate(&v("garbage", None)).is_err());
    }

    #[test]
    fn error_bodies() {
        assert_eq!(
            error_message(r#"{"message":"No such container: x"}"#, 404, "inspect"),
            "No such container: x"
        );
        assert_eq!(
            error_message("page not found\n", 404, "inspect"),
            "page not found"
        );
        assert!(error_message("", 500, "inspect").contains("HTTP 500"));
    }

    #[test]
    fn references() {
        assert_eq!(split_reference("python:3-slim"), ("python", Some("3-slim")));
        assert_eq!(split_reference("python"), ("python", None));
        assert_eq!(
            split_reference("127.0.0.1:5000/dockexec/python:latest"),
            ("127.0.0.1:5000/dockexec/python", Some("latest"))
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/dockexec/python"),
            ("127.0.0.1:5000/dockexec/python", None)
        );
        assert_eq!(split_reference("a/b@sha256:00"), ("a/b", Some("sha256:00")));
        // A tag and a digest: the digest decides (as docker pull does), and the repository
        // must not keep the tag (found by reading, while writing the fuzz targets).
        assert_eq!(
            split_reference("python:3@sha256:00"),
            ("python", Some("sha256:00"))
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/p:3@sha256:00"),
            ("127.0.0.1:5000/p", Some("sha256:00"))
        );
    }

    #[test]
    fn encoding() {
        assert_eq!(
            encode_query("127.0.0.1:5000/a b"),
            "127.0.0.1%3A5000%2Fa%20b"
        );
        assert_eq!(encode_path("127.0.0.1:5000/a b"), "127.0.0.1:5000/a%20b");
    }

    #[test]
    fn tar_round_trip() {
        let tar = tar_one_file("hello.txt", b"hi\xff\n", 0o644).unwrap();
        assert_eq!(tar.len() % 512, 0);
        let (name, data) = untar_first_file(&tar).unwrap();
        assert_eq!(name, "hello.txt");
        assert_eq!(data, b"hi\xff\n");
        let header = tar::Archive::new(&tar[..])
            .entries()
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .header()
            .clone();
        assert_eq!(header.mode().unwrap(), 0o644);
        assert!(matches!(
            tar_one_file("", b"", 0o644),
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn tar_long_name() {
        let name = "n".repeat(300);
        let tar = tar_one_file(&name, b"long", 0o600).unwrap();
        assert_eq!(untar_first_file(&tar).unwrap(), (name, b"long".to_vec()));
    }

    #[test]
    fn untar_malformed_is_a_protocol_error() {
        let protocol = |tar: &[u8]| matches!(untar_first_file(tar), Err(Error::Protocol { .. }));
        assert!(protocol(&[0u8; 1024]), "no entry at all");
        assert!(protocol(b""), "empty input");
        let big = tar_one_file("big", &[7u8; 1000], 0o644).unwrap();
        assert!(protocol(&big[..600]), "entry runs past the end");
        let mut garbled = big.clone();
        garbled[0..8].copy_from_slice(b"garbage!");
        assert!(protocol(&garbled), "header checksum mismatch");
        assert!(protocol(&[0xffu8; 512]), "not a tar header at all");
    }

    #[test]
    fn untar_path_says_what_the_path_is() {
        let file = tar_one_file("f", b"abc", 0o644).unwrap();
        assert_eq!(untar_path(&file).unwrap(), PathEntry::File(b"abc".to_vec()));
        let mut archive = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_size(0);
        archive.append_data(&mut dir, "d/", &b""[..]).unwrap();
        archive
            .append_data(&mut tar::Header::new_gnu(), "d/f", &b""[..])
            .unwrap();
        let tar = archive.into_inner().unwrap();
        assert_eq!(untar_path(&tar).unwrap(), PathEntry::Other("a directory"));
        assert!(matches!(untar_path(b""), Err(Error::Protocol { .. })));
        let big = tar_one_file("big", &[7u8; 1000], 0o644).unwrap();
        assert!(matches!(
            untar_path(&big[..600]),
            Err(Error::Protocol { .. })
        ));
    }

    #[test]
    fn untar_skips_a_directory_entry_first() {
        let mut archive = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_size(0);
        archive.append_data(&mut dir, "d/", &b""[..]).unwrap();
        let mut file = tar::Header::new_gnu();
        file.set_size(3);
        archive.append_data(&mut file, "d/f", &b"abc"[..]).unwrap();
        let tar = archive.into_inner().unwrap();
        assert_eq!(
            untar_first_file(&tar).unwrap(),
            ("d/f".to_string(), b"abc".to_vec())
        );

        // A directory alone holds no regular file.
        let mut archive = tar::Builder::new(Vec::new());
        archive.append_data(&mut dir, "d/", &b""[..]).unwrap();
        let tar = archive.into_inner().unwrap();
        assert!(matches!(
            untar_first_file(&tar),
            Err(Error::Protocol { .. })
        ));
    }

    #[test]
    fn timeouts_say_which_limit_passed() {
        let limits = Limits {
            total: Some(Duration::from_secs(60)),
            head: Duration::from_secs(30),
            idle: Some(Duration::from_millis(1500)),
        };
        let msg = |r| timeout_error("exec start", r, limits).to_string();
        assert!(
            msg(ureq::Timeout::RecvResponse).contains("exec start (no answer within 30 s)"),
            "{}",
            msg(ureq::Timeout::RecvResponse)
        );
        assert!(msg(ureq::Timeout::PerRead).contains("nothing received for 1.5 s"));
        assert!(msg(ureq::Timeout::Global).contains("not done within 60 s"));
        assert!(msg(ureq::Timeout::Connect).contains("hung or overloaded"));
    }

    #[test]
    fn body_read_errors_unwrap_to_ureq_errors() {
        let wrapped = ureq::Error::Timeout(ureq::Timeout::PerRead).into_io();
        assert!(matches!(
            from_io(wrapped),
            ureq::Error::Timeout(ureq::Timeout::PerRead)
        ));
        let plain = io::Error::new(io::ErrorKind::ConnectionReset, "reset");
        assert!(
            matches!(from_io(plain), ureq::Error::Io(e) if e.kind() == io::ErrorKind::ConnectionReset)
        );
    }

    #[test]
    fn pull_errors_classify() {
        assert!(matches!(
            pull_error("x", 500, "manifest unknown: manifest unknown".into()),
            Error::ImageNotFound { .. }
        ));
        assert!(matches!(
            pull_error("x", 500, "disk full".into()),
            Error::Pull { .. }
        ));
    }
}
