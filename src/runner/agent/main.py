# ==== src/runner/agent/main.py (agent.rs joins these files into one script, in
# order.txt's order)
# The agent itself: one poll loop over the host channel, the shepherds' reports and the sessions'
# pipes; then the top level, where a forked block or session process lands.

# ------------------------------------------------------------------------- the agent

class _Shep(object):
    __slots__ = ("pid", "rep", "buf", "owner", "cpid")

    def __init__(self, pid, rep, owner):
        self.pid, self.rep, self.buf, self.owner, self.cpid = pid, rep, b"", owner, 0


class _Block(object):
    __slots__ = ("id", "shep", "out", "err", "res", "rr", "status", "killed", "oom0", "file",
                 "delete", "cred", "started", "t0")

    def __init__(self, bid):
        self.id = bid
        self.t0 = _now()
        self.shep = None
        self.out = self.err = self.res = -1
        self.rr = _ResReader()
        self.status = None
        self.killed = False
        self.oom0 = None
        self.file = None
        self.delete = False
        self.cred = None
        self.started = False


def _exit_json(status, killed, oom0, session_lost=None, culled=False):
    """EXIT's payload; `session_lost`: why the block's session is lost, if it is; `culled`: the
    block was killed by mem_check, which stands in for the kernel's OOM killer."""
    code = sig = None
    if status is not None:
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
        elif os.WIFEXITED(status):
            code = os.WEXITSTATUS(status)
    if killed:
        code, sig = None, signal.SIGKILL
    oom = False
    if sig == signal.SIGKILL and not killed and oom0 is not None:
        now = _oom_count()
        oom = now is not None and now > oom0
    if sig == signal.SIGKILL and not killed and culled:  # mem_check's kill stands in for the kernel's
        oom = True
    r = {"code": code, "signal": int(sig) if sig is not None else None, "oom": oom,
         "session_lost": session_lost is not None}
    if session_lost is not None:
        r["cause"] = _clean(session_lost if isinstance(session_lost, str) else "no cause given")
    return r


class _Agent(_AgentSessions):
    def __init__(self):
        self.poll = select.poll()
        self.fds = {}  # fd -> (kind, obj)
        self.blocks = {}  # execution id -> _Block (until EXIT/ERROR)
        self.sessions = {}  # session id -> _Session
        self.sheps = {}  # report fd -> _Shep (until the shepherd exits)
        self.inbuf = bytearray()
        self.spares = []  # [(shepherd, out fd, err fd, spec fd, results fd)]: block processes forked ahead of time
        self.spare_retry = 0.0
        self.mem = _mem_files()  # (usage file, limit) or None: see mem_check
        self.mem_next = self.mem_scan = 0.0
        self.mem_last = 0
        self.culled = set()  # shepherd pids of blocks that mem_check killed a process of

    # -- channel
    def send(self, kind, fid, payload=b""):
        try:
            _write_all(1, _HDR.pack(5 + len(payload), kind, fid) + payload)
        except OSError:  # EPIPE: the host is gone
            raise _HostGone()

    def send_json(self, kind, fid, obj):
        self.send(kind, fid, _jdumps(obj))

    def error(self, fid, code, msg):
        """ERROR: code (an ERR_*) for the host to branch on, message for people."""
        self.send_json(ERROR, fid, {"message": _clean(msg), "code": code})

    def error_lost(self, fid, cause):
        """ERROR for a block refused because its session is lost."""
        self.send_json(ERROR, fid, {"message": _clean("session lost: " + cause),
                                    "code": ERR_SESSION_LOST, "cause": _clean(cause)})

    # -- fd registry
    def watch(self, fd, kind, obj, events=select.POLLIN):
        self.fds[fd] = (kind, obj)
        self.poll.register(fd, events)

    def unwatch(self, fd):
        if fd >= 0 and fd in self.fds:
            del self.fds[fd]
            try:
                self.poll.unregister(fd)
            except KeyError:  # never registered, or (cmd pipes) only while they have bytes to send
                pass
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass
        return -1

    # -- main loop
    def run(self):
        self.send_json(READY, 0, {
            "protocol": 1, "pid": os.getpid(), "python": sys.version.split()[0],
            "subreaper": _SUBREAPER, "zygote": True, "warnings": list(_WARNINGS)})
        self.poll.register(0, select.POLLIN)
        # Everything the agent has allocated so far goes to the permanent generation: a forked
        # zygote child's collections (and its final ones at exit) then skip it instead of walking,
        # and so copying, every inherited page. Halves a zygote block's exit time.
        gc.collect()
        gc.freeze()
        while len(self.spares) < SPARES and self.make_spare():
            pass
        # Backpressure: writes to fd 1 block. That can only wait on the host, which drains the channel
        # independently of everything else, never on a block: nothing the host needs in order to
        # read fd 1 depends on this loop. Meanwhile the blocks' pipes fill and their writers block,
        # which is the intended backpressure. Every other write (to sessions) is non-blocking and
        # buffered, so a stopped or hostile session can never wedge the loop. Each loop iteration
        # reads at most one 64 KiB piece per ready pipe, so a flooding block gets its turn and no more.
        while True:
            timeout = self.next_timeout()
            try:
                events = self.poll.poll(timeout)
            except InterruptedError:
                continue
            channel = None
            ready = []
            for fd, ev in events:
                if fd == 0:
                    channel = ev
                elif fd in self.fds:
                    kind, obj = self.fds[fd]
                    ready.append((_ORDER.get(kind, 9), fd, kind, obj, ev))
            ready.sort(key=lambda r: r[0])  # control and reports, then stdout before stderr
            for _, fd, kind, obj, ev in ready:
                if fd in self.fds and self.fds[fd][1] is obj:
                    getattr(self, "on_" + kind)(obj, fd, ev)
            if channel is not None:
                r = self.on_channel()
                if r is not None:
                    return r
            self.check_deadlines()
            self.mem_check()
            while len(self.spares) < SPARES and self.spare_wait() <= 0 and self.make_spare():
                pass

    def spare_wait(self):
        """Seconds until the next spare may be forked. Not while a block dispatched less than
        SPARE_DELAY ago may still be starting or ending: on a machine with few cores, forking the
        agent (and the spare's own start-up) would compete with that block's critical path. Once
        the last one has ended, the spare is forked while the host reads the result."""
        if not self.blocks:
            return 0
        return max(b.t0 for b in self.blocks.values()) + SPARE_DELAY - _now()

    def make_spare(self):
        """Forks a spare; False if it could not (and will not try again for a second)."""
        if self.spare_retry and _now() < self.spare_retry:
            return False
        fds = []
        try:
            out_r, out_w = os.pipe()
            fds += [out_r, out_w]
            err_r, err_w = os.pipe()
            fds += [err_r, err_w]
            spec_r, spec_w = os.pipe()
            fds += [spec_r, spec_w]
            res_r, res_w = _res_pipe()
            fds += [res_r, res_w]
            pid, rep = _spawn(_spare_child(out_w, err_w, spec_r, res_w), (out_w, err_w, spec_r, res_w), ())
        except OSError as e:
            for fd in fds:
                os.close(fd)
            _diag("cannot fork a spare block process: %s" % os.strerror(e.errno))
            self.spare_retry = _now() + 1.0
            return False
        self.spare_retry = 0.0
        for fd in (out_w, err_w, spec_r, res_w):
            os.close(fd)
        for fd in (out_r, err_r, rep, res_r):
            os.set_blocking(fd, False)
        shep = _Shep(pid, rep, None)
        self.sheps[rep] = shep
        self.watch(rep, "report", shep)
        self.spares.append((shep, out_r, err_r, spec_w, res_r))
        return True

    def take_spare(self, spec):
        """Hands a block's spec to the spare; returns (shepherd, out fd, err fd) or None."""
        if not self.spares:
            return None
        lang, path, src, cwd, env, cred, user, zygote, code = spec
        body = _jdumps({"lang": lang, "file": path, "code": code, "cwd": cwd, "env": env,
                        "cred": None if cred is None else list(cred), "user": user, "zygote": zygote})
        if len(body) > 60000:  # more than an empty pipe takes at once: fork with the code instead
            return None
        shep, out_r, err_r, spec_w, res_r = self.spares.pop(0)  # the oldest: the most likely to be ready
        try:
            _write_all(spec_w, body)
            ok = True
        except OSError:  # it died: its report EOF reaps it
            ok = False
        os.close(spec_w)
        if not ok:
            _kill_trees([shep.pid])
            os.close(out_r)
            os.close(err_r)
            os.close(res_r)
            return None
        return shep, out_r, err_r, res_r

    def on_channel(self):
        try:
            b = os.read(0, 1 << 20)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as e:
            _diag("reading the channel: %s" % os.strerror(e.errno))
            return self.shutdown(1)
        if not b:
            if self.inbuf:
                return self.protocol_error("the channel closed in the middle of a frame")
            return self.shutdown(0)
        buf = self.inbuf
        buf += b
        pos = 0
        while len(buf) - pos >= 4:
            n = _U32.unpack_from(buf, pos)[0]
            if n < 5 or n > MAX_FRAME:
                return self.protocol_error("bad frame length %d" % n)
            if len(buf) - pos < 4 + n:
                break
            kind = buf[pos + 4]
            fid = _U32.unpack_from(buf, pos + 5)[0]
            payload = bytes(buf[pos + 9:pos + 4 + n])
            pos += 4 + n
            try:
                r = self.on_frame(kind, fid, payload)
            except _ProtocolError as e:
                return self.protocol_error(str(e))
            if r is not None:
                return r
        del buf[:pos]
        return None

    def protocol_error(self, msg):
        _diag("protocol error: " + msg)
        try:
            self.error(0, ERR_PROTOCOL, "protocol error: " + msg)
        except _HostGone:
            pass
        return self.shutdown(2)

    def shutdown(self, code):
        roots = [s.pid for s in self.sheps.values()]
        sids = []
        if not _SUBREAPER:
            sids = [s.cpid for s in self.sheps.values()]
        _kill_trees(roots, sids)
        for s in self.sheps.values():
            try:
                os.kill(s.pid, signal.SIGKILL)
            except OSError:
                pass
        for s in self.sheps.values():
            try:
                os.waitpid(s.pid, 0)
            except OSError:
                pass
        return code

    def on_frame(self, kind, fid, payload):
        if kind == RUN:
            self.on_run(fid, payload)
        elif kind == CANCEL:
            self.on_cancel(fid)
        elif kind == SESSION_OPEN:
            self.on_session_open(fid, payload)
        elif kind == SESSION_CLOSE:
            s = self.sessions.pop(fid, None)
            if s is not None:
                self.sess_end(s, "session closed")
        elif kind == SESSION_RESET:
            s = self.sessions.get(fid)
            if s is None:
                self.error(fid, ERR_UNKNOWN_SESSION, "unknown session %d" % fid)
            else:
                # Not "lost": the host would mark the session lost after the reset, when the
                # running block's EXIT reached its worker after SESSION_READY reached reset().
                self.sess_end(s, "session reset", lost=False)
                self.sess_start(s)
        elif kind == RESET:
            self.on_reset(fid, payload)
        elif kind == SHUTDOWN:
            return self.shutdown(0)
        elif kind == PING:
            self.send(PONG, fid, payload)
        else:
            raise _ProtocolError("unknown frame kind 0x%02x" % kind)
        return None

    def on_reset(self, rid, payload):
        """RESET (the pool's fast reset, between two tasks): ends every block and session, kills
        every process whose uid is not root's (_kill_non_root), then RESET_DONE. The spares stay:
        root processes forked from this agent that never ran a block's code (nothing of the task
        reaches them), and forking them again would give the same memory, the agent's. Refused while blocks run as root (a root block may have tampered with this
        agent: only the keeper's restart and a fresh agent are sure then). The agent reads only
        /proc's status lines meanwhile, nothing a block wrote; the files are the wipe's, as the
        blocks' user, after this."""
        try:
            req = _json_object(payload, "RESET")
            user = req.get("user")
            if os.geteuid() != 0:
                raise _Refusal(ERR_RESET_FAILED, "the agent is not root: it cannot kill the blocks")
            cred = _resolve_user(user) if isinstance(user, str) else None
            if cred is None or cred[0] == 0:
                raise _Refusal(ERR_RESET_FAILED, "the blocks run as root (user %r): only a restart "
                               "resets this container" % (user,))
        except _Refusal as e:
            self.error(rid, e.code, str(e))
            return
        self.end_all("the executor was reset")
        try:
            killed, rounds = _kill_non_root(RESET_KILL_WAIT)
        except _Refusal as e:
            self.error(rid, e.code, str(e))
            return
        self.culled.clear()
        self.mem_last = 0
        self.spare_retry = 0.0  # a fork bomb may have made the last one fail
        self.send_json(RESET_DONE, rid, {"killed": killed, "rounds": rounds})

    def end_all(self, why):
        """Every block ends now, killed (its EXIT sent after what its pipes hold), and every
        session with it (its blocks end lost, or refused). Their shepherds' reports come later and
        find nothing left to report to."""
        for b in list(self.blocks.values()):
            if not b.killed:
                b.killed = b.status is None
            _kill_trees([b.shep.pid], [] if _SUBREAPER else [b.shep.cpid])
            if b.started:
                self.block_drain(b)
            del self.blocks[b.id]
            b.out = self.unwatch(b.out)
            b.err = self.unwatch(b.err)
            b.res = self.unwatch(b.res)
            self.culled.discard(b.shep.pid)
            self.send_json(EXIT, b.id, _exit_json(b.status, b.killed, None))
        for s in list(self.sessions.values()):
            self.sess_end(s, why)
        self.sessions.clear()

    def busy(self, bid):
        if bid in self.blocks:
            return True
        for s in self.sessions.values():
            if (s.running is not None and s.running.id == bid) or any(e.id == bid for e in s.queue):
                return True
        return False

    def on_run(self, bid, payload):
        _t("run %d" % bid)
        if bid == 0:
            raise _ProtocolError("RUN with execution id 0")
        if self.busy(bid):
            raise _ProtocolError("RUN with execution id %d, which is still running" % bid)
        try:
            req = _json_object(payload, "RUN")
            lang = req.get("lang")
            if lang not in LANGS:
                raise _Refusal(ERR_UNKNOWN_LANGUAGE, "unknown language %r" % (lang,))
            path = _field(req, "file", (str,), None)
            if not path.startswith("/") or "\0" in path or path.endswith("/"):
                raise _Refusal(ERR_BAD_REQUEST, "the code file path must be absolute: %r" % path)
            code = _field(req, "code", (str,), None)
            cwd = _field(req, "cwd", (str,), "/workspace")
            env = _env_field(req)
            sid = req.get("session")
            if sid is not None:
                if not isinstance(sid, int) or isinstance(sid, bool):
                    raise _Refusal(ERR_BAD_REQUEST, "bad 'session' in request")
                s = self.sessions.get(sid)
                if s is None:
                    raise _Refusal(ERR_UNKNOWN_SESSION, "unknown session %d" % sid)
                if s.lost is not None:
                    self.error_lost(bid, s.lost)
                    return
                if lang != "python":
                    raise _Refusal(ERR_BAD_REQUEST, "a %s block cannot run in a session (python only)" % lang)
                grace = req.get("grace_ms", 2000)
                if not isinstance(grace, (int, float)) or isinstance(grace, bool) or grace < 0:
                    grace = 2000
                s.queue.append(_Entry(bid, {"id": bid, "file": path, "code": code, "cwd": cwd,
                                            "env": env, "delete": bool(req.get("delete"))}, grace))
                self.sess_pump(s)
                return
            user = req.get("user")
            cred = _resolve_user(user)
            zygote = lang == "python" and req.get("zygote") is True and _zygote_faithful(env)
            src = code.encode("utf-8", "surrogatepass")
        except _Refusal as e:
            self.error(bid, e.code, str(e))
            return
        b = _Block(bid)
        b.file, b.delete, b.cred = path, bool(req.get("delete")), cred
        b.oom0 = _oom_count()
        got = self.take_spare((lang, path, src, cwd, env, cred, user, zygote, code))
        _t("dispatched")
        if got is not None:
            b.shep, b.out, b.err, b.res = got
            b.shep.owner = b
            self.blocks[bid] = b
            return
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        res_r, res_w = _res_pipe()
        try:
            pid, rep = _spawn(_block_child((lang, path, src, cwd, env, cred, user, zygote), out_w, err_w,
                                           res_w), (out_w, err_w, res_w), ())
        except OSError as e:
            for fd in (out_r, out_w, err_r, err_w, res_r, res_w):
                os.close(fd)
            self.error(bid, ERR_SPAWN_FAILED, "cannot fork: %s" % os.strerror(e.errno))
            return
        os.close(out_w)
        os.close(err_w)
        os.close(res_w)
        for fd in (out_r, err_r, rep, res_r):
            os.set_blocking(fd, False)
        b.out, b.err, b.res = out_r, err_r, res_r
        b.shep = _Shep(pid, rep, b)
        self.sheps[rep] = b.shep
        self.blocks[bid] = b
        self.watch(rep, "report", b.shep)
        # out/err are watched from STARTED on (the pipes hold early output), so STARTED comes first.

    def on_cancel(self, bid):
        b = self.blocks.get(bid)
        if b is not None:
            if not b.killed:
                b.killed = b.status is None  # the main process's real status if it already ended
                _kill_trees([b.shep.pid], [] if _SUBREAPER else [b.shep.cpid])
            return
        for s in self.sessions.values():
            for e in s.queue:
                if e.id == bid:
                    s.queue.remove(e)
                    self.send_json(EXIT, bid, {"code": None, "signal": None, "oom": False,
                                               "session_lost": False})
                    return
            e = s.running
            if e is not None and e.id == bid and s.proc is not None and not e.interrupted:
                e.interrupted = True
                p = s.proc
                try:
                    os.write(p.intr, _U32.pack(bid))
                except OSError:
                    pass
                # What the block started dies with it (Execution::cancel kills the block's tree);
                # the session process is interrupted instead, and keeps its namespace.
                _sess_kill_block(p, e.old, signal.SIGINT)
                e.deadline = _now() + e.grace / 1000.0
                return

    # -- block output and reports
    def forward(self, fd, kind, bid):
        """One read of at most CHUNK bytes: 1 = forwarded, 0 = nothing yet, -1 = EOF."""
        n = _read_chunk_into(fd)
        if n is None:
            return 0
        if not n:
            return -1
        try:
            if bid:
                _HDR.pack_into(_FWD, 0, 5 + n, kind, bid)
                _write_all(1, _FWD_VIEW[:_HDR.size + n])
        except OSError:  # EPIPE: the host is gone
            raise _HostGone()
        finally:
            _FWD_BODY[:n] = _ZEROS[:n]
        return 1

    def on_out(self, b, fd, ev):
        if self.forward(fd, STDOUT, b.id) < 0:
            _t("out-eof")
            b.out = self.unwatch(fd)
            self.block_maybe_done(b)

    def on_err(self, b, fd, ev):
        if self.forward(fd, STDERR, b.id) < 0:
            _t("err-eof")
            b.err = self.unwatch(fd)
            self.block_maybe_done(b)

    def on_res(self, b, fd, ev):
        """A read of the block's results pipe: RESULT frames (see rich.py), each after what the
        block wrote to stdout and stderr before it."""
        data = _read_chunk(fd)
        if data is None:
            return
        if not data:
            b.res = self.unwatch(fd)
            return
        self.res_feed(b.rr, b.id, data, lambda: self.block_drain(b), fd)

    def res_feed(self, rr, bid, data, drain, fd):
        """Feeds a results pipe's bytes to its reader; `bid` 0 drops what it parses (a session's
        results between blocks); drain() first forwards the block's stdout and stderr. Each
        record is acknowledged on `fd` once framed; a malformed one shuts the pipe down, so a
        block waiting for its acknowledgement goes on."""
        def emit(payload):
            if bid:
                drain()
                self.send(RESULT, bid, payload)
            try:
                os.write(fd, b"\x01")  # non-blocking: a block that never reads them loses acks
            except OSError:
                pass
        if not rr.feed(data, emit) and not rr.said:
            rr.said = True
            if _socket is not None:
                try:
                    _socket.socket(fileno=os.dup(fd)).shutdown(_socket.SHUT_RDWR)
                except OSError:
                    pass
            if bid:
                drain()
                self.send(STDERR, bid, _RES_BROKEN)

    def block_drain(self, b):
        """Forwards what the block's stdout and stderr pipes hold now (bounded: a child of the
        block may write on)."""
        for name, kind in (("out", STDOUT), ("err", STDERR)):
            for _ in range(1024):
                fd = getattr(b, name)
                if fd < 0:
                    break
                r = self.forward(fd, kind, b.id)
                if r < 0:
                    setattr(b, name, self.unwatch(fd))
                if r <= 0:
                    break

    def on_report(self, shep, fd, ev):
        try:
            data = os.read(fd, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.unwatch(fd)
            del self.sheps[fd]
            try:
                os.waitpid(shep.pid, 0)
            except OSError:
                pass
            self.shep_gone(shep)
            return
        shep.buf += data
        while len(shep.buf) >= 5:
            n = _U32.unpack_from(shep.buf, 1)[0]
            if len(shep.buf) < 5 + n:
                break
            kind, rec = shep.buf[:1], shep.buf[5:5 + n]
            shep.buf = shep.buf[5 + n:]
            owner = shep.owner
            if owner is None:  # an idle spare says nothing
                continue
            _t("agent-" + kind.decode("ascii", "replace"))
            if kind == b"S":
                shep.cpid = _U32.unpack(rec)[0]
                if (owner.killed or owner.dying) if isinstance(owner, _SessProc) else owner.killed:
                    # Killed before the shepherd had forked the child: the kill found no tree then.
                    _kill_trees([shep.pid], [] if _SUBREAPER else [shep.cpid])
                if isinstance(owner, _Block):
                    self.block_started(owner)
                else:
                    self.sess_ready(owner)
            elif kind == b"E":
                msg = rec.decode("utf-8", "replace")
                code, _, text = msg.partition(" ")  # _child_fail's "CODE MESSAGE"
                if code in _ERR_CODES:
                    msg = text
                else:  # not _child_fail's: never expected
                    code = ERR_SPAWN_FAILED
                if isinstance(owner, _Block):
                    self.block_failed(owner, code, msg)
                else:
                    self.sess_failed(owner, code, msg)
            elif kind == b"X":
                status = _I32.unpack(rec)[0]
                if isinstance(owner, _Block):
                    if self.blocks.get(owner.id) is owner and owner.status is None:
                        owner.status = status
                        if (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
                                and not owner.killed and owner.oom0 is not None
                                and (_oom_count() or 0) > owner.oom0):
                            # OOM-killed: the rest of its tree goes at once, as its memory (maybe
                            # socket buffers held by its children) would otherwise take one OOM
                            # kill per process to free, and with every block process gone, the
                            # kernel's next pick is the agent.
                            _kill_trees([shep.pid], [] if _SUBREAPER else [shep.cpid])
                        self.block_maybe_done(owner)
                else:
                    self.sess_proc_exit(owner, status)

    def shep_gone(self, shep):
        owner = shep.owner
        if owner is None:
            for sp in self.spares:
                if sp[0] is shep:  # an idle spare died
                    _diag("the spare block process died")
                    for fd in sp[1:]:
                        os.close(fd)
                    self.spares.remove(sp)
                    break
            return
        if isinstance(owner, _Block):
            if self.blocks.get(owner.id) is owner and owner.status is None:  # not expected
                _diag("the shepherd of execution %d died" % owner.id)
                _kill_trees([], [shep.cpid])
                if not owner.started:
                    return self.block_failed(owner, ERR_SPAWN_FAILED, "the block's shepherd died")
                del self.blocks[owner.id]
                owner.out = self.unwatch(owner.out)
                owner.err = self.unwatch(owner.err)
                owner.res = self.unwatch(owner.res)
                self.send_json(EXIT, owner.id, _exit_json(None, owner.killed, None))
        else:
            self.sess_proc_exit(owner, None)

    def block_started(self, b):
        if self.blocks.get(b.id) is b and not b.started:
            b.started = True
            if not b.killed:
                self.send_json(STARTED, b.id, {"pid": b.shep.cpid})
            self.watch(b.out, "out", b)
            self.watch(b.err, "err", b)
            self.watch(b.res, "res", b)

    def block_failed(self, b, code, msg):
        if self.blocks.get(b.id) is not b:
            return
        del self.blocks[b.id]
        b.out = self.unwatch(b.out)
        b.err = self.unwatch(b.err)
        b.res = self.unwatch(b.res)
        if b.killed:  # cancelled while it was being set up: it never started
            self.send_json(EXIT, b.id, _exit_json(None, True, None))
        else:
            self.error(b.id, code, msg)

    def block_maybe_done(self, b):
        if b.status is None or self.blocks.get(b.id) is not b:
            return
        if b.killed and (b.out >= 0 or b.err >= 0):
            # Cancelled and reaped: whatever still holds the pipes escaped the kill (possible only
            # without a subreaper). Forward what is buffered and end the block anyway.
            for name, kind in (("out", STDOUT), ("err", STDERR)):
                for _ in range(1024):
                    fd = getattr(b, name)
                    if fd < 0 or self.forward(fd, kind, b.id) <= 0:
                        break
                setattr(b, name, self.unwatch(getattr(b, name)))
        if b.out >= 0 or b.err >= 0:
            return
        # Not its EOF: a process the block left behind may hold the results socket after it
        # closed stdout and stderr (a daemon), and must not hold the block's end. What the
        # block sent is here already: each record waited for its acknowledgement.
        for _ in range(1024):
            data = _read_chunk(b.res) if b.res >= 0 else None
            if not data:
                break
            self.res_feed(b.rr, b.id, data, lambda: None, b.res)
        b.res = self.unwatch(b.res)
        del self.blocks[b.id]
        if b.delete:
            _delete_as(b.file, b.cred)
        culled = b.shep.pid in self.culled
        self.culled.discard(b.shep.pid)
        self.send_json(EXIT, b.id, _exit_json(b.status, b.killed, b.oom0, culled=culled))
        _t("exit %d" % b.id)

    # -- memory and timeouts
    def mem_check(self):
        """Memory that no process is charged for (socket buffers, tmpfs pages) leaves the OOM killer
        to choose by RSS among processes at the same oom_score_adj. Every block and session process
        starts at 1000 (_drop_privileges), so the kernel kills those first; but a block may lower
        its own back to 0, the control plane's floor, and then the agent is the largest process
        there. So while any block or session lives, this reads the cgroup's usage once per
        MEM_TICK (one small read; nothing at all when no block runs; four times as often past a
        quarter of the limit, as socket buffers fill at GB/s), and past half the limit it
        scans the blocks' trees and SIGKILLs every process whose score is below 1000 (it lowered it
        on purpose), then the rest of its block (or session), reported as an OOM kill. Rescans while above: at once if usage grew by a sixteenth of the limit since
        the last scan, else every MEM_RESCAN, so a steady large block costs little.

        Here, not in each shepherd: the agent is the one process that must survive, it already
        wakes on a timer and knows every tree, so one read per tick covers all blocks; a
        shepherd sits in waitpid and would need a timer (and a cgroup read) of its own per block.
        Only started blocks and ready sessions are scanned: before that, the block process may
        still be root at 0, on its way to _drop_privileges."""
        if self.mem is None or not (self.blocks or self.sessions):
            return
        now = _now()
        if now < self.mem_next:
            return
        self.mem_next = now + MEM_TICK
        usage, limit = self.mem
        try:
            used = int(_read_small(usage))
        except (TypeError, ValueError):
            return
        if used >= limit // 4:  # closer to the threshold: look four times as often
            self.mem_next = now + MEM_TICK / 4
        if used < limit // 2:
            self.mem_last = 0
            return
        if used < self.mem_last + limit // 16 and now < self.mem_scan + MEM_RESCAN:
            return
        self.mem_last, self.mem_scan = used, now
        trees = [(b.shep, b.id, None) for b in self.blocks.values() if b.started and not b.killed]
        for sess in self.sessions.values():
            p = sess.proc
            if p is not None and p.ready and not p.dying and p.shep is not None:
                e = sess.running
                trees.append((p.shep, e.id if e is not None and e.started else None, p))
        if not trees:
            return
        table = _proc_table()
        me = os.getpid()
        for shep, bid, sproc in trees:
            sids = [shep.cpid] if not _SUBREAPER and shep.cpid else []
            for pid in _tree(table, [shep.pid], sids):
                if pid == me or table[pid][0] in (b"Z", b"X"):
                    continue
                try:
                    adj = int(_read_small("/proc/%d/oom_score_adj" % pid))
                except (TypeError, ValueError):
                    continue
                if adj >= 1000:
                    continue
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    continue
                self.culled.add(shep.pid)
                if bid is not None:
                    self.send(STDERR, bid, (
                        "dockexec: killed process %d: it lowered its oom_score_adj to %d while the "
                        "container's memory was %d of %d MiB\n"
                        % (pid, adj, used >> 20, limit >> 20)).encode())
            if shep.pid in self.culled:
                # The whole block goes, as an OOM kill of it would: its main process dies of
                # SIGKILL and its EXIT says oom (a session is lost, as it would be).
                if sproc is not None:
                    self.sess_kill(sproc)
                else:
                    _kill_trees([shep.pid], sids)

    def next_timeout(self):
        dl = [s.running.deadline for s in self.sessions.values()
              if s.running is not None and s.running.deadline is not None]
        if len(self.spares) < SPARES and self.blocks:
            dl.append(max(_now() + self.spare_wait(), self.spare_retry))
        if self.mem is not None and (self.blocks or self.sessions):
            dl.append(self.mem_next)
        if not dl:
            return None
        return max(0, int((min(dl) - _now()) * 1000) + 1)



# Within one poll round: reports and session control first (STARTED goes out before any output,
# and a DONE drains the pipes itself), then stdout before stderr, then rich results (which drain
# stdout and stderr themselves first).
_ORDER = {"ctl": 0, "report": 1, "out": 2, "sout": 2, "err": 3, "serr": 3, "res": 4, "sres": 4,
          "cmd": 5}


def _main():
    agent = _Agent()
    try:
        return agent.run()
    except _HostGone:
        return agent.shutdown(0)
    except Exception as e:  # a bug: say so, leave nothing running
        _diag("internal error: %r" % (e,))
        try:
            sys.excepthook(type(e), e, e.__traceback__)
            agent.error(0, ERR_INTERNAL, "internal agent error: %r" % (e,))
        except BaseException:
            pass
        return agent.shutdown(3)


# ------------------------------------------------------------------------- top level

try:
    _job = None
    _rc = _main()
except _Become as _b:
    _job = _b.args[0]
    _b = None
if _job is None:
    os._exit(_rc)

# From here on we are a forked block or session process, back at the top level with the agent's
# stack gone. Nothing below runs in the agent.
if _job[0] == "spare":
    _job = _spare_wait(*_job[1:])
if _job[0] == "session":
    try:
        _sess_loop(*_job[1:])
    except BaseException:  # the loop's own pipes failed (a block closed them): no agent traceback
        os._exit(_SESS_BROKEN)
    _job = None
    sys.exit(0)

_path, _src = _job[1], _job[2]
_job = None
_t("top")
_ns = _zygote_prepare(_path)
_rich_setup()
_exc = None
# The profile and trace functions the block leaves set see none of the agent's own exit code, as
# a fresh run's would not: _untracer saves and unsets them from C as `del` frees it, right after
# the block's code; _zygote_exit (or the interpreter's atexit) sets them again.
_hooks = []
_off = _untracer(_hooks)
try:
    _co = compile(_src, _path, "exec", dont_inherit=True)
except BaseException as _e:
    _exc = _e
else:
    _src = None
    try:
        _t("code")
        exec(_co, _ns)
    except BaseException as _e:
        _exc = _e
del _off
_rich_after()  # after the untracer: a trace function the block left set sees none of it
_t("code-done")
_co = None
_code = None  # the exit status, where the interpreter would not have to print or signal anything
if _exc is None:
    _code = 0
elif isinstance(_exc, SystemExit):
    _c = _exc.code
    if _c is None:
        _code = 0
    elif type(_c) in (int, bool) and -(1 << 31) <= _c < (1 << 31):
        _code = int(_c)
    _c = None
elif not isinstance(_exc, KeyboardInterrupt):
    _print_exc(_exc, _hooks)
    _code = 1
if isinstance(_exc, KeyboardInterrupt):
    _print_exc(_exc, _hooks)  # before __file__ goes, as the interpreter prints it
if not isinstance(_exc, SystemExit):
    _main_ended(_ns)
_ns = None
if _code is not None:
    _zygote_exit(_code, _hooks)  # does not return if the interpreter's teardown would be invisible
    _hooks = None  # set again by the interpreter's atexit
if _exc is not None:
    # Outside any except block, so nothing chains to the agent, and from no global of the agent's:
    # whatever the exception holds (the block's frames, so its namespace) must be freed, and
    # finalized, as the interpreter tears down. SystemExit: the interpreter exits with its code
    # (its traceback is never printed). A KeyboardInterrupt: printed above (without agent frames),
    # then re-raised with a silent hook (slice: a C callable taking three arguments, which no trace
    # function sees), so the process dies of SIGINT. Anything else was printed above: exit 1.
    if isinstance(_exc, SystemExit):
        _exc.__traceback__ = _exc.__context__ = _exc.__cause__ = None
    elif isinstance(_exc, KeyboardInterrupt):
        sys.excepthook = slice
    else:
        _exc = SystemExit(1)
    _exc = [_exc]
    if _hooks is not None:  # for the interpreter's own exit steps: threading's, atexit, teardown
        sys.settrace(_hooks[1])
        sys.setprofile(_hooks[0])  # it sees the agent's module frame return, then the exit steps
    raise _exc.pop()
