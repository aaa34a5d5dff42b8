# ==== src/runner/agent/sessions.py (agent.rs joins these files into one script, in
# order.txt's order)
# The session process's loop, and what the agent keeps of a session: its records, why it is lost,
# the kill of what a session block started, and the agent's session half (_AgentSessions, which
# main.py's _Agent inherits).

# Sessions. The control pipes (cmd: agent -> session, intr: agent -> session, ctl: session ->
# agent) are fds the user code is not told about, but it runs in the same process as this loop, so
# it can find them (/proc/self/fd), read the next block's code, write forged ctl records, or close
# them. The agent treats ctl as untrusted: records must be well-formed and name the block it is
# running, so a forgery can at worst end or misreport that session's own current block (anything
# else loses the session). It cannot reach other blocks, sessions, or the agent.


def _intr_pending(intr_r, bid):
    hit = False
    while True:
        try:
            b = os.read(intr_r, 4096)  # records are 4 bytes, written atomically
        except OSError:  # nothing yet; or a block closed the pipe: SIGINT still interrupts
            break
        if not b:
            break
        for i in range(0, len(b) - 3, 4):
            if _U32.unpack_from(b, i)[0] == bid:
                hit = True
    return hit


def _sess_exec(co, ns, intr_r, bid, expr=None):
    """Runs a block's code, then its last expression's (`expr`, see _last_expr), whose value
    goes back as the block's result; returns the exception that ended it, or None."""
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if _intr_pending(intr_r, bid):  # cancelled before SIGINT could find user code running
            raise KeyboardInterrupt
        exec(co, ns)
        if expr is not None:
            _send_value(eval(expr, ns))
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        return None
    except BaseException as e:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        return e


def _read_exact(fd, n):
    parts = []
    while n:
        b = os.read(fd, min(n, 1 << 20))
        if not b:
            return None
        parts.append(b)
        n -= len(b)
    return b"".join(parts)


# The session process's own exit status when its loop finds a control pipe closed or replaced by
# a block: it _exits with this, silently (a traceback of the loop would show the agent's internals in
# the block's stderr), and the agent reports the session lost with that cause.
_SESS_BROKEN = 123


def _fd_id(fd):
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _sess_std_keeper():
    """Keeps copies of the session's stdin (/dev/null), stdout and stderr pipes and how sys.stdout
    and sys.stderr were made; returns restore(), which, before each block, reopens whatever an
    earlier block closed: an fd 0-2 that is closed (never one that was redirected or reused: that
    is the namespace's own state) and a sys.stdout/sys.stderr that is None or closed. The streams
    are each block's output channel, not part of the namespace. Returns an error message when a
    closed stream's copy is gone too (a block closed every descriptor it found)."""
    saved = [(os.dup(fd), _fd_id(fd)) for fd in (0, 1, 2)]  # non-inheritable, like every pipe here
    how = [(f.encoding, f.errors, f.line_buffering) if f is not None else ("utf-8", "strict", False)
           for f in (sys.stdout, sys.stderr)]

    def restore():
        for fd, (copy, ident) in enumerate(saved):
            try:
                os.fstat(fd)
                continue  # open: left as the namespace has it
            except OSError:
                pass
            try:
                if _fd_id(copy) != ident:
                    raise OSError("replaced")
                os.dup2(copy, fd)
            except OSError:
                return ("a block closed the session's %s and the copy the session keeps; reset() the "
                        "session" % ("stdin", "stdout", "stderr")[fd])
        for i, name in enumerate(("stdout", "stderr")):
            f = getattr(sys, name)
            if f is None or getattr(f, "closed", False):
                enc, errors, lb = how[i]
                setattr(sys, name, open(i + 1, "w", buffering=1 if lb else -1, encoding=enc,
                                        errors=errors, closefd=False))
        return None
    return restore


def _sess_loop(cmd_r, intr_r, ctl_w):
    ns = _fresh_main(None).__dict__
    sys.argv[:] = [""]
    sys.path.insert(0, "")
    me = os.getpid()
    ctl_id, cmd_id = _fd_id(ctl_w), _fd_id(cmd_r)
    restore = _sess_std_keeper()
    _rich_setup()

    def ctl(bid, kind, data=b""):
        # A block may have closed the control pipe, or put a file of its own at its number.
        if _fd_id(ctl_w) != ctl_id:
            raise OSError("the control pipe was closed or replaced")
        _write_all(ctl_w, _U32.pack(5 + len(data)) + _U32.pack(bid) + bytes([kind]) + data)

    while True:
        if _fd_id(cmd_r) != cmd_id:
            raise OSError("the command pipe was closed or replaced")
        hdr = _read_exact(cmd_r, 4)
        if hdr is None:
            return
        body = _read_exact(cmd_r, _U32.unpack(hdr)[0])
        if body is None:
            return
        req = _jloads(body)
        bid = req["id"]
        path = req["file"]
        src = req["code"].encode("utf-8", "surrogatepass")
        try:
            _write_code(path, src)
            try:
                os.chdir(req["cwd"])
            except OSError as e:
                raise _Refusal(ERR_SPAWN_FAILED, _oserr("cannot enter the working directory", e, req["cwd"]))
        except _Refusal as e:
            ctl(bid, 3, _clean(str(e)).encode("utf-8"))
            continue
        broken = restore()
        if broken is not None:
            ctl(bid, 3, broken.encode("utf-8"))
            continue
        os.environ.update(req["env"])
        ctl(bid, 1)
        try:
            co, expr = _last_expr(src, path)
        except BaseException as e:
            exc = e
        else:
            try:
                exc = _sess_exec(co, ns, intr_r, bid, expr)
            except KeyboardInterrupt as e:  # a second SIGINT right at the end of the block
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                exc = e
        _rich_after()  # figures never shown, before any traceback (as a zygote block does)
        code = 0
        if isinstance(exc, SystemExit):
            c = exc.code
            if c is None:
                code = 0
            elif isinstance(c, int):
                code = c & 0xFF
            else:
                try:
                    sys.stderr.write(str(c) + "\n")
                except BaseException:
                    pass
                code = 1
        elif exc is not None:
            _print_exc(exc)
            code = 1
        exc = None
        _flush_stdio()
        if os.getpid() != me:  # a child the block forked fell off its end: it is not the session
            os._exit(code)
        if req.get("delete"):
            try:
                os.unlink(path)
            except OSError:
                pass
        ctl(bid, 2, _I32.pack(code))


class _Entry(object):
    """A RUN queued in, or running in, a session."""
    __slots__ = ("id", "req", "grace", "started", "interrupted", "deadline", "oom0", "old")

    def __init__(self, bid, req, grace):
        self.id, self.req, self.grace = bid, req, grace
        self.started = self.interrupted = False
        self.deadline = self.oom0 = None
        self.old = frozenset()  # (pid, start time) of the session's processes when it started


class _SessProc(object):
    """One incarnation of a session's process (SESSION_RESET makes a new one)."""
    __slots__ = ("sess", "shep", "out", "err", "cmd", "intr", "ctl", "res", "rr", "ctlbuf", "cmdbuf",
                 "ready", "killed", "oom0", "dying", "pending", "cause")

    def __init__(self, sess):
        self.sess = sess
        self.shep = None
        self.out = self.err = self.cmd = self.intr = self.ctl = self.res = -1
        self.rr = _ResReader()
        self.ctlbuf = b""
        self.cmdbuf = bytearray()
        self.ready = self.killed = self.dying = False
        self.oom0 = None
        self.pending = []  # output read before its block's STARTED record was
        self.cause = None  # why the agent killed it, when it did (see _sess_cause)


class _Session(object):
    __slots__ = ("id", "user", "cwd", "env", "cred", "proc", "queue", "running", "lost")

    def __init__(self, sid, user, cwd, env, cred):
        self.id, self.user, self.cwd, self.env, self.cred = sid, user, cwd, env, cred
        self.proc = None
        self.queue = []
        self.running = None
        self.lost = None  # why the session's process is gone (SESSION_RESET starts a new one)


def _sig_name(sig):
    try:
        return "%d (%s)" % (sig, signal.Signals(sig).name)
    except ValueError:
        return str(sig)


def _sess_cause(p, status, e):
    """Why session process `p` is gone, in words, from what the agent did to it (p.cause) or its
    wait status; `e` is the block it was running, if any."""
    if p.cause is not None:
        return p.cause
    when = "during a block" if e is not None else "between blocks"
    if status is None:
        return "the session's shepherd died %s" % when
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        why = "the session's process was killed by signal %s %s" % (_sig_name(sig), when)
        if sig == signal.SIGKILL and e is not None and e.oom0 is not None:
            now = _oom_count()
            if now is not None and now > e.oom0:
                why += ", by the kernel's OOM killer (the container's memory limit)"
        return why
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else status
    if code == _SESS_BROKEN:
        return ("a block closed or replaced the session's control pipe (the session's process "
                "exited with status %d)" % code)
    return "the session's process exited (status %d) %s" % (code, when)


def _stat_fields(pid):
    """/proc/<pid>/stat from field 3 (state) on, or None when the process is gone."""
    data = _read_small("/proc/%d/stat" % pid)
    if not data:
        return None
    return data[data.rfind(b")") + 2:].split()  # comm may hold anything, even ')'


def _sess_procs(shep_pid):
    """{(pid, start time)} of every process below a session's shepherd (start time: stat field
    22, so a reused pid is a new process)."""
    table, start = {}, {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return table, start
    for name in names:
        if not name.isdigit():
            continue
        f = _stat_fields(int(name))
        try:
            table[int(name)] = (f[0], int(f[1]), int(f[2]), int(f[3]))
            start[int(name)] = int(f[19])
        except (TypeError, ValueError, IndexError):
            continue
    return table, start


def _sess_new_tree(table, start, shep, sess_pid, old):
    """The processes below the shepherd `shep` that are not in `old` and do not descend from a
    process in `old`: what the running block started (orphans come to the shepherd, a
    subreaper). Without a subreaper, also the session process's own session and group."""
    children = {}
    for pid, v in table.items():
        children.setdefault(v[1], []).append(pid)
    todo = list(children.get(shep, ()))
    if not _SUBREAPER:
        todo += [p for p, v in table.items() if v[3] == sess_pid or v[2] == sess_pid]
    new, seen = set(), set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid == shep:
            continue
        seen.add(pid)
        if pid != sess_pid:
            if (pid, start.get(pid)) in old:
                continue  # an earlier block's process: it and what it starts are its own
            new.add(pid)
        todo.extend(children.get(pid, ()))
    return new


def _sess_snapshot(p):
    table, start = _sess_procs(p.shep.pid)
    return frozenset((pid, start.get(pid)) for pid in _sess_new_tree(table, start, p.shep.pid,
                                                                        p.shep.cpid, frozenset()))


def _sess_kill_block(p, old, interrupt):
    """Cancel of a session block: kills what the block started (the processes below the session's
    shepherd that are not in `old`), as _kill_trees does a block's tree (freeze pass after pass,
    then kill), with the session process itself stopped meanwhile so that it cannot fork past the
    passes; then queues `interrupt` (SIGINT) for it and lets it run. It is not killed: the
    namespace lives on."""
    sess_pid, me = p.shep.cpid, os.getpid()
    if not sess_pid:
        return
    stopped = False
    try:
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            sent = set()
            for i in range(400):
                table, start = _sess_procs(p.shep.pid)
                hit = 0
                if sig == signal.SIGSTOP and not stopped:
                    try:
                        os.kill(sess_pid, signal.SIGSTOP)
                        stopped = True
                        hit += 1
                    except OSError:
                        pass
                hit += _signal_pass(
                    table, _sess_new_tree(table, start, p.shep.pid, sess_pid, old), sig, sent, me)
                if not hit:
                    break
                if i >= 2:
                    select.select([], [], [], min(0.0005 * i, 0.01))
    finally:
        for sig in (interrupt, signal.SIGCONT):  # pending while stopped: SIGINT acts on resume
            try:
                os.kill(sess_pid, sig)
            except OSError:
                pass


class _AgentSessions(object):
    """The agent's session half, mixed into _Agent (main.py): SESSION_OPEN, the session process's
    start and readiness, its queue of blocks, its output and control pipes, a block's grace
    deadline, and the session's end (closed, reset or lost). Uses _Agent's channel and fd
    registry (send, error, watch, unwatch, ...)."""

    def on_session_open(self, sid, payload):
        if sid == 0:
            raise _ProtocolError("SESSION_OPEN with session id 0")
        if sid in self.sessions:
            self.error(sid, ERR_SESSION_EXISTS, "session %d is already open" % sid)
            return
        try:
            req = _json_object(payload, "SESSION_OPEN")
            user = req.get("user")
            cred = _resolve_user(user)
            cwd = _field(req, "cwd", (str,), "/workspace")
            env = _env_field(req)
        except _Refusal as e:
            self.error(sid, e.code, str(e))
            return
        s = _Session(sid, user, cwd, env, cred)
        self.sessions[sid] = s
        self.sess_start(s)

    def sess_start(self, s):
        s.lost = None
        p = _SessProc(s)
        pipes = [os.pipe() for _ in range(5)]
        (out_r, out_w), (err_r, err_w), (cmd_r, cmd_w), (intr_r, intr_w), (ctl_r, ctl_w) = pipes
        res_r, res_w = _res_pipe()
        child_fds = (out_w, err_w, cmd_r, intr_r, ctl_w, res_w)
        p.oom0 = _oom_count()
        try:
            pid, rep = _spawn(_session_child((s.cwd, s.env, s.cred, s.user) + child_fds), child_fds, ())
        except OSError as e:
            for pr in pipes + [(res_r, res_w)]:
                os.close(pr[0])
                os.close(pr[1])
            del self.sessions[s.id]
            self.error(s.id, ERR_SPAWN_FAILED, "cannot fork: %s" % os.strerror(e.errno))
            return
        for fd in child_fds:
            os.close(fd)
        for fd in (out_r, err_r, cmd_w, intr_w, ctl_r, rep, res_r):
            os.set_blocking(fd, False)
        p.out, p.err, p.cmd, p.intr, p.ctl, p.res = out_r, err_r, cmd_w, intr_w, ctl_r, res_r
        p.shep = _Shep(pid, rep, p)
        s.proc = p
        self.sheps[rep] = p.shep
        self.watch(rep, "report", p.shep)
        self.watch(out_r, "sout", p)
        self.watch(err_r, "serr", p)
        self.watch(ctl_r, "ctl", p)
        self.watch(res_r, "sres", p)
        self.fds[cmd_w] = ("cmd", p)  # polled for POLLOUT only while cmdbuf is not empty
        self.fds[intr_w] = ("intr", p)  # never polled: 4-byte non-blocking writes

    def sess_ready(self, p):
        s = p.sess
        if s.proc is not p:
            return
        p.ready = True
        self.send(SESSION_READY, s.id)
        self.sess_pump(s)

    def sess_failed(self, p, code, msg):
        s = p.sess
        if s.proc is not p:
            return
        self.sess_close_proc(p)
        s.proc = None
        if self.sessions.get(s.id) is s:
            del self.sessions[s.id]
        self.error(s.id, code, msg)
        for e in s.queue:
            self.error(e.id, code, "the session could not start: " + msg)
        s.queue = []

    def sess_pump(self, s):
        p = s.proc
        if p is None or not p.ready or p.dying or s.running is not None or not s.queue:
            return
        e = s.queue.pop(0)
        s.running = e
        e.oom0 = _oom_count()
        e.old = _sess_snapshot(p)  # what is already running is not this block's
        body = _jdumps(e.req)
        e.req = None
        was_empty = not p.cmdbuf
        p.cmdbuf += _U32.pack(len(body)) + body
        if was_empty:
            self.poll.register(p.cmd, select.POLLOUT)
        self.on_cmd(p, p.cmd, 0)

    def on_cmd(self, p, fd, ev):
        try:
            n = os.write(fd, p.cmdbuf[:1 << 20])
            del p.cmdbuf[:n]
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # the session died; its report will say so
            p.cmdbuf = bytearray()
        if not p.cmdbuf:
            try:
                self.poll.unregister(fd)
            except KeyError:
                pass

    def sess_forward(self, p, fd, kind):
        """One read of a session's stdout/stderr, framed with the block that wrote it: 1 = read,
        0 = nothing yet, -1 = EOF."""
        data = _read_chunk(fd)
        if data is None:
            return 0
        if not data:
            return -1
        s = p.sess
        e = s.running if s.proc is p else None
        if e is not None and e.started:
            self.send(kind, e.id, data)
        elif e is not None:
            # The session writes STARTED before it runs a block: if these bytes are the block's,
            # that record is already waiting in the control pipe. Its handler sends them.
            p.pending.append((kind, data))
            for _ in range(64):
                if not p.pending or p.ctl < 0 or s.proc is not p or not self.on_ctl(p, p.ctl, 0):
                    break
            p.pending = []  # not a block's (e.g. a thread left running by an earlier one)
        return 1

    def on_sout(self, p, fd, ev):
        if self.sess_forward(p, fd, STDOUT) < 0:
            p.out = self.unwatch(fd)

    def on_serr(self, p, fd, ev):
        if self.sess_forward(p, fd, STDERR) < 0:
            p.err = self.unwatch(fd)

    def on_sres(self, p, fd, ev):
        """A read of a session's results pipe: the running block's results (see rich.py); what
        arrives between blocks is parsed and dropped."""
        data = _read_chunk(fd)
        if data is None:
            return 0
        if not data:
            p.res = self.unwatch(fd)
            return -1
        s = p.sess
        e = s.running if s.proc is p else None
        bid = e.id if e is not None and e.started else 0
        self.res_feed(p.rr, bid, data, lambda: self.sess_drain(p, results=False), fd)
        return 1

    def sess_drain(self, p, results=True):
        # Everything the block wrote before its DONE is already in the pipes.
        for name, kind in (("out", STDOUT), ("err", STDERR)):
            for _ in range(1024):  # bounded: a background writer could go on forever
                fd = getattr(p, name)
                if fd < 0:
                    break
                r = self.sess_forward(p, fd, kind)
                if r < 0:
                    setattr(p, name, self.unwatch(fd))
                if r <= 0:
                    break
        for _ in range(1024 if results else 0):  # results come after the output before them
            if p.res < 0 or self.on_sres(p, p.res, 0) <= 0:
                break

    def on_ctl(self, p, fd, ev):
        """Returns True if it read something (there may be more)."""
        try:
            data = os.read(fd, 65536)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            data = b""
        if not data:
            p.ctl = self.unwatch(fd)
            f = _stat_fields(p.shep.cpid) if p.shep.cpid else None
            # PF_EXITING (flags, field 9): it is exiting, which closes the pipe; its status says why.
            try:
                exiting = f is None or f[0] in (b"Z", b"X") or int(f[6]) & 0x4
            except (ValueError, IndexError):
                exiting = True
            if not exiting and p.cause is None:
                p.cause = "a block closed the session's control pipe, so its process was killed"
                p.killed = True
            self.sess_kill(p)  # its report (X) finishes the job
            return False
        self.ctl_records(p, data)
        return True

    def ctl_records(self, p, data):
        p.ctlbuf += data
        s = p.sess
        while len(p.ctlbuf) >= 4:
            n = _U32.unpack_from(p.ctlbuf, 0)[0]
            if n < 5 or n > 65536 + 5:
                return self.sess_bad_ctl(p)
            if len(p.ctlbuf) < 4 + n:
                break
            bid = _U32.unpack_from(p.ctlbuf, 4)[0]
            kind = p.ctlbuf[8]
            rec = p.ctlbuf[9:4 + n]
            p.ctlbuf = p.ctlbuf[4 + n:]
            e = s.running
            if s.proc is not p or e is None or e.id != bid:
                return self.sess_bad_ctl(p)
            if kind == 1 and not e.started and not rec:
                e.started = True
                self.send_json(STARTED, bid, {"pid": p.shep.cpid})
                for k, d in p.pending:
                    self.send(k, bid, d)
                p.pending = []
            elif kind == 2 and e.started and len(rec) == 4:
                self.sess_drain(p)
                s.running = None
                self.send_json(EXIT, bid, {"code": _I32.unpack(rec)[0], "signal": None, "oom": False,
                                           "session_lost": False})
                self.sess_pump(s)
            elif kind == 3 and not e.started:
                s.running = None
                self.error(bid, ERR_SPAWN_FAILED, rec.decode("utf-8", "replace"))
                self.sess_pump(s)
            else:
                return self.sess_bad_ctl(p)

    def sess_bad_ctl(self, p):
        _diag("session %d: malformed control record: the session is lost" % p.sess.id)
        p.ctlbuf = b""
        if p.cause is None:
            p.cause = ("the session's control pipe carried a malformed record (a block wrote to it), "
                       "so its process was killed")
        self.sess_kill(p, killed=True)

    def sess_kill(self, p, killed=False):
        if killed:
            p.killed = True
        if not p.dying:
            p.dying = True
            _kill_trees([p.shep.pid], [] if _SUBREAPER else [p.shep.cpid])

    def check_deadlines(self):
        now = None
        for s in list(self.sessions.values()):
            e = s.running
            if e is not None and e.deadline is not None and s.proc is not None:
                now = now or _now()
                if now >= e.deadline:
                    p = s.proc
                    for _ in range(64):  # a DONE already waiting wins (the loop may have been busy)
                        if p.ctl < 0 or s.proc is not p or not self.on_ctl(p, p.ctl, 0):
                            break
                    if s.running is e and s.proc is p:
                        e.deadline = None
                        if p.cause is None:
                            p.cause = ("a block did not stop within %g s of an interrupt, so the "
                                       "session's process was killed" % (e.grace / 1000.0))
                        self.sess_kill(p, killed=True)

    def sess_proc_exit(self, p, status):
        """The session process exited (status) or its shepherd is gone (None)."""
        s = p.sess
        if s.proc is not p:
            return
        if not p.ready and not p.dying:
            return self.sess_failed(p, ERR_SPAWN_FAILED, "the session process died while starting")
        for _ in range(64):  # what it said before dying (e.g. STARTED) comes first
            if p.ctl < 0 or s.proc is not p or not self.on_ctl(p, p.ctl, 0):
                break
        if s.proc is not p:
            return
        self.sess_kill(p)
        self.sess_drain(p)
        e = s.running
        s.running = None
        cause = _sess_cause(p, status, e)
        if e is not None:
            if e.started:
                self.send_json(EXIT, e.id, _exit_json(status, p.killed, e.oom0, session_lost=cause,
                                                      culled=p.shep.pid in self.culled))
            else:
                self.error_lost(e.id, cause)
        for q in s.queue:
            self.error_lost(q.id, cause)
        s.queue = []
        s.lost = cause
        self.culled.discard(p.shep.pid)
        self.sess_close_proc(p)
        s.proc = None

    def sess_close_proc(self, p):
        for name in ("out", "err", "cmd", "intr", "ctl", "res"):
            setattr(p, name, self.unwatch(getattr(p, name)))
        p.cmdbuf = bytearray()

    def sess_end(self, s, why, lost=True):
        """SESSION_CLOSE / SESSION_RESET: kill the session's tree now; its blocks end (killed; with
        the session lost if `lost`)."""
        p = s.proc
        if p is not None:
            self.sess_kill(p, killed=True)
            self.sess_drain(p)
            e = s.running
            if e is not None:
                if e.started:
                    self.send_json(EXIT, e.id, _exit_json(None, True, None,
                                                          session_lost=why if lost else None))
                else:
                    self.error(e.id, ERR_SESSION_ENDED, why)
            self.sess_close_proc(p)
            s.proc = None
        s.running = None
        for q in s.queue:
            self.error(q.id, ERR_SESSION_ENDED, why)
        s.queue = []

