//! Redaction of secret values ([`ExecutorBuilder::secret_env`](crate::ExecutorBuilder::secret_env))
//! from everything the caller sees: output, live chunks, errors.
//!
//! Whole occurrences are replaced by [`REDACTED`]. Live output is redacted as it streams: a
//! piece that ends with the start of a secret keeps that start back until the next piece of
//! the same stream (or the end) says whether the secret follows, so a value split across two
//! chunks is still caught; output that cannot be the start of a secret passes at once.

use std::fmt;
use std::io;

use crate::error::Error;

/// What replaces each occurrence of a secret value.
pub const REDACTED: &str = "[REDACTED]";

/// The secret values of one executor. Cheap to clone; its `Debug` shows only how many.
#[derive(Clone, Default)]
pub(crate) struct Redactor {
    /// Longest first, so that of two secrets matching at one place the longer one wins.
    secrets: Vec<Vec<u8>>,
    /// `first[b]`: some secret starts with byte `b`. Most bytes are skipped on this alone.
    first: Vec<bool>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

impl Redactor {
    /// A redactor for `values`; empty values are ignored (the builder refuses them).
    pub(crate) fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Redactor {
        let mut secrets: Vec<Vec<u8>> = values
            .into_iter()
            .filter(|v| !v.is_empty())
            .map(|v| v.as_bytes().to_vec())
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        let mut first = vec![false; 256];
        for s in &secrets {
            first[usize::from(s[0])] = true;
        }
        Redactor { secrets, first }
    }

    /// True when there is nothing to redact.
    pub(crate) fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Appends `input` to `out` with every whole secret replaced. Unless `at_end`, stops before
    /// a tail that is the start of a secret more bytes could complete, and returns its length
    /// (at most the longest secret's length minus one).
    fn scan(&self, input: &[u8], at_end: bool, out: &mut Vec<u8>) -> usize {
        if self.secrets.is_empty() {
            // `first` is empty too in `Redactor::default()`.
            out.extend_from_slice(input);
            return 0;
        }
        let (mut i, mut plain) = (0, 0);
        while i < input.len() {
            if !self.first[usize::from(input[i])] {
                i += 1;
                continue;
            }
            let rest = &input[i..];
            // Held even when a shorter secret matches here: a longer one may still follow.
            if !at_end
                && self
                    .secrets
                    .iter()
                    .any(|s| s.len() > rest.len() && s.starts_with(rest))
            {
                out.extend_from_slice(&input[plain..i]);
                return rest.len();
            }
            match self.secrets.iter().find(|s| rest.starts_with(s)) {
                Some(s) => {
                    out.extend_from_slice(&input[plain..i]);
                    out.extend_from_slice(REDACTED.as_bytes());
                    i += s.len();
                    plain = i;
                }
                None => i += 1,
            }
        }
        out.extend_from_slice(&input[plain..]);
        0
    }

    /// `bytes` with every secret replaced.
    pub(crate) fn bytes(&self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        self.scan(bytes, true, &mut out);
        out
    }

    /// `bytes`, which were cut short of what followed them (a capped item), with every secret
    /// replaced and a tail that may be a secret's first part dropped: the bytes after the cut
    /// could have completed it. The stream redactor keeps such a tail back for its next piece;
    /// here no piece comes.
    pub(crate) fn bytes_cut(&self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        self.scan(bytes, false, &mut out);
        out
    }

    /// `text` with every secret replaced.
    pub(crate) fn text(&self, text: &str) -> String {
        if self.is_empty() {
            return text.to_string();
        }
        // A secret is whole UTF-8 and so is the mask, so the result is UTF-8 too; lossy
        // decoding only guards that reasoning.
        String::from_utf8_lossy(&self.bytes(text.as_bytes())).into_owned()
    }

    fn io(&self, e: io::Error) -> io::Error {
        let shown = e.to_string();
        let clean = self.text(&shown);
        if clean == shown {
            e
        } else {
            io::Error::new(e.kind(), clean)
        }
    }

    /// `e` with every secret replaced in its messages (and in a source that shows one).
    pub(crate) fn error(&self, e: Error) -> Error {
        if self.is_empty() {
            return e;
        }
        let t = |s: String| self.text(&s);
        match e {
            Error::Connect {
                endpoint,
                reason,
                source,
            } => Error::Connect {
                endpoint: t(endpoint),
                reason: t(reason),
                source: source.map(|s| self.io(s)),
            },
            Error::Docker { status, message } => Error::Docker {
                status,
                message: t(message),
            },
            Error::ImageNotFound { image, message } => Error::ImageNotFound {
                image: t(image),
                message: t(message),
            },
            Error::Pull { image, message } => Error::Pull {
                image: t(image),
                message: t(message),
            },
            Error::InvalidInput(m) => Error::InvalidInput(t(m)),
            Error::Protocol { message, source } => {
                // A parser's error may quote what it could not parse: keep it only when clean.
                let source = source.filter(|s| {
                    let shown = s.to_string();
                    self.text(&shown) == shown
                });
                Error::Protocol {
                    message: t(message),
                    source,
                }
            }
            Error::InitCommand { code, output } => Error::InitCommand {
                code,
                output: t(output),
            },
            Error::Timeout { what } => Error::Timeout { what: t(what) },
            Error::Io { path, source } => Error::Io {
                path,
                source: self.io(source),
            },
            Error::Transport { what, source } => Error::Transport {
                what: t(what),
                source: self.io(source),
            },
            Error::Agent(m) => Error::Agent(t(m)),
            Error::Internal(m) => Error::Internal(t(m)),
            other => other,
        }
    }

    /// A streaming redactor for one output stream.
    pub(crate) fn stream(&self) -> StreamRedactor {
        StreamRedactor::default()
    }
}

/// One output stream's redaction state: the held-back tail that may start a secret.
#[derive(Debug, Default)]
pub(crate) struct StreamRedactor {
    held: Vec<u8>,
}

impl StreamRedactor {
    /// The redacted bytes of `piece` that can be shown now; a tail that may start a secret
    /// waits for the next piece.
    pub(crate) fn feed(&mut self, r: &Redactor, piece: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.held.len() + piece.len());
        if self.held.is_empty() {
            let held = r.scan(piece, false, &mut out);
            self.held.extend_from_slice(&piece[piece.len() - held..]);
        } else {
            self.held.extend_from_slice(piece);
            let all = std::mem::take(&mut self.held);
            let held = r.scan(&all, false, &mut out);
            self.held.extend_from_slice(&all[all.len() - held..]);
        }
        out
    }

    /// How many bytes wait for the next piece: output the block wrote that is not shown yet.
    pub(crate) fn held(&self) -> usize {
        self.held.len()
    }

    /// At the stream's end: what was held back, redacted.
    pub(crate) fn flush(&mut self, r: &Redactor) -> Vec<u8> {
        let all = std::mem::take(&mut self.held);
        let mut out = Vec::with_capacity(all.len());
        r.scan(&all, true, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_all(r: &Redactor, pieces: &[&[u8]]) -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut s = r.stream();
        let mut shown = Vec::new();
        let mut all = Vec::new();
        for p in pieces {
            let out = s.feed(r, p);
            all.extend_from_slice(&out);
            shown.push(out);
        }
        let tail = s.flush(r);
        all.extend_from_slice(&tail);
        shown.push(tail);
        (all, shown)
    }

    #[test]
    fn whole_values_are_replaced() {
        let r = Redactor::new(["hunter2", "abc", "abcdef"]);
        assert_eq!(r.text("pw=hunter2;"), "pw=[REDACTED];");
        assert_eq!(r.text("abcdefabcx"), "[REDACTED][REDACTED]x");
        assert_eq!(r.text("ab hunter hunter22"), "ab hunter [REDACTED]2");
        assert_eq!(Redactor::new([]).text("hunter2"), "hunter2");
        assert_eq!(format!("{r:?}"), "Redactor { secrets: 3 }");
    }

    #[test]
    fn a_value_split_across_pieces_is_caught_at_every_split() {
        let r = Redactor::new(["s3cr3t-value"]);
        let text = b"before s3cr3t-value middle s3cr3t-valu end s3cr3t-value";
        let want = b"before [REDACTED] middle s3cr3t-valu end [REDACTED]";
        for a in 0..=text.len() {
            for b in a..=text.len() {
                let (all, shown) = stream_all(&r, &[&text[..a], &text[a..b], &text[b..]]);
                assert_eq!(all, want, "splits {a} {b}");
                // What was shown at any time is the start of the redacted whole: no byte of a
                // secret was ever let out early.
                let mut so_far = Vec::new();
                for piece in &shown {
                    so_far.extend_from_slice(piece);
                    assert!(want.starts_with(&so_far), "splits {a} {b}");
                }
            }
        }
        // Byte by byte.
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(stream_all(&r, &bytes).0, want);
    }

    #[test]
    fn streaming_equals_one_shot_for_overlapping_secrets_and_random_splits() {
        // A tiny alphabet makes secrets overlap, nest and repeat in the data.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for case in 0..2000 {
            let word = |rand: &mut dyn FnMut(usize) -> usize, len: usize| -> String {
                (0..len).map(|_| ['a', 'b', 'c'][rand(3)]).collect()
            };
            let mut secrets = Vec::new();
            for _ in 0..1 + rand(3) {
                let len = 1 + rand(5);
                secrets.push(word(&mut rand, len));
            }
            let r = Redactor::new(secrets.iter().map(String::as_str));
            let len = rand(40);
            let data = word(&mut rand, len).into_bytes();
            let want = r.bytes(&data);
            let mut pieces = Vec::new();
            let mut at = 0;
            while at < data.len() {
                let n = 1 + rand(data.len() - at);
                pieces.push(&data[at..at + n]);
                at += n;
            }
            let (all, shown) = stream_all(&r, &pieces);
            assert_eq!(
                all,
                want,
                "case {case}: {secrets:?} {:?} {pieces:?}",
                data.escape_ascii().to_string()
            );
            let mut so_far = Vec::new();
            for piece in &shown {
                so_far.extend_from_slice(piece);
                assert!(want.starts_with(&so_far), "case {case}");
            }
        }
    }

    #[test]
    fn a_cut_drops_a_secrets_first_part_at_its_end() {
        let r = Redactor::new(["secret", "pass"]);
        assert_eq!(r.bytes(b"a secr"), b"a secr");
        assert_eq!(r.bytes_cut(b"a secr"), b"a ");
        assert_eq!(r.bytes_cut(b"a secret b pa"), b"a [REDACTED] b ");
        // "sec" is whole, but "secret" could have followed: gone too.
        let r = Redactor::new(["secret", "sec"]);
        assert_eq!(r.bytes_cut(b"x sec"), b"x ");
        assert_eq!(r.bytes_cut(b"plain"), b"plain");
        assert_eq!(Redactor::default().bytes_cut(b"a secr"), b"a secr");
    }

    #[test]
    fn ordinary_output_is_not_held() {
        let r = Redactor::new(["s3cr3t"]);
        let mut s = r.stream();
        assert_eq!(s.feed(&r, b"hello\n"), b"hello\n");
        // Only the tail that starts the secret waits.
        assert_eq!(s.feed(&r, b"x s3c"), b"x ");
        assert_eq!(s.feed(&r, b"ond\n"), b"s3cond\n");
        assert_eq!(s.feed(&r, b"s"), b"");
        assert_eq!(s.flush(&r), b"s");
    }

    #[test]
    fn errors_lose_the_value() {
        let r = Redactor::new(["hunter2"]);
        let e = r.error(Error::InitCommand {
            code: Some(1),
            output: "token hunter2\n".into(),
        });
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(!format!("{e:?}").contains("hunter2"), "{e:?}");
        let e = r.error(Error::Io {
            path: "/x".into(),
            source: io::Error::other("bad hunter2"),
        });
        assert!(!format!("{e:?}").contains("hunter2"), "{e:?}");
        let e = r.error(Error::Docker {
            status: 400,
            message: "invalid env FOO=hunter2".into(),
        });
        assert_eq!(
            e.to_string(),
            "docker daemon error 400: invalid env FOO=[REDACTED]"
        );
    }
}
