//! An executor owner that dies without cleaning up: the helper behind `tests/orphans.rs`.
//!
//! ```text
//! sigkill_owner CASE
//! ```
//!
//! Starts an executor on `$DOCKEXEC_TEST_IMAGE` (default: scripts/test-images.env),
//! labelled `dockexec.test.case=CASE`, prints `container <id>` and `workdir <path>`, starts a
//! long block, prints `ready`, and sleeps until it is killed. Its strategy follows
//! `DOCKEXEC_TEST_STRATEGY`.
//!
//! Killed with SIGKILL, its connection to the container's keeper closes, so the container
//! ends by itself (its block with it) and the daemon removes it (the dead-man's switch). Its
//! temporary work dir is left behind, its lock released, for `dockexec gc` or the next
//! `start()` to remove. With `DOCKEXEC_OWNER_KEEP=1` the executor is built
//! with `auto_remove(false)`: the container still ends but stays, exited, for `dockexec gc`
//! or the next `start()` to remove with the work dir. With `DOCKEXEC_OWNER_RESTART=1` the
//! executor is restarted before the block starts.

#[path = "../tests/common/test_images.rs"]
mod test_images;

use std::io::Write;
use std::time::Duration;

use dockexec::{CodeBlock, Executor, PullPolicy, Strategy};

fn main() {
    let case = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "sigkill-owner".into());
    let image = test_images::get("DOCKEXEC_TEST_IMAGE");
    let flag = |name: &str| std::env::var(name).is_ok_and(|v| v == "1");
    let executor = Executor::builder()
        .image(image)
        .auto_remove(!flag("DOCKEXEC_OWNER_KEEP"))
        .pull_policy(PullPolicy::Never)
        // Sweeping here could remove a container another test is still looking at.
        .gc_orphans(false)
        .label("dockexec.test", "1")
        .label("dockexec.test.case", case)
        .timeout(Some(Duration::from_secs(300)))
        .strategy(match std::env::var("DOCKEXEC_TEST_STRATEGY").as_deref() {
            Ok("exec") => Strategy::Exec,
            Ok("agent") => Strategy::Agent,
            _ => Strategy::Auto,
        })
        .start()
        .expect("start an executor");
    println!("container {}", executor.container_id());
    // The test harness reads this line; a local engine always has a host work dir.
    let work_dir = executor.work_dir().map(|d| d.display().to_string());
    println!("workdir {}", work_dir.unwrap_or_default());
    let _ = std::io::stdout().flush();
    if flag("DOCKEXEC_OWNER_RESTART") {
        executor.restart().expect("restart the executor");
    }
    let execution = executor
        .spawn(&CodeBlock::sh("echo block started\nsleep 1888\n"))
        .expect("spawn the block");
    for chunk in execution.chunks() {
        if String::from_utf8_lossy(chunk.bytes()).contains("block started") {
            break;
        }
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
