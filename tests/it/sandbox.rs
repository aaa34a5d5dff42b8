//! The hardened defaults, each checked from inside the container, under every strategy
//! (`DOCKEXEC_TEST_STRATEGY`); and `trusted()`, which relaxes them.
use crate::common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use dockexec::{CodeBlock, Executor, Output};

const LIMIT: Duration = Duration::from_secs(120);

/// Runs `script` with `sh` and returns its stdout, asserting success.
fn sh(ex: &Executor, script: &str) -> String {
    let out = ex.run(&CodeBlock::sh(script)).unwrap();
    common::assert_success(&out);
    out.stdout_lossy().into_owned()
}

/// The value of `key:` in a block's /proc/self/status.
fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("{key} not in {status}"))
        .trim()
        .to_string()
}

/// The uid blocks get by default here: ours unless we are root, else nobody.
fn default_uid() -> u32 {
    let me = std::fs::metadata("/proc/self").unwrap().uid();
    if me == 0 { 65534 } else { me }
}

/// The first readable file of `paths`, trimmed.
const FIRST_OF: &str =
    r#"for f in "$@"; do [ -r "$f" ] && { cat "$f"; exit 0; }; done; echo absent"#;

fn first_of(ex: &Executor, paths: &[&str]) -> String {
    let mut script = format!("set -- {}\n", paths.join(" "));
    script.push_str(FIRST_OF);
    sh(ex, &script).trim().to_string()
}

#[test]
fn a_default_block_is_not_root_and_holds_no_capability() {
    common::watchdog(LIMIT, || {
        let (b, _guard) = common::case_builder("sandbox-caps");
        let ex = b.start().unwrap();
        // The agent, root with only the kept capabilities, has everything it needs.
        assert_eq!(ex.agent_warnings().unwrap(), Vec::<String>::new());
        let status = sh(&ex, "cat /proc/self/status");
        assert_eq!(status_field(&status, "CapEff"), "0000000000000000");
        assert_eq!(status_field(&status, "CapPrm"), "0000000000000000");
        assert_eq!(status_field(&status, "NoNewPrivs"), "1");
        let uid = status_field(&status, "Uid");
        assert!(
            uid.split_whitespace()
                .all(|u| u == default_uid().to_string()),
            "Uid: {uid}"
        );
        // The same from Python, which the agent forks from its warm (root) interpreter.
        let out = ex
            .run(&CodeBlock::python(
                "import os\nprint(os.getuid(), os.geteuid(), os.getgid())\nprint([l for l in open('/proc/self/status') if l.startswith(('CapEff', 'NoNewPrivs'))])",
            ))
            .unwrap();
        common::assert_success(&out);
        let u = default_uid();
        assert_eq!(
            out.stdout_lossy(),
            format!("{u} {u} {u}\n['CapEff:\\t0000000000000000\\n', 'NoNewPrivs:\\t1\\n']\n")
        );
        ex.stop().unwrap();
    });
}

#[test]
fn the_only_network_interface_is_loopback() {
    common::watchdog(LIMIT, || {
        let (b, _guard) = common::case_builder("sandbox-net");
        let ex = b.start().unwrap();
        assert_eq!(sh(&ex, "ls /sys/class/net"), "lo\n");
        let dev = sh(&ex, "cat /proc/net/dev");
        let names: Vec<&str> = dev
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next().map(str::trim))
            .collect();
        assert_eq!(names, ["lo"], "{dev}");
        ex.stop().unwrap();
    });
}

#[test]
fn the_default_limits_are_set() {
    common::watchdog(LIMIT, || {
        let (b, _guard) = common::case_builder("sandbox-limits");
        let ex = b.start().unwrap();
        let pids = first_of(
            &ex,
            &["/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/pids.max"],
        );
        assert_eq!(pids, dockexec::DEFAULT_PIDS.to_string());
        let memory = first_of(
            &ex,
            &[
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                "/sys/fs/cgroup/memory.max",
            ],
        );
        assert_eq!(memory, dockexec::DEFAULT_MEMORY.to_string());
        // Swap equal to the limit: v1 memsw (only with swap accounting), v2 no swap at all.
        let memsw = first_of(&ex, &["/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"]);
        assert!(
            memsw == "absent" || memsw == dockexec::DEFAULT_MEMORY.to_string(),
            "{memsw}"
        );
        let swap = first_of(&ex, &["/sys/fs/cgroup/memory.swap.max"]);
        assert!(swap == "absent" || swap == "0", "{swap}");
        assert_eq!(
            sh(&ex, "ulimit -n; ulimit -Hn"),
            format!("{n}\n{n}\n", n = dockexec::DEFAULT_NOFILE)
        );
        let mounts = sh(&ex, "cat /proc/mounts");
        let tmp = mounts
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some("/tmp"))
            .unwrap_or_else(|| panic!("no /tmp mount in {mounts}"));
        assert!(tmp.starts_with("tmpfs "), "{tmp}");
        let size = format!("size={}k", dockexec::DEFAULT_TMP_SIZE / 1024);
        for opt in ["rw", "nosuid", "nodev", &size] {
            assert!(tmp.split([' ', ',']).any(|o| o == opt), "{opt} in {tmp}");
        }
        ex.stop().unwrap();
    });
}

#[test]
fn only_workspace_tmp_and_home_are_writable() {
    common::watchdog(LIMIT, || {
        let (b, _guard) = common::case_builder("sandbox-rofs");
        let ex = b.start().unwrap();
        let out = ex
            .run(&CodeBlock::sh(
                "echo x > /usr/planted && echo usr-writable\necho x > /etc/planted && echo etc-writable\n\
                 echo x > /workspace/w && echo x > /tmp/t && echo x > \"$HOME/h\" && echo \"ok $HOME\"",
            ))
            .unwrap();
        common::assert_success(&out);
        assert_eq!(out.stdout_lossy(), "ok /tmp\n", "{out:?}");
        assert!(
            out.stderr_lossy().contains("Read-only file system"),
            "{out:?}"
        );
        // A Python block can write its own scratch files.
        let py = ex
            .run(&CodeBlock::python(
                "import tempfile, pathlib\nwith tempfile.NamedTemporaryFile() as f: f.write(b'x')\npathlib.Path('out.txt').write_text('y')\nprint(pathlib.Path.home())",
            ))
            .unwrap();
        common::assert_success(&py);
        assert_eq!(py.stdout_lossy(), "/tmp\n");
        ex.stop().unwrap();
    });
}

#[test]
fn a_fork_bomb_is_contained_by_the_default_pids_limit() {
    common::watchdog(LIMIT, || {
        let (mut b, _guard) = common::case_builder("sandbox-forkbomb");
        b.timeout(Some(Duration::from_secs(3)));
        let ex = b.start().unwrap();
        let out = ex
            .run(&CodeBlock::sh("sleep 1071 & b() { b | b & }; b; wait"))
            .unwrap();
        assert!(out.status.timed_out(), "{}", out.status);
        assert!(!out.status.lost(), "{}", out.status);
        // The next block runs normally: the bomb's processes are gone, not just frozen. Under
        // the exec strategy on a starved machine the kill script can outlast its 5 s bound
        // while it kills a thousand processes; it goes on in the container, and a block
        // started meanwhile may meet the pids limit and time out. So: a few tries, each
        // either fine or timed out (never lost, never an error), until one is fine.
        let mut tries = Vec::new();
        let fine = common::eventually(Duration::from_secs(30), || {
            let next = ex.run(&CodeBlock::sh("echo fine")).unwrap();
            assert!(
                next.status.success() || next.status.timed_out(),
                "{}: {}",
                next.status,
                next.stderr_lossy()
            );
            tries.push(next.status.to_string());
            next.status.success() && next.stdout == b"fine\n"
        });
        assert!(fine, "no block ran normally after the bomb: {tries:?}");
        let id = ex.container_id().to_string();
        let mut left = Vec::new();
        let gone = common::eventually(Duration::from_secs(30), || {
            // The listing is an exec of its own, which the pids limit can refuse while the
            // kill goes on: not yet, then.
            match common::try_processes_matching(&id, "") {
                Ok(l) => left = l,
                Err(e) => {
                    left = vec![e];
                    return false;
                }
            }
            !left
                .iter()
                .any(|p| p.contains("tmp_code") || p.contains("sleep 1071"))
        });
        assert!(gone, "the bomb is gone: {left:?}");
        ex.stop().unwrap();
    });
}

#[test]
fn a_memory_hog_meets_the_default_limit() {
    common::watchdog(LIMIT, || {
        let (b, _guard) = common::case_builder("sandbox-oom");
        let ex = b.start().unwrap();
        let out: Output = ex
            .run(&CodeBlock::python(
                "blocks = []\nwhile True:\n    blocks.append(bytearray(64 * 1024 * 1024))",
            ))
            .unwrap();
        assert!(
            out.status.oom_killed(),
            "{}: {}",
            out.status,
            out.stderr_lossy()
        );
        assert!(!out.status.lost(), "{}", out.status);
        let next = ex.run(&CodeBlock::sh("echo fine")).unwrap();
        assert_eq!(next.stdout, b"fine\n");
        ex.stop().unwrap();
    });
}

#[test]
fn the_temporary_workspace_is_the_block_users_and_closed_to_others() {
    common::watchdog(LIMIT, || {
        let (b, _guard) = common::case_builder("sandbox-owner");
        let ex = b.start().unwrap();
        sh(
            &ex,
            "echo data > /workspace/made-by-block.txt; mkdir /workspace/sub",
        );
        let dir = ex.work_dir().to_path_buf();
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!(meta.uid(), default_uid());
        assert_eq!(meta.permissions().mode() & 0o7777, 0o711);
        for name in ["made-by-block.txt", "sub"] {
            let m = std::fs::metadata(dir.join(name)).unwrap();
            assert_eq!(m.uid(), default_uid(), "{name}");
        }
        ex.stop().unwrap();
        assert!(!dir.exists(), "the temporary workspace is removed at stop");
    });
}

#[test]
fn put_file_takes_the_workspace_but_not_the_read_only_root() {
    common::watchdog(LIMIT, || {
        let (b, _guard) = common::case_builder("sandbox-put-file");
        let ex = b.start().unwrap();
        ex.put_file("in.txt", b"data").unwrap();
        assert_eq!(sh(&ex, "cat in.txt"), "data");
        match ex.put_file("/etc/planted", b"x") {
            Err(dockexec::Error::Docker { message, .. }) => {
                assert!(message.contains("read-only"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        ex.stop().unwrap();
    });
}

#[test]
fn host_user_runs_blocks_as_the_caller() {
    common::watchdog(LIMIT, || {
        let (mut b, _guard) = common::case_builder("sandbox-host-user");
        b.host_user();
        let ex = b.start().unwrap();
        let me = std::fs::metadata("/proc/self").unwrap();
        assert_eq!(
            sh(&ex, "id -u; id -g"),
            format!("{}\n{}\n", me.uid(), me.gid())
        );
        ex.stop().unwrap();
    });
}

#[test]
fn an_explicit_root_block_is_root_but_still_confined() {
    common::watchdog(LIMIT, || {
        let (mut b, _guard) = common::case_builder("sandbox-root");
        b.user("0");
        let ex = b.start().unwrap();
        let status = sh(&ex, "cat /proc/self/status");
        assert_eq!(status_field(&status, "Uid"), "0\t0\t0\t0");
        // Root holds only the kept capabilities, and still cannot write the root fs.
        let eff = u64::from_str_radix(&status_field(&status, "CapEff"), 16).unwrap();
        const KILL: u64 = 1 << 5;
        const SETGID: u64 = 1 << 6;
        const SETUID: u64 = 1 << 7;
        const DAC_READ_SEARCH: u64 = 1 << 2;
        const SYS_PTRACE: u64 = 1 << 19;
        let expected = match common::strategy() {
            dockexec::Strategy::Agent => KILL | SETGID | SETUID,
            _ => KILL | SETGID | SETUID | DAC_READ_SEARCH | SYS_PTRACE,
        };
        assert_eq!(eff, expected, "{eff:x}");
        assert_eq!(status_field(&status, "CapBnd"), format!("{expected:016x}"));
        let out = ex.run(&CodeBlock::sh("echo x > /usr/planted")).unwrap();
        assert!(!out.status.success(), "{out:?}");
        ex.stop().unwrap();
    });
}

#[test]
fn trusted_relaxes_every_default() {
    common::watchdog(LIMIT, || {
        let (mut b, _guard) = common::case_builder("sandbox-trusted");
        b.trusted();
        let ex = b.start().unwrap();
        let status = sh(&ex, "cat /proc/self/status");
        // The test image names no USER: root, with Docker's default capabilities.
        assert_eq!(status_field(&status, "Uid"), "0\t0\t0\t0");
        assert_ne!(status_field(&status, "CapEff"), "0000000000000000");
        assert_eq!(status_field(&status, "NoNewPrivs"), "0");
        assert_eq!(
            sh(&ex, "echo x > /usr/planted && echo written"),
            "written\n"
        );
        let pids = first_of(
            &ex,
            &["/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/pids.max"],
        );
        assert_eq!(pids, "max");
        let memory = first_of(
            &ex,
            &[
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                "/sys/fs/cgroup/memory.max",
            ],
        );
        assert_ne!(memory, dockexec::DEFAULT_MEMORY.to_string());
        assert_ne!(
            sh(&ex, "ulimit -n"),
            format!("{}\n", dockexec::DEFAULT_NOFILE)
        );
        // The network is not opened by trusted().
        assert_eq!(sh(&ex, "ls /sys/class/net"), "lo\n");
        ex.stop().unwrap();
    });
}

#[test]
fn busybox_runs_with_every_default() {
    common::watchdog(LIMIT, || {
        let (mut b, _guard) = common::case_builder("sandbox-busybox");
        b.image(common::busybox())
            .strategy(dockexec::Strategy::Auto)
            .timeout(Some(Duration::from_secs(20)));
        let ex = b.start().unwrap();
        assert_eq!(ex.strategy(), dockexec::Strategy::Exec);
        let status = sh(&ex, "cat /proc/self/status");
        assert_eq!(status_field(&status, "CapEff"), "0000000000000000");
        assert_eq!(status_field(&status, "NoNewPrivs"), "1");
        assert_eq!(
            sh(
                &ex,
                "id -u; echo x > /workspace/f && echo x > /tmp/t && echo ok"
            ),
            format!("{}\nok\n", default_uid())
        );
        // Cancel still reaches the non-root block's whole tree, a setsid child included.
        let e = ex
            .spawn(&CodeBlock::sh("setsid sleep 999 & echo up; sleep 999"))
            .unwrap();
        common::await_stdout(&e.chunks(), "up", Duration::from_secs(10));
        e.cancel().unwrap();
        assert!(e.wait().unwrap().status.cancelled());
        let left = common::watchdog(Duration::from_secs(30), {
            let id = ex.container_id().to_string();
            move || common::processes_matching(&id, "sleep 999")
        });
        assert!(left.is_empty(), "{left:?}");
        ex.stop().unwrap();
    });
}
