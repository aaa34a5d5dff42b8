//! A container's tie to its owner: the dead-man's switch that ends it when the owner goes,
//! and the owner labels (information, and a reason for [`sweep`](crate::sweep) to spare a
//! stopped container whose owner is seen alive).
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
//! (`kill -9 -1`, which spares PID 1 and the caller), empties `/tmp` and `/dev/shm`, and answers
//! `restarted N`. `kill N` does the kill alone, for the agent runner when its agent is lost
//! (see [`KEEPER_SCRIPT`]).

use std::io::{self, Read, Write};
use std::net::Shutdown;

use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::docker::api::Client;
use crate::docker::frames::Demuxer;
use crate::docker::transport::Duplex;
use crate::error::{Error, Result};
use crate::host::OwnerId;
use crate::labels::{
    OWNER_BOOT as LABEL_OWNER_BOOT, OWNER_HOST as LABEL_OWNER_HOST, OWNER_PID as LABEL_OWNER_PID,
    OWNER_START as LABEL_OWNER_START,
};
use crate::output::Stream;

/// The keeper: the container's main process (see the module docs). POSIX `sh` builtins only,
/// so that it runs in any image, but for `rm`; `kill` must be the builtin, which spares the
/// shell itself.
///
/// `restart N` kills every other process, then empties `/tmp` and `/dev/shm` as far as root can (the
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
    "restart "*) kill -9 -1 2>/dev/null
      for d in /tmp /dev/shm; do rm -rf "$d"/* "$d"/.[!.]* "$d"/..?* 2>/dev/null; done
      left=; for f in /tmp/* /tmp/.[!.]* /tmp/..?* /dev/shm/* /dev/shm/.[!.]* /dev/shm/..?*; do
        [ -e "$f" ] || [ -L "$f" ] && left=" left"; done
      echo "dockexec-keeper: restarted ${line#restart }$left" ;;
    "kill "*) kill -9 -1 2>/dev/null; echo "dockexec-keeper: killed ${line#kill }" ;;
  esac
done"#;

/// Bound on the attach's request and response head.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the keeper has to answer a restart: it only has to call `kill` (and `rm` on a
/// tmpfs).
const RESTART_TIMEOUT: Duration = Duration::from_secs(10);

/// The owner's end of the dead-man's switch: an attach to the keeper's stdin and output,
/// held until the executor stops. Dropping it (or the process dying) ends the container.
#[derive(Debug)]
pub(crate) struct Keeper {
    /// One restart at a time: each writes its request and reads until its own answer.
    conn: Mutex<KeeperConn>,
    /// A handle on the same stream, so that `close` never waits for a command in flight
    /// (which holds `conn` for up to `RESTART_TIMEOUT`). Locked only to shut down or replace.
    closer: Mutex<Option<Duplex>>,
    /// Set by `close`: later commands fail at once.
    closed: std::sync::atomic::AtomicBool,
}

#[derive(Debug)]
struct KeeperConn {
    stream: Duplex,
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
            // Closed, not only shut down: a TLS pump's threads or an ssh process end here,
            // before stop() returns.
            Some(s) => s.close(),
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

/// The labels that name this process as a container's owner.
pub(crate) fn owner_labels() -> Vec<(String, String)> {
    let me = OwnerId::current();
    vec![
        (LABEL_OWNER_PID.into(), me.pid.to_string()),
        (LABEL_OWNER_START.into(), me.start),
        (LABEL_OWNER_HOST.into(), me.host),
        (LABEL_OWNER_BOOT.into(), me.boot),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

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
}
