#!/usr/bin/env bash
# pbworker against a real Buildbot master (Debian's buildbot 3.7).
#
#   tests/interop/test_buildbot.sh BUILD_DIR
#
# One master (apps/buildbot-worker/test/master.cfg, loopback, free port,
# sqlite in a temp dir) with two workers running the same builds at once:
# "py" = Debian's buildbot-worker, "c" = pbworker.  Every step's result,
# state string and log text must match (tests/interop/buildbot_compare.py
# reads the master's database), and so must the files uploaded to the
# master.  Then the master is restarted: pbworker must reconnect and run the
# next build; finally SIGHUP makes it shut down gracefully through the
# master (exit 0).  Last, a second master listens with TLS (twisted
# "ssl:" strports, certificates from `test_tls --make-certs`) and pings its
# workers every second; pbworker connects with --tls/--ca/--server-name and
# --keepalive 1, runs two builds, and its log must show keepalives both
# ways (the master's "print" and the answers to its own "keepalive").
# Every process is started here, bounded by `timeout`,
# and stopped by PID on exit.  Ends with "N passed, N failed".
set -u
BUILD=${1:-build}
BUILD=$(cd "$BUILD" && pwd)
REPO=$(pwd)
PBW=$BUILD/bin/pbworker
PY=/usr/bin/python3
PASS=0
FAIL=0
ok() { PASS=$((PASS + 1)); echo "ok   $*"; }
bad() { FAIL=$((FAIL + 1)); echo "FAIL $*"; }
finish() { echo "buildbot: $PASS passed, $FAIL failed"; [ "$FAIL" = 0 ]; exit $?; }

for tool in buildbot buildbot-worker; do
    command -v $tool >/dev/null || { bad "$tool is not installed (scripts/deps.sh installs it)"; finish; }
done
[ -x "$PBW" ] || { bad "no $PBW"; finish; }

WORK=$(mktemp -d /tmp/pbworker-test.XXXXXX)
MT= ; WPY= ; WC=
alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }
stop_pid() {  # TERM, wait up to 10 s, then KILL
    local pid=$1 i
    alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null
    for i in $(seq 100); do alive "$pid" || break; sleep 0.1; done
    alive "$pid" && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 0
}
cleanup() {
    stop_pid "$WC"; stop_pid "$WPY"; stop_pid "$MT"
    if [ "$FAIL" != 0 ] || [ -n "${KEEP:-}" ]; then echo "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

CLEAN_ENV=(env -i PATH=/usr/bin:/bin HOME="$WORK" LANG=C.UTF-8 TZ=UTC)
PORT=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$WORK/out/py" "$WORK/out/c"

wait_for() {  # wait_for SECONDS FILE NEEDLE
    local end=$((SECONDS + $1))
    while [ $SECONDS -lt $end ]; do
        grep -q -- "$3" "$2" 2>/dev/null && return 0
        sleep 0.2
    done
    return 1
}
builds_done() {  # builds_done [BUILDER NUMBER]: number of completed builds (or 0/1 for one)
    $PY - "$WORK/${MDIR:-master}/state.sqlite" "$@" <<'PYEOF'
import sqlite3, sys
try:
    c = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True, timeout=2)
    if len(sys.argv) > 2:
        q = ("select count(*) from builds b join builders bu on bu.id=b.builderid "
             "where bu.name=? and b.number=? and b.complete_at is not null")
        print(c.execute(q, (sys.argv[2], int(sys.argv[3]))).fetchone()[0])
    else:
        print(c.execute("select count(*) from builds where complete_at is not null").fetchone()[0])
except Exception:
    print(0)
PYEOF
}
start_master() {  # start_master SCHED BUILDERS
    : >"$WORK/master/twistd.log"
    timeout --foreground 170 "${CLEAN_ENV[@]}" BB_PB_PORT="$PORT" BB_OUT="$WORK/out" \
        BB_SCHED="$1" BB_SCHED_BUILDERS="$2" \
        buildbot start --nodaemon "$WORK/master" </dev/null >>"$WORK/master.out" 2>&1 &
    MT=$!
    wait_for 60 "$WORK/master/twistd.log" "BuildMaster is running"
}

# 1. the master and the two workers
"${CLEAN_ENV[@]}" buildbot create-master -q -r "$WORK/master" >/dev/null 2>&1 \
    || { bad "buildbot create-master"; finish; }
cp "$REPO/apps/buildbot-worker/test/master.cfg" "$WORK/master/master.cfg"
"${CLEAN_ENV[@]}" buildbot-worker create-worker -q -r --keepalive=4 --allow-shutdown=signal \
    "$WORK/wpy" "127.0.0.1:$PORT" py pass-py >/dev/null 2>&1 || { bad "create-worker"; finish; }
echo "pass-c" >"$WORK/c.pw"
mkdir -p "$WORK/wc"

if start_master at-startup py-b1,py-b2,c-b1,c-b2; then ok "master started on 127.0.0.1:$PORT"
else bad "master did not start"; tail -30 "$WORK/master/twistd.log"; finish; fi

timeout --foreground 150 "${CLEAN_ENV[@]}" buildbot-worker start --nodaemon "$WORK/wpy" \
    </dev/null >"$WORK/wpy.out" 2>&1 &
WPY=$!
timeout --foreground 150 "${CLEAN_ENV[@]}" "$PBW" --master "127.0.0.1:$PORT" --name c \
    --password-file "$WORK/c.pw" --basedir "$WORK/wc" --keepalive 4 \
    </dev/null >"$WORK/wc.out" 2>&1 &
WC=$!

# 2. both workers run b1 and b2
end=$((SECONDS + 90))
while [ $SECONDS -lt $end ] && [ "$(builds_done)" -lt 4 ]; do sleep 0.5; done
n=$(builds_done)
if [ "$n" -ge 4 ]; then ok "4 builds completed"; else bad "only $n of 4 builds completed"; fi

# 3. compare step by step
$PY "$REPO/tests/interop/buildbot_compare.py" "$WORK/master/state.sqlite" "$WORK" >"$WORK/compare.out" 2>&1
cat "$WORK/compare.out"
line=$(grep '^compare: ' "$WORK/compare.out" | tail -1)
p=$(echo "$line" | sed -n 's/^compare: \([0-9]*\) passed, \([0-9]*\) failed/\1/p')
f=$(echo "$line" | sed -n 's/^compare: \([0-9]*\) passed, \([0-9]*\) failed/\2/p')
[ -n "$p" ] || { p=0; f=1; }
PASS=$((PASS + p)); FAIL=$((FAIL + f))

grep -q "keepalive" "$WORK/wc.out" 2>/dev/null; \
    grep -q "error sending keepalive" "$WORK/wc.out" && bad "pbworker keepalive errors" || ok "pbworker keepalives answered"

# 4. the Python worker leaves; the master restarts; pbworker reconnects
kill -HUP "$WPY" 2>/dev/null
end=$((SECONDS + 15)); while [ $SECONDS -lt $end ] && alive "$WPY"; do sleep 0.2; done
alive "$WPY" && bad "python worker did not shut down" || ok "python worker shut down (SIGHUP)"
stop_pid "$MT"
alive "$WC" && ok "pbworker survives the master going away" || bad "pbworker exited with the master"
sleep 1
if start_master after-restart c-b2; then ok "master restarted"; else bad "master did not restart"; fi
end=$((SECONDS + 60))
while [ $SECONDS -lt $end ] && [ "$(builds_done c-b2 2)" -lt 1 ]; do sleep 0.5; done
if [ "$(builds_done c-b2 2)" = 1 ]; then
    res=$($PY -c "
import sqlite3,sys
c=sqlite3.connect('$WORK/master/state.sqlite')
print(c.execute(\"select b.results from builds b join builders bu on bu.id=b.builderid where bu.name='c-b2' and b.number=2\").fetchone()[0])")
    [ "$res" = 0 ] && ok "pbworker reconnected and ran build c-b2 #2 (SUCCESS)" \
        || bad "build c-b2 #2 after reconnect: result $res"
else
    bad "no build c-b2 #2 after the master restart"; tail -20 "$WORK/wc.out"
fi
grep -q "lost connection to master" "$WORK/wc.out" && ok "pbworker saw the connection go" \
    || bad "pbworker did not notice the lost connection"

# 5. graceful shutdown through the master
kill -HUP "$WC" 2>/dev/null
end=$((SECONDS + 15)); while [ $SECONDS -lt $end ] && alive "$WC"; do sleep 0.2; done
if alive "$WC"; then bad "pbworker did not shut down on SIGHUP"
else
    wait "$WC"; rc=$?
    [ $rc = 0 ] && ok "pbworker graceful shutdown (exit 0)" || bad "pbworker exit status $rc"
    WC=
fi
grep -q "worker shutting down on command from master" "$WORK/wc.out" \
    && ok "master asked pbworker to shut down" || bad "no shutdown call from the master"

# 6. TLS master with 1 s keepalives; pbworker with --tls, the CA and 1 s keepalives
stop_pid "$MT"; MT=
if "$BUILD/bin/test_tls" --make-certs "$WORK/certs" >"$WORK/certs.out" 2>&1; then
    ok "test certificates made"
else
    bad "test_tls --make-certs"; cat "$WORK/certs.out"
fi
TPORT=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
MDIR=mtls
"${CLEAN_ENV[@]}" buildbot create-master -q -r "$WORK/mtls" >/dev/null 2>&1 || bad "create-master (TLS)"
cp "$REPO/apps/buildbot-worker/test/master.cfg" "$WORK/mtls/master.cfg"
timeout --foreground 60 "${CLEAN_ENV[@]}" BB_PB_PORT="$TPORT" BB_OUT="$WORK/out" \
    BB_SCHED=at-startup BB_SCHED_BUILDERS=c-b2,c-ka BB_TLS_DIR="$WORK/certs" BB_KEEPALIVE=1 \
    buildbot start --nodaemon "$WORK/mtls" </dev/null >>"$WORK/mtls.out" 2>&1 &
MT=$!
if wait_for 60 "$WORK/mtls/twistd.log" "BuildMaster is running"; then
    ok "TLS master started on 127.0.0.1:$TPORT"
else
    bad "TLS master did not start"; tail -30 "$WORK/mtls/twistd.log"
fi
timeout --foreground 50 "${CLEAN_ENV[@]}" "$PBW" --master "127.0.0.1:$TPORT" --name c \
    --password-file "$WORK/c.pw" --basedir "$WORK/wc" --keepalive 1 --verbose \
    --tls --ca "$WORK/certs/ca.pem" --server-name localhost \
    </dev/null >"$WORK/wctls.out" 2>&1 &
WC=$!
end=$((SECONDS + 40))
while [ $SECONDS -lt $end ] && [ "$(builds_done)" -lt 2 ]; do sleep 0.5; done
res=$($PY -c "
import sqlite3
c=sqlite3.connect('$WORK/mtls/state.sqlite')
print(' '.join('%s=%s' % r for r in c.execute(\"select bu.name, b.results from builds b join builders bu on bu.id=b.builderid where b.complete_at is not null order by bu.name\")))" 2>&1)
[ "$res" = "c-b2=0 c-ka=0" ] && ok "pbworker over TLS ran c-b2 and c-ka (SUCCESS)" \
    || { bad "builds over TLS: '$res'"; tail -20 "$WORK/wctls.out"; }
km=$(grep -c "message from master: keepalive" "$WORK/wctls.out")
kw=$(grep -c "Master replied to keepalive, everything's fine" "$WORK/wctls.out")
[ "$km" -ge 3 ] && ok "master->worker keepalives over TLS ($km)" \
    || bad "only $km master->worker keepalives"
[ "$kw" -ge 3 ] && ok "worker->master keepalives answered over TLS ($kw)" \
    || bad "only $kw worker->master keepalives answered"
if [ "$km" = 0 ] || grep -E "error sending keepalive|lost connection to master" "$WORK/wctls.out"; then
    bad "keepalive errors or a lost connection on the TLS connection"
else
    ok "no keepalive failures or disconnects over TLS"
fi
if grep -E "^\S+ \S+ \[-\] Unhandled|Traceback" "$WORK/mtls/twistd.log" | head -5 | grep .; then
    bad "errors in the TLS master's log"
else
    ok "TLS master's log has no tracebacks"
fi
stop_pid "$WC"; WC=
stop_pid "$MT"; MT=

if grep -E "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:" "$WORK/wc.out" "$WORK/wctls.out"; then
    bad "sanitizer reports in pbworker's log"
else
    ok "no sanitizer reports"
fi
finish
