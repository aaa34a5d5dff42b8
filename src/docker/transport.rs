//! HTTP/1.1 to the Engine over any transport `dial.rs` opens: a `ureq` connector and
//! transport, and the hand-written upgrade that hijacks a connection.
//!
//! This is the only file that names `ureq::unversioned`, whose API may change in minor
//! releases; everything else talks to [`Agent`](ureq::Agent) through `api.rs`.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ureq::Agent;
use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, LazyBuffers, NextTimeout, ShutdownHandle, Transport,
};

pub(crate) use super::dial::{Dialer, Duplex, Raw, Stream};

/// The host every request names; the connector ignores it and dials the engine.
pub(crate) const BASE_URL: &str = "http://docker";

/// How long a request may take, phase by phase.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The whole request, body included; `None` lets a body stream as long as the daemon
    /// sends it (a block's output).
    pub(crate) total: Option<Duration>,
    /// The connect, each write of the request, and the wait for the response head: how long
    /// the daemon may take to answer at all.
    pub(crate) head: Duration,
    /// The longest silence between two reads, body included; `None` for none.
    pub(crate) idle: Option<Duration>,
}

/// Builds an agent whose every connection is a fresh or pooled connection from `dialer`, each
/// request bounded by `limits`.
pub(crate) fn agent(dialer: &Arc<Dialer>, limits: Limits) -> Agent {
    let config = Config::builder()
        // Docker's error statuses carry a JSON message we want to read, not a bare error.
        .http_status_as_error(false)
        .timeout_global(limits.total)
        .timeout_connect(Some(limits.head))
        .timeout_send_request(Some(limits.head))
        .timeout_per_write(Some(limits.head))
        .timeout_recv_response(Some(limits.head))
        .timeout_per_read(limits.idle)
        .max_idle_connections(16)
        .max_idle_connections_per_host(16)
        // Docker keeps idle keep-alive connections open; recycle ours well before it would.
        .max_idle_age(Duration::from_secs(30))
        .user_agent(concat!("dockexec/", env!("CARGO_PKG_VERSION")))
        // ureq's 128 KiB defaults, per connection, made each running block on the exec path
        // cost ~300 kB (one stream each); Docker's heads are a few hundred bytes and its
        // bodies are read in pieces anyway, so 32 KiB in and 16 KiB out lose nothing.
        .max_response_header_size(16 * 1024)
        .input_buffer_size(32 * 1024)
        .output_buffer_size(16 * 1024)
        .build();
    Agent::with_parts(
        config,
        EngineConnector {
            dialer: Arc::clone(dialer),
        },
        NoResolver,
    )
}

/// Dials the engine for every connection ureq asks for.
struct EngineConnector {
    dialer: Arc<Dialer>,
}

impl fmt::Debug for EngineConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineConnector")
            .field("engine", &self.dialer.describe())
            .finish()
    }
}

impl<In: Transport> Connector<In> for EngineConnector {
    type Out = EngineTransport;

    fn connect(
        &self,
        details: &ConnectionDetails,
        _chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let timeout = details
            .timeout
            .not_zero()
            .map_or(Duration::from_secs(30), |d| *d);
        let stream = self.dialer.dial(timeout).map_err(ureq::Error::Io)?;
        let buffers = LazyBuffers::new(
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        let raw = Arc::new(stream.raw().map_err(ureq::Error::Io)?);
        // Registered so that `Agent::shutdown` can interrupt a read blocked on this connection
        // from another thread: the backstop when the daemon hangs or a stream never ends.
        (details.register_shutdown)(Arc::downgrade(&raw) as std::sync::Weak<dyn ShutdownHandle>)?;
        Ok(Some(EngineTransport {
            stream,
            _raw: raw,
            buffers,
            read_timeout: None,
            write_timeout: None,
        }))
    }
}

impl ShutdownHandle for Raw {
    /// Shuts both directions down; a `read` blocked in another thread returns at once.
    fn shutdown(&self) {
        let _ = Raw::shutdown(self, Shutdown::Both);
    }
}

/// One connection to the daemon.
pub(crate) struct EngineTransport {
    stream: Stream,
    /// Kept alive while the connection is: the agent's shutdown list holds it weakly.
    _raw: Arc<Raw>,
    buffers: LazyBuffers,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl fmt::Debug for EngineTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineTransport").finish_non_exhaustive()
    }
}

/// Maps ureq's remaining-time budget to a socket timeout, `None` meaning "block".
fn socket_timeout(t: NextTimeout) -> Result<Option<Duration>, ureq::Error> {
    match t.not_zero() {
        None => Ok(None),
        Some(d) if d.is_zero() => Err(ureq::Error::Timeout(t.reason)),
        Some(d) => Ok(Some(*d)),
    }
}

fn map_io(e: io::Error, t: NextTimeout) -> ureq::Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ureq::Error::Timeout(t.reason),
        _ => ureq::Error::Io(e),
    }
}

impl Transport for EngineTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let t = timeout.for_write();
        let wanted = socket_timeout(t)?;
        if wanted != self.write_timeout {
            self.stream.set_write_timeout(wanted)?;
            self.write_timeout = wanted;
        }
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output).map_err(|e| map_io(e, t))?;
        self.stream.flush().map_err(|e| map_io(e, t))
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        let t = timeout.for_read();
        let wanted = socket_timeout(t)?;
        if wanted != self.read_timeout {
            self.stream.set_read_timeout(wanted)?;
            self.read_timeout = wanted;
        }
        let input = self.buffers.input_append_buf();
        let n = loop {
            match self.stream.read(input) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other.map_err(|e| map_io(e, t))?,
            }
        };
        self.buffers.input_appended(n);
        Ok(n > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.is_open()
    }
}

/// ureq resolves the URI's host before connecting; the socket needs no address, and a real
/// lookup of "docker" would be wasted (or sent to a DNS server).
#[derive(Debug)]
struct NoResolver;

impl Resolver for NoResolver {
    fn resolve(
        &self,
        _uri: &Uri,
        _config: &Config,
        _timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let mut addrs = self.empty();
        addrs.push(SocketAddr::from(([127, 0, 0, 1], 0)));
        Ok(addrs)
    }
}

/// A connection the daemon has handed over to a process's stdio (`101 Switching Protocols`).
pub(crate) struct Hijacked {
    pub(crate) stream: Duplex,
    /// Bytes of the process's output that arrived with the response head.
    pub(crate) leftover: Vec<u8>,
}

impl fmt::Debug for Hijacked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hijacked").finish_non_exhaustive()
    }
}

/// What the daemon answered to an upgrade request.
#[derive(Debug)]
pub(crate) enum Upgrade {
    Switched(Hijacked),
    /// An ordinary HTTP answer instead: the status and (the start of) the body.
    Refused {
        status: u16,
        body: String,
    },
}

/// The largest response head (or refusal body) an upgrade reads.
const MAX_HEAD: usize = 64 * 1024;

/// `POST path` with `Upgrade: tcp` on a fresh connection of its own, written by hand: ureq does
/// not do upgrades. `timeout` bounds the connect, the request and the response head; the
/// returned stream has no timeout.
///
/// # Errors
/// The connection's I/O errors; `TimedOut`/`WouldBlock` when the head does not come in time;
/// `InvalidData` for an answer that is not HTTP.
pub(crate) fn upgrade(
    dialer: &Dialer,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> io::Result<Upgrade> {
    let mut stream = dialer.dial(timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: docker\r\nUser-Agent: dockexec/{}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n",
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "response head too large",
            ));
        }
        match stream.read(&mut chunk) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the daemon closed the connection before answering",
                ));
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| head.starts_with("HTTP/1."))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an HTTP answer"))?;
    let mut rest = buf.split_off(end);
    if status == 101 {
        stream.set_read_timeout(None)?;
        stream.set_write_timeout(None)?;
        return Ok(Upgrade::Switched(Hijacked {
            stream: stream.into_duplex()?,
            leftover: rest,
        }));
    }
    // A refusal: its body is short; read what comes within the time left, up to a bound.
    let length = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    });
    while rest.len() < length.unwrap_or(MAX_HEAD).min(MAX_HEAD) {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => rest.extend_from_slice(&chunk[..n]),
        }
    }
    Ok(Upgrade::Refused {
        status,
        body: String::from_utf8_lossy(&rest).into_owned(),
    })
}
