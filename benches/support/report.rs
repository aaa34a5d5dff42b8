//! Shared by the bench binaries: run mode, interleaved sampling, percentiles and the result
//! table. Benches report; they never fail on a timing.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// How the binary was invoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `cargo bench` (passes `--bench`): every measurement at full size.
    Full,
    /// `DOCKEXEC_BENCH_SMOKE=1` without `--bench`: every measurement once, to check the
    /// bench code itself.
    Smoke,
    /// `cargo test --all-targets` / `--benches`: no daemon work, the suite stays fast.
    Test,
}

/// The mode from the command line and `DOCKEXEC_BENCH_SMOKE`.
pub fn mode() -> Mode {
    if std::env::args().skip(1).any(|a| a == "--bench") {
        Mode::Full
    } else if std::env::var_os("DOCKEXEC_BENCH_SMOKE").is_some_and(|v| v != "0") {
        Mode::Smoke
    } else {
        Mode::Test
    }
}

/// Name filters: `cargo bench --bench engine -- ping` runs only measurements whose id
/// contains `ping`. None given means all.
pub fn selected(id: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    filters.is_empty() || filters.iter().any(|f| id.contains(f.as_str()))
}

/// `full` in full mode, 1 otherwise.
pub fn runs(mode: Mode, full: usize) -> usize {
    if mode == Mode::Full { full } else { 1 }
}

/// Runs `warmup` unrecorded rounds, then `n` rounds, each calling both closures once;
/// which one goes first alternates every round, so both share the machine's noise and
/// neither always runs right after the other. Each closure times its own region (so setup
/// and teardown stay out of it) and returns the measured value.
pub fn interleave<T>(
    n: usize,
    warmup: usize,
    mut ours: impl FnMut() -> T,
    mut base: impl FnMut() -> T,
) -> (Vec<T>, Vec<T>) {
    for i in 0..warmup {
        if i % 2 == 0 {
            ours();
            base();
        } else {
            base();
            ours();
        }
    }
    let (mut o, mut b) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        if i % 2 == 0 {
            o.push(ours());
            b.push(base());
        } else {
            b.push(base());
            o.push(ours());
        }
    }
    (o, b)
}

/// Seconds taken by `f`.
pub fn time<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let t = Instant::now();
    let v = f();
    (t.elapsed().as_secs_f64(), v)
}

/// Nearest-rank percentile (`q` in 0..=1) of unsorted samples.
pub fn pct(samples: &[f64], q: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

/// What the numbers of a row are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Seconds, printed as µs / ms / s.
    Time,
    /// Bytes, printed as MiB.
    Bytes,
}

impl Unit {
    fn fmt(self, v: f64) -> String {
        if v.is_nan() {
            return "-".into();
        }
        match self {
            Unit::Time if v < 1e-3 => format!("{:.1} µs", v * 1e6),
            Unit::Time if v < 1.0 => format!("{:.2} ms", v * 1e3),
            Unit::Time => format!("{v:.3} s"),
            Unit::Bytes => format!("{:.1} MiB", v / (1024.0 * 1024.0)),
        }
    }
}

/// The goal a row is checked against.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// ours p50 / baseline p50 ≤ x.
    RatioLe(f64),
    /// ours p50 < x.
    P50Lt(f64),
    /// ours p50 ≤ x.
    P50Le(f64),
    /// ours max ≤ x (peaks).
    MaxLe(f64),
    /// `bytes` / ours p50 ≥ x bytes/s (decimal GB/s when printed).
    ThroughputGe { bytes: f64, per_sec: f64 },
    /// Reported only.
    None,
}

/// One measurement: our samples, the baseline's, and the goal.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub unit: Unit,
    pub ours: Vec<f64>,
    pub base: Option<Vec<f64>>,
    pub target: Target,
}

impl Row {
    pub fn new(name: impl Into<String>, unit: Unit, ours: Vec<f64>) -> Row {
        Row {
            name: name.into(),
            unit,
            ours,
            base: None,
            target: Target::None,
        }
    }

    pub fn base(mut self, base: Vec<f64>) -> Row {
        self.base = Some(base);
        self
    }

    pub fn target(mut self, target: Target) -> Row {
        self.target = target;
        self
    }

    fn ratio(&self) -> f64 {
        match &self.base {
            Some(b) => pct(&self.ours, 0.5) / pct(b, 0.5),
            None => f64::NAN,
        }
    }

    /// (target text, PASS/FAIL/-).
    fn verdict(&self) -> (String, &'static str) {
        let p50 = pct(&self.ours, 0.5);
        let max = self.ours.iter().copied().fold(f64::NAN, f64::max);
        let pf = |ok: bool| if ok { "PASS" } else { "FAIL" };
        let u = self.unit;
        match self.target {
            Target::RatioLe(x) => (format!("ratio ≤ {x:.2}"), pf(self.ratio() <= x)),
            Target::P50Lt(x) => (format!("p50 < {}", u.fmt(x)), pf(p50 < x)),
            Target::P50Le(x) => (format!("p50 ≤ {}", u.fmt(x)), pf(p50 <= x)),
            Target::MaxLe(x) => (
                format!("max ≤ {} (max {})", u.fmt(x), u.fmt(max)),
                pf(max <= x),
            ),
            Target::ThroughputGe { bytes, per_sec } => {
                let got = bytes / p50;
                let base = self
                    .base
                    .as_ref()
                    .map(|b| format!(", base {:.2}", bytes / pct(b, 0.5) / 1e9))
                    .unwrap_or_default();
                (
                    format!(
                        "≥ {:.2} GB/s (p50 {:.2} GB/s{base})",
                        per_sec / 1e9,
                        got / 1e9
                    ),
                    pf(got >= per_sec),
                )
            }
            Target::None => ("(report only)".into(), "-"),
        }
    }
}

/// Collects rows, prints each as it completes, and the whole table at the end.
#[derive(Debug)]
pub struct Report {
    title: String,
    rows: Vec<Row>,
    notes: Vec<String>,
}

const HEADER: [&str; 9] = [
    "measurement",
    "n",
    "ours p50",
    "ours p90",
    "base p50",
    "base p90",
    "ratio",
    "target",
    "result",
];

impl Report {
    pub fn new(title: impl Into<String>) -> Report {
        Report {
            title: title.into(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn add(&mut self, row: Row) {
        let cells = cells(&row);
        eprintln!(
            "  done: {} | n {} | ours p50 {} p90 {} | base p50 {} p90 {} | ratio {} | {} {}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            cells[6],
            cells[7],
            cells[8]
        );
        self.rows.push(row);
    }

    /// A line printed under the table (what the baseline is, how a row was measured).
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    pub fn print(&self) {
        let table: Vec<[String; 9]> = self.rows.iter().map(cells).collect();
        let mut width = HEADER.map(|h| h.chars().count());
        for r in &table {
            for (w, c) in width.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: &[String; 9]| {
            let mut s = String::new();
            for (i, (c, w)) in cells.iter().zip(width).enumerate() {
                let pad = w - c.chars().count();
                if i == 0 || i == 7 {
                    let _ = write!(s, "{c}{} ", " ".repeat(pad));
                } else {
                    let _ = write!(s, "{}{c} ", " ".repeat(pad));
                }
                s.push_str("| ");
            }
            s.trim_end_matches(['|', ' ']).to_string()
        };
        let mut out = format!("\n== {} ==\n", self.title);
        out.push_str(&line(&HEADER.map(String::from)));
        out.push('\n');
        let total: usize = width.iter().sum::<usize>() + 3 * (width.len() - 1);
        out.push_str(&"-".repeat(total));
        out.push('\n');
        for r in &table {
            out.push_str(&line(r));
            out.push('\n');
        }
        for n in &self.notes {
            out.push_str("  * ");
            out.push_str(n);
            out.push('\n');
        }
        println!("{out}");
    }
}

fn cells(row: &Row) -> [String; 9] {
    let u = row.unit;
    let (b50, b90) = match &row.base {
        Some(b) => (u.fmt(pct(b, 0.5)), u.fmt(pct(b, 0.9))),
        None => ("-".into(), "-".into()),
    };
    let ratio = row.ratio();
    let (target, result) = row.verdict();
    [
        row.name.clone(),
        row.ours.len().to_string(),
        u.fmt(pct(&row.ours, 0.5)),
        u.fmt(pct(&row.ours, 0.9)),
        b50,
        b90,
        if ratio.is_nan() {
            "-".into()
        } else {
            format!("{ratio:.3}")
        },
        target,
        result.into(),
    ]
}

/// Column `i` of paired samples.
pub fn col<const N: usize>(v: &[[f64; N]], i: usize) -> Vec<f64> {
    v.iter().map(|r| r[i]).collect()
}

/// Milliseconds as seconds, for targets.
pub fn ms(v: f64) -> f64 {
    v / 1e3
}

/// A duration as seconds.
pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The first three fields of `/proc/loadavg` (1, 5 and 15 minutes); empty where it is absent.
pub fn loadavg() -> Vec<String> {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .map(str::to_string)
        .collect()
}

/// Seconds since the Unix epoch.
pub fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
