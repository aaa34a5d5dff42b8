//! `Executor::restart` under the dead-man's switch: the container stays (same id, still
//! running, its switch intact) while every process in it but its keeper dies, even one that
//! left its block's session; the workspace stays and the next block runs.
use crate::common;

use std::time::Duration;

use dockexec::CodeBlock;

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn restart_kills_every_process_but_keeps_the_container_and_its_files() {
    common::watchdog(LIMIT, || {
        let (b, _guard) = common::case_builder("restart-all");
        let ex = b.start().unwrap();
        let id = ex.container_id().to_string();
        // A process that leaves its block's session and outlives a cancel, and a block that
        // is still running.
        let escapee = ex
            .spawn(&CodeBlock::sh(
                "echo kept > kept.txt; setsid sh -c 'exec sleep 1884' </dev/null >/dev/null 2>&1 &\necho up; sleep 1883",
            ))
            .unwrap();
        common::await_stdout(&escapee.chunks(), "up", Duration::from_secs(20));
        assert!(common::eventually(Duration::from_secs(10), || {
            common::processes_matching(&id, "sleep 1884").len() == 1
        }));

        ex.restart().unwrap();
        let out = escapee.wait().unwrap();
        assert!(out.status.cancelled(), "{out:?}");
        let mut left = Vec::new();
        assert!(
            common::eventually(Duration::from_secs(10), || {
                left = common::processes_matching(&id, "sleep 188");
                left.is_empty()
            }),
            "processes outlived the restart: {left:?}"
        );
        assert_eq!(ex.container_id(), id);
        let (ok, state) = common::docker(&["inspect", "-f", "{{.State.Status}}", &id]);
        assert!(ok && state.trim() == "running", "{state}");
        let next = ex.run(&CodeBlock::sh("cat kept.txt")).unwrap();
        common::assert_success(&next);
        assert_eq!(next.stdout_lossy(), "kept\n");
        // Twice in a row, and from two threads at once: each restart waits for its own answer.
        std::thread::scope(|s| {
            let a = s.spawn(|| ex.restart());
            let b = s.spawn(|| ex.restart());
            a.join().unwrap().unwrap();
            b.join().unwrap().unwrap();
        });
        let next = ex.run(&CodeBlock::sh("echo after")).unwrap();
        assert_eq!(next.stdout_lossy(), "after\n");
        ex.stop().unwrap();
        assert!(!common::container_exists(&id));
    });
}

/// What a block leaves in `/dev/shm` (a tmpfs every container has, writable by every user)
/// goes at `restart()` as `/tmp`'s does, closed directories and links included: before, it
/// stayed there for the blocks after the restart.
#[test]
fn restart_empties_dev_shm_as_it_does_tmp() {
    common::watchdog(LIMIT, || {
        let (b, _guard) = common::case_builder("restart-shm");
        let ex = b.start().unwrap();
        let plant = "mkdir -p /dev/shm/d/e && echo x > /dev/shm/d/e/f && echo y > /dev/shm/.hidden \
                     && ln -s /workspace /dev/shm/link && chmod 0 /dev/shm/d && echo /tmp > /tmp/t \
                     && cd /dev/shm && ls -A";
        let out = ex.run(&CodeBlock::sh(plant)).unwrap();
        common::assert_success(&out);
        assert_eq!(out.stdout_lossy(), ".hidden\nd\nlink\n");
        ex.restart().unwrap();
        let after = ex
            .run(&CodeBlock::sh(
                "for d in /dev/shm /tmp; do echo \"$d:\"; (cd $d && ls -A); done; \\
                 [ -d /workspace ] && echo /workspace",
            ))
            .unwrap();
        common::assert_success(&after);
        assert_eq!(
            after.stdout_lossy(),
            "/dev/shm:\n/tmp:\n/workspace\n",
            "emptied, and the link's target kept"
        );
        ex.stop().unwrap();
    });
}
