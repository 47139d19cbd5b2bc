/* test_alloc_steady.c - no heap allocation per call in the steady state.
 *
 * Two brokers wired back to back in memory (sans I/O: bytes are pumped
 * between them through static buffers) run simple echo calls, first one
 * at a time, then 100 in flight.  After a warm-up, malloc/calloc/realloc
 * and free are counted over 10,000 calls: the steady state must not
 * allocate per call (a small constant is allowed).
 *
 * The counting is done here, not in the library: this binary defines
 * malloc/calloc/realloc/free itself (forwarding to glibc's __libc_*), so
 * the library's calls land here.  Under AddressSanitizer (which intercepts
 * the allocator itself) the interposition is compiled out: the calls still
 * run and are checked, and the test says that the count was skipped.
 *
 * Usage: test_alloc_steady [CALLS] (default 10000), e.g. under callgrind.
 * PB_ALLOC_WHERE=1 prints the callers of the first counted allocations
 * (addr2line -f -e test_alloc_steady ADDR, minus the load address). */
#include <stdint.h>
#include "pb/broker.h"
#include "test.h"

#if defined(__SANITIZE_ADDRESS__)
#define PB_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PB_TEST_ASAN 1
#endif
#endif

/* ------------------------------------------------------ counting allocator */

static int g_counting;
static unsigned long g_mallocs, g_frees;

#if !defined(PB_TEST_ASAN) && defined(__GLIBC__)
#define PB_TEST_COUNTING 1
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);

static void *g_where[16];
static void note_where(void *ra) {
    if (g_mallocs < 16) g_where[g_mallocs] = ra;
}
void *malloc(size_t n) {
    if (g_counting) note_where(__builtin_return_address(0)), g_mallocs++;
    return __libc_malloc(n);
}
void *calloc(size_t n, size_t m) {
    if (g_counting) note_where(__builtin_return_address(0)), g_mallocs++;
    return __libc_calloc(n, m);
}
void *realloc(void *p, size_t n) {
    if (g_counting) note_where(__builtin_return_address(0)), g_mallocs++;
    return __libc_realloc(p, n);
}
void free(void *p) {
    if (g_counting && p) g_frees++;
    __libc_free(p);
}
#endif

/* ---------------------------------------------------------------- harness */

typedef struct side {
    pb_broker *b;
    int closed, connected;
} side;

static void on_close(pb_broker *b, int code, const char *msg, void *ud) {
    (void)b;
    (void)code;
    (void)msg;
    ((side *)ud)->closed++;
}
static void on_connected(pb_broker *b, void *ud) {
    (void)b;
    ((side *)ud)->connected++;
}

static void side_init(side *s, int is_server, pb_object *root) {
    memset(s, 0, sizeof *s);
    pb_broker_config c;
    pb_broker_config_default(&c);
    c.is_server = is_server;
    pb_broker_callbacks cb = {s, NULL, on_close, on_connected, NULL, NULL};
    s->b = pb_broker_new(&c, &cb, root);
}

/* Move bytes both ways until both are quiet; no heap involved. */
static uint8_t g_wire[1 << 20];

static void move(pb_broker *from, pb_broker *to) {
    const uint8_t *p;
    size_t n;
    while ((n = pb_broker_output(from, &p)) > 0) {
        size_t k = n > sizeof g_wire ? sizeof g_wire : n;
        memcpy(g_wire, p, k);
        pb_broker_output_consume(from, k);
        pb_broker_feed(to, g_wire, k);
    }
}

static void pump(side *srv, side *cli) {
    for (int round = 0; round < 100000; round++) {
        const uint8_t *p;
        if (!pb_broker_output(srv->b, &p) && !pb_broker_output(cli->b, &p)) return;
        move(srv->b, cli->b);
        move(cli->b, srv->b);
    }
}

/* --------------------------------------------------------------- the echo */

#define PAYLOAD "0123456789abcdef"

static int echo(pb_call *call, void *self, const pb_args *a) {
    (void)self;
    return pb_call_return(call, pb_arg(a, 0));
}
static pb_object g_thing;
static pb_call *g_later;
static int thing(pb_call *call, void *self, const pb_args *a) {
    (void)self;
    (void)a;
    return pb_call_return_object(call, &g_thing);
}
static int later(pb_call *call, void *self, const pb_args *a) {
    (void)self;
    (void)a;
    g_later = call;
    return pb_call_defer(call);
}
static const pb_method methods[] = {{"echo", "v", echo, NULL},
                                    {"thing", NULL, thing, NULL},
                                    {"later", NULL, later, NULL},
                                    {NULL, NULL, NULL, NULL}};
static const pb_class Thing = {"Thing", PB_REFERENCEABLE, NULL, NULL};
static const pb_class Echo = {"Echo", PB_REFERENCEABLE, methods, NULL};

typedef struct run {
    side srv, cli;
    pb_ref *root;
    pb_value *args;
    pb_arena *arena;
    unsigned long issued, answered, bad;
    unsigned long target; /* stop issuing at this many */
    int depth;            /* 0: sequential (the caller issues) */
    unsigned long count_from, count_to; /* count while answered is in [from, to) */
} run;

static void issue(run *r);

static int on_answer(pb_deferred *d, void *ud) {
    run *r = ud;
    const pb_value *v = pb_deferred_value(d);
    if (pb_deferred_failure(d) || !v || !pb_value_is(v, PAYLOAD)) r->bad++;
    r->answered++;
    /* the window opens and closes mid-stream: the pipeline never drains */
    if (r->answered == r->count_from) g_counting = 1;
    if (r->answered == r->count_to) g_counting = 0;
    if (r->depth && r->issued < r->target) issue(r);
    return 0;
}

static void issue(run *r) {
    pb_errbuf err;
    pb_deferred *d = pb_ref_call(r->root, "echo", r->args, NULL, NULL, &err);
    if (!d) {
        r->bad++;
        return;
    }
    r->issued++;
    if (pb_deferred_add(d, on_answer, on_answer, r)) r->bad++;
    pb_deferred_unref(d);
}

/* n more calls, one at a time (depth 0) or depth in flight. */
static void calls(run *r, unsigned long n, int depth) {
    r->target = r->issued + n;
    r->depth = depth;
    if (!depth) {
        while (r->issued < r->target) {
            issue(r);
            pump(&r->srv, &r->cli);
        }
        return;
    }
    for (int i = 0; i < depth && r->issued < r->target; i++) issue(r);
    pump(&r->srv, &r->cli);
}

static pb_object g_root;
static unsigned long g_calls = 10000;

static void measure(const char *label, int depth) {
    run r;
    memset(&r, 0, sizeof r);
    side_init(&r.srv, 1, &g_root);
    side_init(&r.cli, 0, NULL);
    CHECK(r.srv.b && r.cli.b);
    if (!r.srv.b || !r.cli.b) return;
    pump(&r.srv, &r.cli);
    CHECK(r.cli.connected == 1);
    r.root = pb_broker_root(r.cli.b);
    CHECK(r.root != NULL);
    if (!r.root) return;
    r.arena = pb_arena_new(0);
    r.args = pb_tuple(r.arena, 1);
    pb_seq_append(r.arena, r.args, pb_strz(r.arena, PAYLOAD));

    /* warm-up (tables, buffers and pools reach their size), then g_calls
     * counted, then a tail, all as one stream */
    g_mallocs = g_frees = 0;
    r.count_from = 2000;
    r.count_to = 2000 + g_calls;
    calls(&r, 2000 + g_calls + 1000, depth);
    g_counting = 0;
    unsigned long allocs = g_mallocs, frees = g_frees;

    CHECK_EQ_INT(r.answered, r.issued);
    CHECK_EQ_INT(r.bad, 0);
    CHECK_EQ_INT(r.srv.closed + r.cli.closed, 0);
    pb_broker_stats st;
    pb_broker_get_stats(r.cli.b, &st);
    CHECK_EQ_INT(st.pending_calls, 0);
    pb_broker_get_stats(r.srv.b, &st);
    CHECK_EQ_INT(st.inflight, 0);
#ifdef PB_TEST_COUNTING
    printf("  %s: %lu calls, %lu allocations, %lu frees (%.4f per call)\n", label, g_calls,
           allocs, frees, (double)(allocs + frees) / (double)g_calls);
    if (getenv("PB_ALLOC_WHERE"))
        for (unsigned long i = 0; i < allocs && i < 16; i++) printf("  alloc from %p\n", g_where[i]);
    /* a small constant at most, never one per call */
    CHECK_MSG(allocs <= 8 && frees <= 8, "%lu allocations / %lu frees for %lu calls", allocs,
              frees, g_calls);
#else
    (void)allocs;
    (void)frees;
    printf("  %s: %lu calls answered; allocation count check skipped (sanitizer owns malloc)\n",
           label, g_calls);
#endif
    pb_broker_free(r.cli.b);
    pb_broker_free(r.srv.b);
    pb_arena_free(r.arena);
}

/* ------------------------------------------- recycling keeps its promises */

typedef struct seen {
    int fired, failed;
    pb_arena *arena_before; /* pb_deferred_arena() before it fired */
    int64_t replaced;
} seen;

static int grab(pb_deferred *d, void *ud) {
    seen *s = ud;
    s->fired++;
    if (pb_deferred_failure(d)) s->failed++;
    return 0;
}

/* builds the replacement in the arena it looked up before firing */
static int replace(pb_deferred *d, void *ud) {
    seen *s = ud;
    s->fired++;
    if (pb_deferred_arena(d) != s->arena_before) s->failed++;
    return pb_deferred_set_value(d, pb_int(s->arena_before, 42));
}
static int check_replaced(pb_deferred *d, void *ud) {
    seen *s = ud;
    const pb_value *v = pb_deferred_value(d);
    s->replaced = v && v->type == PB_INT ? v->u.i : -1;
    return 0;
}

TEST(recycling_edges) {
    side srv, cli;
    side_init(&srv, 1, &g_root);
    side_init(&cli, 0, NULL);
    pump(&srv, &cli);
    pb_ref *root = pb_broker_root(cli.b);
    CHECK(root != NULL);
    if (!root) return;
    pb_arena *a = pb_arena_new(0);
    pb_value *args = pb_tuple(a, 1);
    pb_seq_append(a, args, pb_strz(a, PAYLOAD));

    /* 1. the caller fires the call's deferred itself before the answer
     * comes: the answer is dropped, nothing leaks */
    pb_deferred *d = pb_ref_call(root, "echo", args, NULL, NULL, NULL);
    CHECK(d != NULL);
    CHECK_EQ_INT(pb_deferred_callback(d, NULL), PB_OK);
    pump(&srv, &cli);
    CHECK(pb_deferred_value(d) && pb_deferred_value(d)->type == PB_NONE);
    pb_deferred_unref(d);

    /* 2. the arena a callback looked up before firing is still the one
     * it builds in (a reused deferred keeps its own arena) */
    for (int i = 0; i < 3; i++) {
        seen s = {0};
        d = pb_ref_call(root, "echo", args, NULL, NULL, NULL);
        s.arena_before = pb_deferred_arena(d);
        pb_deferred_add(d, replace, NULL, &s);
        pb_deferred_add(d, check_replaced, NULL, &s);
        pb_deferred_unref(d);
        pump(&srv, &cli);
        CHECK_EQ_INT(s.fired, 1);
        CHECK_EQ_INT(s.failed, 0);
        CHECK_EQ_INT(s.replaced, 42);
    }

    /* 3. an answer holding a reference: dropping the (recycled) deferred
     * drops the reference, and the decref reaches the server */
    seen s = {0};
    d = pb_ref_call(root, "thing", NULL, NULL, NULL, NULL);
    pb_deferred_add(d, grab, grab, &s);
    pump(&srv, &cli);
    CHECK_EQ_INT(s.fired, 1);
    CHECK(pb_deferred_value(d) && pb_deferred_value(d)->type == PB_REMOTE);
    pb_broker_stats st;
    pb_broker_get_stats(srv.b, &st);
    CHECK_EQ_INT(st.exported, 2); /* root + thing */
    pb_deferred_unref(d);
    pump(&srv, &cli);
    pb_broker_get_stats(srv.b, &st);
    CHECK_EQ_INT(st.exported, 1);

    /* 4. a deferred answer outlives other calls (its call record and
     * arena are not reused under it) */
    seen s4 = {0}, s5 = {0};
    pb_deferred *d4 = pb_ref_call(root, "later", NULL, NULL, NULL, NULL);
    pb_deferred_add(d4, grab, grab, &s4);
    pump(&srv, &cli);
    CHECK(g_later != NULL);
    pb_call *held = g_later;
    pb_value *keep = pb_strz(pb_call_arena(held), "kept");
    for (int i = 0; i < 50; i++) {
        d = pb_ref_call(root, "echo", args, NULL, NULL, NULL);
        pb_deferred_unref(d);
        pump(&srv, &cli);
    }
    CHECK(pb_value_is(keep, "kept"));
    CHECK_EQ_INT(pb_call_return(held, keep), PB_OK);
    pump(&srv, &cli);
    CHECK_EQ_INT(s4.fired, 1);
    CHECK(pb_value_is(pb_deferred_value(d4), "kept"));
    pb_deferred_unref(d4);

    /* 5. deferreds outlive their broker: freed (not parked) when dropped */
    pb_deferred *d5 = pb_ref_call(root, "later", NULL, NULL, NULL, NULL);
    pb_deferred_add(d5, grab, grab, &s5);
    pump(&srv, &cli);
    pb_broker_free(cli.b);
    CHECK_EQ_INT(s5.failed, 1); /* PBConnectionLost */
    pb_broker_free(srv.b);
    CHECK(pb_deferred_failure(d5) != NULL);
    /* the server's deferred call: answering it now just releases it */
    CHECK_EQ_INT(pb_call_return_none(g_later), PB_ECLOSED);
    pb_deferred_unref(d5);
    pb_arena_free(a);
}

TEST(steady_sequential) { measure("sequential", 0); }
TEST(steady_pipelined) { measure("100 in flight", 100); }

int main(int argc, char **argv) {
    if (argc > 1) g_calls = strtoul(argv[1], NULL, 10);
    if (!g_calls) g_calls = 10000;
    pb_object_init(&g_root, &Echo);
    pb_object_init(&g_thing, &Thing);
    RUN(recycling_edges);
    RUN(steady_sequential);
    RUN(steady_pipelined);
    pb_object_unref(&g_thing);
    pb_object_unref(&g_root);
    return TEST_SUMMARY();
}
