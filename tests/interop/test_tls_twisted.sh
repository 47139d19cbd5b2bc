#!/usr/bin/env bash
# test_tls_twisted.sh BUILD_DIR - PB over TLS between libpb and Twisted
# (listenSSL / connectSSL), both ways, with client certificates.
# Certificates come from `test_tls --make-certs` (a throwaway CA, server
# "localhost", client "alice", and an untrusted second CA).  The C peer is
# test_tls in its --serve / --call modes, the Twisted one
# tests/interop/tls_peer.py; TLS examples run against the docs' listings
# through tls_run_listing.py.  Assertions are on what each side prints.
# Ends with "N passed, N failed".
set -u
build=${1:-build}
bin=$build/bin
PY=/usr/bin/python3
here=tests/interop
L=/usr/share/doc/twisted-doc/howto/listings/pb
. "$(dirname "$0")/lib.sh"
interop_init /tmp/pb-tls-interop.XXXXXX
tmp=$T
passed=0
failed=0

for need in "$PY" "$bin/test_tls" "$here/tls_peer.py"; do
    if [ ! -e "$need" ]; then
        echo "missing $need"
        echo "0 passed, 1 failed"
        exit 1
    fi
done
if ! "$PY" -c 'import OpenSSL, service_identity' 2>/dev/null; then
    echo "missing python3-openssl / python3-service-identity (scripts/deps.sh installs them)"
    echo "0 passed, 1 failed"
    exit 1
fi
certs=$tmp/certs
if ! "$bin/test_tls" --make-certs "$certs"; then
    echo "cannot make certificates"
    echo "0 passed, 1 failed"
    exit 1
fi

# start_server NAME CMD...: run CMD in the background, wait for its
# "listening on HOST:PORT" line; sets $port ("" if it did not start).
start_server() {
    local name=$1
    shift
    timeout 60 "$@" >"$tmp/$name.server" 2>&1 &
    srv=$!
    PIDS+=("$srv")
    port=""
    for _ in $(seq 100); do
        port=$(sed -n 's/.*listening on .*:\([0-9][0-9]*\).*/\1/p' "$tmp/$name.server" | head -n1)
        [ -n "$port" ] && break
        kill -0 "$srv" 2>/dev/null || break
        sleep 0.1
    done
}

stop_server() {
    kill "$srv" 2>/dev/null
    wait "$srv" 2>/dev/null
}

# check NAME FILE-SUFFIX EXPECT...: every expectation is in $tmp/NAME.SUFFIX
# (a leading ! means it must NOT be there); reports ok/FAIL.
check() {
    local name=$1 why="" e
    shift
    for e in "$@"; do
        local f=${e%%:*} s=${e#*:}
        case $s in
        !*) grep -qF -- "${s#!}" "$tmp/$name.$f" && why="$why; $f has: ${s#!}" ;;
        *) grep -qF -- "$s" "$tmp/$name.$f" || why="$why; $f lacks: $s" ;;
        esac
    done
    if grep -qsE "Sanitizer|runtime error:" "$tmp/$name".*; then why="$why; sanitizer report"; fi
    if [ -z "$why" ]; then
        echo "ok   $name"
        passed=$((passed + 1))
    else
        echo "FAIL $name: ${why#; }"
        for f in "$tmp/$name".*; do
            echo "  --- ${f##*.}:"
            sed 's/^/  | /' "$f" | head -n 30
        done
        failed=$((failed + 1))
    fi
}

# 1. Twisted TLS client -> C TLS server requiring client certificates:
#    alice gets answers and the C server knows her subject before PB
#    starts; a client without a certificate is refused and the server goes
#    on serving the next one.
n=twisted-client.c-server
start_server $n "$bin/test_tls" --serve "$certs" --require
if [ -n "$port" ]; then
    timeout 30 "$PY" $here/tls_peer.py client "$certs" "$port" >"$tmp/$n.client" 2>&1
    timeout 30 "$PY" $here/tls_peer.py client "$certs" "$port" --no-cert >"$tmp/$n.nocert" 2>&1
    timeout 30 "$PY" $here/tls_peer.py client "$certs" "$port" >"$tmp/$n.again" 2>&1
fi
stop_server
check $n "server:listening on" "server:server: connection from CN=alice,O=libpb test" \
    "client:echo: hello over TLS" "client:add: 42" "client:whoami: CN=alice,O=libpb test" \
    "nocert:failed:" "nocert:!echo:" "again:whoami: CN=alice,O=libpb test"

# 2. C TLS client -> Twisted TLS server requiring client certificates.
n=c-client.twisted-server
start_server $n "$PY" $here/tls_peer.py server "$certs" --require
if [ -n "$port" ]; then
    timeout 30 "$bin/test_tls" --call "$port" "$certs" >"$tmp/$n.client" 2>&1
    timeout 30 "$bin/test_tls" --call "$port" "$certs" --no-cert >"$tmp/$n.nocert" 2>&1
    timeout 30 "$bin/test_tls" --call "$port" "$certs" --ca "$certs/other-ca.pem" >"$tmp/$n.badca" 2>&1
fi
stop_server
check $n "server:listening on" "server:server: whoami from CN=alice,O=libpb test" \
    "client:server certificate: CN=localhost,O=libpb test" "client:echo: hello over TLS" \
    "client:add: 42" "client:whoami: CN=alice,O=libpb test" \
    "nocert:failed: TLS handshake with 127.0.0.1:" "nocert:alert certificate required" \
    "badca:failed: TLS handshake with 127.0.0.1:" "badca:certificate verify failed"

# 3. Twisted TLS server without client certificates: a C client with no
#    certificate of its own is served (whoami: None).
n=c-client-nocert.twisted-server
start_server $n "$PY" $here/tls_peer.py server "$certs"
[ -n "$port" ] && timeout 30 "$bin/test_tls" --call "$port" "$certs" --no-cert >"$tmp/$n.client" 2>&1
stop_server
check $n "client:echo: hello over TLS" "client:add: 42" "client:whoami: None"

# 4. The examples' --tls flags against the docs' listings over TLS.
if [ -x "$bin/pb1server" ] && [ -f "$L/pb1client.py" ] && [ -f $here/tls_run_listing.py ]; then
    tlsargs="--tls --cert $certs/server.pem --key $certs/server.key --ca $certs/ca.pem"
    n=pb1.c-server-tls.twisted-client
    start_server $n "$bin/pb1server" --port 0 $tlsargs
    [ -n "$port" ] && timeout 10 "$PY" $here/tls_run_listing.py "$certs" "$L/pb1client.py" "$port" \
        >"$tmp/$n.client" 2>&1
    stop_server
    check $n "server:Two.three was given 12" "client:got second object:"
    n=pb1.twisted-server-tls.c-client
    start_server $n "$PY" $here/tls_run_listing.py "$certs" "$L/pb1server.py" 0
    [ -n "$port" ] && timeout 10 "$bin/pb1client" --port "$port" --tls --ca "$certs/ca.pem" \
        >"$tmp/$n.client" 2>&1
    stop_server
    check $n "server:Two.three was given 12" "client:got second object:"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
