//! What starting the agent costs: `start()` with [`Strategy::Agent`], and the time from
//! `start()` returning to the first block's output (the agent's READY is awaited there).
//!
//! ```text
//! cargo run --release --example agent_start_cost [-- ROUNDS]   # default: 1
//! ```
//!
//! Prints one line per round (`start_ms first_ms`), so that two builds can be run alternately
//! from a shell loop and compared under the same load. The image is `$DOCKEXEC_TEST_IMAGE`,
//! else scripts/test-images.env's; it is never pulled.

#[path = "../tests/common/test_images.rs"]
mod test_images;

use std::time::Instant;

use dockexec::{CodeBlock, Executor, PullPolicy, Strategy};

fn main() -> dockexec::Result<()> {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let image = test_images::get("DOCKEXEC_TEST_IMAGE");
    let print = CodeBlock::python("print('hello')");
    for _ in 0..rounds {
        let mut b = Executor::builder();
        b.image(&image)
            .pull_policy(PullPolicy::Never)
            .strategy(Strategy::Agent)
            .label("dockexec-bench", "agent-start-cost");
        let t = Instant::now();
        let ex = b.start()?;
        let started = t.elapsed();
        let t = Instant::now();
        let out = ex.run(&print)?;
        let first = t.elapsed();
        assert_eq!(out.stdout, b"hello\n");
        ex.stop()?;
        println!(
            "{:.1} {:.1}",
            started.as_secs_f64() * 1e3,
            first.as_secs_f64() * 1e3
        );
    }
    Ok(())
}
