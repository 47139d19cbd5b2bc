/*
 * latency_load - round-trip latency of one client's echo calls while a
 * group is chatting: the probe side of bench/scale.sh's "latency under
 * load" section (the 10,000 idle members are bench_connections processes
 * holding their connections, joined to the same group).
 *
 *   latency_load --port N [--host H] [--group NAME] [--senders S]
 *                [--rate R] [--seconds T] [--label NAME] [--bind 127.0.0.X]
 *
 * Logs in S sender sessions (anonymous, with a mind, joined to group NAME,
 * default "scale") and one probe session.  For T seconds (default 10) the
 * senders send R messages/s in all (default 200; each fanned out by the
 * server to every member) while the probe makes sequential echo calls of a
 * 16-character string.  Output: "RESULT <label> <metric> <value>" lines:
 * echo_calls, echo_p50_us, echo_p99_us, echo_max_us, sent,
 * received_per_sender.  Bounded: gives up T + 60 s after starting.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "pb/pb.h"

typedef struct session {
    pb_object mind; /* first */
    pb_ref *avatar, *group;
    long received;
    int ready;
} session;

static uv_loop_t *loop;
static const char *host = "127.0.0.1", *label = "server", *group_name = "scale", *bind_addr;
static int port, nsend = 4, ready, failed, want;
static double rate = 200, seconds = 10;
static session *ss; /* ss[0]: the probe */
static uint64_t *lat;
static size_t nlat, caplat;
static long sent;
static int running;
static uint64_t t_end;

static void result(const char *metric, double v) {
    printf("RESULT %s %s %.1f\n", label, metric, v);
    fflush(stdout);
}

static int mind_print(pb_call *call, void *self, const pb_args *a) {
    (void)a;
    ((session *)self)->received++;
    return pb_call_return_none(call);
}
static const pb_method mind_methods[] = {{"print", NULL, mind_print, NULL}, {NULL, NULL, NULL, NULL}};
static const pb_class mind_class = {"Mind", PB_REFERENCEABLE, mind_methods, NULL};

static void settled(void) {
    if (ready + failed == want) uv_stop(loop);
}
static int on_fail(pb_deferred *d, void *ud) {
    (void)ud;
    if (failed++ < 3) fprintf(stderr, "latency_load: %s\n", pb_deferred_failure(d)->value);
    settled();
    return 0;
}
static int on_group(pb_deferred *d, void *ud) {
    session *s = ud;
    pb_value *v = pb_deferred_value(d);
    if (v && v->type == PB_REMOTE) s->group = pb_ref_ref((pb_ref *)v->u.h);
    s->ready = 1;
    ready++;
    settled();
    return 0;
}
static int on_login(pb_deferred *d, void *ud) {
    session *s = ud;
    pb_value *v = pb_deferred_value(d);
    if (!v || v->type != PB_REMOTE) return PB_EPROTO;
    s->avatar = pb_ref_ref((pb_ref *)v->u.h);
    pb_deferred *g = pb_ref_callf(s->avatar, "getGroup", "s", group_name);
    pb_deferred_add(g, on_group, on_fail, s);
    pb_deferred_unref(g);
    return 0;
}
static void on_connect(pb_conn *c, int status, const char *msg, void *ud) {
    if (status) {
        if (failed++ < 3) fprintf(stderr, "latency_load: connect: %s\n", msg);
        settled();
        return;
    }
    pb_deferred *d = pb_login(c, NULL, NULL, ud);
    pb_deferred_add(d, on_login, on_fail, ud);
    pb_deferred_unref(d);
}

static void probe_fire(void);
static int probe_done(pb_deferred *d, void *ud) {
    (void)d;
    uint64_t dt = uv_hrtime() - (uint64_t)(uintptr_t)ud;
    if (nlat == caplat) {
        caplat = caplat ? caplat * 2 : 65536;
        lat = realloc(lat, caplat * sizeof *lat);
    }
    lat[nlat++] = dt;
    if (running) probe_fire();
    return 0;
}
static void probe_fire(void) {
    if (uv_hrtime() >= t_end) {
        running = 0;
        uv_stop(loop);
        return;
    }
    pb_deferred *d = pb_ref_callf(ss[0].avatar, "echo", "s", "0123456789abcdef");
    if (!d) return;
    pb_deferred_add(d, probe_done, probe_done, (void *)(uintptr_t)uv_hrtime());
    pb_deferred_unref(d);
}

static int sender_next;
static void on_tick(uv_timer_t *t) {
    (void)t;
    /* 10 ms ticks: rate/100 messages each, round-robin over the senders */
    static double owed;
    owed += rate / 100.0;
    while (owed >= 1 && running) {
        session *s = &ss[1 + sender_next++ % nsend];
        pb_deferred *d = s->group ? pb_ref_callf(s->group, "send", "s", "chat message") : NULL;
        if (d) {
            pb_deferred_unref(d);
            sent++;
        }
        owed -= 1;
    }
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) goto usage;
        if (!strcmp(a, "--port")) port = atoi(v);
        else if (!strcmp(a, "--host")) host = v;
        else if (!strcmp(a, "--group")) group_name = v;
        else if (!strcmp(a, "--senders")) nsend = atoi(v);
        else if (!strcmp(a, "--rate")) rate = atof(v);
        else if (!strcmp(a, "--seconds")) seconds = atof(v);
        else if (!strcmp(a, "--label")) label = v;
        else if (!strcmp(a, "--bind")) bind_addr = v;
        else goto usage;
    }
    if (nsend < 1 || port <= 0) goto usage;
    loop = uv_default_loop();
    want = nsend + 1;
    ss = calloc((size_t)want, sizeof *ss);
    for (int i = 0; i < want; i++) {
        pb_object_init(&ss[i].mind, &mind_class);
        pb_client_opts o;
        pb_client_opts_default(&o);
        o.bind_addr = bind_addr;
        if (pb_connect_tcp(loop, host, port, &o, on_connect, NULL, &ss[i], NULL)) failed++;
    }
    uv_timer_t guard, tick;
    uv_timer_init(loop, &guard);
    uv_timer_start(&guard, (uv_timer_cb)uv_stop, (uint64_t)(seconds * 1000) + 60000, 0);
    uv_unref((uv_handle_t *)&guard);
    if (ready + failed < want) uv_run(loop, UV_RUN_DEFAULT);
    if (ready < want) {
        fprintf(stderr, "latency_load: %d of %d sessions ready\n", ready, want);
        return 1;
    }
    uv_timer_init(loop, &tick);
    uv_timer_start(&tick, on_tick, 10, 10);
    running = 1;
    t_end = uv_hrtime() + (uint64_t)(seconds * 1e9);
    probe_fire();
    uv_run(loop, UV_RUN_DEFAULT);
    uv_timer_stop(&tick);
    qsort(lat, nlat, sizeof *lat, cmp_u64);
    result("echo_calls", (double)nlat);
    result("echo_p50_us", nlat ? lat[nlat / 2] / 1e3 : 0);
    result("echo_p99_us", nlat ? lat[nlat * 99 / 100] / 1e3 : 0);
    result("echo_max_us", nlat ? lat[nlat - 1] / 1e3 : 0);
    result("sent", (double)sent);
    result("received_per_sender", (double)ss[1].received);
    return 0;
usage:
    fprintf(stderr, "usage: latency_load --port N [--host H] [--group NAME] [--senders S] "
                    "[--rate R] [--seconds T] [--label NAME] [--bind 127.0.0.X]\n");
    return 2;
}
