/* test_fanout.c - pb_ref_send_many (encode-once fan-out) queues exactly the
 * bytes per-connection pb_ref_send would, on every connection.
 *
 * Two identical worlds of N client/server broker pairs, wired back to back
 * in memory (sans I/O).  Each client hands the server a mind (via a call
 * to the server's root), so the server holds one pb_ref per connection.
 * World A fans out with pb_ref_send_many, world B with one pb_ref_send per
 * ref; every server broker's output must be byte for byte the same.  Also:
 * arguments holding a reference (per-connection form, the fallback),
 * keyword arguments, a closed connection among the refs, and delivery. */
#include <string.h>
#include "pb/broker.h"
#include "test.h"
#include "pair_util.h"

#define N 5

typedef struct pair {
    pb_broker *srv, *cli;
    pb_ref *mind; /* server side: the client's mind */
    int printed;
} pair;

typedef struct world {
    pair p[N];
    pb_object mind[N];
    pb_object root;
} world;

static world *g_cur;

static void ignore_close(pb_broker *b, int code, const char *msg, void *ud) {
    (void)b, (void)code, (void)msg, (void)ud;
}

static int root_hello(pb_call *call, void *self, const pb_args *a) {
    (void)self;
    pb_broker *b = pb_call_broker(call);
    for (int i = 0; i < N; i++)
        if (g_cur->p[i].srv == b) g_cur->p[i].mind = pb_ref_ref(pb_arg_ref(a, 0));
    return pb_call_return_none(call);
}
static const pb_method root_methods[] = {{"hello", "r", root_hello, NULL},
                                         {NULL, NULL, NULL, NULL}};
static const pb_class Root = {"Root", PB_REFERENCEABLE, root_methods, NULL};

static int mind_print(pb_call *call, void *self, const pb_args *a) {
    (void)a;
    for (int i = 0; i < N; i++)
        if (&g_cur->mind[i] == self) g_cur->p[i].printed++;
    return pb_call_return_none(call);
}
static const pb_method mind_methods[] = {{"print", NULL, mind_print, NULL},
                                         {NULL, NULL, NULL, NULL}};
static const pb_class Mind = {"Mind", PB_REFERENCEABLE, mind_methods, NULL};

static pb_broker *mk(int is_server, pb_object *root) {
    pb_broker_config c;
    pb_broker_config_default(&c);
    c.is_server = is_server;
    pb_broker_callbacks cb = {NULL, NULL, ignore_close, NULL, NULL, NULL};
    return pb_broker_new(&c, &cb, root);
}

static void pump_pair(pair *p) { pump_brokers(p->srv, p->cli, 1000); }

static void world_init(world *w) {
    memset(w, 0, sizeof *w);
    g_cur = w;
    pb_object_init(&w->root, &Root);
    for (int i = 0; i < N; i++) {
        pb_object_init(&w->mind[i], &Mind);
        w->p[i].srv = mk(1, &w->root);
        w->p[i].cli = mk(0, NULL);
        pump_pair(&w->p[i]);
        pb_deferred *d = pb_ref_callf(pb_broker_root(w->p[i].cli), "hello", "o", &w->mind[i]);
        CHECK(d != NULL);
        pb_deferred_unref(d);
        pump_pair(&w->p[i]);
        CHECK(w->p[i].mind != NULL);
    }
}

static void world_free(world *w) {
    for (int i = 0; i < N; i++) {
        if (w->p[i].mind) pb_ref_unref(w->p[i].mind);
        pb_broker_free(w->p[i].srv);
        pb_broker_free(w->p[i].cli);
        pb_object_unref(&w->mind[i]);
    }
    pb_object_unref(&w->root);
}

/* What server i has queued (copied into out), then drained. */
static size_t take(world *w, int i, uint8_t *out, size_t cap) {
    const uint8_t *p;
    size_t n = pb_broker_output(w->p[i].srv, &p);
    if (n > cap) n = cap;
    if (n) memcpy(out, p, n);
    return n;
}

static world A, B;

static void compare_send(const pb_value *args, const pb_value *kw, int close_one) {
    world_init(&A);
    world_init(&B);
    if (close_one) { /* connection 2 is gone in both worlds */
        pb_broker_connection_lost(A.p[2].srv, "test");
        pb_broker_connection_lost(B.p[2].srv, "test");
    }
    pb_ref *refs[N];
    for (int i = 0; i < N; i++) refs[i] = A.p[i].mind;
    g_cur = &A;
    size_t sent = 99;
    for (int k = 0; k < 3; k++) { /* several, so request ids move on */
        int rc = pb_ref_send_many(refs, N, "print", args, kw, &sent);
        CHECK_EQ_INT(rc, close_one ? PB_ECLOSED : PB_OK);
        CHECK_EQ_INT((int)sent, close_one ? N - 1 : N);
    }
    g_cur = &B;
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < N; i++) {
            int rc = pb_ref_send(B.p[i].mind, "print", args, kw);
            CHECK_EQ_INT(rc, close_one && i == 2 ? PB_ECLOSED : PB_OK);
        }
    static uint8_t a[1 << 14], b[1 << 14];
    for (int i = 0; i < N; i++) {
        size_t na = take(&A, i, a, sizeof a), nb = take(&B, i, b, sizeof b);
        CHECK_EQ_INT((int)na, (int)nb);
        CHECK(na == nb && memcmp(a, b, na) == 0);
        CHECK(close_one && i == 2 ? na == 0 : na > 0);
    }
    /* and the minds get them */
    g_cur = &A;
    for (int i = 0; i < N; i++) {
        pump_pair(&A.p[i]);
        CHECK_EQ_INT(A.p[i].printed, close_one && i == 2 ? 0 : 3);
    }
    world_free(&A);
    world_free(&B);
}

TEST(plain_args) {
    pb_arena *ar = pb_arena_new(0);
    pb_value *args = pb_tuple(ar, 2);
    pb_value *d = pb_dict(ar, 1);
    pb_dict_append(ar, d, pb_strz(ar, "k"), pb_float(ar, 1.5));
    pb_seq_append(ar, args, pb_strz(ar, "hello, everyone"));
    pb_seq_append(ar, args, d);
    compare_send(args, NULL, 0);
    compare_send(NULL, NULL, 0);
    pb_value *kw = pb_dict(ar, 1);
    pb_dict_append(ar, kw, pb_bytes(ar, "who", 3), pb_int(ar, 7)); /* bytes key: sent as text */
    compare_send(args, kw, 0);
    compare_send(args, NULL, 1);
    pb_arena_free(ar);
}

static pb_object g_thing;
static const pb_class Thing = {"Thing", PB_REFERENCEABLE, NULL, NULL};

TEST(with_references_falls_back) {
    pb_object_init(&g_thing, &Thing);
    pb_arena *ar = pb_arena_new(0);
    pb_value *args = pb_tuple(ar, 2);
    pb_seq_append(ar, args, pb_strz(ar, "x"));
    pb_seq_append(ar, args, pb_object_value(ar, &g_thing));
    compare_send(args, NULL, 0);
    pb_arena_free(ar);
    pb_object_unref(&g_thing);
}

TEST(bad_arguments) {
    pb_arena *ar = pb_arena_new(0);
    size_t sent = 7;
    CHECK_EQ_INT(pb_ref_send_many(NULL, 0, "print", NULL, NULL, &sent), PB_OK);
    CHECK_EQ_INT((int)sent, 0);
    pb_ref *none[1] = {NULL};
    CHECK_EQ_INT(pb_ref_send_many(none, 1, "print", NULL, NULL, &sent), PB_EINVAL);
    CHECK_EQ_INT(pb_ref_send_many(none, 1, NULL, NULL, NULL, NULL), PB_EINVAL);
    CHECK_EQ_INT(pb_ref_send_many(none, 1, "print", pb_int(ar, 1), NULL, NULL), PB_EINVAL);
    pb_arena_free(ar);
}

int main(void) {
    RUN(plain_args);
    RUN(with_references_falls_back);
    RUN(bad_arguments);
    return TEST_SUMMARY();
}
