/*
 * test_limits_more.c - the broker's and cred's limits on a hostile
 * network, over loopback through the libuv transport (one process, one
 * loop per test), in the style of test_limits.c: each test has the peer
 * that hits a limit and a second peer whose calls must still succeed
 * during and after.
 *
 * Covered here (test_limits.c covers max_connections, per-address limits,
 * idle timeouts, back-pressure and a raw over-limit string header):
 *   Banana decoder limits   max_string, max_list, max_depth, max_items,
 *                           max_bytes: a real client sends a call whose
 *                           arguments are just over the server's limit;
 *                           the server closes that connection only.
 *   max_refs                a peer collecting references gets "Maximum PB
 *                           reference count exceeded." and, after more
 *                           violations, is disconnected.
 *   max_inflight            a peer pipelining more calls than allowed to a
 *                           slow (deferred) method: the extra calls get a
 *                           pb.Error answer at once, without running; the
 *                           connection stays up.  Extra fire-and-forget
 *                           calls are dropped silently.
 *   max_pending_calls       our own outstanding calls: pb_ref_call fails
 *                           with PB_ELIMIT and nothing is sent.
 *   max_failures_per_min    failed logins from 127.0.0.2 throttle that
 *                           address only; 127.0.0.1 logs in fine.
 *   login_timeout_ms        a connection that never logs in is closed; a
 *                           logged-in one stays.
 * Logging: a peer dropped by the broker (the decoder limits, repeated
 * max_refs violations) is reported to pb_server_opts.log exactly once;
 * limits answered with an error while the connection stays (max_inflight,
 * throttled logins) leave the server log empty.
 * The broker's own diagnostics go to stderr only with PB_LOG set, one
 * line per event.  The last test checks the server log's rate limit for
 * a transport limit: one line, then a summary with the count left out.
 *
 * 127.0.0.2 is a second source address (Linux routes all of 127/8 to lo).
 */
#include <stdint.h>
#include <time.h>
#include <unistd.h>
#include "pb/pb.h"
#include "test.h"
#include "loop_util.h"

/* ------------------------------------------------------------ the server */

/* slow: answered later by the test (deferred), so it stays in flight */
enum { MAX_SLOW = 64 };
static pb_call *g_slow[MAX_SLOW];
static pb_broker *g_slow_broker[MAX_SLOW];
static int g_nslow;
static int root_slow(pb_call *call, void *self, const pb_args *a) {
    if (g_nslow >= MAX_SLOW) return pb_call_fail(call, "builtins.RuntimeError", "test: too many slow calls");
    g_slow_broker[g_nslow] = pb_call_broker(call);
    g_slow[g_nslow++] = call;
    return pb_call_defer(call);
}

/* Answer every slow call held (for broker b, or all with NULL) with its
 * index; returns how many were answered. */
static int answer_slow(pb_broker *b) {
    int n = 0, keep = 0;
    for (int i = 0; i < g_nslow; i++) {
        if (!b || g_slow_broker[i] == b) {
            pb_call_return(g_slow[i], pb_int(pb_call_arena(g_slow[i]), i));
            n++;
        } else {
            g_slow[keep] = g_slow[i];
            g_slow_broker[keep++] = g_slow_broker[i];
        }
    }
    g_nslow = keep;
    return n;
}

/* Before a test's server closes: a deferred call keeps its arena until
 * answered. */
static void answer_all_slow(void) { answer_slow(NULL); }

static int slow_count(pb_broker *b) {
    int n = 0;
    for (int i = 0; i < g_nslow; i++) n += g_slow_broker[i] == b;
    return n;
}

/* tick: fire-and-forget counter */
static int g_ticks;
static int root_tick(pb_call *call, void *self, const pb_args *a) {
    g_ticks++;
    return pb_call_return_none(call);
}

/* fresh: a new referenceable object on every call */
static int g_fresh_alive;
static int fresh_hello(pb_call *call, void *self, const pb_args *a) {
    return pb_call_return(call, pb_int(pb_call_arena(call), 7));
}
static void fresh_destroy(pb_object *o) {
    g_fresh_alive--;
    free(o);
}
static const pb_method fresh_methods[] = {{"hello", "", fresh_hello, NULL}, {NULL, NULL, NULL, NULL}};
static const pb_class Fresh = {"Fresh", PB_REFERENCEABLE, fresh_methods, fresh_destroy};
static int root_fresh(pb_call *call, void *self, const pb_args *a) {
    pb_object *o = calloc(1, sizeof *o);
    if (!o) return PB_ENOMEM;
    pb_object_init(o, &Fresh);
    g_fresh_alive++;
    int rc = pb_call_return_object(call, o);
    pb_object_unref(o);
    return rc;
}

static const pb_method root_methods[] = {
    {"echo", "v", root_echo, NULL},
    {"add", "ii", root_add, NULL},
    {"slow", NULL, root_slow, NULL},
    {"tick", NULL, root_tick, NULL},
    {"fresh", "", root_fresh, NULL},
    {NULL, NULL, NULL, NULL},
};
static const pb_class Root = {"Root", PB_REFERENCEABLE, root_methods, NULL};
/* ------------------------------------------------------------ loop tools */

/* Run until n results have fired (or ms pass). */
static int wait_all(uv_loop_t *loop, result *r, int n, unsigned ms) {
    double until = now_s() + ms / 1000.0;
    for (;;) {
        int done = 1;
        for (int i = 0; i < n; i++) done &= r[i].fired;
        if (done) return 1;
        if (now_s() > until) return 0;
        run_for(loop, 10);
    }
}

static void wait_connections(uv_loop_t *loop, pb_server *s, size_t n) {
    for (int i = 0; i < 40 && pb_server_connections(s) != n; i++) run_for(loop, 25);
}

/* ------------------------------------------------- Banana decoder limits */

/* Payload builders: the one argument of an echo call, sized by n. */
typedef pb_value *(*payload_fn)(pb_arena *a, size_t n);

static pb_value *pl_string(pb_arena *a, size_t n) {
    char *s = malloc(n + 1);
    memset(s, 's', n);
    s[n] = 0;
    pb_value *v = pb_bytes(a, s, n);
    free(s);
    return v;
}

/* a list of n ints: n + 1 Banana list elements ("list" tag first) */
static pb_value *pl_list(pb_arena *a, size_t n) {
    pb_value *l = pb_list(a, n);
    for (size_t i = 0; i < n; i++) pb_seq_append(a, l, pb_int(a, (int64_t)i));
    return l;
}

/* lists nested n deep */
static pb_value *pl_nested(pb_arena *a, size_t n) {
    pb_value *v = pb_int(a, 1);
    for (size_t i = 0; i < n; i++) {
        pb_value *l = pb_list(a, 1);
        pb_seq_append(a, l, v);
        v = l;
    }
    return v;
}

/* n small lists of 8 ints each: about 10 tokens per list, each list well
 * under max_list */
static pb_value *pl_many_tokens(pb_arena *a, size_t n) {
    pb_value *l = pb_list(a, n);
    for (size_t i = 0; i < n; i++) pb_seq_append(a, l, pl_list(a, 8));
    return l;
}

static pb_deferred *call_echo(client *cl, payload_fn fn, size_t n) {
    pb_arena *a = pb_arena_new(0);
    pb_value *args = pb_tuple(a, 1);
    pb_seq_append(a, args, fn(a, n));
    pb_errbuf err = {0, ""};
    pb_deferred *d = pb_ref_call(pb_conn_root(cl->conn), "echo", args, NULL, NULL, &err);
    CHECK_MSG(d != NULL, "echo not sent: %s", err.msg);
    pb_arena_free(a);
    return d;
}

/* The server runs with limits lim.  The bad peer first sends a payload of
 * size ok_n (just under the limit: answered), then one of size bad_n
 * (over it): the server closes that connection, failing the call with
 * PBConnectionLost.  A good peer's call sent in the same loop iteration is
 * answered, and it is served afterwards too.  The server log has one line
 * naming the dropped peer. */
static void decoder_limit_case(const pb_banana_limits *lim, payload_fn fn, size_t ok_n, size_t bad_n) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_server_opts so;
    pb_server_opts_default(&so);
    so.broker.limits = *lim;
    pb_server *s = listen_with(&loop, &so);
    client bad, good;
    connect_from(&loop, s, "127.0.0.2", &bad);
    connect_from(&loop, s, "127.0.0.1", &good);
    CHECK(bad.up && good.up);
    if (bad.up && good.up) {
        result r[3];
        res_watch(&r[0], call_echo(&bad, fn, ok_n));
        CHECK(wait_all(&loop, r, 1, 3000));
        CHECK_MSG(!r[0].failed, "under the limit: %s: %s", r[0].type, r[0].value);
        CHECK(!bad.lost);
        /* over the limit, and the good peer's call at the same time */
        res_watch(&r[1], call_echo(&bad, fn, bad_n));
        res_watch(&r[2], pb_ref_callf(pb_conn_root(good.conn), "add", "ii", (int64_t)40, (int64_t)2));
        CHECK(wait_for(&loop, &bad.lost, 3000));
        CHECK(wait_all(&loop, r, 3, 3000));
        CHECK_MSG(r[1].failed && !strcmp(r[1].type, PB_FAILURE_CONNECTION_LOST), "%s: %s", r[1].type,
                  r[1].value);
        CHECK_MSG(!r[2].failed && r[2].i == 42, "good peer: %s: %s", r[2].type, r[2].value);
        wait_connections(&loop, s, 1);
        CHECK_EQ_INT(pb_server_connections(s), 1);
        CHECK(!good.lost);
        CHECK(serves(&loop, &good));
        /* the address is not banned: a new connection from it is served */
        client again;
        connect_from(&loop, s, "127.0.0.2", &again);
        CHECK(again.up && serves(&loop, &again));
        close_client(&loop, &again);
    }
    CHECK_MSG(g_log_lines == 1 && strstr(g_log_last, "closing 127.0.0.2:"), "server log (%d lines): %s", g_log_lines, g_log_last);
    close_client(&loop, &good);
    close_client(&loop, &bad);
    finish(&loop, s);
}

TEST(string_over_max_string_drops_only_its_sender) {
    pb_banana_limits lim;
    pb_banana_limits_default(&lim);
    lim.max_string = 4096;
    decoder_limit_case(&lim, pl_string, 4096, 4097);
}

TEST(list_over_max_list_drops_only_its_sender) {
    pb_banana_limits lim;
    pb_banana_limits_default(&lim);
    lim.max_list = 100;
    /* a jellied list of n items is a Banana list of n + 1 ("list" tag) */
    decoder_limit_case(&lim, pl_list, 99, 100);
}

TEST(nesting_over_max_depth_drops_only_its_sender) {
    pb_banana_limits lim;
    pb_banana_limits_default(&lim);
    lim.max_depth = 16;
    /* (message ... (tuple (list (list ... 1)))): the message and the
     * argument tuple are two levels, so 14 nested lists make 16 */
    decoder_limit_case(&lim, pl_nested, 14, 15);
}

TEST(tokens_over_max_items_drop_only_their_sender) {
    pb_banana_limits lim;
    pb_banana_limits_default(&lim);
    lim.max_items = 2000;
    /* 150 lists of 10 tokens: ~1500 tokens; 250 of them: ~2500 */
    decoder_limit_case(&lim, pl_many_tokens, 150, 250);
}

TEST(arena_bytes_over_max_bytes_drop_only_their_sender) {
    pb_banana_limits lim;
    pb_banana_limits_default(&lim);
    lim.max_bytes = 256 * 1024;
    /* strings well under max_string (640 KiB): 64 KiB fits in the arena
     * budget, 400 KiB does not */
    decoder_limit_case(&lim, pl_string, 64 * 1024, 400 * 1024);
}

/* ------------------------------------------------------------- max_refs */

/* The bad peer keeps every reference it is given.  With max_refs N it
 * gets N fresh objects, then "Maximum PB reference count exceeded." (a
 * pb.Error; the refused object is not kept), and on the fourth violation
 * the server says Goodbye and closes.  The good peer holds N references
 * of its own (the count is per connection) and keeps calling them. */
TEST(collecting_references_past_max_refs_is_refused_then_disconnected) {
    enum { N = 8 };
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_server_opts so;
    pb_server_opts_default(&so);
    so.broker.max_refs = N;
    pb_server *s = listen_with(&loop, &so);
    g_fresh_alive = 0;
    client bad, good;
    connect_from(&loop, s, "127.0.0.2", &bad);
    connect_from(&loop, s, "127.0.0.1", &good);
    CHECK(bad.up && good.up);
    if (bad.up && good.up) {
        static result br[N + 8], gr[N], hr[N];
        for (int i = 0; i < N; i++) res_watch(&gr[i], pb_ref_callf(pb_conn_root(good.conn), "fresh", ""));
        CHECK(wait_all(&loop, gr, N, 3000));
        for (int i = 0; i < N; i++) CHECK(!gr[i].failed && gr[i].ref);
        /* the bad peer collects, one call at a time */
        int ok = 0, refused = 0, i;
        for (i = 0; i < N + 8 && !bad.lost; i++) {
            res_watch(&br[i], pb_ref_callf(pb_conn_root(bad.conn), "fresh", ""));
            wait_for(&loop, &br[i].fired, 3000);
            CHECK(br[i].fired);
            if (!br[i].failed) {
                CHECK(br[i].ref != NULL);
                ok++;
                continue;
            }
            if (!strcmp(br[i].type, PB_FAILURE_PB_ERROR)) {
                CHECK_MSG(!strcmp(br[i].value, "Maximum PB reference count exceeded."), "%s", br[i].value);
                refused++;
            } else {
                CHECK_MSG(!strcmp(br[i].type, PB_FAILURE_CONNECTION_LOST), "%s: %s", br[i].type,
                          br[i].value);
            }
            /* the good peer is served in between every violation */
            res_watch(&hr[refused % N], pb_ref_callf(gr[refused % N].ref, "hello", ""));
            CHECK(wait_all(&loop, &hr[refused % N], 1, 3000));
            CHECK(!hr[refused % N].failed && hr[refused % N].i == 7);
            run_for(&loop, 20); /* a close, if any, arrives */
        }
        CHECK_EQ_INT(ok, N);
        /* Twisted's rule: the fourth violation says Goodbye; its answer is
         * the pb.Error itself (queued before the close) */
        CHECK_EQ_INT(refused, 4);
        CHECK(wait_for(&loop, &bad.lost, 3000));
        CHECK_EQ_INT(i, N + 4);
        /* the bad peer's objects went with its connection, the refused
         * ones were never kept; the good peer's N remain */
        wait_connections(&loop, s, 1);
        CHECK_EQ_INT(pb_server_connections(s), 1);
        for (int k = 0; k < 20 && g_fresh_alive != N; k++) run_for(&loop, 25);
        CHECK_EQ_INT(g_fresh_alive, N);
        for (int k = 0; k < N; k++) {
            res_watch(&hr[k], pb_ref_callf(gr[k].ref, "hello", ""));
        }
        CHECK(wait_all(&loop, hr, N, 3000));
        for (int k = 0; k < N; k++) CHECK(!hr[k].failed && hr[k].i == 7);
        CHECK(serves(&loop, &good));
        for (int k = 0; k < N + 8; k++) res_free(&br[k]);
        for (int k = 0; k < N; k++) res_free(&gr[k]);
        /* the good peer let go: the server forgets them */
        for (int k = 0; k < 20 && g_fresh_alive; k++) run_for(&loop, 25);
        CHECK_EQ_INT(g_fresh_alive, 0);
    }
    CHECK_MSG(g_log_lines == 1 && strstr(g_log_last, "closing 127.0.0.2:"), "server log (%d lines): %s", g_log_lines, g_log_last);
    close_client(&loop, &good);
    close_client(&loop, &bad);
    finish(&loop, s);
}

/* --------------------------------------------------------- max_inflight */

/* The bad peer pipelines M calls to a deferred method with max_inflight
 * N < M.  Behaviour: the first N run and wait; each extra one is answered
 * at once with pb.Error "Too many calls in flight (limit N)" without
 * running; the connection stays up.  Fire-and-forget calls beyond the
 * limit are dropped silently (no answer, no close).  Once the slow calls
 * are answered the bad peer is served again.  The good peer keeps N - 1
 * slow calls of its own waiting (the count is per connection) and its
 * quick calls are answered throughout. */
TEST(calls_beyond_max_inflight_get_an_error_and_the_connection_stays) {
    enum { N = 4, M = 10 };
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_server_opts so;
    pb_server_opts_default(&so);
    so.broker.max_inflight = N;
    pb_server *s = listen_with(&loop, &so);
    g_nslow = 0;
    g_ticks = 0;
    client bad, good;
    connect_from(&loop, s, "127.0.0.2", &bad);
    connect_from(&loop, s, "127.0.0.1", &good);
    CHECK(bad.up && good.up && g_nserved == 2);
    if (bad.up && good.up && g_nserved == 2) {
        pb_broker *sbad = pb_conn_broker(g_served[0]), *sgood = pb_conn_broker(g_served[1]);
        result br[M], gr[N - 1], q[2];
        for (int i = 0; i < N - 1; i++) res_watch(&gr[i], pb_ref_callf(pb_conn_root(good.conn), "slow", ""));
        /* the flood and a quick call from the good peer, in one iteration */
        for (int i = 0; i < M; i++) res_watch(&br[i], pb_ref_callf(pb_conn_root(bad.conn), "slow", ""));
        res_watch(&q[0], pb_ref_callf(pb_conn_root(good.conn), "add", "ii", (int64_t)40, (int64_t)2));
        CHECK(wait_all(&loop, br + N, M - N, 3000));
        for (int i = N; i < M; i++) {
            CHECK_MSG(br[i].failed && !strcmp(br[i].type, PB_FAILURE_PB_ERROR) &&
                          !strcmp(br[i].value, "Too many calls in flight (limit 4)"),
                      "call %d: %s: %s", i, br[i].type, br[i].value);
        }
        CHECK(wait_all(&loop, q, 1, 3000));
        CHECK_MSG(!q[0].failed && q[0].i == 42, "good peer: %s: %s", q[0].type, q[0].value);
        for (int i = 0; i < N; i++) CHECK(!br[i].fired);
        for (int i = 0; i < N - 1; i++) CHECK(!gr[i].fired);
        CHECK_EQ_INT(slow_count(sbad), N);
        CHECK_EQ_INT(slow_count(sgood), N - 1);
        pb_broker_stats st;
        pb_broker_get_stats(sbad, &st);
        CHECK_EQ_INT(st.inflight, N);
        /* fire-and-forget beyond the limit: dropped, no answer, no close */
        CHECK_EQ_INT(pb_ref_send(pb_conn_root(bad.conn), "tick", NULL, NULL), 0);
        /* a quick answered call beyond the limit: refused the same way */
        res_watch(&q[1], pb_ref_callf(pb_conn_root(bad.conn), "add", "ii", (int64_t)1, (int64_t)1));
        CHECK(wait_all(&loop, q + 1, 1, 3000));
        CHECK(q[1].failed && !strcmp(q[1].type, PB_FAILURE_PB_ERROR));
        CHECK_EQ_INT(g_ticks, 0);
        CHECK(!bad.lost);
        CHECK(serves(&loop, &good)); /* during */
        /* the bad peer's slow calls are answered: below the limit again */
        CHECK_EQ_INT(answer_slow(sbad), N);
        CHECK(wait_all(&loop, br, N, 3000));
        for (int i = 0; i < N; i++) CHECK(!br[i].failed);
        CHECK(serves(&loop, &bad));
        CHECK_EQ_INT(pb_ref_send(pb_conn_root(bad.conn), "tick", NULL, NULL), 0);
        for (int k = 0; k < 20 && !g_ticks; k++) run_for(&loop, 10);
        CHECK_EQ_INT(g_ticks, 1);
        /* and the good peer's */
        CHECK_EQ_INT(answer_slow(sgood), N - 1);
        CHECK(wait_all(&loop, gr, N - 1, 3000));
        for (int i = 0; i < N - 1; i++) CHECK(!gr[i].failed);
        CHECK(serves(&loop, &good)); /* after */
        CHECK(!bad.lost && !good.lost);
        CHECK_EQ_INT(pb_server_connections(s), 2);
    }
    CHECK_MSG(g_log_lines == 0, "server log: %s", g_log_last);
    close_client(&loop, &good);
    close_client(&loop, &bad);
    finish(&loop, s);
}

/* ---------------------------------------------------- max_pending_calls */

/* Our own outstanding calls: a client with max_pending_calls N can have N
 * calls waiting; the next pb_ref_call fails at once with PB_ELIMIT and
 * sends nothing (fire-and-forget sends are not counted).  Another client
 * of the same loop, with the default, is not affected; once answers
 * arrive the limited client may call again. */
TEST(our_calls_beyond_max_pending_calls_fail_with_PB_ELIMIT) {
    enum { N = 3 };
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_server_opts so;
    pb_server_opts_default(&so);
    pb_server *s = listen_with(&loop, &so);
    g_nslow = 0;
    g_ticks = 0;
    pb_client_opts co;
    pb_client_opts_default(&co);
    co.broker.max_pending_calls = N;
    client lim, other;
    connect_opts(&loop, s, "127.0.0.2", &co, &lim);
    connect_from(&loop, s, "127.0.0.1", &other);
    CHECK(lim.up && other.up && g_nserved == 2);
    if (lim.up && other.up && g_nserved == 2) {
        pb_broker *slim = pb_conn_broker(g_served[0]);
        result lr[N], orr[N + 2];
        for (int i = 0; i < N; i++) res_watch(&lr[i], pb_ref_callf(pb_conn_root(lim.conn), "slow", ""));
        pb_errbuf err = {0, ""};
        pb_deferred *d = pb_ref_call(pb_conn_root(lim.conn), "add", NULL, NULL, NULL, &err);
        CHECK(d == NULL);
        CHECK_EQ_INT(err.code, PB_ELIMIT);
        CHECK_MSG(strstr(err.msg, "too many outstanding calls (3)"), "%s", err.msg);
        if (d) pb_deferred_unref(d);
        CHECK(pb_ref_callf(pb_conn_root(lim.conn), "add", "ii", (int64_t)1, (int64_t)2) == NULL);
        /* fire-and-forget is not an outstanding call */
        CHECK_EQ_INT(pb_ref_send(pb_conn_root(lim.conn), "tick", NULL, NULL), 0);
        /* the other client: more than N outstanding is fine for it */
        for (int i = 0; i < N + 2; i++) res_watch(&orr[i], pb_ref_callf(pb_conn_root(other.conn), "slow", ""));
        for (int k = 0; k < 40 && (slow_count(slim) < N || g_nslow < 2 * N + 2 || !g_ticks); k++)
            run_for(&loop, 10);
        CHECK_EQ_INT(slow_count(slim), N); /* nothing more was sent */
        CHECK_EQ_INT(g_nslow, 2 * N + 2);
        CHECK_EQ_INT(g_ticks, 1);
        CHECK(serves(&loop, &other));
        pb_broker_stats st;
        pb_broker_get_stats(pb_conn_broker(lim.conn), &st);
        CHECK_EQ_INT(st.pending_calls, N);
        /* answers free the slots */
        CHECK_EQ_INT(answer_slow(slim), N);
        CHECK(wait_all(&loop, lr, N, 3000));
        for (int i = 0; i < N; i++) CHECK(!lr[i].failed);
        CHECK(serves(&loop, &lim));
        CHECK_EQ_INT(answer_slow(NULL), N + 2);
        CHECK(wait_all(&loop, orr, N + 2, 3000));
        for (int i = 0; i < N + 2; i++) CHECK(!orr[i].failed);
        CHECK(serves(&loop, &other));
        CHECK(!lim.lost && !other.lost);
    }
    CHECK_MSG(g_log_lines == 0, "server log: %s", g_log_last);
    close_client(&loop, &lim);
    close_client(&loop, &other);
    finish(&loop, s);
}

/* ------------------------------------------------------------------ cred */

typedef struct avatar {
    pb_object base;
    char name[32];
} avatar;
static int g_logins, g_logouts;
static int av_whoami(pb_call *call, void *self, const pb_args *a) {
    return pb_call_return(call, pb_strz(pb_call_arena(call), ((avatar *)self)->name));
}
static void av_destroy(pb_object *o) { free(o); }
static const pb_method av_methods[] = {{"whoami", "", av_whoami, NULL}, {NULL, NULL, NULL, NULL}};
static const pb_class Avatar = {"Perspective", PB_AVATAR, av_methods, av_destroy};
static void on_logout(void *ud) { g_logouts++; }
static void realm(pb_realm_request *req, const char *avatar_id, pb_ref *mind, void *ud) {
    avatar *a = calloc(1, sizeof *a);
    pb_object_init(&a->base, &Avatar);
    snprintf(a->name, sizeof a->name, "%s", avatar_id);
    g_logins++;
    pb_realm_answer(req, &a->base, on_logout, NULL);
    pb_object_unref(&a->base);
}

static pb_portal *portal_listen(uv_loop_t *loop, const pb_portal_opts *po, pb_server **out) {
    g_logins = g_logouts = 0;
    pb_portal *p = pb_portal_new(realm, NULL, po);
    pb_checker *mem = pb_checker_memory_new();
    pb_checker_memory_add(mem, "alice", "right");
    pb_checker_memory_add(mem, "bob", "right");
    pb_portal_add_checker(p, mem);
    pb_server_opts so;
    pb_server_opts_default(&so);
    log_reset(&so);
    pb_errbuf err = {0, ""};
    *out = NULL;
    int rc = pb_portal_listen_tcp(p, loop, "127.0.0.1", 0, &so, out, &err);
    CHECK_MSG(rc == 0, "listen: %s", err.msg);
    return p;
}

/* Log in and wait: the result (r->ref holds the avatar on success). */
static void login_wait(uv_loop_t *loop, client *cl, const char *user, const char *pw, result *r) {
    res_watch(r, cl->conn ? pb_login(cl->conn, user, pw, NULL) : NULL);
    wait_for(loop, &r->fired, 3000);
}

static int whoami_is(uv_loop_t *loop, pb_ref *av, const char *name) {
    if (!av) return 0;
    result r;
    res_watch(&r, pb_ref_callf(av, "whoami", ""));
    wait_for(loop, &r.fired, 3000);
    return r.fired && !r.failed && !strcmp(r.value, name);
}

/* Failed logins from 127.0.0.2 throttle that address: after
 * max_failures_per_min failures even the right password is refused there
 * (UnauthorizedLogin, the checkers are not asked), on that connection and
 * on a new one; the connection itself stays usable.  alice from 127.0.0.1
 * logs in and is served during and after. */
TEST(failed_logins_throttle_only_their_address) {
    enum { F = 3 };
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_portal_opts po = {.max_failures_per_min = F};
    pb_server *s;
    pb_portal *portal = portal_listen(&loop, &po, &s);
    client bad, good;
    connect_from(&loop, s, "127.0.0.2", &bad);
    connect_from(&loop, s, "127.0.0.1", &good);
    CHECK(bad.up && good.up);
    if (bad.up && good.up) {
        result gl, r;
        login_wait(&loop, &good, "alice", "right", &gl);
        CHECK(gl.ref && !gl.failed);
        for (int i = 0; i < F; i++) {
            login_wait(&loop, &bad, "bob", "wrong", &r);
            CHECK_MSG(r.failed && !strcmp(r.type, PB_FAILURE_UNAUTHORIZED), "%s: %s", r.type, r.value);
            CHECK(whoami_is(&loop, gl.ref, "alice")); /* during */
        }
        CHECK_EQ_INT(g_logins, 1);
        /* the right password, too late */
        login_wait(&loop, &bad, "bob", "right", &r);
        CHECK_MSG(r.failed && !strcmp(r.type, PB_FAILURE_UNAUTHORIZED), "%s: %s", r.type, r.value);
        res_free(&r);
        CHECK_EQ_INT(g_logins, 1);
        CHECK(!bad.lost); /* refused, not disconnected */
        /* a new connection from the same address is throttled too */
        client bad2;
        connect_from(&loop, s, "127.0.0.2", &bad2);
        CHECK(bad2.up);
        login_wait(&loop, &bad2, "bob", "right", &r);
        CHECK(r.failed && !strcmp(r.type, PB_FAILURE_UNAUTHORIZED));
        res_free(&r);
        /* 127.0.0.1: a second login, a wrong one (counted for 127.0.0.1
         * only) and the right one again all behave normally */
        client good2;
        connect_from(&loop, s, "127.0.0.1", &good2);
        login_wait(&loop, &good2, "bob", "wrong", &r);
        CHECK(r.failed && !strcmp(r.type, PB_FAILURE_UNAUTHORIZED));
        login_wait(&loop, &good2, "bob", "right", &r);
        CHECK_MSG(!r.failed && r.ref, "%s: %s", r.type, r.value);
        CHECK(whoami_is(&loop, r.ref, "bob"));
        res_free(&r);
        CHECK_EQ_INT(g_logins, 2);
        CHECK(whoami_is(&loop, gl.ref, "alice")); /* after */
        res_free(&gl);
        close_client(&loop, &bad2);
        close_client(&loop, &good2);
    }
    CHECK_MSG(g_log_lines == 0, "server log: %s", g_log_last);
    close_client(&loop, &bad);
    close_client(&loop, &good);
    finish(&loop, s);
    CHECK_EQ_INT(g_logouts, g_logins);
    pb_portal_free(portal);
}

/* login_timeout_ms: a connection from 127.0.0.2 that never logs in, and
 * one that asked for a challenge and never answered, are closed after the
 * timeout; the logged-in peer stays and is served during and after. */
TEST(connections_that_never_log_in_are_closed_and_others_stay) {
    enum { T = 300 };
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_portal_opts po = {.login_timeout_ms = T};
    pb_server *s;
    pb_portal *portal = portal_listen(&loop, &po, &s);
    client idle, half, good;
    connect_from(&loop, s, "127.0.0.2", &idle);
    connect_from(&loop, s, "127.0.0.2", &half);
    connect_from(&loop, s, "127.0.0.1", &good);
    CHECK(idle.up && half.up && good.up);
    if (idle.up && half.up && good.up) {
        double t_up = now_s() - g_t0;
        result gl, hl;
        login_wait(&loop, &good, "alice", "right", &gl);
        CHECK(gl.ref && !gl.failed);
        /* half: login(username) answered with a challenge, never responded */
        res_watch(&hl, pb_ref_callf(pb_conn_root(half.conn), "login", "y", "bob", (size_t)3));
        CHECK(wait_for(&loop, &hl.fired, 3000) && !hl.failed);
        /* the good peer keeps calling while the others time out */
        for (int k = 0; k < 40 && !(idle.lost && half.lost); k++) {
            CHECK(whoami_is(&loop, gl.ref, "alice"));
            run_for(&loop, 25);
        }
        CHECK(idle.lost && half.lost);
        CHECK_MSG(idle.lost_at - t_up > 0.2 && idle.lost_at - t_up < 1.5, "idle lost at %.2fs", idle.lost_at - t_up);
        CHECK_MSG(half.lost_at - t_up > 0.2 && half.lost_at - t_up < 1.5, "half lost at %.2fs", half.lost_at - t_up);
        run_for(&loop, 2 * T); /* well past the timeout for the good peer too */
        CHECK(!good.lost);
        CHECK(whoami_is(&loop, gl.ref, "alice"));
        wait_connections(&loop, s, 1);
        CHECK_EQ_INT(pb_server_connections(s), 1);
        /* a slow login that does finish in time keeps its connection */
        client late;
        connect_from(&loop, s, "127.0.0.2", &late);
        run_for(&loop, T / 2);
        result ll;
        login_wait(&loop, &late, "bob", "right", &ll);
        CHECK(ll.ref && !ll.failed);
        run_for(&loop, T);
        CHECK(!late.lost && whoami_is(&loop, ll.ref, "bob"));
        res_free(&ll);
        res_free(&hl);
        res_free(&gl);
        close_client(&loop, &late);
    }
    CHECK_MSG(g_log_lines == 0, "server log: %s", g_log_last);
    close_client(&loop, &good);
    finish(&loop, s);
    CHECK_EQ_INT(g_logouts, g_logins);
    pb_portal_free(portal);
}

/* ------------------------------------------------------ logged once */

/* The server log's rate limit (pb_server_opts.log): a limit hit many
 * times is one line, then after 10 s one summary line carrying how many
 * were left out.  Here 127.0.0.2 hammers max_connections_per_addr while
 * 127.0.0.1 is served every 500 ms.  (Takes 10.5 s: the window is fixed.) */
TEST(a_hammered_limit_is_logged_once_then_summarised) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_server_opts so;
    pb_server_opts_default(&so);
    so.max_connections_per_addr = 1;
    pb_server *s = listen_with(&loop, &so);
    client hold, good, x;
    connect_from(&loop, s, "127.0.0.2", &hold);
    connect_from(&loop, s, "127.0.0.1", &good);
    CHECK(hold.up && good.up);
    double first = 0;
    for (int i = 0; i < 3; i++) {
        connect_from(&loop, s, "127.0.0.2", &x);
        CHECK(!x.up && x.failed_status != 0);
        if (!i) first = now_s();
        CHECK(serves(&loop, &good));
    }
    CHECK_EQ_INT(g_log_lines, 1);
    CHECK_MSG(strstr(g_log_last, "refusing 127.0.0.2:") && !strstr(g_log_last, "more like it"), "%s",
              g_log_last);
    while (now_s() - first < 10.2) {
        run_for(&loop, 500);
        CHECK(serves(&loop, &good));
        CHECK_EQ_INT(g_log_lines, 1);
    }
    connect_from(&loop, s, "127.0.0.2", &x);
    CHECK(!x.up && x.failed_status != 0);
    CHECK_EQ_INT(g_log_lines, 2);
    CHECK_MSG(strstr(g_log_last, "refusing 127.0.0.2:") &&
                  strstr(g_log_last, "(2 more like it in the last 10 s)"),
              "%s", g_log_last);
    connect_from(&loop, s, "127.0.0.2", &x); /* and quiet again */
    CHECK(!x.up);
    CHECK_EQ_INT(g_log_lines, 2);
    CHECK(serves(&loop, &hold) && serves(&loop, &good));
    close_client(&loop, &hold);
    close_client(&loop, &good);
    finish(&loop, s);
}

int main(void) {
    pb_object_init(&g_root, &Root);
    g_finish_before_close = answer_all_slow;
    double t = now_s();
    RUN(string_over_max_string_drops_only_its_sender);
    RUN(list_over_max_list_drops_only_its_sender);
    RUN(nesting_over_max_depth_drops_only_its_sender);
    RUN(tokens_over_max_items_drop_only_their_sender);
    RUN(arena_bytes_over_max_bytes_drop_only_their_sender);
    RUN(collecting_references_past_max_refs_is_refused_then_disconnected);
    RUN(calls_beyond_max_inflight_get_an_error_and_the_connection_stays);
    RUN(our_calls_beyond_max_pending_calls_fail_with_PB_ELIMIT);
    RUN(failed_logins_throttle_only_their_address);
    RUN(connections_that_never_log_in_are_closed_and_others_stay);
    RUN(a_hammered_limit_is_logged_once_then_summarised);
    printf("(%.1f s)\n", now_s() - t);
    return TEST_SUMMARY();
}
