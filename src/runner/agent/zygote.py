# ==== src/runner/agent/zygote.py (agent.rs joins these files into one script, in
# order.txt's order)
# Code run in this forked interpreter (zygote blocks and sessions): a fresh __main__, tracebacks
# without the agent's frames, and a zygote block's exit.

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
