//! What gVisor costs: `start()`, a python block (the agent's zygote, a fresh interpreter, and
//! the exec strategy), `sh true`, cancel latency and 10 MB of output, under runc and under
//! runsc on the same daemon, interleaved in one run.
//!
//! ```text
//! DOCKER_HOST=unix:///run/dockexec-test/engine2.sock \
//!     cargo run --release --example gvisor_cost [-- ROUNDS [RUNS]]   # defaults: 5 and 10
//! ```
//!
//! The daemon is found as usual (`DOCKER_HOST`, …) and must have `runsc` registered
//! (scripts/test-env.sh registers it on engine2). The image is `$DOCKEXEC_TEST_IMAGE`, else
//! scripts/test-images.env's; it is never pulled. Prints medians per runtime.

#[path = "../tests/common/test_images.rs"]
mod test_images;

use std::time::{Duration, Instant};

use dockexec::{CodeBlock, Executor, PullPolicy, Runtime, Strategy};

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

/// The configurations measured, per runtime: (name, strategy, zygote).
const SETUPS: [(&str, Strategy, bool); 3] = [
    ("agent+zygote", Strategy::Agent, true),
    ("agent fresh", Strategy::Agent, false),
    ("exec", Strategy::Exec, true),
];

fn main() -> dockexec::Result<()> {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let image = test_images::get("DOCKEXEC_TEST_IMAGE");
    let py = CodeBlock::python("print('hello')");
    let sh = CodeBlock::sh("true");
    let sleep = CodeBlock::sh("sleep 60");
    let ten_mb = CodeBlock::sh("head -c 10485760 /dev/zero");
    let runtimes = [None, Some(Runtime::Gvisor)];
    // [runtime][setup] × (start, python, sh, cancel, 10 MB) samples; runtimes alternate so
    // that load from elsewhere on the machine falls on both alike.
    let mut samples = vec![vec![[(); 5].map(|_| Vec::new()); SETUPS.len()]; runtimes.len()];
    for _ in 0..rounds {
        for (s, (_, strategy, zygote)) in SETUPS.iter().enumerate() {
            for (r, runtime) in runtimes.iter().enumerate() {
                let mut b = Executor::builder();
                b.image(&image)
                    .pull_policy(PullPolicy::Never)
                    .strategy(*strategy)
                    .python_zygote(*zygote)
                    .label("dockexec-bench", "gvisor-cost");
                if let Some(rt) = runtime {
                    b.runtime(rt.clone());
                }
                let m = &mut samples[r][s];
                let t = Instant::now();
                let ex = b.start()?;
                m[0].push(t.elapsed());
                for _ in 0..runs {
                    let t = Instant::now();
                    let out = ex.run(&py)?;
                    m[1].push(t.elapsed());
                    assert_eq!(out.stdout, b"hello\n");
                    let t = Instant::now();
                    assert!(ex.run(&sh)?.status.success());
                    m[2].push(t.elapsed());
                }
                for _ in 0..3 {
                    let e = ex.spawn(&sleep)?;
                    std::thread::sleep(Duration::from_millis(300));
                    let t = Instant::now();
                    e.cancel()?;
                    assert!(e.wait()?.status.cancelled());
                    m[3].push(t.elapsed());
                }
                let t = Instant::now();
                let out = ex.run(&ten_mb)?;
                m[4].push(t.elapsed());
                assert_eq!(out.stdout.len(), 10 << 20, "10 MB arrive whole");
                ex.stop()?;
            }
        }
    }
    println!(
        "| runtime | strategy | start() | python print | sh true | cancel | 10 MB out |\n|---|---|---|---|---|---|---|"
    );
    for (s, (name, _, _)) in SETUPS.iter().enumerate() {
        for (r, runtime) in runtimes.iter().enumerate() {
            let m = &samples[r][s];
            println!(
                "| {} | {name} | {:.0} ms | {:.1} ms | {:.1} ms | {:.0} ms | {:.0} ms |",
                runtime.as_ref().map_or("runc", |rt| rt.name()),
                median(m[0].clone()),
                median(m[1].clone()),
                median(m[2].clone()),
                median(m[3].clone()),
                median(m[4].clone()),
            );
        }
    }
    println!(
        "(medians of {rounds} starts, {} blocks, {} cancels, {rounds} outputs)",
        rounds * runs,
        rounds * 3
    );
    Ok(())
}
