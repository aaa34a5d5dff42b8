//! Engine client benches: dockexec's private ureq-over-Unix-socket client
//! (`dockexec::__bench::BenchClient`) against a minimal hand-written HTTP/1.1 client over
//! `UnixStream` (benches/support/raw.rs), measured interleaved in the same run, plus the
//! frame demultiplexer's throughput.
//!
//! `cargo bench --features bench --bench engine` runs everything (`-- ping` runs only ids containing "ping").
//! Without `--bench` (as `cargo test --all-targets` runs it) only a tiny demux smoke runs;
//! `DOCKEXEC_BENCH_SMOKE=1` runs every measurement once. Timings are reported, never asserted.

#[path = "support/fixtures.rs"]
mod fixtures;
#[path = "support/raw.rs"]
mod raw;
#[path = "support/report.rs"]
mod report;

use std::hint::black_box;

use dockexec::__bench::{BenchClient, demux};
use raw::MiniDemux;
use report::{Mode, Report, Row, Target, Unit, interleave, ms, pct, runs, selected, time};

const MIB: usize = 1024 * 1024;

fn main() {
    let mode = report::mode();
    let mut rep = Report::new(
        "engine: dockexec's Engine client vs a hand-written HTTP/1.1 client (same run, interleaved)",
    );
    if selected("demux") {
        bench_demux(mode, &mut rep);
    }
    if mode == Mode::Test || !(selected("exec") || selected("ping")) {
        rep.print();
        println!(
            "skipped: the daemon measurements run with `cargo bench --features bench --bench engine`"
        );
        return;
    }

    let Some((mut base, _sweep, image)) = fixtures::daemon() else {
        rep.print();
        return;
    };
    let ours = BenchClient::connect(base.socket()).expect("BenchClient::connect");
    rep.note(format!(
        "API version: ours {}, hand-written {}; image {image}",
        ours.api_version(),
        base.api_version()
    ));
    let container = match fixtures::run_sleeper(&mut base, &image) {
        Ok(id) => id,
        Err(e) => {
            rep.print();
            fixtures::skip_image(&image, &e);
            return;
        }
    };

    if selected("exec") {
        let n = runs(mode, 50);
        let (o, b) = interleave(
            n,
            if mode == Mode::Full { 4 } else { 0 },
            || {
                let (t, code) = time(|| ours.exec_round_trip(&container, &["true"]));
                assert_eq!(code.expect("ours: exec round trip"), Some(0));
                t
            },
            || {
                let (t, code) = time(|| base.exec_round_trip(&container, &["true"]));
                assert_eq!(code.expect("raw: exec round trip"), Some(0));
                t
            },
        );
        rep.add(
            Row::new(
                "exec round trip `true` (create, start→EOF, inspect)",
                Unit::Time,
                o,
            )
            .base(b)
            .target(Target::RatioLe(1.05)),
        );
        // Where the floor's time goes: the daemon's own work, phase by phase.
        let (mut c, mut s, mut i) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs(mode, 20) {
            let (tc, id) = time(|| base.exec_create(&container, &["true"]).expect("create"));
            let (ts, _) = time(|| {
                base.exec_start(&id)
                    .and_then(|st| st.drain())
                    .expect("start")
            });
            let (ti, _) = time(|| base.exec_inspect(&id).expect("inspect"));
            c.push(tc);
            s.push(ts);
            i.push(ti);
        }
        rep.note(format!(
            "hand-written exec phases, p50 of {}: create {:.2} ms, start→EOF {:.2} ms, inspect {:.2} ms",
            c.len(),
            pct(&c, 0.5) * 1e3,
            pct(&s, 0.5) * 1e3,
            pct(&i, 0.5) * 1e3
        ));
    }

    if selected("ping") {
        let n = runs(mode, 1000);
        let (o, b) = interleave(
            n,
            if mode == Mode::Full { 50 } else { 0 },
            || time(|| ours.ping().expect("ours: ping")).0,
            || time(|| base.ping().expect("raw: ping")).0,
        );
        rep.add(
            Row::new("GET /_ping, pooled keep-alive connection", Unit::Time, o)
                .base(b)
                .target(Target::P50Lt(ms(1.0))),
        );
        // What a connect costs the daemon: dockexec's Client::connect (every
        // ExecutorBuilder::start) sends /_ping then /version.
        let v: Vec<f64> = (0..runs(mode, 30))
            .map(|_| time(|| base.json("GET", "/version", None).expect("raw: version")).0)
            .collect();
        rep.note(format!(
            "GET /version (hand-written, kept connection) p50 {:.2} ms, p90 {:.2} ms over {}: paid once per ExecutorBuilder::start",
            pct(&v, 0.5) * 1e3,
            pct(&v, 0.9) * 1e3,
            v.len()
        ));
    }

    let _ = base.container_remove(&container);
    rep.print();
}

/// Frames of `payload`-byte payloads alternating stdout/stderr, `total` bytes or a little
/// more; returns the buffer and its (stdout, stderr) payload byte counts.
fn frames(total: usize, payload: usize) -> (Vec<u8>, usize, usize) {
    let mut v = Vec::with_capacity(total + payload + 8);
    let (mut o, mut e) = (0, 0);
    let mut i = 0u32;
    while v.len() < total {
        let stream = if i % 2 == 0 { 1u8 } else { 2u8 };
        v.extend_from_slice(&[stream, 0, 0, 0]);
        v.extend_from_slice(&(payload as u32).to_be_bytes());
        let at = v.len();
        v.resize(at + payload, 0);
        for (k, b) in v[at..].iter_mut().enumerate() {
            *b = (k as u32 ^ i) as u8;
        }
        if stream == 1 {
            o += payload;
        } else {
            e += payload;
        }
        i += 1;
    }
    (v, o, e)
}

fn mini_demux(input: &[u8], piece: usize) -> (usize, usize) {
    let mut d = MiniDemux::default();
    let (mut o, mut e) = (0, 0);
    for chunk in input.chunks(piece) {
        d.feed(chunk, |s, b| {
            if s == 2 {
                e += b.len();
            } else {
                o += b.len();
            }
        });
    }
    (o, e)
}

fn bench_demux(mode: Mode, rep: &mut Report) {
    let size = if mode == Mode::Full { 64 * MIB } else { MIB };
    let n = if mode == Mode::Full { 20 } else { 1 };
    // 32 KiB payloads: what a bulk write gives. 64 B payloads: what an unbuffered `print`
    // loop gives (one frame per write), where the per-frame work dominates.
    for (payload, piece) in [
        (32 * 1024, 64 * 1024),
        (32 * 1024, 4 * 1024),
        (64, 64 * 1024),
        (64, 4 * 1024),
    ] {
        let (input, want_o, want_e) = frames(size, payload);
        let (o, b) = interleave(
            n,
            if mode == Mode::Full { 2 } else { 0 },
            || {
                let (t, got) = time(|| demux(black_box(&input), black_box(piece)));
                assert_eq!(got, (want_o, want_e), "ours: demux counts");
                t
            },
            || {
                let (t, got) = time(|| mini_demux(black_box(&input), black_box(piece)));
                assert_eq!(got, (want_o, want_e), "raw: demux counts");
                t
            },
        );
        rep.add(
            Row::new(
                format!(
                    "demux {} MiB of {} frames, {} KiB pieces",
                    input.len() / MIB,
                    if payload >= 1024 {
                        format!("{} KiB", payload / 1024)
                    } else {
                        format!("{payload} B")
                    },
                    piece / 1024
                ),
                Unit::Time,
                o,
            )
            .base(b)
            .target(Target::ThroughputGe {
                bytes: input.len() as f64,
                per_sec: 1e9,
            }),
        );
    }
    rep.note(
        "demux: GB/s of framed input; `__bench::demux` only counts payload bytes (no copy), \
         baseline = a minimal hand-written incremental demuxer (no validation), same pieces",
    );
}
