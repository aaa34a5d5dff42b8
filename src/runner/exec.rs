//! One `docker exec` per block, under a POSIX `sh` wrapper; killed by a second exec.
//!
//! This strategy keeps its state in marker files in the workspace's state dir, one pair per
//! execution (`<tag>.pid`, `<tag>.cancel`), where `<tag>` is the executor id's prefix and the
//! execution's number. Everything about them (names, scripts, cleanup) lives in this file.

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;

use super::{Control, Launch, Reaped, Runner, Running, Source};
use crate::docker::api::{Client, ExecStream, StreamCutter};
use crate::docker::frames::Demuxer;
use crate::error::Result;
use crate::output::Stream;
use crate::workspace::{WORKSPACE, Workspace};

/// Bound on each housekeeping call (kill, inspect) a running block makes.
const HOUSEKEEPING_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the reap keeps asking for an exec's end after its stream ended.
const EXEC_END_WINDOW: Duration = Duration::from_secs(1);

/// How long a block that died of a SIGKILL we did not send waits to see whether its
/// container is dying too.
const CONTAINER_DEATH_WINDOW: Duration = Duration::from_millis(200);

/// The kill script, run in a second exec: only POSIX `sh` and `kill`, no procps.
///
/// It marks the execution cancelled (so a wrapper that has not started yet exits at once),
/// then kills every process of the block's session. Every exec is a session leader (`sid ==
/// pid`), and children, grandchildren, `&` jobs and processes that trap SIGTERM all stay in
/// its session; the session id survives the leader's death, so orphans reparented to the
/// container's init are found too.
///
/// A process that leaves the session (`setsid`, `start_new_session=True`) is still found by
/// the `DOCKEXEC_EXECUTION=<tag>.` variable every process of the block inherits (read from
/// `/proc/<pid>/environ` with the shell's own `read`, which drops the NUL separators); only a
/// process that both leaves the session and clears its environment escapes.
///
/// Each signal goes first to the block's whole process group at once (the exec made the
/// wrapper its leader, `pgid == sid`; `&` jobs stay in it), so a fork bomb of a thousand
/// processes stops in one call instead of one scan of `/proc` per generation, which a
/// starved CPU made take longer than the kill's time bound. The pid comes from a file the
/// block can rewrite, so it is used only when it names a live process that is not root's
/// (`[ -O ]`: owned by us, root); otherwise, and for what left the group, the scan below does
/// the work alone.
///
/// First every member is frozen with SIGSTOP, pass after pass until a pass finds none still
/// running, so that no shell of the block runs its next command while its child is being
/// killed (`/proc` lists pids in no useful order) and no fork escapes between passes. Only
/// then does everything get SIGKILL, again until a pass finds nothing. Zombies are skipped:
/// init reaps them.
pub(crate) const KILL_SCRIPT: &str = r#"m=$1; t=$2
: > "$m.cancel" 2>/dev/null
s=
[ -r "$m.pid" ] && read -r s < "$m.pid"
g=
case $s in
''|*[!0-9]*) s= ;;
*) if [ "$s" -gt 1 ] && [ -d "/proc/$s" ] && ! [ -O "/proc/$s" ]; then g=$s; else s=; fi ;;
esac
pass() {
  n=0
  for f in /proc/[0-9]*/stat; do
    read -r l < "$f" 2>/dev/null || continue
    set -- ${l##*) }
    case $1 in Z) continue ;; T|t) [ "$sig" = STOP ] && continue ;; esac
    d=${f%/stat}
    if [ "$4" != "$s" ]; then
      hit=
      while read -r e || [ -n "$e" ]; do
        case $e in *"DOCKEXEC_EXECUTION=$t."*) hit=1; break ;; esac
      done < "$d/environ"
      [ -n "$hit" ] || continue
    fi
    kill -"$sig" "${d#/proc/}" 2>/dev/null && n=$((n + 1))
  done
}
for sig in STOP KILL; do
  [ -n "$g" ] && kill -"$sig" -"$g" 2>/dev/null
  i=0
  while [ "$i" -lt 200 ]; do
    i=$((i + 1)); pass 2>/dev/null
    [ "$n" -eq 0 ] && break
  done
done
[ "$n" -eq 0 ]"#;

/// The wrapper every block runs under: records its pid (= its session id) for the kill
/// script, refuses to start once cancelled, then `exec`s the interpreter in its place.
pub(crate) const RUN_SCRIPT: &str = r#"m=$1; l=$2; f=$3
echo $$ > "$m.pid" 2>/dev/null
[ -e "$m.cancel" ] && exit 137
case $l in
python)
  for p in python3 python; do
    command -v "$p" >/dev/null 2>&1 && exec "$p" "$f"
  done
  echo "dockexec: the image has neither python3 nor python" >&2; exit 127 ;;
sh) exec sh "$f" ;;
bash)
  command -v bash >/dev/null 2>&1 || { echo "dockexec: the image has no bash" >&2; exit 127; }
  exec bash "$f" ;;
pwsh)
  command -v pwsh >/dev/null 2>&1 || { echo "dockexec: the image has no pwsh" >&2; exit 127; }
  exec pwsh -NoLogo -NoProfile -NonInteractive -File "$f" ;;
*) echo "dockexec: unknown language $l" >&2; exit 127 ;;
esac"#;

/// One `docker exec` per block.
#[derive(Debug)]
pub(crate) struct ExecRunner {
    /// Creates and starts the blocks' execs.
    client: Client,
    /// Kill, inspect and OOM calls, bounded by [`HOUSEKEEPING_TIMEOUT`]; one per executor, so
    /// its connections are pooled across blocks.
    housekeeping: Client,
    container: String,
    workspace: Arc<Workspace>,
    /// The state dir on the host, where the markers are.
    state_dir: PathBuf,
    /// `<executor id prefix>_`: every marker of this executor starts with it.
    tag_prefix: String,
    user: Option<String>,
    /// The container's cgroup OOM-kill count when last seen (0 in a fresh container), shared
    /// by all of its blocks.
    oom_kills: Arc<AtomicU64>,
}

impl ExecRunner {
    /// A runner for `container`, whose blocks run as `user` (the image's when `None`).
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) when the state dir cannot be created.
    pub(crate) fn new(
        client: &Client,
        container: &str,
        workspace: Arc<Workspace>,
        executor_id: &str,
        user: Option<&str>,
    ) -> Result<ExecRunner> {
        Ok(ExecRunner {
            client: client.clone(),
            housekeeping: client.with_timeout(HOUSEKEEPING_TIMEOUT),
            container: container.to_string(),
            state_dir: workspace.state_dir()?,
            workspace,
            tag_prefix: format!("{}_", &executor_id[..executor_id.len().min(12)]),
            user: user.map(str::to_string),
            oom_kills: Arc::default(),
        })
    }
}

impl Runner for ExecRunner {
    fn launch(&self, l: &Launch<'_>) -> Result<Running> {
        let code_file = self.workspace.write_code_file(l.file, l.code)?;
        let tag = format!("{}{}", self.tag_prefix, l.n);
        let marker = format!("{}/{tag}", Workspace::container_state_dir());
        let mut body = json!({
            "Cmd": ["sh", "-c", RUN_SCRIPT, "dockexec", marker, l.language.name(),
                    Workspace::container_path(l.file)],
            "AttachStdout": true,
            "AttachStderr": true,
            "WorkingDir": WORKSPACE,
            // Inherited by every process of the block, even one that leaves its session. The
            // trailing dot ends the tag, so tag `x_1` never matches `x_12`.
            "Env": [format!("DOCKEXEC_EXECUTION={tag}.")],
        });
        if let Some(user) = &self.user {
            body["User"] = json!(user);
        }
        let control = ExecControl {
            client: self.housekeeping.clone(),
            oom_kills: Arc::clone(&self.oom_kills),
            container: self.container.clone(),
            exec_id: String::new(),
            host_marker: self.state_dir.join(&tag),
            code_file: code_file.clone(),
            marker,
            tag,
            cutter: None,
        };
        let fail = |e| {
            control.release(false);
            e
        };
        let exec_id = self
            .client
            .exec_create(&self.container, &body)
            .map_err(fail)?;
        let (stream, cutter) = self
            .client
            .exec_start(&exec_id, false, None)
            .map_err(fail)?;
        Ok(Running {
            output: Box::new(ExecSource {
                stream,
                demux: Demuxer::new(false),
                // As large as ureq's own input buffer (128 KiB), so one read drains what one
                // socket read got.
                buf: vec![0u8; 128 * 1024],
            }),
            control: Box::new(ExecControl {
                exec_id,
                cutter: Some(cutter),
                ..control
            }),
            code_file,
        })
    }

    fn teardown(&self) {
        if let Ok(entries) = fs::read_dir(&self.state_dir) {
            for entry in entries.flatten() {
                if entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with(&self.tag_prefix)
                {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
    }
}

/// The exec's multiplexed stdout/stderr stream.
struct ExecSource {
    stream: ExecStream,
    demux: Demuxer,
    buf: Vec<u8>,
}

impl Source for ExecSource {
    fn next(&mut self, sink: &mut dyn FnMut(Stream, &[u8])) -> std::result::Result<bool, String> {
        loop {
            match self.stream.read(&mut self.buf) {
                Ok(0) => return self.demux.finish().map(|()| false).map_err(|e| e.0),
                Ok(n) => {
                    return self
                        .demux
                        .feed(&self.buf[..n], |s, b| sink(s, b))
                        .map(|()| true)
                        .map_err(|e| e.0);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

struct ExecControl {
    client: Client,
    oom_kills: Arc<AtomicU64>,
    container: String,
    exec_id: String,
    /// The marker prefix inside the container (`/workspace/.dockexec/<tag>`).
    marker: String,
    /// The same prefix on the host.
    host_marker: PathBuf,
    tag: String,
    code_file: PathBuf,
    cutter: Option<StreamCutter>,
}

impl Control for ExecControl {
    fn kill(&self) {
        let body = json!({
            "Cmd": ["sh", "-c", KILL_SCRIPT, "dockexec-kill", self.marker, self.tag],
            "AttachStdout": true,
            "AttachStderr": true,
            // Root in the container can kill whatever user the block runs as.
            "User": "0",
        });
        let _ = self
            .client
            .exec_collect(&self.container, &body, Some(HOUSEKEEPING_TIMEOUT));
    }

    fn cut(&self) {
        if let Some(c) = &self.cutter {
            c.cut();
        }
    }

    fn reap(&self, killed: bool) -> Reaped {
        let mut r = Reaped::default();
        // The daemon records an exec's end apart from closing its streams, so right after the
        // stream ends, inspect can still say "running": ask again for a moment before calling
        // the block lost.
        let deadline = std::time::Instant::now() + EXEC_END_WINDOW;
        loop {
            match self.client.exec_inspect(&self.exec_id) {
                Ok(info) if !info.running => {
                    r.code = info.exit_code.map(|c| c as i32);
                    // The daemon gives a signal death as 128 + N: the only evidence here.
                    r.signal = crate::output::signal_from_code(r.code);
                    break;
                }
                Ok(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => {
                    r.lost = true;
                    break;
                }
            }
        }
        if r.code == Some(137) && !killed {
            // A SIGKILL we did not send: the OOM killer, someone killing the process, or the
            // container dying (`docker kill`, `docker rm -f`). The exec can see its kill
            // before the daemon records the container's end, so give the container a moment
            // to be seen stopping; a healthy one costs this wait, a dying one returns at once.
            match self
                .client
                .container_stopped_within(&self.container, CONTAINER_DEATH_WINDOW)
            {
                Ok(false) => {}
                Ok(true) | Err(_) => r.lost = true,
            }
            if let Ok(info) = self.client.container_inspect(&self.container) {
                r.oom_killed = info.state.oom_killed;
                r.lost |= !info.state.running || info.state.status == "removing";
            }
            if !r.lost && !r.oom_killed {
                // Docker records OOM kills of a container's PID 1 only; for an exec's process,
                // ask the container's memory cgroup whether its OOM-kill count moved.
                r.oom_killed = self.oom_kills_moved();
            }
        }
        r
    }

    fn release(&self, delete_code_file: bool) {
        for ext in ["pid", "cancel"] {
            let mut p = self.host_marker.clone().into_os_string();
            p.push(".");
            p.push(ext);
            let _ = fs::remove_file(p);
        }
        if delete_code_file {
            let _ = fs::remove_file(&self.code_file);
        }
    }
}

/// Prints the container's cgroup OOM-kill count (v2 `memory.events`, v1 `memory.oom_control`)
/// with the shell's own `read`; 0 when neither can be read.
const OOM_KILLS_SCRIPT: &str = r#"for f in /sys/fs/cgroup/memory.events /sys/fs/cgroup/memory/memory.oom_control; do
  [ -r "$f" ] || continue
  while read -r k v; do [ "$k" = oom_kill ] && { echo "$v"; exit 0; }; done < "$f"
done
echo 0"#;

impl ExecControl {
    /// True when the container's OOM-kill count differs from the last one seen (a restart
    /// resets it, so a lower non-zero count counts too). Blocks killed concurrently in one
    /// container cannot be told apart: each may report the kill.
    fn oom_kills_moved(&self) -> bool {
        let body = json!({
            "Cmd": ["sh", "-c", OOM_KILLS_SCRIPT],
            "AttachStdout": true,
            "AttachStderr": true,
            "User": "0",
        });
        let Ok((Some(0), out, _)) =
            self.client
                .exec_collect(&self.container, &body, Some(HOUSEKEEPING_TIMEOUT))
        else {
            return false;
        };
        let Ok(now) = String::from_utf8_lossy(&out).trim().parse::<u64>() else {
            return false;
        };
        let before = self.oom_kills.swap(now, Ordering::Relaxed);
        now != before && now > 0
    }
}

impl fmt::Debug for ExecControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecControl")
            .field("exec_id", &self.exec_id)
            .finish_non_exhaustive()
    }
}
