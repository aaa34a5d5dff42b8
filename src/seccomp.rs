//! dockexec's own seccomp profile, sent as `HostConfig.SecurityOpt: ["seccomp=<json>"]`.
//!
//! # What it is, honestly
//!
//! A profile given to Docker **replaces** its default profile; it cannot extend it. Docker's
//! default is an allowlist (about 350 syscalls, some gated on capabilities), and dockexec
//! cannot ship a copy of it. So this profile is the other kind: **allow by default, plus a
//! deny list**. The list holds the two handle syscalls that the "Shocker" escape uses (the
//! reason for the profile), and every syscall Docker's default denies that a container
//! without the matching capability could still reach, so that replacing the default weakens
//! nothing that matters here:
//!
//! * `open_by_handle_at`, `name_to_handle_at`: denied whatever the capabilities (a root block
//!   with `cap_add("DAC_READ_SEARCH")` included): defence in depth against Shocker;
//! * namespaces: `unshare`, `setns`, and `clone` with any `CLONE_NEW*` flag (one rule per
//!   flag); `clone3`, whose flags sit in memory a filter cannot read, gets `ENOSYS` as under
//!   Docker, so that libc falls back to `clone`. Unprivileged user namespaces would
//!   otherwise give a block a root of its own, with the kernel surface that opens;
//! * kernel surfaces a block needs no part of: `bpf`, `perf_event_open`, `userfaultfd`,
//!   `io_uring_setup`/`_enter`/`_register`, `keyctl`, `add_key`, `request_key`, `kcmp`,
//!   `lookup_dcookie`, `socket(AF_VSOCK)`;
//! * what only a capability we drop would allow anyway (denied so that `cap_add` or a root
//!   block does not reach it unawares): `mount`, `umount2`, `pivot_root`, the new mount API
//!   (`fsopen`, `fsconfig`, `fsmount`, `fspick`, `open_tree`, `move_mount`, `mount_setattr`),
//!   `swapon`, `swapoff`, `reboot`, `kexec_load`, `kexec_file_load`, `init_module`,
//!   `finit_module`, `delete_module`, `acct`, `settimeofday`, `clock_settime`,
//!   `clock_adjtime`, `adjtimex`, `sethostname`, `setdomainname`, `syslog`, `quotactl`,
//!   `quotactl_fd`, `iopl`, `ioperm`;
//! * obsolete ones: `nfsservctl`, `uselib`, `ustat`, `sysfs`, `_sysctl`, `vm86`, `vm86old`,
//!   `create_module`, `get_kernel_syms`, `query_module`.
//!
//! Each denial is `EPERM` (`clone3`: `ENOSYS`). Left allowed, as Docker's default allows them
//! on current kernels: `ptrace`, `process_vm_readv`/`_writev` (debuggers, and only over the
//! block user's own processes, which it can signal anyway), `personality` (it changes only
//! the caller's own execution domain). What this profile does *not* do that Docker's does:
//! refuse syscalls added to the kernel after it was written. The capabilities dropped, the
//! non-root user, `no-new-privileges` and the read-only root stay the main walls.
//!
//! Names a kernel or architecture lacks (`vm86` on arm64) are skipped by runc and libseccomp
//! rather than refused. The architectures are Docker's: x86-64 (with i386 and x32, whose
//! syscall numbers differ, so that `int 0x80` meets the same rules) and arm64 (with arm).

use serde_json::{Value, json};

/// `EPERM`: what a denied syscall returns.
const EPERM: u32 = 1;
/// `ENOSYS`: what `clone3` returns, so that libc falls back to `clone`.
const ENOSYS: u32 = 38;
/// `AF_VSOCK`: host sockets that no network namespace confines.
const AF_VSOCK: u64 = 40;

/// The `CLONE_NEW*` flags `clone` may not carry (`CLONE_NEWTIME`, 0x80, lies in `clone`'s
/// exit-signal byte: only `unshare` and `clone3` take it, and both are denied whole).
pub(crate) const CLONE_NEW_FLAGS: [(&str, u64); 7] = [
    ("CLONE_NEWNS", 0x0002_0000),
    ("CLONE_NEWCGROUP", 0x0200_0000),
    ("CLONE_NEWUTS", 0x0400_0000),
    ("CLONE_NEWIPC", 0x0800_0000),
    ("CLONE_NEWUSER", 0x1000_0000),
    ("CLONE_NEWPID", 0x2000_0000),
    ("CLONE_NEWNET", 0x4000_0000),
];

/// The syscalls denied outright with `EPERM` (see the module docs).
pub(crate) const DENIED: &[&str] = &[
    // Shocker.
    "open_by_handle_at",
    "name_to_handle_at",
    // Namespaces.
    "unshare",
    "setns",
    // Kernel surfaces.
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "keyctl",
    "add_key",
    "request_key",
    "kcmp",
    "lookup_dcookie",
    // Capability-gated.
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "open_tree",
    "move_mount",
    "mount_setattr",
    "swapon",
    "swapoff",
    "reboot",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "acct",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "sethostname",
    "setdomainname",
    "syslog",
    "quotactl",
    "quotactl_fd",
    "iopl",
    "ioperm",
    // Obsolete.
    "nfsservctl",
    "uselib",
    "ustat",
    "sysfs",
    "_sysctl",
    "vm86",
    "vm86old",
    "create_module",
    "get_kernel_syms",
    "query_module",
];

/// The profile, as the JSON Docker's `seccomp=` security option takes.
pub(crate) fn profile() -> Value {
    let mut syscalls = vec![
        json!({ "names": DENIED, "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM }),
        json!({ "names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS }),
        json!({
            "names": ["socket"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": EPERM,
            "args": [{ "index": 0, "value": AF_VSOCK, "valueTwo": 0, "op": "SCMP_CMP_EQ" }],
        }),
    ];
    // One rule per flag: the rules of one syscall are OR-ed, the args of one rule AND-ed.
    // `value` is the mask and `valueTwo` the datum of a masked compare.
    for (_, flag) in CLONE_NEW_FLAGS {
        syscalls.push(json!({
            "names": ["clone"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": EPERM,
            "args": [{ "index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ" }],
        }));
    }
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "archMap": [
            {
                "architecture": "SCMP_ARCH_X86_64",
                "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            },
            {
                "architecture": "SCMP_ARCH_AARCH64",
                "subArchitectures": ["SCMP_ARCH_ARM"],
            },
        ],
        "syscalls": syscalls,
    })
}

/// The `SecurityOpt` entry that installs [`profile`].
pub(crate) fn security_opt() -> String {
    format!("seccomp={}", profile())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules_for(p: &Value, name: &str) -> Vec<Value> {
        p["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["names"].as_array().unwrap().iter().any(|n| n == name))
            .cloned()
            .collect()
    }

    #[test]
    fn the_profile_allows_by_default_and_denies_the_handle_syscalls() {
        let p = profile();
        assert_eq!(p["defaultAction"], "SCMP_ACT_ALLOW");
        for name in [
            "open_by_handle_at",
            "name_to_handle_at",
            "unshare",
            "setns",
            "bpf",
        ] {
            let r = rules_for(&p, name);
            assert_eq!(r.len(), 1, "{name}: {r:?}");
            assert_eq!(r[0]["action"], "SCMP_ACT_ERRNO");
            assert_eq!(r[0]["errnoRet"], 1);
            assert!(
                r[0].get("args").is_none(),
                "{name} is denied whatever its args"
            );
        }
        for kept in [
            "ptrace",
            "process_vm_readv",
            "personality",
            "clone",
            "socket",
        ] {
            assert!(
                rules_for(&p, kept).iter().all(|r| r.get("args").is_some()),
                "{kept} stays allowed but for argument rules"
            );
        }
        let names: Vec<&str> = p["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["names"].as_array().unwrap().iter())
            .map(|n| n.as_str().unwrap())
            .collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        // clone is listed once per flag; nothing else twice.
        assert_eq!(names.len() - unique.len(), CLONE_NEW_FLAGS.len() - 1);
    }

    #[test]
    fn clone_is_denied_per_namespace_flag_and_clone3_gets_enosys() {
        let p = profile();
        let clone = rules_for(&p, "clone");
        assert_eq!(clone.len(), CLONE_NEW_FLAGS.len());
        let mut covered = 0u64;
        for r in &clone {
            let a = &r["args"][0];
            assert_eq!(a["index"], 0);
            assert_eq!(a["op"], "SCMP_CMP_MASKED_EQ");
            assert_eq!(
                a["value"], a["valueTwo"],
                "mask and datum are the flag: {r}"
            );
            let f = a["value"].as_u64().unwrap();
            assert_eq!(f.count_ones(), 1, "{r}");
            covered |= f;
        }
        // Docker's own namespace mask over clone's flags.
        assert_eq!(covered, 0x7E02_0000);
        let c3 = rules_for(&p, "clone3");
        assert_eq!(c3.len(), 1);
        assert_eq!(c3[0]["errnoRet"], 38);
    }

    #[test]
    fn the_security_opt_is_the_profile_as_one_json_string() {
        let opt = security_opt();
        let json = opt.strip_prefix("seccomp=").unwrap();
        let back: Value = serde_json::from_str(json).unwrap();
        assert_eq!(back, profile());
        assert!(!json.contains('\n'));
    }
}
