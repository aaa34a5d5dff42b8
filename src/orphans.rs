//! A container's tie to its owner: the dead-man's switch that ends it when the owner goes,
//! the owner labels (information, and a reason to spare a stopped container whose owner is
//! seen alive), and the sweep of containers no longer running.
//!
//! # The dead-man's switch
//!
//! The container's main process is the *keeper*, a root `sh` loop that reads its stdin
//! (`OpenStdin` + `StdinOnce`). Before the container starts, the owner attaches to that stdin
//! on a connection of its own ([`Keeper`]) and holds it for the executor's life. When the
//! owner goes, however it goes (SIGKILL, crash, a lost connection to a remote daemon), the
//! kernel closes the connection, the daemon closes the keeper's stdin (`StdinOnce`), the
//! keeper reads EOF and exits, docker-init (PID 1) exits with it, which kills everything
//! left in the container, and `AutoRemove` removes the container: in well under a second,
//! with no sweep by anyone.
//!
//! Why this design: the daemon itself notices the owner's death, through a connection it
//! holds, so it works for an owner in any PID namespace, on any host, behind any socket; it
//! needs nothing but `sh` in the image (busybox included) and the same for both strategies.
//! Liveness is never guessed from `/proc`, which shows one PID namespace only (issue 9,
//! defect 2). The alternatives lose somewhere: a heartbeat needs a timer in the container and
//! a write path to it; the agent as the main process needs Python, so not busybox.
//!
//! A non-root block cannot end the keeper (it runs as root) nor reach its stdin. A root block
//! can kill it, which ends the container; the executor then reports
//! [`ContainerGone`](crate::Error::ContainerGone).
//!
//! The keeper also serves [`Executor::restart`](crate::Executor::restart): a container
//! restart would clear the stdin it waits on and race `AutoRemove`, so instead the owner
//! writes `restart N` and the keeper kills every other process in the container
//! (`kill -9 -1`, which spares PID 1 and the caller), empties `/tmp`, and answers
//! `restarted N`. `kill N` does the kill alone, for the agent runner when its agent is lost
//! (see [`KEEPER_SCRIPT`]).

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::docker::api::{self, Client};
use crate::docker::frames::Demuxer;
use crate::error::{Error, Result};
use crate::labels::{
    EXECUTOR as LABEL_EXECUTOR, OWNER_BOOT as LABEL_OWNER_BOOT, OWNER_HOST as LABEL_OWNER_HOST,
    OWNER_PID as LABEL_OWNER_PID, OWNER_START as LABEL_OWNER_START,
    TEMP_WORKSPACE as LABEL_TEMP_WORKSPACE,
};
use crate::output::Stream;
use crate::workspace;

/// The keeper: the container's main process (see the module docs). POSIX `sh` builtins only,
/// so that it runs in any image, but for `rm`; `kill` must be the builtin, which spares the
/// shell itself.
///
/// `restart N` kills every other process, then empties `/tmp` as far as root can (the
/// top-level entries, since root owns `/tmp`, and whatever root owns: without
/// `DAC_OVERRIDE` it cannot enter a block user's directories, which
/// [`Executor::restart`](crate::Executor::restart) empties as that user next). It runs
/// after the kill, so no block can race it; `rm -rf` removes a symlink, never its target
/// (a block's link to `/workspace` costs the host nothing). The three globs are
/// POSIX `sh` for every name but `.` and `..`; one that matches nothing stays literal and
/// `rm -f` ignores it. The answer ends in ` left` when something stayed in `/tmp`. `kill N`
/// only kills: the agent's loss is no user's restart, and keeps
/// `/tmp`.
pub(crate) const KEEPER_SCRIPT: &str = r#"while read -r line; do
  case "$line" in
    "restart "*) kill -9 -1 2>/dev/null; rm -rf /tmp/* /tmp/.[!.]* /tmp/..?* 2>/dev/null
      left=; for f in /tmp/* /tmp/.[!.]* /tmp/..?*; do [ -e "$f" ] || [ -L "$f" ] && left=" left"; done
      echo "dockexec-keeper: restarted ${line#restart }$left" ;;
    "kill "*) kill -9 -1 2>/dev/null; echo "dockexec-keeper: killed ${line#kill }" ;;
  esac
done"#;

/// Bound on the attach's request and response head.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the keeper has to answer a restart: it only has to call `kill` (and `rm` on a
/// tmpfs).
const RESTART_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a container may stay created and never started before [`gc`] takes it for an
/// orphan: a live owner starts its container moments after creating it.
pub const GC_CREATED_GRACE: Duration = Duration::from_secs(15);

/// The owner's end of the dead-man's switch: an attach to the keeper's stdin and output,
/// held until the executor stops. Dropping it (or the process dying) ends the container.
#[derive(Debug)]
pub(crate) struct Keeper {
    /// One restart at a time: each writes its request and reads until its own answer.
    conn: Mutex<KeeperConn>,
    /// A handle on the same stream, so that `close` never waits for a command in flight
    /// (which holds `conn` for up to `RESTART_TIMEOUT`). Locked only to shut down or replace.
    closer: Mutex<Option<UnixStream>>,
    /// Set by `close`: later commands fail at once.
    closed: std::sync::atomic::AtomicBool,
}

#[derive(Debug)]
struct KeeperConn {
    stream: UnixStream,
    demux: Demuxer,
    /// Output bytes read but not yet looked at (the upgrade's leftover first).
    pending: Vec<u8>,
    /// The keeper's stdout, since the last answer.
    said: Vec<u8>,
    next: u64,
}

impl KeeperConn {
    fn attach(client: &Client, container: &str) -> Result<KeeperConn> {
        let h = client.container_attach(container, ATTACH_TIMEOUT)?;
        Ok(KeeperConn {
            stream: h.stream,
            demux: Demuxer::new(false),
            pending: h.leftover,
            said: Vec::new(),
            next: 0,
        })
    }
}

fn keeper_io(what: &str, source: io::Error) -> Error {
    Error::Transport {
        what: format!("the container's keeper connection ({what})"),
        source,
    }
}

impl Keeper {
    /// Attaches to `container`'s keeper. Call it after the create and before the start, so
    /// that no moment exists in which the container runs without its switch.
    ///
    /// # Errors
    /// The daemon's refusal, or [`Error::Connect`] / [`Error::Transport`].
    pub(crate) fn attach(client: &Client, container: &str) -> Result<Keeper> {
        let conn = KeeperConn::attach(client, container)?;
        Ok(Keeper {
            closer: Mutex::new(conn.stream.try_clone().ok()),
            conn: Mutex::new(conn),
            closed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Replaces the connection with a fresh attach (before the container is started again:
    /// an exited container's old attach is over).
    pub(crate) fn reattach(&self, client: &Client, container: &str) -> Result<()> {
        let fresh = KeeperConn::attach(client, container)?;
        *self.closer.lock() = fresh.stream.try_clone().ok();
        let old = std::mem::replace(&mut *self.conn.lock(), fresh);
        let _ = old.stream.shutdown(Shutdown::Both);
        Ok(())
    }

    /// Has the keeper kill every other process in the container, and waits for it to say it
    /// did: every block, the agent, any exec.
    ///
    /// # Errors
    /// [`Error::Transport`] when the connection is broken or closes (the container is not
    /// running); [`Error::Timeout`] when the keeper does not answer in time.
    ///
    /// Returns whether something stayed in `/tmp` that root could not remove.
    pub(crate) fn restart(&self) -> Result<bool> {
        self.command("restart", "restarted")
            .map(|rest| rest == " left")
    }

    /// Has the keeper kill every other process in the container, as [`restart`](Self::restart)
    /// does, but keep `/tmp`: for the agent's loss, which is no user's restart.
    ///
    /// # Errors
    /// As [`restart`](Self::restart).
    pub(crate) fn kill_all(&self) -> Result<()> {
        self.command("kill", "killed").map(drop)
    }

    /// Sends `<verb> N` and waits for the line `dockexec-keeper: <done> N…`; returns the
    /// rest of that line.
    fn command(&self, verb: &str, done: &str) -> Result<String> {
        // Held across the write and the read: a concurrent command must not take this one's
        // answer, nor interleave its request.
        let mut c = self.conn.lock();
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(keeper_io(
                "writing",
                io::Error::new(io::ErrorKind::NotConnected, "the executor is stopping"),
            ));
        }
        c.next += 1;
        let n = c.next;
        c.said.clear();
        let request = format!("{verb} {n}\n");
        c.stream
            .set_write_timeout(Some(RESTART_TIMEOUT))
            .map_err(|e| keeper_io("setting a timeout", e))?;
        c.stream
            .write_all(request.as_bytes())
            .map_err(|e| keeper_io("writing", e))?;
        // Followed by a space or the end of the line: `restarted 1` is no answer to 11.
        let answer = format!("dockexec-keeper: {done} {n}");
        let deadline = Instant::now() + RESTART_TIMEOUT;
        let mut buf = [0u8; 4096];
        loop {
            let KeeperConn {
                demux,
                pending,
                said,
                ..
            } = &mut *c;
            demux
                .feed(pending, |s, b| {
                    if s == Stream::Stdout {
                        said.extend_from_slice(b);
                    }
                })
                .map_err(|e| Error::Protocol {
                    message: format!("malformed stream from the container's keeper: {}", e.0),
                    source: None,
                })?;
            pending.clear();
            if let Some(rest) = answer_rest(said, answer.as_bytes()) {
                return Ok(rest);
            }
            // Only the answers are of interest: keep the tail an answer may straddle.
            if said.len() > 4096 {
                let keep = said.len() - 256;
                said.drain(..keep);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout {
                    what: format!("the container's keeper answering a {verb}"),
                });
            }
            c.stream
                .set_read_timeout(Some(left))
                .map_err(|e| keeper_io("setting a timeout", e))?;
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    return Err(keeper_io(
                        "reading",
                        io::Error::new(io::ErrorKind::UnexpectedEof, "the keeper has exited"),
                    ));
                }
                Ok(n) => c.pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(keeper_io("reading", e)),
            }
        }
    }

    /// Closes the connection: the keeper reads EOF and the container ends.
    pub(crate) fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        match &*self.closer.lock() {
            Some(s) => {
                let _ = s.shutdown(Shutdown::Both);
            }
            // No clone could be made: the command in flight ends within its timeout.
            None => {
                let _ = self.conn.lock().stream.shutdown(Shutdown::Both);
            }
        }
    }
}

/// The rest of the first complete line in `said` that is `answer` followed by a space or
/// the line's end.
fn answer_rest(said: &[u8], answer: &[u8]) -> Option<String> {
    said.split(|&b| b == b'\n')
        .rev()
        .skip(1) // the last piece is not a complete line yet
        .find_map(|line| {
            let rest = line.strip_prefix(answer)?;
            (rest.is_empty() || rest.starts_with(b" "))
                .then(|| String::from_utf8_lossy(rest).into_owned())
        })
}

impl crate::runner::agent::KillAll for Keeper {
    fn kill_all(&self) -> Result<()> {
        Keeper::kill_all(self)
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// A process's start time, field 22 of `/proc/<pid>/stat` (after the parenthesised name).
fn start_time(pid: &str) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(19).map(str::to_string)
}

fn hostname() -> String {
    read_trimmed("/proc/sys/kernel/hostname").unwrap_or_else(|| "unknown".into())
}

fn boot_id() -> String {
    read_trimmed("/proc/sys/kernel/random/boot_id").unwrap_or_else(|| "unknown".into())
}

/// The labels that name this process as a container's owner.
pub(crate) fn owner_labels() -> Vec<(String, String)> {
    let pid = std::process::id().to_string();
    let start = start_time(&pid).unwrap_or_default();
    vec![
        (LABEL_OWNER_PID.into(), pid),
        (LABEL_OWNER_START.into(), start),
        (LABEL_OWNER_HOST.into(), hostname()),
        (LABEL_OWNER_BOOT.into(), boot_id()),
    ]
}

/// A random 16-hex-digit id (from the kernel's random source, else time and pid).
pub(crate) fn random_id() -> String {
    let mut bytes = [0u8; 8];
    let from_kernel = fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok();
    if !from_kernel {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        bytes = h.finish().to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a labelled container is an orphan: exited or dead, or created and never started
/// for longer than [`GC_CREATED_GRACE`]. A running (or paused, restarting) container has a live
/// owner, or its keeper would have ended it.
fn is_orphan(state: &str, created: i64, now: i64) -> bool {
    match state {
        "exited" | "dead" => true,
        "created" => now.saturating_sub(created) >= GC_CREATED_GRACE.as_secs() as i64,
        _ => false,
    }
}

/// Whether the owner labels name a process this sweeper can see alive: same boot, and a
/// process with that pid and start time. Only ever a reason to *keep* a container (a live
/// owner with `auto_remove(false)` may restart one killed from outside), never to remove
/// one: an owner in another PID namespace or on another host is simply not seen (issue 9
/// defect 2), and its stopped container goes as before.
fn owner_seen_alive(labels: &std::collections::HashMap<String, String>) -> bool {
    let get = |k: &str| labels.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let (Some(pid), Some(start), Some(boot)) = (
        get(LABEL_OWNER_PID),
        get(LABEL_OWNER_START),
        get(LABEL_OWNER_BOOT),
    ) else {
        return false;
    };
    pid.bytes().all(|b| b.is_ascii_digit())
        && boot == boot_id()
        && start_time(pid).as_deref() == Some(start)
}

/// Removes labelled containers that are no longer running (all but those being removed
/// already, with `force`) and carry every one of `labels`; returns their ids.
pub(crate) fn sweep(client: &Client, force: bool, labels: &[String]) -> Result<Vec<String>> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let mut filter: Vec<&str> = vec![LABEL_EXECUTOR];
    filter.extend(labels.iter().map(String::as_str));
    let mut removed = Vec::new();
    for c in client.container_list_all(&filter)? {
        let take = (is_orphan(&c.state, c.created, now) && !owner_seen_alive(&c.labels))
            || (force && c.state != "removing");
        if take {
            client.container_remove(&c.id, Duration::from_secs(10))?;
            removed.push(c.id);
        }
    }
    sweep_temp_dirs(client)?;
    Ok(removed)
}

/// Removes the temporary work dirs whose owners are gone (see
/// [`workspace::sweep_temp_dirs`]), except those that a container still there names: a kept
/// container's dir goes with it, at the sweep that takes it, and an owner of a dockexec
/// version without the lock is spared while its container exists.
fn sweep_temp_dirs(client: &Client) -> Result<()> {
    let keep: HashSet<PathBuf> = client
        .container_list_all(&[LABEL_TEMP_WORKSPACE])?
        .into_iter()
        .filter_map(|c| c.labels.get(LABEL_TEMP_WORKSPACE).map(PathBuf::from))
        .collect();
    workspace::sweep_temp_dirs(&keep);
    Ok(())
}

/// Removes dockexec's containers that are no longer running, and their temporary work dirs;
/// returns their ids. The same as [`gc_with`] with the default [`GcOptions`] but `socket`.
///
/// A live executor's container always runs: its keeper holds the owner's connection and
/// ends the container (which the daemon then removes, see
/// [`auto_remove`](crate::ExecutorBuilder::auto_remove)) as soon as the owner goes, however
/// it goes. So the containers left to collect are those that ended and were kept
/// (`auto_remove(false)`, or a daemon that failed to remove them), and those created but never
/// started for more than [`GC_CREATED_GRACE`] (an owner killed inside `start()`). A running
/// container is never touched, whoever and wherever its owner is: no process table is
/// consulted, so an owner in another PID namespace or on another host is safe. The owner
/// labels ([`labels`](crate::labels)) serve only to *spare* a stopped container whose owner
/// this host can see alive (same boot, pid and start time): such an owner may still
/// [`restart`](crate::Executor::restart) it. [`GcOptions::force`] also removes running ones,
/// and spared ones.
///
/// The temporary work dirs (those dockexec creates when no
/// [`work_dir`](crate::ExecutorBuilder::work_dir) is given) outlive a SIGKILLed owner, since the
/// container that removed itself cannot say whose they were. Each owner holds an exclusive
/// `flock` on its temporary dir for its executor's whole life, and the kernel drops it when
/// the owner dies, however it dies; so gc removes a `dockexec-<16 hex digits>` directory
/// directly under the host's temp dir (`TMPDIR`, else `/tmp`), a real directory owned by the
/// caller (any owner for root), only when it can take that lock without waiting, and only
/// when no container that still exists names it
/// ([`TEMP_WORKSPACE`](crate::labels::TEMP_WORKSPACE)). Like the switch, this needs no process
/// table and holds across PID namespaces (on one host, or one shared temp dir). A live
/// executor's dir, in this process or another, is never removed; nor is one being created
/// (made as `dockexec-<id>.new` and locked before it takes its name; an unlocked `.new` one is
/// removed after 30 s). Nothing a block does can keep a dead owner's dir: it could take the
/// lock through `/workspace` only if the owner did not hold it, and dies with the owner.
/// Removal never follows a link planted in the dir, and opens up (as their owner) the
/// directories a block closed with `chmod 0`, which would otherwise stop it. When the block user is one dockexec
/// cannot name on the host, the dir is `1777` (see
/// [`ExecutorBuilder::work_dir`](crate::ExecutorBuilder::work_dir)) and another host user
/// could hold its lock and so keep it. Failures to remove a dir are ignored (the next sweep
/// tries again); the ids returned are containers only.
///
/// [`ExecutorBuilder::start`](crate::ExecutorBuilder::start) runs this first unless
/// [`gc_orphans(false)`](crate::ExecutorBuilder::gc_orphans).
///
/// `socket` defaults as for the builder (`DOCKER_HOST`, then `/var/run/docker.sock`).
///
/// # Errors
/// [`Error::Connect`](crate::Error::Connect) when the daemon is unreachable; a daemon error
/// if listing or removing fails.
pub fn gc(socket: Option<&Path>) -> Result<Vec<String>> {
    gc_with(&GcOptions {
        socket: socket.map(Path::to_path_buf),
        ..GcOptions::default()
    })
}

/// What [`gc_with`] removes, and where.
///
/// ```no_run
/// # fn main() -> dockexec::Result<()> {
/// // Every container of executors labelled `team=data`, running or not.
/// let mut options = dockexec::GcOptions::default();
/// options.force = true;
/// options.labels.push("team=data".into());
/// let removed = dockexec::gc_with(&options)?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct GcOptions {
    /// The daemon's socket. Defaults to `None`: as for the builder (`DOCKER_HOST`, then
    /// `/var/run/docker.sock`).
    pub socket: Option<PathBuf>,
    /// Also remove running containers: their blocks die and their executors report
    /// [`ContainerGone`](crate::Error::ContainerGone). For containers known to be
    /// abandoned that [`gc`] leaves, such as those of dockexec versions without the dead-man's
    /// switch. Defaults to `false`.
    pub force: bool,
    /// Only containers that carry every one of these labels (`key` or `key=value`, as given
    /// to [`ExecutorBuilder::label`](crate::ExecutorBuilder::label)). Defaults to none: every
    /// dockexec container. Temporary work dirs carry no labels: every dead owner's goes
    /// (see [`gc`]), except those of containers left in place.
    pub labels: Vec<String>,
}

/// Removes dockexec containers as `options` say (by default, as [`gc`]: those no longer
/// running), and their temporary work dirs; returns their ids.
///
/// # Errors
/// As [`gc`].
pub fn gc_with(options: &GcOptions) -> Result<Vec<String>> {
    let socket = match &options.socket {
        Some(s) => s.clone(),
        None => api::socket_from_env()?,
    };
    sweep(&Client::connect(&socket)?, options.force, &options.labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn only_containers_no_longer_running_are_orphans() {
        let now = 1_000_000;
        assert!(is_orphan("exited", now, now));
        assert!(is_orphan("dead", now, now));
        for live in ["running", "paused", "restarting", "removing", ""] {
            assert!(!is_orphan(live, 0, now), "{live}");
        }
        // A created container may be one that its live owner is about to start.
        assert!(!is_orphan("created", now - 1, now));
        let old = now - GC_CREATED_GRACE.as_secs() as i64;
        assert!(is_orphan("created", old, now));
    }

    #[test]
    fn only_an_owner_seen_alive_keeps_a_stopped_container() {
        let mine: std::collections::HashMap<String, String> = owner_labels().into_iter().collect();
        assert!(owner_seen_alive(&mine));
        let mut other_start = mine.clone();
        other_start.insert(LABEL_OWNER_START.into(), "1".into());
        assert!(!owner_seen_alive(&other_start));
        let mut other_boot = mine.clone();
        other_boot.insert(LABEL_OWNER_BOOT.into(), "another-boot".into());
        assert!(!owner_seen_alive(&other_boot));
        let mut bad_pid = mine.clone();
        bad_pid.insert(LABEL_OWNER_PID.into(), "../self".into());
        assert!(!owner_seen_alive(&bad_pid));
        assert!(!owner_seen_alive(&Default::default()));
    }

    #[test]
    fn owner_labels_name_this_process() {
        let mine: HashMap<String, String> = owner_labels().into_iter().collect();
        assert_eq!(mine[LABEL_OWNER_PID], std::process::id().to_string());
        assert!(!mine[LABEL_OWNER_START].is_empty());
        assert!(mine.contains_key(LABEL_OWNER_HOST) && mine.contains_key(LABEL_OWNER_BOOT));
    }

    #[test]
    fn keeper_answers_are_whole_lines_of_their_own_number() {
        let a1 = b"dockexec-keeper: restarted 1";
        assert_eq!(
            answer_rest(b"dockexec-keeper: restarted 1\n", a1),
            Some(String::new())
        );
        assert_eq!(
            answer_rest(b"x\ndockexec-keeper: restarted 1 left\n", a1),
            Some(" left".into())
        );
        assert_eq!(answer_rest(b"dockexec-keeper: restarted 11\n", a1), None);
        assert_eq!(answer_rest(b"dockexec-keeper: restarted 1", a1), None);
    }

    #[test]
    fn ids_are_hex_and_differ() {
        let (a, b) = (random_id(), random_id());
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
