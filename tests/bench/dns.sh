#!/usr/bin/env bash
# Node resolver benchmark: queries per second and latency of the node
# resolver on 100.100.100.100 (node.dns_resolver = true) in a local
# deployment, against asking the resolver behind the subnet router
# directly through the same mesh. dnsperf runs in the client's namespace
# for each case in turn:
#
#   magic     router.DOMAIN A, answered by the node resolver from the netmap
#   split     db.corp.internal A, forwarded by the node resolver to dnsmasq
#             on the VPC host (198.19.1.10) through the mesh
#   direct    db.corp.internal A, asked of that dnsmasq directly (baseline)
#
# Needs root, dnsperf and dnsmasq (./.ci/install-deps). See
# tests/bench/README.md.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: tests/bench/dns.sh [--seconds N] [--clients N] [--name NAME] [--bin-dir DIR]

  --seconds N   per case (default 10)
  --clients N   dnsperf's concurrent clients (default 4)
  --name NAME   deployment name (default dnsb)
  --bin-dir DIR provisioner and appliance from DIR (default target/release)
USAGE
}

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SECONDS_PER_CASE=10
CLIENTS=4
NAME=dnsb
BIN="$REPO_ROOT/target/release"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --seconds) SECONDS_PER_CASE="${2:?--seconds needs a number}"; shift 2 ;;
        --clients) CLIENTS="${2:?--clients needs a number}"; shift 2 ;;
        --name) NAME="${2:?--name needs a deployment name}"; shift 2 ;;
        --bin-dir) BIN="$(cd "${2:?--bin-dir needs a directory}" && pwd)"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
[[ "$SECONDS_PER_CASE" =~ ^[1-9][0-9]*$ ]] || { echo "error: --seconds '$SECONDS_PER_CASE': expected a positive number" >&2; exit 2; }
[[ "$CLIENTS" =~ ^[1-9][0-9]*$ ]] || { echo "error: --clients '$CLIENTS': expected a positive number" >&2; exit 2; }
(( EUID == 0 )) || { echo "error: needs root (network namespaces)" >&2; exit 2; }
for tool in dnsperf dnsmasq jq ip; do
    command -v "$tool" >/dev/null || { echo "error: '$tool' not found; run ./.ci/install-deps" >&2; exit 2; }
done
for b in "$BIN/provisioner" "$BIN/appliance"; do
    [[ -x "$b" ]] || { echo "error: $b missing; build with cargo build --release --bins" >&2; exit 2; }
done

STATE="/run/causeway/local/$NAME"
NS_CLI="cw-$NAME-cli"
VPC_HOST=198.19.1.10
WORK="$(mktemp -d /tmp/cwdns.XXXXXX)"
prov() { "$BIN/provisioner" "$1" --cloud local --name "$NAME" "${@:2}"; }
cleanup() {
    local rc=$?
    prov destroy >/dev/null 2>&1 || echo "warning: destroy of $NAME failed; run: $BIN/provisioner destroy --cloud local --name $NAME" >&2
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT INT TERM

echo "deploying $NAME..." >&2
prov deploy --role subnet-router >/dev/null

# The deployment's client already runs the node resolver, dnsmasq on the
# VPC host serves the private zone corp.internal from local data, and
# control holds corp.internal as split DNS.

ask() { ip netns exec "$NS_CLI" "$BIN/appliance" dns query "$@" --json 2>/dev/null; }
domain=""
for _ in $(seq 1 100); do
    domain="$(ask "$(ip -n "cw-$NAME-rtr" -4 addr show cw0 | awk '/inet /{split($2,a,"/"); split(a[1],o,"."); print o[4]"."o[3]"."o[2]"."o[1]".in-addr.arpa"; exit}')" PTR \
        | jq -r '.records[0] // empty' | awk '{print $NF}' | sed 's/^router\.//; s/\.$//' || true)"
    split_ok="$(ask db.corp.internal | jq -r '.records[0] // empty' || true)"
    [[ -n "$domain" && -n "$split_ok" ]] && break
    sleep 0.2
done
[[ -n "$domain" && -n "$split_ok" ]] || { echo "error: the node resolver did not answer; see $STATE/client.log" >&2; tail -20 "$STATE/client.log" >&2; exit 1; }

printf 'router.%s A\n' "$domain" >"$WORK/magic.txt"
printf 'db.corp.internal A\n' >"$WORK/split.txt"

run_case() { # label server datafile clients in-flight
    local out
    out="$(ip netns exec "$NS_CLI" dnsperf -s "$2" -d "$3" -l "$SECONDS_PER_CASE" -c "$4" -q "$5" 2>&1)"
    local qps lat completed
    qps="$(awk '/Queries per second:/{print $4}' <<<"$out")"
    lat="$(awk '/Average Latency \(s\):/{print $4}' <<<"$out")"
    completed="$(awk '/Queries completed:/{print $3" "$4}' <<<"$out")"
    printf '%-8s %-18s %12s %14s  %s\n' "$1" "$2" "$qps" "$(awk -v l="$lat" 'BEGIN{printf "%.3f ms", l*1000}')" "$completed"
}

printf '\nNode resolver, %s s per case\n' "$SECONDS_PER_CASE"
printf '\nOne query at a time (latency):\n'
printf '%-8s %-18s %12s %14s  %s\n' CASE SERVER "QUERIES/S" "AVG LATENCY" COMPLETED
run_case magic 100.100.100.100 "$WORK/magic.txt" 1 1
run_case split 100.100.100.100 "$WORK/split.txt" 1 1
run_case direct "$VPC_HOST" "$WORK/split.txt" 1 1
printf '\nLoaded: %s dnsperf clients, up to 64 queries in flight (throughput):\n' "$CLIENTS"
printf '%-8s %-18s %12s %14s  %s\n' CASE SERVER "QUERIES/S" "AVG LATENCY" COMPLETED
run_case magic 100.100.100.100 "$WORK/magic.txt" "$CLIENTS" 64
run_case split 100.100.100.100 "$WORK/split.txt" "$CLIENTS" 64
run_case direct "$VPC_HOST" "$WORK/split.txt" "$CLIENTS" 64
