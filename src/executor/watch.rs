//! The container watch: under a runtime whose `docker exec` streams outlive their container
//! (gVisor's runsc keeps them open when the container ends from inside, or is removed, issue
//! 22), a thread waits for the container's end, then ends the agent's connection (the runner's
//! `container_ended`) and has every live worker cut its stream, so a block ends
//! [`lost`](crate::ExitStatus::lost) at once and the next call says
//! [`ContainerGone`](crate::Error::ContainerGone), as under runc, rather than waiting for a
//! timeout (or forever, without one).
//!
//! Only there: elsewhere the daemon ends the streams itself, and the watch would cost one
//! long-polling connection per executor for nothing.

use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{Receiver, bounded};
use parking_lot::Mutex;

use super::Inner;
use crate::docker::api::Client;
use crate::execution::Reason;

/// How long one `container wait` long-poll lasts before the thread looks at its executor again.
const POLL: Duration = Duration::from_secs(30);
/// After a failed wait (the daemon unreachable for a moment), how long before the next: the
/// blocks' own calls report a daemon that is gone for good.
const RETRY: Duration = Duration::from_secs(1);
/// How long `stop()` waits for the thread once the container is removed, which ends its wait at
/// once. Past it (a hung daemon), the thread is left to end at its own poll's limit.
const END_WAIT: Duration = Duration::from_secs(2);

/// The watch's thread.
#[derive(Debug)]
pub(super) struct Watch {
    /// Never carries a message: disconnects when the thread ends, so `stop()` can wait for it
    /// with a bound.
    ended: Receiver<()>,
    /// Taken by the one `stop()` that joins it.
    handle: Mutex<Option<JoinHandle<()>>>,
}

impl Watch {
    /// Starts the watch of `container` for `inner`'s live executions. `None` when no thread
    /// can be had: the blocks then end at their timeout, as before.
    pub(super) fn start(client: Client, container: String, inner: Weak<Inner>) -> Option<Watch> {
        // Capacity 0, never sent on: only the sender's drop at the thread's end matters.
        let (ended_tx, ended) = bounded::<()>(0);
        let handle = thread::Builder::new()
            .name("dockexec-watch".into())
            .spawn(move || {
                let _ended = ended_tx;
                watch(&client, &container, &inner);
            })
            .ok()?;
        Some(Watch {
            ended,
            handle: Mutex::new(Some(handle)),
        })
    }

    /// For `stop()`, after the container's removal: waits (at most [`END_WAIT`]) for the
    /// thread, and joins it when it ended.
    pub(super) fn end(&self) {
        let _ = self.ended.recv_timeout(END_WAIT);
        let handle = self.handle.lock().take();
        if let Some(h) = handle {
            if h.is_finished() {
                let _ = h.join();
            }
        }
    }
}

fn watch(client: &Client, container: &str, inner: &Weak<Inner>) {
    loop {
        // Not held across the wait: the executor's drop must not wait on this thread.
        match inner.upgrade() {
            Some(i) if !i.stopping.load(Ordering::SeqCst) => {}
            _ => return,
        }
        match client.container_stopped_within(container, POLL) {
            Ok(true) => break,
            Ok(false) => {}
            Err(_) => thread::sleep(RETRY),
        }
    }
    let Some(i) = inner.upgrade() else { return };
    // `stop()` removed it: its own requests end the workers.
    if i.stopping.load(Ordering::SeqCst) {
        return;
    }
    // The agent's own stream is one the runtime keeps open too: ended first, so a request
    // that comes now finds the container gone rather than waiting on the agent.
    i.runner.container_ended();
    // Held only to send each live worker its (non-blocking) request.
    for w in i.live.lock().iter() {
        w.request(Reason::Gone);
    }
}
