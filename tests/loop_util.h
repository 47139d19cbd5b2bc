/*
 * loop_util.h - test-only helpers shared by the loopback tests
 * (test_limits.c, test_limits_more.c, test_tls.c, test_transport.c): C
 * client <-> C server in one process, one uv loop per test.
 *
 *   root_echo, root_add   methods for each test's Root class (g_root)
 *   client                a client connection's state (on_connect/on_lost)
 *   result                an integer answer or a failure's type/value
 *   vresult               a copy of the answer kept in its own arena
 *   wait_for, run_for     run the loop until a flag is set / for a time
 *   finish                close the server, run the loop dry, close it
 *   connect_to/_from/_opts, close_client, serves
 *   listen_with           a server logging to g_log_*, recording g_served
 *
 * Everything is static (inline): a test uses what it needs.  Include after
 * test.h.
 */
#ifndef PB_TEST_LOOP_UTIL_H
#define PB_TEST_LOOP_UTIL_H

#include <stdint.h>
#include <time.h>
#include <unistd.h>
#include "pb/pb.h"
#include "test.h"

/* ------------------------------------------------------------ the server */

static inline int root_echo(pb_call *call, void *self, const pb_args *a) {
    return pb_call_return(call, pb_arg(a, 0));
}

static inline int root_add(pb_call *call, void *self, const pb_args *a) {
    return pb_call_return(call, pb_int(pb_call_arena(call), pb_arg_int(a, 0, 0) + pb_arg_int(a, 1, 0)));
}

/* The root object; each test's main() gives it the test's class. */
static pb_object g_root;

/* ------------------------------------------------------------ the client */

static inline double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}
static double g_t0; /* client.lost_at counts from here */

typedef struct client {
    pb_conn *conn;
    int up, failed_status, lost, settled; /* settled: on_connect ran */
    int done;                             /* for the test's own use */
    double lost_at;                       /* seconds since g_t0 */
    char why[400];                        /* why the connect failed or the connection was lost */
} client;

static inline void on_connect(pb_conn *c, int status, const char *msg, void *ud) {
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

static inline void on_lost(pb_conn *c, const char *why, void *ud) {
    client *cl = ud;
    cl->lost++;
    cl->lost_at = now_s() - g_t0;
    cl->conn = NULL;
    snprintf(cl->why, sizeof cl->why, "%s", why ? why : "");
}

/* ------------------------------------------------------------ results */

/* An answer as an integer (-1: not an integer), a reference (kept until
 * res_free) or a string; a failure's type and value.  No deferred (the
 * call was not sent) counts as failed. */
typedef struct result {
    int fired, failed;
    int64_t i;
    pb_ref *ref; /* a reference answered (kept) */
    char type[128], value[256];
} result;

static inline int res_ok(pb_deferred *d, void *ud) {
    result *r = ud;
    const pb_value *v = pb_deferred_value(d);
    r->fired = 1;
    r->i = v && v->type == PB_INT ? v->u.i : -1;
    if (v && v->type == PB_REMOTE) r->ref = pb_ref_ref((pb_ref *)v->u.h);
    if (v && (v->type == PB_STR || v->type == PB_BYTES))
        snprintf(r->value, sizeof r->value, "%.*s", (int)v->u.s.len, v->u.s.ptr);
    return 0;
}

static inline int res_err(pb_deferred *d, void *ud) {
    result *r = ud;
    const pb_failure *f = pb_deferred_failure(d);
    r->fired = r->failed = 1;
    snprintf(r->type, sizeof r->type, "%s", f && f->type ? f->type : "");
    snprintf(r->value, sizeof r->value, "%s", f && f->value ? f->value : "");
    return 0;
}

static inline void res_watch(result *r, pb_deferred *d) {
    memset(r, 0, sizeof *r);
    if (!d) {
        r->fired = r->failed = 1;
        snprintf(r->value, sizeof r->value, "(no deferred)");
        return;
    }
    pb_deferred_add(d, res_ok, res_err, r);
    pb_deferred_unref(d);
}

static inline void res_free(result *r) {
    if (r->ref) pb_ref_unref(r->ref);
    r->ref = NULL;
}

/* A result kept beyond its deferred: a copy of the answer (None for
 * none) in its own arena, freed by vres_free.  No deferred: never fires. */
typedef struct vresult {
    int fired, failed;
    pb_arena *a;
    pb_value *v;
    char ftype[128], fvalue[128];
    int fcode;
} vresult;

static inline int vres_ok(pb_deferred *d, void *ud) {
    vresult *r = ud;
    r->fired = 1;
    if (!r->a) r->a = pb_arena_new(0);
    r->v = pb_value_copy(r->a, pb_deferred_value(d) ? pb_deferred_value(d) : pb_none(r->a));
    return 0;
}

static inline int vres_err(pb_deferred *d, void *ud) {
    vresult *r = ud;
    const pb_failure *f = pb_deferred_failure(d);
    r->fired = r->failed = 1;
    snprintf(r->ftype, sizeof r->ftype, "%s", f && f->type ? f->type : "");
    snprintf(r->fvalue, sizeof r->fvalue, "%s", f && f->value ? f->value : "");
    r->fcode = f ? f->code : 0;
    return 0;
}

static inline void vres_watch(vresult *r, pb_deferred *d) {
    memset(r, 0, sizeof *r);
    if (!d) return;
    pb_deferred_add(d, vres_ok, vres_err, r);
    pb_deferred_unref(d);
}

static inline void vres_free(vresult *r) {
    pb_arena_free(r->a);
    r->a = NULL;
}

/* ------------------------------------------------------------ loop tools */

static int g_timed_out;
static inline void on_guard(uv_timer_t *t) { g_timed_out = 1; }

/* Run loop until *flag is non-zero or ms pass.  Returns *flag. */
static inline int wait_for(uv_loop_t *loop, volatile int *flag, unsigned ms) {
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
static inline void run_for(uv_loop_t *loop, unsigned ms) {
    int never = 0;
    wait_for(loop, &never, ms);
}

static int g_server_closed;
static inline void on_server_closed(void *ud) { g_server_closed = 1; }

/* A test's own clean-up for finish(): before the server is closed, and
 * after it closed (before the loop runs dry). */
static void (*g_finish_before_close)(void);
static void (*g_finish_after_close)(void);

/* Close s (if any) and run the loop dry; then the loop must close. */
static inline void finish(uv_loop_t *loop, pb_server *s) {
    if (g_finish_before_close) g_finish_before_close();
    if (s) {
        g_server_closed = 0;
        pb_server_close(s, on_server_closed, NULL);
        wait_for(loop, &g_server_closed, 5000);
        CHECK(g_server_closed);
    }
    if (g_finish_after_close) g_finish_after_close();
    for (int i = 0; i < 100 && uv_run(loop, UV_RUN_NOWAIT); i++) usleep(1000);
    uv_run(loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(loop);
    CHECK_MSG(rc == 0, "uv_loop_close: %s", uv_strerror(rc));
}

/* ------------------------------------------------------------ connecting */

/* Connect to s at host with settings o (3 s connect timeout) and run
 * until up or failed. */
static inline void connect_with(uv_loop_t *loop, pb_server *s, const char *host, pb_client_opts o,
                                client *cl) {
    memset(cl, 0, sizeof *cl);
    o.connect_timeout_ms = 3000;
    pb_errbuf err = {0, ""};
    int rc = pb_connect_tcp(loop, host, pb_server_port(s), &o, on_connect, on_lost, cl, &err);
    CHECK_MSG(rc == 0, "connect: %s", err.msg);
    CHECK_MSG(wait_for(loop, &cl->settled, 5000), "connect did not finish");
}

/* Connect to host over TLS t (NULL: plain TCP). */
static inline void connect_to(uv_loop_t *loop, pb_server *s, const char *host, const pb_tls_opts *t,
                              client *cl) {
    pb_client_opts o;
    pb_client_opts_default(&o);
    o.tls = t;
    connect_with(loop, s, host, o, cl);
}

/* Connect to 127.0.0.1 from bind_addr (NULL: any), with client settings
 * co (NULL: defaults). */
static inline void connect_opts(uv_loop_t *loop, pb_server *s, const char *bind_addr,
                                const pb_client_opts *co, client *cl) {
    pb_client_opts o;
    if (co) o = *co;
    else pb_client_opts_default(&o);
    o.bind_addr = bind_addr;
    connect_with(loop, s, "127.0.0.1", o, cl);
}

static inline void connect_from(uv_loop_t *loop, pb_server *s, const char *bind_addr, client *cl) {
    connect_opts(loop, s, bind_addr, NULL, cl);
}

static inline void close_client(uv_loop_t *loop, client *cl) {
    if (cl->conn) {
        pb_conn_close(cl->conn);
        wait_for(loop, &cl->lost, 5000);
    }
}

/* One call answered right: add(40, 2) is 42. */
static inline int serves(uv_loop_t *loop, client *cl) {
    if (!cl->up || !cl->conn) return 0;
    result r;
    res_watch(&r, pb_ref_callf(pb_conn_root(cl->conn), "add", "ii", (int64_t)40, (int64_t)2));
    wait_for(loop, &r.fired, 3000);
    return r.fired && !r.failed && r.i == 42;
}

/* ------------------------------------------------------------ a raw peer */

/* A raw TCP client that sends some bytes and reads until the server
 * closes the connection. */
static uv_tcp_t g_raw;
static uv_connect_t g_raw_creq;
static uv_write_t g_raw_w;
static uv_buf_t g_raw_out;
static int g_raw_eof;

static inline void raw_alloc(uv_handle_t *h, size_t n, uv_buf_t *b) {
    static char buf[4096];
    *b = uv_buf_init(buf, sizeof buf);
}

static inline void raw_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b) {
    if (n < 0) {
        g_raw_eof = 1;
        uv_read_stop(st);
    }
}

static inline void raw_connected(uv_connect_t *req, int status) {
    if (status < 0) {
        g_raw_eof = 1;
        return;
    }
    uv_write(&g_raw_w, req->handle, &g_raw_out, 1, NULL);
    uv_read_start(req->handle, raw_alloc, raw_read);
}

/* Send bytes[n] (kept until the loop has run) to 127.0.0.1:port; returns
 * whether the server closed the connection within ms. */
static inline int raw_send(uv_loop_t *loop, int port, char *bytes, size_t n, unsigned ms) {
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", port, &sa);
    uv_tcp_init(loop, &g_raw);
    g_raw_eof = 0;
    g_raw_out = uv_buf_init(bytes, (unsigned)n);
    uv_tcp_connect(&g_raw_creq, &g_raw, (struct sockaddr *)&sa, raw_connected);
    int eof = wait_for(loop, &g_raw_eof, ms);
    uv_close((uv_handle_t *)&g_raw, NULL);
    return eof;
}

/* ------------------------------------------------- a server that logs */

/* Server-side connections in the order they were served. */
static pb_conn *g_served[16];
static int g_nserved;
static inline pb_object *root_of_served(pb_broker *b, void *ud) {
    if (g_nserved < 16) g_served[g_nserved++] = pb_conn_of(b);
    return pb_object_ref(&g_root);
}

static int g_log_lines;
static char g_log_last[400];
static inline void on_log(const char *msg, void *ud) {
    g_log_lines++;
    snprintf(g_log_last, sizeof g_log_last, "%s", msg);
}

/* Server settings so log to g_log_*; g_served, the log and g_t0 start
 * afresh. */
static inline void log_reset(pb_server_opts *so) {
    so->log = on_log;
    g_log_lines = 0;
    g_log_last[0] = 0;
    g_nserved = 0;
    g_t0 = now_s();
}

/* Listen on 127.0.0.1 (free port) with so, after log_reset(so). */
static inline pb_server *listen_with(uv_loop_t *loop, pb_server_opts *so) {
    log_reset(so);
    pb_server *s = NULL;
    pb_errbuf err = {0, ""};
    int rc = pb_listen_tcp(loop, "127.0.0.1", 0, so, root_of_served, NULL, &s, &err);
    CHECK_MSG(rc == 0, "listen: %s", err.msg);
    return s;
}

#endif
