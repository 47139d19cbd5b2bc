"""The benchmark service of shared/bench/CONTRACT.md, in Twisted: the
reference the C benchserver is measured against.  Run with /usr/bin/python3.

    benchserver_twisted.py --port N [--host H]
"""
import argparse
import sys

from twisted.cred import checkers, portal
from twisted.internet import reactor
from twisted.spread import pb
from zope.interface import implementer


class Group(pb.Viewable):
    def __init__(self, name):
        self.name = name
        self.users = []

    def view_send(self, from_user, msg):
        for u in self.users:
            if u.mind is not None:
                u.mind.callRemote("print", msg)

    def view_members(self, from_user):
        return len(self.users)


class Avatar(pb.Avatar):
    def __init__(self, server, mind):
        self.server = server
        self.mind = mind
        self.groups = []

    def perspective_echo(self, x):
        return x

    def perspective_add(self, a, b):
        return a + b

    def perspective_getGroup(self, name):
        g = self.server.groups.get(name)
        if g is None:
            g = self.server.groups[name] = Group(name)
        if self not in g.users:
            g.users.append(self)
            self.groups.append(g)
        return g

    perspective_joinGroup = perspective_getGroup

    def logout(self):
        for g in self.groups:
            g.users.remove(self)
        self.groups = []


@implementer(portal.IRealm)
class Realm:
    def __init__(self):
        self.groups = {}

    def requestAvatar(self, avatarId, mind, *interfaces):
        assert pb.IPerspective in interfaces
        av = Avatar(self, mind)
        return pb.IPerspective, av, av.logout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8800)
    args = ap.parse_args()
    users = checkers.InMemoryUsernamePasswordDatabaseDontUse()
    users.addUser(b"bench", b"bench")
    p = portal.Portal(Realm(), [users, checkers.AllowAnonymousAccess()])
    port = reactor.listenTCP(args.port, pb.PBServerFactory(p), interface=args.host)
    print("twisted benchserver listening on %s:%d" % (args.host, port.getHost().port), flush=True)
    reactor.run()


if __name__ == "__main__":
    sys.exit(main())
