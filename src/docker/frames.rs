//! Demultiplexer for Docker's attach/exec stream.
//!
//! Without a TTY, Docker frames the output: an 8-byte header `[stream, 0, 0, 0, len_be32]`
//! followed by `len` payload bytes, where stream 1 is stdout and 2 is stderr (0, stdin, is
//! treated as stdout). With a TTY the stream is raw and all of it is stdout.
//!
//! [`Demuxer::feed`] accepts the bytes in whatever pieces the socket hands out — a header or a
//! payload may be split across reads — and emits payload pieces as soon as they arrive, without
//! waiting for the rest of a frame, so live output is never held back and no frame is buffered.

pub(crate) use crate::output::Stream;

/// A byte stream that is not Docker's framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FrameError(pub(crate) String);

const HEADER: usize = 8;

/// Incremental demultiplexer; see the module docs.
#[derive(Debug)]
pub(crate) struct Demuxer {
    raw: bool,
    header: [u8; HEADER],
    header_len: usize,
    /// Payload bytes still owed by the current frame, and its stream.
    remaining: usize,
    stream: Stream,
}

impl Demuxer {
    /// A demuxer for a framed stream (`raw = false`) or a TTY stream (`raw = true`).
    pub(crate) fn new(raw: bool) -> Demuxer {
        Demuxer {
            raw,
            header: [0; HEADER],
            header_len: 0,
            remaining: 0,
            stream: Stream::Stdout,
        }
    }

    /// Feeds the next bytes read from the socket, calling `emit` for each payload piece.
    ///
    /// Empty pieces are never emitted. On error the demuxer stays in its error position: the
    /// caller should stop feeding it.
    pub(crate) fn feed(
        &mut self,
        mut input: &[u8],
        mut emit: impl FnMut(Stream, &[u8]),
    ) -> Result<(), FrameError> {
        if self.raw {
            if !input.is_empty() {
                emit(Stream::Stdout, input);
            }
            return Ok(());
        }
        while !input.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(input.len());
                emit(self.stream, &input[..n]);
                self.remaining -= n;
                input = &input[n..];
                continue;
            }
            // Fast path: a whole header in this piece (the common case) needs no copy.
            if self.header_len == 0 && input.len() >= HEADER {
                let (h, rest) = input.split_at(HEADER);
                self.start_frame(h.try_into().expect("8 bytes"))?;
                input = rest;
                continue;
            }
            let n = (HEADER - self.header_len).min(input.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&input[..n]);
            self.header_len += n;
            input = &input[n..];
            if self.header_len == HEADER {
                self.header_len = 0;
                self.start_frame(self.header)?;
            }
        }
        Ok(())
    }

    fn start_frame(&mut self, h: [u8; HEADER]) -> Result<(), FrameError> {
        self.stream = match h[0] {
            0 | 1 => Stream::Stdout,
            2 => Stream::Stderr,
            other => {
                return Err(FrameError(format!(
                    "unknown stream type {other} in frame header {h:?}"
                )));
            }
        };
        if h[1..4] != [0, 0, 0] {
            return Err(FrameError(format!("malformed frame header {h:?}")));
        }
        self.remaining = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
        Ok(())
    }

    /// Checks that the stream ended on a frame boundary.
    pub(crate) fn finish(&self) -> Result<(), FrameError> {
        if self.header_len > 0 {
            return Err(FrameError(format!(
                "stream ended inside a frame header ({} of 8 bytes)",
                self.header_len
            )));
        }
        if self.remaining > 0 {
            return Err(FrameError(format!(
                "stream ended {} bytes short of the frame's end",
                self.remaining
            )));
        }
        Ok(())
    }
}

/// Builds one frame: used by tests and benches.
#[cfg(test)]
pub(crate) fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER + payload.len());
    v.extend_from_slice(&[stream, 0, 0, 0]);
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    type Pieces = Vec<(Stream, Vec<u8>)>;

    fn run(raw: bool, pieces: &[&[u8]]) -> (Pieces, Result<(), FrameError>) {
        let mut d = Demuxer::new(raw);
        let mut out: Pieces = Vec::new();
        for p in pieces {
            if let Err(e) = d.feed(p, |s, b| {
                assert!(!b.is_empty(), "empty piece emitted");
                match out.last_mut() {
                    Some((ls, lb)) if *ls == s => lb.extend_from_slice(b),
                    _ => out.push((s, b.to_vec())),
                }
            }) {
                return (out, Err(e));
            }
        }
        let end = d.finish();
        (out, end)
    }

    #[test]
    fn whole_frames() {
        let mut bytes = frame(1, b"hello ");
        bytes.extend(frame(2, b"oops"));
        bytes.extend(frame(1, b"world"));
        let (out, end) = run(false, &[&bytes]);
        end.unwrap();
        assert_eq!(
            out,
            vec![
                (Stream::Stdout, b"hello ".to_vec()),
                (Stream::Stderr, b"oops".to_vec()),
                (Stream::Stdout, b"world".to_vec()),
            ]
        );
    }

    #[test]
    fn every_split_point_gives_the_same_result() {
        let mut bytes = frame(1, b"abc");
        bytes.extend(frame(2, b""));
        bytes.extend(frame(2, b"defgh"));
        bytes.extend(frame(0, b"i"));
        let (want, end) = run(false, &[&bytes]);
        end.unwrap();
        for a in 0..=bytes.len() {
            for b in a..=bytes.len() {
                let (got, end) = run(false, &[&bytes[..a], &bytes[a..b], &bytes[b..]]);
                end.unwrap();
                assert_eq!(got, want, "split at {a},{b}");
            }
        }
        // One byte at a time.
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(run(false, &singles).0, want);
    }

    #[test]
    fn zero_length_frames_emit_nothing() {
        let bytes = [frame(1, b""), frame(2, b""), frame(1, b"x")].concat();
        let (out, end) = run(false, &[&bytes]);
        end.unwrap();
        assert_eq!(out, vec![(Stream::Stdout, b"x".to_vec())]);
    }

    #[test]
    fn header_split_across_reads() {
        let bytes = frame(2, b"err");
        let (out, end) = run(false, &[&bytes[..3], &bytes[3..7], &bytes[7..]]);
        end.unwrap();
        assert_eq!(out, vec![(Stream::Stderr, b"err".to_vec())]);
    }

    #[test]
    fn truncated_streams_are_reported() {
        let bytes = frame(1, b"abcdef");
        let (_, end) = run(false, &[&bytes[..10]]);
        assert!(end.unwrap_err().0.contains("4 bytes short"));
        let (_, end) = run(false, &[&bytes[..5]]);
        assert!(end.unwrap_err().0.contains("frame header"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let (_, end) = run(false, &[b"HTTP/1.1 200 OK\r\n"]);
        assert!(end.is_err());
        let (_, end) = run(false, &[&[1, 9, 0, 0, 0, 0, 0, 1, b'x']]);
        assert!(end.is_err());
    }

    #[test]
    fn raw_mode_is_all_stdout() {
        let (out, end) = run(true, &[b"\x01\x00\x00\x00", b"plain"]);
        end.unwrap();
        assert_eq!(
            out,
            vec![(Stream::Stdout, b"\x01\x00\x00\x00plain".to_vec())]
        );
    }

    #[test]
    fn non_utf8_payload_passes_through() {
        let bytes = frame(1, &[0xff, 0xfe, 0x00, 0x80]);
        let (out, _) = run(false, &[&bytes]);
        assert_eq!(out[0].1, vec![0xff, 0xfe, 0x00, 0x80]);
    }
}
