//! What each transport costs: `start()` and a Python `print` block on the local socket, on
//! engine2's unix socket, over TLS and over SSH, and on Podman's compat socket
//! (scripts/test-env.sh's engines), interleaved in one run so that the ratios to the local
//! socket hold on a noisy machine.
//!
//! ```text
//! cargo run --release --example transport_cost [-- ROUNDS [PRINTS]]   # defaults: 5 and 20
//! ```
//!
//! Reads `${TMPDIR:-/tmp}/dockexec-test-env/engines.env`; the image is `$DOCKEXEC_TEST_IMAGE`,
//! else scripts/test-images.env's; it is never pulled. Prints medians and ratios.

#[path = "../tests/common/test_images.rs"]
mod test_images;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use dockexec::{CodeBlock, Engine, Executor, PullPolicy, Strategy, Tls};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() -> dockexec::Result<()> {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let prints: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let tmp = std::env::var("TMPDIR")
        .ok()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "/tmp".into());
    let file = format!("{tmp}/dockexec-test-env/engines.env");
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{file}: {e} (run scripts/test-env.sh)"));
    let env: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    let mut engines = vec![
        ("local unix", Engine::unix("/var/run/docker.sock")),
        (
            "engine2 unix",
            Engine::host(env["DOCKEXEC_TEST_ENGINE2_HOST"])?,
        ),
        (
            "engine2 tls",
            Engine::host(env["DOCKEXEC_TEST_TLS_HOST"])?
                .tls(Tls::from_dir(env["DOCKEXEC_TEST_TLS_CERTS"])?),
        ),
        (
            "engine2 ssh",
            Engine::ssh(env["DOCKEXEC_TEST_SSH_HOST"])?
                .ssh_options(["-F", env["DOCKEXEC_TEST_SSH_CONFIG"]]),
        ),
    ];
    // Podman's Docker-compatible service (issue 17), when test-env.sh started one.
    if let Some(host) = env.get("DOCKEXEC_TEST_PODMAN_HOST") {
        engines.push(("podman unix", Engine::host(host)?));
    }
    let image = test_images::get("DOCKEXEC_TEST_IMAGE");
    let print = CodeBlock::python("print('hello')");
    println!(
        "rounds {rounds}, prints {prints} per round; medians, and the ratio to the local socket"
    );
    for strategy in [Strategy::Exec, Strategy::Agent] {
        let mut starts: Vec<Vec<Duration>> = vec![Vec::new(); engines.len()];
        let mut runs: Vec<Vec<Duration>> = vec![Vec::new(); engines.len()];
        for _ in 0..rounds {
            for (i, (_, engine)) in engines.iter().enumerate() {
                let t0 = Instant::now();
                let ex = Executor::builder()
                    .engine(engine.clone())
                    .image(&image)
                    .pull_policy(PullPolicy::Never)
                    .strategy(strategy)
                    .start()?;
                starts[i].push(t0.elapsed());
                // The first block pays for the agent's READY: not a steady-state block.
                ex.run(&print)?;
                for _ in 0..prints {
                    let t0 = Instant::now();
                    let out = ex.run(&print)?;
                    assert!(out.status.success());
                    runs[i].push(t0.elapsed());
                }
                ex.stop()?;
            }
        }
        let (s0, r0) = (median(starts[0].clone()), median(runs[0].clone()));
        for (i, (name, _)) in engines.iter().enumerate() {
            let (s, r) = (median(starts[i].clone()), median(runs[i].clone()));
            println!(
                "{strategy:?} {name:13} start {:7.1} ms (x{:.2})   print {:6.1} ms (x{:.2})",
                ms(s),
                ms(s) / ms(s0),
                ms(r),
                ms(r) / ms(r0)
            );
        }
    }
    Ok(())
}
