//! Connections to an engine, whatever the transport: a Unix socket, TCP, TLS over TCP, or an
//! `ssh` process running `docker system dial-stdio` on the far side.
//!
//! [`Dialer::dial`] gives a [`Stream`], which ureq's transport and the hand-written upgrade
//! both use. A hijacked stream (the agent's channel, the keeper's attach) is read and written
//! from different threads at once, so it becomes a [`Duplex`]: a socket that can be cloned.
//! TLS cannot be split that way, so a TLS connection is pumped into a socket pair by two
//! threads; an `ssh` connection already is one end of a socket pair.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::engine::{Endpoint, Engine, Ssh};
use crate::error::{Error, Result};

/// Why a dial failed, in words that name the file or the peer: carried inside the
/// `io::Error`, so that the error mapping can make it an [`Error::Connect`].
#[derive(Debug)]
pub(crate) struct DialError(pub(crate) String);

impl fmt::Display for DialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DialError {}

fn dial_error(kind: io::ErrorKind, reason: impl Into<String>) -> io::Error {
    io::Error::new(kind, DialError(reason.into()))
}

/// The reason a dial failed, if the error is one of ours.
pub(crate) fn dial_reason(e: &io::Error) -> Option<&str> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<DialError>())
        .map(|d| d.0.as_str())
}

/// How many `ssh://` connections a dialer keeps spawned ahead. Two, because the common
/// burst is two dials in a row: a housekeeping call (the timeout's kill exec, a file
/// operation) dials once for its create and again for its start, and with one spare the
/// second waited for a `dial-stdio` spawned a few ms before (515 ms of a 1.1 s kill, seen
/// over SSH in CI). Each costs an idle `ssh` here and an idle `dial-stdio` on the far side.
const SSH_SPARES: usize = 2;

/// Opens connections to one engine.
pub(crate) struct Dialer {
    engine: Engine,
    #[cfg(feature = "tls")]
    tls: Option<Arc<rustls::ClientConfig>>,
    /// An `ssh://` engine's master connection, started by the first dial. Locked across the
    /// master's start: concurrent first dials wait for the one master rather than each
    /// starting one.
    ssh_master: Mutex<Option<Arc<SshMaster>>>,
    /// An `ssh://` engine's next connections ([`SSH_SPARES`] of them), spawned ahead: their
    /// `ssh` and the far side's `docker system dial-stdio` start while the caller works, so a
    /// dial takes a connection that is (nearly) ready. Locked only to take or add one.
    ssh_spares: Mutex<VecDeque<SshConn>>,
}

impl fmt::Debug for Dialer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dialer")
            .field("engine", &self.engine.endpoint())
            .finish_non_exhaustive()
    }
}

impl Dialer {
    /// Checks `engine` (plain TCP beyond loopback, the TLS files) and prepares its TLS.
    ///
    /// # Errors
    /// [`Error::Connect`] naming the endpoint or the file that is wrong.
    pub(crate) fn new(engine: &Engine) -> Result<Dialer> {
        engine.check_dialable()?;
        #[cfg(feature = "tls")]
        let tls = match &engine.endpoint {
            Endpoint::Tcp { tls: Some(t), .. } => {
                Some(tls::client_config(t).map_err(|reason| Error::Connect {
                    endpoint: engine.endpoint(),
                    reason,
                    source: None,
                })?)
            }
            _ => None,
        };
        #[cfg(not(feature = "tls"))]
        if let Endpoint::Tcp { tls: Some(_), .. } = &engine.endpoint {
            return Err(Error::Connect {
                endpoint: engine.endpoint(),
                reason: "this build of dockexec has no TLS: enable its `tls` cargo feature".into(),
                source: None,
            });
        }
        Ok(Dialer {
            engine: engine.clone(),
            #[cfg(feature = "tls")]
            tls,
            ssh_master: Mutex::new(None),
            ssh_spares: Mutex::new(VecDeque::new()),
        })
    }

    /// The engine, as a `DOCKER_HOST` value.
    pub(crate) fn describe(&self) -> String {
        self.engine.endpoint()
    }

    /// The `ssh` master every connection of an `ssh://` engine goes through, started on the
    /// first call (or again, after one died); `None` when it cannot start, so connections go
    /// direct (the first failure's words then come from that connection's own `ssh`).
    fn ssh_master(&self, ssh: &Ssh, timeout: Duration) -> io::Result<Option<Arc<SshMaster>>> {
        let mut slot = self.ssh_master.lock();
        if let Some(m) = slot.as_ref() {
            if m.alive() {
                return Ok(Some(Arc::clone(m)));
            }
        }
        let master = SshMaster::start(ssh, timeout).map(Arc::new);
        *slot = master.as_ref().ok().cloned();
        Ok(master.ok())
    }

    /// The engine dialled.
    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// A new connection; `timeout` bounds the TCP connect and the TLS handshake (an `ssh`
    /// process connects in the background: its failure shows on the first read).
    ///
    /// # Errors
    /// The socket's errors; a [`DialError`] inside for what the transport says (TLS, ssh).
    pub(crate) fn dial(&self, timeout: Duration) -> io::Result<Stream> {
        match &self.engine.endpoint {
            // Not bounded by `timeout`: std has no connect timeout for Unix sockets. The
            // kernel completes a connect into the listener's backlog whatever the daemon does
            // (even stopped), so only a full backlog (4096 pending connections) would block it;
            // what a hung daemon delays is the answer, which the head limit bounds.
            Endpoint::Unix(path) => UnixStream::connect(path).map(Stream::Unix),
            Endpoint::Tcp {
                host, port, tls, ..
            } => {
                let tcp = tcp_connect(host, *port, timeout)?;
                match tls {
                    None => Ok(Stream::Tcp(tcp)),
                    #[cfg(feature = "tls")]
                    Some(_) => {
                        let config = self.tls.as_ref().expect("made with the endpoint");
                        let ca = tls.as_ref().and_then(|t| t.ca.as_deref());
                        tls::handshake(config, host, *port, ca, tcp, timeout)
                            .map(|s| Stream::Tls(Box::new(s)))
                    }
                    #[cfg(not(feature = "tls"))]
                    Some(_) => unreachable!("refused by Dialer::new"),
                }
            }
            Endpoint::Ssh(ssh) => {
                let master = self.ssh_master(ssh, timeout)?;
                // Oldest first: it has had the longest to get ready. A spare whose ssh
                // already ended (its master died, the far side refused) is dropped, reaped,
                // and replaced by a fresh connection.
                let spare = self.ssh_spares.lock().pop_front();
                let conn = match spare {
                    Some(s) if s.running() => s,
                    _ => SshConn::spawn(ssh, master.clone())?,
                };
                // Best effort: without a spare the next dial spawns its own. The lock is not
                // held across the spawn: a concurrent dial may overshoot by one, which the
                // check on push trims.
                while self.ssh_spares.lock().len() < SSH_SPARES {
                    let Ok(next) = SshConn::spawn(ssh, master.clone()) else {
                        break;
                    };
                    let mut spares = self.ssh_spares.lock();
                    if spares.len() >= SSH_SPARES {
                        break; // `next` is dropped (its ssh killed and reaped) after the unlock
                    }
                    spares.push_back(next);
                }
                Ok(Stream::Ssh(conn))
            }
        }
    }
}

/// Connects to the first address of `host:port` that answers within `timeout`, with
/// Nagle off (requests are small and waited on) and keepalive on.
fn tcp_connect(host: &str, port: u16, timeout: Duration) -> io::Result<TcpStream> {
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|e| dial_error(e.kind(), format!("cannot resolve {host}: {e}")))?
        .collect();
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                s.set_nodelay(true)?;
                keepalive(&s)?;
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last
        .unwrap_or_else(|| dial_error(io::ErrorKind::NotFound, format!("{host} has no address"))))
}

/// How long a silent TCP peer goes unprobed, then how often it is probed, and how many
/// unanswered probes end the connection: a peer that vanished is noticed within
/// 10 + 5 × 3 = 25 s.
pub(crate) const KEEPALIVE: (Duration, Duration, u32) =
    (Duration::from_secs(10), Duration::from_secs(5), 3);

fn keepalive(s: &TcpStream) -> io::Result<()> {
    use rustix::net::sockopt;
    let (idle, interval, count) = KEEPALIVE;
    sockopt::set_socket_keepalive(s, true)?;
    sockopt::set_tcp_keepidle(s, idle)?;
    sockopt::set_tcp_keepintvl(s, interval)?;
    sockopt::set_tcp_keepcnt(s, count)?;
    Ok(())
}

/// One connection to the engine.
pub(crate) enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    Ssh(SshConn),
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stream::Unix(_) => "Stream::Unix",
            Stream::Tcp(_) => "Stream::Tcp",
            #[cfg(feature = "tls")]
            Stream::Tls(_) => "Stream::Tls",
            Stream::Ssh(_) => "Stream::Ssh",
        })
    }
}

/// The socket under a connection: what timeouts, shutdown and liveness act on.
#[derive(Debug)]
pub(crate) enum Raw {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Raw {
    pub(crate) fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Raw::Unix(s) => s.shutdown(how),
            Raw::Tcp(s) => s.shutdown(how),
        }
    }

    fn try_clone(&self) -> io::Result<Raw> {
        Ok(match self {
            Raw::Unix(s) => Raw::Unix(s.try_clone()?),
            Raw::Tcp(s) => Raw::Tcp(s.try_clone()?),
        })
    }

    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Raw::Unix(s) => s.set_read_timeout(t),
            Raw::Tcp(s) => s.set_read_timeout(t),
        }
    }

    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Raw::Unix(s) => s.set_write_timeout(t),
            Raw::Tcp(s) => s.set_write_timeout(t),
        }
    }
}

impl Stream {
    fn with_raw<T>(&self, f: impl FnOnce(RawRef<'_>) -> T) -> T {
        match self {
            Stream::Unix(s) => f(RawRef::Unix(s)),
            Stream::Tcp(s) => f(RawRef::Tcp(s)),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => f(RawRef::Tcp(s.get_ref())),
            Stream::Ssh(s) => f(RawRef::Unix(&s.sock)),
        }
    }

    /// A handle on the socket underneath, for shutting it down from another thread.
    pub(crate) fn raw(&self) -> io::Result<Raw> {
        self.with_raw(|r| {
            Ok(match r {
                RawRef::Unix(s) => Raw::Unix(s.try_clone()?),
                RawRef::Tcp(s) => Raw::Tcp(s.try_clone()?),
            })
        })
    }

    pub(crate) fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.with_raw(|r| match r {
            RawRef::Unix(s) => s.set_read_timeout(t),
            RawRef::Tcp(s) => s.set_read_timeout(t),
        })
    }

    pub(crate) fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.with_raw(|r| match r {
            RawRef::Unix(s) => s.set_write_timeout(t),
            RawRef::Tcp(s) => s.set_write_timeout(t),
        })
    }

    /// Whether a pooled connection can be reused: the peer has neither closed it nor sent
    /// bytes we did not ask for (a non-blocking look must say "would block"), and an `ssh`
    /// process behind it still runs.
    pub(crate) fn is_open(&mut self) -> bool {
        #[cfg(feature = "tls")]
        if let Stream::Tls(s) = self {
            // Plaintext rustls already holds is also bytes nobody asked for.
            if s.conn.wants_write() || s.conn.reader().read(&mut [0u8; 1]).is_ok() {
                return false;
            }
        }
        if let Stream::Ssh(s) = self {
            if !matches!(s.child.lock().child.try_wait(), Ok(None)) {
                return false;
            }
        }
        self.with_raw(|r| {
            let mut buf = [0u8; 1];
            match r {
                RawRef::Unix(s) => {
                    if s.set_nonblocking(true).is_err() {
                        return false;
                    }
                    let open = matches!((&*s).read(&mut buf),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock);
                    open && s.set_nonblocking(false).is_ok()
                }
                RawRef::Tcp(s) => {
                    if s.set_nonblocking(true).is_err() {
                        return false;
                    }
                    let open = matches!(s.peek(&mut buf),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock);
                    open && s.set_nonblocking(false).is_ok()
                }
            }
        })
    }

    /// The stream as a [`Duplex`], for a hijacked connection; `leftover` is what was read
    /// past the response head.
    pub(crate) fn into_duplex(self) -> io::Result<Duplex> {
        match self {
            Stream::Unix(s) => Ok(Duplex {
                raw: Raw::Unix(s),
                _guard: None,
            }),
            Stream::Tcp(s) => Ok(Duplex {
                raw: Raw::Tcp(s),
                _guard: None,
            }),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => tls::pump(*s),
            Stream::Ssh(s) => {
                let raw = Raw::Unix(s.sock.try_clone()?);
                Ok(Duplex {
                    raw,
                    _guard: Some(Guard::new(GuardKind::Ssh(s))),
                })
            }
        }
    }
}

enum RawRef<'a> {
    Unix(&'a UnixStream),
    Tcp(&'a TcpStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.read(buf).map_err(tls::explain),
            Stream::Ssh(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.write(buf).map_err(tls::explain),
            Stream::Ssh(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.flush().map_err(tls::explain),
            _ => Ok(()),
        }
    }
}

/// What must live as long as a hijacked connection: the `ssh` process, or the TLS pump.
/// Never read: held for its `Drop`, which reaps the process or stops the pump.
#[allow(dead_code)]
enum GuardKind {
    Ssh(SshConn),
    #[cfg(feature = "tls")]
    Pump(tls::Pump),
}

/// A [`GuardKind`] that any clone of the connection can end at once ([`Duplex::close`]),
/// or that ends with the last clone. Locked only to take it out: the drop (a kill and reap,
/// or a pump's joins) runs unlocked.
struct Guard(Mutex<Option<GuardKind>>);

impl Guard {
    fn new(kind: GuardKind) -> Arc<Guard> {
        Arc::new(Guard(Mutex::new(Some(kind))))
    }

    fn end(&self) {
        let taken = self.0.lock().take();
        drop(taken);
    }
}

/// A hijacked connection: a socket that can be cloned, read from one thread and written from
/// another. Its clones share what keeps it alive (an `ssh` process, a TLS pump), which ends
/// when the last clone drops.
pub(crate) struct Duplex {
    raw: Raw,
    // Declared after `raw`, so dropped after it: a pump sees this end close first.
    _guard: Option<Arc<Guard>>,
}

impl fmt::Debug for Duplex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Duplex")
            .field("raw", &self.raw)
            .finish_non_exhaustive()
    }
}

impl Duplex {
    pub(crate) fn try_clone(&self) -> io::Result<Duplex> {
        Ok(Duplex {
            raw: self.raw.try_clone()?,
            _guard: self._guard.clone(),
        })
    }

    pub(crate) fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.raw.shutdown(how)
    }

    /// Ends the connection now, for every clone: shuts it down both ways, and stops what
    /// carries it (an `ssh` process is killed and reaped, a TLS pump's threads are joined),
    /// so that nothing of it outlives the call, whoever still holds a clone.
    pub(crate) fn close(&self) {
        let _ = self.raw.shutdown(Shutdown::Both);
        if let Some(g) = &self._guard {
            g.end();
        }
    }

    pub(crate) fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.raw.set_read_timeout(t)
    }

    pub(crate) fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.raw.set_write_timeout(t)
    }
}

impl Read for &Duplex {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.raw {
            Raw::Unix(s) => (&*s).read(buf),
            Raw::Tcp(s) => (&*s).read(buf),
        }
    }
}

impl Write for &Duplex {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &self.raw {
            Raw::Unix(s) => (&*s).write(buf),
            Raw::Tcp(s) => (&*s).write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for Duplex {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for Duplex {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The `ssh` process of one connection, reaped when it drops.
struct SshChild {
    child: Child,
    /// ssh's stderr: an unlinked file, read back when the connection fails, so that the
    /// user sees ssh's own words (host key, authentication). A file, not a pipe: nothing has
    /// to drain it while the connection works.
    stderr: File,
}

impl Drop for SshChild {
    fn drop(&mut self) {
        // Killed, not waited on politely: the connection is over; the wait reaps it at once.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One SSH connection that every connection to an `ssh://` engine is multiplexed over
/// (`ssh -S`): a connection then costs a channel, not a key exchange (measured here: 156 ms
/// a dial-stdio connection through the master against 460 ms direct).
///
/// Its remote command reads its stdin until EOF, and that stdin is a pipe of this process:
/// when this process dies, however it dies, the pipe closes, the command ends, and the master
/// exits once its last multiplexed connection has closed. No `ControlPersist`: nothing of
/// ours runs on after us.
pub(crate) struct SshMaster {
    child: Mutex<SshChild>,
    /// The control socket, in a private dir of its own (removed with the master).
    dir: std::path::PathBuf,
    /// The pipe the remote command reads: dropped last, with the master.
    _stdin: std::process::ChildStdin,
}

impl SshMaster {
    fn start(ssh: &Ssh, timeout: Duration) -> io::Result<SshMaster> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = std::env::temp_dir().join(format!("dockexec-ssh-{}", crate::host::random_id()));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let path = dir.join("cm");
        let stderr = tempfile()?;
        let control = [
            "-M".to_string(),
            "-S".into(),
            path.display().to_string(),
            "-o".into(),
            "ControlPersist=no".into(),
        ];
        let spawned = Command::new("ssh")
            .args(ssh.args_with(&control, Some("cat >/dev/null")))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr.try_clone()?))
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let stdin = child.stdin.take().expect("piped");
        let master = SshMaster {
            child: Mutex::new(SshChild { child, stderr }),
            dir,
            _stdin: stdin,
        };
        // Ready once the control socket is there; an ssh that exits first has failed.
        let deadline = Instant::now() + timeout;
        while !path.exists() {
            if !master.alive() || Instant::now() >= deadline {
                return Err(io::Error::other("the ssh master did not start"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(master)
    }

    fn alive(&self) -> bool {
        matches!(self.child.lock().child.try_wait(), Ok(None))
    }

    fn control_args(&self) -> [String; 4] {
        [
            "-S".into(),
            self.dir.join("cm").display().to_string(),
            "-o".into(),
            "ControlMaster=no".into(),
        ]
    }
}

impl Drop for SshMaster {
    fn drop(&mut self) {
        // The child is killed and reaped by SshChild's drop; the dir goes first.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A connection through `ssh … docker system dial-stdio`: our end of a socket pair whose
/// other end is ssh's stdin and stdout.
pub(crate) struct SshConn {
    sock: UnixStream,
    // Locked only to poll or reap the process; never across I/O.
    child: Mutex<SshChild>,
    /// Bytes received so far: an ssh that fails before the first byte failed to connect.
    got: u64,
    /// The master this connection goes through, kept as long as it lives.
    _master: Option<Arc<SshMaster>>,
}

impl SshConn {
    fn spawn(ssh: &Ssh, master: Option<Arc<SshMaster>>) -> io::Result<SshConn> {
        let (mine, theirs) = UnixStream::pair()?;
        let stderr = tempfile()?;
        let theirs_out: OwnedFd = theirs.try_clone()?.into();
        let control = master
            .as_ref()
            .map(|m| m.control_args().to_vec())
            .unwrap_or_default();
        let child = Command::new("ssh")
            .args(ssh.args_with(&control, None))
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::from(theirs_out))
            .stderr(Stdio::from(stderr.try_clone()?))
            .spawn()
            .map_err(|e| {
                dial_error(
                    e.kind(),
                    format!("cannot run ssh (is OpenSSH's client installed?): {e}"),
                )
            })?;
        Ok(SshConn {
            sock: mine,
            child: Mutex::new(SshChild { child, stderr }),
            got: 0,
            _master: master,
        })
    }

    fn running(&self) -> bool {
        matches!(self.child.lock().child.try_wait(), Ok(None))
    }

    /// When the connection ends or fails: if ssh exited with an error, an error with its
    /// words. A connection that never carried a byte waits a moment for ssh to exit (it
    /// closes its end before it exits, so its status lags); one that did is looked at once:
    /// its ssh stays until the far side's command ends, which is no failure to wait for.
    fn ssh_failure(&self) -> Option<io::Error> {
        let wait = if self.got == 0 {
            Duration::from_secs(2)
        } else {
            Duration::ZERO
        };
        let deadline = Instant::now() + wait;
        let mut c = self.child.lock();
        let status = loop {
            match c.child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => return None,
            }
        };
        if status.success() {
            return None;
        }
        let mut buf = vec![0u8; 4096];
        let n = c.stderr.read_at(&mut buf, 0).unwrap_or(0);
        let words = String::from_utf8_lossy(&buf[..n]).trim().to_string();
        let words = if words.is_empty() {
            "no message".to_string()
        } else {
            words
        };
        let kind = if self.got == 0 {
            io::ErrorKind::ConnectionRefused
        } else {
            io::ErrorKind::ConnectionAborted
        };
        Some(dial_error(kind, format!("ssh exited ({status}): {words}")))
    }
}

impl Read for SshConn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match (&self.sock).read(buf) {
            Ok(0) if !buf.is_empty() => match self.ssh_failure() {
                Some(e) => Err(e),
                None => Ok(0),
            },
            Ok(n) => {
                self.got += n as u64;
                Ok(n)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(e)
            }
            Err(e) => Err(self.ssh_failure().unwrap_or(e)),
        }
    }
}

impl SshConn {
    /// A write that fails because ssh is gone (it closed its end: a broken pipe) says what
    /// ssh said, as a read would: an ssh that fails at once may be gone before the request
    /// is even written.
    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        match (&self.sock).write(buf) {
            Err(e)
                if !matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(self.ssh_failure().unwrap_or(e))
            }
            other => other,
        }
    }
}

/// An anonymous file: created in the temp dir, readable by its owner only, and unlinked at
/// once.
fn tempfile() -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = std::env::temp_dir().join(format!("dockexec-ssh-{}", crate::host::random_id()));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(f)
}

#[cfg(feature = "tls")]
mod tls {
    //! rustls: the client config from a [`Tls`], the handshake, and the pump that makes a TLS
    //! connection a [`Duplex`].

    use super::*;
    use crate::engine::Tls;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
    use rustls::{
        ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, StreamOwned,
    };

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        // ring, not aws-lc-rs: no C toolchain beyond cc, and a fraction of the build time.
        // What it lacks, post-quantum key exchange, guards recorded traffic against a future
        // quantum computer; a daemon's API traffic is not worth that build cost here.
        #[allow(deprecated)]
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// The client config for `t`, or why not, naming the file.
    pub(super) fn client_config(t: &Tls) -> std::result::Result<Arc<ClientConfig>, String> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?;
        let builder = if t.verify {
            let ca =
                t.ca.as_ref()
                    .ok_or("no CA file to verify the daemon with")?;
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(ca)
                .map_err(|e| format!("cannot read CA file {}: {e}", ca.display()))?;
            let mut n = 0;
            for c in certs {
                let c =
                    c.map_err(|e| format!("bad certificate in CA file {}: {e}", ca.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("unusable CA certificate in {}: {e}", ca.display()))?;
                n += 1;
            }
            if n == 0 {
                return Err(format!("CA file {} holds no certificate", ca.display()));
            }
            builder.with_root_certificates(roots)
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
        };
        let config = match (&t.cert, &t.key) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|i| i.collect::<std::result::Result<Vec<_>, _>>())
                    .map_err(|e| {
                        format!("cannot read client certificate {}: {e}", cert.display())
                    })?;
                if chain.is_empty() {
                    return Err(format!(
                        "client certificate file {} holds none",
                        cert.display()
                    ));
                }
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("cannot read client key {}: {e}", key.display()))?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    format!("client certificate {} and its key: {e}", cert.display())
                })?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }

    /// Connects TLS over `tcp`, handshake done within `timeout`.
    pub(super) fn handshake(
        config: &Arc<ClientConfig>,
        host: &str,
        port: u16,
        ca: Option<&std::path::Path>,
        mut tcp: TcpStream,
        timeout: Duration,
    ) -> io::Result<StreamOwned<ClientConnection, TcpStream>> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| dial_error(io::ErrorKind::InvalidInput, format!("{host}: {e}")))?;
        let mut conn = ClientConnection::new(Arc::clone(config), name)
            .map_err(|e| dial_error(io::ErrorKind::InvalidInput, format!("TLS setup: {e}")))?;
        tcp.set_read_timeout(Some(timeout))?;
        tcp.set_write_timeout(Some(timeout))?;
        while conn.is_handshaking() {
            match conn.complete_io(&mut tcp) {
                Ok((0, 0)) if conn.is_handshaking() => {
                    return Err(dial_error(
                        io::ErrorKind::ConnectionAborted,
                        format!("{host}:{port} closed the connection during the TLS handshake"),
                    ));
                }
                Ok(_) => {}
                Err(e) => return Err(explain_handshake(e, host, port, ca)),
            }
        }
        tcp.set_read_timeout(None)?;
        tcp.set_write_timeout(None)?;
        Ok(StreamOwned::new(conn, tcp))
    }

    fn explain_handshake(
        e: io::Error,
        host: &str,
        port: u16,
        ca: Option<&std::path::Path>,
    ) -> io::Error {
        let peer = format!("{host}:{port}");
        if matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            return dial_error(
                io::ErrorKind::TimedOut,
                format!("no TLS handshake with {peer} in time: does it speak TLS?"),
            );
        }
        let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
            return dial_error(e.kind(), format!("TLS handshake with {peer}: {e}"));
        };
        let reason = match tls {
            rustls::Error::InvalidCertificate(c) => format!(
                "the daemon's certificate at {peer} is not accepted ({c:?}): is {} the CA \
                 that signed it, and is {host} in its names?",
                ca.map_or("ca.pem".into(), |p| p.display().to_string())
            ),
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
                format!(
                    "{peer} does not speak TLS (is it a plain-TCP daemon? then use tcp:// without DOCKER_TLS_VERIFY)"
                )
            }
            rustls::Error::AlertReceived(a) => format!(
                "the daemon at {peer} refused the TLS handshake ({a:?}): does it want a client \
                 certificate (cert.pem, key.pem) signed by its CA?"
            ),
            other => format!("TLS handshake with {peer}: {other}"),
        };
        dial_error(io::ErrorKind::ConnectionRefused, reason)
    }

    /// A rustls error after the handshake, in words.
    pub(super) fn explain(e: io::Error) -> io::Error {
        match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::AlertReceived(a)) => dial_error(
                io::ErrorKind::ConnectionRefused,
                format!(
                    "the daemon ended the TLS session ({a:?}): does it want a client \
                     certificate signed by its CA?"
                ),
            ),
            _ => e,
        }
    }

    /// `SkipTLSVerify`: any certificate, but signatures still checked.
    #[derive(Debug)]
    struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

    impl ServerCertVerifier for NoVerify {
        fn verify_server_cert(
            &self,
            _end: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _name: &ServerName<'_>,
            _ocsp: &[u8],
            _now: UnixTime,
        ) -> std::result::Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    /// The two threads that carry a hijacked TLS connection to and from a socket pair.
    pub(super) struct Pump {
        tcp: TcpStream,
        local: UnixStream,
        threads: Vec<std::thread::JoinHandle<()>>,
    }

    impl Drop for Pump {
        fn drop(&mut self) {
            // Both sockets shut: each thread's blocking read or write returns, so the joins
            // are immediate.
            let _ = self.tcp.shutdown(Shutdown::Both);
            let _ = self.local.shutdown(Shutdown::Both);
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
        }
    }

    /// Makes `s` a [`Duplex`]: a reader thread decrypts what the daemon sends into one end of
    /// a socket pair, a writer thread encrypts what is written to it. rustls's state is shared
    /// under a lock that is never held across a blocking read, so neither direction waits on
    /// the other.
    pub(super) fn pump(s: StreamOwned<ClientConnection, TcpStream>) -> io::Result<Duplex> {
        let StreamOwned { conn, sock } = s;
        let (mine, theirs) = UnixStream::pair()?;
        // Locked for each rustls step (feed, decrypt, encrypt, flush): the reader and writer
        // threads share one session; never held across a read that may block.
        let conn = Arc::new(Mutex::new(conn));
        let (tcp_r, mut tcp_w, tcp_guard) = (sock.try_clone()?, sock.try_clone()?, sock);
        let (local_r, local_w, local_guard) = (theirs.try_clone()?, theirs.try_clone()?, theirs);
        let reader = {
            let conn = Arc::clone(&conn);
            let mut tcp_w = tcp_w.try_clone()?;
            std::thread::Builder::new()
                .name("dockexec-tls-in".into())
                .spawn(move || pump_in(&conn, tcp_r, &mut tcp_w, local_w))?
        };
        let writer = {
            let conn = Arc::clone(&conn);
            std::thread::Builder::new()
                .name("dockexec-tls-out".into())
                .spawn(move || pump_out(&conn, local_r, &mut tcp_w))?
        };
        Ok(Duplex {
            raw: Raw::Unix(mine),
            _guard: Some(Guard::new(GuardKind::Pump(Pump {
                tcp: tcp_guard,
                local: local_guard,
                threads: vec![reader, writer],
            }))),
        })
    }

    /// Daemon → local end, until either side ends; then the local end reads EOF.
    fn pump_in(
        conn: &Mutex<ClientConnection>,
        mut tcp: TcpStream,
        tcp_w: &mut TcpStream,
        mut local: UnixStream,
    ) {
        let mut net = vec![0u8; 16 * 1024];
        let mut plain = Vec::with_capacity(64 * 1024);
        // What rustls already holds (the upgrade's answer may have brought more) goes first.
        let mut closed = drain(&mut conn.lock(), &mut plain);
        'outer: loop {
            if !plain.is_empty() {
                if local.write_all(&plain).is_err() {
                    break;
                }
                plain.clear();
            }
            if closed {
                break;
            }
            let n = match tcp.read(&mut net) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut rd = &net[..n];
            while !rd.is_empty() {
                let mut c = conn.lock();
                // rustls takes records only while its plaintext buffer has room: each round
                // feeds what it takes, then empties that buffer (written out below, unlocked).
                let fed = c.read_tls(&mut rd);
                if fed.is_err() || c.process_new_packets().is_err() {
                    // A bad record: the session is over; flush the alert rustls queued.
                    let _ = c.write_tls(tcp_w);
                    break 'outer;
                }
                while c.wants_write() {
                    if c.write_tls(tcp_w).is_err() {
                        break 'outer;
                    }
                }
                closed = drain(&mut c, &mut plain);
                drop(c);
                if !plain.is_empty() {
                    if local.write_all(&plain).is_err() {
                        break 'outer;
                    }
                    plain.clear();
                }
                if closed {
                    break 'outer;
                }
            }
        }
        let _ = local.shutdown(Shutdown::Write);
    }

    /// Moves the plaintext rustls holds into `plain`; true when the daemon closed the session.
    fn drain(c: &mut ClientConnection, plain: &mut Vec<u8>) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match c.reader().read(&mut chunk) {
                Ok(0) => return true,
                Ok(n) => plain.extend_from_slice(&chunk[..n]),
                // WouldBlock: nothing more for now; any other error ends it on the next read.
                Err(e) => return e.kind() != io::ErrorKind::WouldBlock,
            }
        }
    }

    /// Local end → daemon; at the local end's EOF, a close_notify and a half-close, which the
    /// daemon reads as the end of the process's stdin.
    fn pump_out(conn: &Mutex<ClientConnection>, mut local: UnixStream, tcp: &mut TcpStream) {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match local.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => 0,
            };
            let mut c = conn.lock();
            if n == 0 {
                c.send_close_notify();
            } else if c.writer().write_all(&buf[..n]).is_err() {
                break;
            }
            while c.wants_write() {
                if c.write_tls(tcp).is_err() {
                    return;
                }
            }
            drop(c);
            if n == 0 {
                let _ = tcp.shutdown(Shutdown::Write);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every TCP connection to an engine probes a silent peer: keepalive on, 10 s idle, then
    /// every 5 s, 3 probes (a vanished peer is dropped within ~25 s).
    #[test]
    fn tcp_connections_have_keepalive() {
        use rustix::net::sockopt;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let s = tcp_connect("127.0.0.1", port, Duration::from_secs(5)).unwrap();
        assert!(sockopt::socket_keepalive(&s).unwrap());
        assert_eq!(sockopt::tcp_keepidle(&s).unwrap(), KEEPALIVE.0);
        assert_eq!(sockopt::tcp_keepintvl(&s).unwrap(), KEEPALIVE.1);
        assert_eq!(sockopt::tcp_keepcnt(&s).unwrap(), KEEPALIVE.2);
        assert!(s.nodelay().unwrap());
    }

    /// A refused TCP port is refused (no name is resolved here: a lookup could leave the
    /// machine).
    #[test]
    fn dial_failures_say_what_happened() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let e = tcp_connect("127.0.0.1", port, Duration::from_secs(5)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        let e = tcp_connect("no-such-host.invalid", 1, Duration::from_secs(5)).unwrap_err();
        assert!(
            dial_reason(&e).is_some_and(|r| r.contains("cannot resolve")),
            "{e}"
        );
    }
}
