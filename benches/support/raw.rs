//! A minimal hand-written HTTP/1.1 client for the Docker Engine API over its Unix socket: the
//! floor the benches measure dockexec's ureq-based client against.
//!
//! One keep-alive connection for JSON calls (`Content-Length` or chunked bodies); exec start
//! on a fresh connection of its own, without an `Upgrade` header, read until the daemon
//! closes it. No pooling logic beyond "redial once if the kept connection died", and no
//! timeout but a generous read bound on exec streams so a bench cannot hang: the least work a
//! client can do.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// Bound on each read of an exec stream.
const STREAM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
/// The newest API version dockexec asks for; the raw client asks for the same.
const MAX_API: (u32, u32) = dockexec::__bench::MAX_API;

fn other(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// One HTTP/1.1 connection to the daemon.
pub struct Conn {
    r: BufReader<UnixStream>,
}

/// A response: status and whole body.
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

struct Head {
    status: u16,
    length: Option<usize>,
    chunked: bool,
}

impl Conn {
    pub fn connect(socket: &Path) -> io::Result<Conn> {
        Ok(Conn {
            r: BufReader::with_capacity(64 * 1024, UnixStream::connect(socket)?),
        })
    }

    /// Sends a request in one write.
    fn send(&mut self, method: &str, path: &str, body: Option<&[u8]>) -> io::Result<()> {
        let mut req = Vec::with_capacity(256 + body.map_or(0, <[u8]>::len));
        write!(req, "{method} {path} HTTP/1.1\r\nHost: docker\r\n")?;
        match body {
            Some(b) => {
                write!(
                    req,
                    "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    b.len()
                )?;
                req.extend_from_slice(b);
            }
            None if method == "GET" => req.extend_from_slice(b"\r\n"),
            None => req.extend_from_slice(b"Content-Length: 0\r\n\r\n"),
        }
        self.r.get_mut().write_all(&req)
    }

    fn head(&mut self) -> io::Result<Head> {
        let mut line = String::new();
        if self.r.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| other(format!("bad status line {line:?}")))?;
        let mut head = Head {
            status,
            length: None,
            chunked: false,
        };
        loop {
            line.clear();
            if self.r.read_line(&mut line)? == 0 {
                return Err(other("connection closed inside the head"));
            }
            let l = line.trim_end();
            if l.is_empty() {
                return Ok(head);
            }
            if let Some((k, v)) = l.split_once(':') {
                let v = v.trim();
                if k.eq_ignore_ascii_case("content-length") {
                    head.length = v.parse().ok();
                } else if k.eq_ignore_ascii_case("transfer-encoding") {
                    head.chunked = v.eq_ignore_ascii_case("chunked");
                }
            }
        }
    }

    fn body(&mut self, head: &Head) -> io::Result<Vec<u8>> {
        if head.chunked {
            let mut body = Vec::new();
            let mut line = String::new();
            loop {
                line.clear();
                self.r.read_line(&mut line)?;
                let size = line.trim_end().split(';').next().unwrap_or("");
                let size = usize::from_str_radix(size.trim(), 16)
                    .map_err(|_| other(format!("bad chunk size {line:?}")))?;
                if size == 0 {
                    // Trailers, then the empty line.
                    loop {
                        line.clear();
                        if self.r.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
                            return Ok(body);
                        }
                    }
                }
                let at = body.len();
                body.resize(at + size, 0);
                self.r.read_exact(&mut body[at..])?;
                let mut crlf = [0u8; 2];
                self.r.read_exact(&mut crlf)?;
            }
        }
        match head.length {
            Some(n) => {
                let mut body = vec![0; n];
                self.r.read_exact(&mut body)?;
                Ok(body)
            }
            None if head.status == 204 || head.status == 304 || head.status < 200 => Ok(Vec::new()),
            None => {
                let mut body = Vec::new();
                self.r.read_to_end(&mut body)?;
                Ok(body)
            }
        }
    }

    /// One request/response on this (kept-alive) connection.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> io::Result<Response> {
        self.send(method, path, body)?;
        let head = self.head()?;
        let body = self.body(&head)?;
        Ok(Response {
            status: head.status,
            body,
        })
    }
}

/// A live exec stream: the rest of the connection after the 200 head.
pub struct RawStream {
    r: BufReader<UnixStream>,
}

impl Read for RawStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.r.read(buf)
    }
}

impl RawStream {
    /// Reads to the end, demultiplexing; keeps at most `cap` bytes (stdout + stderr).
    pub fn collect(mut self, cap: Option<usize>) -> io::Result<Collected> {
        let mut out = Collected::default();
        let mut d = MiniDemux::default();
        let mut buf = vec![0u8; 64 * 1024];
        let cap = cap.unwrap_or(usize::MAX);
        loop {
            let n = match self.r.read(&mut buf) {
                Ok(0) => return Ok(out),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            d.feed(&buf[..n], |s, b| {
                out.total += b.len();
                let room = cap.saturating_sub(out.stdout.len() + out.stderr.len());
                let b = &b[..b.len().min(room)];
                if s == 2 {
                    out.stderr.extend_from_slice(b);
                } else {
                    out.stdout.extend_from_slice(b);
                }
            });
        }
    }

    /// Reads until the stream has carried `needle` in its payload (e.g. a "ready" line).
    /// Returns the payload read so far.
    pub fn read_until(&mut self, needle: &[u8]) -> io::Result<Vec<u8>> {
        let mut seen = Vec::new();
        let mut d = MiniDemux::default();
        let mut buf = [0u8; 4096];
        while !seen.windows(needle.len()).any(|w| w == needle) {
            let n = self.r.read(&mut buf)?;
            if n == 0 {
                return Err(other("stream ended before the expected output"));
            }
            d.feed(&buf[..n], |_, b| seen.extend_from_slice(b));
        }
        Ok(seen)
    }

    /// Drains to the end; returns the bytes read.
    pub fn drain(mut self) -> io::Result<u64> {
        io::copy(&mut self.r, &mut io::sink())
    }
}

/// What an exec wrote.
#[derive(Debug, Default)]
pub struct Collected {
    pub code: Option<i64>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Payload bytes received, kept or not.
    pub total: usize,
}

/// The smallest incremental demultiplexer of Docker's 8-byte-header frames: emits payload
/// pieces as they arrive, headers may be split across pieces. No validation.
#[derive(Debug, Default)]
pub struct MiniDemux {
    hdr: [u8; 8],
    have: usize,
    left: usize,
    stream: u8,
}

impl MiniDemux {
    pub fn feed(&mut self, mut input: &[u8], mut emit: impl FnMut(u8, &[u8])) {
        while !input.is_empty() {
            if self.left > 0 {
                let n = self.left.min(input.len());
                emit(self.stream, &input[..n]);
                self.left -= n;
                input = &input[n..];
            } else {
                let n = (8 - self.have).min(input.len());
                self.hdr[self.have..self.have + n].copy_from_slice(&input[..n]);
                self.have += n;
                input = &input[n..];
                if self.have == 8 {
                    self.have = 0;
                    self.stream = self.hdr[0];
                    self.left =
                        u32::from_be_bytes([self.hdr[4], self.hdr[5], self.hdr[6], self.hdr[7]])
                            as usize;
                }
            }
        }
    }
}

/// The Engine API through a kept-alive [`Conn`], with exec start on fresh connections.
pub struct Raw {
    socket: PathBuf,
    prefix: String,
    conn: Option<Conn>,
}

impl Raw {
    /// Connects and picks the API version the way dockexec does (daemon's, capped at 1.47).
    pub fn connect(socket: &Path) -> io::Result<Raw> {
        let mut raw = Raw {
            socket: socket.to_path_buf(),
            prefix: String::new(),
            conn: None,
        };
        let v = raw.json("GET", "/version", None)?;
        let api = v["ApiVersion"]
            .as_str()
            .ok_or_else(|| other("no ApiVersion"))?
            .to_string();
        let (a, b) = api.split_once('.').ok_or_else(|| other("bad ApiVersion"))?;
        let ver = (
            a.parse::<u32>().map_err(|_| other("bad ApiVersion"))?,
            b.parse::<u32>().map_err(|_| other("bad ApiVersion"))?,
        )
            .min(MAX_API);
        raw.prefix = format!("/v{}.{}", ver.0, ver.1);
        Ok(raw)
    }

    pub fn api_version(&self) -> &str {
        self.prefix.trim_start_matches("/v")
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A request on the kept connection (dialled on first use; redialled once if the daemon
    /// closed it while idle).
    pub fn call(&mut self, method: &str, path: &str, body: Option<&[u8]>) -> io::Result<Response> {
        let path = format!("{}{path}", self.prefix);
        for attempt in 0..2 {
            if self.conn.is_none() {
                self.conn = Some(Conn::connect(&self.socket)?);
            }
            let conn = self.conn.as_mut().expect("dialled above");
            match conn.request(method, &path, body) {
                Ok(r) => return Ok(r),
                Err(_) if attempt == 0 => self.conn = None,
                Err(e) => {
                    self.conn = None;
                    return Err(e);
                }
            }
        }
        unreachable!()
    }

    /// A JSON call; an error status becomes an error carrying the daemon's message.
    pub fn json(&mut self, method: &str, path: &str, body: Option<&Value>) -> io::Result<Value> {
        let bytes = body.map(|b| serde_json::to_vec(b).expect("serializable"));
        let r = self.call(method, path, bytes.as_deref())?;
        if r.status >= 400 {
            return Err(other(format!(
                "{method} {path}: HTTP {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body).trim()
            )));
        }
        if r.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&r.body).map_err(|e| other(format!("{method} {path}: {e}")))
    }

    /// `GET /_ping` (unversioned) on the kept connection.
    pub fn ping(&mut self) -> io::Result<()> {
        let prefix = std::mem::take(&mut self.prefix);
        let r = self.call("GET", "/_ping", None);
        self.prefix = prefix;
        let r = r?;
        if r.status == 200 && r.body == b"OK" {
            Ok(())
        } else {
            Err(other(format!("ping: HTTP {}", r.status)))
        }
    }

    pub fn exec_create(&mut self, container: &str, cmd: &[&str]) -> io::Result<String> {
        let body = json!({ "Cmd": cmd, "AttachStdout": true, "AttachStderr": true });
        self.exec_create_body(container, &body)
    }

    /// Creates an exec from a full body (`Cmd`, `Env`, `WorkingDir`, …).
    pub fn exec_create_body(&mut self, container: &str, body: &Value) -> io::Result<String> {
        let v = self.json("POST", &format!("/containers/{container}/exec"), Some(body))?;
        v["Id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| other("exec create: no Id"))
    }

    /// Starts an exec on a fresh connection; the stream runs until the process ends.
    pub fn exec_start(&self, exec: &str) -> io::Result<RawStream> {
        let mut conn = Conn::connect(&self.socket)?;
        // A bench must not hang forever on a stream that never ends.
        conn.r.get_ref().set_read_timeout(Some(STREAM_TIMEOUT))?;
        let body = br#"{"Detach":false,"Tty":false}"#;
        conn.send(
            "POST",
            &format!("{}/exec/{exec}/start", self.prefix),
            Some(body),
        )?;
        let head = conn.head()?;
        if head.status != 200 {
            let body = conn.body(&head).unwrap_or_default();
            return Err(other(format!(
                "exec start: HTTP {}: {}",
                head.status,
                String::from_utf8_lossy(&body)
            )));
        }
        Ok(RawStream { r: conn.r })
    }

    pub fn exec_inspect(&mut self, exec: &str) -> io::Result<Option<i64>> {
        let v = self.json("GET", &format!("/exec/{exec}/json"), None)?;
        Ok(v["ExitCode"].as_i64())
    }

    /// create, start (reading the stream to its end), inspect: the exec floor.
    pub fn exec_round_trip(&mut self, container: &str, cmd: &[&str]) -> io::Result<Option<i64>> {
        let id = self.exec_create(container, cmd)?;
        self.exec_start(&id)?.drain()?;
        self.exec_inspect(&id)
    }

    /// create, start, collect (demultiplexed, at most `cap` bytes kept), inspect.
    pub fn exec_collect(
        &mut self,
        container: &str,
        cmd: &[&str],
        cap: Option<usize>,
    ) -> io::Result<Collected> {
        let body = json!({ "Cmd": cmd, "AttachStdout": true, "AttachStderr": true });
        self.exec_collect_body(container, &body, cap)
    }

    /// [`exec_collect`](Raw::exec_collect) from a full exec body.
    pub fn exec_collect_body(
        &mut self,
        container: &str,
        body: &Value,
        cap: Option<usize>,
    ) -> io::Result<Collected> {
        let id = self.exec_create_body(container, body)?;
        let mut c = self.exec_start(&id)?.collect(cap)?;
        c.code = self.exec_inspect(&id)?;
        Ok(c)
    }

    pub fn container_create(&mut self, name: Option<&str>, body: &Value) -> io::Result<String> {
        let path = match name {
            Some(n) => format!("/containers/create?name={n}"),
            None => "/containers/create".into(),
        };
        let v = self.json("POST", &path, Some(body))?;
        v["Id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| other("container create: no Id"))
    }

    pub fn container_start(&mut self, id: &str) -> io::Result<()> {
        self.json("POST", &format!("/containers/{id}/start"), None)
            .map(drop)
    }

    /// Force-removes a container; a missing one, or a removal already under way, is fine.
    pub fn container_remove(&mut self, id: &str) -> io::Result<()> {
        let r = self.call(
            "DELETE",
            &format!("/containers/{id}?force=true&v=true"),
            None,
        )?;
        let text = String::from_utf8_lossy(&r.body);
        if r.status < 400 || r.status == 404 || (r.status == 409 && text.contains("in progress")) {
            Ok(())
        } else {
            Err(other(format!(
                "container remove: HTTP {}: {text}",
                r.status
            )))
        }
    }
}
