/*
 * chatserver - the chat server with avatars (the C counterpart of
 * chatserver.py).
 *
 * Users live in an SQLite store (--db PATH, default ./chat.db; created with
 * alice/1234, bob/secret and carol/fido when the file does not exist yet).
 * A User is the avatar: joinGroup(groupname, allowMattress=True) is all a
 * client can do with it.  A Group is a Viewable: send(message) runs with
 * the sender's avatar supplied by the server, so nobody can speak as
 * anybody else.  The realm loads each user's record off the loop thread
 * (uv_queue_work) and answers through a deferred.
 *
 * For tests (tests/interop/test_soak.sh): with CHATSERVER_STATS=1 in the
 * environment it prints "stats logins=N logouts=M active=K" on SIGUSR1 and
 * at exit: N avatars handed out, M logout calls, K logged in now.  Every
 * logout ran exactly once when M == N and K == 0.  On SIGUSR1 it first
 * hands freed memory back to the kernel (glibc's malloc_trim), so that the
 * test's RSS samples measure memory in use rather than malloc's cache.
 */
#include <sqlite3.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "common.h"

typedef struct user user;
typedef struct group {
    pb_object base; /* a Viewable */
    struct group *next;
    int allow_mattress;
    user **members;
    size_t n, cap;
    char name[];
} group;

typedef struct chat {
    uv_loop_t *loop;
    sqlite3 *db; /* used only on worker threads (opened FULLMUTEX) */
    group *groups;
    unsigned long long logins, logouts, active; /* CHATSERVER_STATS */
} chat;

struct user {
    pb_object base; /* an Avatar */
    chat *chat;
    pb_ref *mind;   /* the client's object with remote_print, or NULL */
    int logged_in;  /* 1 from the realm's answer until logout */
    char name[];    /* as the store spells it (sized for the id that logged in) */
};

/* ------------------------------------------------------------------ groups */

static int group_send(pb_call *call, void *self, void *avatar, const pb_args *a)
{
    group *g = self;
    user *from = avatar;
    const char *msg = pb_arg_str(a, 0, "");
    if (!g->allow_mattress && strstr(msg, "mattress"))
        return pb_call_fail(call, PB_FAILURE_VALUE_ERROR, "Don't say that word");
    pb_arena *ar = pb_call_arena(call);
    pb_value *args = pb_tuple(ar, 1);
    pb_ref **minds = malloc((g->n ? g->n : 1) * sizeof *minds);
    char *line = NULL;
    size_t n = 0;
    int len = asprintf(&line, "<%s> says: %s", from->name, msg);
    if (!args || !minds || len < 0 || pb_seq_append(ar, args, pb_str(ar, line, (size_t)len))) {
        free(minds);
        free(len < 0 ? NULL : line);
        return PB_ENOMEM;
    }
    free(line);
    for (size_t i = 0; i < g->n; i++)
        if (g->members[i]->mind) /* no mind, nothing to tell: the others still hear it */
            minds[n++] = g->members[i]->mind;
    /* print(line) to every mind, encoded once; a mind whose connection is
     * gone fails alone */
    pb_ref_send_many(minds, n, "print", args, NULL, NULL);
    free(minds);
    return pb_call_return_none(call);
}

static const pb_method group_methods[] = {{"send", "s:message", NULL, group_send},
                                          {NULL, NULL, NULL, NULL}};
static void group_destroy(pb_object *o)
{
    free(((group *)o)->members);
    free(o);
}
static const pb_class Group = {"Group", PB_VIEWABLE, group_methods, group_destroy};

static group *join(chat *c, const char *name, user *u, int allow_mattress)
{
    group *g = c->groups;
    while (g && strcmp(g->name, name) != 0)
        g = g->next;
    if (!g) { /* the first to join decides allowMattress */
        if (!(g = calloc(1, sizeof *g + strlen(name) + 1)))
            return NULL;
        pb_object_init(&g->base, &Group);
        strcpy(g->name, name);
        g->allow_mattress = allow_mattress;
        g->next = c->groups;
        c->groups = g;
    }
    for (size_t i = 0; i < g->n; i++)
        if (g->members[i] == u)
            return g;
    if (g->n == g->cap) {
        size_t cap = g->cap ? 2 * g->cap : 4;
        user **m = realloc(g->members, cap * sizeof *m);
        if (!m)
            return NULL;
        g->members = m;
        g->cap = cap;
    }
    g->members[g->n++] = u;
    return g;
}

/* ------------------------------------------------------------------- users */

static int user_join_group(pb_call *call, void *self, const pb_args *a)
{
    user *u = self;
    group *g = join(u->chat, pb_arg_str(a, 0, ""), u, pb_arg_bool(a, 1, 1));
    if (!g)
        return PB_ENOMEM;
    return pb_call_return_object(call, &g->base); /* the client gets a ViewPoint */
}

static const pb_method user_methods[] = {
    {"joinGroup", "s|b:groupname,allowMattress", user_join_group, NULL},
    {NULL, NULL, NULL, NULL}};
static void user_destroy(pb_object *o) { free(o); }
static const pb_class User = {"User", PB_AVATAR, user_methods, user_destroy};

/* Runs exactly once per login: the client let go of its avatar or left. */
static void user_logout(void *ud)
{
    user *u = ud;
    if (u->logged_in == 1)
        u->chat->active--;
    if (u->logged_in) { /* a second call would show as logouts > logins */
        u->chat->logouts++;
        u->logged_in = 2;
    }
    for (group *g = u->chat->groups; g; g = g->next)
        for (size_t i = 0; i < g->n; i++)
            if (g->members[i] == u)
                g->members[i--] = g->members[--g->n];
    if (u->mind)
        pb_ref_unref(u->mind);
    u->mind = NULL;
}

/* ------------------------------------------------------------------- realm */

typedef struct lookup {
    uv_work_t work;
    pb_deferred *d;
    user *u;     /* made now, filled in when its record has been read */
    char id[128];
    int found;
} lookup;

static void lookup_work(uv_work_t *w) /* on a worker thread: no PB here */
{
    lookup *l = w->data;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(l->u->chat->db, "SELECT name FROM users WHERE name = ?", -1, &st,
                           NULL) != SQLITE_OK)
        return;
    sqlite3_bind_text(st, 1, l->id, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
        /* the store's name is the checked avatar id, so it fits */
        snprintf(l->u->name, strlen(l->id) + 1, "%s", (const char *)sqlite3_column_text(st, 0));
        l->found = 1;
    }
    sqlite3_finalize(st);
}

static void lookup_done(uv_work_t *w, int status) /* back on the loop thread */
{
    lookup *l = w->data;
    if (l->found) {
        l->u->logged_in = 1;
        l->u->chat->logins++;
        l->u->chat->active++;
        pb_arena *a = pb_arena_new(0);
        pb_deferred_callback(l->d, pb_object_value(a, &l->u->base));
        pb_arena_free(a);
    } else {
        pb_deferred_fail(l->d, PB_EAUTH, PB_FAILURE_UNAUTHORIZED, "");
        user_logout(l->u);
    }
    pb_object_unref(&l->u->base);
    pb_deferred_unref(l->d);
    free(l);
}

static void request_avatar(pb_realm_request *req, const char *avatar_id, pb_ref *mind, void *ud)
{
    size_t idlen = strnlen(avatar_id, sizeof ((lookup *)0)->id - 1);
    lookup *l = calloc(1, sizeof *l);
    user *u = calloc(1, sizeof *u + idlen + 1);
    pb_deferred *d = pb_deferred_new();
    if (!l || !u || !d) {
        free(l);
        free(u);
        if (d)
            pb_deferred_unref(d);
        pb_realm_fail(req, "builtins.MemoryError", "");
        return;
    }
    pb_object_init(&u->base, &User);
    u->chat = ud;
    u->mind = mind ? pb_ref_ref(mind) : NULL;
    l->u = u;
    l->d = d;
    l->work.data = l;
    snprintf(l->id, sizeof l->id, "%s", avatar_id);
    pb_realm_answer_deferred(req, d, user_logout, u);
    if (uv_queue_work(u->chat->loop, &l->work, lookup_work, lookup_done))
        lookup_done(&l->work, -1);
}

/* -------------------------------------------------------------------- main */

static void print_stats(const chat *c)
{
    printf("stats logins=%llu logouts=%llu active=%llu\n", c->logins, c->logouts, c->active);
}

static void on_sigusr1(uv_signal_t *h, int signum)
{
#ifdef __GLIBC__
    malloc_trim(0);
#endif
    print_stats(h->data);
}

int main(int argc, char **argv)
{
    ex_args a;
    ex_parse(argc, argv, &a);
    chat server = {uv_default_loop(), NULL, NULL, 0, 0, 0};
    const char *stats = getenv("CHATSERVER_STATS");
    uv_signal_t usr1;
    if (stats && *stats && strcmp(stats, "0") != 0) {
        uv_signal_init(server.loop, &usr1);
        usr1.data = &server;
        uv_signal_start(&usr1, on_sigusr1, SIGUSR1);
        uv_unref((uv_handle_t *)&usr1); /* does not keep the server running */
    } else {
        stats = NULL;
    }
    pb_errbuf err;
    int fresh = access(a.db, F_OK) != 0;
    pb_checker *users = pb_checker_sqlite_open(a.db, &err);
    if (!users) {
        fprintf(stderr, "cannot open %s: %s\n", a.db, err.msg);
        return 1;
    }
    if (fresh) {
        const char *names[] = {"alice", "bob", "carol"}, *passwords[] = {"1234", "secret", "fido"};
        pb_checker_sqlite_add_many(users, names, passwords, 3);
    }
    if (sqlite3_open_v2(a.db, &server.db, SQLITE_OPEN_READONLY | SQLITE_OPEN_FULLMUTEX, NULL)) {
        fprintf(stderr, "cannot open %s: %s\n", a.db, sqlite3_errmsg(server.db));
        return 1;
    }
    pb_portal *portal = pb_portal_new(request_avatar, &server, NULL);
    pb_portal_add_checker(portal, users);
    int rc = ex_serve(portal, &a);
    if (stats) { /* ex_serve's uv_loop_close found usr1 still open: finish here */
        print_stats(&server);
        uv_close((uv_handle_t *)&usr1, NULL);
        uv_run(server.loop, UV_RUN_DEFAULT);
        uv_loop_close(server.loop);
    }
    while (server.groups) {
        group *g = server.groups;
        server.groups = g->next;
        pb_object_unref(&g->base);
    }
    sqlite3_close(server.db);
    return rc;
}
