/*
 * benchclient - drives a CONTRACT.md benchmark service (the C benchserver
 * or Twisted's) and prints figures: logins/s, fan-out deliveries/s,
 * sequential echo latency and pipelined echo calls/s.
 *
 *   benchclient --port N [--host H] [--logins N] [--members N]
 *               [--messages N] [--calls N] [--label NAME]
 *               [--conns N]
 *
 * --conns N: instead of the one-connection echo figures, --calls echo
 * calls over N logged-in connections with 100 in flight on each
 * (echo_pipelined100xN_calls_per_s; for multi-loop servers).
 *
 * Every phase is bounded by a count and a wall-clock limit and stops by
 * itself.  Output: one "RESULT <label> <metric> <value>" line per figure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "pb/pb.h"

static const char *host = "127.0.0.1";
static int port = 8800;
static const char *label = "server";
static uv_loop_t *loop;

static uint64_t now_ns(void) { return uv_hrtime(); }

static void result(const char *metric, double v) {
    printf("RESULT %s %s %.1f\n", label, metric, v);
    fflush(stdout);
}

/* ----------------------------------------------------------------- logins */

typedef struct login_state {
    int target, started, done, failed, inflight;
    uint64_t t0;
} login_state;

static login_state ls;
static void login_next(void);

static int login_ok(pb_deferred *d, void *ud) {
    pb_conn *c = ud;
    (void)d;
    ls.done++;
    ls.inflight--;
    pb_conn_close(c);
    login_next();
    return 0;
}

static int login_err(pb_deferred *d, void *ud) {
    pb_conn *c = ud;
    const pb_failure *f = pb_deferred_failure(d);
    if (ls.failed++ < 3) fprintf(stderr, "login failed: %s: %s\n", f->type, f->value);
    ls.inflight--;
    pb_conn_close(c);
    login_next();
    return 0;
}

static void login_connected(pb_conn *c, int status, const char *msg, void *ud) {
    (void)ud;
    if (status) {
        if (ls.failed++ < 3) fprintf(stderr, "connect failed: %s\n", msg);
        ls.inflight--;
        login_next();
        return;
    }
    pb_deferred *d = pb_login(c, "bench", "bench", NULL);
    if (!d) {
        ls.failed++;
        ls.inflight--;
        pb_conn_close(c);
        login_next();
        return;
    }
    pb_deferred_add(d, login_ok, login_err, c);
    pb_deferred_unref(d);
}

static void login_next(void) {
    while (ls.started < ls.target && ls.inflight < 16 && ls.failed < 50) {
        pb_client_opts o;
        pb_client_opts_default(&o);
        ls.started++;
        ls.inflight++;
        if (pb_connect_tcp(loop, host, port, &o, login_connected, NULL, NULL, NULL)) {
            ls.failed++;
            ls.inflight--;
        }
    }
}

static void bench_logins(int n) {
    memset(&ls, 0, sizeof ls);
    ls.target = n;
    ls.t0 = now_ns();
    login_next();
    uv_run(loop, UV_RUN_DEFAULT);
    double s = (double)(now_ns() - ls.t0) / 1e9;
    if (ls.failed) fprintf(stderr, "logins: %d failed\n", ls.failed);
    result("logins_per_s", ls.done / s);
}

/* ------------------------------------------------------- session helpers */

/* A logged-in session: connection, avatar, optional mind. */
typedef struct session {
    pb_conn *conn;
    pb_ref *avatar;
    pb_ref *group;
    pb_object mind;
    uint64_t received;
    int ready;
} session;

static uint64_t total_received, expect_total;
static int sessions_ready, sessions_failed, sessions_started;
static session *sessions_all;
static void sessions_more(void);

/* One session finished logging in (or failed): open the next, or stop. */
static void session_settled(void) {
    if (sessions_ready + sessions_failed >= (int)expect_total) uv_stop(loop);
    else sessions_more();
}

static int mind_print(pb_call *call, void *self, const pb_args *a) {
    session *s = (session *)((char *)self - offsetof(session, mind));
    (void)a;
    s->received++;
    total_received++;
    if (expect_total && total_received >= expect_total) uv_stop(loop);
    return pb_call_return_none(call);
}
static const pb_method mind_methods[] = {{"print", NULL, mind_print, NULL}, {NULL, NULL, NULL, NULL}};
static const pb_class mind_class = {"Mind", PB_REFERENCEABLE, mind_methods, NULL};

static int session_group_ok(pb_deferred *d, void *ud) {
    session *s = ud;
    pb_value *v = pb_deferred_value(d);
    if (v && v->type == PB_REMOTE) s->group = pb_ref_ref((pb_ref *)v->u.h);
    s->ready = 1;
    sessions_ready++;
    session_settled();
    return 0;
}

static int session_err(pb_deferred *d, void *ud) {
    const pb_failure *f = pb_deferred_failure(d);
    (void)ud;
    if (sessions_failed++ < 3) fprintf(stderr, "session: %s: %s\n", f->type, f->value);
    session_settled();
    return 0;
}

static int session_logged_in(pb_deferred *d, void *ud) {
    session *s = ud;
    pb_value *v = pb_deferred_value(d);
    if (!v || v->type != PB_REMOTE) return PB_EPROTO;
    s->avatar = pb_ref_ref((pb_ref *)v->u.h);
    pb_deferred *g = pb_ref_callf(s->avatar, "getGroup", "s", "bench");
    if (!g) return PB_ENOMEM;
    pb_deferred_add(g, session_group_ok, session_err, s);
    pb_deferred_unref(g);
    return 0;
}

static void session_connected(pb_conn *c, int status, const char *msg, void *ud) {
    session *s = ud;
    if (status) {
        if (sessions_failed++ < 3) fprintf(stderr, "connect: %s\n", msg);
        session_settled();
        return;
    }
    s->conn = c;
    pb_deferred *d = pb_login(c, "bench", "bench", &s->mind);
    if (!d) {
        sessions_failed++;
        session_settled();
        return;
    }
    pb_deferred_add(d, session_logged_in, session_err, s);
    pb_deferred_unref(d);
}

/* Keep at most 32 logins in progress, so a server's listen backlog
 * (Twisted's is 50) is never what is measured. */
static void sessions_more(void) {
    while (sessions_started < (int)expect_total &&
           sessions_started - sessions_ready - sessions_failed < 32) {
        session *s = &sessions_all[sessions_started++];
        pb_object_init(&s->mind, &mind_class);
        pb_client_opts o;
        pb_client_opts_default(&o);
        if (pb_connect_tcp(loop, host, port, &o, session_connected, NULL, s, NULL))
            sessions_failed++;
    }
}

/* Open n logged-in sessions that joined group "bench". */
static session *open_sessions(int n) {
    session *ss = calloc((size_t)n, sizeof *ss);
    if (!ss) return NULL;
    sessions_ready = sessions_failed = sessions_started = 0;
    sessions_all = ss;
    expect_total = (uint64_t)n;
    sessions_more();
    uv_run(loop, UV_RUN_DEFAULT);
    expect_total = 0;
    return ss;
}

static void close_sessions(session *ss, int n) {
    for (int i = 0; i < n; i++) {
        if (ss[i].group) pb_ref_unref(ss[i].group);
        if (ss[i].avatar) pb_ref_unref(ss[i].avatar);
        if (ss[i].conn) pb_conn_close(ss[i].conn);
    }
    uv_run(loop, UV_RUN_NOWAIT);
    uv_run(loop, UV_RUN_NOWAIT);
    free(ss);
}

/* ------------------------------------------------------------------ fanout */

static void bench_fanout(int members, int messages) {
    session *ss = open_sessions(members);
    if (!ss) return;
    if (sessions_ready < members) {
        fprintf(stderr, "fanout: only %d of %d members ready\n", sessions_ready, members);
        close_sessions(ss, members);
        return;
    }
    total_received = 0;
    expect_total = (uint64_t)members * (uint64_t)messages;
    uint64_t t0 = now_ns();
    /* The sender pipelines its sends with answers; deliveries are counted
     * by every member's mind. */
    for (int i = 0; i < messages; i++) {
        pb_deferred *d = pb_ref_callf(ss[0].group, "send", "s", "fan-out message");
        if (d) pb_deferred_unref(d);
    }
    uv_timer_t guard;
    uv_timer_init(loop, &guard);
    uv_timer_start(&guard, (uv_timer_cb)uv_stop, 60000, 0); /* bounded */
    uv_run(loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&guard, NULL);
    double s = (double)(now_ns() - t0) / 1e9;
    if (total_received < expect_total)
        fprintf(stderr, "fanout: %llu of %llu delivered\n", (unsigned long long)total_received,
                (unsigned long long)expect_total);
    result("fanout_members", members);
    result("fanout_deliveries_per_s", (double)total_received / s);
    expect_total = 0;
    close_sessions(ss, members);
}

/* -------------------------------------------------------------------- echo */

static int echo_remaining, echo_inflight;
static uint64_t echo_t;
static uint64_t *lat;
static int nlat;
static pb_ref *echo_avatar;
static pb_value *echo_payload;
static pb_arena *echo_arena;

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void echo_fire(void);

static int echo_done(pb_deferred *d, void *ud) {
    (void)d;
    uint64_t t0 = (uint64_t)(uintptr_t)ud;
    lat[nlat++] = now_ns() - t0;
    echo_inflight--;
    if (echo_remaining == 0 && echo_inflight == 0) uv_stop(loop);
    else echo_fire();
    return 0;
}

static void echo_fire_one(void) {
    pb_value *args = pb_tuple(echo_arena, 1);
    pb_seq_append(echo_arena, args, echo_payload);
    pb_deferred *d = pb_ref_call(echo_avatar, "echo", args, NULL, NULL, NULL);
    echo_remaining--;
    echo_inflight++;
    if (!d) {
        echo_inflight--;
        return;
    }
    pb_deferred_add(d, echo_done, echo_done, (void *)(uintptr_t)now_ns());
    pb_deferred_unref(d);
}

static int echo_window = 1;
static void echo_fire(void) {
    while (echo_remaining > 0 && echo_inflight < echo_window) echo_fire_one();
}

static void bench_echo(int calls) {
    session *ss = open_sessions(1);
    if (!ss || !ss[0].avatar) {
        fprintf(stderr, "echo: login failed\n");
        if (ss) close_sessions(ss, 1);
        return;
    }
    echo_avatar = ss[0].avatar;
    echo_arena = pb_arena_new(0);
    echo_payload = pb_strz(echo_arena, "0123456789abcdef");
    lat = calloc((size_t)calls, sizeof *lat);
    for (int w = 0; w < 2; w++) {
        echo_window = w == 0 ? 1 : 100;
        nlat = 0;
        echo_remaining = calls;
        echo_inflight = 0;
        echo_t = now_ns();
        echo_fire();
        uv_run(loop, UV_RUN_DEFAULT);
        double s = (double)(now_ns() - echo_t) / 1e9;
        qsort(lat, (size_t)nlat, sizeof *lat, cmp_u64);
        if (w == 0) {
            result("echo_seq_calls_per_s", nlat / s);
            result("echo_seq_p50_us", nlat ? lat[nlat / 2] / 1e3 : 0);
            result("echo_seq_p99_us", nlat ? lat[nlat * 99 / 100] / 1e3 : 0);
        } else {
            result("echo_pipelined100_calls_per_s", nlat / s);
        }
    }
    free(lat);
    pb_arena_free(echo_arena);
    close_sessions(ss, 1);
}

/* ------------------------------------------- echo over several connections */

typedef struct mconn {
    session *s;
    int inflight;
} mconn;
static mconn *mc;
static pb_arena *mc_args; /* per-call argument tuples (reset after each burst) */
static int mc_remaining, mc_inflight_total, mc_done;

static void mc_fire(mconn *m);
static int mc_echo_done(pb_deferred *d, void *ud) {
    mconn *m = ud;
    (void)d;
    m->inflight--;
    mc_inflight_total--;
    mc_done++;
    if (mc_remaining == 0 && mc_inflight_total == 0) uv_stop(loop);
    else mc_fire(m);
    return 0;
}

static void mc_fire(mconn *m) {
    while (mc_remaining > 0 && m->inflight < echo_window) {
        pb_value *args = pb_tuple(mc_args, 1);
        pb_seq_append(mc_args, args, echo_payload);
        pb_deferred *d = pb_ref_call(m->s->avatar, "echo", args, NULL, NULL, NULL);
        mc_remaining--;
        if (!d) continue;
        m->inflight++;
        mc_inflight_total++;
        pb_deferred_add(d, mc_echo_done, mc_echo_done, m);
        pb_deferred_unref(d);
    }
    pb_arena_reset(mc_args); /* the calls are encoded already */
}

/* calls echo calls spread over conns connections, window in flight on
 * each: echo_pipelined<window>x<conns>_calls_per_s. */
static void bench_echo_conns(int calls, int conns, int window) {
    session *ss = open_sessions(conns);
    if (!ss || sessions_ready < conns) {
        fprintf(stderr, "echo: only %d of %d sessions\n", sessions_ready, conns);
        if (ss) close_sessions(ss, conns);
        return;
    }
    echo_arena = pb_arena_new(0);
    mc_args = pb_arena_new(0);
    echo_payload = pb_strz(echo_arena, "0123456789abcdef");
    mc = calloc((size_t)conns, sizeof *mc);
    echo_window = window;
    mc_remaining = calls;
    mc_inflight_total = mc_done = 0;
    uint64_t t0 = now_ns();
    for (int i = 0; i < conns; i++) {
        mc[i].s = &ss[i];
        mc_fire(&mc[i]);
    }
    uv_timer_t guard;
    uv_timer_init(loop, &guard);
    uv_timer_start(&guard, (uv_timer_cb)uv_stop, 60000, 0); /* bounded */
    uv_run(loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&guard, NULL);
    double s = (double)(now_ns() - t0) / 1e9;
    char metric[64];
    snprintf(metric, sizeof metric, "echo_pipelined%dx%d_calls_per_s", window, conns);
    result(metric, mc_done / s);
    free(mc);
    pb_arena_free(mc_args);
    pb_arena_free(echo_arena);
    close_sessions(ss, conns);
}

int main(int argc, char **argv) {
    int logins = 2000, members = 1000, messages = 20, calls = 20000, conns = 0;
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) goto usage;
        if (!strcmp(a, "--port")) port = atoi(v);
        else if (!strcmp(a, "--host")) host = v;
        else if (!strcmp(a, "--logins")) logins = atoi(v);
        else if (!strcmp(a, "--members")) members = atoi(v);
        else if (!strcmp(a, "--messages")) messages = atoi(v);
        else if (!strcmp(a, "--calls")) calls = atoi(v);
        else if (!strcmp(a, "--label")) label = v;
        else if (!strcmp(a, "--conns")) conns = atoi(v);
        else goto usage;
    }
    loop = uv_default_loop();
    if (calls > 0 && conns > 0) bench_echo_conns(calls, conns, 100);
    else if (calls > 0) bench_echo(calls);
    if (logins > 0) bench_logins(logins);
    if (members > 0 && messages > 0) bench_fanout(members, messages);
    uv_run(loop, UV_RUN_NOWAIT);
    return 0;
usage:
    fprintf(stderr, "usage: benchclient --port N [--host H] [--logins N] [--members N] "
                    "[--messages N] [--calls N] [--label NAME] [--conns N]\n");
    return 2;
}
