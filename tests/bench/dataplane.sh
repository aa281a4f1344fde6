#!/usr/bin/env bash
# Data-plane benchmark: Causeway's appliance against wireguard-go, side by
# side, in one go. Two network namespaces joined by one
# veth; iperf3 TCP through the tunnel; throughput and CPU seconds per GB of
# the two tunnel processes. Needs root. See tests/bench/README.md.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: tests/bench/dataplane.sh [options]

  --duration N        iperf3 run length in seconds (default 10)
  --only IMPL         run one implementation: causeway | wireguard-go
  --via6              instead: through a subnet router to a host behind it,
                      by its IPv4 route (subnet) and by its 4via6 route (via6)
  --mtu N             tunnel MTU on both sides (default 1420)
  --json              print one JSON document instead of the table
  --no-build          do not run cargo build; use the existing binary
  --appliance PATH    appliance binary (default target/release/appliance)
  --keep              keep the work directory (configs, logs) for debugging
  --profile           perf record the tunnel processes during the run (implies
                      --keep); prints their top symbols to stderr. Sampling
                      costs CPU: do not compare those figures with plain runs.
  -h, --help          this text

Environment: CAUSEWAY_BENCH_LOG (appliance log filter, default "warn").
EOF
}

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DURATION=10
ONLY=""
MTU=1420
JSON=0
VIA6=0
BUILD=1
KEEP=0
PROFILE=0
APPLIANCE="$REPO_ROOT/target/release/appliance"
BENCH_LOG="${CAUSEWAY_BENCH_LOG:-warn}"

while [[ $# -gt 0 ]]; do
    case "$1" in
        --duration) DURATION="${2:?--duration needs a number of seconds}"; shift 2 ;;
        --only) ONLY="${2:?--only needs causeway or wireguard-go}"; shift 2 ;;
        --mtu) MTU="${2:?--mtu needs a number}"; shift 2 ;;
        --via6) VIA6=1; shift ;;
        --json) JSON=1; shift ;;
        --no-build) BUILD=0; shift ;;
        --appliance) APPLIANCE="${2:?--appliance needs a path}"; BUILD=0; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --profile) PROFILE=1; KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done

[[ "$DURATION" =~ ^[1-9][0-9]*$ ]] || { echo "error: --duration '$DURATION': expected a whole number of seconds > 0" >&2; exit 2; }
[[ "$MTU" =~ ^[0-9]+$ ]] && (( MTU >= 1280 && MTU <= 9000 )) || { echo "error: --mtu '$MTU': expected 1280..9000" >&2; exit 2; }
case "$VIA6:$ONLY" in
    0:) IMPLS=(causeway wireguard-go) ;;
    0:causeway|0:wireguard-go) IMPLS=("$ONLY") ;;
    1:) IMPLS=(subnet via6) ;;
    1:subnet|1:via6) IMPLS=("$ONLY") ;;
    0:*) echo "error: --only '$ONLY': expected causeway or wireguard-go" >&2; exit 2 ;;
    1:*) echo "error: --only '$ONLY' with --via6: expected subnet or via6" >&2; exit 2 ;;
esac

log() { echo "bench: $*" >&2; }

# ---------------------------------------------------------------- checks

[[ $EUID -eq 0 ]] || { echo "error: needs root (network namespaces, TUN devices)" >&2; exit 1; }
[[ -c /dev/net/tun ]] || { echo "error: /dev/net/tun missing: TUN devices are not available" >&2; exit 1; }
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$1 ($2)"); }
need ip "apt-get install iproute2"
need iperf3 "apt-get install iperf3"
need python3 "apt-get install python3"
need getconf "apt-get install libc-bin"
need ss "apt-get install iproute2"
[[ $PROFILE -eq 0 ]] || need perf "apt-get install linux-perf"
for impl in "${IMPLS[@]}"; do
    if [[ $impl == wireguard-go ]]; then
        need wireguard-go "apt-get install wireguard-go"
        need wg "apt-get install wireguard-tools"
    fi
done
if [[ ${#missing[@]} -gt 0 ]]; then
    echo "error: missing dependencies:" >&2
    printf '  %s\n' "${missing[@]}" >&2
    exit 1
fi

CLK_TCK="$(getconf CLK_TCK)"

# ---------------------------------------------------------------- cleanup

NS_A="cwb-$$-a"
NS_B="cwb-$$-b"
NS_C="cwb-$$-c"   # --via6: the LAN behind node a
SERVER_NS="$NS_A" # where the iperf3 server runs
WORK="$(mktemp -d /tmp/cwb-$$.XXXXXX)"
PIDS=()

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_all
    if [[ $KEEP -eq 1 ]]; then
        log "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Stops every process we started (SIGTERM, then SIGKILL after 5 s) and
# deletes both namespaces. Safe to call more than once.
stop_all() {
    local pid i
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
    ip netns del "$NS_A" 2>/dev/null || true
    ip netns del "$NS_B" 2>/dev/null || true
    ip netns del "$NS_C" 2>/dev/null || true
}

# Prints the tail of every log in the work directory, then exits.
die() {
    echo "error: $*" >&2
    local f
    for f in "$WORK"/*.log; do
        [[ -s $f ]] || continue
        echo "---- last lines of $(basename "$f") ----" >&2
        tail -n 20 "$f" >&2
    done
    exit 1
}

# Runs "$@" in the background inside namespace $1; the new PID goes to $BG_PID.
# `ip netns exec` execs the command, so the PID is the program's own.
bg_in() {
    local ns="$1" logfile="$2"
    shift 2
    ip netns exec "$ns" "$@" >"$logfile" 2>&1 &
    BG_PID=$!
    PIDS+=("$BG_PID")
}

# Runs "$@" inside namespace $1 with stdout and stderr to $2 and waits for
# it. Through `wait`, so INT/TERM reach the trap at once, not after the
# command ends; a bounded time (run length + 60 s) so a hung tunnel fails.
run_in() {
    local ns="$1" out="$2"
    shift 2
    bg_in "$ns" "$out" timeout $((DURATION + 60)) "$@"
    wait "$BG_PID"
}

# ---------------------------------------------------------------- topology

setup_topology() {
    ip netns add "$NS_A"
    ip netns add "$NS_B"
    ip link add "cwb$$a" netns "$NS_A" type veth peer name "cwb$$b" netns "$NS_B"
    ip -n "$NS_A" addr add 198.18.200.1/24 dev "cwb$$a"
    ip -n "$NS_B" addr add 198.18.200.2/24 dev "cwb$$b"
    for ns in "$NS_A" "$NS_B"; do
        ip -n "$ns" link set lo up
    done
    ip -n "$NS_A" link set "cwb$$a" up
    ip -n "$NS_B" link set "cwb$$b" up
    if [[ $VIA6 -eq 1 ]]; then
        # A LAN behind node a: 198.19.201.0/24, its host at .10.
        ip netns add "$NS_C"
        ip link add "cwb$$l" netns "$NS_A" type veth peer name "cwb$$c" netns "$NS_C"
        ip -n "$NS_A" addr add 198.19.201.1/24 dev "cwb$$l"
        ip -n "$NS_C" addr add 198.19.201.10/24 dev "cwb$$c"
        ip -n "$NS_C" link set lo up
        ip -n "$NS_A" link set "cwb$$l" up
        ip -n "$NS_C" link set "cwb$$c" up
        ip -n "$NS_C" route add default via 198.19.201.1
    fi
}

# ---------------------------------------------------------------- measuring

# CPU jiffies (utime + stime, all threads) of the given PIDs, summed.
cpu_ticks() {
    local pid total=0 rest
    local -a f
    for pid in "$@"; do
        [[ -r /proc/$pid/stat ]] || die "process $pid exited during the run"
        rest="$(cat "/proc/$pid/stat")"
        rest="${rest##*) }"     # fields after the command name, from field 3
        read -r -a f <<<"$rest"
        total=$((total + f[11] + f[12]))   # fields 14 and 15
    done
    echo "$total"
}

# Busy jiffies of the whole machine (everything but idle and iowait).
machine_ticks() {
    awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat
}

wait_for_tcp_listen() { # ns port what
    local i
    for ((i = 0; i < 100; i++)); do
        if ip netns exec "$1" ss -ltnH "sport = :$2" | grep -q .; then return 0; fi
        sleep 0.1
    done
    die "$3 did not listen on TCP port $2 within 10 s"
}

# Runs iperf3 from ns b to $1 in ns a while measuring the CPU of the PIDs
# that follow; sets RESULT to "bits_per_second bytes cpu_seconds machine_cpu_seconds".
# Not run in a subshell: the iperf3 server PIDs must reach PIDS for cleanup.
measure() {
    local addr="$1" impl="$2"
    shift 2
    bg_in "$SERVER_NS" "$WORK/$impl-iperf3-server.log" iperf3 -s -B "${SERVER_BIND:-$addr}"
    wait_for_tcp_listen "$SERVER_NS" 5201 "iperf3 server"
    # Warm-up: one short run so handshakes and route set-up are not measured.
    run_in "$NS_B" "$WORK/$impl-warmup.json" iperf3 -c "$addr" -t 1 -J \
        || die "$impl: warm-up iperf3 to $addr failed (tunnel not passing traffic?)"
    local before after m_before m_after perf_pid=""
    if [[ $PROFILE -eq 1 ]]; then
        local pids="$*"
        perf record -q -F 999 -g -p "${pids// /,}" -o "$WORK/$impl-perf.data" -- sleep "$DURATION" \
            >"$WORK/$impl-perf.log" 2>&1 &
        perf_pid=$!
        PIDS+=("$perf_pid")
    fi
    before="$(cpu_ticks "$@")"
    m_before="$(machine_ticks)"
    run_in "$NS_B" "$WORK/$impl-iperf3.json" iperf3 -c "$addr" -t "$DURATION" -J \
        || die "$impl: iperf3 client failed"
    after="$(cpu_ticks "$@")"
    m_after="$(machine_ticks)"
    if [[ -n $perf_pid ]]; then
        wait "$perf_pid" || true
        {
            echo "---- $impl: CPU samples by binary (both tunnel processes; perf.data in $WORK) ----"
            perf report -i "$WORK/$impl-perf.data" --no-children -g none --sort dso --stdio 2>/dev/null \
                | grep -v '^#' | grep -E '^ +[0-9]' | head -n 5
            echo "---- $impl: top 15 symbols, self time ----"
            perf report -i "$WORK/$impl-perf.data" --no-children -g none --sort dso,sym --stdio 2>/dev/null \
                | grep -v '^#' | grep -E '^ +[0-9]' | head -n 15
        } >&2
    fi
    RESULT="$(python3 - "$WORK/$impl-iperf3.json" "$before" "$after" "$m_before" "$m_after" "$CLK_TCK" <<'EOF'
import json, sys
path, before, after, mb, ma, hz = sys.argv[1], *map(int, sys.argv[2:])
with open(path) as f:
    doc = json.load(f)
if "error" in doc:
    sys.exit(f"iperf3: {doc['error']}")
recv = doc["end"]["sum_received"]
print(recv["bits_per_second"], recv["bytes"], (after - before) / hz, (ma - mb) / hz)
EOF
)" || die "$impl: could not read iperf3's JSON output"
}

# ---------------------------------------------------------------- causeway

json_field() { # file python-expression-over-d
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

# Waits until `appliance status` in ns $1 for state dir $2 reports running
# with exactly one peer.
wait_running() {
    local ns="$1" dir="$2" name="$3" i
    for ((i = 0; i < 300; i++)); do
        if ip netns exec "$ns" "$APPLIANCE" status --state-dir "$dir" --json >"$WORK/$name-status.json" 2>/dev/null \
            && [[ "$(json_field "$WORK/$name-status.json" 'd["state"] == "running" and len(d["peers"]) == 1')" == True ]]; then
            return 0
        fi
        sleep 0.1
    done
    die "causeway: node $name not running with one peer within 30 s (last status: $(cat "$WORK/$name-status.json" 2>/dev/null || echo none))"
}

# $1: causeway (node b to node a's tailnet address), or with --via6:
# subnet (node b to the LAN host behind node a by its IPv4 route) or via6
# (the same host by its 4via6 route, site 1).
run_causeway() {
    local mode="${1:-causeway}"
    local ctl="$WORK/control" da="$WORK/node-a" db="$WORK/node-b"
    mkdir -p "$ctl" "$da" "$db"
    ip netns exec "$NS_A" "$APPLIANCE" control init --state-dir "$ctl" >"$WORK/control-init.log" 2>&1 \
        || die "causeway: appliance control init failed"
    cat >"$WORK/control.toml" <<EOF
state_dir = "$ctl"
[control]
listen = "198.18.200.1:8080"
admin_listen = "127.0.0.1:8081"
EOF
    export CAUSEWAY_LOG="$BENCH_LOG"
    bg_in "$NS_A" "$WORK/control.log" "$APPLIANCE" run --config "$WORK/control.toml"
    wait_for_tcp_listen "$NS_A" 8081 "control (admin API)"
    wait_for_tcp_listen "$NS_A" 8080 "control (node API)"
    local side
    for side in a b; do
        ip netns exec "$NS_A" "$APPLIANCE" admin --url http://127.0.0.1:8081 --token-file "$ctl/admin.token" keys create \
            >"$WORK/key-$side" 2>"$WORK/admin-$side.log" || die "causeway: appliance admin keys create failed"
        [[ -s "$WORK/key-$side" ]] || die "causeway: keys create printed no key"
    done
    local -A dir=([a]="$da" [b]="$db") ns=([a]="$NS_A" [b]="$NS_B") ip=([a]=198.18.200.1 [b]=198.18.200.2)
    for side in a b; do
        cat >"$WORK/node-$side.toml" <<EOF
state_dir = "${dir[$side]}"
[node]
control_url = "http://198.18.200.1:8080"
control_public_key_file = "$ctl/control.pub"
auth_key_file = "$WORK/key-$side"
hostname = "bench-$side"
listen_port = 41641
tun_name = "cw0"
mtu = $MTU
advertise_endpoints = ["${ip[$side]}:41641"]
EOF
    done
    if [[ $mode != causeway ]]; then
        # Node a routes the LAN both ways; node b takes routes.
        cat >>"$WORK/node-a.toml" <<EOF
[subnet_router]
routes = [{ prefix = "198.19.201.0/24" }, { prefix = "198.19.201.0/24", site_id = 1 }]
EOF
        sed -i 's/^\[node\]$/[node]\naccept_routes = true/' "$WORK/node-b.toml"
    fi
    bg_in "$NS_A" "$WORK/node-a.log" "$APPLIANCE" run --config "$WORK/node-a.toml"
    local pid_a=$BG_PID
    bg_in "$NS_B" "$WORK/node-b.log" "$APPLIANCE" run --config "$WORK/node-b.toml"
    local pid_b=$BG_PID
    wait_running "$NS_A" "$da" a
    wait_running "$NS_B" "$db" b
    local addr
    addr="$(json_field "$WORK/a-status.json" '[a.split("/")[0] for a in d["addresses"] if ":" not in a][0]')" \
        || die "causeway: node a reports no IPv4 tailnet address"
    local tun_mtu
    tun_mtu="$(ip -n "$NS_A" -o link show cw0 | sed -n 's/.* mtu \([0-9]*\).*/\1/p')"
    [[ "$tun_mtu" == "$MTU" ]] || die "causeway: cw0 in ns a has MTU '$tun_mtu', expected $MTU"
    if [[ $mode != causeway ]]; then
        local route
        for route in $(json_field "$WORK/a-status.json" '" ".join(d["advertised_routes"])'); do
            ip netns exec "$NS_A" "$APPLIANCE" admin --url http://127.0.0.1:8081 --token-file "$ctl/admin.token" \
                routes approve bench-a "$route" >>"$WORK/admin-a.log" 2>&1 \
                || die "causeway: approving $route failed"
        done
        SERVER_NS="$NS_C" SERVER_BIND=198.19.201.10
        if [[ $mode == subnet ]]; then
            addr=198.19.201.10
        else
            addr="$(json_field "$WORK/a-status.json" \
                '[str(__import__("ipaddress").ip_network(r).network_address + 10) for r in d["advertised_routes"] if ":" in r][0]')" \
                || die "causeway: node a advertises no 4via6 route"
        fi
        local i
        for ((i = 0; i < 100; i++)); do
            ip netns exec "$NS_B" ping -c 1 -W 1 "$addr" >/dev/null 2>&1 && break
            sleep 0.1
        done
        ((i < 100)) || die "causeway: $addr not reachable from node b within 10 s after approving the routes"
    fi
    log "causeway ($mode): nodes running, target $addr; iperf3 for $DURATION s"
    measure "$addr" "$mode" "$pid_a" "$pid_b"
    SERVER_NS="$NS_A" SERVER_BIND=""
}

# ---------------------------------------------------------------- wireguard-go

run_wireguard_go() {
    local ifa="cwb$$wa" ifb="cwb$$wb"   # UAPI sockets in /var/run/wireguard are not per-namespace
    local side
    for side in a b; do
        (umask 077 && wg genkey >"$WORK/wg-$side.key")
        wg pubkey <"$WORK/wg-$side.key" >"$WORK/wg-$side.pub"
    done
    # -f: stay in the foreground, so the PID is wireguard-go's own.
    bg_in "$NS_A" "$WORK/wireguard-go-a.log" env WG_PROCESS_FOREGROUND=1 wireguard-go -f "$ifa"
    local pid_a=$BG_PID
    bg_in "$NS_B" "$WORK/wireguard-go-b.log" env WG_PROCESS_FOREGROUND=1 wireguard-go -f "$ifb"
    local pid_b=$BG_PID
    local i
    for ((i = 0; i < 100; i++)); do
        [[ -S /var/run/wireguard/$ifa.sock && -S /var/run/wireguard/$ifb.sock ]] && break
        kill -0 "$pid_a" 2>/dev/null && kill -0 "$pid_b" 2>/dev/null || die "wireguard-go exited at start"
        sleep 0.1
    done
    [[ -S /var/run/wireguard/$ifa.sock && -S /var/run/wireguard/$ifb.sock ]] || die "wireguard-go: no UAPI socket within 10 s"
    ip netns exec "$NS_A" wg set "$ifa" private-key "$WORK/wg-a.key" listen-port 51820 \
        peer "$(cat "$WORK/wg-b.pub")" allowed-ips 100.64.200.2/32 endpoint 198.18.200.2:51820
    ip netns exec "$NS_B" wg set "$ifb" private-key "$WORK/wg-b.key" listen-port 51820 \
        peer "$(cat "$WORK/wg-a.pub")" allowed-ips 100.64.200.1/32 endpoint 198.18.200.1:51820
    ip -n "$NS_A" addr add 100.64.200.1/32 dev "$ifa"
    ip -n "$NS_B" addr add 100.64.200.2/32 dev "$ifb"
    ip -n "$NS_A" link set "$ifa" mtu "$MTU" up
    ip -n "$NS_B" link set "$ifb" mtu "$MTU" up
    ip -n "$NS_A" route add 100.64.200.2/32 dev "$ifa"
    ip -n "$NS_B" route add 100.64.200.1/32 dev "$ifb"
    log "wireguard-go: interfaces up; iperf3 for $DURATION s"
    measure 100.64.200.1 wireguard-go "$pid_a" "$pid_b"
}

# ---------------------------------------------------------------- main

if [[ " ${IMPLS[*]} " == *" causeway "* ]]; then
    if [[ $BUILD -eq 1 ]]; then
        log "cargo build --release -p causeway-appliance"
        (cd "$REPO_ROOT" && cargo build --release -p causeway-appliance) >&2 \
            || { echo "error: cargo build --release -p causeway-appliance failed" >&2; exit 1; }
    fi
    [[ -x "$APPLIANCE" ]] || { echo "error: appliance binary $APPLIANCE not found (build it, or drop --no-build)" >&2; exit 1; }
fi

declare -A BPS BYTES CPU MCPU
for impl in "${IMPLS[@]}"; do
    setup_topology
    case "$impl" in
        causeway) run_causeway ;;
        subnet|via6) run_causeway "$impl" ;;
        wireguard-go) run_wireguard_go ;;
    esac
    read -r BPS[$impl] BYTES[$impl] CPU[$impl] MCPU[$impl] <<<"$RESULT"
    stop_all
done

WG_GO_VERSION="$(dpkg-query -W -f='${Version}' wireguard-go 2>/dev/null || echo unknown)"
CAUSEWAY_VERSION="$(git -C "$REPO_ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
CORES="$(nproc)"
CPU_MODEL="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"

rows=""
for impl in "${IMPLS[@]}"; do
    rows+="$impl ${BPS[$impl]} ${BYTES[$impl]} ${CPU[$impl]} ${MCPU[$impl]}"$'\n'
done

python3 - "$JSON" "$DURATION" "$MTU" "$CORES" "$CPU_MODEL" "$WG_GO_VERSION" "$CAUSEWAY_VERSION" <<EOF
import json, sys
as_json, duration, mtu, cores, cpu_model, wg_version, cw_version = sys.argv[1:]
rows = {}
for line in """$rows""".strip().splitlines():
    impl, bps, nbytes, cpu, mcpu = line.split()
    gb = int(nbytes) / 1e9
    rows[impl] = {
        "bits_per_second": float(bps),
        "bytes": int(nbytes),
        "tunnel_cpu_seconds": float(cpu),
        "tunnel_cpu_seconds_per_gb": float(cpu) / gb if gb else None,
        "machine_cpu_seconds": float(mcpu),
        "machine_cpu_seconds_per_gb": float(mcpu) / gb if gb else None,
    }
ratio = None
# The figure and its baseline: causeway against wireguard-go, or with
# --via6 the 4via6 route against the IPv4 route to the same host.
pair = ("via6", "subnet") if "subnet" in rows or "via6" in rows else ("causeway", "wireguard-go")
topology = ("3 network namespaces: node b, node a routing a LAN, the LAN host"
            if pair[0] == "via6" else "2 network namespaces on one veth")
if pair[0] in rows and pair[1] in rows:
    c, w = rows[pair[0]], rows[pair[1]]
    div = lambda a, b: a / b if a is not None and b else None
    ratio = {
        "throughput": div(c["bits_per_second"], w["bits_per_second"]),
        "tunnel_cpu_seconds_per_gb": div(c["tunnel_cpu_seconds_per_gb"], w["tunnel_cpu_seconds_per_gb"]),
        "machine_cpu_seconds_per_gb": div(c["machine_cpu_seconds_per_gb"], w["machine_cpu_seconds_per_gb"]),
    }
if as_json == "1":
    print(json.dumps({
        "benchmark": "dataplane",
        "test": "iperf3 TCP", "duration_seconds": int(duration), "mtu": int(mtu),
        "topology": topology,
        "machine": {"cores": int(cores), "cpu": cpu_model},
        "versions": {"causeway": cw_version, "wireguard-go": wg_version},
        "results": rows, f"ratio_{pair[0]}_to_{pair[1]}".replace("-", "_"): ratio,
    }, indent=2))
    sys.exit(0)
fmt = lambda v, f: "-" if v is None else f.format(v)
print(f"data plane, iperf3 TCP {duration} s, MTU {mtu}, {topology}, this machine: {cores} cores ({cpu_model})")
print(f"{'impl':<16}{'throughput':<16}{'CPU s/GB'}")
for impl, r in rows.items():
    print(f"{impl:<16}{fmt(r['bits_per_second'] / 1e6, '{:.0f} Mbit/s'):<16}"
          f"{fmt(r['tunnel_cpu_seconds_per_gb'], '{:.1f}')}")
if ratio:
    print(f"{'ratio':<16}{fmt(ratio['throughput'], '{:.2f}x'):<16}"
          f"{fmt(ratio['tunnel_cpu_seconds_per_gb'], '{:.2f}x')}")
print(f"(CPU s/GB: utime+stime of the two tunnel processes per 10^9 bytes received; wireguard-go {wg_version}, causeway {cw_version})")
EOF
