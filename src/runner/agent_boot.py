import os, sys
# dockexec agent bootstrap: `python3 -I -S -c <this> NAME` as root, cwd /, started by agent.rs's
# BOOT_SCRIPT from an interpreter found only in root-owned fixed dirs. Isolated (no PYTHON*
# variables, no user site, no site at all, no cwd on sys.path), it checks that nothing the agent's
# own start will read as root can be written by anyone but root, reads the agent's source from its
# stdin (the host writes it right after the attach, before any frame: MAGIC, a 4-byte big-endian
# length, the source; bounded in size and time), then execs the agent flag-free (so that zygote
# children have a fresh run's sys.flags) with an environment that points at nothing a block can
# write.
#
# How the agent runs: `python3 /proc/self/fd/S --env-fd E PAD`, S a memfd (root's, never on any
# filesystem) holding the source, E a memfd holding the container's environment (K=V\0...), which
# the agent restores for the blocks before anything else. Neither travels in argv any more: Linux
# refuses one argument of 128 KiB or more (E2BIG), and argv is readable by every process. A script
# path, not a `-c STUB` that reads and execs the source: the agent's module frame stays the bottom
# frame of every stack (a zygote block raises _Become back to it and runs there; a stub would add a
# frame under it, seen by inspect.stack(), the recursion limit and a warning's stacklevel), and the
# interpreter closes the script before running it; tests/agent/harness.py --boot runs every case,
# zygote fidelity (sys.argv, sys.orig_argv, cmdline, teardown) included, unchanged on this start.
# The agent closes both memfds (S's number then held by /dev/null, so that reading its own file by
# name never opens another file as root) and drops sys.path[0] (the memfd's dir, "/") first thing,
# before it forks anything: no block ever inherits them. PAD ("dockexec warm agent" and spaces)
# makes the argv area big enough for a zygote block's `python3 FILE` (see _set_cmdline in
# agent/zygote.py), and names the agent in ps.

# glibc's list of variables it ignores for setuid programs (paths it would load or read), plus
# what makes Python read a path: the agent's start never sees them.
_UNSAFE = ("GCONV_PATH", "GETCONF_DIR", "HOSTALIASES", "LOCALDOMAIN", "LOCPATH", "MALLOC_TRACE",
           "NIS_PATH", "NLSPATH", "RESOLV_HOST_CONF", "RES_OPTIONS", "TMPDIR", "TZDIR",
           "GLIBC_TUNABLES", "HOME", "PATH")
# PYTHON* variables that only tune the interpreter and name no path: kept, so that the agent (and
# so each zygote block) starts configured as a fresh python3 in the container would be.
_PY_OK = ("PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PYTHONHASHSEED", "PYTHONIOENCODING",
          "PYTHONUTF8", "PYTHONOPTIMIZE", "PYTHONWARNINGS", "PYTHONDEVMODE", "PYTHONFAULTHANDLER",
          "PYTHONMALLOC", "PYTHONMALLOCSTATS", "PYTHONTRACEMALLOC", "PYTHONNODEBUGRANGES",
          "PYTHONINTMAXSTRDIGITS", "PYTHONWARNDEFAULTENCODING", "PYTHONCOERCECLOCALE",
          "PYTHONLEGACYWINDOWSSTDIO", "PYTHONNOUSERSITE", "PYTHONVERBOSE", "PYTHONDEBUG",
          "PYTHONASYNCIODEBUG", "PYTHONPERFSUPPORT", "PYTHONSAFEPATH", "PYTHONPROFILEIMPORTTIME",
          "PYTHON_PERF_JIT_SUPPORT", "PYTHON_CPU_COUNT", "PYTHON_FROZEN_MODULES", "PYTHON_COLORS",
          "PYTHON_GIL", "PYTHON_JIT", "PYTHON_TLBC", "PYTHON_THREAD_INHERIT_CONTEXT",
          "PYTHON_CONTEXT_AWARE_WARNINGS", "PYTHONASYNCIOTASKS")
# What agent.rs's exec sets to "" so that the loader of the root `sh` and of this interpreter loads
# nothing a block planted; their values for the blocks come from the container's init (pid 1), which
# was started with the container's environment before any block ran.
_BLANKED = (b"LD_PRELOAD", b"LD_LIBRARY_PATH", b"LD_AUDIT", b"LD_PROFILE", b"LD_PROFILE_OUTPUT",
            b"LD_DEBUG", b"LD_DEBUG_OUTPUT")
_HOME = "/"  # the agent's HOME: its user site (/.local/...) can only be made by root
_PATH = "/usr/local/bin:/usr/bin:/bin"  # the BOOT_SCRIPT's search order: argv[0] resolves here
_MAGIC = b"DXAGENT1"  # agent.rs's AGENT_MAGIC
_MAX_SOURCE = 16 << 20  # the agent is ~100 KB: anything near this is not one
_READ_TIMEOUT = 20.0  # agent.rs's START_TIMEOUT is 30 s: the host writes at once, or never
# A zygote block's /proc/self/cmdline (`python3 FILE`, FILE up to PATH_MAX) must fit in argv's area.
_PAD = "dockexec warm agent".ljust(4200)


def _refuse(msg):
    os.write(2, ("dockexec-agent: refusing to start: %s\n" % msg).encode("utf-8", "replace"))
    os._exit(1)


def _who(st):
    return "uid %d, gid %d, mode %o" % (st.st_uid, st.st_gid, st.st_mode & 0o7777)


def _root_only(path, what, seen):
    """path, and every dir above it, owned by root and writable by nobody else (an ancestor may be
    sticky, like /tmp: nobody else can then replace what root put in it). A path that does not
    exist: its nearest existing parent must not let anyone else create it."""
    path = os.path.abspath(path)
    if path in seen:
        return
    seen.add(path)
    missing = False
    p = path
    while True:
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            missing = True
            p = os.path.dirname(p)
            continue
        except OSError as e:
            _refuse("cannot check %s (%s): %s" % (p, what, os.strerror(e.errno)))
        if os.path.islink(p):  # root-owned links only, then what they name
            if st.st_uid != 0:
                _refuse("%s (%s) is a link owned by uid %d: the agent would run code a block "
                        "can plant as root" % (p, what, st.st_uid))
            _root_only(os.path.join(os.path.dirname(p), os.readlink(p)), what, seen)
        else:
            sticky_ok = p != path and not missing and (st.st_mode & 0o1000)
            if st.st_uid != 0 or (st.st_mode & 0o022 and not sticky_ok):
                how = ("is owned by uid %d" % st.st_uid) if st.st_uid != 0 else \
                    "is writable by others" if st.st_mode & 0o002 else \
                    "is writable by its group (gid %d)" % st.st_gid
                _refuse("%s (%s%s) %s (%s): the agent would run code a block can plant as root"
                        % (p, what, "" if p == path else ", above " + path, how, _who(st)))
        missing = False
        if p == "/":
            return
        p = os.path.dirname(p)


def _env():
    env = {}
    for k, v in os.environb.items():
        ks = k.decode("utf-8", "surrogateescape")
        if ks in _UNSAFE or ks.startswith("LD_") or ks.startswith("MALLOC_"):
            continue
        if ks.startswith("PYTHON") and ks not in _PY_OK:
            continue
        env[k] = v
    env[b"HOME"] = _HOME.encode()
    env[b"PATH"] = _PATH.encode()
    return env


def _read_stdin(n, deadline):
    """Exactly n bytes from fd 0, never more (the agent's frames follow them); else refuses."""
    import select, time
    buf = bytearray()
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            _refuse("the host did not send the agent's source within %.0f s" % _READ_TIMEOUT)
        if not select.select([0], [], [], left)[0]:
            continue
        b = os.read(0, min(n - len(buf), 1 << 20))
        if not b:
            _refuse("stdin ended before the agent's source did (%d of %d bytes)" % (len(buf), n))
        buf += b
    return bytes(buf)


def _read_agent():
    import time
    deadline = time.monotonic() + _READ_TIMEOUT
    head = _read_stdin(len(_MAGIC) + 4, deadline)
    if head[:len(_MAGIC)] != _MAGIC:
        _refuse("stdin does not start with the agent's source (%r)" % (head,))
    n = int.from_bytes(head[len(_MAGIC):], "big")
    if n > _MAX_SOURCE:
        _refuse("the agent's source is %d bytes, more than %d" % (n, _MAX_SOURCE))
    return _read_stdin(n, deadline)


def _memfd(name, data):
    """An fd (inherited across exec: no CLOEXEC) on an anonymous root-owned file holding data."""
    if not hasattr(os, "memfd_create"):
        _refuse("this Python has no os.memfd_create (3.8+ on Linux needed)")
    try:
        fd = os.memfd_create(name, 0)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except OSError as e:
        _refuse("cannot hold the agent's %s in a memfd: %s" % (name, os.strerror(e.errno)))
    return fd


def _original_env():
    """The container's environment, as the blocks must keep seeing it."""
    orig = dict(os.environb)
    for k in _BLANKED:
        orig.pop(k, None)
    try:
        with open("/proc/1/environ", "rb") as f:
            init = f.read().split(b"\0")
    except OSError:
        init = []
    for kv in init:
        k, eq, v = kv.partition(b"=")
        if eq and k in _BLANKED:
            orig[k] = v
    return orig


def _main():
    orig = _original_env()
    env = _env()
    seen = set()
    exe = sys.executable
    if not exe or not os.path.isabs(exe):
        _refuse("cannot tell where the interpreter is (sys.executable %r)" % (exe,))
    _root_only(os.path.realpath(exe), "the interpreter", seen)
    _root_only(exe, "the interpreter", seen)
    for d in sys.path:  # under -I -S: the stdlib (its zip, its dir, lib-dynload) and nothing else
        _root_only(d, "the standard library", seen)
        _root_only(os.path.join(d, "__pycache__"), "the standard library's byte code", seen)
    agent = _read_agent()  # imports select and time: from the stdlib just checked
    # What the agent's `site` will add: site-packages, what their .pth files name, the user site
    # for the agent's HOME, and sitecustomize/usercustomize wherever they would be found.
    import site
    os.environ.clear()
    os.environb.update(env)
    site.USER_BASE = site.USER_SITE = None
    dirs = list(site.getsitepackages()) + [site.getusersitepackages()]
    for d in list(dirs):
        _root_only(d, "site-packages", seen)
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        _root_only(os.path.join(d, "__pycache__"), "site-packages byte code", seen)
        for n in names:
            if not n.endswith(".pth"):
                continue
            f = os.path.join(d, n)
            _root_only(f, "a .pth file", seen)
            try:
                with open(f, "rb") as fh:
                    lines = fh.read().decode("utf-8", "replace").splitlines()
            except OSError:
                continue
            for line in lines:
                line = line.strip()
                if line and not line.startswith(("#", "import ", "import\t")):
                    extra = os.path.join(d, line)
                    if extra not in dirs:
                        dirs.append(extra)
                        _root_only(extra, "a dir named by " + f, seen)
                        _root_only(os.path.join(extra, "__pycache__"), "byte code", seen)
    for d in list(sys.path) + dirs:
        for m in ("sitecustomize", "usercustomize"):
            for suffix in (".py", "", ".pyc"):
                if os.path.lexists(os.path.join(d, m + suffix)):
                    _root_only(os.path.join(d, m + suffix), m, seen)
    os.chdir("/")
    argv0 = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] in ("python3", "python") else "python3"
    src = _memfd("dockexec-agent", agent)
    envfd = _memfd("dockexec-agent-env", b"".join(k + b"=" + v + b"\0" for k, v in orig.items()))
    args = [argv0, "/proc/self/fd/%d" % src, "--env-fd", str(envfd), _PAD]
    os.write(2, ("dockexec-agent: starting %s\n" % exe).encode("utf-8", "replace"))
    os.execve(exe, args, env)


try:
    _main()
except SystemExit:
    raise
except BaseException as e:
    _refuse("the bootstrap failed: %r" % (e,))
