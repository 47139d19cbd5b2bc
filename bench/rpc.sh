#!/usr/bin/env bash
# rpc.sh [BUILD_DIR] [SECONDS] - echo-call latency and throughput, side by
# side in one run: C->C, Twisted->Twisted, C->Twisted, Twisted->C, and a
# raw C TCP ping-pong of the PB request's size.  Each pairing runs SECONDS
# (default 2) of sequential calls then SECONDS with 100 calls in flight;
# everything runs on 127.0.0.1 and the whole run is bounded (~30 s).
# Server CPU is read from /proc (10 ms ticks: a rough figure).
# PIN=split (default with 2+ CPUs): servers on CPU 0, clients on CPU 1;
# PIN=same: everything on CPU 0; PIN=none: let the scheduler decide.
set -u
cd "$(dirname "$0")/.."
build=${1:-build}
secs=${2:-2}
depth=100
bin=$build/bin
PY=/usr/bin/python3
tmp=$(mktemp -d /tmp/pb-bench.XXXXXX)
pids=()
cleanup() {
    # servers start inside $(...), so their pids come from the files
    for f in "$tmp"/*.pid; do [ -f "$f" ] && pids+=("$(cat "$f")"); done
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
pin=${PIN:-split}
[ "$(nproc)" -lt 2 ] && [ "$pin" = split ] && pin=same
case $pin in
split) on_srv="taskset -c 0" on_cli="taskset -c 1" ;;
same) on_srv="taskset -c 0" on_cli="taskset -c 0" ;;
*) on_srv="" on_cli="" ;;
esac
command -v taskset >/dev/null || { on_srv=""; on_cli=""; pin=none; }
[ -x "$bin/bench_rpc" ] || { echo "build first: $bin/bench_rpc missing" >&2; exit 1; }

# start NAME CMD... : run a server in the background, echo its port
start() {
    local name=$1 port="" i
    shift
    : >"$tmp/$name.out"
    $on_srv "$@" >"$tmp/$name.out" 2>&1 &
    pids+=($!)
    echo $! >"$tmp/$name.pid"
    for i in $(seq 100); do
        port=$(sed -n 's/.*listening on .*:\([0-9][0-9]*\).*/\1/p' "$tmp/$name.out" | head -n1)
        [ -n "$port" ] && break
        sleep 0.1
    done
    [ -n "$port" ] || { echo "$name did not start:" >&2; cat "$tmp/$name.out" >&2; exit 1; }
    echo "$port"
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
hz=$(getconf CLK_TCK)

c_port=$(start c "$bin/bench_rpc" server --host 127.0.0.1 --port 0)
py_port=$(start py "$PY" bench/rpc_twisted.py server 0)
raw_port=$(start raw "$bin/bench_rpc" raw-server --host 127.0.0.1 --port 0)

printf '%-22s %12s %9s %9s %16s %14s\n' "client -> server" "seq calls/s" "p50 us" "p99 us" \
    "${depth} in flight/s" "srv CPU us/call"
printf '%-22s %12s %9s %9s %16s %14s\n' "----------------" "-----------" "------" "------" \
    "--------------" "--------------"

msg_bytes=41
# run LABEL SERVERNAME CLIENT-CMD...
run() {
    local label=$1 srv=$2 line c0 c1 cpu
    shift 2
    local spid
    spid=$(cat "$tmp/$srv.pid")
    c0=$(cpu_ticks "$spid")
    line=$(timeout $((4 * secs + 10)) $on_cli "$@" 2>"$tmp/err" | grep '^RESULT')
    c1=$(cpu_ticks "$spid")
    if [ -z "$line" ]; then
        printf '%-22s failed: %s\n' "$label" "$(head -c 200 "$tmp/err")"
        return
    fi
    eval "$(echo "$line" | sed 's/^RESULT //; s/ /;/g')"
    # shellcheck disable=SC2154 # set by the eval above
    cpu=$(awk -v d=$((c1 - c0)) -v hz="$hz" -v n=$((seq_calls + pipe_calls)) \
        'BEGIN { if (n > 0) printf "%.1f", d * 1e6 / hz / n; else print "-" }')
    printf '%-22s %12s %9s %9s %16s %14s\n' "$label" "$seq_per_s" "$p50_us" "$p99_us" \
        "$pipe_per_s" "$cpu"
}

run "C -> C" c "$bin/bench_rpc" client --host 127.0.0.1 --port "$c_port" --seconds "$secs" --depth $depth
size=$msg_bytes # what the C client measured (41 if that run failed)
[ "$size" -gt 0 ] 2>/dev/null || size=41
run "Twisted -> Twisted" py "$PY" bench/rpc_twisted.py client 127.0.0.1 "$py_port" "$secs" $depth
run "C -> Twisted" py "$bin/bench_rpc" client --host 127.0.0.1 --port "$py_port" --seconds "$secs" --depth $depth
run "Twisted -> C" c "$PY" bench/rpc_twisted.py client 127.0.0.1 "$c_port" "$secs" $depth
run "raw TCP ${size}B" raw "$bin/bench_rpc" raw-client --host 127.0.0.1 --port "$raw_port" --seconds "$secs" --depth $depth --size "$size"
echo "(payload: echo of a 16-char str; request ${size} bytes on the wire; $(nproc) CPUs, PIN=$pin)"
