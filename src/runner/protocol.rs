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
//! | `0x81` READY | agent → host | 0 | JSON: protocol, pid, python, subreaper, zygote, warnings |
//! | `0x82` STARTED | agent → host | execution | JSON: pid |
//! | `0x83` STDOUT | agent → host | execution | bytes |
//! | `0x84` STDERR | agent → host | execution | bytes |
//! | `0x85` EXIT | agent → host | execution | JSON: code, signal, oom, session_lost, cause (why the session is lost, with session_lost) |
//! | `0x86` ERROR | agent → host | execution, session, or 0 | JSON: message, and for a block refused because its session is lost: code [`ERR_SESSION_LOST`], cause |
//! | `0x87` SESSION_READY | agent → host | session | empty |
//! | `0x88` PONG | agent → host | as PING | as PING |
//!
//! Every STDOUT and STDERR frame of an execution comes before its EXIT; an ERROR for an
//! execution replaces its STARTED and EXIT.

use std::fmt;

/// The largest `len` either side accepts: 64 MiB of payload and the header.
pub(crate) const MAX_FRAME: u32 = 64 * 1024 * 1024 + 5;

pub(crate) const RUN: u8 = 0x01;
pub(crate) const CANCEL: u8 = 0x02;
pub(crate) const SESSION_OPEN: u8 = 0x03;
pub(crate) const SESSION_CLOSE: u8 = 0x04;
pub(crate) const SHUTDOWN: u8 = 0x05;
/// Spoken by the agent (answered with PONG); the host has no use for it yet but tests.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) const PING: u8 = 0x06;
pub(crate) const SESSION_RESET: u8 = 0x07;
pub(crate) const READY: u8 = 0x81;
pub(crate) const STARTED: u8 = 0x82;
pub(crate) const STDOUT: u8 = 0x83;
pub(crate) const STDERR: u8 = 0x84;
pub(crate) const EXIT: u8 = 0x85;
pub(crate) const ERROR: u8 = 0x86;
pub(crate) const SESSION_READY: u8 = 0x87;
pub(crate) const PONG: u8 = 0x88;
/// ERROR's `code` for a session block refused because its session is lost (agent.py's
/// `ERR_SESSION_LOST`).
pub(crate) const ERR_SESSION_LOST: &str = "session_lost";

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
pub(crate) fn encode(kind: u8, id: u32, payload: &[u8]) -> Vec<u8> {
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
        let mut stream = encode(RUN, 7, br#"{"code":"print(1)"}"#);
        stream.extend(encode(STDOUT, 7, b""));
        stream.extend(encode(EXIT, u32::MAX, &[0xff; 300]));
        for piece in 1..stream.len() + 1 {
            let frames = decode_all(&stream, piece).unwrap();
            assert_eq!(frames.len(), 3, "piece {piece}");
            assert_eq!((frames[0].kind, frames[0].id), (RUN, 7));
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
            d.feed(&encode(PING, 1, b""), |_| panic!("no frame"))
                .is_err()
        );
        let huge = (MAX_FRAME + 1).to_be_bytes();
        assert!(Decoder::new().feed(&huge, |_| {}).is_err());
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
        let frame = encode(STDERR, 2, b"hello");
        let err = decode_all(&frame[..frame.len() - 1], 3).unwrap_err();
        assert!(err.0.contains("ended inside a frame"), "{err}");
        assert!(decode_all(&[], 1).unwrap().is_empty());
    }
}
