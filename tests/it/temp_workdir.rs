//! A SIGKILLed owner's temporary work dir does not leak (issue 9 §4, issue 11 "nothing
//! leaked"): the dead-man's switch removes the container, and with it the label that used to
//! name the dir, so the dir itself says whether its owner lives. The owner holds an exclusive
//! `flock` on it; `gc` and `start()`'s sweep remove a `dockexec-<id>` dir only when that lock
//! is free. The owners are child processes (examples/sigkill_owner.rs).
//!
//! Other tests' `start()` may sweep a dead owner's dir before this test's own gc does; the
//! tests only ever assert that a dead owner's dir ends up gone and a live one's stays.
use crate::common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::{Owner, OwnerSetup};
use dockexec::{CodeBlock, GcOptions, Strategy};

const LIMIT: Duration = Duration::from_secs(60);
const VANISH: Duration = Duration::from_secs(10);

/// An owner process (examples/sigkill_owner.rs) with its running block, under this run's
/// strategy.
fn start_owner(case: &str) -> Owner {
    let strategy = match common::strategy() {
        Strategy::Exec => "exec",
        Strategy::Agent => "agent",
        _ => "auto",
    };
    Owner::start(case, OwnerSetup::python(strategy))
}

/// SIGKILLs the owner, reaps it, and waits for the switch to take its container.
fn sigkill(owner: &mut Owner) {
    owner.sigkill();
    assert!(
        common::eventually(VANISH, || !common::container_exists(&owner.container)),
        "the switch did not remove {}",
        owner.container
    );
}

/// Only this case's containers; the dir sweep is not filtered by labels (a dir has none).
fn options(guard: &common::CaseGuard) -> GcOptions {
    let mut o = GcOptions::default();
    o.labels
        .push(format!("{}={}", common::CASE_LABEL, guard.value));
    o
}

/// A fresh name of the form dockexec gives its temporary work dirs.
fn temp_name() -> String {
    let n = common::unique_name("x");
    let mut h = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(&n, &mut h);
    format!("dockexec-{:016x}", std::hash::Hasher::finish(&h))
}

/// Removes a path on drop, link or dir, without following links.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            if fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()) {
                let _ = fs::remove_dir_all(p);
            } else {
                let _ = fs::remove_file(p);
            }
        }
    }
}

/// The regression: before the lock, nothing removed a SIGKILLed owner's temporary work dir
/// once its container had removed itself, neither gc nor the next `start()`.
#[test]
fn a_sigkilled_owners_temp_dir_is_removed_by_gc_and_by_start() {
    let _serial = common::serial();
    let (mut b, _guard) = common::case_builder("tmpdir-start");
    // The library's default, which the suite's builder turns off.
    b.gc_orphans(true);
    common::watchdog(LIMIT * 3, move || {
        let mut owner = start_owner("tmpdir-gc");
        sigkill(&mut owner);
        dockexec::gc_with(&options(&owner.guard)).unwrap();
        assert!(
            !owner.work_dir.exists(),
            "gc left the SIGKILLed owner's work dir {}",
            owner.work_dir.display()
        );

        let mut owner = start_owner("tmpdir-start-owner");
        sigkill(&mut owner);
        let ex = b.start().unwrap();
        assert!(
            !owner.work_dir.exists(),
            "start() left the SIGKILLed owner's work dir {}",
            owner.work_dir.display()
        );
        assert!(ex.work_dir().unwrap().is_dir());
        ex.stop().unwrap();
    });
}

/// A live owner's dir stays, whether the owner is another process or this one, whoever
/// sweeps; a block cannot take the lock from its owner; once that owner is SIGKILLed, its dir
/// goes and the other stays.
#[test]
fn a_live_owners_temp_dir_is_never_removed() {
    let _serial = common::serial();
    let (b, _guard) = common::case_builder("tmpdir-live-self");
    // Containers of no one: only the dir sweep acts (other helpers' kept containers stay).
    let nobody = common::CaseGuard::new("tmpdir-nobody");
    common::watchdog(LIMIT * 3, move || {
        let mut owner = start_owner("tmpdir-live");
        let mine = b.start().unwrap();
        let mine2 = b.start().unwrap();
        dockexec::gc_with(&options(&nobody)).unwrap();
        assert!(
            owner.work_dir.is_dir(),
            "gc removed a live owner's work dir"
        );
        assert!(
            mine.work_dir().unwrap().is_dir(),
            "gc removed this process's work dir"
        );
        assert!(mine2.work_dir().unwrap().is_dir());
        assert!(common::container_exists(&owner.container));
        // The lock itself, not only the label of a running container, says so: the owner
        // holds it from another process (a running container's label also spares its dir).
        for dir in [&owner.work_dir, &mine.work_dir().unwrap().to_path_buf()] {
            let probe = fs::File::open(dir).unwrap();
            assert_eq!(
                lock_now(&probe),
                Err(rustix::io::Errno::WOULDBLOCK),
                "{} is not locked by its live owner",
                dir.display()
            );
        }

        // The block sees the dir as /workspace: while its owner lives it cannot lock it, so
        // it cannot make a dead owner's dir look alive either (it dies with the owner).
        let out = mine
            .run(&CodeBlock::python(
                "import fcntl, os\n\
                 for how in (fcntl.LOCK_EX, fcntl.LOCK_SH):\n\
                 \x20   fd = os.open('/workspace', os.O_RDONLY)\n\
                 \x20   try:\n\
                 \x20       fcntl.flock(fd, how | fcntl.LOCK_NB)\n\
                 \x20       print('locked')\n\
                 \x20   except BlockingIOError:\n\
                 \x20       print('held')\n",
            ))
            .unwrap();
        assert_eq!(out.stdout_lossy(), "held\nheld\n", "{out:?}");

        sigkill(&mut owner);
        dockexec::gc_with(&options(&nobody)).unwrap();
        assert!(
            !owner.work_dir.exists(),
            "gc left the dead owner's work dir"
        );
        assert!(mine.work_dir().unwrap().is_dir());
        assert!(mine2.work_dir().unwrap().is_dir());
        assert!(
            mine.run(&CodeBlock::sh("echo fine"))
                .unwrap()
                .status
                .success()
        );
        let dirs = [
            mine.work_dir().unwrap().to_path_buf(),
            mine2.work_dir().unwrap().to_path_buf(),
        ];
        mine.stop().unwrap();
        mine2.stop().unwrap();
        assert!(dirs.iter().all(|d| !d.exists()), "stop() removes its own");
    });
}

/// By hand, no daemon-side owner: an unlocked staging dir is kept within its grace and taken
/// after it; an unlocked work dir is taken at once, without following the links planted in
/// it; a link, a file, another user's name pattern or a locked dir are never touched.
#[test]
fn the_sweep_keeps_fresh_staging_dirs_and_never_follows_links() {
    let _serial = common::serial();
    let nobody = common::CaseGuard::new("tmpdir-nobody");
    common::watchdog(LIMIT * 2, move || {
        let gc = || dockexec::gc_with(&options(&nobody)).unwrap();
        let root = std::env::temp_dir().canonicalize().unwrap();
        let canary = common::TempDir::new("tmpdir-canary");
        fs::write(canary.path().join("keep.txt"), "keep").unwrap();

        let staging = root.join(format!("{}.new", temp_name()));
        let dead = root.join(temp_name());
        let locked = root.join(temp_name());
        let link = root.join(temp_name());
        let file = root.join(temp_name());
        let other = root.join(format!("dockexec-{}", common::unique_name("notours")));
        let _cleanup = Cleanup(vec![
            staging.clone(),
            dead.clone(),
            locked.clone(),
            link.clone(),
            file.clone(),
            other.clone(),
        ]);
        for d in [&staging, &dead, &locked, &other] {
            fs::create_dir(d).unwrap();
        }
        // What a block may plant: links out of the dir.
        std::os::unix::fs::symlink(canary.path(), dead.join("out")).unwrap();
        std::os::unix::fs::symlink(canary.path().join("keep.txt"), dead.join("f")).unwrap();
        fs::create_dir(dead.join("sub")).unwrap();
        std::os::unix::fs::symlink(canary.path(), dead.join("sub/out")).unwrap();
        // And closed dirs (`chmod 0`), which only root could otherwise open or empty.
        fs::set_permissions(dead.join("sub"), fs::Permissions::from_mode(0o000)).unwrap();
        fs::set_permissions(&dead, fs::Permissions::from_mode(0o000)).unwrap();
        std::os::unix::fs::symlink(canary.path(), &link).unwrap();
        fs::write(&file, "not a dir").unwrap();
        let holder = fs::File::open(&locked).unwrap();
        lock_now(&holder).unwrap();

        gc();
        assert!(!dead.exists(), "an unlocked work dir is a dead owner's");
        assert!(
            staging.is_dir(),
            "a fresh staging dir may be a live owner's"
        );
        for kept in [&locked, &other, &file] {
            assert!(kept.exists(), "{}", kept.display());
        }
        assert!(
            fs::symlink_metadata(&link).is_ok(),
            "a link is not a work dir"
        );
        assert_eq!(canary_files(canary.path()), ["keep.txt"], "followed a link");

        // Past its grace, a staging dir is one whose creator died before locking it.
        let old = SystemTime::now() - Duration::from_secs(3600);
        fs::File::open(&staging).unwrap().set_modified(old).unwrap();
        gc();
        assert!(
            !staging.exists(),
            "an old unlocked staging dir is an orphan"
        );
        assert!(locked.is_dir(), "a locked dir is a live owner's");
        drop(holder);
        gc();
        assert!(!locked.exists(), "its lock released, the dir is an orphan");
        assert_eq!(canary_files(canary.path()), ["keep.txt"]);
    });
}

/// `flock(LOCK_EX | LOCK_NB)`, as dockexec takes it.
fn lock_now(f: &fs::File) -> rustix::io::Result<()> {
    rustix::fs::flock(f, rustix::fs::FlockOperation::NonBlockingLockExclusive)
}

fn canary_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
