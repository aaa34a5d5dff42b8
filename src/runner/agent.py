import sys
# What a fresh interpreter has loaded: zygote children go back to it. Since 3.13, `-c` (unlike a
# script) imports linecache to show its source in tracebacks.
_BASELINE = frozenset(sys.modules) - {"linecache"}
# A fresh __main__'s names (the agent's own __file__/__cached__, when run from its memfd, are not).
_MAIN0 = {k: v for k, v in globals().items()
          if k.startswith("__") and k not in ("__file__", "__cached__")}
# Started by agent_boot.py as `python3 /proc/self/fd/S --env-fd E PAD` (S, E: memfds holding this
# source and the container's environment; see there), or directly as `python3 -c SRC` (as
# tests/agent/harness.py does). Either way the interpreter put the script's dir ("/", the memfd's)
# or '' (the cwd, /workspace: block-writable) first on sys.path, unless PYTHONSAFEPATH is set. The
# agent is root: it must never import from there, so drop it before the first import.
_BOOTED = sys.argv[1:2] == ["--env-fd"]
if sys.path and not getattr(sys.flags, "safe_path", False) and (_BOOTED or sys.path[0] == ""):
    del sys.path[0]
# Started through agent_boot.py, the agent runs with an environment that names nothing a block can
# write (HOME=/, no LD_*, only harmless PYTHON* variables; see there), and reads the container's
# own from the memfd E: every block sees that one, as before. _START_ENV is what this interpreter
# started with, to which a zygote block's startup-time variables must be equal (_zygote_faithful).
# Both memfds are closed here, before anything is forked: no block inherits them. Started directly,
# the two environments are the same.
import os
_START_ENV = dict(os.environ)
if _BOOTED:
    # The source's memfd (the interpreter has parsed it) is closed, and its number stays taken by
    # /dev/null: whatever reads the agent's own file by its name later (linecache, for a traceback
    # or a warning) must never open, as root, another file that got that number.
    _fd = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    os.dup2(_fd, int(sys.argv[0].rpartition("/")[2]), inheritable=False)
    os.close(_fd)
    _fd = int(sys.argv[2])
    os.lseek(_fd, 0, 0)  # the bootstrap's writes left the shared offset at the end
    _kv = []
    while not _kv or _kv[-1]:
        _kv.append(os.read(_fd, 1 << 20))
    os.close(_fd)
    os.environ.clear()
    for _kv in b"".join(_kv).split(b"\0"):
        _k, _eq, _v = _kv.partition(b"=")
        if _k and _eq:
            try:
                os.environb[_k] = _v
            except (ValueError, OSError):
                pass
    _fd = _kv = _k = _eq = _v = None
    del _fd, _kv, _k, _eq, _v
    del sys.argv[1:]

# dockexec warm agent, protocol v1. Started by the host through agent_boot.py, which checks the
# image, reads this source from the exec's stdin and execs `python3 /proc/self/fd/S --env-fd E PAD` (as
# root, cwd /, an environment that names nothing a block can write; the container's own is in the
# memfd E); fd 0 = frames from the host, fd 1 = frames to the host, fd 2 = diagnostics.
# Standard library only; runs on CPython 3.8-3.14; degrades without ctypes (python3-minimal).
#
# Process tree:  agent (root, single-threaded poll loop)
#                  `- shepherd per block/session (root, child subreaper, reaps until it has no child)
#                       `- block process (setsid, the block's user): execs the interpreter, or runs
#                          the code in this forked interpreter (zygote), or loops as a session.
#
# Trust: the agent reads nothing a block controls except its stdout/stderr bytes (opaque) and wait
# statuses (from its root shepherd), plus, for sessions, the session's control pipe, which is parsed
# strictly and can at worst misreport that session's own blocks (see _sess_loop). /proc/*/stat is
# parsed from the last ')' so a hostile comm cannot shift fields. It never waits without bound on a
# process a block can signal (one that changed to a block's user): see _delete_as.
#
# Zygote fidelity: a zygote block is `python3 FILE` minus an exec. Tested equal to a fresh run:
# __name__, __file__, sys.argv == [FILE], sys.orig_argv, sys.path (sys.path[0] = the file's real
# directory), the initial __main__ names, sys.modules (extras the agent imported are deleted),
# sys.exit codes, uncaught-exception tracebacks (agent frames stripped), SyntaxError output, an
# uncaught KeyboardInterrupt dying of SIGINT, signal dispositions and mask, threads, atexit,
# multiprocessing fork/spawn, os.environ (agent env + block env), cwd, uid/gid/groups, stdin empty,
# and what runs at exit: threads joined, atexit, then the finalizers of what the block left (files
# flushed and closed, __del__, generators' finally, weakref callbacks). Where nothing is left that
# teardown could run or flush, the process _exits after atexit and a flush of stdio instead of
# freeing the agent's inherited heap, which copies every page of it (see _zygote_exit).
# What still differs:
#   - the str/bytes hash seed is the agent's (shared by every zygote block) unless PYTHONHASHSEED
#     is set in the container env; a fresh python3 draws a new one per run;
#   - startup-time configuration is the agent's: sys.flags, PYTHON* variables, locale/stdio
#     encoding. A block whose effective env (container's + its own) differs from the agent's start
#     env in any PYTHON* variable CPython reads (_PY_READ), LANG, LC_*, LD_*, MALLOC_*, GLIBC_TUNABLES,
#     GCONV_PATH or LOCPATH variable
#     (so any container that sets PYTHONPATH or LD_PRELOAD, which the agent never starts with)
#     therefore runs through a fresh python3 instead; so does a block whose user would have a user
#     site-packages dir (HOME differs by design: the agent's is /), see _user_site_differs;
#   - /proc/self/cmdline reads `python3 FILE` followed by empty arguments (the agent's argv area,
#     rewritten; without ctypes, or for a FILE longer than PATH_MAX, it stays the agent's), and the
#     process starts with the agent's memory (RSS, gc counters, warm import/path caches such as
#     sys.path_importer_cache); the agent drops its references to other blocks' data first, and
#     never copies block output into a freed object (see _FWD), but earlier blocks' code (RUN
#     payloads, parsed into objects the agent frees) and session output may remain in freed memory;
#   - without ctypes the process stays non-dumpable after changing user (no core dumps, its
#     /proc/<pid> files are root's);
#   - gc.get_freeze_count() is the agent's frozen heap (gc.freeze() before forking), not 0;
#   - an uncaught KeyboardInterrupt's traceback is printed by the agent (through sys.excepthook,
#     as the interpreter does) before finalization rather than after it;
#   - code is compiled from the RUN payload (identical bytes to the file written), not re-read.

import atexit as _atexit
import gc
import os
import select
import signal
import struct
import time

try:
    import json as _json
except ImportError:  # python3-minimal
    _json = None
try:
    import ctypes as _ctypes
except ImportError:  # python3-minimal: no subreaper, see READY warnings
    _ctypes = None

_AGENT_G = globals()
_BUILTINS = sys.modules["builtins"]
_SourceFileLoader = sys.modules["_frozen_importlib_external"].SourceFileLoader
# For a zygote block's exit (_zygote_exit): what the agent itself loaded, and how to recognise
# native code, threads, weak-reference callbacks and finished generators.
_AGENT_MODULES = frozenset(sys.modules)
_EXT_SUFFIXES = tuple(sys.modules["_frozen_importlib_external"].EXTENSION_SUFFIXES)
_thread_count = sys.modules["_thread"]._count
_WeakRef = sys.modules["_weakref"].ref


def _gen_types():
    def g():
        yield

    async def c():
        pass

    async def ag():
        yield

    co = c()
    co.close()  # never awaited, on purpose: no warning
    return {type(g()): "gi_frame", type(co): "cr_frame", type(ag()): "ag_frame"}


_GEN_FRAME = _gen_types()

# Frame kinds. src/runner/protocol.rs's Kind is their one source: a unit test there reads
# this block, up to its blank line, and checks it.
RUN, CANCEL, SESSION_OPEN, SESSION_CLOSE, SHUTDOWN, PING, SESSION_RESET = 1, 2, 3, 4, 5, 6, 7
READY, STARTED, STDOUT, STDERR, EXIT, ERROR, SESSION_READY, PONG = (
    0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88)

MAX_FRAME = 64 * 1024 * 1024 + 5
SPARE_DELAY = 0.025  # see _Agent.spare_wait
SPARES = 2  # a RUN that follows the last block's end at once still finds one ready
MEM_TICK = 0.02  # see _Agent.mem_check
MEM_RESCAN = 0.1
CHUNK = 64 * 1024
_HDR = struct.Struct(">IBI")
_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")
LANGS = ("python", "sh", "bash", "pwsh")
PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER = 4, 36, 37


def _diag(msg):
    try:
        os.write(2, ("dockexec-agent: %s\n" % msg).encode("utf-8", "replace"))
    except OSError:
        pass


# Profiling: with DOCKEXEC_AGENT_TRACE=FILE in the container's environment (read once, at the
# agent's start: nothing a block sets reaches it), the agent, its shepherds and block processes
# append "monotonic_ns pid label minflt=N" lines to FILE at each step of a block's life; N is the
# process's minor page faults so far (copy-on-write copies after a fork show up there). FILE must
# be writable by the blocks' user too. Off, it costs one global test per step.
_TRACE = os.environ.get("DOCKEXEC_AGENT_TRACE") or None


def _t(label):
    if _TRACE is None:
        return
    try:
        st = _read_small("/proc/self/stat") or b") "
        f = st[st.rfind(b")") + 2:].split()
        flt = f[7].decode() if len(f) > 7 else "?"  # field 10, minflt
        fd = os.open(_TRACE, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o666)
        try:
            os.write(fd, ("%d %d %s minflt=%s\n" % (time.monotonic_ns(), os.getpid(), label, flt)).encode())
        finally:
            os.close(fd)
    except OSError:
        pass


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class _Refusal(Exception):
    """A block or session cannot be started; the message goes to the host in ERROR."""


class _Become(BaseException):
    """Raised in a forked block/session process to unwind the agent's stack to the top level,
    which then runs the code there (so the interpreter finalizes as after `python3 FILE`)."""


class _HostGone(Exception):
    pass


# ---------------------------------------------------------------- JSON (json is not in -minimal)

if _json is not None:
    def _jloads(b):
        return _json.loads(b.decode("utf-8"))

    def _jdumps(o):
        return _json.dumps(o, separators=(",", ":")).encode("ascii")
else:
    _JESC = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
    _HEX = frozenset("0123456789abcdefABCDEF")

    def _jws(s, i):
        n = len(s)
        while i < n and s[i] in " \t\r\n":
            i += 1
        return i

    def _jhex(s, i):
        h = s[i:i + 4]
        if len(h) != 4 or not _HEX.issuperset(h):
            raise ValueError("bad \\u escape")
        return int(h, 16)

    def _jstr(s, i):
        i += 1
        out = []
        while True:
            j = s.find('"', i)
            if j < 0:
                raise ValueError("unterminated string")
            k = s.find("\\", i, j)
            if k < 0:
                out.append(s[i:j])
                return "".join(out), j + 1
            out.append(s[i:k])
            e = s[k + 1:k + 2]
            if e == "u":
                cp = _jhex(s, k + 2)
                i = k + 6
                if 0xD800 <= cp < 0xDC00 and s[i:i + 2] == "\\u":
                    lo = _jhex(s, i + 2)
                    if 0xDC00 <= lo < 0xE000:
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00)
                        i += 6
                out.append(chr(cp))
            elif e in _JESC:
                out.append(_JESC[e])
                i = k + 2
            else:
                raise ValueError("bad escape")

    def _jval(s, i, depth=0):
        if depth > 64:
            raise ValueError("too deep")
        c = s[i:i + 1]
        if c == "{" or c == "[":
            obj = c == "{"
            res = {} if obj else []
            i = _jws(s, i + 1)
            if s[i:i + 1] == ("}" if obj else "]"):
                return res, i + 1
            while True:
                if obj:
                    if s[i:i + 1] != '"':
                        raise ValueError("expected a key")
                    k, i = _jstr(s, i)
                    i = _jws(s, i)
                    if s[i:i + 1] != ":":
                        raise ValueError("expected ':'")
                    v, i = _jval(s, _jws(s, i + 1), depth + 1)
                    res[k] = v
                else:
                    v, i = _jval(s, i, depth + 1)
                    res.append(v)
                i = _jws(s, i)
                c = s[i:i + 1]
                if c == ",":
                    i = _jws(s, i + 1)
                elif c == ("}" if obj else "]"):
                    return res, i + 1
                else:
                    raise ValueError("expected ',' or a closing bracket")
        if c == '"':
            return _jstr(s, i)
        for word, val in (("true", True), ("false", False), ("null", None)):
            if s.startswith(word, i):
                return val, i + len(word)
        j = i
        while j < len(s) and s[j] in "+-0123456789.eE":
            j += 1
        t = s[i:j]
        if not t:
            raise ValueError("unexpected character at %d" % i)
        return (float(t) if ("." in t or "e" in t or "E" in t) else int(t)), j

    def _jloads(b):
        s = b.decode("utf-8")
        v, i = _jval(s, _jws(s, 0))
        if _jws(s, i) != len(s):
            raise ValueError("trailing data")
        return v

    def _jq(s):
        out = ['"']
        for ch in s:
            o = ord(ch)
            if ch == '"' or ch == "\\":
                out.append("\\" + ch)
            elif o < 0x20 or o > 0x7E:
                if o > 0xFFFF:
                    o -= 0x10000
                    out.append("\\u%04x\\u%04x" % (0xD800 + (o >> 10), 0xDC00 + (o & 0x3FF)))
                else:
                    out.append("\\u%04x" % o)
            else:
                out.append(ch)
        out.append('"')
        return "".join(out)

    def _jenc(o):
        if o is None:
            return "null"
        if o is True:
            return "true"
        if o is False:
            return "false"
        if isinstance(o, int):
            return str(int(o))
        if isinstance(o, str):
            return _jq(o)
        if isinstance(o, (list, tuple)):
            return "[" + ",".join(_jenc(x) for x in o) + "]"
        if isinstance(o, dict):
            return "{" + ",".join(_jq(str(k)) + ":" + _jenc(v) for k, v in o.items()) + "}"
        raise TypeError("cannot encode %r" % type(o))

    def _jdumps(o):
        return _jenc(o).encode("ascii")


def _read_chunk(fd):
    """One non-blocking read of a block's pipe: None = nothing yet, b"" = EOF (or a read error,
    which ends the pipe the same way), else the bytes."""
    try:
        return os.read(fd, CHUNK)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""


# Block output is read into this one buffer, framed in place and written from it, then the buffer
# is zeroed: no block's output is ever copied into an object the agent frees, so a later zygote
# block (which starts with a copy of the agent's memory) cannot find an earlier block's output in
# freed heap, nor in this buffer.
_FWD = bytearray(_HDR.size + CHUNK)
_FWD_VIEW = memoryview(_FWD)
_FWD_BODY = _FWD_VIEW[_HDR.size:]
_ZEROS = memoryview(bytes(CHUNK))


def _read_chunk_into(fd):
    """_read_chunk into _FWD_BODY: None = nothing yet, 0 = EOF (or a read error), else the count."""
    try:
        return os.readv(fd, [_FWD_BODY])
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return 0


def _json_object(payload, kind):
    """A frame's JSON object payload, or _Refusal naming the frame kind."""
    try:
        req = _jloads(payload)
    except ValueError as e:
        raise _Refusal("bad %s payload: %s" % (kind, e))
    if not isinstance(req, dict):
        raise _Refusal("bad %s payload: not an object" % kind)
    return req


def _clean(msg):
    # Never send lone surrogates (e.g. from undecodable file names): the host's JSON parser rejects them.
    return msg.encode("utf-8", "replace").decode("utf-8")


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
        raise _Refusal("bad user %r" % (spec,))
    u, _, g = spec.partition(":")
    passwd = [r for r in _read_db("/etc/passwd") if len(r) >= 4]
    ent = None
    if _num(u):
        uid = int(u)
        ent = next((r for r in passwd if r[2] == u or (_num(r[2]) and int(r[2]) == uid)), None)
    else:
        ent = next((r for r in passwd if r[0] == u), None)
        if ent is None or not _num(ent[2]):
            raise _Refusal("unknown user %r (not in /etc/passwd)" % u)
        uid = int(ent[2])
    groups_db = [r for r in _read_db("/etc/group") if len(r) >= 3]
    if g == "":
        gid = int(ent[3]) if ent is not None and _num(ent[3]) else 0
    elif _num(g):
        gid = int(g)
    else:
        row = next((r for r in groups_db if r[0] == g and _num(r[2])), None)
        if row is None:
            raise _Refusal("unknown group %r (not in /etc/group)" % g)
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
        raise _Refusal("cannot switch to user %s: %s" % (spec, os.strerror(e.errno)))


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
        raise _Refusal(_oserr("cannot write the code file", e, path))
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
        raise _Refusal(_oserr("cannot write the code file", e, path))


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


def _child_fail(status_w, msg):
    try:
        _write_all(status_w, _clean(msg).encode("utf-8") or b"?")
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
            raise _Refusal(_oserr("cannot enter the working directory", e, cwd))
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
        _child_fail(status_w, str(e))
    except BaseException as e:
        _child_fail(status_w, "cannot start the block: %r" % (e,))
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


def _block_child(spec, out_w, err_w):
    def run(status_w):
        try:
            _block_prologue(out_w, err_w, {status_w})
        except BaseException as e:
            _child_fail(status_w, "cannot start the block: %r" % (e,))
        _block_body(spec, status_w)
    return run


def _spare_child(out_w, err_w, spec_r):
    """A block process forked ahead of time: it does the prologue and unwinds the agent's stack
    (as a zygote block would), then waits at the top level (as root, out of any block's reach)
    for its spec from the agent: _spare_wait. Saves two forks and that set-up on a RUN's
    critical path."""
    def run(status_w):
        try:
            _block_prologue(out_w, err_w, {status_w, spec_r})
        except BaseException as e:
            _child_fail(status_w, "cannot start the block: %r" % (e,))
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
        _child_fail(status_w, "cannot start the block: %r" % (e,))
    try:
        _block_body(spec, status_w)
    except _Become as b:
        return b.args[0]
    os._exit(70)  # not reached: _block_body execs, _exits or raises _Become


def _session_child(sp):
    cwd, env, cred, user, out_w, err_w, cmd_r, intr_r, ctl_w = sp

    def run(status_w):
        try:
            os.setsid()
            _reset_signals()
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # default_int_handler only while user code runs
            _setup_stdio(out_w, err_w, {status_w, cmd_r, intr_r, ctl_w})
            _drop_privileges(cred, user)
            if cred is not None:
                _prctl(PR_SET_DUMPABLE, 1)
            try:
                os.chdir(cwd)
            except OSError as e:
                raise _Refusal(_oserr("cannot enter the working directory", e, cwd))
            os.environ.update(env)
            os.set_blocking(intr_r, False)
            os.close(status_w)  # -> SESSION_READY
            raise _Become(("session", cmd_r, intr_r, ctl_w))
        except _Become:
            raise
        except _Refusal as e:
            _child_fail(status_w, str(e))
        except BaseException as e:
            _child_fail(status_w, "cannot start the session: %r" % (e,))
    return run


# ------------------------------------------------------------------------- in-process code (zygote, session)

def _clean_modules():
    """sys.modules back to the interpreter's own baseline."""
    for name in list(sys.modules):
        if name not in _BASELINE:
            del sys.modules[name]


def _fresh_main(path):
    """A new __main__ module, as the interpreter sets it up for `python3 path`, and sys.modules
    back to the interpreter's own baseline."""
    _clean_modules()
    m = type(sys)("__main__")
    d = m.__dict__
    for k, v in _MAIN0.items():
        if k not in ("__name__", "__doc__", "__package__", "__spec__", "__loader__"):
            d[k] = {} if isinstance(v, dict) else v  # __annotations__, __builtins__
    if path is not None:
        d["__loader__"] = _SourceFileLoader("__main__", path)
        d["__file__"] = path
        d["__cached__"] = None
    d["__builtins__"] = _BUILTINS
    sys.modules["__main__"] = m
    return m


def _strip_tb(exc, seen=None):
    """Removes the agent's frames from exc's traceback (and its cause/context chain)."""
    seen = seen if seen is not None else set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        tb = exc.__traceback__
        keep = []
        while tb is not None:
            if tb.tb_frame.f_globals is not _AGENT_G:
                keep.append(tb)
            tb = tb.tb_next
        for a, b in zip(keep, keep[1:]):
            a.tb_next = b
        if keep:
            keep[-1].tb_next = None
        exc.__traceback__ = keep[0] if keep else None
        if exc.__cause__ is not None:
            _strip_tb(exc.__cause__, seen)
        exc = exc.__context__


def _print_exc(exc):
    """What the interpreter does for an uncaught exception: sys.excepthook on stderr."""
    _strip_tb(exc)
    t, tb = type(exc), exc.__traceback__
    sys.last_type, sys.last_value, sys.last_traceback = t, exc, tb
    if sys.version_info >= (3, 12):
        sys.last_exc = exc
    try:
        sys.excepthook(t, exc, tb)
    except BaseException as e2:
        try:
            _strip_tb(e2)
            sys.stderr.write("Error in sys.excepthook:\n")
            sys.__excepthook__(type(e2), e2, e2.__traceback__)
            sys.stderr.write("\nOriginal exception was:\n")
            sys.__excepthook__(t, exc, tb)
        except BaseException:
            pass
    _flush_stdio()


def _flush_stdio():
    for f in (sys.stdout, sys.stderr):
        try:
            if f is not None:
                f.flush()
        except BaseException:
            pass


def _set_cmdline(args):
    """Rewrites this process's argv area, so that /proc/self/cmdline (ps, pkill -f) reads `args`
    instead of the agent's (`python3 /proc/self/fd/S --env-fd E PAD`, PAD sized by agent_boot.py
    for any FILE up to PATH_MAX; or `python3 -c <source>`), and the rest is zeroed (read as empty
    trailing arguments). Needs ctypes; without it the agent's command line stays."""
    if _ctypes is None:
        return
    data = _read_small("/proc/self/stat")
    if not data:
        return
    f = data[data.rfind(b")") + 2:].split()  # f[0] is field 3; arg_start/arg_end are 48/49
    try:
        start, end = int(f[45]), int(f[46])
    except (ValueError, IndexError):
        return
    room = end - start
    want = b"\0".join(a.encode("utf-8", "surrogateescape") for a in args) + b"\0"
    if room <= 0 or len(want) > room:
        return
    try:
        _ctypes.memmove(start, want + b"\0" * (room - len(want)), room)
    except Exception:  # the area is this process's own stack; never fatal if it is not
        pass


def _zygote_prepare(path):
    """In the zygote child, at top level: becomes `python3 path` and returns the namespace."""
    m = _fresh_main(path)
    sys.argv[:] = [path]
    exe = sys.orig_argv[0] if getattr(sys, "orig_argv", None) else "python3"
    if hasattr(sys, "orig_argv"):
        sys.orig_argv = [exe, path]
    _set_cmdline([exe, path])
    sys.path.insert(0, os.path.dirname(os.path.realpath(path)))
    return m.__dict__


def _noop_hook(*args):
    pass


_BOOKKEEPING_MODULES = ("_frozen_importlib", "_weakrefset", "weakref")


def _bookkeeping_callback(cb):
    """A weak-reference callback that only removes a dead entry from a container: _abc's registry
    and caches, the import system's module locks, WeakSet and the weakref dictionaries."""
    if type(cb) is type(len):  # builtin (bound) method
        return cb.__name__ == "_destroy" and isinstance(cb.__self__, _WeakRef)  # _abc.c
    g = getattr(cb, "__globals__", None)
    if g is None or type(cb) is not type(_t):
        return False
    return any(getattr(sys.modules.get(n), "__dict__", None) is g for n in _BOOKKEEPING_MODULES)


def _teardown_observable():
    """Whether the interpreter's teardown after the atexit callbacks could do anything a zygote
    block can observe: run a finalizer (`__del__`, a file's close and flush, a suspended
    generator's `finally`), call a weak-reference callback, let a thread run on, or (native code
    the agent never loaded, ctypes) run C-level exit handlers. Only objects created since the
    agent's last gc.freeze() (those of this process) are looked at: the agent's own need none."""
    if _thread_count():
        _t("teardown-needed threads")
        return True
    mods = sys.modules
    if "ctypes" in mods or "_ctypes" in mods:
        _t("teardown-needed ctypes")
        return True
    for name, m in list(mods.items()):
        if name not in _AGENT_MODULES:
            f = getattr(m, "__file__", None)
            if isinstance(f, str) and f.endswith(_EXT_SUFFIXES):
                _t("teardown-needed native " + name)
                return True
    has_del = {}
    for o in gc.get_objects():
        t = type(o)
        if issubclass(t, _WeakRef):
            cb = o.__callback__
            if cb is not None and not _bookkeeping_callback(cb):
                _t("teardown-needed weakref %r" % (cb,))
                return True
            continue
        for k in ((t, o) if issubclass(t, type) else (t,)):
            d = has_del.get(k)
            if d is None:
                d = has_del[k] = any("__del__" in c.__dict__ for c in type.__dict__["__mro__"].__get__(k))
            if d and k is t and t in _GEN_FRAME:
                d = getattr(o, _GEN_FRAME[t]) is not None  # finished or never started: nothing to run
            if d:
                if _TRACE is not None:
                    _t("teardown-needed %s" % type.__dict__["__name__"].__get__(t))
                return True
    return False


def _zygote_exit(code):
    """Ends a zygote block as `python3 FILE` ends, minus the teardown of the agent's inherited
    heap: Py_FinalizeEx's visible steps in its order (join non-daemon threads, run the atexit
    callbacks), then, if nothing left could run code or flush data at teardown, flush stdout and
    stderr (and C stdio) and _exit with `code`. Otherwise it returns, and the interpreter tears
    down for real (the steps already run are no-ops the second time). Freeing every inherited
    object would copy each page of the agent's heap (copy-on-write) just to exit."""
    try:
        th = sys.modules.get("threading")
        if th is not None:
            th._shutdown()
        _atexit._run_exitfuncs()
        if _teardown_observable():
            _t("slow-exit")
            return
        for f in (sys.stdout, sys.stderr):
            if f is not None and not getattr(f, "closed", False):
                f.flush()
    except BaseException:
        return  # the interpreter reports it as it would have
    if _LIBC is not None:
        _LIBC.fflush(None)
    _t("fast-exit")
    os._exit(code & 0xFF)


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


def _sess_exec(co, ns, intr_r, bid):
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if _intr_pending(intr_r, bid):  # cancelled before SIGINT could find user code running
            raise KeyboardInterrupt
        exec(co, ns)
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
                raise _Refusal(_oserr("cannot enter the working directory", e, req["cwd"]))
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
            co = compile(src, path, "exec", dont_inherit=True)
        except BaseException as e:
            exc = e
        else:
            try:
                exc = _sess_exec(co, ns, intr_r, bid)
            except KeyboardInterrupt as e:  # a second SIGINT right at the end of the block
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                exc = e
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


# ------------------------------------------------------------------------- the agent

class _Shep(object):
    __slots__ = ("pid", "rep", "buf", "owner", "cpid")

    def __init__(self, pid, rep, owner):
        self.pid, self.rep, self.buf, self.owner, self.cpid = pid, rep, b"", owner, 0


class _Block(object):
    __slots__ = ("id", "shep", "out", "err", "status", "killed", "oom0", "file", "delete", "cred",
                 "started", "t0")

    def __init__(self, bid):
        self.id = bid
        self.t0 = _now()
        self.shep = None
        self.out = self.err = -1
        self.status = None
        self.killed = False
        self.oom0 = None
        self.file = None
        self.delete = False
        self.cred = None
        self.started = False


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
    __slots__ = ("sess", "shep", "out", "err", "cmd", "intr", "ctl", "ctlbuf", "cmdbuf", "ready",
                 "killed", "oom0", "dying", "pending", "cause")

    def __init__(self, sess):
        self.sess = sess
        self.shep = None
        self.out = self.err = self.cmd = self.intr = self.ctl = -1
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


# ERROR's "code" for a block refused because its session is lost (its "cause" says why); the host
# maps it to Error::SessionLost. Must match protocol::ERR_SESSION_LOST.
ERR_SESSION_LOST = "session_lost"


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


class _ProtocolError(Exception):
    pass


def _field(req, key, types, default):
    v = req.get(key, default)
    if not isinstance(v, types) or isinstance(v, bool) and bool not in types:
        raise _Refusal("bad %r in request: %r" % (key, v))
    return v


def _env_field(req):
    env = req.get("env") or {}
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) and k
                                            and "=" not in k and "\0" not in k + v
                                            for k, v in env.items()):
        raise _Refusal("bad 'env' in request")
    return env


class _Agent(object):
    def __init__(self):
        self.poll = select.poll()
        self.fds = {}  # fd -> (kind, obj)
        self.blocks = {}  # execution id -> _Block (until EXIT/ERROR)
        self.sessions = {}  # session id -> _Session
        self.sheps = {}  # report fd -> _Shep (until the shepherd exits)
        self.inbuf = bytearray()
        self.spares = []  # [(shepherd, out fd, err fd, spec fd)]: block processes forked ahead of time
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

    def error(self, fid, msg):
        self.send_json(ERROR, fid, {"message": _clean(msg)})

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
            pid, rep = _spawn(_spare_child(out_w, err_w, spec_r), (out_w, err_w, spec_r), ())
        except OSError as e:
            for fd in fds:
                os.close(fd)
            _diag("cannot fork a spare block process: %s" % os.strerror(e.errno))
            self.spare_retry = _now() + 1.0
            return False
        self.spare_retry = 0.0
        for fd in (out_w, err_w, spec_r):
            os.close(fd)
        for fd in (out_r, err_r, rep):
            os.set_blocking(fd, False)
        shep = _Shep(pid, rep, None)
        self.sheps[rep] = shep
        self.watch(rep, "report", shep)
        self.spares.append((shep, out_r, err_r, spec_w))
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
        shep, out_r, err_r, spec_w = self.spares.pop(0)  # the oldest: the most likely to be ready
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
            return None
        return shep, out_r, err_r

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
            self.error(0, "protocol error: " + msg)
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
                self.error(fid, "unknown session %d" % fid)
            else:
                # Not "lost": the host would mark the session lost after the reset, when the
                # running block's EXIT reached its worker after SESSION_READY reached reset().
                self.sess_end(s, "session reset", lost=False)
                self.sess_start(s)
        elif kind == SHUTDOWN:
            return self.shutdown(0)
        elif kind == PING:
            self.send(PONG, fid, payload)
        else:
            raise _ProtocolError("unknown frame kind 0x%02x" % kind)
        return None

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
                raise _Refusal("unknown language %r" % (lang,))
            path = _field(req, "file", (str,), None)
            if not path.startswith("/") or "\0" in path or path.endswith("/"):
                raise _Refusal("the code file path must be absolute: %r" % path)
            code = _field(req, "code", (str,), None)
            cwd = _field(req, "cwd", (str,), "/workspace")
            env = _env_field(req)
            sid = req.get("session")
            if sid is not None:
                if not isinstance(sid, int) or isinstance(sid, bool):
                    raise _Refusal("bad 'session' in request")
                s = self.sessions.get(sid)
                if s is None:
                    raise _Refusal("unknown session %d" % sid)
                if s.lost is not None:
                    self.error_lost(bid, s.lost)
                    return
                if lang != "python":
                    raise _Refusal("a %s block cannot run in a session (python only)" % lang)
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
            self.error(bid, str(e))
            return
        b = _Block(bid)
        b.file, b.delete, b.cred = path, bool(req.get("delete")), cred
        b.oom0 = _oom_count()
        got = self.take_spare((lang, path, src, cwd, env, cred, user, zygote, code))
        _t("dispatched")
        if got is not None:
            b.shep, b.out, b.err = got
            b.shep.owner = b
            self.blocks[bid] = b
            return
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            pid, rep = _spawn(_block_child((lang, path, src, cwd, env, cred, user, zygote), out_w, err_w),
                              (out_w, err_w), ())
        except OSError as e:
            for fd in (out_r, out_w, err_r, err_w):
                os.close(fd)
            self.error(bid, "cannot fork: %s" % os.strerror(e.errno))
            return
        os.close(out_w)
        os.close(err_w)
        for fd in (out_r, err_r, rep):
            os.set_blocking(fd, False)
        b.out, b.err = out_r, err_r
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
                if isinstance(owner, _Block):
                    self.block_failed(owner, msg)
                else:
                    self.sess_failed(owner, msg)
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
                    return self.block_failed(owner, "the block's shepherd died")
                del self.blocks[owner.id]
                owner.out = self.unwatch(owner.out)
                owner.err = self.unwatch(owner.err)
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

    def block_failed(self, b, msg):
        if self.blocks.get(b.id) is not b:
            return
        del self.blocks[b.id]
        b.out = self.unwatch(b.out)
        b.err = self.unwatch(b.err)
        if b.killed:  # cancelled while it was being set up: it never started
            self.send_json(EXIT, b.id, _exit_json(None, True, None))
        else:
            self.error(b.id, msg)

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
        del self.blocks[b.id]
        if b.delete:
            _delete_as(b.file, b.cred)
        culled = b.shep.pid in self.culled
        self.culled.discard(b.shep.pid)
        self.send_json(EXIT, b.id, _exit_json(b.status, b.killed, b.oom0, culled=culled))
        _t("exit %d" % b.id)

    # -- sessions
    def on_session_open(self, sid, payload):
        if sid == 0:
            raise _ProtocolError("SESSION_OPEN with session id 0")
        if sid in self.sessions:
            self.error(sid, "session %d is already open" % sid)
            return
        try:
            req = _json_object(payload, "SESSION_OPEN")
            user = req.get("user")
            cred = _resolve_user(user)
            cwd = _field(req, "cwd", (str,), "/workspace")
            env = _env_field(req)
        except _Refusal as e:
            self.error(sid, str(e))
            return
        s = _Session(sid, user, cwd, env, cred)
        self.sessions[sid] = s
        self.sess_start(s)

    def sess_start(self, s):
        s.lost = None
        p = _SessProc(s)
        pipes = [os.pipe() for _ in range(5)]
        (out_r, out_w), (err_r, err_w), (cmd_r, cmd_w), (intr_r, intr_w), (ctl_r, ctl_w) = pipes
        child_fds = (out_w, err_w, cmd_r, intr_r, ctl_w)
        p.oom0 = _oom_count()
        try:
            pid, rep = _spawn(_session_child((s.cwd, s.env, s.cred, s.user) + child_fds), child_fds, ())
        except OSError as e:
            for pr in pipes:
                os.close(pr[0])
                os.close(pr[1])
            del self.sessions[s.id]
            self.error(s.id, "cannot fork: %s" % os.strerror(e.errno))
            return
        for fd in child_fds:
            os.close(fd)
        for fd in (out_r, err_r, cmd_w, intr_w, ctl_r, rep):
            os.set_blocking(fd, False)
        p.out, p.err, p.cmd, p.intr, p.ctl = out_r, err_r, cmd_w, intr_w, ctl_r
        p.shep = _Shep(pid, rep, p)
        s.proc = p
        self.sheps[rep] = p.shep
        self.watch(rep, "report", p.shep)
        self.watch(out_r, "sout", p)
        self.watch(err_r, "serr", p)
        self.watch(ctl_r, "ctl", p)
        self.fds[cmd_w] = ("cmd", p)  # polled for POLLOUT only while cmdbuf is not empty
        self.fds[intr_w] = ("intr", p)  # never polled: 4-byte non-blocking writes

    def sess_ready(self, p):
        s = p.sess
        if s.proc is not p:
            return
        p.ready = True
        self.send(SESSION_READY, s.id)
        self.sess_pump(s)

    def sess_failed(self, p, msg):
        s = p.sess
        if s.proc is not p:
            return
        self.sess_close_proc(p)
        s.proc = None
        if self.sessions.get(s.id) is s:
            del self.sessions[s.id]
        self.error(s.id, msg)
        for e in s.queue:
            self.error(e.id, "the session could not start: " + msg)
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

    def sess_drain(self, p):
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
                self.error(bid, rec.decode("utf-8", "replace"))
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

    def sess_proc_exit(self, p, status):
        """The session process exited (status) or its shepherd is gone (None)."""
        s = p.sess
        if s.proc is not p:
            return
        if not p.ready and not p.dying:
            return self.sess_failed(p, "the session process died while starting")
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
        for name in ("out", "err", "cmd", "intr", "ctl"):
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
                    self.error(e.id, why)
            self.sess_close_proc(p)
            s.proc = None
        s.running = None
        for q in s.queue:
            self.error(q.id, why)
        s.queue = []


# Within one poll round: reports and session control first (STARTED goes out before any output,
# and a DONE drains the pipes itself), then stdout before stderr.
_ORDER = {"ctl": 0, "report": 1, "out": 2, "sout": 2, "err": 3, "serr": 3, "cmd": 4}


_now = time.monotonic


_STRAY = []  # deletion helpers killed but not yet reaped (no ctypes only)
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
    if _LIBC is not None and hasattr(_LIBC, "setfsuid"):
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
    for pid in list(_STRAY):
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                _STRAY.remove(pid)
        except ChildProcessError:
            _STRAY.remove(pid)
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
            agent.error(0, "internal agent error: %r" % (e,))
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
_exc = None
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
_t("code-done")
_co = _ns = None
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
    _print_exc(_exc)
    _code = 1
if _code is not None:
    _zygote_exit(_code)  # does not return if the interpreter's teardown would be invisible
if _exc is not None:
    # Outside any except block, so nothing chains to the agent, and from no global of the agent's:
    # whatever the exception holds (the block's frames, so its namespace) must be freed, and
    # finalized, as the interpreter tears down. SystemExit: the interpreter exits with its code
    # (its traceback is never printed). A KeyboardInterrupt: printed (without agent frames), then
    # re-raised with a silent hook, so the process dies of SIGINT. Anything else was printed above:
    # exit 1.
    if isinstance(_exc, SystemExit):
        _exc.__traceback__ = _exc.__context__ = _exc.__cause__ = None
    elif isinstance(_exc, KeyboardInterrupt):
        _print_exc(_exc)
        sys.excepthook = _noop_hook
    else:
        _exc = SystemExit(1)

    def _take_exc():
        global _exc
        e, _exc = _exc, None
        return e

    raise _take_exc()
