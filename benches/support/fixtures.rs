//! What every bench needs around the clients: the daemon's socket and the image, this run's id
//! and the labels carrying it, a sleeper container, the sweep that removes this run's
//! containers, and the skips (with the reason) when the daemon or the image is missing.
//! Needs `mod raw;` next to it in the bench binary.
#![allow(dead_code)]

#[path = "../../tests/common/test_images.rs"]
mod test_images;

use std::io;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::raw::Raw;

/// Label on every container the benches create (executors' included).
pub const LABEL: &str = "dockexec.bench";
/// Label whose value is this bench run's id: what the final sweep removes.
pub const RUN_LABEL: &str = "dockexec.bench.run";

/// The daemon's socket: `DOCKER_HOST` when it is `unix://…`, else the default.
pub fn socket() -> PathBuf {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if h.starts_with("unix://") => PathBuf::from(&h["unix://".len()..]),
        _ => PathBuf::from("/var/run/docker.sock"),
    }
}

/// The image the benches run: `DOCKEXEC_BENCH_IMAGE`, else the test image
/// (`DOCKEXEC_TEST_IMAGE`, else its line in scripts/test-images.env).
pub fn image() -> String {
    std::env::var("DOCKEXEC_BENCH_IMAGE")
        .unwrap_or_else(|_| test_images::get("DOCKEXEC_TEST_IMAGE"))
}

/// The matplotlib image (issue 19's figure row): `DOCKEXEC_TEST_MPL_IMAGE`, else its line in
/// scripts/test-images.env.
#[allow(dead_code)] // only the agent bench uses it
pub fn mpl_image() -> String {
    test_images::get("DOCKEXEC_TEST_MPL_IMAGE")
}

/// This bench run's id: `DOCKEXEC_BENCH_RUN` in a re-executed child (the parent passes its
/// own with `Command::env`), else fixed once for this process.
pub fn run_id() -> String {
    if let Ok(id) = std::env::var("DOCKEXEC_BENCH_RUN") {
        return id;
    }
    RUN_ID
        .get_or_init(|| format!("{}-{}", std::process::id(), nanos()))
        .clone()
}

static RUN_ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

/// The labels every bench container carries.
pub fn labels() -> Value {
    json!({ LABEL: "1", RUN_LABEL: run_id() })
}

/// A running container that does nothing (`sleep infinity` under docker-init, no network),
/// labelled for the sweep: what `docker run -d --init --network none` makes.
pub fn run_sleeper(raw: &mut Raw, image: &str) -> io::Result<String> {
    let body = json!({
        "Image": image,
        "Cmd": ["sleep", "infinity"],
        "Labels": labels(),
        "HostConfig": { "Init": true, "NetworkMode": "none" },
    });
    let id = raw.container_create(None, &body)?;
    if let Err(e) = raw.container_start(&id) {
        let _ = raw.container_remove(&id);
        return Err(e);
    }
    Ok(id)
}

/// Ids of this run's containers.
pub fn this_runs_containers(raw: &mut Raw) -> io::Result<Vec<String>> {
    let filters = json!({ "label": [format!("{RUN_LABEL}={}", run_id())] }).to_string();
    let v = raw.json(
        "GET",
        &format!("/containers/json?all=true&filters={}", encode(&filters)),
        None,
    )?;
    Ok(v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["Id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// On drop (normal exit or panic), force-removes every container of this bench run.
pub struct Sweep {
    socket: PathBuf,
}

impl Sweep {
    /// Arms the sweep of this run's containers.
    pub fn arm(socket: &Path) -> Sweep {
        Sweep {
            socket: socket.to_path_buf(),
        }
    }

    fn sweep(&self) -> usize {
        let Ok(mut raw) = Raw::connect(&self.socket) else {
            return 0;
        };
        let ids = this_runs_containers(&mut raw).unwrap_or_default();
        for id in &ids {
            let _ = raw.container_remove(id);
        }
        ids.len()
    }
}

impl Drop for Sweep {
    fn drop(&mut self) {
        let n = self.sweep();
        if n > 0 {
            eprintln!("bench cleanup: removed {n} leftover container(s) of this run");
        }
    }
}

/// The daemon side every bench needs: the hand-written client, the sweep that removes this
/// run's containers on exit, and the image. `None`, after saying why, when no daemon answers.
pub fn daemon() -> Option<(Raw, Sweep, String)> {
    let socket = socket();
    match Raw::connect(&socket) {
        Ok(raw) => Some((raw, Sweep::arm(&socket), image())),
        Err(e) => {
            println!("skipped: no Docker daemon at {}: {e}", socket.display());
            None
        }
    }
}

/// The start of a rival bench (its own harness, `harness = false`): whether this is a full run
/// (`cargo bench`, `--bench`) or the smoke run (`DOCKEXEC_BENCH_SMOKE=1`, which wins over
/// `--bench`, so the smoke reuses the bench build), and the [`daemon`] side. `None`, after
/// saying why, when neither was asked or (full runs only) no daemon answers; a smoke run
/// without a daemon panics.
pub fn rival_start() -> Option<(bool, Raw, Sweep, String)> {
    let smoke = std::env::var_os("DOCKEXEC_BENCH_SMOKE").is_some_and(|v| v != "0");
    let full = !smoke && std::env::args().skip(1).any(|a| a == "--bench");
    if !full && !smoke {
        println!("skipped: run with `cargo bench` (or DOCKEXEC_BENCH_SMOKE=1)");
        return None;
    }
    let Some((raw, sweep, image)) = daemon() else {
        assert!(!smoke, "smoke: no Docker daemon");
        return None;
    };
    Some((full, raw, sweep, image))
}

/// Says why a bench is skipped when it cannot run a container of `image`.
pub fn skip_image(image: &str, e: &dyn std::fmt::Display) {
    println!(
        "skipped: cannot run {image} ({e}); build the test images with scripts/test-env.sh, or \
         set DOCKEXEC_BENCH_IMAGE"
    );
}

/// Starts an executor, or says why not (the usual cause: the bench image is missing).
pub fn start_or_skip(
    builder: &dockexec::ExecutorBuilder,
    image: &str,
) -> Option<dockexec::Executor> {
    match builder.start() {
        Ok(ex) => Some(ex),
        Err(e) => {
            skip_image(image, &e);
            None
        }
    }
}

/// A builder for the bench image that never pulls, never sweeps (a sweep could remove another
/// bench's container) and is labelled for this run's sweep.
pub fn builder(image: &str) -> dockexec::ExecutorBuilder {
    let mut b = dockexec::Executor::builder();
    b.image(image)
        .pull_policy(dockexec::PullPolicy::Never)
        .gc_orphans(false)
        .label(LABEL, "1")
        .label(RUN_LABEL, run_id());
    b
}
