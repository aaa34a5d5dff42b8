//! Issue 19 §7: an executor started from an `ExecutorConfig` read back from JSON runs as the
//! builder it was saved from would (the conversions themselves are unit-tested in
//! `src/config/tests.rs`; the CLI's `--config` in `tests/cli.rs`).
use crate::common;

use dockexec::{CodeBlock, ExecutorConfig};

#[test]
fn an_executor_from_a_json_config_runs_as_configured() {
    let (mut b, guard) = common::case_builder("config");
    b.env("GREETING", "hello")
        .memory_limit(Some(256 << 20))
        .secret_env("CONFIG_TOKEN", "s3cr3t-t0ken");
    let json = b.to_config().to_json().unwrap();
    assert!(!json.contains("s3cr3t-t0ken"), "{json}");
    let config = ExecutorConfig::from_json(&json).unwrap();
    let ex = config
        .to_builder_with(|name| (name == "CONFIG_TOKEN").then(|| "s3cr3t-t0ken".into()))
        .unwrap()
        .start()
        .unwrap();
    let labelled = guard.containers();
    assert!(
        labelled.len() == 1 && ex.container_id().starts_with(&labelled[0]),
        "the config's labels: {labelled:?}"
    );
    let out = ex
        .run(&CodeBlock::sh("echo \"$GREETING token=$CONFIG_TOKEN\""))
        .unwrap();
    common::assert_success(&out);
    assert_eq!(out.stdout_lossy(), "hello token=[REDACTED]\n");
    let (ok, memory) =
        common::docker(&["inspect", "-f", "{{.HostConfig.Memory}}", ex.container_id()]);
    assert!(ok, "{memory}");
    assert_eq!(memory.trim(), (256u64 << 20).to_string());
    ex.stop().unwrap();
}
