"""A Twisted PB peer over TLS, for test_tls_twisted.sh.

Usage:
  /usr/bin/python3 tls_peer.py server CERTDIR [--require]
      listenSSL on 127.0.0.1 (free port) with CERTDIR/server.pem; prints
      "listening on 127.0.0.1:PORT".  The root has echo(x), add(a, b) and
      whoami() (the client certificate's subject, or None).  --require:
      clients must present a certificate signed by CERTDIR/ca.pem.
  /usr/bin/python3 tls_peer.py client CERTDIR PORT [--no-cert] [--ca FILE]
      connectSSL to localhost:PORT trusting CERTDIR/ca.pem (or FILE), as
      alice (CERTDIR/client.pem) unless --no-cert; calls echo, add and
      whoami, prints the answers, exits 0 (1 with "failed: ..." otherwise).

CERTDIR is what `test_tls --make-certs DIR` writes.  Output is
line-buffered so tests can follow it.
"""
import sys

from twisted.internet import reactor, ssl
from twisted.spread import pb
from twisted.spread.flavors import IPBRoot
from zope.interface import implementer

sys.stdout.reconfigure(line_buffering=True)


def load(path):
    with open(path) as f:
        return f.read()


def subject_of(x509):
    """'CN=alice,O=libpb test' (most specific first, like RFC 2253)."""
    parts = ["%s=%s" % (k.decode(), v.decode()) for k, v in x509.get_subject().get_components()]
    return ",".join(reversed(parts))


class Root(pb.Root):
    def __init__(self, broker):
        self.broker = broker

    def remote_echo(self, x):
        return x

    def remote_add(self, a, b):
        return a + b

    def remote_whoami(self):
        cert = self.broker.transport.getPeerCertificate()
        who = subject_of(cert) if cert is not None else None
        print("server: whoami from", who)
        return who


@implementer(IPBRoot)
class Realm:
    """Hands each connection its own Root, so whoami sees its transport."""

    def rootObject(self, broker):
        return Root(broker)


def serve(certdir, require):
    cert = ssl.PrivateCertificate.loadPEM(
        load(certdir + "/server.pem") + load(certdir + "/server.key"))
    if require:
        opts = cert.options(ssl.Certificate.loadPEM(load(certdir + "/ca.pem")))
    else:
        opts = cert.options()
    factory = pb.PBServerFactory(Realm())
    port = reactor.listenSSL(0, factory, opts, interface="127.0.0.1")
    print("listening on 127.0.0.1:%d" % port.getHost().port)
    reactor.run()


def call(certdir, port, with_cert, ca):
    trust = ssl.Certificate.loadPEM(load(ca or certdir + "/ca.pem"))
    client_cert = None
    if with_cert:
        client_cert = ssl.PrivateCertificate.loadPEM(
            load(certdir + "/client.pem") + load(certdir + "/client.key"))
    opts = ssl.optionsForClientTLS("localhost", trustRoot=trust, clientCertificate=client_cert)
    factory = pb.PBClientFactory()
    reactor.connectSSL("127.0.0.1", port, factory, opts)
    status = [1]

    async def run():
        root = await factory.getRootObject()
        print("echo:", await root.callRemote("echo", "hello over TLS"))
        print("add:", await root.callRemote("add", 2, 40))
        print("whoami:", await root.callRemote("whoami"))
        status[0] = 0

    def failed(f):
        print("failed:", f.getErrorMessage())

    from twisted.internet.defer import ensureDeferred
    d = ensureDeferred(run())
    d.addErrback(failed)
    d.addBoth(lambda _: reactor.callLater(0, reactor.stop))
    reactor.callLater(15, reactor.stop)
    reactor.run()
    sys.exit(status[0])


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "server":
        serve(sys.argv[2], "--require" in sys.argv[3:])
    elif len(sys.argv) >= 4 and sys.argv[1] == "client":
        rest = sys.argv[4:]
        ca = rest[rest.index("--ca") + 1] if "--ca" in rest else None
        call(sys.argv[2], int(sys.argv[3]), "--no-cert" not in rest, ca)
    else:
        print(__doc__)
        sys.exit(2)
