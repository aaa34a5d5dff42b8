# ==== src/runner/agent/users.py (agent.rs joins these files into one script, in
# order.txt's order)
# Users and groups, the privilege drop, the code file, a new block process's fds and signals, and
# the code file's deletion with the block's own rights.

# ------------------------------------------------------------------------- users, files, fds

def _read_db(path):
    data = _read_small(path) or b""
    return [l.decode("utf-8", "replace").split(":") for l in data.split(b"\n")
            if l and not l.startswith(b"#")]


def _num(s):
    return s != "" and len(s) <= 10 and all("0" <= c <= "9" for c in s) and int(s) < 0xFFFFFFFF


_USERS = {}  # spec -> (identity of /etc/passwd and /etc/group, its answer)


def _db_stamp():
    """Changes whenever /etc/passwd or /etc/group is replaced or rewritten."""
    stamp = []
    for path in ("/etc/passwd", "/etc/group"):
        try:
            st = os.stat(path)
            stamp.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        except OSError:
            stamp.append(None)
    return tuple(stamp)


def _resolve_user(spec):
    """Cached _lookup_user: reading and parsing both files took about 0.2 ms per block."""
    if not isinstance(spec, str):
        return _lookup_user(spec)
    stamp = _db_stamp()
    hit = _USERS.get(spec)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    cred = _lookup_user(spec)  # _Refusal propagates, uncached
    if len(_USERS) > 64:
        _USERS.clear()
    _USERS[spec] = (stamp, cred)
    return cred


def _lookup_user(spec):
    """'uid[:gid]' | 'name[:group]' -> (uid, gid, groups), Docker's rules, from /etc/passwd and
    /etc/group directly (no NSS: nothing a block writes may load code into the agent)."""
    if spec is None:
        return None
    if not isinstance(spec, str) or spec == "":
        raise _Refusal(ERR_BAD_REQUEST, "bad user %r" % (spec,))
    u, _, g = spec.partition(":")
    passwd = [r for r in _read_db("/etc/passwd") if len(r) >= 4]
    ent = None
    if _num(u):
        uid = int(u)
        ent = next((r for r in passwd if r[2] == u or (_num(r[2]) and int(r[2]) == uid)), None)
    else:
        ent = next((r for r in passwd if r[0] == u), None)
        if ent is None or not _num(ent[2]):
            raise _Refusal(ERR_UNKNOWN_USER, "unknown user %r (not in /etc/passwd)" % u)
        uid = int(ent[2])
    groups_db = [r for r in _read_db("/etc/group") if len(r) >= 3]
    if g == "":
        gid = int(ent[3]) if ent is not None and _num(ent[3]) else 0
    elif _num(g):
        gid = int(g)
    else:
        row = next((r for r in groups_db if r[0] == g and _num(r[2])), None)
        if row is None:
            raise _Refusal(ERR_UNKNOWN_USER, "unknown group %r (not in /etc/group)" % g)
        gid = int(row[2])
    groups = [gid]
    if ent is not None:
        for r in groups_db:
            if len(r) >= 4 and _num(r[2]) and ent[0] in r[3].split(",") and int(r[2]) not in groups:
                groups.append(int(r[2]))
    return uid, gid, groups


def _drop_privileges(cred, spec):
    # The OOM killer must pick blocks, never the control plane (agent, shepherds, keeper: all at
    # 0, which nobody here can go below without CAP_SYS_RESOURCE). Written while still root, for
    # every block and session process; a block may lower it back to 0, which _Agent.mem_check
    # answers with SIGKILL.
    _write_small("/proc/self/oom_score_adj", b"1000")
    if cred is None:
        return
    uid, gid, groups = cred
    try:
        if os.geteuid() == 0:
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(uid)
        elif (uid, gid) != (os.geteuid(), os.getegid()):
            os.setgid(gid)
            os.setuid(uid)
    except OSError as e:
        raise _Refusal(ERR_SPAWN_FAILED, "cannot switch to user %s: %s" % (spec, os.strerror(e.errno)))


def _oserr(what, e, path):
    return "%s %s: %s (%s)" % (what, path, os.strerror(e.errno) if e.errno else str(e),
                                e.filename if e.filename is not None else path)


def _write_code(path, data):
    """As the block's user (privileges are already dropped): parents, a temp file, then rename."""
    d, base = os.path.split(path)
    tmp = os.path.join(d, ".%s.%d.dockexec-tmp" % (base, os.getpid()))
    try:
        os.makedirs(d, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise _Refusal(ERR_SPAWN_FAILED, _oserr("cannot write the code file", e, path))
    try:
        try:
            _write_all(fd, data)
            os.fchmod(fd, 0o644)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise _Refusal(ERR_SPAWN_FAILED, _oserr("cannot write the code file", e, path))


def _close_all_except(keep):
    try:
        fds = [int(x) for x in os.listdir("/proc/self/fd")]
    except OSError:
        fds = range(0, 65536)
    for fd in fds:
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _setup_stdio(out_w, err_w, keep):
    null = os.open("/dev/null", os.O_RDONLY)
    if null != 0:
        os.dup2(null, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    _close_all_except(set(keep) | {0, 1, 2})


_PY_IGNORED = (signal.SIGPIPE, signal.SIGXFSZ)  # what CPython ignores at startup


def _reset_signals():
    """CPython's startup dispositions: SIGINT -> KeyboardInterrupt, SIGPIPE and SIGXFSZ ignored,
    everything else default (even what the agent inherited as ignored); empty mask."""
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for s in signal.valid_signals():
        if s in (signal.SIGKILL, signal.SIGSTOP):
            continue
        want = signal.default_int_handler if s == signal.SIGINT else \
            signal.SIG_IGN if s in _PY_IGNORED else signal.SIG_DFL
        if signal.getsignal(s) is not want:  # getsignal knows every disposition: no syscall
            try:
                signal.signal(s, want)
            except (OSError, ValueError, RuntimeError):
                pass


_STRAY = []  # deletion helpers (no ctypes only) and RESET's killers killed but not yet reaped


def _reap_strays():
    """Reaps the helpers in _STRAY that have ended (never waits)."""
    for pid in list(_STRAY):
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                _STRAY.remove(pid)
        except ChildProcessError:
            _STRAY.remove(pid)


DELETE_WAIT = 2.0  # seconds a deletion helper (no ctypes only) may take before it is killed


def _unlink_nofollow(path):
    """Unlinks path by a walk of dir fds from /, following no link on the way (as the host does)."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        return
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open("/", flags)
    try:
        for name in parts[:-1]:
            nfd = os.open(name, flags, dir_fd=fd)
            os.close(fd)
            fd = nfd
        os.unlink(parts[-1], dir_fd=fd)
    finally:
        os.close(fd)


_FS_IDS = []  # [bool] once probed: whether setfsuid/setfsgid work here


def _fs_ids_work():
    """Whether setfsuid/setfsgid work here: gVisor's kernel answers ENOSYS (they return -1),
    and then the agent must not switch to them (it could not switch back); the helper that
    changes user deletes instead. Probed once, by setting the current ids."""
    if not _FS_IDS:
        ok = _LIBC is not None and hasattr(_LIBC, "setfsuid")
        if ok:
            for f in (_LIBC.setfsgid, _LIBC.setfsuid):
                f.argtypes, f.restype = [_ctypes.c_uint], _ctypes.c_uint
            ok = _LIBC.setfsgid(os.getegid()) == os.getegid() and \
                _LIBC.setfsuid(os.geteuid()) == os.geteuid()
        _FS_IDS.append(ok)
    return _FS_IDS[0]


def _set_fs_ids(uid, gid):
    """setfsgid then setfsuid; True when both took (each returns the previous id and never fails
    loudly: a second call returns the current one, which must be what was asked)."""
    for f in (_LIBC.setfsgid, _LIBC.setfsuid):
        f.argtypes, f.restype = [_ctypes.c_uint], _ctypes.c_uint
    _LIBC.setfsgid(gid)
    _LIBC.setfsuid(uid)
    return _LIBC.setfsgid(gid) == gid and _LIBC.setfsuid(uid) == uid


def _delete_as(path, cred):
    """Removes a block's code file with the block's own rights (the agent never follows a path
    the block controls as root). With ctypes, in the agent itself with the block's filesystem ids
    (setfsuid/setfsgid and its groups: the agent is single-threaded), so nothing a block can stop
    is waited for; without, in a helper that changes user, waited for at most DELETE_WAIT and
    killed after that."""
    if cred is None or os.geteuid() != 0 or cred[0] == 0:
        try:
            os.unlink(path)
        except OSError:
            pass
        return
    if _fs_ids_work():
        groups = os.getgroups()
        try:
            os.setgroups(cred[2])
            if _set_fs_ids(cred[0], cred[1]):
                try:
                    _unlink_nofollow(path)
                except OSError:
                    pass
        except Exception:  # e.g. setgroups refused: the file stays
            pass
        finally:
            if not _set_fs_ids(0, 0):  # root may always go back; if not, nothing is safe
                _diag("cannot restore the agent's filesystem ids")
                os._exit(3)
            os.setgroups(groups)
        return
    _reap_strays()
    try:
        pid = os.fork()
    except OSError:
        return
    if pid == 0:
        try:
            _close_all_except({2})  # e.g. the spare's spec pipe: it must see EOF when the agent closes it
            os.setgroups(cred[2])
            os.setgid(cred[1])
            os.setuid(cred[0])
            _unlink_nofollow(path)
        except BaseException:
            pass
        os._exit(0)
    # A block can stop the helper once it is the block's user: poll, never a blocking wait.
    deadline = _now() + DELETE_WAIT
    delay = 0.0005
    while True:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        except ChildProcessError:
            return
        if _now() >= deadline:
            break
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    _diag("the code file deletion of %s did not end within %.0f s (stopped by a block?): killed, "
          "the file may remain" % (path, DELETE_WAIT))
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
    _STRAY.append(pid)
