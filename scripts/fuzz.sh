#!/usr/bin/env bash
# Run every cargo-fuzz target in fuzz/ for a short while.
#
#   scripts/fuzz.sh [SECONDS]     (default 30 per target; FUZZ_TARGETS="frames paths" picks some)
#
# Installs cargo-fuzz (cargo install --locked, into ~/.cargo/bin) when it is missing. The
# machine's stable toolchain runs it: RUSTC_BOOTSTRAP=1 lets stable rustc accept the -Z flags
# cargo-fuzz passes (-Zsanitizer=address); debug assertions (-a) catch overflows too.
# Each target starts from its committed seeds (fuzz/seeds/<target>) and grows its own corpus in
# fuzz/corpus/<target> (not committed). A crash is written to fuzz/artifacts/<target>/ and fails
# this script; reproduce it with
#   cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -a <target> artifacts/<target>/<crash-file>
# When cargo-fuzz or the C++ compiler libFuzzer needs cannot be installed, prints SKIP and
# exits 0: the rest of the suite's result stands.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz"

secs="${1:-30}"
[[ $secs =~ ^[0-9]+$ ]] || { echo "usage: scripts/fuzz.sh [SECONDS]" >&2; exit 2; }
read -r -a targets <<<"${FUZZ_TARGETS:-frames markdown paths engine_api protocol}"
export RUSTC_BOOTSTRAP=1
export PATH="$HOME/.cargo/bin:$PATH"

skip() {
    echo "fuzz.sh: SKIP: $*" >&2
    exit 0
}

# libfuzzer-sys builds libFuzzer from C++ source.
if ! command -v c++ >/dev/null 2>&1; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "fuzz.sh: installing g++ (libFuzzer is C++)" >&2
        { apt-get update -q && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q --no-install-recommends g++; } >&2 ||
            skip "no C++ compiler and apt-get install g++ failed"
    else
        skip "no C++ compiler (c++) and cannot apt-get install g++"
    fi
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz (cargo install cargo-fuzz --locked)" >&2
    start=$SECONDS
    cargo install cargo-fuzz --locked >&2 || skip "cargo install cargo-fuzz failed"
    echo "fuzz.sh: cargo-fuzz installed in $((SECONDS - start)) s" >&2
fi

start=$SECONDS
# One build for every target (a build failure is a failure, not a skip: it is our code).
cargo fuzz build -a >&2
echo "fuzz.sh: built ${#targets[@]} targets in $((SECONDS - start)) s" >&2

status=0
failed=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    log="target/fuzz-$t.log"
    echo "fuzz.sh: $t for ${secs} s" >&2
    if cargo fuzz run -a "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
        grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 | sed "s/^/fuzz.sh: $t: /" >&2 || true
    else
        rc=$?
        status=$rc
        failed+=("$t")
        echo "fuzz.sh: $t FAILED (exit $rc); the end of its log ($log):" >&2
        tail -40 "$log" >&2
    fi
done

if ((status)); then
    echo "fuzz.sh: FAILED: ${failed[*]} (crash inputs in fuzz/artifacts/)" >&2
else
    echo "fuzz.sh: ${#targets[@]} targets ran ${secs} s each, no crash" >&2
fi
exit "$status"
