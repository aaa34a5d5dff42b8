//! Ctrl-C cleanup, as a program: the helper behind `tests/ctrlc.rs`, and an example of both
//! ways to clean up on Ctrl-C.
//!
//! ```text
//! ctrlc_child library CASE   # dockexec::cleanup_on_ctrlc(): Ctrl-C stops everything, exits 130
//! ctrlc_child own CASE       # the application's own handler calls dockexec::stop_all(), exits 3
//! ```
//!
//! It starts an executor on `$DOCKEXEC_TEST_IMAGE` (default: scripts/test-images.env),
//! labelled `dockexec.test.case=CASE`, prints `container <id>`, starts a long shell block and
//! prints `ready` once the block has printed, then waits for the block (that is, for Ctrl-C).

#[path = "../tests/common/test_images.rs"]
mod test_images;

use std::io::Write;
use std::time::Duration;

use dockexec::{CodeBlock, Error, Executor, PullPolicy};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map_or("library", String::as_str).to_string();
    let case = args.get(1).cloned().unwrap_or_else(|| "ctrlc-child".into());
    let image = test_images::get("DOCKEXEC_TEST_IMAGE");

    let marker = match mode.as_str() {
        "library" => {
            dockexec::cleanup_on_ctrlc().expect("install dockexec's ctrl-c handler");
            // ctrlc allows one handler per process: a second install must be refused.
            match dockexec::cleanup_on_ctrlc() {
                Err(Error::Hook { .. }) => println!("second install refused"),
                other => println!("second install: {other:?}"),
            }
            "sleep 1777"
        }
        "own" => {
            ctrlc::set_handler(|| {
                let n = dockexec::stop_all();
                println!("stop_all stopped {n}");
                let _ = std::io::stdout().flush();
                std::process::exit(3);
            })
            .expect("install the application's ctrl-c handler");
            match dockexec::cleanup_on_ctrlc() {
                Err(Error::Hook { .. }) => println!("library install refused"),
                other => println!("library install: {other:?}"),
            }
            "sleep 1778"
        }
        other => {
            eprintln!("usage: ctrlc_child <library|own> CASE (not {other:?})");
            std::process::exit(2);
        }
    };

    let executor = Executor::builder()
        .image(image)
        .pull_policy(PullPolicy::Never)
        .label("dockexec.test", "1")
        .label("dockexec.test.case", case)
        .timeout(Some(Duration::from_secs(300)))
        .start()
        .expect("start an executor");
    println!("container {}", executor.container_id());
    let _ = std::io::stdout().flush();

    let execution = executor
        .spawn(&CodeBlock::sh(format!("echo block started\n{marker}\n")))
        .expect("spawn the block");
    for chunk in execution.chunks() {
        if String::from_utf8_lossy(chunk.bytes()).contains("block started") {
            break;
        }
    }
    println!("ready");
    let _ = std::io::stdout().flush();

    // The handler stops the executor, which wakes this wait with the cancelled output; the
    // handler then exits the process. Do not race it to an exit of our own.
    match execution.wait() {
        Ok(out) => println!("block ended: {}", out.status),
        Err(e) => println!("wait failed: {e}"),
    }
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}
