//! Executor benches: `Executor::run`, `ExecutorBuilder::start`, `stop`, cancellation latency
//! and `stop` under load, each against the raw Engine floor (the same daemon requests made by
//! a minimal hand-written HTTP/1.1 client, benches/support/raw.rs), measured interleaved in
//! the same run.
//!
//! `cargo bench --features bench --bench executor` runs everything (`-- cancel` runs only ids containing
//! "cancel"). Without `--bench` (as `cargo test --all-targets` runs it) nothing touches the
//! daemon; `DOCKEXEC_BENCH_SMOKE=1` runs every measurement once. Timings are reported, never
//! asserted.

#[path = "support/fixtures.rs"]
mod fixtures;
#[path = "support/raw.rs"]
mod raw;
#[path = "support/report.rs"]
mod report;

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use dockexec::{CodeBlock, Execution, Executor};
use raw::{Raw, RawStream};
use report::{Mode, Report, Row, Target, Unit, col, interleave, ms, runs, selected, time};
use serde_json::json;

/// The block the cancel measurements kill: a background child, a shell that ignores
/// SIGTERM, and a line that says all of it is running.
const STUBBORN: &str = "sleep 1000 & trap '' TERM; echo ready; while :; do sleep 1; done";

/// dockexec's own block wrapper, for the diagnostic row that runs the floor the same way
/// dockexec runs a block.
const WRAPPER: &str = dockexec::__bench::RUN_SCRIPT;

use fixtures::builder;

fn main() {
    let mode = report::mode();
    if mode == Mode::Test {
        println!(
            "skipped: run with `cargo bench --features bench --bench executor` (or DOCKEXEC_BENCH_SMOKE=1)"
        );
        return;
    }
    let Some((mut base, _sweep, image)) = fixtures::daemon() else {
        return;
    };
    let mut rep = Report::new(format!(
        "executor: dockexec vs the raw Engine floor (same run, interleaved; image {image})"
    ));
    let Some(ex) = fixtures::start_or_skip(&builder(&image), &image) else {
        return;
    };
    let full = mode == Mode::Full;

    if selected("run") {
        let block = CodeBlock::python("print(\"hello\")");
        let (o, b) = interleave(
            runs(mode, 50),
            if full { 3 } else { 0 },
            || {
                let (t, out) = time(|| ex.run(&block).expect("ours: run"));
                assert!(out.status.success(), "ours: {}", out.status);
                assert_eq!(out.stdout, b"hello\n");
                t
            },
            || {
                let cmd = ["python3", "-c", "print(\"hello\")"];
                let (t, c) = time(|| base.exec_collect(ex.container_id(), &cmd, None));
                let c = c.expect("raw: exec");
                assert_eq!((c.code, c.stdout.as_slice()), (Some(0), &b"hello\n"[..]));
                t
            },
        );
        rep.add(
            Row::new(
                "run python print(\"hello\") vs raw exec python3 -c",
                Unit::Time,
                o,
            )
            .base(b)
            .target(Target::RatioLe(1.05)),
        );
        // Diagnostic: the same floor, but running the block the way dockexec does (its sh
        // wrapper, a code file, the same exec body), to split client overhead from the
        // wrapper's own cost inside the container.
        std::fs::write(
            ex.work_dir().unwrap().join("bench_hello.py"),
            "print(\"hello\")",
        )
        .expect("write the wrapper's code file");
        let mut k = 0;
        let (o, b) = interleave(
            runs(mode, 50),
            if full { 3 } else { 0 },
            || {
                let (t, out) = time(|| ex.run(&block).expect("ours: run"));
                assert_eq!(out.stdout, b"hello\n");
                t
            },
            || {
                k += 1;
                let body = json!({
                    "Cmd": ["sh", "-c", WRAPPER, "dockexec",
                        format!("/run/dockexec/bench_{k}.cancel"), "python",
                        "/workspace/bench_hello.py"],
                    "AttachStdout": true,
                    "AttachStderr": true,
                    "WorkingDir": "/workspace",
                    "Env": [format!("DOCKEXEC_EXECUTION=bench_{k}.")],
                });
                let (t, c) = time(|| base.exec_collect_body(ex.container_id(), &body, None));
                let c = c.expect("raw: wrapped exec");
                assert_eq!((c.code, c.stdout.as_slice()), (Some(0), &b"hello\n"[..]));
                t
            },
        );
        rep.add(
            Row::new(
                "  diag: same, baseline runs dockexec's sh wrapper",
                Unit::Time,
                o,
            )
            .base(b),
        );
    }

    if selected("sigkill") {
        // Diagnostic: a block whose own process dies of SIGKILL (exit 137) that dockexec did
        // not send: how long until run() returns, against the floor for the same exec.
        let block = CodeBlock::sh("kill -9 $$");
        let (o, b) = interleave(
            runs(mode, 8),
            0,
            || {
                let (t, out) = time(|| ex.run(&block).expect("ours: run"));
                assert_eq!(out.status.code(), Some(137), "ours: {}", out.status);
                t
            },
            || {
                let cmd = ["sh", "-c", "kill -9 $$"];
                let (t, c) = time(|| base.exec_collect(ex.container_id(), &cmd, None));
                assert_eq!(c.expect("raw: exec").code, Some(137));
                t
            },
        );
        rep.add(
            Row::new(
                "  diag: run `kill -9 $$` (exit 137, not ours)",
                Unit::Time,
                o,
            )
            .base(b),
        );
    }

    if selected("cancel") {
        let (o, b) = interleave(
            runs(mode, 30),
            if full { 2 } else { 0 },
            || cancel_ours(&ex),
            || cancel_raw(&mut base, ex.container_id()),
        );
        rep.add(
            Row::new(
                "cancel → wait() returns (sh tree ignoring TERM)",
                Unit::Time,
                o,
            )
            .base(b)
            .target(Target::P50Le(ms(100.0))),
        );
    }
    let _ = ex.stop();
    drop(ex);

    if selected("start") || selected("stop-idle") {
        let tmp = std::env::temp_dir().join(format!("dockexec-bench-{}", fixtures::run_id()));
        let mut i = 0;
        let (o, b) = interleave(
            runs(mode, 20),
            if full { 1 } else { 0 },
            || {
                let (t_start, ex) = time(|| builder(&image).start().expect("ours: start"));
                thread::sleep(Duration::from_millis(100));
                let (t_stop, r) = time(|| ex.stop());
                r.expect("ours: stop");
                [t_start, t_stop]
            },
            || {
                i += 1;
                let dir = tmp.join(i.to_string());
                std::fs::create_dir_all(&dir).expect("temp dir");
                let body = raw_body(&image, &dir);
                let name = format!("dockexec-bench-{}-{i}", fixtures::run_id());
                let (t_start, id) = time(|| {
                    let id = base
                        .container_create(Some(&name), &body)
                        .expect("raw: create");
                    base.container_start(&id).expect("raw: start");
                    id
                });
                thread::sleep(Duration::from_millis(100));
                let (t_stop, r) = time(|| base.container_remove(&id));
                r.expect("raw: remove");
                let _ = std::fs::remove_dir_all(&dir);
                [t_start, t_stop]
            },
        );
        let _ = std::fs::remove_dir_all(&tmp);
        rep.add(
            Row::new(
                "ExecutorBuilder::start vs raw create+start",
                Unit::Time,
                col(&o, 0),
            )
            .base(col(&b, 0))
            .target(Target::RatioLe(1.1)),
        );
        rep.add(
            Row::new("stop() idle vs raw force-remove", Unit::Time, col(&o, 1))
                .base(col(&b, 1))
                .target(Target::P50Lt(ms(150.0))),
        );
    }

    if selected("stop-16") {
        let tmp = std::env::temp_dir().join(format!("dockexec-bench16-{}", fixtures::run_id()));
        let mut i = 0;
        let (o, b) = interleave(
            runs(mode, 10),
            0,
            || {
                let ex = builder(&image).start().expect("ours: start");
                let running: Vec<Execution> = (0..16)
                    .map(|_| {
                        let e = ex
                            .spawn(&CodeBlock::sh("echo r; exec sleep 1000"))
                            .expect("ours: spawn");
                        wait_for(&e, "r");
                        e
                    })
                    .collect();
                let (t, r) = time(|| ex.stop());
                r.expect("ours: stop");
                for e in &running {
                    let out = e.try_wait().expect("try_wait").expect("finished by stop()");
                    assert!(out.status.cancelled(), "{}", out.status);
                }
                t
            },
            || {
                i += 1;
                let dir = tmp.join(i.to_string());
                std::fs::create_dir_all(&dir).expect("temp dir");
                let id = base
                    .container_create(None, &raw_body(&image, &dir))
                    .expect("raw: create");
                base.container_start(&id).expect("raw: start");
                let streams: Vec<RawStream> = (0..16)
                    .map(|_| {
                        let e = base
                            .exec_create(&id, &["sh", "-c", "echo r; exec sleep 1000"])
                            .expect("raw: exec create");
                        let mut s = base.exec_start(&e).expect("raw: exec start");
                        s.read_until(b"r").expect("raw: ready");
                        s
                    })
                    .collect();
                let (t, _) = time(|| {
                    base.container_remove(&id).expect("raw: remove");
                    for s in streams {
                        let _ = s.drain();
                    }
                });
                let _ = std::fs::remove_dir_all(&dir);
                t
            },
        );
        let _ = std::fs::remove_dir_all(&tmp);
        rep.add(
            Row::new("stop() with 16 running `sleep 1000`", Unit::Time, o)
                .base(b)
                .target(Target::P50Le(ms(250.0))),
        );
    }

    if selected("pool") {
        pool_bench(mode, &image, &mut rep);
    }

    rep.note("run baseline: exec create + start (stream read and demuxed to its end) + inspect of python3 -c, same container");
    rep.note("cancel: from cancel() until wait() returns; baseline: a `kill -9 -PGID` exec round trip, then the block's stream to EOF, then its inspect");
    rep.note("start baseline: create (same body: sh sleep loop, Init, network none, temp dir bind, AutoRemove) + start on a kept connection; stop baseline: DELETE ?force=true");
    rep.note("stop-16 baseline: force-remove of a container with 16 open `sleep 1000` exec streams, until all 16 streams hit EOF");
    rep.print();
}

/// Issue 18: `DOCKEXEC_BENCH_POOL_TASKS` tasks (default 20; 4 in smoke mode) of one python
/// block each, on `DOCKEXEC_BENCH_POOL_THREADS` threads (default 4): a `Pool` under
/// `Policy::Reset` and `Policy::Fresh` (capacity and `min_idle` = the threads; the pool is
/// warm before the clock starts) against a fresh `Executor` per task (start, run, stop). A
/// task's time runs from `acquire` (or `start`) until the lease is back (or `stop` returned);
/// tasks/s is the tasks over the wall time of all of them.
///
/// A full run (`--bench`) writes every way's raw results (per-task seconds, wall time, the
/// load average before and after) to `DOCKEXEC_BENCH_POOL_RESULTS`, by default
/// `benches/results/pool.json`, which `benches/rival/report.py` charts (with the async
/// rival's row from `benches/rival/benches/pool.rs`); a smoke run writes them only when that
/// variable is set, as the rival's `compare` bench does.
fn pool_bench(mode: Mode, image: &str, rep: &mut Report) {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let tasks = env(
        "DOCKEXEC_BENCH_POOL_TASKS",
        if mode == Mode::Full { 20 } else { 4 },
    );
    let threads = env("DOCKEXEC_BENCH_POOL_THREADS", 4).max(1);
    let block = CodeBlock::python("print(\"hello\")");
    // Runs `task` `tasks` times over `threads` threads; (per-task seconds, wall seconds).
    let drive = |task: &(dyn Fn() + Sync)| {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let t0 = Instant::now();
        let per: Vec<f64> = thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        let mut v = Vec::new();
                        while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < tasks {
                            v.push(time(task).0);
                        }
                        v
                    })
                })
                .collect();
            // Joined before the wall clock stops: every task is in the figure.
            hs.into_iter()
                .flat_map(|h| h.join().expect("a bench thread panicked"))
                .collect()
        });
        (per, t0.elapsed().as_secs_f64())
    };
    let mut results = Vec::new();
    let mut ways = Vec::new();
    for (key, policy) in [
        ("pool-reset", dockexec::Policy::Reset),
        ("pool-restart", dockexec::Policy::Restart),
        ("pool-fresh", dockexec::Policy::Fresh),
    ] {
        let img = image.to_string();
        let pool = dockexec::Pool::builder()
            .executor(move || builder(&img))
            .engine(dockexec::Engine::unix(fixtures::socket()), threads)
            .min_idle(threads)
            .policy(policy)
            .build()
            .expect("pool: build");
        let warm = Instant::now();
        while pool.status().idle < threads {
            assert!(warm.elapsed() < Duration::from_secs(120), "pool never warm");
            thread::sleep(Duration::from_millis(20));
        }
        let (load0, started) = (report::loadavg(), report::unix_time());
        let (per, wall) = drive(&|| {
            let lease = pool.acquire().expect("pool: acquire");
            let out = lease.run(&block).expect("pool: run");
            assert_eq!(out.stdout, b"hello\n");
        });
        let load1 = report::loadavg();
        pool.stop().expect("pool: stop");
        let name = format!("pool {policy:?}");
        ways.push(pool_way(
            key, &name, tasks, threads, &per, wall, started, load0, load1,
        ));
        results.push((name, per, wall));
    }
    let (load0, started) = (report::loadavg(), report::unix_time());
    let (per, wall) = drive(&|| {
        let ex = builder(image).start().expect("fresh: start");
        let out = ex.run(&block).expect("fresh: run");
        assert_eq!(out.stdout, b"hello\n");
        ex.stop().expect("fresh: stop");
    });
    let name = "fresh Executor per task".to_string();
    ways.push(pool_way(
        "executor-per-task",
        &name,
        tasks,
        threads,
        &per,
        wall,
        started,
        load0,
        report::loadavg(),
    ));
    results.push((name, per, wall));
    let path = match std::env::var_os("DOCKEXEC_BENCH_POOL_RESULTS") {
        Some(p) => Some(std::path::PathBuf::from(p)),
        None if mode == Mode::Full => {
            Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/results/pool.json"))
        }
        None => None,
    };
    if let Some(p) = path {
        let doc = json!({
            "bench": "cargo bench --features bench --bench executor -- pool",
            "mode": if mode == Mode::Full { "full" } else { "smoke" },
            "image": image,
            "cores": thread::available_parallelism().map_or(0, |n| n.get()),
            "unix_time": report::unix_time(),
            "ways": ways,
        });
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).expect("pool: results dir");
        }
        std::fs::write(&p, serde_json::to_string_pretty(&doc).expect("pool: json"))
            .expect("pool: write results");
        eprintln!("pool: wrote {}", p.display());
    }
    for (name, per, wall) in results {
        rep.note(format!(
            "pool: {name}: {tasks} tasks on {threads} threads: {:.1} tasks/s, p50 {:.1} ms, p99 {:.1} ms",
            tasks as f64 / wall,
            report::pct(&per, 0.5) * 1e3,
            report::pct(&per, 0.99) * 1e3
        ));
        rep.add(Row::new(
            format!("pool bench: {name}, one task"),
            Unit::Time,
            per,
        ));
    }
}

/// One way's raw results, as `benches/rival/report.py` reads them (the rival's pool bench
/// writes the same fields).
#[allow(clippy::too_many_arguments)] // one flat record; a struct would only rename them
fn pool_way(
    key: &str,
    name: &str,
    tasks: usize,
    threads: usize,
    per: &[f64],
    wall: f64,
    started: u64,
    load0: Vec<String>,
    load1: Vec<String>,
) -> serde_json::Value {
    json!({
        "way": key,
        "name": name,
        "tasks": tasks,
        "threads": threads,
        "wall_s": wall,
        "tasks_per_s": tasks as f64 / wall,
        "p50_s": report::pct(per, 0.5),
        "p90_s": report::pct(per, 0.9),
        "p99_s": report::pct(per, 0.99),
        "per_task_s": per,
        "started_unix": started,
        "loadavg_start": load0,
        "loadavg_end": load1,
    })
}

/// The create body dockexec sends, give or take its owner labels.
fn raw_body(image: &str, dir: &Path) -> serde_json::Value {
    json!({
        "Image": image,
        "Entrypoint": ["sh", "-c", "while :; do sleep 3600; done"],
        "Cmd": [],
        "WorkingDir": "/workspace",
        "Env": ["PYTHONUNBUFFERED=1"],
        "Labels": fixtures::labels(),
        "Tty": false,
        "OpenStdin": false,
        "HostConfig": {
            "Init": true,
            "Mounts": [{ "Type": "bind", "Source": dir, "Target": "/workspace", "ReadOnly": false }],
            "NetworkMode": "none",
            "AutoRemove": true,
            "ExtraHosts": [],
        },
    })
}

/// Blocks until the execution's stdout contains `text`.
fn wait_for(e: &Execution, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let rx = e.chunks();
    while !String::from_utf8_lossy(&seen).contains(text) {
        match rx.recv_deadline(deadline) {
            Ok(c) => seen.extend_from_slice(c.bytes()),
            Err(_) => panic!("execution did not print {text:?}: {:?}", e.try_wait()),
        }
    }
}

fn cancel_ours(ex: &Executor) -> f64 {
    let e = ex.spawn(&CodeBlock::sh(STUBBORN)).expect("ours: spawn");
    wait_for(&e, "ready");
    let t = Instant::now();
    e.cancel().expect("ours: cancel");
    let out = e.wait().expect("ours: wait");
    let t = t.elapsed().as_secs_f64();
    assert!(out.status.cancelled(), "ours: {}", out.status);
    t
}

fn cancel_raw(base: &mut Raw, container: &str) -> f64 {
    let script = format!("echo $$; {STUBBORN}");
    let id = base
        .exec_create(container, &["sh", "-c", &script])
        .expect("raw: exec create");
    let mut stream = base.exec_start(&id).expect("raw: exec start");
    let seen = stream.read_until(b"ready").expect("raw: ready");
    let pid: u32 = String::from_utf8_lossy(&seen)
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("raw: pid line");
    let t = Instant::now();
    // dash's `kill` takes no `--`; a negative pid is the process group (= the exec's session).
    let kill = format!("kill -9 -{pid}");
    let code = base
        .exec_round_trip(container, &["sh", "-c", &kill])
        .expect("raw: kill exec");
    assert_eq!(code, Some(0), "raw: kill exit code");
    stream.drain().expect("raw: drain");
    let end = base.exec_inspect(&id).expect("raw: inspect");
    let t = t.elapsed().as_secs_f64();
    assert_eq!(end, Some(137), "raw: killed block's exit code");
    t
}
