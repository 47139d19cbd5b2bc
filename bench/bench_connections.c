/*
 * bench_connections - many concurrent logged-in connections to a
 * CONTRACT.md benchmark service (the C benchserver, the C chatserver's
 * benchmark shape, or Twisted's benchserver_twisted.py).
 *
 *   bench_connections --port N [--host H] [--count N] [--server-pid PID]
 *       [--bind-base 127.0.0.X] [--bind-count K] [--concurrency C]
 *       [--password] [--chat] [--user U --pass P] [--group NAME] [--timeout S]
 *       [--label NAME] [--hold S]
 *
 * Opens --count connections (default 1000), spread over K local source
 * addresses 127.0.0.X .. 127.0.0.X+K-1 (default 127.0.0.2, one per 2,000
 * connections: ephemeral ports never run out and bind() stays fast), at most C
 * connects + logins in progress at a time.  Each logs in (anonymous, or
 * bench/bench with --password, or U/P with --user/--pass) with a mind and
 * joins group NAME (getGroup(NAME), or with --chat the C chatserver's
 * joinGroup(NAME) as alice/1234 unless --user/--pass say otherwise).
 * Then the first connection sends one message to the group and every
 * connection must receive it once.  RLIMIT_NOFILE is raised to
 * the hard limit first (it bounds --count: about one fd per connection).
 *
 * With --server-pid the server's VmRSS is read from /proc/PID/status
 * before connecting and once everything is logged in (after a short
 * settle), and RSS per connection is (after - before) / count.
 *
 * Output: "RESULT <label> <metric> <value>" lines: connections,
 * open_s, logins_per_s, server_rss_before_kb, server_rss_after_kb,
 * server_rss_per_conn_bytes, delivered, fanout_ms.  Exit status 0 only if
 * every connection logged in and received the message.  Bounded by
 * --timeout (default 120 s) overall.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include "pb/pb.h"

typedef struct session {
    pb_object mind; /* first: the mind's print lands here */
    pb_ref *avatar;
    pb_ref *group;
    unsigned received;
    unsigned char state; /* 0 idle, 1 connecting, 2 ready, 3 failed */
} session;

static uv_loop_t *loop;
static const char *host = "127.0.0.1", *label = "server", *group_name = "scale";
static const char *user, *pass, *join_method = "getGroup";
static int port, server_pid;
static int count = 1000, concurrency = 256, bind_count = 0;
static unsigned bind_base[4] = {127, 0, 0, 2};
static session *ss;
static int started, ready, failed, inflight;
static long delivered, duplicates;
static int phase; /* 0 connecting, 1 fan-out */
static char (*bind_addrs)[32];

static void result(const char *metric, double v) {
    printf("RESULT %s %s %.1f\n", label, metric, v);
    fflush(stdout);
}

static long rss_kb(int pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) kb = strtol(line + 6, NULL, 10);
    fclose(f);
    return kb;
}

static int mind_print(pb_call *call, void *self, const pb_args *a) {
    session *s = self;
    (void)a;
    if (s->received++) duplicates++;
    else delivered++;
    if (phase == 1 && delivered >= ready) uv_stop(loop);
    return pb_call_return_none(call);
}
static const pb_method mind_methods[] = {{"print", NULL, mind_print, NULL},
                                         {NULL, NULL, NULL, NULL}};
static const pb_class mind_class = {"Mind", PB_REFERENCEABLE, mind_methods, NULL};

static void more(void);

static void settle(session *s, int ok) {
    s->state = ok ? 2 : 3;
    inflight--;
    if (ok) ready++;
    else failed++;
    if (ready + failed >= count) uv_stop(loop);
    else more();
}

static int group_ok(pb_deferred *d, void *ud) {
    session *s = ud;
    pb_value *v = pb_deferred_value(d);
    if (!v || v->type != PB_REMOTE) return PB_EPROTO;
    s->group = pb_ref_ref((pb_ref *)v->u.h);
    settle(s, 1);
    return 0;
}

static int step_err(pb_deferred *d, void *ud) {
    const pb_failure *f = pb_deferred_failure(d);
    if (failed < 3) fprintf(stderr, "bench_connections: %s: %s\n", f->type, f->value);
    settle(ud, 0);
    return 0;
}

static int logged_in(pb_deferred *d, void *ud) {
    session *s = ud;
    pb_value *v = pb_deferred_value(d);
    if (!v || v->type != PB_REMOTE) return PB_EPROTO;
    s->avatar = pb_ref_ref((pb_ref *)v->u.h);
    pb_deferred *g = pb_ref_callf(s->avatar, join_method, "s", group_name);
    if (!g) return PB_ENOMEM;
    pb_deferred_add(g, group_ok, step_err, s);
    pb_deferred_unref(g);
    return 0;
}

static void connected(pb_conn *c, int status, const char *msg, void *ud) {
    session *s = ud;
    if (status) {
        if (failed < 3) fprintf(stderr, "bench_connections: connect: %s\n", msg);
        settle(s, 0);
        return;
    }
    pb_deferred *d = pb_login(c, user, pass, &s->mind);
    if (!d) {
        pb_conn_close(c);
        settle(s, 0);
        return;
    }
    pb_deferred_add(d, logged_in, step_err, s);
    pb_deferred_unref(d);
}

static void lost(pb_conn *c, const char *why, void *ud) {
    session *s = ud;
    (void)c;
    if (phase == 1 && s->state == 2 && failed < 3)
        fprintf(stderr, "bench_connections: connection lost: %s\n", why);
}

static void more(void) {
    while (started < count && inflight < concurrency) {
        session *s = &ss[started];
        pb_client_opts o;
        pb_client_opts_default(&o);
        o.connect_timeout_ms = 60000;
        o.bind_addr = bind_addrs[started % bind_count];
        started++;
        inflight++;
        s->state = 1;
        pb_errbuf e = {0};
        if (pb_connect_tcp(loop, host, port, &o, connected, lost, s, &e)) {
            if (failed < 3) fprintf(stderr, "bench_connections: %s\n", e.msg);
            settle(s, 0);
        }
    }
}

static void on_guard(uv_timer_t *t) {
    (void)t;
    fprintf(stderr, "bench_connections: timed out\n");
    uv_stop(loop);
}

static void on_pause(uv_timer_t *t) { uv_stop(t->loop); }

static void sleep_loop(unsigned ms) {
    uv_timer_t t;
    uv_timer_init(loop, &t);
    uv_timer_start(&t, on_pause, ms, 0);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
}

int main(int argc, char **argv) {
    double timeout_s = 120, hold_s = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--password")) {
            user = pass = "bench";
            continue;
        }
        if (!strcmp(a, "--chat")) {
            if (!user) user = "alice", pass = "1234";
            join_method = "joinGroup";
            continue;
        }
        if (!v) goto usage;
        i++;
        if (!strcmp(a, "--port")) port = atoi(v);
        else if (!strcmp(a, "--host")) host = v;
        else if (!strcmp(a, "--user")) user = v;
        else if (!strcmp(a, "--pass")) pass = v;
        else if (!strcmp(a, "--count")) count = atoi(v);
        else if (!strcmp(a, "--server-pid")) server_pid = atoi(v);
        else if (!strcmp(a, "--concurrency")) concurrency = atoi(v);
        else if (!strcmp(a, "--bind-count")) bind_count = atoi(v);
        else if (!strcmp(a, "--bind-base")) {
            if (sscanf(v, "%u.%u.%u.%u", &bind_base[0], &bind_base[1], &bind_base[2],
                       &bind_base[3]) != 4)
                goto usage;
        } else if (!strcmp(a, "--group")) group_name = v;
        else if (!strcmp(a, "--timeout")) timeout_s = atof(v);
        else if (!strcmp(a, "--hold")) hold_s = atof(v);
        else if (!strcmp(a, "--label")) label = v;
        else goto usage;
    }
    if (port <= 0 || count <= 0 || concurrency <= 0) goto usage;
    if (bind_count <= 0) bind_count = count / 2000 + 1; /* binds stay fast */
    if (bind_base[3] + (unsigned)bind_count > 255) bind_count = (int)(255 - bind_base[3]);
    setvbuf(stdout, NULL, _IOLBF, 0);

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur != RLIM_INFINITY && (rlim_t)count + 64 > rl.rlim_cur) {
        fprintf(stderr,
                "bench_connections: --count %d needs more file descriptors than "
                "RLIMIT_NOFILE allows (%llu; raising the hard limit needs CAP_SYS_RESOURCE): "
                "split the connections over several processes (bench/scale.sh does)\n",
                count, (unsigned long long)rl.rlim_cur);
        return 2;
    }
    bind_addrs = calloc((size_t)bind_count, sizeof *bind_addrs);
    ss = calloc((size_t)count, sizeof *ss);
    if (!ss || !bind_addrs) return 1;
    for (int i = 0; i < bind_count; i++)
        snprintf(bind_addrs[i], sizeof bind_addrs[i], "%u.%u.%u.%u", bind_base[0], bind_base[1],
                 bind_base[2], bind_base[3] + (unsigned)i);
    for (int i = 0; i < count; i++) pb_object_init(&ss[i].mind, &mind_class);

    loop = uv_default_loop();
    long rss0 = server_pid ? rss_kb(server_pid) : -1;
    uv_timer_t guard;
    uv_timer_init(loop, &guard);
    uv_timer_start(&guard, on_guard, (uint64_t)(timeout_s * 1000), 0);
    uv_unref((uv_handle_t *)&guard);

    uint64_t t0 = uv_hrtime();
    more();
    uv_run(loop, UV_RUN_DEFAULT);
    double open_s = (double)(uv_hrtime() - t0) / 1e9;
    result("connections", ready);
    result("open_s", open_s);
    result("logins_per_s", ready / open_s);
    if (failed) fprintf(stderr, "bench_connections: %d of %d failed\n", failed, count);

    /* let the server finish what it was doing, then read its RSS */
    sleep_loop(1000);
    if (server_pid) {
        long rss1 = rss_kb(server_pid);
        result("server_rss_before_kb", (double)rss0);
        result("server_rss_after_kb", (double)rss1);
        if (ready > 0 && rss0 >= 0 && rss1 >= 0)
            result("server_rss_per_conn_bytes", (double)(rss1 - rss0) * 1024.0 / ready);
    }
    if (hold_s > 0) sleep_loop((unsigned)(hold_s * 1000));

    /* one message to the group: everyone must get it */
    int ok = failed == 0 && ready == count;
    session *sender = NULL;
    for (int i = 0; i < count && !sender; i++)
        if (ss[i].state == 2 && ss[i].group) sender = &ss[i];
    if (sender) {
        phase = 1;
        uint64_t t1 = uv_hrtime();
        pb_deferred *d = pb_ref_callf(sender->group, "send", "s", "hello, everyone");
        if (d) pb_deferred_unref(d);
        if (delivered < ready) uv_run(loop, UV_RUN_DEFAULT);
        double ms = (double)(uv_hrtime() - t1) / 1e6;
        result("delivered", (double)delivered);
        result("fanout_ms", ms);
        if (ms > 0) result("fanout_deliveries_per_s", delivered / (ms / 1000.0));
        if (delivered < ready || duplicates) {
            fprintf(stderr, "bench_connections: %ld of %d delivered (%ld duplicates)\n", delivered,
                    ready, duplicates);
            ok = 0;
        }
    } else {
        ok = 0;
    }
    /* close everything (bounded) */
    phase = 2;
    for (int i = 0; i < count; i++) {
        if (ss[i].group) pb_ref_unref(ss[i].group);
        if (ss[i].avatar) {
            pb_broker *b = pb_ref_broker(ss[i].avatar);
            pb_conn *c = pb_conn_of(b);
            pb_ref_unref(ss[i].avatar);
            if (c) pb_conn_close(c);
        }
    }
    uv_timer_start(&guard, on_pause, 5000, 0);
    uv_run(loop, UV_RUN_DEFAULT);
    free(ss);
    free(bind_addrs);
    return ok ? 0 : 1;
usage:
    fprintf(stderr, "usage: bench_connections --port N [--host H] [--count N] [--server-pid PID]\n"
                    "       [--bind-base 127.0.0.X] [--bind-count K] [--concurrency C] "
                    "[--password] [--chat]\n"
                    "       [--user U --pass P]\n"
                    "       [--group NAME] [--timeout S] [--hold S] [--label NAME]\n");
    return 2;
}
