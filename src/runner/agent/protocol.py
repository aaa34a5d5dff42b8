# ==== src/runner/agent/protocol.py (agent.rs joins these files into one script, in
# order.txt's order)
# The host channel: frame kinds and header, limits, diagnostics and the trace, JSON, output reads,
# and the checks of a request's fields.

# Frame kinds. src/runner/protocol.rs's Kind is their one source: a unit test there reads
# this block, up to its blank line, and checks it.
RUN, CANCEL, SESSION_OPEN, SESSION_CLOSE, SHUTDOWN, PING, SESSION_RESET = 1, 2, 3, 4, 5, 6, 7
READY, STARTED, STDOUT, STDERR, EXIT, ERROR, SESSION_READY, PONG = (
    0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88)
RESULT = 0x89
RESET, RESET_DONE = 8, 0x8A  # the pool's fast reset

# Error codes: every ERROR's "code", what the host branches on (its "message" is for people).
# src/runner/protocol.rs's ErrorCode is their one source: a unit test there reads this block, up
# to its blank line, and checks it. ERR_SESSION_LOST comes with a "cause" (why the session is lost);
# the host maps it to Error::SessionLost.
ERR_PROTOCOL = "protocol_error"  # id 0: the host's stream broke the protocol; the agent exits
ERR_INTERNAL = "internal_error"  # id 0: a bug in the agent; it exits
ERR_BAD_REQUEST = "bad_request"  # a malformed payload or field
ERR_UNKNOWN_LANGUAGE = "unknown_language"
ERR_UNKNOWN_USER = "unknown_user"  # the user or group is not in the image's /etc/passwd, /etc/group
ERR_UNKNOWN_SESSION = "unknown_session"
ERR_SESSION_EXISTS = "session_exists"  # SESSION_OPEN of an open session
ERR_SESSION_LOST = "session_lost"
ERR_SESSION_ENDED = "session_ended"  # a queued block's session was closed or reset
ERR_SPAWN_FAILED = "spawn_failed"  # fork, the user switch, the code file, the working directory
ERR_RESET_FAILED = "reset_failed"  # RESET refused (root blocks) or a process outlived every kill

_ERR_CODES = frozenset((ERR_PROTOCOL, ERR_INTERNAL, ERR_BAD_REQUEST, ERR_UNKNOWN_LANGUAGE,
                        ERR_UNKNOWN_USER, ERR_UNKNOWN_SESSION, ERR_SESSION_EXISTS, ERR_SESSION_LOST,
                        ERR_SESSION_ENDED, ERR_SPAWN_FAILED, ERR_RESET_FAILED))

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
    """A block or session cannot be started; ERROR tells the host why: code (an ERR_*), and the
    message (str(e))."""

    def __init__(self, code, msg):
        Exception.__init__(self, msg)
        self.code = code


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
        raise _Refusal(ERR_BAD_REQUEST, "bad %s payload: %s" % (kind, e))
    if not isinstance(req, dict):
        raise _Refusal(ERR_BAD_REQUEST, "bad %s payload: not an object" % kind)
    return req


def _clean(msg):
    # Never send lone surrogates (e.g. from undecodable file names): the host's JSON parser rejects them.
    return msg.encode("utf-8", "replace").decode("utf-8")


class _ProtocolError(Exception):
    pass


def _field(req, key, types, default):
    v = req.get(key, default)
    if not isinstance(v, types) or isinstance(v, bool) and bool not in types:
        raise _Refusal(ERR_BAD_REQUEST, "bad %r in request: %r" % (key, v))
    return v


def _env_field(req):
    env = req.get("env") or {}
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) and k
                                            and "=" not in k and "\0" not in k + v
                                            for k, v in env.items()):
        raise _Refusal(ERR_BAD_REQUEST, "bad 'env' in request")
    return env


_now = time.monotonic
