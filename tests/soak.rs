//! Soak: 8 threads run, cancel, time out and stop executors in random order for
//! DOCKEXEC_SOAK_SECS seconds (default 20; scripts/test.sh sets it), taking and dropping chunk
//! receivers at random, while a sampler records this process's open fds, threads and RSS, the
//! test's containers and the daemon's exec records for them. It fails if any measure keeps
//! growing (the last quarter's peak against the first quarter's, with slack), if anything is
//! left at the end, or if any call fails with anything but `Stopped` (an executor another
//! thread stopped) or a daemon call's `Timeout` (an overloaded daemon; counted and printed).
//!
//! `cargo test --all-features --test soak -- --nocapture` prints the figures: blocks run, and
//! the peak and final value of each measure. A failure names the seed (DOCKEXEC_SOAK_SEED
//! replays the same choices).
mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use dockexec::{CodeBlock, Error, Executor};

const THREADS: usize = 8;
/// At most this many executors live at once (each is a container).
const MAX_EXECUTORS: usize = 4;
/// Every executor's block timeout: the "time out" operation runs a block longer than this.
/// (A short block may reach it too when the machine is loaded: that is a status, not a leak.)
const BLOCK_TIMEOUT: Duration = Duration::from_secs(4);
/// No single operation may take longer than this (a hang fails the test, with its seed).
const OP_LIMIT: Duration = Duration::from_secs(90);

fn soak_duration() -> Duration {
    let secs = std::env::var("DOCKEXEC_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(20.0);
    Duration::from_secs_f64(secs)
}

/// xorshift64*: no dependency, and replayable from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// One sample of every measure.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    fds: u64,
    threads: u64,
    rss_kib: u64,
    containers: u64,
    execs: u64,
}

/// A measure: its name, how to read it from a sample, and its absolute slack.
type Measure = (&'static str, fn(&Sample) -> u64, u64);

const MEASURES: [Measure; 5] = [
    // (name, accessor, absolute slack on top of 25 %)
    ("open fds", |s| s.fds, 24),
    ("threads", |s| s.threads, 12),
    ("RSS KiB", |s| s.rss_kib, 16 * 1024),
    ("containers", |s| s.containers, MAX_EXECUTORS as u64),
    ("daemon execs", |s| s.execs, 32),
];

fn count_dir(path: &str) -> u64 {
    std::fs::read_dir(path).map_or(0, |d| d.count() as u64)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The case's containers, and the exec records the daemon keeps for them.
fn containers_and_execs(case: &common::CaseGuard) -> (u64, u64) {
    let ids = case.containers();
    let mut execs = 0;
    for id in &ids {
        // A container removed since the listing simply counts no execs.
        let (ok, n) = common::docker(&["inspect", "-f", "{{len .ExecIDs}}", id]);
        if ok {
            execs += n.parse::<u64>().unwrap_or(0);
        }
    }
    (ids.len() as u64, execs)
}

fn sample(case: &common::CaseGuard) -> Sample {
    let (containers, execs) = containers_and_execs(case);
    Sample {
        fds: count_dir("/proc/self/fd"),
        threads: count_dir("/proc/self/task"),
        rss_kib: rss_kib(),
        containers,
        execs,
    }
}

#[derive(Default)]
struct Counts {
    blocks: AtomicU64,
    executors: AtomicU64,
    stopped_by_other: AtomicU64,
    daemon_timeouts: AtomicU64,
}

/// The executors the threads share: any thread may spawn on, or stop, any of them.
type Pool = Mutex<Vec<Arc<Executor>>>;

/// `Ok(())` for a result or for `Stopped` (another thread stopped the executor); else why.
fn tolerate(r: Result<(), Error>, what: &str, counts: &Counts) -> Result<(), String> {
    match r {
        Ok(()) => Ok(()),
        Err(Error::Stopped) => {
            counts.stopped_by_other.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        // An overloaded daemon may not answer a call within its bound: a clear error, not a
        // leak (what it leaves is counted below).
        Err(Error::Timeout { what }) => {
            counts.daemon_timeouts.fetch_add(1, Ordering::Relaxed);
            eprintln!("soak: {what}: daemon call timed out (counted, tolerated)");
            Ok(())
        }
        Err(e) => {
            let mut msg = format!("{what}: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            Err(msg)
        }
    }
}

/// One random operation on one random executor of the pool (or on the pool itself).
fn step(
    rng: &mut Rng,
    pool: &Pool,
    builder: &dockexec::ExecutorBuilder,
    counts: &Counts,
) -> Result<(), String> {
    let pick = {
        let p = pool.lock().unwrap();
        if p.is_empty() {
            None
        } else {
            Some(Arc::clone(&p[rng.below(p.len() as u64) as usize]))
        }
    };
    let Some(ex) = pick else {
        return start_one(pool, builder, counts);
    };
    let op = rng.below(100);
    match op {
        // start another executor, up to the bound
        0..=7 => start_one(pool, builder, counts),
        // stop this one (others may be spawning on it right now)
        8..=13 => {
            pool.lock().unwrap().retain(|e| !Arc::ptr_eq(e, &ex));
            tolerate(ex.stop(), "stop", counts)
        }
        // drop it without stop(): Drop stops it once the last Arc goes
        14..=16 => {
            pool.lock().unwrap().retain(|e| !Arc::ptr_eq(e, &ex));
            drop(ex);
            Ok(())
        }
        // run a block to its end, maybe following its chunks
        17..=44 => {
            let take = rng.chance(50);
            tolerate(
                ex.spawn(&CodeBlock::sh("echo soak; echo err >&2"))
                    .and_then(|e| {
                        let rx = take.then(|| e.chunks());
                        let out = e.wait_timeout(OP_LIMIT)?.cloned();
                        drop(rx);
                        match out {
                            Some(o) if o.status.success() && o.stdout == b"soak\n" => Ok(()),
                            // Another thread's stop() cancels it; a loaded machine may
                            // time it out.
                            Some(o) if o.status.cancelled() || o.status.timed_out() => Ok(()),
                            Some(o) => Err(Error::Internal(format!(
                                "run: {} {:?}",
                                o.status,
                                o.stdout_lossy()
                            ))),
                            None => Err(Error::Internal("run did not end".into())),
                        }
                    })
                    .inspect(|_| {
                        counts.blocks.fetch_add(1, Ordering::Relaxed);
                    }),
                "run",
                counts,
            )
        }
        // a python block, through the same path
        45..=54 => tolerate(
            ex.run(&CodeBlock::python("print(sum(range(1000)))"))
                .and_then(|o| {
                    if o.status.success() || o.status.cancelled() || o.status.timed_out() {
                        counts.blocks.fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    } else {
                        Err(Error::Internal(format!("python: {}", o.status)))
                    }
                }),
            "python run",
            counts,
        ),
        // cancel a running block, after a random delay, chunks taken and dropped at random
        55..=72 => tolerate(
            ex.spawn(&CodeBlock::sh("echo go; sleep 30")).and_then(|e| {
                counts.blocks.fetch_add(1, Ordering::Relaxed);
                let rx = rng.chance(50).then(|| e.chunks());
                thread::sleep(Duration::from_millis(rng.below(400)));
                if rng.chance(50) {
                    drop(rx);
                }
                e.cancel()?;
                match e.wait_timeout(OP_LIMIT)? {
                    // Under load the timeout may fire before the cancel lands.
                    Some(o) if o.status.cancelled() || o.status.timed_out() => Ok(()),
                    Some(o) => Err(Error::Internal(format!("cancel: {}", o.status))),
                    None => Err(Error::Internal("cancelled block did not end".into())),
                }
            }),
            "cancel",
            counts,
        ),
        // a block that outlives the timeout
        73..=84 => tolerate(
            ex.spawn(&CodeBlock::sh("sleep 30")).and_then(|e| {
                counts.blocks.fetch_add(1, Ordering::Relaxed);
                let _rx = rng.chance(30).then(|| e.chunks());
                match e.wait_timeout(OP_LIMIT)? {
                    Some(o) if o.status.timed_out() || o.status.cancelled() => Ok(()),
                    Some(o) => Err(Error::Internal(format!("timeout: {}", o.status))),
                    None => Err(Error::Internal("timed-out block did not end".into())),
                }
            }),
            "timeout",
            counts,
        ),
        // spawn and drop the handle at once: the worker carries on, stop() must end it
        _ => tolerate(
            ex.spawn(&CodeBlock::sh("echo dropped; sleep 1")).map(|e| {
                counts.blocks.fetch_add(1, Ordering::Relaxed);
                if rng.chance(50) {
                    drop(e.chunks());
                }
            }),
            "spawn and drop",
            counts,
        ),
    }
}

fn start_one(
    pool: &Pool,
    builder: &dockexec::ExecutorBuilder,
    counts: &Counts,
) -> Result<(), String> {
    if pool.lock().unwrap().len() >= MAX_EXECUTORS {
        return Ok(());
    }
    let ex = builder.start().map_err(|e| format!("start: {e}"))?;
    counts.executors.fetch_add(1, Ordering::Relaxed);
    let mut p = pool.lock().unwrap();
    if p.len() < MAX_EXECUTORS {
        p.push(Arc::new(ex));
        Ok(())
    } else {
        // Lost the race for the last slot: stop it here, outside the pool.
        drop(p);
        ex.stop().map_err(|e| format!("stop: {e}"))
    }
}

#[test]
fn soak() {
    let _serial = common::serial();
    let duration = soak_duration();
    let seed = std::env::var("DOCKEXEC_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    let (mut builder, case) = common::case_builder("soak");
    builder.timeout(Some(BLOCK_TIMEOUT));
    let threads_before = common::dockexec_threads();
    let before = sample(&case);
    eprintln!(
        "soak: {THREADS} threads for {duration:?}, seed {seed} (DOCKEXEC_SOAK_SEED replays it), \
         strategy {:?}",
        common::strategy()
    );

    let pool: Pool = Mutex::new(Vec::new());
    let counts = Counts::default();
    let failed = AtomicBool::new(false);
    let failure: Mutex<Option<String>> = Mutex::new(None);
    let samples: Mutex<Vec<(Duration, Sample)>> = Mutex::new(Vec::new());
    let t0 = Instant::now();
    let end = t0 + duration;
    let done = AtomicBool::new(false);

    /// Ends the sampler's loop when dropped, so a panicking lane cannot leave it running.
    struct Done<'a>(&'a AtomicBool);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }

    thread::scope(|s| {
        // The sampler: once a second, until the workers are done.
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                let x = sample(&case);
                samples.lock().unwrap().push((t0.elapsed(), x));
                thread::sleep(Duration::from_secs(1));
            }
        });
        let _done = Done(&done);
        let workers: Vec<_> = (0..THREADS)
            .map(|lane| {
                let (pool, builder, counts, failed, failure) =
                    (&pool, &builder, &counts, &failed, &failure);
                s.spawn(move || {
                    let mut rng = Rng(seed ^ (lane as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                    let mut i = 0u64;
                    while Instant::now() < end && !failed.load(Ordering::Relaxed) {
                        i += 1;
                        let began = Instant::now();
                        let r = step(&mut rng, pool, builder, counts);
                        let took = began.elapsed();
                        let r = r.and_then(|()| {
                            if took > OP_LIMIT {
                                Err(format!("one operation took {took:?}"))
                            } else {
                                Ok(())
                            }
                        });
                        if let Err(e) = r {
                            failed.store(true, Ordering::Relaxed);
                            failure
                                .lock()
                                .unwrap()
                                .get_or_insert(format!("lane {lane}, step {i}, seed {seed}: {e}"));
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("a soak lane panicked");
        }
        // Stop what is left in the pool, in random order, from several threads at once.
        let left: Vec<_> = std::mem::take(&mut *pool.lock().unwrap());
        let (failure, counts) = (&failure, &counts);
        thread::scope(|s2| {
            for ex in left {
                s2.spawn(move || {
                    if let Err(e) = tolerate(ex.stop(), "final stop", counts) {
                        failure.lock().unwrap().get_or_insert(e);
                    }
                });
            }
        });
    });

    let elapsed = t0.elapsed();
    // Everything is stopped: what remains is what leaked.
    let settled = common::eventually(Duration::from_secs(20), || {
        common::dockexec_threads() <= threads_before
    });
    // A removal that timed out on our side may still complete on the daemon's.
    common::eventually(Duration::from_secs(60), || case.containers().is_empty());
    let after = sample(&case);
    let samples = samples.into_inner().unwrap();
    let blocks = counts.blocks.load(Ordering::Relaxed);
    eprintln!(
        "soak: {elapsed:.1?}: {blocks} blocks on {} executors ({} calls met an executor another \
         thread had stopped, {} daemon calls timed out); {} samples",
        counts.executors.load(Ordering::Relaxed),
        counts.stopped_by_other.load(Ordering::Relaxed),
        counts.daemon_timeouts.load(Ordering::Relaxed),
        samples.len()
    );
    let mut problems = Vec::new();
    if let Some(f) = failure.into_inner().unwrap() {
        problems.push(f);
    }
    let n = samples.len();
    for (name, get, slack) in MEASURES {
        let peak = samples.iter().map(|(_, x)| get(x)).max().unwrap_or(0);
        eprintln!(
            "soak: {name:>12}: before {:>7}, peak {peak:>7}, final {:>7}",
            get(&before),
            get(&after)
        );
        if n >= 8 {
            let first = samples[..n / 4].iter().map(|(_, x)| get(x)).max().unwrap();
            let last = samples[n - n / 4..]
                .iter()
                .map(|(_, x)| get(x))
                .max()
                .unwrap();
            let bound = first + first / 4 + slack;
            if last > bound {
                problems.push(format!(
                    "{name} keeps growing: last quarter's peak {last} > first quarter's {first} \
                     + 25 % + {slack}"
                ));
            }
        }
    }
    if !settled {
        problems.push(format!(
            "dockexec threads left: {} (before: {threads_before}): {:?}",
            common::dockexec_threads(),
            common::thread_names()
        ));
    }
    if after.containers != 0 {
        problems.push(format!("{} containers left", after.containers));
    }
    if after.fds > before.fds + 8 {
        problems.push(format!(
            "open fds: {} before, {} after everything stopped",
            before.fds, after.fds
        ));
    }
    assert!(
        problems.is_empty(),
        "soak failed (seed {seed}, {blocks} blocks):\n{}",
        problems.join("\n")
    );
    assert!(blocks > 0, "the soak ran no block at all");
}
