"""Run an installed Twisted PB listing with its hard-coded port replaced.

Usage: /usr/bin/python3 broker_run_listing.py LISTING.py PORT

The docs listings call reactor.listenTCP(8800, ...) / connectTCP(host,
8800, ...).  This runner patches those two reactor methods before executing
the listing file unchanged (as __main__), so tests can use free ports:
listenTCP gets PORT (0 picks a free one) and prints
"listening on HOST:PORT" once it listens; connectTCP gets PORT.  A
listing that only builds a twistd `application` (copy2_receiver.py) is
started by hand.  Output is line-buffered so tests can follow it.
"""
import os
import runpy
import sys

sys.stdout.reconfigure(line_buffering=True)

from twisted.internet import reactor  # noqa: E402

listing, port = sys.argv[1], int(sys.argv[2])
sys.argv = [listing]
sys.path.insert(0, os.path.dirname(os.path.abspath(listing)))

_listen, _connect = reactor.listenTCP, reactor.connectTCP


def listenTCP(_port, factory, *a, **kw):
    p = _listen(port, factory, *a, **kw)
    h = p.getHost()
    print("listening on %s:%d" % (h.host, h.port))
    return p


def connectTCP(host, _port, factory, *a, **kw):
    return _connect(host, port, factory, *a, **kw)


reactor.listenTCP, reactor.connectTCP = listenTCP, connectTCP

g = runpy.run_path(listing, run_name="__main__")
app = g.get("application")
if app is not None:
    from twisted.application import service

    service.IService(app).startService()
    reactor.run()
