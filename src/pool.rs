//! [`Pool`]: warm executors over one or more engines, handed out as [`Lease`]s, each
//! made clean again ([`Policy::Restart`], [`Policy::Reset`]) or replaced ([`Policy::Fresh`])
//! between two tasks.
//!
//! Threads: one manager (refill, health checks, lifetimes) and one short-lived thread per job
//! (a start, a reset, a removal). All of them are joined by [`Pool::stop`].

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::docker::api::Client;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::executor::{Executor, ExecutorBuilder};

/// Default for [`PoolBuilder::min_idle`].
pub const DEFAULT_MIN_IDLE: usize = 2;
/// Default capacity of an engine given without one, and of the engine from the environment.
pub const DEFAULT_CAPACITY: usize = 4;
/// Default for [`PoolBuilder::acquire_timeout`].
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default for [`PoolBuilder::health_interval`].
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(2);
/// Bound on one health check's connect and ping.
const PING_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an engine whose start failed (for a reason other than its death) waits before
/// the next start there: an image missing must not make the manager spin.
const START_BACKOFF: Duration = Duration::from_secs(1);

/// The clean-up between two tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Kill every process of the task, empty the workspace, `/tmp`, `/dev/shm` and `$HOME`
    /// (as the blocks' user, never following a link, then checked empty), and hand the same
    /// container out again. Sessions are gone with their processes; every block starts from
    /// the executor's own environment.
    ///
    /// When blocks cannot be root (the agent strategy, a non-root
    /// [`user`](crate::ExecutorBuilder::user), `no-new-privileges`, and a PID namespace of the
    /// container's own: the defaults) the agent
    /// stays, warm: it ends every block and session of its own and kills every process in
    /// the container whose uid is not root's (a block's daemons too, wherever they went,
    /// stopped or renamed); no `docker exec` at all.
    /// Otherwise (root blocks, which could tamper with the agent; the exec strategy), and
    /// whenever that fast way fails, the container's keeper kills every process and a fresh
    /// agent is started (one exec). A reset that still fails retires the executor.
    ///
    /// What the fast way keeps that a fresh agent would not: the agent's own memory, so a
    /// zygote block or a session (both forked from it) of the next task may find the code
    /// text (not the output) of earlier tasks in freed heap, as later blocks of one executor
    /// always could (see [`Strategy::Agent`](crate::Strategy::Agent)); use
    /// [`Policy::Fresh`] where that matters. Neither way removes System V IPC objects a task
    /// made.
    ///
    /// Not the default, for that memory: opt in where no task's code is a secret from the
    /// next (one user's runs). BENCHMARKS.md measures it against `Restart` and `Fresh`.
    Reset,
    /// As [`Reset`](Policy::Reset), but always the full way: the container's keeper kills
    /// every process and a fresh agent is started (one `docker exec` per task), so nothing of
    /// an earlier task is left in any process's memory either; the same container is handed
    /// out again, its workspace, `/tmp`, `/dev/shm` and `$HOME` emptied and checked. The
    /// default: the cleanest way short of a new container, at a few times the tasks/s of
    /// `Fresh` (bounded by the daemon's exec rate, not its create and start rate).
    #[default]
    Restart,
    /// Remove the used container; the refill starts a new one. Bounded by the engine's
    /// create and start rate.
    Fresh,
}

type Factory = dyn Fn() -> ExecutorBuilder + Send + Sync;

/// Configures a [`Pool`]. Every option has a documented default.
pub struct PoolBuilder {
    engines: Vec<(Engine, usize)>,
    factory: Arc<Factory>,
    policy: Policy,
    min_idle: usize,
    acquire_timeout: Duration,
    health_interval: Duration,
    max_uses: Option<u32>,
    max_lifetime: Option<Duration>,
}

impl fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("engines", &self.engines)
            .field("policy", &self.policy)
            .field("min_idle", &self.min_idle)
            .field("max_uses", &self.max_uses)
            .field("max_lifetime", &self.max_lifetime)
            .finish_non_exhaustive()
    }
}

impl Default for PoolBuilder {
    fn default() -> Self {
        PoolBuilder {
            engines: Vec::new(),
            factory: Arc::new(ExecutorBuilder::new),
            policy: Policy::default(),
            min_idle: DEFAULT_MIN_IDLE,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            health_interval: DEFAULT_HEALTH_INTERVAL,
            max_uses: None,
            max_lifetime: None,
        }
    }
}

impl PoolBuilder {
    /// Adds an engine that holds at most `capacity` of the pool's executors (idle, leased,
    /// starting or being reset). Engines may mix transports (a local socket, TLS, SSH).
    /// Defaults to [`Engine::from_env`] with capacity [`DEFAULT_CAPACITY`].
    pub fn engine(&mut self, engine: Engine, capacity: usize) -> &mut Self {
        self.engines.push((engine, capacity));
        self
    }

    /// How each executor is configured: `f` returns the builder, and the pool sets its
    /// engine. Defaults to [`ExecutorBuilder::new`]. The builder must not name a
    /// [`work_dir`](ExecutorBuilder::work_dir) (each executor needs its own).
    pub fn executor(
        &mut self,
        f: impl Fn() -> ExecutorBuilder + Send + Sync + 'static,
    ) -> &mut Self {
        self.factory = Arc::new(f);
        self
    }

    /// The clean-up between two tasks. Defaults to [`Policy::Restart`].
    pub fn policy(&mut self, policy: Policy) -> &mut Self {
        self.policy = policy;
        self
    }

    /// How many idle executors the pool keeps ready, within the engines' capacities.
    /// Defaults to [`DEFAULT_MIN_IDLE`].
    pub fn min_idle(&mut self, n: usize) -> &mut Self {
        self.min_idle = n;
        self
    }

    /// How long [`Pool::acquire`] waits for a free executor. Defaults to
    /// [`DEFAULT_ACQUIRE_TIMEOUT`].
    pub fn acquire_timeout(&mut self, d: Duration) -> &mut Self {
        self.acquire_timeout = d;
        self
    }

    /// How often every engine is pinged; a dead one takes no new executor until it answers
    /// again. Defaults to [`DEFAULT_HEALTH_INTERVAL`].
    pub fn health_interval(&mut self, d: Duration) -> &mut Self {
        self.health_interval = d;
        self
    }

    /// Retires an executor after `n` tasks (with [`Policy::Reset`] or [`Policy::Restart`]).
    /// Defaults to no limit.
    pub fn max_uses(&mut self, n: Option<u32>) -> &mut Self {
        self.max_uses = n;
        self
    }

    /// Retires an executor this long after its start (idle ones at once, leased ones when
    /// they come back). Defaults to no limit.
    pub fn max_lifetime(&mut self, d: Option<Duration>) -> &mut Self {
        self.max_lifetime = d;
        self
    }

    /// Starts the pool's threads; the refill begins at once, in the background.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an engine of capacity 0, a zero `min_idle` capacity left,
    /// a zero interval or timeout, or a builder with a `work_dir`; [`Error::Connect`] when
    /// no engine was given and none can be found in the environment; [`Error::Thread`] when
    /// the manager thread cannot start.
    pub fn build(&self) -> Result<Pool> {
        if self.engines.iter().any(|(_, c)| *c == 0) {
            return Err(Error::invalid(
                "a pool engine's capacity must be at least 1",
            ));
        }
        if self.health_interval.is_zero() || self.acquire_timeout.is_zero() {
            return Err(Error::invalid(
                "health_interval and acquire_timeout must be more than zero",
            ));
        }
        if self.max_uses == Some(0) || self.max_lifetime == Some(Duration::ZERO) {
            return Err(Error::invalid(
                "max_uses and max_lifetime must be more than zero",
            ));
        }
        if (self.factory)().work_dir.is_some() {
            return Err(Error::invalid(
                "a pooled executor cannot have a work_dir: each needs its own",
            ));
        }
        let engines = if self.engines.is_empty() {
            vec![(Engine::from_env()?, DEFAULT_CAPACITY)]
        } else {
            self.engines.clone()
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                engines: engines
                    .into_iter()
                    .map(|(engine, capacity)| Slot {
                        engine,
                        capacity,
                        live: 0,
                        healthy: true,
                        retry_at: None,
                        last_error: None,
                    })
                    .collect(),
                idle: VecDeque::new(),
                queue: VecDeque::new(),
                next_ticket: 0,
                starting: 0,
                leased: 0,
                stopped: false,
                jobs: Vec::new(),
            }),
            changed: Condvar::new(),
            factory: Arc::clone(&self.factory),
            policy: self.policy,
            min_idle: self.min_idle,
            health_interval: self.health_interval,
            max_uses: self.max_uses,
            max_lifetime: self.max_lifetime,
        });
        let s = Arc::clone(&shared);
        let manager = std::thread::Builder::new()
            .name("dockexec-pool".into())
            .spawn(move || s.manage())
            .map_err(Error::Thread)?;
        Ok(Pool {
            shared,
            manager: Mutex::new(Some(manager)),
            acquire_timeout: self.acquire_timeout,
        })
    }
}

/// Warm executors over one or more engines, for many short tasks that must not see each
/// other. `Send + Sync`: share it with `&` or in an `Arc`.
///
/// [`acquire`](Pool::acquire) hands out an idle executor as a [`Lease`] at once, or waits
/// for one. Dropping the lease (or [`release`](Lease::release)) gives it back, and it is
/// made clean again in the background ([`Policy`]). The pool refills itself up to
/// [`min_idle`](PoolBuilder::min_idle), places each new executor on the healthy engine with
/// the most free capacity, and never goes past an engine's capacity. When an engine dies,
/// the blocks of its leases end [`lost`](crate::ExitStatus::lost) (or with
/// [`Error::ContainerGone`] / [`Error::Connect`]), no executor starts there, and it is taken
/// back once it answers a ping again.
///
/// ```no_run
/// # fn main() -> dockexec::Result<()> {
/// use dockexec::{CodeBlock, Engine, Executor, Pool, Policy};
///
/// let pool = Pool::builder()
///     .engine(Engine::unix("/var/run/docker.sock"), 4)
///     .executor(|| {
///         let mut b = Executor::builder();
///         b.image("python:3-slim");
///         b
///     })
///     .policy(Policy::Reset)
///     .min_idle(2)
///     .build()?;
/// let lease = pool.acquire()?;
/// let output = lease.run(&CodeBlock::python("print(6 * 7)"))?;
/// assert_eq!(output.stdout, b"42\n");
/// drop(lease); // back to the pool, reset in the background
/// pool.stop()?;
/// # Ok(()) }
/// ```
///
/// # Drop
/// Dropping the pool does what [`stop`](Pool::stop) does, ignoring its errors.
pub struct Pool {
    shared: Arc<Shared>,
    /// Taken (and joined) by the first `stop`.
    manager: Mutex<Option<JoinHandle<()>>>,
    acquire_timeout: Duration,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

/// A snapshot of a [`Pool`], from [`Pool::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStatus {
    /// Executors ready to be leased.
    pub idle: usize,
    /// Executors out on lease.
    pub leased: usize,
    /// Executors being started.
    pub starting: usize,
    /// Each engine, in the order given.
    pub engines: Vec<EngineStatus>,
}

/// One engine of a [`PoolStatus`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineStatus {
    /// [`Engine::endpoint`].
    pub endpoint: String,
    /// Whether it answered its last health check (or start).
    pub healthy: bool,
    /// Executors on it: idle, leased, starting or being reset or removed.
    pub live: usize,
    /// Its capacity.
    pub capacity: usize,
    /// Why it was last found dead or failed a start, if it was.
    pub last_error: Option<String>,
}

impl Pool {
    /// A builder with every option at its default.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// Leases an executor, waiting up to [`acquire_timeout`](PoolBuilder::acquire_timeout).
    ///
    /// # Errors
    /// As [`acquire_timeout`](Self::acquire_timeout).
    pub fn acquire(&self) -> Result<Lease> {
        self.acquire_timeout(self.acquire_timeout)
    }

    /// Leases an idle executor at once when there is one; else waits up to `wait` for the
    /// refill (or a released lease).
    ///
    /// # Errors
    /// [`Error::Stopped`] after [`stop`](Self::stop); [`Error::PoolTimeout`] when no
    /// executor became free in time, with the engines' last errors.
    pub fn acquire_timeout(&self, wait: Duration) -> Result<Lease> {
        let deadline = Instant::now() + wait;
        let sh = &self.shared;
        // Held while looking and while waiting (the condvar releases it): the idle list, the
        // counts and `stopped` change together under it.
        let mut st = sh.state.lock();
        // First come, first served: under contention a thread that loses every race for
        // the condvar would otherwise wait far past the others (seen: 2.8 s at p99).
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.queue.push_back(ticket);
        // A waiter is demand: the manager starts one more.
        sh.changed.notify_all();
        let mut timed_out = false;
        let result = loop {
            if st.stopped {
                break Err(Error::Stopped);
            }
            if st.queue.front() == Some(&ticket) {
                if let Some(warm) = st.idle.pop_front() {
                    st.leased += 1;
                    break Ok(Lease {
                        shared: Arc::clone(sh),
                        warm: Some(warm),
                    });
                }
            }
            if timed_out {
                let why = st.why_none();
                break Err(Error::PoolTimeout { waited: wait, why });
            }
            timed_out = sh.changed.wait_until(&mut st, deadline).timed_out();
        };
        st.queue.retain(|t| *t != ticket);
        // The next in line may take what is idle now.
        sh.changed.notify_all();
        result
    }

    /// What the pool holds now.
    pub fn status(&self) -> PoolStatus {
        let st = self.shared.state.lock();
        PoolStatus {
            idle: st.idle.len(),
            leased: st.leased,
            starting: st.starting,
            engines: st
                .engines
                .iter()
                .map(|s| EngineStatus {
                    endpoint: s.engine.endpoint(),
                    healthy: s.healthy,
                    live: s.live,
                    capacity: s.capacity,
                    last_error: s.last_error.clone(),
                })
                .collect(),
        }
    }

    /// Stops the pool: no more leases, the manager and every job thread are joined, and
    /// every idle executor is stopped. Leases still out keep working; each is stopped (its
    /// container removed) when it comes back. Idempotent, from any thread.
    ///
    /// # Errors
    /// The first error of stopping an idle executor (everything else is still done).
    pub fn stop(&self) -> Result<()> {
        {
            // Under the lock: a job that finishes after this sees `stopped` and removes its
            // executor itself instead of making it idle.
            let mut st = self.shared.state.lock();
            st.stopped = true;
            self.shared.changed.notify_all();
        }
        // Taken out of the lock, then joined: the manager takes the state lock itself.
        let manager = self.manager.lock().take();
        if let Some(m) = manager {
            let _ = m.join();
        }
        let mut result = Ok(());
        loop {
            // Taken under the lock, joined outside it: jobs take the lock to finish.
            let (jobs, idle) = {
                let mut st = self.shared.state.lock();
                (std::mem::take(&mut st.jobs), std::mem::take(&mut st.idle))
            };
            if jobs.is_empty() && idle.is_empty() {
                break;
            }
            // The idle ones in parallel: each stop waits on its daemon's removal.
            std::thread::scope(|s| {
                let stops: Vec<_> = idle
                    .into_iter()
                    .map(|w| s.spawn(move || (w.engine, w.executor.stop())))
                    .collect();
                // Joined before the scope ends, to collect the first error.
                for h in stops {
                    if let Ok((engine, r)) = h.join() {
                        self.shared.state.lock().engines[engine].live -= 1;
                        if result.is_ok() {
                            result = r;
                        }
                    }
                }
            });
            for j in jobs {
                let _ = j.join();
            }
        }
        result
    }
}

impl Drop for Pool {
    /// A best-effort [`stop`](Pool::stop); errors are ignored.
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// An executor leased from a [`Pool`]: use it as an [`Executor`] (it derefs to one), then
/// drop it or [`release`](Lease::release) it to give it back.
pub struct Lease {
    shared: Arc<Shared>,
    /// `Some` until given back.
    warm: Option<Warm>,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("executor", &self.warm.as_ref().map(|w| w.executor.id()))
            .field("engine", &self.engine())
            .finish()
    }
}

impl std::ops::Deref for Lease {
    type Target = Executor;
    fn deref(&self) -> &Executor {
        &self
            .warm
            .as_ref()
            .expect("a lease holds its executor")
            .executor
    }
}

impl Lease {
    /// The index of the lease's engine, in the order the engines were given.
    pub fn engine(&self) -> usize {
        self.warm.as_ref().map_or(0, |w| w.engine)
    }

    /// How many tasks this executor ran before this one.
    pub fn uses(&self) -> u32 {
        self.warm.as_ref().map_or(0, |w| w.uses)
    }

    /// Gives the executor back (as dropping the lease does).
    pub fn release(mut self) {
        self.give_back(false);
    }

    /// Gives the executor back to be removed, never reused: for a task that went wrong.
    pub fn retire(mut self) {
        self.give_back(true);
    }

    fn give_back(&mut self, retire: bool) {
        let Some(mut warm) = self.warm.take() else {
            return;
        };
        warm.uses += 1;
        let sh = &self.shared;
        let mut st = sh.state.lock();
        st.leased -= 1;
        if st.stopped {
            drop(st);
            // The pool's threads are gone: removed here, bounded as `Executor::stop` is.
            let engine = warm.engine;
            let _ = warm.executor.stop();
            sh.state.lock().engines[engine].live -= 1;
            return;
        }
        let keep = !retire
            && sh.policy != Policy::Fresh
            && st.engines[warm.engine].healthy
            && !sh.expired(&warm);
        let keep_agent = sh.policy == Policy::Reset;
        let s = Arc::clone(sh);
        let job = move || {
            if keep {
                match reset(&warm.executor, keep_agent) {
                    Ok(()) => return s.make_idle(warm),
                    Err(e) => {
                        s.state.lock().engines[warm.engine].last_error =
                            Some(format!("reset failed: {e}"))
                    }
                }
            }
            s.remove(warm);
        };
        st.spawn_job(job);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.give_back(false);
    }
}

/// Kills every process of the last task and empties the workspace, `/tmp`, `/dev/shm` and
/// `$HOME`: with `keep_agent` ([`Policy::Reset`]) the agent kept when it is safe, else (and
/// always for [`Policy::Restart`]) a full restart (see [`Executor::reset_for_pool`]).
fn reset(executor: &Executor, keep_agent: bool) -> Result<()> {
    executor.reset_for_pool(keep_agent).map(|_| ())
}

struct Warm {
    executor: Executor,
    engine: usize,
    uses: u32,
    born: Instant,
}

struct Slot {
    engine: Engine,
    capacity: usize,
    /// Executors counted against the capacity: idle, leased, starting, resetting, removing.
    live: usize,
    healthy: bool,
    /// No start here before this (after a failed one).
    retry_at: Option<Instant>,
    last_error: Option<String>,
}

struct State {
    engines: Vec<Slot>,
    idle: VecDeque<Warm>,
    /// The tickets of the threads inside `acquire`, oldest first: served in this order.
    queue: VecDeque<u64>,
    next_ticket: u64,
    starting: usize,
    leased: usize,
    stopped: bool,
    /// Every job thread not yet joined.
    jobs: Vec<JoinHandle<()>>,
}

impl State {
    /// Starts a job thread and keeps its handle for `stop` (finished ones are joined here).
    fn spawn_job(&mut self, job: impl FnOnce() + Send + 'static) {
        // Joining finished threads is instant; never a join of a running one under the lock.
        let (done, running): (Vec<_>, Vec<_>) =
            self.jobs.drain(..).partition(JoinHandle::is_finished);
        self.jobs = running;
        for j in done {
            let _ = j.join();
        }
        // Out of threads: the job's executor goes with its closure (its Drop stops it), and
        // its place stays counted; rare enough not to be worth a fallback.
        if let Ok(h) = std::thread::Builder::new()
            .name("dockexec-pool-job".into())
            .spawn(job)
        {
            self.jobs.push(h);
        }
    }

    fn why_none(&self) -> String {
        let mut parts = Vec::new();
        for s in &self.engines {
            parts.push(format!(
                "{} {} ({}/{} in use){}",
                s.engine.endpoint(),
                if s.healthy { "up" } else { "down" },
                s.live,
                s.capacity,
                s.last_error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
        }
        parts.join("; ")
    }
}

struct Shared {
    state: Mutex<State>,
    /// Signalled on every change a waiter or the manager may wait for: an executor idle, a
    /// count down, a new waiter, stop.
    changed: Condvar,
    factory: Arc<Factory>,
    policy: Policy,
    min_idle: usize,
    health_interval: Duration,
    max_uses: Option<u32>,
    max_lifetime: Option<Duration>,
}

impl Shared {
    fn expired(&self, w: &Warm) -> bool {
        self.max_uses.is_some_and(|n| w.uses >= n)
            || self.max_lifetime.is_some_and(|d| w.born.elapsed() >= d)
    }

    /// An executor ready for a lease, unless the pool stopped meanwhile.
    fn make_idle(&self, warm: Warm) {
        let mut st = self.state.lock();
        if st.stopped || !st.engines[warm.engine].healthy {
            drop(st);
            return self.remove(warm);
        }
        st.idle.push_back(warm);
        self.changed.notify_all();
    }

    /// Stops an executor (on this job's thread) and frees its place.
    fn remove(&self, warm: Warm) {
        let _ = warm.executor.stop();
        let mut st = self.state.lock();
        st.engines[warm.engine].live -= 1;
        self.changed.notify_all();
    }

    /// The manager: health checks, lifetimes, refill; until stop.
    fn manage(self: Arc<Self>) {
        let mut next_health = Instant::now() + self.health_interval;
        let mut st = self.state.lock();
        loop {
            if st.stopped {
                return;
            }
            if Instant::now() >= next_health {
                let engines: Vec<Engine> = st.engines.iter().map(|s| s.engine.clone()).collect();
                // Pings go to the daemons without the lock: a dead TLS or SSH engine takes
                // up to PING_TIMEOUT to say so.
                drop(st);
                let health: Vec<Option<String>> = engines.iter().map(ping).collect();
                st = self.state.lock();
                for (i, h) in health.into_iter().enumerate() {
                    self.mark(&mut st, i, h);
                }
                next_health = Instant::now() + self.health_interval;
                continue;
            }
            // Lifetimes: idle executors past theirs go.
            let (old, keep): (Vec<_>, Vec<_>) = st.idle.drain(..).partition(|w| self.expired(w));
            st.idle = keep.into();
            for w in old {
                let s = Arc::clone(&self);
                st.spawn_job(move || s.remove(w));
            }
            // Refill: the idle ones plus those starting should cover min_idle and the waiters.
            let want = self.min_idle + st.queue.len();
            while st.idle.len() + st.starting < want {
                let now = Instant::now();
                let Some(i) = st
                    .engines
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| {
                        s.healthy && s.live < s.capacity && s.retry_at.is_none_or(|t| t <= now)
                    })
                    .max_by_key(|(i, s)| (s.capacity - s.live, std::cmp::Reverse(*i)))
                    .map(|(i, _)| i)
                else {
                    break;
                };
                st.engines[i].live += 1;
                st.starting += 1;
                let s = Arc::clone(&self);
                st.spawn_job(move || s.start_on(i));
            }
            let wake = st
                .engines
                .iter()
                .filter_map(|s| s.retry_at)
                .fold(next_health, Instant::min);
            // Woken by any change (a waiter, a removal, an idle executor, stop) or the timer.
            self.changed.wait_until(&mut st, wake);
        }
    }

    /// Records a health check's (or a start's) verdict on engine `i`: `Some(error)` if dead.
    /// A dead engine's idle executors go.
    fn mark(self: &Arc<Self>, st: &mut State, i: usize, dead: Option<String>) {
        let slot = &mut st.engines[i];
        match dead {
            None => {
                if !slot.healthy {
                    slot.healthy = true;
                    slot.retry_at = None;
                    self.changed.notify_all();
                }
            }
            Some(e) => {
                slot.healthy = false;
                slot.last_error = Some(e);
                let (gone, keep): (Vec<_>, Vec<_>) = st.idle.drain(..).partition(|w| w.engine == i);
                st.idle = keep.into();
                for w in gone {
                    let s = Arc::clone(self);
                    st.spawn_job(move || s.remove(w));
                }
            }
        }
    }

    /// A start job: one executor on engine `i`.
    fn start_on(self: Arc<Self>, i: usize) {
        let engine = self.state.lock().engines[i].engine.clone();
        let mut b = (self.factory)();
        b.engine(engine);
        let started = b.start();
        let mut st = self.state.lock();
        st.starting -= 1;
        match started {
            Ok(executor) => {
                drop(st);
                self.make_idle(Warm {
                    executor,
                    engine: i,
                    uses: 0,
                    born: Instant::now(),
                });
            }
            Err(e) => {
                st.engines[i].live -= 1;
                let dead = matches!(
                    e,
                    Error::Connect { .. } | Error::Transport { .. } | Error::Timeout { .. }
                );
                if dead {
                    st.engines[i].healthy = false;
                }
                st.engines[i].last_error = Some(format!("start failed: {e}"));
                st.engines[i].retry_at = Some(Instant::now() + START_BACKOFF);
                self.changed.notify_all();
            }
        }
    }
}

/// `None` when `engine` answers a ping within [`PING_TIMEOUT`], else why not.
fn ping(engine: &Engine) -> Option<String> {
    match Client::connect_with(engine, PING_TIMEOUT).and_then(|c| c.ping()) {
        Ok(()) => None,
        Err(e) => Some(e.to_string()),
    }
}
