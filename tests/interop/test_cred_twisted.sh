#!/bin/bash
# tests/interop/test_cred_twisted.sh BUILD_DIR
#
# Cred over PB against Twisted 22.4: every installed howto listing
# (pb5/pb6/pbAnon/chat) against its C counterpart, both ways round, then
# C against C chat and the chapter's attacks (cred_attacks.py) on the C
# chat server.  Listings run unmodified through cred_run_listing.py (port
# and credential types changed at run time only).  Loopback only; every
# background process is killed on exit.  Ends with "N passed, N failed".
set -u
BIN=${1:-build}/bin
PY=/usr/bin/python3
L=/usr/share/doc/twisted-doc/howto/listings/pb
HERE=$(cd "$(dirname "$0")" && pwd)
RUN="$PY -u $HERE/cred_run_listing.py"
. "$HERE/lib.sh"
interop_init

# c_server NAME PORT [ARGS...]: start build/bin/NAME, wait for "listening on"
c_server() {
    local name=$1 port=$2
    shift 2
    "$BIN/$name" --host 127.0.0.1 --port "$port" "$@" >"$T/$name.out" 2>&1 &
    SRV=$!
    PIDS+=("$SRV")
    wait_for "$T/$name.out" "listening on 127.0.0.1:$port" || echo "  ($name did not start)"
}
# tw_server LISTING PORT: start the Twisted listing, wait for its port
tw_server() {
    $RUN "$L/$1.py" --port "$2" >"$T/tw_$1.out" 2>&1 &
    SRV=$!
    PIDS+=("$SRV")
    wait_port "$2" || echo "  ($1.py did not start)"
}
# stop PID: SIGTERM, expect a clean exit; returns its status
stop() {
    kill -TERM "$1" 2>/dev/null
    local rc=0
    wait "$1" || rc=$?
    return $rc
}
tw_client() { # LISTING PORT [STOP_AFTER]: run a client listing, output in $T/tw_LISTING.out
    timeout 20 $RUN "$L/$1.py" --port "$2" ${3:+--stop-after "$3"} >"$T/tw_$1.out" 2>&1
}
c_client() { # NAME PORT [ARGS...]: output in $T/NAME.out / .err, status in $RC
    local name=$1 port=$2
    shift 2
    RC=0
    timeout 20 "$BIN/$name" --host 127.0.0.1 --port "$port" "$@" >"$T/$name.out" 2>"$T/$name.err" || RC=$?
}

for b in pb5server pb5client pb6server pb6client1 pb6client2 pbAnonServer pbAnonClient chatserver chatclient; do
    [ -x "$BIN/$b" ] || { echo "missing $BIN/$b"; exit 1; }
done

# ------------------------------------------------------------------ pb5
P=$(free_port)
c_server pb5server "$P"
tw_client pb5client "$P" 1.5
wait_for "$T/pb5server.out" "perspective_foo( 12 )" 30
check "twisted pb5client -> C pb5server" \
    'has $T/tw_pb5client.out "got perspective ref:" && has $T/pb5server.out "I am user1 perspective_foo( 12 ) called on"' \
    "$T/tw_pb5client.out" "$T/pb5server.out"
c_client pbAnonClient "$P"
check "C anonymous login -> C pb5server is UnhandledCredentials" \
    '[ $RC -ne 0 ] && has $T/pbAnonClient.err "twisted.cred.error.UnhandledCredentials: No checker for twisted.cred.credentials.IAnonymous"' \
    "$T/pbAnonClient.err"
stop "$SRV"
RCS=$?
check "C pb5server stops cleanly on SIGTERM" '[ $RCS -eq 0 ]' "$T/pb5server.out"

P=$(free_port)
tw_server pb5server "$P"
c_client pb5client "$P"
wait_for "$T/tw_pb5server.out" "perspective_foo( 12 )" 30
check "C pb5client -> twisted pb5server" \
    '[ $RC -eq 0 ] && has $T/pb5client.out "got perspective ref:" && has $T/pb5client.out "asking it to foo(12)" && has $T/tw_pb5server.out "perspective_foo( 12 ) called on"' \
    "$T/pb5client.out" "$T/pb5client.err" "$T/tw_pb5server.out"
stop "$SRV"

# ------------------------------------------------------------------ pb6
P=$(free_port)
c_server pb6server "$P"
tw_client pb6client1 "$P" 1.5
tw_client pb6client2 "$P" 1.5
wait_for "$T/pb6server.out" "perspective_foo( 14 )" 30
check "twisted pb6client1+2 -> C pb6server" \
    'has $T/pb6server.out "I am user1 perspective_foo( 13 )" && has $T/pb6server.out "I am user2 perspective_foo( 14 )" && has $T/tw_pb6client2.out "got perspective2 ref:"' \
    "$T/pb6server.out" "$T/tw_pb6client1.out" "$T/tw_pb6client2.out"
stop "$SRV"

P=$(free_port)
tw_server pb6server "$P"
c_client pb6client1 "$P"
RC1=$RC
c_client pb6client2 "$P"
wait_for "$T/tw_pb6server.out" "perspective_foo( 14 )" 30
check "C pb6client1+2 -> twisted pb6server" \
    '[ $RC1 -eq 0 ] && [ $RC -eq 0 ] && has $T/tw_pb6server.out "I am b'"'"'user1'"'"' perspective_foo( 13 )" && has $T/tw_pb6server.out "I am b'"'"'user2'"'"' perspective_foo( 14 )" && has $T/pb6client2.out "got perspective2 ref:"' \
    "$T/tw_pb6server.out" "$T/pb6client1.err" "$T/pb6client2.err"
stop "$SRV"

# --------------------------------------------------------------- pbAnon
P=$(free_port)
c_server pbAnonServer "$P"
tw_client pbAnonClient "$P"
RC=$?
check "twisted pbAnonClient -> C pbAnonServer" \
    '[ $RC -eq 0 ] && has $T/pbAnonServer.out "I am Anonymous.  perspective_foo(13)" && has $T/pbAnonServer.out "I am user1.  perspective_foo(13)"' \
    "$T/tw_pbAnonClient.out" "$T/pbAnonServer.out"
stop "$SRV"

P=$(free_port)
tw_server pbAnonServer "$P"
c_client pbAnonClient "$P"
wait_for "$T/tw_pbAnonServer.out" "I am b'user1'." 30
check "C pbAnonClient -> twisted pbAnonServer" \
    '[ $RC -eq 0 ] && [ $(grep -c "got perspective1 ref:" $T/pbAnonClient.out) -eq 2 ] && has $T/tw_pbAnonServer.out "I am Anonymous.  perspective_foo(13)" && has $T/tw_pbAnonServer.out "I am b'"'"'user1'"'"'.  perspective_foo(13)"' \
    "$T/pbAnonClient.out" "$T/pbAnonClient.err" "$T/tw_pbAnonServer.out"
stop "$SRV"

# ----------------------------------------------------------------- chat
P=$(free_port)
tw_server chatserver "$P"
c_client chatclient "$P" --message "hello from C"
check "C chatclient -> twisted chatserver" \
    '[ $RC -eq 0 ] && [ "$(cat $T/chatclient.out)" = "<b'"'"'alice'"'"'> says: hello from C" ]' \
    "$T/chatclient.out" "$T/chatclient.err" "$T/tw_chatserver.out"
c_client chatclient "$P" --password wrong --message "x"
check "C chatclient with a wrong password -> twisted chatserver fails cleanly" \
    '[ $RC -ne 0 ] && has $T/chatclient.err "twisted.cred.error.UnauthorizedLogin"' "$T/chatclient.err"
stop "$SRV"

P=$(free_port)
c_server chatserver "$P" --db "$T/chat.db"
tw_client chatclient "$P"
RC=$?
check "twisted chatclient -> C chatserver" \
    '[ $RC -eq 0 ] && has $T/tw_chatclient.out "<alice> says: You can call me Al."' \
    "$T/tw_chatclient.out" "$T/chatserver.out"

# C against C: carol listens on stdin, alice speaks, carol answers.
(sleep 2; echo "carol here"; sleep 0.5) | timeout 20 "$BIN/chatclient" --host 127.0.0.1 --port "$P" \
    --user carol --password fido >"$T/carol.out" 2>"$T/carol.err" &
CAROL=$!
PIDS+=("$CAROL")
wait_for "$T/carol.err" "joined group" 50
c_client chatclient "$P" --user alice --password 1234 --message "hi carol"
RC_A=$RC
RC_C=0
wait "$CAROL" || RC_C=$?
check "C chatclient -> C chatserver: alice and carol talk" \
    '[ $RC_A -eq 0 ] && [ $RC_C -eq 0 ] && has $T/chatclient.out "<alice> says: hi carol" && has $T/carol.out "<alice> says: hi carol" && has $T/carol.out "<carol> says: carol here"' \
    "$T/chatclient.out" "$T/chatclient.err" "$T/carol.out" "$T/carol.err"
c_client chatclient "$P" --user bob --password wrong --message "x"
check "C chatclient with a wrong password -> C chatserver fails cleanly" \
    '[ $RC -ne 0 ] && has $T/chatclient.err "twisted.cred.error.UnauthorizedLogin"' "$T/chatclient.err"
c_client chatclient "$P" --user bob --password secret --message "still serving"
check "C chatserver keeps serving after a failed login" '[ $RC -eq 0 ]' "$T/chatclient.err"

# The chapter's attacks, by a Twisted client.
$PY -u "$HERE/cred_attacks.py" --port "$P" >"$T/attacks.out" 2>&1
RC=$?
while read -r line; do
    case "$line" in
    "ok   "*) ok "attack: ${line#ok   }" ;;
    "FAIL "*) bad "attack: ${line#FAIL }" ;;
    esac
done <"$T/attacks.out"
check "attack script ran to the end" '[ $RC -eq 0 ] || grep -q "^FAIL" $T/attacks.out' "$T/attacks.out"
stop "$SRV"
RCS=$?
check "C chatserver stops cleanly on SIGTERM" '[ $RCS -eq 0 ]' "$T/chatserver.out"
P=$(free_port)
c_server chatserver "$P" --db "$T/chat.db"
c_client chatclient "$P" --user carol --password fido --message "the store persists"
check "C chatserver reopens its user store" '[ $RC -eq 0 ]' "$T/chatclient.err" "$T/chatserver.out"
stop "$SRV"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
