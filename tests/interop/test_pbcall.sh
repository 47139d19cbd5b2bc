#!/bin/bash
# tests/interop/test_pbcall.sh BUILD_DIR - tools/pbcall against C and Twisted servers.
#
# pbcall logs in (password file, PB_PASSWORD, anonymous) or calls the root,
# follows references across "--", prints answers as JSON or repr, listens on
# its mind, and keeps its exit-status promise: 0 done, 1 a call failed, 2
# connection or login failure, 3 usage error.  Servers: the C chatserver,
# pb5server, pbAnonServer and pb1server; Twisted's chatserver.py,
# pb5server.py (cred_run_listing.py) and pb1server.py (broker_run_listing.py);
# and a small Twisted echo root on TCP and on a UNIX socket for values,
# keywords, --bytes and --timeout.  Loopback only; every background process
# is killed on exit; every step is bounded by timeout.  Runs from the repo
# root (CMake does that).  Ends with "N passed, N failed".
set -u
BIN=${1:-build}/bin
PY=/usr/bin/python3
L=/usr/share/doc/twisted-doc/howto/listings/pb
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
interop_init
# port_of FILE: the port of the "listening on HOST:PORT" line in FILE
port_of() { sed -n 's/^listening on .*:\([0-9][0-9]*\)$/\1/p' "$1" | head -1; }

# c_server NAME [ARGS...]: start build/bin/NAME on a port it picks; sets PORT
c_server() {
    local name=$1
    shift
    "$BIN/$name" --host 127.0.0.1 --port 0 "$@" >"$T/$name.out" 2>&1 &
    PIDS+=("$!")
    wait_for "$T/$name.out" "listening on" || echo "  ($name did not start)"
    PORT=$(port_of "$T/$name.out")
}
# tw_cred LISTING: a Twisted cred listing on a free port; sets PORT
tw_cred() {
    PORT=$(free_port)
    $PY -u "$HERE/cred_run_listing.py" "$L/$1.py" --port "$PORT" >"$T/tw_$1.out" 2>&1 &
    PIDS+=("$!")
    wait_port "$PORT" || echo "  ($1.py did not start)"
}
# tw_root LISTING: a Twisted root-object listing on a port it picks; sets PORT
tw_root() {
    $PY -u "$HERE/broker_run_listing.py" "$L/$1.py" 0 >"$T/tw_$1.out" 2>&1 &
    PIDS+=("$!")
    wait_for "$T/tw_$1.out" "listening on" || echo "  ($1.py did not start)"
    PORT=$(port_of "$T/tw_$1.out")
}
# call NAME ARGS...: run pbcall, stdout in $T/NAME.out, stderr in $T/NAME.err, status in $RC
call() {
    local name=$1
    shift
    RC=0
    timeout 20 "$BIN/pbcall" "$@" </dev/null >"$T/$name.out" 2>"$T/$name.err" || RC=$?
    if grep -q -e 'Sanitizer' -e 'runtime error' "$T/$name.err"; then
        echo "  (sanitizer report in $name)"
        RC=99
    fi
}
out_is() { [ "$(cat "$T/$1.out")" = "$2" ]; }

for b in pbcall chatserver pb5server pbAnonServer pb1server; do
    [ -x "$BIN/$b" ] || { echo "missing $BIN/$b"; echo "0 passed, 1 failed"; exit 1; }
done
printf '1234\n' >"$T/alice.pw"
printf 'wrong\n' >"$T/wrong.pw"
printf 'pass1\n' >"$T/user1.pw"
H=127.0.0.1

# ------------------------------------------------------------ usage, no server
call help --help
check "--help prints the usage and exits 0" \
    '[ $RC -eq 0 ] && has $T/help.out "Usage: pbcall" && has $T/help.out "Exit status:"' "$T/help.out"
call nohost
check "no HOST:PORT is a usage error (3)" '[ $RC -eq 3 ] && has $T/nohost.err "HOST:PORT"' "$T/nohost.err"
call badopt --frobnicate $H:1 foo
check "an unknown option is a usage error (3)" '[ $RC -eq 3 ]' "$T/badopt.err"
call badjson $H:1 foo 'hello'
check "an invalid JSON argument exits 3 before connecting, naming the argument" \
    '[ $RC -eq 3 ] && has $T/badjson.err "foo: argument 1: invalid JSON hello"' "$T/badjson.err"
call badkw $H:1 foo 'x={'
check "an invalid JSON keyword value exits 3" '[ $RC -eq 3 ] && has $T/badkw.err "keyword argument x"' "$T/badkw.err"
call nomethod $H:1 foo 1 --
check "a trailing -- with no METHOD exits 3" '[ $RC -eq 3 ]' "$T/nomethod.err"
P=$(free_port)
call refused $H:"$P" foo
check "connection refused exits 2" '[ $RC -eq 2 ] && has $T/refused.err "refused"' "$T/refused.err"
call tls_unix --tls --unix "$T/x.sock" foo
check "--tls with --unix is a usage error (3)" '[ $RC -eq 3 ] && has $T/tls_unix.err "not with --unix"' "$T/tls_unix.err"
RC=0
timeout 10 setsid -w "$BIN/pbcall" --user alice $H:1 foo </dev/null >"$T/nopw.out" 2>"$T/nopw.err" || RC=$?
check "--user without a password source or terminal exits 3" \
    '[ $RC -eq 3 ] && has $T/nopw.err "no password"' "$T/nopw.err"

# ------------------------------------------------------------- C chatserver
c_server chatserver --db "$T/chat.db"
CP=$PORT
call c_join --user alice --password-file "$T/alice.pw" $H:"$CP" joinGroup '"#NeedAFourth"' -- send '"hello"'
check "C chat: alice joins #NeedAFourth, then send on the group she got back answers null" \
    '[ $RC -eq 0 ] && out_is c_join null' "$T/c_join.out" "$T/c_join.err"
call c_ref --user alice --password-file "$T/alice.pw" $H:"$CP" joinGroup '"#NeedAFourth"'
check "C chat: a reference answer prints as {\"\$repr\": ...}" \
    '[ $RC -eq 0 ] && out_is c_ref "{\"\$repr\":\"<RemoteReference>\"}"' "$T/c_ref.out" "$T/c_ref.err"
call c_wrong --user alice --password-file "$T/wrong.pw" $H:"$CP" joinGroup '"#NeedAFourth"'
check "C chat: wrong password exits 2 with UnauthorizedLogin" \
    '[ $RC -eq 2 ] && has $T/c_wrong.err "twisted.cred.error.UnauthorizedLogin" && [ ! -s $T/c_wrong.out ]' "$T/c_wrong.err"
PB_PASSWORD=1234 call c_mattress --user alice $H:"$CP" joinGroup '"#quiet"' allowMattress=false -- send '"my mattress"'
check "C chat: saying mattress in a group that forbids it exits 1 with ValueError (PB_PASSWORD)" \
    '[ $RC -eq 1 ] && has $T/c_mattress.err "builtins.ValueError: Don'"'"'t say that word"' "$T/c_mattress.err"
call c_nosuch --user alice --password-file "$T/alice.pw" $H:"$CP" leaveGroup '"#x"'
check "C chat: an unknown avatar method exits 1 with AttributeError" \
    '[ $RC -eq 1 ] && has $T/c_nosuch.err "builtins.AttributeError" && has $T/c_nosuch.err "perspective_leaveGroup"' "$T/c_nosuch.err"
call c_badtype --user alice --password-file "$T/alice.pw" $H:"$CP" joinGroup 12
check "C chat: a wrong argument type exits 1 with TypeError" \
    '[ $RC -eq 1 ] && has $T/c_badtype.err "builtins.TypeError"' "$T/c_badtype.err"
call c_notref --user alice --password-file "$T/alice.pw" $H:"$CP" joinGroup '"#x"' -- send '"a"' -- send '"b"'
check "C chat: following an answer that is not a reference exits 1" \
    '[ $RC -eq 1 ] && has $T/c_notref.err "not a reference"' "$T/c_notref.err"
call c_login_only --user alice --password-file "$T/alice.pw" $H:"$CP"
check "C chat: no METHOD only logs in, exits 0" '[ $RC -eq 0 ] && [ ! -s $T/c_login_only.out ]' "$T/c_login_only.err"

# --listen: bob listens in #NeedAFourth while carol speaks
RC_L=x
( PB_PASSWORD=secret timeout 20 "$BIN/pbcall" --user bob --listen-for 4 $H:"$CP" joinGroup '"#NeedAFourth"' \
    >"$T/listen.out" 2>"$T/listen.err"; echo $? >"$T/listen.rc" ) &
PIDS+=("$!")
wait_for "$T/listen.out" '{"$repr"' 50
PB_PASSWORD=fido call c_carol --user carol $H:"$CP" joinGroup '"#NeedAFourth"' -- send '"hi bob"'
wait_for "$T/listen.rc" "" 80
RC_L=$(cat "$T/listen.rc" 2>/dev/null)
check "C chat: --listen-for prints carol's message to bob's mind as a JSON line, exits 0" \
    '[ $RC -eq 0 ] && [ "$RC_L" = 0 ] && has $T/listen.out "{\"method\":\"print\",\"args\":[\"<carol> says: hi bob\"],\"kwargs\":{}}"' \
    "$T/listen.out" "$T/listen.err" "$T/chatserver.out"
# (no timeout(1) here: it would pass SIGINT on twice, to pbcall and to its group;
# the SIGINT below bounds it, and cleanup kills it if that fails)
PB_PASSWORD=secret "$BIN/pbcall" --user bob --listen --repr $H:"$CP" joinGroup '"#NeedAFourth"' \
    >"$T/listen2.out" 2>"$T/listen2.err" &
LP=$!
PIDS+=("$LP")
wait_for "$T/listen2.out" "<RemoteReference>" 50
PB_PASSWORD=fido call c_carol2 --user carol $H:"$CP" joinGroup '"#NeedAFourth"' -- send '"again"'
wait_for "$T/listen2.out" "again" 50
kill -INT "$LP"
RC_L=0
wait "$LP" || RC_L=$?
check "C chat: --listen --repr prints print('<carol> says: again',) and SIGINT exits 0 (got $RC_L)" \
    '[ $RC_L -eq 0 ] && has $T/listen2.out "print('"'"'<carol> says: again'"'"',)"' "$T/listen2.out" "$T/listen2.err"
# the server going away while listening is a connection failure
c_server chatserver --db "$T/chat2.db"
CP2=$PORT
CSRV=${PIDS[-1]}
PB_PASSWORD=1234 timeout 20 "$BIN/pbcall" --user alice --listen $H:"$CP2" joinGroup '"#x"' \
    >"$T/listen3.out" 2>"$T/listen3.err" &
LP=$!
wait_for "$T/listen3.out" "<RemoteReference>" 50
kill -TERM "$CSRV"
RC_L=0
wait "$LP" || RC_L=$?
check "--listen: the server closing exits 2" '[ $RC_L -eq 2 ]' "$T/listen3.err"

# ------------------------------------------------------------------ TLS
if command -v openssl >/dev/null; then
    (
        cd "$T" &&
            openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=pbcall-test-ca &&
            openssl req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr -subj /CN=localhost &&
            printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >srv.ext &&
            openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 2 -extfile srv.ext
    ) >"$T/openssl.log" 2>&1 || echo "  (openssl could not make certificates)"
    c_server chatserver --db "$T/tls.db" --tls --cert "$T/srv.pem" --key "$T/srv.key"
    TP=$PORT
    call tls_ok --ca "$T/ca.pem" --user alice --password-file "$T/alice.pw" \
        $H:"$TP" joinGroup '"#tls"' -- send '"secret plans"'
    check "TLS: --ca verifies the C chatserver's certificate; joinGroup -- send over TLS" \
        '[ $RC -eq 0 ] && out_is tls_ok null' "$T/tls_ok.out" "$T/tls_ok.err"
    call tls_noca --tls --user alice --password-file "$T/alice.pw" $H:"$TP" joinGroup '"#tls"'
    check "TLS: a server certificate the system CAs do not know exits 2 (verify failed)" \
        '[ $RC -eq 2 ] && has $T/tls_noca.err "certificate verify failed"' "$T/tls_noca.err"
    call tls_name --ca "$T/ca.pem" --server-name other.example --user alice --password-file "$T/alice.pw" \
        $H:"$TP" joinGroup '"#tls"'
    check "TLS: --server-name the certificate does not carry exits 2 (hostname mismatch)" \
        '[ $RC -eq 2 ] && has $T/tls_name.err "hostname mismatch"' "$T/tls_name.err"
    call tls_plain --timeout 1500 --user alice --password-file "$T/alice.pw" $H:"$TP" joinGroup '"#tls"'
    check "TLS: plain PB to a TLS server exits 2" '[ $RC -eq 2 ]' "$T/tls_plain.err"
else
    echo "note: no openssl command: TLS checks skipped"
fi

# ------------------------------------------------------ C pb5server, pbAnonServer, pb1server
c_server pb5server
call c_pb5 --user user1 --password-file "$T/user1.pw" $H:"$PORT" foo 12
wait_for "$T/pb5server.out" "perspective_foo( 12 )" 30
check "C pb5server: user1 foo(12) answers null, the server prints it" \
    '[ $RC -eq 0 ] && out_is c_pb5 null && has $T/pb5server.out "I am user1 perspective_foo( 12 )"' \
    "$T/c_pb5.out" "$T/c_pb5.err" "$T/pb5server.out"
call c_pb5_anon --anonymous $H:"$PORT" foo 12
check "C pb5server: anonymous login exits 2 with UnhandledCredentials" \
    '[ $RC -eq 2 ] && has $T/c_pb5_anon.err "UnhandledCredentials"' "$T/c_pb5_anon.err"
c_server pbAnonServer
call c_anon --anonymous $H:"$PORT" foo '"hi"'
wait_for "$T/pbAnonServer.out" "I am Anonymous" 30
check "C pbAnonServer: anonymous foo answers null as Anonymous" \
    '[ $RC -eq 0 ] && out_is c_anon null && has $T/pbAnonServer.out "I am Anonymous.  perspective_foo('"'"'hi'"'"')"' \
    "$T/c_anon.out" "$T/c_anon.err" "$T/pbAnonServer.out"
call c_anon_user --user-text --user user2 --password-file <(printf 'pass2') $H:"$PORT" foo '[1, 2.5, null]'
wait_for "$T/pbAnonServer.out" "I am user2" 30
check "C pbAnonServer: user2 (name sent as str, password without newline) foo([1, 2.5, None])" \
    '[ $RC -eq 0 ] && has $T/pbAnonServer.out "I am user2.  perspective_foo([1, 2.5, None])"' \
    "$T/c_anon_user.err" "$T/pbAnonServer.out"
c_server pb1server
call c_pb1 $H:"$PORT" getTwo -- three '"x"'
wait_for "$T/pb1server.out" "Two.three was given x" 30
check "C pb1server (no login): getTwo -- three follows the reference" \
    '[ $RC -eq 0 ] && out_is c_pb1 null && has $T/pb1server.out "Two.three was given x"' "$T/c_pb1.err" "$T/pb1server.out"
call c_pb1_nosuch $H:"$PORT" getThree
check "C pb1server: an unknown root method exits 1 with NoSuchMethod" \
    '[ $RC -eq 1 ] && has $T/c_pb1_nosuch.err "twisted.spread.flavors.NoSuchMethod: No such method: remote_getThree"' \
    "$T/c_pb1_nosuch.err"

# -------------------------------------------------------------- Twisted listings
tw_cred chatserver
call tw_join --user alice --password-file "$T/alice.pw" $H:"$PORT" joinGroup '"#NeedAFourth"' -- send '"hello"'
check "Twisted chatserver.py: alice joinGroup -- send answers null" \
    '[ $RC -eq 0 ] && out_is tw_join null' "$T/tw_join.out" "$T/tw_join.err" "$T/tw_chatserver.out"
call tw_mattress --user alice --password-file "$T/alice.pw" $H:"$PORT" joinGroup '"#q"' allowMattress=false -- send '"mattress"'
check "Twisted chatserver.py: mattress exits 1 with ValueError" \
    '[ $RC -eq 1 ] && has $T/tw_mattress.err "builtins.ValueError: Don'"'"'t say that word"' "$T/tw_mattress.err"
call tw_wrong --user alice --password-file "$T/wrong.pw" $H:"$PORT" joinGroup '"#q"'
check "Twisted chatserver.py: wrong password exits 2 with UnauthorizedLogin" \
    '[ $RC -eq 2 ] && has $T/tw_wrong.err "UnauthorizedLogin"' "$T/tw_wrong.err"
# (a fresh group: chatserver.py keeps logged-out users in their groups, and
# sending to one of them fails, so earlier logins must not be in it)
( PB_PASSWORD=secret timeout 20 "$BIN/pbcall" --user bob --listen-for 3 $H:"$PORT" joinGroup '"#listen"' \
    >"$T/tw_listen.out" 2>"$T/tw_listen.err"; echo $? >"$T/tw_listen.rc" ) &
PIDS+=("$!")
wait_for "$T/tw_listen.out" '{"$repr"' 50
PB_PASSWORD=fido call tw_carol --user carol $H:"$PORT" joinGroup '"#listen"' -- send '"hi from carol"'
wait_for "$T/tw_listen.rc" "" 80
check "Twisted chatserver.py: --listen receives carol's message" \
    '[ $RC -eq 0 ] && [ "$(cat $T/tw_listen.rc)" = 0 ] && has $T/tw_listen.out "says: hi from carol\"],\"kwargs\":{}}"' \
    "$T/tw_listen.out" "$T/tw_listen.err" "$T/tw_carol.err"

tw_cred pb5server
call tw_pb5 --user user1 --password-file "$T/user1.pw" $H:"$PORT" foo 12
wait_for "$T/tw_pb5server.out" "perspective_foo( 12 )" 30
check "Twisted pb5server.py: user1 foo(12) answers null" \
    '[ $RC -eq 0 ] && out_is tw_pb5 null && has $T/tw_pb5server.out "perspective_foo( 12 ) called on"' \
    "$T/tw_pb5.err" "$T/tw_pb5server.out"
call tw_pb5_nosuch --user user1 --password-file "$T/user1.pw" $H:"$PORT" bar
check "Twisted pb5server.py: an unknown method exits 1 with AttributeError" \
    '[ $RC -eq 1 ] && has $T/tw_pb5_nosuch.err "builtins.AttributeError" && has $T/tw_pb5_nosuch.err "perspective_bar"' \
    "$T/tw_pb5_nosuch.err"

tw_root pb1server
call tw_pb1 $H:"$PORT" getTwo -- three '{"k": [1, "two"]}'
wait_for "$T/tw_pb1server.out" "Two.three was given" 30
check "Twisted pb1server.py (no login): getTwo -- three({'k': [1, 'two']})" \
    '[ $RC -eq 0 ] && out_is tw_pb1 null && has $T/tw_pb1server.out "Two.three was given {'"'"'k'"'"': [1, '"'"'two'"'"']}"' \
    "$T/tw_pb1.err" "$T/tw_pb1server.out"
call tw_pb1_nosuch $H:"$PORT" getTwo -- four
check "Twisted pb1server.py: an unknown method on the followed reference exits 1 with NoSuchMethod" \
    '[ $RC -eq 1 ] && has $T/tw_pb1_nosuch.err "four failed: twisted.spread.flavors.NoSuchMethod"' "$T/tw_pb1_nosuch.err"

# ------------------------------------- a Twisted echo root: values, keywords, UNIX sockets
cat >"$T/echo.py" <<'EOF'
import sys
from twisted.internet import defer, reactor
from twisted.spread import pb
sys.stdout.reconfigure(line_buffering=True)
class Echo(pb.Root):
    def remote_echo(self, *args, **kw):
        return [list(args), kw]
    def remote_types(self, *args):
        return [type(a).__name__ for a in args]
    def remote_hang(self):
        return defer.Deferred()
    def remote_big(self):
        return (2**70, b"\xff\x00", "caf\u00e9", None, {1: 2}, (True, 1.5))
p = reactor.listenTCP(0, pb.PBServerFactory(Echo()), interface="127.0.0.1")
reactor.listenUNIX(sys.argv[1], pb.PBServerFactory(Echo()))
print("listening on 127.0.0.1:%d" % p.getHost().port)
reactor.run()
EOF
$PY -u "$T/echo.py" "$T/echo.sock" >"$T/echo.out" 2>&1 &
PIDS+=("$!")
wait_for "$T/echo.out" "listening on" 100
EP=$(port_of "$T/echo.out")
call e_echo $H:"$EP" echo 1 '"two"' '[3]' 'k=true' '_x2={"a": null}'
check "echo: positional and keyword arguments round-trip as JSON" \
    '[ $RC -eq 0 ] && out_is e_echo "[[1,\"two\",[3]],{\"k\":true,\"_x2\":{\"a\":null}}]"' "$T/e_echo.out" "$T/e_echo.err"
call e_types $H:"$EP" types '"s"' '{"$bytes": "AAE="}' 123456789012345678901234567890 1.5
check "echo: str, {\"\$bytes\"}, big int and float arrive as str, bytes, int, float" \
    '[ $RC -eq 0 ] && out_is e_types "[\"str\",\"bytes\",\"int\",\"float\"]"' "$T/e_types.out" "$T/e_types.err"
call e_bytes --bytes $H:"$EP" types '"s"' '["t"]'
call e_bytes2 --bytes $H:"$EP" echo '"s"'
check "echo: --bytes sends JSON strings as bytes" \
    '[ $RC -eq 0 ] && out_is e_bytes "[\"bytes\",\"list\"]" && out_is e_bytes2 "[[\"s\"],{}]"' "$T/e_bytes.out" "$T/e_bytes.err"
call e_big $H:"$EP" big
check "echo: answer with big int, non-UTF-8 bytes, non-ASCII str, non-str dict keys as JSON" \
    '[ $RC -eq 0 ] && out_is e_big "[1180591620717411303424,{\"\$bytes\":\"/wA=\"},\"café\",null,[[1,2]],[true,1.5]]"' \
    "$T/e_big.out" "$T/e_big.err"
call e_repr --repr $H:"$EP" big
check "echo: --repr prints the answer Python-style" \
    '[ $RC -eq 0 ] && out_is e_repr "(1180591620717411303424, b'"'"'\\xff\\x00'"'"', '"'"'café'"'"', None, {1: 2}, (True, 1.5))"' \
    "$T/e_repr.out" "$T/e_repr.err"
call e_timeout --timeout 300 $H:"$EP" hang
check "echo: --timeout 300 on a call that never answers exits 1 with TimeoutError" \
    '[ $RC -eq 1 ] && has $T/e_timeout.err "TimeoutError"' "$T/e_timeout.err"
call e_unix --unix "$T/echo.sock" echo '"over unix"'
check "echo: --unix PATH calls over a UNIX socket" \
    '[ $RC -eq 0 ] && out_is e_unix "[[\"over unix\"],{}]"' "$T/e_unix.out" "$T/e_unix.err"
call e_unix_missing --unix "$T/nothing.sock" echo 1
check "--unix to a missing socket exits 2" '[ $RC -eq 2 ]' "$T/e_unix_missing.err"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
