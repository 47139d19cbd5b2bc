/*
 * pbsoak - a chaos soak client for a PB chat server (the "hostile network"
 * proof; driven by tests/interop/test_soak.sh).
 *
 *   pbsoak --port N [--host 127.0.0.1] [--clients 300] [--duration 60]
 *          [--seed S] [--no-bind] [--quiet]
 *
 * Opens --clients concurrent client slots against a chatserver
 * (examples/chatserver.c: alice/1234, bob/secret, carol/fido) and, for
 * --duration seconds, has each slot run one random session after another:
 *   pb       log in (Twisted's challenge-response, done by hand so it can
 *            also lie), join groups, send to them, call with bad arguments,
 *            call unknown methods, forge messages and decrefs for object
 *            ids it was never given, drop its avatar (logout) and log in
 *            again, pause reading, inject garbage, stall half way through a
 *            message, and leave by FIN or by RST (SO_LINGER 0);
 *   badlogin wrong passwords, unknown users, anonymous (the chat server
 *            has no anonymous checker), a non-text username, a second
 *            answer to one challenge;
 *   garbage  raw bytes: random Banana, truncated messages, huge string and
 *            list headers, over-long prefixes, deep nesting, a slow drip;
 *   drop     connect and reset at once, or right after the handshake;
 *   idle     (2% of pb) the handshake, then nothing for 31-40 s: the
 *            server's login timeout (30 s) should hang up first.
 * Then it closes everything, prints its counters on one line
 * ("pbsoak: connections=... logins_ok=...") and exits 0, or 1 when the
 * run proved nothing (no successful login, call or delivery) or did not
 * wind down in time.
 *
 * Each slot has its own PRNG seeded from --seed and its index, so a seed
 * replays the same choices (the network decides the interleaving).
 * PB sessions run a bare pb_broker over a uv_tcp_t of our own, so the
 * socket can be reset, stalled or fed garbage between whole messages.
 *
 * Source addresses: with failed logins throttled per address (10 a minute
 * by default), slots that log in properly connect from 127.1.0.x and
 * those that fail on purpose from 127.2.0.x, so the throttle bites the
 * liars and not the rest (nor 127.0.0.1, which the test's final check
 * uses).  --no-bind connects from the default address instead.
 *
 * Loopback only by intent: it refuses a --host that is not 127.x.x.x.
 */
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "pb/pb.h"

/* -------------------------------------------------------------- settings */

static const char *opt_host = "127.0.0.1";
static int opt_port = 0;
static unsigned opt_clients = 300, opt_duration = 60, opt_bind = 1, opt_quiet = 0;
static uint64_t opt_seed = 1;

#define MAX_CLIENTS 2000
#define MAX_INFLIGHT 16         /* our calls outstanding per session */
#define MAX_WRITE_QUEUE (1u << 20) /* bytes queued to the socket before we stop sending */

static const char *const USERS[] = {"alice", "bob", "carol"};
static const char *const PASSWORDS[] = {"1234", "secret", "fido"};
/* A fixed set: the chat server keeps every group it ever made. */
static const char *const GROUPS[] = {
    "#soak0", "#soak1", "#soak2", "#soak3", "#s\xc3\xb6\xc3\xa4k",
    "#soak-long-name-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"};
#define N_CHAT_GROUPS (sizeof GROUPS / sizeof GROUPS[0])

/* -------------------------------------------------------------- counters */

static struct {
    unsigned long long connections, connect_failed, sessions_pb, sessions_badlogin, garbage,
        drops_rst, closes_fin, server_closed, logins_ok, logins_failed, logins_lost, logouts_sent,
        calls_ok, calls_failed, calls_lost, calls_unsent, delivered, forged, stalls,
        read_pauses, bytes_out, bytes_in, self_closed, idlers, login_timeouts;
} st;

/* ------------------------------------------------------------------ PRNG */

/* splitmix64: small, good enough, and identical everywhere. */
static uint64_t rnd64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* --------------------------------------------------------------- a slot */

typedef enum kind { K_PB, K_BADLOGIN, K_GARBAGE, K_DROP } kind;
typedef enum how { FIN, RST } how;

typedef struct slot {
    unsigned idx;
    uint64_t rng;
    uv_timer_t timer; /* between sessions: the delay; during one: the next step */
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    int busy;         /* tcp is initialised and not yet closed */
    int closing;      /* the session is ending: start nothing new */
    int done;         /* the run is over for this slot */
    kind kind;
    pb_broker *b;     /* PB sessions: a client broker on tcp */
    int connected;    /* PB handshake done */
    int want_close;   /* the broker asked to close (set inside its callbacks) */
    int stalled;      /* we sent half a message: write nothing more */
    int paused;       /* reading stopped for a while */
    int drip;         /* garbage: one more byte per step */
    int idle;         /* PB: handshake, then nothing: the login timeout (30 s) closes it */
    int logins_started;
    unsigned inflight;
    uint64_t deadline, resume_at;
    pb_ref *avatar;
    pb_ref *groups[2];
} slot;

static uv_loop_t *loop;
static slot *slots;
static unsigned slots_done;
static int stopping;
static uv_timer_t stop_timer, hard_timer, progress_timer;
static pb_broker_config client_cfg;
static char read_buf[65536];
static uint64_t started_at;

static uint64_t rnd(slot *s) { return rnd64(&s->rng); }
static unsigned below(slot *s, unsigned n) { return n ? (unsigned)(rnd(s) % n) : 0; }
static int chance(slot *s, unsigned pct) { return below(s, 100) < pct; }
static unsigned between(slot *s, unsigned lo, unsigned hi) { return lo + below(s, hi - lo + 1); }

static void end_session(slot *s, how h);
static void start_session(slot *s);

/* ------------------------------------------------------------------ mind */

/* The client object the server calls print(message) on. */
static int mind_print(pb_call *call, void *self, const pb_args *a)
{
    st.delivered++;
    return pb_call_return_none(call);
}
static const pb_method mind_methods[] = {{"print", "v:message", mind_print, NULL},
                                         {NULL, NULL, NULL, NULL}};
static const pb_class Mind = {"Client", PB_REFERENCEABLE, mind_methods, NULL};
static pb_object mind;

/* --------------------------------------------------------------- writing */

typedef struct wreq {
    uv_write_t req;
    char data[];
} wreq;

static void on_written(uv_write_t *req, int status) { free(req); }

static size_t write_queue(slot *s) { return uv_stream_get_write_queue_size((uv_stream_t *)&s->tcp); }

static void write_bytes(slot *s, const void *p, size_t n)
{
    if (!n || !s->busy || s->closing)
        return;
    wreq *w = malloc(sizeof *w + n);
    if (!w)
        return;
    memcpy(w->data, p, n);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
    if (uv_write(&w->req, (uv_stream_t *)&s->tcp, &b, 1, on_written)) {
        free(w);
        return;
    }
    st.bytes_out += n;
}

/* Everything the broker queued goes out as one write, so what we inject
 * later always starts at a message boundary. */
static void flush(slot *s)
{
    if (!s->b || s->stalled || s->closing)
        return;
    const uint8_t *d;
    size_t n = pb_broker_output(s->b, &d);
    if (n) {
        write_bytes(s, d, n);
        pb_broker_output_consume(s->b, n);
    }
}

/* The end of every entry point: act on what the broker asked for. */
static void after(slot *s)
{
    if (s->closing)
        return;
    if (s->want_close) {
        st.self_closed++;
        end_session(s, FIN);
        return;
    }
    flush(s);
}

/* ----------------------------------------------------- hand-made Banana */

/* A Banana header: base-128 digits, least significant first, then type. */
static void put_header(pb_buf *o, uint64_t n, uint8_t type)
{
    do {
        pb_buf_putc(o, (uint8_t)(n & 0x7f));
        n >>= 7;
    } while (n);
    pb_buf_putc(o, type);
}

static void put_word(pb_buf *o, const char *w) { pb_banana_put_bytes(o, PB_DIALECT_PB, w, strlen(w)); }

/* ("message", req, objid, method, answer, ("tuple", args...), ("dictionary"))
 * with nargs text arguments, as Jelly writes them: ("unicode", bytes). */
static void put_call(pb_buf *o, int64_t req, int64_t objid, const char *method, int answer,
                     unsigned nargs, const char *arg)
{
    pb_banana_put_list(o, 7);
    put_word(o, "message");
    pb_banana_put_int(o, req);
    pb_banana_put_int(o, objid);
    put_word(o, method);
    pb_banana_put_int(o, answer);
    pb_banana_put_list(o, 1 + nargs);
    put_word(o, "tuple");
    for (unsigned i = 0; i < nargs; i++) {
        pb_banana_put_list(o, 2);
        put_word(o, "unicode");
        pb_banana_put_bytes(o, PB_DIALECT_PB, arg, strlen(arg));
    }
    pb_banana_put_list(o, 1);
    put_word(o, "dictionary");
}

static void put_random(slot *s, pb_buf *o, size_t n)
{
    for (size_t i = 0; i < n; i++)
        pb_buf_putc(o, (uint8_t)rnd(s));
}

/* Random but plausible Banana: headers of every type with small bodies. */
static void put_random_banana(slot *s, pb_buf *o, unsigned tokens)
{
    static const char *words[] = {"message", "answer", "error", "decref", "tuple", "list",
                                  "dictionary", "reference", "remote", "local", "version"};
    for (unsigned i = 0; i < tokens; i++) {
        switch (below(s, 7)) {
        case 0: pb_banana_put_list(o, below(s, 8)); break;
        case 1: pb_banana_put_int(o, (int64_t)rnd(s) >> below(s, 64)); break;
        case 2: put_word(o, words[below(s, sizeof words / sizeof *words)]); break;
        case 3: {
            size_t n = below(s, 40);
            put_header(o, n, 0x82);
            put_random(s, o, n);
            break;
        }
        case 4: pb_banana_put_float(o, (double)(int64_t)rnd(s) / 3.0); break;
        case 5: put_header(o, below(s, 40), 0x87); break; /* VOCAB, maybe unknown */
        default: put_header(o, rnd(s) >> below(s, 64), (uint8_t)(0x80 + below(s, 9))); break;
        }
    }
}

static void send_buf(slot *s, pb_buf *o)
{
    flush(s);
    write_bytes(s, o->data, o->len);
    pb_buf_free(o);
}

/* --------------------------------------------------------------- calls */

typedef enum what { W_CHALLENGE, W_AVATAR, W_AVATAR_SPARE, W_JOIN, W_CALL } what;

typedef struct op {
    slot *s;
    what what;
    int good;     /* W_CHALLENGE: answer with the right password */
    int twice;    /* W_CHALLENGE: answer twice */
    int with_mind;
    unsigned user;
} op;

static int is_lost(const pb_failure *f)
{
    return !f || f->code == PB_ECLOSED || pb_failure_check(f, PB_FAILURE_CONNECTION_LOST);
}

static void set_avatar(slot *s, pb_ref *r)
{
    if (s->avatar) { /* two logins raced on one connection: the older goes */
        pb_ref_unref(s->avatar);
        st.logouts_sent++;
    }
    s->avatar = pb_ref_ref(r);
}

static void respond(slot *s, pb_ref *challenger, const pb_value *challenge, const op *o);

static int op_ok(pb_deferred *d, void *ud)
{
    op *o = ud;
    slot *s = o->s;
    pb_value *v = pb_deferred_value(d);
    s->inflight--;
    switch (o->what) {
    case W_CHALLENGE:
        if (!s->closing && v && v->type == PB_TUPLE && v->u.seq.len == 2 &&
            v->u.seq.items[1]->type == PB_REMOTE)
            respond(s, (pb_ref *)v->u.seq.items[1]->u.h, v->u.seq.items[0], o);
        break;
    case W_AVATAR:
    case W_AVATAR_SPARE:
        if (v && v->type == PB_REMOTE) {
            st.logins_ok++;
            if (!s->closing)
                set_avatar(s, (pb_ref *)v->u.h);
        } else {
            st.logins_failed++;
        }
        break;
    case W_JOIN:
        st.calls_ok++;
        if (!s->closing && v && v->type == PB_REMOTE) {
            unsigned i = s->groups[0] && s->groups[1] ? below(s, 2) : s->groups[0] ? 1 : 0;
            if (s->groups[i])
                pb_ref_unref(s->groups[i]);
            s->groups[i] = pb_ref_ref((pb_ref *)v->u.h);
        }
        break;
    case W_CALL:
        st.calls_ok++;
        break;
    }
    free(o);
    return 0;
}

static int op_err(pb_deferred *d, void *ud)
{
    op *o = ud;
    const pb_failure *f = pb_deferred_failure(d);
    o->s->inflight--;
    if (o->what == W_AVATAR || o->what == W_AVATAR_SPARE || o->what == W_CHALLENGE) {
        if (is_lost(f))
            st.logins_lost++;
        else
            st.logins_failed++;
    } else if (is_lost(f)) {
        st.calls_lost++;
    } else {
        st.calls_failed++;
    }
    free(o);
    return 0;
}

/* Follow d; takes it. */
static void track(slot *s, pb_deferred *d, op tmpl)
{
    if (!d) {
        st.calls_unsent++;
        return;
    }
    op *o = malloc(sizeof *o);
    if (o) {
        *o = tmpl;
        o->s = s;
        if (pb_deferred_add(d, op_ok, op_err, o))
            free(o);
        else
            s->inflight++;
    }
    pb_deferred_unref(d);
}

static void respond(slot *s, pb_ref *challenger, const pb_value *challenge, const op *o)
{
    uint8_t resp[16];
    const char *pw = o->good ? PASSWORDS[o->user] : "not-the-password";
    if (challenge->type == PB_BYTES)
        pb_cred_response(pw, strlen(pw), (const uint8_t *)challenge->u.s.ptr, challenge->u.s.len,
                         resp);
    else
        memset(resp, 0, sizeof resp);
    op next = {s, W_AVATAR, 0, 0, 0, o->user};
    pb_deferred *d = o->with_mind ? pb_ref_callf(challenger, "respond", "yo", (const char *)resp,
                                                 (size_t)16, &mind)
                                  : pb_ref_callf(challenger, "respond", "yn", (const char *)resp,
                                                 (size_t)16);
    track(s, d, next);
    if (o->twice) { /* one answer per challenge: this one must be refused */
        next.what = W_AVATAR_SPARE;
        track(s, pb_ref_callf(challenger, "respond", "yo", (const char *)resp, (size_t)16, &mind),
              next);
    }
}

static void login(slot *s, int good)
{
    pb_ref *root = pb_broker_root(s->b);
    op o = {s, W_CHALLENGE, good, 0, chance(s, 90), below(s, 3)};
    if (!root)
        return;
    s->logins_started++;
    if (!good) {
        switch (below(s, 6)) {
        case 0: /* anonymous: no checker for it here */
            o.what = W_AVATAR;
            track(s, pb_ref_callf(root, "loginAnonymous", "o", &mind), o);
            return;
        case 1: /* a username that is not text */
            track(s, pb_ref_callf(root, "login", "i", (int64_t)rnd(s)), o);
            return;
        case 2: { /* somebody unknown */
            char name[32];
            snprintf(name, sizeof name, "mallory%u", below(s, 1000));
            track(s, pb_ref_callf(root, "login", "y", name, strlen(name)), o);
            return;
        }
        case 3: /* the right password, twice */
            o.good = o.twice = 1;
            break;
        default: /* a wrong password */
            break;
        }
    }
    const char *u = USERS[o.user];
    track(s, chance(s, 50) ? pb_ref_callf(root, "login", "y", u, strlen(u))
                           : pb_ref_callf(root, "login", "s", u),
          o);
}

static pb_ref *some_group(slot *s)
{
    pb_ref *g = s->groups[below(s, 2)];
    return g ? g : s->groups[0] ? s->groups[0] : s->groups[1];
}

static void chat_message(slot *s, char *buf, size_t cap)
{
    static const char *words[] = {"hello", "mattress", "soak", "\xe2\x98\x83", "lorem", "ipsum"};
    size_t n = (size_t)snprintf(buf, cap, "slot%u", s->idx);
    unsigned nw = chance(s, 5) ? between(s, 100, 600) : between(s, 1, 8);
    for (unsigned i = 0; i < nw && n + 16 < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, " %s", words[below(s, 6)]);
}

/* -------------------------------------------------------- session steps */

static void stall(slot *s)
{
    pb_buf o;
    pb_buf_init(&o);
    put_call(&o, 1000 + below(s, 1000), below(s, 8), "send", 1, 1, "half a message");
    size_t cut = o.len > 1 ? between(s, 1, (unsigned)o.len - 1) : 0;
    flush(s);
    write_bytes(s, o.data, cut);
    pb_buf_free(&o);
    s->stalled = 1;
    st.stalls++;
    s->deadline = uv_now(loop) + between(s, 1000, 8000);
}

static void garbage_now(slot *s)
{
    pb_buf o;
    pb_buf_init(&o);
    switch (below(s, 7)) {
    case 0: put_random(s, &o, between(s, 1, 2048)); break;
    case 1: put_random_banana(s, &o, between(s, 1, 200)); break;
    case 2: put_header(&o, (uint64_t)PB_BANANA_SIZE_LIMIT + 1 + (rnd(s) >> between(s, 1, 40)), 0x82); break;
    case 3: put_header(&o, (uint64_t)PB_BANANA_SIZE_LIMIT + 1 + (rnd(s) >> between(s, 1, 40)), 0x80); break;
    case 4: /* a prefix over the 64-byte limit */
        for (unsigned i = 0, n = between(s, 65, 300); i < n; i++)
            pb_buf_putc(&o, (uint8_t)below(s, 0x80));
        pb_buf_putc(&o, 0x81);
        break;
    case 5: /* nesting past the depth limit */
        for (unsigned i = 0, n = between(s, 65, 2000); i < n; i++)
            put_header(&o, 1, 0x80);
        break;
    default: /* a valid-looking message with a lying length */
        put_call(&o, 1, 0, "login", 1, 1, "alice");
        put_header(&o, 600000, 0x82);
        put_random(s, &o, between(s, 0, 512));
        break;
    }
    send_buf(s, &o);
}

static void forge(slot *s)
{
    pb_buf o;
    pb_buf_init(&o);
    int64_t id = chance(s, 70) ? (int64_t)below(s, 10) : (int64_t)(rnd(s) >> 1) * (chance(s, 50) ? -1 : 1);
    st.forged++;
    switch (below(s, 9)) {
    case 5: /* a reference "back" to a server object we were never given */
    case 6: /* ... or to one of ours that does not exist */
        pb_banana_put_list(&o, 7);
        put_word(&o, "message");
        pb_banana_put_int(&o, 0);
        pb_banana_put_int(&o, (int64_t)below(s, 10));
        put_word(&o, chance(s, 50) ? "joinGroup" : "send");
        pb_banana_put_int(&o, 0);
        pb_banana_put_list(&o, 2);
        put_word(&o, "tuple");
        pb_banana_put_list(&o, 2);
        put_word(&o, chance(s, 50) ? "local" : "remote");
        pb_banana_put_int(&o, id);
        pb_banana_put_list(&o, 1);
        put_word(&o, "dictionary");
        break;
    case 7: { /* deeply nested arguments */
        unsigned depth = between(s, 10, 200);
        pb_banana_put_list(&o, 7);
        put_word(&o, "message");
        pb_banana_put_int(&o, 0);
        pb_banana_put_int(&o, (int64_t)below(s, 10));
        put_word(&o, "send");
        pb_banana_put_int(&o, 0);
        for (unsigned i = 0; i < depth; i++) {
            pb_banana_put_list(&o, 2);
            put_word(&o, "list");
        }
        pb_banana_put_int(&o, 1);
        pb_banana_put_list(&o, 1);
        put_word(&o, "dictionary");
        break;
    }
    case 8: /* cache traffic for caches that do not exist */
        pb_banana_put_list(&o, 2);
        put_word(&o, chance(s, 50) ? "decache" : "uncache");
        pb_banana_put_int(&o, id);
        break;
    case 0: /* decref of an id that may or may not be ours */
        pb_banana_put_list(&o, 2);
        put_word(&o, "decref");
        pb_banana_put_int(&o, id);
        break;
    case 1: /* a call we want answered, on somebody else's id: our broker
               will see an answer it never asked for and hang up */
        put_call(&o, (int64_t)1 << 40 | below(s, 1000), id, "joinGroup", 1, 1, "#soak0");
        break;
    case 2: /* an answer to nothing */
        pb_banana_put_list(&o, 3);
        put_word(&o, chance(s, 50) ? "answer" : "error");
        pb_banana_put_int(&o, (int64_t)rnd(s) >> 20);
        put_word(&o, "None");
        break;
    default: /* a call on an id we were never given, no answer wanted */
        put_call(&o, 0, id, chance(s, 50) ? "send" : "joinGroup", 0, below(s, 3), "forged");
        break;
    }
    send_buf(s, &o);
}

static void pb_step(slot *s)
{
    if (s->inflight >= MAX_INFLIGHT || write_queue(s) > MAX_WRITE_QUEUE)
        return;
    if (s->kind == K_BADLOGIN) {
        if (s->logins_started < 4)
            login(s, chance(s, 10));
        else if (chance(s, 30))
            end_session(s, chance(s, 50) ? RST : FIN);
        return;
    }
    if (!s->avatar) {
        if (s->logins_started < 3 && (s->inflight == 0 || chance(s, 10)))
            login(s, 1);
        else if (chance(s, 5))
            track(s, pb_ref_callf(pb_broker_root(s->b), "nosuchmethod", ""), (op){s, W_CALL, 0, 0, 0, 0});
        else if (s->inflight == 0 && chance(s, 30))
            end_session(s, chance(s, 50) ? RST : FIN);
        return;
    }
    char msg[4096];
    unsigned r = below(s, 100);
    op call = {s, W_CALL, 0, 0, 0, 0};
    if (r < 30) { /* talk */
        pb_ref *g = some_group(s);
        if (!g) {
            r = 30;
        } else {
            chat_message(s, msg, sizeof msg);
            track(s, pb_ref_callf(g, "send", "s", msg), call);
            return;
        }
    }
    if (r < 42) {
        op join = {s, W_JOIN, 0, 0, 0, 0};
        track(s, chance(s, 80) ? pb_ref_callf(s->avatar, "joinGroup", "s", GROUPS[below(s, N_CHAT_GROUPS)])
                               : pb_ref_callf(s->avatar, "joinGroup", "sb", GROUPS[below(s, N_CHAT_GROUPS)],
                                              chance(s, 50)),
              join);
    } else if (r < 50) { /* bad arguments: the signature refuses them */
        pb_ref *g = some_group(s);
        switch (below(s, 5)) {
        case 0: track(s, pb_ref_callf(s->avatar, "joinGroup", "i", (int64_t)42), call); break;
        case 1: track(s, pb_ref_callf(s->avatar, "joinGroup", ""), call); break;
        case 2: track(s, pb_ref_callf(s->avatar, "joinGroup", "ssss", "a", "b", "c", "d"), call); break;
        case 3: track(s, pb_ref_callf(g ? g : s->avatar, "send", "y", "\xff\xfe", (size_t)2), call); break;
        default: track(s, pb_ref_callf(g ? g : s->avatar, "send", "n"), call); break;
        }
    } else if (r < 56) { /* methods nobody has */
        static const char *names[] = {"logout", "__init__", "send", "joinGroup", "", "x.y"};
        pb_ref *g = some_group(s);
        track(s, pb_ref_callf(chance(s, 50) || !g ? s->avatar : g, names[below(s, 6)], "s", "x"), call);
    } else if (r < 61) {
        forge(s);
    } else if (r < 65) { /* log out, maybe log in again later */
        pb_ref_unref(s->avatar);
        s->avatar = NULL;
        st.logouts_sent++;
        if (chance(s, 50))
            s->logins_started = 0;
    } else if (r < 68) {
        unsigned i = below(s, 2);
        if (s->groups[i]) {
            pb_ref_unref(s->groups[i]);
            s->groups[i] = NULL;
        }
    } else if (r < 70) {
        garbage_now(s);
    } else if (r < 73) { /* a slow reader */
        uv_read_stop((uv_stream_t *)&s->tcp);
        s->paused = 1;
        s->resume_at = uv_now(loop) + between(s, 200, 3000);
        st.read_pauses++;
    } else if (r < 75) {
        stall(s);
    } else if (r < 77) {
        end_session(s, RST);
    } else if (r < 79) {
        end_session(s, FIN);
    } else if (r < 81) { /* a second login on the same connection */
        login(s, 1);
    } else if (r < 82) { /* a flood of calls we will not wait for */
        pb_buf o;
        pb_buf_init(&o);
        for (unsigned i = 0, n = between(s, 100, 3000); i < n; i++)
            put_call(&o, (int64_t)1 << 41 | i, (int64_t)below(s, 6), "joinGroup", chance(s, 50), 1,
                     GROUPS[below(s, N_CHAT_GROUPS)]);
        st.forged++;
        send_buf(s, &o);
        if (chance(s, 50)) { /* and read none of the answers for a while */
            uv_read_stop((uv_stream_t *)&s->tcp);
            s->paused = 1;
            s->resume_at = uv_now(loop) + between(s, 200, 3000);
        }
    } else if (r < 83 && chance(s, 30)) { /* one big message for the whole group */
        pb_ref *g = some_group(s);
        size_t n = between(s, 64 << 10, 600 << 10);
        char *big = malloc(n + 1);
        if (g && big) {
            memset(big, 'm', n);
            big[n] = 0;
            track(s, pb_ref_callf(g, "send", "s", big), call);
        }
        free(big);
    } /* else: idle */
}

static void on_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf)
{
    *buf = uv_buf_init(read_buf, sizeof read_buf);
}

static void on_read(uv_stream_t *stream, ssize_t n, const uv_buf_t *buf)
{
    slot *s = stream->data;
    if (s->closing)
        return;
    if (n < 0) { /* EOF or reset: the server hung up on us */
        st.server_closed++;
        if (s->idle)
            st.login_timeouts++;
        end_session(s, FIN);
        return;
    }
    st.bytes_in += (size_t)n;
    if (s->b && n > 0 && !s->want_close)
        pb_broker_feed(s->b, (const uint8_t *)buf->base, (size_t)n);
    after(s);
}

static void on_step(uv_timer_t *t);

static void arm(slot *s, unsigned ms)
{
    if (!s->closing)
        uv_timer_start(&s->timer, on_step, ms, 0);
}

static void step(slot *s)
{
    uint64_t now = uv_now(loop);
    if (s->paused && now >= s->resume_at) {
        s->paused = 0;
        uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read);
    }
    if (now >= s->deadline) {
        end_session(s, chance(s, 50) ? RST : FIN);
        return;
    }
    if (s->stalled)
        return;
    if (s->kind == K_GARBAGE) {
        if (s->drip) {
            uint8_t c = (uint8_t)rnd(s);
            write_bytes(s, &c, 1);
        }
        return;
    }
    if (s->kind == K_DROP) {
        if (s->connected || chance(s, 30))
            end_session(s, RST);
        return;
    }
    if (s->connected && !s->idle)
        pb_step(s);
}

static void on_step(uv_timer_t *t)
{
    slot *s = t->data;
    if (!s->busy) { /* between sessions */
        if (!stopping)
            start_session(s);
        return;
    }
    step(s);
    after(s);
    arm(s, between(s, 5, 200));
}

/* ---------------------------------------------------- broker callbacks */

static void b_output_ready(pb_broker *b, void *ud) { (void)ud; /* flushed by after() */ }
static void b_close(pb_broker *b, int code, const char *msg, void *ud)
{
    ((slot *)ud)->want_close = 1;
}
static void b_connected(pb_broker *b, void *ud) { ((slot *)ud)->connected = 1; }

static const pb_broker_callbacks broker_cb_template = {NULL, b_output_ready, b_close, b_connected,
                                                       NULL, NULL};

/* ------------------------------------------------------------- sessions */

static void on_closed(uv_handle_t *h)
{
    slot *s = h->data;
    s->busy = 0;
    s->closing = 0;
    if (stopping) {
        if (!s->done) {
            s->done = 1;
            slots_done++;
            uv_close((uv_handle_t *)&s->timer, NULL);
        }
        return;
    }
    uv_timer_start(&s->timer, on_step, between(s, 0, 100), 0);
}

static void end_session(slot *s, how h)
{
    if (!s->busy || s->closing)
        return;
    s->closing = 1;
    uv_timer_stop(&s->timer);
    for (int i = 0; i < 2; i++)
        if (s->groups[i]) {
            pb_ref_unref(s->groups[i]);
            s->groups[i] = NULL;
        }
    if (s->avatar) {
        pb_ref_unref(s->avatar);
        s->avatar = NULL;
    }
    if (s->b) { /* fails whatever is pending, with the callbacks seeing closing */
        pb_broker_connection_lost(s->b, "soak: session over");
        pb_broker_free(s->b);
        s->b = NULL;
    }
    if (h == RST) {
        uv_os_fd_t fd;
        struct linger l = {1, 0};
        if (uv_fileno((uv_handle_t *)&s->tcp, &fd) == 0)
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
        st.drops_rst++;
    } else {
        st.closes_fin++;
    }
    uv_close((uv_handle_t *)&s->tcp, on_closed);
}

static void on_connect(uv_connect_t *req, int status)
{
    slot *s = req->data;
    if (s->closing)
        return;
    if (status) {
        st.connect_failed++;
        end_session(s, FIN);
        return;
    }
    st.connections++;
    uv_tcp_nodelay(&s->tcp, 1);
    if (uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read)) {
        end_session(s, FIN);
        return;
    }
    switch (s->kind) {
    case K_PB:
    case K_BADLOGIN: {
        pb_broker_callbacks cb = broker_cb_template;
        cb.ud = s;
        if (!(s->b = pb_broker_new(&client_cfg, &cb, NULL))) {
            end_session(s, FIN);
            return;
        }
        break;
    }
    case K_DROP: { /* reset at once, or once the handshake is done */
        pb_broker_callbacks cb = broker_cb_template;
        cb.ud = s;
        if (chance(s, 50) || !(s->b = pb_broker_new(&client_cfg, &cb, NULL))) {
            end_session(s, RST);
            return;
        }
        break;
    }
    case K_GARBAGE:
        st.garbage++;
        if (chance(s, 50)) { /* choose the dialect first, as a client would */
            pb_buf o;
            pb_buf_init(&o);
            pb_banana_put_bytes(&o, PB_DIALECT_NONE, "pb", 2);
            send_buf(s, &o);
        }
        if (chance(s, 15)) {
            s->drip = 1;
        } else if (chance(s, 10)) {
            stall(s);
        } else {
            garbage_now(s);
        }
        break;
    }
    after(s);
}

static void start_session(slot *s)
{
    unsigned r = below(s, 100);
    s->kind = r < 62 ? K_PB : r < 77 ? K_BADLOGIN : r < 93 ? K_GARBAGE : K_DROP;
    s->b = NULL;
    s->connected = s->want_close = s->stalled = s->paused = s->drip = 0;
    s->logins_started = 0;
    s->inflight = 0;
    s->closing = 0;
    s->deadline = uv_now(loop) + between(s, 300, 6000);
    s->idle = s->kind == K_PB && chance(s, 2);
    if (s->idle) {
        s->deadline = uv_now(loop) + between(s, 31000, 40000);
        st.idlers++;
    }
    if (uv_tcp_init(loop, &s->tcp)) {
        st.connect_failed++;
        uv_timer_start(&s->timer, on_step, 100, 0);
        return;
    }
    s->busy = 1;
    s->tcp.data = s;
    s->connect_req.data = s;
    if (s->kind == K_PB)
        st.sessions_pb++;
    else if (s->kind == K_BADLOGIN)
        st.sessions_badlogin++;
    if (opt_bind) {
        char src[32];
        struct sockaddr_in a;
        if (s->kind == K_BADLOGIN || s->kind == K_GARBAGE)
            snprintf(src, sizeof src, "127.2.0.%u", 1 + below(s, 250));
        else
            snprintf(src, sizeof src, "127.1.%u.%u", s->idx / 250, 1 + s->idx % 250);
        if (uv_ip4_addr(src, 0, &a) == 0)
            uv_tcp_bind(&s->tcp, (const struct sockaddr *)&a, 0);
    }
    struct sockaddr_in dst;
    int rc = uv_ip4_addr(opt_host, opt_port, &dst);
    if (!rc)
        rc = uv_tcp_connect(&s->connect_req, &s->tcp, (const struct sockaddr *)&dst, on_connect);
    if (rc) {
        st.connect_failed++;
        end_session(s, FIN);
        return;
    }
    arm(s, between(s, 5, 100));
}

/* ------------------------------------------------------------- the run */

static void print_counters(FILE *f, const char *tag)
{
    fprintf(f,
            "%s: connections=%llu connect_failed=%llu sessions_pb=%llu sessions_badlogin=%llu "
            "garbage=%llu stalls=%llu drops_rst=%llu closes_fin=%llu server_closed=%llu "
            "self_closed=%llu logins_ok=%llu logins_failed=%llu logins_lost=%llu "
            "logouts_sent=%llu calls_ok=%llu calls_failed=%llu calls_lost=%llu "
            "calls_unsent=%llu delivered=%llu forged=%llu read_pauses=%llu idlers=%llu "
            "login_timeouts=%llu bytes_out=%llu bytes_in=%llu\n",
            tag, st.connections, st.connect_failed, st.sessions_pb, st.sessions_badlogin,
            st.garbage, st.stalls, st.drops_rst, st.closes_fin, st.server_closed, st.self_closed,
            st.logins_ok, st.logins_failed, st.logins_lost, st.logouts_sent, st.calls_ok,
            st.calls_failed, st.calls_lost, st.calls_unsent, st.delivered, st.forged,
            st.read_pauses, st.idlers, st.login_timeouts, st.bytes_out, st.bytes_in);
}

static void on_progress(uv_timer_t *t)
{
    if (opt_quiet)
        return;
    fprintf(stderr, "pbsoak: t=%llus connections=%llu logins_ok=%llu calls_ok=%llu "
                    "delivered=%llu garbage=%llu drops_rst=%llu\n",
            (unsigned long long)((uv_now(loop) - started_at) / 1000), st.connections,
            st.logins_ok, st.calls_ok, st.delivered, st.garbage, st.drops_rst);
}

static void on_all_done_check(uv_timer_t *t);

static void on_stop(uv_timer_t *t)
{
    stopping = 1;
    for (unsigned i = 0; i < opt_clients; i++) {
        slot *s = &slots[i];
        if (s->busy) {
            end_session(s, below(s, 2) ? RST : FIN); /* on_closed finishes the slot */
        } else if (!s->done) {
            uv_timer_stop(&s->timer);
            s->done = 1;
            slots_done++;
            uv_close((uv_handle_t *)&s->timer, NULL);
        }
    }
    uv_timer_stop(&progress_timer);
    uv_timer_start(&stop_timer, on_all_done_check, 50, 50);
}

static void on_all_done_check(uv_timer_t *t)
{
    if (slots_done < opt_clients)
        return;
    uv_close((uv_handle_t *)&stop_timer, NULL);
    uv_close((uv_handle_t *)&hard_timer, NULL);
    uv_close((uv_handle_t *)&progress_timer, NULL);
}

static void on_hard_timeout(uv_timer_t *t)
{
    print_counters(stdout, "pbsoak");
    fprintf(stderr, "pbsoak: did not wind down in time (%u of %u slots done)\n", slots_done,
            opt_clients);
    exit(1);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: pbsoak --port N [--host 127.0.0.1] [--clients 300] [--duration 60]\n"
               "              [--seed S] [--no-bind] [--quiet]\n"
               "Chaos soak of a PB chat server on loopback; see tools/pbsoak.c.\n");
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(k, "--no-bind")) {
            opt_bind = 0;
        } else if (!strcmp(k, "--quiet")) {
            opt_quiet = 1;
        } else if (!strcmp(k, "-h") || !strcmp(k, "--help")) {
            usage(stdout);
            return 0;
        } else if (v && !strcmp(k, "--host")) {
            opt_host = argv[++i];
        } else if (v && !strcmp(k, "--port")) {
            opt_port = atoi(argv[++i]);
        } else if (v && !strcmp(k, "--clients")) {
            opt_clients = (unsigned)strtoul(argv[++i], NULL, 10);
        } else if (v && !strcmp(k, "--duration")) {
            opt_duration = (unsigned)strtoul(argv[++i], NULL, 10);
        } else if (v && !strcmp(k, "--seed")) {
            opt_seed = strtoull(argv[++i], NULL, 0);
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (opt_port <= 0 || opt_port > 65535 || opt_clients == 0 || opt_clients > MAX_CLIENTS ||
        opt_duration == 0 || opt_duration > 3600 || strncmp(opt_host, "127.", 4) != 0) {
        usage(stderr);
        fprintf(stderr, "pbsoak: need a port, 1..%d clients, 1..3600 s, a 127.x.x.x host\n",
                MAX_CLIENTS);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    loop = uv_default_loop();
    pb_broker_config_default(&client_cfg);
    pb_object_init(&mind, &Mind);
    if (!(slots = calloc(opt_clients, sizeof *slots)))
        return 1;
    started_at = uv_now(loop);
    for (unsigned i = 0; i < opt_clients; i++) {
        slot *s = &slots[i];
        s->idx = i;
        s->rng = opt_seed * 0x100000001b3ull + i;
        rnd(s);
        uv_timer_init(loop, &s->timer);
        s->timer.data = s;
        /* spread the first connects over a second */
        uv_timer_start(&s->timer, on_step, between(s, 0, 1000), 0);
    }
    uv_timer_init(loop, &stop_timer);
    uv_timer_init(loop, &hard_timer);
    uv_timer_init(loop, &progress_timer);
    uv_timer_start(&stop_timer, on_stop, (uint64_t)opt_duration * 1000, 0);
    uv_timer_start(&hard_timer, on_hard_timeout, (uint64_t)opt_duration * 1000 + 30000, 0);
    uv_timer_start(&progress_timer, on_progress, 10000, 10000);
    fprintf(stderr, "pbsoak: %u clients against %s:%d for %u s, seed %llu\n", opt_clients,
            opt_host, opt_port, opt_duration, (unsigned long long)opt_seed);
    uv_run(loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(loop);
    free(slots);
    print_counters(stdout, "pbsoak");
    if (rc) {
        fprintf(stderr, "pbsoak: handles left open at exit\n");
        return 1;
    }
    if (mind.h.refs != 1) { /* every broker let go of the mind it exported */
        fprintf(stderr, "pbsoak: the mind object still has %lu references\n", mind.h.refs);
        return 1;
    }
    if (!st.logins_ok || !st.calls_ok || !st.delivered) {
        fprintf(stderr, "pbsoak: the run proved nothing (no login, call or delivery)\n");
        return 1;
    }
    return 0;
}
