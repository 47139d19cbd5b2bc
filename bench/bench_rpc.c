/*
 * bench_rpc - round-trip latency and pipelined throughput of a PB echo
 * call, plus a raw TCP ping-pong baseline of the same message size.
 *
 *   bench_rpc server [--host H] [--port N]
 *       serves a root object with remote_echo(x) -> x; prints
 *       "listening on HOST:PORT"; SIGINT/SIGTERM stop it.
 *   bench_rpc client [--host H] [--port N] [--seconds S] [--depth D]
 *       sequential echo calls for S seconds, then D calls in flight for S
 *       seconds; prints one "RESULT ..." line (see print_result).
 *   bench_rpc raw-server [--host H] [--port N]
 *   bench_rpc raw-client [--host H] [--port N] [--seconds S] [--depth D] [--size B]
 *       the same two measurements with B-byte messages echoed by a plain
 *       blocking-socket server (no PB, no event loop): the floor.
 *
 * The payload is the 16-character text "0123456789abcdef" (what
 * bench/rpc_twisted.py sends too).  bench/rpc.sh runs every pairing.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "pb/pb.h"

#define PAYLOAD "0123456789abcdef"

typedef struct opts {
    const char *mode, *host;
    int port;
    double seconds;
    int depth;
    int size;
} opts;

static void usage(void) {
    fprintf(stderr, "usage: bench_rpc server|client|raw-server|raw-client [--host H] [--port N] "
                    "[--seconds S] [--depth D] [--size B]\n");
    exit(2);
}

static void parse(int argc, char **argv, opts *o) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) usage();
    *o = (opts){argv[1], "127.0.0.1", 8800, 2.0, 100, 41};
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--host")) o->host = argv[i + 1];
        else if (!strcmp(argv[i], "--port")) o->port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--seconds")) o->seconds = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--depth")) o->depth = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--size")) o->size = atoi(argv[i + 1]);
        else usage();
    }
    if (o->depth < 1) o->depth = 1;
    if (o->size < 1) o->size = 1;
}

/* ----------------------------------------------------------- statistics */

typedef struct lat {
    uint64_t *v;
    size_t n, cap;
} lat;

static void lat_add(lat *l, uint64_t ns) {
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 65536;
        l->v = realloc(l->v, l->cap * sizeof *l->v);
        if (!l->v) abort();
    }
    l->v[l->n++] = ns;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double lat_pct(lat *l, double p) {
    if (!l->n) return 0;
    size_t i = (size_t)(p * (double)(l->n - 1));
    return (double)l->v[i] / 1000.0;
}

static void print_result(lat *seq, double seq_s, uint64_t pipe_calls, double pipe_s,
                         size_t msg_bytes) {
    qsort(seq->v, seq->n, sizeof *seq->v, cmp_u64);
    printf("RESULT seq_calls=%zu seq_per_s=%.0f p50_us=%.1f p99_us=%.1f pipe_calls=%llu "
           "pipe_per_s=%.0f msg_bytes=%zu\n",
           seq->n, seq->n / seq_s, lat_pct(seq, 0.50), lat_pct(seq, 0.99),
           (unsigned long long)pipe_calls, pipe_calls / pipe_s, msg_bytes);
    free(seq->v);
}

/* ------------------------------------------------------------ PB server */

static int echo(pb_call *call, void *self, const pb_args *a) {
    return pb_call_return(call, pb_arg(a, 0));
}
static const pb_method methods[] = {{"echo", "v", echo, NULL}, {NULL, NULL, NULL, NULL}};
static const pb_class Echo = {"Echo", PB_REFERENCEABLE, methods, NULL};
static pb_object g_root;

static pb_object *root_of(pb_broker *b, void *ud) { return pb_object_ref(&g_root); }
static void stop(void *server) { pb_server_close(server, NULL, NULL); }

static int run_server(const opts *o) {
    uv_loop_t *loop = uv_default_loop();
    pb_object_init(&g_root, &Echo);
    pb_server *s;
    pb_errbuf err;
    if (pb_listen_tcp(loop, o->host, o->port, NULL, root_of, NULL, &s, &err)) {
        fprintf(stderr, "listen: %s\n", err.msg);
        return 1;
    }
    printf("listening on %s:%d\n", o->host, pb_server_port(s));
    pb_run_until_signal(loop, stop, s);
    uv_loop_close(loop);
    pb_object_unref(&g_root);
    return 0;
}

/* ------------------------------------------------------------ PB client */

typedef struct bench {
    const opts *o;
    uv_loop_t *loop;
    pb_conn *conn;
    pb_ref *root;
    pb_value *args; /* ("0123456789abcdef",) */
    pb_arena *arena;
    int phase;      /* 0 seq, 1 pipe, 2 draining, 3 done */
    uint64_t t0, t_end, sent_at;
    lat seq;
    double seq_s, pipe_s;
    uint64_t pipe_done, inflight;
    int failed;
    size_t msg_bytes; /* average request size on the wire, for the raw baseline */
} bench;

static void issue(bench *b);

static int on_answer(pb_deferred *d, void *ud) {
    bench *b = ud;
    uint64_t now = uv_hrtime();
    if (pb_deferred_failure(d) || !pb_deferred_value(d) ||
        !pb_value_is(pb_deferred_value(d), PAYLOAD)) {
        if (!b->failed) fprintf(stderr, "echo failed\n");
        b->failed = 1;
    }
    b->inflight--;
    if (b->phase == 0) {
        lat_add(&b->seq, now - b->sent_at);
        if (now >= b->t_end) {
            b->seq_s = (now - b->t0) / 1e9;
            pb_broker_stats st;
            pb_broker_get_stats(pb_conn_broker(b->conn), &st);
            b->msg_bytes = st.messages_out ? (size_t)(st.bytes_out / st.messages_out) : 0;
            b->phase = 1;
            b->t0 = now;
            b->t_end = now + (uint64_t)(b->o->seconds * 1e9);
            for (int i = 0; i < b->o->depth; i++) issue(b);
            return 0;
        }
        issue(b);
    } else if (b->phase == 1) {
        b->pipe_done++;
        if (now >= b->t_end) {
            b->pipe_s = (now - b->t0) / 1e9;
            b->phase = 2;
        } else {
            issue(b);
        }
    }
    if (b->phase == 2 && b->inflight == 0) {
        b->phase = 3;
        pb_conn_close(b->conn);
    }
    return 0;
}

static void issue(bench *b) {
    b->sent_at = uv_hrtime();
    pb_errbuf err;
    pb_deferred *d = pb_ref_call(b->root, "echo", b->args, NULL, NULL, &err);
    if (!d) {
        fprintf(stderr, "call: %s\n", err.msg);
        b->failed = 1;
        b->phase = 3;
        pb_conn_close(b->conn);
        return;
    }
    b->inflight++;
    pb_deferred_add(d, on_answer, on_answer, b);
    pb_deferred_unref(d);
}

static void on_up(pb_conn *c, int status, const char *msg, void *ud) {
    bench *b = ud;
    if (status) {
        fprintf(stderr, "connect: %s\n", msg);
        b->failed = 1;
        return;
    }
    b->conn = c;
    b->root = pb_conn_root(c);
    b->t0 = uv_hrtime();
    b->t_end = b->t0 + (uint64_t)(b->o->seconds * 1e9);
    issue(b);
}

static void on_lost(pb_conn *c, const char *why, void *ud) {
    bench *b = ud;
    if (b->phase != 3) {
        fprintf(stderr, "connection lost: %s\n", why);
        b->failed = 1;
    }
}

static int run_client(const opts *o) {
    bench b;
    memset(&b, 0, sizeof b);
    b.o = o;
    b.loop = uv_default_loop();
    b.arena = pb_arena_new(0);
    b.args = pb_tuple(b.arena, 1);
    pb_seq_append(b.arena, b.args, pb_strz(b.arena, PAYLOAD));
    pb_errbuf err;
    if (pb_connect_tcp(b.loop, o->host, o->port, NULL, on_up, on_lost, &b, &err)) {
        fprintf(stderr, "connect: %s\n", err.msg);
        return 1;
    }
    uv_run(b.loop, UV_RUN_DEFAULT);
    if (!b.failed)
        print_result(&b.seq, b.seq_s, b.pipe_done, b.pipe_s, b.msg_bytes);
    else
        free(b.seq.v);
    pb_arena_free(b.arena);
    uv_loop_close(b.loop);
    return b.failed;
}

/* ------------------------------------------------------------------ raw */

static int read_full(int fd, char *p, size_t n) {
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static int write_full(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t r = write(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static void *raw_conn(void *arg) {
    int fd = (int)(intptr_t)arg;
    char buf[65536];
    for (;;) { /* echo whatever arrives */
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0 || write_full(fd, buf, (size_t)r)) break;
    }
    close(fd);
    return NULL;
}

static int raw_listen_fd(const opts *o) {
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o->port)};
    inet_pton(AF_INET, strcmp(o->host, "localhost") ? o->host : "127.0.0.1", &sa.sin_addr);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) || listen(fd, 64)) {
        perror("raw listen");
        return -1;
    }
    socklen_t len = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &len);
    printf("listening on %s:%d\n", o->host, ntohs(sa.sin_port));
    return fd;
}

static int run_raw_server(const opts *o) {
    int ls = raw_listen_fd(o);
    if (ls < 0) return 1;
    for (;;) {
        int fd = accept(ls, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR) continue;
            break;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        pthread_t t;
        if (pthread_create(&t, NULL, raw_conn, (void *)(intptr_t)fd) == 0) pthread_detach(t);
        else close(fd);
    }
    return 0;
}

static int run_raw_client(const opts *o) {
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o->port)};
    inet_pton(AF_INET, strcmp(o->host, "localhost") ? o->host : "127.0.0.1", &sa.sin_addr);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa)) {
        perror("raw connect");
        return 1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    size_t n = (size_t)o->size;
    char *msg = calloc(1, n * (size_t)o->depth), *in = malloc(n * (size_t)o->depth);
    lat seq = {0};
    uint64_t t0 = uv_hrtime(), end = t0 + (uint64_t)(o->seconds * 1e9), now;
    do {
        uint64_t s = uv_hrtime();
        if (write_full(fd, msg, n) || read_full(fd, in, n)) return 1;
        now = uv_hrtime();
        lat_add(&seq, now - s);
    } while (now < end);
    double seq_s = (now - t0) / 1e9;
    /* depth messages in flight: each answer read lets one more go */
    uint64_t done = 0;
    t0 = uv_hrtime();
    end = t0 + (uint64_t)(o->seconds * 1e9);
    if (write_full(fd, msg, n * (size_t)o->depth)) return 1;
    size_t have = 0;
    for (;;) {
        ssize_t r = read(fd, in + have, n * (size_t)o->depth - have);
        if (r <= 0) return 1;
        have += (size_t)r;
        size_t k = have / n;
        have -= k * n;
        done += k;
        now = uv_hrtime();
        if (now >= end) break;
        if (k && write_full(fd, msg, k * n)) return 1;
    }
    double pipe_s = (now - t0) / 1e9;
    close(fd);
    print_result(&seq, seq_s, done, pipe_s, n);
    free(msg);
    free(in);
    return 0;
}

int main(int argc, char **argv) {
    opts o;
    parse(argc, argv, &o);
    signal(SIGPIPE, SIG_IGN);
    if (!strcmp(o.mode, "server")) return run_server(&o);
    if (!strcmp(o.mode, "client")) return run_client(&o);
    if (!strcmp(o.mode, "raw-server")) return run_raw_server(&o);
    if (!strcmp(o.mode, "raw-client")) return run_raw_client(&o);
    usage();
    return 2;
}
