//! The agent protocol's framing: pure, so it can be unit-tested and fuzzed.
//!
//! Both directions carry the same frames over the agent exec's stdin and stdout:
//!
//! ```text
//! len: u32 big-endian  (the bytes that follow: 5 + payload length)
//! kind: u8
//! id: u32 big-endian   (an execution, a session, or 0 for the agent itself)
//! payload: len - 5 bytes (JSON objects, or raw output bytes)
//! ```
//!
//! `len` below 5 or above [`MAX_FRAME`] is malformed; the stream cannot be resynchronised
//! after that, so the decoder stays failed.
//!
//! | kind | direction | id | payload |
//! |---|---|---|---|
//! | `0x01` RUN | host → agent | execution | JSON: lang, file, code, user, cwd, env, zygote, session, delete, grace_ms |
//! | `0x02` CANCEL | host → agent | execution | empty: kill the block's tree (for a session block: kill what it started, interrupt its session's process) |
//! | `0x03` SESSION_OPEN | host → agent | session | JSON: user, cwd, env |
//! | `0x04` SESSION_CLOSE | host → agent | session | empty |
//! | `0x05` SHUTDOWN | host → agent | 0 | empty: kill everything, exit |
//! | `0x06` PING | host → agent | any | echoed in PONG |
//! | `0x07` SESSION_RESET | host → agent | session | empty: a fresh namespace |
//! | `0x08` RESET | host → agent | a request id | JSON: user (the blocks' user). Ends every block and session, kills every process in the container whose uid is not root's; answered by RESET_DONE, or ERROR with [`ErrorCode::ResetFailed`] |
//! | `0x81` READY | agent → host | 0 | JSON: protocol, pid, python, subreaper, zygote, warnings |
//! | `0x82` STARTED | agent → host | execution | JSON: pid |
//! | `0x83` STDOUT | agent → host | execution | bytes |
//! | `0x84` STDERR | agent → host | execution | bytes |
//! | `0x85` EXIT | agent → host | execution | JSON: code, signal, oom, session_lost, cause (why the session is lost, with session_lost) |
//! | `0x86` ERROR | agent → host | execution, session, or 0 | JSON: code (an [`ErrorCode`]), message (for people), and with [`ErrorCode::SessionLost`]: cause |
//! | `0x87` SESSION_READY | agent → host | session | empty |
//! | `0x88` PONG | agent → host | as PING | as PING |
//! | `0x89` RESULT | agent → host | execution | a rich result: `u32` header length, JSON header (kind, items: mime, len, size, truncated), the items' bytes (see `agent/rich.py`) |
//! | `0x8a` RESET_DONE | agent → host | as RESET | JSON: killed (how many processes), rounds |
//!
//! Every STDOUT, STDERR and RESULT frame of an execution comes before its EXIT; an ERROR for an
//! execution replaces its STARTED and EXIT.

use std::fmt;

/// The largest `len` either side accepts: 64 MiB of payload and the header.
pub(crate) const MAX_FRAME: u32 = 64 * 1024 * 1024 + 5;

/// A frame's kind: the one source of the protocol's kind numbers. The agent
/// (`agent/protocol.py`) and the harness (`tests/agent/harness.py`) spell each as a constant of
/// the same name, and a unit test reads both to check that they agree with this enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    Run = 0x01,
    Cancel = 0x02,
    SessionOpen = 0x03,
    SessionClose = 0x04,
    Shutdown = 0x05,
    /// Spoken by the agent (answered with PONG); the host has no use for it yet but tests.
    Ping = 0x06,
    SessionReset = 0x07,
    /// The pool's fast reset (see `Executor::reset_for_pool`).
    Reset = 0x08,
    Ready = 0x81,
    Started = 0x82,
    Stdout = 0x83,
    Stderr = 0x84,
    Exit = 0x85,
    Error = 0x86,
    SessionReady = 0x87,
    Pong = 0x88,
    Result = 0x89,
    ResetDone = 0x8a,
}

impl Kind {
    /// Every kind, in number order.
    pub(crate) const ALL: [Kind; 18] = [
        Kind::Run,
        Kind::Cancel,
        Kind::SessionOpen,
        Kind::SessionClose,
        Kind::Shutdown,
        Kind::Ping,
        Kind::SessionReset,
        Kind::Reset,
        Kind::Ready,
        Kind::Started,
        Kind::Stdout,
        Kind::Stderr,
        Kind::Exit,
        Kind::Error,
        Kind::SessionReady,
        Kind::Pong,
        Kind::Result,
        Kind::ResetDone,
    ];

    /// The kind a frame's byte names; `None` for an unknown one.
    pub(crate) fn from_u8(byte: u8) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| *k as u8 == byte)
    }

    /// The constant's name on the Python side (`RUN`, `SESSION_READY`, …).
    #[cfg(test)]
    fn python_name(self) -> &'static str {
        match self {
            Kind::Run => "RUN",
            Kind::Cancel => "CANCEL",
            Kind::SessionOpen => "SESSION_OPEN",
            Kind::SessionClose => "SESSION_CLOSE",
            Kind::Shutdown => "SHUTDOWN",
            Kind::Ping => "PING",
            Kind::SessionReset => "SESSION_RESET",
            Kind::Reset => "RESET",
            Kind::Ready => "READY",
            Kind::Started => "STARTED",
            Kind::Stdout => "STDOUT",
            Kind::Stderr => "STDERR",
            Kind::Exit => "EXIT",
            Kind::Error => "ERROR",
            Kind::SessionReady => "SESSION_READY",
            Kind::Pong => "PONG",
            Kind::Result => "RESULT",
            Kind::ResetDone => "RESET_DONE",
        }
    }
}

/// An ERROR frame's `code`: why the agent refused or could not do what a frame asked. The host
/// branches on it, never on the message, which is for people. The one source of the codes: the
/// agent (`agent/protocol.py`) and the harness spell each as `ERR_<NAME> = "code"` in their
/// `# Error codes` block, and a unit test checks that they agree with this enum. A code this
/// enum does not know (a newer agent's) parses to `None`, and is handled as a plain refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorCode {
    /// Id 0: the host's byte stream broke the protocol; the agent exits.
    Protocol,
    /// Id 0: a bug in the agent; it exits.
    Internal,
    /// A malformed RUN or SESSION_OPEN payload, or a field of it.
    BadRequest,
    /// RUN's `lang` is none the agent runs.
    UnknownLanguage,
    /// The user or group a block or session runs as is not in the image's `/etc/passwd` or
    /// `/etc/group`.
    UnknownUser,
    /// RUN or SESSION_RESET names a session that is not open.
    UnknownSession,
    /// SESSION_OPEN of a session that is already open.
    SessionExists,
    /// A session block refused because its session's process is gone; `cause` says why.
    SessionLost,
    /// A session block still queued when its session was closed or reset.
    SessionEnded,
    /// The block or session could not be started: fork, the user switch, the code file, the
    /// working directory, or a shepherd or session process that died first.
    SpawnFailed,
    /// RESET refused (the blocks' user is root, or the agent is not) or not done (a process
    /// of a block survived every kill in time); the message says which. The host falls back
    /// on the full restart.
    ResetFailed,
}

impl ErrorCode {
    /// Every code.
    pub(crate) const ALL: [ErrorCode; 11] = [
        ErrorCode::Protocol,
        ErrorCode::Internal,
        ErrorCode::BadRequest,
        ErrorCode::UnknownLanguage,
        ErrorCode::UnknownUser,
        ErrorCode::UnknownSession,
        ErrorCode::SessionExists,
        ErrorCode::SessionLost,
        ErrorCode::SessionEnded,
        ErrorCode::SpawnFailed,
        ErrorCode::ResetFailed,
    ];

    /// The code as the frame spells it.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Protocol => "protocol_error",
            ErrorCode::Internal => "internal_error",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownLanguage => "unknown_language",
            ErrorCode::UnknownUser => "unknown_user",
            ErrorCode::UnknownSession => "unknown_session",
            ErrorCode::SessionExists => "session_exists",
            ErrorCode::SessionLost => "session_lost",
            ErrorCode::SessionEnded => "session_ended",
            ErrorCode::SpawnFailed => "spawn_failed",
            ErrorCode::ResetFailed => "reset_failed",
        }
    }

    /// The code a frame's `code` names; `None` for one this crate does not know.
    pub(crate) fn parse(code: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == code)
    }

    /// The constant's name on the Python side (`ERR_BAD_REQUEST`, …).
    #[cfg(test)]
    fn python_name(self) -> &'static str {
        match self {
            ErrorCode::Protocol => "ERR_PROTOCOL",
            ErrorCode::Internal => "ERR_INTERNAL",
            ErrorCode::BadRequest => "ERR_BAD_REQUEST",
            ErrorCode::UnknownLanguage => "ERR_UNKNOWN_LANGUAGE",
            ErrorCode::UnknownUser => "ERR_UNKNOWN_USER",
            ErrorCode::UnknownSession => "ERR_UNKNOWN_SESSION",
            ErrorCode::SessionExists => "ERR_SESSION_EXISTS",
            ErrorCode::SessionLost => "ERR_SESSION_LOST",
            ErrorCode::SessionEnded => "ERR_SESSION_ENDED",
            ErrorCode::SpawnFailed => "ERR_SPAWN_FAILED",
            ErrorCode::ResetFailed => "ERR_RESET_FAILED",
        }
    }
}

/// ERROR's `code` for a session block refused because its session is lost
/// ([`ErrorCode::SessionLost`]; the agent's `ERR_SESSION_LOST`), as a test spells it.
#[cfg(test)]
pub(crate) const ERR_SESSION_LOST: &str = ErrorCode::SessionLost.as_str();

/// One frame.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) kind: u8,
    pub(crate) id: u32,
    pub(crate) payload: Vec<u8>,
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("kind", &format_args!("{:#04x}", self.kind))
            .field("id", &self.id)
            .field("payload", &self.payload.escape_ascii().to_string())
            .finish()
    }
}

/// Why the byte stream is not a valid frame sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FrameError(pub(crate) String);

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Encodes one frame.
///
/// # Panics
/// Never for payloads the crate builds: callers bound them under [`MAX_FRAME`] first (code is
/// checked against it before it is sent).
pub(crate) fn encode(kind: Kind, id: u32, payload: &[u8]) -> Vec<u8> {
    encode_raw(kind as u8, id, payload)
}

/// [`encode`] with any kind byte, known or not (the fuzz targets send unknown ones).
pub(crate) fn encode_raw(kind: u8, id: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len() + 5).expect("payload bounded by the caller");
    let mut v = Vec::with_capacity(payload.len() + 9);
    v.extend_from_slice(&len.to_be_bytes());
    v.push(kind);
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// An incremental decoder: feed it bytes as they arrive, take whole frames out.
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    buf: Vec<u8>,
    /// Set once the stream is malformed; every later call returns it.
    failed: Option<FrameError>,
}

impl Decoder {
    pub(crate) fn new() -> Decoder {
        Decoder::default()
    }

    /// Appends `bytes` and hands every frame now complete to `emit`, in order.
    ///
    /// # Errors
    /// A length outside `5..=MAX_FRAME`; the decoder stays failed.
    pub(crate) fn feed(
        &mut self,
        bytes: &[u8],
        mut emit: impl FnMut(Frame),
    ) -> Result<(), FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.buf.extend_from_slice(bytes);
        let mut at = 0;
        while self.buf.len() - at >= 4 {
            let len = u32::from_be_bytes(self.buf[at..at + 4].try_into().expect("4 bytes"));
            if !(5..=MAX_FRAME).contains(&len) {
                let e = FrameError(format!("bad frame length {len}"));
                self.failed = Some(e.clone());
                self.buf = Vec::new();
                return Err(e);
            }
            let end = at + 4 + len as usize;
            if self.buf.len() < end {
                break;
            }
            let kind = self.buf[at + 4];
            let id = u32::from_be_bytes(self.buf[at + 5..at + 9].try_into().expect("4 bytes"));
            emit(Frame {
                kind,
                id,
                payload: self.buf[at + 9..end].to_vec(),
            });
            at = end;
        }
        self.buf.drain(..at);
        Ok(())
    }

    /// At the end of the stream: an error if a frame was cut short.
    ///
    /// # Errors
    /// Bytes of an unfinished frame remain.
    pub(crate) fn finish(&self) -> Result<(), FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FrameError(format!(
                "the stream ended inside a frame ({} bytes of it)",
                self.buf.len()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8], piece: usize) -> Result<Vec<Frame>, FrameError> {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        for chunk in bytes.chunks(piece.max(1)) {
            d.feed(chunk, |f| out.push(f))?;
        }
        d.finish()?;
        Ok(out)
    }

    #[test]
    fn round_trip_at_every_split() {
        let mut stream = encode(Kind::Run, 7, br#"{"code":"print(1)"}"#);
        stream.extend(encode(Kind::Stdout, 7, b""));
        stream.extend(encode(Kind::Exit, u32::MAX, &[0xff; 300]));
        for piece in 1..stream.len() + 1 {
            let frames = decode_all(&stream, piece).unwrap();
            assert_eq!(frames.len(), 3, "piece {piece}");
            assert_eq!((frames[0].kind, frames[0].id), (Kind::Run as u8, 7));
            assert_eq!(frames[0].payload, br#"{"code":"print(1)"}"#);
            assert!(frames[1].payload.is_empty());
            assert_eq!((frames[2].id, frames[2].payload.len()), (u32::MAX, 300));
        }
    }

    #[test]
    fn malformed_lengths_fail_and_stay_failed() {
        let mut d = Decoder::new();
        let err = d.feed(&[0, 0, 0, 4, 1, 0, 0, 0], |_| {}).unwrap_err();
        assert!(err.0.contains("bad frame length 4"), "{err}");
        assert!(
            d.feed(&encode(Kind::Ping, 1, b""), |_| panic!("no frame"))
                .is_err()
        );
        let huge = (MAX_FRAME + 1).to_be_bytes();
        assert!(Decoder::new().feed(&huge, |_| {}).is_err());
    }

    /// The `NAME, … = value, …` assignments of a Python source's block that starts at its
    /// `# Frame kinds` comment and ends at the first blank line.
    fn python_kinds(source: &str) -> Vec<(String, u8)> {
        let start = source
            .find("# Frame kinds")
            .expect("a '# Frame kinds' block");
        let block = &source[start..];
        let block = &block[..block.find("\n\n").unwrap_or(block.len())];
        let mut kinds = Vec::new();
        // One statement may span lines inside parentheses: join, then split on `=` pairs.
        let joined: String = block
            .lines()
            .map(|l| l.split('#').next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join(" ");
        let mut rest = joined.as_str();
        while let Some(eq) = rest.find('=') {
            let names: Vec<&str> = rest[..eq].split(',').map(str::trim).collect();
            let after = &rest[eq + 1..];
            // The values run to the next name list: as many numbers as names.
            let mut values = Vec::new();
            let mut tail = after;
            for _ in 0..names.len() {
                let t = tail.trim_start().trim_start_matches(['(', ',', ' ']);
                let end = t.find([',', ')', ' ']).unwrap_or(t.len());
                let v = &t[..end];
                let n = match v.strip_prefix("0x") {
                    Some(h) => u8::from_str_radix(h, 16),
                    None => v.parse(),
                }
                .unwrap_or_else(|_| panic!("a kind number, not {v:?}"));
                values.push(n);
                tail = t[end..].trim_start_matches([',', ')', ' ']);
            }
            kinds.extend(names.iter().map(|n| n.to_string()).zip(values));
            rest = tail;
        }
        kinds
    }

    #[test]
    fn the_python_sides_number_the_kinds_as_this_enum_does() {
        let expected: Vec<(String, u8)> = Kind::ALL
            .iter()
            .map(|k| (k.python_name().to_string(), *k as u8))
            .collect();
        for (file, source) in [
            (
                "src/runner/agent/ (AGENT_SOURCE)",
                crate::runner::agent::AGENT_SOURCE,
            ),
            (
                "tests/agent/harness.py",
                include_str!("../../tests/agent/harness.py"),
            ),
        ] {
            let mut got = python_kinds(source);
            got.sort_by_key(|(_, n)| *n);
            assert_eq!(got, expected, "{file} disagrees with protocol::Kind");
        }
        for k in Kind::ALL {
            assert_eq!(Kind::from_u8(k as u8), Some(k));
        }
        assert_eq!(Kind::from_u8(0x80), None);
    }

    /// The `NAME = "value"` lines of a Python source's block that starts at its
    /// `# Error codes` comment and ends at the first blank line.
    fn python_error_codes(source: &str) -> Vec<(String, String)> {
        let start = source
            .find("# Error codes")
            .expect("a '# Error codes' block");
        let block = &source[start..];
        let block = &block[..block.find("\n\n").unwrap_or(block.len())];
        block
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (name, value) = l.split_once('=').expect("NAME = \"value\"");
                let value = value.split('#').next().unwrap_or("").trim();
                let value = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or_else(|| panic!("a quoted code, not {value:?}"));
                (name.trim().to_string(), value.to_string())
            })
            .collect()
    }

    #[test]
    fn the_python_sides_spell_the_error_codes_as_this_enum_does() {
        let mut expected: Vec<(String, String)> = ErrorCode::ALL
            .iter()
            .map(|c| (c.python_name().to_string(), c.as_str().to_string()))
            .collect();
        expected.sort();
        for (file, source) in [
            (
                "src/runner/agent/ (AGENT_SOURCE)",
                crate::runner::agent::AGENT_SOURCE,
            ),
            (
                "tests/agent/harness.py",
                include_str!("../../tests/agent/harness.py"),
            ),
        ] {
            let mut got = python_error_codes(source);
            got.sort();
            assert_eq!(got, expected, "{file} disagrees with protocol::ErrorCode");
        }
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(c.as_str()), Some(c));
        }
        assert_eq!(ErrorCode::parse("a_code_from_a_newer_agent"), None);
        assert_eq!(ErrorCode::parse(""), None);
    }

    #[test]
    fn the_agent_speaks_the_same_session_lost_code() {
        let line = format!("ERR_SESSION_LOST = \"{ERR_SESSION_LOST}\"");
        assert!(
            crate::runner::agent::AGENT_SOURCE.contains(&line),
            "agent.py lacks {line}"
        );
    }

    #[test]
    fn a_cut_frame_is_reported_at_the_end() {
        let frame = encode(Kind::Stderr, 2, b"hello");
        let err = decode_all(&frame[..frame.len() - 1], 3).unwrap_err();
        assert!(err.0.contains("ended inside a frame"), "{err}");
        assert!(decode_all(&[], 1).unwrap().is_empty());
    }
}
