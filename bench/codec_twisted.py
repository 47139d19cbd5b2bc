#!/usr/bin/python3
"""Twisted 22.4's codec throughput on the CONTRACT.md benchmark payload.

    codec_twisted.py [--seconds S] [--json]

encode: jelly.jelly + Banana.sendEncoded (pb dialect) into memory.
decode: Banana.dataReceived (pb dialect) + jelly.unjelly.
Same payload and the same figures as build/bin/bench_codec, so that
bench/codec.sh can print them side by side.
"""
import json
import sys
import time
from io import BytesIO

from twisted.spread import banana, jelly

PAYLOAD_BYTES = 10404
PAYLOAD_VALUES = 701  # the list, 100 dicts, 300 keys, 300 values


def payload():
    return [{"id": i, "name": "benchmark-item-%05d" % i, "score": i * 1.25} for i in range(100)]


def make_banana():
    b = banana.Banana()
    b.isClient = 1
    b.connectionMade()
    b._selectDialect(b"pb")
    return b


def main(argv):
    secs = 2.0
    as_json = "--json" in argv
    if "--seconds" in argv:
        secs = float(argv[argv.index("--seconds") + 1])
    value = payload()
    enc = make_banana()
    io = BytesIO()
    enc.transport = io

    def encode():
        io.seek(0)
        io.truncate()
        enc.sendEncoded(jelly.jelly(value))
        return io.getvalue()

    wire = encode()
    if len(wire) != PAYLOAD_BYTES:
        sys.exit("codec_twisted: payload is %d bytes, CONTRACT.md says %d" % (len(wire), PAYLOAD_BYTES))

    dec = make_banana()
    got = []
    dec.expressionReceived = lambda sexp: got.append(jelly.unjelly(sexp))

    def decode():
        got.clear()
        dec.dataReceived(wire)
        return got[0]

    if decode() != value:
        sys.exit("codec_twisted: decoded payload differs")

    def run(fn, budget):
        n = 0
        t0 = time.perf_counter()
        while True:
            for _ in range(16):
                fn()
            n += 16
            t = time.perf_counter() - t0
            if t >= budget:
                return n / t

    enc_ps = run(encode, secs / 2)
    dec_ps = run(decode, secs / 2)
    if as_json:
        print(json.dumps({
            "impl": "twisted", "payload_bytes": len(wire), "payload_values": PAYLOAD_VALUES,
            "encode": {"mb_s": round(enc_ps * len(wire) / 1e6, 2), "payloads_s": round(enc_ps),
                       "values_s": round(enc_ps * PAYLOAD_VALUES)},
            "decode": {"mb_s": round(dec_ps * len(wire) / 1e6, 2), "payloads_s": round(dec_ps),
                       "values_s": round(dec_ps * PAYLOAD_VALUES)}}))
    else:
        print("payload: %d bytes, %d values" % (len(wire), PAYLOAD_VALUES))
        for name, ps in (("encode", enc_ps), ("decode", dec_ps)):
            print("twisted %s: %8.2f MB/s  %9.0f payloads/s  %11.0f values/s"
                  % (name, ps * len(wire) / 1e6, ps, ps * PAYLOAD_VALUES))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
