//! Facts about this process and its host: its ids, random ids, and its identity as a
//! container's owner. A leaf: it imports nothing of the crate.

use std::fs;
use std::io::Read;

/// The calling process's effective uid and gid, read from the owner of `/proc/self` (no
/// `unsafe` libc call); root when that cannot be read.
pub(crate) fn ids() -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self").map_or((0, 0), |m| (m.uid(), m.gid()))
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

/// This process as a container's owner: what the owner labels record, so that a sweep on
/// this host can tell the owner still alive (same boot, a process of that pid and start time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnerId {
    pub(crate) pid: u32,
    /// Field 22 of `/proc/<pid>/stat`; empty when it cannot be read.
    pub(crate) start: String,
    pub(crate) host: String,
    pub(crate) boot: String,
}

impl OwnerId {
    /// This process.
    pub(crate) fn current() -> OwnerId {
        let pid = std::process::id();
        OwnerId {
            pid,
            start: start_time(&pid.to_string()).unwrap_or_default(),
            host: hostname(),
            boot: boot_id(),
        }
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// A process's start time, field 22 of `/proc/<pid>/stat` (after the parenthesised name).
pub(crate) fn start_time(pid: &str) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(19).map(str::to_string)
}

fn hostname() -> String {
    read_trimmed("/proc/sys/kernel/hostname").unwrap_or_else(|| "unknown".into())
}

/// This boot of the kernel (`/proc/sys/kernel/random/boot_id`).
pub(crate) fn boot_id() -> String {
    read_trimmed("/proc/sys/kernel/random/boot_id").unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_hex_and_differ() {
        let (a, b) = (random_id(), random_id());
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn the_owner_is_this_process() {
        let me = OwnerId::current();
        assert_eq!(me.pid, std::process::id());
        assert!(!me.start.is_empty() && !me.boot.is_empty());
        assert_eq!(start_time(&me.pid.to_string()), Some(me.start));
    }
}
