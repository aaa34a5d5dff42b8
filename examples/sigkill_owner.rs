//! An executor owner that dies without cleaning up: the helper behind `tests/orphans.rs`.
//!
//! ```text
//! sigkill_owner CASE
//! ```
//!
//! Starts an executor on `$DOCKEXEC_TEST_IMAGE` (default: scripts/test-images.env),
//! labelled `dockexec.test.case=CASE`, prints `container <id>` and `workdir <path>`, starts a
//! long block, prints `ready`, and sleeps until it is killed. Killed with SIGKILL, it leaves its container behind
//! (and its temporary work dir) for `dockexec gc` or the next `start()` to remove. Its
//! strategy follows `DOCKEXEC_TEST_STRATEGY`: with the agent, the block dies with the
//! owner's connection; by exec, it runs on.

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
    let executor = Executor::builder()
        .image(image)
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
    println!("workdir {}", executor.work_dir().display());
    let _ = std::io::stdout().flush();
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
