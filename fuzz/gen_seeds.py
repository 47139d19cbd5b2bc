#!/usr/bin/env python3
"""fuzz/gen_seeds.py OUTDIR - hand-written seed inputs for the broker
harnesses (besides the transcripts, which make_corpus.sh copies).

Writes OUTDIR/<harness>/<name>: a control byte (see fuzz/fuzz_common.h)
followed by Banana bytes.  No Twisted needed: a minimal Banana encoder.
"""
import os
import struct
import sys

VOCAB = ["None", "class", "dereference", "reference", "dictionary", "function",
         "instance", "list", "module", "persistent", "tuple", "unpersistable", "copy",
         "cache", "cached", "remote", "local", "lcache", "version", "login", "password",
         "challenge", "logged_in", "not_logged_in", "cachemessage", "message", "answer",
         "error", "decref", "decache", "uncache"]
VIDX = {w: i + 1 for i, w in enumerate(VOCAB)}


def b128(n):
    out = bytearray()
    while True:
        out.append(n & 0x7F)
        n >>= 7
        if not n:
            return bytes(out)


class W(str):
    """A word: goes out as a vocab index in the pb dialect."""


def enc(x, pb=True):
    if isinstance(x, W):
        if pb and str(x) in VIDX:
            return b128(VIDX[str(x)]) + b"\x87"
        x = str(x).encode()
    if isinstance(x, bool):
        raise TypeError("use jelly")
    if isinstance(x, int):
        if x >= 0:
            return b128(x) + (b"\x81" if x < 2**31 else b"\x85")
        return b128(-x) + (b"\x83" if -x <= 2**31 else b"\x86")
    if isinstance(x, float):
        return b"\x84" + struct.pack(">d", x)
    if isinstance(x, str):
        x = x.encode()
    if isinstance(x, bytes):
        return b128(len(x)) + b"\x82" + x
    if isinstance(x, list):
        return b128(len(x)) + b"\x80" + b"".join(enc(i, pb) for i in x)
    raise TypeError(x)


# jelly forms
def U(s): return [b"unicode", s.encode()]
def T(*xs): return [W("tuple")] + list(xs)
def L(*xs): return [W("list")] + list(xs)
def D(**kw): return [W("dictionary")] + [[U(k), v] for k, v in kw.items()]
NONE = [W("None")]
TRUE = [b"boolean", b"true"]
FALSE = [b"boolean", b"false"]
def REMOTE(n): return [W("remote"), n]
def LOCAL(n): return [W("local"), n]


def msg(req, obj, name, args=None, kw=None, answer=1):
    return [W("message"), req, W(obj) if isinstance(obj, str) else obj, W(name), answer,
            args if args is not None else T(), kw if kw is not None else D()]


HANDSHAKE = enc(b"pb", pb=False) + enc([W("version"), 6])


def stream(*exprs):
    return b"".join(enc(e) for e in exprs)


def write(outdir, harness, name, ctl, data):
    d = os.path.join(outdir, harness)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(bytes([ctl]) + data)


def server_seeds(out):
    calls = [
        msg(1, "root", "echo", T(1, b"two", U("three"), 4.5, NONE, TRUE), D(key=U("value"), n=L(1, 2))),
        msg(2, "root", "add", T(1, 2), D(c=3)),
        msg(3, "root", "typeError"),
        msg(4, "root", "slow", T(1)),
        msg(5, "root", "fast", T(2)),
        msg(6, "root", "getThing"),
        msg(7, 1, "hello", T(U("alice"))),
        msg(8, "root", "isMine", T(LOCAL(1))),
        msg(9, "root", "getView"),
        msg(10, 2, "send", T(U("hi"))),
        msg(11, "root", "login"),
        msg(12, 3, "getView"),
        msg(13, 4, "whoami"),
        msg(14, 3, "callMind", T(REMOTE(1))),
        msg(15, "root", "callMe", T(REMOTE(2), b"print", 100)),
        [W("answer"), 1, NONE],
        [W("error"), 2, [b"twisted.spread.pb.CopyableFailure", D(type=b"x", value=U("y"), parents=L(U("x")))]],
        msg(16, "root", "keep", T(REMOTE(5))),
        msg(17, "root", "later", T(0)),
        msg(18, "root", "many", T(8)),
        msg(19, "root", "point"),
        msg(20, "root", "big", T(70000)),
        [W("decref"), 1],
        [W("decref"), 3],
        msg(21, "root", "release"),
        msg(22, "root", "raisePBError"),
        msg(23, "root", "nosuch"),
    ]
    body = stream(*calls)
    for ctl in (0x00, 0x01, 0x0b, 0x1c, 0x08):
        write(out, "fuzz_broker_server", "script-%02x" % ctl, ctl, HANDSHAKE + body)
    write(out, "fuzz_broker_server", "lose", 0, HANDSHAKE + stream(msg(1, "root", "slow", T(1)), msg(2, "root", "lose"), msg(3, "root", "fast", T(1))))
    write(out, "fuzz_broker_server", "selfdestruct", 0, HANDSHAKE + stream(msg(1, "root", "slow", T(1)), msg(2, "root", "selfDestruct"), msg(3, "root", "fast", T(1))))
    write(out, "fuzz_broker_server", "avatar", 0x0a, HANDSHAKE + stream(
        msg(1, "root", "login"), msg(2, 1, "foo", T(12)), msg(3, 1, "getView"),
        msg(4, 2, "send", T(U("x"))), msg(5, 2, "whoami"), msg(6, 1, "callMind", T(REMOTE(7))),
        [W("answer"), 1, NONE], msg(7, 1, "self"), [W("decref"), 1], msg(8, 2, "send", T(U("y")))))
    write(out, "fuzz_broker_server", "refs-limit", 0x10, HANDSHAKE + stream(
        *[msg(i, "root", "getThing") for i in range(1, 12)]))


def login_seeds(out):
    # mode 1 (ctl 0x40): alice logged in, avatar LUID 2, the client's mind is its LUID 1
    av = [
        msg(3, 2, "foo", T(12)),
        msg(4, 2, "joinGroup", T(U("#NeedAFourth"))),
        msg(5, 3, "send", T(U("You can call me Al."))),
        msg(6, 3, "members"),
        msg(7, 2, "getName"),
        msg(8, 2, "callMind"),
        [W("answer"), 1, NONE],
        msg(9, 2, "slow"),
        msg(10, "root", "loginAnonymous", T(NONE)),
        msg(11, "root", "login", T(b"alice")),
        [W("decref"), 2],
        msg(12, 3, "send", T(U("after logout"))),
    ]
    for ctl in (0x40, 0x48, 0x41, 0x4b):
        write(out, "fuzz_broker_login", "alice-%02x" % ctl, ctl, stream(*av))
    # mode 2 (0x80): anonymous, avatar LUID 1, no mind
    anon = [msg(2, 1, "foo", T(1)), msg(3, 1, "joinGroup", T(U("g"))), msg(4, 2, "send", T(U("x"))),
            msg(5, 1, "callMind"), [W("decref"), 1], msg(6, 1, "foo", T(1))]
    write(out, "fuzz_broker_login", "anon-80", 0x80, stream(*anon))
    # mode 3 (0xc0): alice + joinGroup done: group viewpoint LUID 3
    grp = [msg(4, 3, "send", T(U("hi"))), msg(5, 3, "members"), msg(6, 2, "callMind"),
           [W("answer"), 1, NONE], [W("answer"), 2, NONE], [W("decref"), 3], [W("decref"), 2],
           msg(7, 3, "send", T(U("gone")))]
    write(out, "fuzz_broker_login", "group-c0", 0xc0, stream(*grp))
    write(out, "fuzz_broker_login", "group-c8", 0xc8, stream(*grp))
    # mode 0: raw, with logins that the fuzzer can vary
    raw = [msg(1, "root", "loginAnonymous", T(REMOTE(1))), msg(2, 1, "joinGroup", T(U("g"))),
           msg(3, 2, "send", T(U("x"))), msg(4, "root", "login", T(b"alice")),
           msg(5, 2, "respond", T(b"0123456789abcdef", NONE)),
           msg(6, 2, "respond", T(b"0123456789abcdef", NONE)), [W("decref"), 2], [W("decref"), 1]]
    for ctl in (0x00, 0x08, 0x09, 0x18):
        write(out, "fuzz_broker_login", "raw-%02x" % ctl, ctl, HANDSHAKE + stream(*raw))


def client_seeds(out):
    offer = enc([b"pb", b"none"], pb=False)
    # mode 3: twelve root calls; answer them out of order with odd payloads
    ans = [[W("version"), 6]]
    for req in (2, 1, 4, 3, 12, 5):
        ans.append([W("answer"), req, L(REMOTE(req), LOCAL(1), [b"__main__.Point", D(x=1, y=2)])])
    ans.append([W("error"), 6, [b"twisted.spread.pb.CopyableFailure",
                                D(type=b"builtins.ValueError", value=U("v"), parents=L(U("builtins.ValueError")))]])
    ans.append([W("error"), 7, [b"__main__.CopyableError", D(why=U("x"))]])
    ans.append(msg(1, 1, "print", T(U("hello"))))
    ans.append(msg(2, 1, "slow"))
    ans.append(msg(3, 1, "thing"))
    ans.append([W("decref"), 1])
    write(out, "fuzz_broker_client", "calls-c0", 0xc0, offer + stream(*ans))
    write(out, "fuzz_broker_client", "calls-c8", 0xc8, offer + stream(*ans))
    # mode 0: login answered with a challenge and an avatar, then the group
    lg = [[W("version"), 6],
          [W("answer"), 1, T(b"0123456789abcdef", REMOTE(1))],
          [W("answer"), 2, REMOTE(2)],
          [W("answer"), 3, REMOTE(3)],
          msg(1, 1, "print", T(U("<b'alice'> says: hi"))),
          [W("answer"), 4, NONE],
          [W("answer"), 5, NONE]]
    for ctl in (0x00, 0x08, 0x0b):
        write(out, "fuzz_broker_client", "login-%02x" % ctl, ctl, offer + stream(*lg))
    write(out, "fuzz_broker_client", "anon-40", 0x40, offer + stream(lg[0], [W("answer"), 1, REMOTE(2)], lg[3]))


def main():
    out = sys.argv[1]
    server_seeds(out)
    login_seeds(out)
    client_seeds(out)


if __name__ == "__main__":
    main()
