/*
 * server.c - listening sockets (TCP and UNIX) that hand every accepted
 * connection a broker serving the root object the application chooses.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "transport_int.h"

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
    pb_conn *conns;            /* live accepted connections */
    size_t nconns;
    void (*close_cb)(void *ud);
    void *close_ud;
    char *unix_path;           /* unlinked on close */
    pb_tls_ctx *tls;           /* NULL: plain */
    unsigned tls_handshake_ms;
    struct {                   /* rate-limited limit log, per kind */
        uint64_t last;         /* uv_now of the last line; 0: never */
        unsigned long suppressed;
    } lim[PB_LIMIT_KINDS];
};

/* Limit hits: the first of each kind is logged, then at most one line per
 * PB_LIMIT_LOG_MS carrying the number suppressed meanwhile; a peer hammering
 * a limit cannot flood the log. */
#define PB_LIMIT_LOG_MS 10000
void pb__server_limit(pb_server *s, int kind, const char *msg) {
    if (kind < 0 || kind >= PB_LIMIT_KINDS) return;
    uint64_t now = uv_now(s->loop) + 1; /* +1: 0 means never */
    if (s->lim[kind].last && now - s->lim[kind].last < PB_LIMIT_LOG_MS) {
        s->lim[kind].suppressed++;
        return;
    }
    char line[320];
    if (s->lim[kind].suppressed)
        snprintf(line, sizeof line, "%s (%lu more like it in the last %u s)", msg,
                 s->lim[kind].suppressed, PB_LIMIT_LOG_MS / 1000);
    else
        snprintf(line, sizeof line, "%s", msg);
    s->lim[kind].last = now;
    s->lim[kind].suppressed = 0;
    if (s->opts.log) s->opts.log(line, s->opts.log_ud);
    else fprintf(stderr, "pb: %s\n", line);
}

/* Length of the address part of a "1.2.3.4:5" / "[::1]:5" peer string. */
static size_t addr_key_len(const char *peer) {
    const char *colon = strrchr(peer, ':');
    return colon ? (size_t)(colon - peer) : strlen(peer);
}

static size_t conns_from(const pb_server *s, const char *peer) {
    size_t klen = addr_key_len(peer), n = 0;
    for (const pb_conn *c = s->conns; c; c = c->snext)
        if (addr_key_len(c->peer) == klen && memcmp(c->peer, peer, klen) == 0) n++;
    return n;
}

void pb_server_opts_default(pb_server_opts *o) {
    memset(o, 0, sizeof *o);
    pb_broker_config_default(&o->broker);
    o->broker.is_server = 1;
    o->backlog = 511;
}

static void server_maybe_done(pb_server *s) {
    if (!s->closing || !s->listen_closed || s->nconns) return;
    if (s->unix_path) unlink(s->unix_path);
    pb__tls_ctx_free(s->tls);
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
    server_maybe_done(s);
}

static void on_refused_closed(uv_handle_t *h) { free(h); }

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
    if (s->opts.max_connections && s->nconns >= s->opts.max_connections) {
        char msg[200];
        snprintf(msg, sizeof msg, "refusing %s: max_connections (%zu) reached", c->peer,
                 s->opts.max_connections);
        pb__server_limit(s, PB_LIMIT_TOTAL, msg);
        pb__conn_discard(c);
        return;
    }
    if (s->opts.max_connections_per_addr && s->is_tcp &&
        conns_from(s, c->peer) >= s->opts.max_connections_per_addr) {
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
    if (!s->is_tcp) snprintf(c->peer, sizeof c->peer, "unix:%s", s->unix_path);
    pb__conn_start(c, 1, s->root, s->ud);
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
    return s;
}

/* Load the TLS settings of opts into s (while the caller's opts are valid). */
static int server_tls(pb_server *s, const pb_server_opts *opts, pb_errbuf *err) {
    if (!opts || !opts->tls) return 0;
    s->tls_handshake_ms = opts->tls->handshake_timeout_ms ? opts->tls->handshake_timeout_ms
                                                          : 10000;
    return pb__tls_ctx_new(opts->tls, 1, &s->tls, err);
}

static void on_failed_server_closed(uv_handle_t *h) {
    pb_server *s = h->data;
    pb__tls_ctx_free(s->tls);
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
        free(s);
        return rc;
    }
    uv_tcp_init(loop, &s->io.tcp);
    s->io.handle.data = s;
    char addr[80];
    pb__format_addr((struct sockaddr *)&ss, addr, sizeof addr);
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

size_t pb_server_connections(const pb_server *s) { return s ? s->nconns : 0; }

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
}
