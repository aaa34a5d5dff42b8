//! Podman's Docker-compatible service: where it differs from Docker under dockexec, and how
//! each difference is met — made to behave as on Docker, or refused (issue 17). The README's
//! "Docker and Podman" table lists them for users.
//!
//! Two seams, both fed by [`engine_info::facts`](crate::engine_info::facts):
//! * [`check_enforceable`]: before anything is created, the limits the engine says (in
//!   `/info`) it cannot enforce for what the builder asked; `start()` fails naming each
//!   limit and why, unless the caller opted out
//!   ([`allow_unenforced_limits`](crate::ExecutorBuilder::allow_unenforced_limits)).
//! * [`adapt_create_body`]: on Podman only, the create body rewritten where Podman reads it
//!   otherwise than Docker (the seccomp profile, the read-only root's tmpfs set, the default
//!   pids limit, the rlimits). On Docker it changes nothing.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::engine_info::EngineInfo;
use crate::error::{Error, Result};

/// What the builder asked the engine to enforce (the options that a daemon can drop).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Asked {
    pub(crate) pids_limit: bool,
    pub(crate) memory: bool,
    pub(crate) cpus: bool,
    pub(crate) devices: bool,
}

/// The tmpfs mounts Podman adds under a read-only root (`ReadWriteTmpFS`, which the compat
/// API cannot turn off), writable and unsized, where Docker leaves the image's read-only
/// directories.
pub(crate) const PODMAN_RW_TMPFS: [&str; 3] = ["/run", "/tmp", "/var/tmp"];

/// Read-only, empty tmpfs mounts over [`PODMAN_RW_TMPFS`]: as on Docker, a block cannot write
/// there.
const READ_ONLY_TMPFS: &str = "ro,nosuid,nodev,noexec";

/// The most `RLIMIT_NPROC` a Podman container is given: the limit Podman 4.3.1 keeps for
/// itself when it cannot raise it (rootful without `CAP_SYS_RESOURCE`), so that its runtime
/// can always set it. The per-user count it bounds is far above the pids limit anyway.
pub(crate) const NPROC_CAP: u64 = 32768;

/// Each limit asked for that `facts`' engine cannot enforce, with the reason.
pub(crate) fn unenforced(facts: &EngineInfo, asked: Asked) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    // Rootless Podman writes cgroups only where systemd delegates a cgroup v2 subtree to the
    // user; on cgroup v1, or with the cgroupfs manager, it has none, and drops the limits
    // (pids without even a warning).
    let no_cgroups = facts.is_podman()
        && facts.rootless
        && (facts.cgroup_version == "1" || facts.cgroup_driver == "cgroupfs");
    let rootless_why = || {
        format!(
            "rootless Podman on cgroup v{} with the {} manager has no cgroup of its own to \
             write, so it drops the limit (the pids limit without a warning: \
             containers/podman#13891, #17582)",
            if facts.cgroup_version.is_empty() {
                "?"
            } else {
                &facts.cgroup_version
            },
            if facts.cgroup_driver.is_empty() {
                "default"
            } else {
                &facts.cgroup_driver
            },
        )
    };
    let says_no = |what: &str| format!("the engine's /info says {what}: false");
    for (name, asked, can, field) in [
        (
            "pids_limit",
            asked.pids_limit,
            facts.pids_limit,
            "PidsLimit",
        ),
        (
            "memory_limit",
            asked.memory,
            facts.memory_limit,
            "MemoryLimit",
        ),
        ("cpu_limit", asked.cpus, facts.cpu_quota, "CpuCfsQuota"),
    ] {
        if !asked {
            continue;
        }
        if no_cgroups {
            out.push((name, rootless_why()));
        } else if !can {
            out.push((name, says_no(field)));
        }
    }
    if asked.devices && facts.is_podman() {
        out.push((
            "device_request",
            "Podman's Docker-compatible API drops DeviceRequests without an error, CDI ones \
             included (containers/podman#22645; measured on 4.3.1), so the devices would \
             silently be missing"
                .to_string(),
        ));
    }
    out
}

/// `Ok` when the engine can enforce everything asked; else an [`Error::InvalidInput`] naming
/// each limit, the reason, and the opt-out.
pub(crate) fn check_enforceable(facts: &EngineInfo, asked: Asked) -> Result<()> {
    let missing = unenforced(facts, asked);
    if missing.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = missing
        .iter()
        .map(|(name, why)| format!("{name}: {why}"))
        .collect();
    Err(Error::invalid(format!(
        "the engine {} ({} {}) cannot enforce what this executor asks, and dockexec never runs \
         with a limit silently missing: {}. Drop the option (e.g. pids_limit(None)), use an \
         engine that enforces it, or run anyway with allow_unenforced_limits(true)",
        facts.endpoint,
        facts.product,
        facts.server_version,
        list.join("; ")
    )))
}

/// Rewrites `body` (a `POST /containers/create` body) where Podman reads it otherwise than
/// Docker; on Docker it is left as it is.
///
/// # Errors
/// [`Error::InvalidInput`] when dockexec's seccomp profile cannot reach a Podman that does not
/// share this host's files; [`Error::Io`] when the profile's file cannot be written.
pub(crate) fn adapt_create_body(body: &mut Value, facts: &EngineInfo) -> Result<()> {
    if !facts.is_podman() {
        return Ok(());
    }
    let Some(host) = body.get_mut("HostConfig").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    // 1. Seccomp: Podman takes `seccomp=<value>` as a file path (an inline profile is a 500
    //    "file name too long", containers/podman#27710): give it the profile as a file.
    if let Some(Value::Array(opts)) = host.get_mut("SecurityOpt") {
        for opt in opts.iter_mut() {
            let Some(profile) = opt.as_str().and_then(|o| o.strip_prefix("seccomp=")) else {
                continue;
            };
            if profile == "unconfined" || !profile.trim_start().starts_with('{') {
                continue;
            }
            if !facts.host_filesystem_shared {
                return Err(Error::invalid(format!(
                    "Podman ({}) reads a seccomp profile only from a file on its own host, and \
                     this engine does not share this host's files ({}): dockexec's profile \
                     cannot reach it. Use seccomp(false) for Podman's default profile, or a \
                     local Podman socket",
                    facts.endpoint, facts.transport
                )));
            }
            let path = profile_file(profile)?;
            *opt = json!(format!("seccomp={}", path.display()));
        }
    }
    // 2. A read-only root: Podman mounts writable, unsized tmpfs on /run, /tmp and /var/tmp
    //    (ReadWriteTmpFS); read-only empty ones over the paths not mounted otherwise keep them
    //    unwritable, as on Docker. (A tmpfs dockexec mounts below, /run/dockexec, still works:
    //    runc makes its mount point before it remounts the parent read-only.)
    if host.get("ReadonlyRootfs") == Some(&json!(true)) {
        let tmpfs = host.entry("Tmpfs").or_insert_with(|| json!({}));
        if tmpfs.is_null() {
            *tmpfs = json!({});
        }
        if let Value::Object(t) = tmpfs {
            for path in PODMAN_RW_TMPFS {
                t.entry(path.to_string())
                    .or_insert_with(|| json!(READ_ONLY_TMPFS));
            }
        }
    }
    // 3. No pids limit asked (trusted(), pids_limit(None)): Docker sets none, Podman its own
    //    2048; -1 (Docker's "unlimited") makes Podman set none too.
    host.entry("PidsLimit").or_insert_with(|| json!(-1));
    // 4. Rlimits: Podman asks the runtime for RLIMIT_NPROC and RLIMIT_NOFILE of 1048576 (its
    //    compat API takes no "the daemon's own" for an unnamed one), which fails the start
    //    where root lacks CAP_SYS_RESOURCE; Docker's containers inherit the daemon's. So each
    //    one the body does not name is named: nproc at most NPROC_CAP (what a Podman that
    //    cannot raise its limits keeps for itself, measured on 4.3.1; the pids limit is the
    //    real bound), and both at most this host's hard limit when the engine is local.
    let limits = match facts.host_filesystem_shared {
        true => fs::read_to_string("/proc/self/limits").unwrap_or_default(),
        false => String::new(),
    };
    let ulimits = host.entry("Ulimits").or_insert_with(|| json!([]));
    if ulimits.is_null() {
        *ulimits = json!([]);
    }
    if let Value::Array(list) = ulimits {
        for (name, row, cap) in [
            ("nproc", "Max processes", Some(NPROC_CAP)),
            ("nofile", "Max open files", None),
        ] {
            if list.iter().any(|u| u.get("Name") == Some(&json!(name))) {
                continue;
            }
            let value = match (hard_limit(&limits, row), cap) {
                (Some(h), Some(c)) => Some(h.min(c)),
                (h, c) => h.or(c),
            };
            if let Some(n) = value {
                list.push(json!({ "Name": name, "Soft": n, "Hard": n }));
            }
        }
        if list.is_empty() {
            host.remove("Ulimits");
        }
    }
    Ok(())
}

/// The hard limit of `row` (e.g. `Max processes`) in a `/proc/<pid>/limits` text; `None` when
/// absent or `unlimited`.
pub(crate) fn hard_limit(limits: &str, row: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with(row))?;
    let mut cols = line[row.len()..].split_whitespace();
    let _soft = cols.next()?;
    cols.next()?.parse().ok()
}

/// The profile written to `<temp dir>/dockexec-seccomp-<uid>/<hash>.json` (a dir of this
/// user's alone, mode 0700, checked before use; the file written whole and renamed into
/// place), so that Podman can read it by path.
fn profile_file(profile: &str) -> Result<PathBuf> {
    let (uid, _) = crate::host::ids();
    let dir = std::env::temp_dir().join(format!("dockexec-seccomp-{uid}"));
    match fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io(&dir, e)),
    }
    // Not a symlink, ours, and writable by nobody else: another user cannot swap the profile.
    let meta = fs::symlink_metadata(&dir).map_err(|e| Error::io(&dir, e))?;
    if !meta.is_dir() || meta.uid() != uid || meta.permissions().mode() & 0o022 != 0 {
        return Err(Error::invalid(format!(
            "{} is not a directory of this user's alone (uid {uid}, not writable by others): \
             refusing to hand Podman a seccomp profile from it",
            dir.display()
        )));
    }
    let path = dir.join(format!("profile-{:016x}.json", fnv1a(profile.as_bytes())));
    if fs::read(&path).is_ok_and(|b| b == profile.as_bytes()) {
        return Ok(path);
    }
    let tmp = dir.join(format!(".{}.tmp", crate::host::random_id()));
    let written = fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(profile.as_bytes()).and_then(|()| f.sync_all()))
        .and_then(|()| fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)))
        .and_then(|()| fs::rename(&tmp, &path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(&path, e));
    }
    Ok(path)
}

/// FNV-1a, 64 bits: a stable name for the profile's content.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests;
