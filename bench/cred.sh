#!/usr/bin/env bash
# Side-by-side: the C benchserver and Twisted's (bench/benchserver_twisted.py)
# driven by the same C client (build/bin/benchclient): echo latency and
# pipelined calls, password logins/s (new connection each), and chat
# fan-out to 1000 members.  Loopback only; bounded; stops by itself.
# Usage: bench/cred.sh [build-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
PY=/usr/bin/python3
args=(--logins "${LOGINS:-2000}" --members "${MEMBERS:-1000}" --messages "${MESSAGES:-20}" --calls "${CALLS:-10000}")
out=$(mktemp)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -f "$out" "$out".*' EXIT

start() { # name command... ; sets $port
  "${@:2}" --port 0 >"$out.$1" 2>&1 &
  pids+=($!)
  for _ in $(seq 50); do
    port=$(grep -o 'listening on [^ ]*:[0-9]*' "$out.$1" | grep -o '[0-9]*$' || true)
    [ -n "$port" ] && return 0
    sleep 0.1
  done
  echo "$1 did not start" >&2; cat "$out.$1" >&2; exit 1
}

start c "$build/bin/benchserver"
timeout 300 "$build/bin/benchclient" --port "$port" --label libpb "${args[@]}" | tee -a "$out"
start tw $PY bench/benchserver_twisted.py
timeout 300 "$build/bin/benchclient" --port "$port" --label Twisted "${args[@]}" | tee -a "$out"

$PY - "$out" <<'PY'
import sys, collections
r = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    p = line.split()
    if len(p) == 4 and p[0] == "RESULT":
        r[p[2]][p[1]] = float(p[3])
print("\n%-32s %14s %14s %8s" % ("metric", "libpb", "Twisted", "ratio"))
for m, v in r.items():
    c, t = v.get("libpb"), v.get("Twisted")
    ratio = ("%.1fx" % (c / t if "_us" not in m else t / c)) if c and t else "-"
    print("%-32s %14.1f %14s %8s" % (m, c or 0, "%.1f" % t if t else "-", ratio))
print("(ratio: how many times better libpb is; for latencies, Twisted/libpb)")
PY
