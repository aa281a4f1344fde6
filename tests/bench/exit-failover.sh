#!/usr/bin/env bash
# Exit-node failover with `exit_node = "auto"`: runs the end-to-end test
# tests/tests/exit_node_auto.rs (two exit nodes in network namespaces, the
# client on auto, the exit node in use killed with kill -9 while the client
# sends one UDP datagram every 10 ms to the "internet") RUNS times and prints
# the gap in delivered traffic of each run. The test asserts the failover
# and the absence of leaks, never a time; the gap is this script's figure.
# Needs root and `cargo build --workspace --bins` first. See
# tests/bench/README.md.
set -euo pipefail

RUNS="${1:-3}"
[[ "$RUNS" =~ ^[1-9][0-9]?$ ]] || { echo "usage: tests/bench/exit-failover.sh [RUNS 1..99]" >&2; exit 2; }
(( EUID == 0 )) || { echo "error: needs root (network namespaces)" >&2; exit 2; }
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO_ROOT"
[[ -x target/debug/appliance && -x target/debug/failover-traffic ]] \
    || { echo "error: build first: cargo build --workspace --bins" >&2; exit 2; }

echo "run  figure"
for run in $(seq 1 "$RUNS"); do
    out="$(cargo test -q -p causeway-e2e --test exit_node_auto -- --nocapture --test-threads 1 2>&1)" \
        || { echo "$out" | tail -n 40 >&2; echo "error: run $run failed" >&2; exit 1; }
    line="$(grep -o 'FIGURE .*' <<<"$out" || true)"
    [[ -n "$line" ]] || { echo "error: run $run printed no figure" >&2; exit 1; }
    echo "$run    ${line#FIGURE }"
done
