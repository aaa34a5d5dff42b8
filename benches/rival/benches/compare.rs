//! dockexec (exec path, agent) vs the async rival (bollard + tokio, `src/lib.rs`) vs the floors
//! (raw exec through dockexec's private client `__bench::BenchClient` and a minimal hand-written
//! HTTP/1.1 client, and the `docker` CLI), every scenario of issue 10, interleaved in one run.
//!
//! `cargo bench --manifest-path benches/rival/Cargo.toml` runs it all (scripts/bench.sh does,
//! then charts it); it writes the raw samples as JSON to `DOCKEXEC_BENCH_RESULTS` (default
//! `benches/results/compare.json`). `DOCKEXEC_BENCH_SMOKE=1` (with or without `--bench`) runs every
//! scenario once at small sizes and asserts behaviour only (scripts/test.sh). Timings are
//! reported, never asserted.
//!
//! Iteration counts: DOCKEXEC_BENCH_N (latency, 20), DOCKEXEC_BENCH_N_START (start/stop, 6),
//! DOCKEXEC_BENCH_N_STOP16 (4), DOCKEXEC_BENCH_N_CONC (concurrency, 3), DOCKEXEC_BENCH_N_CANCEL
//! (10), DOCKEXEC_BENCH_N_BIG (10 MB output, 4).

#[path = "../../support/fixtures.rs"]
mod fixtures;
#[path = "../../support/raw.rs"]
mod raw;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dockexec::__bench::BenchClient;
use dockexec::{CodeBlock, Execution, Executor, Strategy};
use dockexec_rival::Rival;
use serde_json::{Value, json};

/// The block the cancel measurements kill: a background child, a shell that ignores
/// SIGTERM, and a line that says all of it is running.
const STUBBORN: &str = "sleep 1000 & trap '' TERM; echo ready; while :; do sleep 1; done";
/// A block that stays in flight until killed, after saying so.
const SLEEPER: &str = "echo r; exec sleep 1000";
const HELLO: &str = "print(\"hello\")";
const BIG: &str = "import sys\nsys.stdout.write('x' * 10_000_000)";
const BIG_LEN: usize = 10_000_000;

const EXEC: &str = "dockexec-exec";
const AGENT: &str = "dockexec-agent";
const RIVAL: &str = "rival";
const RAW: &str = "floor-raw";
const CLI: &str = "floor-cli";

type Samples = BTreeMap<String, BTreeMap<String, Vec<f64>>>;

fn env_n(key: &str, full: usize, smoke: bool) -> usize {
    if smoke {
        return 1;
    }
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(full)
}

fn builder(image: &str, strategy: Strategy) -> dockexec::ExecutorBuilder {
    let mut b = fixtures::builder(image);
    b.strategy(strategy);
    b
}

fn main() {
    if let Ok(spec) = std::env::var("DOCKEXEC_RIVAL_CHILD") {
        child(&spec);
        return;
    }
    let Some((full, mut raw, _sweep, image)) = fixtures::rival_start() else {
        return;
    };
    let smoke = !full;
    let socket = fixtures::socket();
    let began = Instant::now();
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime"),
    );
    let docker = rt
        .block_on(dockexec_rival::connect(&socket))
        .expect("rival: connect");
    let client = BenchClient::connect(&socket).expect("raw: connect");
    let mut s = Samples::new();
    let mut add = |sc: &str, who: &str, v: f64| {
        s.entry(sc.into())
            .or_default()
            .entry(who.into())
            .or_default()
            .push(v);
    };
    let order = |i: usize, all: &[&'static str]| -> Vec<&'static str> {
        let mut v = all.to_vec();
        v.rotate_left(i % all.len());
        v
    };

    // The long-lived contenders the latency, concurrency and cancel scenarios share.
    let ex = builder(&image, Strategy::Exec)
        .start()
        .expect("exec: start");
    let ag = builder(&image, Strategy::Agent)
        .start()
        .expect("agent: start");
    let rv = rt
        .block_on(Rival::start(
            &docker,
            &builder(&image, Strategy::Exec),
            dockexec::NOBODY,
        ))
        .expect("rival: start");
    let floor_ws = temp_ws("floor");
    let floor = raw
        .container_create(
            None,
            &dockexec::__bench::create_body(&builder(&image, Strategy::Exec), "floor", &floor_ws),
        )
        .expect("floor: create");
    raw.container_start(&floor).expect("floor: start");
    let all = [EXEC, AGENT, RIVAL, RAW, CLI];

    // Latency: one python print("hello") and one sh `true`.
    let n = env_n("DOCKEXEC_BENCH_N", 20, smoke);
    for (sc, lang, code, argv) in [
        ("hello-python", "python", HELLO, ["python3", "-c", HELLO]),
        ("true-sh", "sh", "true", ["sh", "-c", "true"]),
    ] {
        let block = if lang == "python" {
            CodeBlock::python(code)
        } else {
            CodeBlock::sh(code)
        };
        for i in 0..n + usize::from(full) {
            for who in order(i, &all) {
                let t = Instant::now();
                match who {
                    EXEC | AGENT => {
                        let out = if who == EXEC { &ex } else { &ag }.run(&block).expect(who);
                        assert!(out.status.success(), "{who}: {}", out.status);
                        if lang == "python" {
                            assert_eq!(out.stdout, b"hello\n", "{who}");
                        }
                    }
                    RIVAL => {
                        let out = rt.block_on(rv.run(lang, code)).expect("rival: run");
                        assert_eq!(out.code, Some(0), "rival: {out:?}");
                        if lang == "python" {
                            assert_eq!(out.stdout, b"hello\n", "rival");
                        }
                    }
                    RAW => {
                        let c = client.exec_round_trip(&floor, &argv).expect("raw: exec");
                        assert_eq!(c, Some(0), "raw");
                    }
                    _ => {
                        let o = Command::new("docker")
                            .args(["exec", &floor])
                            .args(argv)
                            .output()
                            .expect("docker exec");
                        assert!(o.status.success(), "cli: {o:?}");
                    }
                }
                let t = t.elapsed().as_secs_f64();
                // The first round of a full run is a warm-up.
                if smoke || i > 0 {
                    add(sc, who, t);
                }
            }
        }
        eprintln!("{sc}: done ({:.0} s)", began.elapsed().as_secs_f64());
    }

    // Concurrency: N python blocks at once, until the last one's output is in.
    let sizes: &[usize] = if smoke { &[4] } else { &[16, 64, 256] };
    let n = env_n("DOCKEXEC_BENCH_N_CONC", 3, smoke);
    let hello = CodeBlock::python(HELLO);
    for &size in sizes {
        let sc = format!("concurrent-{size}");
        // Hundreds of `docker` processes at once are a fork bomb on the host, not a floor.
        let who_all: Vec<&str> = all
            .iter()
            .copied()
            .filter(|w| *w != CLI || size <= 64)
            .collect();
        for i in 0..n {
            for who in order(i, &who_all) {
                let t = Instant::now();
                match who {
                    EXEC | AGENT => {
                        let e = if who == EXEC { &ex } else { &ag };
                        let running: Vec<Execution> =
                            (0..size).map(|_| e.spawn(&hello).expect("spawn")).collect();
                        for r in running {
                            let out = r.into_output().expect(who);
                            assert_eq!(out.stdout, b"hello\n", "{who}: {}", out.status);
                        }
                    }
                    RIVAL => {
                        let outs = rt.block_on(futures_util::future::join_all(
                            (0..size).map(|_| rv.run("python", HELLO)),
                        ));
                        for o in outs {
                            assert_eq!(o.expect("rival: run").stdout, b"hello\n");
                        }
                    }
                    RAW => std::thread::scope(|sc| {
                        let hs: Vec<_> = (0..size)
                            .map(|_| {
                                sc.spawn(|| {
                                    client.exec_round_trip(&floor, &["python3", "-c", HELLO])
                                })
                            })
                            .collect();
                        for h in hs {
                            assert_eq!(h.join().unwrap().expect("raw"), Some(0));
                        }
                    }),
                    _ => {
                        let kids: Vec<_> = (0..size)
                            .map(|_| {
                                Command::new("docker")
                                    .args(["exec", &floor, "python3", "-c", HELLO])
                                    .stdout(Stdio::piped())
                                    .spawn()
                                    .expect("docker exec")
                            })
                            .collect();
                        for k in kids {
                            let o = k.wait_with_output().expect("docker exec");
                            assert_eq!(o.stdout, b"hello\n", "cli");
                        }
                    }
                }
                add(&sc, who, t.elapsed().as_secs_f64());
            }
        }
        eprintln!("{sc}: done ({:.0} s)", began.elapsed().as_secs_f64());
    }

    // Cancel: from cancel until wait returns and the tree is gone.
    let n = env_n("DOCKEXEC_BENCH_N_CANCEL", 10, smoke);
    for i in 0..n {
        for who in order(i, &all) {
            let t = match who {
                EXEC | AGENT => cancel_ours(if who == EXEC { &ex } else { &ag }),
                RIVAL => rt.block_on(async {
                    let mut e = rv.spawn("sh", STUBBORN).await.expect("rival: spawn");
                    let mut seen = Vec::new();
                    while !String::from_utf8_lossy(&seen).contains("ready") {
                        let (_, b) = e.chunks.recv().await.expect("rival: ready");
                        seen.extend_from_slice(&b);
                    }
                    let t = Instant::now();
                    e.cancel();
                    let out = e.wait().await.expect("rival: wait");
                    let t = t.elapsed().as_secs_f64();
                    assert!(out.cancelled && out.code == Some(137), "rival: {out:?}");
                    t
                }),
                RAW => cancel_raw(&mut raw, &floor),
                _ => cancel_cli(&floor),
            };
            add("cancel", who, t);
        }
    }
    eprintln!("cancel: done ({:.0} s)", began.elapsed().as_secs_f64());
    for who in [EXEC, AGENT, RIVAL, RAW] {
        assert!(
            tree_gone(
                &mut raw,
                match who {
                    EXEC => ex.container_id(),
                    AGENT => ag.container_id(),
                    RIVAL => rv.container_id(),
                    _ => &floor,
                }
            ),
            "{who}: a cancelled block left processes behind"
        );
    }

    ex.stop().expect("exec: stop");
    ag.stop().expect("agent: stop");
    rt.block_on(rv.stop()).expect("rival: stop");
    drop((ex, ag));
    raw.container_remove(&floor).expect("floor: remove");
    let _ = std::fs::remove_dir_all(&floor_ws);

    // Start, and stop while idle.
    let n = env_n("DOCKEXEC_BENCH_N_START", 6, smoke);
    for i in 0..n {
        for who in order(i, &all) {
            let (a, b) = match who {
                EXEC | AGENT => {
                    let st = if who == EXEC {
                        Strategy::Exec
                    } else {
                        Strategy::Agent
                    };
                    let (a, e) = time(|| builder(&image, st).start().expect("start"));
                    std::thread::sleep(Duration::from_millis(100));
                    let (b, r) = time(|| e.stop());
                    r.expect("stop");
                    (a, b)
                }
                RIVAL => rt.block_on(async {
                    let t = Instant::now();
                    let r =
                        Rival::start(&docker, &builder(&image, Strategy::Exec), dockexec::NOBODY)
                            .await
                            .expect("rival: start");
                    let a = t.elapsed().as_secs_f64();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let t = Instant::now();
                    r.stop().await.expect("rival: stop");
                    (a, t.elapsed().as_secs_f64())
                }),
                RAW => {
                    let ws = temp_ws(&format!("raw{i}"));
                    let body = dockexec::__bench::create_body(
                        &builder(&image, Strategy::Exec),
                        "raw",
                        &ws,
                    );
                    let (a, id) = time(|| {
                        let id = raw.container_create(None, &body).expect("raw: create");
                        raw.container_start(&id).expect("raw: start");
                        id
                    });
                    std::thread::sleep(Duration::from_millis(100));
                    let (b, r) = time(|| raw.container_remove(&id));
                    r.expect("raw: remove");
                    let _ = std::fs::remove_dir_all(&ws);
                    (a, b)
                }
                _ => {
                    let ws = temp_ws(&format!("cli{i}"));
                    let (a, id) = time(|| cli_run(&image, &ws));
                    std::thread::sleep(Duration::from_millis(100));
                    let (b, ()) = time(|| docker_ok(&["rm", "-f", &id]));
                    let _ = std::fs::remove_dir_all(&ws);
                    (a, b)
                }
            };
            add("start", who, a);
            add("stop-idle", who, b);
        }
    }
    eprintln!("start/stop: done ({:.0} s)", began.elapsed().as_secs_f64());

    // Stop with 16 running blocks.
    let n = env_n("DOCKEXEC_BENCH_N_STOP16", 4, smoke);
    for i in 0..n {
        for who in order(i, &all) {
            let t = match who {
                EXEC | AGENT => {
                    let st = if who == EXEC {
                        Strategy::Exec
                    } else {
                        Strategy::Agent
                    };
                    let e = builder(&image, st).start().expect("start");
                    let running: Vec<Execution> = (0..16)
                        .map(|_| {
                            let x = e.spawn(&CodeBlock::sh(SLEEPER)).expect("spawn");
                            wait_for(&x, "r");
                            x
                        })
                        .collect();
                    let (t, r) = time(|| e.stop());
                    r.expect("stop");
                    for x in &running {
                        let out = x.try_wait().expect("try_wait").expect("ended by stop");
                        assert!(out.status.cancelled(), "{who}: {}", out.status);
                    }
                    t
                }
                RIVAL => rt.block_on(async {
                    let r =
                        Rival::start(&docker, &builder(&image, Strategy::Exec), dockexec::NOBODY)
                            .await
                            .expect("rival: start");
                    let mut running = Vec::new();
                    for _ in 0..16 {
                        let mut x = r.spawn("sh", SLEEPER).await.expect("rival: spawn");
                        x.chunks.recv().await.expect("rival: ready");
                        running.push(x);
                    }
                    let t = Instant::now();
                    r.stop().await.expect("rival: stop");
                    let t = t.elapsed().as_secs_f64();
                    for x in running {
                        assert!(x.wait().await.expect("rival: wait").cancelled);
                    }
                    t
                }),
                RAW => {
                    let ws = temp_ws(&format!("raw16-{i}"));
                    let body = dockexec::__bench::create_body(
                        &builder(&image, Strategy::Exec),
                        "raw",
                        &ws,
                    );
                    let id = raw.container_create(None, &body).expect("raw: create");
                    raw.container_start(&id).expect("raw: start");
                    let streams: Vec<raw::RawStream> = (0..16)
                        .map(|_| {
                            let e = raw.exec_create(&id, &["sh", "-c", SLEEPER]).expect("exec");
                            let mut s = raw.exec_start(&e).expect("exec start");
                            s.read_until(b"r").expect("raw: ready");
                            s
                        })
                        .collect();
                    let (t, ()) = time(|| {
                        raw.container_remove(&id).expect("raw: remove");
                        for s in streams {
                            let _ = s.drain();
                        }
                    });
                    let _ = std::fs::remove_dir_all(&ws);
                    t
                }
                _ => {
                    let ws = temp_ws(&format!("cli16-{i}"));
                    let id = cli_run(&image, &ws);
                    let kids: Vec<_> = (0..16)
                        .map(|_| {
                            let mut k = Command::new("docker")
                                .args(["exec", &id, "sh", "-c", SLEEPER])
                                .stdout(Stdio::piped())
                                .spawn()
                                .expect("docker exec");
                            let mut line = String::new();
                            BufReader::new(k.stdout.as_mut().unwrap())
                                .read_line(&mut line)
                                .expect("cli: ready");
                            k
                        })
                        .collect();
                    let (t, ()) = time(|| {
                        docker_ok(&["rm", "-f", &id]);
                        for mut k in kids {
                            let _ = k.wait();
                        }
                    });
                    let _ = std::fs::remove_dir_all(&ws);
                    t
                }
            };
            add("stop-16", who, t);
        }
    }
    eprintln!("stop-16: done ({:.0} s)", began.elapsed().as_secs_f64());

    // 10 MB of output, and resources with blocks in flight: each in a fresh process, so that
    // peak RSS and thread counts are this contender's alone.
    let mut resources: BTreeMap<String, Value> = BTreeMap::new();
    let n_big = env_n("DOCKEXEC_BENCH_N_BIG", 4, smoke);
    for who in [EXEC, AGENT, RIVAL, RAW] {
        let r = run_child(&format!("bigout:{who}:{n_big}"));
        for t in r["wall"].as_array().into_iter().flatten() {
            add("bigout-10MB", who, t.as_f64().unwrap());
        }
        resources.insert(format!("bigout-10MB/{who}"), r);
    }
    for _ in 0..n_big {
        let ws = temp_ws("clibig");
        let id = cli_run(&image, &ws);
        let (t, o) = time(|| {
            Command::new("docker")
                .args(["exec", &id, "python3", "-c", BIG])
                .output()
                .expect("docker exec")
        });
        assert_eq!(o.stdout.len(), BIG_LEN, "cli: 10 MB");
        docker_ok(&["rm", "-f", &id]);
        let _ = std::fs::remove_dir_all(&ws);
        add("bigout-10MB", CLI, t);
    }
    eprintln!("bigout: done ({:.0} s)", began.elapsed().as_secs_f64());
    let inflight: &[usize] = if smoke { &[8] } else { &[64, 256] };
    for &k in inflight {
        for who in [EXEC, AGENT, RIVAL] {
            resources.insert(
                format!("inflight-{k}/{who}"),
                run_child(&format!("inflight:{who}:{k}")),
            );
        }
    }
    eprintln!("resources: done ({:.0} s)", began.elapsed().as_secs_f64());

    let left = fixtures::this_runs_containers(&mut raw).expect("list containers");
    assert!(left.is_empty(), "containers left behind: {left:?}");

    let result = json!({
        "mode": if smoke { "smoke" } else { "full" },
        "image": image,
        "elapsed_s": began.elapsed().as_secs_f64(),
        "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        "samples": s,
        "resources": resources,
    });
    print_table(&result);
    let path = match std::env::var_os("DOCKEXEC_BENCH_RESULTS") {
        Some(p) => Some(PathBuf::from(p)),
        None if full => Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../results/compare.json")),
        None => None,
    };
    if let Some(p) = path {
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).expect("results dir");
        }
        std::fs::write(&p, serde_json::to_string_pretty(&result).unwrap()).expect("write results");
        eprintln!("wrote {}", p.display());
    }
}

fn time<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let t = Instant::now();
    let v = f();
    (t.elapsed().as_secs_f64(), v)
}

fn temp_ws(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dockexec-cmp-{}-{name}", fixtures::run_id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn docker_ok(args: &[&str]) {
    let o = Command::new("docker").args(args).output().expect("docker");
    assert!(o.status.success(), "docker {args:?}: {o:?}");
}

/// `docker run -d` with the flags that make dockexec's container (see its create body).
fn cli_run(image: &str, ws: &Path) -> String {
    let mount = format!("type=bind,source={},target=/workspace", ws.display());
    let run = format!("{}={}", fixtures::RUN_LABEL, fixtures::run_id());
    let o = Command::new("docker")
        .args([
            "run",
            "-d",
            "--init",
            "--network",
            "none",
            "--cap-drop",
            "ALL",
            "--cap-add",
            "SETUID",
            "--cap-add",
            "SETGID",
            "--cap-add",
            "KILL",
            "--security-opt",
            "no-new-privileges",
            "--read-only",
            "--tmpfs",
            "/tmp:rw,nosuid,nodev,mode=1777",
            "--pids-limit",
            "1024",
            "--memory",
            "2g",
            "--memory-swap",
            "2g",
            "--user",
            "0",
            "-w",
            "/workspace",
            "-e",
            "PYTHONUNBUFFERED=1",
            "--mount",
            &mount,
            "--label",
            &format!("{}=1", fixtures::LABEL),
            "--label",
            &run,
            "--entrypoint",
            "sh",
            image,
            "-c",
            "while :; do sleep 3600; done",
        ])
        .output()
        .expect("docker run");
    assert!(o.status.success(), "docker run: {o:?}");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn wait_for(e: &Execution, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
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
    let e = ex.spawn(&CodeBlock::sh(STUBBORN)).expect("spawn");
    wait_for(&e, "ready");
    let t = Instant::now();
    e.cancel().expect("cancel");
    let out = e.wait().expect("wait");
    let t = t.elapsed().as_secs_f64();
    assert!(out.status.cancelled(), "{}", out.status);
    t
}

fn cancel_raw(raw: &mut raw::Raw, container: &str) -> f64 {
    let script = format!("echo $$; {STUBBORN}");
    let id = raw
        .exec_create(container, &["sh", "-c", &script])
        .expect("raw: exec");
    let mut stream = raw.exec_start(&id).expect("raw: start");
    let seen = stream.read_until(b"ready").expect("raw: ready");
    let pid: u32 = String::from_utf8_lossy(&seen)
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("raw: pid line");
    let t = Instant::now();
    let kill = format!("kill -9 -{pid}");
    let code = raw
        .exec_round_trip(container, &["sh", "-c", &kill])
        .expect("raw: kill");
    assert_eq!(code, Some(0));
    stream.drain().expect("raw: drain");
    let end = raw.exec_inspect(&id).expect("raw: inspect");
    let t = t.elapsed().as_secs_f64();
    assert_eq!(end, Some(137));
    t
}

fn cancel_cli(container: &str) -> f64 {
    let script = format!("echo $$; {STUBBORN}");
    let mut k = Command::new("docker")
        .args(["exec", container, "sh", "-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("docker exec");
    let mut r = BufReader::new(k.stdout.take().unwrap());
    let (mut pid, mut ready) = (String::new(), String::new());
    r.read_line(&mut pid).expect("cli: pid");
    r.read_line(&mut ready).expect("cli: ready");
    let t = Instant::now();
    docker_ok(&[
        "exec",
        container,
        "sh",
        "-c",
        &format!("kill -9 -{}", pid.trim()),
    ]);
    let st = k.wait().expect("cli: wait");
    let t = t.elapsed().as_secs_f64();
    assert_eq!(st.code(), Some(137), "cli: {st:?}");
    t
}

/// True when no process but the container's init and keeper is left (after a moment).
fn tree_gone(raw: &mut raw::Raw, container: &str) -> bool {
    std::thread::sleep(Duration::from_millis(300));
    let script = "for d in /proc/[0-9]*; do tr '\\0' ' ' < $d/cmdline; echo; done";
    let e = raw
        .exec_create(container, &["sh", "-c", script])
        .expect("ps");
    let c = raw.exec_start(&e).expect("ps").collect(None).expect("ps");
    let text = String::from_utf8_lossy(&c.stdout);
    !text.contains("sleep 1000") && !text.contains("while :; do sleep 1")
}

fn status_kb(key: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn run_child(spec: &str) -> Value {
    let o = Command::new(std::env::current_exe().expect("current exe"))
        .env("DOCKEXEC_RIVAL_CHILD", spec)
        .env("DOCKEXEC_BENCH_RUN", fixtures::run_id())
        .stderr(Stdio::inherit())
        .output()
        .expect("child");
    let text = String::from_utf8_lossy(&o.stdout);
    if !o.status.success() && std::env::var_os("DOCKEXEC_BENCH_SMOKE").is_none() {
        // A full run keeps going (one overloaded daemon call must not lose the whole run's
        // samples); the report shows the error in place of the numbers.
        eprintln!("child {spec} failed ({}); recorded as an error", o.status);
        return json!({ "error": format!("the measurement failed ({}); see the run's stderr", o.status) });
    }
    assert!(o.status.success(), "child {spec} failed: {o:?}");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("child {spec}: no result in {text}"));
    serde_json::from_str(line).expect("child json")
}

/// One measurement in a fresh process: `bigout:WHO:N` or `inflight:WHO:K`.
fn child(spec: &str) {
    let mut parts = spec.split(':');
    let (kind, who, n) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap().parse::<usize>().unwrap(),
    );
    let image = fixtures::image();
    let socket = fixtures::socket();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut b = builder(
        &image,
        if who == AGENT {
            Strategy::Agent
        } else {
            Strategy::Exec
        },
    );
    b.max_output_bytes(None);
    let hwm0 = status_kb("VmHWM:");
    let mut r = json!({ "hwm_start_kb": hwm0 });
    match (kind, who) {
        ("bigout", EXEC | AGENT) => {
            let ex = b.start().expect("start");
            ex.run(&CodeBlock::python(HELLO)).expect("warm-up");
            let before = status_kb("VmHWM:");
            let mut wall = Vec::new();
            for i in 0..n {
                let (t, out) = time(|| ex.run(&CodeBlock::python(BIG)).expect("big"));
                assert_eq!(out.stdout.len(), BIG_LEN, "{who}: {}", out.status);
                drop(out);
                wall.push(t);
                if i == 0 {
                    r["hwm_after_one_kb"] = json!(status_kb("VmHWM:"));
                }
            }
            r["hwm_before_kb"] = json!(before);
            r["wall"] = json!(wall);
            ex.stop().expect("stop");
        }
        ("bigout", RIVAL) => rt.block_on(async {
            let docker = dockexec_rival::connect(&socket).await.unwrap();
            let rv = Rival::start(&docker, &b, dockexec::NOBODY)
                .await
                .expect("start");
            rv.run("python", HELLO).await.expect("warm-up");
            let before = status_kb("VmHWM:");
            let mut wall = Vec::new();
            for i in 0..n {
                let t = Instant::now();
                let out = rv.run("python", BIG).await.expect("big");
                assert_eq!(out.stdout.len(), BIG_LEN, "rival: {:?}", out.code);
                drop(out);
                wall.push(t.elapsed().as_secs_f64());
                if i == 0 {
                    r["hwm_after_one_kb"] = json!(status_kb("VmHWM:"));
                }
            }
            r["hwm_before_kb"] = json!(before);
            r["wall"] = json!(wall);
            rv.stop().await.expect("stop");
        }),
        ("bigout", _) => {
            let mut raw = raw::Raw::connect(&socket).expect("raw");
            let client = BenchClient::connect(&socket).expect("raw");
            let ws = temp_ws("bigraw");
            let body = dockexec::__bench::create_body(&b, "raw", &ws);
            let id = raw.container_create(None, &body).expect("create");
            raw.container_start(&id).expect("start");
            let before = status_kb("VmHWM:");
            let mut wall = Vec::new();
            for i in 0..n {
                let e = raw.exec_create(&id, &["python3", "-c", BIG]).expect("exec");
                let (t, c) = time(|| {
                    raw.exec_start(&e)
                        .expect("start")
                        .collect(None)
                        .expect("read")
                });
                assert_eq!(c.stdout.len(), BIG_LEN);
                drop(c);
                wall.push(t);
                if i == 0 {
                    r["hwm_after_one_kb"] = json!(status_kb("VmHWM:"));
                }
            }
            drop(client);
            r["hwm_before_kb"] = json!(before);
            r["wall"] = json!(wall);
            raw.container_remove(&id).expect("remove");
            let _ = std::fs::remove_dir_all(&ws);
        }
        ("inflight", EXEC | AGENT) => {
            let ex = b.start().expect("start");
            let t = Instant::now();
            let running: Vec<Execution> = (0..n)
                .map(|_| ex.spawn(&CodeBlock::sh(SLEEPER)).expect("spawn"))
                .collect();
            for x in &running {
                wait_for(x, "r");
            }
            r["all_running_s"] = json!(t.elapsed().as_secs_f64());
            r["threads"] = json!(status_kb("Threads:"));
            r["rss_kb"] = json!(status_kb("VmRSS:"));
            r["hwm_kb"] = json!(status_kb("VmHWM:"));
            ex.stop().expect("stop");
            for x in &running {
                assert!(x.try_wait().unwrap().unwrap().status.cancelled());
            }
        }
        ("inflight", _) => rt.block_on(async {
            let docker = dockexec_rival::connect(&socket).await.unwrap();
            let rv = Rival::start(&docker, &b, dockexec::NOBODY)
                .await
                .expect("start");
            let t = Instant::now();
            let mut running =
                futures_util::future::try_join_all((0..n).map(|_| rv.spawn("sh", SLEEPER)))
                    .await
                    .expect("spawn");
            for x in &mut running {
                x.chunks.recv().await.expect("ready");
            }
            r["all_running_s"] = json!(t.elapsed().as_secs_f64());
            r["threads"] = json!(status_kb("Threads:"));
            r["rss_kb"] = json!(status_kb("VmRSS:"));
            r["hwm_kb"] = json!(status_kb("VmHWM:"));
            rv.stop().await.expect("stop");
            for x in running {
                assert!(x.wait().await.unwrap().cancelled);
            }
        }),
        _ => panic!("unknown child spec {spec}"),
    }
    println!("RESULT {r}");
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn print_table(r: &Value) {
    println!(
        "\n{:<16} {:>12} {:>12} {:>12} {:>12} {:>12}  (median ms)",
        "scenario", EXEC, AGENT, RIVAL, RAW, CLI
    );
    for (sc, by) in r["samples"].as_object().unwrap() {
        let cell = |w: &str| {
            by.get(w)
                .and_then(Value::as_array)
                .map(|a| {
                    let v: Vec<f64> = a.iter().filter_map(Value::as_f64).collect();
                    format!("{:.1}", median(&v) * 1e3)
                })
                .unwrap_or_else(|| "-".into())
        };
        println!(
            "{sc:<16} {:>12} {:>12} {:>12} {:>12} {:>12}",
            cell(EXEC),
            cell(AGENT),
            cell(RIVAL),
            cell(RAW),
            cell(CLI)
        );
    }
    for (k, v) in r["resources"].as_object().unwrap() {
        if k.starts_with("inflight") {
            println!(
                "{k:<28} threads {:>4}  rss {:>7} kB  hwm {:>7} kB",
                v["threads"], v["rss_kb"], v["hwm_kb"]
            );
        } else {
            println!(
                "{k:<28} hwm before {:>7} kB  after one {:>7} kB",
                v["hwm_before_kb"], v["hwm_after_one_kb"]
            );
        }
    }
}
