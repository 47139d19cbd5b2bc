#!/bin/bash
# tests/interop/test_manpages.sh BUILD_DIR - every program has a working man page and --help.
#
# For every program built from examples/*.c and tools/*.c:
#   - docs/man/NAME.1 exists and renders: with groff (-man -ww, no warnings)
#     when installed, else with mandoc -T lint, else with man -l; with none
#     of them, the rendering check is skipped (and said so);
#   - NAME --help exits 0 and prints a usage line on standard output;
#   - every long option --help mentions appears in the rendered man page.
# Runs from the repo root (CMake does that).  Ends with "N passed, N failed".
set -u
BIN=${1:-build}/bin
MAN=docs/man
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }

if command -v groff >/dev/null; then
    RENDER=groff
elif command -v mandoc >/dev/null; then
    RENDER=mandoc
elif command -v man >/dev/null; then
    RENDER=man
else
    RENDER=none
    echo "note: no groff, mandoc or man: rendering not checked"
fi

# render PAGE: plain text on stdout; warnings on stderr; status non-zero on failure
render() {
    case $RENDER in
    groff) groff -man -Tutf8 -ww "$1" | col -bx ;;
    mandoc) mandoc -T lint -W warning "$1" >&2 && mandoc -T utf8 "$1" | col -bx ;;
    man) MANWIDTH=80 man -l "$1" | col -bx ;;
    none) sed -e 's/\\-/-/g' -e 's/\\f[BIRP]//g' "$1" ;;
    esac
}

progs=()
for src in examples/*.c tools/*.c; do
    progs+=("$(basename "$src" .c)")
done
for p in "${progs[@]}"; do
    page=$MAN/$p.1
    if [ ! -x "$BIN/$p" ]; then
        bad "$p: $BIN/$p was not built"
        continue
    fi
    if [ ! -f "$page" ]; then
        bad "$p: no man page $page"
        continue
    fi
    ok
    if ! render "$page" >"$T/$p.txt" 2>"$T/$p.warn" || [ -s "$T/$p.warn" ] ||
        ! grep -q "^NAME" "$T/$p.txt"; then
        bad "$p: $page does not render cleanly"
        sed 's/^/    /' "$T/$p.warn" | head -5
        continue
    fi
    ok
    if ! sed -n '/^NAME/,/^[A-Z]/p' "$T/$p.txt" | grep -Eq "^ +$p +[-‐−] "; then
        bad "$p: the NAME section does not name $p"
    else
        ok
    fi
    rc=0
    timeout 10 "$BIN/$p" --help >"$T/$p.help" 2>"$T/$p.help.err" </dev/null || rc=$?
    if [ "$rc" -ne 0 ]; then
        bad "$p: --help exits $rc"
        continue
    fi
    if ! grep -qi "usage" "$T/$p.help"; then
        bad "$p: --help prints no usage on standard output"
        continue
    fi
    ok
    missing=
    for o in $(grep -o -- '--[a-z][a-z-]*' "$T/$p.help" | sort -u); do
        grep -qF -- "$o" "$T/$p.txt" || missing="$missing $o"
    done
    if [ -n "$missing" ]; then
        bad "$p: options in --help but not in $page:$missing"
    else
        ok
    fi
done
# and no page for a program that does not exist (pbdump.1 and friends stay in step)
for page in "$MAN"/*.1; do
    name=$(basename "$page" .1)
    if [[ " ${progs[*]} " != *" $name "* ]]; then
        bad "$page documents no program in examples/ or tools/"
    else
        ok
    fi
done

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
