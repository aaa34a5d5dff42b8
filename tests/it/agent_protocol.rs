//! The agent on its own, spoken to frame by frame: `tests/agent/harness.py` runs inside the
//! test image (with a memory limit, so its OOM case runs too) and drives the agent
//! (`src/runner/agent/`'s files, joined as `AGENT_SOURCE` joins them)
//! through its stdin and stdout, exactly as the host does. It covers what the executor cannot
//! provoke: malformed and truncated frames from the host, unknown kinds, RUN/CANCEL races,
//! floods, a forged session control record, and EOF with blocks still running.
use crate::common;

use std::process::Command;

#[test]
fn the_agent_passes_its_protocol_harness() {
    harness("agent-harness", &[]);
}

/// The same harness, every agent started as the host starts it: `agent_boot.py` in argv, the
/// source on its stdin, then `python3 /proc/self/fd/S` (issue 20 §6).
#[test]
fn the_agent_passes_its_protocol_harness_started_through_the_bootstrap() {
    harness(
        "agent-harness-boot",
        &["--boot", "/src/src/runner/agent_boot.py"],
    );
}

fn harness(case: &str, extra: &[&str]) {
    let case = common::CaseGuard::new(case);
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            // 512m: a CI run lost the harness after its last case (no summary); its shared
            // agent, fresh agents and 6 MiB code cases are not what this limit is for.
            "-m",
            "512m",
            "--memory-swap",
            "512m",
        ])
        .args(["--label", &format!("{}=1", common::TEST_LABEL)])
        .args(["--label", &format!("{}={}", common::CASE_LABEL, case.value)])
        .args(["-v", &format!("{root}:/src:ro"), &common::image()])
        .args(["python3", "/src/tests/agent/harness.py"])
        .args(extra)
        .arg("/src/src/runner/agent")
        .output()
        .expect("run docker");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = text
        .lines()
        .rev()
        .find(|l| l.contains(" passed, "))
        .unwrap_or_default()
        .to_string();
    assert!(
        out.status.success() && summary.contains(", 0 failed"),
        "the harness failed ({}; {summary}):\n{text}",
        out.status
    );
}
