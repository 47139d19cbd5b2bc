#!/usr/bin/env bash
# test_broker_twisted.sh BUILD_DIR - the docs' PB listings against their C
# counterparts, both ways: each Twisted server listing (run unchanged by
# broker_run_listing.py, on a free port) is driven by the C client, and
# each C server by the Twisted client listing; then the C pair alone.
# Assertions are on what each side prints.  Ends with "N passed, N failed".
set -u
build=${1:-build}
bin=$build/bin
PY=/usr/bin/python3
L=/usr/share/doc/twisted-doc/howto/listings/pb
RUN=tests/interop/broker_run_listing.py
. "$(dirname "$0")/lib.sh"
interop_init /tmp/pb-interop.XXXXXX
tmp=$T
passed=0
failed=0

for need in "$PY" "$L/pb1server.py" "$bin/pb1server"; do
    if [ ! -e "$need" ]; then
        echo "missing $need"
        echo "0 passed, 1 failed"
        exit 1
    fi
done

srv_c() { echo "$bin/$1 --port 0"; }
srv_py() { echo "$PY $RUN $L/$1.py 0"; }
cli_c() { echo "$bin/$1 --port PORT"; }
cli_py() { echo "$PY $RUN $L/$1.py PORT"; }

# all_seen FILE-PREFIX EXPECT... : every S:/C: expectation is in the output
all_seen() {
    local dir=$1
    shift
    local e
    for e in "$@"; do
        case $e in
        S:*) grep -qF -- "${e#S:}" "$dir.server" || return 1 ;;
        C:*) grep -qF -- "${e#C:}" "$dir.client" || return 1 ;;
        esac
    done
    return 0
}

# pair NAME SERVER_CMD CLIENT_CMD EXPECT...
pair() {
    local name=$1 scmd=$2 ccmd=$3
    shift 3
    local out=$tmp/$name port="" sp cp i why=""
    : >"$out.client"
    timeout 30 $scmd >"$out.server" 2>&1 &
    sp=$!
    PIDS+=("$sp")
    for i in $(seq 100); do
        port=$(sed -n 's/.*listening on .*:\([0-9][0-9]*\).*/\1/p' "$out.server" | head -n1)
        [ -n "$port" ] && break
        kill -0 "$sp" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$port" ]; then
        why="server did not start"
    else
        timeout 20 ${ccmd//PORT/$port} >"$out.client" 2>&1 &
        cp=$!
        PIDS+=("$cp")
        # Twisted's pb1..pb3 clients never exit: wait for what must be seen.
        for i in $(seq 150); do
            all_seen "$out" "$@" && break
            kill -0 "$cp" 2>/dev/null || { sleep 0.3; all_seen "$out" "$@"; break; }
            sleep 0.1
        done
        all_seen "$out" "$@" || why="expected output missing"
        kill "$cp" 2>/dev/null
        wait "$cp" 2>/dev/null
    fi
    kill "$sp" 2>/dev/null
    wait "$sp" 2>/dev/null
    # C programs built with -DPB_SANITIZE=ON report here (leaks at exit too)
    if [ -z "$why" ] && grep -qE "Sanitizer|runtime error:" "$out.server" "$out.client"; then
        why="sanitizer report"
    fi
    if [ -z "$why" ]; then
        echo "ok   $name"
        passed=$((passed + 1))
    else
        echo "FAIL $name: $why"
        local e
        for e in "$@"; do
            case $e in
            S:*) grep -qF -- "${e#S:}" "$out.server" || echo "  server lacks: ${e#S:}" ;;
            C:*) grep -qF -- "${e#C:}" "$out.client" || echo "  client lacks: ${e#C:}" ;;
            esac
        done
        echo "  --- server ($scmd):"
        sed 's/^/  | /' "$out.server" | head -n 40
        echo "  --- client ($ccmd):"
        sed 's/^/  | /' "$out.client" | head -n 40
        failed=$((failed + 1))
    fi
}

# every listing three ways: Twisted server + C client, C server + Twisted
# client, C server + C client
three_ways() {
    local name=$1 server=$2 client=$3
    shift 3
    pair "$name.twisted-server.c-client" "$(srv_py "$server")" "$(cli_c "$client")" "$@"
    pair "$name.c-server.twisted-client" "$(srv_c "$server")" "$(cli_py "$client")" "$@"
    pair "$name.c-server.c-client" "$(srv_c "$server")" "$(cli_c "$client")" "$@"
}

three_ways pb1 pb1server pb1client \
    "S:returning a Two called" "S:Two.three was given 12" \
    "C:got first object:" "C:asking it to getTwo" "C:got second object:" \
    "C:telling it to do three(12)"

three_ways pb2 pb2server pb2client \
    "S:One.getTwo(), returning my two called" "S:One.checkTwo(): comparing my two" \
    "S:One.checkTwo(): against your two" "S:One.checkTwo(): our twos are the same" \
    "C:got one object:" "C:got two object:" "C:giving it back to one"

three_ways pb3 pb3server pb3client \
    "S:received a Two called" "S:telling it to print(12)" \
    "C:got One:" "C:giving it our two" "C:Two.print() called with 12"

three_ways exc exc_server exc_client \
    "S:raising a MyError exception with data 'fall down go boom'" \
    "C:got remote Exception" "C: .__class__ = <class 'twisted.spread.pb.CopiedFailure'>" \
    "C: .getErrorMessage() = fall down go boom" "C: .type = b'__main__.MyError'"

three_ways trap trap_server trap_client \
    "C:callOne: call with safe object" "C: method successful, response: response" \
    "C:callTwo: call with dangerous object" \
    "C:callThree: call that raises remote exception" "C: remote raised a MyException" \
    "C:telling them to shut down" "C:callFour: call on stale reference" \
    "C: stale reference: the client disconnected or crashed"

if [ -x "$bin/copy2_receiver" ] && [ -x "$bin/copy2_sender" ]; then
    three_ways copy2 copy2_receiver copy2_sender \
        "S: got pond:" "S: count 7" "C:count 7" "C:pond arrived safe and sound"
fi

# Cacheable / RemoteCache: the receiver's cache follows every change the
# sender makes, and dropping it reaches the sender (decache / uncache).
if [ -x "$bin/cache_receiver" ] && [ -x "$bin/cache_sender" ]; then
    three_ways cache cache_receiver cache_sender \
        "S: cache - sitting, er, setting ducks" "S:got pond: <cache_classes.SlaveDuckPond object at" \
        "S:[2] ducks:  ['one duck', 'two duck']" "S: cache - addDuck" \
        "S:[3] ducks:  ['one duck', 'two duck', 'ugly duckling']" "S: cache - removeDuck" \
        "S:[2] ducks:  ['two duck', 'ugly duckling']" "S:dropping pond" \
        "C:I have [2] ducks" "C:I have [3] ducks"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
