#!/bin/bash
# test_pbdump.sh BUILD_DIR - tools/pbdump against the recorded Twisted sessions.
#
# For every transcript (shared/protocol/transcripts, incl. buildbot/):
#   - pbdump decodes both directions with exit status 0, in text, --json,
#     --hex and --sexp modes;
#   - the expressions it finds (count, stream offsets, lengths, direction)
#     are exactly those of the independent annotator's .txt file;
#   - every --json line is a JSON object with the fields its kind promises.
# Key facts per scenario (the login, the challenge, decref, chat text,
# failures by type, caches and references) appear in the text output.
# Malformed input (truncated stream, invalid type byte, 700 KB string
# header, overlong prefix, bad vocab index, PB-level garbage) ends with exit
# status 1, what was decoded so far on stdout and a clear message naming
# the offset on stderr; usage errors exit 2; nothing crashes.
# Runs from the repo root (CMake does that).  Ends with "N passed, N failed".
set -u
BUILD=${1:-build}
PY=/usr/bin/python3
PBDUMP="$BUILD/bin/pbdump"
SHARED=${PB_SHARED_DIR:-../shared}
TR="$SHARED/protocol/transcripts"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

passed=0
failed=0
ok() { passed=$((passed + 1)); }
fail() { failed=$((failed + 1)); echo "FAIL $*"; }

if [ ! -x "$PBDUMP" ]; then
    echo "missing $PBDUMP (build the 'pbdump' target)"
    echo "0 passed, 1 failed"
    exit 1
fi
if [ ! -d "$TR" ]; then
    echo "missing transcripts dir $TR (set PB_SHARED_DIR)"
    echo "0 passed, 1 failed"
    exit 1
fi

# run NAME EXPECTED_RC ARGS... : stdout -> $TMP/out, stderr -> $TMP/err
run() {
    local name=$1 want=$2
    shift 2
    "$PBDUMP" "$@" >"$TMP/out" 2>"$TMP/err"
    local rc=$?
    if [ "$rc" -ne "$want" ]; then
        fail "$name: exit status $rc, expected $want"
        sed 's/^/    /' "$TMP/err" | head -5
        return 1
    fi
    if grep -q -e 'Sanitizer' -e 'runtime error' "$TMP/err"; then
        fail "$name: sanitizer report"
        head -20 "$TMP/err"
        return 1
    fi
    ok
    return 0
}

# expect NAME FILE REGEX : FILE has a line matching the extended REGEX
expect() {
    if grep -E -q -e "$3" "$2"; then ok; else fail "$1: no line matches /$3/"; fi
}
expect_count() { # NAME FILE REGEX N
    local n
    n=$(grep -E -c -e "$3" "$2")
    if [ "$n" -eq "$4" ]; then ok; else fail "$1: $n lines match /$3/, expected $4"; fi
}

# ---------------------------------------------------------------- every transcript
mapfile -t stems < <(ls "$TR"/*.c2s.bin "$TR"/buildbot/*.c2s.bin 2>/dev/null | sed 's/\.c2s\.bin$//')
if [ ${#stems[@]} -lt 13 ]; then fail "found only ${#stems[@]} transcripts in $TR"; fi

for stem in "${stems[@]}"; do
    t=$(basename "$stem")
    for d in c2s s2c; do
        f="$stem.$d.bin"
        run "$t.$d text" 0 "$f" && [ -s "$TMP/out" ] || fail "$t.$d: empty output"
        run "$t.$d hex+sexp+offset" 0 --hex --sexp --offset "$f"
        # the JSON lines: well-formed, fields per kind, and the same
        # expressions as the annotator found (offsets, lengths, direction)
        run "$t.$d json" 0 --json --hex "$f" || continue
        if "$PY" - "$TMP/out" "$stem.txt" "$d" "$f" <<'EOF'; then ok; else fail "$t.$d: JSON check"; fi
import json, re, sys
out, txt, d, binf = sys.argv[1:]
data = open(binf, 'rb').read()
need = {
    'offer': ['dialects'], 'choice': ['dialect'], 'version': ['version'],
    'message': ['req', 'obj', 'method', 'answer_required', 'args', 'kwargs', 'args_repr', 'kwargs_repr'],
    'cachemessage': ['req', 'obj', 'method', 'answer_required', 'args', 'kwargs'],
    'answer': ['req', 'result', 'result_repr'],
    'error': ['req', 'failure', 'failure_repr', 'failure_type', 'failure_value'],
    'decref': ['luid'], 'decache': ['luid'], 'uncache': ['luid'],
}
mine = []
for i, line in enumerate(open(out, encoding='utf-8')):
    m = json.loads(line)
    assert isinstance(m, dict), line
    for k in ('file', 'dir', 'n', 'offset', 'length', 'kind', 'hex'):
        assert k in m, (k, line[:200])
    assert m['kind'] in need, ('unexpected kind', line[:200])
    for k in need[m['kind']]:
        assert k in m, (m['kind'], k, line[:200])
    assert m['dir'] == d, (m['dir'], d)
    assert m['n'] == i + 1, (m['n'], i)
    assert bytes.fromhex(m['hex']) == data[m['offset']:m['offset'] + m['length']]
    mine.append((m['offset'], m['offset'] + m['length']))
# the annotator's blocks for this direction, in stream order
arrow = 'C->S' if d == 'c2s' else 'S->C'
theirs = sorted((int(a), int(b)) for a, b in
                re.findall(r'^=== #\d+ ' + arrow + r' .*offset (\d+)\.\.(\d+)', open(txt).read(), re.M))
assert mine == theirs, ('expressions differ from the annotator', mine[:5], theirs[:5])
assert mine and mine[-1][1] == len(data), 'did not cover the whole stream'
first = json.loads(open(out, encoding='utf-8').readline())
assert first['kind'] == ('choice' if d == 'c2s' else 'offer'), first['kind']
EOF
    done
    run "$t --both" 0 --both "$stem.c2s.bin" "$stem.s2c.bin"
    expect "$t --both" "$TMP/out" "^== c2s: "
    expect "$t --both" "$TMP/out" "^== s2c: "
done

# ---------------------------------------------------------------- key facts
facts() { # TRANSCRIPT DIR REGEX...
    local t=$1 d=$2
    shift 2
    run "$t.$d facts" 0 "$TR/$t.$d.bin" || return
    cp "$TMP/out" "$TMP/facts"
    for re in "$@"; do expect "$t.$d" "$TMP/facts" "$re"; done
}
facts a_pb5_login c2s \
    '^c2s #1 +choice +dialect="pb"$' \
    '^c2s #2 +version +version=6$' \
    'message +req=1 obj="root" method="login" answer=1 args=\(b'"'"'user1'"'"',\) kwargs=\{\}' \
    'message +req=2 obj=1 method="respond" answer=1 args=\(b'"'"'.*'"'"', None\)' \
    'decref +luid=1$' \
    'message +req=3 obj=2 method="foo" answer=1 args=\(12,\)'
facts a_pb5_login s2c \
    '^s2c #1 +offer +dialects=\["pb", "none"\]$' \
    'answer +req=1 result=\(b.{16,70}, <remote 1>\)$' \
    'answer +req=2 result=<remote 2>$' \
    'answer +req=3 result=None$'
facts b_anonymous_login c2s 'method="loginAnonymous" answer=1 args=\(None,\)'
facts c_chat c2s 'method="joinGroup" .*args=\('"'"'#NeedAFourth'"'"',\)' \
    'method="send" .*You can call me Al\.'
facts c_chat s2c 'message +req=1 obj=1 method="print" answer=1 args=\(.*says: You can call me Al\.'
facts d_failed_login s2c
expect_count d_failed_login "$TMP/facts" 'error +req=[24] failure=twisted\.cred\.error\.UnauthorizedLogin' 2
facts e_remote_valueerror s2c "failure=builtins\.ValueError: 'invalid value 42'"
facts f_misc_errors c2s \
    'method="echo" answer=1 args=\(1, b'"'"'two'"'"', '"'"'three'"'"', 4\.5, None, True\) kwargs=\{'"'"'key'"'"': ' \
    'message +req=11 obj="root" method="notify" answer=0 ' \
    'obj="nosuch" method="anything"' \
    "args=\(Unpersistable\('instance of class __main__\.ScaryObject deemed insecure'\),\)"
facts f_misc_errors s2c \
    "error +req=1 failure=twisted\.spread\.pb\.Error: 'a pb\.Error: not logged'" \
    'error +req=2 failure=builtins\.KeyError' \
    "error +req=3 failure=twisted\.spread\.flavors\.NoSuchMethod: 'No such method: remote_noSuchMethod'" \
    'error +req=4 failure=builtins\.TypeError: ' \
    'answer +req=6 result=<__main__\.Point \{'"'"'x'"'"': 3, '"'"'y'"'"': 4\}>' \
    'error +req=7 failure=<__main__\.CopyableError ' \
    "error +req=12 failure=twisted\.spread\.pb\.Error: 'Invalid Object ID'"
# out of order answers are shown in stream order
if grep -n -E 'answer +req=(9|10) ' "$TMP/facts" | head -1 | grep -q 'req=10'; then ok; else
    fail "f_misc_errors: req 10 should be answered before req 9"; fi
facts h_cache_and_refs s2c \
    'answer +req=1 result=<__main__\.Counter \(1, \{'"'"'value'"'"': 1\}\)>' \
    'cachemessage +req=1 obj=1 method="setValue" answer=1 args=\(2,\)' \
    'answer +req=3 result=<cached 1>$' 'answer +req=5 result=<remote 2>$' 'uncache +luid=1$'
facts h_cache_and_refs c2s 'args=\(<lcache 1>,\)' 'args=\(<local 2>,\)' \
    "args=\(<local b'root'>,\)" 'decref +luid=2$' 'decache +luid=1$'
facts m_anonymous_refused s2c 'failure=twisted\.cred\.error\.UnhandledCredentials: '

# unsafe tracebacks: the JSON form carries the whole failure state
run g_unsafe_tracebacks.json 0 --json "$TR/g_unsafe_tracebacks.s2c.bin"
if "$PY" - "$TMP/out" <<'EOF'; then ok; else fail "g_unsafe_tracebacks: JSON failure state"; fi
import json, sys
errs = [m for m in map(json.loads, open(sys.argv[1])) if m['kind'] == 'error']
assert len(errs) == 1
e = errs[0]
assert e['failure_type'] == 'builtins.ValueError' and e['failure_value'] == 'invalid value 42', e
st = e['failure']['state']
assert e['failure']['$class'] == 'twisted.spread.pb.CopyableFailure'
assert st['unsafeTracebacks'] is True and 'Traceback (most recent call last)' in st['traceback']
assert 'builtins.ValueError' in st['parents']
EOF
# JSON: the login message, references and bytes forms
run a_pb5_login.json 0 --json --both "$TR/a_pb5_login.c2s.bin" "$TR/a_pb5_login.s2c.bin"
if "$PY" - "$TMP/out" <<'EOF'; then ok; else fail "a_pb5_login: JSON fields"; fi
import json, sys
ms = [json.loads(l) for l in open(sys.argv[1])]
assert [m['dir'] for m in ms] == ['c2s'] * 7 + ['s2c'] * 5, [m['dir'] for m in ms]
login = ms[2]
assert login['kind'] == 'message' and login['req'] == 1 and login['obj'] == 'root'
assert login['method'] == 'login' and login['answer_required'] == 1
assert login['args'] == ['user1'] and login['kwargs'] == {}
assert login['args_repr'] == "(b'user1',)"
ch = ms[9]
assert ch['kind'] == 'answer' and ch['req'] == 1
assert ch['result'][1] == {'$remote': 1}, ch['result']
assert ch['result_repr'].endswith(', <remote 1>)')
assert ms[4]['kind'] == 'decref' and ms[4]['luid'] == 1
EOF

# ---------------------------------------------------------------- stdin, options
run "stdin" 0 <"$TR/a_pb5_login.c2s.bin"
expect stdin "$TMP/out" 'method="login"'
run "stdin -" 0 --offset - <"$TR/a_pb5_login.s2c.bin"
expect "stdin -" "$TMP/out" '^s2c #3 +@18\+34 +answer'
run "--help" 0 --help
for w in Usage: --json --hex --dialect --offset --both tshark xxd 'Exit status' Examples; do
    expect --help "$TMP/out" "$w"
done
run "-h" 0 -h
run "bad option" 2 --no-such-option
run "bad dialect" 2 --dialect xml "$TR/a_pb5_login.c2s.bin"
run "--both with one file" 2 --both "$TR/a_pb5_login.c2s.bin"
run "missing file" 2 "$TMP/does-not-exist"
expect "missing file" "$TMP/err" 'does-not-exist'
: >"$TMP/empty"
run "empty input" 0 "$TMP/empty"
# dialect none: a stream without VOCAB decodes; with --dialect none VOCAB is refused
printf '\x04\x82none\x02\x80\x07\x82version\x06\x81' >"$TMP/none.bin"
run "dialect none" 0 "$TMP/none.bin"
expect "dialect none" "$TMP/out" 'version +version=6'
printf '\x02\x82pb\x02\x80\x13\x87\x06\x81' >"$TMP/vocab.bin"
run "forced none refuses vocab" 1 --dialect none "$TMP/vocab.bin"
expect "forced none" "$TMP/err" "offset 7: Invalid item for pb protocol b'version'"

# ---------------------------------------------------------------- malformed input
# bad NAME BYTES-FILE STDERR-REGEX [STDOUT-REGEX]
bad() {
    run "$1" 1 "$2" || return
    expect "$1 stderr" "$TMP/err" "$3"
    if [ $# -ge 4 ]; then expect "$1 stdout" "$TMP/out" "$4"; fi
    run "$1 json" 1 --json --hex "$2" || return
    if "$PY" -c '
import json, sys
ms = [json.loads(l) for l in open(sys.argv[1])]
assert ms and ms[-1]["kind"] == "invalid" and ms[-1]["problem"], ms[-1:]' "$TMP/out"; then ok; else
        fail "$1: JSON invalid line"; fi
}
head -c 30 "$TR/a_pb5_login.c2s.bin" >"$TMP/trunc.bin"
bad truncated "$TMP/trunc.bin" 'offset 10: truncated stream: expression #3 is incomplete \(20 bytes' \
    'version +version=6'
head -c 11 "$TR/f_misc_errors.s2c.bin" >"$TMP/trunc2.bin"
bad "truncated offer" "$TMP/trunc2.bin" 'offset 0: truncated'
printf '\x02\x82pb\x02\x80\x13\x87\x06\x81\x02\x80\x01\x88' >"$TMP/type.bin"
bad "invalid type byte" "$TMP/type.bin" "offset 13: Invalid Type Byte b'.x88'" 'version +version=6'
"$PY" -c '
import sys
n = 700 * 1024; p = bytearray()
while True:
    p.append(n & 0x7f); n >>= 7
    if not n: break
sys.stdout.buffer.write(b"\x02\x82pb" + bytes(p) + b"\x82" + b"x" * 100)' >"$TMP/big.bin"
bad "700 KB string header" "$TMP/big.bin" 'offset [0-9]+: Security precaution: String too long' \
    'choice +dialect="pb"'
"$PY" -c '
import sys
sys.stdout.buffer.write(b"\x02\x82pb" + b"\x00\x00\x00\x10\x80")' >"$TMP/biglist.bin"
bad "huge list header" "$TMP/biglist.bin" 'List too long'
"$PY" -c '
import sys
sys.stdout.buffer.write(b"\x02\x82pb" + b"\x01" * 65 + b"\x81")' >"$TMP/prefix.bin"
bad "overlong prefix" "$TMP/prefix.bin" 'prefix'
printf '\x02\x82pb\x02\x80\x20\x87\x06\x81' >"$TMP/vocabidx.bin"
bad "bad vocab index" "$TMP/vocabidx.bin" 'offset [0-9]+: .*(vocab|32)'
# PB-level problems are reported and dumping goes on
printf '\x02\x82pb\x05\x81\x02\x80\x03\x82foo\x01\x81\x02\x80\x13\x87\x06\x81' >"$TMP/pb.bin"
run "pb-level problems" 1 "$TMP/pb.bin"
expect "pb-level" "$TMP/err" 'offset 4: non-list expression'
expect "pb-level" "$TMP/err" 'offset 6: unknown command "foo"'
expect "pb-level continues" "$TMP/out" 'version +version=6'
printf '\x02\x82pb\x03\x80\x1a\x87\x01\x81\x01\x81' >"$TMP/arity.bin"
run "message arity" 1 "$TMP/arity.bin"
expect "message arity" "$TMP/err" 'message with 3 elements, expected 7'
# a unicode payload that is not UTF-8, in an answer
printf '\x02\x82pb\x03\x80\x1b\x87\x01\x81\x02\x80\x07\x82unicode\x01\x82\xff' >"$TMP/utf8.bin"
run "bad utf-8" 1 "$TMP/utf8.bin"
expect "bad utf-8" "$TMP/err" 'offset 4: result does not unjelly'
# random corruption of real sessions: exit 0 or 1, never a crash, JSON stays JSON
if "$PY" - "$PBDUMP" "$TR" <<'EOF'; then ok; else fail "random corruption"; fi
import glob, json, random, subprocess, sys
pbdump, tr = sys.argv[1:]
files = sorted(glob.glob(tr + '/*.bin'))
rnd = random.Random(20260101)
for i in range(150):
    d = bytearray(open(rnd.choice(files), 'rb').read())
    for _ in range(rnd.randint(1, 5)):
        j = rnd.randrange(len(d))
        if rnd.random() < 0.7: d[j] = rnd.randrange(256)
        else: del d[j:j + rnd.randint(1, 8)]
    r = subprocess.run([pbdump, '--json', '--hex', '--sexp', '-'], input=bytes(d),
                       capture_output=True, timeout=30)
    assert r.returncode in (0, 1), (i, r.returncode, r.stderr[-500:])
    assert b'Sanitizer' not in r.stderr and b'runtime error' not in r.stderr, r.stderr[-2000:]
    for line in r.stdout.decode('utf-8').splitlines():
        json.loads(line)
    if r.returncode == 1:
        assert r.stderr.startswith(b'pbdump: '), r.stderr[:200]
EOF

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
