# tests/interop/lib.sh - shell helpers sourced by tests/interop/test_*.sh
# (not a test itself: CMake runs test_*.sh only).
#
#   interop_init [TEMPLATE]  T: a fresh temporary directory (mktemp
#                            TEMPLATE, if given), removed on exit; PIDS:
#                            background processes, killed on exit (signal
#                            $INTEROP_KILL_SIGNAL, default TERM); an INT or
#                            TERM exits 1 (so the clean-up runs); pass and
#                            fail counters start at 0
#   ok NAME, bad NAME FILES-TO-SHOW..., check NAME CONDITION FILES-TO-SHOW...
#   has FILE TEXT            grep -F, quietly
#   wait_for FILE TEXT [TENTHS]   until TEXT is in FILE (default 10 s)
#   free_port                a free TCP port on 127.0.0.1 (needs $PY)
#   wait_port PORT           until 127.0.0.1:PORT accepts (10 s)

interop_cleanup() {
    for p in "${PIDS[@]}"; do kill -"${INTEROP_KILL_SIGNAL:-TERM}" "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$T"
}

interop_init() {
    T=$(mktemp -d ${1:+"$1"})
    PIDS=()
    trap interop_cleanup EXIT
    trap 'exit 1' INT TERM
    pass=0
    fail=0
}

ok() { echo "ok   $1"; pass=$((pass + 1)); }
bad() {
    echo "FAIL $1"
    shift
    for f in "$@"; do echo "  ---- $f"; tail -15 "$f" | sed 's/^/  | /'; done
    fail=$((fail + 1))
}
# check NAME CONDITION-COMMAND FILES-TO-SHOW...
check() {
    local name=$1 cond=$2
    shift 2
    if eval "$cond"; then ok "$name"; else bad "$name" "$@"; fi
}
has() { grep -qF -- "$2" "$1"; }
# wait_for FILE PATTERN [TENTHS]: until grep -F finds PATTERN in FILE
wait_for() {
    for _ in $(seq "${3:-100}"); do
        grep -qF -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
free_port() {
    $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() {
    for _ in $(seq 100); do
        (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
