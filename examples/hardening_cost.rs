//! What the hardened defaults cost: `start()` and a Python `print` block, with every default
//! on versus [`trusted()`](dockexec::ExecutorBuilder::trusted), interleaved in one run.
//!
//! ```text
//! cargo run --release --example hardening_cost [-- ROUNDS [PRINTS]]   # defaults: 8 and 30
//! ```
//!
//! The image is `$DOCKEXEC_TEST_IMAGE`, else scripts/test-images.env's; it is never pulled.
//! Prints medians per configuration and strategy.

#[path = "../tests/common/test_images.rs"]
mod test_images;

use std::time::{Duration, Instant};

use dockexec::{CodeBlock, Executor, PullPolicy, Strategy};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() -> dockexec::Result<()> {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(8);
    let prints: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(30);
    let image = test_images::get("DOCKEXEC_TEST_IMAGE");
    let print = CodeBlock::python("print('hello')");
    for strategy in [Strategy::Exec, Strategy::Agent] {
        // [defaults, trusted] × (start, print) samples; the two configurations alternate so
        // that load from elsewhere on the machine falls on both alike.
        let mut starts = [Vec::new(), Vec::new()];
        let mut runs = [Vec::new(), Vec::new()];
        for _ in 0..rounds {
            for (i, trusted) in [false, true].into_iter().enumerate() {
                let mut b = Executor::builder();
                b.image(&image)
                    .pull_policy(PullPolicy::Never)
                    .strategy(strategy)
                    .label("dockexec-bench", "hardening-cost");
                if trusted {
                    b.trusted();
                }
                let t = Instant::now();
                let ex = b.start()?;
                starts[i].push(t.elapsed());
                for _ in 0..prints {
                    let t = Instant::now();
                    let out = ex.run(&print)?;
                    runs[i].push(t.elapsed());
                    assert_eq!(out.stdout, b"hello\n");
                }
                ex.stop()?;
            }
        }
        for (i, name) in ["defaults", "trusted"].into_iter().enumerate() {
            println!(
                "{strategy:?} {name:8}  start {:>7.1?} ms  print {:>6.2?} ms   (medians of {rounds} starts, {} prints)",
                median(starts[i].clone()).as_secs_f64() * 1e3,
                median(runs[i].clone()).as_secs_f64() * 1e3,
                rounds * prints,
            );
        }
    }
    Ok(())
}
