# ==== src/runner/agent/shepherd.py (agent.rs joins these files into one script, in
# order.txt's order)
# libc (prctl), /proc and the cgroup's memory, the kill passes over a block's tree; the shepherd
# and the block, spare and session processes it forks.

# ------------------------------------------------------------------------- libc, /proc, cgroups

_LIBC = None
_SUBREAPER = False
_WARNINGS = []
if _ctypes is not None:
    try:
        _LIBC = _ctypes.CDLL(None, use_errno=True)
        _probe = _ctypes.c_int(0)
        if _LIBC.prctl(PR_GET_CHILD_SUBREAPER, _ctypes.byref(_probe), 0, 0, 0) == 0:
            _SUBREAPER = True
        else:
            _WARNINGS.append("prctl(PR_GET_CHILD_SUBREAPER) failed (%s): a process that double-forks "
                             "out of a block's tree can escape cancel" % os.strerror(_ctypes.get_errno()))
    except (OSError, AttributeError) as e:
        _LIBC = None
        _WARNINGS.append("libc is not loadable through ctypes (%s)" % e)
if _ctypes is None:
    _WARNINGS.append("ctypes is missing: a process that double-forks out of a block's tree can escape "
                     "cancel (cancel falls back to the block's session and process group plus the "
                     "parent links); zygote blocks run as another user stay non-dumpable")
if os.geteuid() != 0:
    _WARNINGS.append("the agent is not root: blocks cannot switch users, and a block running as the "
                     "agent's own user can signal the agent and its shepherds")


def _prctl(option, arg):
    if _LIBC is None:
        return False
    return _LIBC.prctl(option, arg, 0, 0, 0) == 0


def _read_to_end(fd):
    """Every byte until EOF of a blocking descriptor; OSError propagates."""
    parts = []
    while True:
        b = os.read(fd, 65536)
        if not b:
            return b"".join(parts)
        parts.append(b)


def _read_small(path):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return _read_to_end(fd)
    except OSError:
        return None
    finally:
        os.close(fd)


def _oom_count():
    for path in ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"):
        data = _read_small(path)
        if data is None:
            continue
        for line in data.split(b"\n"):
            if line.startswith(b"oom_kill "):
                try:
                    return int(line.split()[1])
                except (ValueError, IndexError):
                    return None
    return None


def _write_small(path, data):
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError:
        return False
    try:
        return os.write(fd, data) == len(data)
    except OSError:
        return False
    finally:
        os.close(fd)


def _mem_files():
    """(usage, limit) file paths of the container's memory cgroup (v2, else v1), or None when it
    has no limit there to protect: the memory check is off."""
    for usage, limit in (("/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory.max"),
                         ("/sys/fs/cgroup/memory/memory.usage_in_bytes",
                          "/sys/fs/cgroup/memory/memory.limit_in_bytes")):
        lim = _read_small(limit)
        if lim is None:
            continue
        lim = lim.strip()
        # v2 says "max"; v1 says a page-rounded LONG_MAX when there is no limit.
        if not lim.isdigit() or int(lim) >= 1 << 62 or _read_small(usage) is None:
            return None
        return usage, int(lim)
    return None


def _proc_table():
    """pid -> (state, ppid, pgrp, session) for every process visible in /proc."""
    table = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return table
    for name in names:
        if not name.isdigit():
            continue
        data = _read_small("/proc/%s/stat" % name)
        if not data:
            continue
        f = data[data.rfind(b")") + 2:].split()  # comm may hold anything, even ')'
        try:
            table[int(name)] = (f[0], int(f[1]), int(f[2]), int(f[3]))
        except (ValueError, IndexError):
            continue
    return table


def _tree(table, roots, sids):
    """Every process below `roots` by parent links, plus (the fallback without a subreaper) every
    process in one of the sessions `sids` and everything below those. Roots themselves excluded."""
    children = {}
    for pid, (_, ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    seen = set()
    todo = [c for r in roots for c in children.get(r, ())]
    if sids:
        todo += [p for p, v in table.items() if v[3] in sids or v[2] in sids]
    roots = set(roots)
    while todo:
        p = todo.pop()
        if p in seen or p in roots:
            continue
        seen.add(p)
        todo.extend(children.get(p, ()))
    return seen


def _signal_pass(table, pids, sig, sent, me):
    """One pass of a freeze-then-kill (see _kill_trees and _sess_kill_block): `sig` to each of `pids`
    that still needs it (not this process, not a zombie, not one already stopped for SIGSTOP, not one
    in D that has it pending already); returns how many were signalled."""
    hit = 0
    for pid in pids:
        state = table[pid][0]
        if pid == me or state == b"Z" or state == b"X":
            continue
        if sig == signal.SIGSTOP and state in (b"T", b"t"):
            continue
        if state == b"D" and pid in sent:
            continue
        try:
            os.kill(pid, sig)
            sent.add(pid)
            hit += 1
        except OSError:
            pass
    return hit


def _kill_trees(roots, sids=()):
    """Freeze, then kill, every descendant of the shepherds `roots`: SIGSTOP pass after pass until a
    pass finds nothing still running (no shell runs its next line while its child dies, no fork
    escapes between passes), then SIGKILL pass after pass until a pass finds nothing alive. Zombies
    are skipped: the shepherd (a subreaper) reaps them. The shepherds themselves are left alone.
    A process in uninterruptible sleep (D) that already has the signal pending counts as done: it
    acts before the process runs another instruction of its own. (A vfork parent waits in D for a
    child we stopped before it could exec: it can never stop, only die.)"""
    roots = [r for r in roots if r]
    sids = set(s for s in sids if s)
    if not roots and not sids:
        return
    me = os.getpid()
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        sent = set()
        for i in range(400):
            table = _proc_table()
            hit = _signal_pass(table, _tree(table, roots, sids), sig, sent, me)
            if not hit:
                break
            if i >= 2:  # let signalled processes get scheduled (and die) before the next pass
                select.select([], [], [], min(0.0005 * i, 0.01))


RESET_KILL_WAIT = 5.0  # seconds RESET may take to see every process of the blocks' users gone
KILLER_WAIT = 0.5  # seconds one killer (_kill_as) may take before it is killed itself


def _non_root_procs(me):
    """pid -> (state, real uid, saved uid) of every live process (not a zombie) with a uid other
    than root's, from /proc/PID/status: kernel-written lines but the first, Name (the process's
    comm), which Linux escapes but another kernel (gVisor's) may not: a comm of "x\nUid:\t0..."
    could then add lines before the real ones, so the last State and Uid lines are taken."""
    procs = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return procs
    for name in names:
        if not name.isdigit() or int(name) == me:
            continue
        data = _read_small("/proc/%s/status" % name)
        if not data:
            continue
        state = uids = None
        for line in data.split(b"\n")[1:]:
            if line.startswith(b"State:"):
                state = line[6:].split()[:1]
            elif line.startswith(b"Uid:"):
                uids = line[4:].split()
        try:
            real, eff, saved = int(uids[0]), int(uids[1]), int(uids[2])
        except (TypeError, ValueError, IndexError):
            continue
        if state in ([b"Z"], [b"X"]) or (real == 0 and eff == 0 and saved == 0):
            continue
        procs[int(name)] = (state, real, saved)
    return procs


def _kill_as(uid, deadline):
    """Forks a child that becomes `uid` and sends SIGKILL to -1: in one system call, every process
    whose real or saved uid is `uid` (a fork racing it fails: the kernel holds the task list while
    it signals), none other (PID 1, the keeper, the agent and its shepherds are root). Needs no
    CAP_KILL. The child is the blocks' user for a moment, so one of them could stop it: it is
    waited for KILLER_WAIT at most, then killed (and reaped later). False when it could not fork
    (a pids limit full) or did not end in time."""
    try:
        pid = os.fork()
    except OSError:
        return False
    if pid == 0:
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            for _ in range(8):
                os.kill(-1, signal.SIGKILL)  # ESRCH (nothing left to signal) ends it
        except BaseException:
            pass
        os._exit(0)
    end = min(deadline, _now() + KILLER_WAIT)
    delay = 0.0002
    while True:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return True
        except ChildProcessError:
            return True
        if _now() >= end:
            break
        time.sleep(delay)
        delay = min(delay * 2, 0.01)
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
    _STRAY.append(pid)
    return False


def _kill_non_root(wait):
    """Kills every process in the container whose uid is not root's (not only the agent's trees: a
    block's daemon, a fork bomb's children, processes a root tree never saw), round after round
    until /proc shows none alive; returns (how many were killed, rounds). Each round: SIGSTOP then
    SIGKILL to each one found, directly (with CAP_KILL: frees the pids a fork bomb holds), then
    one _kill_as per uid found (atomic against forks). Stopped processes die of SIGKILL; names
    play no part. _Refusal(ERR_RESET_FAILED) when some are still alive after `wait` seconds."""
    me = os.getpid()
    deadline = _now() + wait
    seen = set()
    rounds = 0
    while True:
        _reap_strays()
        procs = _non_root_procs(me)
        if not procs:
            return len(seen), rounds
        if _now() >= deadline:
            some = ", ".join("%d (uid %d)" % (p, v[1]) for p, v in sorted(procs.items())[:8])
            raise _Refusal(ERR_RESET_FAILED, "%d processes of the blocks' users are still alive "
                           "after %g s of kills: %s" % (len(procs), wait, some))
        rounds += 1
        seen.update(procs)
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for pid in procs:
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
        for uid in sorted(set(v[1] or v[2] for v in procs.values()) - {0}):
            _kill_as(uid, deadline)
        if rounds > 1:  # what was killed must be reaped (by its root reapers) to leave /proc
            time.sleep(min(0.0005 * rounds, 0.01))


# ------------------------------------------------------------------------- shepherd and children

def _rec(kind, data):
    return kind + _U32.pack(len(data)) + data


def _spawn(child, child_fds, keep_in_shepherd):
    """Forks a shepherd that forks `child(status_w)`. Returns (shepherd pid, report read fd).
    Report records (shepherd -> agent): S pid (child set up and running), E message (child could
    not start; it has exited), X wait-status (child exited)."""
    rep_r, rep_w = os.pipe()
    st_r, st_w = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        for fd in (rep_r, rep_w, st_r, st_w):
            os.close(fd)
        raise
    if pid:
        os.close(rep_w)
        os.close(st_r)
        os.close(st_w)
        return pid, rep_r
    # --- the shepherd (root). Anything but _Become (from the grandchild) must end in _exit.
    try:
        null = os.open("/dev/null", os.O_RDWR)
        os.dup2(null, 0)  # not the host channel: the host must see EOF when the agent dies
        os.dup2(null, 1)
        _close_all_except({0, 1, 2, rep_w, st_r, st_w} | set(child_fds) | set(keep_in_shepherd))
        if _SUBREAPER:
            _prctl(PR_SET_CHILD_SUBREAPER, 1)
        cpid = os.fork()
    except BaseException:
        os._exit(70)
    if cpid == 0:
        try:
            os.close(rep_w)
            os.close(st_r)
        except BaseException:
            os._exit(70)
        child(st_w)  # execs, raises _Become, or _exits
        os._exit(70)
    try:
        os.close(st_w)
        for fd in child_fds:
            os.close(fd)
        msg = _read_to_end(st_r)
        _t("shep-S")
        os.close(st_r)
        try:
            _write_all(rep_w, _rec(b"E", msg) if msg else _rec(b"S", _U32.pack(cpid)))
        except OSError:
            pass
        while True:
            try:
                p, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            if p == cpid:
                _t("shep-X")
                try:
                    _write_all(rep_w, _rec(b"X", _I32.pack(status)))
                except OSError:
                    pass
    finally:
        os._exit(0)


def _child_fail(status_w, code, msg):
    """Tells the agent (through the shepherd's E record) that the child could not start: "CODE
    MESSAGE", CODE an ERR_*."""
    try:
        _write_all(status_w, ("%s %s" % (code, _clean(msg) or "?")).encode("utf-8"))
    finally:
        os._exit(1)


_PY_STARTUP_ENV = ("LC_", "LANG", "LD_", "MALLOC_", "GLIBC_TUNABLES", "GCONV_PATH", "LOCPATH")
# The PYTHON* variables CPython (3.8-3.14) reads. Others (PYTHON_VERSION, PYTHON_SHA256... of the
# official images) configure nothing: the agent starts without them (agent_boot.py keeps known
# harmless names only), and they must not send every block of such an image to a fresh python3.
_PY_READ = frozenset((
    "PYTHONHOME PYTHONPATH PYTHONSAFEPATH PYTHONPLATLIBDIR PYTHONSTARTUP PYTHONOPTIMIZE "
    "PYTHONBREAKPOINT PYTHONDEBUG PYTHONINSPECT PYTHONUNBUFFERED PYTHONVERBOSE PYTHONCASEOK "
    "PYTHONDONTWRITEBYTECODE PYTHONPYCACHEPREFIX PYTHONHASHSEED PYTHONINTMAXSTRDIGITS "
    "PYTHONIOENCODING PYTHONNOUSERSITE PYTHONUSERBASE PYTHONEXECUTABLE PYTHONWARNINGS "
    "PYTHONFAULTHANDLER PYTHONTRACEMALLOC PYTHONPROFILEIMPORTTIME PYTHONASYNCIODEBUG PYTHONMALLOC "
    "PYTHONMALLOCSTATS PYTHONLEGACYWINDOWSFSENCODING PYTHONLEGACYWINDOWSSTDIO PYTHONCOERCECLOCALE "
    "PYTHONDEVMODE PYTHONUTF8 PYTHONWARNDEFAULTENCODING PYTHONNODEBUGRANGES PYTHONPERFSUPPORT "
    "PYTHONDUMPREFS PYTHONDUMPREFSFILE PYTHONSHOWALLOCCOUNT PYTHONSHOWREFCOUNT PYTHONTHREADDEBUG "
    "PYTHON_PERF_JIT_SUPPORT PYTHON_CPU_COUNT PYTHON_FROZEN_MODULES PYTHON_COLORS PYTHON_BASIC_REPL "
    "PYTHON_HISTORY PYTHON_GIL PYTHON_PRESITE PYTHON_JIT PYTHON_TLBC PYTHON_THREAD_INHERIT_CONTEXT "
    "PYTHON_CONTEXT_AWARE_WARNINGS PYTHONASYNCIOTASKS").split())


def _startup_key(k):
    return k in _PY_READ or k.startswith(_PY_STARTUP_ENV)


def _zygote_faithful(env):
    # Startup-time variables are read once, by the agent's interpreter (and its loader), which
    # started with _START_ENV: a block whose effective environment (the container's plus its own)
    # differs there gets a fresh python3 instead. So does a container that sets PYTHONPATH, LD_*...
    # which the agent's start never sees.
    eff = dict(os.environ)
    eff.update(env)
    for d, o in ((eff, _START_ENV), (_START_ENV, eff)):
        for k, v in d.items():
            if _startup_key(k) and o.get(k) != v:
                return False
    return True


def _user_site_differs():
    """In a zygote child, as the block's user with its environment: whether a fresh python3 would
    find a user site-packages dir, which the agent (HOME=/) never had. site's cached answers are
    recomputed for the block's HOME first, as a fresh python3 would compute them; if the dir
    exists, the block runs through a fresh python3, which processes its .pth files and
    usercustomize as the block's user (and never as root)."""
    site = sys.modules.get("site")
    if site is None or not getattr(site, "ENABLE_USER_SITE", False) or sys.flags.no_user_site:
        return False
    try:
        site.USER_BASE = site.USER_SITE = None
        return os.path.isdir(site.getusersitepackages())
    except Exception:
        return True


def _block_body(spec, status_w):
    """The block process from the privilege drop on (stdio, session and signals are set up):
    execs the interpreter, raises _Become (zygote), or _exits."""
    lang, path, code, cwd, env, cred, user, zygote = spec
    try:
        if not zygote:  # exec resets caught signals to default, but not ignored ones
            for s in _PY_IGNORED:
                signal.signal(s, signal.SIG_DFL)
        _drop_privileges(cred, user)
        _t("dropped")
        _write_code(path, code)
        _t("written")
        try:
            os.chdir(cwd)
        except OSError as e:
            raise _Refusal(ERR_SPAWN_FAILED, _oserr("cannot enter the working directory", e, cwd))
        if zygote:
            os.environ.update(env)
            if _user_site_differs():
                zygote = False
                for s in _PY_IGNORED:
                    signal.signal(s, signal.SIG_DFL)
        if zygote:
            if cred is not None:
                _prctl(PR_SET_DUMPABLE, 1)  # setuid cleared it; a fresh python3 is dumpable
            _t("become")
            os.close(status_w)  # -> STARTED
            raise _Become(("zygote", path, code))
        full = dict(os.environ)
        full.update(env)
        if lang == "python":
            cands, missing = [("python3", [path]), ("python", [path])], \
                "the image has neither python3 nor python"
        elif lang == "pwsh":
            cands, missing = [("pwsh", ["-NoLogo", "-NoProfile", "-NonInteractive", "-File", path])], \
                "the image has no pwsh"
        else:
            cands, missing = [(lang, [path])], "the image has no " + lang
    except _Become:
        raise
    except _Refusal as e:
        _child_fail(status_w, e.code, str(e))
    except BaseException as e:
        _child_fail(status_w, ERR_SPAWN_FAILED, "cannot start the block: %r" % (e,))
    try:
        _t("exec")
        for prog, args in cands:
            try:
                _exec_path(prog, [prog] + args, full)
            except FileNotFoundError:
                continue
            except BaseException as e:  # e.g. not executable: like sh, 126
                os.close(status_w)
                why = os.strerror(e.errno) if isinstance(e, OSError) and e.errno else repr(e)
                os.write(2, ("dockexec: cannot run %s: %s\n" % (prog, why)).encode())
                os._exit(126)
        os.close(status_w)  # as on the exec path: a result (127), not an ERROR
        os.write(2, ("dockexec: %s\n" % missing).encode())
    finally:
        os._exit(127)


def _exec_path(prog, argv, env):
    """execvpe without os.execvpe, which may import modules lazily (3.8: warnings): the block
    process has dropped privileges and may not read the stdlib's directory."""
    saved = None
    for d in env.get("PATH", os.defpath).split(os.pathsep):
        try:
            os.execve(os.path.join(d or ".", prog), argv, env)
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError as e:  # keep searching, like a shell; report this one if nothing runs
            saved = saved or e
    if saved is not None:
        raise saved
    raise FileNotFoundError(2, "not found", prog)


def _block_prologue(out_w, err_w, keep):
    """What every block process does first, whatever the block: own session, Python's default
    signal dispositions and an empty mask, stdin /dev/null, its own pipes, no other fd."""
    os.setsid()
    _reset_signals()
    _setup_stdio(out_w, err_w, keep)


def _block_child(spec, out_w, err_w, res_w):
    def run(status_w):
        global _RES_W
        try:
            # The results pipe stays non-inheritable: only a zygote block keeps it (see rich.py).
            _block_prologue(out_w, err_w, {status_w, res_w})
            _RES_W = res_w
        except BaseException as e:
            _child_fail(status_w, ERR_SPAWN_FAILED, "cannot start the block: %r" % (e,))
        _block_body(spec, status_w)
    return run


def _spare_child(out_w, err_w, spec_r, res_w):
    """A block process forked ahead of time: it does the prologue and unwinds the agent's stack
    (as a zygote block would), then waits at the top level (as root, out of any block's reach)
    for its spec from the agent: _spare_wait. Saves two forks and that set-up on a RUN's
    critical path."""
    def run(status_w):
        global _RES_W
        try:
            _block_prologue(out_w, err_w, {status_w, spec_r, res_w})
            _RES_W = res_w
        except BaseException as e:
            _child_fail(status_w, ERR_SPAWN_FAILED, "cannot start the block: %r" % (e,))
        raise _Become(("spare", status_w, spec_r))
    return run


def _spare_wait(status_w, spec_r):
    """The spare at the top level: reads its spec, then runs it. Returns a zygote block's job; any
    other block is exec'd (or fails) here."""
    try:
        _clean_modules()  # what _fresh_main does first, done before the spec comes
        # Compiling touches the allocator's pages, each a copy-on-write copy of the agent's the
        # first time: take those copies now rather than while compiling the block.
        compile("import sys\nprint(sys.argv[0], __name__)\n", "<warm-up>", "exec", dont_inherit=True)
        _t("spare-idle")
        spec_bytes = _read_to_end(spec_r)
        _t("spare-spec")
        os.close(spec_r)
        if not spec_bytes:  # never used: the agent is shutting down
            os._exit(0)
        d = _jloads(spec_bytes)
        cred = d["cred"]
        spec = (d["lang"], d["file"], d["code"].encode("utf-8", "surrogatepass"), d["cwd"], d["env"],
                None if cred is None else (cred[0], cred[1], cred[2]), d["user"], d["zygote"])
        d = None
    except BaseException as e:
        _child_fail(status_w, ERR_SPAWN_FAILED, "cannot start the block: %r" % (e,))
    try:
        _block_body(spec, status_w)
    except _Become as b:
        return b.args[0]
    os._exit(70)  # not reached: _block_body execs, _exits or raises _Become


def _session_child(sp):
    cwd, env, cred, user, out_w, err_w, cmd_r, intr_r, ctl_w, res_w = sp

    def run(status_w):
        global _RES_W
        try:
            _RES_W = res_w
            os.setsid()
            _reset_signals()
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # default_int_handler only while user code runs
            _setup_stdio(out_w, err_w, {status_w, cmd_r, intr_r, ctl_w, res_w})
            _drop_privileges(cred, user)
            if cred is not None:
                _prctl(PR_SET_DUMPABLE, 1)
            try:
                os.chdir(cwd)
            except OSError as e:
                raise _Refusal(ERR_SPAWN_FAILED, _oserr("cannot enter the working directory", e, cwd))
            os.environ.update(env)
            os.set_blocking(intr_r, False)
            os.close(status_w)  # -> SESSION_READY
            raise _Become(("session", cmd_r, intr_r, ctl_w))
        except _Become:
            raise
        except _Refusal as e:
            _child_fail(status_w, e.code, str(e))
        except BaseException as e:
            _child_fail(status_w, ERR_SPAWN_FAILED, "cannot start the session: %r" % (e,))
    return run
