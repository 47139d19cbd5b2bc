/*
 * benchserver - the benchmark service of shared/bench/CONTRACT.md in C.
 *
 * Same shape as the Twisted reference (bench/benchserver_twisted.py), so
 * one client can drive both: cred login (bench/bench or anonymous), an
 * avatar with echo/add/getGroup/joinGroup, and Viewable groups with
 * send/members that fan out to every member's mind.
 *
 *   benchserver --port N [--host H]
 */
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

typedef struct user {
    pb_object base; /* PB_AVATAR */
    pb_ref *mind;   /* may be NULL */
    group **groups; /* groups joined (to leave on logout) */
    size_t ngroups;
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

static void user_logout(void *ud) {
    user *u = ud;
    for (size_t i = 0; i < u->ngroups; i++) group_leave(u->groups[i], u);
    u->ngroups = 0;
    pb_object_unref(&u->base); /* the login's reference */
}

static void realm(pb_realm_request *req, const char *avatar_id, pb_ref *mind, void *ud) {
    (void)avatar_id, (void)ud;
    user *u = calloc(1, sizeof *u);
    if (!u) {
        pb_realm_fail(req, "builtins.MemoryError", "");
        return;
    }
    pb_object_init(&u->base, &user_class);
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
        else {
            fprintf(stderr, "usage: benchserver [--host H] [--port N]\n");
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
    pb_errbuf err = {0};
    if (pb_portal_listen_tcp(srv.portal, loop, host, port, &so, &srv.listener, &err)) {
        fprintf(stderr, "benchserver: %s\n", err.msg);
        return 1;
    }
    printf("benchserver listening on %s:%d\n", host, pb_server_port(srv.listener));
    pb_run_until_signal(loop, stop, NULL);
    while (srv.groups) {
        group *g = srv.groups;
        srv.groups = g->next;
        pb_object_unref(&g->base);
    }
    pb_portal_free(srv.portal);
    uv_loop_close(loop);
    return 0;
}
