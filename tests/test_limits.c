/*
 * test_limits.c - the transport's limits on a hostile network, over
 * loopback: each test has the peer that hits a limit and a second peer
 * that must not notice.  Limit hits go to the server's log callback,
 * rate-limited: one line however often the limit is hit.
 *
 * 127.0.0.2 is a second source address (Linux routes all of 127/8 to lo).
 * Every test runs its own loop and ends by checking uv_loop_close().
 */
#include <stdint.h>
#include <unistd.h>
#include "pb/pb.h"
#include "test.h"
#include "transport/transport_int.h" /* read_paused, wlen: what back-pressure did */

/* ------------------------------------------------------------ the server */

static int root_echo(pb_call *call, void *self, const pb_args *a) {
    return pb_call_return(call, pb_arg(a, 0));
}

static int root_add(pb_call *call, void *self, const pb_args *a) {
    return pb_call_return(call, pb_int(pb_call_arena(call), pb_arg_int(a, 0, 0) + pb_arg_int(a, 1, 0)));
}

static const pb_method root_methods[] = {
    {"echo", "v", root_echo, NULL},
    {"add", "ii", root_add, NULL},
    {NULL, NULL, NULL, NULL},
};
static const pb_class Root = {"Root", PB_REFERENCEABLE, root_methods, NULL};
static pb_object g_root;

/* Server-side connections in the order they were served. */
static pb_conn *g_served[16];
static int g_nserved;
static pb_object *root_of(pb_broker *b, void *ud) {
    if (g_nserved < 16) g_served[g_nserved++] = pb_conn_of(b);
    return pb_object_ref(&g_root);
}

static int g_log_lines;
static char g_log_last[400];
static void on_log(const char *msg, void *ud) {
    g_log_lines++;
    snprintf(g_log_last, sizeof g_log_last, "%s", msg);
}

/* ------------------------------------------------------------ the client */

typedef struct client {
    pb_conn *conn;
    int up, failed_status, lost, settled;
    char why[400];
} client;

static void on_connect(pb_conn *c, int status, const char *msg, void *ud) {
    client *cl = ud;
    cl->settled = 1;
    if (status) {
        cl->failed_status = status;
        snprintf(cl->why, sizeof cl->why, "%s", msg ? msg : "");
        return;
    }
    cl->conn = c;
    cl->up = 1;
}

static void on_lost(pb_conn *c, const char *why, void *ud) {
    client *cl = ud;
    cl->lost++;
    cl->conn = NULL;
    snprintf(cl->why, sizeof cl->why, "%s", why ? why : "");
}

typedef struct result {
    int fired, failed;
    int64_t i;
} result;

static int res_ok(pb_deferred *d, void *ud) {
    result *r = ud;
    const pb_value *v = pb_deferred_value(d);
    r->fired = 1;
    r->i = v && v->type == PB_INT ? v->u.i : -1;
    return 0;
}

static int res_err(pb_deferred *d, void *ud) {
    result *r = ud;
    r->fired = r->failed = 1;
    return 0;
}

static void res_watch(result *r, pb_deferred *d) {
    memset(r, 0, sizeof *r);
    if (!d) {
        r->fired = r->failed = 1;
        return;
    }
    pb_deferred_add(d, res_ok, res_err, r);
    pb_deferred_unref(d);
}

/* ------------------------------------------------------------ loop tools */

static int g_timed_out;
static void on_guard(uv_timer_t *t) { g_timed_out = 1; }

static int wait_for(uv_loop_t *loop, volatile int *flag, unsigned ms) {
    uv_timer_t guard;
    uv_timer_init(loop, &guard);
    g_timed_out = 0;
    uv_timer_start(&guard, on_guard, ms, 0);
    while (!*flag && !g_timed_out) uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&guard, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return *flag;
}

/* Run the loop for ms. */
static void run_for(uv_loop_t *loop, unsigned ms) {
    int never = 0;
    wait_for(loop, &never, ms);
}

static int g_server_closed;
static void on_server_closed(void *ud) { g_server_closed = 1; }

static void finish(uv_loop_t *loop, pb_server *s) {
    if (s) {
        g_server_closed = 0;
        pb_server_close(s, on_server_closed, NULL);
        wait_for(loop, &g_server_closed, 5000);
        CHECK(g_server_closed);
    }
    for (int i = 0; i < 100 && uv_run(loop, UV_RUN_NOWAIT); i++) usleep(1000);
    uv_run(loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(loop);
    CHECK_MSG(rc == 0, "uv_loop_close: %s", uv_strerror(rc));
}

static pb_server *listen_with(uv_loop_t *loop, pb_server_opts *so) {
    so->log = on_log;
    g_log_lines = 0;
    g_log_last[0] = 0;
    g_nserved = 0;
    pb_server *s = NULL;
    pb_errbuf err = {0, ""};
    int rc = pb_listen_tcp(loop, "127.0.0.1", 0, so, root_of, NULL, &s, &err);
    CHECK_MSG(rc == 0, "listen: %s", err.msg);
    return s;
}

/* Connect from bind_addr (NULL: any) and run until up or refused. */
static void connect_from(uv_loop_t *loop, pb_server *s, const char *bind_addr, client *cl) {
    memset(cl, 0, sizeof *cl);
    pb_client_opts o;
    pb_client_opts_default(&o);
    o.bind_addr = bind_addr;
    o.connect_timeout_ms = 3000;
    pb_errbuf err = {0, ""};
    int rc = pb_connect_tcp(loop, "127.0.0.1", pb_server_port(s), &o, on_connect, on_lost, cl, &err);
    CHECK_MSG(rc == 0, "connect: %s", err.msg);
    CHECK_MSG(wait_for(loop, &cl->settled, 5000), "connect did not finish");
}

/* One call answered right. */
static int serves(uv_loop_t *loop, client *cl) {
    if (!cl->up || !cl->conn) return 0;
    result r;
    res_watch(&r, pb_ref_callf(pb_conn_root(cl->conn), "add", "ii", (int64_t)40, (int64_t)2));
    wait_for(loop, &r.fired, 3000);
    return r.fired && !r.failed && r.i == 42;
}

static void close_client(uv_loop_t *loop, client *cl) {
    if (cl->conn) {
        pb_conn_close(cl->conn);
        wait_for(loop, &cl->lost, 5000);
    }
}

/* -------------------------------------------------------------- the tests */

/* max_connections: the extra peers are refused (each of them), the ones
 * in stay served, and the log has one line for three refusals. */
TEST(total_limit_refuses_only_the_extra_peers) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_server_opts so;
    pb_server_opts_default(&so);
    so.max_connections = 2;
    pb_server *s = listen_with(&loop, &so);
    client a, b, x[3];
    connect_from(&loop, s, NULL, &a);
    connect_from(&loop, s, NULL, &b);
    CHECK(a.up && b.up);
    for (int i = 0; i < 3; i++) {
        connect_from(&loop, s, NULL, &x[i]);
        CHECK(!x[i].up && x[i].failed_status != 0);
    }
    CHECK_EQ_INT(pb_server_connections(s), 2);
    CHECK(serves(&loop, &a));
    CHECK(serves(&loop, &b));
    CHECK_EQ_INT(g_log_lines, 1);
    CHECK_MSG(strstr(g_log_last, "max_connections (2) reached"), "%s", g_log_last);
    /* a slot freed is a slot for the next peer */
    close_client(&loop, &a);
    client c;
    connect_from(&loop, s, NULL, &c);
    CHECK(c.up && serves(&loop, &c));
    close_client(&loop, &b);
    close_client(&loop, &c);
    finish(&loop, s);
}

/* max_connections_per_addr: 127.0.0.1 is at its limit, 127.0.0.2 is not. */
TEST(per_address_limit_spares_other_addresses) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_server_opts so;
    pb_server_opts_default(&so);
    so.max_connections_per_addr = 2;
    pb_server *s = listen_with(&loop, &so);
    client a, b, x[3], other;
    connect_from(&loop, s, "127.0.0.1", &a);
    connect_from(&loop, s, "127.0.0.1", &b);
    CHECK(a.up && b.up);
    for (int i = 0; i < 3; i++) {
        connect_from(&loop, s, "127.0.0.1", &x[i]);
        CHECK(!x[i].up && x[i].failed_status != 0);
    }
    connect_from(&loop, s, "127.0.0.2", &other);
    CHECK_MSG(other.up, "%s", other.why);
    CHECK(serves(&loop, &other));
    CHECK(serves(&loop, &a));
    CHECK_EQ_INT(pb_server_connections(s), 3);
    CHECK_EQ_INT(g_log_lines, 1);
    CHECK_MSG(strstr(g_log_last, "refusing 127.0.0.1:") &&
                  strstr(g_log_last, "max_connections_per_addr (2)"),
              "%s", g_log_last);
    close_client(&loop, &a);
    close_client(&loop, &b);
    close_client(&loop, &other);
    finish(&loop, s);
}

/* A bad bind address fails at once; no callback follows. */
TEST(bad_bind_address_fails_at_once) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_client_opts o;
    pb_client_opts_default(&o);
    o.bind_addr = "not an address";
    client cl;
    memset(&cl, 0, sizeof cl);
    pb_errbuf err = {0, ""};
    CHECK(pb_connect_tcp(&loop, "127.0.0.1", 9, &o, on_connect, on_lost, &cl, &err) == PB_EIO);
    CHECK_MSG(strstr(err.msg, "cannot bind to not an address"), "%s", err.msg);
    finish(&loop, NULL);
    CHECK(!cl.settled);
}

/* idle_timeout_ms: the silent peer is closed, the chatty one is not. */
static void chat_tick(uv_timer_t *t) {
    client *cl = t->data;
    if (cl->conn) pb_deferred_unref(pb_ref_callf(pb_conn_root(cl->conn), "add", "ii",
                                                 (int64_t)1, (int64_t)1));
}

TEST(idle_timeout_closes_only_the_silent_peer) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_server_opts so;
    pb_server_opts_default(&so);
    so.idle_timeout_ms = 300;
    pb_server *s = listen_with(&loop, &so);
    client quiet, quiet2, chatty;
    connect_from(&loop, s, NULL, &quiet);
    connect_from(&loop, s, NULL, &quiet2);
    connect_from(&loop, s, NULL, &chatty);
    CHECK(quiet.up && quiet2.up && chatty.up);
    uv_timer_t tick;
    uv_timer_init(&loop, &tick);
    tick.data = &chatty;
    uv_timer_start(&tick, chat_tick, 50, 100);
    CHECK(wait_for(&loop, &quiet.lost, 2000));
    CHECK(wait_for(&loop, &quiet2.lost, 2000));
    run_for(&loop, 400); /* well past the timeout for chatty too */
    uv_timer_stop(&tick);
    CHECK(!chatty.lost);
    CHECK(serves(&loop, &chatty));
    CHECK_EQ_INT(pb_server_connections(s), 1);
    CHECK_EQ_INT(g_log_lines, 1); /* two idle closes, one line */
    CHECK_MSG(strstr(g_log_last, "idle for 300 ms"), "%s", g_log_last);
    uv_close((uv_handle_t *)&tick, NULL);
    close_client(&loop, &chatty);
    finish(&loop, s);
}

/* Back-pressure: a client that sends calls with big answers and never
 * reads them.  The server stops reading from it once max_output is
 * queued, so what it holds for that peer stays bounded, and another
 * client is served normally meanwhile. */
TEST(backpressure_bounds_a_peer_that_never_reads) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_server_opts so;
    pb_server_opts_default(&so);
    so.broker.max_output = 256 * 1024;
    pb_server *s = listen_with(&loop, &so);
    client hog, good;
    connect_from(&loop, s, NULL, &hog);
    connect_from(&loop, s, NULL, &good);
    CHECK(hog.up && good.up && g_nserved == 2);
    if (hog.up && good.up && g_nserved == 2) {
        pb_conn *srv_hog = g_served[0];
        /* the hog stops reading (its kernel buffer fills, then ours) */
        uv_read_stop(&hog.conn->io.stream);
        enum { N = 400, BIG = 64 * 1024 };
        char *big = malloc(BIG + 1);
        memset(big, 'x', BIG);
        big[BIG] = 0;
        static result rs[N];
        for (int i = 0; i < N; i++) res_watch(&rs[i], pb_ref_callf(pb_conn_root(hog.conn), "echo", "s", big));
        free(big);
        size_t peak = 0;
        int paused = 0;
        for (int round = 0; round < 40 && !paused; round++) {
            run_for(&loop, 50);
            paused = srv_hog->read_paused;
        }
        CHECK_MSG(paused, "the server never paused reading from the hog");
        /* The good client is served while the hog stays paused. */
        for (int i = 0; i < 10; i++) {
            CHECK(serves(&loop, &good));
            const uint8_t *d;
            size_t held = pb_broker_output(pb_conn_broker(srv_hog), &d) + pb__conn_write_pending(srv_hog);
            if (held > peak) peak = held;
        }
        CHECK(srv_hog->read_paused);
        CHECK_MSG(peak <= 3 * so.broker.max_output, "server holds %zu bytes for the hog", peak);
        CHECK(!hog.lost);
        /* ending the hog frees everything on both sides */
        close_client(&loop, &hog);
        CHECK(hog.lost);
        for (int i = 0; i < 50 && pb_server_connections(s) > 1; i++) run_for(&loop, 50);
        CHECK_EQ_INT(pb_server_connections(s), 1);
        CHECK(serves(&loop, &good));
    }
    close_client(&loop, &good);
    finish(&loop, s);
}

/* The broker's decoder limits at the transport: a peer announcing a
 * string over the limit is dropped; the other client is not. */
static int g_raw_eof;
static uv_write_t g_raw_w;
static void raw_alloc(uv_handle_t *h, size_t n, uv_buf_t *b) {
    static char buf[4096];
    *b = uv_buf_init(buf, sizeof buf);
}
static void raw_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b) {
    if (n < 0) {
        g_raw_eof = 1;
        uv_read_stop(st);
    }
}
static void raw_connected(uv_connect_t *req, int status) {
    /* banana: length 1,000,000 (base-128 digits, low first), string type */
    static char huge[] = {0x40, 0x04, 0x3D, (char)0x82};
    uv_buf_t b = uv_buf_init(huge, sizeof huge);
    if (status < 0) {
        g_raw_eof = 1;
        return;
    }
    uv_write(&g_raw_w, req->handle, &b, 1, NULL);
    uv_read_start(req->handle, raw_alloc, raw_read);
}

TEST(oversized_message_drops_only_its_sender) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_server_opts so;
    pb_server_opts_default(&so);
    pb_server *s = listen_with(&loop, &so);
    client good;
    connect_from(&loop, s, NULL, &good);
    uv_tcp_t raw;
    uv_connect_t creq;
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", pb_server_port(s), &sa);
    uv_tcp_init(&loop, &raw);
    g_raw_eof = 0;
    uv_tcp_connect(&creq, &raw, (struct sockaddr *)&sa, raw_connected);
    CHECK(wait_for(&loop, &g_raw_eof, 3000));
    uv_close((uv_handle_t *)&raw, NULL);
    CHECK(serves(&loop, &good));
    for (int i = 0; i < 20 && pb_server_connections(s) > 1; i++) run_for(&loop, 50);
    CHECK_EQ_INT(pb_server_connections(s), 1);
    close_client(&loop, &good);
    finish(&loop, s);
}

int main(void) {
    pb_object_init(&g_root, &Root);
    RUN(total_limit_refuses_only_the_extra_peers);
    RUN(per_address_limit_spares_other_addresses);
    RUN(bad_bind_address_fails_at_once);
    RUN(idle_timeout_closes_only_the_silent_peer);
    RUN(backpressure_bounds_a_peer_that_never_reads);
    RUN(oversized_message_drops_only_its_sender);
    return TEST_SUMMARY();
}
