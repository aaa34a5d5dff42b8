//! The agent protocol decoder (`src/runner/protocol.rs`).
//!
//! Input: `[mode, split_a, split_b, rest...]`. Mode bit 0: `rest` is a recipe for frames
//! (`[kind, id, len, len bytes]...`) that are `encode`d and must decode back exactly, whatever
//! the split; otherwise `rest` is fed as it is.
//!
//! Invariants: no panic; whole, three pieces split anywhere, and a byte at a time give the same
//! frames and the same error; a failed decoder stays failed; encoded frames round-trip.
#![no_main]

use dockexec::__fuzz::{Decoder, MAX_FRAME, encode};
use libfuzzer_sys::fuzz_target;

type Frames = Vec<(u8, u32, Vec<u8>)>;

fn decode<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> (Frames, Result<(), String>) {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    for p in pieces {
        if let Err(e) = d.feed(p, |k, id, payload| out.push((k, id, payload))) {
            // The decoder stays failed, with the same error, and emits nothing more.
            let again = d.feed(&encode(0x06, 1, b""), |_, _, _| {
                panic!("frame after an error")
            });
            assert_eq!(again, Err(e.clone()));
            assert_eq!(d.finish(), Err(e.clone()));
            return (out, Err(e));
        }
    }
    let end = d.finish();
    (out, end)
}

fuzz_target!(|data: &[u8]| {
    let [mode, a, b, rest @ ..] = data else {
        return;
    };
    let mut want = None;
    let input = if mode & 1 == 1 {
        let (mut bytes, mut frames) = (Vec::new(), Vec::new());
        let mut recipe = rest;
        while let [kind, id, len, tail @ ..] = recipe {
            let n = (*len as usize).min(tail.len());
            // Spread the id byte over the whole u32 so both ends of the range are exercised.
            let id = u32::from(*id).wrapping_mul(0x0101_0101);
            bytes.extend_from_slice(&encode(*kind, id, &tail[..n]));
            frames.push((*kind, id, tail[..n].to_vec()));
            recipe = &tail[n..];
        }
        want = Some(frames);
        bytes
    } else {
        rest.to_vec()
    };

    let whole = decode([&input[..]]);
    let n = input.len() + 1;
    let (x, y) = (*a as usize * 7919 % n, *b as usize * 104729 % n);
    let (a, b) = (x.min(y), x.max(y));
    assert_eq!(
        decode([&input[..a], &input[a..b], &input[b..]]),
        whole,
        "split at {a},{b}"
    );
    assert_eq!(decode(input.chunks(1)), whole, "a byte at a time");

    for (_, _, payload) in &whole.0 {
        assert!(payload.len() as u64 + 5 <= u64::from(MAX_FRAME));
    }
    if let Some(frames) = want {
        assert_eq!(whole, (frames, Ok(())), "encoded frames must round-trip");
    }
});
