//! Issue 18's pool bench, the async rival's way: a fresh container per task on bollard +
//! tokio, against which `benches/executor.rs`'s `pool` rows (a `Pool` under `Policy::Reset`
//! and `Policy::Fresh`, a fresh `Executor` per task) are read.
//!
//! `DOCKEXEC_BENCH_POOL_TASKS` tasks (default 20; 4 in smoke mode), each: `Rival::start` (the
//! container dockexec's builder would create, from `__bench::create_body`, started), one
//! python block `print("hello")` through `Rival::run` (code file, one exec of dockexec's
//! wrapper, its output, the exec's inspect), then `Rival::stop` (force-remove, workspace
//! removed). The tasks are tokio tasks on a runtime of `DOCKEXEC_BENCH_POOL_THREADS` worker
//! threads (default 4), at most that many at once (a semaphore of as many permits): the pool
//! bench's threads. A task's time runs from its permit until `stop` returned; tasks/s is all
//! tasks over the wall time of all of them.
//!
//! `cargo bench --manifest-path benches/rival/Cargo.toml --bench pool` (scripts/bench.sh runs
//! it right after the dockexec ways) writes the raw results to
//! `DOCKEXEC_BENCH_POOL_RIVAL_RESULTS`, by default `benches/results/pool-rival.json`, for
//! `benches/rival/report.py`. `DOCKEXEC_BENCH_SMOKE=1` runs 4 tasks and asserts behaviour only
//! (every output is `hello`, no container of the run is left); scripts/test.sh does. Timings
//! are reported, never asserted.

#[path = "../../support/fixtures.rs"]
mod fixtures;
#[path = "../../support/raw.rs"]
mod raw;
#[path = "../../support/report.rs"]
mod report;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use dockexec::Strategy;
use dockexec_rival::Rival;
use report::pct;
use serde_json::json;

const HELLO: &str = "print(\"hello\")";

fn env_n(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let Some((full, mut raw, _sweep, image)) = fixtures::rival_start() else {
        return;
    };
    let tasks = env_n("DOCKEXEC_BENCH_POOL_TASKS", if full { 20 } else { 4 });
    let threads = env_n("DOCKEXEC_BENCH_POOL_THREADS", 4).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let docker = rt
        .block_on(dockexec_rival::connect(&fixtures::socket()))
        .expect("rival: connect");

    let load0 = report::loadavg();
    let started = report::unix_time();
    let t0 = Instant::now();
    let per: Vec<f64> = rt.block_on(async {
        // At most `threads` tasks at once, as the pool bench's `threads` threads.
        let permits = Arc::new(tokio::sync::Semaphore::new(threads));
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let (permits, docker, image) = (permits.clone(), docker.clone(), image.clone());
                tokio::spawn(async move {
                    let _permit = permits.acquire_owned().await.expect("semaphore closed");
                    let t = Instant::now();
                    let mut b = fixtures::builder(&image);
                    b.strategy(Strategy::Exec);
                    let rv = Rival::start(&docker, &b, dockexec::NOBODY)
                        .await
                        .expect("rival: start");
                    // Stopped before the output is checked, so a failed block leaves nothing.
                    let out = rv.run("python", HELLO).await;
                    let stopped = rv.stop().await;
                    let out = out.expect("rival: run");
                    stopped.expect("rival: stop");
                    assert_eq!(
                        (out.code, out.stdout.as_slice()),
                        (Some(0), &b"hello\n"[..]),
                        "rival: {out:?}"
                    );
                    t.elapsed().as_secs_f64()
                })
            })
            .collect();
        // Every task joined before the wall clock stops: every task is in the figure.
        let mut per = Vec::with_capacity(tasks);
        for h in handles {
            per.push(h.await.expect("a rival task failed"));
        }
        per
    });
    let wall = t0.elapsed().as_secs_f64();
    let load1 = report::loadavg();

    let left = fixtures::this_runs_containers(&mut raw).expect("list containers");
    assert!(left.is_empty(), "containers left behind: {left:?}");

    println!(
        "pool: rival, fresh container per task: {tasks} tasks on {threads} threads: {:.1} tasks/s, p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms (load average {} -> {})",
        tasks as f64 / wall,
        pct(&per, 0.5) * 1e3,
        pct(&per, 0.9) * 1e3,
        pct(&per, 0.99) * 1e3,
        load0.join(" "),
        load1.join(" "),
    );
    let way = json!({
        "way": "rival-fresh",
        "name": "rival (bollard+tokio), fresh container per task",
        "tasks": tasks,
        "threads": threads,
        "wall_s": wall,
        "tasks_per_s": tasks as f64 / wall,
        "p50_s": pct(&per, 0.5),
        "p90_s": pct(&per, 0.9),
        "p99_s": pct(&per, 0.99),
        "per_task_s": per,
        "started_unix": started,
        "loadavg_start": load0,
        "loadavg_end": load1,
    });
    let path = match std::env::var_os("DOCKEXEC_BENCH_POOL_RIVAL_RESULTS") {
        Some(p) => Some(PathBuf::from(p)),
        None if full => {
            Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../results/pool-rival.json"))
        }
        None => None,
    };
    if let Some(p) = path {
        let doc = json!({
            "bench": "cargo bench --manifest-path benches/rival/Cargo.toml --bench pool",
            "mode": if full { "full" } else { "smoke" },
            "image": image,
            "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "unix_time": report::unix_time(),
            "ways": [way],
        });
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).expect("results dir");
        }
        std::fs::write(&p, serde_json::to_string_pretty(&doc).unwrap()).expect("write results");
        eprintln!("wrote {}", p.display());
    }
}

