/* test_deferred.c - pb_deferred and pb_failure promises. */
#include "pb/deferred.h"
#include "test.h"

typedef struct log_t {
    char s[256];
} log_t;

static void logc(log_t *l, const char *what) {
    size_t n = strlen(l->s);
    snprintf(l->s + n, sizeof l->s - n, "%s;", what);
}

static int cb_record(pb_deferred *d, void *ud) {
    const pb_value *v = pb_deferred_value(d);
    char buf[32];
    snprintf(buf, sizeof buf, "cb:%lld", v && v->type == PB_INT ? (long long)v->u.i : -1LL);
    logc(ud, buf);
    return 0;
}

static int eb_record(pb_deferred *d, void *ud) {
    char buf[96];
    snprintf(buf, sizeof buf, "eb:%s", pb_deferred_failure(d)->type);
    logc(ud, buf);
    return 0;
}

static int cb_double(pb_deferred *d, void *ud) {
    (void)ud;
    const pb_value *v = pb_deferred_value(d);
    return pb_deferred_set_value(d, pb_int(pb_deferred_arena(d), v->u.i * 2));
}

static int cb_raise(pb_deferred *d, void *ud) {
    (void)d;
    (void)ud;
    return PB_EINVAL;
}

static int eb_recover(pb_deferred *d, void *ud) {
    (void)ud;
    return pb_deferred_set_value(d, pb_int(pb_deferred_arena(d), 99));
}

TEST(callbacks_run_in_order_and_may_replace_the_result) {
    log_t l = {""};
    pb_deferred *d = pb_deferred_new();
    pb_deferred_add(d, cb_record, eb_record, &l);
    pb_deferred_add(d, cb_double, NULL, NULL);
    pb_deferred_add(d, cb_record, eb_record, &l);
    CHECK(!pb_deferred_fired(d));
    pb_arena *a = pb_arena_new(0);
    CHECK_EQ_INT(pb_deferred_callback(d, pb_int(a, 21)), 0);
    pb_arena_free(a); /* the value was copied into the deferred */
    CHECK(!strcmp(l.s, "cb:21;cb:42;"));
    CHECK_EQ_INT(pb_deferred_value(d)->u.i, 42);
    pb_deferred_unref(d);
}

TEST(returning_an_error_code_switches_to_the_errback_side_and_an_errback_can_recover) {
    log_t l = {""};
    pb_deferred *d = pb_deferred_new();
    pb_deferred_add(d, cb_raise, NULL, NULL);
    pb_deferred_add(d, cb_record, eb_record, &l);
    pb_deferred_add(d, NULL, eb_recover, NULL);
    pb_deferred_add(d, cb_record, eb_record, &l);
    pb_deferred_callback(d, NULL);
    CHECK(!strcmp(l.s, "eb:builtins.ValueError;cb:99;"));
    pb_deferred_unref(d);
}

TEST(callbacks_added_after_firing_run_at_once) {
    log_t l = {""};
    pb_deferred *d = pb_deferred_new();
    pb_deferred_fail(d, PB_EREMOTE, PB_FAILURE_KEY_ERROR, "'late'");
    pb_deferred_add(d, cb_record, eb_record, &l);
    CHECK(!strcmp(l.s, "eb:builtins.KeyError;"));
    CHECK(pb_failure_check(pb_deferred_failure(d), "builtins.LookupError"));
    pb_deferred_unref(d);
}

TEST(a_deferred_fires_only_once) {
    pb_deferred *d = pb_deferred_new();
    CHECK_EQ_INT(pb_deferred_callback(d, NULL), 0);
    CHECK_EQ_INT(pb_deferred_callback(d, NULL), PB_ESTATE);
    CHECK_EQ_INT(pb_deferred_fail(d, PB_EREMOTE, "x.Y", "z"), PB_ESTATE);
    CHECK(pb_deferred_value(d) && pb_deferred_value(d)->type == PB_NONE);
    pb_deferred_unref(d);
}

static int cancelled;
static void canceller(pb_deferred *d, void *ud) {
    (void)d;
    cancelled += *(int *)ud;
}

TEST(cancel_runs_the_canceller_then_fails_with_CancelledError) {
    log_t l = {""};
    int one = 1;
    cancelled = 0;
    pb_deferred *d = pb_deferred_new();
    pb_deferred_set_canceller(d, canceller, &one);
    pb_deferred_add(d, cb_record, eb_record, &l);
    pb_deferred_cancel(d);
    CHECK_EQ_INT(cancelled, 1);
    CHECK(!strcmp(l.s, "eb:twisted.internet.defer.CancelledError;"));
    CHECK_EQ_INT(pb_deferred_failure(d)->code, PB_ECANCELLED);
    pb_deferred_cancel(d); /* already fired: nothing */
    CHECK_EQ_INT(cancelled, 1);
    pb_deferred_unref(d);
}

TEST(chain_fires_the_second_deferred_with_the_same_result) {
    log_t l = {""};
    pb_deferred *a = pb_deferred_new(), *b = pb_deferred_new();
    pb_deferred_add(b, cb_record, eb_record, &l);
    CHECK_EQ_INT(pb_deferred_chain(a, b), 0);
    pb_deferred_unref(b); /* the chain keeps it alive */
    pb_arena *ar = pb_arena_new(0);
    pb_deferred_callback(a, pb_int(ar, 7));
    pb_arena_free(ar);
    CHECK(!strcmp(l.s, "cb:7;"));
    pb_deferred_unref(a);
}

TEST(an_unfired_chain_does_not_leak_when_dropped) {
    pb_deferred *a = pb_deferred_new(), *b = pb_deferred_new();
    pb_deferred_chain(a, b);
    pb_deferred_unref(b);
    pb_deferred_unref(a);
    CHECK(1); /* ASan/LSan proves it */
}

TEST(well_known_failures_get_twisted_parents) {
    pb_arena *a = pb_arena_new(0);
    pb_failure *f = pb_failure_new(a, 0, PB_FAILURE_UNAUTHORIZED, "", NULL, 0);
    CHECK_EQ_INT(f->nparents, 6);
    CHECK(!strcmp(f->parents[1], "twisted.cred.error.LoginFailed"));
    CHECK(!strcmp(f->parents[2], "twisted.cred.error.Unauthorized"));
    CHECK(!strcmp(f->parents[5], "builtins.object"));
    CHECK(pb_failure_check(f, "twisted.cred.error.Unauthorized"));
    f = pb_failure_new(a, 0, PB_FAILURE_PB_ERROR, "x", NULL, 0);
    CHECK_EQ_INT(f->nparents, 4);
    CHECK(!strcmp(f->parents[0], "twisted.spread.pb.Error"));
    CHECK(!strcmp(f->parents[1], "builtins.Exception"));
    f = pb_failure_new(a, 0, "my.Custom", "x", NULL, 0);
    CHECK_EQ_INT(f->nparents, 4);
    CHECK(!strcmp(f->parents[0], "my.Custom"));
    f = pb_failure_new(a, 0, PB_FAILURE_NO_SUCH_METHOD, "x", NULL, 0);
    CHECK(pb_failure_check(f, "builtins.AttributeError"));
    pb_arena_free(a);
}

/* The vectors.json CopyableFailure, as Twisted 22.4 jellies it. */
TEST(failure_to_value_has_the_22_4_key_order) {
    pb_arena *a = pb_arena_new(0);
    pb_failure *f = pb_failure_new(a, 0, PB_FAILURE_VALUE_ERROR, "boom", NULL, 0);
    pb_value *v = pb_failure_to_value(a, f, 0);
    CHECK(v && v->type == PB_INSTANCE);
    CHECK(!strcmp(v->u.inst.cls, "twisted.spread.pb.CopyableFailure"));
    const pb_value *st = v->u.inst.state;
    static const char *keys[] = {"count", "type", "value", "captureVars", "frames", "stack",
                                 "tb", "parents", "unsafeTracebacks", "traceback"};
    CHECK_EQ_INT(st->u.dict.len, 10);
    for (size_t i = 0; i < 10 && i < st->u.dict.len; i++) {
        CHECK(st->u.dict.kv[2 * i]->type == PB_STR);
        CHECK_MSG(pb_value_is(st->u.dict.kv[2 * i], keys[i]), "key %zu", i);
    }
    CHECK(pb_dict_get(st, "type")->type == PB_BYTES);
    CHECK(pb_value_is(pb_dict_get(st, "traceback"), "Traceback unavailable\n"));
    CHECK(pb_dict_get(st, "tb")->type == PB_NONE);
    CHECK_EQ_INT(pb_dict_get(st, "parents")->u.seq.len, 4);
    /* and it reads back */
    pb_failure *g = pb_failure_from_value(a, v);
    CHECK(!strcmp(g->type, PB_FAILURE_VALUE_ERROR) && !strcmp(g->value, "boom"));
    CHECK_EQ_INT(g->code, PB_EREMOTE);
    CHECK_EQ_INT(g->nparents, 4);
    pb_arena_free(a);
}

TEST(failure_from_value_tolerates_trunk_layouts_and_junk) {
    pb_arena *a = pb_arena_new(0);
    /* trunk order, extra keys, no frames/stack/tb, str type */
    pb_value *st = pb_dict(a, 0);
    pb_dict_append(a, st, pb_strz(a, "_frames"), pb_list(a, 0));
    pb_dict_append(a, st, pb_strz(a, "type"), pb_strz(a, "builtins.KeyError"));
    pb_dict_append(a, st, pb_strz(a, "value"), pb_strz(a, "'k'"));
    pb_value *parents = pb_list(a, 0);
    pb_seq_append(a, parents, pb_strz(a, "builtins.KeyError"));
    pb_seq_append(a, parents, pb_strz(a, "builtins.LookupError"));
    pb_dict_append(a, st, pb_strz(a, "parents"), parents);
    pb_dict_append(a, st, pb_strz(a, "pickled"), pb_int(a, 1));
    pb_value *v = pb_instance(a, "twisted.spread.pb.CopyableFailure", 33, st);
    pb_failure *f = pb_failure_from_value(a, v);
    CHECK(f && !strcmp(f->type, "builtins.KeyError") && pb_failure_check(f, "builtins.LookupError"));
    /* bare strings, None, ints, a Copyable exception */
    f = pb_failure_from_value(a, pb_bytesz(a, "oops"));
    CHECK(f && !strcmp(f->value, "oops"));
    f = pb_failure_from_value(a, pb_none(a));
    CHECK(f && f->type);
    f = pb_failure_from_value(a, NULL);
    CHECK(f && f->type);
    pb_value *ce = pb_dict(a, 0);
    pb_dict_append(a, ce, pb_strz(a, "why"), pb_strz(a, "copyable exception"));
    f = pb_failure_from_value(a, pb_instance(a, "__main__.CopyableError", 22, ce));
    CHECK(f && !strcmp(f->type, "__main__.CopyableError") && pb_failure_check(f, "__main__.CopyableError"));
    /* parents of the wrong shape */
    pb_value *bad = pb_dict(a, 0);
    pb_dict_append(a, bad, pb_strz(a, "parents"), pb_int(a, 3));
    pb_dict_append(a, bad, pb_strz(a, "type"), pb_int(a, 3));
    f = pb_failure_from_value(a, pb_instance(a, "twisted.spread.pb.CopyableFailure", 33, bad));
    CHECK(f && f->type);
    pb_arena_free(a);
}

int main(void) {
    RUN(callbacks_run_in_order_and_may_replace_the_result);
    RUN(returning_an_error_code_switches_to_the_errback_side_and_an_errback_can_recover);
    RUN(callbacks_added_after_firing_run_at_once);
    RUN(a_deferred_fires_only_once);
    RUN(cancel_runs_the_canceller_then_fails_with_CancelledError);
    RUN(chain_fires_the_second_deferred_with_the_same_result);
    RUN(an_unfired_chain_does_not_leak_when_dropped);
    RUN(well_known_failures_get_twisted_parents);
    RUN(failure_to_value_has_the_22_4_key_order);
    RUN(failure_from_value_tolerates_trunk_layouts_and_junk);
    return TEST_SUMMARY();
}
