//! Every live executor in the process, for Ctrl-C cleanup.
//!
//! The registry knows executors only as something that can be stopped, so it depends on
//! nothing but the error type.

use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::error::{Error, Result};

/// What the registry can do to an executor.
pub(crate) trait Stop: Send + Sync {
    /// As [`Executor::stop`](crate::Executor::stop); `Ok(false)` when it was already stopped,
    /// so that [`stop_all`] counts only the executors it stopped.
    fn stop(&self) -> Result<bool>;
}

/// Weak, so the registry never keeps an executor alive; dead entries are pruned on insert.
static EXECUTORS: Mutex<Vec<Weak<dyn Stop>>> = Mutex::new(Vec::new());

pub(crate) fn register(executor: Arc<dyn Stop>) {
    let mut all = EXECUTORS.lock();
    all.retain(|w| w.strong_count() > 0);
    all.push(Arc::downgrade(&executor));
}

pub(crate) fn unregister<T: Stop>(executor: &T) {
    let this = std::ptr::from_ref(executor).cast::<()>();
    EXECUTORS
        .lock()
        .retain(|w| w.strong_count() > 0 && w.as_ptr().cast::<()>() != this);
}

/// Stops every live executor in this process: their blocks are killed, their worker threads
/// joined, their containers removed. Returns how many were stopped.
///
/// For an application with its own Ctrl-C or shutdown handler, which should call this before
/// it exits. Safe from any thread; executors already stopped are skipped. The executors are
/// stopped in parallel, so this takes about as long as the slowest single
/// [`stop`](crate::Executor::stop), bounded in time even when the daemon hangs.
pub fn stop_all() -> usize {
    // Upgraded and collected first: `stop` unregisters, which takes this lock again.
    let live: Vec<Arc<dyn Stop>> = EXECUTORS.lock().iter().filter_map(Weak::upgrade).collect();
    // A failed removal still stopped the executor (everything else was cleaned up).
    let stopped = |executor: &Arc<dyn Stop>| executor.stop().unwrap_or(true);
    // One thread each: against a hung daemon each stop waits out its own limits, and they
    // must not add up. The scope joins them all before returning.
    std::thread::scope(|scope| {
        let running: Vec<_> = live
            .iter()
            .map(|executor| {
                std::thread::Builder::new()
                    .name("dockexec-stop".into())
                    .spawn_scoped(scope, move || stopped(executor))
                    // Out of threads: this one is stopped here, right away.
                    .map_err(|_| stopped(executor))
            })
            .collect();
        // Joined only once all are started, so the stops overlap; a stop that panicked (a
        // bug) is not counted.
        running
            .into_iter()
            .map(|r| r.map_or_else(|done| done, |h| h.join().unwrap_or(false)))
            .filter(|&done| done)
            .count()
    })
}

/// Installs a Ctrl-C (SIGINT) handler that stops every live executor, then exits the
/// process with code 130.
///
/// Opt-in: nothing is installed unless this is called.
///
/// # Errors
/// [`Error::Hook`] when the application already has a handler (ctrlc allows one per
/// process); that handler should call [`stop_all`] itself.
pub fn cleanup_on_ctrlc() -> Result<()> {
    ctrlc::try_set_handler(|| {
        stop_all();
        std::process::exit(130);
    })
    .map_err(|e| Error::Hook {
        what: "ctrl-c",
        source: Box::new(e),
    })
}
