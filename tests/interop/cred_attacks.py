#!/usr/bin/python3
"""The chapter's attacks, by a Twisted client against a chat server.

    cred_attacks.py --port N [--host H]

Users alice/1234, bob/secret, carol/fido.  Prints "ok   NAME" or
"FAIL NAME -- why" per promise; exit status 1 if anything failed.
Uses at most 4 failed logins (the server throttles at 10 a minute).
"""
import argparse
import gc
import sys

from twisted.cred import credentials
from twisted.internet import defer, reactor
from twisted.spread import pb

opt = None
failures = []


def report(name, ok, why=""):
    print(("ok   %s" % name) if ok else ("FAIL %s -- %s" % (name, why)), flush=True)
    if not ok:
        failures.append(name)


class Mind(pb.Referenceable):
    def __init__(self, who):
        self.who, self.got = who, []

    def remote_print(self, message):
        self.got.append(message)


def sleep(t):
    d = defer.Deferred()
    reactor.callLater(t, d.callback, None)
    return d


def outcome(d):
    """Fire with (True, value) or (False, failure); never errback."""
    return d.addCallbacks(lambda v: (True, v), lambda f: (False, f))


@defer.inlineCallbacks
def expect_failure(name, d, type_name, value=None):
    ok, r = yield outcome(d)
    if ok:
        report(name, False, "succeeded with %r" % (r,))
    elif not r.check(type_name):
        report(name, False, "failed with %s: %s" % (r.type, r.value))
    elif value is not None and str(r.value) != value:
        report(name, False, "message %r" % (str(r.value),))
    else:
        report(name, True)


def factory():
    f = pb.PBClientFactory()
    reactor.connectTCP(opt.host, opt.port, f)
    return f


@defer.inlineCallbacks
def login(user, password, mind=None, f=None):
    f = f or factory()
    av = yield f.login(credentials.UsernamePassword(user, password), client=mind)
    return f, av


@defer.inlineCallbacks
def run():
    # --- logins that must fail cleanly, and the connection stays usable
    f = factory()
    yield expect_failure("wrong password is UnauthorizedLogin",
                         f.login(credentials.UsernamePassword(b"alice", b"nope")),
                         "twisted.cred.error.UnauthorizedLogin", "")
    yield expect_failure("unknown user is UnauthorizedLogin",
                         f.login(credentials.UsernamePassword(b"mallory", b"1234")),
                         "twisted.cred.error.UnauthorizedLogin", "")
    yield expect_failure("anonymous is refused without an anonymous checker",
                         f.login(credentials.Anonymous()),
                         "twisted.cred.error.UnhandledCredentials",
                         "No checker for twisted.cred.credentials.IAnonymous")
    ok, av = yield outcome(f.login(credentials.UsernamePassword(b"alice", b"1234")))
    report("same connection logs in after failures", ok, "%r" % (av,))

    # --- usernames as text
    ok, r = yield outcome(factory().login(credentials.UsernamePassword("carol", b"fido")))
    report("username sent as unicode text logs in", ok, "%r" % (r,))

    # --- the challenger takes one response
    root = yield factory().getRootObject()
    challenge, challenger = yield root.callRemote("login", b"bob")
    resp = credentials.UsernamePassword(b"bob", b"secret")
    from hashlib import md5
    answer = md5(md5(b"secret").digest() + challenge).digest()
    ok, bob_av = yield outcome(challenger.callRemote("respond", answer, None))
    report("challenge response logs in", ok, "%r" % (bob_av,))
    yield expect_failure("a challenger is spent after one response",
                         challenger.callRemote("respond", answer, None),
                         "twisted.cred.error.UnauthorizedLogin")
    del resp, bob_av

    # --- Alice cannot speak as Bob
    am, bm = Mind("alice"), Mind("bob")
    fa, alice = yield login(b"alice", b"1234", am)
    fb, bob = yield login(b"bob", b"secret", bm)
    ga = yield alice.callRemote("joinGroup", "#test")
    gb = yield bob.callRemote("joinGroup", "#test")
    yield expect_failure("extra argument naming Bob is a TypeError",
                         ga.callRemote("send", "i like pork", "bob"), "builtins.TypeError")
    yield expect_failure("from_user keyword is a TypeError",
                         ga.callRemote("send", message="i like pork", from_user="bob"),
                         "builtins.TypeError")
    yield expect_failure("an avatar reference as extra argument is a TypeError",
                         ga.callRemote("send", alice, "i like pork"), "builtins.TypeError")
    yield expect_failure("mistyped message is a TypeError",
                         ga.callRemote("send", 42), "builtins.TypeError")
    yield expect_failure("mistyped group name is a TypeError",
                         alice.callRemote("joinGroup", 42), "builtins.TypeError")
    yield expect_failure("perspective_ name called directly is refused",
                         alice.callRemote("perspective_joinGroup", "#x"),
                         "builtins.AttributeError")
    yield expect_failure("view_ name called directly is refused",
                         ga.callRemote("view_send", "i like pork"), "builtins.AttributeError")
    yield expect_failure("remote_ name on an avatar is refused",
                         alice.callRemote("remote_joinGroup", "#x"), "builtins.AttributeError")
    forged = pb.RemoteReference(None, ga.broker, 999, 0)
    yield expect_failure("forged reference id is Invalid Object ID",
                         forged.callRemote("send", "i like pork"), "twisted.spread.pb.Error",
                         "Invalid Object ID")
    # Bob's group reference number, used on Alice's connection, means
    # whatever that number means on Alice's connection: never Bob.
    crossed = pb.RemoteReference(None, ga.broker, gb.luid, 0)
    yield outcome(crossed.callRemote("send", "crossed wires"))
    yield ga.callRemote("send", "hello from alice")
    yield gb.callRemote("send", "hello from bob")
    yield sleep(0.2)
    everything = am.got + bm.got
    report("nothing ever says <bob> unless Bob sent it",
           all(m == "<bob> says: hello from bob" for m in everything if m.startswith("<bob>")),
           repr(everything))
    report("both members hear alice", am.got.count("<alice> says: hello from alice") == 1 and
           bm.got.count("<alice> says: hello from alice") == 1, repr(everything))
    report("both members hear bob", am.got.count("<bob> says: hello from bob") == 1 and
           bm.got.count("<bob> says: hello from bob") == 1, repr(everything))

    # --- allowMattress=False
    cm = Mind("carol")
    fc, carol = yield login(b"carol", b"fido", cm)
    gc1 = yield carol.callRemote("joinGroup", "#clean", allowMattress=False)
    gb2 = yield bob.callRemote("joinGroup", "#clean")
    yield expect_failure("mattress is refused in a no-mattress group",
                         gb2.callRemote("send", "nice mattress"), "builtins.ValueError",
                         "Don't say that word")
    yield gb2.callRemote("send", "nice bed")
    yield sleep(0.1)
    report("refused message reaches nobody, the next one everybody",
           "<bob> says: nice bed" in cm.got and not any("mattress" in m for m in cm.got + bm.got),
           repr(cm.got))
    del gc1

    # --- a member without a mind, and a member that vanished, block nobody
    fn, nomind = yield login(b"carol", b"fido", None)
    yield nomind.callRemote("joinGroup", "#test")
    dm = Mind("alice2")
    fd, alice2 = yield login(b"alice", b"1234", dm)  # alice twice
    yield alice2.callRemote("joinGroup", "#test")
    fd.disconnect()  # vanishes without logging out first
    yield sleep(0.2)
    bm.got.clear()
    am.got.clear()
    yield gb.callRemote("send", "still here")
    yield sleep(0.2)
    report("delivery survives mindless and vanished members",
           bm.got == ["<bob> says: still here"] and am.got == ["<bob> says: still here"],
           repr((am.got, bm.got)))

    # --- releasing the avatar logs out: that login leaves every group
    del alice, ga, forged, crossed
    gc.collect()
    yield sleep(0.2)
    am.got.clear()
    yield gb.callRemote("send", "alice gone?")
    yield sleep(0.2)
    report("released avatar left its groups", am.got == [], repr(am.got))

    # --- the server still serves others
    ok, r = yield outcome(login(b"carol", b"fido"))
    report("server keeps serving after all that", ok, repr(r))
    for fx in (f, fa, fb, fc, fn):
        fx.disconnect()


def main():
    global opt
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    opt = ap.parse_args()

    def done(r):
        if isinstance(r, Exception) or hasattr(r, "getTraceback"):
            print("FAIL attack script crashed:", r.getTraceback() if hasattr(r, "getTraceback") else r,
                  flush=True)
            failures.append("crash")
        reactor.stop()

    d = run()
    d.addBoth(done)
    reactor.callLater(60, lambda: (failures.append("timeout"), reactor.stop()))
    reactor.run()
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
