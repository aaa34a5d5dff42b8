"""Tests for the dockexec warm agent (src/runner/agent/), speaking protocol v1 to it.

    python3 tests/agent/harness.py [-v] [-k NAME] [--boot BOOT_PATH] AGENT_PATH

AGENT_PATH is the agent's dir, src/runner/agent: its files are joined in agent/order.txt's order,
as agent.rs's AGENT_SOURCE joins them (a unit test there checks that the two orders agree), or one
file holding the whole joined script.

Runs on the host (as root: all tests) and inside dockexec-test/python (python3-minimal: no
json/ctypes/multiprocessing, so the subreaper and multiprocessing tests skip there), e.g.

    docker run -i --rm --network none -v "$PWD":/src:ro dockexec-test/python \\
        python3 /src/tests/agent/harness.py /src/src/runner/agent

Standard library only (python3-minimal has no unittest, queue or shutil). The agent is started the
way the host starts it: as `python3 -c SRC` (SRC read by a short -c stub from a memfd: it passed 128 KiB, too long for one argument), pipes on 0/1/2; with `--boot src/runner/agent_boot.py`
(as root, in the image) through the bootstrap, the source on stdin, exactly as agent.rs does. `-v` prints timings (p50 of RUN ->
EXIT round trips). Prints `N passed, M failed` (and skips with reasons) last; exit 1 on failure.
"""
import os
import random
import re
import struct
import subprocess
import sys
import tempfile
import threading
import time

try:
    import json
except ImportError:
    json = None

# Frame kinds (src/runner/protocol.rs's Kind is their one source; a unit test there checks
# these).
RUN, CANCEL, SESSION_OPEN, SESSION_CLOSE, SHUTDOWN, PING, SESSION_RESET = 1, 2, 3, 4, 5, 6, 7
READY, STARTED, STDOUT, STDERR, EXIT, ERROR, SESSION_READY, PONG = (
    0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88)
RESULT = 0x89
RESET, RESET_DONE = 8, 0x8A  # the pool's fast reset

# Error codes: every ERROR's "code" (src/runner/protocol.rs's ErrorCode is their one source; a
# unit test there checks these).
ERR_PROTOCOL = "protocol_error"
ERR_INTERNAL = "internal_error"
ERR_BAD_REQUEST = "bad_request"
ERR_UNKNOWN_LANGUAGE = "unknown_language"
ERR_UNKNOWN_USER = "unknown_user"
ERR_UNKNOWN_SESSION = "unknown_session"
ERR_SESSION_EXISTS = "session_exists"
ERR_SESSION_LOST = "session_lost"
ERR_SESSION_ENDED = "session_ended"
ERR_SPAWN_FAILED = "spawn_failed"
ERR_RESET_FAILED = "reset_failed"

ERR_CODES = frozenset((ERR_PROTOCOL, ERR_INTERNAL, ERR_BAD_REQUEST, ERR_UNKNOWN_LANGUAGE,
                       ERR_UNKNOWN_USER, ERR_UNKNOWN_SESSION, ERR_SESSION_EXISTS, ERR_SESSION_LOST,
                       ERR_SESSION_ENDED, ERR_SPAWN_FAILED, ERR_RESET_FAILED))
# Every ERROR frame any agent of this run sent without a known code (checked at the end of main).
UNCODED_ERRORS = []

NAMES = {READY: "READY", STARTED: "STARTED", STDOUT: "STDOUT", STDERR: "STDERR", EXIT: "EXIT",
         ERROR: "ERROR", SESSION_READY: "SESSION_READY", PONG: "PONG"}
VERBOSE = False
TIMEOUT = 30.0
BOOT_PATH = None  # --boot PATH: start each agent through agent_boot.py, as the host does


# ----------------------------------------------------------------------------- tiny JSON (no json in -minimal)

def jdumps(o):
    if json is not None:
        return json.dumps(o).encode()
    if o is None:
        return b"null"
    if o is True:
        return b"true"
    if o is False:
        return b"false"
    if isinstance(o, (int, float)):
        return repr(o).encode()
    if isinstance(o, str):
        out = ['"']
        for ch in o:
            c = ord(ch)
            if ch in '"\\':
                out.append("\\" + ch)
            elif c < 0x20 or c > 0x7E:
                if c > 0xFFFF:
                    c -= 0x10000
                    out.append("\\u%04x\\u%04x" % (0xD800 + (c >> 10), 0xDC00 + (c & 0x3FF)))
                else:
                    out.append("\\u%04x" % c)
            else:
                out.append(ch)
        out.append('"')
        return "".join(out).encode()
    if isinstance(o, (list, tuple)):
        return b"[" + b",".join(jdumps(x) for x in o) + b"]"
    if isinstance(o, dict):
        return b"{" + b",".join(jdumps(str(k)) + b":" + jdumps(v) for k, v in o.items()) + b"}"
    raise TypeError(type(o))


def jloads(b):
    if json is not None:
        return json.loads(b.decode())
    # Only ever parses what the agent sends: ASCII JSON objects. Evaluate it as a Python literal.
    s = b.decode()
    return eval(s, {"__builtins__": {}}, {"true": True, "false": False, "null": None})


# ----------------------------------------------------------------------------- the client

class Frames(object):
    def __init__(self):
        self.cond = threading.Condition()
        self.by_id = {}
        self.all = []
        self.eof = False


def agent_source(path):
    """The agent's script: a dir's files joined in its order.txt's order (as agent.rs joins them),
    or one file's text."""
    if not os.path.isdir(path):
        with open(path) as f:
            return f.read()
    with open(os.path.join(path, "order.txt")) as f:
        names = [l.strip() for l in f if l.strip() and not l.startswith("#")]
    parts = []
    for name in names:
        with open(os.path.join(path, name)) as f:
            parts.append(f.read())
    return "".join(parts)


class Agent(object):
    """One agent process, started like the host starts it."""

    def __init__(self, path, prefix="", cwd=None, extra_env=None):
        self.src = prefix + agent_source(path)
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        # `python3` in blocks is this very interpreter (pyenv shims would pick another).
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "/usr/bin:/bin")
        env.update(extra_env or {})
        self.env = env
        pass_fds = ()
        if BOOT_PATH is None:
            # `python3 -c SRC`, but SRC no longer fits one argument (128 KiB): a stub in argv
            # reads it from a memfd, closes that, and runs it as -c would (same globals, same
            # '<string>' file name, sys.path[0] == '').
            src = self.src.encode()
            fd = os.memfd_create("agent-src", 0)
            os.write(fd, src)
            pass_fds = (fd,)
            argv = ["python3", "-c", "import os\n_s = os.pread(%d, %d, 0)\nos.close(%d)\n"
                    "exec(compile(_s, '<string>', 'exec'))" % (fd, len(src), fd)]
        else:  # as agent.rs does: the bootstrap in argv, the source first on stdin
            argv = ["python3", "-I", "-S", "-c", open(BOOT_PATH).read(), "python3"]
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                  cwd=cwd or WS, close_fds=True, pass_fds=pass_fds)
        for fd in pass_fds:
            os.close(fd)
        if BOOT_PATH is not None:
            src = self.src.encode()
            self.p.stdin.write(b"DXAGENT1" + struct.pack(">I", len(src)) + src)
            self.p.stdin.flush()
        self.frames = Frames()
        self.stderr = []
        self.lock = threading.Lock()
        self.next_id = 1
        self.t_out = threading.Thread(target=self._read_out, daemon=True)
        self.t_err = threading.Thread(target=self._read_err, daemon=True)
        self.t_out.start()
        self.t_err.start()
        k, i, payload = self.wait_kind(READY, 0)
        self.ready = jloads(payload)

    def _read_exact(self, n):
        buf = b""
        while len(buf) < n:
            b = self.p.stdout.read(n - len(buf))
            if not b:
                return None
            buf += b
        return buf

    def _read_out(self):
        f = self.frames
        while True:
            h = self._read_exact(4)
            if h is None:
                break
            n = struct.unpack(">I", h)[0]
            body = self._read_exact(n)
            if body is None:
                break
            kind, fid = body[0], struct.unpack(">I", body[1:5])[0]
            fr = (kind, fid, body[5:])
            if kind == ERROR:
                try:
                    code = jloads(body[5:]).get("code")
                except Exception:
                    code = None
                if code not in ERR_CODES:
                    UNCODED_ERRORS.append(body[5:])
            with f.cond:
                f.all.append(fr)
                f.by_id.setdefault(fid, []).append(fr)
                f.cond.notify_all()
        with f.cond:
            f.eof = True
            f.cond.notify_all()

    def _read_err(self):
        while True:
            b = self.p.stderr.read1(65536) if hasattr(self.p.stderr, "read1") else self.p.stderr.read(1)
            if not b:
                break
            self.stderr.append(b)

    def send(self, kind, fid, payload=b""):
        with self.lock:
            self.p.stdin.write(struct.pack(">IBI", 5 + len(payload), kind, fid) + payload)
            self.p.stdin.flush()

    def raw(self, data):
        self.p.stdin.write(data)
        self.p.stdin.flush()

    def new_id(self):
        with self.lock:
            i = self.next_id
            self.next_id += 1
            return i

    def wait(self, pred, timeout=TIMEOUT, what="a frame"):
        f = self.frames
        deadline = time.monotonic() + timeout
        with f.cond:
            while True:
                r = pred(f)
                if r is not None:
                    return r
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("timed out waiting for %s" % what)
                if f.eof:
                    # one more check after EOF, then give up
                    r = pred(f)
                    if r is not None:
                        return r
                    raise AssertionError("agent closed the channel while waiting for %s; stderr: %r"
                                         % (what, self.err_text()[-2000:]))
                f.cond.wait(min(left, 0.5))

    def wait_kind(self, kind, fid, timeout=TIMEOUT):
        def pred(f):
            for fr in f.by_id.get(fid, ()):
                if fr[0] == kind:
                    return fr
        return self.wait(pred, timeout, "%s id %d" % (NAMES.get(kind, kind), fid))

    def result(self, fid, timeout=TIMEOUT):
        """Waits for EXIT or ERROR of an execution; returns a Result."""
        def pred(f):
            for fr in f.by_id.get(fid, ()):
                if fr[0] in (EXIT, ERROR):
                    return Result(list(f.by_id.get(fid, ())))
        return self.wait(pred, timeout, "EXIT/ERROR of execution %d" % fid)

    def start(self, code, lang="sh", fid=None, **kw):
        fid = fid or self.new_id()
        ext = {"python": "py", "sh": "sh", "bash": "sh", "pwsh": "ps1"}.get(lang, "txt")
        req = {"lang": lang, "file": kw.pop("file", os.path.join(WS, "b%d.%s" % (fid, ext))),
               "code": code, "user": kw.pop("user", None), "cwd": kw.pop("cwd", WS),
               "env": kw.pop("env", {}), "zygote": kw.pop("zygote", False),
               "session": kw.pop("session", None), "delete": kw.pop("delete", False),
               "grace_ms": kw.pop("grace_ms", 2000)}
        req.update(kw)
        self.send(RUN, fid, jdumps(req))
        return fid

    def run(self, code, lang="sh", timeout=TIMEOUT, **kw):
        return self.result(self.start(code, lang, **kw), timeout)

    def ping(self, payload=b"hi", timeout=10):
        fid = self.new_id()
        self.send(PING, fid, payload)
        return self.wait_kind(PONG, fid, timeout)[2] == payload

    def open_session(self, user=None, env=None, timeout=TIMEOUT):
        sid = self.new_id()
        self.send(SESSION_OPEN, sid, jdumps({"user": user, "cwd": WS, "env": env or {}}))
        fr = self.wait(lambda f: next((x for x in f.by_id.get(sid, ()) if x[0] in (SESSION_READY, ERROR)),
                                      None), timeout, "SESSION_READY %d" % sid)
        assert fr[0] == SESSION_READY, "session did not open: %r" % (fr,)
        return sid

    def err_text(self):
        return b"".join(self.stderr).decode("utf-8", "replace")

    def close(self, timeout=10):
        """EOF on the channel; returns the agent's exit code."""
        try:
            self.p.stdin.close()
        except (OSError, ValueError):
            pass
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()  # our own child
            self.p.wait()
            raise AssertionError("the agent did not exit within %ss of EOF" % timeout)


class Result(object):
    def __init__(self, frames):
        self.frames = frames
        self.started = None
        self.exit = None
        self.error = None
        self.error_obj = None  # the whole ERROR payload (code, cause for a lost session)
        self.chunks = []
        for k, i, p in frames:
            if k == STARTED:
                self.started = jloads(p)
            elif k == STDOUT:
                self.chunks.append(("out", p))
            elif k == STDERR:
                self.chunks.append(("err", p))
            elif k == EXIT:
                self.exit = jloads(p)
            elif k == ERROR:
                self.error_obj = jloads(p)
                self.error = self.error_obj["message"]
        self.runs = []  # the chunks with adjacent pieces of one stream merged
        for s, p in self.chunks:
            if self.runs and self.runs[-1][0] == s:
                self.runs[-1] = (s, self.runs[-1][1] + p)
            else:
                self.runs.append((s, p))
        self.out = b"".join(p for s, p in self.chunks if s == "out")
        self.err = b"".join(p for s, p in self.chunks if s == "err")

    @property
    def code(self):
        return self.exit and self.exit["code"]

    @property
    def signal(self):
        return self.exit and self.exit["signal"]

    def __repr__(self):
        return "Result(exit=%r, error=%r, out=%r, err=%r)" % (self.exit, self.error, self.out[:300],
                                                               self.err[:600])


# ----------------------------------------------------------------------------- helpers

class Skip(Exception):
    pass


def check(cond, msg="", *args):
    if not cond:
        raise AssertionError((msg % args) if args else msg)


def eq(a, b, what=""):
    if a != b:
        raise AssertionError("%s: %r != %r" % (what or "values differ", a, b))


def is_root():
    return os.geteuid() == 0


def in_container():
    return os.getpid() == 1  # `docker run ... harness.py`: its own pid namespace


def pick_uid():
    """65534 (nobody) if no process runs as it, else a uid no process uses: `kill -9 -1` as that
    user can then only hit what this harness started."""
    used = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                used.add(os.stat("/proc/" + name).st_uid)
            except OSError:
                pass
    names = set()
    for line in open("/etc/passwd"):
        parts = line.split(":")
        if len(parts) > 2:
            names.add(parts[2])
    if 65534 not in used:
        return "65534:65534"
    for uid in range(61000, 62000):
        if uid not in used and str(uid) not in names:
            return "%d:%d" % (uid, uid)
    raise Skip("no unused uid")


def procs_with(token):
    """pid -> state of every process whose cmdline contains token."""
    found = {}
    tok = token.encode()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % name, "rb") as f:
                cmd = f.read()
            with open("/proc/%s/stat" % name, "rb") as f:
                st = f.read()
        except OSError:
            continue
        if tok in cmd:
            found[int(name)] = st[st.rfind(b")") + 2:].split()[0].decode()
    return found


def descendants(root):
    """{pid: cmdline} of every live process below root."""
    kids = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name, "rb") as f:
                    st = f.read()
            except OSError:
                continue
            fields = st[st.rfind(b")") + 2:].split()
            if fields[0] != b"Z":
                kids.setdefault(int(fields[1]), []).append(int(name))
    out, todo = {}, list(kids.get(root, ()))
    while todo:
        p = todo.pop()
        try:
            with open("/proc/%d/cmdline" % p, "rb") as f:
                out[p] = f.read()[:80]
        except OSError:
            out[p] = b"?"
        todo.extend(kids.get(p, ()))
    return out


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            st = f.read()
    except OSError:
        return False
    return st[st.rfind(b")") + 2:].split()[0] != b"Z"


def wait_until(fn, timeout=5.0, step=0.02):
    deadline = time.monotonic() + timeout
    while True:
        r = fn()
        if r:
            return r
        if time.monotonic() > deadline:
            return r
        time.sleep(step)


def kill_ours(pids):
    for p in pids:
        try:
            os.kill(p, 9)
        except OSError:
            pass


def rmtree(path):
    for root, dirs, files in os.walk(path, topdown=False):
        for n in files:
            try:
                os.unlink(os.path.join(root, n))
            except OSError:
                pass
        for n in dirs:
            p = os.path.join(root, n)
            try:
                if os.path.islink(p):
                    os.unlink(p)
                else:
                    os.rmdir(p)
            except OSError:
                pass
    try:
        os.rmdir(path)
    except OSError:
        pass


def p50(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def has_module(name):
    r = subprocess.run(["python3", "-c", "import " + name], env=A.env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    return r.returncode == 0


# ----------------------------------------------------------------------------- tests

TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


A = None  # the shared agent
WS = None  # workspace (the agent's cwd), writable by the test user
TMP = None
UID = None


@test
def ready():
    r = A.ready
    eq(r["protocol"], 1, "protocol")
    eq(r["pid"], A.p.pid, "pid")
    eq(r["python"], "%d.%d.%d" % sys.version_info[:3], "python")
    check(isinstance(r["subreaper"], bool) and isinstance(r["warnings"], list), "fields: %r", r)
    check(r["zygote"] is True, "zygote %r", r)
    try:
        import ctypes  # noqa: F401
        check(r["subreaper"], "ctypes is here but no subreaper: %r", r)
    except ImportError:
        check(not r["subreaper"] and any("ctypes" in w for w in r["warnings"]), "warning: %r", r)
    check(A.ping(b"\x00\xffpayload"), "PONG payload")


@test
def sh_true_echo():
    r = A.run("true")
    eq(r.exit, {"code": 0, "signal": None, "oom": False, "session_lost": False}, "exit of true")
    check(r.started and r.started["pid"] > 0, "STARTED pid: %r", r)
    eq(r.frames[0][0], STARTED, "first frame is STARTED")
    r = A.run("echo hello")
    eq(r.out, b"hello\n", "echo")
    eq(r.code, 0, "echo exit")
    r = A.run("echo hi from bash ${BASH_VERSION%%.*}", lang="bash")
    check(r.out.startswith(b"hi from bash ") and r.code == 0, "bash: %r", r)


@test
def exit_codes_and_signals():
    for c in (0, 1, 3):
        eq(A.run("exit %d" % c).code, c, "exit %d" % c)
    r = A.run("kill -TERM $$")
    eq((r.code, r.signal), (None, 15), "SIGTERM")
    r = A.run("import os; os.kill(os.getpid(), 9)", lang="python", zygote=True)
    eq((r.code, r.signal, r.exit["oom"]), (None, 9, False), "self SIGKILL is not OOM")
    eq(A.run("import sys; sys.exit(3)", lang="python").code, 3, "python exit 3")


@test
def stdout_stderr_order():
    for lang, code, zy in (("python", "import sys\nprint('out')\nprint('err', file=sys.stderr)\n", False),
                           ("python", "import sys\nprint('out')\nprint('err', file=sys.stderr)\n", True),
                           ("sh", "echo out; echo err >&2", False)):
        good = 0
        for i in range(20):
            r = A.run(code, lang=lang, zygote=zy)
            if r.runs == [("out", b"out\n"), ("err", b"err\n")]:
                good += 1
            else:
                print("    order %s zygote=%s: %r" % (lang, zy, r.runs))
        eq(good, 20, "%s zygote=%s right order out of 20" % (lang, zy))


@test
def non_utf8_bytes():
    r = A.run(r"printf '\377\376\000abc\200'")
    eq(r.out, b"\xff\xfe\x00abc\x80", "raw bytes")
    r = A.run("import sys; sys.stderr.buffer.write(bytes(range(256)))", lang="python", zygote=True)
    eq(r.err, bytes(range(256)), "raw stderr bytes")


@test
def five_mib():
    data = bytes(range(256)) * (5 * 4096)
    for zy in (False, True):
        r = A.run("import sys; sys.stdout.buffer.write(bytes(range(256)) * (5 * 4096))", lang="python",
                  zygote=zy)
        eq(r.code, 0, "exit")
        check(r.out == data, "5 MiB intact (got %d bytes)", len(r.out))
        check(all(len(p) <= 65536 for s, p in r.chunks), "chunks <= 64 KiB")


@test
def concurrent_blocks():
    ids = []
    codes = {}
    for i in range(8):
        tag = "block%d-" % i
        if i % 3 == 0:
            code, lang, zy = "i=0; while [ $i -lt 3000 ]; do echo %s$i; i=$((i+1)); done" % tag, "sh", False
        else:
            code = ("import sys\nfor i in range(3000):\n    sys.stdout.write('%s%%d\\n' %% i)\n"
                    "    if i %% 500 == 0: sys.stderr.write('%s-err\\n')\n" % (tag, tag))
            lang, zy = "python", i % 3 == 1
        fid = A.start(code, lang=lang, zygote=zy)
        ids.append((fid, tag))
    for fid, tag in ids:
        r = A.result(fid)
        eq(r.code, 0, "exit of %s" % tag)
        want = "".join("%s%d\n" % (tag, i) for i in range(3000)).encode()
        check(r.out == want, "stdout of %s mixed or incomplete (%d bytes)", tag, len(r.out))
        if not tag.startswith("block0") and not tag.startswith("block3") and not tag.startswith("block6"):
            eq(r.err, ("%s-err\n" % tag).encode() * 6, "stderr of %s" % tag)


def _tree_cancel(agent, expect_subreaper):
    tok = "%04d" % random.randint(0, 9999)
    code = ("env -i setsid sh -c 'sleep 100001.%s' &\n"
            "sh -c '(setsid sleep 100002.%s &) ; sleep 100004.%s &' &\n"
            "sleep 100003.%s\n") % (tok, tok, tok, tok)
    fid = agent.start(code)
    agent.wait_kind(STARTED, fid)

    def live():
        return {p: s for p, s in procs_with("." + tok).items() if s != "Z"}

    def sleeps():  # the four sleep processes themselves (not the shells naming them)
        out = []
        for p in live():
            try:
                with open("/proc/%d/cmdline" % p, "rb") as f:
                    if f.read().startswith(b"sleep\0"):
                        out.append(p)
            except OSError:
                pass
        return out
    check(wait_until(lambda: len(sleeps()) >= 4, 5), "the tree did not come up: %r", live())
    agent.send(CANCEL, fid)
    r = agent.result(fid, 10)
    eq((r.code, r.signal), (None, 9), "cancelled exit")
    wait_until(lambda: not live(), 3)
    left = list(live())  # rescanned: anything carrying this run's token
    if left:
        cmd = {p: open("/proc/%d/cmdline" % p, "rb").read() for p in left if os.path.exists("/proc/%d" % p)}
        kill_ours(left)
        if not expect_subreaper and all(b"100002" in c for c in cmd.values()):
            return "double-forked daemon escaped (no subreaper, as READY warns)"
        raise AssertionError("survivors after cancel: %r" % cmd)
    return None


@test
def cancel_kills_tree():
    note = _tree_cancel(A, A.ready["subreaper"])
    check(A.ping(), "agent alive")
    if note:
        raise Skip("partly: " + note)


@test
def cancel_zygote_and_setup():
    fid = A.start("import time, subprocess\nsubprocess.Popen(['sleep', '1000'])\ntime.sleep(1000)",
                  lang="python", zygote=True)
    pid = jloads(A.wait_kind(STARTED, fid)[2])["pid"]
    time.sleep(0.2)
    A.send(CANCEL, fid)
    r = A.result(fid, 10)
    eq(r.signal, 9, "zygote cancel")
    check(wait_until(lambda: not alive(pid), 2), "zygote process still alive")
    # cancel right after RUN: either never started (EXIT without STARTED) or killed; never hangs
    for i in range(10):
        fid = A.start("sleep 1000")
        A.send(CANCEL, fid)
        r = A.result(fid, 10)
        eq(r.signal, 9, "cancel at once")
    A.send(CANCEL, 987654)  # unknown id: ignored
    check(A.ping(), "alive")


@test
def background_holder_keeps_block():
    t0 = time.monotonic()
    r = A.run("(sleep 0.5; echo late) &\necho early")
    eq(r.out, b"early\nlate\n", "output of the background child")
    check(time.monotonic() - t0 >= 0.45, "EXIT before the pipe holder ended")
    eq(r.code, 0, "exit")


@test
def kill_minus_one_as_user():
    if not is_root():
        raise Skip("needs root (to run a block as another user)")
    r = A.run("kill -9 -1; echo survived", user=UID)
    check(r.exit is not None, "block ended: %r", r)
    check(A.ping(), "agent alive after kill -9 -1")
    eq(A.run("echo next").out, b"next\n", "next block")
    eq(A.run("print('zy')", lang="python", zygote=True, user=UID).out, b"zy\n", "next zygote block")


@test
def users():
    if not is_root():
        raise Skip("needs root")
    uid, gid = UID.split(":")
    r = A.run("id -u; id -g; id -G; touch f_$$; stat -c %a:%u f_$$; rm f_$$", user=UID)
    eq(r.out.split(), [uid.encode(), gid.encode(), gid.encode(), ("644:%s" % uid).encode()], "ids, file")
    fid = A.new_id()
    path = os.path.join(WS, "sub%d" % fid, "deep", "x.py")
    r = A.run("import os\nprint(os.stat(__file__).st_uid, oct(os.stat(__file__).st_mode & 0o777))",
              lang="python", zygote=True, user=UID, file=path)
    eq(r.out, ("%s 0o644\n" % uid).encode(), "code file owner/mode")
    eq(os.stat(os.path.dirname(path)).st_uid, int(uid), "parent dirs created as the user")
    r = A.run("id -un", user="nobody")
    eq(r.out, b"nobody\n", "by name")
    r = A.run("true", user="no-such-user-x")
    check(r.error and "unknown user" in r.error and r.exit is None, "unknown user: %r", r)
    eq(r.error_obj.get("code"), ERR_UNKNOWN_USER, "code of an unknown user")
    r = A.run("true", user="0:no-such-group-x")
    check(r.error and "unknown group" in r.error, "unknown group: %r", r)
    eq(r.error_obj.get("code"), ERR_UNKNOWN_USER, "code of an unknown group")


@test
def users_follow_etc_passwd_changes():
    # The agent caches what it read from /etc/passwd and /etc/group; a change to either is seen
    # by the next block.
    if not (is_root() and in_container()):
        raise Skip("rewrites /etc/passwd: only as root in a throwaway container")
    name = "dockexec-u%d" % A.new_id()
    r = A.run("id -u", user=name)
    check(r.error and "unknown user" in r.error, "before: %r", r)
    with open("/etc/passwd") as f:
        saved = f.read()
    try:
        for uid in (4242, 4343):
            with open("/etc/passwd", "w") as f:
                f.write(saved + "%s:x:%d:%d::/:/bin/sh\n" % (name, uid, uid))
            r = A.run("id -u", user=name)
            eq(r.out, b"%d\n" % uid, "uid after rewriting /etc/passwd")
    finally:
        with open("/etc/passwd", "w") as f:
            f.write(saved)
    r = A.run("id -u", user=name)
    check(r.error and "unknown user" in r.error, "after: %r", r)


@test
def reset_kills_every_process_of_the_blocks_users():
    # RESET (the pool's fast reset) kills every non-root process where the agent runs: only in a
    # throwaway container, never on the host.
    if not (is_root() and in_container()):
        raise Skip("RESET kills every non-root process: only as root in a throwaway container")
    user = pick_uid()
    rid = A.new_id()
    A.send(RESET, rid, jdumps({"user": None}))
    fr = A.wait_kind(ERROR, rid)
    eq(jloads(fr[2]).get("code"), ERR_RESET_FAILED, "RESET with root blocks is refused")
    # a daemon (setsid, double fork), a stopped process, a running block and a session
    # (stopped under a shell of its own session that waits for it: a stopped process whose group
    # is orphaned by its parent's exit gets SIGHUP and SIGCONT from the kernel)
    r = A.run("setsid sh -c '(sleep 9472101 &) ; exit 0' </dev/null >/dev/null 2>&1 &\n"
              "setsid sh -c 'sleep 9472102 & kill -STOP $!; wait' </dev/null >/dev/null 2>&1 &",
              user=user)
    eq(r.code, 0, "planted: %r" % (r,))
    # (the stopped one is `sleep` or, stopped before its exec, the forked shell: by "9472102")
    check(wait_until(lambda: len(procs_with("9472101")) == 1 and
                     any(st == "T" for st in procs_with("9472102").values())),
          "planted: %r", procs_with("947210"))
    fid = A.start("sleep 9472103", user=user)
    A.wait_kind(STARTED, fid)
    sid = A.open_session(user=user)
    rid = A.new_id()
    A.send(RESET, rid, jdumps({"user": user}))
    fr = A.wait_kind(RESET_DONE, rid)
    done = jloads(fr[2])
    check(done["killed"] >= 2, "RESET_DONE: %r", done)
    r = A.result(fid)
    eq((r.code, r.signal), (None, 9), "a running block ends killed")
    live = lambda: [p for p, st in procs_with("947210").items() if st != "Z"]  # noqa: E731
    check(not live() or wait_until(lambda: not live(), 2), "left: %r", procs_with("947210"))
    r = A.run("echo after", user=user)
    eq(r.out, b"after\n", "a block after the reset")
    r = A.run("print('zygote after')", lang="python", user=user, zygote=True)
    eq(r.out, b"zygote after\n", "a zygote block after the reset")
    A.send(SESSION_CLOSE, sid)


@test
def errors_and_missing_interpreters():
    r = A.run("x", lang="cobol")
    check(r.error and "unknown language" in r.error and r.exit is None and r.started is None, "%r", r)
    eq(r.error_obj.get("code"), ERR_UNKNOWN_LANGUAGE, "code of an unknown language")
    r = A.run("true", file="relative/x.sh")
    check(r.error and "absolute" in r.error, "%r", r)
    eq(r.error_obj.get("code"), ERR_BAD_REQUEST, "code of a relative path")
    r = A.run("Write-Output 1", lang="pwsh")
    if r.code == 127:
        eq(r.err, b"dockexec: the image has no pwsh\n", "pwsh missing")
        check(r.started is not None, "STARTED before a 127")
    r = A.run("true", file="/proc/nope/x.sh")
    check(r.error and "cannot write the code file /proc/nope/x.sh" in r.error, "%r", r)
    eq(r.error_obj.get("code"), ERR_SPAWN_FAILED, "code of an unwritable code file")
    r = A.run("true", cwd="/nonexistent-dir")
    check(r.error and "working directory" in r.error, "%r", r)
    eq(r.error_obj.get("code"), ERR_SPAWN_FAILED, "code of a missing working directory")
    r = A.run("print(1)", lang="sh", session=424242)
    check(r.error and "unknown session" in r.error, "%r", r)
    eq(r.error_obj.get("code"), ERR_UNKNOWN_SESSION, "code of an unknown session")


@test
def delete_code_file():
    for user in ([None, UID] if is_root() else [None]):
        fid = A.new_id()
        path = os.path.join(WS, "del%d.py" % fid)
        r = A.run("import os; print(os.path.exists(__file__))", lang="python", fid=fid, file=path,
                  delete=True, user=user, zygote=True)
        eq(r.out, b"True\n", "file exists while running")
        check(not os.path.exists(path), "file removed after the block (user %s)" % user)
        path2 = os.path.join(WS, "keep%d.sh" % fid)
        A.run("true", file=path2)
        check(os.path.exists(path2), "file kept without delete")


@test
def delete_code_file_with_the_block_users_rights_only():
    # Issue 21 D6: the agent deletes with the block's filesystem ids (or, without ctypes, in a
    # helper it waits for with a bound): a file the block's user may not remove stays, and the
    # agent is root again afterwards.
    if not is_root():
        raise Skip("needs root")
    lock = "import os\nos.chmod(os.path.dirname(__file__), 0o555)\nprint(1)\n"
    for prefix in ("", "import sys; sys.modules['ctypes'] = None\n"):
        ag = Agent(AGENT_PATH, prefix=prefix)
        try:
            path = os.path.join(WS, "locked%d" % random.randint(0, 1 << 30), "x.py")
            r = ag.run(lock, lang="python", zygote=True, user=UID, file=path, delete=True)
            eq(r.out, b"1\n", "the block ran")
            check(os.path.exists(path), "a file its user cannot remove stays (%r)" % prefix)
            st = open("/proc/%d/status" % ag.p.pid).read().splitlines()
            ids = [l.split()[1:] for l in st if l.startswith(("Uid:", "Gid:"))]
            eq(ids, [["0"] * 4] * 2, "the agent's ids after the deletion")
            path = os.path.join(WS, "del%d" % random.randint(0, 1 << 30), "y.py")
            r = ag.run("print(2)", lang="python", zygote=True, user=UID, file=path, delete=True)
            eq(r.out, b"2\n", "the block ran")
            check(not os.path.exists(path), "its own file is removed (%r)" % prefix)
        finally:
            ag.send(SHUTDOWN, 0)
            ag.close(10)


@test
def symlink_planted_by_block():
    if not is_root():
        raise Skip("needs root")
    rootonly = os.path.join(TMP, "rootonly")
    os.mkdir(rootonly, 0o755)
    link = os.path.join(WS, "evil%d" % random.randint(0, 99999))
    r = A.run("ln -s %s %s" % (rootonly, link), user=UID)
    eq(r.code, 0, "planting the link")
    check(os.path.islink(link), "link planted")
    r = A.run("print('pwned')", lang="python", zygote=True, user=UID, file=os.path.join(link, "x.py"))
    check(r.error and "Permission denied" in r.error and r.exit is None, "%r", r)
    eq(os.listdir(rootonly), [], "nothing written through the link")
    r = A.run("true", user=UID, file=os.path.join(link, "sub", "y.sh"))
    check(r.error and "Permission denied" in r.error, "%r", r)
    eq(os.listdir(rootonly), [], "no directory created through the link")


# -- zygote fidelity: the same file run by a fresh python3 and by the zygote must agree

def both(code, **kw):
    fid = A.new_id()
    path = kw.pop("file", os.path.join(WS, "fid%d" % fid, "probe.py"))
    fresh = A.run(code, lang="python", zygote=False, file=path, **dict(kw))
    zyg = A.run(code, lang="python", zygote=True, file=path, **dict(kw))
    return fresh, zyg


def same(code, what, **kw):
    fresh, zyg = both(code, **kw)
    check(fresh.exit is not None and zyg.exit is not None, "%s: %r / %r", what, fresh, zyg)
    if (fresh.out, fresh.err, fresh.exit) != (zyg.out, zyg.err, zyg.exit):
        raise AssertionError("%s differs:\n  fresh:  %r\n  zygote: %r" % (what, fresh, zyg))
    return fresh, zyg


@test
def zygote_main_file_argv_path():
    code = ("import sys\nprint(__name__, __file__, sys.argv, sys.path, getattr(sys, 'orig_argv', None))\n"
            "print(sorted(globals()), type(__loader__).__name__, __loader__.name, __loader__.path,\n"
            "      __spec__, __package__, __cached__, __doc__, __annotations__)\n"
            "import __main__; print(__main__.__dict__ is globals(), repr(__main__)[:9], __builtins__)\n")
    fresh, zyg = same(code, "__main__, __file__, argv, sys.path")
    check(fresh.out.startswith(b"__main__ "), "sanity: %r", fresh.out)
    # through a symlinked directory: sys.path[0] is the real directory
    real = os.path.join(WS, "realdir%d" % A.new_id())
    os.mkdir(real)
    os.symlink(real, real + "-link")
    same("import sys; print(sys.path[0], __file__)", "sys.path[0] via a symlink",
         file=os.path.join(real + "-link", "p.py"))


@test
def zygote_sys_modules():
    fresh, zyg = same("import sys; print(sorted(sys.modules))", "sys.modules")
    check(b"'json'" not in zyg.out and b"'select'" not in zyg.out, "agent modules leaked: %r", zyg.out)


@test
def zygote_exit_and_exceptions():
    for code, what in (("import sys; sys.exit(7)", "sys.exit(7)"),
                       ("import sys; sys.exit('bye')", "sys.exit(str)"),
                       ("raise SystemExit", "SystemExit()"),
                       ("def f():\n    raise ValueError('boom')\nprint('x')\nf()\n", "uncaught exception"),
                       ("try:\n    1/0\nexcept Exception as e:\n    raise KeyError('k') from e\n",
                        "chained exception"),
                       ("try:\n    1/0\nexcept Exception:\n    raise KeyError('k')\n", "context exception"),
                       ("raise KeyboardInterrupt", "uncaught KeyboardInterrupt"),
                       ("def (:\n", "SyntaxError"),
                       ("import sys\ndef hook(t, v, tb): print('hook', t.__name__, tb.tb_frame.f_code.co_name)\n"
                        "sys.excepthook = hook\nraise OSError(2, 'x')\n", "custom excepthook"),
                       ("import atexit\natexit.register(print, 'atexit ran')\nraise RuntimeError\n",
                        "atexit after an exception")):
        fresh, zyg = same(code, what)
    eq(fresh.signal, None, "")
    fresh, zyg = same("raise KeyboardInterrupt", "KI")
    eq(zyg.signal, 2, "uncaught KeyboardInterrupt dies of SIGINT")
    fresh, zyg = same("raise ValueError", "ValueError")
    eq(zyg.code, 1, "uncaught exception exits 1")
    check(b"Traceback (most recent call last)" in zyg.err and b"<string>" not in zyg.err, "%r", zyg.err)


@test
def zygote_pid_signals_stdin():
    r = A.run("import os; print(os.getpid())", lang="python", zygote=True)
    pid = int(r.out)
    check(pid != A.p.pid, "fresh pid")
    eq(pid, r.started["pid"], "STARTED pid is the block's pid")
    same("import signal\nprint([(int(s), repr(signal.getsignal(s))) for s in sorted(signal.valid_signals())\n"
         "       if s not in (signal.SIGKILL, signal.SIGSTOP)])\n"
         "print(sorted(signal.pthread_sigmask(signal.SIG_BLOCK, [])))", "signal dispositions and mask")
    same("import os, signal, time\ntry:\n    os.kill(os.getpid(), signal.SIGINT)\n    time.sleep(5)\n"
         "except KeyboardInterrupt:\n    print('KeyboardInterrupt')\n", "SIGINT -> KeyboardInterrupt")
    # Sockets aside: a zygote block holds its results socket (issue 19, rich.py), by design.
    same("import sys, os\nprint(repr(sys.stdin.read()), os.isatty(0))\n"
         "def target(x):\n    try:\n        return os.readlink('/proc/self/fd/' + x)\n"
         "    except OSError:\n        return ''\n"
         "print(sorted(int(x) for x in os.listdir('/proc/self/fd') if not target(x).startswith('socket:')))",
         "stdin and open fds")
    same("import sys; print(sys.flags); print(sys.stdout.encoding, sys.stdout.line_buffering,\n"
         "sys.stdout.write_through, sys.getfilesystemencoding())", "sys.flags and stdio")


@test
def zygote_threads_atexit():
    same("import threading, atexit, time\natexit.register(lambda: print('atexit', flush=True))\n"
         "def w():\n    time.sleep(0.3)\n    print('thread done', flush=True)\n"
         "threading.Thread(target=w).start()\nprint('main done', flush=True)\n", "threads and atexit")
    fresh, zyg = same("import threading\nprint(threading.current_thread() is threading.main_thread(),\n"
                      "      threading.active_count())", "threading state")


@test
def zygote_multiprocessing():
    if not has_module("multiprocessing"):
        raise Skip("no multiprocessing in this python (python3-minimal)")
    same("import multiprocessing as mp\ndef f(x):\n    return x * x\n"
         "if __name__ == '__main__':\n    for m in ('fork', 'spawn'):\n"
         "        with mp.get_context(m).Pool(2) as p:\n            print(m, p.map(f, range(6)))\n",
         "multiprocessing fork and spawn", timeout=60)


@test
def zygote_env_cwd_user():
    env = {"DOCKEXEC_T": "x y\u00e9", "HOME": "/tmp"}
    sub = os.path.join(WS, "cwd%d" % A.new_id())
    os.mkdir(sub)
    os.chmod(sub, 0o777)
    code = ("import os, sys\nprint(sorted(os.environ.items()))\nprint(os.getcwd(), os.getuid(), os.getgid(),"
            " os.geteuid(), sorted(os.getgroups()), os.umask(0))\n"
            "print(os.path.expanduser('~'))")
    same(code, "environ, cwd, ids (agent user)", env=env, cwd=sub)
    if is_root():
        fresh, zyg = same(code, "environ, cwd, ids (other user)", env=env, cwd=sub, user=UID)
        check((" %s " % UID.split(":")[0]).encode() in zyg.out, "uid: %r", zyg.out)
        same("import os; print(open('/proc/self/status').read().count('\\n') > 0)", "own /proc readable",
             user=UID)


@test
def zygote_startup_env_falls_back():
    # PYTHON* variables are read at interpreter startup: such blocks must behave like python3 FILE
    same("print(hash('dockexec'))", "PYTHONHASHSEED", env={"PYTHONHASHSEED": "123"})
    fresh, zyg = same("import sys; print(sys.flags.dont_write_bytecode)", "PYTHONDONTWRITEBYTECODE",
                      env={"PYTHONDONTWRITEBYTECODE": "1"})
    eq(zyg.out, b"1\n", "")


@test
def zygote_exit_teardown():
    # A zygote block skips the teardown of the agent's inherited heap only where nothing would
    # run or be flushed in it: whatever the block leaves behind is finalized as by python3 FILE.
    for code, what in (
            ("class A:\n    def __del__(self):\n        print('del A')\na = A()\n", "__del__ at exit"),
            ("class A:\n    def __del__(self):\n        raise ValueError('in del')\na = A()\n",
             "__del__ raising at exit"),
            ("class A:\n    __slots__ = ()\n    def __del__(self):\n        print('del slots')\na = A()\n",
             "__del__ of an untracked instance"),
            ("def g():\n    try:\n        yield 1\n    finally:\n        print('gen finally')\n"
             "it = g()\nnext(it)\n", "a suspended generator's finally"),
            ("import weakref\nclass C:\n    pass\nc = C()\nr = weakref.ref(c, lambda r: print('weakref cb'))\n",
             "a weakref callback"),
            ("import sys, io\nsys.stdout = io.TextIOWrapper(open(1, 'wb', closefd=False), write_through=False)\n"
             "print('buffered stdout')\n", "a buffered replacement stdout"),
            ("import threading, time\nthreading.Thread(target=time.sleep, args=(5,), daemon=True).start()\n"
             "print('daemon left running')\n", "a daemon thread at exit"),
            ("import sys\nclass A:\n    def __del__(self):\n        print('del after exit(3)')\na = A()\nsys.exit(3)\n",
             "sys.exit with a finalizer"),
            ("class A:\n    def __del__(self):\n        print('del after error')\na = A()\nraise ValueError\n",
             "uncaught exception with a finalizer"),
            ("import sys; sys.exit(300)", "sys.exit(300)"),
            ("import sys; sys.exit(-1)", "sys.exit(-1)"),
            ("import sys; sys.exit(True)", "sys.exit(True)"),
            ("import sys; sys.exit(2 ** 40)", "sys.exit(2 ** 40)"),
            ("print('plain')", "a plain block")):
        fresh, zyg = both(code)
        got = [(re.sub(rb"0x[0-9a-f]+", b"0x?", r.out), re.sub(rb"0x[0-9a-f]+", b"0x?", r.err), r.exit)
               for r in (fresh, zyg)]
        if fresh.exit is None or got[0] != got[1]:
            raise AssertionError("%s differs:\n  fresh:  %r\n  zygote: %r" % (what, fresh, zyg))
    # A file left open with unflushed data is flushed and closed at exit.
    fid = A.new_id()
    outs = [os.path.join(WS, "teardown%d-%s.txt" % (fid, z)) for z in ("fresh", "zygote")]
    for z, out in zip((False, True), outs):
        r = A.run("f = open(%r, 'w')\nf.write('unflushed data')\n" % out, lang="python", zygote=z)
        eq(r.code, 0, "exit code")
    for out in outs:
        with open(out) as f:
            eq(f.read(), "unflushed data", out)
    if has_module("ctypes"):  # C stdio buffers (a pipe: fully buffered) are flushed by exit()
        same("import ctypes\nctypes.CDLL(None).printf(b'c stdio\\n')\n", "C stdio at exit")


@test
def zygote_end_of_main():
    # Issue 23: what `python3 FILE` does once the file has run, seen from atexit, a trace function
    # still set and the std streams: __file__/__cached__ deleted (kept when SystemExit exits from
    # within), the block's own exit steps traced (threading's shutdown, atexit callbacks, and, on
    # the slow exit, the teardown's finalizers) and nothing of the agent's, streams for its fds.
    at = ("import atexit, sys\n"
          "atexit.register(lambda: print('at exit', sorted(k for k in vars(sys.modules['__main__'])\n"
          "                                         if k in ('__file__', '__cached__'))))\n")
    for end, what in (("", "a plain end"), ("raise ValueError('x')\n", "an uncaught exception"),
                      ("raise SystemExit(3)\n", "SystemExit"), ("import sys; sys.exit('bye')\n", "exit(str)"),
                      ("raise KeyboardInterrupt\n", "KeyboardInterrupt"), ("def (:\n", "a SyntaxError")):
        same(at + end, "__file__ at exit after " + what)
    tracer = ("import sys, os\n"
              "def tr(frame, event, arg):\n"
              "    os.write(1, ('%s %s %s\\n' % (event, frame.f_code.co_name,\n"
              "                                  os.path.basename(frame.f_code.co_filename))).encode())\n"
              "    return tr\n")
    for code, what in (
            ("import atexit\natexit.register(print, 'bye')\nsys.settrace(tr)\n", "a plain end"),
            ("import threading, atexit\natexit.register(print, 'bye')\nsys.settrace(tr)\n", "threading imported"),
            ("class A:\n    def __del__(self):\n        print('del')\na = A()\nsys.settrace(tr)\n",
             "a finalizer (the slow exit)"),
            ("sys.excepthook = lambda *a: print('hook')\nsys.settrace(tr)\nraise ValueError\n",
             "an uncaught exception"),
            ("import atexit\natexit.register(print, 'bye')\nsys.settrace(tr)\nraise SystemExit('bye')\n",
             "SystemExit(str)"),
            ("import atexit\natexit.register(print, 'bye')\nsys.settrace(tr)\nraise KeyboardInterrupt\n",
             "KeyboardInterrupt")):
        same(tracer + code, "a trace function at exit after " + what)
        profiler = tracer.replace("return tr\n", "").replace("frame.f_code.co_name", "getattr(arg, '__name__', frame.f_code.co_name)")
        same(profiler + code.replace("sys.settrace(tr)", "sys.setprofile(tr)"), "a profile function at exit after " + what)
    # The agent's frame below the script's (a documented difference) is not __main__'s to the
    # warnings filters: a warning attributed to it is treated as one attributed to `sys` (fresh).
    same("import warnings\nwarnings.warn('hidden', DeprecationWarning, stacklevel=2)\n",
         "a warning attributed below the script")
    same("import sys\nfor f in (sys.stdin, sys.stdout, sys.stderr):\n"
         "    print(f is getattr(sys, '__%s__' % f.name[1:-1]), f.name, f.mode, f.fileno(), f.encoding,\n"
         "          f.errors, f.line_buffering, f.write_through, f.seekable(), f.buffer.seekable())\n"
         "print(sys.stdin.tell(), repr(sys.stdin.read()))\n", "std streams")


@test
def zygote_fast_exit_taken():
    # The trace (DOCKEXEC_AGENT_TRACE) says which exit a zygote block took: a plain block must
    # not pay for the teardown of the agent's heap, a block with a finalizer must.
    trace = os.path.join(TMP, "trace%d" % A.new_id())
    open(trace, "w").close()
    os.chmod(trace, 0o666)
    a = Agent(AGENT_PATH, extra_env={"DOCKEXEC_AGENT_TRACE": trace})
    try:
        for code in ("print('hi')", "x = [1, 2]\nimport json\nprint(json.dumps(x))",
                     "class A:\n    def __del__(self):\n        print('bye')\na = A()\n"):
            open(trace, "w").close()
            r = a.run(code, lang="python", zygote=True)
            eq(r.code, 0, "exit code")
            with open(trace) as f:
                steps = [line.split()[2] for line in f]
            want = "slow-exit" if "__del__" in code else "fast-exit"
            check(want in steps, "%r: expected %s in the trace, got %r", code, want, steps)
    finally:
        a.close()


# -- sessions

def srun(sid, code, timeout=TIMEOUT, **kw):
    return A.run(code, lang="python", session=sid, timeout=timeout, **kw)


@test
def session_state():
    sid = A.open_session()
    r = srun(sid, "x = 41\nimport os\nprint('pid', os.getpid())")
    eq(r.code, 0, "define")
    r2 = srun(sid, "print(x + 1)")
    eq((r2.out, r2.code), (b"42\n", 0), "state persists")
    eq(r.started["pid"], r2.started["pid"], "same session process")
    r = srun(sid, "1/0")
    eq(r.code, 1, "uncaught exception: code 1")
    check(b"ZeroDivisionError" in r.err and b"Traceback" in r.err and b"<string>" not in r.err, "%r", r.err)
    r = srun(sid, "raise SystemExit(5)")
    eq((r.code, r.exit["session_lost"]), (5, False), "SystemExit(5)")
    r = srun(sid, "import sys; sys.exit('msg')")
    eq((r.code, r.err), (1, b"msg\n"), "SystemExit(str)")
    r = srun(sid, "print(x)\nimport sys; print('out'); print('err', file=sys.stderr)")
    eq((r.out, r.err), (b"41\nout\n", b"err\n"), "session survived, separate streams")
    r = srun(sid, "print(__name__)")
    eq(r.out, b"__main__\n", "__name__")
    r = A.run("echo", lang="sh", session=sid)
    check(r.error and "python" in r.error, "non-python block in a session: %r", r)
    eq(r.error_obj.get("code"), ERR_BAD_REQUEST, "code of a non-python block in a session")
    A.send(SESSION_CLOSE, sid)
    r = srun(sid, "print(1)")
    check(r.error and "unknown session" in r.error, "after close: %r", r)
    eq(r.error_obj.get("code"), ERR_UNKNOWN_SESSION, "code after close")


@test
def session_cancel_keeps_state():
    sid = A.open_session()
    srun(sid, "y = 'kept'")
    fid = A.start("import time\ny = 'changed-before-sleep'\ntime.sleep(100)\ny = 'never'", lang="python",
                  session=sid)
    A.wait_kind(STARTED, fid)
    time.sleep(0.1)
    A.send(CANCEL, fid)
    r = A.result(fid, 10)
    eq((r.code, r.exit["session_lost"]), (1, False), "interrupted block ends with code 1")
    check(b"KeyboardInterrupt" in r.err and b"time.sleep(100)" in r.err, "traceback: %r", r.err)
    r = srun(sid, "print(y)")
    eq(r.out, b"changed-before-sleep\n", "state survives cancel")
    # cancel immediately after RUN (races with the session starting the block)
    for i in range(5):
        fid = A.start("import time\ntime.sleep(100)", lang="python", session=sid)
        A.send(CANCEL, fid)
        r = A.result(fid, 10)
        check(r.exit is not None and r.exit["session_lost"] is False and r.code in (1, None), "%r", r)
    eq(srun(sid, "print(y)").out, b"changed-before-sleep\n", "state after quick cancels")
    A.send(SESSION_CLOSE, sid)


@test
def session_lost_after_grace_and_reset():
    sid = A.open_session()
    srun(sid, "z = 1")
    code = ("while True:\n    try:\n        while True:\n            pass\n"
            "    except KeyboardInterrupt:\n        pass\n")
    fid = A.start(code, lang="python", session=sid, grace_ms=300)
    pid = jloads(A.wait_kind(STARTED, fid)[2])["pid"]
    q = A.start("print('queued')", lang="python", session=sid)
    time.sleep(0.1)
    t0 = time.monotonic()
    A.send(CANCEL, fid)
    r = A.result(fid, 10)
    dt = time.monotonic() - t0
    cause = "a block did not stop within 0.3 s of an interrupt, so the session's process was killed"
    eq(r.exit, {"code": None, "signal": 9, "oom": False, "session_lost": True, "cause": cause},
       "lost after grace")
    check(0.25 <= dt < 3, "grace respected (%.2fs)", dt)
    rq = A.result(q)
    check(rq.error and "session lost" in rq.error, "queued block: %r", rq)
    eq((rq.error_obj.get("code"), rq.error_obj.get("cause")), ("session_lost", cause), "queued block")
    check(wait_until(lambda: not alive(pid), 2), "session process killed")
    r = srun(sid, "print(z)")
    check(r.error and "session lost" in r.error, "RUN after loss: %r", r)
    eq((r.error_obj.get("code"), r.error_obj.get("cause")), ("session_lost", cause), "RUN after loss")
    A.send(SESSION_RESET, sid)
    A.wait(lambda f: next((x for x in f.by_id.get(sid, ()) if x[0] == SESSION_READY), None) and
           len([x for x in f.by_id.get(sid, ()) if x[0] == SESSION_READY]) >= 2 or None, TIMEOUT,
           "SESSION_READY after reset")
    r = srun(sid, "print('z' in globals(), sorted(k for k in globals() if not k.startswith('__')))")
    eq(r.out, b"False []\n", "reset gives a clean namespace")
    srun(sid, "w = 3")
    A.send(SESSION_RESET, sid)
    r = srun(sid, "print('w' in globals())")  # queued until the new session is ready
    eq(r.out, b"False\n", "reset of a live session")
    # a block running at a reset is killed, but does not mark the (fresh) session lost: the host
    # would apply that after reset() returned
    fid = A.start("import time\nprint('up', flush=True)\ntime.sleep(100)", lang="python", session=sid)
    A.wait(lambda f: b"up" in b"".join(x[2] for x in f.by_id.get(fid, ()) if x[0] == STDOUT) or None,
           TIMEOUT, "up")
    A.send(SESSION_RESET, sid)
    r = A.result(fid)
    eq((r.code, r.signal, r.exit["session_lost"]), (None, 9, False), "a block killed by a reset")
    eq(srun(sid, "print('after')").out, b"after\n", "the reset session runs")
    A.send(SESSION_CLOSE, sid)


@test
def session_parallel_and_order():
    s1, s2 = A.open_session(), A.open_session()
    t0 = time.monotonic()
    f1 = A.start("import time; time.sleep(1); print('one')", lang="python", session=s1)
    f2 = A.start("import time; time.sleep(1); print('two')", lang="python", session=s2)
    f3 = A.start("sleep 1; echo three")
    r1, r2, r3 = A.result(f1), A.result(f2), A.result(f3)
    dt = time.monotonic() - t0
    eq((r1.out, r2.out, r3.out), (b"one\n", b"two\n", b"three\n"), "outputs")
    check(dt < 1.8, "sessions and blocks ran in parallel (%.2fs)", dt)
    ids = [A.start("import time; time.sleep(0.05); order = globals().get('order', []) + [%d]; print(order)" % i,
                   lang="python", session=s1) for i in range(4)]
    drop = A.start("print('dropped')", lang="python", session=s1)
    last = A.start("print('last', order)", lang="python", session=s1)
    A.send(CANCEL, drop)
    rd = A.result(drop)
    eq(rd.exit, {"code": None, "signal": None, "oom": False, "session_lost": False}, "queued cancel")
    check(rd.started is None and rd.out == b"", "dropped block never ran: %r", rd)
    outs = [A.result(i).out for i in ids]
    eq(outs, [("%r\n" % list(range(k + 1))).encode() for k in range(4)], "queued blocks in order")
    eq(A.result(last).out, b"last [0, 1, 2, 3]\n", "after the dropped one")
    exits = [fr[1] for fr in A.frames.all if fr[0] == EXIT and fr[1] in ids + [last]]
    eq(exits, ids + [last], "EXIT order")
    A.send(SESSION_CLOSE, s1)
    A.send(SESSION_CLOSE, s2)


@test
def session_user_and_death():
    sid = A.open_session(user=UID if is_root() else None, env={"SESS": "1"})
    r = srun(sid, "import os; print(os.getuid(), os.environ['SESS'], os.getcwd())")
    want_uid = UID.split(":")[0] if is_root() else str(os.getuid())
    eq(r.out, ("%s 1 %s\n" % (want_uid, WS)).encode(), "session user/env/cwd")
    r = srun(sid, "import os; os._exit(3)")
    eq((r.code, r.signal, r.exit["session_lost"]), (3, None, True), "session process exit")
    eq(r.exit["cause"], "the session's process exited (status 3) during a block", "cause")
    r = srun(sid, "print(1)")
    check(r.error and "lost" in r.error, "%r", r)
    eq(r.error_obj.get("code"), "session_lost", "ERROR code of a lost session")
    A.send(SESSION_CLOSE, sid)
    # forged control records cannot touch other blocks: at worst the session is lost
    sid = A.open_session()
    r = srun(sid, "import os\nfor fd in os.listdir('/proc/self/fd'):\n"
                  "    try:\n        os.write(int(fd), b'\\xff\\xff\\xff\\xffjunk')\n"
                  "    except OSError:\n        pass\n")
    check(r.exit is not None or r.error is not None, "forgery ended: %r", r)
    check(A.ping(), "agent alive after forged control records")
    A.send(SESSION_CLOSE, sid)
    # a child the block forks that falls off the end of the block exits; it does not become a
    # second session loop
    sid = A.open_session()
    r = srun(sid, "import os, time\nk = 7\npid = os.fork()\nif pid == 0:\n    print('child')\n"
                  "else:\n    os.waitpid(pid, 0)\n    print('parent')\n")
    eq((r.code, sorted(r.out.split())), (0, [b"child", b"parent"]), "fork in a session")
    eq(srun(sid, "print(k)").out, b"7\n", "the session carries on")
    A.send(SESSION_CLOSE, sid)


@test
def session_cancel_kills_what_the_block_started():
    # issue 21, D7: a cancelled block's children die (plain, own session, double-forked); an
    # earlier block's child and the namespace live on
    sid = A.open_session()
    srun(sid, "import subprocess\nkeep = subprocess.Popen(['sleep', '2601'])")
    fid = A.start("import os, subprocess, time\n"
                  "a = subprocess.Popen(['sleep', '2602'])\n"
                  "b = subprocess.Popen(['sleep', '2603'], start_new_session=True)\n"
                  "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                  "        os.execvp('sleep', ['sleep', '2604'])\n    os._exit(0)\n"
                  "print('up', flush=True)\ntime.sleep(100)\n", lang="python", session=sid)
    A.wait(lambda f: b"up" in b"".join(x[2] for x in f.by_id.get(fid, ()) if x[0] == STDOUT) or None,
           TIMEOUT, "up")
    check(wait_until(lambda: all(procs_with("sleep\x00%d" % n) for n in (2601, 2602, 2603, 2604))),
          "children running")
    A.send(CANCEL, fid)
    r = A.result(fid)
    eq((r.code, r.exit["session_lost"]), (1, False), "the block was interrupted")
    check(wait_until(lambda: not any(procs_with("sleep\x00%d" % n) for n in (2602, 2603, 2604))),
          "the block's children died")
    check(procs_with("sleep\x002601"), "an earlier block's child lives on")
    eq(srun(sid, "print(keep.poll())").out, b"None\n", "the session and its namespace live on")
    A.send(SESSION_CLOSE, sid)
    check(wait_until(lambda: not procs_with("sleep\x002601")), "closing the session kills the rest")


@test
def session_streams_and_broken_pipes():
    # issue 21, D9a: closed std streams are reopened for the next block
    sid = A.open_session()
    r = srun(sid, "import os\nprint('a', flush=True)\nos.close(1)\nos.close(2)")
    eq((r.code, r.out), (0, b"a\n"), "closing fd 1 and 2")
    r = srun(sid, "import sys\nprint('b')\nprint('c', file=sys.stderr)")
    eq((r.code, r.out, r.err), (0, b"b\n", b"c\n"), "the next block's streams")
    # what a block left unflushed in a closed stdout is not the next block's output
    srun(sid, "import os, sys\nprint('stale')\nsys.stderr.write('stale')\nos.close(1)\nos.close(2)")
    r = srun(sid, "print('fresh')")
    eq((r.code, r.out, r.err), (0, b"fresh\n", b""), "no stale output")
    # ... unless the session's own copies are closed too: a clear refusal, not silence
    r = srun(sid, "import os\nstd = {os.readlink('/proc/self/fd/1')}\n"
                  "for fd in map(int, os.listdir('/proc/self/fd')):\n    try:\n"
                  "        if os.readlink('/proc/self/fd/%d' % fd) in std:\n            os.close(fd)\n"
                  "    except OSError:\n        pass\n")
    r = srun(sid, "print('d')")
    check(r.error and "closed the session's stdout" in r.error, "%r", r)
    eq(r.error_obj.get("code"), ERR_SPAWN_FAILED, "code of a session block that could not start")
    A.send(SESSION_CLOSE, sid)
    # D9c: closing (or replacing) the control pipe shows no agent internals; the session is lost
    for how in ("os.close(fd)", "os.dup2(os.open('/dev/null', os.O_WRONLY), fd)"):
        sid = A.open_session()
        r = srun(sid, "import os\nkept = []\nstd = {os.readlink('/proc/self/fd/%d' % i) for i in (1, 2)}\n"
                      "for fd in map(int, os.listdir('/proc/self/fd')):\n    try:\n"
                      "        t = os.readlink('/proc/self/fd/%d' % fd)\n"
                      "        flags = int(open('/proc/self/fdinfo/%d' % fd).read().split()[3], 8)\n"
                      "    except (OSError, ValueError, IndexError):\n        continue\n"
                      "    if t.startswith('pipe:') and t not in std and flags & 3 == 1:\n"
                      "        kept.append(os.dup(fd))\n        " + how + "\n"
                      "print('closed')\n")
        check(b"Traceback" not in r.err and b"_sess" not in r.err, "%s: internals shown: %r", how, r)
        check(r.exit is not None and r.exit["session_lost"] and "control pipe" in r.exit["cause"],
              "%s: %r", how, r)
        r = srun(sid, "print(1)")
        check(r.error_obj and r.error_obj.get("code") == "session_lost", "%s: %r", how, r)
        A.send(SESSION_CLOSE, sid)
    # D9b: the session process forks and the parent exits: lost, with that cause, never a success
    sid = A.open_session()
    r = srun(sid, "import os, time\nif os.fork():\n    os._exit(0)\ntime.sleep(0.2)\n")
    eq((r.code, r.exit["session_lost"], r.exit["cause"]),
       (0, True, "the session's process exited (status 0) during a block"), "fork and exit")
    A.send(SESSION_CLOSE, sid)


@test
def session_error_codes():
    # Issue 20: ERROR says why in a code. A second SESSION_OPEN of an open session: session_exists
    # (the session lives on); a block still queued when its session is closed: session_ended.
    sid = A.open_session()
    A.send(SESSION_OPEN, sid, jdumps({"user": None, "cwd": WS, "env": {}}))
    fr = A.wait_kind(ERROR, sid)
    eq(jloads(fr[2]).get("code"), ERR_SESSION_EXISTS, "code of a second SESSION_OPEN")
    check("already open" in jloads(fr[2])["message"], "%r", fr)
    running = A.start("import time\nprint('up', flush=True)\ntime.sleep(100)", lang="python",
                      session=sid)
    A.wait(lambda f: b"up" in b"".join(x[2] for x in f.by_id.get(running, ()) if x[0] == STDOUT)
           or None, TIMEOUT, "up")
    queued = A.start("print('never')", lang="python", session=sid)
    A.send(SESSION_CLOSE, sid)
    r = A.result(queued)
    check(r.error and r.exit is None and r.started is None, "queued block at close: %r", r)
    eq(r.error_obj.get("code"), ERR_SESSION_ENDED, "code of a queued block at close")
    r = A.result(running)
    check(r.exit is not None and r.exit["signal"] == 9, "running block at close: %r", r)


@test
def session_unknown_user():
    sid = A.new_id()
    A.send(SESSION_OPEN, sid, jdumps({"user": "no-such-user-y", "cwd": WS, "env": {}}))
    fr = A.wait_kind(ERROR, sid)
    check("unknown user" in jloads(fr[2])["message"], "%r", fr)
    eq(jloads(fr[2]).get("code"), ERR_UNKNOWN_USER, "code of a session's unknown user")


# -- the channel

def _fresh_agent():
    return Agent(AGENT_PATH)


def _expect_protocol_error(ag, what):
    fr = ag.wait_kind(ERROR, 0, 10)
    check("protocol error" in jloads(fr[2])["message"], "%s: %r", what, fr)
    eq(jloads(fr[2]).get("code"), ERR_PROTOCOL, "%s: code" % what)
    rc = ag.close(10)
    eq(rc, 2, "%s: exit code" % what)
    check("Traceback" not in ag.err_text(), "%s: traceback on stderr: %s", what, ag.err_text())


@test
def malformed_input():
    tok = "%04d" % random.randint(0, 9999)
    ag = _fresh_agent()
    fid = ag.start("sleep 300001.%s" % tok)
    ag.wait_kind(STARTED, fid)
    ag.raw(struct.pack(">IBI", 3, 1, 1)[:4] + b"abc")
    _expect_protocol_error(ag, "length 3")
    check(wait_until(lambda: not [p for p, s in procs_with("300001." + tok).items() if s != "Z"], 3),
          "running block killed on protocol error")
    ag = _fresh_agent()
    ag.raw(struct.pack(">I", 64 * 1024 * 1024 + 6))
    _expect_protocol_error(ag, "length 64 MiB + 6")
    ag = _fresh_agent()
    ag.send(0x42, 1, b"{}")
    _expect_protocol_error(ag, "unknown kind")
    ag = _fresh_agent()
    ag.send(0x81, 0, b"{}")
    _expect_protocol_error(ag, "agent-side kind from the host")
    ag = _fresh_agent()
    ag.raw(struct.pack(">IBI", 100, RUN, 7) + b'{"lang": "sh"')
    try:
        ag.p.stdin.close()
    except OSError:
        pass
    _expect_protocol_error(ag, "truncated frame then EOF")
    ag = _fresh_agent()  # a bad payload is the block's ERROR, not the channel's
    ag.send(RUN, 5, b"not json")
    fr = ag.wait_kind(ERROR, 5)
    check("bad RUN payload" in jloads(fr[2])["message"], "%r", fr)
    ag.send(RUN, 6, jdumps({"lang": "sh", "code": 1, "file": "/tmp/x"}))
    ag.wait_kind(ERROR, 6)
    check(ag.ping(), "alive after bad payloads")
    ag.send(SHUTDOWN, 0)
    eq(ag.close(10), 0, "SHUTDOWN exit code")


@test
def eof_kills_everything():
    tok = "%04d" % random.randint(0, 9999)
    ag = _fresh_agent()
    f1 = ag.start("sleep 200001.%s & sleep 200002.%s" % (tok, tok))
    f2 = ag.start("import time; time.sleep(1000)", lang="python", zygote=True)
    ag.wait_kind(STARTED, f1)
    zpid = jloads(ag.wait_kind(STARTED, f2)[2])["pid"]
    sid = ag.open_session()
    ag.start("import time; time.sleep(1000)", lang="python", session=sid)
    procs = wait_until(lambda: len(procs_with("." + tok)) >= 2 and procs_with("." + tok), 5)
    check(procs, "blocks did not start")
    t0 = time.monotonic()
    eq(ag.close(10), 0, "exit code on EOF")
    check(time.monotonic() - t0 < 5, "slow exit")
    left = [p for p in list(procs) + [zpid] if alive(p)]
    kill_ours(left)
    eq(left, [], "survivors after EOF")


@test
def ping_during_flood():
    floods = [A.start("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)", lang="python", zygote=True),
              A.start("yes flood >&2")]
    for fid in floods:
        A.wait_kind(STARTED, fid)
    t0 = time.monotonic()
    check(A.ping(timeout=5), "PONG while blocks flood")
    dt = time.monotonic() - t0
    t0 = time.monotonic()
    eq(A.run("echo other", timeout=10).out, b"other\n", "another block while two flood")
    dt2 = time.monotonic() - t0
    for fid in floods:
        A.send(CANCEL, fid)
    for fid in floods:
        r = A.result(fid, 20)
        eq(r.signal, 9, "flood cancelled")
    check(dt < 2 and dt2 < 3, "PING took %.2fs, a block %.2fs during a flood", dt, dt2)


@test
def races_run_cancel():
    """RUN then CANCEL after a random 0-5 ms, for every kind of block; every one must end (EXIT
    exactly once, nothing left running). DOCKEXEC_AGENT_RACES iterations (default 40)."""
    n = int(os.environ.get("DOCKEXEC_AGENT_RACES", "40"))
    sid = A.open_session()
    kinds = [dict(code="sleep 1000"), dict(code="echo quick"),
             dict(code="import time; time.sleep(1000)", lang="python", zygote=True),
             dict(code="import time; time.sleep(1000)", lang="python"),
             dict(code="print('quick')", lang="python", zygote=True),
             dict(code="import time; time.sleep(1000)", lang="python", session=sid)]
    rnd = random.Random(int(os.environ.get("DOCKEXEC_AGENT_SEED", "0")) or None)
    for i in range(n):
        batch = []
        for kw in rnd.sample(kinds, 3):
            fid = A.start(**dict(kw))
            batch.append((fid, kw))
        time.sleep(rnd.random() * 0.005)
        t0 = time.monotonic()
        for fid, kw in batch:
            A.send(CANCEL, fid)
        for fid, kw in batch:
            try:
                r = A.result(fid, 15)
            except AssertionError as e:
                raise AssertionError("iteration %d of %d, %r: %s" % (i, n, kw, e))
            exits = [f for f in r.frames if f[0] in (EXIT, ERROR)]
            check(len(exits) == 1 and r.exit is not None, "iteration %d: %r: %r", i, kw, r)
            check(not r.exit["session_lost"], "iteration %d: %r lost its session: %r", i, kw, r)
            dt = time.monotonic() - t0
            check(dt < 3, "iteration %d: %r took %.1fs to end after CANCEL", i, kw, dt)
            if "quick" not in kw["code"]:
                check(r.signal == 9 or r.code in (1, None), "iteration %d: %r ended %r", i, kw, r.exit)
    eq(srun(sid, "print('alive')").out, b"alive\n", "session after the races")
    A.send(SESSION_CLOSE, sid)
    check(A.ping(), "alive")
    # what is left below the agent: the spares (each a shepherd and its idle child), nothing else
    left = wait_until(lambda: len(descendants(A.p.pid)) <= 4, 5) or descendants(A.p.pid)
    check(left is True or len(left) <= 4, "left running after the races: %r", left)


@test
def large_code():
    # 6 MiB of code: more than a spare's spec pipe takes, so this forks with the code in memory
    body = "# " + "x" * 100 + "\n"
    code = body * (6 * 1024 * 1024 // len(body)) + "print('end', len(open(__file__).read()))\n"
    for zy in (False, True):
        r = A.run(code, lang="python", zygote=zy, timeout=60)
        eq(r.out, ("end %d\n" % len(code)).encode(), "6 MiB of code, zygote=%s" % zy)


def memory_limit():
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            v = open(path).read().strip()
        except OSError:
            continue
        return None if v == "max" else int(v)
    return None


@test
def oom_reported():
    lim = memory_limit()
    if lim is None or lim > (2 << 30):
        raise Skip("no container memory limit (docker run -m 256m --memory-swap 256m ... to test OOM)")
    r = A.run("b = []\nwhile True:\n    b.append(bytearray(8 << 20))", lang="python", timeout=120)
    eq((r.code, r.signal, r.exit and r.exit["oom"]), (None, 9, True), "OOM-killed block")
    check(A.ping(), "agent alive after an OOM kill")
    r = A.run("import os; os.kill(os.getpid(), 9)", lang="python")
    eq((r.signal, r.exit["oom"]), (9, False), "a later plain SIGKILL is not OOM")
    # issue 21, D9b: an OOM-killed session is lost, and says so
    sid = A.open_session()
    r = srun(sid, "b = []\nwhile True:\n    b.append(bytearray(8 << 20))", timeout=120)
    eq((r.signal, r.exit["oom"], r.exit["session_lost"]), (9, True, True), "OOM-killed session")
    check("killed by signal 9 (SIGKILL)" in r.exit["cause"] and "OOM killer" in r.exit["cause"],
          "cause: %r", r.exit["cause"])
    r = srun(sid, "print(1)")
    check(r.error_obj and r.error_obj.get("code") == "session_lost" and
          "OOM killer" in r.error_obj.get("cause", ""), "after the OOM kill: %r", r)
    A.send(SESSION_CLOSE, sid)


@test
def fallback_without_json_and_ctypes():
    """The python3-minimal situation, simulated on any python: json and ctypes unimportable."""
    ag = Agent(AGENT_PATH, prefix="import sys; sys.modules['json'] = None; sys.modules['ctypes'] = None\n")
    try:
        check(not ag.ready["subreaper"] and any("ctypes" in w for w in ag.ready["warnings"]), "%r", ag.ready)
        v = 'q"uote\\back\tslash \u00e9 \U0001F600 \x01 end'
        r = ag.run('printf "%s" "$V"', env={"V": v, "W\u00e9": "1"})
        eq(r.out.decode("utf-8"), v, "escapes through the fallback JSON codec")
        r = ag.run("print('\u00e9\\u00e9', end='')", lang="python", zygote=True)
        eq(r.out, "\u00e9\u00e9".encode(), "unicode code")
        note = _tree_cancel(ag, False)
        sid = ag.open_session()
        eq(ag.run("a = 2", lang="python", session=sid).code, 0, "session")
        eq(ag.run("print(a * 21)", lang="python", session=sid).out, b"42\n", "session")
        check(ag.ping(), "alive")
    finally:
        ag.send(SHUTDOWN, 0)
        eq(ag.close(10), 0, "exit")
    if note:
        print("    note: " + note)


@test
def boot_reads_a_bounded_source_from_stdin():
    """agent_boot.py (as root) reads the agent from its stdin: magic, length, source. Anything else,
    a source that is too large, stdin that ends early, or a host that sends nothing (its wait
    shortened here from 20 s to 1 s) ends the bootstrap with a refusal and no agent."""
    if BOOT_PATH is None:
        raise Skip("only with --boot")
    boot = open(BOOT_PATH).read()
    check("_READ_TIMEOUT = 20.0" in boot, "the bootstrap's read timeout moved")
    boot = boot.replace("_READ_TIMEOUT = 20.0", "_READ_TIMEOUT = 1.0")
    src = b"print('never')\n"
    for stdin, want in ((b"XXAGENT1" + struct.pack(">I", len(src)) + src, "does not start with"),
                        (b"DXAGENT1" + struct.pack(">I", 1 << 30), "more than"),
                        (b"DXAGENT1" + struct.pack(">I", 100) + src, "stdin ended before"),
                        (b"DXAGENT1" + struct.pack(">I", 100) + src, "did not send"),
                        (b"", "did not send")):
        p = subprocess.Popen(["python3", "-I", "-S", "-c", boot, "python3"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/")
        t0 = time.time()
        p.stdin.write(stdin)
        p.stdin.flush()
        try:
            if "did not send" in want:  # stdin stays open: the host is there, and silent
                out, err = p.stdout.read(), p.stderr.read()
            else:
                out, err = p.communicate(timeout=15)
        finally:
            p.kill()
            p.wait()
        eq(p.returncode, 1, "exit status (%s): %r" % (want, err))
        check(want.encode() in err and b"starting" not in err and out == b"", "%s: %r", want, err)
        check(time.time() - t0 < 10, "%s: took %.1f s", want, time.time() - t0)


@test
def boot_agent_keeps_no_memfd_and_its_source_fd_on_dev_null():
    """Started through agent_boot.py, the agent runs `/proc/self/fd/S`: it closes both memfds, and
    keeps S taken by /dev/null, so that reading its own file by name (linecache, for a traceback or
    a warning, as root) never opens a pipe or a file of a block's that got the number S."""
    if BOOT_PATH is None:
        raise Skip("only with --boot")
    if not is_root():
        raise Skip("needs root")
    ag = Agent(AGENT_PATH)
    fid = ag.start("sleep 5")  # a block's pipes are open in the agent meanwhile
    ag.wait_kind(STARTED, fid)
    try:
        args = open("/proc/%d/cmdline" % ag.p.pid, "rb").read().split(b"\0")
        check(args[1].startswith(b"/proc/self/fd/"), "the agent's argv: %r", args[:4])
        fds = {}
        for fd in os.listdir("/proc/%d/fd" % ag.p.pid):
            try:
                fds[int(fd)] = os.readlink("/proc/%d/fd/%s" % (ag.p.pid, fd))
            except OSError:
                pass
        eq(fds.get(int(args[1].rpartition(b"/")[2])), "/dev/null", "the source's fd: %r" % fds)
        check(not any("memfd" in t for t in fds.values()), "a memfd left open: %r", fds)
    finally:
        ag.send(CANCEL, fid)
        ag.result(fid)
        ag.send(SHUTDOWN, 0)
        ag.close(10)


def perf(n=50):
    """RUN -> EXIT round trips, one block at a time; the kinds take turns so that load changes on
    the machine hit them alike."""
    sid = A.open_session()
    kinds = (("sh true", dict(code="true", lang="sh")),
             ("python print(1) fresh interpreter", dict(code="print(1)", lang="python")),
             ("python print(1) zygote", dict(code="print(1)", lang="python", zygote=True)),
             ("python print(1) session", dict(code="print(1)", lang="python", session=sid)))
    ts = [[] for _ in kinds]
    for i in range(n + 3):
        for k, (name, kw) in enumerate(kinds):
            t0 = time.perf_counter()
            r = A.run(**kw)
            dt = time.perf_counter() - t0
            assert r.code == 0 and r.out == (b"1\n" if k else b""), r
            if i >= 3:  # warm-up
                ts[k].append(dt)
    A.send(SESSION_CLOSE, sid)
    return ["  p50 %-36s %6.2f ms  (min %.2f, max %.2f; %d runs, RUN->EXIT)" % (
        name, p50(t) * 1000, min(t) * 1000, max(t) * 1000, n) for (name, kw), t in zip(kinds, ts)]


# ----------------------------------------------------------------------------- main

AGENT_PATH = None


def main(argv):
    global A, WS, TMP, UID, VERBOSE, AGENT_PATH, BOOT_PATH
    args = list(argv[1:])
    if "--boot" in args:
        i = args.index("--boot")
        BOOT_PATH = os.path.abspath(args[i + 1])
        del args[i:i + 2]
    only = None
    if "-v" in args:
        VERBOSE = True
        args.remove("-v")
    if "-k" in args:
        i = args.index("-k")
        only = args[i + 1]
        del args[i:i + 2]
    if len(args) != 1:
        print(__doc__)
        return 2
    AGENT_PATH = os.path.abspath(args[0])
    TMP = tempfile.mkdtemp(prefix="dockexec-agent-test-")
    os.chmod(TMP, 0o755)
    WS = os.path.join(TMP, "ws")
    os.mkdir(WS)
    os.chmod(WS, 0o1777)
    passed, failed, skipped = 0, [], []
    try:
        UID = pick_uid() if is_root() else None
        A = Agent(AGENT_PATH)
        where = "a container (pid 1)" if in_container() else "the host"
        print("agent: python %s on %s, uid %d, subreaper %s, warnings %s" % (
            A.ready["python"], where, os.geteuid(), A.ready["subreaper"], A.ready["warnings"]))
        for fn in TESTS:
            if only and only not in fn.__name__:
                continue
            t0 = time.monotonic()
            try:
                fn()
                passed += 1
                status = "ok"
            except Skip as e:
                skipped.append((fn.__name__, str(e)))
                status = "SKIP (%s)" % e
            except Exception as e:
                failed.append(fn.__name__)
                status = "FAIL: %s: %s" % (type(e).__name__, e)
            print("%-40s %s  [%.2fs]" % (fn.__name__, status, time.monotonic() - t0))
            sys.stdout.flush()
            if A.p.poll() is not None:
                print("the shared agent died (rc %s); stderr:\n%s" % (A.p.returncode, A.err_text()))
                A = Agent(AGENT_PATH)
        if VERBOSE:
            for line in perf():
                print(line)
        diag = A.err_text()
        A.send(SHUTDOWN, 0)
        rc = A.close(10)
        if rc != 0:
            failed.append("shutdown (rc %r)" % rc)
        if diag.strip():
            print("agent stderr:\n" + diag)
        if UNCODED_ERRORS:  # issue 20: every ERROR carries a code from protocol.rs's ErrorCode
            failed.append("ERROR frames without a known code: %r" % (UNCODED_ERRORS[:5],))
    finally:
        rmtree(TMP)
    for name, why in skipped:
        print("skipped %s: %s" % (name, why))
    if failed:
        print("failed: " + ", ".join(failed))
    print("%d passed, %d failed, %d skipped" % (passed, len(failed), len(skipped)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
