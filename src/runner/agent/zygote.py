# ==== src/runner/agent/zygote.py (agent.rs joins these files into one script, in
# order.txt's order)
# Code run in this forked interpreter (zygote blocks and sessions): a fresh __main__, tracebacks
# without the agent's frames, and a zygote block's exit.
#
# Zygote fidelity: a zygote block is `python3 FILE` minus an exec. What a script can still see
# differ, by the keys of src/runner/zygote_differences.md (their one source, with the reasons;
# the Strategy docs include it, and tests/it/agent.rs's snapshot test allows exactly these):
#   - `stack`: the agent's module frame is below the script's (exec at the agent's top level);
#   - `hash_seed`: the agent's, unless PYTHONHASHSEED is set in the container's env;
#   - `startup_config`: sys.flags, PYTHON*, locale and stdio encoding are the agent's (a block
#     whose env differs there runs through a fresh python3: _zygote_faithful, _user_site_differs);
#   - `cmdline`: /proc/self/cmdline is `python3 FILE` plus empty arguments (_set_cmdline);
#   - `memory`: RSS, gc counters, warm import caches, freed memory of earlier blocks;
#   - `gc_freeze`: gc.get_freeze_count() > 0, and gc.get_objects()/get_referrers() cannot see
#     the inherited (frozen) heap;
#   - `dumpable`: without ctypes, non-dumpable after changing user;
#   - `keyboard_interrupt`: its traceback is printed before finalization, not after;
#   - `source`: compiled from the RUN payload, not read back from the file;
#   - `rich_results`: one more fd (the results socket), `display` in builtins, a finder first on
#     sys.meta_path for dockexec's matplotlib backend (rich.py).

_UNSET = object()


# ------------------------------------------------------------------------- in-process code (zygote, session)

import _collections
import _functools
import itertools as _itertools


class _FromC(_functools.partial):
    """fn(*args), called from C when the instance is freed (`del`), as the interpreter calls its
    own exit steps: neither a trace nor a profile function the block left set sees a call from an
    agent frame (a profile function sees a CALL of a builtin as c_call/c_return; creating this
    instance, a CALL of a class, it does not see)."""
    __slots__ = ()
    __del__ = _functools.partial.__call__


def _untracer(saved):
    """A _FromC that appends the profile and trace functions to saved (with calls of
    sys.getprofile/gettrace made from C) and unsets both."""
    def once(fn, *args):
        return _itertools.islice(iter(_functools.partial(fn, *args), _UNSET), 1)
    return _FromC(saved.extend, _itertools.chain(once(sys.getprofile), once(sys.gettrace),
                                                 once(sys.setprofile, None), once(sys.settrace, None)))


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


def _print_exc(exc, hooks=None):
    """What the interpreter does for an uncaught exception: sys.excepthook on stderr. A zygote
    block's hooks ([profile, trace] it left set, see _zygote_exit) are set around the excepthook's
    call only, as the interpreter calls it from C (so a profile function sees no c_call of a
    builtin excepthook, but sees the block's own being called)."""
    _strip_tb(exc)
    t, tb = type(exc), exc.__traceback__
    sys.last_type, sys.last_value, sys.last_traceback = t, exc, tb
    if sys.version_info >= (3, 12):
        sys.last_exc = exc
    try:
        hook = sys.excepthook
        off = None
        if hooks is not None:
            off = _untracer([])
            sys.settrace(hooks[1])
            if type(hook) is not type(len):
                sys.setprofile(hooks[0])
        try:
            hook(t, exc, tb)
        finally:
            off = None
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


def _std_streams():
    """sys.stdin, sys.stdout and sys.stderr (and their sys.__*__) built again for this process's
    fds 0, 1 and 2, as the interpreter's create_stdio builds them at startup, with the same
    encoding, errors and buffering: the agent's were built for its channel pipes (its stdin, a
    pipe, is not seekable; the block's, /dev/null, is)."""
    io = sys.modules["io"]
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        old = getattr(sys, "__%s__" % name)
        if old is None:
            continue
        buffered = not old.write_through  # -u / PYTHONUNBUFFERED: write_through, unbuffered bytes
        buf = io.open(fd, "wb" if fd else "rb", -1 if buffered or not fd else 0, None, None, None,
                      False)
        raw = buf.raw if buffered or not fd else buf
        raw.name = "<%s>" % name
        s = io.TextIOWrapper(buf, old.encoding, old.errors, "\n",
                             buffered and (raw.isatty() or fd == 2), not buffered)
        s.mode = "w" if fd else "r"
        setattr(sys, "__%s__" % name, s)
        setattr(sys, name, s)
        _STDIO.extend((s, buf, raw))


# The std stream objects _std_streams built: the interpreter's own, which need no teardown (the
# fast exit flushes them) and _teardown_observable passes over.
_STDIO = []


def _zygote_prepare(path):
    """In the zygote child, at top level: becomes `python3 path` and returns the namespace."""
    m = _fresh_main(path)
    sys.argv[:] = [path]
    exe = sys.orig_argv[0] if getattr(sys, "orig_argv", None) else "python3"
    if hasattr(sys, "orig_argv"):
        sys.orig_argv = [exe, path]
    _set_cmdline([exe, path])
    sys.path.insert(0, os.path.dirname(os.path.realpath(path)))
    _std_streams()
    # The agent's module frame stays below the block's (a documented difference). What it is to the
    # warnings filters is what a fresh run has there, the `sys` module (setup_context's globals when
    # no frame is left): a DeprecationWarning attributed to it is hidden, as fresh, not shown as one
    # from __main__. Nothing of the agent's runs by its __name__ in this process.
    _AGENT_G["__name__"] = "sys"
    return m.__dict__


def _main_ended(ns):
    """What `python3 FILE` does once the file's code has run (but not when it raised SystemExit,
    which exits from within): __file__ and __cached__ deleted from __main__'s dict."""
    for k in ("__file__", "__cached__"):
        ns.pop(k, None)


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
    own = {id(o) for o in _STDIO}
    for o in gc.get_objects():
        if id(o) in own:
            continue
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


def _zygote_exit(code, hooks):
    """Ends a zygote block as `python3 FILE` ends, minus the teardown of the agent's inherited
    heap: Py_FinalizeEx's visible steps in its order (join non-daemon threads, run the atexit
    callbacks), then, if nothing left could run code or flush data at teardown, flush stdout and
    stderr (and C stdio) and _exit with `code`. Otherwise it returns, and the interpreter tears
    down for real (the steps already run are no-ops the second time). Freeing every inherited
    object would copy each page of the agent's heap (copy-on-write) just to exit.
    hooks: [profile, trace], the functions the block left set (unset from C by the top level, see
    _untracer), set again around the steps a fresh run would show them, and, if it returns, by
    the interpreter's atexit (no agent frame below) for its teardown."""
    profile, tracer = hooks[0], hooks[1]
    try:
        try:
            th = sys.modules.get("threading")
            off = _untracer([])
            sys.settrace(tracer)
            sys.setprofile(profile)  # the last call a profile function could see: it was unset
            if th is not None:
                th._shutdown()
            step = _FromC(_atexit._run_exitfuncs)
            del step
        finally:
            off = None
        if _teardown_observable():
            _t("slow-exit")
            _rehook_at_exit(hooks)
            return
        for f in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            if f is not None and not getattr(f, "closed", False):
                f.flush()
    except BaseException:
        _rehook_at_exit(hooks)
        return  # the interpreter reports it as it would have
    if _LIBC is not None:
        _LIBC.fflush(None)
    _t("fast-exit")
    os._exit(code & 0xFF)


def _rehook_at_exit(hooks):
    """The block's profile and trace functions set again by the interpreter's atexit (C calls):
    for its teardown, as a fresh run's, and not for the agent's frames before it."""
    profile, tracer = hooks[0], hooks[1]
    if profile is not None:
        _atexit.register(sys.setprofile, profile)
    if tracer is not None:
        _atexit.register(sys.settrace, tracer)
