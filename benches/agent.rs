//! The warm agent against the exec path and the raw exec floor, in one run: python `print`
//! (zygote and fresh interpreter), sh `true`, 64 concurrent python blocks, cancel latency, a
//! session block, `start()`, and rich results (`display()` of a small PNG; a block that makes
//! one matplotlib figure, on the matplotlib image).
//!
//! `cargo bench --features bench --bench agent` runs everything (`-- session` runs only ids
//! containing "session"). Without `--bench` nothing touches the daemon;
//! `DOCKEXEC_BENCH_SMOKE=1` runs every measurement once. Timings are reported, never asserted.

#[path = "support/fixtures.rs"]
mod fixtures;
#[path = "support/raw.rs"]
mod raw;
#[path = "support/report.rs"]
mod report;

use std::time::Instant;

use dockexec::{CodeBlock, Executor, ExecutorBuilder, Strategy};
use report::{Mode, Report, Row, Target, Unit, interleave, ms, runs, selected, time};

fn builder(image: &str, strategy: Strategy) -> ExecutorBuilder {
    let mut b = fixtures::builder(image);
    b.strategy(strategy);
    b
}

fn run_ok(ex: &Executor, block: &CodeBlock) -> f64 {
    let (t, out) = time(|| ex.run(block).expect("run"));
    assert!(out.status.success(), "{out:?}");
    t
}

fn main() {
    let mode = report::mode();
    if mode == Mode::Test {
        println!("skipped: run with `cargo bench --features bench --bench agent`");
        return;
    }
    let Some((mut base, _sweep, image)) = fixtures::daemon() else {
        return;
    };
    let Some(agent) = fixtures::start_or_skip(&builder(&image, Strategy::Agent), &image) else {
        return;
    };
    let fresh = builder(&image, Strategy::Agent)
        .python_zygote(false)
        .start()
        .expect("agent without zygote");
    let exec = builder(&image, Strategy::Exec).start().expect("exec");
    let full = mode == Mode::Full;
    let warm = if full { 5 } else { 0 };
    let mut rep = Report::new(format!(
        "agent: the warm agent vs the raw exec floor (same run, interleaved; image {image})"
    ));
    let py = CodeBlock::python("print(\"hello\")");

    if selected("python") {
        let (z, floor) = interleave(
            runs(mode, 50),
            warm,
            || run_ok(&agent, &py),
            || {
                let cmd = ["python3", "-c", "print(\"hello\")"];
                let (t, c) = time(|| base.exec_collect(agent.container_id(), &cmd, None));
                assert_eq!(c.expect("raw exec").code, Some(0));
                t
            },
        );
        rep.add(
            Row::new("python print, agent zygote", Unit::Time, z)
                .base(floor.clone())
                .target(Target::P50Le(ms(5.0))),
        );
        let (f, e) = interleave(
            runs(mode, 50),
            warm,
            || run_ok(&fresh, &py),
            || run_ok(&exec, &py),
        );
        rep.add(
            Row::new("python print, agent fresh python3", Unit::Time, f)
                .base(floor)
                .target(Target::P50Le(ms(18.0))),
        );
        rep.add(Row::new("python print, exec strategy", Unit::Time, e));
    }

    if selected("true") {
        let t = CodeBlock::sh("true");
        let (a, floor) = interleave(
            runs(mode, 50),
            warm,
            || run_ok(&agent, &t),
            || {
                let (t, c) = time(|| base.exec_collect(agent.container_id(), &["true"], None));
                assert_eq!(c.expect("raw exec").code, Some(0));
                t
            },
        );
        rep.add(
            Row::new("sh true, agent", Unit::Time, a)
                .base(floor)
                .target(Target::P50Le(ms(4.0))),
        );
    }

    if selected("concurrent") {
        let n = if full { 64 } else { 4 };
        let wall = |ex: &Executor| {
            let t0 = Instant::now();
            let running: Vec<_> = (0..n).map(|_| ex.spawn(&py).expect("spawn")).collect();
            for e in running {
                assert!(e.into_output().expect("wait").status.success());
            }
            t0.elapsed().as_secs_f64()
        };
        let (a, e) = interleave(runs(mode, 5), 1, || wall(&agent), || wall(&exec));
        rep.add(
            Row::new(format!("{n} concurrent python, wall, agent"), Unit::Time, a)
                .base(e)
                .target(Target::P50Le(0.6)),
        );
    }

    if selected("cancel") {
        let block =
            CodeBlock::sh("sleep 1000 & trap '' TERM; echo ready; while :; do sleep 1; done");
        let cancel = |ex: &Executor| {
            let e = ex.spawn(&block).expect("spawn");
            for c in e.chunks() {
                if c.bytes().starts_with(b"ready") {
                    break;
                }
            }
            let (t, out) = time(|| {
                e.cancel().expect("cancel");
                e.wait().expect("wait").status
            });
            assert!(out.cancelled());
            t
        };
        let (a, e) = interleave(runs(mode, 20), 1, || cancel(&agent), || cancel(&exec));
        rep.add(
            Row::new("cancel until wait() returns, agent", Unit::Time, a)
                .base(e)
                .target(Target::P50Le(ms(20.0))),
        );
    }

    if selected("session") {
        let s = agent.session().expect("session");
        s.run("x = 0").expect("init");
        let samples: Vec<f64> = (0..runs(mode, 100))
            .map(|_| {
                let (t, out) = time(|| s.run("x += 1").expect("run"));
                assert!(out.status.success());
                t
            })
            .collect();
        rep.add(
            Row::new("session block (x += 1)", Unit::Time, samples).target(Target::P50Le(ms(3.0))),
        );
    }

    if selected("rich") {
        // display() of a 1x1 PNG against the same block without the display.
        let png = "P = bytes.fromhex('89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489\
                   0000000b49444154789c6360000200000500017a5eab3f0000000049454e44ae426082')\n";
        let shown = CodeBlock::python(format!(
            "{png}class I:\n    def _repr_png_(self): return P\ndisplay(I())"
        ));
        let plain = CodeBlock::python(format!("{png}class I:\n    pass\nI()"));
        let (d, p) = interleave(
            runs(mode, 50),
            warm,
            || {
                let (t, out) = time(|| agent.run(&shown).expect("run"));
                assert!(out.status.success() && out.results.len() == 1, "{out:?}");
                t
            },
            || run_ok(&agent, &plain),
        );
        rep.add(
            Row::new("display() of a small PNG, agent", Unit::Time, d)
                .base(p)
                .target(Target::RatioLe(1.5)),
        );
        let mpl = fixtures::mpl_image();
        if let Some(fig) = fixtures::start_or_skip(&builder(&mpl, Strategy::Agent), &mpl) {
            let import = "import matplotlib\nimport matplotlib.pyplot as plt\n\
                          plt.figure(figsize=(4, 3))\nplt.plot([1, 3, 2])\n";
            let show = CodeBlock::python(format!("{import}plt.show()"));
            let closed = CodeBlock::python(format!("{import}plt.close('all')"));
            let (s, c) = interleave(
                runs(mode, 10),
                1,
                || {
                    let (t, out) = time(|| fig.run(&show).expect("run"));
                    assert!(out.status.success() && out.results.len() == 1, "{out:?}");
                    t
                },
                || run_ok(&fig, &closed),
            );
            rep.add(
                Row::new("one-figure block (plt.show), agent", Unit::Time, s)
                    .base(c)
                    .target(Target::RatioLe(1.5)),
            );
            let _ = fig.stop();
        }
    }

    if selected("start") {
        let start = |s: Strategy| {
            let b = builder(&image, s);
            let (t, ex) = time(|| b.start().expect("start"));
            ex.stop().expect("stop");
            t
        };
        let (a, e) = interleave(
            runs(mode, 10),
            1,
            || start(Strategy::Agent),
            || start(Strategy::Exec),
        );
        rep.add(
            Row::new("start(), agent vs exec", Unit::Time, a)
                .base(e)
                .target(Target::RatioLe(1.15)),
        );
    }
    rep.note(
        "baseline column: the raw exec floor, or the exec strategy where the row says so; for \
         the rich rows, the same block without its result (no display(); the figure closed \
         instead of shown)",
    );
    rep.print();
    for ex in [agent, fresh, exec] {
        let _ = ex.stop();
    }
}
