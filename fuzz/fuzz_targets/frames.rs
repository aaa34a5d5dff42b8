//! Docker's stdout/stderr frame demultiplexer (`src/docker/frames.rs`).
//!
//! Input: `[mode, split_a, split_b, rest...]`. Mode bit 0: raw (TTY) stream. Mode bit 1:
//! `rest` is a recipe for well-formed frames (`[stream, len, len bytes]...`), which are encoded
//! and must come back exactly; otherwise `rest` is fed as it is.
//!
//! Invariants: no panic; no empty piece is emitted; feeding the stream whole, in three pieces
//! split anywhere, or a byte at a time gives the same output and the same error; the output
//! equals a whole-buffer reference parser's (for well-formed input: the input minus headers);
//! raw mode emits the input unchanged as stdout.
#![no_main]

use dockexec::__fuzz::{Demuxer, Stream};
use libfuzzer_sys::fuzz_target;

/// Coalesced (stream, bytes) runs, and how the stream ended.
type Outcome = (Vec<(Stream, Vec<u8>)>, Result<(), String>);

fn push(out: &mut Vec<(Stream, Vec<u8>)>, s: Stream, b: &[u8]) {
    assert!(!b.is_empty(), "empty piece emitted");
    match out.last_mut() {
        Some((ls, lb)) if *ls == s => lb.extend_from_slice(b),
        _ => out.push((s, b.to_vec())),
    }
}

fn demux<'a>(raw: bool, pieces: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
    let mut d = Demuxer::new(raw);
    let mut out = Vec::new();
    for p in pieces {
        if let Err(e) = d.feed(p, |s, b| push(&mut out, s, b)) {
            return (out, Err(format!("feed: {e}")));
        }
    }
    let end = d.finish().map_err(|e| format!("finish: {e}"));
    (out, end)
}

/// The framing parsed from a whole buffer, the obvious way: the output up to the first error,
/// whether there was one, and the number of frames.
fn reference(mut input: &[u8]) -> (Vec<(Stream, Vec<u8>)>, bool, usize) {
    let mut out = Vec::new();
    let mut frames = 0;
    while !input.is_empty() {
        if input.len() < 8 {
            return (out, true, frames);
        }
        let stream = match input[0] {
            0 | 1 => Stream::Stdout,
            2 => Stream::Stderr,
            _ => return (out, true, frames),
        };
        if input[1..4] != [0, 0, 0] {
            return (out, true, frames);
        }
        frames += 1;
        let len = u32::from_be_bytes(input[4..8].try_into().unwrap()) as usize;
        let body = &input[8..];
        let n = len.min(body.len());
        if n > 0 {
            push(&mut out, stream, &body[..n]);
        }
        if n < len {
            return (out, true, frames);
        }
        input = &body[n..];
    }
    (out, false, frames)
}

fn frames_from_recipe(mut recipe: &[u8]) -> (Vec<u8>, Vec<(Stream, Vec<u8>)>) {
    let (mut bytes, mut want) = (Vec::new(), Vec::new());
    while let [kind, len, rest @ ..] = recipe {
        let stream_byte = kind % 3;
        let n = (*len as usize).min(rest.len());
        let payload = &rest[..n];
        bytes.extend_from_slice(&[stream_byte, 0, 0, 0]);
        bytes.extend_from_slice(&(n as u32).to_be_bytes());
        bytes.extend_from_slice(payload);
        if !payload.is_empty() {
            let s = if stream_byte == 2 {
                Stream::Stderr
            } else {
                Stream::Stdout
            };
            push(&mut want, s, payload);
        }
        recipe = &rest[n..];
    }
    (bytes, want)
}

fuzz_target!(|data: &[u8]| {
    let [mode, a, b, rest @ ..] = data else {
        return;
    };
    let raw = mode & 1 == 1;
    let (input, recipe_want) = if mode & 2 == 2 {
        let (bytes, want) = frames_from_recipe(rest);
        (bytes, Some(want))
    } else {
        (rest.to_vec(), None)
    };

    let whole = demux(raw, [&input[..]]);
    let (a, b) = {
        let n = input.len() + 1;
        let (x, y) = (*a as usize * 7919 % n, *b as usize * 104729 % n);
        (x.min(y), x.max(y))
    };
    let split = demux(raw, [&input[..a], &input[a..b], &input[b..]]);
    assert_eq!(whole, split, "split at {a},{b}");
    let singles = demux(raw, input.chunks(1));
    assert_eq!(whole, singles, "a byte at a time");

    if raw {
        assert!(whole.1.is_ok());
        let want: Vec<_> = if input.is_empty() {
            vec![]
        } else {
            vec![(Stream::Stdout, input.clone())]
        };
        assert_eq!(whole.0, want);
        return;
    }

    let (ref_out, ref_err, frames) = reference(&input);
    assert_eq!(whole.0, ref_out, "output differs from the reference parser");
    assert_eq!(whole.1.is_err(), ref_err, "{:?}", whole.1);
    if whole.1.is_ok() {
        let emitted: usize = whole.0.iter().map(|(_, b)| b.len()).sum();
        assert_eq!(
            emitted,
            input.len() - 8 * frames,
            "payload = input minus headers"
        );
    }
    if let Some(want) = recipe_want {
        assert_eq!(whole, (want, Ok(())), "well-formed frames must round-trip");
    }
});
