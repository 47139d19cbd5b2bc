/* fuzz_broker_client - a client broker talking to a malicious server.
 *
 * Once the (fuzzed) handshake completes, the client does what a real
 * application does; bits 6-7 of the control byte (fuzz_common.h) pick it:
 *   0  pb_broker_login("alice", "1234", mind) (username as bytes); when
 *      the avatar arrives, avatar.joinGroup("#NeedAFourth") and then
 *      group.send("You can call me Al.") - the c_chat transcript's client
 *   1  anonymous login with a mind, then the same calls
 *   2  login with the username as text and no mind, plus one root call
 *      with a timeout
 *   3  no login: twelve calls on the root, as the client of the
 *      f_misc_errors transcript (answers may arrive in any order)
 * Whatever comes back is looked at (repr, JSON, failure fields); every
 * reference that arrives in a result gets called once.  The client's mind
 * (remote_print, remote_slow that answers later, remote_thing that returns
 * a fresh object) is at the server's disposal.  Every deferred the client
 * obtained must fire exactly once by the time the broker is freed.
 */
#include "fuzz_common.h"

#define CL_MAX_HELD 8
#define CL_MAX_CALLS 48

typedef struct cl_state {
    fz_peer *p;
    unsigned mode;
    pb_object *mind;
    long issued, fired, alive;
    int calls_left;
    pb_call *held[CL_MAX_HELD];
    size_t nheld;
} cl_state;

static cl_state *cl;

static void cl_obj_destroy(pb_object *o) {
    cl->alive--;
    free(o);
}

/* ------------------------------------------------------------------ mind */

static int m_print(pb_call *call, void *self, const pb_args *a) {
    pb_buf b;
    pb_buf_init(&b);
    b.limit = 1 << 16;
    for (size_t i = 0; i < a->n; i++) pb_value_repr(a->v[i], &b);
    pb_buf_free(&b);
    return pb_call_return_none(call);
}

static int m_slow(pb_call *call, void *self, const pb_args *a) {
    if (cl->nheld == CL_MAX_HELD) return pb_call_fail(call, NULL, "busy");
    pb_call_defer(call);
    cl->held[cl->nheld++] = call;
    return 0;
}

static const pb_class Thing_class;

static int m_thing(pb_call *call, void *self, const pb_args *a) {
    pb_object *o = calloc(1, sizeof *o);
    if (!o) return PB_ENOMEM;
    pb_object_init(o, &Thing_class);
    cl->alive++;
    pb_call_return_object(call, o);
    pb_object_unref(o);
    return 0;
}

static int m_echo(pb_call *call, void *self, const pb_args *a) { return pb_call_return(call, a->args); }

static const pb_method mind_methods[] = {
    {"print", NULL, m_print, NULL},
    {"slow", NULL, m_slow, NULL},
    {"thing", NULL, m_thing, NULL},
    {"echo", NULL, m_echo, NULL},
    {NULL, NULL, NULL, NULL},
};
static const pb_class Mind_class = {"Mind", PB_REFERENCEABLE, mind_methods, cl_obj_destroy};
static const pb_class Thing_class = {"Thing", PB_REFERENCEABLE, mind_methods, cl_obj_destroy};

/* ---------------------------------------------------- looking at results */

static void look_at_failure(const pb_failure *f) {
    FZ_CHECK(f != NULL);
    size_t n = 0;
    if (f->type) n += strlen(f->type);
    if (f->value) n += strlen(f->value);
    if (f->traceback) n += strlen(f->traceback);
    for (size_t i = 0; i < f->nparents; i++)
        if (f->parents[i]) n += strlen(f->parents[i]);
    (void)n;
    (void)pb_failure_check(f, PB_FAILURE_UNAUTHORIZED);
    (void)pb_failure_check(f, PB_FAILURE_PB_ERROR);
}

static void look_at_value(const pb_value *v) {
    pb_buf b;
    pb_buf_init(&b);
    b.limit = 1 << 16;
    if (v) {
        pb_value_repr(v, &b);
        pb_buf_free(&b);
        pb_buf_init(&b);
        pb_value_to_json(v, &b, NULL);
    }
    pb_buf_free(&b);
}

static int on_result(pb_deferred *d, void *ud);
static int on_error(pb_deferred *d, void *ud);

/* Our own call: every one is counted and must fire exactly once. */
static void track(pb_deferred *d, int stage) {
    if (!d) return;
    cl->issued++;
    if (pb_deferred_add(d, on_result, on_error, (void *)(intptr_t)stage)) cl->fired++;
    pb_deferred_unref(d);
}

static void call_ref(pb_ref *r, int stage) {
    if (!r || cl->calls_left <= 0) return;
    cl->calls_left--;
    switch (stage) {
    case 1: track(pb_ref_callf(r, "joinGroup", "s", "#NeedAFourth"), 2); break;
    case 2: track(pb_ref_callf(r, "send", "s", "You can call me Al."), 3); break;
    default: {
        pb_call_opts o = {(unsigned)(fz_rand(&cl->p->rng) % 3000), 0};
        pb_arena *a = pb_arena_new(0);
        pb_value *t = a ? pb_tuple(a, 2) : NULL;
        if (t && !pb_seq_append(a, t, pb_object_value(a, cl->mind)) &&
            !pb_seq_append(a, t, pb_ref_value(a, r)))
            track(pb_ref_call(r, "poke", t, NULL, &o, NULL), 9);
        pb_arena_free(a);
        pb_ref_send(r, "fire", NULL, NULL);
    }
    }
}

/* Call every reference that came back (at most a few). */
static void call_refs_in(const pb_value *v, int stage, int depth) {
    if (!v || depth > 4) return;
    if (v->type == PB_REMOTE) {
        call_ref((pb_ref *)v->u.h, stage);
        return;
    }
    if (pb_is_seq(v))
        for (size_t i = 0; i < v->u.seq.len && i < 4; i++) call_refs_in(v->u.seq.items[i], 9, depth + 1);
    else if (v->type == PB_DICT)
        for (size_t i = 0; i < v->u.dict.len && i < 4; i++) call_refs_in(v->u.dict.kv[2 * i + 1], 9, depth + 1);
}

static int on_result(pb_deferred *d, void *ud) {
    int stage = (int)(intptr_t)ud;
    cl->fired++;
    pb_value *v = pb_deferred_value(d);
    look_at_value(v);
    if (!cl->p->freed && cl->p->b && pb_broker_is_connected(cl->p->b))
        call_refs_in(v, stage, 0);
    return 0;
}

static int on_error(pb_deferred *d, void *ud) {
    cl->fired++;
    look_at_failure(pb_deferred_failure(d));
    return 0;
}

/* ------------------------------------------------------------ the script */

static void on_connected(fz_peer *p) {
    pb_ref *root = pb_broker_root(p->b);
    FZ_CHECK(root != NULL);
    switch (cl->mode) {
    case 0: track(pb_broker_login(p->b, "alice", 5, 0, "1234", cl->mind), 1); break;
    case 1: track(pb_broker_login(p->b, NULL, 0, 0, NULL, cl->mind), 1); break;
    case 2: {
        track(pb_broker_login(p->b, "alice", 5, 1, "1234", NULL), 1);
        pb_call_opts o = {1000, 0};
        track(pb_ref_call(root, "echo", NULL, NULL, &o, NULL), 9);
        break;
    }
    default: {
        static const char *const names[] = {"raisePBError", "deferredFailure", "noSuchMethod",
                                            "typeError", "echo", "point", "raiseCopyableError",
                                            "echo", "slow", "fast", "notify", "anything"};
        for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
            if (i == 4) track(pb_ref_callf(root, names[i], "iysfnbo", (int64_t)1, "two", (size_t)3,
                                           "three", 4.5, 1, cl->mind), 9);
            else track(pb_ref_callf(root, names[i], i == 8 || i == 9 ? "i" : "", (int64_t)i), 9);
        }
    }
    }
}

static void cl_tick(fz_peer *p) {
    uint32_t r = fz_rand(&p->rng);
    if (cl->nheld && (r & 3) == 0) {
        size_t i = r % cl->nheld;
        pb_call *c = cl->held[i];
        cl->held[i] = cl->held[--cl->nheld];
        pb_call_return(c, pb_strz(pb_call_arena(c), "slow answer"));
    }
}

int fz_broker_client_one(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    unsigned ctl = data[0];
    cl_state st;
    memset(&st, 0, sizeof st);
    cl = &st;
    st.mode = ctl >> FZ_MODE_SHIFT;
    st.calls_left = CL_MAX_CALLS;
    fz_peer p;
    fz_peer_init(&p, ctl, data, size);
    st.p = &p;
    p.on_connected = on_connected;
    p.on_tick = cl_tick;
    st.mind = calloc(1, sizeof *st.mind);
    FZ_CHECK(st.mind != NULL);
    pb_object_init(st.mind, &Mind_class);
    st.alive++;
    pb_jelly_registry *reg = pb_jelly_registry_new();
    FZ_CHECK(reg != NULL);
    pb_jelly_registry_add(reg, "__main__.Point", NULL, NULL);
    pb_jelly_registry_add(reg, "__main__.CopyableError", NULL, NULL);
    pb_jelly_registry_add(reg, "fuzz.Point", NULL, NULL);

    pb_broker_config cfg;
    fz_config(&cfg, ctl, 0);
    cfg.registry = reg;
    pb_broker_callbacks cb = fz_callbacks(&p);
    p.b = pb_broker_new(&cfg, &cb, NULL);
    FZ_CHECK(p.b != NULL);
    FZ_CHECK(pb_broker_root(p.b) == NULL);
    pb_broker_tick(p.b, p.now);

    fz_feed(&p, data + 1, size - 1);

    if (st.nheld) {
        pb_call_return_none(st.held[--st.nheld]);
        fz_drain(&p);
    }
    if (!p.freed) pb_broker_connection_lost(p.b, "fuzz input over");
    if (st.nheld) pb_call_return_none(st.held[--st.nheld]);
    fz_finish(&p);
    while (st.nheld) pb_call_fail(st.held[--st.nheld], NULL, "late");

    if (st.fired != st.issued)
        fprintf(stderr, "client: %ld calls issued, %ld fired\n", st.issued, st.fired);
    FZ_CHECK(st.fired == st.issued);
    pb_object_unref(st.mind);
    FZ_CHECK(st.alive == 0);
    pb_jelly_registry_free(reg);
    cl = NULL;
    return 0;
}

#ifndef FZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return fz_broker_client_one(data, size);
}
#endif
