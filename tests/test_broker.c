/* test_broker.c - the broker's promises, proved with two brokers wired
 * back to back in memory, with scripted bytes from real Twisted sessions,
 * and with hostile bytes. */
#include <stdarg.h>
#include "pb/broker.h"
#include "test.h"
#include "pair_util.h"

/* -------------------------------------------------------- server objects */

static int handler_runs;
static pb_call *deferred_calls[8];
static int ndeferred;

typedef struct thing {
    pb_object o;
    int id;
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

static int fresh_destroyed;
static void fresh_destroy(pb_object *o) {
    fresh_destroyed++;
    free(o);
}
static const pb_class fresh_class = {"Fresh", PB_REFERENCEABLE, thing_methods, fresh_destroy};

/* Viewable group and avatar */
static void *last_view_avatar;
static char last_view_msg[64];
static int group_send(pb_call *c, void *self, void *avatar, const pb_args *a) {
    (void)self;
    last_view_avatar = avatar;
    snprintf(last_view_msg, sizeof last_view_msg, "%s", pb_arg_str(a, 0, ""));
    return pb_call_return_none(c);
}
static const pb_method group_methods[] = {{"send", "s", NULL, group_send}, {NULL, NULL, NULL, NULL}};
static const pb_class group_class = {"Group", PB_VIEWABLE, group_methods, NULL};
static pb_object the_group;

typedef struct user {
    pb_object o;
    char name[16];
} user;

static int user_whoami(pb_call *c, void *self, const pb_args *a) {
    (void)a;
    CHECK(pb_call_avatar(c) == self);
    return pb_call_return(c, pb_strz(pb_call_arena(c), ((user *)self)->name));
}
static int user_join(pb_call *c, void *self, const pb_args *a) {
    (void)self;
    (void)a;
    return pb_call_return_object(c, &the_group);
}
static pb_ref *kept_ref;
static int user_keep(pb_call *c, void *self, const pb_args *a) {
    pb_ref *r = pb_arg_ref(a, 0);
    CHECK(pb_ref_avatar(r) == self);
    pb_ref_unref(kept_ref);
    kept_ref = pb_ref_ref(r);
    return pb_call_return_none(c);
}
static const pb_method user_methods[] = {{"whoami", NULL, user_whoami, NULL},
                                         {"joinGroup", "", user_join, NULL},
                                         {"keep", "r", user_keep, NULL},
                                         {NULL, NULL, NULL, NULL}};
static const pb_class user_class = {"User", PB_AVATAR, user_methods, NULL};
static user alice, bob;
static int released[4];
static void release_cb(void *ud) { released[*(int *)ud]++; }
static int idx0 = 0, idx1 = 1;

/* Root, behaving like err_server.py where the transcripts need it. */
static int root_echo(pb_call *c, void *self, const pb_args *a) {
    (void)self;
    handler_runs++;
    pb_arena *ar = pb_call_arena(c);
    pb_value *d = pb_dict(ar, 2);
    pb_dict_append(ar, d, pb_strz(ar, "args"), a->args);
    pb_dict_append(ar, d, pb_strz(ar, "kw"), a->kwargs);
    return pb_call_return(c, d);
}
static int root_add(pb_call *c, void *self, const pb_args *a) {
    (void)self;
    handler_runs++;
    return pb_call_return(c, pb_int(pb_call_arena(c), pb_arg_int(a, 0, 0) + pb_arg_int(a, 1, 0)));
}
static int root_typeError(pb_call *c, void *self, const pb_args *a) {
    (void)self;
    (void)a;
    handler_runs++;
    return pb_call_return_none(c);
}
static int root_raiseValueError(pb_call *c, void *self, const pb_args *a) {
    (void)self;
    (void)a;
    return pb_call_fail(c, PB_FAILURE_VALUE_ERROR, "invalid value 42");
}
static int root_raisePBError(pb_call *c, void *self, const pb_args *a) {
    (void)self;
    (void)a;
    return pb_call_fail(c, PB_FAILURE_PB_ERROR, "a pb.Error: not logged");
}
static int root_deferredFailure(pb_call *c, void *self, const pb_args *a) {
    (void)self;
    (void)a;
    pb_deferred *d = pb_deferred_new();
    int rc = pb_call_return_deferred(c, d);
    pb_deferred_fail(d, PB_EREMOTE, PB_FAILURE_KEY_ERROR, "'late'");
    pb_deferred_unref(d);
    return rc;
}
static int root_point(pb_call *c, void *self, const pb_args *a) {
    (void)self;
    (void)a;
    pb_arena *ar = pb_call_arena(c);
    pb_value *st = pb_dict(ar, 2);
    pb_dict_append(ar, st, pb_strz(ar, "x"), pb_int(ar, 3));
    pb_dict_append(ar, st, pb_strz(ar, "y"), pb_int(ar, 4));
    return pb_call_return(c, pb_instance(ar, "__main__.Point", 14, st));
}
static int root_raiseCopyableError(pb_call *c, void *self, const pb_args *a) {
    (void)self;
    (void)a;
    pb_arena *ar = pb_call_arena(c);
    pb_value *st = pb_dict(ar, 1);
    pb_dict_append(ar, st, pb_strz(ar, "why"), pb_strz(ar, "copyable exception"));
    pb_failure *f = pb_failure_new(ar, 0, "__main__.CopyableError", "copyable exception", NULL, 0);
    f->raw = pb_instance(ar, "__main__.CopyableError", 22, st);
    return pb_call_fail_failure(c, f);
}
static int root_slow(pb_call *c, void *self, const pb_args *a) {
    (void)self;
    (void)a;
    deferred_calls[ndeferred++] = c;
    return pb_call_defer(c);
}
static int root_fast(pb_call *c, void *self, const pb_args *a) {
    (void)self;
    pb_arena *ar = pb_call_arena(c);
    pb_value *t = pb_tuple(ar, 2);
    pb_seq_append(ar, t, pb_strz(ar, "fast"));
    pb_seq_append(ar, t, pb_int(ar, pb_arg_int(a, 0, 0)));
    return pb_call_return(c, t);
}
static int notified;
static int root_notify(pb_call *c, void *self, const pb_args *a) {
    (void)self;
    (void)a;
    notified++;
    return pb_call_return_none(c);
}
static int root_getThing(pb_call *c, void *self, const pb_args *a) {
    (void)self;
    (void)a;
    return pb_call_return_object(c, &the_thing.o);
}
static int root_getFresh(pb_call *c, void *self, const pb_args *a) {
    (void)self;
    (void)a;
    thing *t = calloc(1, sizeof *t);
    pb_object_init(&t->o, &fresh_class);
    int rc = pb_call_return_object(c, &t->o);
    pb_object_unref(&t->o);
    return rc;
}
static int root_isMine(pb_call *c, void *self, const pb_args *a) {
    pb_object *o = pb_arg_object(a, 0);
    return pb_call_return(c, pb_bool(pb_call_arena(c), o && (o == &the_thing.o || o == self)));
}
static pb_ref *server_kept;
static int root_takeRef(pb_call *c, void *self, const pb_args *a) {
    (void)self;
    pb_ref_unref(server_kept);
    server_kept = pb_ref_ref(pb_arg_ref(a, 0));
    CHECK(pb_ref_avatar(server_kept) == NULL);
    return pb_call_return_none(c);
}
static int root_login(pb_call *c, void *self, const pb_args *a) {
    (void)self;
    int which = (int)pb_arg_int(a, 0, 0);
    user *u = which ? &bob : &alice;
    pb_value *v = pb_broker_export_avatar(pb_call_broker(c), pb_call_arena(c), &u->o, release_cb,
                                          which ? &idx1 : &idx0);
    if (!v) return PB_ENOMEM;
    return pb_call_return(c, v);
}
static int root_fails_with_code(pb_call *c, void *self, const pb_args *a) {
    (void)c;
    (void)self;
    (void)a;
    return PB_ENOTFOUND;
}
static const pb_method root_methods[] = {
    {"echo", NULL, root_echo, NULL},
    {"add", "ii:a,b", root_add, NULL},
    {"typeError", "v:a", root_typeError, NULL},
    {"raiseValueError", "", root_raiseValueError, NULL},
    {"raisePBError", "", root_raisePBError, NULL},
    {"deferredFailure", "", root_deferredFailure, NULL},
    {"point", "", root_point, NULL},
    {"raiseCopyableError", "", root_raiseCopyableError, NULL},
    {"slow", "i", root_slow, NULL},
    {"fast", "i", root_fast, NULL},
    {"notify", "s", root_notify, NULL},
    {"getThing", "", root_getThing, NULL},
    {"getFresh", "", root_getFresh, NULL},
    {"isMine", "v", root_isMine, NULL},
    {"takeRef", "r", root_takeRef, NULL},
    {"login", "i", root_login, NULL},
    {"failsWithCode", NULL, root_fails_with_code, NULL},
    {NULL, NULL, NULL, NULL}};
static const pb_class root_class = {"Root", PB_REFERENCEABLE, root_methods, NULL};
static pb_object the_root;

/* Client-side object the server can call back. */
static int mind_isMine(pb_call *c, void *self, const pb_args *a) {
    pb_object *o = pb_arg_object(a, 0);
    return pb_call_return(c, pb_bool(pb_call_arena(c), o == self));
}
static const pb_method mind_methods[] = {{"isMine", "v", mind_isMine, NULL}, {NULL, NULL, NULL, NULL}};
static const pb_class mind_class = {"Mind", PB_REFERENCEABLE, mind_methods, NULL};
static pb_object the_mind;

static void init_objects(void) {
    static int done;
    if (done) return;
    done = 1;
    pb_object_init(&the_root, &root_class);
    pb_object_init(&the_thing.o, &thing_class);
    pb_object_init(&the_group, &group_class);
    pb_object_init(&alice.o, &user_class);
    snprintf(alice.name, sizeof alice.name, "alice");
    pb_object_init(&bob.o, &user_class);
    snprintf(bob.name, sizeof bob.name, "bob");
    pb_object_init(&the_mind, &mind_class);
}

static pb_value *tuple_of(pb_arena *a, int n, ...) {
    va_list ap;
    va_start(ap, n);
    pb_value *t = pb_tuple(a, (size_t)n);
    for (int i = 0; i < n; i++) pb_seq_append(a, t, va_arg(ap, pb_value *));
    va_end(ap);
    return t;
}

/* ------------------------------------------------------------------ tests */

TEST(server_offers_dialects_and_both_sides_connect) {
    init_objects();
    side s, c;
    side_init(&s, 1, &the_root, NULL);
    side_init(&c, 0, NULL, NULL);
    const uint8_t *p;
    size_t n = pb_broker_output(s.b, &p);
    static const uint8_t offer[] = {0x02, 0x80, 0x02, 0x82, 0x70, 0x62, 0x04, 0x82, 0x6e, 0x6f, 0x6e, 0x65};
    CHECK(n == sizeof offer && !memcmp(p, offer, n));
    CHECK(pb_broker_root(c.b) == NULL);
    pump(&s, &c);
    CHECK_EQ_INT(s.connected, 1);
    CHECK_EQ_INT(c.connected, 1);
    CHECK(pb_broker_root(c.b) != NULL);
    CHECK(pb_broker_is_connected(c.b) && pb_broker_is_connected(s.b));
    CHECK_EQ_INT(s.closed + c.closed, 0);
    pair_free(&s, &c);
}

TEST(call_and_answer_carry_args_and_kwargs) {
    init_objects();
    side s, c;
    pair_up(&s, &c, &the_root, NULL);
    pb_arena *a = pb_arena_new(0);
    pb_value *kw = pb_dict(a, 1);
    pb_dict_append(a, kw, pb_strz(a, "key"), pb_strz(a, "value"));
    got g;
    watch(pb_ref_call(pb_broker_root(c.b), "echo", tuple_of(a, 2, pb_int(a, 1), pb_bytesz(a, "two")), kw,
                      NULL, NULL),
          &g);
    pump(&s, &c);
    CHECK_EQ_INT(g.fired, 1);
    CHECK(!g.failed && g.v && g.v->type == PB_DICT);
    if (g.v && g.v->type == PB_DICT) {
        pb_value *args = pb_dict_get(g.v, "args"), *k = pb_dict_get(g.v, "kw");
        CHECK(args && args->type == PB_TUPLE && args->u.seq.len == 2);
        CHECK(k && pb_value_is(pb_dict_get(k, "key"), "value"));
    }
    got_free(&g);
    pb_arena_free(a);
    pair_free(&s, &c);
}

TEST(keyword_arguments_bind_by_name_with_text_or_bytes_keys) {
    init_objects();
    side s, c;
    pair_up(&s, &c, &the_root, NULL);
    pb_arena *a = pb_arena_new(0);
    pb_value *kw = pb_dict(a, 1);
    pb_dict_append(a, kw, pb_bytesz(a, "b"), pb_int(a, 40));
    got g;
    watch(pb_ref_call(pb_broker_root(c.b), "add", tuple_of(a, 1, pb_int(a, 2)), kw, NULL, NULL), &g);
    pump(&s, &c);
    CHECK(g.fired == 1 && !g.failed && g.i == 42);
    got_free(&g);
    pb_arena_free(a);
    pair_free(&s, &c);
}

TEST(a_signature_mismatch_answers_TypeError_and_never_runs_the_handler) {
    init_objects();
    side s, c;
    pair_up(&s, &c, &the_root, NULL);
    handler_runs = 0;
    got g1, g2, g3, g4;
    watch(pb_ref_callf(pb_broker_root(c.b), "typeError", ""), &g1);
    watch(pb_ref_callf(pb_broker_root(c.b), "add", "is", (int64_t)1, "x"), &g2);
    watch(pb_ref_callf(pb_broker_root(c.b), "add", "iii", (int64_t)1, (int64_t)2, (int64_t)3), &g3);
    pb_arena *a = pb_arena_new(0);
    pb_value *kw = pb_dict(a, 1);
    pb_dict_append(a, kw, pb_strz(a, "zz"), pb_int(a, 1));
    watch(pb_ref_call(pb_broker_root(c.b), "add", tuple_of(a, 1, pb_int(a, 2)), kw, NULL, NULL), &g4);
    pump(&s, &c);
    CHECK_EQ_INT(handler_runs, 0);
    CHECK(g1.failed && !strcmp(g1.type, "builtins.TypeError"));
    CHECK_MSG(!strcmp(g1.value, "Root.remote_typeError() missing 1 required positional argument: 'a'"), "%s", g1.value);
    CHECK_MSG(!strcmp(g2.value, "Root.remote_add() argument 'b' must be int, not str"), "%s", g2.value);
    CHECK_MSG(!strcmp(g3.value, "Root.remote_add() takes 3 positional arguments but 4 were given"), "%s", g3.value);
    CHECK_MSG(!strcmp(g4.value, "Root.remote_add() got an unexpected keyword argument 'zz'"), "%s", g4.value);
    got_free(&g1), got_free(&g2), got_free(&g3), got_free(&g4);
    pb_arena_free(a);
    pair_free(&s, &c);
}

TEST(an_unknown_method_answers_NoSuchMethod_and_a_returned_code_becomes_a_failure) {
    init_objects();
    side s, c;
    pair_up(&s, &c, &the_root, NULL);
    got g, g2;
    watch(pb_ref_callf(pb_broker_root(c.b), "frobnicate", ""), &g);
    watch(pb_ref_callf(pb_broker_root(c.b), "failsWithCode", ""), &g2);
    pump(&s, &c);
    CHECK(g.failed && !strcmp(g.type, PB_FAILURE_NO_SUCH_METHOD));
    CHECK(!strcmp(g.value, "No such method: remote_frobnicate"));
    CHECK_EQ_INT(g.failed, PB_EREMOTE);
    CHECK(g2.failed && !strcmp(g2.type, PB_FAILURE_KEY_ERROR));
    got_free(&g), got_free(&g2);
    pair_free(&s, &c);
}

/* An object whose table ends in "*" answers every name with that name. */
static int any_method(pb_call *c, void *self, const pb_args *a) {
    (void)self, (void)a;
    return pb_call_return(c, pb_strz(pb_call_arena(c), pb_call_method(c)));
}
static const pb_method any_methods[] = {{"known", "", root_fast, NULL}, {"*", NULL, any_method, NULL},
                                        {NULL, NULL, NULL, NULL}};
static const pb_class any_class = {"Any", PB_REFERENCEABLE, any_methods, NULL};

TEST(a_star_entry_takes_every_method_not_listed) {
    init_objects();
    pb_object any;
    pb_object_init(&any, &any_class);
    side s, c;
    pair_up(&s, &c, &any, NULL);
    got g;
    watch(pb_ref_callf(pb_broker_root(c.b), "whatever", "s", "x"), &g);
    pump(&s, &c);
    CHECK(!g.failed && g.v && pb_value_is(g.v, "whatever"));
    got_free(&g);
    pair_free(&s, &c);
    pb_object_unref(&any);
}

static size_t put_msg(pb_buf *o, int64_t req, int64_t luid, const char *objname, const char *name) {
    size_t before = o->len;
    pb_banana_put_list(o, 7);
    pb_banana_put_bytes(o, PB_DIALECT_PB, "message", 7);
    pb_banana_put_int(o, req);
    if (objname) pb_banana_put_bytes(o, PB_DIALECT_PB, objname, strlen(objname));
    else pb_banana_put_int(o, luid);
    pb_banana_put_bytes(o, PB_DIALECT_PB, name, strlen(name));
    pb_banana_put_int(o, 1);
    pb_banana_put_list(o, 1);
    pb_banana_put_bytes(o, PB_DIALECT_PB, "tuple", 5);
    pb_banana_put_list(o, 1);
    pb_banana_put_bytes(o, PB_DIALECT_PB, "dictionary", 10);
    return o->len - before;
}

/* Decode all expressions of a byte stream (pb dialect after the first two). */
static pb_value *decode_all(pb_arena *a, const uint8_t *p, size_t n, int skip_dialect) {
    pb_value *list = pb_list(a, 0);
    pb_banana_dec *d = pb_banana_dec_new(skip_dialect ? PB_DIALECT_NONE : PB_DIALECT_PB, NULL);
    int count = 0;
    while (n) {
        size_t used;
        pb_value *x;
        int rc = pb_banana_dec_feed(d, p, n, &used, &x);
        p += used;
        n -= used;
        if (rc <= 0) break;
        if (++count == 1 && skip_dialect) pb_banana_dec_set_dialect(d, PB_DIALECT_PB);
        pb_seq_append(a, list, pb_value_copy(a, x));
    }
    pb_banana_dec_free(d);
    return list;
}

TEST(a_forged_object_id_answers_Invalid_Object_ID_and_the_connection_stays_usable) {
    init_objects();
    side s, c;
    pair_up(&s, &c, &the_root, NULL);
    pb_buf o;
    pb_buf_init(&o);
    put_msg(&o, 77, 999, NULL, "x");
    put_msg(&o, 78, 0, "nosuch", "x");
    CHECK_EQ_INT(pb_broker_feed(s.b, o.data, o.len), 0);
    const uint8_t *p;
    size_t n = pb_broker_output(s.b, &p);
    pb_arena *a = pb_arena_new(0);
    pb_value *msgs = decode_all(a, p, n, 0);
    CHECK_EQ_INT(msgs->u.seq.len, 2);
    for (size_t i = 0; i < msgs->u.seq.len; i++) {
        pb_value *m = msgs->u.seq.items[i];
        CHECK(pb_value_is(m->u.seq.items[0], "error"));
        CHECK_EQ_INT(m->u.seq.items[1]->u.i, 77 + (int64_t)i);
        pb_buf r;
        pb_buf_init(&r);
        pb_value_repr(m, &r);
        pb_buf_putc(&r, 0);
        CHECK(strstr((char *)r.data, "Invalid Object ID") != NULL);
        CHECK(strstr((char *)r.data, "twisted.spread.pb.Error") != NULL);
        pb_buf_free(&r);
    }
    pb_broker_output_consume(s.b, n);
    CHECK_EQ_INT(s.closed, 0);
    got g;
    watch(pb_ref_callf(pb_broker_root(c.b), "add", "ii", (int64_t)1, (int64_t)2), &g);
    pump(&s, &c);
    CHECK(g.fired && g.i == 3);
    got_free(&g);
    pb_buf_free(&o);
    pb_arena_free(a);
    pair_free(&s, &c);
}

TEST(a_referenceable_sent_comes_back_as_the_same_local_object) {
    init_objects();
    side s, c;
    pair_up(&s, &c, &the_root, NULL);
    got g, g2, g3, g4;
    watch(pb_ref_callf(pb_broker_root(c.b), "getThing", ""), &g);
    pump(&s, &c);
    CHECK(g.ref != NULL);
    watch(pb_ref_callf(g.ref, "hello", "s", "alice"), &g2);
    watch(pb_ref_callf(pb_broker_root(c.b), "isMine", "r", g.ref), &g3);
    watch(pb_ref_callf(pb_broker_root(c.b), "isMine", "r", pb_broker_root(c.b)), &g4);
    pump(&s, &c);
    CHECK(!strcmp(g2.value, "hello alice"));
    CHECK(g3.fired && !g3.failed && g3.b == 1);
    CHECK(g4.fired && !g4.failed && g4.b == 1); /* (local "root") */
    got_free(&g), got_free(&g2), got_free(&g3), got_free(&g4);
    pair_free(&s, &c);
}

TEST(a_remote_reference_sent_back_arrives_as_the_original_local_object) {
    init_objects();
    side s, c;
    pair_up(&s, &c, &the_root, NULL);
    got g;
    watch(pb_ref_callf(pb_broker_root(c.b), "takeRef", "o", &the_mind), &g);
    pump(&s, &c);
    CHECK(g.fired && !g.failed && server_kept);
    got g2;
    watch(pb_ref_callf(server_kept, "isMine", "r", server_kept), &g2);
    pump(&s, &c);
    CHECK(g2.fired && !g2.failed && g2.b == 1);
    pb_broker_stats st;
    pb_broker_get_stats(c.b, &st);
    CHECK_EQ_INT(st.exported, 1);
    pb_ref_unref(server_kept); /* decref goes to the client, which forgets the mind */
    server_kept = NULL;
    pump(&s, &c);
    pb_broker_get_stats(c.b, &st);
    CHECK_EQ_INT(st.exported, 0);
    CHECK_EQ_INT(c.closed + s.closed, 0);
    got_free(&g), got_free(&g2);
    pair_free(&s, &c);
}

TEST(a_reference_from_another_connection_is_refused_before_anything_is_sent) {
    init_objects();
    side s1, c1, s2, c2;
    pair_up(&s1, &c1, &the_root, NULL);
    pair_up(&s2, &c2, &the_root, NULL);
    got g;
    watch(pb_ref_callf(pb_broker_root(c1.b), "getThing", ""), &g);
    pump(&s1, &c1);
    CHECK(g.ref);
    pb_arena *a = pb_arena_new(0);
    pb_errbuf err = {0, ""};
    pb_deferred *d = pb_ref_call(pb_broker_root(c2.b), "isMine", tuple_of(a, 1, pb_ref_value(a, g.ref)),
                                 NULL, NULL, &err);
    CHECK(d == NULL);
    CHECK_EQ_INT(err.code, PB_ETHIRDPARTY);
    const uint8_t *p;
    CHECK_EQ_INT(pb_broker_output(c2.b, &p), 0);
    CHECK_EQ_INT(pb_ref_send(pb_broker_root(c2.b), "isMine", tuple_of(a, 1, pb_ref_value(a, g.ref)), NULL),
                 PB_ETHIRDPARTY);
    pb_arena_free(a);
    got_free(&g);
    pair_free(&s1, &c1);
    pair_free(&s2, &c2);
}

TEST(deferred_answers_may_come_out_of_order) {
    init_objects();
    side s, c;
    pair_up(&s, &c, &the_root, NULL);
    ndeferred = 0;
    seq_counter = 0;
    got gs, gf;
    watch(pb_ref_callf(pb_broker_root(c.b), "slow", "i", (int64_t)1), &gs);
    watch(pb_ref_callf(pb_broker_root(c.b), "fast", "i", (int64_t)2), &gf);
    pump(&s, &c);
    CHECK(gf.fired && !gs.fired);
    CHECK_EQ_INT(ndeferred, 1);
    pb_broker_stats st;
    pb_broker_get_stats(s.b, &st);
    CHECK_EQ_INT(st.inflight, 1);
    pb_call *call = deferred_calls[--ndeferred];
    CHECK_EQ_INT(pb_call_return(call, pb_strz(pb_call_arena(call), "slow")), 0);
    pump(&s, &c);
    CHECK(gs.fired && !strcmp(gs.value, "slow") && gs.order > gf.order);
    pb_broker_get_stats(s.b, &st);
    CHECK_EQ_INT(st.inflight, 0);
    got_free(&gs), got_free(&gf);
    pair_free(&s, &c);
}

TEST(timeout_fails_the_call_and_the_late_answer_is_discarded) {
    init_objects();
    side s, c;
    pair_up(&s, &c, &the_root, NULL);
    ndeferred = 0;
    pb_broker_tick(c.b, 1000);
    pb_arena *a = pb_arena_new(0);
    pb_call_opts opts = {100, 0};
    got g;
    watch(pb_ref_call(pb_broker_root(c.b), "slow", tuple_of(a, 1, pb_int(a, 1)), NULL, &opts, NULL), &g);
    pump(&s, &c);
    CHECK_EQ_INT(pb_broker_next_deadline(c.b), 1100);
    pb_broker_tick(c.b, 1050);
    CHECK(!g.fired);
    pb_broker_tick(c.b, 1100);
    CHECK(g.fired && g.failed == PB_ETIMEOUT && !strcmp(g.type, PB_FAILURE_TIMEOUT));
    pb_broker_stats st;
    pb_broker_get_stats(c.b, &st);
    CHECK_EQ_INT(st.pending_calls, 0);
    pb_call *call = deferred_calls[--ndeferred];
    pb_call_return_none(call);
    pump(&s, &c);
    CHECK_EQ_INT(c.closed, 0); /* not a fatal unknown request id */
    CHECK_EQ_INT(g.fired, 1);
    got g2;
    watch(pb_ref_callf(pb_broker_root(c.b), "fast", "i", (int64_t)5), &g2);
    pump(&s, &c);
    CHECK(g2.fired && !g2.failed);
    got_free(&g), got_free(&g2);
    pb_arena_free(a);
    pair_free(&s, &c);
}

static uint64_t fake_clock;
static uint64_t fake_now(void *ud) {
    (void)ud;
    return fake_clock;
}

TEST(a_call_after_an_idle_spell_times_out_from_the_clock_not_the_last_tick) {
    init_objects();
    side s, c;
    pair_up(&s, &c, &the_root, NULL);
    ndeferred = 0;
    pb_broker_tick(c.b, 1000);
    /* no clock: the deadline counts from the last tick (1000), however stale */
    pb_call_opts opts = {100, 0};
    got g;
    pb_arena *a = pb_arena_new(0);
    watch(pb_ref_call(pb_broker_root(c.b), "slow", tuple_of(a, 1, pb_int(a, 1)), NULL, &opts, NULL), &g);
    CHECK_EQ_INT(pb_broker_next_deadline(c.b), 1100);
    pump(&s, &c);
    got_free(&g);
    pair_free(&s, &c);
    /* with now_ms: 10 s later, no tick in between, the deadline is now + 100 */
    side_init(&s, 1, &the_root, NULL);
    memset(&c, 0, sizeof c);
    pb_broker_config cc;
    pb_broker_config_default(&cc);
    pb_broker_callbacks cb = {&c, NULL, on_close, on_connected, NULL, fake_now};
    c.b = pb_broker_new(&cc, &cb, NULL);
    pump(&s, &c);
    fake_clock = 1000;
    pb_broker_tick(c.b, 1000);
    fake_clock = 11000;
    watch(pb_ref_call(pb_broker_root(c.b), "slow", tuple_of(a, 1, pb_int(a, 2)), NULL, &opts, NULL), &g);
    pump(&s, &c);
    CHECK_EQ_INT(pb_broker_next_deadline(c.b), 11100);
    pb_broker_tick(c.b, 11050);
    CHECK(!g.fired);
    pb_broker_tick(c.b, 11100);
    CHECK(g.fired && g.failed == PB_ETIMEOUT);
    got_free(&g);
    while (ndeferred) pb_call_return_none(deferred_calls[--ndeferred]);
    pump(&s, &c);
    CHECK_EQ_INT(c.closed + s.closed, 0);
    pb_arena_free(a);
    pair_free(&s, &c);
}

TEST(cancel_fails_the_call_locally_and_the_late_answer_is_discarded) {
    init_objects();
    side s, c;
    pair_up(&s, &c, &the_root, NULL);
    ndeferred = 0;
    got g;
    memset(&g, 0, sizeof g);
    pb_deferred *d = pb_ref_callf(pb_broker_root(c.b), "slow", "i", (int64_t)1);
    pb_deferred_add(d, got_cb, got_eb, &g);
    pump(&s, &c);
    pb_deferred_cancel(d);
    CHECK(g.fired && g.failed == PB_ECANCELLED);
    pb_deferred_unref(d);
    pb_call *call = deferred_calls[--ndeferred];
    pb_call_return_none(call);
    pump(&s, &c);
    CHECK_EQ_INT(c.closed, 0);
    CHECK_EQ_INT(g.fired, 1);
    got_free(&g);
    pair_free(&s, &c);
}

static int disconnects, cleanups;
static void on_disc(pb_ref *r, void *ud) {
    (void)r;
    (void)ud;
    disconnects++;
}
static void on_lost_cb(void *ud) {
    (void)ud;
    cleanups++;
}

TEST(connection_lost_fails_pending_calls_and_runs_cleanups_once) {
    init_objects();
    side s, c;
    pair_up(&s, &c, &the_root, NULL);
    ndeferred = 0;
    disconnects = cleanups = 0;
    got g;
    watch(pb_ref_callf(pb_broker_root(c.b), "slow", "i", (int64_t)1), &g);
    pump(&s, &c);
    CHECK_EQ_INT(pb_ref_notify_on_disconnect(pb_broker_root(c.b), on_disc, NULL), 0);
    CHECK(pb_broker_on_lost(c.b, on_lost_cb, NULL) != 0);
    uint64_t id = pb_broker_on_lost(c.b, on_lost_cb, NULL);
    pb_broker_cancel_on_lost(c.b, id);
    pb_broker_connection_lost(c.b, "test over");
    pb_broker_connection_lost(c.b, "again");
    CHECK(g.fired == 1 && g.failed == PB_ECLOSED && !strcmp(g.type, PB_FAILURE_CONNECTION_LOST));
    CHECK_EQ_INT(disconnects, 1);
    CHECK_EQ_INT(cleanups, 1);
    CHECK(!pb_broker_is_connected(c.b));
    pb_errbuf err = {0, ""};
    CHECK(pb_ref_call(pb_broker_root(c.b), "fast", NULL, NULL, NULL, &err) == NULL && err.code == PB_ECLOSED);
    CHECK_EQ_INT(pb_broker_feed(c.b, (const uint8_t *)"x", 1), PB_ECLOSED);
    pb_broker_free(c.b);
    c.b = NULL;
    CHECK_EQ_INT(g.fired, 1);
    CHECK_EQ_INT(cleanups, 1);
    /* the server's deferred call answers into a dead connection: dropped */
    pb_broker_connection_lost(s.b, "peer gone");
    pb_call *call = deferred_calls[--ndeferred];
    CHECK_EQ_INT(pb_call_return_none(call), PB_ECLOSED);
    got_free(&g);
    pair_free(&s, &c);
}

TEST(a_deferred_call_may_answer_after_its_broker_was_freed) {
    init_objects();
    side s, c;
    pair_up(&s, &c, &the_root, NULL);
    ndeferred = 0;
    got g;
    watch(pb_ref_callf(pb_broker_root(c.b), "slow", "i", (int64_t)1), &g);
    pump(&s, &c);
    pair_free(&s, &c);
    CHECK(g.fired && g.failed == PB_ECLOSED);
    pb_call *call = deferred_calls[--ndeferred];
    CHECK(pb_call_broker(call) == NULL);
    CHECK_EQ_INT(pb_call_fail(call, PB_FAILURE_VALUE_ERROR, "late"), PB_ECLOSED);
    got_free(&g);
}

TEST(each_remote_token_is_decrefed_and_the_owner_forgets_at_zero) {
    init_objects();
    side s, c;
    pair_up(&s, &c, &the_root, NULL);
    got g1, g2;
    watch(pb_ref_callf(pb_broker_root(c.b), "getThing", ""), &g1);
    watch(pb_ref_callf(pb_broker_root(c.b), "getThing", ""), &g2);
    pump(&s, &c);
    CHECK(g1.ref && g1.ref == g2.ref); /* one pb_ref per LUID, counting tokens */
    pb_broker_stats st;
    pb_broker_get_stats(s.b, &st);
    CHECK_EQ_INT(st.exported, 2); /* root + thing */
    pb_ref *r = g1.ref;
    got_free(&g1);
    pump(&s, &c);
    pb_broker_get_stats(s.b, &st);
    CHECK_EQ_INT(st.exported, 2); /* still held via g2 (and the deferreds' arenas are gone) */
    (void)r;
    got_free(&g2);
    pump(&s, &c);
    pb_broker_get_stats(s.b, &st);
    CHECK_EQ_INT(st.exported, 1);
    CHECK_EQ_INT(s.closed, 0);
    /* a decref of an unknown LUID is fatal */
    static const uint8_t bad[] = {0x02, 0x80, 0x1d, 0x87, 0x2a, 0x81};
    CHECK_EQ_INT(pb_broker_feed(s.b, bad, sizeof bad), PB_EPROTO);
    CHECK_EQ_INT(s.closed, 1);
    pair_free(&s, &c);
}

TEST(avatar_release_runs_once_on_decref_and_once_on_connection_lost) {
    init_objects();
    side s, c;
    pair_up(&s, &c, &the_root, NULL);
    memset(released, 0, sizeof released);
    got g, g2;
    watch(pb_ref_callf(pb_broker_root(c.b), "login", "i", (int64_t)0), &g);
    pump(&s, &c);
    CHECK(g.ref);
    watch(pb_ref_callf(g.ref, "whoami", ""), &g2);
    pump(&s, &c);
    CHECK(!strcmp(g2.value, "alice"));
    got_free(&g2);
    CHECK_EQ_INT(released[0], 0);
    got_free(&g); /* the client drops the avatar: decref, logout */
    pump(&s, &c);
    CHECK_EQ_INT(released[0], 1);
    /* a second login keeps its avatar until the connection goes */
    watch(pb_ref_callf(pb_broker_root(c.b), "login", "i", (int64_t)1), &g);
    pump(&s, &c);
    CHECK(g.ref);
    pb_broker_connection_lost(s.b, "bye");
    CHECK_EQ_INT(released[1], 1);
    pb_broker_free(s.b);
    s.b = NULL;
    CHECK_EQ_INT(released[1], 1);
    CHECK_EQ_INT(released[0], 1);
    got_free(&g);
    pair_free(&s, &c);
}

TEST(a_viewable_is_called_with_the_avatar_from_the_server_not_the_wire) {
    init_objects();
    side s, c;
    pair_up(&s, &c, &the_root, NULL);
    got ga, gb, gga, ggb, gs;
    watch(pb_ref_callf(pb_broker_root(c.b), "login", "i", (int64_t)0), &ga);
    watch(pb_ref_callf(pb_broker_root(c.b), "login", "i", (int64_t)1), &gb);
    pump(&s, &c);
    watch(pb_ref_callf(ga.ref, "joinGroup", ""), &gga);
    watch(pb_ref_callf(gb.ref, "joinGroup", ""), &ggb);
    pump(&s, &c);
    CHECK(gga.ref && ggb.ref && gga.ref != ggb.ref); /* one viewpoint per avatar */
    last_view_avatar = NULL;
    watch(pb_ref_callf(ggb.ref, "send", "s", "You can call me Al."), &gs);
    pump(&s, &c);
    CHECK(gs.fired && !gs.failed);
    CHECK(last_view_avatar == &bob.o);
    CHECK(!strcmp(last_view_msg, "You can call me Al."));
    got_free(&gs);
    watch(pb_ref_callf(gga.ref, "nope", ""), &gs);
    pump(&s, &c);
    CHECK(!strcmp(gs.type, PB_FAILURE_ATTRIBUTE_ERROR) &&
          !strcmp(gs.value, "'Group' object has no attribute 'view_nope'"));
    got_free(&gs);
    watch(pb_ref_callf(ga.ref, "nope", ""), &gs);
    pump(&s, &c);
    CHECK(!strcmp(gs.value, "'User' object has no attribute 'perspective_nope'"));
    got_free(&gs);
    /* a reference passed to an avatar's method carries that avatar */
    watch(pb_ref_callf(ga.ref, "keep", "o", &the_mind), &gs);
    pump(&s, &c);
    CHECK(gs.fired && !gs.failed && kept_ref && pb_ref_avatar(kept_ref) == &alice.o);
    got_free(&gs);
    pb_ref_unref(kept_ref);
    kept_ref = NULL;
    got_free(&ga), got_free(&gb), got_free(&gga), got_free(&ggb);
    pair_free(&s, &c);
}

TEST(exporting_beyond_max_refs_answers_a_pb_Error) {
    init_objects();
    side s, c;
    pb_broker_config cfg;
    pb_broker_config_default(&cfg);
    cfg.max_refs = 3;
    pair_up(&s, &c, &the_root, &cfg);
    fresh_destroyed = 0;
    got g[6];
    for (int i = 0; i < 6; i++) watch(pb_ref_callf(pb_broker_root(c.b), "getFresh", ""), &g[i]);
    pump(&s, &c);
    /* root + 3 fresh objects (Twisted refuses only when more than the limit are registered) */
    for (int i = 0; i < 3; i++) CHECK(g[i].ref && !g[i].failed);
    for (int i = 3; i < 6; i++) {
        CHECK(g[i].failed && !strcmp(g[i].type, PB_FAILURE_PB_ERROR));
        CHECK(!strcmp(g[i].value, "Maximum PB reference count exceeded."));
    }
    CHECK_EQ_INT(fresh_destroyed, 3); /* the refused ones were not kept */
    CHECK_EQ_INT(s.closed, 0);
    for (int i = 0; i < 6; i++) got_free(&g[i]);
    pump(&s, &c);
    CHECK_EQ_INT(fresh_destroyed, 6);
    pair_free(&s, &c);
}


TEST(idle_ping_is_answered_harmlessly_and_a_silent_peer_is_closed) {
    init_objects();
    side s, c;
    pb_broker_config cfg;
    pb_broker_config_default(&cfg);
    cfg.idle_ping_ms = 100;
    side_init(&s, 1, &the_root, &cfg);
    side_init(&c, 0, NULL, NULL);
    pb_broker_tick(s.b, 0);
    pump(&s, &c);
    CHECK_EQ_INT(pb_broker_next_deadline(s.b), 100);
    pb_broker_tick(s.b, 100); /* idle: ping */
    const uint8_t *p;
    CHECK(pb_broker_output(s.b, &p) > 0);
    pump(&s, &c); /* the peer answers "Invalid Object ID" */
    CHECK_EQ_INT(s.closed + c.closed, 0);
    pb_broker_tick(s.b, 150);
    pb_broker_tick(s.b, 250); /* pings again; this time nobody answers */
    size_t n = pb_broker_output(s.b, &p);
    CHECK(n > 0);
    pb_broker_output_consume(s.b, n);
    pb_broker_tick(s.b, 360);
    CHECK_EQ_INT(s.closed, 1);
    CHECK_EQ_INT(s.close_code, PB_ETIMEOUT);
    pair_free(&s, &c);
}

TEST(calls_beyond_max_inflight_are_refused_without_running) {
    init_objects();
    side s, c;
    pb_broker_config cfg;
    pb_broker_config_default(&cfg);
    cfg.max_inflight = 2;
    pair_up(&s, &c, &the_root, &cfg);
    ndeferred = 0;
    got g[3];
    for (int i = 0; i < 3; i++) watch(pb_ref_callf(pb_broker_root(c.b), "slow", "i", (int64_t)i), &g[i]);
    pump(&s, &c);
    CHECK_EQ_INT(ndeferred, 2);
    CHECK(g[2].failed && !strcmp(g[2].type, PB_FAILURE_PB_ERROR));
    while (ndeferred) pb_call_return_none(deferred_calls[--ndeferred]);
    pump(&s, &c);
    CHECK(g[0].fired && g[1].fired && !g[0].failed);
    for (int i = 0; i < 3; i++) got_free(&g[i]);
    pair_free(&s, &c);
}

static pb_broker *to_free_inside;
static int root_free_me(pb_call *c, void *self, const pb_args *a) {
    (void)self;
    (void)a;
    pb_call_return_none(c);
    pb_broker_free(to_free_inside);
    return 0;
}

TEST(a_handler_may_free_its_own_broker) {
    static const pb_method m[] = {{"freeMe", NULL, root_free_me, NULL}, {NULL, NULL, NULL, NULL}};
    static const pb_class cls = {"Killer", PB_REFERENCEABLE, m, NULL};
    pb_object killer;
    pb_object_init(&killer, &cls);
    side s, c;
    pair_up(&s, &c, &killer, NULL);
    to_free_inside = s.b;
    pb_buf o;
    pb_buf_init(&o);
    put_msg(&o, 1, 0, "root", "freeMe");
    put_msg(&o, 2, 0, "root", "freeMe");
    pb_broker_feed(s.b, o.data, o.len); /* freed on the way out; the second is never run */
    s.b = NULL;
    pb_buf_free(&o);
    pair_free(&s, &c);
    CHECK_EQ_INT(killer.h.refs, 1);
}

/* ------------------------------------------------------- fatal conditions */

TEST(protocol_violations_close_and_stay_closed) {
    init_objects();
    static const char *bad_hex[] = {
        "028013870581",                     /* version 5 */
        "0781",                             /* non-list */
        "02800a8266726f626e69636174650181", /* unknown command */
        "03801b87638101800187",             /* answer for unknown request */
        "03801c87638101800187",             /* error for unknown request */
        "02801d872a81",                     /* decref unknown */
        "02801e872a81",                     /* decache unknown */
        "02801f872a81",                     /* uncache unknown */
        "04801a8701810482726f6f74018278",   /* message with too few elements */
        "ff",                               /* banana: bad type byte */
        "0080",                             /* empty list */
    };
    for (size_t i = 0; i < sizeof bad_hex / sizeof *bad_hex; i++) {
        side s, c;
        pair_up(&s, &c, &the_root, NULL);
        unsigned char buf[64];
        size_t n = test_unhex(bad_hex[i], buf, sizeof buf);
        int rc = pb_broker_feed(s.b, buf, n);
        CHECK_MSG(rc < 0, "case %zu", i);
        CHECK_MSG(s.closed == 1, "case %zu", i);
        CHECK(pb_broker_feed(s.b, buf, n) == rc);
        CHECK(pb_broker_errmsg(s.b)[0] != 0);
        pair_free(&s, &c);
    }
    /* a client refuses a server that offers nothing it knows */
    side c;
    side_init(&c, 0, NULL, NULL);
    static const uint8_t offer[] = {0x01, 0x80, 0x03, 0x82, 'x', 'y', 'z'};
    CHECK(pb_broker_feed(c.b, offer, sizeof offer) == PB_EPROTO && c.closed == 1);
    pb_broker_free(c.b);
}

/* -------------------------------------------------- scripted transcripts */

static uint8_t *read_bin(const char *name, const char *ext, size_t *n) {
    char path[512];
    snprintf(path, sizeof path, "%s/protocol/transcripts/%s.%s.bin", test_shared_dir(), name, ext);
    return (uint8_t *)test_read_file(path, n);
}

/* Zero every CopyableFailure "count" (a process-global counter), and
 * blank unpersistable reasons: Twisted re-jellies an Unpersistable it
 * received as "instance of class twisted.spread.jelly.Unpersistable deemed
 * insecure", we echo the reason received (a jelly-level difference). */
static void normalise(pb_value *x) {
    if (!x || x->type != PB_SEXP_LIST) return;
    if (x->u.seq.len == 2 && pb_value_is(x->u.seq.items[0], "unpersistable")) {
        x->u.seq.items[1]->u.s.len = 0;
        return;
    }
    for (size_t i = 0; i < x->u.seq.len; i++) {
        pb_value *it = x->u.seq.items[i];
        if (it->type == PB_SEXP_LIST && it->u.seq.len == 2 && it->u.seq.items[0]->type == PB_SEXP_LIST &&
            it->u.seq.items[0]->u.seq.len == 2 && pb_value_is(it->u.seq.items[0]->u.seq.items[1], "count") &&
            it->u.seq.items[1]->type == PB_INT)
            it->u.seq.items[1]->u.i = 0;
        else normalise(it);
    }
}

static void run_transcript(const char *name, size_t split_at, int answer_slow_at_split) {
    size_t cn = 0, sn = 0;
    uint8_t *c2s = read_bin(name, "c2s", &cn), *s2c = read_bin(name, "s2c", &sn);
    CHECK_MSG(c2s && s2c, "transcript %s not found (PB_SHARED_DIR?)", name);
    if (!c2s || !s2c) {
        free(c2s);
        free(s2c);
        return;
    }
    side s;
    side_init(&s, 1, &the_root, NULL);
    ndeferred = 0;
    notified = 0;
    if (split_at > cn) split_at = cn;
    CHECK_EQ_INT(pb_broker_feed(s.b, c2s, split_at), 0);
    if (answer_slow_at_split && ndeferred) {
        pb_call *call = deferred_calls[--ndeferred];
        pb_arena *ar = pb_call_arena(call);
        pb_value *t = pb_tuple(ar, 2);
        pb_seq_append(ar, t, pb_strz(ar, "slow"));
        pb_seq_append(ar, t, pb_int(ar, 1));
        pb_call_return(call, t);
    }
    CHECK_EQ_INT(pb_broker_feed(s.b, c2s + split_at, cn - split_at), 0);
    CHECK_EQ_INT(s.closed, 0);
    const uint8_t *p;
    size_t n = pb_broker_output(s.b, &p);
    pb_arena *a = pb_arena_new(0);
    pb_value *ours = decode_all(a, p, n, 1), *theirs = decode_all(a, s2c, sn, 1);
    CHECK_EQ_INT(ours->u.seq.len, theirs->u.seq.len);
    for (size_t i = 0; i < ours->u.seq.len && i < theirs->u.seq.len; i++) {
        normalise(ours->u.seq.items[i]);
        normalise(theirs->u.seq.items[i]);
        if (!pb_value_equal(ours->u.seq.items[i], theirs->u.seq.items[i])) {
            pb_buf r1, r2;
            pb_buf_init(&r1);
            pb_buf_init(&r2);
            pb_value_repr(ours->u.seq.items[i], &r1);
            pb_value_repr(theirs->u.seq.items[i], &r2);
            CHECK_MSG(0, "%s message %zu differs:\n   ours:   %.*s\n   theirs: %.*s", name, i,
                      (int)r1.len, (char *)r1.data, (int)r2.len, (char *)r2.data);
            pb_buf_free(&r1);
            pb_buf_free(&r2);
        }
    }
    pb_arena_free(a);
    pb_broker_free(s.b);
    free(c2s);
    free(s2c);
}

TEST(transcript_e_remote_valueerror_gets_the_same_answers_as_twisted) {
    init_objects();
    run_transcript("e_remote_valueerror", SIZE_MAX, 0);
}

TEST(transcript_f_misc_errors_gets_the_same_answers_as_twisted) {
    init_objects();
    /* the client sent notify/nosuch only after slow's answer arrived */
    run_transcript("f_misc_errors", 516, 1);
    CHECK_EQ_INT(notified, 1);
}

/* ------------------------------------------------------------- robustness */

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

static void feed_hostile(const uint8_t *p, size_t n, size_t chunk) {
    side s;
    side_init(&s, 1, &the_root, NULL);
    ndeferred = 0;
    for (size_t off = 0; off < n;) {
        size_t k = chunk ? chunk : 1 + rnd() % 64;
        if (k > n - off) k = n - off;
        if (pb_broker_feed(s.b, p + off, k) < 0) break;
        off += k;
        const uint8_t *o;
        size_t on = pb_broker_output(s.b, &o);
        pb_broker_output_consume(s.b, on);
    }
    pb_broker_tick(s.b, 10);
    while (ndeferred) pb_call_return_none(deferred_calls[--ndeferred]);
    pb_broker_free(s.b);
}

TEST(random_bytes_and_mutated_transcripts_never_crash_a_server) {
    init_objects();
    size_t cn = 0;
    uint8_t *c2s = read_bin("f_misc_errors", "c2s", &cn);
    uint8_t buf[4096];
    /* pure noise after a valid handshake */
    static const uint8_t hs[] = {0x02, 0x82, 0x70, 0x62, 0x02, 0x80, 0x13, 0x87, 0x06, 0x81};
    for (int it = 0; it < 300; it++) {
        size_t n = sizeof hs + rnd() % 512;
        memcpy(buf, hs, sizeof hs);
        for (size_t i = sizeof hs; i < n; i++) buf[i] = (uint8_t)rnd();
        feed_hostile(buf, n, 0);
    }
    if (c2s) {
        /* every truncation, fed in one piece and byte by byte */
        for (size_t cut = 0; cut <= cn; cut += 7) feed_hostile(c2s, cut, cn);
        feed_hostile(c2s, cn, 1);
        /* random mutations */
        size_t n = cn < sizeof buf ? cn : sizeof buf;
        for (int it = 0; it < 1500; it++) {
            memcpy(buf, c2s, n);
            int flips = 1 + (int)(rnd() % 4);
            for (int f = 0; f < flips; f++) {
                size_t at = rnd() % n;
                switch (rnd() % 3) {
                case 0: buf[at] = (uint8_t)rnd(); break;
                case 1: buf[at] ^= (uint8_t)(1u << (rnd() % 8)); break;
                default: buf[at] = (uint8_t)(0x80 + rnd() % 8); break;
                }
            }
            feed_hostile(buf, n, 0);
        }
        free(c2s);
    }
    CHECK(1);
}

int main(void) {
    RUN(server_offers_dialects_and_both_sides_connect);
    RUN(call_and_answer_carry_args_and_kwargs);
    RUN(keyword_arguments_bind_by_name_with_text_or_bytes_keys);
    RUN(a_signature_mismatch_answers_TypeError_and_never_runs_the_handler);
    RUN(an_unknown_method_answers_NoSuchMethod_and_a_returned_code_becomes_a_failure);
    RUN(a_star_entry_takes_every_method_not_listed);
    RUN(a_forged_object_id_answers_Invalid_Object_ID_and_the_connection_stays_usable);
    RUN(a_referenceable_sent_comes_back_as_the_same_local_object);
    RUN(a_remote_reference_sent_back_arrives_as_the_original_local_object);
    RUN(a_reference_from_another_connection_is_refused_before_anything_is_sent);
    RUN(deferred_answers_may_come_out_of_order);
    RUN(timeout_fails_the_call_and_the_late_answer_is_discarded);
    RUN(a_call_after_an_idle_spell_times_out_from_the_clock_not_the_last_tick);
    RUN(cancel_fails_the_call_locally_and_the_late_answer_is_discarded);
    RUN(connection_lost_fails_pending_calls_and_runs_cleanups_once);
    RUN(a_deferred_call_may_answer_after_its_broker_was_freed);
    RUN(each_remote_token_is_decrefed_and_the_owner_forgets_at_zero);
    RUN(avatar_release_runs_once_on_decref_and_once_on_connection_lost);
    RUN(a_viewable_is_called_with_the_avatar_from_the_server_not_the_wire);
    RUN(exporting_beyond_max_refs_answers_a_pb_Error);
    RUN(idle_ping_is_answered_harmlessly_and_a_silent_peer_is_closed);
    RUN(calls_beyond_max_inflight_are_refused_without_running);
    RUN(a_handler_may_free_its_own_broker);
    RUN(protocol_violations_close_and_stay_closed);
    RUN(transcript_e_remote_valueerror_gets_the_same_answers_as_twisted);
    RUN(transcript_f_misc_errors_gets_the_same_answers_as_twisted);
    RUN(random_bytes_and_mutated_transcripts_never_crash_a_server);
    return TEST_SUMMARY();
}
