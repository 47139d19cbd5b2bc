/*
 * conn.c - one PB connection on a libuv stream, and the client side.
 *
 * A pb_conn owns a stream handle, a timer and a pb_broker.  Bytes read go
 * straight into pb_broker_feed from a per-thread 64 KiB buffer (the broker
 * copies what it keeps), so idle connections hold no read buffer.
 *
 * Writes are batched per loop iteration: output_ready only puts the
 * connection on its loop's flush list; a uv_check (right after the poll
 * phase, i.e. after every read callback of this iteration) and a uv_idle
 * (keeps the poll from blocking while output waits, and flushes output
 * queued from timers) write everything each broker has queued with one
 * uv_try_write.  Whatever the kernel does not take at once is copied into
 * one owned buffer for a uv_write, so the broker's own buffer never has to
 * stay put while libuv holds a pointer into it.
 *
 * Closing never frees anything in the middle of a callback: it stops
 * reading and uv_close()s the handles; the last close callback tells the
 * broker the connection is lost (failing pending calls), calls the
 * application's lost/connect callback, then frees.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "transport_int.h"
#include "broker_int.h"

#define PB_READ_BUF_SIZE 65536
#define PB_LINGER_MS 2000          /* graceful close: how long to wait for output to drain */
#define PB_DEFAULT_CONNECT_MS 10000
#define PB_DEFAULT_MAX_OUTPUT (16u << 20)

/* --------------------------------------------------------------- per-loop */

struct pb_uvctx {
    uv_loop_t *loop;
    uv_check_t check;
    uv_idle_t idle;
    uv_timer_t timer;       /* set for the earliest deadline in heap */
    pb_conn **heap;         /* connections with a deadline, min-heap on armed_deadline */
    size_t nheap, capheap;
    uint64_t timer_at;      /* what timer is set for (UINT64_MAX: stopped) */
    pb_conn *whead;         /* connections with output to flush */
    unsigned refs;
    int active;             /* check + idle started */
    int closing;            /* handle close callbacks outstanding */
    pb_uvctx *next;
};

/* A write that the kernel did not take at once: the request and a copy of
 * the bytes, in one allocation, only while it is in flight. */
typedef struct pb_wreq {
    uv_write_t req;
    size_t len;
    uint8_t data[];
} pb_wreq;

static _Thread_local pb_uvctx *g_ctxs;
static _Thread_local char g_rbuf[PB_READ_BUF_SIZE];

static void conn_flush(pb_conn *c);

static void ctx_flush_all(pb_uvctx *x) {
    pb_conn *c;
    while ((c = x->whead) != NULL) {
        x->whead = c->wnext;
        if (x->whead) x->whead->wprev = NULL;
        c->wnext = c->wprev = NULL;
        c->in_wlist = 0;
        conn_flush(c);
    }
    if (x->active) {
        uv_check_stop(&x->check);
        uv_idle_stop(&x->idle);
        x->active = 0;
    }
}

static void on_check(uv_check_t *h) { ctx_flush_all(h->data); }

/* ------------------------------------------------------- per-loop timers */

static void on_conn_timer(pb_conn *c);

static void heap_set(pb_uvctx *x, size_t i, pb_conn *c) {
    x->heap[i] = c;
    c->hidx = (uint32_t)(i + 1);
}

static void heap_up(pb_uvctx *x, size_t i) {
    pb_conn *c = x->heap[i];
    while (i && x->heap[(i - 1) / 2]->armed_deadline > c->armed_deadline) {
        heap_set(x, i, x->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    heap_set(x, i, c);
}

static void heap_down(pb_uvctx *x, size_t i) {
    pb_conn *c = x->heap[i];
    for (;;) {
        size_t k = 2 * i + 1;
        if (k >= x->nheap) break;
        if (k + 1 < x->nheap && x->heap[k + 1]->armed_deadline < x->heap[k]->armed_deadline) k++;
        if (x->heap[k]->armed_deadline >= c->armed_deadline) break;
        heap_set(x, i, x->heap[k]);
        i = k;
    }
    heap_set(x, i, c);
}

static void on_ctx_timer(uv_timer_t *t);

/* Point the loop's timer at the earliest deadline. */
static void ctx_rearm(pb_uvctx *x) {
    uint64_t dl = x->nheap ? x->heap[0]->armed_deadline : UINT64_MAX;
    if (dl == x->timer_at) return;
    x->timer_at = dl;
    if (dl == UINT64_MAX) {
        uv_timer_stop(&x->timer);
        return;
    }
    uint64_t now = uv_now(x->loop);
    uv_timer_start(&x->timer, on_ctx_timer, dl > now ? dl - now : 0, 0);
}

static void ctimer_remove(pb_conn *c) {
    pb_uvctx *x = c->ctx;
    if (!c->hidx) return;
    size_t i = c->hidx - 1;
    c->hidx = 0;
    pb_conn *last = x->heap[--x->nheap];
    if (i < x->nheap) {
        heap_set(x, i, last);
        heap_up(x, i);
        heap_down(x, last->hidx - 1);
    }
}

/* Call on_conn_timer(c) at loop time dl (UINT64_MAX: never). */
static void ctimer_set(pb_conn *c, uint64_t dl) {
    pb_uvctx *x = c->ctx;
    if (c->hidx && c->armed_deadline == dl) return;
    ctimer_remove(c);
    c->armed_deadline = dl;
    if (dl != UINT64_MAX) {
        if (x->nheap == x->capheap) {
            size_t cap = x->capheap ? x->capheap * 2 : 64;
            pb_conn **h = realloc(x->heap, cap * sizeof *h);
            if (!h) { /* no memory: the deadline is missed; try at the next arm */
                c->armed_deadline = UINT64_MAX;
                return;
            }
            x->heap = h;
            x->capheap = cap;
        }
        heap_set(x, x->nheap++, c);
        heap_up(x, x->nheap - 1);
    }
    ctx_rearm(x);
}

static void ctimer_start(pb_conn *c, uint64_t ms) { ctimer_set(c, uv_now(c->loop) + ms); }
static void ctimer_stop(pb_conn *c) { ctimer_set(c, UINT64_MAX); }

static void on_ctx_timer(uv_timer_t *t) {
    pb_uvctx *x = t->data;
    x->timer_at = UINT64_MAX;
    uint64_t now = uv_now(x->loop);
    while (x->nheap && x->heap[0]->armed_deadline <= now) {
        pb_conn *c = x->heap[0];
        ctimer_remove(c);
        c->armed_deadline = UINT64_MAX;
        on_conn_timer(c); /* may re-arm c, close others (never frees a conn here) */
    }
    ctx_rearm(x);
}

static void on_idle(uv_idle_t *h) { ctx_flush_all(h->data); }

static pb_uvctx *ctx_get(uv_loop_t *loop) {
    for (pb_uvctx *x = g_ctxs; x; x = x->next)
        if (x->loop == loop) {
            x->refs++;
            return x;
        }
    pb_uvctx *x = calloc(1, sizeof *x);
    if (!x) return NULL;
    x->loop = loop;
    uv_check_init(loop, &x->check);
    uv_idle_init(loop, &x->idle);
    uv_timer_init(loop, &x->timer);
    x->check.data = x->idle.data = x->timer.data = x;
    x->timer_at = UINT64_MAX;
    /* They never keep a loop alive on their own: connections do. */
    uv_unref((uv_handle_t *)&x->check);
    uv_unref((uv_handle_t *)&x->idle);
    uv_unref((uv_handle_t *)&x->timer);
    x->refs = 1;
    x->next = g_ctxs;
    g_ctxs = x;
    return x;
}

static void ctx_closed(uv_handle_t *h) {
    pb_uvctx *x = h->data;
    if (--x->closing == 0) {
        free(x->heap);
        free(x);
    }
}

static void ctx_release(pb_uvctx *x) {
    if (!x || --x->refs) return;
    for (pb_uvctx **p = &g_ctxs; *p; p = &(*p)->next)
        if (*p == x) {
            *p = x->next;
            break;
        }
    x->closing = 3;
    uv_close((uv_handle_t *)&x->check, ctx_closed);
    uv_close((uv_handle_t *)&x->idle, ctx_closed);
    uv_close((uv_handle_t *)&x->timer, ctx_closed);
}

static void wlist_remove(pb_conn *c) {
    if (!c->in_wlist) return;
    if (c->wprev) c->wprev->wnext = c->wnext;
    else c->ctx->whead = c->wnext;
    if (c->wnext) c->wnext->wprev = c->wprev;
    c->wnext = c->wprev = NULL;
    c->in_wlist = 0;
}

static void schedule_flush(pb_conn *c) {
    if (c->in_wlist || c->handles_closed || (c->closing && !c->lingering)) return;
    pb_uvctx *x = c->ctx;
    c->wprev = NULL;
    c->wnext = x->whead;
    if (x->whead) x->whead->wprev = c;
    x->whead = c;
    c->in_wlist = 1;
    if (!x->active) {
        uv_check_start(&x->check, on_check);
        uv_idle_start(&x->idle, on_idle);
        x->active = 1;
    }
}

/* ------------------------------------------------------ broker -> conn */

static void cb_output_ready(pb_broker *b, void *ud);

/* A broker made here has our callbacks, and its ud is the connection. */
pb_conn *pb_conn_of(pb_broker *b) { return pb__broker_cb_ud(b, cb_output_ready); }

/* ------------------------------------------------------------- lifecycle */

pb_conn *pb__conn_alloc(uv_loop_t *loop, int is_tcp, pb_errbuf *err) {
    pb_conn *c = calloc(1, sizeof *c);
    if (!c) {
        pb_err_set(err, PB_ENOMEM, "out of memory");
        return NULL;
    }
    c->ctx = ctx_get(loop);
    if (!c->ctx) {
        free(c);
        pb_err_set(err, PB_ENOMEM, "out of memory");
        return NULL;
    }
    c->loop = loop;
    c->is_tcp = is_tcp ? 1 : 0;
    int rc = is_tcp ? uv_tcp_init(loop, &c->io.tcp) : uv_pipe_init(loop, &c->io.pipe, 0);
    if (rc < 0) {
        ctx_release(c->ctx);
        free(c);
        pb_err_set(err, PB_EIO, "cannot create socket: %s", uv_strerror(rc));
        return NULL;
    }
    c->io.handle.data = c;
    c->pending_handles = 1;
    c->armed_deadline = UINT64_MAX;
    c->state = CONN_CONNECTING;
    return c;
}

static void conn_final(pb_conn *c) {
    const char *why = c->close_why ? c->close_why : "connection closed";
    wlist_remove(c);
    if (c->broker) pb_broker_connection_lost(c->broker, why);
    if (c->cl) {
        if (c->ever_up) {
            if (c->cl->on_lost) c->cl->on_lost(c, why, c->cl->ud);
        } else if (c->cl->on_connect) {
            c->cl->on_connect(NULL, c->close_code ? c->close_code : PB_ECLOSED, why, c->cl->ud);
        }
    }
    if (c->broker) pb_broker_free(c->broker);
    c->broker = NULL;
    if (c->server) pb__server_conn_gone(c->server, c);
    ctx_release(c->ctx);
    pb__tls_free(c);
    free(c->wreq);
    if (c->cl) free(c->cl->creq);
    free(c->cl);
    free(c->close_why);
    free(c);
}

static void conn_release(pb_conn *c) {
    if (--c->pending_handles == 0) conn_final(c);
}

static void on_handle_closed(uv_handle_t *h) { conn_release(h->data); }

/* Used when setup failed after pb__conn_alloc: still goes through uv_close
 * (the handles are initialised) but reports nothing. */
void pb__conn_discard(pb_conn *c) {
    if (c->cl) c->cl->on_connect = NULL, c->cl->on_lost = NULL;
    c->closing = 1;
    c->handles_closed = 1;
    ctimer_stop(c);
    uv_close(&c->io.handle, on_handle_closed);
}

static void finish_close(pb_conn *c) {
    if (c->handles_closed) return;
    c->handles_closed = 1;
    c->lingering = 0;
    wlist_remove(c);
    ctimer_stop(c);
    uv_close(&c->io.handle, on_handle_closed);
}

void pb__conn_close(pb_conn *c, int code, const char *why, int graceful) {
    if (c->closing) return;
    c->closing = 1;
    c->close_code = code;
    c->close_why = strdup(why ? why : "connection closed");
    if (c->reading) {
        uv_read_stop(&c->io.stream);
        c->reading = 0;
    }
    if (c->cl && c->cl->gai) uv_cancel((uv_req_t *)c->cl->gai); /* its callback still comes */
    if (graceful && (c->broker || (c->tls && c->state >= CONN_HANDSHAKE)) &&
        !c->handles_closed) {
        /* Like Twisted's loseConnection: what is queued still goes out. */
        if (c->tls) pb__tls_shutdown(c); /* then TLS close_notify */
        c->lingering = 1;
        ctimer_start(c, PB_LINGER_MS);
        conn_flush(c); /* closes at once when nothing is pending */
        return;
    }
    finish_close(c);
}

void pb_conn_close(pb_conn *c) {
    if (c) pb__conn_close(c, PB_ECLOSED, "connection closed locally", 1);
}

static void conn_uv_error(pb_conn *c, int uverr, const char *what) {
    char msg[160];
    snprintf(msg, sizeof msg, "%s %s: %s", what, c->peer[0] ? c->peer : "peer",
             uv_strerror(uverr));
    pb__conn_close(c, uverr == UV_ETIMEDOUT ? PB_ETIMEOUT : PB_EIO, msg, 0);
}

/* ------------------------------------------------------------------ timer */

static void arm_timer(pb_conn *c) {
    if (c->closing) return;
    uint64_t dl = UINT64_MAX;
    if (c->state != CONN_UP && c->connect_timeout_ms) {
        return; /* the connect timeout stays armed until the handshake is done */
    }
    if (c->broker) dl = pb_broker_next_deadline(c->broker);
    if (c->idle_ms && c->idle_deadline < dl) dl = c->idle_deadline;
    ctimer_set(c, dl);
}

static void on_conn_timer(pb_conn *c) {
    if (c->lingering) { /* output did not drain in time */
        finish_close(c);
        return;
    }
    if (c->closing) return;
    if (c->state != CONN_UP && c->connect_timeout_ms) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s %s timed out after %u ms",
                 c->tls && !pb__tls_handshake_done(c) ? "TLS handshake with" : "connection to",
                 c->peer[0] ? c->peer : "peer", c->connect_timeout_ms);
        pb__conn_close(c, PB_ETIMEOUT, msg, 0);
        return;
    }
    if (c->idle_ms && uv_now(c->loop) >= c->idle_deadline) { /* lazy: moved on only here */
        c->idle_deadline = c->last_io + c->idle_ms;
        if (uv_now(c->loop) >= c->idle_deadline) {
            char msg[160];
            snprintf(msg, sizeof msg, "closing %s: idle for %u ms",
                     c->peer[0] ? c->peer : "peer", c->idle_ms);
            if (c->server) pb__server_limit(c->server, PB_LIMIT_IDLE, msg);
            pb__conn_close(c, PB_ETIMEOUT, msg, 1);
            return;
        }
    }
    if (!c->broker) {
        arm_timer(c);
        return;
    }
    pb_broker_tick(c->broker, uv_now(c->loop));
    arm_timer(c);
}

/* ------------------------------------------------------------------ write */

static void update_read_state(pb_conn *c);

size_t pb__conn_write_pending(const pb_conn *c) { return c && c->wreq ? c->wreq->len : 0; }

static void on_write(uv_write_t *req, int status) {
    pb_conn *c = req->data;
    free(c->wreq);
    c->wreq = NULL;
    c->writing = 0;
    if (status < 0) {
        if (status == UV_ECANCELED || c->handles_closed) return;
        if (c->lingering) finish_close(c);
        else conn_uv_error(c, status, "write to");
        return;
    }
    conn_flush(c);
}

/* Write everything the broker has queued: one uv_try_write, the rest (if
 * any) copied into one uv_write. */
static void conn_flush(pb_conn *c) {
    if (c->handles_closed || (!c->broker && !c->tls) || (c->closing && !c->lingering)) return;
    if (!c->writing) {
        const uint8_t *data;
        size_t n;
        /* TLS hook: with TLS the bytes are tls.c's ciphertext */
        while ((n = c->tls ? pb__tls_output(c, &data) : pb_broker_output(c->broker, &data)) > 0) {
            size_t chunk = n > (1u << 30) ? (1u << 30) : n;
            uv_buf_t b = uv_buf_init((char *)(uintptr_t)data, (unsigned)chunk);
            int r = uv_try_write(&c->io.stream, &b, 1);
            if (r == UV_EAGAIN || r == UV_ENOSYS) r = 0;
            if (r < 0) {
                if (c->lingering) {
                    finish_close(c);
                } else {
                    conn_uv_error(c, r, "write to");
                }
                return;
            }
            if (r > 0) c->last_io = uv_now(c->loop);
            if ((size_t)r == chunk) {
                if (c->tls) pb__tls_consume(c, chunk);
                else pb_broker_output_consume(c->broker, chunk);
                continue;
            }
            /* The kernel is full: hand the rest to libuv from our own copy. */
            size_t rest = n - (size_t)r;
            pb_wreq *w = rest <= SIZE_MAX - sizeof *w ? malloc(sizeof *w + rest) : NULL;
            if (!w) {
                pb__conn_close(c, PB_ENOMEM, "out of memory", 0);
                return;
            }
            memcpy(w->data, data + r, rest);
            w->len = rest;
            w->req.data = c;
            if (c->tls) pb__tls_consume(c, n);
            else pb_broker_output_consume(c->broker, n);
            c->wreq = w;
            uv_buf_t wb = uv_buf_init((char *)w->data, (unsigned)rest);
            int wr = uv_write(&w->req, &c->io.stream, &wb, 1, on_write);
            if (wr < 0) {
                free(c->wreq);
                c->wreq = NULL;
                if (c->lingering) finish_close(c);
                else conn_uv_error(c, wr, "write to");
                return;
            }
            c->writing = 1;
            break;
        }
    }
    if (c->lingering) {
        if (!c->writing) finish_close(c);
        return;
    }
    update_read_state(c);
    arm_timer(c);
}

/* ------------------------------------------------------------------- read */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    (void)h;
    (void)suggested;
    *buf = uv_buf_init(g_rbuf, sizeof g_rbuf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    pb_conn *c = s->data;
    if (nread == 0 || c->closing) return;
    if (nread < 0) {
        if (nread == UV_EOF) {
            char msg[160];
            snprintf(msg, sizeof msg, "connection closed by %s", c->peer[0] ? c->peer : "peer");
            pb__conn_close(c, PB_ECLOSED, msg, 0);
        } else {
            conn_uv_error(c, (int)nread, "read from");
        }
        return;
    }
    c->last_io = uv_now(c->loop);
    if (c->tls) { /* TLS hook: decrypt, then feed the broker */
        pb__tls_feed(c, (const uint8_t *)buf->base, (size_t)nread);
        if (c->closing) return;
        schedule_flush(c); /* handshake records, alerts */
        update_read_state(c);
        arm_timer(c);
        return;
    }
    pb_broker_tick(c->broker, uv_now(c->loop));
    int rc = pb_broker_feed(c->broker, (const uint8_t *)buf->base, (size_t)nread);
    if (c->closing) return; /* the broker (or a handler) closed it */
    if (rc < 0) {
        const char *m = pb_broker_errmsg(c->broker);
        pb__conn_close(c, rc, m && *m ? m : pb_strerror(rc), 1);
        return;
    }
    update_read_state(c);
    arm_timer(c);
}

/* Back-pressure: stop reading while the broker holds too much output for
 * this peer (or our write in flight is that big), resume once drained. */
static void update_read_state(pb_conn *c) {
    if (c->closing || !c->broker || c->state < CONN_HANDSHAKE) return;
    size_t lim = c->cfg && c->cfg->max_output ? c->cfg->max_output : PB_DEFAULT_MAX_OUTPUT;
    int pause = pb_broker_want_read_paused(c->broker) ||
                (c->writing && c->wreq && c->wreq->len >= lim);
    if (pause && c->reading) {
        uv_read_stop(&c->io.stream);
        c->reading = 0;
        c->read_paused = 1;
    } else if (!pause && !c->reading) {
        if (uv_read_start(&c->io.stream, on_alloc, on_read) == 0) {
            c->reading = 1;
            c->read_paused = 0;
        }
    }
}

/* ------------------------------------------------------- broker callbacks */

static void cb_output_ready(pb_broker *b, void *ud) {
    (void)b;
    schedule_flush(ud);
}

static void cb_close(pb_broker *b, int code, const char *msg, void *ud) {
    (void)b;
    pb_conn *c = ud;
    /* The broker drops a peer for a protocol violation or a hit limit:
     * say so once (rate-limited per server, so a flood of bad peers cannot
     * flood the log). */
    if (c->server && !c->closing) {
        char line[300];
        snprintf(line, sizeof line, "closing %s: %s (%s)", c->peer[0] ? c->peer : "peer",
                 msg ? msg : "", pb_strerror(code));
        pb__server_limit(c->server, PB_LIMIT_PROTOCOL, line);
    }
    pb__conn_close(c, code, msg, 1);
}

static void cb_connected(pb_broker *b, void *ud) {
    (void)b;
    pb_conn *c = ud;
    if (c->closing || c->state == CONN_UP) return;
    c->state = CONN_UP;
    c->ever_up = 1;
    c->connect_timeout_ms = 0;
    ctimer_stop(c); /* the connect timeout; now the broker's deadlines */
    arm_timer(c);
    if (c->cl && c->cl->on_connect) c->cl->on_connect(c, 0, NULL, c->cl->ud);
}

static _Atomic int g_log = -1; /* PB_LOG, read once (from any loop's thread) */
/* The loop's clock, so deadlines of calls made after an idle spell start now. */
static uint64_t cb_now_ms(void *ud) { return uv_now(((pb_conn *)ud)->loop); }

static void cb_log(pb_broker *b, const char *msg, void *ud) {
    (void)b;
    pb_conn *c = ud;
    if (g_log < 0) {
        const char *e = getenv("PB_LOG");
        g_log = e && *e && strcmp(e, "0") != 0;
    }
    if (g_log) fprintf(stderr, "pb[%s]: %s\n", c->peer, msg);
}

/* Make the broker and start PB: at once on plain sockets, once the TLS
 * handshake is done with TLS. */
static int conn_start_broker(pb_conn *c) {
    pb_broker_config cfg;
    if (c->cfg) cfg = *c->cfg;
    else pb_broker_config_default(&cfg);
    cfg.is_server = c->server != NULL;
    pb_broker_callbacks cb = {
        .ud = c,
        .output_ready = cb_output_ready,
        .close = cb_close,
        .connected = cb_connected,
        .log = cb_log,
        .now_ms = cb_now_ms,
    };
    c->broker = pb_broker_new(&cfg, &cb, NULL);
    if (!c->broker) {
        pb__conn_close(c, PB_ENOMEM, "out of memory", 0);
        return PB_ENOMEM;
    }
    pb_root_fn root = NULL;
    void *root_ud = NULL;
    if (c->server) pb__server_root(c->server, &root, &root_ud);
    if (root) { /* the root function may want the broker (cred's does) */
        pb_object *r = root(c->broker, root_ud);
        if (!r) {
            pb__conn_close(c, PB_EAUTH, "connection refused by the application", 0);
            return PB_EAUTH;
        }
        int src = pb_broker_set_root(c->broker, r);
        pb_object_unref(r); /* the broker holds its own reference */
        if (src < 0) {
            pb__conn_close(c, src, pb_strerror(src), 0);
            return src;
        }
    }
    pb_broker_tick(c->broker, uv_now(c->loop));
    schedule_flush(c); /* the server's dialect offer */
    arm_timer(c);
    return 0;
}

int pb__conn_tls_up(pb_conn *c) { return conn_start_broker(c); }

int pb__conn_start(pb_conn *c) {
    c->state = CONN_HANDSHAKE;
    if (c->is_tcp) {
        uv_tcp_nodelay(&c->io.tcp, 1);
        if (c->keepalive_s > 0) uv_tcp_keepalive(&c->io.tcp, 1, (unsigned)c->keepalive_s);
        if (!c->peer[0]) {
            struct sockaddr_storage ss;
            int len = sizeof ss;
            if (uv_tcp_getpeername(&c->io.tcp, (struct sockaddr *)&ss, &len) == 0)
                pb__format_addr((struct sockaddr *)&ss, c->peer, sizeof c->peer);
        }
    }
    c->last_io = uv_now(c->loop);
    c->idle_deadline = c->last_io + c->idle_ms;
    if (!c->tls) {
        int brc = conn_start_broker(c);
        if (brc < 0) return brc;
    } else if (c->server && c->connect_timeout_ms) { /* TLS handshake deadline */
        ctimer_start(c, c->connect_timeout_ms);
    }
    int rc = uv_read_start(&c->io.stream, on_alloc, on_read);
    if (rc < 0) {
        conn_uv_error(c, rc, "read from");
        return PB_EIO;
    }
    c->reading = 1;
    if (c->tls) {
        pb__tls_start(c); /* client: the ClientHello */
        if (c->closing) return PB_EPROTO;
        schedule_flush(c);
    }
    return 0;
}

/* ----------------------------------------------------------------- client */

void pb_client_opts_default(pb_client_opts *o) {
    memset(o, 0, sizeof *o);
    pb_broker_config_default(&o->broker);
    o->connect_timeout_ms = PB_DEFAULT_CONNECT_MS;
}

void pb__format_addr(const struct sockaddr *sa, char *out, size_t n) {
    char ip[64] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        uv_ip4_name(in, ip, sizeof ip);
        port = ntohs(in->sin_port);
        snprintf(out, n, "%s:%d", ip, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        uv_ip6_name(in6, ip, sizeof ip);
        port = ntohs(in6->sin6_port);
        snprintf(out, n, "[%s]:%d", ip, port);
    } else {
        snprintf(out, n, "?");
    }
}

static int numeric_addr(const char *host, int port, struct sockaddr_storage *ss) {
    memset(ss, 0, sizeof *ss);
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0) return 1;
    memset(ss, 0, sizeof *ss);
    if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0) return 1;
    return 0;
}

/* First IPv4 address, else the first IPv6 one (Twisted's connectTCP and
 * listenTCP speak IPv4 for "localhost"). */
static const struct addrinfo *pick_addr(const struct addrinfo *res) {
    for (const struct addrinfo *a = res; a; a = a->ai_next)
        if (a->ai_family == AF_INET) return a;
    for (const struct addrinfo *a = res; a; a = a->ai_next)
        if (a->ai_family == AF_INET6) return a;
    return NULL;
}

static void set_port(struct sockaddr_storage *ss, int port) {
    if (ss->ss_family == AF_INET) ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
    else if (ss->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
}

int pb__resolve(uv_loop_t *loop, const char *host, int port, struct sockaddr_storage *ss,
                pb_errbuf *err) {
    if (!host || !*host) host = "0.0.0.0";
    if (numeric_addr(host, port, ss)) return 0;
    uv_getaddrinfo_t req;
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = uv_getaddrinfo(loop, &req, NULL, host, NULL, &hints);
    if (rc < 0)
        return pb_err_set(err, PB_EIO, "cannot resolve %s: %s", host, uv_strerror(rc));
    const struct addrinfo *a = pick_addr(req.addrinfo);
    if (!a) {
        uv_freeaddrinfo(req.addrinfo);
        return pb_err_set(err, PB_EIO, "cannot resolve %s: no address", host);
    }
    memset(ss, 0, sizeof *ss);
    memcpy(ss, a->ai_addr, a->ai_addrlen);
    set_port(ss, port);
    uv_freeaddrinfo(req.addrinfo);
    return 0;
}

static void on_connected(uv_connect_t *req, int status) {
    pb_conn *c = req->data;
    free(c->cl->creq);
    c->cl->creq = NULL;
    if (c->closing) return; /* the close path reports */
    if (status < 0) {
        char msg[200];
        snprintf(msg, sizeof msg, "cannot connect to %s: %s", c->peer, uv_strerror(status));
        pb__conn_close(c, status == UV_ETIMEDOUT ? PB_ETIMEOUT : PB_EIO, msg, 0);
        return;
    }
    pb__conn_start(c);
}

static int start_tcp_connect(pb_conn *c, const struct sockaddr_storage *ss, pb_errbuf *err) {
    pb__format_addr((const struct sockaddr *)ss, c->peer, sizeof c->peer);
    c->state = CONN_CONNECTING;
    if (!c->cl->creq && !(c->cl->creq = malloc(sizeof *c->cl->creq)))
        return pb_err_set(err, PB_ENOMEM, "out of memory");
    c->cl->creq->data = c;
    int rc = uv_tcp_connect(c->cl->creq, &c->io.tcp, (const struct sockaddr *)ss, on_connected);
    if (rc < 0) {
        free(c->cl->creq);
        c->cl->creq = NULL;
        return pb_err_set(err, PB_EIO, "cannot connect to %s: %s", c->peer, uv_strerror(rc));
    }
    return 0;
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
    pb_conn *c = req->data;
    int port = c->cl->port;
    c->cl->gai = NULL;
    free(req);
    if (c->closing) {
        uv_freeaddrinfo(res);
        conn_release(c);
        return;
    }
    c->pending_handles--; /* cannot reach 0: both handles are still open */
    const struct addrinfo *a = status == 0 ? pick_addr(res) : NULL;
    if (!a) {
        char msg[200];
        snprintf(msg, sizeof msg, "cannot resolve %s: %s", c->peer,
                 status < 0 ? uv_strerror(status) : "no address");
        uv_freeaddrinfo(res);
        pb__conn_close(c, PB_EIO, msg, 0);
        return;
    }
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    memcpy(&ss, a->ai_addr, a->ai_addrlen);
    set_port(&ss, port);
    uv_freeaddrinfo(res);
    pb_errbuf e;
    if (start_tcp_connect(c, &ss, &e) < 0) pb__conn_close(c, e.code, e.msg, 0);
}

int pb__connect(uv_loop_t *loop, const char *host, int port, const char *unix_path,
                const pb_client_opts *opts, pb_connect_fn on_connect, pb_lost_fn on_lost,
                void *ud, pb_conn **out, pb_errbuf *err) {
    if (!loop || !on_connect || (!unix_path && (!host || port <= 0 || port > 65535)))
        return pb_err_set(err, PB_EINVAL, "connect: bad arguments");
    pb_client_opts defs;
    if (!opts) {
        pb_client_opts_default(&defs);
        opts = &defs;
    }
    pb_conn *c = pb__conn_alloc(loop, unix_path == NULL, err);
    if (!c) return err ? err->code : PB_ENOMEM;
    if (!(c->cl = calloc(1, sizeof *c->cl))) {
        pb__conn_discard(c);
        return pb_err_set(err, PB_ENOMEM, "out of memory");
    }
    c->cl->cfg = opts->broker;
    c->cfg = &c->cl->cfg;
    c->cl->on_connect = on_connect;
    c->cl->on_lost = on_lost;
    c->cl->ud = ud;
    c->keepalive_s = opts->tcp_keepalive_s;
    c->connect_timeout_ms = opts->connect_timeout_ms ? opts->connect_timeout_ms
                                                     : PB_DEFAULT_CONNECT_MS;
    c->idle_ms = opts->idle_timeout_ms;
    if (opts->tls) {
        pb_tls_ctx *tctx;
        int trc = pb__tls_ctx_new(opts->tls, 0, &tctx, err);
        if (trc == 0) {
            const char *name = opts->tls->server_name ? opts->tls->server_name : host;
            trc = pb__tls_attach(c, tctx, 0, opts->tls->verify_peer ? name : NULL, err);
            pb__tls_ctx_free(tctx); /* the SSL keeps its own reference */
        }
        if (trc < 0) {
            pb__conn_discard(c);
            return trc;
        }
    }
    if (opts->bind_addr && !unix_path) {
        struct sockaddr_storage local;
        int brc = numeric_addr(opts->bind_addr, 0, &local)
                      ? uv_tcp_bind(&c->io.tcp, (const struct sockaddr *)&local, 0)
                      : UV_EINVAL;
        if (brc < 0) {
            pb__conn_discard(c);
            return pb_err_set(err, PB_EIO, "cannot bind to %s: %s", opts->bind_addr,
                              uv_strerror(brc));
        }
    }
    if (unix_path) {
        snprintf(c->peer, sizeof c->peer, "unix:%s", unix_path);
        c->state = CONN_CONNECTING;
        if (!(c->cl->creq = malloc(sizeof *c->cl->creq))) {
            pb__conn_discard(c);
            return pb_err_set(err, PB_ENOMEM, "out of memory");
        }
        c->cl->creq->data = c;
        uv_pipe_connect(c->cl->creq, &c->io.pipe, unix_path, on_connected);
    } else {
        struct sockaddr_storage ss;
        if (numeric_addr(host, port, &ss)) {
            int rc = start_tcp_connect(c, &ss, err);
            if (rc < 0) {
                pb__conn_discard(c);
                return rc;
            }
        } else {
            snprintf(c->peer, sizeof c->peer, "%s:%d", host, port);
            c->cl->gai = malloc(sizeof *c->cl->gai);
            if (!c->cl->gai) {
                pb__conn_discard(c);
                return pb_err_set(err, PB_ENOMEM, "out of memory");
            }
            c->cl->gai->data = c;
            struct addrinfo hints;
            memset(&hints, 0, sizeof hints);
            hints.ai_family = AF_UNSPEC;
            hints.ai_socktype = SOCK_STREAM;
            int rc = uv_getaddrinfo(loop, c->cl->gai, on_resolved, host, NULL, &hints);
            if (rc < 0) {
                free(c->cl->gai);
                c->cl->gai = NULL;
                pb__conn_discard(c);
                return pb_err_set(err, PB_EIO, "cannot resolve %s: %s", host, uv_strerror(rc));
            }
            c->cl->port = port;
            c->state = CONN_RESOLVING;
            c->pending_handles++;
        }
    }
    ctimer_start(c, c->connect_timeout_ms);
    if (out) *out = c;
    return 0;
}

int pb_connect_tcp(uv_loop_t *loop, const char *host, int port, const pb_client_opts *opts,
                   pb_connect_fn on_connect, pb_lost_fn on_lost, void *ud, pb_errbuf *err) {
    pb__ignore_sigpipe();
    return pb__connect(loop, host, port, NULL, opts, on_connect, on_lost, ud, NULL, err);
}

int pb_connect_unix(uv_loop_t *loop, const char *path, const pb_client_opts *opts,
                    pb_connect_fn on_connect, pb_lost_fn on_lost, void *ud, pb_errbuf *err) {
    pb__ignore_sigpipe();
    if (!path || !*path) return pb_err_set(err, PB_EINVAL, "connect: empty path");
    return pb__connect(loop, NULL, 0, path, opts, on_connect, on_lost, ud, NULL, err);
}

pb_broker *pb_conn_broker(pb_conn *c) { return c ? c->broker : NULL; }
uv_loop_t *pb_conn_loop(const pb_conn *c) { return c ? c->loop : NULL; }
uv_loop_t *pb_broker_loop(pb_broker *b) {
    pb_conn *c = b ? pb_conn_of(b) : NULL;
    return c ? c->loop : NULL;
}

pb_ref *pb_conn_root(pb_conn *c) {
    return c && c->broker && c->state == CONN_UP ? pb_broker_root(c->broker) : NULL;
}

const char *pb_conn_peer(const pb_conn *c) { return c ? c->peer : ""; }
