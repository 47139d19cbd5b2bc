/*
 * server.c - listening sockets (TCP and UNIX) that hand every accepted
 * connection a broker serving the root object the application chooses.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <unistd.h>
#include "transport_int.h"
#include "broker_map.h"
#include "ratelimit.h"

/* Connections per source address (max_connections_per_addr): one table
 * per server, shared under its mutex by every loop of a multi-loop
 * server, so the limit holds for the server as a whole.  Keys are the
 * address as 128 bits (IPv4 as ::ffff:a.b.c.d), values the count. */
typedef struct pb_addrcount {
    pthread_mutex_t mu;
    kmap m;
} pb_addrcount;

/* Multi-loop servers (pb_server_opts::loops > 1): the caller's loop runs
 * the main pb_server; every extra loop runs on its own thread with a
 * sub-server (same settings, its own SO_REUSEPORT socket).  The main
 * server owns this group; subs point to it for the connection total. */
typedef struct pb_worker {
    uv_loop_t loop;
    pthread_t thread;
    struct pb_server *sub; /* freed by the worker's loop once closed */
    pb_mailbox *mb;
    uv_os_sock_t fd;       /* bound socket, handed to the sub's uv_tcp_t */
    void *loop_ud;
    struct pb_mloop *ml;
    unsigned index;
    atomic_int exited;     /* the thread is about to end */
    int joined;
} pb_worker;

typedef struct pb_mloop {
    unsigned n;            /* loops, main included */
    pb_worker *w;          /* n-1 of them: w[i-1] is loop i */
    atomic_size_t total;   /* connections of all loops */
    uv_async_t exit_async; /* main loop: some worker ended */
    pb_mailbox *mb0;       /* the main loop's mailbox */
    unsigned njoined;
    void *ud;              /* the listen call's ud */
    void *(*loop_init)(uv_loop_t *, unsigned, void *);
    void (*loop_fini)(uv_loop_t *, unsigned, void *, void *);
} pb_mloop;

struct pb_server {
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } io;
    uv_loop_t *loop;
    pb_server_opts opts;
    pb_root_fn root;
    void *ud;
    int is_tcp;
    int closing;
    int listen_closed;
    int finishing;             /* multi-loop main: final teardown started */
    pb_mloop *ml;              /* multi-loop group, or NULL */
    int is_sub;                /* an extra loop's server (tls borrowed) */
    pb_addrcount *ac;          /* with max_connections_per_addr; subs borrow the main's */
    pb_conn *conns;            /* live accepted connections */
    size_t nconns;
    void (*close_cb)(void *ud);
    void *close_ud;
    char *unix_path;           /* unlinked on close */
    pb_tls_ctx *tls;           /* NULL: plain */
    unsigned tls_handshake_ms;
    pb_ratelimit lim[PB_LIMIT_KINDS]; /* the limit log, per kind */
};

/* Limit hits: the first of each kind is logged, then at most one line per
 * PB_LIMIT_LOG_MS carrying the number suppressed meanwhile; a peer hammering
 * a limit cannot flood the log. */
#define PB_LIMIT_LOG_MS 10000
void pb__server_limit(pb_server *s, int kind, const char *msg) {
    unsigned long dropped;
    if (kind < 0 || kind >= PB_LIMIT_KINDS ||
        !pb__ratelimit(&s->lim[kind], uv_now(s->loop), PB_LIMIT_LOG_MS, 1, &dropped))
        return;
    char line[320];
    if (dropped)
        snprintf(line, sizeof line, "%s (%lu more like it in the last %u s)", msg, dropped,
                 PB_LIMIT_LOG_MS / 1000);
    else
        snprintf(line, sizeof line, "%s", msg);
    if (s->opts.log) s->opts.log(line, s->opts.log_ud);
    else fprintf(stderr, "pb: %s\n", line);
}

/* The address of a "1.2.3.4:5" / "[::1]:5" peer string as two words; 0
 * if it is not one. */
static int addr_key(const char *peer, uint64_t *k1, uint64_t *k2) {
    char ip[48];
    const char *end = strrchr(peer, ':');
    int v6 = peer[0] == '[';
    if (v6) end = strchr(peer, ']');
    if (!end) return 0;
    size_t n = (size_t)(end - peer) - (size_t)v6;
    if (n >= sizeof ip) return 0;
    memcpy(ip, peer + v6, n);
    ip[n] = 0;
    uint8_t b[16] = {0};
    if (v6) {
        if (uv_inet_pton(AF_INET6, ip, b) != 0) return 0;
    } else {
        b[10] = b[11] = 0xff;
        if (uv_inet_pton(AF_INET, ip, b + 12) != 0) return 0;
    }
    *k1 = *k2 = 0;
    for (int i = 0; i < 8; i++) {
        *k1 = *k1 << 8 | b[i];
        *k2 = *k2 << 8 | b[8 + i];
    }
    return 1;
}

/* Count c against its address: 0, or -1 when the address is at the limit
 * (or the table cannot grow): refuse c. */
static int addr_take(pb_server *s, pb_conn *c) {
    uint64_t k1, k2;
    if (!addr_key(c->peer, &k1, &k2)) return 0; /* not an IP peer: not limited */
    pthread_mutex_lock(&s->ac->mu);
    uintptr_t n = (uintptr_t)kmap_get(&s->ac->m, k1, k2);
    int rc = n >= s->opts.max_connections_per_addr ||
                     kmap_put(&s->ac->m, k1, k2, (void *)(n + 1))
                 ? -1
                 : 0;
    pthread_mutex_unlock(&s->ac->mu);
    if (rc == 0) c->addr_counted = 1;
    return rc;
}

static void ac_free(pb_server *s) {
    if (s->is_sub || !s->ac) return; /* subs borrow the main server's */
    kmap_free(&s->ac->m);
    pthread_mutex_destroy(&s->ac->mu);
    free(s->ac);
    s->ac = NULL;
}

static void addr_release(pb_server *s, pb_conn *c) {
    uint64_t k1, k2;
    if (!c->addr_counted || !addr_key(c->peer, &k1, &k2)) return;
    c->addr_counted = 0;
    pthread_mutex_lock(&s->ac->mu);
    uintptr_t n = (uintptr_t)kmap_get(&s->ac->m, k1, k2);
    if (n > 1) s->ac->m.e[kmap_find(&s->ac->m, k1, k2)].v = (void *)(n - 1); /* in place */
    else kmap_del(&s->ac->m, k1, k2);
    pthread_mutex_unlock(&s->ac->mu);
}

void pb_server_opts_default(pb_server_opts *o) {
    memset(o, 0, sizeof *o);
    pb_broker_config_default(&o->broker);
    o->broker.is_server = 1;
    o->backlog = 511;
}

static void server_finish(pb_server *s);
static void on_exit_async_closed(uv_handle_t *h) { server_finish(h->data); }
static void on_main_mb_closed(void *ud) {
    pb_server *s = ud;
    pb_mloop *ml = s->ml;
    if (ml->loop_fini) ml->loop_fini(s->loop, 0, s->ud, ml->ud);
    uv_close((uv_handle_t *)&ml->exit_async, on_exit_async_closed);
}

static void server_maybe_done(pb_server *s) {
    if (!s->closing || !s->listen_closed || s->nconns) return;
    if (s->ml && !s->is_sub) {
        if (s->finishing || s->ml->njoined < s->ml->n - 1) return;
        s->finishing = 1;
        /* every other loop has ended: refuse posts here, then finish */
        pb__mailbox_close(s->ml->mb0, on_main_mb_closed, s);
        return;
    }
    server_finish(s);
}

static void server_finish(pb_server *s) {
    if (s->ml && !s->is_sub) {
        free(s->ml->w);
        free(s->ml);
    }
    if (s->unix_path) unlink(s->unix_path);
    if (!s->is_sub) pb__tls_ctx_free(s->tls);
    ac_free(s);
    void (*cb)(void *) = s->close_cb;
    void *ud = s->close_ud;
    free(s->unix_path);
    free(s);
    if (cb) cb(ud);
}

void pb__server_conn_gone(pb_server *s, pb_conn *c) {
    if (c->sprev) c->sprev->snext = c->snext;
    else s->conns = c->snext;
    if (c->snext) c->snext->sprev = c->sprev;
    c->snext = c->sprev = NULL;
    s->nconns--;
    if (s->ml) atomic_fetch_sub(&s->ml->total, 1);
    addr_release(s, c);
    server_maybe_done(s);
}

static void on_refused_closed(uv_handle_t *h) { free(h); }

void pb__server_root(const pb_server *s, pb_root_fn *fn, void **ud) {
    *fn = s->root;
    *ud = s->ud;
}

static void on_connection(uv_stream_t *ls, int status) {
    pb_server *s = ls->data;
    if (status < 0 || s->closing) return;
    pb_conn *c = pb__conn_alloc(s->loop, s->is_tcp, NULL);
    if (!c) {
        /* Accept and drop, or libuv stops accepting altogether. */
        uv_stream_t *tmp = malloc(s->is_tcp ? sizeof(uv_tcp_t) : sizeof(uv_pipe_t));
        if (!tmp) return;
        if (s->is_tcp) uv_tcp_init(s->loop, (uv_tcp_t *)tmp);
        else uv_pipe_init(s->loop, (uv_pipe_t *)tmp, 0);
        uv_accept(ls, tmp);
        uv_close((uv_handle_t *)tmp, on_refused_closed);
        return;
    }
    if (uv_accept(ls, &c->io.stream) < 0) {
        pb__conn_discard(c);
        return;
    }
    if (s->is_tcp) {
        struct sockaddr_storage ss;
        int len = sizeof ss;
        if (uv_tcp_getpeername(&c->io.tcp, (struct sockaddr *)&ss, &len) == 0)
            pb__format_addr((struct sockaddr *)&ss, c->peer, sizeof c->peer);
    }
    size_t total = s->ml ? atomic_load(&s->ml->total) : s->nconns;
    if (s->opts.max_connections && total >= s->opts.max_connections) {
        char msg[200];
        snprintf(msg, sizeof msg, "refusing %s: max_connections (%zu) reached", c->peer,
                 s->opts.max_connections);
        pb__server_limit(s, PB_LIMIT_TOTAL, msg);
        pb__conn_discard(c);
        return;
    }
    if (s->ac && addr_take(s, c) < 0) {
        char msg[200];
        snprintf(msg, sizeof msg, "refusing %s: max_connections_per_addr (%zu) reached",
                 c->peer, s->opts.max_connections_per_addr);
        pb__server_limit(s, PB_LIMIT_PER_ADDR, msg);
        pb__conn_discard(c);
        return;
    }
    if (s->tls) {
        pb_errbuf e;
        if (pb__tls_attach(c, s->tls, 1, NULL, &e) < 0) {
            pb__server_limit(s, PB_LIMIT_TOTAL, e.msg);
            pb__conn_discard(c);
            return;
        }
        c->connect_timeout_ms = s->tls_handshake_ms;
    }
    c->idle_ms = s->opts.idle_timeout_ms;
    c->server = s;
    c->cfg = &s->opts.broker;
    c->keepalive_s = s->opts.tcp_keepalive_s;
    c->snext = s->conns;
    if (s->conns) s->conns->sprev = c;
    s->conns = c;
    s->nconns++;
    if (s->ml) atomic_fetch_add(&s->ml->total, 1);
    if (!s->is_tcp) snprintf(c->peer, sizeof c->peer, "unix:%s", s->unix_path);
    pb__conn_start(c);
}

static pb_server *server_new(uv_loop_t *loop, const pb_server_opts *opts, pb_root_fn root,
                             void *ud, int is_tcp) {
    pb_server *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->loop = loop;
    if (opts) s->opts = *opts;
    else pb_server_opts_default(&s->opts);
    s->opts.broker.is_server = 1;
    if (s->opts.backlog <= 0) s->opts.backlog = 511;
    s->root = root;
    s->ud = ud;
    s->is_tcp = is_tcp;
    s->opts.tls = NULL; /* borrowed: only read by server_tls() during pb_listen_* */
    if (s->opts.max_connections_per_addr && is_tcp) {
        if (!(s->ac = calloc(1, sizeof *s->ac))) {
            free(s);
            return NULL;
        }
        pthread_mutex_init(&s->ac->mu, NULL);
    }
    return s;
}

/* Load the TLS settings of opts into s (while the caller's opts are valid). */
static int server_tls(pb_server *s, const pb_server_opts *opts, pb_errbuf *err) {
    if (!opts || !opts->tls) return 0;
    s->tls_handshake_ms = opts->tls->handshake_timeout_ms ? opts->tls->handshake_timeout_ms
                                                          : 10000;
    return pb__tls_ctx_new(opts->tls, 1, &s->tls, err);
}

/* A socket bound to ss with SO_REUSEPORT (every loop of a multi-loop
 * server has one, and the kernel spreads connections over them). */
static int reuseport_socket(const struct sockaddr_storage *ss, int backlog, uv_os_sock_t *out) {
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return -errno;
    int one = 1;
    socklen_t len = ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                               : sizeof(struct sockaddr_in);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0 ||
        bind(fd, (const struct sockaddr *)ss, len) < 0 ||
        /* listening at once, so that the kernel counts it in the group
         * before its loop's thread has started (connections wait) */
        listen(fd, backlog) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    *out = fd;
    return 0;
}

/* ---- extra loops: everything below runs on the worker's own thread,
 * except where noted */

static void worker_mb_closed(void *ud) {
    pb_worker *w = ud;
    if (w->ml->loop_fini) w->ml->loop_fini(&w->loop, w->index, w->loop_ud, w->ml->ud);
    /* nothing of ours is left on the loop: uv_run returns */
}

static void worker_sub_closed(void *ud) {
    pb_worker *w = ud;
    w->sub = NULL;
    pb__mailbox_close(w->mb, worker_mb_closed, w);
}

/* Posted by pb_server_close() on the main loop. */
static void worker_stop(void *ud) {
    pb_worker *w = ud;
    if (w->sub) pb_server_close(w->sub, worker_sub_closed, w);
}

static void on_walk_close(uv_handle_t *h, void *arg) {
    (void)arg;
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void *worker_main(void *arg) {
    pb_worker *w = arg;
    pb_server *sub = w->sub;
    w->loop_ud = w->ml->loop_init ? w->ml->loop_init(&w->loop, w->index, w->ml->ud) : w->ml->ud;
    sub->ud = w->loop_ud;
    uv_tcp_init(&w->loop, &sub->io.tcp);
    sub->io.handle.data = sub;
    int rc = uv_tcp_open(&sub->io.tcp, w->fd);
    if (rc < 0) close(w->fd);
    else rc = uv_listen(&sub->io.stream, sub->opts.backlog, on_connection);
    if (rc < 0) {
        char msg[160];
        snprintf(msg, sizeof msg, "loop %u cannot listen: %s", w->index, uv_strerror(rc));
        pb__server_limit(sub, PB_LIMIT_TOTAL, msg);
        worker_stop(w); /* serve nothing; wait for pb_server_close to join */
    }
    uv_run(&w->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&w->loop) == UV_EBUSY) {
        /* the application left handles open (see loop_fini): close them */
        uv_walk(&w->loop, on_walk_close, NULL);
        uv_run(&w->loop, UV_RUN_DEFAULT);
        uv_loop_close(&w->loop);
    }
    pb_mloop *ml = w->ml;
    atomic_store(&w->exited, 1);
    uv_async_send(&ml->exit_async); /* ml outlives every worker's thread */
    return NULL;
}

/* Main loop: join the workers that ended. */
static void on_worker_exit(uv_async_t *h) {
    pb_server *s = h->data;
    pb_mloop *ml = s->ml;
    for (unsigned i = 0; i + 1 < ml->n; i++) {
        pb_worker *w = &ml->w[i];
        if (!w->joined && atomic_load(&w->exited)) {
            pthread_join(w->thread, NULL);
            w->joined = 1;
            ml->njoined++;
        }
    }
    server_maybe_done(s);
}

static void on_failed_server_closed(uv_handle_t *h);

/* pb_listen_tcp with opts->loops > 1 (on the caller's thread). */
static int listen_multi(uv_loop_t *loop, struct sockaddr_storage *ss, const char *addr,
                        pb_server *s, unsigned n, pb_errbuf *err) {
    pb_mloop *ml = calloc(1, sizeof *ml);
    pb_worker *w = calloc(n - 1, sizeof *w);
    uv_os_sock_t fd0 = -1;
    unsigned nfd = 0, i;
    int rc = 0;
    if (!ml || !w) {
        rc = UV_ENOMEM;
        goto fail;
    }
    ml->n = n;
    ml->w = w;
    ml->ud = s->ud;
    ml->loop_init = s->opts.loop_init;
    ml->loop_fini = s->opts.loop_fini;
    if ((rc = reuseport_socket(ss, s->opts.backlog, &fd0)) < 0) goto fail;
    { /* port 0: the others bind the port the first one got */
        struct sockaddr_storage b;
        socklen_t bl = sizeof b;
        if (getsockname(fd0, (struct sockaddr *)&b, &bl) == 0) {
            if (ss->ss_family == AF_INET)
                ((struct sockaddr_in *)ss)->sin_port = ((struct sockaddr_in *)&b)->sin_port;
            else
                ((struct sockaddr_in6 *)ss)->sin6_port = ((struct sockaddr_in6 *)&b)->sin6_port;
        }
    }
    for (nfd = 0; nfd < n - 1; nfd++)
        if ((rc = reuseport_socket(ss, s->opts.backlog, &w[nfd].fd)) < 0) goto fail;
    for (i = 0; i < n - 1; i++) {
        w[i].ml = ml;
        w[i].index = i + 1;
        pb_server *sub = calloc(1, sizeof *sub);
        if (!sub || uv_loop_init(&w[i].loop) < 0) {
            free(sub);
            rc = UV_ENOMEM;
            goto fail_loops;
        }
        if (!(w[i].mb = pb__mailbox_new(&w[i].loop, 1))) {
            free(sub);
            uv_loop_close(&w[i].loop);
            rc = UV_ENOMEM;
            goto fail_loops;
        }
        sub->loop = &w[i].loop;
        sub->opts = s->opts;
        sub->root = s->root;
        sub->ud = s->ud;
        sub->is_tcp = 1;
        sub->tls = s->tls;
        sub->ac = s->ac;
        sub->tls_handshake_ms = s->tls_handshake_ms;
        sub->ml = ml;
        sub->is_sub = 1;
        w[i].sub = sub;
    }
    uv_tcp_init(loop, &s->io.tcp);
    s->io.handle.data = s;
    if ((rc = uv_tcp_open(&s->io.tcp, fd0)) < 0) close(fd0); /* else the handle owns it */
    fd0 = -1;
    if (rc < 0 || (rc = uv_listen(&s->io.stream, s->opts.backlog, on_connection)) < 0)
        goto fail_loops_handle;
    if (!(ml->mb0 = pb__mailbox_new(loop, 0))) {
        rc = UV_ENOMEM;
        fd0 = -1;
        goto fail_loops_handle;
    }
    uv_async_init(loop, &ml->exit_async, on_worker_exit);
    ml->exit_async.data = s;
    s->ml = ml;
    if (ml->loop_init) s->ud = ml->loop_init(loop, 0, ml->ud);
    for (i = 0; i < n - 1; i++) {
        if (pthread_create(&w[i].thread, NULL, worker_main, &w[i]) != 0) {
            /* no thread: stop that loop here, before it ever ran */
            pb_server *sub = w[i].sub;
            w[i].sub = NULL;
            close(w[i].fd);
            free(sub);
            pb__mailbox_close(w[i].mb, NULL, NULL);
            uv_run(&w[i].loop, UV_RUN_DEFAULT);
            uv_loop_close(&w[i].loop);
            w[i].joined = 1;
            ml->njoined++;
            pb__server_limit(s, PB_LIMIT_TOTAL, "cannot start a loop thread");
        }
    }
    return 0;

fail_loops_handle:
    for (unsigned k = 0; k < n - 1; k++) {
        if (!w[k].mb) break;
        free(w[k].sub);
        pb__mailbox_close(w[k].mb, NULL, NULL);
        uv_run(&w[k].loop, UV_RUN_DEFAULT);
        uv_loop_close(&w[k].loop);
    }
    for (unsigned k = 0; k < n - 1; k++) close(w[k].fd);
    free(w);
    free(ml);
    uv_close(&s->io.handle, on_failed_server_closed);
    return pb_err_set(err, PB_EIO, "cannot listen on %s: %s", addr, uv_strerror(rc));
fail_loops:
    for (unsigned k = 0; k < i; k++) {
        free(w[k].sub);
        pb__mailbox_close(w[k].mb, NULL, NULL);
        uv_run(&w[k].loop, UV_RUN_DEFAULT);
        uv_loop_close(&w[k].loop);
    }
fail:
    if (fd0 >= 0) close(fd0);
    for (unsigned k = 0; w && k < nfd; k++) close(w[k].fd);
    free(w);
    free(ml);
    pb__tls_ctx_free(s->tls);
    ac_free(s);
    free(s);
    if (rc == UV_ENOMEM) return pb_err_set(err, PB_ENOMEM, "out of memory");
    return pb_err_set(err, PB_EIO, "cannot listen on %s: %s", addr, uv_strerror(rc));
}

static void on_failed_server_closed(uv_handle_t *h) {
    pb_server *s = h->data;
    pb__tls_ctx_free(s->tls);
    ac_free(s);
    free(s->unix_path);
    free(s);
}

int pb_listen_tcp(uv_loop_t *loop, const char *host, int port, const pb_server_opts *opts,
                  pb_root_fn root, void *ud, pb_server **out, pb_errbuf *err) {
    pb__ignore_sigpipe();
    if (!loop || !out || port < 0 || port > 65535)
        return pb_err_set(err, PB_EINVAL, "listen: bad arguments");
    struct sockaddr_storage ss;
    int rc = pb__resolve(loop, host, port, &ss, err);
    if (rc < 0) return rc;
    pb_server *s = server_new(loop, opts, root, ud, 1);
    if (!s) return pb_err_set(err, PB_ENOMEM, "out of memory");
    if ((rc = server_tls(s, opts, err)) < 0) {
        ac_free(s);
        free(s);
        return rc;
    }
    char addr[80];
    pb__format_addr((struct sockaddr *)&ss, addr, sizeof addr);
    if (s->opts.loops > 1) {
        if (s->opts.loops > 1024) {
            unsigned n = s->opts.loops;
            pb__tls_ctx_free(s->tls);
            ac_free(s);
            free(s);
            return pb_err_set(err, PB_EINVAL, "listen: too many loops (%u)", n);
        }
        if ((rc = listen_multi(loop, &ss, addr, s, s->opts.loops, err)) < 0) return rc;
        *out = s;
        return 0;
    }
    uv_tcp_init(loop, &s->io.tcp);
    s->io.handle.data = s;
    rc = uv_tcp_bind(&s->io.tcp, (struct sockaddr *)&ss, 0);
    if (rc == 0) rc = uv_listen(&s->io.stream, s->opts.backlog, on_connection);
    if (rc < 0) {
        uv_close(&s->io.handle, on_failed_server_closed);
        return pb_err_set(err, PB_EIO, "cannot listen on %s: %s", addr, uv_strerror(rc));
    }
    *out = s;
    return 0;
}

int pb_listen_unix(uv_loop_t *loop, const char *path, const pb_server_opts *opts,
                   pb_root_fn root, void *ud, pb_server **out, pb_errbuf *err) {
    pb__ignore_sigpipe();
    if (!loop || !out || !path || !*path)
        return pb_err_set(err, PB_EINVAL, "listen: bad arguments");
    if (opts && opts->loops > 1)
        return pb_err_set(err, PB_EINVAL, "listen: several loops need a TCP listener");
    pb_server *s = server_new(loop, opts, root, ud, 0);
    if (!s) return pb_err_set(err, PB_ENOMEM, "out of memory");
    s->unix_path = strdup(path);
    if (!s->unix_path) {
        free(s);
        return pb_err_set(err, PB_ENOMEM, "out of memory");
    }
    int trc = server_tls(s, opts, err);
    if (trc < 0) {
        free(s->unix_path);
        free(s);
        return trc;
    }
    uv_pipe_init(loop, &s->io.pipe, 0);
    s->io.handle.data = s;
    int rc = uv_pipe_bind(&s->io.pipe, path);
    if (rc == 0) rc = uv_listen(&s->io.stream, s->opts.backlog, on_connection);
    if (rc < 0) {
        free(s->unix_path);
        s->unix_path = NULL; /* not ours to unlink */
        uv_close(&s->io.handle, on_failed_server_closed);
        return pb_err_set(err, PB_EIO, "cannot listen on unix:%s: %s", path, uv_strerror(rc));
    }
    *out = s;
    return 0;
}

int pb_server_port(const pb_server *s) {
    if (!s || !s->is_tcp) return 0;
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getsockname(&s->io.tcp, (struct sockaddr *)&ss, &len) < 0) return 0;
    if (ss.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return 0;
}

size_t pb_server_connections(const pb_server *s) {
    if (!s) return 0;
    return s->ml ? atomic_load(&s->ml->total) : s->nconns;
}

unsigned pb_server_loops(const pb_server *s) { return s && s->ml ? s->ml->n : 1; }

uv_loop_t *pb_server_loop(const pb_server *s, unsigned index) {
    if (!s) return NULL;
    if (index == 0) return s->loop;
    if (!s->ml || index >= s->ml->n) return NULL;
    return &s->ml->w[index - 1].loop;
}

static void on_listen_closed(uv_handle_t *h) {
    pb_server *s = h->data;
    s->listen_closed = 1;
    server_maybe_done(s);
}

void pb_server_close(pb_server *s, void (*cb)(void *ud), void *ud) {
    if (!s || s->closing) return;
    s->closing = 1;
    s->close_cb = cb;
    s->close_ud = ud;
    uv_close(&s->io.handle, on_listen_closed);
    for (pb_conn *c = s->conns; c; c = c->snext)
        pb__conn_close(c, PB_ECLOSED, "server closing", 1);
    if (s->ml && !s->is_sub)
        for (unsigned i = 0; i + 1 < s->ml->n; i++)
            if (!s->ml->w[i].joined) pb_loop_post(&s->ml->w[i].loop, worker_stop, &s->ml->w[i]);
}
