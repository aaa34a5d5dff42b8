//! An engine that does not share this host's filesystem (issue 16, item 4): the workspace
//! lives in the container, nothing of this host is mounted, code reaches the container over
//! the exec's stdin (exec strategy) or the agent's channel, and `put_file`/`get_file` work.
//!
//! Run here against the local daemon said not to share the filesystem
//! ([`common::local_engine_without_shared_fs`]); every test takes its engine from [`engine`],
//! so the same module runs against a real TLS or SSH engine: with
//! `DOCKEXEC_TEST_NOFS_ENGINE=env` the engine is [`Engine::from_env`], and the same
//! environment (`DOCKER_HOST`, `DOCKER_TLS_VERIFY`, `DOCKER_CERT_PATH`; for `ssh://`, an
//! `ssh` on `PATH` that knows the host) points the docker CLI the checks use at it too.
use crate::common;

use std::path::Path;
use std::time::Duration;

use dockexec::{CodeBlock, Engine, Error, Executor, Strategy};
use serde_json::Value;

/// The engine these tests run on: see the module docs.
fn engine() -> Engine {
    match std::env::var("DOCKEXEC_TEST_NOFS_ENGINE").as_deref() {
        Ok("env") => {
            let e = Engine::from_env().expect("DOCKEXEC_TEST_NOFS_ENGINE=env: the engine");
            assert!(
                !e.host_filesystem_shared(),
                "{} shares this host's files",
                e.endpoint()
            );
            e
        }
        _ => common::local_engine_without_shared_fs(),
    }
}

fn start(case: &str) -> (Executor, common::CaseGuard) {
    let (b, guard) = common::engine_case_builder(case, engine());
    (
        b.start()
            .expect("start on an engine without a shared filesystem"),
        guard,
    )
}

fn inspect(id: &str) -> Value {
    let (ok, out) = common::docker(&["container", "inspect", id]);
    assert!(ok, "docker inspect {id}: {out}");
    serde_json::from_str::<Value>(&out).unwrap()[0].clone()
}

/// No host directory: `work_dir()` says so, and none named after the executor exists in the
/// host's temp dir (where a temporary work dir `dockexec-<id>` would be).
fn assert_no_host_dir(ex: &Executor) {
    assert_eq!(ex.work_dir(), None);
    let tmp = std::env::temp_dir();
    for name in [
        format!("dockexec-{}", ex.id()),
        format!("dockexec-{}.new", ex.id()),
    ] {
        assert!(!tmp.join(&name).exists(), "{name} made on the host");
    }
}

#[test]
fn python_and_sh_blocks_run_with_the_workspace_in_the_container() {
    let (ex, _guard) = start("nofs-hello");
    assert_no_host_dir(&ex);
    let out = ex.run(&CodeBlock::python("print('hello')")).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"hello\n");
    let file = out.code_file.expect("kept");
    assert!(file.starts_with("/workspace/"), "{}", file.display());
    assert_eq!(
        ex.get_file(file.to_str().unwrap()).unwrap(),
        b"print('hello')"
    );
    // The workspace is a tmpfs, the block user's and closed to others, and blocks run there.
    let out = ex
        .run(&CodeBlock::sh(
            "echo hi; pwd; stat -c '%a %u' /workspace; id -u; \
             grep ' /workspace ' /proc/mounts | cut -d' ' -f3",
        ))
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[..2], ["hi", "/workspace"], "{text}");
    assert_eq!(lines[2], format!("711 {}", lines[3]), "{text}");
    assert_eq!(lines[4], "tmpfs", "{text}");
    // A block's stdin is at EOF, as with a host workspace (the code came on the exec's).
    let out = ex
        .run(&CodeBlock::python(
            "import sys\nprint(repr(sys.stdin.read()))",
        ))
        .unwrap();
    assert_eq!(out.stdout, b"''\n", "{out:?}");
    assert_no_host_dir(&ex);
    ex.stop().unwrap();
}

/// The exec path on an image with nothing but busybox: its `sh`, `head`, `mv` write the code.
#[test]
fn busybox_blocks_run_with_the_workspace_in_the_container() {
    let (mut b, _guard) = common::engine_case_builder("nofs-busybox", engine());
    let ex = b
        .image(common::busybox())
        .strategy(Strategy::Auto)
        .start()
        .unwrap();
    assert_eq!(ex.strategy(), Strategy::Exec);
    let out = ex
        .run(&CodeBlock::sh("# filename: a/b/x.sh\necho \"$0\"; echo ok"))
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"/workspace/a/b/x.sh\nok\n");
    assert_eq!(
        out.code_file.as_deref(),
        Some(Path::new("/workspace/a/b/x.sh"))
    );
    ex.stop().unwrap();
}

#[test]
fn a_later_block_reads_what_an_earlier_one_wrote() {
    let (ex, _guard) = start("nofs-blocks");
    let res = ex
        .execute(&[
            CodeBlock::python("open('data.txt', 'w').write('from block one\\n')"),
            CodeBlock::sh("# filename: sub/dir/read.sh\ncat /workspace/data.txt"),
        ])
        .unwrap();
    assert_eq!(res.outputs.len(), 2);
    assert!(res.outputs[1].status.success(), "{:?}", res.outputs[1]);
    assert_eq!(res.outputs[1].stdout, b"from block one\n");
    assert_eq!(
        res.outputs[1].code_file.as_deref(),
        Some(Path::new("/workspace/sub/dir/read.sh"))
    );
}

#[test]
fn put_file_and_get_file_round_trip() {
    let (ex, _guard) = start("nofs-files");
    let data: Vec<u8> = (0..=255u8).chain(*b"\n").collect();
    ex.put_file("in.bin", &data).unwrap();
    let out = ex
        .run(&CodeBlock::python(
            "d = open('in.bin', 'rb').read()\n\
             open('/workspace/out.bin', 'wb').write(d[::-1])\n\
             print(len(d))",
        ))
        .unwrap();
    assert_eq!(out.stdout, b"257\n", "{out:?}");
    let back = ex.get_file("/workspace/out.bin").unwrap();
    assert_eq!(back, data.iter().rev().copied().collect::<Vec<u8>>());
    assert_eq!(ex.get_file("in.bin").unwrap(), data);
    assert!(matches!(
        ex.get_file("missing.txt"),
        Err(Error::Docker { status: 404, .. })
    ));
}

#[test]
fn restart_keeps_the_workspace_files() {
    let (mut b, _guard) = common::engine_case_builder("nofs-restart", engine());
    // The init command runs in the in-container workspace too.
    let ex = b.init_command("echo init > init.txt").start().unwrap();
    assert_eq!(ex.get_file("init.txt").unwrap(), b"init\n");
    ex.put_file("put.txt", b"put\n").unwrap();
    let out = ex
        .run(&CodeBlock::sh(
            "echo made > made.txt; echo tmp > /tmp/t.txt",
        ))
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    ex.restart().unwrap();
    let out = ex
        .run(&CodeBlock::sh("cat put.txt made.txt; ls /tmp"))
        .unwrap();
    assert_eq!(out.stdout, b"put\nmade\n", "{out:?}");
    assert_eq!(ex.get_file("made.txt").unwrap(), b"made\n");
}

/// Nothing of this host is mounted: no bind at all, the workspace is an anonymous tmpfs
/// volume of the engine's, sized, and it goes with the container.
#[test]
fn the_container_has_no_bind_mount_and_its_volume_goes_with_it() {
    let (ex, _guard) = start("nofs-mounts");
    let info = inspect(ex.container_id());
    assert!(
        info["HostConfig"]["Binds"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{}",
        info["HostConfig"]["Binds"]
    );
    let mounts = info["Mounts"].as_array().unwrap();
    assert!(
        mounts.iter().all(|m| m["Type"] != "bind"),
        "a bind mount: {mounts:?}"
    );
    let ws: Vec<&Value> = mounts
        .iter()
        .filter(|m| m["Destination"] == "/workspace")
        .collect();
    assert_eq!(ws.len(), 1, "{mounts:?}");
    assert_eq!(ws[0]["Type"], "volume");
    let volume = ws[0]["Name"].as_str().unwrap().to_string();
    let asked = &info["HostConfig"]["Mounts"][0];
    assert_eq!(asked["Target"], "/workspace", "{asked}");
    let options = &asked["VolumeOptions"]["DriverConfig"]["Options"];
    assert_eq!(options["type"], "tmpfs", "{asked}");
    let o = options["o"].as_str().unwrap();
    assert!(o.contains("size=") && o.contains("nosuid"), "{o}");
    // Labelled with its executor, which is how gc finds one left behind.
    let (ok, labels) = common::docker(&[
        "volume",
        "inspect",
        "-f",
        "{{index .Labels \"dockexec.executor\"}}",
        &volume,
    ]);
    assert!(ok && labels == ex.id(), "{labels}");
    assert_no_host_dir(&ex);
    ex.stop().unwrap();
    assert!(
        !common::docker(&["volume", "inspect", &volume]).0,
        "the workspace volume {volume} outlived its container"
    );
}

#[test]
fn a_host_work_dir_or_bind_dir_is_refused() {
    let dir = common::TempDir::new("nofs-workdir");
    for bind in [false, true] {
        let (mut b, guard) = common::engine_case_builder("nofs-refused", engine());
        if bind {
            b.bind_dir(dir.path());
        } else {
            b.work_dir(dir.path());
        }
        match b.start() {
            Err(Error::InvalidInput(msg)) => {
                let what = if bind { "bind_dir" } else { "work_dir" };
                assert!(msg.starts_with(what), "{msg}");
                assert!(msg.contains("does not see this host's files"), "{msg}");
                assert!(msg.contains("put_file/get_file"), "{msg}");
            }
            other => panic!("started with a host dir on a remote engine: {other:?}"),
        }
        assert!(guard.containers().is_empty(), "a container was made");
    }
}

/// Issue 21's lesson: no root process writes the code into the block-writable workspace. A
/// link a block planted at the code file's name is replaced, not written through (the
/// root-owned file it points at keeps its bytes), and a link planted as a directory on the
/// way, to a directory only root may write, gets nothing written there. (A root writer, such
/// as the daemon's archive API, writes there: seen failing with one in the exec runner.)
#[test]
fn a_planted_link_leads_the_code_write_nowhere_the_block_cannot_write() {
    let (ex, _guard) = start("nofs-planted");
    let id = ex.container_id();
    // Root's, through the archive API and as root: the block user can write neither.
    ex.put_file("root_owned.txt", b"root's\n").unwrap();
    // A directory of root's inside the workspace, by `docker cp` (which makes it root's), as
    // the archive API would reach it.
    let host = common::TempDir::new("nofs-rootdir");
    let made = host.path().join("rootdir");
    std::fs::create_dir(&made).unwrap();
    std::fs::set_permissions(&made, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (ok, out) = common::docker(&["cp", made.to_str().unwrap(), &format!("{id}:/workspace/")]);
    assert!(ok, "{out}");
    let plant = ex
        .run(&CodeBlock::sh(
            "ln -s /workspace/root_owned.txt victim.py\n\
             ln -s /workspace/rootdir linkdir\n\
             stat -c %U root_owned.txt rootdir; touch rootdir/y",
        ))
        .unwrap();
    assert_eq!(plant.stdout, b"root\nroot\n", "{plant:?}");
    assert!(
        !plant.status.success(),
        "the block wrote root's dir: {plant:?}"
    );
    let out = ex
        .run(&CodeBlock::python("# filename: victim.py\nprint('ran')"))
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"ran\n");
    assert_eq!(ex.get_file("root_owned.txt").unwrap(), b"root's\n");
    let now = ex
        .run(&CodeBlock::sh("[ -L victim.py ] && echo link || echo file"))
        .unwrap();
    assert_eq!(now.stdout, b"file\n", "{now:?}");
    // Through the planted directory link: nothing lands in root's directory.
    match ex.run(&CodeBlock::python("# filename: linkdir/x.py\nprint('ran')")) {
        Err(e) => assert!(!e.to_string().is_empty()),
        Ok(out) => {
            assert!(!out.status.success(), "{out:?}");
            assert_ne!(out.stdout, b"ran\n");
        }
    }
    let (ok, left) = common::docker(&["exec", "-u", "0", id, "ls", "-A", "/workspace/rootdir"]);
    assert!(ok && left.is_empty(), "written in root's dir: {left:?}");
    // The exec path refuses a directory link out of /workspace outright, as with a host
    // workspace (the agent follows it as the block's user, who may write there anyway).
    if ex.strategy() == Strategy::Exec {
        let plant = ex
            .run(&CodeBlock::sh("mkdir /tmp/out && ln -s /tmp/out outlink"))
            .unwrap();
        assert!(plant.status.success(), "{plant:?}");
        let out = ex
            .run(&CodeBlock::sh(
                "# filename: outlink/x.sh
echo ran",
            ))
            .unwrap();
        assert_eq!(out.status.code(), Some(126), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("link out of /workspace"), "{stderr}");
        let left = ex.run(&CodeBlock::sh("ls -A /tmp/out")).unwrap();
        assert_eq!(left.stdout, b"", "{left:?}");
    }
}

/// A large code file arrives whole over the exec's stdin (or the agent's channel), and one the
/// writer refuses (its directory a planted link) fails as the block's, whatever its size.
#[test]
fn a_large_code_file_arrives_whole() {
    let (mut b, _guard) = common::engine_case_builder("nofs-large", engine());
    // Shorter than the api_timeout: a write that stalls shows as a timeout.
    let ex = b.timeout(Some(Duration::from_secs(20))).start().unwrap();
    let filler = "# ".to_string() + &"x".repeat(1 << 20) + "\n";
    let code = format!("{filler}import os\nprint(os.path.getsize(__file__))");
    let out = ex.run(&CodeBlock::python(code.clone())).unwrap();
    assert_eq!(
        out.stdout,
        format!("{}\n", code.len()).into_bytes(),
        "{:?}",
        out.stderr
    );
    let plant = ex.run(&CodeBlock::sh("ln -s /dev/null/x linkdir")).unwrap();
    assert!(plant.status.success(), "{plant:?}");
    // The exec path's writer reads all the code even when it refuses it: unread, it once kept
    // the exec's stream open until the block timed out (seen: `end: TimedOut` after 60 s).
    let refused = format!("# filename: linkdir/big.py\n{code}");
    match ex.run(&CodeBlock::python(refused)) {
        Err(e) => assert!(ex.strategy() == Strategy::Agent, "{e}"),
        Ok(out) => {
            assert!(!out.status.success() && !out.status.timed_out(), "{out:?}");
            assert!(out.stdout.is_empty(), "{out:?}");
            if ex.strategy() == Strategy::Exec {
                assert_eq!(out.status.code(), Some(126), "{out:?}");
            }
        }
    }
    let out = ex.run(&CodeBlock::sh("echo still")).unwrap();
    assert_eq!(out.stdout, b"still\n");
    // And a large output comes back whole on the exec's hijacked connection.
    let out = ex
        .run(&CodeBlock::python(
            "import sys\nsys.stdout.write('y' * (2 << 20))",
        ))
        .unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    assert_eq!(out.stdout.len(), 2 << 20);
}

/// A workspace too small for the code fails that block (the exec path's writer sees a short
/// file and says so), not the executor.
#[test]
fn a_full_workspace_fails_the_block_not_the_executor() {
    let (mut b, _guard) = common::engine_case_builder("nofs-full", engine());
    let ex = b
        .workspace_size(Some(256 << 10))
        .timeout(Some(Duration::from_secs(20)))
        .start()
        .unwrap();
    let code = format!("# {}\nprint('ran')", "x".repeat(1 << 20));
    match ex.run(&CodeBlock::python(code)) {
        Err(e) => assert!(ex.strategy() == Strategy::Agent, "{e}"),
        Ok(out) => {
            assert!(!out.status.success() && !out.status.timed_out(), "{out:?}");
            assert!(out.stdout.is_empty(), "{out:?}");
            if ex.strategy() == Strategy::Exec {
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(stderr.contains("workspace is full"), "{stderr}");
            }
        }
    }
    let out = ex
        .run(&CodeBlock::sh("echo next; ls -A | grep -v '[.]sh$'"))
        .unwrap();
    assert_eq!(
        out.stdout, b"next\n",
        "nothing half-written is left: {out:?}"
    );
}

#[test]
fn deleted_code_files_go_and_a_timeout_still_kills() {
    let (mut b, _guard) = common::engine_case_builder("nofs-delete", engine());
    let ex = b
        .delete_code_files(true)
        .timeout(Some(Duration::from_secs(2)))
        .start()
        .unwrap();
    let out = ex
        .run(&CodeBlock::sh("# filename: gone.sh\necho here"))
        .unwrap();
    assert_eq!(out.stdout, b"here\n", "{out:?}");
    assert_eq!(out.code_file, None);
    assert!(matches!(
        ex.get_file("gone.sh"),
        Err(Error::Docker { status: 404, .. })
    ));
    let out = ex.run(&CodeBlock::sh("sleep 30; echo never")).unwrap();
    assert!(out.status.timed_out(), "{out:?}");
    let left = common::processes_matching(ex.container_id(), "sleep 30");
    assert!(left.is_empty(), "{left:?}");
}

/// A user only the image can name has no uid to give the tmpfs: the workspace is `1777`, like
/// `/tmp`, and blocks run there all the same.
#[test]
fn a_named_block_user_gets_a_sticky_workspace() {
    let (mut b, _guard) = common::engine_case_builder("nofs-named", engine());
    let ex = b.user("nobody").start().unwrap();
    let out = ex
        .run(&CodeBlock::sh(
            "# filename: d/x.sh\nid -un; stat -c %a /workspace",
        ))
        .unwrap();
    assert_eq!(out.stdout, b"nobody\n1777\n", "{out:?}");
    if ex.strategy() == Strategy::Agent {
        let session = ex.session().unwrap();
        session.run("x = 41").unwrap();
        assert_eq!(session.run("print(x + 1)").unwrap().stdout, b"42\n");
    }
}

/// A container that dies (its keeper ends it when the owner goes) takes its workspace volume
/// with it: `AutoRemove` removes anonymous volumes.
#[test]
fn a_dead_containers_workspace_volume_goes_with_it() {
    let (ex, _guard) = start("nofs-dies");
    let info = inspect(ex.container_id());
    let volume = info["Mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["Destination"] == "/workspace")
        .and_then(|m| m["Name"].as_str())
        .unwrap()
        .to_string();
    let (ok, out) = common::docker(&["kill", ex.container_id()]);
    assert!(ok, "{out}");
    assert!(
        common::eventually(Duration::from_secs(10), || {
            !common::docker(&["volume", "inspect", &volume]).0
        }),
        "the workspace volume {volume} outlived its container"
    );
}

/// Removes a volume on drop, should the test fail before gc does.
struct VolumeGuard(String);

impl Drop for VolumeGuard {
    fn drop(&mut self) {
        let _ = common::docker(&["volume", "rm", "-f", &self.0]);
    }
}

/// gc removes a workspace volume no container uses (its container was removed from outside
/// without `-v`), and leaves a live executor's.
#[test]
fn gc_removes_orphaned_workspace_volumes_only() {
    let (ex, guard) = start("nofs-gc");
    let label = format!("dockexec.executor={}", common::unique_name("nofs-gc"));
    let (ok, name) = common::docker(&["volume", "create", "--label", &label]);
    assert!(ok, "{name}");
    let _volume = VolumeGuard(name.clone());
    // Scoped to this case's containers, so that no other test's orphans go; volumes no
    // container uses go whatever the labels.
    let mut options = dockexec::GcOptions::default();
    options.engine = Some(engine());
    options.labels = vec![format!("{}={}", common::CASE_LABEL, guard.value)];
    dockexec::gc_with(&options).unwrap();
    assert!(
        !common::docker(&["volume", "inspect", &name]).0,
        "the orphaned volume {name} stayed"
    );
    ex.put_file("still.txt", b"here\n").unwrap();
    assert_eq!(ex.get_file("still.txt").unwrap(), b"here\n");
    let out = ex.run(&CodeBlock::sh("cat still.txt")).unwrap();
    assert_eq!(out.stdout, b"here\n");
}
