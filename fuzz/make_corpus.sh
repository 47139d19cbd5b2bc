#!/usr/bin/env bash
# fuzz/make_corpus.sh [OUTDIR] - build the seed corpora for every harness
# (default OUTDIR: build-fuzz/corpus; never inside git-tracked dirs).
#
#   OUTDIR/<harness>/...   one directory per harness, libFuzzer's corpus
#
# Sources: ../shared/protocol/transcripts/*.bin (client->server bytes for
# the server harnesses, server->client for the client harness), each
# prefixed with a few control bytes (see fuzz/fuzz_common.h); the Banana
# and protocol vectors of ../shared/protocol/vectors.json; hand-written
# scripts from fuzz/gen_seeds.py; and the checked-in regression inputs
# (fuzz/regressions/<harness>/).  Existing files are kept, so a corpus
# grown by earlier runs survives.  PB_SHARED_DIR overrides ../shared.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
out="${1:-$root/build-fuzz/corpus}"
shared="${PB_SHARED_DIR:-$root/../shared}"
tr="$shared/protocol/transcripts"
vec="$shared/protocol/vectors.json"
mkdir -p "$out"

# seed HARNESS NAME CTL FILE: control byte CTL (2 hex digits) then FILE
seed() {
  local h=$1 name=$2 ctl=$3 file=$4
  mkdir -p "$out/$h"
  { printf "\\x$ctl"; cat "$file"; } >"$out/$h/$name-$ctl"
}

shopt -s nullglob
c2s=("$tr"/*.c2s.bin "$tr"/buildbot/*.c2s.bin)
s2c=("$tr"/*.s2c.bin "$tr"/buildbot/*.s2c.bin)
[ ${#c2s[@]} -gt 0 ] || echo "make_corpus: no transcripts under $tr (continuing)" >&2

for f in "${c2s[@]}"; do
  n=$(basename "$f" .c2s.bin)
  # whole, byte by byte, random chunks + ticks, tight limits, free in close
  for c in 00 01 0b 1d 2a; do seed fuzz_broker_server "$n" $c "$f"; done
  for c in 00 0b 18; do seed fuzz_broker_login "$n" $c "$f"; done
done
for f in "${s2c[@]}"; do
  n=$(basename "$f" .s2c.bin)
  case "$n" in
    b_*|m_*) modes="40 4b" ;;       # anonymous login
    a_*|c_*|d_*|j_*|l_*|i_*|buildbot) modes="00 0b 1a 80" ;;  # username/password login
    *) modes="c0 cb dc" ;;           # plain root calls
  esac
  for c in $modes; do seed fuzz_broker_client "$n" $c "$f"; done
done

# vectors.json: banana bytes for the codec harnesses, protocol messages for
# the brokers (after the client's handshake)
if [ -f "$vec" ]; then
  python3 - "$vec" "$out" <<'EOF'
import json, os, sys
vec, out = sys.argv[1], sys.argv[2]
v = json.load(open(vec))
hs = bytes.fromhex("02827062") + bytes.fromhex("028013870681")
def put(h, name, data):
    d = os.path.join(out, h); os.makedirs(d, exist_ok=True)
    open(os.path.join(d, name), "wb").write(data)
for i, e in enumerate(v.get("encode", [])):
    if e.get("banana_hex"):
        b = bytes.fromhex(e["banana_hex"])
        put("fuzz_banana", "enc%03d" % i, b"\x01" + b)
        put("fuzz_jelly", "enc%03d" % i, b)
    if e.get("banana_hex_none_dialect"):
        put("fuzz_banana", "encn%03d" % i, b"\x00" + bytes.fromhex(e["banana_hex_none_dialect"]))
for i, e in enumerate(v.get("decode", [])):
    b = bytes.fromhex(e.get("input_hex", ""))
    put("fuzz_banana", "dec%03d" % i, (b"\x01" if e.get("dialect") == "pb" else b"\x00") + b)
    put("fuzz_jelly", "dec%03d" % i, b)
for i, e in enumerate(v.get("pb_objects", [])):
    if e.get("banana_hex"):
        put("fuzz_jelly", "obj%03d" % i, bytes.fromhex(e["banana_hex"]))
for key in ("messages", "pb_protocol_errors"):
    for i, e in enumerate(v.get(key, [])):
        b = bytes.fromhex(e.get("banana_hex") or e.get("input_hex") or "")
        if not b:
            continue
        put("fuzz_broker_server", "%s%03d" % (key[:4], i), b"\x00" + hs + b)
        put("fuzz_broker_login", "%s%03d" % (key[:4], i), b"\x00" + hs + b)
        put("fuzz_broker_client", "%s%03d" % (key[:4], i),
            b"\xc0" + bytes.fromhex("02800282706204826e6f6e65") + bytes.fromhex("028013870681") + b)
EOF
else
  echo "make_corpus: $vec not found (continuing)" >&2
fi

python3 "$here/gen_seeds.py" "$out"

# the regressions are seeds too
for d in "$here"/regressions/*/; do
  [ -d "$d" ] || continue
  h=$(basename "$d")
  mkdir -p "$out/$h"
  for f in "$d"*; do [ -f "$f" ] && cp "$f" "$out/$h/regression-$(basename "$f")"; done
done

for d in "$out"/*/; do
  echo "corpus $(basename "$d"): $(find "$d" -type f | wc -l) files"
done
