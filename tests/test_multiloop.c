/* test_multiloop.c - multi-loop servers (pb_server_opts::loops) and
 * pb_loop_post.
 *
 *  - loop_post_order: three threads post 50,000 items each to the extra
 *    loop of a 2-loop server; each sender's items arrive in order, none
 *    lost; after pb_server_close() posts are refused with PB_ECLOSED.
 *  - chat_across_loops: a cred portal served by 2 loops; 32 clients log in
 *    (connections land on both loops), join one group living on loop 0,
 *    two members (one per loop when possible) send 200 messages each; every
 *    member receives all 400, every member in the same (group) order.
 *    Membership and sends cross loops with pb_loop_post only.
 *  - clean shutdown: the server closes with clients connected; the close
 *    callback runs once every loop has ended.
 *  - limits_hold_across_loops: max_connections_per_addr and the portal's
 *    failed-login throttle count for the whole server, not per loop: 10
 *    connections from one address to a 2-loop server with a limit of 3
 *    get exactly 3 in; 2 failed logins (limit 2) lock that address out
 *    on both loops while another address still logs in.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include "pb/pb.h"
#include "test.h"

/* ------------------------------------------------------------ loop_post */

#define SENDERS 3
#define PER_SENDER 50000

static uint64_t g_next[SENDERS]; /* touched on loop 1's thread only */
static uint64_t g_got, g_bad;
static uv_loop_t *g_target;

static void on_item(void *ud) {
    uintptr_t v = (uintptr_t)ud;
    unsigned src = (unsigned)(v >> 24);
    uint64_t seq = v & 0xffffff;
    if (src >= SENDERS || g_next[src] != seq) g_bad++;
    else g_next[src]++;
    g_got++;
}

static void *poster(void *arg) {
    uintptr_t src = (uintptr_t)arg;
    for (uintptr_t i = 0; i < PER_SENDER; i++)
        while (pb_loop_post(g_target, on_item, (void *)((src << 24) | i)) == PB_ENOMEM) {
        }
    return NULL;
}

static int g_closed;
static void on_closed(void *ud) { (void)ud, g_closed++; }

static pb_object *null_root(pb_broker *b, void *ud) { (void)b, (void)ud; return NULL; }

static int g_inits, g_finis;
static void *count_init(uv_loop_t *l, unsigned i, void *ud) { (void)l, (void)i; g_inits++; return ud; }
static void count_fini(uv_loop_t *l, unsigned i, void *lud, void *ud) { (void)l, (void)i, (void)lud, (void)ud; g_finis++; }

static void start_posters(uv_timer_t *t) {
    pthread_t th[SENDERS - 1];
    for (uintptr_t s = 1; s < SENDERS; s++) pthread_create(&th[s - 1], NULL, poster, (void *)s);
    poster((void *)0); /* the main loop's thread is a sender too */
    for (int s = 0; s < SENDERS - 1; s++) pthread_join(th[s], NULL);
    pb_server_close(t->data, on_closed, NULL);
    uv_close((uv_handle_t *)t, NULL);
}

TEST(loop_post_order) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_server_opts o;
    pb_server_opts_default(&o);
    o.loops = 2;
    o.loop_init = count_init;
    o.loop_fini = count_fini;
    pb_server *s = NULL;
    pb_errbuf err = {0};
    g_inits = g_finis = 0;
    CHECK_EQ_INT(pb_listen_tcp(&loop, "127.0.0.1", 0, &o, null_root, NULL, &s, &err), 0);
    if (!s) return;
    CHECK_EQ_INT(pb_server_loops(s), 2);
    CHECK(pb_server_loop(s, 0) == &loop);
    CHECK(pb_server_loop(s, 2) == NULL);
    g_target = pb_server_loop(s, 1);
    CHECK(g_target && g_target != &loop);
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    t.data = s;
    uv_timer_start(&t, start_posters, 0, 0);
    g_closed = 0;
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(g_closed, 1);
    /* the threads are joined: their writes are visible */
    CHECK_EQ_INT(g_got, (uint64_t)SENDERS * PER_SENDER);
    CHECK_EQ_INT(g_bad, 0);
    CHECK_EQ_INT(g_inits, 2);
    CHECK_EQ_INT(g_finis, 2);
    CHECK_EQ_INT(pb_loop_post(g_target, on_item, NULL), PB_ECLOSED);
    CHECK_EQ_INT(pb_loop_post(&loop, on_item, NULL), PB_ECLOSED);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

/* ------------------------------------------------------- chat over loops */

#define CLIENTS 32
#define MSGS 200

/* A member: shared between the group's loop (membership) and its own
 * loop (the user); freed when both are done with it. */
typedef struct member {
    atomic_int refs;
    uv_loop_t *loop;       /* the user's loop */
    struct user *user;     /* valid on loop only; NULL once logged out */
    struct member *next;   /* the group's list (group loop only) */
} member;

typedef struct user {
    pb_object base;
    pb_ref *mind;
    member *m;             /* once joined */
} user;

static uv_loop_t *g_group_loop; /* loop 0 */
static member *g_members;       /* group loop only */
static atomic_int g_per_loop[2];
static atomic_int g_posts_refused;

static void member_unref(member *m) {
    if (atomic_fetch_sub(&m->refs, 1) == 1) free(m);
}

typedef struct delivery {
    member *m;
    int64_t v;
} delivery;

static void deliver(void *ud) { /* on the member's loop */
    delivery *d = ud;
    user *u = d->m->user;
    if (u && u->mind) {
        pb_arena *a = pb_arena_new(0);
        pb_value *args = pb_tuple(a, 1);
        pb_seq_append(a, args, pb_int(a, d->v));
        pb_ref_send(u->mind, "print", args, NULL);
        pb_arena_free(a);
    }
    member_unref(d->m);
    free(d);
}

static void group_send(void *ud) { /* on the group's loop */
    int64_t v = (int64_t)(intptr_t)ud;
    for (member *m = g_members; m; m = m->next) {
        delivery *d = malloc(sizeof *d);
        d->m = m;
        d->v = v;
        atomic_fetch_add(&m->refs, 1);
        if (pb_loop_post(m->loop, deliver, d)) {
            atomic_fetch_add(&g_posts_refused, 1);
            member_unref(m);
            free(d);
        }
    }
}

static void group_join(void *ud) { /* on the group's loop; takes a reference */
    member *m = ud;
    m->next = g_members;
    g_members = m;
}

static void group_leave(void *ud) {
    member *m = ud;
    for (member **p = &g_members; *p; p = &(*p)->next)
        if (*p == m) {
            *p = m->next;
            member_unref(m); /* the group's */
            break;
        }
    member_unref(m); /* the one this post carried */
}

static int user_join(pb_call *call, void *self, const pb_args *a) {
    user *u = self;
    (void)a;
    if (!u->m) {
        member *m = calloc(1, sizeof *m);
        atomic_init(&m->refs, 2); /* the user's and the group's */
        m->loop = pb_broker_loop(pb_call_broker(call));
        m->user = u;
        u->m = m;
        if (pb_loop_post(g_group_loop, group_join, m)) member_unref(m);
    }
    return pb_call_return_none(call);
}

static int user_send(pb_call *call, void *self, const pb_args *a) {
    (void)self;
    int64_t v = pb_arg(a, 0)->u.i;
    if (pb_loop_post(g_group_loop, group_send, (void *)(intptr_t)v))
        return pb_call_fail(call, "builtins.RuntimeError", "closing");
    return pb_call_return_none(call);
}

static int user_where(pb_call *call, void *self, const pb_args *a) {
    (void)self, (void)a;
    uv_loop_t *l = pb_broker_loop(pb_call_broker(call));
    return pb_call_return(call, pb_int(pb_call_arena(call), l == g_group_loop ? 0 : 1));
}

static const pb_method user_methods[] = {
    {"join", "", user_join, NULL},
    {"send", "i", user_send, NULL},
    {"where", "", user_where, NULL},
    {NULL, NULL, NULL, NULL},
};
static void user_destroy(pb_object *o) {
    user *u = (user *)o;
    if (u->mind) pb_ref_unref(u->mind);
    free(u);
}
static const pb_class user_class = {"User", PB_AVATAR, user_methods, user_destroy};

static void user_logout(void *ud) { /* on the user's loop */
    user *u = ud;
    if (u->m) {
        u->m->user = NULL;
        atomic_fetch_add(&u->m->refs, 1);
        if (pb_loop_post(g_group_loop, group_leave, u->m)) member_unref(u->m);
        member_unref(u->m);
        u->m = NULL;
    }
    pb_object_unref(&u->base);
}

static void realm(pb_realm_request *req, const char *id, pb_ref *mind, void *ud) {
    (void)id, (void)ud;
    uv_loop_t *l = pb_broker_loop(pb_realm_request_broker(req));
    atomic_fetch_add(&g_per_loop[l == g_group_loop ? 0 : 1], 1);
    user *u = calloc(1, sizeof *u);
    pb_object_init(&u->base, &user_class);
    u->mind = mind ? pb_ref_ref(mind) : NULL;
    pb_realm_answer(req, &u->base, user_logout, u);
}

/* client side (its own loop, on the test's thread) */
typedef struct client {
    pb_object mind;
    pb_conn *conn;
    pb_ref *avatar;
    int64_t got[2 * MSGS];
    int ngot;
    int where;
} client;

static client g_cl[CLIENTS];
static int g_ready, g_failed, g_total_got;
static uv_loop_t *g_cloop;

static int mind_print(pb_call *call, void *self, const pb_args *a) {
    client *c = self;
    if (c->ngot < 2 * MSGS) c->got[c->ngot++] = pb_arg(a, 0)->u.i;
    if (++g_total_got == CLIENTS * 2 * MSGS) uv_stop(g_cloop);
    return pb_call_return_none(call);
}
static const pb_method mind_methods[] = {{"print", NULL, mind_print, NULL}, {NULL, NULL, NULL, NULL}};
static const pb_class mind_class = {"Mind", PB_REFERENCEABLE, mind_methods, NULL};

static int on_where(pb_deferred *d, void *ud) {
    client *c = ud;
    c->where = (int)pb_deferred_value(d)->u.i;
    if (++g_ready == CLIENTS) uv_stop(g_cloop);
    return 0;
}
static int on_fail(pb_deferred *d, void *ud) {
    (void)ud;
    fprintf(stderr, "  client: %s\n", pb_deferred_failure(d)->value);
    if (++g_failed + g_ready >= CLIENTS) uv_stop(g_cloop);
    return 0;
}
static int on_login(pb_deferred *d, void *ud) {
    client *c = ud;
    c->avatar = pb_ref_ref((pb_ref *)pb_deferred_value(d)->u.h);
    pb_deferred *j = pb_ref_callf(c->avatar, "join", "");
    pb_deferred_unref(j);
    pb_deferred *w = pb_ref_callf(c->avatar, "where", "");
    pb_deferred_add(w, on_where, on_fail, c);
    pb_deferred_unref(w);
    return 0;
}
static void on_connect(pb_conn *conn, int status, const char *msg, void *ud) {
    client *c = ud;
    if (status) {
        fprintf(stderr, "  connect: %s\n", msg);
        if (++g_failed + g_ready >= CLIENTS) uv_stop(g_cloop);
        return;
    }
    c->conn = conn;
    pb_deferred *d = pb_login(conn, NULL, NULL, &c->mind);
    pb_deferred_add(d, on_login, on_fail, c);
    pb_deferred_unref(d);
}

typedef struct srvthread {
    size_t per_addr;      /* max_connections_per_addr */
    unsigned max_failures; /* portal: failed logins per address per minute */
    uv_loop_t loop;
    pb_server *s;
    pb_portal *portal;
    uv_async_t stop;
    int port;
    int closed;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} srvthread;

static void srv_stop(uv_async_t *h) {
    srvthread *st = h->data;
    pb_server_close(st->s, on_closed, NULL);
    uv_close((uv_handle_t *)h, NULL);
}

/* The server's loop 0 runs on a thread of its own, as in a real server
 * (the client loop here is the test's thread). */
static void *server_main(void *arg) {
    srvthread *st = arg;
    pb_portal_opts po = {.max_failures_per_min = st->max_failures};
    st->portal = pb_portal_new(realm, NULL, &po);
    pb_portal_add_checker(st->portal, pb_checker_anonymous_new());
    pb_checker *mem = pb_checker_memory_new();
    pb_checker_memory_add(mem, "user1", "pass1");
    pb_portal_add_checker(st->portal, mem);
    pb_server_opts o;
    pb_server_opts_default(&o);
    o.loops = 2;
    o.max_connections_per_addr = st->per_addr;
    pb_errbuf err = {0};
    g_group_loop = &st->loop;
    int rc = pb_portal_listen_tcp(st->portal, &st->loop, "127.0.0.1", 0, &o, &st->s, &err);
    uv_async_init(&st->loop, &st->stop, srv_stop);
    st->stop.data = st;
    pthread_mutex_lock(&st->mu);
    st->port = rc ? -1 : pb_server_port(st->s);
    pthread_cond_signal(&st->cv);
    pthread_mutex_unlock(&st->mu);
    if (rc) {
        fprintf(stderr, "  listen: %s\n", err.msg);
        uv_close((uv_handle_t *)&st->stop, NULL);
    }
    uv_run(&st->loop, UV_RUN_DEFAULT);
    /* every extra loop has ended: what is left of the group is ours */
    while (g_members) {
        member *m = g_members;
        g_members = m->next;
        member_unref(m);
    }
    pb_portal_free(st->portal);
    return NULL;
}

static int g_sends_done;
static int on_sent(pb_deferred *d, void *ud) { (void)d, (void)ud; g_sends_done++; return 0; }

TEST(chat_across_loops) {
    srvthread st;
    memset(&st, 0, sizeof st);
    uv_loop_init(&st.loop);
    pthread_mutex_init(&st.mu, NULL);
    pthread_cond_init(&st.cv, NULL);
    g_closed = 0;
    pthread_t th;
    pthread_create(&th, NULL, server_main, &st);
    pthread_mutex_lock(&st.mu);
    while (!st.port) pthread_cond_wait(&st.cv, &st.mu);
    pthread_mutex_unlock(&st.mu);
    CHECK(st.port > 0);

    uv_loop_t cl;
    uv_loop_init(&cl);
    g_cloop = &cl;
    if (st.port > 0) {
        for (int i = 0; i < CLIENTS; i++) {
            pb_object_init(&g_cl[i].mind, &mind_class);
            pb_connect_tcp(&cl, "127.0.0.1", st.port, NULL, on_connect, NULL, &g_cl[i], NULL);
        }
        uv_run(&cl, UV_RUN_DEFAULT); /* until every client is ready */
        CHECK_EQ_INT(g_ready, CLIENTS);
        CHECK_EQ_INT(atomic_load(&g_per_loop[0]) + atomic_load(&g_per_loop[1]), CLIENTS);
        CHECK_MSG(atomic_load(&g_per_loop[0]) > 0 && atomic_load(&g_per_loop[1]) > 0,
                  "connections per loop: %d, %d", atomic_load(&g_per_loop[0]),
                  atomic_load(&g_per_loop[1]));
        /* senders: one on each loop where possible */
        int s0 = 0, s1 = 1;
        for (int i = 0; i < CLIENTS; i++)
            if (g_cl[i].where == 0) s0 = i;
        for (int i = 0; i < CLIENTS; i++)
            if (g_cl[i].where == 1 && i != s0) s1 = i;
        if (g_ready == CLIENTS) {
            /* joins were posted before "where" answered, so all are in */
            for (int k = 0; k < MSGS; k++) {
                pb_deferred *d = pb_ref_callf(g_cl[s0].avatar, "send", "i", (int64_t)k);
                pb_deferred_add(d, on_sent, on_sent, NULL);
                pb_deferred_unref(d);
                d = pb_ref_callf(g_cl[s1].avatar, "send", "i", (int64_t)(1000000 + k));
                pb_deferred_add(d, on_sent, on_sent, NULL);
                pb_deferred_unref(d);
            }
            uv_timer_t guard;
            uv_timer_init(&cl, &guard);
            uv_timer_start(&guard, (uv_timer_cb)uv_stop, 20000, 0);
            uv_run(&cl, UV_RUN_DEFAULT);
            uv_close((uv_handle_t *)&guard, NULL);
            CHECK_EQ_INT(g_total_got, CLIENTS * 2 * MSGS);
            int order_ok = 1, same_ok = 1;
            for (int i = 0; i < CLIENTS; i++) {
                int64_t n0 = 0, n1 = 1000000;
                for (int j = 0; j < g_cl[i].ngot; j++) {
                    int64_t v = g_cl[i].got[j];
                    if (v == n0) n0++;
                    else if (v == n1) n1++;
                    else order_ok = 0;
                    if (v != g_cl[0].got[j]) same_ok = 0;
                }
            }
            CHECK_MSG(order_ok, "a member saw a sender's messages out of order");
            CHECK_MSG(same_ok, "members saw different group orders");
        }
    }
    /* shut the server down with every client still connected */
    uv_async_send(&st.stop);
    pthread_join(th, NULL);
    CHECK_EQ_INT(g_closed, 1);
    CHECK_EQ_INT(atomic_load(&g_posts_refused), 0);
    for (int i = 0; i < CLIENTS; i++)
        if (g_cl[i].avatar) pb_ref_unref(g_cl[i].avatar);
    uv_run(&cl, UV_RUN_DEFAULT); /* the clients see the connections go */
    CHECK_EQ_INT(uv_loop_close(&cl), 0);
    CHECK_EQ_INT(uv_loop_close(&st.loop), 0);
}

/* ------------------------------------------- limits over several loops */

typedef struct attempt {
    const char *user, *password; /* NULL user: connect only */
    pb_conn *conn;
    int done, ok;
} attempt;
static int g_attempts_left;

static void attempt_done(attempt *a, int ok) {
    a->done = 1;
    a->ok = ok;
    if (--g_attempts_left == 0) uv_stop(g_cloop);
}
static int attempt_ok(pb_deferred *d, void *ud) { (void)d, attempt_done(ud, 1); return 0; }
static int attempt_failed(pb_deferred *d, void *ud) { (void)d, attempt_done(ud, 0); return 0; }
static void attempt_connected(pb_conn *conn, int status, const char *msg, void *ud) {
    attempt *a = ud;
    (void)msg;
    if (status) {
        attempt_done(a, 0);
        return;
    }
    a->conn = conn;
    if (!a->user) {
        attempt_done(a, 1);
        return;
    }
    pb_deferred *d = pb_login(conn, a->user, a->password, NULL);
    pb_deferred_add(d, attempt_ok, attempt_failed, a);
    pb_deferred_unref(d);
}

/* Run n attempts from address from at once; returns how many succeeded. */
static int run_attempts(uv_loop_t *cl, int port, attempt *a, int n, const char *from) {
    g_attempts_left = n;
    for (int i = 0; i < n; i++) {
        pb_client_opts o;
        pb_client_opts_default(&o);
        o.bind_addr = from;
        o.connect_timeout_ms = 5000;
        if (pb_connect_tcp(cl, "127.0.0.1", port, &o, attempt_connected, NULL, &a[i], NULL))
            attempt_done(&a[i], 0);
    }
    uv_timer_t guard;
    uv_timer_init(cl, &guard);
    uv_timer_start(&guard, (uv_timer_cb)uv_stop, 10000, 0);
    if (g_attempts_left) uv_run(cl, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&guard, NULL);
    uv_run(cl, UV_RUN_NOWAIT);
    int ok = 0;
    for (int i = 0; i < n; i++) ok += a[i].ok;
    return ok;
}

static void close_attempts(attempt *a, int n) {
    for (int i = 0; i < n; i++)
        if (a[i].conn) pb_conn_close(a[i].conn);
}

static void start_server(srvthread *st, pthread_t *th) {
    uv_loop_init(&st->loop);
    pthread_mutex_init(&st->mu, NULL);
    pthread_cond_init(&st->cv, NULL);
    pthread_create(th, NULL, server_main, st);
    pthread_mutex_lock(&st->mu);
    while (!st->port) pthread_cond_wait(&st->cv, &st->mu);
    pthread_mutex_unlock(&st->mu);
}

static void stop_server(srvthread *st, pthread_t th, uv_loop_t *cl) {
    uv_async_send(&st->stop);
    pthread_join(th, NULL);
    uv_run(cl, UV_RUN_DEFAULT); /* the clients see the connections go */
    CHECK_EQ_INT(uv_loop_close(&st->loop), 0);
    pthread_mutex_destroy(&st->mu);
    pthread_cond_destroy(&st->cv);
}

TEST(limits_hold_across_loops) {
    uv_loop_t cl;
    uv_loop_init(&cl);
    g_cloop = &cl;
    atomic_store(&g_per_loop[0], 0);
    atomic_store(&g_per_loop[1], 0);

    /* connections per address */
    srvthread st;
    memset(&st, 0, sizeof st);
    st.per_addr = 3;
    pthread_t th;
    start_server(&st, &th);
    CHECK(st.port > 0);
    attempt a[10], other[1];
    memset(a, 0, sizeof a);
    memset(other, 0, sizeof other);
    if (st.port > 0) {
        CHECK_EQ_INT(run_attempts(&cl, st.port, a, 10, "127.0.0.1"), 3);
        CHECK_EQ_INT(run_attempts(&cl, st.port, other, 1, "127.0.0.2"), 1);
        close_attempts(a, 10);
        close_attempts(other, 1);
    }
    stop_server(&st, th, &cl);

    /* failed logins per address */
    memset(&st, 0, sizeof st);
    st.max_failures = 2;
    start_server(&st, &th);
    CHECK(st.port > 0);
    attempt wrong[2], right[8], elsewhere[1];
    memset(wrong, 0, sizeof wrong);
    memset(right, 0, sizeof right);
    memset(elsewhere, 0, sizeof elsewhere);
    for (int i = 0; i < 2; i++) wrong[i] = (attempt){"user1", "nope", NULL, 0, 0};
    for (int i = 0; i < 8; i++) right[i] = (attempt){"user1", "pass1", NULL, 0, 0};
    elsewhere[0] = (attempt){"user1", "pass1", NULL, 0, 0};
    if (st.port > 0) {
        CHECK_EQ_INT(run_attempts(&cl, st.port, wrong, 2, "127.0.0.1"), 0);
        /* with per-loop counting some of these would land on a loop that
         * has seen fewer than 2 failures and get in */
        CHECK_EQ_INT(run_attempts(&cl, st.port, right, 8, "127.0.0.1"), 0);
        CHECK_EQ_INT(run_attempts(&cl, st.port, elsewhere, 1, "127.0.0.2"), 1);
        close_attempts(wrong, 2);
        close_attempts(right, 8);
        close_attempts(elsewhere, 1);
    }
    stop_server(&st, th, &cl);
    CHECK_EQ_INT(uv_loop_close(&cl), 0);
}

int main(void) {
    RUN(loop_post_order);
    RUN(chat_across_loops);
    RUN(limits_hold_across_loops);
    return TEST_SUMMARY();
}
