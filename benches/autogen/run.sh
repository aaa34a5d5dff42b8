#!/usr/bin/env bash
# Side-by-side benchmark: AutoGen's asyncio DockerCommandLineCodeExecutor vs dockexec.
# See benches/autogen/README.md. Usage (from anywhere):
#   bash benches/autogen/run.sh
# Knobs: BENCH_N (30), BENCH_N_STOP_AUTOGEN (3), BENCH_N_STOP_DOCKEXEC (30), BENCH_N_BIGOUT (10).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${TMPDIR:-/tmp}/dockexec-autogen-venv"
out="${TMPDIR:-/tmp}/dockexec-autogen-results"
# The image both sides run (python:3-slim): $DOCKEXEC_TEST_SLIM_TAG, else its line in
# scripts/test-images.env; exported so both sides agree.
if [[ -z ${DOCKEXEC_TEST_SLIM_TAG+set} ]]; then
    DOCKEXEC_TEST_SLIM_TAG=$(sed -n 's/^DOCKEXEC_TEST_SLIM_TAG=//p' "$repo/scripts/test-images.env")
fi
export DOCKEXEC_TEST_SLIM_TAG
image=$DOCKEXEC_TEST_SLIM_TAG

# The image must be local: neither side ever pulls it.
if ! docker image inspect "$image" >/dev/null 2>&1; then
    echo "run.sh: image $image is not present locally; this benchmark never pulls it" >&2
    exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
    echo "== creating $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    if ! "$venv/bin/pip" install -q 'autogen-ext[docker]==0.7.5' 'autogen-core==0.7.5'; then
        "$venv/bin/pip" install -q 'autogen-ext==0.7.5' 'autogen-core==0.7.5' docker asyncio-atexit
    fi
fi

echo "== building dockexec's side" >&2
(cd "$repo" && cargo build --release --example autogen_compare)

mkdir -p "$out"
echo "== AutoGen (takes ~1 min: its stop() waits ~10 s each time)" >&2
BENCH_N_STOP="${BENCH_N_STOP_AUTOGEN:-3}" \
    "$venv/bin/python" "$here/autogen_bench.py" | tee "$out/autogen.txt" >&2
echo "== dockexec" >&2
BENCH_N_STOP="${BENCH_N_STOP_DOCKEXEC:-30}" \
    "$repo/target/release/examples/autogen_compare" | tee "$out/dockexec.txt" >&2

"$venv/bin/python" - "$out/autogen.txt" "$out/dockexec.txt" <<'EOF'
import sys


def load(path):
    d = {}
    for line in open(path):
        if line.startswith("RESULT "):
            k, _, v = line[len("RESULT "):].rstrip("\n").partition("=")
            d[k] = v
    return d


a, x = load(sys.argv[1]), load(sys.argv[2])
rows = [
    ("start() p50 [ms] (n={start_n})", "start_p50_ms", True),
    ("start() p90 [ms]", "start_p90_ms", True),
    ("stop() p50 [ms] (AutoGen n={a_stop_n}, dockexec n={x_stop_n})", "stop_p50_ms", True),
    ('run print("hello") p50 [ms] (n={hello_n})', "hello_p50_ms", True),
    ('run print("hello") p90 [ms]', "hello_p90_ms", True),
    ("cancel: cancel -> execute returns [ms]", "cancel_return_ms", False),
    ("cancel: processes left in the container", "cancel_leaked", False),
    ("cancel: stop() afterwards [ms]", "stop_after_cancel_ms", True),
    ("10 MB stdout p50 [ms] (n={bigout_n})", "bigout_p50_ms", True),
    ("10 MB stdout: peak RSS growth [MB]", "bigout_rss_delta_mb", True),
    ("non-UTF-8 stdout (b'\\xff\\xfe')", "nonutf8", False),
    ("executor usable after it", "usable_after_nonutf8", False),
    ("stdout/stderr", "streams", False),
    ("out-then-err order kept", "streams_in_order", False),
    ("containers left after the run", "leftover_containers", False),
]
fmt = {k: a.get(k, "?") for k in ("start_n", "hello_n", "bigout_n")}
fmt["a_stop_n"], fmt["x_stop_n"] = a.get("stop_n", "?"), x.get("stop_n", "?")
print()
print(f"AutoGen : {a.get('version', '?')}")
print(f"dockexec: {x.get('version', '?')}")
print()
print("| metric | AutoGen | dockexec | AutoGen / dockexec |")
print("|---|---|---|---|")
for label, key, numeric in rows:
    av, xv = a.get(key, "n/a"), x.get(key, "n/a")
    ratio = ""
    if numeric:
        try:
            ratio = f"{float(av) / float(xv):.2f}x"
        except (ValueError, ZeroDivisionError):
            ratio = ""
    print(f"| {label.format(**fmt)} | {av} | {xv} | {ratio} |")
EOF
echo "(raw results: $out/autogen.txt, $out/dockexec.txt)" >&2
