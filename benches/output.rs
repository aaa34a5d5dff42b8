//! Output benches: wall time of a 10 MB uncapped block, and the memory it costs — peak RSS
//! (`VmHWM`) measured in a fresh subprocess (this binary re-executed with a hidden
//! `--rss-child` argument) — and the peak of 100 MB of output under a 1 MiB cap. Each is set
//! against the raw floor: the same exec made by a minimal hand-written HTTP/1.1 client
//! (benches/support/raw.rs) reading and demultiplexing the whole stream.
//!
//! `cargo bench --features bench --bench output` runs everything (`-- rss` runs only ids containing "rss").
//! Without `--bench` (as `cargo test --all-targets` runs it) nothing touches the daemon;
//! `DOCKEXEC_BENCH_SMOKE=1` runs every measurement once. Timings are reported, never asserted.

#[path = "support/fixtures.rs"]
mod fixtures;
#[path = "support/raw.rs"]
mod raw;
#[path = "support/report.rs"]
mod report;

use std::process::Command;

use dockexec::{CodeBlock, ExecutorBuilder};
use raw::Raw;
use report::{Mode, Report, Row, Target, Unit, col, interleave, ms, runs, selected, time};

const MIB: usize = 1024 * 1024;
const TEN_MB: usize = 10_000_000;
const HUNDRED_MB: usize = 100_000_000;
const CAP: usize = MIB;

const WRITE_10MB: &str = "import sys\nsys.stdout.buffer.write(b'x' * 10_000_000)\n";
const WRITE_100MB: &str =
    "import sys\nb = b'x' * 1_000_000\nfor _ in range(100):\n    sys.stdout.buffer.write(b)\n";

fn builder(image: &str, cap: Option<usize>) -> ExecutorBuilder {
    let mut b = fixtures::builder(image);
    b.max_output_bytes(cap);
    b
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--rss-child") {
        child(&args[i + 1..]);
        return;
    }
    let mode = report::mode();
    if mode == Mode::Test {
        println!(
            "skipped: run with `cargo bench --features bench --bench output` (or DOCKEXEC_BENCH_SMOKE=1)"
        );
        return;
    }
    let Some((mut base, _sweep, image)) = fixtures::daemon() else {
        return;
    };
    let mut rep = Report::new(format!(
        "output: dockexec vs the raw Engine floor (same run, interleaved; image {image})"
    ));
    let Some(ex) = fixtures::start_or_skip(&builder(&image, None), &image) else {
        return;
    };
    let container = ex.container_id().to_string();
    let full = mode == Mode::Full;

    if selected("wall") {
        let block = CodeBlock::python(WRITE_10MB);
        let (o, b) = interleave(
            runs(mode, 30),
            if full { 2 } else { 0 },
            || {
                let (t, out) = time(|| ex.run(&block).expect("ours: run"));
                assert!(out.status.success(), "ours: {}", out.status);
                assert_eq!(out.stdout.len(), TEN_MB);
                t
            },
            || {
                let cmd = ["python3", "-c", WRITE_10MB];
                let (t, c) = time(|| base.exec_collect(&container, &cmd, None));
                let c = c.expect("raw: exec");
                assert_eq!((c.code, c.stdout.len()), (Some(0), TEN_MB));
                t
            },
        );
        rep.add(
            Row::new("10 MB stdout uncapped: run() wall", Unit::Time, o)
                .base(b)
                .target(Target::P50Le(ms(149.0))),
        );
        let (o, b) = interleave(
            runs(mode, 30),
            if full { 2 } else { 0 },
            || {
                let (t, len) = time(|| {
                    let e = ex.spawn(&block).expect("ours: spawn");
                    let out = e.wait().expect("ours: wait");
                    out.stdout.len()
                });
                assert_eq!(len, TEN_MB);
                t
            },
            || {
                let cmd = ["python3", "-c", WRITE_10MB];
                let (t, c) = time(|| base.exec_collect(&container, &cmd, None));
                assert_eq!(c.expect("raw: exec").stdout.len(), TEN_MB);
                t
            },
        );
        rep.add(
            Row::new(
                "  diag: same via spawn()+wait() (no into_output)",
                Unit::Time,
                o,
            )
            .base(b),
        );
        let capped = builder(&image, Some(CAP))
            .start()
            .expect("ours: start capped");
        let block = CodeBlock::python(WRITE_100MB);
        let (o, b) = interleave(
            runs(mode, 15),
            if full { 1 } else { 0 },
            || {
                let (t, out) = time(|| capped.run(&block).expect("ours: run"));
                assert!(out.status.truncated(), "ours: {}", out.status);
                t
            },
            || {
                let cmd = ["python3", "-c", WRITE_100MB];
                let (t, c) = time(|| base.exec_collect(capped.container_id(), &cmd, Some(CAP)));
                assert_eq!(c.expect("raw: exec").total, HUNDRED_MB);
                t
            },
        );
        drop(capped);
        rep.add(Row::new("100 MB under a 1 MiB cap: run() wall", Unit::Time, o).base(b));
        rep.note("wall target: AutoGen's p50 for the same 10 MB on these machines is 149–168 ms; the stricter bound is checked");
    }

    if selected("rss") {
        let n = runs(mode, 5);
        let (o, b) = interleave(
            n,
            0,
            || spawn_child(&["ours-10mb"], &image),
            || spawn_child(&["raw-10mb", &container], &image),
        );
        rep.add(
            Row::new("10 MB uncapped: VmHWM growth", Unit::Bytes, col(&o, 1))
                .base(col(&b, 1))
                .target(Target::MaxLe(2.5 * TEN_MB as f64)),
        );
        rep.add(
            Row::new("10 MB uncapped: VmHWM (absolute)", Unit::Bytes, col(&o, 0)).base(col(&b, 0)),
        );
        let (o, b) = interleave(
            n,
            0,
            || spawn_child(&["ours-10mb-wait"], &image),
            || spawn_child(&["raw-10mb", &container], &image),
        );
        rep.add(
            Row::new(
                "  diag: same via spawn()+wait() (no into_output)",
                Unit::Bytes,
                col(&o, 1),
            )
            .base(col(&b, 1)),
        );
        let (o, b) = interleave(
            n,
            0,
            || spawn_child(&["ours-100mb-cap"], &image),
            || spawn_child(&["raw-100mb-cap", &container], &image),
        );
        rep.add(
            Row::new(
                "100 MB under a 1 MiB cap: VmHWM growth",
                Unit::Bytes,
                col(&o, 1),
            )
            .base(col(&b, 1))
            .target(Target::MaxLe(32.0 * MIB as f64)),
        );
        rep.add(
            Row::new(
                "100 MB under a 1 MiB cap: VmHWM (absolute)",
                Unit::Bytes,
                col(&o, 0),
            )
            .base(col(&b, 0))
            .target(Target::MaxLe(32.0 * MIB as f64)),
        );
        rep.note("RSS rows: each sample is a fresh subprocess (this binary, --rss-child); growth = VmHWM after the run − VmHWM before it, \"before\" read after the executor started (raw: after connecting)");
        rep.note("growth target: 2.5 × the 10 MB output = 25 MB = 23.8 MiB; capped target: 32 MiB for growth and for the whole VmHWM");
        rep.note("raw RSS baseline: the hand-written client collecting the same stream into Vecs (10 MB: all of it; 100 MB: keeping the first 1 MiB)");
    }

    drop(ex);
    rep.print();
}

/// Runs one RSS scenario in a fresh process; returns [VmHWM after, growth, run seconds].
fn spawn_child(args: &[&str], image: &str) -> [f64; 3] {
    let exe = std::env::current_exe().expect("current exe");
    let out = Command::new(exe)
        .arg("--rss-child")
        .args(args)
        .env("DOCKEXEC_BENCH_RUN", fixtures::run_id())
        .env("DOCKEXEC_BENCH_IMAGE", image)
        .output()
        .expect("spawn the rss child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("RSS "))
        .unwrap_or_else(|| {
            panic!(
                "rss child {args:?} failed ({}): {stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let v: Vec<f64> = line[4..]
        .split_whitespace()
        .map(|x| x.parse().expect("number"))
        .collect();
    let (before, after, secs) = (v[0], v[1], v[2]);
    [after, after - before, secs]
}

/// Peak resident set size of this process so far, in bytes.
fn vm_hwm() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM line");
    kib * 1024.0
}

/// The subprocess: one scenario, then `RSS <before bytes> <after bytes> <run seconds>`.
fn child(args: &[String]) {
    let image = fixtures::image();
    let scenario = args.first().map(String::as_str).unwrap_or("");
    let (before, after, secs) = match scenario {
        "ours-10mb" | "ours-10mb-wait" | "ours-100mb-cap" => {
            let (cap, code, want) = if scenario == "ours-100mb-cap" {
                (Some(CAP), WRITE_100MB, CAP)
            } else {
                (None, WRITE_10MB, TEN_MB)
            };
            let ex = builder(&image, cap).start().expect("child: start");
            let block = CodeBlock::python(code);
            let before = vm_hwm();
            let (secs, (status, kept)) = time(|| {
                if scenario == "ours-10mb-wait" {
                    // Borrows the stored output: no `into_output`.
                    let e = ex.spawn(&block).expect("child: spawn");
                    let out = e.wait().expect("child: wait");
                    (out.status.code(), out.stdout.len())
                } else {
                    let out = ex.run(&block).expect("child: run");
                    (out.status.code(), out.stdout.len())
                }
            });
            let after = vm_hwm();
            assert_eq!(status, Some(0), "child: exit code");
            assert!(
                kept >= want && kept <= want + 1024,
                "child: kept {kept} bytes"
            );
            ex.stop().expect("child: stop");
            (before, after, secs)
        }
        "raw-10mb" | "raw-100mb-cap" => {
            let container = args.get(1).expect("child: container id");
            let (cap, code, total) = if scenario == "raw-10mb" {
                (None, WRITE_10MB, TEN_MB)
            } else {
                (Some(CAP), WRITE_100MB, HUNDRED_MB)
            };
            let mut raw = Raw::connect(&fixtures::socket()).expect("child: connect");
            let before = vm_hwm();
            let (secs, c) = time(|| raw.exec_collect(container, &["python3", "-c", code], cap));
            let after = vm_hwm();
            let c = c.expect("child: exec");
            assert_eq!((c.code, c.total), (Some(0), total));
            (before, after, secs)
        }
        other => panic!("unknown rss scenario {other:?}"),
    };
    println!("RSS {before} {after} {secs}");
}
