//! The Podman seams on recorded `/info` bodies: this machine's Podman 4.3.1, rootful and
//! rootless (a user with subuid ranges), and Docker 20.10, all on cgroup v1 with cgroupfs.
//! The rootless one says `PidsLimit: true` and `MemoryLimit: true`, yet drops both ("Resource
//! limits are not supported and ignored on cgroups V1 rootless systems"): the refusal reads
//! rootless and the cgroup version, not those flags. Variants for cgroup v2 are made from it.

use super::*;
use crate::engine::Engine;

const PODMAN_ROOTFUL: &str = include_str!("podman-4.3.1-rootful-cgroupv1.info.json");
const PODMAN_ROOTLESS: &str = include_str!("podman-4.3.1-rootless-cgroupv1.info.json");
const DOCKER: &str = include_str!("docker-20.10-cgroupv1.info.json");

fn facts(info: &Value, product: &str, engine: &Engine) -> EngineInfo {
    let version = json!({"Version": "4.3.1", "Components": [{"Name": product}]});
    EngineInfo::from_json(engine, "1.41", &version, info)
}

fn podman(info: &str) -> EngineInfo {
    let info: Value = serde_json::from_str(info).unwrap();
    facts(
        &info,
        "Podman Engine",
        &Engine::unix("/run/podman/podman.sock"),
    )
}

fn rootless(mut info: Value, cgroup_version: &str, driver: &str) -> EngineInfo {
    info["Rootless"] = json!(true);
    info["CgroupVersion"] = json!(cgroup_version);
    info["CgroupDriver"] = json!(driver);
    facts(
        &info,
        "Podman Engine",
        &Engine::unix("/run/user/1000/podman/podman.sock"),
    )
}

const ALL: Asked = Asked {
    pids_limit: true,
    memory: true,
    cpus: true,
    devices: false,
};

#[test]
fn rootful_podman_and_docker_enforce_every_limit() {
    let p = podman(PODMAN_ROOTFUL);
    assert!(p.is_podman() && !p.rootless, "{p:?}");
    assert!(p.pids_limit && p.memory_limit && p.cpu_quota);
    check_enforceable(&p, ALL).unwrap();
    let docker: Value = serde_json::from_str(DOCKER).unwrap();
    let d = facts(&docker, "Engine", &Engine::unix("/var/run/docker.sock"));
    assert!(!d.is_podman() && !d.rootless);
    check_enforceable(
        &d,
        Asked {
            devices: true,
            ..ALL
        },
    )
    .unwrap();
}

#[test]
fn rootless_podman_on_cgroup_v1_is_refused_naming_each_limit() {
    let p = podman(PODMAN_ROOTLESS);
    assert!(p.rootless && p.pids_limit && p.memory_limit, "{p:?}");
    let info: Value = serde_json::from_str(PODMAN_ROOTLESS).unwrap();
    let e = check_enforceable(&p, ALL).unwrap_err().to_string();
    for want in [
        "pids_limit:",
        "memory_limit:",
        "cpu_limit:",
        "cgroup v1",
        "allow_unenforced_limits(true)",
    ] {
        assert!(e.contains(want), "{want:?} not in {e}");
    }
    // Only what was asked is named.
    let only_pids = Asked {
        pids_limit: true,
        ..Asked::default()
    };
    let e = check_enforceable(&p, only_pids).unwrap_err().to_string();
    assert!(
        e.contains("pids_limit") && !e.contains("memory_limit"),
        "{e}"
    );
    check_enforceable(&p, Asked::default()).unwrap();
    // cgroup v2 with the cgroupfs manager: still no cgroup of its own.
    assert!(check_enforceable(&rootless(info.clone(), "2", "cgroupfs"), ALL).is_err());
    // cgroup v2 delegated by systemd: enforced.
    check_enforceable(&rootless(info, "2", "systemd"), ALL).unwrap();
}

#[test]
fn an_engine_that_says_it_cannot_is_refused_whatever_its_product() {
    let mut info: Value = serde_json::from_str(DOCKER).unwrap();
    info["PidsLimit"] = json!(false);
    let d = facts(&info, "Engine", &Engine::unix("/var/run/docker.sock"));
    let e = check_enforceable(&d, ALL).unwrap_err().to_string();
    assert!(
        e.contains("pids_limit: the engine's /info says PidsLimit: false"),
        "{e}"
    );
    assert!(!e.contains("memory_limit"), "{e}");
}

#[test]
fn device_requests_are_refused_on_podman_only() {
    let devices = Asked {
        devices: true,
        ..Asked::default()
    };
    let e = check_enforceable(&podman(PODMAN_ROOTFUL), devices)
        .unwrap_err()
        .to_string();
    assert!(e.contains("device_request") && e.contains("22645"), "{e}");
}

fn body() -> Value {
    json!({
        "Image": "python:3-slim",
        "HostConfig": {
            "ReadonlyRootfs": true,
            "Tmpfs": { "/tmp": "rw,size=1m", "/run/dockexec": "rw,mode=1777" },
            "SecurityOpt": ["no-new-privileges", crate::seccomp::security_opt()],
            "Ulimits": [{ "Name": "nofile", "Soft": 4096, "Hard": 4096 }],
        }
    })
}

#[test]
fn docker_bodies_are_left_alone() {
    let info: Value = serde_json::from_str(DOCKER).unwrap();
    let d = facts(&info, "Engine", &Engine::unix("/var/run/docker.sock"));
    let mut b = body();
    adapt_create_body(&mut b, &d).unwrap();
    assert_eq!(b, body());
}

#[test]
fn podman_bodies_get_a_profile_file_read_only_tmpfs_and_named_rlimits() {
    let p = podman(PODMAN_ROOTFUL);
    let mut b = body();
    adapt_create_body(&mut b, &p).unwrap();
    let host = &b["HostConfig"];
    let opts = host["SecurityOpt"].as_array().unwrap();
    assert_eq!(opts[0], json!("no-new-privileges"));
    let path = opts[1].as_str().unwrap().strip_prefix("seccomp=").unwrap();
    let written: Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
    assert_eq!(written, crate::seccomp::profile(), "{path}");
    // The tmpfs dockexec mounts are kept; the others Podman adds become read-only.
    assert_eq!(host["Tmpfs"]["/tmp"], json!("rw,size=1m"));
    assert_eq!(host["Tmpfs"]["/run/dockexec"], json!("rw,mode=1777"));
    assert_eq!(host["Tmpfs"]["/run"], json!(READ_ONLY_TMPFS));
    assert_eq!(host["Tmpfs"]["/var/tmp"], json!(READ_ONLY_TMPFS));
    // No pids limit asked: none (Podman's default would be 2048).
    assert_eq!(host["PidsLimit"], json!(-1));
    // nofile as asked; nproc at this host's hard limit (when it has one).
    let ulimits = host["Ulimits"].as_array().unwrap();
    assert_eq!(ulimits[0]["Hard"], json!(4096));
    let limits = fs::read_to_string("/proc/self/limits").unwrap();
    let n = hard_limit(&limits, "Max processes").map_or(NPROC_CAP, |h| h.min(NPROC_CAP));
    assert_eq!(ulimits[1], json!({"Name": "nproc", "Soft": n, "Hard": n}));
    // Again: the same file, the body unchanged.
    let mut again = body();
    adapt_create_body(&mut again, &p).unwrap();
    assert_eq!(again, b);
}

#[test]
fn a_writable_root_gets_no_tmpfs_and_a_remote_podman_no_profile() {
    let p = podman(PODMAN_ROOTFUL);
    let mut b = json!({"HostConfig": {"ReadonlyRootfs": false}});
    adapt_create_body(&mut b, &p).unwrap();
    assert!(b["HostConfig"].get("Tmpfs").is_none(), "{b}");
    let info: Value = serde_json::from_str(PODMAN_ROOTFUL).unwrap();
    let remote = facts(
        &info,
        "Podman Engine",
        &Engine::ssh("ssh://root@podman.example/run/podman/podman.sock").unwrap(),
    );
    let e = adapt_create_body(&mut body(), &remote)
        .unwrap_err()
        .to_string();
    assert!(e.contains("seccomp(false)"), "{e}");
    // Podman's default profile (seccomp(false): no seccomp= option) passes.
    let mut b = json!({"HostConfig": {"SecurityOpt": ["no-new-privileges"]}});
    adapt_create_body(&mut b, &remote).unwrap();
    // Remote: not this host's limits, only the cap.
    let nproc = json!([{"Name": "nproc", "Soft": NPROC_CAP, "Hard": NPROC_CAP}]);
    assert_eq!(b["HostConfig"]["Ulimits"], nproc, "{b}");
}

#[test]
fn hard_limits_are_read_from_proc_limits() {
    let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                Max processes             96553                96367                processes \n\
                Max open files            1024                 unlimited            files     \n";
    assert_eq!(hard_limit(text, "Max processes"), Some(96367));
    assert_eq!(hard_limit(text, "Max open files"), None);
    assert_eq!(hard_limit(text, "Max locked memory"), None);
}
