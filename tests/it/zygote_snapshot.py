# filename: snap/snapshot.py
# What a script can see of how it was started and how it ends, one `KEY<TAB>repr` line per
# observable (tests/it/agent.rs runs it through the zygote and through a fresh python3 and compares
# the two). A key's group (the part before the first '.') names the documented difference that may
# explain it (src/runner/zygote_differences.md).
names_before = sorted(globals())
import atexit, gc, os, sys, traceback, warnings  # noqa: E401

# What a trace function still set when the last line has run sees at exit: registered first, the
# reporter runs last (atexit is LIFO); the trace function is set by the last line.
events, profiled = [], []
atexit.register(lambda: put("profile.exit", profiled))
atexit.register(lambda: put("trace.exit", events))


def put(key, value):
    print("%s\t%r" % (key, value))


# The stack under the script's module frame.
try:
    sys._getframe(1)
    below = "a frame"
except ValueError:
    below = "nothing"
put("stack", below)
put("stack.extract", [(os.path.basename(f.filename), f.name) for f in traceback.extract_stack()])


def depth(n=1):
    try:
        return depth(n + 1)
    except RecursionError:
        return n


put("stack.recursion", depth())
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    warnings.warn("attributed", UserWarning, stacklevel=2)
put("stack.warn_attribution", [(w.filename, w.lineno) for w in seen])
with warnings.catch_warnings(record=True) as seen:  # the default filters: shown in __main__ only
    warnings.warn("hidden unless __main__", DeprecationWarning, stacklevel=2)
put("stack.warn_default_filter", [str(w.message) for w in seen])

# __main__ before the script's first line, and what is left of it at exit (atexit).
put("main.before", names_before)
atexit.register(lambda: put("main.after", sorted(k for k in vars(sys.modules["__main__"])
                                                 if k.startswith("__"))))


# The std streams, as the interpreter built them for this process's fds.
def stream(f):
    def attempt(fn):
        try:
            return fn()
        except Exception as e:
            return type(e).__name__
    return (f is getattr(sys, "__%s__" % f.name[1:-1], None), f.name, f.mode, f.fileno(),
            f.encoding, f.errors, f.line_buffering, f.write_through, attempt(f.seekable),
            attempt(f.tell), f.readable(), f.writable(), type(f.buffer).__name__,
            attempt(f.buffer.seekable), attempt(getattr(f.buffer, "raw", f.buffer).seekable),
            getattr(f.buffer, "raw", f.buffer).closefd,
            f.newlines, f.closed, f.isatty())


put("streams.stdin", stream(sys.stdin))
put("streams.stdout", stream(sys.stdout))
put("streams.stderr", stream(sys.stderr))

# What the gc sees.
put("gc_freeze.referrers", len(gc.get_referrers(sys.modules)) > 0)
put("gc_freeze.objects", any(o is sys.modules for o in gc.get_objects()))
put("gc_freeze.count", gc.get_freeze_count())

# Others the documented list names.
put("hash_seed", hash("dockexec"))
cmdline = open("/proc/self/cmdline", "rb").read().split(b"\0")
put("cmdline", ([a for a in cmdline if a], len(cmdline)))


def tracer(frame, event, arg):
    events.append((event, frame.f_code.co_name, os.path.basename(frame.f_code.co_filename)))
    return None


def profiler(frame, event, arg):
    profiled.append((event, getattr(arg, "__name__", None) if event.startswith("c_") else
                     frame.f_code.co_name))


sys.stdout.flush()
sys.settrace(tracer)
sys.setprofile(profiler)
