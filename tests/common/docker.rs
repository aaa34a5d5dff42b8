//! Docker fixtures: the test images, executor builders and their labels, the guards that
//! remove what a test created, and the docker CLI helpers that check the daemon's side.

use std::process::Command;
use std::time::Duration;

use dockexec::{Engine, Executor, ExecutorBuilder, PullPolicy};

use super::{test_images, unique_name};

/// Label every test container carries, so leftovers can be found and removed by label.
pub const TEST_LABEL: &str = "dockexec.test";

/// Label naming the test case that created a container, for per-test cleanup.
pub const CASE_LABEL: &str = "dockexec.test.case";

/// The python test image (built locally by scripts/test-env.sh).
pub fn image() -> String {
    test_images::get("DOCKEXEC_TEST_IMAGE")
}

/// The python image plus Debian's python3-matplotlib (`scripts/test-env.sh` builds it; the
/// rich-result tests only).
///
/// # Panics
/// When the image is missing: the tests that need it fail, saying how to build it, and never
/// skip silently.
pub fn mpl_image() -> String {
    let image = test_images::get("DOCKEXEC_TEST_MPL_IMAGE");
    let (ok, out) = docker(&["image", "inspect", "--format", "{{.Id}}", &image]);
    assert!(
        ok,
        "the matplotlib test image {image} is missing ({out}): build it with \
         `scripts/test-env.sh --mpl-image` (scripts/test-env.sh builds it too)"
    );
    image
}

/// The busybox-only image: nothing but a static busybox, no python.
pub fn busybox() -> String {
    test_images::get("DOCKEXEC_TEST_BUSYBOX")
}

/// The loopback registry (`127.0.0.1:5000`); the only place a test may pull from.
pub fn registry() -> String {
    let r = test_images::get("DOCKEXEC_TEST_REGISTRY");
    assert!(
        r.starts_with("127.0.0.1:") || r.starts_with("localhost:"),
        "tests may only pull from a loopback registry, not {r}"
    );
    r
}

/// The busybox image as the loopback registry holds it (`<registry>/dockexec/busybox:latest`).
pub fn registry_busybox() -> String {
    format!(
        "{}/{}:latest",
        registry(),
        test_images::get("DOCKEXEC_TEST_REGISTRY_BUSYBOX")
    )
}

/// The python image as the loopback registry holds it (`<registry>/dockexec/python:latest`).
pub fn registry_python() -> String {
    format!(
        "{}/{}:latest",
        registry(),
        test_images::get("DOCKEXEC_TEST_REGISTRY_PYTHON")
    )
}

/// A builder for the test image that never pulls, labelled for cleanup.
pub fn builder() -> ExecutorBuilder {
    let mut b = Executor::builder();
    b.image(image())
        .pull_policy(PullPolicy::Never)
        .label(TEST_LABEL, "1")
        .timeout(Some(Duration::from_secs(60)))
        .strategy(strategy())
        // No test's `start()` sweeps: orphans made by hand are another test's fixtures (the
        // rehearsal's `gc_removes_exited_…` lost its exited container to a concurrent
        // start). The tests of the sweep ask for it.
        .gc_orphans(false);
    // The gVisor lane (issue 22): every executor of the suite under that runtime.
    if let Some(runtime) = super::test_runtime() {
        b.runtime(runtime);
    }
    b
}

/// The strategy the suite runs under, from DOCKEXEC_TEST_STRATEGY (`exec`, `agent`, or
/// `auto`, the library default, when unset); scripts/test.sh runs the suite once per
/// strategy in DOCKEXEC_TEST_STRATEGIES. Tests of the
/// busybox image, which has no Python, ask for `Auto` themselves.
pub fn strategy() -> dockexec::Strategy {
    match std::env::var("DOCKEXEC_TEST_STRATEGY").as_deref() {
        Ok("exec") => dockexec::Strategy::Exec,
        Ok("agent") => dockexec::Strategy::Agent,
        Ok("auto") | Ok("") | Err(_) => dockexec::Strategy::Auto,
        Ok(other) => panic!("DOCKEXEC_TEST_STRATEGY must be exec, agent or auto, not {other:?}"),
    }
}

/// Starts an executor on the test image.
pub fn start() -> Executor {
    builder()
        .start()
        .expect("start an executor on the test image")
}

/// [`builder`] plus a unique case label, and the guard that removes that label's containers.
/// Declare the guard before the executor so it drops after it.
pub fn case_builder(case: &str) -> (ExecutorBuilder, CaseGuard) {
    let guard = CaseGuard::new(case);
    let mut b = builder();
    b.label(CASE_LABEL, guard.value.clone());
    (b, guard)
}

/// The local daemon, said not to share this host's filesystem: the workspace then lives in
/// the container, as on a remote engine (TLS, SSH, a VM's socket).
pub fn local_engine_without_shared_fs() -> Engine {
    Engine::unix("/var/run/docker.sock").shares_host_filesystem(false)
}

/// [`case_builder`] on `engine` (e.g. [`local_engine_without_shared_fs`], or a TLS or SSH
/// engine), with the suite's strategy and image.
pub fn engine_case_builder(case: &str, engine: Engine) -> (ExecutorBuilder, CaseGuard) {
    let (mut b, guard) = case_builder(case);
    b.engine(engine);
    (b, guard)
}

/// Removes every container labelled `dockexec.test.case=<value>` when dropped, so a test
/// that panics or hangs (its executor stuck in a watchdog thread) still leaves nothing.
#[derive(Debug)]
pub struct CaseGuard {
    pub value: String,
}

impl CaseGuard {
    /// A guard for a fresh value unique to this process and call (see [`unique_name`]).
    pub fn new(case: &str) -> CaseGuard {
        CaseGuard {
            value: unique_name(case),
        }
    }

    /// Ids of the containers (running or not) carrying this case's label.
    pub fn containers(&self) -> Vec<String> {
        labelled(CASE_LABEL, &self.value)
    }
}

impl Drop for CaseGuard {
    fn drop(&mut self) {
        // No panic here: this drop also runs while a failed test unwinds.
        for id in try_labelled(CASE_LABEL, &self.value).unwrap_or_default() {
            // `-v`: with the anonymous volume an in-container workspace is.
            let _ = docker(&["rm", "-f", "-v", &id]);
        }
    }
}

/// Removes an image reference on drop (`docker rmi`), for tests that pull or tag one. Only
/// the reference goes: an image that still has other tags keeps them.
#[derive(Debug)]
pub struct ImageGuard(pub String);

impl Drop for ImageGuard {
    fn drop(&mut self) {
        if image_exists(&self.0) {
            let _ = docker(&["rmi", &self.0]);
        }
    }
}

/// Runs the docker CLI; returns (success, stdout). It talks to `DOCKEXEC_TEST_CLI_HOST`
/// when set: scripts/test.sh's remote-engine lanes point the library at engine2 over TLS or
/// SSH (`DOCKER_HOST`, …), and the CLI at the same daemon's unix socket, so that the tests'
/// own looks (inspect, ps, exec) are quick and cannot be wrong about the transport.
pub fn docker(args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new("docker");
    if let Some(host) = std::env::var_os("DOCKEXEC_TEST_CLI_HOST") {
        cmd.env("DOCKER_HOST", host)
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .env_remove("DOCKER_CONTEXT");
    }
    let out = cmd.args(args).output().expect("run the docker CLI");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

/// True when a container with this id or name exists (running or not).
pub fn container_exists(id: &str) -> bool {
    docker(&["container", "inspect", id]).0
}

/// True when the image is present locally.
pub fn image_exists(image: &str) -> bool {
    docker(&["image", "inspect", image]).0
}

/// Ids of the containers (running or not) carrying `label=value`.
pub fn labelled(label: &str, value: &str) -> Vec<String> {
    try_labelled(label, value).unwrap_or_else(|e| panic!("{e}"))
}

fn try_labelled(label: &str, value: &str) -> Result<Vec<String>, String> {
    let filter = format!("label={label}={value}");
    match docker(&["ps", "-aq", "--filter", &filter]) {
        (true, ids) => Ok(ids.lines().map(str::to_string).collect()),
        (false, _) => Err(format!("docker ps --filter {filter} failed")),
    }
}

/// Processes in the container whose command line contains `marker` (`""`: all of them), as
/// `<pid>: <command line>`, one line each, read from /proc with plain sh (no procps). (Not
/// `echo`: dash's expands the backslashes of a command line such as the agent's source.)
pub fn processes_matching(id: &str, marker: &str) -> Vec<String> {
    try_processes_matching(id, marker).unwrap_or_else(|e| panic!("{e}"))
}

/// [`processes_matching`], or an error when the listing's own `docker exec` fails (a container
/// at its pids limit cannot start one). (It ends with `true`: a process that is gone by the
/// last `/proc` entry's read must not fail the listing, as it did under gVisor.)
pub fn try_processes_matching(id: &str, marker: &str) -> Result<Vec<String>, String> {
    let script = r#"for d in /proc/[0-9]*; do
  [ -r "$d/cmdline" ] || continue
  c=$(tr '\000\n' '  ' < "$d/cmdline" 2>/dev/null)
  [ -n "$c" ] && printf '%s: %s\n' "${d#/proc/}" "$c"
done
true"#;
    let (ok, out) = docker(&["exec", id, "sh", "-c", script]);
    if !ok {
        return Err(format!("listing processes in {id}: {out}"));
    }
    Ok(out
        .lines()
        .filter(|l| l.contains(marker))
        .map(str::to_string)
        .collect())
}

/// The pid (in the container) of the executor's agent: the process the daemon started (parent
/// pid 0) whose command line holds the agent's source. Its shepherds and spares are forks of
/// it, with the same command line but the agent as parent; this listing's own `sh` (also
/// started by the daemon, its script naming the agent) is skipped. `None` when there is none.
pub fn agent_pid(id: &str) -> Option<u32> {
    let script = r#"for d in /proc/[0-9]*; do
  read -r l < "$d/stat" 2>/dev/null || continue
  set -- ${l##*) }
  [ "$2" = 0 ] && [ "${d#/proc/}" != "$$" ] || continue
  tr '\000' ' ' < "$d/cmdline" 2>/dev/null | grep -q 'dockexec warm agent' && echo "${d#/proc/}"
done"#;
    // Tried three times: Podman can lose a short exec's output or refuse one while it tears
    // the last one down (README, "Docker and Podman"); a listing that fails thrice fails.
    let mut last = String::new();
    for _ in 0..3 {
        let (ok, out) = docker(&["exec", id, "sh", "-c", script]);
        if ok {
            return out.lines().next().and_then(|l| l.trim().parse().ok());
        }
        last = out;
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("listing processes in {id}: {last}")
}

/// SIGKILLs the executor's agent from outside, as root in the container (a test's stand-in
/// for the OOM killer or any other death); returns the pid it killed.
pub fn kill_agent(id: &str) -> u32 {
    let pid = agent_pid(id).expect("an agent runs in the container");
    let kill = format!("kill -9 {pid}");
    let (ok, out) = docker(&["exec", "-u", "0", id, "sh", "-c", &kill]);
    assert!(ok, "kill -9 {pid} in {id}: {out}");
    pid
}

/// The files under the executor's workspace, relative and sorted: on the host when the
/// workspace is a host dir, else listed in the container by the docker CLI (not by a block,
/// which would add a code file of its own).
pub fn workspace_files(ex: &Executor) -> Vec<String> {
    match ex.work_dir() {
        Some(dir) => {
            let mut v: Vec<String> = super::files_under(dir)
                .into_iter()
                .map(|p| p.strip_prefix(dir).unwrap().display().to_string())
                .collect();
            v.sort();
            v
        }
        None => {
            let (ok, out) = docker(&[
                "exec",
                ex.container_id(),
                "sh",
                "-c",
                "cd /workspace && find . -mindepth 1 ! -type d | sed 's|^./||' | sort",
            ]);
            assert!(ok, "listing /workspace: {out}");
            out.lines().map(str::to_string).collect()
        }
    }
}

/// A code file's bytes (`Output::code_file`): read on the host, or out of the container when
/// the workspace lives there.
pub fn read_code_file(ex: &Executor, path: &std::path::Path) -> Vec<u8> {
    match ex.work_dir() {
        Some(_) => std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        None => ex
            .get_file(path.to_str().unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    }
}
