/* fuzz_broker_server - a server-side broker fed a hostile client's bytes.
 *
 * The root exposes remote_ methods like the Twisted test servers of the
 * transcripts (echo, add, typeError, raisePBError, deferredFailure, slow,
 * fast, point, getThing, isMine, ...), plus methods that return fresh
 * Referenceables, a Viewable, a per-login avatar wrapper (a fake avatar
 * context made with pb_broker_export_avatar, whose perspective_getView
 * returns the Viewable bound to that avatar), deferred answers (held
 * calls and held deferreds answered on later ticks, after connection loss
 * or after the broker is freed), calls back into references the client
 * sent, disconnect notifications, and a handler that loses the
 * connection.  Input layout: fuzz_common.h (bits 6-7 unused here).
 */
#include "fuzz_common.h"

/* ------------------------------------------------------------- harness state */

#define SRV_MAX_HELD 16

typedef struct srv_state {
    fz_peer *p;
    pb_jelly_registry *reg;
    pb_object *group; /* the shared Viewable */
    pb_object *shared;
    pb_call *held[SRV_MAX_HELD];
    size_t nheld;
    pb_deferred *dfs[SRV_MAX_HELD];
    size_t ndfs;
    pb_ref *kept[SRV_MAX_HELD];
    size_t nkept;
    long alive, exported_avatars, released_avatars, notes;
} srv_state;

static srv_state *srv; /* the one in flight (libFuzzer runs inputs one at a time) */

typedef struct sobj {
    pb_object base;
    int id;
} sobj;

static void sobj_destroy(pb_object *o) {
    srv->alive--;
    free(o);
}

static const pb_class Child_class, Group_class, Avatar_class;

static pb_object *sobj_new(const pb_class *cls) {
    sobj *o = calloc(1, sizeof *o);
    if (!o) return NULL;
    pb_object_init(&o->base, cls);
    srv->alive++;
    return &o->base;
}

/* Answer with a fresh object, dropping our own reference. */
static int return_new(pb_call *call, const pb_class *cls) {
    pb_object *o = sobj_new(cls);
    if (!o) return PB_ENOMEM;
    pb_call_return_object(call, o); /* answered either way (an error reply on failure) */
    pb_object_unref(o);
    return 0;
}

static void hold_call(pb_call *call) {
    if (srv->nheld == SRV_MAX_HELD) {
        pb_call_return_none(call);
        return;
    }
    FZ_CHECK(pb_call_defer(call) == PB_OK);
    FZ_CHECK(pb_call_defer(call) == PB_OK); /* twice is fine */
    srv->held[srv->nheld++] = call;
}

static void answer_held(size_t i, int how) {
    pb_call *c = srv->held[i];
    srv->held[i] = srv->held[--srv->nheld];
    pb_arena *a = pb_call_arena(c);
    switch (how % 4) {
    case 0: pb_call_return_none(c); break;
    case 1: pb_call_fail(c, "builtins.KeyError", "'late'"); break;
    case 2: {
        pb_value *t = pb_tuple(a, 2);
        pb_value *s = pb_strz(a, "slow");
        if (t && s && !pb_seq_append(a, t, s) && !pb_seq_append(a, t, pb_int(a, 1))) pb_call_return(c, t);
        else pb_call_return_none(c);
        break;
    }
    default: {
        pb_object *o = sobj_new(&Child_class);
        if (o) {
            pb_call_return_object(c, o);
            pb_object_unref(o);
        } else {
            pb_call_return_none(c);
        }
    }
    }
}

static void fire_dfs(size_t i, int how) {
    pb_deferred *d = srv->dfs[i];
    srv->dfs[i] = srv->dfs[--srv->ndfs];
    if (how % 3 == 0) {
        pb_arena *a = pb_arena_new(0);
        pb_value *v = a ? pb_strz(a, "deferred answer") : NULL;
        pb_deferred_callback(d, v);
        pb_arena_free(a);
    } else if (how % 3 == 1) {
        pb_deferred_fail(d, PB_EREMOTE, PB_FAILURE_VALUE_ERROR, "deferred failure");
    } /* else dropped unfired: the call is answered "abandoned" */
    pb_deferred_unref(d);
}

static void drop_kept(size_t i) {
    pb_ref *r = srv->kept[i];
    srv->kept[i] = srv->kept[--srv->nkept];
    pb_ref_unref(r);
}

static void on_note(pb_ref *r, void *ud) {
    (void)r;
    (void)ud;
    srv->notes++;
}

static void avatar_released(void *ud) {
    pb_object *av = ud;
    srv->released_avatars++;
    pb_object_unref(av);
}

/* --------------------------------------------------------------- root */

static int r_echo(pb_call *call, void *self, const pb_args *a) {
    pb_arena *ar = pb_call_arena(call);
    pb_value *d = pb_dict(ar, 2);
    pb_value *ka = pb_strz(ar, "args"), *kk = pb_strz(ar, "kw");
    if (!d || !ka || !kk || pb_dict_append(ar, d, ka, a->args) || pb_dict_append(ar, d, kk, a->kwargs))
        return PB_ENOMEM;
    return pb_call_return(call, d);
}

static int r_add(pb_call *call, void *self, const pb_args *a) {
    uint64_t s = (uint64_t)pb_arg_int(a, 0, 0) + (uint64_t)pb_arg_int(a, 1, 0) +
                 (uint64_t)pb_arg_int(a, 2, 0);
    return pb_call_return(call, pb_int(pb_call_arena(call), (int64_t)s));
}

static int r_type_error(pb_call *call, void *self, const pb_args *a) {
    return pb_call_return(call, pb_arg(a, 0));
}

static int r_raise_pb_error(pb_call *call, void *self, const pb_args *a) {
    return pb_call_fail(call, PB_FAILURE_PB_ERROR, "a pb.Error: not logged");
}

static int r_raise_value_error(pb_call *call, void *self, const pb_args *a) {
    return pb_call_fail(call, PB_FAILURE_VALUE_ERROR, pb_arg_str(a, 0, "invalid value 42"));
}

static int r_fail_code(pb_call *call, void *self, const pb_args *a) {
    return PB_EINVAL; /* an error code without an answer */
}

static int r_slow(pb_call *call, void *self, const pb_args *a) {
    hold_call(call);
    return 0;
}

static int r_fast(pb_call *call, void *self, const pb_args *a) {
    pb_arena *ar = pb_call_arena(call);
    pb_value *t = pb_tuple(ar, 2), *s = pb_strz(ar, "fast");
    pb_value *v = pb_arg(a, 0) ? pb_arg(a, 0) : pb_none(ar);
    if (!t || !s || !v || pb_seq_append(ar, t, s) || pb_seq_append(ar, t, v)) return PB_ENOMEM;
    return pb_call_return(call, t);
}

static int r_later(pb_call *call, void *self, const pb_args *a) {
    if (srv->ndfs == SRV_MAX_HELD) return pb_call_return_none(call);
    pb_deferred *d = pb_deferred_new();
    if (!d) return PB_ENOMEM;
    if (pb_call_return_deferred(call, d)) {
        pb_deferred_unref(d);
        return PB_ENOMEM;
    }
    srv->dfs[srv->ndfs++] = d;
    /* already fired deferreds answer at once */
    if (pb_arg_int(a, 0, 0) == 1) fire_dfs(srv->ndfs - 1, 0);
    return 0;
}

static int r_point(pb_call *call, void *self, const pb_args *a) {
    pb_arena *ar = pb_call_arena(call);
    pb_value *st = pb_dict(ar, 2);
    if (!st || pb_dict_append(ar, st, pb_strz(ar, "x"), pb_int(ar, 3)) ||
        pb_dict_append(ar, st, pb_strz(ar, "y"), pb_int(ar, 4)))
        return PB_ENOMEM;
    return pb_call_return(call, pb_instance(ar, "fuzz.Point", 10, st));
}

static int r_get_thing(pb_call *call, void *self, const pb_args *a) {
    return return_new(call, &Child_class);
}

static int r_get_shared(pb_call *call, void *self, const pb_args *a) {
    return pb_call_return_object(call, srv->shared);
}

static int r_is_mine(pb_call *call, void *self, const pb_args *a) {
    pb_value *v = pb_arg(a, 0);
    return pb_call_return(call, pb_bool(pb_call_arena(call), v && v->type == PB_OBJECT));
}

static int r_get_view(pb_call *call, void *self, const pb_args *a) {
    return pb_call_return_object(call, srv->group);
}

static int r_login(pb_call *call, void *self, const pb_args *a) {
    /* a fake cred: a per-login avatar wrapper, as the portal makes */
    pb_object *av = sobj_new(&Avatar_class);
    if (!av) return PB_ENOMEM;
    pb_value *v = pb_broker_export_avatar(pb_call_broker(call), pb_call_arena(call), av,
                                          avatar_released, av);
    if (!v) {
        pb_object_unref(av);
        return pb_call_fail(call, PB_FAILURE_PB_ERROR, "no avatar");
    }
    srv->exported_avatars++;
    return pb_call_return(call, v);
}

static int r_call_me(pb_call *call, void *self, const pb_args *a) {
    pb_ref *r = pb_arg_ref(a, 0);
    pb_arena *ar = pb_call_arena(call);
    pb_value *args = pb_tuple(ar, 2);
    if (!args || pb_seq_append(ar, args, pb_strz(ar, "hi")) ||
        pb_seq_append(ar, args, pb_ref_value(ar, r)))
        return PB_ENOMEM;
    pb_call_opts o = {(unsigned)(pb_arg_int(a, 2, 0) & 0xfff), 0};
    pb_errbuf err;
    pb_deferred *d = pb_ref_call(r, pb_arg_str(a, 1, "print"), args, NULL, &o, &err);
    if (!d) return pb_call_fail(call, PB_FAILURE_PB_ERROR, err.msg);
    int rc = pb_call_return_deferred(call, d);
    pb_deferred_unref(d);
    if (rc) return rc;
    /* and a fire-and-forget one */
    pb_ref_send(r, "notify", NULL, NULL);
    return 0;
}

static int r_keep(pb_call *call, void *self, const pb_args *a) {
    pb_ref *r = pb_arg_ref(a, 0);
    if (srv->nkept < SRV_MAX_HELD) {
        srv->kept[srv->nkept++] = pb_ref_ref(r);
        if (pb_ref_notify_on_disconnect(r, on_note, NULL) == PB_OK && pb_arg_bool(a, 1, 0))
            pb_ref_dont_notify_on_disconnect(r, on_note, NULL);
    }
    return pb_call_return(call, pb_ref_value(pb_call_arena(call), r)); /* back as (local N) */
}

static int r_release(pb_call *call, void *self, const pb_args *a) {
    while (srv->nkept) drop_kept(srv->nkept - 1);
    while (srv->nheld) answer_held(srv->nheld - 1, (int)srv->nheld);
    return pb_call_return_none(call);
}

static int r_big(pb_call *call, void *self, const pb_args *a) {
    int64_t n = pb_arg_int(a, 0, 0);
    if (n < 0) n = 0;
    if (n > 700000) n = 700000; /* past Twisted's list limit: must not be sent */
    pb_arena *ar = pb_call_arena(call);
    if (pb_arg_bool(a, 1, 0)) {
        char *s = malloc((size_t)n + 1);
        if (!s) return PB_ENOMEM;
        memset(s, 'x', (size_t)n);
        pb_value *v = pb_bytes(ar, s, (size_t)n);
        free(s);
        return pb_call_return(call, v);
    }
    pb_value *l = pb_list(ar, (size_t)n);
    if (!l) return PB_ENOMEM;
    pb_value *one = pb_int(ar, 1);
    for (int64_t i = 0; i < n; i++)
        if (pb_seq_append(ar, l, one)) return PB_ENOMEM;
    return pb_call_return(call, l);
}

static int r_many(pb_call *call, void *self, const pb_args *a) {
    int64_t n = pb_arg_int(a, 0, 0);
    if (n < 0) n = 0;
    if (n > 40) n = 40;
    pb_arena *ar = pb_call_arena(call);
    pb_value *l = pb_list(ar, (size_t)n + 2);
    if (!l) return PB_ENOMEM;
    for (int64_t i = 0; i < n; i++) {
        pb_object *o = sobj_new(&Child_class);
        pb_value *v = o ? pb_object_value(ar, o) : NULL;
        pb_object_unref(o);
        if (!v || pb_seq_append(ar, l, v)) return PB_ENOMEM;
    }
    /* shared and repeated: the same object twice, the list inside itself */
    if (pb_seq_append(ar, l, pb_object_value(ar, srv->shared)) ||
        pb_seq_append(ar, l, pb_object_value(ar, srv->shared)) || pb_seq_append(ar, l, l))
        return PB_ENOMEM;
    return pb_call_return(call, l);
}

static int r_lose(pb_call *call, void *self, const pb_args *a) {
    pb_broker *b = pb_call_broker(call);
    pb_call_return_none(call);
    pb_broker_connection_lost(b, "handler dropped the connection");
    return 0;
}

static int r_free(pb_call *call, void *self, const pb_args *a) {
    pb_broker *b = pb_call_broker(call);
    hold_call(call);
    pb_broker_free(b); /* freed when pb_broker_feed returns */
    srv->p->freed = 1;
    return 0;
}

static const pb_method root_methods[] = {
    {"echo", NULL, r_echo, NULL},
    {"add", "ii|i:a,b,c", r_add, NULL},
    {"typeError", "i:a", r_type_error, NULL},
    {"raisePBError", "", r_raise_pb_error, NULL},
    {"raiseValueError", "|s", r_raise_value_error, NULL},
    {"failCode", NULL, r_fail_code, NULL},
    {"deferredFailure", NULL, r_slow, NULL},
    {"slow", "v", r_slow, NULL},
    {"fast", "v", r_fast, NULL},
    {"later", "|i", r_later, NULL},
    {"notify", "?s", r_type_error, NULL},
    {"point", "", r_point, NULL},
    {"getThing", "|s:name", r_get_thing, NULL},
    {"getShared", NULL, r_get_shared, NULL},
    {"isMine", "v", r_is_mine, NULL},
    {"getView", NULL, r_get_view, NULL},
    {"login", "|y*", r_login, NULL},
    {"callMe", "r|si:ref,method,timeout", r_call_me, NULL},
    {"keep", "r|b", r_keep, NULL},
    {"release", NULL, r_release, NULL},
    {"big", "i|b", r_big, NULL},
    {"many", "i", r_many, NULL},
    {"lose", NULL, r_lose, NULL},
    {"selfDestruct", NULL, r_free, NULL},
    {"kwonly", "|s?dt*:name,opts,seq", r_echo, NULL},
    {"floaty", "f|?b:x,flag", r_echo, NULL},
    {"bigint", "I|yo:n,raw,obj", r_echo, NULL},
    {"listy", "l|n:l,none", r_echo, NULL},
    {NULL, NULL, NULL, NULL},
};
static const pb_class Root_class = {"Root", PB_REFERENCEABLE, root_methods, sobj_destroy};

/* ------------------------------------------------------ child, avatar, view */

static int c_hello(pb_call *call, void *self, const pb_args *a) {
    char buf[128];
    snprintf(buf, sizeof buf, "hello %s", pb_arg_str(a, 0, "?"));
    return pb_call_return(call, pb_strz(pb_call_arena(call), buf));
}

static const pb_method child_methods[] = {
    {"hello", "s", c_hello, NULL},
    {"getChild", NULL, r_get_thing, NULL},
    {"getView", NULL, r_get_view, NULL},
    {"slow", NULL, r_slow, NULL},
    {NULL, NULL, NULL, NULL},
};
static const pb_class Child_class = {"Thing", PB_REFERENCEABLE, child_methods, sobj_destroy};

static int p_foo(pb_call *call, void *self, const pb_args *a) {
    FZ_CHECK(pb_call_avatar(call) == self);
    return pb_call_return(call, pb_arg(a, 0));
}

static int p_get_view(pb_call *call, void *self, const pb_args *a) {
    return pb_call_return_object(call, srv->group);
}

static int p_call_mind(pb_call *call, void *self, const pb_args *a) {
    pb_ref *r = pb_arg_ref(a, 0);
    FZ_CHECK(pb_ref_avatar(r) == self);
    pb_arena *ar = pb_call_arena(call);
    pb_value *args = pb_tuple(ar, 1);
    /* the viewable as an argument of a call on a ref that came to the
     * avatar: a viewpoint bound to that avatar */
    if (!args || pb_seq_append(ar, args, pb_object_value(ar, srv->group))) return PB_ENOMEM;
    pb_deferred *d = pb_ref_call(r, "print", args, NULL, NULL, NULL);
    if (!d) return pb_call_return_none(call);
    int rc = pb_call_return_deferred(call, d);
    pb_deferred_unref(d);
    return rc;
}

static int p_self(pb_call *call, void *self, const pb_args *a) {
    return pb_call_return_object(call, (pb_object *)self);
}

static const pb_method avatar_methods[] = {
    {"foo", "v", p_foo, NULL},
    {"getView", NULL, p_get_view, NULL},
    {"joinGroup", "s|?r:groupname,mind", p_get_view, NULL},
    {"callMind", "r", p_call_mind, NULL},
    {"self", NULL, p_self, NULL},
    {"slow", NULL, r_slow, NULL},
    {NULL, NULL, NULL, NULL},
};
static const pb_class Avatar_class = {"Perspective", PB_AVATAR, avatar_methods, sobj_destroy};

static int v_send(pb_call *call, void *self, void *avatar, const pb_args *a) {
    FZ_CHECK(pb_call_avatar(call) == avatar);
    if (avatar) FZ_CHECK(((pb_object *)avatar)->cls == &Avatar_class);
    return pb_call_return_none(call);
}

static int v_whoami(pb_call *call, void *self, void *avatar, const pb_args *a) {
    if (!avatar) return pb_call_return_none(call);
    return pb_call_return_object(call, (pb_object *)avatar);
}

static int v_view(pb_call *call, void *self, void *avatar, const pb_args *a) {
    return pb_call_return_object(call, (pb_object *)self);
}

static int v_slow(pb_call *call, void *self, void *avatar, const pb_args *a) {
    hold_call(call);
    return 0;
}

static const pb_method group_methods[] = {
    {"send", "s", NULL, v_send},
    {"whoami", NULL, NULL, v_whoami},
    {"getView", NULL, NULL, v_view},
    {"slow", NULL, NULL, v_slow},
    {NULL, NULL, NULL, NULL},
};
static const pb_class Group_class = {"Group", PB_VIEWABLE, group_methods, sobj_destroy};

/* ---------------------------------------------------------------- driver */

static void srv_tick(fz_peer *p) {
    uint32_t r = fz_rand(&p->rng);
    if (srv->nheld && (r & 3) == 0) answer_held(r % srv->nheld, (int)(r >> 8));
    r = fz_rand(&p->rng);
    if (srv->ndfs && (r & 3) == 0) fire_dfs(r % srv->ndfs, (int)(r >> 8));
    r = fz_rand(&p->rng);
    if (srv->nkept && (r & 7) == 0) drop_kept(r % srv->nkept);
}

int fz_broker_server_one(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    unsigned ctl = data[0];
    srv_state st;
    memset(&st, 0, sizeof st);
    srv = &st;
    fz_peer p;
    fz_peer_init(&p, ctl, data, size);
    st.p = &p;
    p.on_tick = srv_tick;
    st.reg = pb_jelly_registry_new();
    FZ_CHECK(st.reg != NULL);
    pb_jelly_registry_add(st.reg, "fuzz.Point", NULL, NULL);
    pb_jelly_registry_add(st.reg, "__main__.Point", NULL, NULL);
    st.group = sobj_new(&Group_class);
    st.shared = sobj_new(&Child_class);
    pb_object *root = sobj_new(&Root_class);
    FZ_CHECK(st.group && st.shared && root);

    pb_broker_config cfg;
    fz_config(&cfg, ctl, 1);
    cfg.registry = st.reg;
    pb_broker_callbacks cb = fz_callbacks(&p);
    p.b = pb_broker_new(&cfg, &cb, root);
    pb_object_unref(root);
    FZ_CHECK(p.b != NULL);
    pb_broker_tick(p.b, p.now);

    fz_feed(&p, data + 1, size - 1);

    /* answer some held calls while still connected, some after the
     * connection is lost, the rest after the broker is gone */
    if (st.nheld) answer_held(0, 1);
    if (st.ndfs) fire_dfs(0, 0);
    fz_drain(&p);
    if (!p.freed) pb_broker_connection_lost(p.b, "fuzz input over");
    if (st.nheld) answer_held(0, 2);
    if (st.ndfs) fire_dfs(0, 1);
    if (st.nkept) drop_kept(0);
    fz_finish(&p);
    while (st.nheld) answer_held(st.nheld - 1, (int)st.nheld);
    while (st.ndfs) fire_dfs(st.ndfs - 1, (int)st.ndfs);
    while (st.nkept) drop_kept(st.nkept - 1);

    pb_object_unref(st.group);
    pb_object_unref(st.shared);
    FZ_CHECK(st.released_avatars == st.exported_avatars);
    FZ_CHECK(st.alive == 0);
    pb_jelly_registry_free(st.reg);
    srv = NULL;
    return 0;
}

#ifndef FZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return fz_broker_server_one(data, size);
}
#endif
