/*
 * test_transport.c - the libuv adapter, C client <-> C server in one
 * process, over 127.0.0.1 and over a UNIX socket.  Every test runs its own
 * loop and ends by closing everything and checking uv_loop_close()
 * succeeds (no handle left behind).
 */
#include <signal.h>
#include <stdint.h>
#include <unistd.h>
#include "pb/pb.h"
#include "test.h"
#include "loop_util.h"

/* ------------------------------------------------------------ the server */

typedef struct child {
    pb_object base;
    int id;
} child;

static int g_children_alive;
static pb_call *g_hung[16];
static int g_nhung;

static int child_ping(pb_call *call, void *self, const pb_args *a) {
    child *c = self;
    pb_arena *ar = pb_call_arena(call);
    pb_value *t = pb_tuple(ar, 2);
    pb_seq_append(ar, t, pb_strz(ar, "pong"));
    pb_seq_append(ar, t, pb_int(ar, c->id));
    return pb_call_return(call, t);
}

static void child_destroy(pb_object *o) {
    g_children_alive--;
    free(o);
}

static const pb_method child_methods[] = {{"ping", "", child_ping, NULL}, {NULL, NULL, NULL, NULL}};
static const pb_class Child = {"Child", PB_REFERENCEABLE, child_methods, child_destroy};

static int root_fail(pb_call *call, void *self, const pb_args *a) {
    return pb_call_fail(call, PB_FAILURE_VALUE_ERROR, "boom");
}

static int root_get_child(pb_call *call, void *self, const pb_args *a) {
    child *c = calloc(1, sizeof *c);
    pb_object_init(&c->base, &Child);
    c->id = (int)pb_arg_int(a, 0, 0);
    g_children_alive++;
    int rc = pb_call_return_object(call, &c->base);
    pb_object_unref(&c->base);
    return rc;
}

/* call_back(obj, x): calls obj.hello(x) and answers with what it says. */
static int called_back(pb_deferred *d, void *ud) {
    pb_call *call = ud;
    if (pb_deferred_failure(d)) pb_call_fail_failure(call, pb_deferred_failure(d));
    else pb_call_return(call, pb_deferred_value(d));
    return 0;
}

static int root_call_back(pb_call *call, void *self, const pb_args *a) {
    pb_ref *r = pb_arg_ref(a, 0);
    pb_deferred *d = pb_ref_callf(r, "hello", "i", pb_arg_int(a, 1, 0));
    if (!d) return PB_ECLOSED;
    pb_call_defer(call);
    pb_deferred_add(d, called_back, called_back, call);
    pb_deferred_unref(d);
    return 0;
}

/* hang(): never answered while the connection lives. */
static int root_hang(pb_call *call, void *self, const pb_args *a) {
    if (g_nhung >= 16) return PB_ELIMIT;
    pb_call_defer(call);
    g_hung[g_nhung++] = call;
    return 0;
}

/* drop(): the server closes this connection. */
static int root_drop(pb_call *call, void *self, const pb_args *a) {
    pb_conn *c = pb_conn_of(pb_call_broker(call));
    if (!c) return PB_ESTATE;
    pb_conn_close(c);
    return 0;
}

static const pb_method root_methods[] = {
    {"echo", "v", root_echo, NULL},
    {"add", "ii", root_add, NULL},
    {"fail", "", root_fail, NULL},
    {"getChild", "|i", root_get_child, NULL},
    {"callBack", "ri", root_call_back, NULL},
    {"hang", "", root_hang, NULL},
    {"drop", "", root_drop, NULL},
    {NULL, NULL, NULL, NULL},
};
static const pb_class Root = {"Root", PB_REFERENCEABLE, root_methods, NULL};
static int g_roots_handed;

static int g_root_saw_conn, g_refuse;
static pb_object *root_of(pb_broker *b, void *ud) {
    g_roots_handed++;
    g_root_saw_conn += b && pb_conn_of(b) && pb_conn_broker(pb_conn_of(b)) == b;
    if (g_refuse) return NULL;
    return pb_object_ref(&g_root);
}

static void release_hung(void) {
    for (int i = 0; i < g_nhung; i++) pb_call_return_none(g_hung[i]); /* dropped safely */
    g_nhung = 0;
}

static pb_server *listen_tcp(uv_loop_t *loop, const pb_server_opts *o) {
    pb_server *s = NULL;
    pb_errbuf err = {0, ""};
    int rc = pb_listen_tcp(loop, "127.0.0.1", 0, o, root_of, NULL, &s, &err);
    CHECK_MSG(rc == 0, "listen: %s", err.msg);
    CHECK(pb_server_port(s) > 0);
    return s;
}

static void connect_tcp(uv_loop_t *loop, pb_server *s, client *cl) {
    connect_to(loop, s, "127.0.0.1", NULL, cl);
    CHECK(cl->up);
}

static void unix_path(char *buf, size_t n, const char *tag) {
    snprintf(buf, n, "/tmp/pb-test-%ld-%s.sock", (long)getpid(), tag);
    unlink(buf);
}

/* -------------------------------------------------------------- the tests */

/* A call over TCP comes back with the answer the server gave. */
static void check_echo_and_add(uv_loop_t *loop, client *cl) {
    pb_ref *root = pb_conn_root(cl->conn);
    CHECK(root != NULL);
    vresult r1, r2;
    vres_watch(&r1, pb_ref_callf(root, "echo", "s", "hello"));
    vres_watch(&r2, pb_ref_callf(root, "add", "ii", (int64_t)2, (int64_t)40));
    CHECK(wait_for(loop, &r2.fired, 5000));
    CHECK(wait_for(loop, &r1.fired, 5000));
    CHECK(!r1.failed && r1.v && pb_value_is(r1.v, "hello") && r1.v->type == PB_STR);
    CHECK(!r2.failed && r2.v && r2.v->type == PB_INT && r2.v->u.i == 42);
    vres_free(&r1);
    vres_free(&r2);
}

TEST(tcp_call_gets_answer) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_server *s = listen_tcp(&loop, NULL);
    client cl;
    connect_tcp(&loop, s, &cl);
    if (cl.up) {
        check_echo_and_add(&loop, &cl);
        CHECK_EQ_INT(pb_server_connections(s), 1);
        CHECK(strncmp(pb_conn_peer(cl.conn), "127.0.0.1:", 10) == 0);
        pb_conn_close(cl.conn);
        CHECK(wait_for(&loop, &cl.lost, 5000));
    }
    finish(&loop, s);
}

TEST(localhost_resolves_to_ipv4) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_server *s = NULL;
    pb_errbuf err = {0, ""};
    CHECK(pb_listen_tcp(&loop, "localhost", 0, NULL, root_of, NULL, &s, &err) == 0);
    client cl;
    memset(&cl, 0, sizeof cl);
    CHECK(pb_connect_tcp(&loop, "localhost", pb_server_port(s), NULL, on_connect, on_lost, &cl,
                         &err) == 0);
    CHECK(wait_for(&loop, &cl.up, 5000));
    if (cl.up) {
        CHECK(strncmp(pb_conn_peer(cl.conn), "127.0.0.1:", 10) == 0);
        check_echo_and_add(&loop, &cl);
    }
    finish(&loop, s);
    CHECK_EQ_INT(cl.lost, cl.up);
}

TEST(ipv6_loopback_call) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_server *s = NULL;
    pb_errbuf err = {0, ""};
    if (pb_listen_tcp(&loop, "::1", 0, NULL, root_of, NULL, &s, &err) != 0) {
        printf("  (no IPv6 loopback here: %s)\n", err.msg);
        finish(&loop, NULL);
        return;
    }
    client cl;
    memset(&cl, 0, sizeof cl);
    CHECK(pb_connect_tcp(&loop, "::1", pb_server_port(s), NULL, on_connect, on_lost, &cl, &err) == 0);
    CHECK(wait_for(&loop, &cl.up, 5000));
    if (cl.up) {
        CHECK(strncmp(pb_conn_peer(cl.conn), "[::1]:", 6) == 0);
        check_echo_and_add(&loop, &cl);
    }
    finish(&loop, s);
}

TEST(unix_socket_call_gets_answer) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    char path[108];
    unix_path(path, sizeof path, "call");
    pb_server *s = NULL;
    pb_errbuf err = {0, ""};
    CHECK_MSG(pb_listen_unix(&loop, path, NULL, root_of, NULL, &s, &err) == 0, "%s", err.msg);
    client cl;
    memset(&cl, 0, sizeof cl);
    CHECK(pb_connect_unix(&loop, path, NULL, on_connect, on_lost, &cl, &err) == 0);
    CHECK(wait_for(&loop, &cl.up, 5000));
    if (cl.up) {
        check_echo_and_add(&loop, &cl);
        CHECK(strncmp(pb_conn_peer(cl.conn), "unix:", 5) == 0);
    }
    finish(&loop, s);
    CHECK(access(path, F_OK) != 0); /* the server removed its socket file */
}

TEST(remote_failure_reaches_errback) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_server *s = listen_tcp(&loop, NULL);
    client cl;
    connect_tcp(&loop, s, &cl);
    if (cl.up) {
        vresult r, r2, r3;
        vres_watch(&r, pb_ref_callf(pb_conn_root(cl.conn), "fail", ""));
        vres_watch(&r2, pb_ref_callf(pb_conn_root(cl.conn), "noSuchMethod", ""));
        vres_watch(&r3, pb_ref_callf(pb_conn_root(cl.conn), "add", "s", "x"));
        CHECK(wait_for(&loop, &r3.fired, 5000));
        CHECK(r.fired && r.failed && strcmp(r.ftype, "builtins.ValueError") == 0);
        CHECK(strcmp(r.fvalue, "boom") == 0);
        CHECK_EQ_INT(r.fcode, PB_EREMOTE);
        CHECK(r2.fired && r2.failed);
        CHECK(r3.fired && r3.failed && strcmp(r3.ftype, "builtins.TypeError") == 0);
        /* and the connection is still fine */
        check_echo_and_add(&loop, &cl);
        vres_free(&r);
        vres_free(&r2);
        vres_free(&r3);
    }
    finish(&loop, s);
}

/* A client object the server calls back. */
static int hello_calls;
static int cl_hello(pb_call *call, void *self, const pb_args *a) {
    hello_calls++;
    return pb_call_return(call, pb_int(pb_call_arena(call), pb_arg_int(a, 0, 0) * 2));
}
static const pb_method cl_methods[] = {{"hello", "i", cl_hello, NULL}, {NULL, NULL, NULL, NULL}};
static const pb_class ClientObj = {"ClientObj", PB_REFERENCEABLE, cl_methods, NULL};

TEST(references_both_ways) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_server *s = listen_tcp(&loop, NULL);
    client cl;
    connect_tcp(&loop, s, &cl);
    if (cl.up) {
        vresult r;
        vres_watch(&r, pb_ref_callf(pb_conn_root(cl.conn), "getChild", "i", (int64_t)7));
        CHECK(wait_for(&loop, &r.fired, 5000));
        CHECK(!r.failed && r.v && r.v->type == PB_REMOTE);
        CHECK_EQ_INT(g_children_alive, 1);
        if (r.v && r.v->type == PB_REMOTE) {
            pb_ref *ch = (pb_ref *)r.v->u.h; /* kept alive by r.a */
            vresult p;
            vres_watch(&p, pb_ref_callf(ch, "ping", ""));
            CHECK(wait_for(&loop, &p.fired, 5000));
            CHECK(!p.failed && p.v && p.v->type == PB_TUPLE && pb_len(p.v) == 2);
            if (p.v && pb_len(p.v) == 2) {
                CHECK(pb_value_is(p.v->u.seq.items[0], "pong"));
                CHECK_EQ_INT(p.v->u.seq.items[1]->u.i, 7);
            }
            vres_free(&p);
        }
        /* dropping our last reference sends decref: the server frees it */
        vres_free(&r);
        for (int i = 0; i < 50 && g_children_alive; i++) uv_run(&loop, UV_RUN_NOWAIT), usleep(2000);
        CHECK_EQ_INT(g_children_alive, 0);

        /* and the other way: the server calls an object of ours */
        pb_object mine;
        pb_object_init(&mine, &ClientObj);
        hello_calls = 0;
        vresult cb;
        vres_watch(&cb, pb_ref_callf(pb_conn_root(cl.conn), "callBack", "oi", &mine, (int64_t)21));
        CHECK(wait_for(&loop, &cb.fired, 5000));
        CHECK(!cb.failed && cb.v && cb.v->type == PB_INT && cb.v->u.i == 42);
        CHECK_EQ_INT(hello_calls, 1);
        vres_free(&cb);
        pb_conn_close(cl.conn);
        wait_for(&loop, &cl.lost, 5000);
        pb_object_unref(&mine);
    }
    finish(&loop, s);
    CHECK_EQ_INT(g_children_alive, 0);
}

TEST(lost_connection_fails_pending_calls) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_server *s = listen_tcp(&loop, NULL);
    client cl;
    connect_tcp(&loop, s, &cl);
    if (cl.up) {
        vresult h1, h2, dr;
        vres_watch(&h1, pb_ref_callf(pb_conn_root(cl.conn), "hang", ""));
        vres_watch(&h2, pb_ref_callf(pb_conn_root(cl.conn), "hang", ""));
        vres_watch(&dr, pb_ref_callf(pb_conn_root(cl.conn), "drop", ""));
        CHECK(wait_for(&loop, &cl.lost, 5000));
        CHECK(h1.fired && h1.failed && h2.fired && h2.failed && dr.fired && dr.failed);
        CHECK_MSG(strcmp(h1.ftype, PB_FAILURE_CONNECTION_LOST) == 0, "type %s", h1.ftype);
        CHECK_EQ_INT(h1.fcode, PB_ECLOSED);
        CHECK_EQ_INT(g_nhung, 2);
        for (int i = 0; i < 50 && pb_server_connections(s); i++) uv_run(&loop, UV_RUN_NOWAIT), usleep(2000);
        CHECK_EQ_INT(pb_server_connections(s), 0);
        release_hung(); /* answering after the connection went is harmless */
    }
    finish(&loop, s);
}

TEST(local_close_fails_pending_calls) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_server *s = listen_tcp(&loop, NULL);
    client cl;
    connect_tcp(&loop, s, &cl);
    if (cl.up) {
        vresult h;
        vres_watch(&h, pb_ref_callf(pb_conn_root(cl.conn), "hang", ""));
        wait_for(&loop, &g_nhung, 5000);
        pb_conn_close(cl.conn);
        pb_conn_close(cl.conn); /* twice is harmless */
        CHECK(wait_for(&loop, &h.fired, 5000));
        CHECK(h.failed && strcmp(h.ftype, PB_FAILURE_CONNECTION_LOST) == 0);
        CHECK(wait_for(&loop, &cl.lost, 5000));
        CHECK_EQ_INT(cl.lost, 1);
    }
    finish(&loop, s);
}

TEST(server_close_ends_every_connection) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_server *s = listen_tcp(&loop, NULL);
    client a, b;
    connect_tcp(&loop, s, &a);
    connect_tcp(&loop, s, &b);
    CHECK_EQ_INT(pb_server_connections(s), 2);
    vresult h;
    vres_watch(&h, a.up ? pb_ref_callf(pb_conn_root(a.conn), "hang", "") : NULL);
    wait_for(&loop, &g_nhung, 5000);
    g_server_closed = 0;
    pb_server_close(s, on_server_closed, NULL);
    CHECK(wait_for(&loop, &a.lost, 5000));
    CHECK(wait_for(&loop, &b.lost, 5000));
    CHECK(wait_for(&loop, &g_server_closed, 5000));
    CHECK(h.fired && h.failed);
    finish(&loop, NULL);
}

TEST(connect_refused_reports_failure) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_server *s = listen_tcp(&loop, NULL);
    int port = pb_server_port(s);
    finish(&loop, s); /* nobody listens there now */
    uv_loop_init(&loop);
    client cl;
    memset(&cl, 0, sizeof cl);
    pb_errbuf err = {0, ""};
    CHECK(pb_connect_tcp(&loop, "127.0.0.1", port, NULL, on_connect, on_lost, &cl, &err) == 0);
    CHECK(wait_for(&loop, &cl.failed_status, 5000));
    CHECK_EQ_INT(cl.failed_status, PB_EIO);
    CHECK(!cl.up && !cl.lost);
    /* bad arguments fail at once, and then no callback ever runs */
    CHECK(pb_connect_tcp(&loop, "127.0.0.1", 0, NULL, on_connect, on_lost, &cl, &err) == PB_EINVAL);
    finish(&loop, NULL);
}

/* A socket that accepts but never speaks PB: the connect timeout fires. */
static void raw_closed(uv_handle_t *h) { free(h); }
static void raw_accept(uv_stream_t *ls, int status) {
    uv_tcp_t *t = malloc(sizeof *t);
    uv_tcp_init(ls->loop, t);
    uv_accept(ls, (uv_stream_t *)t);
    ls->data = t;
}

TEST(handshake_timeout) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_tcp_t ls;
    uv_tcp_init(&loop, &ls);
    ls.data = NULL;
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    uv_tcp_bind(&ls, (struct sockaddr *)&sa, 0);
    uv_listen((uv_stream_t *)&ls, 8, raw_accept);
    int len = sizeof sa;
    uv_tcp_getsockname(&ls, (struct sockaddr *)&sa, &len);
    pb_client_opts o;
    pb_client_opts_default(&o);
    o.connect_timeout_ms = 200;
    client cl;
    memset(&cl, 0, sizeof cl);
    CHECK(pb_connect_tcp(&loop, "127.0.0.1", ntohs(sa.sin_port), &o, on_connect, on_lost, &cl, NULL) == 0);
    CHECK(wait_for(&loop, &cl.failed_status, 3000));
    CHECK_EQ_INT(cl.failed_status, PB_ETIMEOUT);
    if (ls.data) uv_close((uv_handle_t *)ls.data, raw_closed);
    uv_close((uv_handle_t *)&ls, NULL);
    finish(&loop, NULL);
}

TEST(max_connections_refuses_extra) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_server_opts so;
    pb_server_opts_default(&so);
    so.max_connections = 1;
    pb_server *s = listen_tcp(&loop, &so);
    client a, b;
    connect_tcp(&loop, s, &a);
    memset(&b, 0, sizeof b);
    pb_client_opts o;
    pb_client_opts_default(&o);
    o.connect_timeout_ms = 2000;
    CHECK(pb_connect_tcp(&loop, "127.0.0.1", pb_server_port(s), &o, on_connect, on_lost, &b, NULL) == 0);
    CHECK(wait_for(&loop, &b.failed_status, 3000));
    CHECK(!b.up);
    CHECK_EQ_INT(pb_server_connections(s), 1);
    if (a.up) check_echo_and_add(&loop, &a);
    finish(&loop, s);
}

TEST(root_function_sees_broker_and_may_refuse) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_server *s = listen_tcp(&loop, NULL);
    g_roots_handed = g_root_saw_conn = 0;
    client a, b;
    connect_tcp(&loop, s, &a);
    CHECK_EQ_INT(g_roots_handed, 1);
    CHECK_EQ_INT(g_root_saw_conn, 1);
    g_refuse = 1;
    memset(&b, 0, sizeof b);
    CHECK(pb_connect_tcp(&loop, "127.0.0.1", pb_server_port(s), NULL, on_connect, on_lost, &b, NULL) == 0);
    CHECK(wait_for(&loop, &b.failed_status, 5000));
    CHECK(!b.up);
    g_refuse = 0;
    if (a.up) check_echo_and_add(&loop, &a);
    finish(&loop, s);
}

/* Closing from inside a callback, while the broker is dispatching. */
static int close_in_cb(pb_deferred *d, void *ud) {
    client *cl = ud;
    if (cl->conn) pb_conn_close(cl->conn);
    cl->done = 1;
    return 0;
}

TEST(close_inside_callback_is_safe) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_server *s = listen_tcp(&loop, NULL);
    client cl;
    connect_tcp(&loop, s, &cl);
    if (cl.up) {
        pb_ref *root = pb_conn_root(cl.conn);
        vresult later[5];
        pb_deferred *d = pb_ref_callf(root, "echo", "i", (int64_t)1);
        pb_deferred_add(d, close_in_cb, close_in_cb, &cl);
        pb_deferred_unref(d);
        for (int i = 0; i < 5; i++) vres_watch(&later[i], pb_ref_callf(root, "echo", "i", (int64_t)i));
        CHECK(wait_for(&loop, &cl.lost, 5000));
        CHECK(cl.done);
        for (int i = 0; i < 5; i++) {
            CHECK(later[i].fired); /* answered in the same read, or failed by the close */
            vres_free(&later[i]);
        }
    }
    finish(&loop, s);
}

TEST(many_calls_pipelined) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_server *s = listen_tcp(&loop, NULL);
    client cl;
    connect_tcp(&loop, s, &cl);
    enum { N = 2000 };
    static vresult rs[N];
    if (cl.up) {
        pb_ref *root = pb_conn_root(cl.conn);
        for (int i = 0; i < N; i++) vres_watch(&rs[i], pb_ref_callf(root, "add", "ii", (int64_t)i, (int64_t)1));
        CHECK(wait_for(&loop, &rs[N - 1].fired, 20000));
        int ok = 0;
        for (int i = 0; i < N; i++) {
            ok += rs[i].fired && !rs[i].failed && rs[i].v && rs[i].v->u.i == i + 1;
            vres_free(&rs[i]);
        }
        CHECK_EQ_INT(ok, N);
        pb_broker_stats st;
        pb_broker_get_stats(pb_conn_broker(cl.conn), &st);
        CHECK_EQ_INT(st.pending_calls, 0);
    }
    finish(&loop, s);
}

/* Big answers exceed what the socket takes at once: partial writes. */
TEST(large_values_cross_intact) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_server *s = listen_tcp(&loop, NULL);
    client cl;
    connect_tcp(&loop, s, &cl);
    if (cl.up) {
        pb_arena *a = pb_arena_new(0);
        pb_value *l = pb_list(a, 40);
        char *blob = malloc(100000);
        for (int i = 0; i < 40; i++) {
            for (int j = 0; j < 100000; j++) blob[j] = (char)('a' + (i + j) % 26);
            pb_seq_append(a, l, pb_bytes(a, blob, 100000));
        }
        free(blob);
        vresult r[4];
        for (int i = 0; i < 4; i++) vres_watch(&r[i], pb_ref_callf(pb_conn_root(cl.conn), "echo", "v", l));
        CHECK(wait_for(&loop, &r[3].fired, 20000));
        for (int i = 0; i < 4; i++) {
            CHECK(r[i].fired && !r[i].failed && r[i].v && pb_value_equal(r[i].v, l));
            vres_free(&r[i]);
        }
        pb_arena_free(a);
    }
    finish(&loop, s);
}

/* -------------------------------------------------------------- reconnect */

typedef struct rstate {
    int ups, downs, last_attempt;
    int echo_ok;
} rstate;

static int r_echo(pb_deferred *d, void *ud) {
    ((rstate *)ud)->echo_ok++;
    return 0;
}

static void r_up(pb_conn *c, void *ud) {
    rstate *st = ud;
    st->ups++;
    pb_deferred *d = pb_ref_callf(pb_conn_root(c), "echo", "i", (int64_t)st->ups);
    pb_deferred_add(d, r_echo, NULL, st);
    pb_deferred_unref(d);
}

static void r_down(const char *why, unsigned attempt, void *ud) {
    rstate *st = ud;
    st->downs++;
    st->last_attempt = (int)attempt;
}

TEST(reconnector_comes_back_after_server_restart) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_server *s = listen_tcp(&loop, NULL);
    int port = pb_server_port(s);
    rstate st = {0, 0, 0, 0};
    pb_reconnect_opts o;
    pb_reconnect_opts_default(&o);
    o.initial_ms = 20;
    o.max_ms = 100;
    pb_reconnector *r = NULL;
    CHECK(pb_reconnector_start(&loop, "127.0.0.1", port, &o, r_up, r_down, &st, &r, NULL) == 0);
    CHECK(wait_for(&loop, &st.echo_ok, 5000));
    CHECK_EQ_INT(st.ups, 1);

    g_server_closed = 0;
    pb_server_close(s, on_server_closed, NULL);
    CHECK(wait_for(&loop, &g_server_closed, 5000));
    CHECK(wait_for(&loop, &st.downs, 5000));
    CHECK_EQ_INT(st.last_attempt, 0); /* the loss itself */
    /* a few failed attempts while nobody listens */
    int want = st.downs + 2;
    for (int i = 0; i < 100 && st.downs < want; i++) {
        int one = 0;
        wait_for(&loop, &one, 20);
    }
    CHECK(st.downs >= want);
    CHECK(st.last_attempt >= 2);

    pb_errbuf err = {0, ""};
    pb_server *s2 = NULL;
    CHECK_MSG(pb_listen_tcp(&loop, "127.0.0.1", port, NULL, root_of, NULL, &s2, &err) == 0, "%s", err.msg);
    int two = 0;
    for (int i = 0; i < 300 && st.echo_ok < 2; i++) wait_for(&loop, &two, 10);
    CHECK_EQ_INT(st.ups, 2);
    CHECK_EQ_INT(st.echo_ok, 2);
    int downs = st.downs;
    pb_reconnector_stop(r);
    pb_reconnector_stop(r);
    finish(&loop, s2);
    CHECK_EQ_INT(st.downs, downs); /* nothing after stop */
}

TEST(reconnector_stops_cleanly_at_any_stage) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_server *s = listen_tcp(&loop, NULL);
    int port = pb_server_port(s);
    finish(&loop, s); /* a port nobody listens on */
    uv_loop_init(&loop);
    pb_reconnect_opts o;
    pb_reconnect_opts_default(&o);
    o.initial_ms = 10;
    o.max_ms = 20;
    /* stopped while resolving "localhost" */
    rstate st = {0, 0, 0, 0};
    pb_reconnector *r = NULL;
    CHECK(pb_reconnector_start(&loop, "localhost", port, &o, r_up, r_down, &st, &r, NULL) == 0);
    pb_reconnector_stop(r);
    /* stopped while waiting to retry, after failures */
    rstate st2 = {0, 0, 0, 0};
    pb_reconnector *r2 = NULL;
    CHECK(pb_reconnector_start(&loop, "127.0.0.1", port, &o, r_up, r_down, &st2, &r2, NULL) == 0);
    CHECK(wait_for(&loop, &st2.downs, 5000));
    int two = 0;
    for (int i = 0; i < 100 && st2.last_attempt < 2; i++) wait_for(&loop, &two, 10);
    CHECK(st2.last_attempt >= 2);
    pb_reconnector_stop(r2);
    /* max_retries: gives up after that many failures */
    rstate st3 = {0, 0, 0, 0};
    pb_reconnector *r3 = NULL;
    o.max_retries = 2;
    CHECK(pb_reconnector_start(&loop, "127.0.0.1", port, &o, r_up, r_down, &st3, &r3, NULL) == 0);
    for (int i = 0; i < 100 && st3.downs < 2; i++) wait_for(&loop, &two, 10);
    wait_for(&loop, &two, 100);
    CHECK_EQ_INT(st3.downs, 2);
    pb_reconnector_stop(r3);
    finish(&loop, NULL);
    CHECK_EQ_INT(st.ups + st.downs + st2.ups, 0);
}

static void raise_term(uv_timer_t *t) {
    uv_close((uv_handle_t *)t, NULL);
    raise(SIGTERM);
}

static int g_stopped;
static void stop_server(void *ud) {
    g_stopped++;
    pb_server_close(ud, on_server_closed, NULL);
}

TEST(run_until_signal_stops_on_sigterm) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_server *s = listen_tcp(&loop, NULL);
    client cl;
    connect_tcp(&loop, s, &cl);
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    uv_timer_start(&t, raise_term, 50, 0);
    g_server_closed = 0;
    g_stopped = 0;
    pb_run_until_signal(&loop, stop_server, s);
    CHECK_EQ_INT(g_stopped, 1);
    CHECK(g_server_closed);
    CHECK_EQ_INT(cl.lost, 1);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

int main(void) {
    pb_object_init(&g_root, &Root);
    g_finish_after_close = release_hung;
    RUN(tcp_call_gets_answer);
    RUN(localhost_resolves_to_ipv4);
    RUN(ipv6_loopback_call);
    RUN(unix_socket_call_gets_answer);
    RUN(remote_failure_reaches_errback);
    RUN(references_both_ways);
    RUN(lost_connection_fails_pending_calls);
    RUN(local_close_fails_pending_calls);
    RUN(server_close_ends_every_connection);
    RUN(connect_refused_reports_failure);
    RUN(handshake_timeout);
    RUN(max_connections_refuses_extra);
    RUN(root_function_sees_broker_and_may_refuse);
    RUN(close_inside_callback_is_safe);
    RUN(many_calls_pipelined);
    RUN(large_values_cross_intact);
    RUN(reconnector_comes_back_after_server_restart);
    RUN(reconnector_stops_cleanly_at_any_stage);
    RUN(run_until_signal_stops_on_sigterm);
    pb_object_unref(&g_root);
    return TEST_SUMMARY();
}
