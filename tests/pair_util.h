/*
 * pair_util.h - test-only helpers for two brokers wired back to back in
 * memory (sans I/O), shared by test_broker.c, test_cache.c, test_cred.c
 * and test_fanout.c.
 *
 *   pump_brokers      move bytes both ways until both brokers are quiet
 *   side, side_init   a broker with its close/connect callbacks counted
 *   pump, pair_up, pair_free   the same for a server side and a client side
 *   got, watch        what a deferred fired with (got_free releases it)
 *
 * Everything is static (inline): a test uses what it needs.  Include after
 * test.h.
 */
#ifndef PB_TEST_PAIR_UTIL_H
#define PB_TEST_PAIR_UTIL_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "pb/broker.h"
#include "test.h"

/* ------------------------------------------------------------ the wire */

/* When set, the bytes pump_brokers moves are appended here, in the order
 * sent: server to client, client to server (for byte checks). */
static pb_buf *g_s2c_log, *g_c2s_log;

/* Move from's output (a copy of it) into to; returns the bytes moved.  A
 * NULL broker sends nothing; bytes for a NULL broker are dropped. */
static inline size_t pair_move(pb_broker *from, pb_broker *to, pb_buf *log) {
    const uint8_t *p;
    size_t n = from ? pb_broker_output(from, &p) : 0;
    if (n) {
        uint8_t *copy = malloc(n);
        memcpy(copy, p, n);
        pb_broker_output_consume(from, n);
        if (log) pb_buf_append(log, copy, n);
        if (to) pb_broker_feed(to, copy, n);
        free(copy);
    }
    return n;
}

/* Move bytes both ways until both are quiet (at most rounds rounds). */
static inline void pump_brokers(pb_broker *srv, pb_broker *cli, int rounds) {
    for (int round = 0; round < rounds; round++) {
        size_t n1 = pair_move(srv, cli, g_s2c_log);
        size_t n2 = pair_move(cli, srv, g_c2s_log);
        if (!n1 && !n2) return;
    }
}

/* ------------------------------------------------------------ the sides */

typedef struct side {
    pb_broker *b;
    int closed, close_code, connected;
    char close_msg[256];
} side;

static inline void on_close(pb_broker *b, int code, const char *msg, void *ud) {
    (void)b;
    side *s = ud;
    s->closed++;
    s->close_code = code;
    snprintf(s->close_msg, sizeof s->close_msg, "%s", msg);
}

static inline void on_connected(pb_broker *b, void *ud) {
    (void)b;
    ((side *)ud)->connected++;
}

/* The registry a client side gets when its settings name none. */
static pb_jelly_registry *g_client_registry;

/* A broker with settings cfg (NULL: defaults) and root (servers). */
static inline void side_init(side *s, int is_server, pb_object *root, const pb_broker_config *cfg) {
    memset(s, 0, sizeof *s);
    pb_broker_config c;
    if (cfg) c = *cfg;
    else pb_broker_config_default(&c);
    c.is_server = is_server;
    if (!is_server && !c.registry) c.registry = g_client_registry;
    pb_broker_callbacks cb = {s, NULL, on_close, on_connected, NULL, NULL};
    s->b = pb_broker_new(&c, &cb, root);
}

/* Move bytes both ways until both are quiet. */
static inline void pump(side *srv, side *cli) { pump_brokers(srv->b, cli->b, 1000); }

/* A server side with root and settings cfg, a client side, connected. */
static inline void pair_up(side *srv, side *cli, pb_object *root, const pb_broker_config *cfg) {
    side_init(srv, 1, root, cfg);
    side_init(cli, 0, NULL, NULL);
    pump(srv, cli);
}

static inline void pair_free(side *srv, side *cli) {
    pb_broker_free(cli->b);
    pb_broker_free(srv->b);
    cli->b = srv->b = NULL;
}

/* ------------------------------------------------------------ results */

/* What a deferred fired with: the value copied into a (holds caches and
 * refs), an int, bool, string or reference (kept) answer, or a
 * failure's code, type and value; order: when, counting from
 * seq_counter. */
typedef struct got {
    int fired, failed, order;
    char type[128], value[256];
    int64_t i;
    int b;
    pb_ref *ref;
    pb_value *v; /* copied into arena */
    pb_arena *a;
} got;

static int seq_counter;

static inline int got_cb(pb_deferred *d, void *ud) {
    got *g = ud;
    g->fired++;
    g->order = ++seq_counter;
    pb_value *v = pb_deferred_value(d);
    if (!g->a) g->a = pb_arena_new(0);
    g->v = pb_value_copy(g->a, v);
    if (v->type == PB_INT) g->i = v->u.i;
    if (v->type == PB_BOOL) g->b = v->u.b;
    if (v->type == PB_STR || v->type == PB_BYTES) snprintf(g->value, sizeof g->value, "%s", v->u.s.ptr);
    if (v->type == PB_REMOTE) g->ref = pb_ref_ref((pb_ref *)v->u.h);
    return 0;
}

static inline int got_eb(pb_deferred *d, void *ud) {
    got *g = ud;
    const pb_failure *f = pb_deferred_failure(d);
    g->fired++;
    g->failed = f->code ? f->code : 1;
    g->order = ++seq_counter;
    snprintf(g->type, sizeof g->type, "%s", f->type);
    snprintf(g->value, sizeof g->value, "%s", f->value);
    return 0;
}

static inline void got_free(got *g) {
    pb_ref_unref(g->ref);
    pb_arena_free(g->a);
    memset(g, 0, sizeof *g);
}

/* Watch d (may be NULL: g stays unfired) into g; d is released. */
static inline void watch(pb_deferred *d, got *g) {
    memset(g, 0, sizeof *g);
    if (d) {
        pb_deferred_add(d, got_cb, got_eb, g);
        pb_deferred_unref(d);
    }
}

#endif
