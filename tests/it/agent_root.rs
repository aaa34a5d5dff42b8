//! Issue 21, item 1: the agent runs as root, so it must read nothing a block can write. Each test
//! plants code where the old agent's start (`sh` found on the container's `PATH`, then
//! `python3 -c SRC` with the container's environment, `HOME=/tmp`, cwd `/workspace`) read it as
//! root, then gets a fresh agent started (by `restart()`, or by killing the agent from outside),
//! and checks that no marker was ever written by uid 0. Under the defaults (`Strategy::Auto` on
//! the python image, which picks the agent).
use crate::common;

use std::time::Duration;

use dockexec::{CodeBlock, Error, Executor, Strategy};

const LIMIT: Duration = Duration::from_secs(120);

/// The builder with the library's defaults (Auto), labelled for cleanup.
fn defaults(case: &str) -> (dockexec::ExecutorBuilder, common::CaseGuard) {
    let (mut b, guard) = common::case_builder(case);
    b.strategy(Strategy::Auto);
    (b, guard)
}

fn sh(ex: &Executor, script: &str) -> String {
    let out = ex.run(&CodeBlock::sh(script)).unwrap();
    common::assert_success(&out);
    out.stdout_lossy().into_owned()
}

fn py(ex: &Executor, code: &str) -> String {
    let out = ex.run(&CodeBlock::python(code)).unwrap();
    common::assert_success(&out);
    out.stdout_lossy().into_owned()
}

/// The markers planted code wrote, `/tmp/pwned-<what>-<uid>`, as a root exec lists them.
fn markers(ex: &Executor) -> Vec<String> {
    let (ok, out) = common::docker(&[
        "exec",
        "-u",
        "0",
        ex.container_id(),
        "/bin/sh",
        "-c",
        "cd /tmp && for f in pwned-*; do [ -e \"$f\" ] && echo \"$f\"; done; true",
    ]);
    assert!(ok, "cannot list the markers");
    out.lines().map(str::to_string).collect()
}

fn assert_no_root_marker(ex: &Executor, when: &str) {
    let m = markers(ex);
    assert!(
        !m.iter().any(|m| m.ends_with("-0")),
        "{when}: planted code ran as root: {m:?}"
    );
}

/// The pid of the agent (see `common::agent_pid`), which must be running.
fn agent_pid(ex: &Executor) -> String {
    common::agent_pid(ex.container_id())
        .expect("an agent runs")
        .to_string()
}

/// Runs `block` until it runs: the first run after the agent died may find the connection lost.
fn run_after_death(ex: &Executor, block: &CodeBlock) -> dockexec::Output {
    for _ in 0..3 {
        match ex.run(block) {
            Ok(out) if !out.status.lost() => return out,
            Ok(_) | Err(Error::Agent(_)) => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => panic!("{e}"),
        }
    }
    panic!("no run after the agent died");
}

const PLANT_USER_SITE: &str = r#"
import os, site
d = site.getusersitepackages()
os.makedirs(d, exist_ok=True)
w = "import os\nopen('/tmp/pwned-%s-%d' % ({!r}, os.getuid()), 'w').close()\n"
with open(os.path.join(d, "usercustomize.py"), "w") as f:
    f.write(w.format("uc"))
with open(os.path.join(d, "zz.pth"), "w") as f:
    f.write(w.format("pth").replace("\n", "; ", 1))
print(d)
"#;

/// The chain's step 3: a user site planted in `/tmp` (`HOME`), then a fresh agent, by
/// `restart()` and by the agent's death. Failed before the fix with "after restart(): planted
/// code ran as root: [\"pwned-pth-0\", \"pwned-uc-0\"]".
#[test]
fn a_user_site_planted_by_a_block_never_runs_as_root() {
    common::watchdog(LIMIT, || {
        let (b, _guard) = defaults("agentroot-usersite");
        let ex = b.start().unwrap();
        assert_eq!(ex.strategy(), Strategy::Agent);
        let uid = sh(&ex, "id -u").trim().to_string();
        assert_ne!(uid, "0", "the defaults run blocks as a non-root user");
        let site = py(&ex, PLANT_USER_SITE);
        assert!(site.starts_with("/tmp/.local/lib/python3"), "{site}");

        ex.restart().unwrap();
        sh(&ex, "true");
        assert_no_root_marker(&ex, "after restart()");

        // restart() emptied /tmp: plant again for the agent's death.
        assert!(
            py(&ex, PLANT_USER_SITE)
                .trim()
                .starts_with("/tmp/.local/lib/python3")
        );
        let pid = agent_pid(&ex);
        let kill = format!("kill -9 {pid}");
        let (ok, _) =
            common::docker(&["exec", "-u", "0", ex.container_id(), "/bin/sh", "-c", &kill]);
        assert!(ok, "kill the agent");
        let out = run_after_death(&ex, &CodeBlock::sh("true"));
        common::assert_success(&out);
        assert_ne!(agent_pid(&ex), pid, "a fresh agent");
        assert_no_root_marker(&ex, "after the agent's death");

        // Zygote fidelity: a python block sees the user site as `python3 FILE` would, as itself.
        py(&ex, "print('hi')");
        let m = markers(&ex);
        for what in ["uc", "pth"] {
            let want = format!("pwned-{what}-{uid}");
            assert!(
                m.contains(&want),
                "a python block runs the user site as {uid}: {m:?}"
            );
        }
        assert_no_root_marker(&ex, "after a python block");
        ex.stop().unwrap();
    });
}

/// `PYTHONPATH=/workspace` set by the user, and modules the agent imports planted there. Failed
/// before the fix with "after restart(): planted code ran as root: [\"pwned-json-0\", ...]".
#[test]
fn a_user_set_pythonpath_never_makes_root_import_from_the_workspace() {
    common::watchdog(LIMIT, || {
        let (mut b, _guard) = defaults("agentroot-pythonpath");
        b.env("PYTHONPATH", "/workspace");
        let ex = b.start().unwrap();
        assert_eq!(ex.strategy(), Strategy::Agent);
        sh(
            &ex,
            "for m in json struct select sitecustomize; do \
               printf 'import os\\nopen(\"/tmp/pwned-%s-%%d\" %% os.getuid(), \"w\").close()\\n' $m \
                 > /workspace/$m.py; done",
        );
        ex.restart().unwrap();
        sh(&ex, "true");
        assert_no_root_marker(&ex, "after restart()");
        // The blocks still see PYTHONPATH, and run through a fresh python3 that honours it.
        let out = py(
            &ex,
            "import os, sys\nprint(os.environ.get('PYTHONPATH'), '/workspace' in sys.path)",
        );
        assert_eq!(out, "/workspace True\n");
        assert_no_root_marker(&ex, "after a python block");
        ex.stop().unwrap();
    });
}

/// `PATH=/workspace:/usr/bin:/bin` set by the user, with `sh` and `python3` planted there. Failed
/// before the fix with "after restart(): planted code ran as root: [\"pwned-sh-0\"]".
#[test]
fn a_user_set_path_never_makes_root_run_a_planted_interpreter() {
    common::watchdog(LIMIT, || {
        let (mut b, _guard) = defaults("agentroot-path");
        b.env("PATH", "/workspace:/usr/bin:/bin");
        let ex = b.start().unwrap();
        assert_eq!(ex.strategy(), Strategy::Agent);
        sh(
            &ex,
            "for p in sh python3 python; do \
               printf '#!/bin/sh\\ntouch /tmp/pwned-%s-$(id -u)\\nexec /usr/bin/%s \"$@\"\\n' $p $p \
                 > /workspace/$p; chmod 755 /workspace/$p; done",
        );
        ex.restart().unwrap();
        sh(&ex, "true");
        assert_no_root_marker(&ex, "after restart()");
        let out = sh(&ex, "echo $PATH");
        assert_eq!(
            out, "/workspace:/usr/bin:/bin\n",
            "blocks keep the user's PATH"
        );
        ex.stop().unwrap();
    });
}

/// The container's own root processes are started by absolute path too: with a user-set `PATH`
/// that puts the workspace first and a work dir a block of an earlier executor planted an `sh`
/// in, the keeper (the container's main process, root) used to be that `sh` (its entrypoint
/// was `sh`, looked up on the container's `PATH`).
#[test]
fn a_user_set_path_never_makes_the_keeper_a_planted_sh() {
    common::watchdog(LIMIT, || {
        let work = common::TempDir::new("keeper-path");
        let planted = work.path().join("sh");
        std::fs::write(
            &planted,
            "#!/bin/sh\ntouch /tmp/pwned-keeper-$(id -u)\nexec /bin/sh \"$@\"\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o755)).unwrap();
        // The block user may write the dir, as an earlier executor's blocks did.
        std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let (mut b, _guard) = defaults("keeper-path");
        b.env("PATH", "/workspace:/usr/bin:/bin")
            .work_dir(work.path());
        let ex = b.start().unwrap();
        sh(&ex, "true");
        assert_no_root_marker(&ex, "after start()");
        ex.stop().unwrap();
    });
}

/// `LD_PRELOAD` set by the user to a path a block can write: the agent's start never loads it
/// (it runs without it), and the blocks still see it. Failed before the fix with "the agent's
/// environment has LD_PRELOAD".
#[test]
fn a_user_set_ld_preload_never_reaches_the_agent() {
    common::watchdog(LIMIT, || {
        let (mut b, _guard) = defaults("agentroot-ldpreload");
        b.env("LD_PRELOAD", "/tmp/planted.so");
        let ex = b.start().unwrap();
        assert_eq!(ex.strategy(), Strategy::Agent);
        let pid = agent_pid(&ex);
        let (ok, env) = common::docker(&[
            "exec",
            "-u",
            "0",
            ex.container_id(),
            "/bin/sh",
            "-c",
            &format!("tr '\\0' '\\n' < /proc/{pid}/environ"),
        ]);
        assert!(ok);
        assert!(
            !env.lines().any(|l| l.starts_with("LD_")),
            "the agent's environment has LD_PRELOAD: {env}"
        );
        let out = ex.run(&CodeBlock::sh("echo $LD_PRELOAD")).unwrap();
        assert!(
            out.stdout_lossy().contains("/tmp/planted.so"),
            "blocks keep it: {out:?}"
        );
        let out = py(&ex, "import os\nprint(os.environ['LD_PRELOAD'])");
        assert_eq!(out, "/tmp/planted.so\n");
        ex.stop().unwrap();
    });
}

/// An image whose site-packages a non-root user could write (here a tmpfs owned by 65534 over
/// it, which no image needs to be built for): the agent refuses to start, naming the path; Auto
/// falls back to the exec strategy and Agent reports the refusal.
#[test]
fn an_image_with_block_writable_site_packages_gets_no_agent() {
    common::watchdog(LIMIT, || {
        let (b, _guard) = defaults("agentroot-site-probe");
        let ex = b.start().unwrap();
        let dir = sh(
            &ex,
            "python3 -c 'import site; print(site.getsitepackages()[0])'",
        );
        let dir = dir.trim().to_string();
        ex.stop().unwrap();
        let tmpfs = serde_json::json!({ "Tmpfs": { dir.clone(): "uid=65534,mode=0755" } });

        let (mut b, _guard1) = defaults("agentroot-site-auto");
        b.host_config_json(tmpfs.clone());
        let ex = b.start().unwrap();
        assert_eq!(ex.strategy(), Strategy::Exec, "no agent on this image");
        assert_eq!(
            py(&ex, &format!("import os; print(os.stat({dir:?}).st_uid)")),
            "65534\n"
        );
        ex.stop().unwrap();

        let (mut b, _guard2) = defaults("agentroot-site-agent");
        b.host_config_json(tmpfs).strategy(Strategy::Agent);
        match b.start() {
            Err(Error::Agent(why)) => {
                assert!(
                    why.contains(&dir) && why.contains("uid 65534"),
                    "names the path and its owner: {why}"
                );
            }
            Ok(ex) => {
                let r = ex.run(&CodeBlock::sh("true"));
                panic!("the agent started: {r:?}");
            }
            Err(e) => panic!("{e}"),
        }
    });
}

/// Issue 21, D6: with `delete_code_files(true)` the agent deleted each code file through a
/// helper that became the block's user, and waited for it without bound; a block that stops
/// everything it can (`kill(-1, SIGSTOP)` in a loop) caught that helper and wedged the agent
/// for good. Failed before the fix with "a block after the stopper: Err(Timeout { what:
/// \"starting a block in the agent\", .. })".
#[test]
fn a_block_that_stops_everything_it_can_does_not_wedge_code_file_deletion() {
    common::watchdog(LIMIT, || {
        let (mut b, _guard) = defaults("agentroot-sigstop");
        b.delete_code_files(true)
            .timeout(Some(Duration::from_secs(4)));
        let ex = b.start().unwrap();
        assert_eq!(ex.strategy(), Strategy::Agent);
        // The deletion works, as the block's user.
        let e = ex.spawn(&CodeBlock::python("print('hi')")).unwrap();
        let file = e.code_file().to_path_buf();
        assert_eq!(e.wait().unwrap().stdout_lossy(), "hi\n");
        assert!(!file.exists(), "{file:?} deleted");

        let stopper = ex
            .spawn(&CodeBlock::python(
                "import os, signal, time\nend = time.time() + 3\nwhile time.time() < end:\n    \
                 try:\n        os.kill(-1, signal.SIGSTOP)\n    except OSError:\n        pass\n",
            ))
            .unwrap();
        let mut others = Vec::new();
        while stopper.try_wait().unwrap().is_none() {
            if let Ok(e) = ex.spawn(&CodeBlock::sh("true")) {
                others.push(e);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(others);
        let t = std::time::Instant::now();
        let probe = ex.spawn(&CodeBlock::sh("echo ok"));
        let out = probe
            .as_ref()
            .map(|p| p.wait_timeout(Duration::from_secs(10)));
        assert!(
            matches!(&out, Ok(Ok(Some(o))) if o.stdout_lossy() == "ok\n"),
            "a block after the stopper: {probe:?} {out:?}"
        );
        assert!(t.elapsed() < Duration::from_secs(15));
        ex.stop().unwrap();
    });
}

const SCAN: &str = r#"
a, b = "@A@", "@B@"
n = 0
with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", 0) as mem:
    for line in maps.read().splitlines():
        f = line.split()
        if not f[1].startswith("r"):
            continue
        lo, hi = (int(x, 16) for x in f[0].split("-"))
        try:
            mem.seek(lo)
            data = mem.read(hi - lo)
        except (OSError, OverflowError):  # gVisor's vsyscall page is readable, above 2**63
            continue
        i = data.find(a.encode())
        while i >= 0:
            if data[i + len(a):i + len(a) + len(b)] == b.encode():
                n += 1
            i = data.find(a.encode(), i + 1)
        data = None
print(n)
"#;

/// Issue 21, D8: a zygote block inherits the agent's memory, in which an earlier block's output
/// lay in freed buffers. The marker is printed as one string but appears in no block's code in
/// one piece. Failed before the fix with "run 0: a later block found the earlier block's output
/// in its memory: [\"0\", \"12\", ...]".
#[test]
fn a_zygote_block_finds_no_earlier_blocks_output_in_its_memory() {
    common::watchdog(LIMIT, || {
        let (b, _guard) = defaults("agentroot-scrub");
        let ex = b.start().unwrap();
        assert_eq!(ex.strategy(), Strategy::Agent);
        for run in 0..5 {
            let a = format!("{:016x}", rand_u64());
            let b = format!("{:016x}", rand_u64());
            let print = format!(
                "a, b = {a:?}, {b:?}\nimport sys\nfor _ in range(6400):\n    sys.stdout.write(a + b)\n"
            );
            let out = ex.run(&CodeBlock::python(print)).unwrap();
            common::assert_success(&out);
            assert_eq!(out.stdout.len(), 6400 * 32);
            // The spares forked before the print have nothing to find; later ones would.
            let found: Vec<String> = (0..3)
                .map(|_| {
                    py(&ex, &SCAN.replace("@A@", &a).replace("@B@", &b))
                        .trim()
                        .to_string()
                })
                .collect();
            assert!(
                found.iter().all(|n| n == "0"),
                "run {run}: a later block found the earlier block's output in its memory: {found:?}"
            );
        }
        ex.stop().unwrap();
    });
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

/// The exec strategy's own root execs (the kill, the OOM probe) ran `sh` looked up on the
/// container's `PATH`, and their scripts' commands too: with a user-set
/// `PATH=/workspace:/usr/bin:/bin`, a block's planted `sh` ran as root at the next cancel.
/// Failed before the fix with "after a cancel: planted code ran as root: [\"pwned-sh-0\"]".
#[test]
fn a_user_set_path_never_makes_the_exec_paths_kill_run_a_planted_sh() {
    common::watchdog(LIMIT, || {
        let (mut b, _guard) = defaults("agentroot-exec-path");
        b.env("PATH", "/workspace:/usr/bin:/bin")
            .strategy(Strategy::Exec);
        let ex = b.start().unwrap();
        sh(
            &ex,
            "for p in sh rm cat sleep kill; do \
               printf '#!/bin/sh\\ntouch /tmp/pwned-%s-$(id -u)\\nexec /bin/%s \"$@\"\\n' $p $p \
                 > /workspace/$p; chmod 755 /workspace/$p; done",
        );
        let e = ex.spawn(&CodeBlock::sh("echo up; /bin/sleep 100")).unwrap();
        common::await_stdout(&e.chunks(), "up", Duration::from_secs(20));
        e.cancel().unwrap();
        let _ = e.wait();
        let out = ex.run(&CodeBlock::sh("exit 137")).unwrap();
        assert_eq!(out.status.code(), Some(137), "{out:?}");
        assert_no_root_marker(&ex, "after a cancel");
        ex.stop().unwrap();
    });
}

/// The agent starts without the PYTHON* variables CPython does not read (the official images'
/// PYTHON_VERSION, PYTHON_SHA256), which must not send every Python block to a fresh
/// interpreter; the blocks still see them. A zygote block has the agent's frozen heap.
#[test]
fn python_variables_that_configure_nothing_keep_the_zygote() {
    common::watchdog(LIMIT, || {
        let (mut b, _guard) = defaults("agentroot-pyversion");
        b.env("PYTHON_VERSION", "3.11.2")
            .env("PYTHONDONTWRITEBYTECODE", "1");
        let ex = b.start().unwrap();
        assert_eq!(ex.strategy(), Strategy::Agent);
        let out = py(
            &ex,
            "import gc, os, sys\nprint(gc.get_freeze_count() > 0, os.environ['PYTHON_VERSION'], \
             sys.flags.dont_write_bytecode)",
        );
        assert_eq!(
            out, "True 3.11.2 1\n",
            "a zygote block that sees the container's env"
        );
        ex.stop().unwrap();
    });
}

/// Issue 20 §6: the agent's source comes on its exec's stdin and the container's environment in
/// a memfd, both closed by the agent before it forks anything: the running agent holds no memfd
/// (a block it forks could otherwise read them), its argv is small, and the container's
/// environment is in none of it, yet every block sees that environment.
#[test]
fn the_agent_keeps_no_fd_of_its_source_and_no_environment_in_argv() {
    common::watchdog(LIMIT, || {
        let (mut b, _guard) = defaults("agentroot-memfd");
        b.env("DOCKEXEC_ARGV_MARK", "mark-6f1d2a");
        let ex = b.start().unwrap();
        assert_eq!(ex.strategy(), Strategy::Agent);
        assert_eq!(
            py(&ex, "import os; print(os.environ['DOCKEXEC_ARGV_MARK'])"),
            "mark-6f1d2a\n"
        );
        let pid = agent_pid(&ex);
        let (ok, fds) = common::docker(&[
            "exec",
            "-u",
            "0",
            ex.container_id(),
            "/bin/sh",
            "-c",
            &format!("for f in /proc/{pid}/fd/*; do readlink \"$f\"; done"),
        ]);
        assert!(ok, "cannot list the agent's fds");
        assert!(
            !fds.contains("memfd"),
            "the agent still holds a memfd:\n{fds}"
        );
        let (ok, cmdline) = common::docker(&[
            "exec",
            "-u",
            "0",
            ex.container_id(),
            "/bin/sh",
            "-c",
            &format!("tr '\\000' ' ' < /proc/{pid}/cmdline"),
        ]);
        assert!(ok, "cannot read the agent's command line");
        assert!(
            cmdline.len() < 16 * 1024 && !cmdline.contains("mark-6f1d2a"),
            "the agent's argv ({} bytes): {cmdline:.200}",
            cmdline.len()
        );
        ex.stop().unwrap();
    });
}
