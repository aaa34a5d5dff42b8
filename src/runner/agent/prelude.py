# ==== src/runner/agent/prelude.py (agent.rs joins these files into one script, in
# order.txt's order)
# What runs first: sys.path and the environment made safe, the imports, what a fresh interpreter
# has loaded (zygote blocks go back to it); the agent's overview.

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
#   - rich results (issue 19, rich.py): the block holds one more fd, its results socket
#     (close-on-exec), has `display` in builtins, and a finder first on sys.meta_path that serves
#     dockexec's matplotlib backend and makes it the default once matplotlib is imported (unless
#     MPLBACKEND is set); open figures are sent after the code ends;
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
