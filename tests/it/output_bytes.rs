//! Output is bytes: non-UTF-8 comes back exact, the two streams stay apart, arrival order is
//! kept, and large output arrives whole.
use crate::common;

use dockexec::{Chunk, CodeBlock, Stream};

#[test]
fn non_utf8_bytes_come_back_exact() {
    let ex = common::start();
    let out = ex
        .run(&CodeBlock::python(
            "import sys\n\
             sys.stdout.buffer.write(b'\\xff\\xfe\\x00abc')\n\
             sys.stdout.flush()\n\
             sys.stderr.buffer.write(b'err\\x80\\xc3(')\n\
             sys.stderr.flush()",
        ))
        .unwrap();
    common::assert_success(&out);
    assert_eq!(out.stdout, b"\xff\xfe\x00abc");
    assert_eq!(out.stderr, b"err\x80\xc3(");
    // The lossy helpers decode for display and never fail.
    assert_eq!(out.stdout_lossy(), "\u{fffd}\u{fffd}\u{0}abc");
    assert_eq!(out.stderr_lossy(), "err\u{fffd}\u{fffd}(");
    let merged = out.merged();
    assert_eq!(merged.len(), out.stdout.len() + out.stderr.len());
    assert!(out.merged_lossy().contains("abc"));
}

#[test]
fn non_utf8_bytes_in_live_chunks() {
    let ex = common::start();
    let execution = ex
        .spawn(&CodeBlock::sh("printf '\\377\\376\\000abc'"))
        .unwrap();
    let live: Vec<u8> = execution
        .chunks()
        .iter()
        .flat_map(|c| c.bytes().to_vec())
        .collect();
    let out = execution.into_output().unwrap();
    assert_eq!(out.stdout, b"\xff\xfe\x00abc");
    assert_eq!(live, out.stdout);
}

const ALTERNATING: &str = r#"import sys, time
for i in range(3):
    sys.stdout.write(f'out{i}\n'); sys.stdout.flush(); time.sleep(0.1)
    sys.stderr.write(f'err{i}\n'); sys.stderr.flush(); time.sleep(0.1)
"#;

#[test]
fn stdout_and_stderr_are_separated_and_merged_in_order() {
    let ex = common::start();
    let out = ex.run(&CodeBlock::python(ALTERNATING)).unwrap();
    common::assert_success(&out);
    assert_eq!(out.stdout, b"out0\nout1\nout2\n");
    assert_eq!(out.stderr, b"err0\nerr1\nerr2\n");
    assert_eq!(out.merged(), b"out0\nerr0\nout1\nerr1\nout2\nerr2\n");
    assert_eq!(out.merged_lossy(), "out0\nerr0\nout1\nerr1\nout2\nerr2\n");
    let pieces: Vec<(Stream, Vec<u8>)> = out.pieces().map(|(s, b)| (s, b.to_vec())).collect();
    let expected: Vec<(Stream, Vec<u8>)> = (0..3)
        .flat_map(|i| {
            [
                (Stream::Stdout, format!("out{i}\n").into_bytes()),
                (Stream::Stderr, format!("err{i}\n").into_bytes()),
            ]
        })
        .collect();
    assert_eq!(pieces, expected);
}

#[test]
fn live_chunks_follow_the_same_order() {
    let ex = common::start();
    let execution = ex.spawn(&CodeBlock::python(ALTERNATING)).unwrap();
    let chunks: Vec<Chunk> = execution.chunks().iter().collect();
    let out = execution.into_output().unwrap();
    // Adjacent chunks of one stream may be split differently; compare coalesced runs.
    let mut runs: Vec<(Stream, Vec<u8>)> = Vec::new();
    for c in &chunks {
        match runs.last_mut() {
            Some((s, b)) if *s == c.stream() => b.extend_from_slice(c.bytes()),
            _ => runs.push((c.stream(), c.bytes().to_vec())),
        }
    }
    let pieces: Vec<(Stream, Vec<u8>)> = out.pieces().map(|(s, b)| (s, b.to_vec())).collect();
    assert_eq!(runs, pieces);
    assert_eq!(runs.len(), 6, "{runs:?}");
}

#[test]
fn five_megabytes_from_one_block_arrive_complete() {
    if common::exec_strategy()
        && common::differs_here(
            "five_megabytes_from_one_block_arrive_complete",
            common::Differs::ShortExecPipeWrites,
        )
    {
        return;
    }
    const LINES: usize = 524_288; // 10 bytes each: 5 MiB
    let ex = common::start();
    let out = ex
        .run(&CodeBlock::python(format!(
            "import sys\n\
             sys.stdout.write(''.join(f'{{i:09d}}\\n' for i in range({LINES})))\n\
             sys.stdout.flush()\n\
             sys.stderr.write('done\\n')"
        )))
        .unwrap();
    common::assert_success(&out);
    assert!(!out.status.truncated());
    let mut expected = Vec::with_capacity(LINES * 10);
    for i in 0..LINES {
        expected.extend_from_slice(format!("{i:09}\n").as_bytes());
    }
    assert_eq!(out.stdout.len(), expected.len());
    if out.stdout != expected {
        let at = out
            .stdout
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap();
        panic!(
            "stdout differs at byte {at}: got {:?}, expected {:?}",
            String::from_utf8_lossy(
                &out.stdout[at.saturating_sub(20)..(at + 20).min(out.stdout.len())]
            ),
            String::from_utf8_lossy(&expected[at.saturating_sub(20)..at + 20])
        );
    }
    assert_eq!(out.stderr, b"done\n");
}

#[test]
fn five_megabytes_of_binary_on_both_streams() {
    if common::exec_strategy()
        && common::differs_here(
            "five_megabytes_of_binary_on_both_streams",
            common::Differs::ShortExecPipeWrites,
        )
    {
        return;
    }
    // Every byte value, on both streams at once, interleaved by the daemon's frames.
    let ex = common::start();
    let out = ex
        .run(&CodeBlock::python(
            "import sys\n\
             block = bytes(range(256)) * 64\n\
             for n in range(160):\n\
             \x20   sys.stdout.buffer.write(n.to_bytes(2, 'big') + block)\n\
             \x20   sys.stderr.buffer.write(n.to_bytes(2, 'big') + block[::-1])\n\
             sys.stdout.flush(); sys.stderr.flush()",
        ))
        .unwrap();
    common::assert_success(&out);
    let block: Vec<u8> = (0..=255u8).collect::<Vec<_>>().repeat(64);
    let reversed: Vec<u8> = block.iter().rev().copied().collect();
    let (mut exp_out, mut exp_err) = (Vec::new(), Vec::new());
    for n in 0..160u16 {
        exp_out.extend_from_slice(&n.to_be_bytes());
        exp_out.extend_from_slice(&block);
        exp_err.extend_from_slice(&n.to_be_bytes());
        exp_err.extend_from_slice(&reversed);
    }
    assert_eq!(out.stdout.len(), exp_out.len());
    assert_eq!(out.stderr.len(), exp_err.len());
    assert!(out.stdout == exp_out, "stdout differs");
    assert!(out.stderr == exp_err, "stderr differs");
    assert_eq!(out.merged().len(), exp_out.len() + exp_err.len());
}
