//! The config's round trip, its errors, its secrets, and the drift checks that keep it in
//! step with the builder.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::spec::WorkspaceMount;

const SECRET: &str = "s3cr3t-v4lue-never-written";

/// A builder with every option away from its default (the drift test below checks that
/// every config field is).
fn everything() -> ExecutorBuilder {
    let mut gpu = DeviceRequest::gpus_by_id(["0", "GPU-abc"]);
    gpu.driver("nvidia").option("k", "v");
    let mut b = ExecutorBuilder::new();
    b.image("python:3.12-slim")
        .name("my-executor")
        .timeout(Some(Duration::from_millis(1500)))
        .work_dir("/tmp/dockexec-config-test")
        .bind_dir("/daemon/side")
        .auto_remove(false)
        .env("GREETING", "hello")
        .volume("/data", "/mnt/data", true)
        .extra_host("db", "10.0.0.2")
        .init_command("pip install -q numpy")
        .init_timeout(None)
        .api_timeout(Duration::new(7, 1))
        .user("1000:1000")
        .network("bridge")
        .drop_capabilities(false)
        .cap_add("NET_ADMIN")
        .no_new_privileges(false)
        .seccomp(false)
        .read_only_root(false)
        .tmp_size(None)
        .workspace_size(Some(1 << 28))
        .nofile(Some(1024))
        .memory_limit(Some(1 << 30))
        .cpu_limit(Some(1.5))
        .pids_limit(None)
        .delete_code_files(true)
        .max_output_bytes(None)
        .on_output_limit(OutputLimit::Kill)
        .pull_policy(PullPolicy::Never)
        .engine(
            Engine::tcp("127.0.0.1:2376")
                .unwrap()
                .tls(
                    Tls::files(
                        "/certs/ca.pem",
                        Some("/c.pem".into()),
                        Some("/k.pem".into()),
                    )
                    .unwrap(),
                )
                .allow_plaintext()
                .shares_host_filesystem(true),
        )
        .gc_orphans(false)
        .label("team", "ml")
        .strategy(Strategy::Exec)
        .python_zygote(false)
        .session_grace(Duration::from_secs(5))
        .secret_env("API_TOKEN", SECRET)
        .device_request(gpu)
        .host_config_json(json!({"ShmSize": 1u64 << 30}))
        .allow_unenforced_limits(true)
        .runtime("runsc");
    b
}

fn secrets(name: &str) -> Option<String> {
    (name == "API_TOKEN").then(|| SECRET.to_string())
}

fn object(config: &ExecutorConfig) -> serde_json::Map<String, Value> {
    match serde_json::to_value(config).unwrap() {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

/// builder → config → JSON → config → builder → config, and the containers both builders
/// make are the same (the secret's value included).
fn round_trip(b: &ExecutorBuilder) {
    let config = b.to_config();
    let text = config.to_json().unwrap();
    let read = ExecutorConfig::from_json(&text).unwrap();
    assert_eq!(read, config, "{text}");
    let back = read.to_builder_with(secrets).unwrap();
    assert_eq!(back.to_config(), config, "{text}");
    let mount = || WorkspaceMount::Host(PathBuf::from("/w"));
    assert_eq!(back.spec("id", mount()), b.spec("id", mount()), "{text}");
    assert_eq!(
        back.engine,
        b.engine.as_ref().map(|e| {
            // Why it was chosen is not configuration.
            EngineConfig::from(e).to_engine().unwrap()
        })
    );
}

#[test]
fn every_option_round_trips_with_no_loss() {
    round_trip(&everything());
    round_trip(&ExecutorBuilder::new());
    round_trip(ExecutorBuilder::new().trusted());
    round_trip(ExecutorBuilder::new().host_user().tmp_size(Some(4096)));
    round_trip(ExecutorBuilder::new().socket("/run/user/1000/docker.sock"));
    round_trip(
        ExecutorBuilder::new().engine(
            Engine::ssh("ssh://me@build:2222/run/docker.sock")
                .unwrap()
                .ssh_options(["-F", "/x"]),
        ),
    );
}

#[test]
fn the_round_trip_fixture_sets_every_config_field() {
    // A config field added without a setting in `everything()` would go untested.
    let (set, default) = (
        object(&everything().to_config()),
        object(&ExecutorConfig::default()),
    );
    assert_eq!(
        set.keys().collect::<Vec<_>>(),
        default.keys().collect::<Vec<_>>()
    );
    for (key, value) in &set {
        assert_ne!(
            Some(value),
            default.get(key),
            "everything() leaves {key} at its default"
        );
    }
}

/// Each builder setter, and the config fields it writes. `on_pull_progress` writes none: a
/// callback is code, not configuration.
const SETTERS: &[(&str, &[&str])] = &[
    ("image", &["image"]),
    ("name", &["name"]),
    ("timeout", &["timeout"]),
    ("work_dir", &["work_dir"]),
    ("bind_dir", &["bind_dir"]),
    ("auto_remove", &["auto_remove"]),
    ("env", &["env"]),
    ("volume", &["volumes"]),
    ("extra_host", &["extra_hosts"]),
    ("init_command", &["init_command"]),
    ("init_timeout", &["init_timeout"]),
    ("api_timeout", &["api_timeout"]),
    ("user", &["user"]),
    ("host_user", &["user"]),
    (
        "trusted",
        &[
            "user",
            "drop_capabilities",
            "cap_add",
            "no_new_privileges",
            "seccomp",
            "read_only_root",
            "tmp_size",
            "nofile",
            "memory_limit",
            "cpu_limit",
            "pids_limit",
        ],
    ),
    ("network", &["network"]),
    ("drop_capabilities", &["drop_capabilities"]),
    ("cap_add", &["cap_add"]),
    ("no_new_privileges", &["no_new_privileges"]),
    ("seccomp", &["seccomp"]),
    ("read_only_root", &["read_only_root"]),
    ("tmp_size", &["tmp_size"]),
    ("workspace_size", &["workspace_size"]),
    ("nofile", &["nofile"]),
    ("memory_limit", &["memory_limit"]),
    ("cpu_limit", &["cpu_limit"]),
    ("pids_limit", &["pids_limit"]),
    ("delete_code_files", &["delete_code_files"]),
    ("max_output_bytes", &["max_output_bytes"]),
    ("on_output_limit", &["on_output_limit"]),
    ("pull_policy", &["pull_policy"]),
    ("on_pull_progress", &[]),
    ("engine", &["engine"]),
    ("socket", &["engine"]),
    ("gc_orphans", &["gc_orphans"]),
    ("label", &["labels"]),
    ("strategy", &["strategy"]),
    ("python_zygote", &["python_zygote"]),
    ("session_grace", &["session_grace"]),
    ("secret_env", &["secret_env"]),
    ("device_request", &["device_requests"]),
    ("host_config_json", &["host_config_json"]),
    ("allow_unenforced_limits", &["allow_unenforced_limits"]),
    ("runtime", &["runtime"]),
];

/// The `pub fn NAME(&mut self` of every `impl ExecutorBuilder` block under `src/`.
fn builder_setters() -> BTreeSet<String> {
    fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    let mut texts = Vec::new();
    walk(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut texts,
    );
    let mut setters = BTreeSet::new();
    for text in &texts {
        let mut rest = text.as_str();
        while let Some(i) = rest.find("\nimpl ExecutorBuilder {") {
            // The block ends at the first `}` alone at the start of a line (rustfmt's layout).
            let block = &rest[i + 1..];
            let end = block.find("\n}").unwrap_or(block.len());
            for part in block[..end].split("pub fn ").skip(1) {
                let name: String = part
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                let args = part[name.len()..].trim_start_matches(['(', '<']);
                if args.trim_start().starts_with("&mut self") {
                    setters.insert(name);
                }
            }
            rest = &block[end..];
        }
    }
    setters
}

#[test]
fn every_builder_setter_has_its_config_fields() {
    let found = builder_setters();
    let listed: BTreeSet<String> = SETTERS.iter().map(|(s, _)| s.to_string()).collect();
    assert!(
        found.len() > 40,
        "the scan found too few setters: {found:?}"
    );
    assert_eq!(
        found.difference(&listed).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "setters with no entry in SETTERS: give each a config field (ExecutorConfig, both \
         conversions, everything()) and list it"
    );
    assert_eq!(
        listed.difference(&found).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "SETTERS lists setters the builder no longer has"
    );
    let keys: BTreeSet<String> = object(&ExecutorConfig::default()).keys().cloned().collect();
    let written: BTreeSet<String> = SETTERS
        .iter()
        .flat_map(|(_, k)| k.iter().map(|k| k.to_string()))
        .collect();
    assert_eq!(
        written, keys,
        "a config field no setter writes, or a setter's field missing"
    );
}

#[test]
fn an_unknown_key_is_an_error_that_names_it_and_the_file() {
    let e = ExecutorConfig::from_json(r#"{"image": "x", "memroy_limit": 5}"#).unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
    assert!(
        e.to_string().contains("unknown field `memroy_limit`"),
        "{e}"
    );
    let e = ExecutorConfig::from_json(r#"{"engine": {"host": "unix:///s", "tsl": {}}}"#)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`engine`") && e.contains("unknown field `tsl`"),
        "{e}"
    );
    let e = ExecutorConfig::from_json(
        r#"{"volumes": [{"host": "/a", "container": "/b", "ro": true}]}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("`volumes`") && e.contains("unknown field `ro`"),
        "{e}"
    );

    let path =
        std::env::temp_dir().join(format!("dockexec-config-{}.json", crate::host::random_id()));
    std::fs::write(
        &path,
        "{\n  \"image\": \"x\",\n  \"netwrok\": \"bridge\"\n}\n",
    )
    .unwrap();
    let e = ExecutorConfig::from_file(&path).map_err(|e| e.to_string());
    let _ = std::fs::remove_file(&path);
    let e = e.unwrap_err();
    assert!(
        e.contains(&path.display().to_string()) && e.contains("unknown field `netwrok`"),
        "{e}"
    );
    assert!(e.contains("line 3"), "{e}");
}

#[test]
fn a_bad_type_names_the_field() {
    for (text, field) in [
        (r#"{"image": "x", "memory_limit": "lots"}"#, "memory_limit"),
        (r#"{"timeout": "soon"}"#, "timeout"),
        (r#"{"timeout": -1}"#, "timeout"),
        (r#"{"user": 1000}"#, "user"),
        (r#"{"strategy": "fast"}"#, "strategy"),
        (r#"{"tmp_size": "big"}"#, "tmp_size"),
        (r#"{"env": {"A": 1}}"#, "env"),
        (
            r#"{"device_requests": [{"count": "all"}]}"#,
            "device_requests",
        ),
    ] {
        let e = ExecutorConfig::from_json(text).unwrap_err().to_string();
        assert!(e.contains(&format!("field `{field}`")), "{text}: {e}");
        assert!(e.contains("line 1"), "{text}: {e}");
    }
    let e = ExecutorConfig::from_json("[1]").unwrap_err().to_string();
    assert!(e.contains("config: invalid type"), "{e}");
    let e = ExecutorConfig::from_file("/nonexistent/dockexec.json").unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
}

#[test]
fn a_secret_value_is_never_serialised() {
    let config = everything().to_config();
    let text = config.to_json().unwrap();
    let debug = format!("{config:?}");
    for shown in [&text, &debug] {
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(shown.contains("API_TOKEN"), "{shown}");
    }
    assert_eq!(config.secret_env, ["API_TOKEN"]);
    // The value comes back from where the secrets are, and only from there.
    let back = config.to_builder_with(secrets).unwrap();
    assert_eq!(
        back.secret_env.get("API_TOKEN").map(String::as_str),
        Some(SECRET)
    );
    let e = config.to_builder_with(|_| None).unwrap_err();
    assert!(
        matches!(&e, Error::InvalidInput(m) if m.contains("API_TOKEN is not set")),
        "{e:?}"
    );
}

#[test]
fn durations_read_as_written_and_write_exactly() {
    for (written, want) in [
        (json!(60), Duration::from_secs(60)),
        (json!(1.5), Duration::from_millis(1500)),
        (json!("1500ms"), Duration::from_millis(1500)),
        (json!("2m"), Duration::from_secs(120)),
        (json!("1h"), Duration::from_secs(3600)),
        (json!("0.5s"), Duration::from_millis(500)),
        (json!("250000001ns"), Duration::new(0, 250_000_001)),
        (json!("3us"), Duration::from_micros(3)),
    ] {
        let config: ExecutorConfig = serde_json::from_value(json!({ "timeout": written })).unwrap();
        assert_eq!(config.timeout, Some(want), "{written}");
        let again = ExecutorConfig::from_json(&config.to_json().unwrap()).unwrap();
        assert_eq!(again.timeout, Some(want), "{written}");
    }
    let none: ExecutorConfig = serde_json::from_value(json!({ "timeout": null })).unwrap();
    assert_eq!(none.timeout, None);
    assert_eq!(
        ExecutorConfig::from_json("{}").unwrap(),
        ExecutorConfig::default()
    );
    assert_eq!(
        ExecutorConfig::default().timeout,
        Some(crate::DEFAULT_TIMEOUT)
    );
}

#[test]
fn what_json_cannot_hold_is_refused_not_changed() {
    let mut b = ExecutorBuilder::new();
    b.cpu_limit(Some(f64::NAN));
    let e = b.to_config().to_json().unwrap_err();
    assert!(e.to_string().contains("cpu_limit"), "{e}");
    let bad = ExecutorConfig {
        engine: Some(EngineConfig {
            host: "tcp://h:2376".into(),
            tls: Some(TlsConfig {
                ca: None,
                cert: None,
                key: None,
                verify: true,
            }),
            allow_plaintext: false,
            ssh_options: Vec::new(),
            shares_host_filesystem: None,
        }),
        ..ExecutorConfig::default()
    };
    let e = bad.to_builder().unwrap_err();
    assert!(e.to_string().contains("needs a ca"), "{e}");
}

#[test]
fn the_readme_example_is_a_valid_config() {
    let readme = include_str!("../../README.md");
    let section = &readme[readme.find("## Configuration file").expect("the section")..];
    let json = section
        .split("```json\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let config = ExecutorConfig::from_json(json).unwrap();
    assert_eq!(config.secret_env, ["OPENAI_API_KEY"]);
    assert_eq!(config.timeout, Some(Duration::from_secs(30)));
    let engine = config.engine.as_ref().unwrap().to_engine().unwrap();
    assert_eq!(engine.endpoint(), "unix:///var/run/docker.sock");
}
