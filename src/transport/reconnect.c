/*
 * reconnect.c - a client connection that comes back: exponential backoff
 * with jitter between attempts, like Twisted's ReconnectingClientFactory.
 *
 * Lifetime: the reconnector is freed once pb_reconnector_stop() was called,
 * its timer is closed and no connection (up or in progress) is left.  After
 * stop no callback runs.
 */
#include <stdlib.h>
#include <string.h>
#include "transport_int.h"

struct pb_reconnector {
    uv_loop_t *loop;
    char *host;                 /* NULL for UNIX sockets (not offered yet) */
    int port;
    pb_reconnect_opts opts;
    void (*on_up)(pb_conn *c, void *ud);
    void (*on_down)(const char *why, unsigned attempt, void *ud);
    void *ud;
    uv_timer_t timer;
    pb_conn *conn;              /* connecting or up */
    unsigned attempt;           /* consecutive failed attempts */
    uint64_t rng;
    int stopped, timer_closed, gave_up;
};

void pb_reconnect_opts_default(pb_reconnect_opts *o) {
    memset(o, 0, sizeof *o);
    pb_client_opts_default(&o->client);
    o->initial_ms = 500;
    o->max_ms = 30000;
    o->max_retries = 0;
}

static void rc_maybe_free(pb_reconnector *r) {
    if (!r->stopped || !r->timer_closed || r->conn) return;
    free(r->host);
    free(r);
}

static double rc_rand(pb_reconnector *r) { /* xorshift64*, [0,1) */
    r->rng ^= r->rng >> 12;
    r->rng ^= r->rng << 25;
    r->rng ^= r->rng >> 27;
    return (double)((r->rng * 0x2545F4914F6CDD1Dull) >> 11) / 9007199254740992.0;
}

/* initial * 2^attempt, capped, then +-20% so that many clients that lost
 * the same server do not come back in lock step. */
static uint64_t rc_delay(pb_reconnector *r) {
    double d = r->opts.initial_ms;
    for (unsigned i = 0; i < r->attempt && d < r->opts.max_ms; i++) d *= 2;
    if (d > r->opts.max_ms) d = r->opts.max_ms;
    d *= 0.8 + 0.4 * rc_rand(r);
    return d < 1 ? 1 : (uint64_t)d;
}

static void rc_attempt(pb_reconnector *r);
static void on_retry(uv_timer_t *t) {
    pb_reconnector *r = t->data;
    if (!r->stopped) rc_attempt(r);
}

static void rc_schedule(pb_reconnector *r) {
    if (r->stopped) return;
    if (r->opts.max_retries && r->attempt >= r->opts.max_retries) {
        r->gave_up = 1;
        return;
    }
    uv_timer_start(&r->timer, on_retry, rc_delay(r), 0);
}

static void rc_failed(pb_reconnector *r, const char *why) {
    r->attempt++;
    if (r->on_down) r->on_down(why, r->attempt, r->ud);
    rc_schedule(r);
}

static void rc_on_connect(pb_conn *c, int status, const char *msg, void *ud) {
    pb_reconnector *r = ud;
    if (status < 0) {
        r->conn = NULL;
        if (r->stopped) rc_maybe_free(r);
        else rc_failed(r, msg);
        return;
    }
    r->conn = c;
    if (r->stopped) {
        pb_conn_close(c);
        return;
    }
    r->attempt = 0;
    if (r->on_up) r->on_up(c, r->ud);
}

static void rc_on_lost(pb_conn *c, const char *why, void *ud) {
    (void)c;
    pb_reconnector *r = ud;
    r->conn = NULL;
    if (r->stopped) {
        rc_maybe_free(r);
        return;
    }
    if (r->on_down) r->on_down(why, 0, r->ud);
    rc_schedule(r);
}

static void rc_attempt(pb_reconnector *r) {
    pb_errbuf e = {0, ""};
    pb_conn *c = NULL;
    int rc = pb__connect(r->loop, r->host, r->port, NULL, &r->opts.client, rc_on_connect,
                         rc_on_lost, r, &c, &e);
    if (rc < 0) {
        rc_failed(r, e.msg);
        return;
    }
    r->conn = c;
}

int pb_reconnector_start(uv_loop_t *loop, const char *host, int port,
                         const pb_reconnect_opts *opts,
                         void (*on_up)(pb_conn *c, void *ud),
                         void (*on_down)(const char *why, unsigned attempt, void *ud),
                         void *ud, pb_reconnector **out, pb_errbuf *err) {
    if (!loop || !host || port <= 0 || port > 65535 || !out)
        return pb_err_set(err, PB_EINVAL, "reconnector: bad arguments");
    pb_reconnector *r = calloc(1, sizeof *r);
    if (!r || !(r->host = strdup(host))) {
        free(r);
        return pb_err_set(err, PB_ENOMEM, "out of memory");
    }
    r->loop = loop;
    r->port = port;
    if (opts) r->opts = *opts;
    else pb_reconnect_opts_default(&r->opts);
    if (!r->opts.initial_ms) r->opts.initial_ms = 500;
    if (!r->opts.max_ms) r->opts.max_ms = 30000;
    if (r->opts.max_ms < r->opts.initial_ms) r->opts.max_ms = r->opts.initial_ms;
    r->on_up = on_up;
    r->on_down = on_down;
    r->ud = ud;
    r->rng = (uv_hrtime() ^ (uint64_t)(uintptr_t)r) | 1;
    uv_timer_init(loop, &r->timer);
    r->timer.data = r;
    *out = r;
    rc_attempt(r);
    return 0;
}

static void on_timer_closed(uv_handle_t *h) {
    pb_reconnector *r = h->data;
    r->timer_closed = 1;
    rc_maybe_free(r);
}

void pb_reconnector_stop(pb_reconnector *r) {
    if (!r || r->stopped) return;
    r->stopped = 1;
    uv_close((uv_handle_t *)&r->timer, on_timer_closed);
    if (r->conn) pb__conn_close(r->conn, PB_ECANCELLED, "reconnector stopped", 1);
}
