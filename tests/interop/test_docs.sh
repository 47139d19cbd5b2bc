#!/bin/bash
# test_docs.sh BUILD_DIR - the public API is fully documented: runs
# scripts/docs.sh, which builds the doxygen reference into BUILD_DIR/docs and
# fails listing every undocumented public symbol in include/pb/*.h.
# Runs from the repo root (CMake does that).  Ends with "N passed, N failed".
set -u
BUILD=${1:-build}
if bash scripts/docs.sh "$BUILD"; then
    echo "1 passed, 0 failed"
    exit 0
fi
echo "0 passed, 1 failed"
exit 1
