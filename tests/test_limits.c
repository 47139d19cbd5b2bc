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
#include "loop_util.h"
#include "transport/transport_int.h" /* read_paused, wlen: what back-pressure did */

/* ------------------------------------------------------------ the server */

static const pb_method root_methods[] = {
    {"echo", "v", root_echo, NULL},
    {"add", "ii", root_add, NULL},
    {NULL, NULL, NULL, NULL},
};
static const pb_class Root = {"Root", PB_REFERENCEABLE, root_methods, NULL};

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
    /* closed connections give their address's slots back */
    close_client(&loop, &a);
    connect_from(&loop, s, "127.0.0.1", &x[0]);
    CHECK_MSG(x[0].up, "%s", x[0].why);
    close_client(&loop, &b);
    close_client(&loop, &x[0]);
    connect_from(&loop, s, "127.0.0.1", &x[1]);
    connect_from(&loop, s, "127.0.0.1", &x[2]);
    CHECK(x[1].up && x[2].up);
    CHECK(serves(&loop, &x[2]));
    close_client(&loop, &x[1]);
    close_client(&loop, &x[2]);
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
TEST(oversized_message_drops_only_its_sender) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_server_opts so;
    pb_server_opts_default(&so);
    pb_server *s = listen_with(&loop, &so);
    client good;
    connect_from(&loop, s, NULL, &good);
    /* banana: length 1,000,000 (base-128 digits, low first), string type */
    static char huge[] = {0x40, 0x04, 0x3D, (char)0x82};
    CHECK(raw_send(&loop, pb_server_port(s), huge, sizeof huge, 3000));
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
