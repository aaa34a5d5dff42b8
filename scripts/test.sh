#!/usr/bin/env bash
# Run the dockexec test suite against the local, offline test environment.
#
#   scripts/test.sh [extra cargo test args...]
#
# 1. scripts/test-env.sh  (docker daemon, test images, loopback registry; idempotent)
# 2. cargo test --features cli --all-targets "$@"
# 3. cargo test --features cli --doc "$@"
# Exits non-zero if any step fails (both cargo runs are attempted).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/test-env.sh

# The environment test-env.sh prepared (see that script).
export DOCKEXEC_TEST_IMAGE=dockexec-test/python:latest
export DOCKEXEC_TEST_BUSYBOX=dockexec-test/busybox:latest
export DOCKEXEC_TEST_REGISTRY=127.0.0.1:5000
case "${CI:-}" in
true | TRUE | True | 1 | yes) export DOCKEXEC_STRESS_SECS="${DOCKEXEC_STRESS_SECS:-20}" ;;
esac
# The library talks to /var/run/docker.sock; keep the CLI (if tests use it) on the same daemon.
export DOCKER_HOST=unix:///var/run/docker.sock

echo "test.sh: DOCKEXEC_TEST_IMAGE=$DOCKEXEC_TEST_IMAGE DOCKEXEC_TEST_BUSYBOX=$DOCKEXEC_TEST_BUSYBOX" \
    "DOCKEXEC_TEST_REGISTRY=$DOCKEXEC_TEST_REGISTRY DOCKEXEC_STRESS_SECS=${DOCKEXEC_STRESS_SECS:-<unset>}" >&2

status=0
# `cli` builds the binary that tests/cli.rs and tests/orphans.rs run.
echo "test.sh: cargo test --features cli --all-targets $*" >&2
cargo test --features cli --all-targets "$@" || status=$?
echo "test.sh: cargo test --features cli --doc $*" >&2
cargo test --features cli --doc "$@" || { rc=$?; ((status)) || status=$rc; }

if ((status)); then
    echo "test.sh: FAILED (exit $status)" >&2
else
    echo "test.sh: all tests passed" >&2
fi
exit "$status"
