"""Per-block latency of the warm agent, measured inside a container, with a step-by-step
breakdown from the agent's own trace (DOCKEXEC_AGENT_TRACE).

    docker run --rm -i --network none --init --cap-drop ALL --cap-add SETUID --cap-add SETGID \\
        --cap-add KILL -v "$PWD":/src:ro -v "$(mktemp -d)":/workspace -w /workspace \\
        dockexec-test/python:latest python3 /src/scripts/agent-latency.py /src/src/runner/agent 40 sh,zygote,fresh

Starts the agent as the host does (`python3 -c SOURCE`, root, cwd /workspace), runs N blocks of each
kind one after another (sh `true`, python `print` through the zygote, through a fresh python3) as
user 65534, and prints RUN->EXIT percentiles, the container's CPU time per block, and the median
time (ms after the RUN was sent) and page-fault count of each traced step. Standard library only.
"""
import json
import os
import struct
import subprocess
import sys
import time

AGENT = sys.argv[1]
N = int(sys.argv[2]) if len(sys.argv) > 2 else 40
KINDS = sys.argv[3].split(",") if len(sys.argv) > 3 else ["sh", "zygote", "fresh"]
WARM = 3
TRACE = "/workspace/.agent-trace"
open(TRACE, "w").close()
os.chmod(TRACE, 0o666)  # block processes (user 65534) append to it too
env = dict(os.environ, DOCKEXEC_AGENT_TRACE=TRACE, PYTHONUNBUFFERED="1")


def agent_source(path):
    """The agent's files joined in its order.txt's order, as agent.rs (and the harness) join them."""
    with open(os.path.join(path, "order.txt")) as f:
        names = [n.strip() for n in f if n.strip() and not n.startswith("#")]
    return "".join(open(os.path.join(path, n)).read() for n in names)


agent = subprocess.Popen(["python3", "-c", agent_source(AGENT)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, cwd="/workspace", env=env, bufsize=0)


def read(n):
    b = b""
    while len(b) < n:
        x = agent.stdout.read(n - len(b))
        if not x:
            raise SystemExit("the agent closed its channel")
        b += x
    return b


def frame():
    body = read(struct.unpack(">I", read(4))[0])
    return body[0], body[5:]


def cpu_us():
    try:
        return int(open("/sys/fs/cgroup/cpuacct/cpuacct.usage").read()) // 1000  # cgroup v1
    except OSError:
        for line in open("/sys/fs/cgroup/cpu.stat"):
            if line.startswith("usage_usec"):
                return int(line.split()[1])


assert frame()[0] == 0x81, "no READY"
fid = 0
t_sent = {}


def run(kind):
    global fid
    fid += 1
    lang = "sh" if kind == "sh" else "python"
    req = {"lang": lang, "file": "/workspace/b%d.%s" % (fid, "sh" if lang == "sh" else "py"),
           "code": "true" if lang == "sh" else 'print("hello")', "user": "65534:65534",
           "cwd": "/workspace", "env": {}, "zygote": kind == "zygote"}
    body = json.dumps(req).encode()
    t_sent[fid] = time.monotonic_ns()
    agent.stdin.write(struct.pack(">IBI", 5 + len(body), 1, fid) + body)
    while True:
        k, payload = frame()
        if k == 0x85:
            return (time.monotonic_ns() - t_sent[fid]) / 1e6
        if k == 0x86:
            raise SystemExit("ERROR: %r" % payload)


def q(xs, f):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(f * len(xs)))]


kind_of = {}
for kind in KINDS:
    for _ in range(WARM):
        run(kind)
    c0 = cpu_us()
    lat = []
    for _ in range(N):
        lat.append(run(kind))
        kind_of[fid] = kind
    cpu = (cpu_us() - c0) / N / 1000.0
    print("%-7s RUN->EXIT p10 %6.2f  p50 %6.2f  p90 %6.2f ms | container CPU %.2f ms/block" % (
        kind, q(lat, .1), q(lat, .5), q(lat, .9), cpu))
agent.stdin.close()
agent.wait()

# Trace lines: "monotonic_ns pid label... minflt=N". A block's steps are those between its
# "run ID" line and its "exit ID" line (sequential blocks: nothing else is in flight).
steps = {}
cur = None
for line in open(TRACE):
    ns, _pid, rest = line.split(None, 2)
    label, _, flt = rest.strip().rpartition(" minflt=")
    if label.startswith("run "):
        cur = int(label.split()[1])
        seen = set()
        continue
    if cur is None or cur not in kind_of:
        continue
    name = label.split()[0]
    if name in seen:  # e.g. the next spare's own steps
        continue
    seen.add(name)
    steps.setdefault(kind_of[cur], {}).setdefault(name, []).append(
        ((int(ns) - t_sent[cur]) / 1e6, int(flt) if flt.isdigit() else -1))
    if name == "exit":
        cur = None
for kind in KINDS:
    print("== %s: median ms after the RUN was sent, and that process's page faults so far" % kind)
    rows = sorted(steps.get(kind, {}).items(), key=lambda kv: q([t for t, _ in kv[1]], .5))
    for name, xs in rows:
        print("  %-14s %7.2f ms  minflt %6d  (n=%d)" % (
            name, q([t for t, _ in xs], .5), q([f for _, f in xs], .5), len(xs)))
