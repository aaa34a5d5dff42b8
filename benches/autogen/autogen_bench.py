"""Benchmark AutoGen's asyncio DockerCommandLineCodeExecutor (autogen-ext 0.7.5).

Prints one `RESULT key=value` line per metric; run.sh pairs them with the lines of
`examples/autogen_compare.rs` (dockexec) and prints the comparison table.

    python autogen_bench.py            # every scenario
    python autogen_bench.py --bigout-child   # internal: the 10 MB scenario, in a fresh process

Safety: the image must exist locally; pulling is disabled (docker-py's pull raises here), so
nothing ever leaves the machine. AutoGen's constructor has no network option: its containers
get the daemon's default network.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import docker
import docker.models.images
from autogen_core import CancellationToken
from autogen_core.code_executor import CodeBlock
from autogen_ext.code_executors.docker import DockerCommandLineCodeExecutor



def _slim_tag() -> str:
    """$DOCKEXEC_TEST_SLIM_TAG, else its line in scripts/test-images.env (python:3-slim)."""
    key = "DOCKEXEC_TEST_SLIM_TAG"
    if os.environ.get(key) is not None:
        return os.environ[key]
    names = Path(__file__).resolve().parents[2] / "scripts" / "test-images.env"
    for line in names.read_text().splitlines():
        k, sep, v = line.partition("=")
        if sep and k.strip() == key:
            return v.strip()
    raise SystemExit(f"autogen_bench: {names} has no {key}")


# The same image as dockexec's side (examples/autogen_compare.rs), never pulled.
IMAGE = _slim_tag()
# Every container of ours is named with this prefix, so leftovers can be found and removed.
PREFIX = "dockexec-bench-autogen-"
# AutoGen runs a "python" block as `timeout 60 python FILE`; our offline python:3-slim has only
# `python3`. The tag "python3" makes AutoGen run `python3 FILE` (lang_to_cmd keeps a tag that
# starts with "python"), without changing the image or the container.
LANG = "python3"

HELLO = 'print("hello")'
CANCEL = "import subprocess,time; subprocess.Popen(['sleep','1234']); time.sleep(1000)"
BIGOUT = 'import sys; sys.stdout.write("x"*10_000_000)'
NONUTF8 = 'import sys; sys.stdout.buffer.write(b"\\xff\\xfe")'
STREAMS = 'import sys; print("out"); sys.stdout.flush(); print("err", file=sys.stderr)'
STREAMS_N = 20


def _no_pull(*_args, **_kwargs):
    raise RuntimeError("autogen_bench: image pull attempted; forbidden (offline machine)")


# AutoGen's start() pulls only on ImageNotFound from images.get; make sure it never can.
docker.models.images.ImageCollection.pull = _no_pull  # type: ignore[method-assign]


def result(key: str, value: object) -> None:
    print(f"RESULT {key}={value}", flush=True)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(q / 100 * len(s) + 0.5)) - 1))
    return s[k]


def new_executor() -> DockerCommandLineCodeExecutor:
    return DockerCommandLineCodeExecutor(
        image=IMAGE,
        container_name=f"{PREFIX}{uuid.uuid4().hex[:12]}",
        timeout=60,
    )


def force_remove(name: str) -> None:
    try:
        docker.from_env().containers.get(name).remove(force=True)
    except docker.errors.NotFound:
        pass


def list_procs(name: str) -> list[str]:
    """The command lines of the container's processes, less the listing's own."""
    script = 'for d in /proc/[0-9]*; do tr "\\0" " " < $d/cmdline; echo; done'
    out = subprocess.run(
        ["docker", "exec", name, "sh", "-c", script], capture_output=True, text=True, timeout=30
    ).stdout
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    return [line for line in lines if "for d in /proc" not in line and not line.startswith("tr ")]


def new_procs(before: list[str], after: list[str]) -> list[str]:
    rest = list(before)
    added = []
    for p in after:
        if p in rest:
            rest.remove(p)
        else:
            added.append(p)
    return added


async def run(executor: DockerCommandLineCodeExecutor, code: str, token: CancellationToken | None = None):
    return await executor.execute_code_blocks(
        [CodeBlock(code=code, language=LANG)], token or CancellationToken()
    )


async def scenario_start_stop(n_start: int, n_stop: int) -> None:
    starts: list[float] = []
    stops: list[float] = []
    for i in range(n_start):
        ex = new_executor()
        t0 = time.perf_counter()
        await ex.start()
        starts.append(time.perf_counter() - t0)
        if i < n_stop:
            t0 = time.perf_counter()
            await ex.stop()
            stops.append(time.perf_counter() - t0)
        else:
            # AutoGen's stop() waits ~10 s (docker stop on a `sh` PID 1); the starts past the
            # n_stop measured stops are cleaned up by force, then stop() (which finds no
            # container and returns) marks the executor stopped.
            force_remove(ex.container_name)
            await ex.stop()
    result("start_n", n_start)
    result("start_p50_ms", ms(statistics.median(starts)))
    result("start_p90_ms", ms(pct(starts, 90)))
    result("stop_n", n_stop)
    result("stop_p50_ms", ms(statistics.median(stops)))


async def scenario_exec(n: int) -> None:
    ex = new_executor()
    await ex.start()
    try:
        for _ in range(3):  # warm-up
            await run(ex, HELLO)
        times: list[float] = []
        for _ in range(n):
            t0 = time.perf_counter()
            r = await run(ex, HELLO)
            times.append(time.perf_counter() - t0)
            assert r.exit_code == 0 and r.output == "hello\n", (r.exit_code, r.output)
        result("hello_n", n)
        result("hello_p50_ms", ms(statistics.median(times)))
        result("hello_p90_ms", ms(pct(times, 90)))

        # (f) non-UTF-8 output
        try:
            r = await run(ex, NONUTF8)
            result("nonutf8", f"returned exit={r.exit_code} output={r.output!r}")
        except Exception as e:  # noqa: BLE001 - the point is to see what escapes
            result("nonutf8", f"raises {type(e).__name__}")
        r = await run(ex, HELLO)
        result("usable_after_nonutf8", "yes" if r.output == "hello\n" else f"no ({r.output!r})")

        # (g) stdout/stderr: CommandLineCodeResult has one `output` string. Is the order kept?
        r = await run(ex, STREAMS)
        result("streams", f"merged (output={r.output!r})")
        in_order = 0
        for _ in range(STREAMS_N):
            r = await run(ex, STREAMS)
            in_order += r.output == "out\nerr\n"
        result("streams_in_order", f"{in_order}/{STREAMS_N}")
    finally:
        await ex.stop()


async def scenario_cancel() -> None:
    ex = new_executor()
    await ex.start()
    try:
        baseline = list_procs(ex.container_name)
        token = CancellationToken()
        loop = asyncio.get_running_loop()
        cancelled_at: list[float] = []

        def cancel() -> None:
            cancelled_at.append(time.perf_counter())
            token.cancel()

        loop.call_later(0.5, cancel)
        t_start = time.perf_counter()
        r = await run(ex, CANCEL, token)
        t_end = time.perf_counter()
        result("cancel_return_ms", ms(t_end - cancelled_at[0]))
        result("cancel_total_ms", ms(t_end - t_start))
        result("cancel_result", f"exit={r.exit_code} output={r.output!r}")
        # Let the background kill (if any) land before looking.
        await asyncio.sleep(1.0)
        # Every process that was not there before the block: the block's leftovers.
        leaked = new_procs(baseline, list_procs(ex.container_name))
        result("cancel_leaked", "; ".join(leaked) if leaked else "none")
        # What became of AutoGen's kill command (`pkill -f ...` run by docker exec).
        for f in list(ex._cancellation_futures):  # noqa: SLF001 - read-only, for the report
            if f.done() and f.exception() is not None:
                result("cancel_kill_cmd", f"failed: {type(f.exception()).__name__}: {f.exception()}")
            elif f.done():
                result("cancel_kill_cmd", "ran (pkill via docker exec; exit code not checked)")
    finally:
        t0 = time.perf_counter()
        await ex.stop()
        result("stop_after_cancel_ms", ms(time.perf_counter() - t0))


async def bigout_child(n: int) -> None:
    """(e) in a fresh process: peak-RSS growth of one 10 MB run, then wall time of n runs."""
    ex = new_executor()
    await ex.start()
    try:
        await run(ex, HELLO)  # warm-up: connections, imports
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        r = await run(ex, BIGOUT)
        times = [time.perf_counter() - t0]
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert r.exit_code == 0 and len(r.output) == 10_000_000, (r.exit_code, len(r.output))
        del r
        for _ in range(n - 1):
            t0 = time.perf_counter()
            r = await run(ex, BIGOUT)
            times.append(time.perf_counter() - t0)
            assert len(r.output) == 10_000_000
            del r
        result("bigout_n", n)
        result("bigout_p50_ms", ms(statistics.median(times)))
        result("bigout_rss_delta_mb", f"{(after - before) / 1024:.1f}")
    finally:
        await ex.stop()


def leftovers() -> list[str]:
    client = docker.from_env()
    # sparse: no inspect per listed container, which raced with containers of others being
    # removed on a shared daemon (404 "No such container" between the list and the inspect).
    cs = client.containers.list(all=True, sparse=True, filters={"name": PREFIX})
    names = [n.lstrip("/") for c in cs for n in c.attrs.get("Names") or []]
    return [n for n in names if n.startswith(PREFIX)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bigout-child", action="store_true")
    ap.add_argument("--n", type=int, default=int(os.environ.get("BENCH_N", "30")))
    ap.add_argument("--n-stop", type=int, default=int(os.environ.get("BENCH_N_STOP", "3")))
    ap.add_argument("--n-bigout", type=int, default=int(os.environ.get("BENCH_N_BIGOUT", "10")))
    args = ap.parse_args()

    if args.bigout_child:
        asyncio.run(bigout_child(args.n_bigout))
        return

    client = docker.from_env()
    client.images.get(IMAGE)  # raises ImageNotFound: we never pull
    import autogen_core
    import autogen_ext

    result("version", f"autogen-ext {autogen_ext.__version__}, autogen-core {autogen_core.__version__}, "
           f"docker-py {docker.__version__}, Python {sys.version.split()[0]}")
    try:
        asyncio.run(scenario_start_stop(args.n, args.n_stop))
        asyncio.run(scenario_exec(args.n))
        asyncio.run(scenario_cancel())
        child = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--bigout-child", "--n-bigout", str(args.n_bigout)],
            capture_output=True, text=True, timeout=600,
        )
        sys.stdout.write(child.stdout)
        if child.returncode != 0:
            result("bigout", f"child failed ({child.returncode}): {child.stderr.strip()[-300:]!r}")
    finally:
        # auto_remove=True removes a stopped container asynchronously: give it a moment.
        for _ in range(50):
            if not leftovers():
                break
            time.sleep(0.2)
        left = leftovers()
        result("leftover_containers", ", ".join(left) if left else "none")
        for name in left:
            force_remove(name)


if __name__ == "__main__":
    main()
