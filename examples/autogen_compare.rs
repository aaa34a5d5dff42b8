//! dockexec's side of the AutoGen comparison in `benches/autogen/` (run it with
//! `bash benches/autogen/run.sh`, which also runs AutoGen's side and prints both).
//!
//! ```text
//! autogen_compare                  # every scenario
//! autogen_compare --bigout-child   # internal: the 10 MB scenario, in a fresh process
//! ```
//!
//! The same scenarios as `benches/autogen/autogen_bench.py`, through the public API only,
//! printed as `RESULT key=value` lines: start/stop, `print("hello")`, cancelling a block that
//! left a child behind, 10 MB of stdout (wall time and peak-RSS growth, from `VmHWM` in a
//! fresh re-exec of this program), non-UTF-8 output and stdout/stderr separation. The image
//! (`python:3-slim`: `$DOCKEXEC_TEST_SLIM_TAG`, else scripts/test-images.env) must exist
//! locally: it is never pulled. Sizes come from `BENCH_N` (30),
//! `BENCH_N_STOP` (30) and `BENCH_N_BIGOUT` (10).

#[path = "../tests/common/test_images.rs"]
mod test_images;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dockexec::{CodeBlock, Executor, ExecutorBuilder, PullPolicy, Stream};

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Every container of ours carries this label (and a name with the same prefix).
const LABEL: &str = "dockexec-bench";
const LABEL_VALUE: &str = "autogen-compare";

const HELLO: &str = r#"print("hello")"#;
const CANCEL: &str = "import subprocess,time; subprocess.Popen(['sleep','1234']); time.sleep(1000)";
const BIGOUT: &str = r#"import sys; sys.stdout.write("x"*10_000_000)"#;
const NONUTF8: &str = r#"import sys; sys.stdout.buffer.write(b"\xff\xfe")"#;
const STREAMS: &str =
    r#"import sys; print("out"); sys.stdout.flush(); print("err", file=sys.stderr)"#;
const STREAMS_N: usize = 20;

static STARTED: AtomicUsize = AtomicUsize::new(0);

fn result(key: &str, value: impl std::fmt::Display) {
    println!("RESULT {key}={value}");
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// Nearest-rank percentile, as in the Python side.
fn pct(values: &[Duration], q: f64) -> Duration {
    let mut s = values.to_vec();
    s.sort();
    let k = ((q / 100.0 * s.len() as f64 + 0.5).round() as usize).clamp(1, s.len()) - 1;
    s[k]
}

/// The median, as Python's `statistics.median` (mean of the middle two for even counts).
fn median(values: &[Duration]) -> Duration {
    let mut s = values.to_vec();
    s.sort();
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2
    }
}

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn builder() -> ExecutorBuilder {
    let n = STARTED.fetch_add(1, Ordering::Relaxed);
    let mut b = Executor::builder();
    b.image(test_images::get("DOCKEXEC_TEST_SLIM_TAG"))
        .pull_policy(PullPolicy::Never)
        .name(format!(
            "dockexec-bench-dockexec-{}-{n}",
            std::process::id()
        ))
        .label(LABEL, LABEL_VALUE)
        .timeout(Some(Duration::from_secs(60)));
    b
}

fn list_procs(container: &str) -> BoxResult<Vec<String>> {
    let script = r#"for d in /proc/[0-9]*; do tr "\0" " " < $d/cmdline; echo; done"#;
    let out = Command::new("docker")
        .args(["exec", container, "sh", "-c", script])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains("for d in /proc") && !l.starts_with("tr "))
        .map(String::from)
        .collect())
}

/// The processes in `after` that were not in `before` (as multisets).
fn new_procs(before: &[String], after: Vec<String>) -> Vec<String> {
    let mut rest = before.to_vec();
    let mut added = Vec::new();
    for p in after {
        match rest.iter().position(|r| *r == p) {
            Some(i) => {
                rest.remove(i);
            }
            None => added.push(p),
        }
    }
    added
}

fn scenario_start_stop(n_start: usize, n_stop: usize) -> BoxResult<()> {
    let mut starts = Vec::new();
    let mut stops = Vec::new();
    for i in 0..n_start {
        let b = builder();
        let t0 = Instant::now();
        let executor = b.start()?;
        starts.push(t0.elapsed());
        let t0 = Instant::now();
        executor.stop()?;
        if i < n_stop {
            stops.push(t0.elapsed());
        }
    }
    result("start_n", n_start);
    result("start_p50_ms", ms(median(&starts)));
    result("start_p90_ms", ms(pct(&starts, 90.0)));
    result("stop_n", stops.len());
    result("stop_p50_ms", ms(median(&stops)));
    Ok(())
}

fn scenario_exec(n: usize) -> BoxResult<()> {
    let executor = builder().start()?;
    for _ in 0..3 {
        executor.run(&CodeBlock::python(HELLO))?; // warm-up
    }
    let mut times = Vec::new();
    for _ in 0..n {
        let t0 = Instant::now();
        let out = executor.run(&CodeBlock::python(HELLO))?;
        times.push(t0.elapsed());
        assert!(out.status.success() && out.stdout == b"hello\n", "{out:?}");
    }
    result("hello_n", n);
    result("hello_p50_ms", ms(median(&times)));
    result("hello_p90_ms", ms(pct(&times, 90.0)));

    // (f) non-UTF-8 output
    match executor.run(&CodeBlock::python(NONUTF8)) {
        Ok(out) => result(
            "nonutf8",
            format!(
                "returned exit={:?} stdout={:?}",
                out.status.code(),
                out.stdout
            ),
        ),
        Err(e) => result("nonutf8", format!("error {e}")),
    }
    let out = executor.run(&CodeBlock::python(HELLO))?;
    result(
        "usable_after_nonutf8",
        if out.stdout == b"hello\n" {
            "yes"
        } else {
            "no"
        },
    );

    // (g) stdout/stderr
    let out = executor.run(&CodeBlock::python(STREAMS))?;
    let separated = out.stdout == b"out\n" && out.stderr == b"err\n";
    result(
        "streams",
        format!(
            "{} (stdout={:?} stderr={:?})",
            if separated { "separated" } else { "merged" },
            out.stdout_lossy(),
            out.stderr_lossy()
        ),
    );
    let mut in_order = 0;
    for _ in 0..STREAMS_N {
        let out = executor.run(&CodeBlock::python(STREAMS))?;
        let order: Vec<Stream> = out.pieces().map(|(s, _)| s).collect();
        if out.merged() == b"out\nerr\n" && order == [Stream::Stdout, Stream::Stderr] {
            in_order += 1;
        }
    }
    result("streams_in_order", format!("{in_order}/{STREAMS_N}"));
    executor.stop()?;
    Ok(())
}

fn scenario_cancel() -> BoxResult<()> {
    let executor = builder().start()?;
    let baseline = list_procs(executor.container_id())?;
    let t_start = Instant::now();
    let execution = executor.spawn(&CodeBlock::python(CANCEL))?;
    std::thread::sleep(Duration::from_millis(500));
    let t_cancel = Instant::now();
    execution.cancel()?;
    let out = execution.wait()?;
    result("cancel_return_ms", ms(t_cancel.elapsed()));
    result("cancel_total_ms", ms(t_start.elapsed()));
    result(
        "cancel_result",
        format!(
            "cancelled={} code={:?} signal={:?}",
            out.status.cancelled(),
            out.status.code(),
            out.status.signal()
        ),
    );
    // Let any background kill land before looking, as on the Python side.
    std::thread::sleep(Duration::from_secs(1));
    // Every process that was not there before the block: the block's leftovers.
    let leaked = new_procs(&baseline, list_procs(executor.container_id())?);
    result(
        "cancel_leaked",
        if leaked.is_empty() {
            "none".to_string()
        } else {
            leaked.join("; ")
        },
    );
    let t0 = Instant::now();
    executor.stop()?;
    result("stop_after_cancel_ms", ms(t0.elapsed()));
    Ok(())
}

/// Peak resident set size of this process, in KiB.
fn vm_hwm_kib() -> BoxResult<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .ok_or("no VmHWM in /proc/self/status")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .ok_or("malformed VmHWM")?
        .parse()?)
}

fn bigout_child(n: usize) -> BoxResult<()> {
    let executor = builder().max_output_bytes(None).start()?;
    executor.run(&CodeBlock::python(HELLO))?; // warm-up
    let before = vm_hwm_kib()?;
    let t0 = Instant::now();
    let out = executor.run(&CodeBlock::python(BIGOUT))?;
    let mut times = vec![t0.elapsed()];
    let after = vm_hwm_kib()?;
    assert!(
        out.status.success() && out.stdout.len() == 10_000_000,
        "{:?} {}",
        out.status,
        out.stdout.len()
    );
    drop(out);
    for _ in 1..n {
        let t0 = Instant::now();
        let out = executor.run(&CodeBlock::python(BIGOUT))?;
        times.push(t0.elapsed());
        assert_eq!(out.stdout.len(), 10_000_000);
    }
    result("bigout_n", n);
    result("bigout_p50_ms", ms(median(&times)));
    result(
        "bigout_rss_delta_mb",
        format!("{:.1}", (after - before) as f64 / 1024.0),
    );
    executor.stop()?;
    Ok(())
}

fn leftovers() -> BoxResult<Vec<String>> {
    let out = Command::new("docker")
        .args(["ps", "-a", "--format", "{{.Names}}", "--filter"])
        .arg(format!("label={LABEL}={LABEL_VALUE}"))
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect())
}

fn main() -> BoxResult<()> {
    let n = env_usize("BENCH_N", 30);
    let n_stop = env_usize("BENCH_N_STOP", 30);
    let n_bigout = env_usize("BENCH_N_BIGOUT", 10);
    if std::env::args().nth(1).as_deref() == Some("--bigout-child") {
        return bigout_child(n_bigout);
    }
    result(
        "version",
        format!("dockexec {} (release build)", env!("CARGO_PKG_VERSION")),
    );
    let run = || -> BoxResult<()> {
        scenario_start_stop(n, n_stop.min(n))?;
        scenario_exec(n)?;
        scenario_cancel()?;
        let child = Command::new(std::env::current_exe()?)
            .arg("--bigout-child")
            .output()?;
        print!("{}", String::from_utf8_lossy(&child.stdout));
        if !child.status.success() {
            result(
                "bigout",
                format!(
                    "child failed ({}): {}",
                    child.status,
                    String::from_utf8_lossy(&child.stderr).trim()
                ),
            );
        }
        Ok(())
    };
    let outcome = run();
    let left = leftovers()?;
    result(
        "leftover_containers",
        if left.is_empty() {
            "none".to_string()
        } else {
            left.join(", ")
        },
    );
    for name in &left {
        let _ = Command::new("docker").args(["rm", "-f", name]).output();
    }
    outcome
}
