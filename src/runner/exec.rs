//! One `docker exec` per block, under a POSIX `sh` wrapper; killed by a second exec.
//!
//! # The code file
//!
//! With a host workspace, the host writes each code file into it before the exec, by a walk
//! that follows no link ([`Workspace::write_code_file`]). When the workspace lives in the
//! container (an engine that does not share this host's files), the exec's stdin carries the
//! code instead, and the wrapper, **as the block's user**, writes it before it runs it
//! ([`STDIN_WRITE_SCRIPT`]): no root process writes in the block-writable workspace, and the
//! daemon's archive API (which extracts as root) is not used for code. Its output then comes
//! on the exec's hijacked connection rather than a plain stream; nothing else changes.
//!
//! # A control plane out of the block's reach
//!
//! The block is hostile, runs as a non-root user, and shares the workspace with the host.
//! The kill script runs **as the block's own user** (the same `User` as the block's exec), and
//! no capability is kept for it (issue 21: `DAC_READ_SEARCH` and `SYS_PTRACE`, which root once
//! needed to read another user's `/proc/<pid>/environ`, also open the host's filesystem by
//! handle). A process may read the `environ` of its own uid and signal its own processes, so
//! the kill needs nothing else. The kill trusts nothing the block can write (issue 9, defect 1
//! and its variants: a forged or pre-planted marker, a FIFO in a marker's place, a session id
//! naming another block):
//!
//! * **Which processes are the block's** is learnt from facts only the exec has. Every
//!   process Docker starts for an exec has parent pid 0 in the container (its parent is
//!   outside the container's PID namespace; no process inside can make one), leads its own
//!   session (`sid == pid`), and carries the `DOCKEXEC_EXECUTION=<tag>.` variable Docker set.
//!   The kill script takes as the block's sessions those whose leader shows all three, and
//!   kills them whole, plus every process that still carries the tag (one that left the
//!   session). A block can forge the tag only in its own processes, so the worst it can do is have
//!   another block's cancel kill *its own* processes. Nothing is recorded, so there is
//!   nothing to forge: no pid file.
//! * **The one marker left**, `<tag>.cancel` (made by the kill so that a wrapper the daemon
//!   had not started yet exits at once instead of running unobserved), lives in
//!   [`CONTROL_DIR`], a small tmpfs outside the workspace, mode `1777` (sticky, like `/tmp`)
//!   so that the kill, as the block's user, can make it. Why that is safe: the blocks of one
//!   executor share one user, so they can already signal and read one another; tags carry a
//!   random part, so no block can name a later block's marker ahead (a block can see a tag
//!   only once that block's wrapper runs, and could as well kill it then); the sticky bit
//!   keeps a block of another user (an executor is one user, but the image's processes need
//!   not be) from deleting or renaming markers it does not own; the marker is a directory, so
//!   a FIFO planted in its place cannot hang the kill; and no root process reads anything
//!   there (the keeper and the agent never look; the OOM probe reads cgroup files only). A block that fills it only keeps later markers from being made.
//! * **A block that stops its own kill** (`kill -STOP -1` in a loop: the kill is of its uid)
//!   meets a backstop: when the kill does not finish within [`HOUSEKEEPING_TIMEOUT`] or
//!   reports processes left, the container's keeper (root, reached through the owner's
//!   attach to its stdin, no exec) kills every other process in the container, as
//!   [`Executor::restart`](crate::Executor::restart) does. It cannot be a root exec: a block
//!   that stops an exec's process while runc sets it up (after the switch to the block's
//!   user, before the `execve`) leaves the daemon's exec start hanging with the container's
//!   lock held, and every later exec create on that container waits (seen with Docker
//!   20.10). The keeper's kill ends that half-started process too, which frees the daemon.
//!   The price: every other block of the executor running then is killed too (they end
//!   `killed by signal 9`), and so is any exec then in flight.
//!
//! The other design, a root wrapper that records the session id in a root-only file and then
//! drops to the block's user, needs a privilege-dropping tool (`setpriv`, `su`, `chpst`)
//! whose presence and user-name handling differ between images (busybox builds, Debian,
//! Alpine); Docker's own `User` on the exec does the drop the same way everywhere.
//!
//! What escapes: a process that both leaves the block's session and rewrites its environment
//! or makes itself non-dumpable (`prctl(PR_SET_DUMPABLE, 0)`, which closes its `environ` to
//! its own user; root's kill once read it with `SYS_PTRACE`), or whose session leader did so
//! before it died. It can only be the block's own, and stays bound by the container's
//! limits.
//!
//! A **root** block (opt-in `user("0")`, or no user on an image without `USER`) is outside
//! this model: its kill runs as root (its own uid), with only the kept capabilities, and the
//! block can stop that kill (the keeper's backstop then ends it, unless it killed the
//! keeper, which ends the container), write `CONTROL_DIR`, signal every process, and end
//! its container. See [`ExecutorBuilder::user`](crate::ExecutorBuilder::user).

use std::fmt;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::json;

use super::{Control, Launch, Reaped, Runner, Running, Source};
use crate::docker::api::{Client, StreamCutter};
use crate::docker::frames::Demuxer;
use crate::docker::transport::Duplex;
use crate::error::Result;
use crate::lifetime::Keeper;
use crate::output::Stream;
use crate::workspace::{WORKSPACE, Workspace};

/// Bound on each housekeeping call (kill, inspect) a running block makes.
const HOUSEKEEPING_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the reap keeps asking for an exec's end after its stream ended.
const EXEC_END_WINDOW: Duration = Duration::from_secs(1);

/// How long a block that died of a SIGKILL we did not send waits to see whether its
/// container is dying too.
const CONTAINER_DEATH_WINDOW: Duration = Duration::from_millis(200);

/// How long such a block waits more when the OOM probe could not run in its container: the
/// probe's failure is itself a sign the container may be dying.
const DYING_CONTAINER_WINDOW: Duration = Duration::from_secs(2);

/// Where the exec strategy keeps its one marker inside the container: a root-owned tmpfs,
/// mode `1777`, that the executor mounts in every container (see the module docs).
pub(crate) const CONTROL_DIR: &str = "/run/dockexec";

/// The mount options of [`CONTROL_DIR`]: root's, sticky and writable by all (the kill runs as
/// the block's user), tiny (only empty directories).
pub(crate) const CONTROL_DIR_OPTIONS: &str = "rw,nosuid,nodev,noexec,mode=1777,size=65536";

/// The kill script, run in a second exec **as the block's own user** (the exec's `User` is
/// the block's): only POSIX `sh` and `kill` (and `mkdir`, `rm`, `rmdir`), no procps.
/// Arguments: the marker prefix (`/run/dockexec/<tag>`), the tag, then the tags of finished
/// executions whose `.cancel` markers can go.
///
/// It marks the execution cancelled (so a wrapper that has not started yet exits at once),
/// then kills every process of the block: its sessions, and whatever carries its tag.
///
/// A session is the block's when its leader is an exec's own process (parent pid 0: started
/// from outside the container, which no block can do) carrying `DOCKEXEC_EXECUTION=<tag>.`
/// (read from `/proc/<pid>/environ` with the shell's own `read`, which drops the NUL
/// separators; a process may read that file of its own uid). Children, grandchildren, `&`
/// jobs and processes that trap SIGTERM all stay in that session, and the session id
/// outlives its leader, so orphans reparented to the container's init are found too. A
/// process that left the session (`setsid`, `start_new_session=True`) is found by the tag it
/// inherited. A process whose `environ` cannot be opened is passed over: root's, and
/// another block's exec while runc sets it up (runc makes its process non-dumpable, so
/// unreadable even to the same user, until the `execve`; taking those killed other blocks as
/// they started). A block's own process can hide the same way (`prctl(PR_SET_DUMPABLE, 0)`)
/// as by rewriting its environment: see "What escapes" in the module docs.
///
/// Each process's state, parent, group and session are the fields after the **last** `) `
/// of its *whole* `/proc/<pid>/stat` (issue 21, D5): the command name before them is the
/// process's own to choose, up to 15 bytes with `)`, spaces and newlines, so a first line
/// alone could be a forged `x) Z 0 0 0`, and the process would pass for a zombie.
///
/// Each signal goes to the session's process group at once as soon as its leader is seen
/// (the leader's pid is the group's id, which a session leader cannot change; `&` jobs stay
/// in it), so a fork bomb of a thousand processes stops in one call instead of one scan of
/// `/proc` per generation. PID 1 (the container's init, a session leader with parent 0) is
/// never taken: `kill -STOP -1` would mean every process.
///
/// First every member is frozen with SIGSTOP, pass after pass until a pass finds none still
/// running, so that no shell of the block runs its next command while its child is being
/// killed (`/proc` lists pids in no useful order) and no fork escapes between passes. Only
/// then does everything get SIGKILL, again until a pass finds nothing. Zombies are skipped:
/// init reaps them. Nothing it reads can block: `/proc` files and directory listings. The
/// marker is a directory (`mkdir`), so a FIFO a block plants in its place makes the marker
/// fail, never the kill hang (a `: >` would open the FIFO and wait for a reader).
///
/// Running as the block's user, the kill can be stopped by the block (`kill -STOP -1` in a
/// loop). The host's call is bounded; when it times out or the script reports processes
/// left, the backstop runs (see the module docs).
pub(crate) const KILL_SCRIPT: &str = r#"m=$1; t=$2; shift 2
mkdir "$m.cancel" 2>/dev/null
for o; do
  o=${m%/*}/$o.cancel
  rmdir "$o" 2>/dev/null || rm -f "$o" 2>/dev/null
done
G=' '
pass() {
  n=0
  for f in /proc/[0-9]*/stat; do
    d=${f%/stat}; p=${d#/proc/}
    [ "$p" = 1 ] || [ "$p" = "$$" ] && continue
    l=
    while IFS= read -r x || [ -n "$x" ]; do l="$l $x"; done < "$f" || continue
    [ -n "$l" ] || continue
    set -- ${l##*) }
    case $1 in Z) continue ;; T|t) [ "$sig" = STOP ] && continue ;; esac
    case $G in
    *" $4 "*) ;;
    *)
      hit=
      while read -r e || [ -n "$e" ]; do
        case $e in *"DOCKEXEC_EXECUTION=$t."*) hit=1; break ;; esac
      done < "$d/environ"
      [ -n "$hit" ] || continue
      if [ "$2" = 0 ] && [ "$p" = "$4" ]; then
        G="$G$p "
        kill -"$sig" -"$p" 2>/dev/null
      fi ;;
    esac
    kill -"$sig" "$p" 2>/dev/null && n=$((n + 1))
  done
}
for sig in STOP KILL; do
  for g in $G; do kill -"$sig" -"$g" 2>/dev/null; done
  i=0
  while [ "$i" -lt 200 ]; do
    i=$((i + 1)); pass 2>/dev/null
    [ "$n" -eq 0 ] && break
  done
done
[ "$n" -eq 0 ]"#;

/// The wrapper every block runs under (as the block's user): refuses to start once
/// cancelled, raises its `oom_score_adj` to 1000 (any user may raise its own) so that the OOM
/// killer takes blocks before the keeper, then `exec`s the interpreter in its place. Arguments: the `.cancel` marker, the
/// language, the code file.
pub(crate) const RUN_SCRIPT: &str = r#"c=$1; l=$2; f=$3
[ -e "$c" ] && exit 137
{ echo 1000 > /proc/self/oom_score_adj; } 2>/dev/null
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

/// Put before [`RUN_SCRIPT`] when the workspace lives in the container (the engine does not
/// see this host's files): the code arrives on the exec's stdin, and this part, run **as the
/// block's user** like the rest, writes it to the code file before the interpreter starts.
/// No root process writes in the block-writable workspace (see "Root in the container is
/// control plane" in the README): a link or directory a block planted there can lead the
/// write only where the block could write itself. Arguments as [`RUN_SCRIPT`]'s, then the
/// code's length in bytes.
///
/// It reads exactly that many bytes (`head -c`), into a fresh name in the file's directory,
/// checks the count (a connection cut short, or a full workspace, gives a short file, never
/// run), and renames it into place, which replaces a link at the file's name rather than
/// writing through it. Every path reads all the bytes, the failures too: unread, they would
/// stop the daemon's stdin copy, and with it the end of the exec's stream. A
/// directory on the way that resolves outside `/workspace` (a link a block planted; `cd -P`
/// sets `PWD` to the physical path) is refused, as the host-side writer refuses it. Any
/// failure is the block's: exit code 126 with a `dockexec:` line on stderr. Then the shell's
/// stdin becomes `/dev/null`, so the block reads EOF there, as an exec without stdin gives
/// it.
pub(crate) const STDIN_WRITE_SCRIPT: &str = r#"n=$4
drain() { head -c "$n" > /dev/null 2>&1 || dd bs=1 count="$n" > /dev/null 2>&1; }
[ -e "$1" ] && { drain; exit 137; }
(
  f=$3; d=${f%/*}; b=${f##*/}
  w() { echo "dockexec: cannot write the code file $f: $1" >&2; exit 1; }
  for c in head cat wc mv mkdir; do
    command -v "$c" >/dev/null 2>&1 || { drain; w "the image has no $c"; }
  done
  { [ -d "$d" ] || mkdir -p -- "$d" 2>/dev/null; } && cd -P -- "$d" 2>/dev/null ||
    { drain; w "cannot make or enter its dir"; }
  case $PWD/ in /workspace/*) ;; *) drain; w "a dir on its way is a link out of /workspace" ;; esac
  [ -d "$b" ] && [ ! -L "$b" ] && { drain; w "a directory is in its place"; }
  t=".$b.dockexec-$$"
  { [ -e "$t" ] || [ -L "$t" ]; } && rm -rf -- "$t" 2>/dev/null
  : 2>/dev/null > "$t" || { drain; w "cannot create a file in its dir"; }
  head -c "$n" | { cat > "$t"; cat > /dev/null; }
  [ "$(($(wc -c < "$t")))" -eq "$n" ] && mv -f -- "$t" "$b" && exit 0
  rm -f -- "$t" 2>/dev/null
  w "it did not arrive whole, or the workspace is full"
) || exit 126
exec < /dev/null
"#;

/// The command of a block's exec when its code arrives on stdin (see [`STDIN_WRITE_SCRIPT`]):
/// as [`run_command`], with the code's length in bytes.
pub(crate) fn stdin_run_command(
    marker: &str,
    language: &str,
    path: &str,
    len: usize,
) -> Vec<String> {
    let script = format!("{STDIN_WRITE_SCRIPT}{RUN_SCRIPT}");
    let mut cmd = run_command(marker, language, path);
    cmd[2] = script;
    cmd.push(len.to_string());
    cmd
}

/// The marker prefix of the execution tagged `tag`: `<CONTROL_DIR>/<tag>`.
pub(crate) fn marker_prefix(tag: &str) -> String {
    format!("{CONTROL_DIR}/{tag}")
}

/// The command of a block's exec (run as the block's user, with `DOCKEXEC_EXECUTION=<tag>.`
/// in its environment): [`RUN_SCRIPT`] for the code file at `path` in the container. The one
/// source of it: the runner, the benches and the async rival all call this.
pub(crate) fn run_command(marker: &str, language: &str, path: &str) -> Vec<String> {
    ["sh", "-c", RUN_SCRIPT, "dockexec"]
        .into_iter()
        .map(str::to_string)
        .chain([format!("{marker}.cancel"), language.into(), path.into()])
        .collect()
}

/// The command of a block's kill (run as the block's user, with [`super::ROOT_EXEC_ENV`]):
/// [`KILL_SCRIPT`] for the execution `tag` whose markers start with `marker`, removing the
/// markers of the `spent` tags on the way. The one source of it, as [`run_command`].
pub(crate) fn kill_command(marker: &str, tag: &str, spent: &[String]) -> Vec<String> {
    ["/bin/sh", "-c", KILL_SCRIPT, "dockexec-kill", marker, tag]
        .into_iter()
        .map(str::to_string)
        .chain(spent.iter().cloned())
        .collect()
}

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
    /// `<executor id prefix>_`: every tag of this executor starts with it.
    tag_prefix: String,
    user: Option<String>,
    /// The container's cgroup OOM-kill count when last seen (0 in a fresh container), shared
    /// by all of its blocks.
    oom_kills: Arc<AtomicU64>,
    /// The container's keeper: the kill's backstop.
    keeper: Arc<Keeper>,
    /// Tags of killed executions known to have ended, whose `.cancel` markers the next kill
    /// removes (so that cancelled blocks leave no files behind, without an exec of their own).
    spent: Arc<Mutex<Vec<String>>>,
}

impl ExecRunner {
    /// A runner for `container`, whose blocks run as `user` (the image's when `None`).
    ///
    /// # Errors
    /// None today: it keeps nothing on the host.
    pub(crate) fn new(
        client: &Client,
        container: &str,
        workspace: Arc<Workspace>,
        executor_id: &str,
        user: Option<&str>,
        keeper: Arc<Keeper>,
    ) -> Result<ExecRunner> {
        Ok(ExecRunner {
            client: client.clone(),
            housekeeping: client.with_timeout(HOUSEKEEPING_TIMEOUT),
            container: container.to_string(),
            workspace,
            tag_prefix: format!("{}_", &executor_id[..executor_id.len().min(12)]),
            user: user.map(str::to_string),
            keeper,
            oom_kills: Arc::default(),
            spent: Arc::default(),
        })
    }
}

impl ExecRunner {
    /// Mounts [`CONTROL_DIR`], the marker dir, in the container to be.
    pub(crate) fn prepare(spec: &mut crate::spec::ContainerSpec) {
        spec.machinery_tmpfs
            .insert(CONTROL_DIR.into(), CONTROL_DIR_OPTIONS.into());
    }
}

impl Runner for ExecRunner {
    fn launch(&self, l: &Launch<'_>) -> Result<Running> {
        // With no host side, the code goes over the exec's stdin (see `STDIN_WRITE_SCRIPT`).
        let on_host = self.workspace.path().is_some();
        let code_file = match on_host {
            true => self.workspace.write_code_file(l.file, l.code)?,
            false => self.workspace.shown_path(l.file),
        };
        // The random part: no block can name a later block's tag ahead of time.
        let tag = format!(
            "{}{}_{}",
            self.tag_prefix,
            l.n,
            &crate::host::random_id()[..8]
        );
        let marker = marker_prefix(&tag);
        let path = Workspace::container_path(l.file);
        let cmd = match on_host {
            true => run_command(&marker, l.language.name(), &path),
            false => stdin_run_command(&marker, l.language.name(), &path, l.code.len()),
        };
        let mut body = json!({
            "Cmd": cmd,
            "AttachStdin": !on_host,
            "AttachStdout": true,
            "AttachStderr": true,
            "WorkingDir": WORKSPACE,
            // Inherited by every process of the block, even one that leaves its session. The
            // trailing dot ends the tag, so tag `x_1_r` never matches `x_1_rr`.
            "Env": [format!("DOCKEXEC_EXECUTION={tag}.")],
        });
        if let Some(user) = &self.user {
            body["User"] = json!(user);
        }
        let control = ExecControl {
            client: self.housekeeping.clone(),
            user: self.user.clone(),
            keeper: Arc::clone(&self.keeper),
            oom_kills: Arc::clone(&self.oom_kills),
            container: self.container.clone(),
            exec_id: String::new(),
            spent: Arc::clone(&self.spent),
            killed: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            workspace: Arc::clone(&self.workspace),
            code_rel: l.file.to_path_buf(),
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
        let (stream, cutter): (Box<dyn Read + Send>, Cut) = if on_host {
            let (stream, cutter) = self
                .client
                .exec_start(&exec_id, false, None)
                .map_err(fail)?;
            (Box::new(stream), Cut::Http(cutter))
        } else {
            self.send_code(&exec_id, l.code).map_err(fail)?
        };
        Ok(Running {
            output: Box::new(ExecSource {
                stream,
                demux: Demuxer::new(false),
                // As large as the transport's input buffer (32 KiB, see `transport::agent`), so
                // one read drains what one socket read got; one per running block, so small.
                buf: vec![0u8; 32 * 1024],
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
        // Nothing on the host: the markers live in the container's tmpfs and go with it.
    }
}

impl ExecRunner {
    /// Starts the exec `exec_id` with its stdio hijacked, and writes `code` to its stdin (the
    /// exec's [`STDIN_WRITE_SCRIPT`] reads exactly that many bytes); returns its output and
    /// the means to cut it.
    ///
    /// The write is bounded by the client's `api_timeout`. When it fails (the script already
    /// ended, refusing the file, or the connection broke), the stdin is closed and the output
    /// is handed over all the same: the script never runs code that did not arrive whole, and
    /// says why on stderr, which the caller then sees in the block's output.
    fn send_code(&self, exec_id: &str, code: &str) -> Result<(Box<dyn Read + Send>, Cut)> {
        let limit = self.client.api_timeout();
        let hijacked = self.client.exec_attach(exec_id, limit)?;
        let stream = hijacked.stream;
        let cut = stream
            .try_clone()
            .map_err(|e| crate::error::Error::Transport {
                what: "the exec's hijacked stream".into(),
                source: e,
            })?;
        let sent = stream
            .set_write_timeout(Some(limit))
            .and_then(|()| (&stream).write_all(code.as_bytes()))
            .and_then(|()| stream.set_write_timeout(None));
        if sent.is_err() {
            let _ = stream.shutdown(Shutdown::Write);
        }
        let output = io::Cursor::new(hijacked.leftover).chain(stream);
        Ok((Box::new(output), Cut::Socket(cut)))
    }
}

/// How a block's output stream is cut.
enum Cut {
    /// The plain exec stream: its connection's agent.
    Http(StreamCutter),
    /// The hijacked one (code on stdin): the socket, shut down both ways.
    Socket(Duplex),
}

/// The exec's multiplexed stdout/stderr stream.
struct ExecSource {
    stream: Box<dyn Read + Send>,
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
    /// The block's user, whom the kill runs as too (`None`: the container's, root).
    user: Option<String>,
    /// The container's keeper: the kill's backstop.
    keeper: Arc<Keeper>,
    oom_kills: Arc<AtomicU64>,
    container: String,
    exec_id: String,
    /// The marker prefix inside the container (`/run/dockexec/<tag>`).
    marker: String,
    tag: String,
    /// The runner's list of tags whose markers can go.
    spent: Arc<Mutex<Vec<String>>>,
    /// `kill` ran, so a `.cancel` marker may exist.
    killed: AtomicBool,
    /// The exec was seen ended, so no wrapper of it can still start and test the marker.
    ended: AtomicBool,
    /// Where the code file's removal starts its link-free walk from.
    workspace: Arc<Workspace>,
    /// The code file, relative to the workspace.
    code_rel: PathBuf,
    cutter: Option<Cut>,
}

impl Control for ExecControl {
    fn kill(&self) {
        self.killed.store(true, Ordering::Relaxed);
        // Taken, not copied: each spent marker is removed by one kill (a failed kill leaves
        // a few empty files in a tmpfs, which is all they cost).
        let spent = std::mem::take(&mut *self.spent.lock());
        let mut body = json!({
            "Cmd": kill_command(&self.marker, &self.tag, &spent),
            "Env": super::ROOT_EXEC_ENV,
            "AttachStdout": true,
            "AttachStderr": true,
        });
        // As the block's own user, exactly as the block's exec: it may read its processes'
        // `environ` and signal them, with no capability (see the module docs).
        if let Some(user) = &self.user {
            body["User"] = json!(user);
        }
        let done = self
            .client
            .exec_collect(&self.container, &body, Some(HOUSEKEEPING_TIMEOUT));
        // A code not yet recorded (`None`) after the stream ended is a finished script; only
        // a timed-out call (a block that stopped its kill) or processes left call for the
        // backstop, which also ends the executor's other blocks. A refusal (a paused or
        // vanished container) is not one: the keeper could not answer either.
        if matches!(
            done,
            Err(crate::error::Error::Timeout { .. }) | Ok((Some(1..), _, _))
        ) {
            self.backstop();
        }
    }

    fn cut(&self) {
        match &self.cutter {
            Some(Cut::Http(c)) => c.cut(),
            Some(Cut::Socket(s)) => {
                let _ = s.shutdown(Shutdown::Both);
            }
            None => {}
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
                    self.ended.store(true, Ordering::Relaxed);
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
                // ask the container's memory cgroup whether its OOM-kill count moved. When
                // that probe cannot run (a container at its pids or memory limit), say so
                // rather than pass the kill off as a plain signal (issue 21, item 5).
                match self.oom_kills_moved() {
                    Some(moved) => r.oom_killed = moved,
                    // The probe is an exec, and an exec into a dying container fails: give
                    // the container longer to be seen stopping (Podman, loaded, took over
                    // 200 ms to record a root block's `kill -9 -1`) before calling the kill
                    // unexplained. A live container at its limits still pays this wait.
                    None => match self
                        .client
                        .container_stopped_within(&self.container, DYING_CONTAINER_WINDOW)
                    {
                        Ok(false) => r.kill_unexplained = true,
                        Ok(true) | Err(_) => r.lost = true,
                    },
                }
            }
        }
        r
    }

    fn release(&self, delete_code_file: bool) {
        // The worker calls this after its scope joined the kill thread and after the reap,
        // on its own thread: both flags are settled, Relaxed suffices.
        if self.killed.load(Ordering::Relaxed) && self.ended.load(Ordering::Relaxed) {
            // Short and never held across a call: the next kill takes the whole list.
            self.spent.lock().push(self.tag.clone());
        }
        if delete_code_file && self.workspace.path().is_some() {
            // Never by host path: the container may have made a directory on the way a link.
            self.workspace.remove_code_file(&self.code_rel);
        } else if delete_code_file {
            self.remove_in_container();
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
    /// Removes the code file when the workspace lives in the container: one exec **as the
    /// block's user** (`rm` removes a link in the file's place, never its target), so no root
    /// process touches the block-writable workspace. Best effort, bounded.
    fn remove_in_container(&self) {
        let mut body = json!({
            "Cmd": ["sh", "-c", r#"rm -f -- "$1""#, "dockexec-rm",
                    Workspace::container_path(&self.code_rel)],
            "AttachStdout": true,
            "AttachStderr": true,
        });
        if let Some(user) = &self.user {
            body["User"] = json!(user);
        }
        let _ = self
            .client
            .exec_collect(&self.container, &body, Some(HOUSEKEEPING_TIMEOUT));
    }

    /// The backstop: the keeper kills every other process in the container (see the module
    /// docs), and keeps `/tmp` (a cancel is no user's restart). Bounded by the keeper's own
    /// answer timeout.
    fn backstop(&self) {
        let _ = self.keeper.kill_all();
    }

    /// True when the container's OOM-kill count differs from the last one seen (a restart
    /// resets it, so a lower non-zero count counts too); `None` when the probe could not run
    /// or said nothing readable. Blocks killed concurrently in one container cannot be told
    /// apart: each may report the kill.
    fn oom_kills_moved(&self) -> Option<bool> {
        let body = json!({
            "Cmd": ["/bin/sh", "-c", OOM_KILLS_SCRIPT],
            "Env": super::ROOT_EXEC_ENV,
            "AttachStdout": true,
            "AttachStderr": true,
            "User": "0",
        });
        let Ok((Some(0), out, _)) =
            self.client
                .exec_collect(&self.container, &body, Some(HOUSEKEEPING_TIMEOUT))
        else {
            return None;
        };
        let now = String::from_utf8_lossy(&out).trim().parse::<u64>().ok()?;
        let before = self.oom_kills.swap(now, Ordering::Relaxed);
        Some(now != before && now > 0)
    }
}

impl fmt::Debug for ExecControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecControl")
            .field("exec_id", &self.exec_id)
            .finish_non_exhaustive()
    }
}
