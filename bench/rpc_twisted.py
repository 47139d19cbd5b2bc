"""Twisted side of bench/rpc.sh: an echo server and a client that measures
what bench_rpc measures (sequential echo latency, then DEPTH calls in
flight), printing the same "RESULT ..." line.

  /usr/bin/python3 rpc_twisted.py server [PORT]          prints "listening on HOST:PORT"
  /usr/bin/python3 rpc_twisted.py client HOST PORT [SECONDS] [DEPTH]
"""
import sys
import time

from twisted.internet import reactor
from twisted.spread import pb

PAYLOAD = "0123456789abcdef"


class Echo(pb.Root):
    def remote_echo(self, x):
        return x


def server(port):
    p = reactor.listenTCP(port, pb.PBServerFactory(Echo()), interface="127.0.0.1")
    print("listening on 127.0.0.1:%d" % p.getHost().port, flush=True)
    reactor.run()


class Client:
    def __init__(self, seconds, depth):
        self.seconds, self.depth = seconds, depth
        self.lat, self.failed = [], False
        self.pipe_done = self.inflight = 0

    def start(self, root):
        self.root = root
        self.t0 = time.perf_counter()
        self.end = self.t0 + self.seconds
        self.seq_one()

    def fail(self, f):
        self.failed = True
        print("echo failed:", f, file=sys.stderr)
        reactor.stop()

    def seq_one(self):
        sent = time.perf_counter()

        def got(r):
            now = time.perf_counter()
            if r != PAYLOAD:
                return self.fail(r)
            self.lat.append(now - sent)
            if now < self.end:
                self.seq_one()
            else:
                self.seq_s = now - self.t0
                self.t0, self.end = now, now + self.seconds
                for _ in range(self.depth):
                    self.pipe_one()

        self.root.callRemote("echo", PAYLOAD).addCallbacks(got, self.fail)

    def pipe_one(self):
        self.inflight += 1

        def got(r):
            self.inflight -= 1
            if r != PAYLOAD:
                return self.fail(r)
            now = time.perf_counter()
            if now < self.end:
                self.pipe_done += 1
                self.pipe_one()
                return
            if not hasattr(self, "pipe_s"):
                self.pipe_s = now - self.t0
            if self.inflight == 0:
                self.report()
                reactor.stop()

        self.root.callRemote("echo", PAYLOAD).addCallbacks(got, self.fail)

    def report(self):
        lat = sorted(self.lat)
        n = len(lat)
        print(
            "RESULT seq_calls=%d seq_per_s=%.0f p50_us=%.1f p99_us=%.1f pipe_calls=%d "
            "pipe_per_s=%.0f msg_bytes=0"
            % (n, n / self.seq_s, lat[int(0.5 * (n - 1))] * 1e6, lat[int(0.99 * (n - 1))] * 1e6,
               self.pipe_done, self.pipe_done / self.pipe_s),
            flush=True,
        )


def client(host, port, seconds, depth):
    c = Client(seconds, depth)
    f = pb.PBClientFactory()
    reactor.connectTCP(host, port, f)
    f.getRootObject().addCallbacks(c.start, c.fail)
    reactor.run()
    sys.exit(1 if c.failed else 0)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
    else:
        client(sys.argv[2], int(sys.argv[3]),
               float(sys.argv[4]) if len(sys.argv) > 4 else 2.0,
               int(sys.argv[5]) if len(sys.argv) > 5 else 100)
