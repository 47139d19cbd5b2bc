#!/usr/bin/env bash
# Build libpb's API reference with doxygen and check that every public
# symbol in include/pb/*.h is documented.
#
# Usage: scripts/docs.sh [build-dir]     (default: build)
#   Output: BUILD/docs/html/index.html; doxygen's warnings in
#   BUILD/docs/warnings.log.  Independent of CMake; needs the Debian package
#   doxygen (scripts/deps.sh installs it).
# Exit status 0 when the reference built without a single warning; 1 when a
# header lacks its @file comment (doxygen would then skip its functions
# without a word), or doxygen warned: the undocumented public symbols and
# any malformed comments are listed, one per line, as FILE:LINE: WHAT.
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}

if ! command -v doxygen >/dev/null 2>&1; then
    scripts/deps.sh || exit 1
    command -v doxygen >/dev/null 2>&1 || { echo "docs: doxygen is not installed" >&2; exit 1; }
fi

mkdir -p "$build/docs" || exit 1
out=$(cd "$build/docs" && pwd)
export PB_DOCS_OUT="$out"
log="$out/warnings.log"
rm -f "$log"
root=$(pwd)

status=0
nofile=()
for h in include/pb/*.h; do
    grep -Eq '[@\\]file\b' "$h" || nofile+=("$h")
done
if [ ${#nofile[@]} -gt 0 ]; then
    echo "docs: headers without a /** @file ... */ comment (doxygen ignores their functions):"
    printf '  %s\n' "${nofile[@]}"
    status=1
fi

doxygen docs/Doxyfile >"$out/doxygen.out" 2>&1
rc=$?
if [ "$rc" -ne 0 ] && [ ! -s "$log" ]; then
    echo "docs: doxygen failed (exit status $rc):"
    sed 's/^/  /' "$out/doxygen.out"
    exit 1
fi

if [ -s "$log" ]; then
    # FILE:LINE: error: TEXT  ->  FILE:LINE: TEXT, with repo-relative paths
    clean=$(sed -e "s|^$root/||" -e 's/: \(error\|warning\): /: /' "$log")
    undoc=$(printf '%s\n' "$clean" | grep 'is not documented' || true)
    other=$(printf '%s\n' "$clean" | grep -v 'is not documented' || true)
    if [ -n "$undoc" ]; then
        echo "docs: $(printf '%s\n' "$undoc" | wc -l) undocumented public symbols:"
        printf '%s\n' "$undoc" | sed -e 's/^/  /' -e 's/ is not documented\.$//' | sort -t: -k1,1 -k2,2n
    fi
    if [ -n "$other" ]; then
        echo "docs: other documentation warnings:"
        printf '%s\n' "$other" | sed 's/^/  /'
    fi
    status=1
elif [ "$rc" -ne 0 ]; then
    echo "docs: doxygen exited with status $rc"
    status=1
fi

if [ "$status" -eq 0 ]; then
    echo "docs: API reference in $out/html/index.html ($(ls include/pb/*.h | wc -l) headers, every public symbol documented)"
fi
exit "$status"
