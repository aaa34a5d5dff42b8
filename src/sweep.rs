//! The sweep: `gc` of dockexec's containers that are no longer running, and of the temporary
//! work dirs whose owners are gone. It never guesses liveness from `/proc`: a running
//! container has a live owner (see [`lifetime`](crate::lifetime)), and a temporary dir's
//! owner holds a lock on it.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::docker::api::Client;
use crate::engine::Engine;
use crate::error::Result;
use crate::host;
use crate::labels::{
    EXECUTOR as LABEL_EXECUTOR, OWNER_BOOT as LABEL_OWNER_BOOT, OWNER_PID as LABEL_OWNER_PID,
    OWNER_START as LABEL_OWNER_START, TEMP_WORKSPACE as LABEL_TEMP_WORKSPACE,
};
use crate::workspace;

/// How long a container may stay created and never started before [`gc`] takes it for an
/// orphan: a live owner starts its container moments after creating it.
pub const GC_CREATED_GRACE: Duration = Duration::from_secs(15);

/// Whether a labelled container is an orphan: exited or dead, or created and never started
/// for longer than [`GC_CREATED_GRACE`]. A running (or paused, restarting) container has a live
/// owner, or its keeper would have ended it.
fn is_orphan(state: &str, created: i64, now: i64) -> bool {
    match state {
        "exited" | "dead" => true,
        "created" => now.saturating_sub(created) >= GC_CREATED_GRACE.as_secs() as i64,
        _ => false,
    }
}

/// Whether the owner labels name a process this sweeper can see alive: same boot, and a
/// process with that pid and start time. Only ever a reason to *keep* a container (a live
/// owner with `auto_remove(false)` may restart one killed from outside), never to remove
/// one: an owner in another PID namespace or on another host is simply not seen (issue 9
/// defect 2), and its stopped container goes as before.
fn owner_seen_alive(labels: &std::collections::HashMap<String, String>) -> bool {
    let get = |k: &str| labels.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let (Some(pid), Some(start), Some(boot)) = (
        get(LABEL_OWNER_PID),
        get(LABEL_OWNER_START),
        get(LABEL_OWNER_BOOT),
    ) else {
        return false;
    };
    pid.bytes().all(|b| b.is_ascii_digit())
        && boot == host::boot_id()
        && host::start_time(pid).as_deref() == Some(start)
}

/// Removes labelled containers that are no longer running (all but those being removed
/// already, with `force`) and carry every one of `labels`; returns their ids.
pub(crate) fn sweep(client: &Client, force: bool, labels: &[String]) -> Result<Vec<String>> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let mut filter: Vec<&str> = vec![LABEL_EXECUTOR];
    filter.extend(labels.iter().map(String::as_str));
    let mut removed = Vec::new();
    for c in client.container_list_all(&filter)? {
        let take = (is_orphan(&c.state, c.created, now) && !owner_seen_alive(&c.labels))
            || (force && c.state != "removing");
        if take {
            client.container_remove(&c.id, Duration::from_secs(10))?;
            removed.push(c.id);
        }
    }
    sweep_volumes(client);
    sweep_temp_dirs(client)?;
    Ok(removed)
}

/// Removes the workspace volumes (see
/// [`ExecutorBuilder::workspace_size`](crate::ExecutorBuilder::workspace_size)) that no
/// container uses any more: the daemon removes one with its container, unless that container
/// was removed from outside without its volumes (`docker rm` without `-v`). Best effort.
fn sweep_volumes(client: &Client) {
    for name in client
        .volume_list_dangling(LABEL_EXECUTOR)
        .unwrap_or_default()
    {
        let _ = client.volume_remove(&name);
    }
}

/// Removes the temporary work dirs whose owners are gone (see
/// [`workspace::sweep_temp_dirs`]), except those that a container still there names: a kept
/// container's dir goes with it, at the sweep that takes it.
fn sweep_temp_dirs(client: &Client) -> Result<()> {
    // The labels that name this host's dirs are on engines that see this host's files; an
    // engine that does not (its workspaces live in its containers) lists none, so a local
    // kept container's dir would look unnamed.
    if !client.engine().host_filesystem_shared() {
        return Ok(());
    }
    let keep: HashSet<PathBuf> = client
        .container_list_all(&[LABEL_TEMP_WORKSPACE])?
        .into_iter()
        .filter_map(|c| c.labels.get(LABEL_TEMP_WORKSPACE).map(PathBuf::from))
        .collect();
    workspace::sweep_temp_dirs(&keep);
    Ok(())
}

/// Removes dockexec's containers that are no longer running, and their temporary work dirs;
/// returns their ids. The same as [`gc_with`] with the default [`GcOptions`] but `socket`.
///
/// A live executor's container always runs: its keeper holds the owner's connection and
/// ends the container (which the daemon then removes, see
/// [`auto_remove`](crate::ExecutorBuilder::auto_remove)) as soon as the owner goes, however
/// it goes. So the containers left to collect are those that ended and were kept
/// (`auto_remove(false)`, or a daemon that failed to remove them), and those created but never
/// started for more than [`GC_CREATED_GRACE`] (an owner killed inside `start()`). A running
/// container is never touched, whoever and wherever its owner is: no process table is
/// consulted, so an owner in another PID namespace or on another host is safe. The owner
/// labels ([`labels`](crate::labels)) serve only to *spare* a stopped container whose owner
/// this host can see alive (same boot, pid and start time): such an owner may still
/// [`restart`](crate::Executor::restart) it. [`GcOptions::force`] also removes running ones,
/// and spared ones.
///
/// The temporary work dirs (those dockexec creates when no
/// [`work_dir`](crate::ExecutorBuilder::work_dir) is given) outlive a SIGKILLed owner, since the
/// container that removed itself cannot say whose they were. Each owner holds an exclusive
/// `flock` on its temporary dir for its executor's whole life, and the kernel drops it when
/// the owner dies, however it dies; so gc removes a `dockexec-<16 hex digits>` directory
/// directly under the host's temp dir (`TMPDIR`, else `/tmp`), a real directory owned by the
/// caller (any owner for root), only when it can take that lock without waiting, and only
/// when no container that still exists names it
/// ([`TEMP_WORKSPACE`](crate::labels::TEMP_WORKSPACE)). Like the switch, this needs no process
/// table and holds across PID namespaces (on one host, or one shared temp dir). A live
/// executor's dir, in this process or another, is never removed; nor is one being created
/// (made as `dockexec-<id>.new` and locked before it takes its name; an unlocked `.new` one is
/// removed after 30 s). Nothing a block does can keep a dead owner's dir: it could take the
/// lock through `/workspace` only if the owner did not hold it, and dies with the owner.
/// Removal never follows a link planted in the dir, and opens up (as their owner) the
/// directories a block closed with `chmod 0`, which would otherwise stop it. When the block user is one dockexec
/// cannot name on the host, the dir is `1777` (see
/// [`ExecutorBuilder::work_dir`](crate::ExecutorBuilder::work_dir)) and another host user
/// could hold its lock and so keep it. Failures to remove a dir are ignored (the next sweep
/// tries again); the ids returned are containers only.
///
/// The workspace volumes of executors whose engine does not share this host's filesystem
/// go with their containers; gc also removes those that no container uses any more (one
/// removed from outside without `-v`), whatever [`GcOptions::labels`] says. On such an
/// engine the host's temporary work dirs are left alone: the containers that name them live
/// on the engines that share this host's files.
///
/// [`ExecutorBuilder::start`](crate::ExecutorBuilder::start) runs this first unless
/// [`gc_orphans(false)`](crate::ExecutorBuilder::gc_orphans).
///
/// `engine` defaults as for the builder: [`Engine::from_env`].
///
/// # Errors
/// [`Error::Connect`](crate::Error::Connect) when the daemon is unreachable; a daemon error
/// if listing or removing fails.
pub fn gc(engine: Option<&Engine>) -> Result<Vec<String>> {
    gc_with(&GcOptions {
        engine: engine.cloned(),
        ..GcOptions::default()
    })
}

/// What [`gc_with`] removes, and where.
///
/// ```no_run
/// # fn main() -> dockexec::Result<()> {
/// // Every container of executors labelled `team=data`, running or not.
/// let mut options = dockexec::GcOptions::default();
/// options.force = true;
/// options.labels.push("team=data".into());
/// let removed = dockexec::gc_with(&options)?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct GcOptions {
    /// The engine. Defaults to `None`: as for the builder, [`Engine::from_env`].
    pub engine: Option<Engine>,
    /// Also remove running containers: their blocks die and their executors report
    /// [`ContainerGone`](crate::Error::ContainerGone). For containers known to be
    /// abandoned that [`gc`] leaves, such as those of an owner that hangs without dying.
    /// Defaults to `false`.
    pub force: bool,
    /// Only containers that carry every one of these labels (`key` or `key=value`, as given
    /// to [`ExecutorBuilder::label`](crate::ExecutorBuilder::label)). Defaults to none: every
    /// dockexec container. Temporary work dirs carry no labels: every dead owner's goes
    /// (see [`gc`]), except those of containers left in place.
    pub labels: Vec<String>,
}

/// Removes dockexec containers as `options` say (by default, as [`gc`]: those no longer
/// running), and their temporary work dirs; returns their ids.
///
/// # Errors
/// As [`gc`].
pub fn gc_with(options: &GcOptions) -> Result<Vec<String>> {
    let engine = match &options.engine {
        Some(e) => e.clone(),
        None => Engine::from_env()?,
    };
    sweep(&Client::connect(&engine)?, options.force, &options.labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_containers_no_longer_running_are_orphans() {
        let now = 1_000_000;
        assert!(is_orphan("exited", now, now));
        assert!(is_orphan("dead", now, now));
        for live in ["running", "paused", "restarting", "removing", ""] {
            assert!(!is_orphan(live, 0, now), "{live}");
        }
        // A created container may be one that its live owner is about to start.
        assert!(!is_orphan("created", now - 1, now));
        let old = now - GC_CREATED_GRACE.as_secs() as i64;
        assert!(is_orphan("created", old, now));
    }

    #[test]
    fn only_an_owner_seen_alive_keeps_a_stopped_container() {
        let mine: std::collections::HashMap<String, String> =
            crate::lifetime::owner_labels().into_iter().collect();
        assert!(owner_seen_alive(&mine));
        let mut other_start = mine.clone();
        other_start.insert(LABEL_OWNER_START.into(), "1".into());
        assert!(!owner_seen_alive(&other_start));
        let mut other_boot = mine.clone();
        other_boot.insert(LABEL_OWNER_BOOT.into(), "another-boot".into());
        assert!(!owner_seen_alive(&other_boot));
        let mut bad_pid = mine.clone();
        bad_pid.insert(LABEL_OWNER_PID.into(), "../self".into());
        assert!(!owner_seen_alive(&bad_pid));
        assert!(!owner_seen_alive(&Default::default()));
    }
}
