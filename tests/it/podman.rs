//! Podman as an engine (issue 17): the rootful `podman system service` of
//! scripts/test-env.sh, reached through its Docker-compatible socket. What only Podman has:
//! the engine says it is Podman, the differences dockexec meets (Podman's writable tmpfs under
//! a read-only root, its rlimits, the seccomp profile as a file) hold from inside, a device
//! request is refused rather than dropped, and a SIGKILLed owner's container goes within 5 s.
//!
//! The contract suite (lifecycle, cancel, streaming, output, sessions, sandbox, hostile
//! blocks, orphans) runs against Podman as a lane of scripts/test.sh, which points the whole
//! `it` binary at it; `common::podman_skips` names each test that cannot hold there, and why.

use crate::common;

use std::time::{Duration, Instant};

use dockexec::{CodeBlock, DeviceRequest, Engine, EngineInfo, Error, ExecutorBuilder};

/// The Podman service's `DOCKER_HOST` value, or `None` (skip, never in CI).
fn podman() -> Option<(common::TestEngines, String)> {
    let e = common::test_engines()?;
    let host = e.podman()?;
    Some((e, host))
}

/// Removes Podman's containers of this case when dropped (the CLI's `CaseGuard` looks at
/// the shared daemon unless the lane says otherwise).
struct PodmanGuard<'a>(&'a common::TestEngines, String);

impl Drop for PodmanGuard<'_> {
    fn drop(&mut self) {
        let filter = format!("label={}={}", common::CASE_LABEL, self.1);
        let (_, ids) = self.0.podman_docker(&["ps", "-aq", "--filter", &filter]);
        for id in ids.lines() {
            let _ = self.0.podman_docker(&["rm", "-f", id]);
        }
    }
}

fn on_podman(e: &common::TestEngines, id: &str) -> bool {
    e.podman_docker(&["container", "inspect", id]).0
}

/// A builder for the test image on Podman, labelled with `guard`'s case.
fn on(host: &str, guard: &common::CaseGuard) -> ExecutorBuilder {
    let mut b = common::builder();
    b.engine(Engine::host(host).unwrap())
        .label(common::CASE_LABEL, guard.value.clone());
    b
}

#[test]
fn the_engine_says_it_is_rootful_podman() {
    let Some((_, host)) = podman() else { return };
    let info = EngineInfo::probe(&Engine::host(&host).unwrap()).unwrap();
    assert!(info.is_podman(), "{info:?}");
    assert!(!info.rootless, "{info:?}");
    assert!(info.pids_limit && info.memory_limit, "{info:?}");
}

/// Podman mounts writable, unsized tmpfs on /run, /tmp and /var/tmp under a read-only root;
/// dockexec covers them, so a block meets the same walls as on Docker. The seccomp profile
/// (handed to Podman as a file), no-new-privileges, the limits and the rlimits hold.
#[test]
fn the_sandbox_holds_from_inside_on_podman() {
    let Some((e, host)) = podman() else { return };
    let guard = common::CaseGuard::new("podman-sandbox");
    let _pg = PodmanGuard(&e, guard.value.clone());
    let ex = on(&host, &guard).start().expect("start on podman");
    assert!(on_podman(&e, ex.container_id()));
    let script = r#"
for d in /run /var/tmp /etc /; do
    if ( : > "$d/dockexec-probe" ) 2>/dev/null; then echo "$d writable"; else echo "$d read-only"; fi
done
( : > /tmp/probe ) && echo "/tmp writable"
grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status | tr -s '\t ' ' '
grep -E '^Max (processes|open files)' /proc/self/limits | tr -s ' ' | cut -d' ' -f1-5
cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/pids.max 2>/dev/null | head -n1
"#;
    let out = ex.run(&CodeBlock::sh(script)).unwrap();
    common::assert_success(&out);
    let got = out.stdout_lossy().into_owned();
    for want in [
        "/run read-only",
        "/var/tmp read-only",
        "/etc read-only",
        "/ read-only",
        "/tmp writable",
        "NoNewPrivs: 1",
        "Seccomp: 2",
        "Max open files 4096 4096",
        "1024",
    ] {
        assert!(got.lines().any(|l| l == want), "{want:?} not in:\n{got}");
    }
    let nproc = got
        .lines()
        .find_map(|l| l.strip_prefix("Max processes "))
        .unwrap_or_else(|| panic!("no nproc in {got}"));
    let n: u64 = nproc
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .parse()
        .unwrap();
    assert!((1024..=32768).contains(&n), "nproc hard limit {n}");
    // dockexec's own profile, not Podman's default: unshare is denied (EPERM).
    let out = ex
        .run(&CodeBlock::python(
            "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n\
             rc = libc.unshare(0x10000000)\nprint('unshared' if rc == 0 else f'denied {ctypes.get_errno()}')\n",
        ))
        .unwrap();
    assert_eq!(out.stdout_lossy(), "denied 1\n", "{out:?}");
    ex.stop().unwrap();
}

/// Podman drops DeviceRequests without an error (CDI ones too, measured on 4.3.1): start()
/// refuses, naming the request, unless the caller allows it explicitly.
#[test]
fn a_device_request_is_refused_on_podman_unless_allowed() {
    let Some((e, host)) = podman() else { return };
    let guard = common::CaseGuard::new("podman-devices");
    let _pg = PodmanGuard(&e, guard.value.clone());
    let err = on(&host, &guard)
        .device_request(DeviceRequest::gpus_all())
        .start()
        .map(|_| ())
        .expect_err("a device request must not be dropped silently");
    let shown = err.to_string();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    assert!(
        shown.contains("device_request") && shown.contains("allow_unenforced_limits"),
        "{shown}"
    );
    // Refused before anything was created.
    let filter = format!("label={}={}", common::CASE_LABEL, guard.value);
    let (ok, ids) = e.podman_docker(&["ps", "-aq", "--filter", &filter]);
    assert!(ok && ids.is_empty(), "left behind: {ids}");
    let ex = on(&host, &guard)
        .device_request(DeviceRequest::gpus_all())
        .allow_unenforced_limits(true)
        .start()
        .expect("allowed explicitly, it runs (without the devices)");
    let out = ex.run(&CodeBlock::sh("echo ran")).unwrap();
    assert_eq!(out.stdout_lossy(), "ran\n");
    ex.stop().unwrap();
}

/// The dead-man's switch on Podman: the owner (a child process) is SIGKILLed, and its
/// container is gone within 5 s, with no gc. What ends it: the owner's attach is the keeper's
/// stdin; Podman closes that stdin when the attach connection drops (`StdinOnce` or not), the
/// keeper reads EOF and exits, and `AutoRemove` removes the container.
#[test]
fn a_sigkilled_owners_container_goes_within_5_s_on_podman() {
    let Some((e, host)) = podman() else { return };
    let env = vec![("DOCKER_HOST".to_string(), host.clone())];
    for strategy in ["exec", "agent"] {
        let mut owner =
            common::Owner::start_env("podman-owner", common::OwnerSetup::python(strategy), &env);
        let _pg = PodmanGuard(&e, owner.guard.value.clone());
        let id = owner.container.clone();
        assert!(on_podman(&e, &id), "{id} is not on podman");
        let t0 = Instant::now();
        owner.sigkill();
        let gone = common::eventually(Duration::from_secs(5), || !on_podman(&e, &id));
        assert!(
            gone,
            "podman {strategy}: the SIGKILLed owner's container is still there after {:?}",
            t0.elapsed()
        );
        eprintln!("podman {strategy}: gone in {:?}", t0.elapsed());
    }
}

/// Rootless Podman on this cgroup v1 machine drops the pids and memory limits (with a warning
/// in its log at most), though its `/info` says `PidsLimit: true`: dockexec refuses to start
/// with them, naming each, before it creates anything; without them it would go on.
#[test]
fn rootless_podman_on_cgroup_v1_is_refused_the_limits_it_would_drop() {
    let Some((e, _)) = podman() else { return };
    let host = e
        .podman_rootless_host
        .clone()
        .expect("engines.env names the rootless Podman with the rootful one");
    let engine = Engine::host(&host).unwrap();
    let info = EngineInfo::probe(&engine).unwrap();
    assert!(info.is_podman() && info.rootless, "{info:?}");
    assert_eq!(info.cgroup_version, "1", "{info:?}");
    let guard = common::CaseGuard::new("podman-rootless");
    let err = on(&host, &guard)
        .start()
        .map(|_| ())
        .expect_err("rootless Podman on cgroup v1 cannot enforce the default limits");
    let shown = err.to_string();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    for want in [
        "pids_limit:",
        "memory_limit:",
        "rootless Podman on cgroup v1",
    ] {
        assert!(shown.contains(want), "{want:?} not in {shown}");
    }
    assert!(!shown.contains("cpu_limit"), "not asked: {shown}");
    // Without the limits, the check passes: start() gets as far as the image (which this
    // Podman, holding no images, does not have, and may not pull).
    let err = on(&host, &guard)
        .pids_limit(None)
        .memory_limit(None)
        .pull_policy(dockexec::PullPolicy::Never)
        .start()
        .map(|_| ())
        .expect_err("no image there");
    assert!(matches!(err, Error::ImageNotFound { .. }), "{err:?}");
}
