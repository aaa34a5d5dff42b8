//! The gVisor lane (issue 22): scripts/test.sh runs the contract suite's core and the
//! sandbox tests with `DOCKEXEC_TEST_RUNTIME=runsc`, which [`builder`](super::builder) turns
//! into `.runtime("runsc")`.
//!
//! What cannot hold under runsc is listed here, once, with the reason: [`Differs`]. A test
//! whose check cannot hold there calls [`differs_here`], which prints the reason and tells it
//! to skip that check (never silently); the README's sandbox section says the same for users.

/// The OCI runtime the suite runs under, from `DOCKEXEC_TEST_RUNTIME` (`None`: the daemon's
/// default).
pub fn test_runtime() -> Option<String> {
    std::env::var("DOCKEXEC_TEST_RUNTIME")
        .ok()
        .filter(|r| !r.is_empty())
}

/// True when the suite runs under gVisor.
pub fn under_gvisor() -> bool {
    test_runtime().as_deref() == Some("runsc")
}

/// A check that cannot hold under gVisor, and why. Each is stated here and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Differs {
    /// Reading a default from inside: gVisor's `/proc/self/status` has no `NoNewPrivs` line.
    NoNewPrivsLine,
    /// Reading a limit from inside: gVisor mounts no cgroup files (`pids.max`,
    /// `memory.max`); the limits apply to the sandbox on the host.
    CgroupFiles,
    /// The handle syscalls fail with `EOPNOTSUPP` (95), gVisor's own answer, before
    /// dockexec's seccomp profile (which runsc does not load into its kernel) could say
    /// `EPERM`; and a new user namespace is gVisor's, never the host kernel's.
    HandleSyscallErrno,
    /// Debian's runsc (0.0~20221219) returns a short count for a write of more than 64 KiB to
    /// a `docker exec`'s stdout pipe, and CPython's unbuffered stdout (`PYTHONUNBUFFERED`,
    /// which dockexec sets) drops the rest: a python block of the exec strategy loses output
    /// past 64 KiB per write. The agent strategy (the default for python images) is whole.
    ShortExecPipeWrites,
    /// A `docker exec`'s stdout and stderr are two pipes that runsc's shim copies on their
    /// own: writes alternating between them close together may arrive merged, out of order.
    ExecStreamOrder,
    /// Debian's runsc has no `PR_SET_CHILD_SUBREAPER`/`PR_GET_CHILD_SUBREAPER` (`EINVAL`): the
    /// agent says so in `agent_warnings()` and kills a block's tree by its session, process
    /// group and parent links, so a process that double-forks out of a session block's tree
    /// can escape its cancel. The exec strategy's kill (and the keeper's) does not need it.
    NoSubreaper,
    /// gVisor's `/proc/PID/stat` gives no argv addresses (fields 48/49), so the zygote cannot
    /// rewrite a block's command line: `/proc/PID/cmdline` of a zygote block reads as the
    /// agent's, and `ps`/`pkill -f` cannot find it by its script's name.
    ZygoteCmdline,
    /// The memory and pids limits apply to the whole sandbox on the host (gVisor's kernel and
    /// its gofer with the blocks): a hog or a fork bomb that reaches them ends the sandbox,
    /// so the container ends (the block `lost`, later calls `ContainerGone`), not only the
    /// block; the host and other executors are untouched (gvisor::a_fork_bomb_... checks it).
    /// A block lost that way says `oom-killed` (Docker's `OOMKilled` of the container) when
    /// Docker still has the record: the container's AutoRemove may take it first.
    /// Under the ptrace platform every guest process costs the sandbox host processes and
    /// threads: the default 1024 was met with about a hundred block processes (runsc's log:
    /// "panic: error initializing first thread: resource temporarily unavailable").
    LimitsEndTheSandbox,
    /// gVisor refuses a non-root write to the read-only root with `EACCES` ("Permission
    /// denied") rather than `EROFS`: still not writable.
    ReadOnlyRootErrno,
    /// A file `put_file` writes into the container's own filesystem (not `/workspace`, not a
    /// volume) after start is not seen by the blocks: runsc fixes its view of the root
    /// filesystem when the sandbox starts (`docker cp` into it is invisible the same way).
    /// `get_file` of it, and `put_file` into `/workspace`, work.
    PutFileIntoRootfs,
    /// The socket-buffer hog of tests/oom.rs (ten interpreters queueing 400 MiB each in unix
    /// socket buffers) is not killed as a block under gVisor: gVisor's kernel keeps socket
    /// buffers in its own memory, which the sandbox's `/proc/meminfo` does not show and the
    /// host charges to the whole sandbox. Run to run on this machine: the hog runs to its
    /// timeout and the sandbox lives on (the agent too: what those tests are for), or stays at
    /// its memory limit so the agent no longer answers in time (`Error::Timeout`); or the
    /// host's OOM killer ends the sandbox, at once or after the timeout (the block `lost`,
    /// later calls `ContainerGone`). In each case the hog stays inside: `stop()` removes the container and
    /// a fresh executor runs.
    SocketHogNotKilled,
}

impl Differs {
    /// Why, in words.
    pub fn reason(self) -> &'static str {
        match self {
            Differs::NoNewPrivsLine => {
                "gVisor's /proc/self/status has no NoNewPrivs line (the flag is still set; \
                 sandbox::setuid_gives_nothing checks what it does)"
            }
            Differs::CgroupFiles => {
                "gVisor mounts no cgroup files (pids.max, memory.max) in the container; the \
                 limits apply to the sandbox on the host (limits:: checks what they do)"
            }
            Differs::HandleSyscallErrno => {
                "gVisor's kernel answers name_to_handle_at/open_by_handle_at with EOPNOTSUPP \
                 (runsc does not load the OCI seccomp profile), and lets a block make a user \
                 namespace of its own kernel"
            }
            Differs::ShortExecPipeWrites => {
                "Debian's runsc returns a short count for writes over 64 KiB to a docker \
                 exec's stdout, and CPython's unbuffered stdout drops the rest (exec strategy \
                 only; the agent's output is whole)"
            }
            Differs::NoSubreaper => {
                "Debian's runsc has no PR_SET_CHILD_SUBREAPER: with the agent, a process that \
                 double-forks out of a session block's tree can escape its cancel (the agent \
                 says so in agent_warnings(); the exec strategy's kill does not need it)"
            }
            Differs::ZygoteCmdline => {
                "gVisor's /proc/PID/stat gives no argv addresses, so a zygote block's \
                 /proc/PID/cmdline reads as the agent's (ps/pkill -f cannot find it by name)"
            }
            Differs::LimitsEndTheSandbox => {
                "the memory and pids limits apply to the whole gVisor sandbox (under ptrace each \
                 guest process costs host threads): reaching them ends the container (the block \
                 lost, then ContainerGone), not only the block"
            }
            Differs::ReadOnlyRootErrno => {
                "gVisor refuses a non-root write to the read-only root with EACCES, not EROFS"
            }
            Differs::PutFileIntoRootfs => {
                "runsc fixes its view of the container's root filesystem at start: a file \
                 put_file (or docker cp) writes there later is not seen by the blocks \
                 (/workspace and volumes are)"
            }
            Differs::SocketHogNotKilled => {
                "gVisor's kernel keeps socket buffers in its own memory, charged to the whole \
                 sandbox: the socket-buffer hog is not killed as a block; the sandbox lives on \
                 past its timeout, stays wedged at its limit (Timeout), or is OOM-killed \
                 (lost, then ContainerGone)"
            }
            Differs::ExecStreamOrder => {
                "runsc's shim copies a docker exec's stdout and stderr pipes on their own, so \
                 writes alternating between them may arrive merged out of order (exec only)"
            }
        }
    }
}

/// True when the suite runs the exec strategy (the lane's `DOCKEXEC_TEST_STRATEGY=exec`).
pub fn exec_strategy() -> bool {
    super::strategy() == dockexec::Strategy::Exec
}

/// The pids limit a test that starts about a hundred processes needs: under gVisor's ptrace
/// platform those cost the sandbox several host tasks each (see
/// [`Differs::LimitsEndTheSandbox`]); `None`: the default.
pub fn pids_for_a_hundred_processes(test: &str) -> Option<i64> {
    differs_here(test, Differs::LimitsEndTheSandbox).then_some(8192)
}

/// Whether `what` applies to this run: under gVisor, prints `SKIP (gVisor): <test>: <reason>`
/// and returns true, so the caller skips that check.
pub fn differs_here(test: &str, what: Differs) -> bool {
    if !under_gvisor() {
        return false;
    }
    eprintln!("SKIP (gVisor): {test}: {}", what.reason());
    true
}
