"""Run an installed Twisted PB docs listing over TLS, on a free port.

Usage: /usr/bin/python3 tls_run_listing.py CERTDIR LISTING.py PORT

Like broker_run_listing.py, but the listing's reactor.listenTCP becomes
listenSSL with CERTDIR/server.pem (no client certificate asked) and its
connectTCP becomes connectSSL verifying the server against CERTDIR/ca.pem
as "localhost".  listenSSL prints "listening on HOST:PORT" once it
listens; PORT 0 picks a free one.  CERTDIR is what
`test_tls --make-certs DIR` writes.  Output is line-buffered.
"""
import os
import runpy
import sys

sys.stdout.reconfigure(line_buffering=True)

from twisted.internet import reactor, ssl  # noqa: E402
from twisted.protocols.tls import TLSMemoryBIOFactory  # noqa: E402

certdir, listing, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.argv = [listing]
sys.path.insert(0, os.path.dirname(os.path.abspath(listing)))


def load(name):
    with open(os.path.join(certdir, name)) as f:
        return f.read()


_listen, _connect = reactor.listenTCP, reactor.connectTCP


# What listenSSL / connectSSL do, over the real listenTCP / connectTCP.
def listenTCP(_port, factory, *a, **kw):
    cert = ssl.PrivateCertificate.loadPEM(load("server.pem") + load("server.key"))
    p = _listen(port, TLSMemoryBIOFactory(cert.options(), False, factory), *a, **kw)
    h = p.getHost()
    print("listening on %s:%d" % (h.host, h.port))
    return p


def connectTCP(host, _port, factory, *a, **kw):
    opts = ssl.optionsForClientTLS("localhost", trustRoot=ssl.Certificate.loadPEM(load("ca.pem")))
    return _connect(host, port, TLSMemoryBIOFactory(opts, True, factory), *a, **kw)


reactor.listenTCP, reactor.connectTCP = listenTCP, connectTCP

runpy.run_path(listing, run_name="__main__")
