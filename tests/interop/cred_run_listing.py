#!/usr/bin/python3
"""Run one of Twisted's installed PB howto listings, unmodified, as a peer.

    cred_run_listing.py LISTING.py --port N [--host H] [--stop-after S]

The listings hard-code port 8800 and pass str usernames/passwords, which
Twisted 22.4 cannot hash (see transcripts/i_docs_literal_str_creds).  This
runner changes only those two things, at run time:
  * reactor.listenTCP / reactor.connectTCP use --host/--port instead;
  * UsernamePassword and the in-memory checker get their str credentials
    encoded to UTF-8 bytes.
--stop-after S stops the reactor after S seconds (some client listings
never stop by themselves).  Output is unbuffered.
"""
import argparse
import runpy
import sys

from twisted.cred import checkers, credentials
from twisted.internet import reactor


def _b(x):
    return x.encode("utf-8") if isinstance(x, str) else x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("listing")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--stop-after", type=float, default=0)
    opt = ap.parse_args()

    listen, connect = reactor.listenTCP, reactor.connectTCP
    reactor.listenTCP = lambda port, factory, *a, **kw: listen(
        opt.port, factory, *a, **dict(kw, interface=opt.host)
    )
    reactor.connectTCP = lambda host, port, factory, *a, **kw: connect(
        opt.host, opt.port, factory, *a, **kw
    )

    up_init = credentials.UsernamePassword.__init__
    credentials.UsernamePassword.__init__ = lambda self, u, p: up_init(self, _b(u), _b(p))

    db = checkers.InMemoryUsernamePasswordDatabaseDontUse
    db_init, db_add = db.__init__, db.addUser
    db.addUser = lambda self, u, p: db_add(self, _b(u), _b(p))

    def init(self, **users):
        db_init(self)
        for u, p in users.items():
            self.addUser(u, p)

    db.__init__ = init

    if opt.stop_after:
        reactor.callLater(opt.stop_after, reactor.stop)
    sys.argv = [opt.listing]
    runpy.run_path(opt.listing, run_name="__main__")


if __name__ == "__main__":
    main()
