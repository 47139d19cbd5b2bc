/* fuzz_broker_login - a server broker whose root is the cred portal's, fed
 * a hostile client's bytes: before, during and after login.
 *
 * The portal has a memory checker (alice/1234) and allows anonymous
 * logins; the realm makes an avatar (User: perspective_foo, joinGroup ->
 * a Viewable group, getName, callMind) and answers now, through a
 * deferred fired on a later tick, later by hand, or refuses, as chosen
 * from the input.  Every avatar made must be logged out exactly once.
 *
 * The challenge is random, so raw bytes cannot get past respond.  Bits 6-7
 * of the control byte (fuzz_common.h) pick a mode:
 *   0  raw: the input is the whole client stream (seed with transcripts)
 *   1  a real client broker first logs in as alice/1234 (with a mind)
 *      over an in-memory pipe; then the input follows on that connection
 *      as if from the client (avatar = LUID 2, the challenger LUID 1 gone)
 *   2  the same with an anonymous login (avatar = LUID 1, no mind)
 *   3  as 1, and the client also calls joinGroup, so the group's
 *      viewpoint (LUID 3) is in reach
 * After the script the input is in the PB dialect with no handshake left.
 */
#include "fuzz_common.h"

#define LG_MAX_HELD 8

struct user;
typedef struct user {
    pb_object base;
    char name[64];
    pb_ref *mind;
    int logged_out;
} user;

typedef struct lg_state {
    fz_peer *p;
    int realm_mode; /* 0 now, 1 deferred fired on tick, 2 held request, 3 refuse */
    long alive, made, logouts;
    pb_object *group;
    pb_realm_request *held[LG_MAX_HELD];
    size_t nheld;
    pb_deferred *dfs[LG_MAX_HELD];
    struct user *dfs_user[LG_MAX_HELD];
    size_t ndfs;
    pb_call *calls[LG_MAX_HELD];
    size_t ncalls;
} lg_state;

static lg_state *lg;

static void lg_obj_destroy(pb_object *o) {
    lg->alive--;
    free(o);
}

static void user_destroy(pb_object *o) {
    user *u = (user *)o;
    FZ_CHECK(u->logged_out);
    FZ_CHECK(!u->mind);
    lg->alive--;
    free(u);
}

static int u_foo(pb_call *call, void *self, const pb_args *a) {
    FZ_CHECK(pb_call_avatar(call) == self);
    return pb_call_return(call, pb_arg(a, 0));
}

static int u_join(pb_call *call, void *self, const pb_args *a) {
    return pb_call_return_object(call, lg->group);
}

static int u_name(pb_call *call, void *self, const pb_args *a) {
    return pb_call_return(call, pb_bytesz(pb_call_arena(call), ((user *)self)->name));
}

static int u_call_mind(pb_call *call, void *self, const pb_args *a) {
    user *u = self;
    if (!u->mind) return pb_call_fail(call, PB_FAILURE_PB_ERROR, "no mind");
    pb_deferred *d = pb_ref_callf(u->mind, "print", "so", "<b'alice'> says: hi", lg->group);
    if (!d) return pb_call_return_none(call);
    int rc = pb_call_return_deferred(call, d);
    pb_deferred_unref(d);
    return rc;
}

static int u_slow(pb_call *call, void *self, const pb_args *a) {
    if (lg->ncalls == LG_MAX_HELD) return pb_call_return_none(call);
    pb_call_defer(call);
    lg->calls[lg->ncalls++] = call;
    return 0;
}

static const pb_method user_methods[] = {
    {"foo", "v", u_foo, NULL},
    {"joinGroup", "s|?r:groupname,mind", u_join, NULL},
    {"getName", "", u_name, NULL},
    {"callMind", NULL, u_call_mind, NULL},
    {"slow", NULL, u_slow, NULL},
    {NULL, NULL, NULL, NULL},
};
static const pb_class User_class = {"User", PB_AVATAR, user_methods, user_destroy};

static int g_send(pb_call *call, void *self, void *avatar, const pb_args *a) {
    FZ_CHECK(pb_call_avatar(call) == avatar);
    user *u = avatar;
    if (u) FZ_CHECK(u->base.cls == &User_class);
    if (u && u->mind && !u->logged_out) {
        char buf[256];
        snprintf(buf, sizeof buf, "<b'%s'> says: %.100s", u->name, pb_arg_str(a, 0, ""));
        pb_deferred *d = pb_ref_callf(u->mind, "print", "s", buf);
        pb_deferred_unref(d);
    }
    return pb_call_return_none(call);
}

static int g_members(pb_call *call, void *self, void *avatar, const pb_args *a) {
    pb_arena *ar = pb_call_arena(call);
    pb_value *l = pb_list(ar, 2);
    if (!l) return PB_ENOMEM;
    if (avatar && pb_seq_append(ar, l, pb_object_value(ar, avatar))) return PB_ENOMEM;
    if (pb_seq_append(ar, l, pb_object_value(ar, (pb_object *)self))) return PB_ENOMEM;
    return pb_call_return(call, l);
}

static const pb_method lg_group_methods[] = {
    {"send", "s", NULL, g_send},
    {"members", NULL, NULL, g_members},
    {NULL, NULL, NULL, NULL},
};
static const pb_class LgGroup_class = {"Group", PB_VIEWABLE, lg_group_methods, lg_obj_destroy};

/* ----------------------------------------------------------------- realm */

static void on_logout(void *ud) {
    user *u = ud;
    FZ_CHECK(!u->logged_out);
    u->logged_out = 1;
    lg->logouts++;
    if (u->mind) {
        pb_ref *m = u->mind;
        u->mind = NULL;
        pb_ref_unref(m);
    }
    pb_object_unref(&u->base); /* the session's hold */
}

static user *user_new(const char *id, pb_ref *mind) {
    user *u = calloc(1, sizeof *u);
    FZ_CHECK(u != NULL);
    pb_object_init(&u->base, &User_class);
    snprintf(u->name, sizeof u->name, "%s", id);
    u->mind = mind ? pb_ref_ref(mind) : NULL;
    lg->alive++;
    lg->made++;
    return u;
}

/* Answer req with a fresh avatar: the logout then runs exactly once. */
static void realm_answer_now(pb_realm_request *req, const char *id, pb_ref *mind) {
    user *u = user_new(id, mind);
    pb_object_ref(&u->base); /* dropped by on_logout */
    pb_realm_answer(req, &u->base, on_logout, u);
    pb_object_unref(&u->base);
}

static void realm(pb_realm_request *req, const char *avatar_id, pb_ref *mind, void *ud) {
    FZ_CHECK(ud == lg);
    FZ_CHECK(avatar_id != NULL);
    FZ_CHECK(pb_realm_request_broker(req) == lg->p->b);
    switch (lg->realm_mode) {
    case 1:
        if (lg->ndfs < LG_MAX_HELD) {
            pb_deferred *d = pb_deferred_new();
            FZ_CHECK(d != NULL);
            user *u = user_new(avatar_id, mind);
            if (pb_realm_answer_deferred(req, d, on_logout, u) == PB_OK) {
                lg->dfs[lg->ndfs] = d;
                lg->dfs_user[lg->ndfs++] = u;
                return;
            }
            pb_deferred_unref(d);
            on_logout(u);
        }
        break;
    case 2:
        if (lg->nheld < LG_MAX_HELD) {
            lg->held[lg->nheld++] = req;
            return;
        }
        break;
    case 3:
        pb_realm_fail(req, NULL, NULL);
        return;
    }
    realm_answer_now(req, avatar_id, mind);
}

static void lg_answer_held(size_t i, unsigned how) {
    pb_realm_request *req = lg->held[i];
    lg->held[i] = lg->held[--lg->nheld];
    if (how & 1) realm_answer_now(req, "late", NULL);
    else pb_realm_fail(req, (how & 2) ? "builtins.KeyError" : NULL, "no such avatar");
}

static void lg_fire_dfs(size_t i, unsigned how) {
    pb_deferred *d = lg->dfs[i];
    user *u = lg->dfs_user[i];
    lg->ndfs--;
    lg->dfs[i] = lg->dfs[lg->ndfs];
    lg->dfs_user[i] = lg->dfs_user[lg->ndfs];
    pb_arena *a = pb_arena_new(0);
    FZ_CHECK(a != NULL);
    switch (how % 5) {
    case 0: /* the avatar: from now on the portal runs its logout */
        pb_deferred_callback(d, pb_object_value(a, &u->base));
        u = NULL;
        break;
    case 1: /* another object as the avatar: the logout still runs once */
        pb_deferred_callback(d, pb_object_value(a, lg->group));
        u = NULL;
        break;
    case 2: pb_deferred_fail(d, PB_EAUTH, PB_FAILURE_UNAUTHORIZED, ""); break;
    case 3: pb_deferred_callback(d, pb_int(a, 7)); break; /* not an avatar */
    default: break; /* dropped unfired: CancelledError */
    }
    pb_arena_free(a);
    pb_deferred_unref(d);
    if (u) on_logout(u); /* never handed over: ours to log out */
}

static void answer_call(size_t i) {
    pb_call *c = lg->calls[i];
    lg->calls[i] = lg->calls[--lg->ncalls];
    pb_call_return_none(c);
}

static void lg_tick(fz_peer *p) {
    uint32_t r = fz_rand(&p->rng);
    if (lg->nheld && (r & 3) == 0) lg_answer_held(r % lg->nheld, r >> 8);
    r = fz_rand(&p->rng);
    if (lg->ndfs && (r & 3) == 0) lg_fire_dfs(r % lg->ndfs, r >> 8);
    r = fz_rand(&p->rng);
    if (lg->ncalls && (r & 3) == 0) answer_call(r % lg->ncalls);
}

/* ------------------------------------------------------ scripted client */

static int lg_mind_print(pb_call *call, void *self, const pb_args *a) { return pb_call_return_none(call); }
static const pb_method lg_mind_methods[] = {{"print", NULL, lg_mind_print, NULL}, {NULL, NULL, NULL, NULL}};
static const pb_class LgMind_class = {"Mind", PB_REFERENCEABLE, lg_mind_methods, lg_obj_destroy};

/* Move bytes both ways until quiet (the client's output goes unchecked
 * into the server, the server's through the oracle into the client). */
static void lg_pump(fz_peer *s, pb_broker *c) {
    for (int i = 0; i < 64; i++) {
        int moved = 0;
        const uint8_t *out;
        size_t n = pb_broker_output(c, &out);
        if (n) {
            uint8_t *copy = malloc(n);
            FZ_CHECK(copy != NULL);
            memcpy(copy, out, n);
            pb_broker_output_consume(c, n);
            pb_broker_feed(s->b, copy, n);
            free(copy);
            moved = 1;
        }
        n = pb_broker_output(s->b, &out);
        if (n) {
            uint8_t *copy = malloc(n);
            FZ_CHECK(copy != NULL);
            memcpy(copy, out, n);
            /* through the oracle first */
            size_t off = 0;
            while (off < n) {
                size_t used = 0;
                pb_value *x = NULL;
                int rc = pb_banana_dec_feed(s->oracle, copy + off, n - off, &used, &x);
                FZ_CHECK(rc >= 0);
                off += used;
                if (rc == 0) break;
            }
            pb_broker_output_consume(s->b, n);
            pb_broker_feed(c, copy, n);
            free(copy);
            moved = 1;
        }
        if (!moved) return;
    }
}

static pb_ref *lg_value_ref(pb_deferred *d) {
    pb_value *v = d && pb_deferred_fired(d) ? pb_deferred_value(d) : NULL;
    return v && v->type == PB_REMOTE ? (pb_ref *)v->u.h : NULL;
}

/* ---------------------------------------------------------------- driver */

/* refused logins are the point here: keep them out of the output */
static void quiet_log(const char *line, void *ud) { (void)line, (void)ud; }

int fz_broker_login_one(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    unsigned ctl = data[0], mode = ctl >> FZ_MODE_SHIFT;
    lg_state st;
    memset(&st, 0, sizeof st);
    lg = &st;
    fz_peer p;
    fz_peer_init(&p, ctl, data, size);
    st.p = &p;
    p.on_tick = lg_tick;
    uint32_t r0 = fz_rand(&p.rng);
    st.realm_mode = (int)(r0 & 3);
    st.group = calloc(1, sizeof(pb_object));
    FZ_CHECK(st.group != NULL);
    pb_object_init(st.group, &LgGroup_class);
    st.alive++;

    pb_portal_opts po = {.max_failures_per_min = (ctl & FZ_TIGHT) ? 2u : 0u, .log = quiet_log};
    pb_portal *portal = pb_portal_new(realm, &st, &po);
    FZ_CHECK(portal != NULL);
    pb_checker *mem = pb_checker_memory_new();
    FZ_CHECK(mem && pb_checker_memory_add(mem, "alice", "1234") == 0);
    FZ_CHECK(pb_checker_memory_add(mem, "bob", "") == 0);
    FZ_CHECK(pb_portal_add_checker(portal, mem) == 0);
    FZ_CHECK(pb_portal_add_checker(portal, pb_checker_anonymous_new()) == 0);

    pb_broker_config cfg;
    fz_config(&cfg, ctl, 1);
    pb_broker_callbacks cb = fz_callbacks(&p);
    if (r0 & 0x100) {
        /* root made before the broker, bound at the first call */
        pb_object *root = pb_portal_root(NULL, portal);
        FZ_CHECK(root != NULL);
        p.b = pb_broker_new(&cfg, &cb, root);
        pb_object_unref(root);
    } else {
        p.b = pb_broker_new(&cfg, &cb, NULL);
        FZ_CHECK(p.b != NULL);
        pb_object *root = pb_portal_root(p.b, portal);
        FZ_CHECK(root != NULL);
        pb_broker_set_root(p.b, root);
        pb_object_unref(root);
    }
    FZ_CHECK(p.b != NULL);
    pb_broker_tick(p.b, p.now);

    pb_broker *client = NULL;
    pb_object *mind = NULL;
    pb_deferred *ld = NULL, *jd = NULL;
    if (mode != 0) {
        int saved = st.realm_mode;
        st.realm_mode = 0;
        pb_broker_config cc;
        pb_broker_config_default(&cc);
        pb_broker_callbacks ccb;
        memset(&ccb, 0, sizeof ccb);
        client = pb_broker_new(&cc, &ccb, NULL);
        FZ_CHECK(client != NULL);
        lg_pump(&p, client);
        FZ_CHECK(pb_broker_is_connected(client));
        if (mode == 2) {
            ld = pb_broker_login(client, NULL, 0, 0, NULL, NULL);
        } else {
            mind = calloc(1, sizeof *mind);
            FZ_CHECK(mind != NULL);
            pb_object_init(mind, &LgMind_class);
            st.alive++;
            ld = pb_broker_login(client, "alice", 5, 0, "1234", mind);
        }
        FZ_CHECK(ld != NULL);
        lg_pump(&p, client);
        pb_ref *av = lg_value_ref(ld);
        if (!av) {
            const pb_failure *f = pb_deferred_failure(ld);
            fprintf(stderr, "scripted login failed: %s: %s\n", f && f->type ? f->type : "?",
                    f && f->value ? f->value : "");
        }
        FZ_CHECK(av != NULL);
        if (mode == 3) {
            jd = pb_ref_callf(av, "joinGroup", "s", "#NeedAFourth");
            FZ_CHECK(jd != NULL);
            lg_pump(&p, client);
            FZ_CHECK(lg_value_ref(jd) != NULL);
        }
        st.realm_mode = saved;
        /* from here on the client broker is out of the loop: its stream
         * position is where the fuzz input continues */
    }

    fz_feed(&p, data + 1, size - 1);

    /* settle: some now, some after the connection is lost, the rest after
     * the broker is freed */
    if (st.nheld) lg_answer_held(0, 1);
    if (st.ndfs) lg_fire_dfs(0, 0);
    if (st.ncalls) answer_call(0);
    fz_drain(&p);
    if (!p.freed) pb_broker_connection_lost(p.b, "fuzz input over");
    if (st.nheld) lg_answer_held(0, 1);
    if (st.ndfs) lg_fire_dfs(0, 3);
    fz_finish(&p);
    while (st.nheld) lg_answer_held(st.nheld - 1, (unsigned)st.nheld);
    while (st.ndfs) lg_fire_dfs(st.ndfs - 1, (unsigned)st.ndfs);
    while (st.ncalls) answer_call(st.ncalls - 1);

    if (client) {
        pb_deferred_unref(jd);
        pb_deferred_unref(ld);
        pb_broker_connection_lost(client, "over");
        pb_broker_free(client);
    }
    pb_object_unref(mind);
    pb_object_unref(st.group);
    pb_portal_free(portal);
    FZ_CHECK(st.logouts == st.made);
    FZ_CHECK(st.alive == 0);
    lg = NULL;
    return 0;
}

#ifndef FZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return fz_broker_login_one(data, size);
}
#endif
