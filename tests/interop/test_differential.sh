#!/bin/bash
# test_differential.sh BUILD_DIR - libpb's codec against real Twisted 22.4.
#
# Thousands of random values (ints of every size up to 2**448-1, floats
# incl. inf/nan/-0.0, bytes, non-ASCII text, lists, tuples, dicts, sets,
# instances, dates, decimals, shared and cyclic structures) go both ways:
#   py2c: Twisted jellies + banana-encodes; build/bin/pbcodec decodes,
#         unjellies, re-jellies: the bytes must be Twisted's exactly and the
#         decoded graph must be the one Python sent.
#   c2py: pbcodec generates and encodes; Twisted decodes: the graph must be
#         the one C describes, and Twisted's re-encoding C's bytes.
# Runs from the repo root (CMake does that); needs /usr/bin/python3 with
# Twisted.  Ends with "N passed, N failed" (N = values checked).
set -u
BUILD=${1:-build}
PY=/usr/bin/python3
PBCODEC="$BUILD/bin/pbcodec"
HERE=$(dirname "$0")
COUNT=${PB_DIFF_COUNT:-4000}

if [ ! -x "$PBCODEC" ]; then
    echo "missing $PBCODEC (build the 'pbcodec' target)"
    echo "0 passed, 1 failed"
    exit 1
fi

passed=0
failed=0
run() {
    local out rc p f
    out=$("$PY" "$HERE/diff_values.py" "$@" 2>&1)
    rc=$?
    printf '%s\n' "$out" | grep -v '^PASSED='
    p=$(printf '%s\n' "$out" | sed -n 's/^PASSED=\([0-9]*\) FAILED=\([0-9]*\)$/\1/p')
    f=$(printf '%s\n' "$out" | sed -n 's/^PASSED=\([0-9]*\) FAILED=\([0-9]*\)$/\2/p')
    if [ -z "$p" ]; then # the script itself broke
        p=0
        f=1
    elif [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1
    fi
    passed=$((passed + p))
    failed=$((failed + f))
}

run py2c "$PBCODEC" 20261204 "$COUNT"
run c2py "$PBCODEC" 20261204 "$COUNT"
run py2c "$PBCODEC" 7 $((COUNT / 5)) --none
run c2py "$PBCODEC" 7 $((COUNT / 5)) --none

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
