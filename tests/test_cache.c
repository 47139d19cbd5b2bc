/* test_cache.c - Cacheable / RemoteCache (SPEC §4.4, §5.3, §5.6): two
 * brokers back to back, byte checks against the h_cache_and_refs
 * transcript (Twisted 22.4 both sides), limits and hostile forms. */
#include <stdarg.h>
#include "pb/broker.h"
#include "test.h"
#include "pair_util.h"

/* ------------------------------------------------------------- harness */

static pb_jelly_registry *client_reg;

/* Bytes the server sent, in the order sent (for byte checks). */
static pb_buf s2c_log, c2s_log;

static void log_reset(void) {
    pb_buf_free(&s2c_log);
    pb_buf_free(&c2s_log);
}

/* True if needle occurs in the log. */
static int log_has(const pb_buf *b, const uint8_t *needle, size_t n) {
    for (size_t i = 0; b->data && i + n <= b->len; i++)
        if (!memcmp(b->data + i, needle, n)) return 1;
    return 0;
}

/* ------------------------------------------------------ the owner's side */

/* Twisted's cache_server.py Counter: state {"value": n}; bump() sends
 * setValue(n) to every observer. */
typedef struct counter {
    pb_cacheable c;
    int64_t value;
    pb_cache_observer *obs[8];
    int nobs, stopped, states_taken;
    void *last_avatar;
} counter;

static pb_value *counter_state(pb_cacheable *self, pb_arena *a, void *avatar, pb_cache_observer *o) {
    counter *k = (counter *)self;
    k->states_taken++;
    k->last_avatar = avatar;
    if (k->nobs < 8) k->obs[k->nobs++] = pb_cache_observer_ref(o);
    pb_value *d = pb_dict(a, 1);
    pb_dict_append(a, d, pb_strz(a, "value"), pb_int(a, k->value));
    return d;
}

static void counter_stopped(pb_cacheable *self, void *avatar, pb_cache_observer *o) {
    counter *k = (counter *)self;
    k->stopped++;
    for (int i = 0; i < k->nobs; i++)
        if (k->obs[i] == o) {
            pb_cache_observer_unref(o);
            k->obs[i] = k->obs[--k->nobs];
            break;
        }
}

static const pb_cacheable_class counter_class = {
    {"__main__.Counter", PB_CACHEABLE, NULL, NULL}, counter_state, counter_stopped};

static counter the_counter, extra_counters[6];

static void counter_set(counter *k, int64_t v) {
    k->value = v;
    for (int i = 0; i < k->nobs; i++) pb_deferred_unref(pb_cache_observer_callf(k->obs[i], "setValue", "i", v));
}

static void counter_reset(counter *k, int64_t v) {
    for (int i = 0; i < k->nobs; i++) pb_cache_observer_unref(k->obs[i]);
    memset(k, 0, sizeof *k);
    pb_cacheable_init(&k->c, &counter_class);
    k->value = v;
}

typedef struct thing {
    pb_object o;
} thing;
static int thing_hello(pb_call *c, void *self, const pb_args *a) {
    (void)self;
    char buf[128];
    snprintf(buf, sizeof buf, "hello %s", pb_arg_str(a, 0, "?"));
    return pb_call_return(c, pb_strz(pb_call_arena(c), buf));
}
static const pb_method thing_methods[] = {{"hello", "s", thing_hello, NULL}, {NULL, NULL, NULL, NULL}};
static const pb_class thing_class = {"Thing", PB_REFERENCEABLE, thing_methods, NULL};
static thing the_thing;
static pb_object the_root;

static int root_getCounter(pb_call *c, void *self, const pb_args *a) {
    return pb_call_return(c, pb_cacheable_value(pb_call_arena(c), &the_counter.c));
}
static int root_getExtra(pb_call *c, void *self, const pb_args *a) {
    int64_t i = pb_arg_int(a, 0, 0);
    return pb_call_return(c, pb_cacheable_value(pb_call_arena(c), &extra_counters[i].c));
}
static int root_bump(pb_call *c, void *self, const pb_args *a) {
    counter_set(&the_counter, the_counter.value + 1);
    pb_value *v = pb_int(pb_call_arena(c), the_counter.value);
    return pb_call_return(c, v);
}
static int root_getThing(pb_call *c, void *self, const pb_args *a) {
    return pb_call_return_object(c, &the_thing.o);
}
static int root_isMine(pb_call *c, void *self, const pb_args *a) {
    pb_object *o = pb_arg_object(a, 0);
    int mine = o && (o == &the_counter.c.obj || o == &the_thing.o || o == &the_root);
    return pb_call_return(c, pb_bool(pb_call_arena(c), mine));
}
/* a new cacheable, then something unsendable: the message fails */
static int root_badPair(pb_call *c, void *self, const pb_args *a) {
    pb_arena *ar = pb_call_arena(c);
    pb_value *t = pb_tuple(ar, 2);
    pb_seq_append(ar, t, pb_cacheable_value(ar, &extra_counters[5].c));
    static char big[700000]; /* over Banana's 640 KiB: fails while encoding */
    pb_seq_append(ar, t, pb_bytes_static(ar, big, sizeof big - 1));
    return pb_call_return(c, t);
}
/* the same cacheable twice in one answer */
static int root_twice(pb_call *c, void *self, const pb_args *a) {
    pb_arena *ar = pb_call_arena(c);
    pb_value *t = pb_tuple(ar, 2);
    pb_seq_append(ar, t, pb_cacheable_value(ar, &the_counter.c));
    pb_seq_append(ar, t, pb_cacheable_value(ar, &the_counter.c));
    return pb_call_return(c, t);
}
static const pb_method root_methods[] = {
    {"getCounter", "", root_getCounter, NULL}, {"getExtra", "i", root_getExtra, NULL},
    {"bump", "", root_bump, NULL},             {"getThing", "", root_getThing, NULL},
    {"isMine", "v", root_isMine, NULL},        {"badPair", "", root_badPair, NULL},
    {"twice", "", root_twice, NULL},           {NULL, NULL, NULL, NULL},
};
static const pb_class root_class = {"Root", PB_REFERENCEABLE, root_methods, NULL};

/* -------------------------------------------------- the receiving side */

typedef struct counter_cache {
    pb_remote_cache base;
    int64_t value;
    int observed;
} counter_cache;

static int cache_destroyed, cache_states;

static int cc_set_state(pb_remote_cache *self, const pb_value *state) {
    counter_cache *cc = (counter_cache *)self;
    cache_states++;
    const pb_value *v = state && state->type == PB_DICT ? pb_dict_get(state, "value") : NULL;
    if (!v || v->type != PB_INT) return PB_EINVAL;
    cc->value = v->u.i;
    return 0;
}
static int cc_setValue(pb_call *c, void *self, const pb_args *a) {
    counter_cache *cc = self;
    cc->value = pb_arg_int(a, 0, -1);
    cc->observed++;
    return pb_call_return_none(c);
}
static void cc_destroy(pb_object *o) {
    (void)o;
    cache_destroyed++;
}
static const pb_method cc_methods[] = {{"setValue", "i", cc_setValue, NULL}, {NULL, NULL, NULL, NULL}};
static const pb_remote_cache_class cc_class = {
    {"CounterCache", PB_REMOTE_CACHE, cc_methods, cc_destroy}, "__main__.Counter",
    sizeof(counter_cache), cc_set_state};

/* A class without set_state: the state is kept as a value. */
static const pb_remote_cache_class plain_class = {
    {"Plain", PB_REMOTE_CACHE, NULL, NULL}, "test.Plain", 0, NULL};

static void init_objects(void) {
    pb_object_init(&the_root, &root_class);
    pb_object_init(&the_thing.o, &thing_class);
    counter_reset(&the_counter, 1);
    for (int i = 0; i < 6; i++) counter_reset(&extra_counters[i], 100 + i);
    cache_destroyed = cache_states = 0;
    log_reset();
}

/* pair_up with fresh objects and the_root. */
static void counters_pair_up(side *srv, side *cli, const pb_broker_config *scfg) {
    init_objects();
    pair_up(srv, cli, &the_root, scfg);
}

/* pair_free, then the counters start afresh. */
static void counters_pair_free(side *srv, side *cli) {
    pair_free(srv, cli);
    counter_reset(&the_counter, 1);
    for (int i = 0; i < 6; i++) counter_reset(&extra_counters[i], 0);
}

static pb_deferred *call0(side *cli, const char *m) { return pb_ref_callf(pb_broker_root(cli->b), m, ""); }

static counter_cache *cache_of(const got *g) {
    return (counter_cache *)pb_value_remote_cache(g->v);
}

/* ------------------------------------------------------------------ tests */

TEST(first_send_is_tag_luid_state_then_cached_luid_byte_for_byte) {
    side s, c;
    counters_pair_up(&s, &c, NULL);
    log_reset();
    got g1, g2;
    watch(call0(&c, "getCounter"), &g1);
    pump(&s, &c);
    CHECK_EQ_INT(g1.fired, 1);
    CHECK_EQ_INT(g1.failed, 0);
    counter_cache *cc = cache_of(&g1);
    CHECK(cc != NULL);
    if (cc) {
        CHECK_EQ_INT(cc->value, 1);
        CHECK_EQ_INT(pb_remote_cache_luid(&cc->base), 1);
        CHECK(pb_remote_cache_broker(&cc->base) == c.b);
    }
    CHECK_EQ_INT(cache_states, 1);
    CHECK_EQ_INT(the_counter.states_taken, 1);
    /* h_cache_and_refs #6: (answer 1 ("__main__.Counter" 1 (dictionary (("unicode" "value") 1)))) */
    static const uint8_t first[] = {0x03, 0x80, 0x1b, 0x87, 0x01, 0x81, 0x03, 0x80, 0x10, 0x82, '_', '_', 'm',
                                    'a', 'i', 'n', '_', '_', '.', 'C', 'o', 'u', 'n', 't', 'e', 'r', 0x01,
                                    0x81, 0x02, 0x80, 0x05, 0x87, 0x02, 0x80, 0x02, 0x80, 0x07, 0x82, 'u',
                                    'n', 'i', 'c', 'o', 'd', 'e', 0x05, 0x82, 'v', 'a', 'l', 'u', 'e', 0x01,
                                    0x81};
    CHECK_EQ_INT(s2c_log.len, sizeof first);
    CHECK(s2c_log.len == sizeof first && !memcmp(s2c_log.data, first, sizeof first));
    log_reset();
    watch(call0(&c, "getCounter"), &g2);
    pump(&s, &c);
    /* #12: (answer 2 (cached 1)) (our request id is 2) */
    static const uint8_t cached[] = {0x03, 0x80, 0x1b, 0x87, 0x02, 0x81, 0x02, 0x80, 0x0f, 0x87, 0x01, 0x81};
    CHECK(s2c_log.len == sizeof cached && !memcmp(s2c_log.data, cached, sizeof cached));
    CHECK(cache_of(&g2) == cc); /* one cache object per LUID */
    CHECK_EQ_INT(the_counter.states_taken, 1);
    CHECK_EQ_INT(cache_states, 1);
    got_free(&g1);
    got_free(&g2);
    counters_pair_free(&s, &c);
}

TEST(observer_calls_are_cachemessages_dispatched_to_observe_methods) {
    side s, c;
    counters_pair_up(&s, &c, NULL);
    got g, b;
    watch(call0(&c, "getCounter"), &g);
    pump(&s, &c);
    log_reset();
    watch(call0(&c, "bump"), &b);
    pump(&s, &c);
    CHECK_EQ_INT(b.i, 2);
    counter_cache *cc = cache_of(&g);
    CHECK(cc && cc->value == 2 && cc->observed == 1);
    /* #8: (cachemessage 1 1 "setValue" 1 (tuple 2) (dictionary)) then (answer 2 2) */
    static const uint8_t cm[] = {0x07, 0x80, 0x19, 0x87, 0x01, 0x81, 0x01, 0x81, 0x08, 0x82, 's', 'e',
                                 't',  'V',  'a',  'l',  'u',  'e',  0x01, 0x81, 0x02, 0x80, 0x0b, 0x87,
                                 0x02, 0x81, 0x01, 0x80, 0x05, 0x87, 0x03, 0x80, 0x1b, 0x87, 0x02, 0x81,
                                 0x02, 0x81};
    CHECK(s2c_log.len == sizeof cm && !memcmp(s2c_log.data, cm, sizeof cm));
    /* #10: the client answers it (answer 1 (None)) */
    static const uint8_t ans[] = {0x03, 0x80, 0x1b, 0x87, 0x01, 0x81, 0x01, 0x80, 0x01, 0x87};
    CHECK(log_has(&c2s_log, ans, sizeof ans));
    /* the observer call's deferred fires with the answer */
    got o;
    watch(pb_cache_observer_callf(the_counter.obs[0], "setValue", "i", (int64_t)7), &o);
    pump(&s, &c);
    CHECK_EQ_INT(o.fired, 1);
    CHECK_EQ_INT(o.failed, 0);
    CHECK_EQ_INT(cc ? cc->value : 0, 7);
    got_free(&o);
    /* an unknown observe_ method: AttributeError, as getattr raises */
    watch(pb_cache_observer_callf(the_counter.obs[0], "nope", ""), &o);
    pump(&s, &c);
    CHECK_EQ_INT(o.failed, PB_EREMOTE);
    CHECK(!strcmp(o.type, "builtins.AttributeError"));
    CHECK_MSG(!strcmp(o.value, "'CounterCache' object has no attribute 'observe_nope'"), "%s", o.value);
    got_free(&o);
    /* wrong arguments: TypeError, handler not run */
    watch(pb_cache_observer_callf(the_counter.obs[0], "setValue", "s", "x"), &o);
    pump(&s, &c);
    CHECK(!strcmp(o.type, "builtins.TypeError"));
    CHECK_EQ_INT(cc ? cc->observed : 0, 2);
    got_free(&o);
    CHECK(pb_cache_observer_avatar(the_counter.obs[0]) == NULL);
    CHECK(pb_cache_observer_cacheable(the_counter.obs[0]) == &the_counter.c);
    CHECK(pb_cache_observer_broker(the_counter.obs[0]) == s.b);
    got_free(&g);
    got_free(&b);
    counters_pair_free(&s, &c);
}

TEST(lcache_brings_the_owners_own_cacheable_back_and_luids_are_shared) {
    side s, c;
    counters_pair_up(&s, &c, NULL);
    got g, m, t;
    watch(call0(&c, "getCounter"), &g);
    pump(&s, &c);
    log_reset();
    counter_cache *cc = cache_of(&g);
    watch(pb_ref_callf(pb_broker_root(c.b), "isMine", "o", &cc->base.obj), &m);
    pump(&s, &c);
    CHECK_EQ_INT(m.fired, 1);
    CHECK_EQ_INT(m.b, 1);
    static const uint8_t lc[] = {0x02, 0x80, 0x12, 0x87, 0x01, 0x81}; /* (lcache 1) */
    CHECK(log_has(&c2s_log, lc, sizeof lc));
    /* the next referenceable gets LUID 2 (#16: (answer 5 (remote 2))) */
    log_reset();
    watch(call0(&c, "getThing"), &t);
    pump(&s, &c);
    static const uint8_t rem[] = {0x02, 0x80, 0x10, 0x87, 0x02, 0x81};
    CHECK(log_has(&s2c_log, rem, sizeof rem));
    got_free(&t);
    got_free(&m);
    got_free(&g);
    counters_pair_free(&s, &c);
}

TEST(dropping_every_copy_sends_one_decache_each_and_the_owner_uncaches) {
    side s, c;
    counters_pair_up(&s, &c, NULL);
    got g1, g2;
    watch(call0(&c, "getCounter"), &g1);
    watch(call0(&c, "getCounter"), &g2);
    pump(&s, &c);
    CHECK(cache_of(&g1) && cache_of(&g1) == cache_of(&g2));
    log_reset();
    got_free(&g1);
    pump(&s, &c);
    CHECK_EQ_INT(c2s_log.len, 0); /* another copy is still held */
    /* an extra reference is a copy too */
    counter_cache *cc = cache_of(&g2);
    pb_object_ref(&cc->base.obj);
    got_free(&g2);
    pump(&s, &c);
    CHECK_EQ_INT(c2s_log.len, 0);
    pb_object_unref(&cc->base.obj);
    /* the owner is told only now: two decaches (one per copy received) */
    const uint8_t *p;
    size_t n = pb_broker_output(c.b, &p);
    static const uint8_t two[] = {0x02, 0x80, 0x1e, 0x87, 0x01, 0x81, 0x02, 0x80, 0x1e, 0x87, 0x01, 0x81};
    CHECK(n == sizeof two && !memcmp(p, two, sizeof two));
    CHECK_EQ_INT(cache_destroyed, 0); /* known until uncache */
    pump(&s, &c);
    static const uint8_t unc[] = {0x02, 0x80, 0x1f, 0x87, 0x01, 0x81};
    CHECK(s2c_log.len == sizeof unc && !memcmp(s2c_log.data, unc, sizeof unc));
    CHECK_EQ_INT(the_counter.stopped, 1);
    CHECK_EQ_INT(the_counter.nobs, 0);
    CHECK_EQ_INT(cache_destroyed, 1);
    CHECK_EQ_INT(s.closed + c.closed, 0);
    /* sent again: a fresh LUID and the full state */
    log_reset();
    watch(call0(&c, "getCounter"), &g1);
    pump(&s, &c);
    CHECK(cache_of(&g1) && pb_remote_cache_luid(&cache_of(&g1)->base) == 2);
    CHECK_EQ_INT(the_counter.states_taken, 2);
    got_free(&g1);
    counters_pair_free(&s, &c);
    CHECK_EQ_INT(cache_destroyed, 2);
}

TEST(a_cachemessage_racing_the_decache_still_reaches_the_cache) {
    side s, c;
    counters_pair_up(&s, &c, NULL);
    got g;
    watch(call0(&c, "getCounter"), &g);
    pump(&s, &c);
    counter_cache *cc = cache_of(&g);
    pb_object_ref(&cc->base.obj); /* to look at it afterwards */
    got_free(&g);
    pb_object_unref(&cc->base.obj); /* decache queued, not yet delivered */
    counter_set(&the_counter, 5);  /* the owner's update crosses it */
    const uint8_t *p;
    size_t n = pb_broker_output(s.b, &p);
    CHECK(n > 0);
    CHECK_EQ_INT(pb_broker_feed(c.b, p, n), 0); /* deliver the update first */
    pb_broker_output_consume(s.b, n);
    CHECK_EQ_INT(c.closed, 0);
    CHECK_EQ_INT(cache_destroyed, 0);
    pump(&s, &c);
    CHECK_EQ_INT(cache_destroyed, 1);
    CHECK_EQ_INT(the_counter.stopped, 1);
    CHECK_EQ_INT(s.closed + c.closed, 0);
    counters_pair_free(&s, &c);
}

TEST(observer_calls_after_the_cache_is_gone_fail_with_ESTATE) {
    side s, c;
    counters_pair_up(&s, &c, NULL);
    got g;
    watch(call0(&c, "getCounter"), &g);
    pump(&s, &c);
    pb_cache_observer *o = pb_cache_observer_ref(the_counter.obs[0]);
    CHECK(pb_cache_observer_active(o));
    got_free(&g);
    pump(&s, &c);
    CHECK(!pb_cache_observer_active(o));
    CHECK(pb_cache_observer_broker(o) == NULL);
    pb_errbuf err = {0, ""};
    CHECK(pb_cache_observer_call(o, "setValue", NULL, NULL, &err) == NULL);
    CHECK_EQ_INT(err.code, PB_ESTATE);
    pb_cache_observer_unref(o);
    counters_pair_free(&s, &c);
}

TEST(connection_loss_runs_stoppedObserving_and_forgets_received_caches) {
    side s, c;
    counters_pair_up(&s, &c, NULL);
    got g;
    watch(call0(&c, "getCounter"), &g);
    pump(&s, &c);
    counter_cache *cc = cache_of(&g);
    pb_broker_connection_lost(s.b, "gone");
    CHECK_EQ_INT(the_counter.stopped, 1);
    pb_broker_connection_lost(c.b, "gone");
    CHECK(pb_remote_cache_broker(&cc->base) == NULL);
    CHECK_EQ_INT(cache_destroyed, 0); /* still held */
    got_free(&g);                     /* freed, nothing sent */
    CHECK_EQ_INT(cache_destroyed, 1);
    const uint8_t *p;
    CHECK_EQ_INT(pb_broker_output(c.b, &p), 0);
    counters_pair_free(&s, &c);
    /* freeing a broker with a cache held: the cache outlives it */
    counters_pair_up(&s, &c, NULL);
    watch(call0(&c, "getCounter"), &g);
    pump(&s, &c);
    counters_pair_free(&s, &c);
    CHECK_EQ_INT(cache_destroyed, 0);
    got_free(&g);
    CHECK_EQ_INT(cache_destroyed, 1);
}

TEST(the_cache_count_limit_answers_pb_Error_and_repeat_offenders_are_dropped) {
    side s, c;
    pb_broker_config cfg;
    pb_broker_config_default(&cfg);
    cfg.max_refs = 2;
    counters_pair_up(&s, &c, &cfg);
    got g[6];
    for (int i = 0; i < 3; i++) {
        watch(pb_ref_callf(pb_broker_root(c.b), "getExtra", "i", (int64_t)i), &g[i]);
        pump(&s, &c);
        CHECK_EQ_INT(g[i].failed, 0);
    }
    watch(pb_ref_callf(pb_broker_root(c.b), "getExtra", "i", (int64_t)3), &g[3]);
    pump(&s, &c);
    CHECK_EQ_INT(g[3].failed, PB_EREMOTE);
    CHECK(!strcmp(g[3].type, PB_FAILURE_PB_ERROR));
    CHECK_MSG(!strcmp(g[3].value, "Maximum PB cache count exceeded."), "%s", g[3].value);
    CHECK_EQ_INT(extra_counters[3].stopped, 0);
    CHECK_EQ_INT(s.closed, 0);
    for (int k = 0; k < 3; k++) {
        got x;
        watch(pb_ref_callf(pb_broker_root(c.b), "getExtra", "i", (int64_t)3), &x);
        pump(&s, &c);
        got_free(&x);
    }
    CHECK_EQ_INT(s.closed, 1);
    CHECK_MSG(strstr(s.close_msg, "Maximum PB cache count exceeded.  Goodbye.") != NULL, "%s", s.close_msg);
    for (int i = 0; i < 4; i++) got_free(&g[i]);
    counters_pair_free(&s, &c);
}

TEST(a_message_that_fails_to_encode_leaves_no_cache_registered) {
    side s, c;
    counters_pair_up(&s, &c, NULL);
    got g;
    watch(call0(&c, "badPair"), &g);
    pump(&s, &c);
    CHECK_EQ_INT(g.failed, PB_EREMOTE);
    CHECK_EQ_INT(extra_counters[5].states_taken, 1);
    CHECK_EQ_INT(extra_counters[5].stopped, 1); /* rolled back */
    CHECK_EQ_INT(extra_counters[5].nobs, 0);
    CHECK_EQ_INT(cache_states, 0);
    got_free(&g);
    /* the same cacheable twice in one answer: state then (cached 1) */
    watch(call0(&c, "twice"), &g);
    pump(&s, &c);
    CHECK_EQ_INT(g.failed, 0);
    CHECK(g.v && g.v->type == PB_TUPLE && g.v->u.seq.len == 2);
    if (g.v && g.v->u.seq.len == 2)
        CHECK(pb_value_remote_cache(g.v->u.seq.items[0]) == pb_value_remote_cache(g.v->u.seq.items[1]));
    got_free(&g);
    pump(&s, &c);
    CHECK_EQ_INT(the_counter.stopped, 1);
    CHECK_EQ_INT(s.closed + c.closed, 0);
    counters_pair_free(&s, &c);
}

/* Raw frames onto a connected broker. */
static size_t put_list(pb_buf *o, size_t n) { return (size_t)pb_banana_put_list(o, n); }
static void put_w(pb_buf *o, const char *w) { pb_banana_put_bytes(o, PB_DIALECT_PB, w, strlen(w)); }

static pb_value *decode_all(pb_arena *a, const uint8_t *p, size_t n, int skip_dialect) {
    pb_banana_limits lim;
    pb_banana_limits_default(&lim);
    pb_banana_dec *d = pb_banana_dec_new(skip_dialect ? PB_DIALECT_NONE : PB_DIALECT_PB, &lim);
    pb_value *all = pb_list(a, 8);
    int first = 1;
    while (n) {
        size_t used = 0;
        pb_value *x = NULL;
        int rc = pb_banana_dec_feed(d, p, n, &used, &x);
        p += used;
        n -= used;
        if (rc <= 0) break;
        if (first && skip_dialect) pb_banana_dec_set_dialect(d, PB_DIALECT_PB);
        if (!(first && skip_dialect)) pb_seq_append(a, all, pb_value_copy(a, x));
        first = 0;
    }
    pb_banana_dec_free(d);
    return all;
}

TEST(hostile_cache_forms_fail_the_message_or_the_connection_as_twisted_does) {
    side s, c;
    counters_pair_up(&s, &c, NULL);
    pb_arena *a = pb_arena_new(0);
    /* cachemessage to an unknown LUID: KeyError reply */
    pb_buf o;
    pb_buf_init(&o);
    put_list(&o, 7);
    put_w(&o, "cachemessage");
    pb_banana_put_int(&o, 41);
    pb_banana_put_int(&o, 9);
    put_w(&o, "setValue");
    pb_banana_put_int(&o, 1);
    put_list(&o, 1);
    put_w(&o, "tuple");
    put_list(&o, 1);
    put_w(&o, "dictionary");
    log_reset();
    CHECK_EQ_INT(pb_broker_feed(c.b, o.data, o.len), 0);
    const uint8_t *p;
    size_t n = pb_broker_output(c.b, &p);
    pb_value *msgs = decode_all(a, p, n, 0);
    CHECK_EQ_INT(msgs->u.seq.len, 1);
    pb_buf r;
    pb_buf_init(&r);
    if (msgs->u.seq.len) pb_value_repr(msgs->u.seq.items[0], &r);
    pb_buf_putc(&r, 0);
    CHECK_MSG(strstr((char *)r.data, "builtins.KeyError") && strstr((char *)r.data, "'9'"), "%s", (char *)r.data);
    pb_buf_free(&r);
    pb_broker_output_consume(c.b, n);
    o.len = 0;
    /* cached / lcache of unknown LUIDs in call arguments: KeyError replies */
    const char *forms[] = {"cached", "lcache"};
    for (int i = 0; i < 2; i++) {
        /* (message 50 "root"/0 "isMine" 1 (tuple (FORM 77)) (dictionary)) */
        put_list(&o, 7);
        put_w(&o, "message");
        pb_banana_put_int(&o, 50);
        put_w(&o, "root");
        put_w(&o, "isMine");
        pb_banana_put_int(&o, 1);
        put_list(&o, 2);
        put_w(&o, "tuple");
        put_list(&o, 2);
        put_w(&o, forms[i]);
        pb_banana_put_int(&o, 77);
        put_list(&o, 1);
        put_w(&o, "dictionary");
        pb_broker *tb = s.b;
        CHECK_EQ_INT(pb_broker_feed(tb, o.data, o.len), 0);
        n = pb_broker_output(tb, &p);
        pb_value *ms = decode_all(a, p, n, 0);
        pb_buf_init(&r);
        if (ms->u.seq.len) pb_value_repr(ms->u.seq.items[ms->u.seq.len - 1], &r);
        pb_buf_putc(&r, 0);
        CHECK_MSG(strstr((char *)r.data, "builtins.KeyError") != NULL, "%s: %s", forms[i], (char *)r.data);
        pb_buf_free(&r);
        pb_broker_output_consume(tb, n);
        o.len = 0;
    }
    CHECK_EQ_INT(s.closed + c.closed, 0);
    /* a cache form for an unregistered tag: InsecureJelly (error reply) */
    put_list(&o, 7);
    put_w(&o, "message");
    pb_banana_put_int(&o, 51);
    put_w(&o, "root");
    put_w(&o, "isMine");
    pb_banana_put_int(&o, 1);
    put_list(&o, 2);
    put_w(&o, "tuple");
    put_list(&o, 3);
    put_w(&o, "evil.Cache");
    pb_banana_put_int(&o, 5);
    pb_banana_put_int(&o, 0);
    put_list(&o, 1);
    put_w(&o, "dictionary");
    CHECK_EQ_INT(pb_broker_feed(s.b, o.data, o.len), 0);
    n = pb_broker_output(s.b, &p);
    pb_buf_init(&r);
    pb_value *ms = decode_all(a, p, n, 0);
    if (ms->u.seq.len) pb_value_repr(ms->u.seq.items[0], &r);
    pb_buf_putc(&r, 0);
    CHECK_MSG(strstr((char *)r.data, "InsecureJelly") != NULL, "%s", (char *)r.data);
    pb_buf_free(&r);
    pb_broker_output_consume(s.b, n);
    o.len = 0;
    CHECK_EQ_INT(s.closed, 0);
    /* decache / uncache of unknown LUIDs: fatal */
    put_list(&o, 2);
    put_w(&o, "decache");
    pb_banana_put_int(&o, 5);
    CHECK(pb_broker_feed(s.b, o.data, o.len) != 0);
    CHECK_EQ_INT(s.closed, 1);
    CHECK_MSG(strstr(s.close_msg, "decache of unknown LUID 5") != NULL, "%s", s.close_msg);
    o.len = 0;
    put_list(&o, 2);
    put_w(&o, "uncache");
    put_w(&o, "x");
    CHECK(pb_broker_feed(c.b, o.data, o.len) != 0);
    CHECK_MSG(strstr(c.close_msg, "uncache of unknown LUID") != NULL, "%s", c.close_msg);
    pb_buf_free(&o);
    pb_arena_free(a);
    counters_pair_free(&s, &c);
}

/* An answer carrying cache forms straight from bytes (the client side). */
static void feed_answer(side *c, int64_t req, void (*put_result)(pb_buf *o)) {
    pb_buf o;
    pb_buf_init(&o);
    put_list(&o, 3);
    put_w(&o, "answer");
    pb_banana_put_int(&o, req);
    put_result(&o);
    pb_broker_feed(c->b, o.data, o.len);
    pb_buf_free(&o);
}
static void put_plain_cache(pb_buf *o) { /* ("test.Plain" 3 (list 1 2)) */
    put_list(o, 3);
    put_w(o, "test.Plain");
    pb_banana_put_int(o, 3);
    put_list(o, 3);
    put_w(o, "list");
    pb_banana_put_int(o, 1);
    pb_banana_put_int(o, 2);
}
static void put_bad_luid(pb_buf *o) { /* ("test.Plain" "x" 0) */
    put_list(o, 3);
    put_w(o, "test.Plain");
    put_w(o, "x");
    pb_banana_put_int(o, 0);
}
static void put_dup_pair(pb_buf *o) { /* (list ("test.Plain" 4 0) ("test.Plain" 4 0)) */
    put_list(o, 3);
    put_w(o, "list");
    for (int i = 0; i < 2; i++) {
        put_list(o, 3);
        put_w(o, "test.Plain");
        pb_banana_put_int(o, 4);
        pb_banana_put_int(o, 0);
    }
}

TEST(a_class_without_set_state_keeps_the_state_and_bad_luids_are_refused) {
    side s, c;
    counters_pair_up(&s, &c, NULL);
    got g;
    watch(call0(&c, "getThing"), &g); /* any call: we answer it ourselves */
    const uint8_t *p;
    pb_broker_output_consume(c.b, pb_broker_output(c.b, &p));
    feed_answer(&c, 1, put_plain_cache);
    CHECK_EQ_INT(g.fired, 1);
    pb_remote_cache *pc = pb_value_remote_cache(g.v);
    CHECK(pc && pc->cls == &plain_class);
    pb_value *st = pb_remote_cache_state(pc);
    CHECK(st && st->type == PB_LIST && st->u.seq.len == 2);
    CHECK_EQ_INT(pb_remote_cache_luid(pc), 3);
    got_free(&g);
    /* (decache 3) went out */
    size_t n = pb_broker_output(c.b, &p);
    static const uint8_t dc[] = {0x02, 0x80, 0x1e, 0x87, 0x03, 0x81};
    CHECK(n == sizeof dc && !memcmp(p, dc, n));
    pb_broker_output_consume(c.b, n);
    /* an answer with a malformed cache form: the call fails, connection closes */
    watch(call0(&c, "getThing"), &g);
    pb_broker_output_consume(c.b, pb_broker_output(c.b, &p));
    feed_answer(&c, 2, put_bad_luid);
    CHECK_EQ_INT(g.failed != 0, 1);
    CHECK_EQ_INT(c.closed, 1);
    got_free(&g);
    counters_pair_free(&s, &c);
    /* the same LUID twice while cached: refused */
    counters_pair_up(&s, &c, NULL);
    watch(call0(&c, "getThing"), &g);
    pb_broker_output_consume(c.b, pb_broker_output(c.b, &p));
    feed_answer(&c, 1, put_dup_pair);
    CHECK(g.failed != 0);
    CHECK_MSG(strstr(g.value, "sent again") != NULL, "%s", g.value);
    /* the first copy was counted by the owner: handed back */
    n = pb_broker_output(c.b, &p);
    static const uint8_t dc4[] = {0x02, 0x80, 0x1e, 0x87, 0x04, 0x81};
    CHECK(log_has(&(pb_buf){(uint8_t *)p, n, n, 0}, dc4, sizeof dc4));
    got_free(&g);
    counters_pair_free(&s, &c);
}

/* -------------------------------------------------- scripted transcript */

static uint8_t *read_bin(const char *name, const char *ext, size_t *n) {
    char path[512];
    snprintf(path, sizeof path, "%s/protocol/transcripts/%s.%s.bin", test_shared_dir(), name, ext);
    return (uint8_t *)test_read_file(path, n);
}

TEST(transcript_h_cache_and_refs_client_bytes_get_twisteds_answers) {
    size_t cn = 0, sn = 0;
    uint8_t *c2s = read_bin("h_cache_and_refs", "c2s", &cn), *s2c = read_bin("h_cache_and_refs", "s2c", &sn);
    CHECK_MSG(c2s && s2c, "transcript not found (PB_SHARED_DIR?)");
    if (!c2s || !s2c) {
        free(c2s);
        free(s2c);
        return;
    }
    init_objects();
    side s;
    side_init(&s, 1, &the_root, NULL);
    CHECK_EQ_INT(pb_broker_feed(s.b, c2s, cn), 0);
    CHECK_EQ_INT(s.closed, 0);
    CHECK_EQ_INT(the_counter.stopped, 1); /* "stoppedObserving" */
    const uint8_t *p;
    size_t n = pb_broker_output(s.b, &p);
    CHECK_EQ_INT(n, sn);
    CHECK_MSG(n == sn && !memcmp(p, s2c, n), "server bytes differ from Twisted's");
    if (n != sn || memcmp(p, s2c, n)) {
        size_t i = 0;
        while (i < n && i < sn && p[i] == s2c[i]) i++;
        fprintf(stderr, "  first difference at byte %zu\n", i);
    }
    pb_broker_free(s.b);
    counter_reset(&the_counter, 1);
    free(c2s);
    free(s2c);
}

int main(void) {
    client_reg = pb_jelly_registry_new();
    g_client_registry = client_reg;
    g_s2c_log = &s2c_log;
    g_c2s_log = &c2s_log;
    CHECK_EQ_INT(pb_remote_cache_register(client_reg, &cc_class), 0);
    CHECK_EQ_INT(pb_remote_cache_register(client_reg, &plain_class), 0);
    CHECK_EQ_INT(pb_remote_cache_register(client_reg, NULL), PB_EINVAL);
    RUN(first_send_is_tag_luid_state_then_cached_luid_byte_for_byte);
    RUN(observer_calls_are_cachemessages_dispatched_to_observe_methods);
    RUN(lcache_brings_the_owners_own_cacheable_back_and_luids_are_shared);
    RUN(dropping_every_copy_sends_one_decache_each_and_the_owner_uncaches);
    RUN(a_cachemessage_racing_the_decache_still_reaches_the_cache);
    RUN(observer_calls_after_the_cache_is_gone_fail_with_ESTATE);
    RUN(connection_loss_runs_stoppedObserving_and_forgets_received_caches);
    RUN(the_cache_count_limit_answers_pb_Error_and_repeat_offenders_are_dropped);
    RUN(a_message_that_fails_to_encode_leaves_no_cache_registered);
    RUN(hostile_cache_forms_fail_the_message_or_the_connection_as_twisted_does);
    RUN(a_class_without_set_state_keeps_the_state_and_bad_luids_are_refused);
    RUN(transcript_h_cache_and_refs_client_bytes_get_twisteds_answers);
    log_reset();
    pb_jelly_registry_free(client_reg);
    return TEST_SUMMARY();
}
