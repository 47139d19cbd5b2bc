#!/bin/bash
# codec.sh [BUILD_DIR] - codec throughput of libpb vs Twisted 22.4, side by
# side in one run, on the CONTRACT.md payload (10,404 bytes, pb dialect).
# ~4 s of C (bench_codec), ~5 s of Python (codec_twisted.py).
# Env: PB_BENCH_SECONDS (per implementation, split between the directions).
set -eu
BUILD=${1:-build}
SECS=${PB_BENCH_SECONDS:-4}
HERE=$(cd "$(dirname "$0")" && pwd)
C=$("$BUILD/bin/bench_codec" --seconds "$SECS" --json)
T=$(/usr/bin/python3 "$HERE/codec_twisted.py" --seconds "$((SECS + 1))" --json)
/usr/bin/python3 - "$C" "$T" <<'PY'
import json, sys
c, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print("codec benchmark: %d-byte payload (%d values), pb dialect" % (c["payload_bytes"], c["payload_values"]))
print("%-8s %12s %12s %9s   %14s %14s" % ("", "libpb MB/s", "Twisted MB/s", "C/Twisted",
                                          "libpb payl/s", "Twisted payl/s"))
for d in ("encode", "decode"):
    print("%-8s %12.2f %12.2f %8.1fx   %14.0f %14.0f" % (
        d, c[d]["mb_s"], t[d]["mb_s"], c[d]["mb_s"] / t[d]["mb_s"],
        c[d]["payloads_s"], t[d]["payloads_s"]))
print("values/s: libpb encode %.3g, decode %.3g; Twisted encode %.3g, decode %.3g" % (
    c["encode"]["values_s"], c["decode"]["values_s"], t["encode"]["values_s"], t["decode"]["values_s"]))
PY
