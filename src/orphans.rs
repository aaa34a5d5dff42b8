//! Containers whose owner died: owner labels, and the sweep that removes them.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use crate::docker::api::{self, Client};
use crate::error::Result;
use crate::labels::{
    EXECUTOR as LABEL_EXECUTOR, OWNER_BOOT as LABEL_OWNER_BOOT, OWNER_HOST as LABEL_OWNER_HOST,
    OWNER_PID as LABEL_OWNER_PID, OWNER_START as LABEL_OWNER_START,
    TEMP_WORKSPACE as LABEL_TEMP_WORKSPACE,
};

fn read_trimmed(path: &str) -> Option<String> {
    fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// A process's start time, field 22 of `/proc/<pid>/stat` (after the parenthesised name).
fn start_time(pid: &str) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(19).map(str::to_string)
}

fn hostname() -> String {
    read_trimmed("/proc/sys/kernel/hostname").unwrap_or_else(|| "unknown".into())
}

fn boot_id() -> String {
    read_trimmed("/proc/sys/kernel/random/boot_id").unwrap_or_else(|| "unknown".into())
}

/// The labels that name this process as a container's owner.
pub(crate) fn owner_labels() -> Vec<(String, String)> {
    let pid = std::process::id().to_string();
    let start = start_time(&pid).unwrap_or_default();
    vec![
        (LABEL_OWNER_PID.into(), pid),
        (LABEL_OWNER_START.into(), start),
        (LABEL_OWNER_HOST.into(), hostname()),
        (LABEL_OWNER_BOOT.into(), boot_id()),
    ]
}

/// A random 16-hex-digit id (from the kernel's random source, else time and pid).
pub(crate) fn random_id() -> String {
    let mut bytes = [0u8; 8];
    let from_kernel = fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok();
    if !from_kernel {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        bytes = h.finish().to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether the owner a container's labels name is gone. `None`: not ours to judge (another
/// host, or labels missing).
fn owner_is_gone(labels: &std::collections::HashMap<String, String>) -> Option<bool> {
    let host = labels.get(LABEL_OWNER_HOST)?;
    if *host != hostname() {
        return None;
    }
    let pid = labels.get(LABEL_OWNER_PID)?;
    if labels.get(LABEL_OWNER_BOOT).map(String::as_str) != Some(boot_id().as_str()) {
        return Some(true);
    }
    if pid.parse::<u32>().is_err() {
        return None;
    }
    let recorded = labels
        .get(LABEL_OWNER_START)
        .map(String::as_str)
        .unwrap_or("");
    Some(match start_time(pid) {
        None => true,
        Some(now) => !recorded.is_empty() && now != recorded,
    })
}

/// Removes a dead owner's temporary work dir: only a directory named exactly
/// `dockexec-<executor id>`, as `start()` names them, so a forged label removes nothing else.
fn remove_temp_workspace(labels: &std::collections::HashMap<String, String>) {
    let (Some(dir), Some(id)) = (labels.get(LABEL_TEMP_WORKSPACE), labels.get(LABEL_EXECUTOR))
    else {
        return;
    };
    let dir = Path::new(dir);
    let expected = format!("dockexec-{id}");
    if dir.is_absolute() && dir.file_name().and_then(|n| n.to_str()) == Some(expected.as_str()) {
        let _ = fs::remove_dir_all(dir);
    }
}

/// Removes the containers of dead owners; returns their ids.
pub(crate) fn sweep(client: &Client) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for c in client.container_list(LABEL_EXECUTOR)? {
        if owner_is_gone(&c.labels) == Some(true) {
            client.container_remove(&c.id, Duration::from_secs(10))?;
            remove_temp_workspace(&c.labels);
            removed.push(c.id);
        }
    }
    Ok(removed)
}

/// Removes containers left behind by dockexec processes that died without stopping their
/// executors (killed with SIGKILL, crashed, or the machine rebooted); returns their ids.
///
/// A container is judged only when its labels name this host; its owner is gone when the
/// boot id differs, or no process has the recorded pid with the recorded start time. Live
/// owners' containers are never touched. [`ExecutorBuilder::start`](crate::ExecutorBuilder::start)
/// runs this first unless [`gc_orphans(false)`](crate::ExecutorBuilder::gc_orphans).
///
/// `socket` defaults as for the builder (`DOCKER_HOST`, then `/var/run/docker.sock`).
///
/// # Errors
/// [`Error::Connect`](crate::Error::Connect) when the daemon is unreachable; a daemon error
/// if listing or removing fails.
pub fn gc(socket: Option<&Path>) -> Result<Vec<String>> {
    let socket = match socket {
        Some(s) => s.to_path_buf(),
        None => api::socket_from_env()?,
    };
    sweep(&Client::connect(&socket)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn own_process_is_alive_and_a_dead_pid_is_gone() {
        let mine: HashMap<String, String> = owner_labels().into_iter().collect();
        assert_eq!(owner_is_gone(&mine), Some(false));

        let mut reused = mine.clone();
        reused.insert(LABEL_OWNER_START.into(), "1".into());
        assert_eq!(
            owner_is_gone(&reused),
            Some(true),
            "same pid, other start time"
        );

        let mut rebooted = mine.clone();
        rebooted.insert(LABEL_OWNER_BOOT.into(), "another-boot".into());
        assert_eq!(owner_is_gone(&rebooted), Some(true));

        let mut elsewhere = mine.clone();
        elsewhere.insert(LABEL_OWNER_HOST.into(), "another-host".into());
        assert_eq!(
            owner_is_gone(&elsewhere),
            None,
            "other hosts are not ours to judge"
        );

        let mut dead = mine;
        dead.insert(LABEL_OWNER_PID.into(), "999999999".into());
        assert_eq!(owner_is_gone(&dead), Some(true));
    }

    #[test]
    fn ids_are_hex_and_differ() {
        let (a, b) = (random_id(), random_id());
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
