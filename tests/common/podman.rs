//! The one place that says which tests of the contract suite cannot hold on Podman, and why
//! (issue 17). scripts/test.sh's Podman lane runs the suite's core against Podman's
//! Docker-compatible service; a test listed here returns early there, after printing a
//! `SKIP on Podman` line with its reason, so no test is ever skipped silently. Each reason is
//! also a row of the README's "Docker and Podman" table.

use std::io::Write;
use std::sync::OnceLock;

/// `(test path, reason)`: the tests that cannot hold on Podman.
pub const PODMAN_SKIPS: &[(&str, &str)] = &[(
    "sandbox::an_unexplained_sigkill_is_reported_as_such",
    "Podman starts an exec through runc inside the container's memory cgroup: once the \
     block's tmpfs holds the whole limit, the kernel may OOM-kill runc's init before the \
     block exists, and Podman answers exit code 125 with \"runc: exec failed: ... (possibly \
     OOM-killed): OCI runtime error\" in the output, where on Docker the block starts and is \
     SIGKILLed; it is a race (the test passes on Podman now and then), so there is no \
     killed block to report as unexplained",
)];

/// Whether the engine the library finds (`DOCKER_HOST`, …) is Podman; asked once.
pub fn on_podman() -> bool {
    // Set once: every test asks the same engine.
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        dockexec::Engine::from_env()
            .and_then(|e| dockexec::EngineInfo::probe(&e))
            .is_ok_and(|i| i.is_podman())
    })
}

/// True, after a `SKIP on Podman` line with the reason, when `test` (`module::name`) is in
/// [`PODMAN_SKIPS`] and the engine is Podman: the test then returns at once.
pub fn podman_skips(test: &str) -> bool {
    let Some((_, why)) = PODMAN_SKIPS.iter().find(|(t, _)| *t == test) else {
        return false;
    };
    if !on_podman() {
        return false;
    }
    // Straight to stderr, not eprintln!: the test harness captures the macros' output of a
    // passing test, and a skip must show in the lane's log.
    let _ = writeln!(std::io::stderr(), "SKIP on Podman: {test}: {why}");
    true
}
