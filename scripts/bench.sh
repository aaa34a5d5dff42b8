#!/usr/bin/env bash
# Every benchmark of BENCHMARKS.md, in one run, from a clean state; then the report.
#
#   scripts/bench.sh          everything below
#   scripts/bench.sh pool     steps 1, 3b and 6 only: the pool ways of issue 18, then the report
#
# 1. scripts/test-env.sh --tag-slim (daemon, test images, the python:3-slim tag AutoGen runs)
# 2. benches/results/machine.json: CPU, cores, memory, kernel, Docker, rustc, load, time
# 3. the scenarios: cargo bench --manifest-path benches/rival/Cargo.toml
#    -> benches/results/compare.json (dockexec exec + agent, the bollard/tokio rival, floors)
# 3b. the pool of warm sandboxes (issue 18), its ways one after another in this session:
#    cargo bench --features bench --bench executor -- pool (a Pool under Policy::Reset,
#    Policy::Restart and Policy::Fresh, a fresh Executor per task) -> benches/results/pool.json, then
#    cargo bench --manifest-path benches/rival/Cargo.toml --bench pool (the rival, a fresh
#    container per task) -> benches/results/pool-rival.json
# 4. clean release builds, each in its own fresh target dir: the dockexec CLI
#    (cargo build --release --features cli) and the bollard + tokio CLI (benches/rival/cli)
#    -> benches/results/build.json (seconds, crates compiled, binary bytes)
# 5. AutoGen 0.7.5 side by side: bash benches/autogen/run.sh -> benches/results/autogen/
# 6. python3 benches/rival/report.py: the SVG charts and BENCHMARKS.md's generated tables
#    (re-run it alone to regenerate them from the raw results)
#
# Knobs: DOCKEXEC_BENCH_N (20), DOCKEXEC_BENCH_N_START (6), DOCKEXEC_BENCH_N_STOP16 (4),
# DOCKEXEC_BENCH_N_CONC (3), DOCKEXEC_BENCH_N_CANCEL (10), DOCKEXEC_BENCH_N_BIG (4);
# DOCKEXEC_BENCH_POOL_TASKS (200 here) and DOCKEXEC_BENCH_POOL_THREADS (4) for step 3b;
# DOCKEXEC_BENCH_POOL=0 skips step 3b, DOCKEXEC_BENCH_BUILD=0 skips step 4,
# DOCKEXEC_BENCH_AUTOGEN=0 skips step 5 (their previous results, if any, stay). Takes ~20
# minutes on 2 cores (step 3b ~4 of them at 200 tasks).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD
results=$repo/benches/results
mkdir -p "$results"
case ${1:-all} in
all) only_pool=0 ;;
pool) only_pool=1 ;;
*)
    echo "usage: scripts/bench.sh [pool]" >&2
    exit 2
    ;;
esac

while IFS='=' read -r k v; do
    [[ $k =~ ^[A-Z][A-Z0-9_]*$ ]] || continue
    [[ -n ${!k+set} ]] || export "$k=$v"
done <scripts/test-images.env
bash scripts/test-env.sh --tag-slim
export DOCKER_HOST=unix:///var/run/docker.sock

# Step 3b: every pool way in this session, the dockexec ways first, then the rival's. Both files
# are replaced only when both runs succeed, so the report never mixes two sessions' rows.
pool_ways() {
    export DOCKEXEC_BENCH_POOL_TASKS=${DOCKEXEC_BENCH_POOL_TASKS:-200}
    export DOCKEXEC_BENCH_POOL_THREADS=${DOCKEXEC_BENCH_POOL_THREADS:-4}
    echo "bench.sh: the pool ways, $DOCKEXEC_BENCH_POOL_TASKS tasks on $DOCKEXEC_BENCH_POOL_THREADS" \
        "threads (cargo bench --features bench --bench executor -- pool; then the rival's)" >&2
    DOCKEXEC_BENCH_POOL_RESULTS=$results/pool.json.tmp \
        cargo bench --features bench --bench executor -- pool
    DOCKEXEC_BENCH_POOL_RIVAL_RESULTS=$results/pool-rival.json.tmp \
        cargo bench --manifest-path benches/rival/Cargo.toml --bench pool
    mv "$results/pool.json.tmp" "$results/pool.json"
    mv "$results/pool-rival.json.tmp" "$results/pool-rival.json"
}

if ((only_pool)); then
    pool_ways
    python3 benches/rival/report.py
    echo "bench.sh: done; see BENCHMARKS.md (its pool section) and benches/results/pool*" >&2
    exit 0
fi

echo "bench.sh: machine" >&2
python3 - "$results/machine.json" <<'EOF'
import json, os, platform, subprocess, sys, time
def out(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception as e:
        return f"n/a ({e})"
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
json.dump({
    "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    "cpu": cpu, "cores": os.cpu_count(), "mem_gib": round(mem / 2**20, 1),
    "kernel": platform.release(),
    "docker": out("docker", "version", "--format", "{{.Server.Version}} (API {{.Server.APIVersion}})"),
    "rustc": out("rustc", "--version"),
    "loadavg_at_start": open("/proc/loadavg").read().split()[:3],
}, open(sys.argv[1], "w"), indent=2)
EOF

echo "bench.sh: scenarios (cargo bench --manifest-path benches/rival/Cargo.toml)" >&2
DOCKEXEC_BENCH_RESULTS=$results/compare.json \
    cargo bench --manifest-path benches/rival/Cargo.toml --bench compare
python3 - "$results/machine.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1])); m["loadavg_after_scenarios"] = open("/proc/loadavg").read().split()[:3]
json.dump(m, open(sys.argv[1], "w"), indent=2)
EOF

if [[ ${DOCKEXEC_BENCH_POOL:-1} != 0 ]]; then
    pool_ways
fi

if [[ ${DOCKEXEC_BENCH_BUILD:-1} != 0 ]]; then
    # One clean release build: seconds, crates compiled, binary size.
    build() { # name manifest bin features...
        local name=$1 manifest=$2 bin=$3
        # A fresh target dir: every crate compiles (the registry's sources are already local,
        # so no download time is counted).
        shift 3
        local dir="${TMPDIR:-/tmp}/dockexec-bench-build-$name"
        rm -rf "$dir"
        echo "bench.sh: clean release build: $name" >&2
        local t0 t1
        t0=$(date +%s.%N)
        cargo build --release --manifest-path "$manifest" --target-dir "$dir" "$@" 2>"$dir.log" ||
            { cat "$dir.log" >&2; return 1; }
        t1=$(date +%s.%N)
        python3 - "$name" "$t0" "$t1" "$(grep -c '^ *Compiling ' "$dir.log")" \
            "$(stat -c %s "$dir/release/$bin")" "$*" "$manifest" <<'EOF'
import json, sys
name, t0, t1, crates, size, args, manifest = sys.argv[1:]
print(json.dumps({"name": name, "seconds": round(float(t1) - float(t0), 1), "crates": int(crates),
                  "binary_bytes": int(size), "args": args, "manifest": manifest}))
EOF
        rm -rf "$dir" "$dir.log"
    }
    {
        echo "["
        build dockexec-cli Cargo.toml dockexec --features cli
        echo ","
        build bollard-tokio-cli benches/rival/cli/Cargo.toml rival-cli
        echo "]"
    } >"$results/build.json.tmp"
    mv "$results/build.json.tmp" "$results/build.json"
fi

if [[ ${DOCKEXEC_BENCH_AUTOGEN:-1} != 0 ]]; then
    echo "bench.sh: AutoGen side by side (benches/autogen/run.sh)" >&2
    mkdir -p "$results/autogen"
    if bash benches/autogen/run.sh >"$results/autogen/table.md"; then
        cp "${TMPDIR:-/tmp}/dockexec-autogen-results/"*.txt "$results/autogen/"
    else
        echo "AutoGen side by side could not run: see the output of benches/autogen/run.sh" \
            >"$results/autogen/table.md"
    fi
fi

python3 benches/rival/report.py
echo "bench.sh: done; see BENCHMARKS.md and benches/results/" >&2
