#!/bin/bash
# tests/interop/test_scale.sh BUILD_DIR
#
# Bounded scale check: SCALE_N (10000, or what the descriptor limit
# allows) concurrent logged-in connections to build/bin/chatserver from
# build/bin/bench_connections --chat (alice/1234 with a mind, joinGroup;
# spread over several 127.0.0.x source addresses): all log in, all
# receive one group message, and the server's RSS grows by at most
# SCALE_MAX_BYTES (2048) per connection, the chat server's own user
# records included (no idle buffers, decoders or arenas per connection).
# With a sanitizer build the RSS is reported, not judged.  Loopback only;
# < 60 s.
set -u
build=${1:-build}
bin=$build/bin
hard=$(ulimit -Hn)
[ "$hard" = unlimited ] && hard=1048576
N=${SCALE_N:-$((hard - 200 < 10000 ? hard - 200 : 10000))}
MAX=${SCALE_MAX_BYTES:-2048}
out=$(mktemp)
spid=""
trap '[ -n "$spid" ] && kill "$spid" 2>/dev/null; rm -f "$out" "$out.srv" "$out".db*' EXIT
ulimit -Sn "$hard" 2>/dev/null
"$bin/chatserver" --port 0 --db "$out.db" >"$out.srv" 2>&1 &
spid=$!
port=""
for _ in $(seq 100); do
    port=$(grep -o 'listening on [^ ]*:[0-9]*' "$out.srv" | grep -o '[0-9]*$' | head -n1)
    [ -n "$port" ] && break
    sleep 0.1
done
[ -n "$port" ] || { echo "FAIL: chatserver did not start"; cat "$out.srv"; exit 1; }
timeout 60 "$bin/bench_connections" --chat --port "$port" --count "$N" --server-pid "$spid" \
    --timeout 50 --label scale | tee "$out"
rc=${PIPESTATUS[0]}
get() { sed -n "s/^RESULT scale $1 //p" "$out" | head -n1; }
conns=$(get connections); deliv=$(get delivered); per=$(get server_rss_per_conn_bytes)
fail=0
[ "$rc" = 0 ] || { echo "FAIL: bench_connections exited $rc"; fail=1; }
[ "${conns%.*}" = "$N" ] || { echo "FAIL: $conns of $N connected"; fail=1; }
[ "${deliv%.*}" = "$N" ] || { echo "FAIL: $deliv of $N received the group message"; fail=1; }
if grep -q 'PB_SANITIZE:BOOL=ON' "$build/CMakeCache.txt" 2>/dev/null; then
    echo "sanitizer build: RSS per connection ${per:-?} bytes (not judged)"
elif [ -z "$per" ] || [ "${per%.*}" -gt "$MAX" ]; then
    echo "FAIL: server RSS per connection ${per:-?} bytes > $MAX"
    fail=1
fi
kill "$spid" 2>/dev/null
wait "$spid" 2>/dev/null
spid=""
[ "$fail" = 0 ] && echo "PASS: $N connections, all delivered, ${per} bytes of server RSS each"
exit $fail
