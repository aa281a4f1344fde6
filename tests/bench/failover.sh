#!/usr/bin/env bash
# Failover benchmark: a local HA pair of subnet routers (provisioner deploy
# --cloud local --role subnet-router --ha), continuous UDP and TCP traffic
# from the client to the VPC host, and one fault at a time on whichever
# router is primary. Prints, per fault and run, the gap in delivered
# traffic and what happened to an established TCP connection. Needs root.
# See tests/bench/README.md.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: tests/bench/failover.sh [options]

  --runs N            runs per fault (default 3)
  --faults LIST       comma-separated, from: kill, stop, vpc-link, uplink
                      (default: all four, in that order)
  --seconds N         traffic per run, in seconds (default 15; the fault
                      comes 3 s in)
  --settle N          seconds to wait, once the pair is back to one primary
                      and one standby, before the next run (default 11: past
                      control's default 10 s route_hold_down, so each run
                      starts from a steady pair; 0 measures a pair that has
                      just recovered from the previous fault)
  --no-snat           deploy the pair with --no-snat: the VPC host sees the
                      client's tailnet address and the VPC namespace's
                      100.64.0.0/10 route follows the primary
  --name NAME         deployment name (default fob, 1-8 characters)
  --json              print one JSON document instead of the table
  --no-build          do not run cargo build; use target/release as it is
  --bin-dir DIR       take the binaries from DIR instead (implies --no-build;
                      e.g. target/debug, for a quick check of the script)
  --keep              leave the deployment and the run files in place
  -h, --help          this text

Faults, each on the router that control names primary at that moment:
  kill      kill -9 of its appliance; restored by deploying again
  stop      kill -STOP (frozen: its TCP connections stay open); kill -CONT
  vpc-link  its VPC-side interface down, while it stays online; up again
  uplink    its uplink down (control and every peer lose it); up again
EOF
}

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
RUNS=3
FAULTS="kill,stop,vpc-link,uplink"
SECONDS_PER_RUN=15
FAULT_AT=3
SETTLE=11
NAME=fob
JSON=0
BUILD=1
KEEP=0
SNAT=1
BIN="$REPO_ROOT/target/release"

while [[ $# -gt 0 ]]; do
    case "$1" in
        --runs) RUNS="${2:?--runs needs a number}"; shift 2 ;;
        --faults) FAULTS="${2:?--faults needs a list}"; shift 2 ;;
        --seconds) SECONDS_PER_RUN="${2:?--seconds needs a number}"; shift 2 ;;
        --settle) SETTLE="${2:?--settle needs a number of seconds}"; shift 2 ;;
        --name) NAME="${2:?--name needs a deployment name}"; shift 2 ;;
        --json) JSON=1; shift ;;
        --no-snat) SNAT=0; shift ;;
        --no-build) BUILD=0; shift ;;
        --bin-dir) BIN="$(cd "${2:?--bin-dir needs a directory}" && pwd)"; BUILD=0; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done

[[ "$RUNS" =~ ^[1-9][0-9]?$ ]] || { echo "error: --runs '$RUNS': expected 1..99" >&2; exit 2; }
[[ "$SECONDS_PER_RUN" =~ ^[0-9]+$ ]] && (( SECONDS_PER_RUN >= 8 && SECONDS_PER_RUN <= 300 )) \
    || { echo "error: --seconds '$SECONDS_PER_RUN': expected 8..300" >&2; exit 2; }
[[ "$SETTLE" =~ ^[0-9]+$ ]] && (( SETTLE <= 600 )) \
    || { echo "error: --settle '$SETTLE': expected 0..600" >&2; exit 2; }
IFS=, read -r -a FAULT_LIST <<<"$FAULTS"
for f in "${FAULT_LIST[@]}"; do
    case "$f" in
        kill|stop|vpc-link|uplink) ;;
        *) echo "error: --faults: unknown fault '$f'; expected kill, stop, vpc-link or uplink" >&2; exit 2 ;;
    esac
done
(( EUID == 0 )) || { echo "error: needs root (network namespaces)" >&2; exit 2; }
for tool in jq ip; do
    command -v "$tool" >/dev/null || { echo "error: '$tool' not found; run ./.ci/install-deps" >&2; exit 2; }
done

DEPLOY_FLAGS=(--role subnet-router --ha)
(( SNAT )) || DEPLOY_FLAGS+=(--no-snat)

PROVISIONER="$BIN/provisioner"
TRAFFIC="$BIN/failover-traffic"
if (( BUILD )); then
    echo "building (release)..." >&2
    (cd "$REPO_ROOT" && cargo build --release --bins >&2)
fi
for b in "$PROVISIONER" "$BIN/appliance" "$TRAFFIC"; do
    [[ -x "$b" ]] || { echo "error: $b missing; build with cargo build --release --bins" >&2; exit 2; }
done

WORK="$(mktemp -d /tmp/cwfo.XXXXXX)"
NS_CLI="cw-$NAME-cli"
NS_VPC="cw-$NAME-vpc"
VPC_HOST=198.19.1.10
SERVER_PID=""

prov() { "$PROVISIONER" "$1" --cloud local --name "$NAME" "${@:2}"; }

cleanup() {
    local rc=$?
    if [[ -n "$SERVER_PID" ]]; then kill "$SERVER_PID" 2>/dev/null || true; fi
    # A frozen router would make destroy wait for its SIGTERM timeout.
    for ns in "cw-$NAME-rtr" "cw-$NAME-rtr2"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -CONT "$pid" 2>/dev/null || true; done
    done
    if (( KEEP )); then
        echo "kept: deployment $NAME and $WORK" >&2
    else
        prov destroy >/dev/null 2>&1 || echo "warning: destroy of $NAME failed; run: $PROVISIONER destroy --cloud local --name $NAME" >&2
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT INT TERM

# The routers as status reports them: one JSON object per line.
routers() { { prov status --output json 2>/dev/null || true; } | jq -c '.routers[]?'; }

# Waits until both routers run and control names one primary and one
# standby; prints the primary's object.
wait_pair() {
    local deadline=$((SECONDS + 120)) line
    while (( SECONDS < deadline )); do
        line="$({ prov status --output json 2>/dev/null || true; } | jq -c '
            [.routers[]? | select(.alive)] as $r
            | if ($r | length) == 2
                 and ([$r[] | select(.ha_role == "primary")] | length) == 1
                 and ([$r[] | select(.ha_role == "standby")] | length) == 1
              then ($r[] | select(.ha_role == "primary")) else empty end' || true)"
        if [[ -n "$line" ]]; then echo "$line"; return 0; fi
        sleep 1
    done
    echo "error: the pair did not settle to one primary and one standby within 120 s:" >&2
    prov status >&2 || true
    return 1
}

inject() { # fault primary-json
    local ns pid
    ns="$(jq -r .namespace <<<"$2")"
    pid="$(jq -r .pid <<<"$2")"
    case "$1" in
        kill) kill -9 "$pid" ;;
        stop) kill -STOP "$pid" ;;
        vpc-link) ip -n "$ns" link set vpc0 down ;;
        uplink) ip -n "$ns" link set eth0 down ;;
    esac
}

restore() { # fault primary-json
    local ns pid gateway
    ns="$(jq -r .namespace <<<"$2")"
    pid="$(jq -r .pid <<<"$2")"
    case "$1" in
        kill) prov deploy "${DEPLOY_FLAGS[@]}" >/dev/null ;;
        stop) kill -CONT "$pid" ;;
        vpc-link) ip -n "$ns" link set vpc0 up ;;
        uplink)
            # Taking the link down dropped the default route through it.
            ip -n "$ns" link set eth0 up
            gateway="$(ip -n "$ns" -4 addr show dev eth0 | awk '/inet /{split($2,a,"/"); split(a[1],o,"."); print o[1]"."o[2]"."o[3]".1"}')"
            ip -n "$ns" route replace default via "$gateway" dev eth0
            ;;
    esac
}

echo "deploying the HA pair ($NAME)..." >&2
prov deploy "${DEPLOY_FLAGS[@]}" >&2
ip netns exec "$NS_VPC" "$TRAFFIC" serve --udp "$VPC_HOST:9000" --tcp "$VPC_HOST:9001" \
    >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

results="$WORK/results.jsonl"
: >"$results"
run_one() { # fault run
    local fault="$1" run="$2" primary out after
    wait_pair >/dev/null
    sleep "$SETTLE"
    primary="$(wait_pair)"
    out="$WORK/$fault-$run.json"
    ip netns exec "$NS_CLI" "$TRAFFIC" send --udp "$VPC_HOST:9000" --tcp "$VPC_HOST:9001" \
        --seconds "$SECONDS_PER_RUN" >"$out" &
    local sender=$!
    sleep "$FAULT_AT"
    if [[ "$fault" != none ]]; then inject "$fault" "$primary"; fi
    wait "$sender"
    # Restore first: status would wait on a frozen router's status socket.
    # The primary stays where the failover put it (selection is sticky).
    if [[ "$fault" != none ]]; then restore "$fault" "$primary"; fi
    after="$(routers | jq -r 'select(.ha_role == "primary") | .node' | head -1 || true)"
    jq -c --arg fault "$fault" --argjson run "$run" --arg before "$(jq -r .node <<<"$primary")" \
        --arg after "${after:-none}" \
        '{fault: $fault, run: $run, primary_before: $before, primary_after: $after,
          udp_gap_ms: .udp.longest_gap_ms, udp_lost: (.udp.sent - .udp.echoed),
          udp_not_recovered: (.udp.not_recovered != null),
          tcp: .tcp.connection, tcp_stall_ms: .tcp.longest_stall_ms,
          tcp_reconnected_after_ms: .tcp.reconnected_after_ms}' "$out" >>"$results"
    echo "  $fault run $run: $(tail -1 "$results")" >&2
}

# Run 0: no fault, the noise floor of the measurement on this machine.
echo "reference run without a fault..." >&2
run_one none 0
for fault in "${FAULT_LIST[@]}"; do
    for run in $(seq 1 "$RUNS"); do
        run_one "$fault" "$run"
    done
done

if (( JSON )); then
    jq -s --argjson snat "$( (( SNAT )) && echo true || echo false)" \
        '{interval_ms: 10, seconds: '"$SECONDS_PER_RUN"', snat: $snat, runs: .}' "$results"
    exit 0
fi
printf '\nFailover of a local HA pair (%s); traffic every 10 ms; reference: Tailscale documents up to ~15 s\n' \
    "$( (( SNAT )) && echo "SNAT" || echo "no SNAT")"
printf '%-9s %3s  %-8s %-8s %10s %6s  %-9s %10s %12s\n' \
    FAULT RUN BEFORE AFTER "UDP GAP" LOST "TCP CONN" "TCP STALL" "TCP NEW CONN"
jq -r '[.fault, (.run|tostring), .primary_before, .primary_after,
        (if .udp_not_recovered then "no recovery" else ((.udp_gap_ms|tostring) + " ms") end),
        (.udp_lost|tostring), .tcp, ((.tcp_stall_ms|tostring) + " ms"),
        (if .tcp_reconnected_after_ms == null then "-" else ((.tcp_reconnected_after_ms|tostring) + " ms") end)]
       | @tsv' "$results" |
    while IFS=$'\t' read -r f r b a g l c s n; do
        printf '%-9s %3s  %-8s %-8s %10s %6s  %-9s %10s %12s\n' "$f" "$r" "$b" "$a" "$g" "$l" "$c" "$s" "$n"
    done
