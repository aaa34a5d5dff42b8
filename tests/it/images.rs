//! Images: pulling from the loopback registry, clear errors for absent images, and an image
//! with nothing but a static busybox.
use crate::common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::ImageGuard;
use dockexec::{CodeBlock, Error, PullPolicy, PullProgress};

#[test]
fn absent_image_is_pulled_from_the_loopback_registry_with_progress() {
    let image = common::registry_busybox();
    // Removes the pulled reference when the test ends, pass or fail.
    let _guard = ImageGuard(image.clone());
    if common::image_exists(&image) {
        assert!(common::docker(&["rmi", &image]).0, "docker rmi {image}");
    }
    assert!(!common::image_exists(&image));

    let events: Arc<Mutex<Vec<PullProgress>>> = Arc::default();
    let sink = Arc::clone(&events);
    let (mut builder, _case) = common::case_builder("pull");
    let ex = builder
        .image(&image)
        .strategy(dockexec::Strategy::Auto)
        .pull_policy(PullPolicy::Missing)
        .on_pull_progress(move |p| sink.lock().unwrap().push(p.clone()))
        .start()
        .unwrap();
    let events = events.lock().unwrap().clone();
    assert!(!events.is_empty(), "no pull progress events");
    assert!(
        events.iter().any(|e| !e.status.is_empty()),
        "every status is empty: {events:?}"
    );
    assert!(
        common::image_exists(&image),
        "{image} not present after the pull"
    );
    assert_eq!(ex.image(), image);
    let out = ex
        .run(&CodeBlock::sh("echo pulled && busybox true"))
        .unwrap();
    common::assert_success(&out);
    assert_eq!(out.stdout, b"pulled\n");
    ex.stop().unwrap();

    // Present now: Missing does not pull again.
    let events: Arc<Mutex<Vec<PullProgress>>> = Arc::default();
    let sink = Arc::clone(&events);
    let ex = builder
        .on_pull_progress(move |p| sink.lock().unwrap().push(p.clone()))
        .start()
        .unwrap();
    assert!(events.lock().unwrap().is_empty(), "pulled a present image");
    drop(ex);
}

#[test]
fn image_missing_from_the_registry_is_image_not_found() {
    let image = format!("{}/dockexec/nope:latest", common::registry());
    let _guard = ImageGuard(image.clone());
    let (mut builder, case) = common::case_builder("nope");
    let err = builder
        .image(&image)
        .pull_policy(PullPolicy::Missing)
        .start()
        .unwrap_err();
    match &err {
        Error::ImageNotFound { image: named, .. } => assert_eq!(named, &image),
        other => panic!("expected ImageNotFound, got {other:?}"),
    }
    assert!(err.to_string().contains(&image), "{err}");
    assert!(case.containers().is_empty());
    assert!(!common::image_exists(&image));
}

#[test]
fn absent_local_image_with_pull_never_is_image_not_found() {
    let image = "dockexec-test/never-existed:nope";
    let (mut builder, case) = common::case_builder("never");
    let err = builder
        .image(image)
        .pull_policy(PullPolicy::Never)
        .start()
        .unwrap_err();
    match &err {
        Error::ImageNotFound { image: named, .. } => assert_eq!(named, image),
        other => panic!("expected ImageNotFound, got {other:?}"),
    }
    assert!(err.to_string().contains(image), "{err}");
    assert!(case.containers().is_empty());
}

#[test]
fn busybox_only_image_runs_sh_blocks() {
    // Auto: busybox has no Python, so it runs on the exec path whatever the suite's strategy.
    let ex = common::builder()
        .image(common::busybox())
        .strategy(dockexec::Strategy::Auto)
        .start()
        .unwrap();
    let out = ex
        .run(&CodeBlock::sh(
            "echo hello from busybox; ls / > /dev/null; exit 0",
        ))
        .unwrap();
    common::assert_success(&out);
    assert_eq!(out.stdout, b"hello from busybox\n");

    let out = ex.run(&CodeBlock::sh("exit 5")).unwrap();
    assert_eq!(out.status.code(), Some(5));

    // No python there: a clear 127, not an error.
    let out = ex.run(&CodeBlock::python("print('hi')")).unwrap();
    assert_eq!(out.status.code(), Some(127), "{}", out.status);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr_lossy().contains("neither python3 nor python"),
        "{}",
        out.stderr_lossy()
    );

    // Nor bash.
    let out = ex.run(&CodeBlock::bash("echo hi")).unwrap();
    assert_eq!(out.status.code(), Some(127), "{}", out.status);
    assert!(
        out.stderr_lossy().contains("bash"),
        "{}",
        out.stderr_lossy()
    );
}

#[test]
fn busybox_only_image_times_out_a_block() {
    // The kill script needs nothing but busybox's sh. (A block whose shell loops by itself:
    // see blocks.rs for a block whose shell waits on a child.)
    let ex = common::builder()
        .image(common::busybox())
        .strategy(dockexec::Strategy::Auto)
        .timeout(Some(Duration::from_secs(1)))
        .start()
        .unwrap();
    let t0 = Instant::now();
    let out = ex
        .run(&CodeBlock::sh(
            "echo start\nwhile :; do :; done\necho never",
        ))
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert!(out.status.timed_out(), "{}", out.status);
    assert_eq!(out.status.shell_code(), 124);
    assert_eq!(out.stdout, b"start\n");
    let left = common::processes_matching(ex.container_id(), "tmp_code_");
    assert!(left.is_empty(), "still running: {left:?}");
    let out = ex.run(&CodeBlock::sh("echo next")).unwrap();
    assert_eq!(out.stdout, b"next\n");
}
