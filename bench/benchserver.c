/*
 * benchserver - the benchmark service of shared/bench/CONTRACT.md in C.
 *
 * Same shape as the Twisted reference (bench/benchserver_twisted.py), so
 * one client can drive both: cred login (bench/bench or anonymous), an
 * avatar with echo/add/getGroup/joinGroup, and Viewable groups with
 * send/members that fan out to every member's mind.
 *
 *   benchserver --port N [--host H] [--loops N]
 *
 * --loops N (N > 1) serves from N event loops (one thread each, sharing
 * the port with SO_REUSEPORT).  Then a group's state lives on loop 0 (the
 * main loop); every loop has its own Group object per group name, which
 * the avatars of that loop hand out.  send() posts the message to loop 0,
 * which posts one delivery batch per loop holding members (the message
 * copied for that loop); each loop fans it out to its members' minds.
 * Joining and leaving (logout) post to loop 0.  All deliveries for one
 * member go group loop -> member's loop through one FIFO, in group order.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include "pb/pb.h"

typedef struct group group;

typedef struct member {
    struct member *next;
    struct user *user;
} member;

typedef struct mjoin mjoin;

typedef struct user {
    pb_object base; /* PB_AVATAR */
    pb_ref *mind;   /* may be NULL */
    group **groups; /* groups joined (to leave on logout) */
    size_t ngroups;
    mjoin *mj;      /* --loops: groups joined */
    size_t nmj;
} user;

struct group {
    pb_object base; /* PB_VIEWABLE */
    group *next;
    char *name;
    member *members;
    size_t nmembers;
};

typedef struct server {
    group *groups;
    pb_portal *portal;
    pb_server *listener;
    unsigned loops;
} server;

static server srv;

/* ------------------------------------------------------------------ groups */

static int group_send(pb_call *call, void *self, void *avatar, const pb_args *a) {
    group *g = self;
    (void)avatar;
    pb_value *args = pb_tuple(pb_call_arena(call), 1);
    if (!args || pb_seq_append(pb_call_arena(call), args, pb_arg(a, 0))) return PB_ENOMEM;
    /* Encode-once fan-out: msg is jellied once, the same bytes go to every mind. */
    pb_ref **minds = malloc((g->nmembers ? g->nmembers : 1) * sizeof *minds);
    if (!minds) return PB_ENOMEM;
    size_t n = 0;
    for (member *m = g->members; m; m = m->next)
        if (m->user->mind) minds[n++] = m->user->mind;
    pb_ref_send_many(minds, n, "print", args, NULL, NULL);
    free(minds);
    return pb_call_return_none(call);
}

static int group_members(pb_call *call, void *self, void *avatar, const pb_args *a) {
    group *g = self;
    (void)avatar, (void)a;
    return pb_call_return(call, pb_int(pb_call_arena(call), (int64_t)g->nmembers));
}

static const pb_method group_methods[] = {
    {"send", "v", NULL, group_send},
    {"members", "", NULL, group_members},
    {NULL, NULL, NULL, NULL},
};
static void group_destroy(pb_object *o) {
    group *g = (group *)o;
    while (g->members) {
        member *m = g->members;
        g->members = m->next;
        free(m);
    }
    free(g->name);
    free(g);
}
static const pb_class group_class = {"Group", PB_VIEWABLE, group_methods, group_destroy};

static group *group_get(const char *name) {
    for (group *g = srv.groups; g; g = g->next)
        if (!strcmp(g->name, name)) return g;
    group *g = calloc(1, sizeof *g);
    if (!g || !(g->name = strdup(name))) {
        free(g);
        return NULL;
    }
    pb_object_init(&g->base, &group_class); /* the server's list owns this reference */
    g->next = srv.groups;
    srv.groups = g;
    return g;
}

static void group_leave(group *g, user *u) {
    for (member **pm = &g->members; *pm; pm = &(*pm)->next)
        if ((*pm)->user == u) {
            member *m = *pm;
            *pm = m->next;
            free(m);
            g->nmembers--;
            return;
        }
}

/* ------------------------------------------------------------------- users */

static int user_echo(pb_call *call, void *self, const pb_args *a) {
    (void)self;
    return pb_call_return(call, pb_arg(a, 0));
}

static int user_add(pb_call *call, void *self, const pb_args *a) {
    (void)self;
    pb_value *x = pb_arg(a, 0), *y = pb_arg(a, 1);
    pb_arena *ar = pb_call_arena(call);
    if (x->type == PB_FLOAT || y->type == PB_FLOAT) {
        double fx = x->type == PB_FLOAT ? x->u.f : (double)x->u.i;
        double fy = y->type == PB_FLOAT ? y->u.f : (double)y->u.i;
        return pb_call_return(call, pb_float(ar, fx + fy));
    }
    if (x->type != PB_INT || y->type != PB_INT)
        return pb_call_fail(call, PB_FAILURE_TYPE_ERROR, "add() takes two numbers");
    int64_t r;
    if (__builtin_add_overflow(x->u.i, y->u.i, &r))
        return pb_call_fail(call, "builtins.OverflowError", "result does not fit 64 bits");
    return pb_call_return(call, pb_int(ar, r));
}

static int user_get_group(pb_call *call, void *self, const pb_args *a) {
    user *u = self;
    group *g = group_get(pb_arg_str(a, 0, ""));
    if (!g) return PB_ENOMEM;
    int joined = 0;
    for (size_t i = 0; i < u->ngroups; i++) joined |= u->groups[i] == g;
    if (!joined) {
        member *m = malloc(sizeof *m);
        group **ng = realloc(u->groups, (u->ngroups + 1) * sizeof *ng);
        if (!m || !ng) {
            free(m);
            if (ng) u->groups = ng;
            return PB_ENOMEM;
        }
        u->groups = ng;
        u->groups[u->ngroups++] = g;
        m->user = u;
        m->next = g->members;
        g->members = m;
        g->nmembers++;
    }
    return pb_call_return_object(call, &g->base);
}

static const pb_method user_methods[] = {
    {"echo", "v", user_echo, NULL},
    {"add", "vv", user_add, NULL},
    {"getGroup", "s", user_get_group, NULL},
    {"joinGroup", "s", user_get_group, NULL},
    {NULL, NULL, NULL, NULL},
};

static void user_destroy(pb_object *o) {
    user *u = (user *)o;
    if (u->mind) pb_ref_unref(u->mind);
    free(u->groups);
    free(u);
}
static const pb_class user_class = {"BenchAvatar", PB_AVATAR, user_methods, user_destroy};

static void muser_leave_all(user *u);
static void user_logout(void *ud) {
    user *u = ud;
    for (size_t i = 0; i < u->ngroups; i++) group_leave(u->groups[i], u);
    u->ngroups = 0;
    muser_leave_all(u);
    pb_object_unref(&u->base); /* the login's reference */
}

/* ------------------------------------------------- --loops N: cross-loop */

/* A member as seen by both sides: the group's loop keeps it in the
 * group's list, the member's loop has the user; refs are atomic, user is
 * read and cleared only on loop. */
typedef struct mhandle {
    atomic_int refs;
    uv_loop_t *loop;
    user *user;             /* NULL once logged out */
    struct mhandle *next;   /* in its cgroup (loop 0 only) */
} mhandle;

/* A group's state, on loop 0.  The registry (name -> cgroup) is shared by
 * every loop under a mutex; members and nmembers' writes are loop 0's. */
typedef struct cgroup {
    struct cgroup *next;
    char *name;
    mhandle *members;
    atomic_size_t nmembers;
} cgroup;

/* A loop's Group object for one cgroup: lives on that loop only. */
typedef struct lgroup {
    pb_object base; /* PB_VIEWABLE */
    cgroup *cg;
    struct lgroup *next;
} lgroup;

struct mjoin {
    lgroup *lg;     /* a reference */
    mhandle *h;
};

static cgroup *g_cgroups;
static pthread_mutex_t g_cg_mu = PTHREAD_MUTEX_INITIALIZER;
static _Thread_local lgroup *tl_groups; /* this loop's Group objects (not owning) */

static void mh_unref(mhandle *h) {
    if (atomic_fetch_sub(&h->refs, 1) == 1) free(h);
}

static cgroup *cgroup_get(const char *name) {
    pthread_mutex_lock(&g_cg_mu);
    cgroup *g = g_cgroups;
    while (g && strcmp(g->name, name)) g = g->next;
    if (!g && (g = calloc(1, sizeof *g)) != NULL) {
        if (!(g->name = strdup(name))) {
            free(g);
            g = NULL;
        } else {
            g->next = g_cgroups;
            g_cgroups = g;
        }
    }
    pthread_mutex_unlock(&g_cg_mu);
    return g;
}

typedef struct mpost { /* join / leave, to loop 0 */
    cgroup *cg;
    mhandle *h;
} mpost;

static void on_join(void *ud) {
    mpost *p = ud;
    p->h->next = p->cg->members; /* the post's reference becomes the group's */
    p->cg->members = p->h;
    atomic_fetch_add(&p->cg->nmembers, 1);
    free(p);
}

static void on_leave(void *ud) {
    mpost *p = ud;
    for (mhandle **ph = &p->cg->members; *ph; ph = &(*ph)->next)
        if (*ph == p->h) {
            *ph = p->h->next;
            atomic_fetch_sub(&p->cg->nmembers, 1);
            mh_unref(p->h); /* the group's */
            break;
        }
    mh_unref(p->h); /* the post's */
    free(p);
}

static int post_member(void (*fn)(void *), cgroup *cg, mhandle *h) {
    mpost *p = malloc(sizeof *p);
    if (!p) return PB_ENOMEM;
    p->cg = cg;
    p->h = h;
    atomic_fetch_add(&h->refs, 1);
    int rc = pb_loop_post(pb_server_loop(srv.listener, 0), fn, p);
    if (rc) {
        mh_unref(h);
        free(p);
    }
    return rc;
}

/* One message for the members of one loop. */
typedef struct batch {
    pb_arena *arena;
    pb_value *args; /* ("print" arguments) in arena */
    size_t n;
    mhandle *h[];
} batch;

static void on_batch(void *ud) { /* on the members' loop */
    batch *b = ud;
    pb_ref **minds = malloc((b->n ? b->n : 1) * sizeof *minds);
    size_t n = 0;
    for (size_t i = 0; i < b->n; i++) {
        user *u = b->h[i]->user;
        if (minds && u && u->mind) minds[n++] = u->mind;
    }
    if (n) pb_ref_send_many(minds, n, "print", b->args, NULL, NULL);
    free(minds);
    for (size_t i = 0; i < b->n; i++) mh_unref(b->h[i]);
    pb_arena_free(b->arena);
    free(b);
}

typedef struct msend {
    cgroup *cg;
    pb_arena *arena;
    pb_value *msg;
} msend;

static void on_send(void *ud) { /* on loop 0: fan out per loop */
    msend *m = ud;
    unsigned nl = srv.loops;
    for (unsigned k = 0; k < nl; k++) {
        uv_loop_t *l = pb_server_loop(srv.listener, k);
        size_t cnt = 0;
        for (mhandle *h = m->cg->members; h; h = h->next) cnt += h->loop == l;
        if (!cnt) continue;
        batch *b = malloc(sizeof *b + cnt * sizeof(mhandle *));
        pb_arena *a = pb_arena_new(0);
        pb_value *args = a ? pb_tuple(a, 1) : NULL;
        if (!b || !args || pb_seq_append(a, args, pb_value_copy(a, m->msg))) {
            free(b);
            pb_arena_free(a);
            continue;
        }
        b->arena = a;
        b->args = args;
        b->n = 0;
        for (mhandle *h = m->cg->members; h; h = h->next)
            if (h->loop == l) {
                atomic_fetch_add(&h->refs, 1);
                b->h[b->n++] = h;
            }
        if (pb_loop_post(l, on_batch, b)) { /* that loop is closing */
            for (size_t i = 0; i < b->n; i++) mh_unref(b->h[i]);
            pb_arena_free(a);
            free(b);
        }
    }
    pb_arena_free(m->arena);
    free(m);
}

static int lgroup_send(pb_call *call, void *self, void *avatar, const pb_args *a) {
    lgroup *g = self;
    (void)avatar;
    msend *m = malloc(sizeof *m);
    pb_arena *ar = pb_arena_new(0);
    pb_value *v = ar ? pb_value_copy(ar, pb_arg(a, 0)) : NULL;
    if (!m || !v) {
        free(m);
        pb_arena_free(ar);
        return PB_ENOMEM;
    }
    m->cg = g->cg;
    m->arena = ar;
    m->msg = v;
    if (pb_loop_post(pb_server_loop(srv.listener, 0), on_send, m)) {
        pb_arena_free(ar);
        free(m);
        return pb_call_fail(call, "builtins.RuntimeError", "server closing");
    }
    return pb_call_return_none(call);
}

static int lgroup_members(pb_call *call, void *self, void *avatar, const pb_args *a) {
    lgroup *g = self;
    (void)avatar, (void)a;
    return pb_call_return(call,
                          pb_int(pb_call_arena(call), (int64_t)atomic_load(&g->cg->nmembers)));
}

static const pb_method lgroup_methods[] = {
    {"send", "v", NULL, lgroup_send},
    {"members", "", NULL, lgroup_members},
    {NULL, NULL, NULL, NULL},
};
static void lgroup_destroy(pb_object *o) {
    lgroup *g = (lgroup *)o;
    for (lgroup **p = &tl_groups; *p; p = &(*p)->next)
        if (*p == g) {
            *p = g->next;
            break;
        }
    free(g);
}
static const pb_class lgroup_class = {"Group", PB_VIEWABLE, lgroup_methods, lgroup_destroy};

static int muser_get_group(pb_call *call, void *self, const pb_args *a) {
    user *u = self;
    cgroup *cg = cgroup_get(pb_arg_str(a, 0, ""));
    if (!cg) return PB_ENOMEM;
    lgroup *g = tl_groups;
    while (g && g->cg != cg) g = g->next;
    if (!g) {
        if (!(g = calloc(1, sizeof *g))) return PB_ENOMEM;
        pb_object_init(&g->base, &lgroup_class); /* this reference: returned below */
        g->cg = cg;
        g->next = tl_groups;
        tl_groups = g;
    } else {
        pb_object_ref(&g->base);
    }
    int joined = 0;
    for (size_t i = 0; i < u->nmj; i++) joined |= u->mj[i].lg == g;
    if (!joined) {
        mhandle *h = calloc(1, sizeof *h);
        mjoin *nj = realloc(u->mj, (u->nmj + 1) * sizeof *nj);
        if (nj) u->mj = nj;
        if (!h || !nj) {
            free(h);
            pb_object_unref(&g->base);
            return PB_ENOMEM;
        }
        atomic_init(&h->refs, 1); /* the user's; the join post adds the group's */
        h->loop = pb_broker_loop(pb_call_broker(call));
        h->user = u;
        pb_object_ref(&g->base);
        u->mj[u->nmj].lg = g;
        u->mj[u->nmj].h = h;
        u->nmj++;
        post_member(on_join, cg, h);
    }
    int rc = pb_call_return_object(call, &g->base);
    pb_object_unref(&g->base);
    return rc;
}

static const pb_method muser_methods[] = {
    {"echo", "v", user_echo, NULL},
    {"add", "vv", user_add, NULL},
    {"getGroup", "s", muser_get_group, NULL},
    {"joinGroup", "s", muser_get_group, NULL},
    {NULL, NULL, NULL, NULL},
};
static const pb_class muser_class = {"BenchAvatar", PB_AVATAR, muser_methods, user_destroy};

static void muser_leave_all(user *u) {
    for (size_t i = 0; i < u->nmj; i++) {
        mhandle *h = u->mj[i].h;
        h->user = NULL;
        post_member(on_leave, u->mj[i].lg->cg, h);
        mh_unref(h);
        pb_object_unref(&u->mj[i].lg->base);
    }
    free(u->mj);
    u->mj = NULL;
    u->nmj = 0;
}

static void realm(pb_realm_request *req, const char *avatar_id, pb_ref *mind, void *ud) {
    (void)avatar_id, (void)ud;
    user *u = calloc(1, sizeof *u);
    if (!u) {
        pb_realm_fail(req, "builtins.MemoryError", "");
        return;
    }
    pb_object_init(&u->base, srv.loops > 1 ? &muser_class : &user_class);
    u->mind = mind ? pb_ref_ref(mind) : NULL;
    pb_realm_answer(req, &u->base, user_logout, u);
}

static void stop(void *ud) {
    (void)ud;
    pb_server_close(srv.listener, NULL, NULL);
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1";
    int port = 8800;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--port") && i + 1 < argc) port = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--host") && i + 1 < argc) host = argv[++i];
        else if (!strcmp(argv[i], "--loops") && i + 1 < argc) srv.loops = (unsigned)atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: benchserver [--host H] [--port N] [--loops N]\n");
            return 2;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct rlimit rl; /* one descriptor per connection: as many as allowed */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    uv_loop_t *loop = uv_default_loop();
    srv.portal = pb_portal_new(realm, NULL, NULL);
    pb_checker *mem = pb_checker_memory_new();
    if (!srv.portal || !mem || pb_checker_memory_add(mem, "bench", "bench") ||
        pb_portal_add_checker(srv.portal, mem) ||
        pb_portal_add_checker(srv.portal, pb_checker_anonymous_new())) {
        fprintf(stderr, "benchserver: out of memory\n");
        return 1;
    }
    pb_server_opts so;
    pb_server_opts_default(&so);
    so.loops = srv.loops;
    if (srv.loops < 1) srv.loops = 1;
    pb_errbuf err = {0};
    if (pb_portal_listen_tcp(srv.portal, loop, host, port, &so, &srv.listener, &err)) {
        fprintf(stderr, "benchserver: %s\n", err.msg);
        return 1;
    }
    printf("benchserver listening on %s:%d (%u loop%s)\n", host, pb_server_port(srv.listener),
           srv.loops, srv.loops > 1 ? "s" : "");
    pb_run_until_signal(loop, stop, NULL);
    while (srv.groups) {
        group *g = srv.groups;
        srv.groups = g->next;
        pb_object_unref(&g->base);
    }
    while (g_cgroups) { /* every loop has ended */
        cgroup *g = g_cgroups;
        g_cgroups = g->next;
        while (g->members) {
            mhandle *h = g->members;
            g->members = h->next;
            mh_unref(h);
        }
        free(g->name);
        free(g);
    }
    pb_portal_free(srv.portal);
    uv_loop_close(loop);
    return 0;
}
