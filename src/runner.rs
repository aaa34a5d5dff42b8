//! The seam between the executor and *how* a block runs inside the container: started,
//! streamed, killed and reaped.
//!
//! Today there is one strategy, [`ExecRunner`]: one `docker exec` per block under a POSIX `sh`
//! wrapper, killed by a second exec. A warm in-container process that forks each block itself
//! can join later as another [`Runner`] without touching the public API, the worker's
//! timeout/cancel logic, or the output handling.

use std::fmt;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::code::Language;
use crate::docker::api::{Client, StreamCutter};
use crate::error::Result;

/// Bound on each housekeeping call (kill, inspect) a running block makes.
const HOUSEKEEPING_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a block that died of a SIGKILL we did not send waits to see whether its
/// container is dying too.
const CONTAINER_DEATH_WINDOW: Duration = Duration::from_millis(200);

/// What to start.
#[derive(Debug)]
pub(crate) struct Launch<'a> {
    pub(crate) language: Language,
    /// The code file's path inside the container.
    pub(crate) file: &'a str,
    /// The marker prefix (`…/.dockexec/<tag>`) the wrapper and the kill share.
    pub(crate) marker: &'a str,
    /// The execution's tag, unique in the container; set in its environment.
    pub(crate) tag: &'a str,
    pub(crate) user: Option<&'a str>,
}

/// How the block ended, as far as the strategy can tell.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Reaped {
    pub(crate) code: Option<i32>,
    /// The container vanished or died, or the block's end could not be learnt.
    pub(crate) lost: bool,
    pub(crate) oom_killed: bool,
}

/// A strategy for running blocks in one container.
pub(crate) trait Runner: fmt::Debug + Send + Sync {
    /// Starts a block; its output is flowing when this returns.
    ///
    /// # Errors
    /// The daemon's refusal, mapped by the caller (to `Error::ContainerGone` and co).
    fn launch(&self, launch: &Launch<'_>) -> Result<Running>;
}

/// A started block: its framed output stream and the means to cut, kill and reap it.
pub(crate) struct Running {
    pub(crate) stream: Box<dyn Read + Send>,
    pub(crate) control: Box<dyn Control>,
}

impl fmt::Debug for Running {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Running").finish_non_exhaustive()
    }
}

/// What the worker can do to a running block. Every call is bounded in time.
pub(crate) trait Control: Send + Sync {
    /// Kills the block's whole process tree; failures are swallowed (the cut is the backstop).
    fn kill(&self);
    /// Shuts the output stream's connection down: a read blocked on it returns at once.
    fn cut(&self);
    /// After the stream ended: the exit code, and whether the container is still there.
    /// `killed` says the worker killed the block, so a SIGKILL status is expected.
    fn reap(&self, killed: bool) -> Reaped;
}

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
/// First every member is frozen with SIGSTOP, pass after pass until a pass finds none still
/// running, so that no shell of the block runs its next command while its child is being
/// killed (`/proc` lists pids in no useful order) and no fork escapes between passes. Only
/// then does everything get SIGKILL, again until a pass finds nothing. Zombies are skipped:
/// init reaps them.
pub(crate) const KILL_SCRIPT: &str = r#"m=$1; t=$2
: > "$m.cancel" 2>/dev/null
s=
[ -r "$m.pid" ] && read -r s < "$m.pid"
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
#[derive(Debug, Clone)]
pub(crate) struct ExecRunner {
    pub(crate) client: Client,
    pub(crate) container: String,
    /// The container's cgroup OOM-kill count when last seen (0 in a fresh container).
    pub(crate) oom_kills: Arc<AtomicU64>,
}

impl Runner for ExecRunner {
    fn launch(&self, l: &Launch<'_>) -> Result<Running> {
        let mut body = json!({
            "Cmd": ["sh", "-c", RUN_SCRIPT, "dockexec", l.marker, l.language.name(), l.file],
            "AttachStdout": true,
            "AttachStderr": true,
            "WorkingDir": crate::executor::WORKSPACE,
            // Inherited by every process of the block, even one that leaves its session. The
            // trailing dot ends the tag, so tag `x_1` never matches `x_12`.
            "Env": [format!("DOCKEXEC_EXECUTION={}.", l.tag)],
        });
        if let Some(user) = l.user {
            body["User"] = json!(user);
        }
        let exec_id = self.client.exec_create(&self.container, &body)?;
        let (stream, cutter) = self.client.exec_start(&exec_id, false, None)?;
        Ok(Running {
            stream: Box::new(stream) as Box<dyn Read + Send>,
            control: Box::new(ExecControl {
                client: self.client.with_timeout(HOUSEKEEPING_TIMEOUT),
                oom_kills: Arc::clone(&self.oom_kills),
                container: self.container.clone(),
                exec_id,
                marker: l.marker.to_string(),
                tag: l.tag.to_string(),
                cutter,
            }),
        })
    }
}

struct ExecControl {
    client: Client,
    /// The container's OOM-kill count when last seen, shared by all of its blocks.
    oom_kills: Arc<AtomicU64>,
    container: String,
    exec_id: String,
    marker: String,
    tag: String,
    cutter: StreamCutter,
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
        self.cutter.cut();
    }

    fn reap(&self, killed: bool) -> Reaped {
        let mut r = Reaped::default();
        match self.client.exec_inspect(&self.exec_id) {
            Ok(info) if !info.running => r.code = info.exit_code.map(|c| c as i32),
            _ => r.lost = true,
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
