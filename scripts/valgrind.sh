#!/usr/bin/env bash
# scripts/valgrind.sh [BUILD_DIR] - every unit test under valgrind's
# memcheck: any invalid read or write, use of uninitialised memory, or
# definite/indirect leak fails the test.  (test_alloc_steady interposes
# malloc itself, and test_soak only launches the interop soak: both are
# left out.)  Ends with "N passed, N failed"; exit 0 only if none failed.
set -u
cd "$(dirname "$0")/.."
build=${1:-build}
command -v valgrind >/dev/null || { echo "valgrind missing: apt-get install -y valgrind" >&2; exit 1; }
pass=0 fail=0
for t in "$build"/bin/test_*; do
    n=$(basename "$t")
    case $n in test_alloc_steady | test_soak) continue ;; esac
    log=$(mktemp)
    if timeout 600 valgrind -q --error-exitcode=99 --leak-check=full \
        --errors-for-leak-kinds=definite,indirect "$t" >"$log" 2>&1; then
        pass=$((pass + 1))
        echo "ok   $n ($(tail -n1 "$log"))"
    else
        fail=$((fail + 1))
        echo "FAIL $n"
        tail -n 40 "$log"
    fi
    rm -f "$log"
done
echo "valgrind: $pass passed, $fail failed"
[ "$fail" = 0 ]
