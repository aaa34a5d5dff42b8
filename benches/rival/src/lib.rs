//! The async rival: dockexec's exec strategy written the idiomatic async way, on `bollard`
//! and `tokio`, so the benches can say how dockexec's blocking design compares.
//!
//! Same semantics as dockexec's exec path, on purpose:
//! - the same container: the create body comes from `dockexec::__bench::create_body` (the
//!   same hardening, `Init`, network `none`, bind-mounted workspace, keeper entrypoint);
//! - the same exec sequence per block: write the code file into the workspace, one exec of
//!   dockexec's own command (`__bench::run_command`: its `sh` wrapper, with the execution's
//!   marker in the container's `/run/dockexec`), stream stdout/stderr to the end, then
//!   inspect the exec for its exit code;
//! - the same cancellation: a message on a channel (a `tokio::sync::oneshot`, the async
//!   analogue of dockexec's crossbeam channel) makes the block's task run dockexec's kill
//!   command (`__bench::kill_command`) in a second exec as the block's user, then drain the
//!   stream and inspect;
//! - the same `stop()`: tell every task to shut down, force-remove the container (which ends
//!   every exec stream), then join every task, then remove the workspace.
//!
//! And its own idiomatic fast paths: one shared multi-threaded runtime, one pooled `Docker`
//! client (hyper's connection pool) shared by every task, a task (not a thread) per
//! execution, and `join_all` to wait for many.
//!
//! What it does not do that dockexec does (see BENCHMARKS.md): no output cap, no OOM/lost
//! container diagnosis after an exit 137, no agent strategy, no dead-man's switch, no orphan
//! sweep, no symlink-safe code-file write (a plain write into a fresh temp dir).

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptions, RemoveContainerOptions, StartContainerOptions,
};
use futures_util::StreamExt;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

/// What can go wrong; a boxed error is enough for a bench.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// The workspace inside the container (dockexec's `WORKSPACE`).
pub const WORKSPACE: &str = "/workspace";

/// Connects to the daemon at `socket` and negotiates the API version, as dockexec does.
pub async fn connect(socket: &Path) -> Result<Docker> {
    let socket = socket.to_str().ok_or("socket path is not UTF-8")?;
    let d = Docker::connect_with_unix(socket, 120, bollard::API_DEFAULT_VERSION)?;
    Ok(d.negotiate_version().await?)
}

/// A finished block.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// The exec's exit code (137 when killed).
    pub code: Option<i64>,
    /// All of stdout.
    pub stdout: Vec<u8>,
    /// All of stderr.
    pub stderr: Vec<u8>,
    /// The block was cancelled (or shut down by `stop`).
    pub cancelled: bool,
    /// The block ran past its timeout and was killed.
    pub timed_out: bool,
}

/// A running block: its task, and the channel that cancels it.
#[derive(Debug)]
pub struct Execution {
    cancel: Option<oneshot::Sender<Reason>>,
    /// Live output, one message per chunk the stream delivered (stdout = true).
    pub chunks: mpsc::UnboundedReceiver<(bool, bytes::Bytes)>,
    task: JoinHandle<Result<Output>>,
}

#[derive(Debug, Clone, Copy)]
enum Reason {
    Cancel,
    Shutdown,
}

impl Execution {
    /// Asks the block's task to kill it; does not wait.
    pub fn cancel(&mut self) {
        if let Some(tx) = self.cancel.take() {
            let _ = tx.send(Reason::Cancel);
        }
    }

    /// Waits for the block's end.
    pub async fn wait(self) -> Result<Output> {
        self.task.await?
    }
}

/// The rival executor: one container, blocks run as execs.
#[derive(Debug)]
pub struct Rival {
    docker: Docker,
    container: String,
    workspace: PathBuf,
    user: String,
    tag_prefix: String,
    timeout: Option<Duration>,
    next: AtomicU64,
    /// The live blocks' shutdown senders and tasks, so `stop` can end and join them all.
    live: Mutex<Vec<(oneshot::Sender<Reason>, oneshot::Receiver<()>)>>,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

impl Rival {
    /// Creates the workspace and the container dockexec's `builder` would create (its
    /// create body, from `__bench::create_body`), and starts it. Blocks run as `user`
    /// (dockexec's default when it runs as root: `65534:65534`).
    pub async fn start(
        docker: &Docker,
        builder: &dockexec::ExecutorBuilder,
        user: &str,
    ) -> Result<Rival> {
        let id = format!(
            "rival{}x{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let workspace = std::env::temp_dir().join(format!("dockexec-rival-{id}"));
        make_workspace(&workspace, user).await?;
        let body = dockexec::__bench::create_body(builder, &id, &workspace);
        let body: ContainerCreateBody = serde_json::from_value(body)?;
        let created = docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(format!("dockexec-{id}")),
                    ..Default::default()
                }),
                body,
            )
            .await;
        let container = match created {
            Ok(c) => c.id,
            Err(e) => {
                let _ = tokio::fs::remove_dir_all(&workspace).await;
                return Err(e.into());
            }
        };
        if let Err(e) = docker
            .start_container(&container, None::<StartContainerOptions>)
            .await
        {
            let _ = remove(docker, &container).await;
            let _ = tokio::fs::remove_dir_all(&workspace).await;
            return Err(e.into());
        }
        Ok(Rival {
            docker: docker.clone(),
            container,
            workspace,
            user: user.to_string(),
            tag_prefix: format!("{id}_"),
            timeout: Some(Duration::from_secs(60)),
            next: AtomicU64::new(1),
            live: Mutex::new(Vec::new()),
        })
    }

    /// The container's id.
    pub fn container_id(&self) -> &str {
        &self.container
    }

    /// Starts a block (`language` is `python` or `sh`, as dockexec's wrapper names them) and
    /// returns at once.
    pub async fn spawn(&self, language: &str, code: &str) -> Result<Execution> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let ext = if language == "python" { "py" } else { "sh" };
        let file = format!("tmp_code_{}{n}.{ext}", self.tag_prefix);
        let host_file = self.workspace.join(&file);
        tokio::fs::write(&host_file, code).await?;
        let tag = format!("{}{n}", self.tag_prefix);
        let marker = dockexec::__bench::marker_prefix(&tag);
        let exec = self
            .docker
            .create_exec(
                &self.container,
                CreateExecOptions {
                    cmd: Some(dockexec::__bench::run_command(
                        &marker,
                        language,
                        &format!("{WORKSPACE}/{file}"),
                    )),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    working_dir: Some(WORKSPACE.into()),
                    env: Some(vec![format!("DOCKEXEC_EXECUTION={tag}.")]),
                    user: Some(self.user.clone()),
                    ..Default::default()
                },
            )
            .await?
            .id;
        let StartExecResults::Attached { mut output, .. } =
            self.docker.start_exec(&exec, None).await?
        else {
            return Err("exec started detached".into());
        };
        let (cancel_tx, mut cancel_rx) = oneshot::channel::<Reason>();
        let (shut_tx, mut shut_rx) = oneshot::channel::<Reason>();
        let (chunk_tx, chunk_rx) = mpsc::unbounded_channel();
        let docker = self.docker.clone();
        let container = self.container.clone();
        let user = self.user.clone();
        let deadline = self.timeout.map(|t| tokio::time::Instant::now() + t);
        // Dropped when the task ends, which wakes stop()'s join of this block.
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _done = done_tx;
            let mut out = Output::default();
            let mut killed = false;
            let sleep = tokio::time::sleep_until(
                deadline
                    .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(1 << 30)),
            );
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    item = output.next() => match item {
                        Some(Ok(log)) => {
                            let stdout = matches!(log, bollard::container::LogOutput::StdOut { .. });
                            let bytes = log.into_bytes();
                            if stdout { out.stdout.extend_from_slice(&bytes) } else { out.stderr.extend_from_slice(&bytes) }
                            // A dropped receiver only means nobody watches live output.
                            let _ = chunk_tx.send((stdout, bytes));
                        }
                        Some(Err(e)) if killed => { let _ = e; break; }
                        Some(Err(e)) => return Err(e.into()),
                        None => break,
                    },
                    r = &mut cancel_rx, if !killed => {
                        // A dropped handle (Err) is not a cancel: keep running to the end.
                        if let Ok(_reason) = r {
                            killed = true;
                            out.cancelled = true;
                            kill(&docker, &container, &marker, &tag, &user).await;
                        } else {
                            cancel_rx = oneshot::channel().1;
                        }
                    }
                    r = &mut shut_rx, if !killed => {
                        // Shutdown: stop() removes the container, which ends the stream.
                        if r.is_ok() { killed = true; out.cancelled = true; }
                        else { shut_rx = oneshot::channel().1; }
                    }
                    () = &mut sleep, if !killed && deadline.is_some() => {
                        killed = true;
                        out.timed_out = true;
                        kill(&docker, &container, &marker, &tag, &user).await;
                    }
                }
            }
            // The daemon records the exec's end apart from closing its stream: ask again for
            // a moment, as dockexec does.
            let until = Instant::now() + Duration::from_secs(1);
            loop {
                match docker.inspect_exec(&exec).await {
                    Ok(i) if i.running != Some(true) => {
                        out.code = i.exit_code;
                        break;
                    }
                    Ok(_) if Instant::now() < until => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    _ => break,
                }
            }
            let _ = tokio::fs::remove_file(&host_file).await;
            Ok(out)
        });
        self.live.lock().await.push((shut_tx, done_rx));
        Ok(Execution {
            cancel: Some(cancel_tx),
            chunks: chunk_rx,
            task,
        })
    }

    /// Runs a block to its end.
    pub async fn run(&self, language: &str, code: &str) -> Result<Output> {
        let mut e = self.spawn(language, code).await?;
        e.chunks.close();
        e.wait().await
    }

    /// Ends every block, removes the container, joins every task, removes the workspace.
    pub async fn stop(&self) -> Result<()> {
        let live = std::mem::take(&mut *self.live.lock().await);
        let mut joins = Vec::with_capacity(live.len());
        for (shut, join) in live {
            let _ = shut.send(Reason::Shutdown);
            joins.push(join);
        }
        // Removing the container kills every process in it, which ends every exec stream.
        let removed = remove(&self.docker, &self.container).await;
        // Join after the removal, so that no task waits on a process that is still alive.
        futures_util::future::join_all(joins).await;
        let _ = tokio::fs::remove_dir_all(&self.workspace).await;
        removed
    }
}

async fn remove(docker: &Docker, container: &str) -> Result<()> {
    docker
        .remove_container(
            container,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await?;
    Ok(())
}

/// dockexec's kill: its `KILL_SCRIPT` in a second exec, as the block's user (as dockexec's
/// own), bounded like dockexec's housekeeping calls (5 s). No root backstop: the benches'
/// blocks do not fight their kill.
async fn kill(docker: &Docker, container: &str, marker: &str, tag: &str, user: &str) {
    let run = async {
        let exec = docker
            .create_exec(
                container,
                CreateExecOptions {
                    cmd: Some(dockexec::__bench::kill_command(marker, tag)),
                    env: Some(
                        dockexec::__bench::KILL_ENV
                            .iter()
                            .map(|e| e.to_string())
                            .collect(),
                    ),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    user: Some(user.to_string()),
                    ..Default::default()
                },
            )
            .await?
            .id;
        if let StartExecResults::Attached { mut output, .. } =
            docker.start_exec(&exec, None).await?
        {
            while output.next().await.is_some() {}
        }
        Ok::<(), bollard::errors::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), run).await;
}

/// The workspace dockexec makes: a 0700 dir owned by the block's user (the markers live in
/// the container's own `/run/dockexec`, which dockexec's create body mounts).
async fn make_workspace(dir: &Path, user: &str) -> Result<()> {
    let dir = dir.to_path_buf();
    let user = user.to_string();
    tokio::task::spawn_blocking(move || -> Result<()> {
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let mut ids = user.split(':').map(|s| s.parse::<u32>().ok());
        let (uid, gid) = (ids.next().flatten(), ids.next().flatten());
        if uid.is_some() {
            std::os::unix::fs::chown(&dir, uid, gid)?;
        }
        Ok(())
    })
    .await?
}
