#!/usr/bin/python3
"""Differential test of libpb's Banana + Jelly codec against Twisted 22.4.

    diff_values.py py2c PBCODEC SEED COUNT [--none]
        Python builds COUNT random values from SEED, jellies and
        banana-encodes them with Twisted, and pipes them through
        `pbcodec roundtrip` (C: decode, unjelly, jelly, encode).  The C bytes
        must equal Twisted's, and C's description of what it decoded must
        equal Python's description of the original.
    diff_values.py c2py PBCODEC SEED COUNT [--none]
        `pbcodec gen` builds COUNT random values in C and prints their
        encoding and description; Twisted decodes each one, and its
        description must equal C's.  Re-encoding with Twisted must give C's
        bytes again, unless a set with several members is involved (set
        order is hash order, so only the decoded values are compared).

A description is a canonical text of a value graph, computed the same way
by pbcodec: containers met more than once are labelled #N at their first
occurrence (depth-first) and @N afterwards, set members are sorted, floats
are shown as their IEEE bits.  Prints one line per mismatch (the first few
in detail) and ends with "PASSED=n FAILED=m".
"""
import datetime
import decimal
import random
import struct
import subprocess
import sys
from io import BytesIO

from twisted.spread import banana, jelly

MAX_DETAIL = 8


class Point:
    """The test's Copyable-like class: jellied as ("__main__.Point" state)."""

    def __init__(self, x=None, y=None):
        self.x = x
        self.y = y


# ------------------------------------------------------------ banana glue


def make_banana(dialect):
    b = banana.Banana()
    b.isClient = 1
    b.connectionMade()
    b._selectDialect(dialect)
    return b


def encode(b, sexp):
    io = BytesIO()
    b.transport = io
    b.sendEncoded(sexp)
    return io.getvalue()


def decode(b, data):
    got = []
    b.expressionReceived = got.append
    b.buffer = b""
    b.dataReceived(data)
    if len(got) != 1 or b.buffer:
        raise ValueError("expected exactly one expression, got %d (+%d bytes)" % (len(got), len(b.buffer)))
    return got[0]


# --------------------------------------------------------------- describe


def _children(o):
    t = type(o)
    if t in (list, tuple, set, frozenset):
        return list(o)
    if t is dict:
        return [x for kv in o.items() for x in kv]
    if t is Point:
        return [o.__dict__]
    return None


def describe(root):
    counts = {}
    keep = []  # keep ids stable

    def count(o):
        ch = _children(o)
        if ch is None:
            return
        n = counts.get(id(o), 0)
        counts[id(o)] = n + 1
        keep.append(o)
        if n == 0:
            for c in ch:
                count(c)

    count(root)
    labels = {}

    def d(o):
        t = type(o)
        if o is None:
            return "N"
        if t is bool:
            return "T" if o else "F"
        if t is int:
            return "i%d" % o
        if t is float:
            return "f" + struct.pack(">d", o).hex()
        if t is bytes:
            return "b" + o.hex()
        if t is str:
            return "s" + o.encode("utf-8").hex()
        if t is datetime.datetime:
            return "Ydatetime(%d %d %d %d %d %d %d)" % (
                o.year, o.month, o.day, o.hour, o.minute, o.second, o.microsecond)
        if t is datetime.date:
            return "Ydate(%d %d %d)" % (o.year, o.month, o.day)
        if t is datetime.time:
            return "Ytime(%d %d %d %d)" % (o.hour, o.minute, o.second, o.microsecond)
        if t is datetime.timedelta:
            return "Ytimedelta(%d %d %d)" % (o.days, o.seconds, o.microseconds)
        if t is decimal.Decimal:
            sign, digits, exp = o.as_tuple()
            v = int("".join(map(str, digits)) or "0")
            return "Q%d,%d" % (-v if sign else v, exp)
        if id(o) in labels:
            return "@%d" % labels[id(o)]
        tag = ""
        if counts.get(id(o), 0) > 1:
            labels[id(o)] = len(labels) + 1
            tag = "#%d" % labels[id(o)]
        if t is list:
            return "L%s[%s]" % (tag, ",".join(d(x) for x in o))
        if t is tuple:
            return "U%s[%s]" % (tag, ",".join(d(x) for x in o))
        if t is dict:
            return "M%s{%s}" % (tag, ",".join(d(k) + ":" + d(v) for k, v in o.items()))
        if t in (set, frozenset):
            return "%s%s{%s}" % ("S" if t is set else "Z", tag, ",".join(sorted(d(x) for x in o)))
        if t is Point:
            return "I%s<%s %s>" % (tag, type(o).__module__ + ".Point", d(o.__dict__))
        if isinstance(o, jelly.Unpersistable):
            return "X(%s)" % o.reason
        return "?%r" % (o,)

    return d(root)


def has_multi_set(root):
    seen = set()
    stack = [root]
    while stack:
        o = stack.pop()
        ch = _children(o)
        if ch is None or id(o) in seen:
            continue
        seen.add(id(o))
        if type(o) in (set, frozenset) and len(o) > 1:
            return True
        stack.extend(ch)
    return False


# -------------------------------------------------------------- generator

INT_EDGES = [0, 1, -1, 127, 128, 255, 16384, 2**31 - 1, 2**31, -2**31, -2**31 - 1,
             2**63 - 1, 2**63, -2**63, -2**63 - 1, 2**64, 2**448 - 1, -(2**448 - 1)]
WORDS = ["None", "list", "dictionary", "reference", "dereference", "unicode", "tuple",
         "remote", "boolean", "set", "version", "uncache", ""]
PIECES = ["a", "Z", " ", "\u00e9", "\u20ac", "\U0001F600", '"', "\\", "\n", "\x00",
          "\u4e2d", "'", "None", "\x7f", "\u0394", "\U0010FFFF"]


class Gen:
    def __init__(self, seed):
        self.r = random.Random(seed)
        self.pool = []

    def int_(self):
        r = self.r
        k = r.randrange(10)
        if k == 0:
            return r.choice(INT_EDGES)
        bits = r.randrange(0, 65) if k < 6 else r.randrange(1, 449)
        v = r.getrandbits(bits) if bits else 0
        return -v if r.random() < 0.5 else v

    def float_(self):
        r = self.r
        k = r.randrange(9)
        if k == 0:
            return r.choice([float("inf"), float("-inf"), float("nan"), -float("nan"),
                             0.0, -0.0, 1.5, 1e308, 5e-324, 0.1])
        f = struct.unpack(">d", struct.pack(">Q", r.getrandbits(64)))[0]
        return 1.0 if f != f else f

    def bytes_(self):
        r = self.r
        if r.randrange(4) == 0:
            return r.choice(WORDS).encode()
        return bytes(r.getrandbits(8) for _ in range(r.randrange(40)))

    def str_(self):
        r = self.r
        if r.randrange(5) == 0:
            return r.choice(WORDS)
        return "".join(r.choice(PIECES) for _ in range(r.randrange(16)))

    def when(self):
        r = self.r
        k = r.randrange(6)
        if k == 0:
            return datetime.datetime(r.randrange(1, 10000), r.randrange(1, 13), r.randrange(1, 29),
                                     r.randrange(24), r.randrange(60), r.randrange(60),
                                     r.randrange(1000000))
        if k == 1:
            return datetime.date(r.randrange(1, 10000), r.randrange(1, 13), r.randrange(1, 29))
        if k == 2:
            return datetime.time(r.randrange(24), r.randrange(60), r.randrange(60),
                                 r.randrange(1000000))
        if k == 3:
            return datetime.timedelta(days=r.randrange(-999999, 999999),
                                      seconds=r.randrange(86400),
                                      microseconds=r.randrange(1000000))
        digits = str(abs(self.int_())).lstrip("0") or "0"
        return decimal.Decimal("%s%sE%d" % (r.choice("+-"), digits, r.randrange(-20, 20)))

    def hashable(self):
        r = self.r
        k = r.randrange(7)
        if k == 0:
            return self.str_()
        if k == 1:
            return self.bytes_()
        if k == 2:
            return self.int_()
        if k == 3:
            f = self.float_()
            return 0.5 if f != f else f
        if k == 4:
            return (self.int_(), self.str_())
        if k == 5:
            return frozenset([self.int_(), self.str_()])
        return r.choice([None, True, False])

    def container(self, depth):
        r = self.r
        if self.pool and r.randrange(6) == 0:
            return r.choice(self.pool)  # shared
        n = r.randrange(6)
        k = r.randrange(8)
        if k <= 1:
            v = [self.value(depth + 1) for _ in range(n)]
            if r.randrange(8) == 0:
                v.append(v)  # cycle
            if r.randrange(12) == 0:
                v.append({"back": v})  # 2-cycle through a dict
        elif k == 2:
            v = tuple(self.value(depth + 1) for _ in range(n))
            if r.randrange(16) == 0:  # a cycle through a tuple
                inner = []
                v = v + (inner,)
                inner.append(v)
        elif k <= 4:
            v = {}
            for _ in range(n):
                v[self.hashable()] = self.value(depth + 1)
            if r.randrange(8) == 0:
                v["self"] = v
        elif k == 5:
            members = [self.hashable() for _ in range(n)]
            v = set(members) if r.randrange(2) else frozenset(members)
        else:
            v = Point(self.value(depth + 1), self.value(depth + 1))
            if r.randrange(10) == 0:
                v.y = v  # an instance holding itself
        if len(self.pool) < 64:
            self.pool.append(v)
        else:
            self.pool[r.randrange(64)] = v
        return v

    def value(self, depth=0):
        r = self.r
        k = r.randrange(9 if depth >= 4 else 13)
        if k == 0:
            return None
        if k == 1:
            return r.choice([True, False])
        if k in (2, 3):
            return self.int_()
        if k == 4:
            return self.float_()
        if k == 5:
            return self.bytes_()
        if k in (6, 7):
            return self.str_()
        if k == 8:
            return self.when()
        return self.container(depth)

    def top(self):
        self.pool = []
        return self.container(0) if self.r.randrange(3) else self.value(0)


def fixed_values():
    """The examples of SPEC section 3.3 and other known corners."""
    a = [1]
    b = [2]
    l = []
    l.append(l)
    d = {}
    d["self"] = d
    t_inner = []
    t = (t_inner,)
    t_inner.append(t)
    p = Point(1, "x")
    return [[a, a], l, d, [a, b, b, a], [(), ()], t, [p, p], {"k": [a, (a,)]},
            [2**448 - 1, -(2**448 - 1), 2**31, -2**31, -2**31 - 1], "None", b"None",
            [float("nan"), float("-inf"), -0.0], {(1, "a"): frozenset([1]), None: True},
            decimal.Decimal("1.25"), decimal.Decimal("-0"), datetime.timedelta(-1, 5, 7)]


# -------------------------------------------------------------- the modes


class Tally:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def fail(self, what):
        self.failed += 1
        if self.failed <= MAX_DETAIL:
            print("MISMATCH " + what)
        elif self.failed == MAX_DETAIL + 1:
            print("(further mismatches not shown)")


def clip(s, n=600):
    return s if len(s) <= n else s[:n] + "...(%d chars)" % len(s)


def py2c(pbcodec, seed, count, dialect):
    b = make_banana(dialect)
    g = Gen(seed)
    values = fixed_values() + [g.top() for _ in range(count)]
    lines, wire = [], []
    for v in values:
        data = encode(b, jelly.jelly(v))
        wire.append(data)
        lines.append(data.hex())
    args = [pbcodec, "roundtrip"] + (["--none"] if dialect == b"none" else [])
    proc = subprocess.run(args, input=("\n".join(lines) + "\n").encode(), capture_output=True)
    out = proc.stdout.decode("utf-8", "replace").splitlines()
    t = Tally()
    if proc.returncode != 0 or len(out) != len(values):
        t.fail("pbcodec exited %d with %d lines for %d values; stderr: %s"
               % (proc.returncode, len(out), len(values), proc.stderr.decode()[-500:]))
    for i, (v, data, line) in enumerate(zip(values, wire, out)):
        want = describe(v)
        if line.startswith("!"):
            t.fail("py2c #%d: C refused %s\n  error: %s\n  value: %s"
                   % (i, clip(data.hex()), line[1:], clip(want)))
            continue
        got_hex, _, got_desc = line.partition("\t")
        ok = True
        if got_desc != want:
            ok = False
            t.fail("py2c #%d: C decoded something else\n  wire:   %s\n  python: %s\n  C:      %s"
                   % (i, clip(data.hex()), clip(want), clip(got_desc)))
        if got_hex != data.hex():
            ok = False
            t.fail("py2c #%d: C re-encoding differs\n  value:   %s\n  twisted: %s\n  C:       %s"
                   % (i, clip(repr(v)), clip(data.hex()), clip(got_hex)))
        if ok:
            t.passed += 1
    return t


def c2py(pbcodec, seed, count, dialect):
    b = make_banana(dialect)
    args = [pbcodec, "gen", str(seed), str(count)] + (["--none"] if dialect == b"none" else [])
    proc = subprocess.run(args, capture_output=True)
    out = proc.stdout.decode("utf-8", "replace").splitlines()
    t = Tally()
    if proc.returncode != 0 or len(out) != count:
        t.fail("pbcodec gen exited %d with %d lines for %d values; stderr: %s"
               % (proc.returncode, len(out), count, proc.stderr.decode()[-500:]))
    for i, line in enumerate(out):
        if line.startswith("!"):
            t.fail("c2py #%d: C could not encode its own value: %s" % (i, line[1:]))
            continue
        hx, _, cdesc = line.partition("\t")
        data = bytes.fromhex(hx)
        try:
            v = jelly.unjelly(decode(b, data))
        except Exception as e:  # noqa: BLE001 - any failure is a finding
            t.fail("c2py #%d: Twisted cannot decode C's bytes: %r\n  wire: %s\n  C:    %s"
                   % (i, e, clip(hx), clip(cdesc)))
            continue
        ok = True
        pdesc = describe(v)
        if pdesc != cdesc:
            ok = False
            t.fail("c2py #%d: Twisted decoded something else\n  wire:    %s\n  C:       %s\n  twisted: %s"
                   % (i, clip(hx), clip(cdesc), clip(pdesc)))
        if not has_multi_set(v):
            again = encode(b, jelly.jelly(v))
            if again != data:
                ok = False
                t.fail("c2py #%d: Twisted re-encodes differently\n  C:       %s\n  twisted: %s"
                       % (i, clip(hx), clip(again.hex())))
        if ok:
            t.passed += 1
    return t


def main(argv):
    if len(argv) < 5 or argv[1] not in ("py2c", "c2py"):
        print(__doc__)
        return 2
    mode, pbcodec, seed, count = argv[1], argv[2], int(argv[3]), int(argv[4])
    dialect = b"none" if "--none" in argv else b"pb"
    sys.setrecursionlimit(10000)
    t = (py2c if mode == "py2c" else c2py)(pbcodec, seed, count, dialect)
    print("%s seed=%d dialect=%s: %d values agree, %d mismatches"
          % (mode, seed, dialect.decode(), t.passed, t.failed))
    print("PASSED=%d FAILED=%d" % (t.passed, t.failed))
    return 1 if t.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
