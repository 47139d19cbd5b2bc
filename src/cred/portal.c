/*
 * cred/portal.c - the server side of cred over PB.
 *
 * Each connection gets its own root (a "portal wrapper", as Twisted calls
 * it) with two remote methods:
 *   login(username)      -> (challenge, challenger)
 *   loginAnonymous(mind) -> avatar
 * and each login() makes a one-shot challenger:
 *   respond(response, mind) -> avatar      (a second respond is refused)
 *
 * A login runs the portal's checkers of the matching kind, in the order
 * they were added, until one accepts; then the realm is asked for the
 * avatar, now or later.  The avatar goes out through
 * pb_broker_export_avatar(), which tells us exactly once when the client
 * lets go of it or the connection ends; that is where logout runs.
 *
 * Lifetimes.  The per-connection root (pconn) is referenced by the broker,
 * by its on_lost hook (dropped when that hook runs, so the hook always
 * finds it alive), by every challenger and by every login in progress.
 * A login in progress (pb_realm_request) lives until its call is answered;
 * it may outlive the connection, in which case pconn->b is NULL and the
 * answer is dropped (and an avatar made too late is logged out at once).
 *
 * Hardening beyond Twisted: challenges come from the OS CSPRNG;
 * failed logins are counted per peer address and refused past a limit per
 * minute; connections that have not logged in within login_timeout_ms
 * are closed (when the portal knows the loop, see pb_portal_set_loop).
 */
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <pthread.h>
#include <time.h>
#include <sys/random.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "pb/cred.h"
#include "broker_int.h"
#include "ratelimit.h"

#define CHALLENGE_LEN 16
#define MAX_USERNAME 1024
#define THROTTLE_SLOTS 4096
#define THROTTLE_PROBE 32
#define THROTTLE_WINDOW_MS 60000
#define LOG_WINDOW_MS 10000
#define LOG_LINES_PER_WINDOW 20

static const char NO_MD5_CHECKER[] =
    "No checker for twisted.cred.credentials.IUsernameHashedPassword, "
    "twisted.spread.pb.IUsernameMD5Password, twisted.spread.interfaces.IJellyable";
static const char NO_ANON_CHECKER[] = "No checker for twisted.cred.credentials.IAnonymous";

typedef struct pconn pconn;

typedef struct throttle_slot {
    char addr[64];
    uint64_t start;
    unsigned count;
} throttle_slot;

struct pb_portal {
    pb_realm_fn realm;
    void *realm_ud;
    unsigned timeout_ms, max_failures;
    pb_checker **checkers;
    size_t nchecker;
    uv_loop_t *loop;
    uv_timer_t *timer;          /* armed while some connection waits to log in */
    pconn *thead, *ttail;       /* those connections, oldest first */
    throttle_slot *throttle;    /* lazily allocated; the main portal's only */
    pthread_mutex_t tmu;        /* main portal: guards throttle and the log window */
    void (*log)(const char *line, void *ud);
    void *log_ud;
    pb_ratelimit log_rl;        /* main portal: the login log's rate limit */
    pb_portal *main;            /* a multi-loop server's per-loop copy: the portal it
                                   copies (checkers borrowed, throttle and log shared);
                                   NULL for the portal itself */
};

struct pconn {
    pb_object obj; /* first: the per-connection root */
    pb_portal *portal;
    pb_broker *b;  /* NULL until bound, and again once the connection is lost */
    int bound, logged_in, in_tlist;
    uint64_t deadline;
    pconn *tprev, *tnext;
};

typedef struct challenger {
    pb_object obj;
    pconn *pc;
    int spent, valid;
    uint8_t challenge[CHALLENGE_LEN];
    size_t ulen;
    char user[];
} challenger;

struct pb_check_result {
    int answered, ok;
    char *avatar_id;
};

struct pb_realm_request {
    pb_check_result res;
    pconn *pc;
    pb_call *call;
    pb_ref *mind;
    pb_credentials cred;
    size_t next;  /* next checker to ask */
    int in_check; /* inside a checker's check(): it may answer synchronously */
    void (*logout)(void *);
    void *logout_ud;
    char *user;
    uint8_t challenge[CHALLENGE_LEN], response[16];
    char peer[48]; /* the client's address without port, for throttling */
};

/* The avatar on its way out: held until logout has run. */
typedef struct session {
    pb_object *avatar;
    void (*logout)(void *);
    void *ud;
} session;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void random_bytes(uint8_t *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(p + got, n - got, 0);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    if (got < n && RAND_bytes(p + got, (int)(n - got)) != 1)
        abort(); /* no randomness at all: refusing to hand out guessable challenges */
}

/* -------------------------------------------------------------- throttling */

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    while (*s)
        h = (h ^ (uint8_t)*s++) * 1099511628211ull;
    return h;
}

/* The slot for addr (create: claim a free or stale one), or NULL. */
static throttle_slot *throttle_slot_for(pb_portal *p, const char *addr, int create, uint64_t now)
{
    if (!p->throttle) {
        if (!create)
            return NULL;
        p->throttle = calloc(THROTTLE_SLOTS, sizeof *p->throttle);
        if (!p->throttle)
            return NULL;
    }
    size_t h = (size_t)hash_str(addr);
    throttle_slot *spare = NULL;
    for (size_t i = 0; i < THROTTLE_PROBE; i++) {
        throttle_slot *s = &p->throttle[(h + i) % THROTTLE_SLOTS];
        int stale = !s->count || now - s->start >= THROTTLE_WINDOW_MS;
        if (!stale && strcmp(s->addr, addr) == 0)
            return s;
        if (stale && !spare)
            spare = s;
    }
    if (!create || !spare)
        return NULL; /* table full of busy addresses: count nothing rather than evict */
    snprintf(spare->addr, sizeof spare->addr, "%s", addr);
    spare->start = now;
    spare->count = 0;
    return spare;
}

/* Failures count for the whole server: every loop's copy of a portal
 * uses the main portal's table, under its mutex. */
static int throttled(pb_portal *p, const char *addr)
{
    pb_portal *t = p->main ? p->main : p;
    pthread_mutex_lock(&t->tmu);
    throttle_slot *s = throttle_slot_for(t, addr, 0, now_ms());
    int over = s && s->count >= t->max_failures;
    pthread_mutex_unlock(&t->tmu);
    return over;
}

static void throttle_failure(pb_portal *p, const char *addr)
{
    pb_portal *t = p->main ? p->main : p;
    pthread_mutex_lock(&t->tmu);
    throttle_slot *s = throttle_slot_for(t, addr, 1, now_ms());
    if (s && s->count < UINT32_MAX)
        s->count++;
    pthread_mutex_unlock(&t->tmu);
}

/* ------------------------------------------------------------------ logging */

/* One line to the portal's log, rate-limited for the whole server. */
static void plog(pb_portal *p, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void plog(pb_portal *p, const char *fmt, ...)
{
    pb_portal *t = p->main ? p->main : p;
    unsigned long dropped = 0;
    pthread_mutex_lock(&t->tmu);
    int keep = pb__ratelimit(&t->log_rl, now_ms(), LOG_WINDOW_MS, LOG_LINES_PER_WINDOW, &dropped);
    pthread_mutex_unlock(&t->tmu);
    if (!keep)
        return;
    char line[400];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (dropped && n >= 0 && (size_t)n < sizeof line)
        snprintf(line + n, sizeof line - (size_t)n, " (%lu more login lines left out before this)",
                 dropped);
    if (t->log)
        t->log(line, t->log_ud);
    else
        fprintf(stderr, "pb: %s\n", line);
}

/* A name from the network, fit for a log line: printable ASCII as is,
 * anything else as \xNN, at most 48 bytes of it. */
static void log_name(const char *in, size_t n, char out[256])
{
    size_t o = 0;
    for (size_t i = 0; i < n && i < 48; i++) {
        unsigned char ch = (unsigned char)in[i];
        if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\')
            out[o++] = (char)ch;
        else
            o += (size_t)snprintf(out + o, 5, "\\x%02x", ch);
    }
    if (n > 48)
        o += (size_t)snprintf(out + o, 4, "...");
    out[o] = 0;
}

/* ----------------------------------------------------------- login timeout */

static void timer_cb(uv_timer_t *t);

static void free_handle(uv_handle_t *h) { free(h); }

static void timer_rearm(pb_portal *p)
{
    if (!p->thead) {
        if (p->timer) {
            uv_close((uv_handle_t *)p->timer, free_handle);
            p->timer = NULL;
        }
        return;
    }
    if (!p->timer) {
        p->timer = malloc(sizeof *p->timer);
        if (!p->timer)
            return;
        uv_timer_init(p->loop, p->timer);
        p->timer->data = p;
        uv_unref((uv_handle_t *)p->timer); /* never keeps the loop alive by itself */
    }
    uint64_t now = uv_now(p->loop);
    uv_timer_start(p->timer, timer_cb, p->thead->deadline > now ? p->thead->deadline - now : 0, 0);
}

static void tlist_remove(pconn *pc)
{
    pb_portal *p = pc->portal;
    if (!pc->in_tlist)
        return;
    pc->in_tlist = 0;
    if (pc->tprev)
        pc->tprev->tnext = pc->tnext;
    else
        p->thead = pc->tnext;
    if (pc->tnext)
        pc->tnext->tprev = pc->tprev;
    else
        p->ttail = pc->tprev;
    pc->tprev = pc->tnext = NULL;
    if (!p->thead)
        timer_rearm(p);
}

/* Every connection gets the same timeout, so appending keeps the list
 * sorted by deadline and one timer serves them all. */
static void tlist_add(pconn *pc)
{
    pb_portal *p = pc->portal;
    if (!p->loop || pc->in_tlist || pc->logged_in)
        return;
    pc->deadline = uv_now(p->loop) + p->timeout_ms;
    pc->in_tlist = 1;
    pc->tprev = p->ttail;
    pc->tnext = NULL;
    if (p->ttail)
        p->ttail->tnext = pc;
    else
        p->thead = pc;
    p->ttail = pc;
    if (p->thead == pc)
        timer_rearm(p);
}

static void timer_cb(uv_timer_t *t)
{
    pb_portal *p = t->data;
    uint64_t now = uv_now(p->loop);
    while (p->thead && p->thead->deadline <= now) {
        pconn *pc = p->thead;
        tlist_remove(pc);
        pb_conn *c = pc->b ? pb_conn_of(pc->b) : NULL;
        if (c) {
            plog(p, "closing %s: no login within %u ms", pb_conn_peer(c), p->timeout_ms);
            pb_conn_close(c);
        }
    }
    timer_rearm(p);
}

/* ----------------------------------------------------- per-connection root */

static void pconn_lost(void *ud)
{
    pconn *pc = ud;
    pc->b = NULL;
    tlist_remove(pc);
    pb_object_unref(&pc->obj);
}

static void pconn_bind(pconn *pc, pb_broker *b)
{
    if (pc->bound || !b)
        return;
    pc->bound = 1;
    pc->b = b;
    pb_object_ref(&pc->obj);
    pb_broker_on_lost(b, pconn_lost, pc);
    tlist_add(pc);
}

static void pconn_destroy(pb_object *o)
{
    pconn *pc = (pconn *)o;
    tlist_remove(pc);
    free(pc);
}

static void pconn_logged_in(pconn *pc)
{
    pc->logged_in = 1;
    tlist_remove(pc);
}

/* ------------------------------------------------------- login in progress */

static pb_realm_request *req_new(pconn *pc, pb_call *call, pb_cred_kind kind, pb_value *mind)
{
    pb_realm_request *req = calloc(1, sizeof *req);
    if (!req)
        return NULL;
    req->pc = pc;
    pb_object_ref(&pc->obj);
    req->call = call;
    if (mind && mind->type == PB_REMOTE)
        req->mind = pb_ref_ref((pb_ref *)mind->u.h);
    req->cred.kind = kind;
    req->cred.username = "";
    return req;
}

static void req_free(pb_realm_request *req)
{
    if (req->mind)
        pb_ref_unref(req->mind);
    free(req->res.avatar_id);
    free(req->user);
    OPENSSL_cleanse(req->response, sizeof req->response);
    pb_object_unref(&req->pc->obj);
    free(req);
}

static void req_refuse(pb_realm_request *req, const char *why)
{
    char name[256];
    if (req->cred.kind == PB_CRED_ANONYMOUS)
        snprintf(name, sizeof name, "(anonymous)");
    else
        log_name(req->cred.username, req->cred.username_len, name);
    plog(req->pc->portal, "login refused for \"%s\" from %s: %s", name,
         req->peer[0] ? req->peer : "?", why);
    throttle_failure(req->pc->portal, req->peer);
    pb_call_fail_pickled(req->call, PB_FAILURE_UNAUTHORIZED, "");
    req_free(req);
}

static void run_checkers(pb_realm_request *req);

static void ask_realm(pb_realm_request *req)
{
    pb_portal *p = req->pc->portal;
    if (!req->pc->b) { /* gone while we were checking: nobody to answer */
        pb_call_fail(req->call, PB_FAILURE_CONNECTION_LOST, "connection lost");
        req_free(req);
        return;
    }
    p->realm(req, req->res.avatar_id, req->mind, p->realm_ud); /* may free req */
}

static void check_answered(pb_check_result *r)
{
    pb_realm_request *req = (pb_realm_request *)((char *)r - offsetof(pb_realm_request, res));
    if (req->in_check)
        return; /* run_checkers picks it up when check() returns */
    if (r->ok)
        ask_realm(req);
    else
        run_checkers(req);
}

void pb_check_ok(pb_check_result *r, const char *avatar_id)
{
    if (!r || r->answered)
        return;
    r->answered = 1;
    r->avatar_id = strdup(avatar_id ? avatar_id : "");
    r->ok = r->avatar_id != NULL;
    check_answered(r);
}

void pb_check_fail(pb_check_result *r)
{
    if (!r || r->answered)
        return;
    r->answered = 1;
    r->ok = 0;
    check_answered(r);
}

/* Ask the remaining checkers of the right kind, in order, until one says
 * yes; "no" from all of them is UnauthorizedLogin. */
static void run_checkers(pb_realm_request *req)
{
    pb_portal *p = req->pc->portal;
    for (;;) {
        if (!req->pc->b) { /* lost while a checker worked: stop asking */
            pb_call_fail(req->call, PB_FAILURE_CONNECTION_LOST, "connection lost");
            req_free(req);
            return;
        }
        while (req->next < p->nchecker && p->checkers[req->next]->ops->kind != req->cred.kind)
            req->next++;
        if (req->next == p->nchecker) {
            req_refuse(req, req->cred.kind == PB_CRED_ANONYMOUS ? "refused by every checker"
                                                                : "wrong password or unknown user");
            return;
        }
        pb_checker *c = p->checkers[req->next++];
        memset(&req->res, 0, sizeof req->res);
        req->in_check = 1;
        c->ops->check(c, &req->cred, &req->res);
        req->in_check = 0;
        if (!req->res.answered)
            return; /* the checker answers later through pb_check_ok/fail */
        if (req->res.ok) {
            ask_realm(req);
            return;
        }
    }
}

static int has_checker(pb_portal *p, pb_cred_kind kind)
{
    for (size_t i = 0; i < p->nchecker; i++)
        if (p->checkers[i]->ops->kind == kind)
            return 1;
    return 0;
}

/* The peer's address without the port, kept in the request (not in every
 * connection's root: most connections never fail a login). */
static void peer_address(pb_realm_request *req)
{
    pb_conn *c = req->pc->b ? pb_conn_of(req->pc->b) : NULL;
    const char *peer = c ? pb_conn_peer(c) : NULL;
    snprintf(req->peer, sizeof req->peer, "%s", peer ? peer : "");
    /* "1.2.3.4:5555" / "[::1]:5555" -> the address alone */
    char *colon = strrchr(req->peer, ':');
    if (colon && colon[1] && strspn(colon + 1, "0123456789") == strlen(colon + 1))
        *colon = 0;
}

static int start_login(pb_realm_request *req, int valid)
{
    pb_portal *p = req->pc->portal;
    peer_address(req);
    int rc = pb_call_defer(req->call);
    if (rc) {
        req_free(req);
        return rc;
    }
    if (!has_checker(p, req->cred.kind)) {
        pb_call_fail_pickled(req->call, PB_FAILURE_UNHANDLED_CREDENTIALS,
                     req->cred.kind == PB_CRED_ANONYMOUS ? NO_ANON_CHECKER : NO_MD5_CHECKER);
        req_free(req);
    } else if (req->cred.kind == PB_CRED_MD5_CHALLENGE && !valid) {
        req_refuse(req, "not a valid username");
    } else if (req->cred.kind == PB_CRED_MD5_CHALLENGE && throttled(p, req->peer)) {
        req_refuse(req, "too many failed logins from this address (throttled)");
    } else {
        run_checkers(req);
    }
    return 0;
}

/* ------------------------------------------------------------ realm answer */

static void session_release(void *ud)
{
    session *s = ud;
    if (s->logout)
        s->logout(s->ud);
    pb_object_unref(s->avatar);
    free(s);
}

int pb_realm_answer(pb_realm_request *req, pb_object *avatar, void (*logout)(void *ud),
                    void *logout_ud)
{
    if (!req || !avatar)
        return PB_EINVAL;
    pconn *pc = req->pc;
    if (!pc->b) { /* too late: the avatar was made but nobody will hold it */
        if (logout)
            logout(logout_ud);
        pb_call_fail(req->call, PB_FAILURE_CONNECTION_LOST, "connection lost");
        req_free(req);
        return PB_ECLOSED;
    }
    session *s = malloc(sizeof *s);
    pb_value *v = NULL;
    if (s) {
        s->avatar = pb_object_ref(avatar);
        s->logout = logout;
        s->ud = logout_ud;
        v = pb_broker_export_avatar(pc->b, pb_call_arena(req->call), avatar, session_release, s);
        if (!v) {
            pb_object_unref(avatar);
            free(s);
        }
    }
    if (!v) { /* never exported: on_release will not run, so log out here */
        int closed = !pb_broker_is_connected(pc->b);
        if (logout)
            logout(logout_ud);
        if (closed)
            pb_call_fail(req->call, PB_FAILURE_CONNECTION_LOST, "connection lost");
        else
            pb_call_fail(req->call, PB_FAILURE_PB_ERROR, "Maximum PB reference count exceeded.");
        req_free(req);
        return closed ? PB_ECLOSED : PB_ELIMIT;
    }
    pconn_logged_in(pc);
    int rc = pb_call_return(req->call, v);
    req_free(req);
    return rc;
}

int pb_realm_fail(pb_realm_request *req, const char *type, const char *message)
{
    if (!req)
        return PB_EINVAL;
    int rc = pb_call_fail_pickled(req->call, type ? type : PB_FAILURE_UNAUTHORIZED, message ? message : "");
    req_free(req);
    return rc;
}

/* The realm's deferred holds this; req is NULL once answered.  If the
 * deferred is dropped without firing, the login fails rather than hangs. */
typedef struct realm_wait {
    pb_realm_request *req;
} realm_wait;

static int realm_fired(pb_deferred *d, void *ud)
{
    realm_wait *w = ud;
    pb_realm_request *req = w->req;
    pb_value *v = pb_deferred_value(d);
    w->req = NULL;
    if (v && v->type == PB_OBJECT)
        pb_realm_answer(req, (pb_object *)v->u.h, req->logout, req->logout_ud);
    else
        pb_realm_fail(req, PB_FAILURE_TYPE_ERROR, "realm did not answer with an avatar");
    return 0;
}

static int realm_failed(pb_deferred *d, void *ud)
{
    realm_wait *w = ud;
    pb_realm_request *req = w->req;
    const pb_failure *f = pb_deferred_failure(d);
    w->req = NULL;
    /* it went through portal.login's Deferred: Twisted sends it pickled */
    pb_arena *a = f ? pb_arena_new(0) : NULL;
    pb_failure *pf = a ? pb_failure_copy(a, f) : NULL;
    if (pf) {
        pf->pickled = 1;
        pb_call_fail_failure(req->call, pf);
    } else if (f) {
        pb_call_fail_failure(req->call, f);
    } else {
        pb_call_fail_pickled(req->call, PB_FAILURE_UNAUTHORIZED, "");
    }
    pb_arena_free(a);
    req_free(req);
    return 0;
}

static void realm_wait_free(void *ud)
{
    realm_wait *w = ud;
    if (w->req)
        pb_realm_fail(w->req, PB_FAILURE_CANCELLED, "the realm dropped its answer");
    free(w);
}

int pb_realm_answer_deferred(pb_realm_request *req, pb_deferred *d, void (*logout)(void *ud),
                             void *logout_ud)
{
    if (!req || !d)
        return PB_EINVAL;
    realm_wait *w = malloc(sizeof *w);
    if (!w)
        return PB_ENOMEM;
    w->req = req;
    req->logout = logout;
    req->logout_ud = logout_ud;
    int rc = pb__deferred_add_full(d, realm_fired, realm_failed, w, realm_wait_free);
    if (rc)
        free(w);
    return rc;
}

pb_broker *pb_realm_request_broker(const pb_realm_request *req)
{
    return req ? req->pc->b : NULL;
}

/* ------------------------------------------------------- remote interface */

static void challenger_destroy(pb_object *o)
{
    challenger *ch = (challenger *)o;
    pb_object_unref(&ch->pc->obj);
    OPENSSL_cleanse(ch->challenge, sizeof ch->challenge);
    free(ch);
}

static int challenger_respond(pb_call *call, void *self, const pb_args *a)
{
    challenger *ch = self;
    if (ch->spent) /* one response per challenge: no second guess */
        return pb_call_fail_pickled(call, PB_FAILURE_UNAUTHORIZED, "");
    ch->spent = 1;
    pb_realm_request *req = req_new(ch->pc, call, PB_CRED_MD5_CHALLENGE, pb_arg(a, 1));
    if (!req)
        return PB_ENOMEM;
    if (ch->valid && !(req->user = malloc(ch->ulen + 1))) {
        req_free(req);
        return PB_ENOMEM;
    }
    if (req->user) {
        memcpy(req->user, ch->user, ch->ulen + 1);
        req->cred.username = req->user;
        req->cred.username_len = ch->ulen;
    }
    memcpy(req->challenge, ch->challenge, CHALLENGE_LEN);
    req->cred.challenge = req->challenge;
    req->cred.challenge_len = CHALLENGE_LEN;
    pb_value *resp = pb_arg(a, 0);
    if (resp && resp->type == PB_BYTES && resp->u.s.len == 16) {
        memcpy(req->response, resp->u.s.ptr, 16);
        req->cred.response = req->response;
        req->cred.response_len = 16;
    }
    return start_login(req, ch->valid);
}

static const pb_method challenger_methods[] = {
    {"respond", "vv:response,mind", challenger_respond, NULL},
    {NULL, NULL, NULL, NULL},
};
static const pb_class challenger_class = {"_PortalAuthChallenger", PB_REFERENCEABLE,
                                          challenger_methods, challenger_destroy};

static int root_login(pb_call *call, void *self, const pb_args *a)
{
    pconn *pc = self;
    pconn_bind(pc, pb_call_broker(call));
    pb_value *u = pb_arg(a, 0);
    /* Bytes (what Twisted's clients send) or text: the same UTF-8 name. */
    int valid = u && (u->type == PB_BYTES || u->type == PB_STR) && u->u.s.len <= MAX_USERNAME &&
                !memchr(u->u.s.ptr, 0, u->u.s.len);
    size_t ulen = valid ? u->u.s.len : 0;
    challenger *ch = calloc(1, sizeof *ch + ulen + 1);
    if (!ch)
        return PB_ENOMEM;
    pb_object_init(&ch->obj, &challenger_class);
    ch->pc = pc;
    pb_object_ref(&pc->obj);
    ch->valid = valid;
    ch->ulen = ulen;
    if (valid)
        memcpy(ch->user, u->u.s.ptr, ulen);
    /* A challenge even for unknown or malformed names: nothing to learn here. */
    random_bytes(ch->challenge, CHALLENGE_LEN);

    pb_arena *ar = pb_call_arena(call);
    pb_value *t = pb_tuple(ar, 2), *c = pb_bytes(ar, ch->challenge, CHALLENGE_LEN);
    pb_value *r = pb_object_value(ar, &ch->obj);
    pb_object_unref(&ch->obj); /* the answer holds it now, then the broker */
    if (!t || !c || !r || pb_seq_append(ar, t, c) || pb_seq_append(ar, t, r))
        return PB_ENOMEM;
    return pb_call_return(call, t);
}

static int root_login_anonymous(pb_call *call, void *self, const pb_args *a)
{
    pconn *pc = self;
    pconn_bind(pc, pb_call_broker(call));
    pb_realm_request *req = req_new(pc, call, PB_CRED_ANONYMOUS, pb_arg(a, 0));
    if (!req)
        return PB_ENOMEM;
    return start_login(req, 1);
}

static const pb_method root_methods[] = {
    {"login", "v:username", root_login, NULL},
    {"loginAnonymous", "v:mind", root_login_anonymous, NULL},
    {NULL, NULL, NULL, NULL},
};
static const pb_class root_class = {"_PortalWrapper", PB_REFERENCEABLE, root_methods,
                                    pconn_destroy};

pb_object *pb_portal_root(pb_broker *b, void *portal)
{
    pb_portal *p = portal;
    if (!p)
        return NULL;
    pconn *pc = calloc(1, sizeof *pc);
    if (!pc)
        return NULL;
    pb_object_init(&pc->obj, &root_class);
    pc->portal = p;
    pconn_bind(pc, b); /* b NULL (a broker made by hand): bound at the first call */
    return &pc->obj;
}

/* ------------------------------------------------------------------ portal */

pb_portal *pb_portal_new(pb_realm_fn realm, void *realm_ud, const pb_portal_opts *opts)
{
    if (!realm)
        return NULL;
    pb_portal *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->realm = realm;
    p->realm_ud = realm_ud;
    p->timeout_ms = opts && opts->login_timeout_ms ? opts->login_timeout_ms : 30000;
    p->max_failures = opts && opts->max_failures_per_min ? opts->max_failures_per_min : 10;
    p->log = opts ? opts->log : NULL;
    p->log_ud = opts ? opts->log_ud : NULL;
    pthread_mutex_init(&p->tmu, NULL);
    return p;
}

void pb_portal_free(pb_portal *p)
{
    if (!p)
        return;
    while (p->thead)
        tlist_remove(p->thead);
    if (p->timer) {
        uv_close((uv_handle_t *)p->timer, free_handle);
        p->timer = NULL;
    }
    if (!p->main) {
        for (size_t i = 0; i < p->nchecker; i++)
            p->checkers[i]->ops->destroy(p->checkers[i]);
        free(p->checkers);
        free(p->throttle);
        pthread_mutex_destroy(&p->tmu);
    }
    free(p);
}

int pb_portal_add_checker(pb_portal *p, pb_checker *c)
{
    if (!p || !c || !c->ops || !c->ops->check || !c->ops->destroy)
        return PB_EINVAL;
    pb_checker **n = realloc(p->checkers, (p->nchecker + 1) * sizeof *n);
    if (!n)
        return PB_ENOMEM;
    p->checkers = n;
    p->checkers[p->nchecker++] = c;
    return 0;
}

void pb_portal_set_loop(pb_portal *p, uv_loop_t *loop)
{
    if (p && !p->loop)
        p->loop = loop;
}

/* Multi-loop servers: loop 0 uses the portal itself; every other loop a
 * copy of it of its own (login timer, waiting list) that shares the
 * realm, the checkers and the failure throttle, made and freed on that
 * loop's thread. */
static void *portal_loop_init(uv_loop_t *loop, unsigned index, void *ud)
{
    pb_portal *p = ud;
    if (index == 0)
        return p;
    pb_portal *q = calloc(1, sizeof *q);
    if (!q)
        return NULL; /* pb_portal_root refuses connections on this loop */
    q->realm = p->realm;
    q->realm_ud = p->realm_ud;
    q->timeout_ms = p->timeout_ms;
    q->max_failures = p->max_failures;
    q->checkers = p->checkers;
    q->nchecker = p->nchecker;
    q->loop = loop;
    q->main = p;
    return q;
}

static void portal_loop_fini(uv_loop_t *loop, unsigned index, void *loop_ud, void *ud)
{
    (void)loop;
    if (index != 0 && loop_ud != ud)
        pb_portal_free(loop_ud);
}

int pb_portal_listen_tcp(pb_portal *p, uv_loop_t *loop, const char *host, int port,
                         const pb_server_opts *opts, pb_server **out, pb_errbuf *err)
{
    if (!p || !loop)
        return pb_err_set(err, PB_EINVAL, "pb_portal_listen_tcp: portal and loop required");
    pb_portal_set_loop(p, loop);
    if (opts && opts->loops > 1) {
        if (opts->loop_init || opts->loop_fini)
            return pb_err_set(err, PB_EINVAL,
                              "pb_portal_listen_tcp: loop_init/loop_fini are the portal's");
        pb_server_opts o = *opts;
        o.loop_init = portal_loop_init;
        o.loop_fini = portal_loop_fini;
        return pb_listen_tcp(loop, host, port, &o, pb_portal_root, p, out, err);
    }
    return pb_listen_tcp(loop, host, port, opts, pb_portal_root, p, out, err);
}
