//! Live output: `Execution::chunks()` delivers stdout and stderr pieces as they arrive, in
//! write order; any number of receivers, a late one replays what came before; every stream ends
//! by itself when the execution ends; a slow, stuck or absent consumer never holds the block up.
use crate::common;

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use dockexec::{Chunk, CodeBlock, Output, Stream};

const LIMIT: Duration = Duration::from_secs(60);

/// Drains a receiver to its end (it must end by itself); returns its chunks.
fn drain(rx: &Receiver<Chunk>) -> Vec<Chunk> {
    rx.iter().collect()
}

/// (stdout, stderr, merged) of a chunk sequence.
fn split(chunks: &[Chunk]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let (mut o, mut e, mut m) = (Vec::new(), Vec::new(), Vec::new());
    for c in chunks {
        match c.stream() {
            Stream::Stdout => o.extend_from_slice(c.bytes()),
            Stream::Stderr => e.extend_from_slice(c.bytes()),
        }
        m.extend_from_slice(c.bytes());
    }
    (o, e, m)
}

fn assert_same_as_output(chunks: &[Chunk], out: &Output, who: &str) {
    let (o, e, m) = split(chunks);
    assert_eq!(o, out.stdout, "{who}: stdout differs from the output");
    assert_eq!(e, out.stderr, "{who}: stderr differs from the output");
    assert_eq!(m, out.merged(), "{who}: order differs from the output's");
}

#[test]
fn a_line_printed_before_a_sleep_arrives_before_the_block_exits() {
    let (b, _guard) = common::case_builder("live-line");
    common::watchdog(LIMIT, move || {
        let ex = b.start().unwrap();
        let e = ex
            .spawn(&CodeBlock::python(
                "import time\nprint('early')\ntime.sleep(1)\nprint('late')",
            ))
            .unwrap();
        let rx = e.chunks();
        // Unbuffered, print() writes "early" and "\n" separately: gather up to the newline.
        let mut first = Vec::new();
        while !first.ends_with(b"\n") {
            match rx
                .recv_timeout(Duration::from_secs(20))
                .expect("a live chunk")
            {
                Chunk::Stdout(b) => first.extend_from_slice(&b),
                other => panic!("unexpected chunk {other:?}"),
            }
        }
        let running = e.try_wait().unwrap().is_none();
        let arrived = Instant::now();
        assert_eq!(first, b"early\n");
        assert!(
            running,
            "the first line arrived only after the block had exited"
        );
        let rest = drain(&rx);
        assert!(
            arrived.elapsed() >= Duration::from_millis(500),
            "the block should still have slept after the first line"
        );
        let out = e.wait().unwrap();
        assert!(out.status.success(), "{}", out.status);
        let mut all = vec![Chunk::Stdout(first)];
        all.extend(rest);
        assert_same_as_output(&all, out, "live receiver");
        assert_eq!(out.stdout, b"early\nlate\n");
    });
}

#[test]
fn chunk_order_matches_write_order_across_stdout_and_stderr() {
    if common::exec_strategy()
        && common::differs_here(
            "chunk_order_matches_write_order_across_stdout_and_stderr",
            common::Differs::ExecStreamOrder,
        )
    {
        return;
    }
    let (b, _guard) = common::case_builder("live-order");
    common::watchdog(LIMIT, move || {
        let ex = b.start().unwrap();
        // Each write is flushed, and the next waits 25 ms: the daemon reads stdout and stderr
        // from two pipes, so writes closer together than its copying may reach it reordered
        // (5 ms was not enough in CI's one test binary, beside the memory-hog tests).
        let code = r#"
import sys, time
for i in range(20):
    sys.stdout.write(f"o{i}\n"); sys.stdout.flush(); time.sleep(0.025)
    sys.stderr.write(f"e{i}\n"); sys.stderr.flush(); time.sleep(0.025)
"#;
        let e = ex.spawn(&CodeBlock::python(code)).unwrap();
        let rx = e.chunks();
        let chunks = drain(&rx);
        let out = e.wait().unwrap();
        common::assert_success(out);
        let expected: Vec<(Stream, String)> = (0..20)
            .flat_map(|i| {
                [
                    (Stream::Stdout, format!("o{i}\n")),
                    (Stream::Stderr, format!("e{i}\n")),
                ]
            })
            .collect();
        // Chunks may split or join writes of one stream; compare runs per stream.
        let mut got: Vec<(Stream, String)> = Vec::new();
        for c in &chunks {
            let text = String::from_utf8_lossy(c.bytes()).into_owned();
            match got.last_mut() {
                Some((s, t)) if *s == c.stream() => t.push_str(&text),
                _ => got.push((c.stream(), text)),
            }
        }
        assert_eq!(got, expected, "live chunks out of write order");
        assert_same_as_output(&chunks, out, "live receiver");
        let pieces: Vec<(Stream, String)> = out
            .pieces()
            .map(|(s, b)| (s, String::from_utf8_lossy(b).into_owned()))
            .collect();
        assert_eq!(pieces, expected, "Output::pieces() out of write order");
    });
}

#[test]
fn several_receivers_each_see_everything_and_the_end() {
    let (b, _guard) = common::case_builder("live-many");
    common::watchdog(LIMIT, move || {
        let ex = b.start().unwrap();
        let code = r#"
import sys, time
print("first")
print("err1", file=sys.stderr)
time.sleep(0.5)
print("second")
print("err2", file=sys.stderr)
time.sleep(0.3)
print("third")
"#;
        let e = ex.spawn(&CodeBlock::python(code)).unwrap();
        // Two receivers from the start, iterated on their own threads.
        let early: Vec<_> = (0..2)
            .map(|_| {
                let rx = e.chunks();
                thread::spawn(move || drain(&rx))
            })
            .collect();
        // A third taken mid-way replays what came before it.
        let probe = e.chunks();
        common::await_stdout(&probe, "first", Duration::from_secs(20));
        let mid = e.chunks();
        let mid = thread::spawn(move || drain(&mid));
        let out = e.wait().unwrap();
        assert!(out.status.success(), "{}", out.status);
        // A fourth, taken after the end, replays everything and ends at once.
        let late = drain(&e.chunks());
        for (i, h) in early.into_iter().enumerate() {
            assert_same_as_output(&h.join().unwrap(), out, &format!("early receiver {i}"));
        }
        assert_same_as_output(&mid.join().unwrap(), out, "mid-way receiver");
        assert_same_as_output(&late, out, "late receiver");
        // The probe, partly read, still ends.
        let _ = drain(&probe);
        assert_eq!(out.stdout, b"first\nsecond\nthird\n");
        assert_eq!(out.stderr, b"err1\nerr2\n");
    });
}

#[test]
fn dropping_every_receiver_does_not_stall_the_block() {
    if common::exec_strategy()
        && common::differs_here(
            "dropping_every_receiver_does_not_stall_the_block",
            common::Differs::ShortExecPipeWrites,
        )
    {
        return;
    }
    let (b, _guard) = common::case_builder("live-dropped");
    common::watchdog(LIMIT, move || {
        let ex = b.start().unwrap();
        // 8 MiB in 64 KiB writes: far more than any pipe or channel buffer.
        let code = r#"
import sys
block = b"y" * 65536
for _ in range(128):
    sys.stdout.buffer.write(block)
sys.stdout.buffer.flush()
print("end", file=sys.stderr)
"#;
        let e = ex.spawn(&CodeBlock::python(code)).unwrap();
        let receivers: Vec<_> = (0..3).map(|_| e.chunks()).collect();
        // One read, then all dropped.
        let _ = receivers[0].recv_timeout(Duration::from_secs(20));
        drop(receivers);
        let out = e
            .wait_timeout(Duration::from_secs(45))
            .unwrap()
            .expect("the block stalled once its receivers were dropped");
        assert!(out.status.success(), "{}", out.status);
        assert_eq!(out.stdout.len(), 128 * 65536);
        assert_eq!(out.stderr, b"end\n");
    });
}

#[test]
fn an_absent_or_stuck_consumer_never_blocks_the_worker() {
    if common::exec_strategy()
        && common::differs_here(
            "an_absent_or_stuck_consumer_never_blocks_the_worker",
            common::Differs::ShortExecPipeWrites,
        )
    {
        return;
    }
    let (b, _guard) = common::case_builder("live-stuck");
    common::watchdog(LIMIT, move || {
        let ex = b.start().unwrap();
        let code = r#"
import sys
block = b"z" * 65536
for _ in range(160):
    sys.stdout.buffer.write(block)
sys.stdout.buffer.flush()
"#;
        let e = ex.spawn(&CodeBlock::python(code)).unwrap();
        // Never read until the end.
        let absent = e.chunks();
        // Reads one chunk, then is stuck until released after the block has finished.
        let stuck = e.chunks();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (first_tx, first_rx) = mpsc::channel::<()>();
        let consumer = thread::spawn(move || {
            let mut got = vec![stuck.recv().expect("a first chunk")];
            first_tx.send(()).unwrap();
            release_rx.recv().unwrap();
            got.extend(stuck.iter());
            got
        });
        first_rx.recv_timeout(Duration::from_secs(20)).unwrap();
        let out = e
            .wait_timeout(Duration::from_secs(45))
            .unwrap()
            .expect("the block was held up by its consumers");
        assert!(out.status.success(), "{}", out.status);
        assert_eq!(out.stdout.len(), 160 * 65536);
        release_tx.send(()).unwrap();
        assert_same_as_output(&consumer.join().unwrap(), out, "stuck consumer");
        assert_same_as_output(&drain(&absent), out, "absent consumer");
    });
}
