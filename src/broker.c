/*
 * broker.c - the Perspective Broker protocol engine, sans I/O.
 *
 * One pb_broker per connection.  Bytes come in through pb_broker_feed and
 * are cut into Banana expressions; each top-level list is a PB command
 * (SPEC §5).  Everything we send is appended to one pb_buf that the
 * transport drains.  Time only enters through pb_broker_tick.
 *
 * Tables (SPEC §4), all per connection:
 *   exports  LUID -> export      what the peer may call (plus "root")
 *   rev      (object, perspective) -> export, so an object keeps its LUID
 *   imports  (LUID, avatar) -> pb_ref, one ref counting every token
 *   pending  request id -> our outstanding call (or its tombstone)
 *
 * Lifetimes.  Objects that outlive the broker (pb_ref, pb_call) hold a
 * reference to a small "liveness" record whose b is cleared when the
 * broker is freed, so a late unref or a late answer is harmless.  A
 * broker freed from inside one of its own callbacks is freed when the
 * outermost entry point returns (busy counter).
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "arena_int.h"
#include "broker_int.h"
#include "broker_map.h"
#include "cache_int.h"
#include "tlcache_int.h"

enum { ST_HANDSHAKE, ST_CONNECTED, ST_FATAL, ST_LOST };
enum { EX_ROOT, EX_OBJECT, EX_VIEWPOINT, EX_WRAPPER };

#define PING_OBJECT "__pb_idle_ping__" /* no such object: the peer answers a pb.Error, unlogged */

typedef struct pb_live {
    unsigned long refs;
    pb_broker *b; /* NULL once the broker is freed */
} pb_live;

typedef struct export {
    uint64_t luid;    /* 0 for the root */
    int kind;         /* EX_* */
    pb_object *obj;   /* the object, the viewable, or the avatar wrapper (reference held) */
    pb_object *persp; /* viewpoint: the avatar it is bound to (reference held), or NULL */
    unsigned long refs;
} export;

/* The per-login wrapper pb_broker_export_avatar sends (AsReferenceable). */
typedef struct wrapper {
    pb_object obj; /* first: cls == &wrapper_class */
    pb_object *avatar;
    void (*on_release)(void *ud);
    void *ud;
    int released;
    struct wrapper *next; /* broker's list of unreleased wrappers (list holds one reference) */
} wrapper;

typedef struct note {
    pb_disconnect_fn fn;
    void *ud;
} note;

struct pb_ref {
    pb_handle h;
    pb_live *lv;
    uint64_t luid;
    int is_root;
    unsigned long tokens; /* (remote N) tokens received: one decref each */
    uint64_t pk;          /* second half of its imports key (the avatar at arrival) */
    pb_object *avatar;    /* perspective it arrived under (reference held until detached) */
    note *notes;
    size_t nnotes, capnotes;
};

typedef struct pending {
    uint64_t req;
    pb_deferred *d; /* NULL: tombstone (timed out / cancelled) or idle ping */
    uint64_t deadline;
    int ping;
    pb_broker *b;
} pending;

typedef struct hent {
    uint64_t deadline, req;
} hent;

typedef struct lost_cb {
    uint64_t id;
    void (*fn)(void *ud);
    void *ud;
} lost_cb;

struct pb_call {
    unsigned long refs;
    pb_live *lv;
    pb_arena *arena;
    int64_t req;
    int answer_required, answered, deferred, counted;
    const char *method;
    pb_object *persp; /* the avatar the call runs under (reference held) */
};

/* What a jelly hook needs while encoding / decoding one value. */
typedef struct journal_ent {
    export *e;
    int created;
} journal_ent;

typedef struct enc_ctx {
    pb_broker *b;
    pb_object *persp;
    journal_ent *j;
    size_t nj, capj;
    int thirdparty, limit; /* limit 2: the cache count limit */
    void *cj;              /* cache registrations of this message (cache.c) */
} enc_ctx;

typedef struct dec_ctx {
    pb_broker *b;
    pb_object *persp;
} dec_ctx;

struct pb_broker {
    const pb_broker_config *cfg; /* shared by brokers with equal settings (cfg_intern) */
    pb_broker_callbacks cb;
    pb_live *lv;
    int state, fatal_code;
    char *errmsg;    /* why it failed / closed (malloc'd when it happens), or NULL */
    pb_dialect dialect;
    pb_banana_dec *dec; /* NULL while idle: parked in the thread's cache */
    uint64_t dec_off;   /* stream offset while the decoder is parked */
    pb_buf out;
    uint64_t next_req, next_luid;
    pb_object *root_obj;
    export *root_export; /* NULL when there is no root (or the peer decref'd it) */
    kmap exports, rev, imports, pending;
    size_t npending; /* live (non-tombstone, non-ping) pending calls */
    uint64_t *tomb;  /* FIFO of tombstoned request ids */
    size_t tomb_head, tomb_len, tomb_cap;
    hent *heap;
    size_t nheap, capheap;
    pb_ref *root_ref;
    wrapper *wrappers;
    lost_cb *lost;
    size_t nlost, caplost;
    uint64_t next_lost_id;
    uint64_t now, last_rx;
    int have_now, ping_outstanding;
    size_t inflight;
    unsigned refs_violations;
    int busy, free_pending;
    void *userdata;
    pb_broker_stats st;
    pb__caches *caches; /* Cacheable / RemoteCache tables (cache.c) */
    int send_cache;     /* send_message writes cachemessage */
    /* recycling, so the steady state of a call allocates nothing */
    pb__dpool *dpool;       /* unused deferreds (records and arenas: tlcache.c) */
};

static void wrapper_destroy(pb_object *o);
static const pb_class wrapper_class = {"AsReferenceable", PB_AVATAR, NULL, wrapper_destroy};

static void fatal(pb_broker *b, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static void really_free(pb_broker *b);
static void lost_internal(pb_broker *b, const char *why);

/* ---------------------------------------------------------------- helpers */

static void logf_(pb_broker *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void logf_(pb_broker *b, const char *fmt, ...) {
    if (!b->cb.log) return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    b->cb.log(b, msg, b->cb.ud);
}

/* Settings are shared: a server's connections all have the same, and
 * 100,000 copies of them would be 10 MB.  Interned in a list guarded by a
 * mutex (brokers of several loops may come and go at once). */
typedef struct cfg_ent {
    pb_broker_config c; /* first */
    unsigned long refs;
    struct cfg_ent *next;
} cfg_ent;
static cfg_ent *g_cfgs;
static pthread_mutex_t g_cfg_mu = PTHREAD_MUTEX_INITIALIZER;

static const pb_broker_config *cfg_intern(const pb_broker_config *n) {
    pthread_mutex_lock(&g_cfg_mu);
    cfg_ent *e = g_cfgs;
    while (e && memcmp(&e->c, n, sizeof *n) != 0) e = e->next;
    if (!e && (e = malloc(sizeof *e)) != NULL) {
        e->c = *n;
        e->refs = 0;
        e->next = g_cfgs;
        g_cfgs = e;
    }
    if (e) e->refs++;
    pthread_mutex_unlock(&g_cfg_mu);
    return e ? &e->c : NULL;
}

static void cfg_release(const pb_broker_config *c) {
    if (!c) return;
    pthread_mutex_lock(&g_cfg_mu);
    for (cfg_ent **pe = &g_cfgs; *pe; pe = &(*pe)->next)
        if (&(*pe)->c == c) {
            cfg_ent *e = *pe;
            if (--e->refs == 0) {
                *pe = e->next;
                free(e);
            }
            break;
        }
    pthread_mutex_unlock(&g_cfg_mu);
}

static void live_unref(pb_live *lv) {
    if (lv && --lv->refs == 0) free(lv);
}

static void enter(pb_broker *b) { b->busy++; }
static void leave(pb_broker *b) {
    if (--b->busy == 0 && b->free_pending) really_free(b);
}

/* Keep msg as the broker's error text (a static text on ENOMEM). */
static char g_oom_msg[] = "out of memory";
static void free_errmsg(pb_broker *b) {
    if (b->errmsg != g_oom_msg) free(b->errmsg);
    b->errmsg = NULL;
}
static void set_errmsg(pb_broker *b, const char *msg) {
    char *m = strdup(msg);
    free_errmsg(b);
    b->errmsg = m ? m : g_oom_msg;
}

static void fatal(pb_broker *b, int code, const char *fmt, ...) {
    if (b->state == ST_FATAL || b->state == ST_LOST) return;
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    set_errmsg(b, msg);
    b->state = ST_FATAL;
    b->fatal_code = code;
    logf_(b, "closing: %s", b->errmsg);
    if (b->cb.close) b->cb.close(b, code, b->errmsg, b->cb.ud);
}

static int connected(const pb_broker *b) { return b->state == ST_CONNECTED; }

/* The current time: the application's clock if it gave one, else the last tick. */
static uint64_t now_of(const pb_broker *b) { return b->cb.now_ms ? b->cb.now_ms(b->cb.ud) : b->now; }

/* Records of calls come from small per-broker free lists. */
/* Records of calls come from the thread's cache (tlcache.c), so an idle
 * connection keeps none and a busy one allocates none. */
static pending *pending_new(pb_broker *b) {
    (void)b;
    pending *p = pb__tl_blk_get(sizeof *p);
    if (p) memset(p, 0, sizeof *p);
    return p;
}

static void pending_free(pb_broker *b, pending *p) {
    (void)b;
    pb__tl_blk_put(p, sizeof *p);
}

/* The arena holding the expression just decoded, for the caller to keep;
 * the decoder goes on with an empty one from the pool.  NULL on ENOMEM. */
static pb_arena *take_msg_arena(pb_broker *b) {
    pb_arena *fresh = pb__pool_arena_get(b->dpool);
    pb_arena *a = pb__banana_dec_swap_arena(b->dec, fresh);
    if (!a) pb__pool_arena_park(b->dpool, fresh);
    return a;
}

/* Output: every message is written whole or not at all. */
static void out_done(pb_broker *b, size_t before) {
    if (b->out.len == before) return;
    b->st.messages_out++;
    b->st.bytes_out += b->out.len - before;
    if (before == 0 && b->cb.output_ready) b->cb.output_ready(b, b->cb.ud);
}

static int put_word(pb_broker *b, const char *w) {
    return pb_banana_put_bytes(&b->out, b->dialect, w, strlen(w));
}

/* ------------------------------------------------------------------ objects */

static void object_handle_destroy(pb_handle *h) {
    pb_object *o = (pb_object *)h;
    if (o->cls && o->cls->destroy) o->cls->destroy(o);
}

void pb_object_init(pb_object *o, const pb_class *cls) {
    if (!o) return;
    o->h.refs = 1;
    o->h.destroy = object_handle_destroy;
    o->cls = cls;
    o->impl = NULL;
}

pb_object *pb_object_ref(pb_object *o) {
    if (o) pb_handle_incref(&o->h);
    return o;
}

void pb_object_unref(pb_object *o) {
    if (o) pb_handle_decref(&o->h);
}

pb_value *pb_object_value(pb_arena *a, pb_object *o) {
    return a && o ? pb_handle_value(a, PB_OBJECT, &o->h) : NULL;
}

static void wrapper_destroy(pb_object *o) {
    wrapper *w = (wrapper *)o;
    pb_object_unref(w->avatar);
    free(w);
}

static void wrapper_release(pb_broker *b, wrapper *w) {
    if (w->released) return;
    w->released = 1;
    for (wrapper **p = &b->wrappers; *p; p = &(*p)->next)
        if (*p == w) {
            *p = w->next;
            break;
        }
    if (w->on_release) w->on_release(w->ud);
    pb_object_unref(&w->obj); /* the list's reference */
}

/* ------------------------------------------------------------------ exports */

static export *export_lookup(pb_broker *b, const pb_value *id) {
    if (!id) return NULL;
    if (id->type == PB_INT) return id->u.i > 0 ? kmap_get(&b->exports, (uint64_t)id->u.i, 0) : NULL;
    if (pb_value_is(id, "root")) return b->root_export;
    return NULL;
}

static void export_free(pb_broker *b, export *e) {
    if (e->kind == EX_WRAPPER) wrapper_release(b, (wrapper *)e->obj);
    pb_object_unref(e->persp);
    pb_object_unref(e->obj);
    free(e);
}

/* Forget an entry (refcount reached 0). */
static void export_remove(pb_broker *b, export *e) {
    if (e->kind == EX_ROOT) {
        b->root_export = NULL;
    } else {
        kmap_del(&b->exports, e->luid, 0);
        kmap_del(&b->rev, (uint64_t)(uintptr_t)e->obj, (uint64_t)(uintptr_t)e->persp);
    }
    export_free(b, e);
}

/* The reverse table (object, perspective) -> export is only built once a
 * connection exports more than REV_SMALL objects: most connections export
 * two or three (an avatar, a group), and a scan of those is cheaper than
 * a table per connection. */
#define REV_SMALL 8

static export *export_find(pb_broker *b, pb_object *o, pb_object *persp) {
    if (b->rev.cap) return kmap_get(&b->rev, (uint64_t)(uintptr_t)o, (uint64_t)(uintptr_t)persp);
    for (size_t i = 0; i < b->exports.cap; i++) {
        export *e = b->exports.e[i].v;
        if (e && e->obj == o && e->persp == persp) return e;
    }
    return NULL;
}

/* e was just added to exports: index it in rev (building rev when the
 * exports outgrow a scan).  0, or -1 when out of memory (rev unchanged). */
static int rev_add(pb_broker *b, export *e) {
    if (b->rev.cap)
        return kmap_put(&b->rev, (uint64_t)(uintptr_t)e->obj, (uint64_t)(uintptr_t)e->persp, e);
    if (b->exports.len <= REV_SMALL) return 0;
    for (size_t i = 0; i < b->exports.cap; i++) {
        export *x = b->exports.e[i].v;
        if (x && kmap_put(&b->rev, (uint64_t)(uintptr_t)x->obj, (uint64_t)(uintptr_t)x->persp, x)) {
            kmap_free(&b->rev); /* stay with scanning */
            return -1;
        }
    }
    return 0;
}

static size_t export_count(const pb_broker *b) { return b->exports.len + (b->root_export ? 1 : 0); }

static int journal_add(enc_ctx *c, export *e, int created) {
    if (c->nj == c->capj) {
        size_t cap = c->capj ? c->capj * 2 : 8;
        journal_ent *j = realloc(c->j, cap * sizeof *j);
        if (!j) return PB_ENOMEM;
        c->j = j;
        c->capj = cap;
    }
    c->j[c->nj++] = (journal_ent){e, created};
    return PB_OK;
}

/* Undo the registrations of a failed encode, newest first. */
static void journal_rollback(enc_ctx *c) {
    while (c->nj) {
        journal_ent je = c->j[--c->nj];
        if (je.created) export_remove(c->b, je.e);
        else je.e->refs--;
    }
    if (c->cj) pb__cache_journal_end(c->b, &c->cj, 1);
}

static void journal_free(enc_ctx *c) {
    if (c->cj) pb__cache_journal_end(c->b, &c->cj, 0);
    free(c->j);
    c->j = NULL;
    c->nj = c->capj = 0;
}

/* Register (or incref) o as seen under the serializing perspective. */
static int export_register(enc_ctx *c, pb_object *o, export **out, pb_errbuf *err) {
    pb_broker *b = c->b;
    int kind = o->cls == &wrapper_class              ? EX_WRAPPER
               : o->cls && o->cls->flavor == PB_VIEWABLE ? EX_VIEWPOINT
                                                     : EX_OBJECT;
    pb_object *persp = kind == EX_VIEWPOINT ? c->persp : NULL;
    if (kind == EX_WRAPPER && ((wrapper *)o)->released)
        return pb_err_set(err, PB_ESTATE, "the avatar was already released");
    /* the root object sent as a value gets a LUID of its own, as in
     * Twisted ("root" is a name, not an identity) */
    export *e = export_find(b, o, persp);
    if (e) {
        if (journal_add(c, e, 0)) return pb_err_set(err, PB_ENOMEM, "out of memory");
        e->refs++;
        *out = e;
        return PB_OK;
    }
    if (export_count(b) > b->cfg->max_refs) {
        c->limit = 1;
        return pb_err_set(err, PB_ELIMIT, "Maximum PB reference count exceeded.");
    }
    e = calloc(1, sizeof *e);
    if (!e) return pb_err_set(err, PB_ENOMEM, "out of memory");
    e->luid = ++b->next_luid;
    e->kind = kind;
    e->obj = pb_object_ref(o);
    e->persp = pb_object_ref(persp);
    e->refs = 1;
    if (kmap_put(&b->exports, e->luid, 0, e)) goto oom;
    if (rev_add(b, e)) {
        kmap_del(&b->exports, e->luid, 0);
        goto oom;
    }
    if (journal_add(c, e, 1)) {
        export_remove(b, e);
        return pb_err_set(err, PB_ENOMEM, "out of memory");
    }
    *out = e;
    return PB_OK;
oom:
    pb_object_unref(e->persp);
    pb_object_unref(e->obj);
    free(e);
    return pb_err_set(err, PB_ENOMEM, "out of memory");
}

/* jelly hook: PB_REMOTE -> (local N) / (local "root"); PB_OBJECT -> (remote N) */
static int hook_encode(void *ud, pb_buf *out, pb_dialect d, const pb_value *v, pb_errbuf *err) {
    enc_ctx *c = ud;
    int rc;
    if (v->type == PB_REMOTE) {
        pb_ref *r = (pb_ref *)v->u.h;
        if (r->lv != c->b->lv) {
            c->thirdparty = 1;
            return pb_err_set(err, PB_ETHIRDPARTY,
                              "a reference from another connection cannot be sent here");
        }
        if ((rc = pb_banana_put_list(out, 2)) || (rc = pb_banana_put_bytes(out, d, "local", 5)))
            return rc;
        return r->is_root ? pb_banana_put_bytes(out, d, "root", 4)
                          : pb_banana_put_int(out, (int64_t)r->luid);
    }
    if (v->type != PB_OBJECT || !v->u.h)
        return pb_err_set(err, PB_EUNSENDABLE, "not a reference");
    const pb_class *ocls = ((pb_object *)v->u.h)->cls;
    if (ocls && (ocls->flavor == PB_CACHEABLE || ocls->flavor == PB_REMOTE_CACHE)) {
        pb_jelly_hooks ch = {c, hook_encode, NULL};
        int lim = 0;
        rc = pb__cache_encode(c->b, c->persp, out, d, (pb_object *)v->u.h, &ch, &c->cj, &lim, err);
        if (lim) c->limit = 2;
        return rc;
    }
    export *e = NULL;
    if ((rc = export_register(c, (pb_object *)v->u.h, &e, err))) return rc;
    if ((rc = pb_banana_put_list(out, 2)) || (rc = pb_banana_put_bytes(out, d, "remote", 6)) ||
        (rc = pb_banana_put_int(out, (int64_t)e->luid)))
        return rc;
    return PB_OK;
}

/* ------------------------------------------------------------- references */

static void ref_detach(pb_ref *r) {
    pb_object *a = r->avatar;
    r->avatar = NULL;
    free(r->notes);
    r->notes = NULL;
    r->nnotes = r->capnotes = 0;
    pb_object_unref(a);
}

static void ref_handle_destroy(pb_handle *h) {
    pb_ref *r = (pb_ref *)h;
    pb_broker *b = r->lv->b;
    if (b && !r->is_root) {
        if (kmap_get(&b->imports, r->luid, r->pk) == r) kmap_del(&b->imports, r->luid, r->pk);
        if (connected(b)) {
            /* one decref per token received, as Twisted sends one per RemoteReference */
            size_t before = b->out.len;
            for (unsigned long i = 0; i < r->tokens; i++) {
                size_t at = b->out.len;
                if (pb_banana_put_list(&b->out, 2) || put_word(b, "decref") ||
                    pb_banana_put_int(&b->out, (int64_t)r->luid)) {
                    b->out.len = at;
                    break;
                }
                if (i + 1 < r->tokens) b->st.messages_out++;
            }
            out_done(b, before);
        }
    }
    ref_detach(r);
    live_unref(r->lv);
    free(r);
}

static pb_ref *ref_new(pb_broker *b, uint64_t luid, int is_root, pb_object *avatar) {
    pb_ref *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->h.refs = 1;
    r->h.destroy = ref_handle_destroy;
    r->lv = b->lv;
    b->lv->refs++;
    r->luid = luid;
    r->is_root = is_root;
    r->avatar = pb_object_ref(avatar);
    r->pk = (uint64_t)(uintptr_t)avatar;
    return r;
}

pb_ref *pb_ref_ref(pb_ref *r) {
    if (r) pb_handle_incref(&r->h);
    return r;
}

void pb_ref_unref(pb_ref *r) {
    if (r) pb_handle_decref(&r->h);
}

pb_broker *pb_ref_broker(const pb_ref *r) { return r ? r->lv->b : NULL; }

pb_value *pb_ref_value(pb_arena *a, pb_ref *r) {
    return a && r ? pb_handle_value(a, PB_REMOTE, &r->h) : NULL;
}

void *pb_ref_avatar(const pb_ref *r) { return r ? r->avatar : NULL; }

int pb_ref_notify_on_disconnect(pb_ref *r, pb_disconnect_fn fn, void *ud) {
    if (!r || !fn) return PB_EINVAL;
    pb_broker *b = r->lv->b;
    if (!b || b->state == ST_LOST) return PB_ECLOSED;
    if (r->nnotes == r->capnotes) {
        size_t cap = r->capnotes ? r->capnotes * 2 : 2;
        note *n = realloc(r->notes, cap * sizeof *n);
        if (!n) return PB_ENOMEM;
        r->notes = n;
        r->capnotes = cap;
    }
    r->notes[r->nnotes++] = (note){fn, ud};
    return PB_OK;
}

int pb_ref_dont_notify_on_disconnect(pb_ref *r, pb_disconnect_fn fn, void *ud) {
    if (!r) return PB_EINVAL;
    for (size_t i = 0; i < r->nnotes; i++)
        if (r->notes[i].fn == fn && r->notes[i].ud == ud) {
            memmove(&r->notes[i], &r->notes[i + 1], (r->nnotes - i - 1) * sizeof *r->notes);
            r->nnotes--;
            return PB_OK;
        }
    return PB_ENOTFOUND;
}

/* jelly hook: (remote N) -> pb_ref; (local N) -> our object; caches refused */
static int hook_decode(void *ud, pb_arena *a, const char *tag, const pb_value *sexp,
                       pb_value **out, pb_errbuf *err) {
    dec_ctx *c = ud;
    pb_broker *b = c->b;
    const pb_value *id = sexp->u.seq.len == 2 ? sexp->u.seq.items[1] : NULL;
    if (!strcmp(tag, "remote")) {
        if (!id || id->type != PB_INT) return pb_err_set(err, PB_EJELLY, "malformed remote reference");
        uint64_t luid = (uint64_t)id->u.i, pk = (uint64_t)(uintptr_t)c->persp;
        pb_ref *r = kmap_get(&b->imports, luid, pk);
        if (r) {
            pb_ref_ref(r);
        } else {
            if (!(r = ref_new(b, luid, 0, c->persp))) return pb_err_set(err, PB_ENOMEM, "out of memory");
            if (kmap_put(&b->imports, luid, pk, r)) {
                ref_detach(r);
                live_unref(r->lv);
                free(r);
                return pb_err_set(err, PB_ENOMEM, "out of memory");
            }
        }
        r->tokens++;
        *out = pb_ref_value(a, r);
        pb_ref_unref(r); /* drop our temporary hold: the value keeps it (or decref goes out) */
        return *out ? PB_OK : pb_err_set(err, PB_ENOMEM, "out of memory");
    }
    if (!strcmp(tag, "local")) {
        if (!id) return pb_err_set(err, PB_EJELLY, "malformed local reference");
        export *e = export_lookup(b, id);
        pb_object *o = NULL;
        if (e) o = e->kind == EX_WRAPPER ? ((wrapper *)e->obj)->avatar : e->obj;
        *out = o ? pb_object_value(a, o) : pb_none(a); /* unknown: None, as Twisted */
        return *out ? PB_OK : pb_err_set(err, PB_ENOMEM, "out of memory");
    }
    return pb__cache_decode(b, a, tag, sexp, out, err); /* cached, lcache */
}

static void opts_for(pb_broker *b, pb_jelly_opts *o, pb_jelly_hooks *h) {
    memset(o, 0, sizeof *o);
    o->registry = b->cfg->registry;
    o->hooks = h;
    o->max_depth = b->cfg->limits.max_depth;
}

/* Unjelly x into arena a with references bound to persp. */
static int unjelly(pb_broker *b, pb_arena *a, const pb_value *x, pb_object *persp, pb_value **out,
                   pb_errbuf *err) {
    dec_ctx c = {b, persp};
    pb_jelly_hooks h = {&c, NULL, hook_decode};
    pb_jelly_opts o;
    opts_for(b, &o, &h);
    o.share_bytes = 1;
    pb__cache_dctx cc = {b, persp}; /* for (TAG LUID STATE) caches */
    const pb__cache_dctx *prev = pb__cache_cur;
    pb__cache_cur = &cc;
    int rc = pb_unjelly(a, x, &o, out, err);
    pb__cache_cur = prev;
    return rc;
}

/* Append the jelly of v (or the empty tuple/dict form `empty`). */
static int jelly(enc_ctx *c, const pb_value *v, const char *empty, pb_errbuf *err) {
    pb_broker *b = c->b;
    if (!v) {
        int rc = pb_banana_put_list(&b->out, 1);
        return rc ? rc : put_word(b, empty);
    }
    pb_jelly_hooks h = {c, hook_encode, NULL};
    pb_jelly_opts o;
    opts_for(b, &o, &h);
    return pb_jelly_encode(&b->out, b->dialect, v, &o, err);
}

/* ---------------------------------------------------------- outgoing calls */

static void heap_push(pb_broker *b, uint64_t deadline, uint64_t req) {
    if (b->nheap == b->capheap) {
        size_t cap = b->capheap ? b->capheap * 2 : 16;
        hent *h = realloc(b->heap, cap * sizeof *h);
        if (!h) return; /* the call simply never times out */
        b->heap = h;
        b->capheap = cap;
    }
    size_t i = b->nheap++;
    while (i && b->heap[(i - 1) / 2].deadline > deadline) {
        b->heap[i] = b->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    b->heap[i] = (hent){deadline, req};
}

static hent heap_pop(pb_broker *b) {
    hent top = b->heap[0], last = b->heap[--b->nheap];
    size_t i = 0, n = b->nheap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && b->heap[c + 1].deadline < b->heap[c].deadline) c++;
        if (b->heap[c].deadline >= last.deadline) break;
        b->heap[i] = b->heap[c];
        i = c;
    }
    if (n) b->heap[i] = last;
    return top;
}

/* A timed-out or cancelled call: forget its deferred but keep the request
 * id, so that a late answer is dropped instead of being fatal.  The
 * oldest tombstones are forgotten beyond max_pending_calls of them. */
static void tombstone(pb_broker *b, pending *p) {
    if (p->d) b->npending--;
    p->d = NULL;
    p->deadline = 0;
    if (b->tomb_len == b->tomb_cap) {
        size_t cap = b->tomb_cap ? b->tomb_cap * 2 : 16;
        uint64_t *t = malloc(cap * sizeof *t);
        if (!t) {
            pending_free(b, kmap_del(&b->pending, p->req, 0));
            return;
        }
        for (size_t i = 0; i < b->tomb_len; i++) t[i] = b->tomb[(b->tomb_head + i) % b->tomb_cap];
        free(b->tomb);
        b->tomb = t;
        b->tomb_head = 0;
        b->tomb_cap = cap;
    }
    b->tomb[(b->tomb_head + b->tomb_len++) % b->tomb_cap] = p->req;
    while (b->tomb_len > b->cfg->max_pending_calls) {
        uint64_t old = b->tomb[b->tomb_head];
        b->tomb_head = (b->tomb_head + 1) % b->tomb_cap;
        b->tomb_len--;
        pending *q = kmap_get(&b->pending, old, 0);
        if (q && !q->d && !q->ping) pending_free(b, kmap_del(&b->pending, old, 0));
    }
}

static void call_canceller(pb_deferred *d, void *ud) {
    pending *p = ud; /* alive: the deferred has not fired, so p is still pending */
    pb_broker *b = p->b;
    (void)d;
    tombstone(b, p);
    pb_deferred_unref(d); /* the reference the pending entry held */
}

/* Keyword names must go out as text: copy bytes keys as str. */
static int text_kwargs(pb_arena *a, const pb_value *kw, const pb_value **out) {
    *out = kw;
    if (!kw) return PB_OK;
    if (kw->type != PB_DICT) return PB_EINVAL;
    int need = 0;
    for (size_t i = 0; i < kw->u.dict.len; i++) {
        const pb_value *k = kw->u.dict.kv[2 * i];
        if (k->type == PB_BYTES) need = 1;
        else if (k->type != PB_STR) return PB_EINVAL;
    }
    if (!need) return PB_OK;
    pb_value *d = pb_dict(a, kw->u.dict.len);
    if (!d) return PB_ENOMEM;
    for (size_t i = 0; i < kw->u.dict.len; i++) {
        const pb_value *k = kw->u.dict.kv[2 * i];
        pb_value *nk = k->type == PB_STR ? (pb_value *)k : pb_str(a, k->u.s.ptr, k->u.s.len);
        if (!nk) return PB_EINVAL;
        if (pb_dict_append(a, d, nk, kw->u.dict.kv[2 * i + 1])) return PB_ENOMEM;
    }
    *out = d;
    return PB_OK;
}

/* Send (message REQ OBJ NAME ANSWER ARGS KW).  objname: a byte-string
 * object id (root, ping) or NULL to use luid.  With want_d, *d gets a new
 * deferred (one reference for the caller, one for the pending entry). */
static int send_message(pb_broker *b, uint64_t luid, const char *objname, const char *method,
                        const pb_value *args, const pb_value *kwargs, pb_object *persp,
                        int answer, unsigned timeout_ms, int ping, pb_deferred **dout,
                        pb_errbuf *err) {
    if (dout) *dout = NULL;
    if (!connected(b)) return pb_err_set(err, PB_ECLOSED, "connection is closed");
    if (!method) return pb_err_set(err, PB_EINVAL, "no method name");
    if (answer && !ping && b->npending >= b->cfg->max_pending_calls)
        return pb_err_set(err, PB_ELIMIT, "too many outstanding calls (%zu)", b->npending);
    if (b->out.len >= b->cfg->max_output)
        return pb_err_set(err, PB_ELIMIT, "output buffer full (%zu bytes queued)", b->out.len);
    if (args && args->type != PB_TUPLE && args->type != PB_LIST)
        return pb_err_set(err, PB_EINVAL, "arguments must be a tuple");
    pb_arena *tmp = NULL;
    const pb_value *kw = kwargs;
    int rc;
    if (kwargs) {
        if (!(tmp = pb_arena_new(0))) return pb_err_set(err, PB_ENOMEM, "out of memory");
        if ((rc = text_kwargs(tmp, kwargs, &kw))) {
            pb_arena_free(tmp);
            return pb_err_set(err, rc, "keyword arguments must be a dict with text keys");
        }
    }
    pending *p = NULL;
    pb_deferred *d = NULL;
    if (answer) {
        p = pending_new(b);
        if (!ping && !b->dpool) b->dpool = pb__dpool_new(); /* made by the first call */
        if (!ping) d = pb__deferred_new_pooled(b->dpool);
        if (!p || (!ping && !d)) {
            pending_free(b, p);
            pb_deferred_unref(d);
            pb_arena_free(tmp);
            return pb_err_set(err, PB_ENOMEM, "out of memory");
        }
    }
    uint64_t req = b->next_req + 1;
    size_t before = b->out.len;
    enc_ctx c = {b, persp, NULL, 0, 0, 0, 0, NULL};
    if ((rc = pb_banana_put_list(&b->out, 7)) || (rc = put_word(b, b->send_cache ? "cachemessage" : "message")) ||
        (rc = pb_banana_put_int(&b->out, (int64_t)req)) ||
        (rc = objname ? put_word(b, objname) : pb_banana_put_int(&b->out, (int64_t)luid)) ||
        (rc = put_word(b, method)) || (rc = pb_banana_put_int(&b->out, answer ? 1 : 0)) ||
        (rc = jelly(&c, args, "tuple", err)) || (rc = jelly(&c, kw, "dictionary", err)))
        goto fail;
    if (p) {
        p->req = req;
        p->d = d;
        p->b = b;
        p->ping = ping;
        p->deadline = timeout_ms ? now_of(b) + timeout_ms : 0;
        if (kmap_put(&b->pending, req, 0, p)) {
            rc = PB_ENOMEM;
            goto fail;
        }
        if (p->deadline) heap_push(b, p->deadline, req);
        if (d) {
            b->npending++;
            pb_deferred_set_canceller(d, call_canceller, p);
            *dout = pb_deferred_ref(d);
        }
    }
    b->next_req = req;
    journal_free(&c);
    pb_arena_free(tmp);
    out_done(b, before);
    return PB_OK;
fail:
    b->out.len = before;
    journal_rollback(&c);
    journal_free(&c);
    pb_arena_free(tmp);
    pending_free(b, p);
    pb_deferred_unref(d);
    if (c.thirdparty) rc = PB_ETHIRDPARTY;
    if (c.limit) {
        rc = PB_ELIMIT;
        if (++b->refs_violations > 3) fatal(b, PB_ELIMIT, "Maximum PB reference count exceeded.  Goodbye.");
    }
    if (err && err->code != rc) pb_err_set(err, rc, "cannot send call: %s", pb_strerror(rc));
    return rc;
}

pb_deferred *pb_ref_call(pb_ref *r, const char *method, const pb_value *args,
                         const pb_value *kwargs, const pb_call_opts *opts, pb_errbuf *err) {
    if (!r) {
        pb_err_set(err, PB_EINVAL, "NULL reference");
        return NULL;
    }
    pb_broker *b = r->lv->b;
    if (!b) {
        pb_err_set(err, PB_ECLOSED, "Calling Stale Broker");
        return NULL;
    }
    pb_deferred *d = NULL;
    int no_answer = opts && opts->no_answer;
    int rc = send_message(b, r->luid, r->is_root ? "root" : NULL, method, args, kwargs,
                          r->avatar, !no_answer, opts ? opts->timeout_ms : 0, 0,
                          no_answer ? NULL : &d, err);
    if (!rc && err) err->code = 0;
    return d;
}

int pb_ref_send(pb_ref *r, const char *method, const pb_value *args, const pb_value *kwargs) {
    if (!r) return PB_EINVAL;
    pb_broker *b = r->lv->b;
    if (!b) return PB_ECLOSED;
    return send_message(b, r->luid, r->is_root ? "root" : NULL, method, args, kwargs, r->avatar,
                        0, 0, 0, NULL, NULL);
}

/* ---------------------------------------------------- encode-once fan-out */

/* 1 when v holds no reference or object (so its jelly is the same on
 * every connection); 0 when it does, or is too deep to tell. */
static int plain_value(const pb_value *v, int depth) {
    if (!v) return 1;
    if (depth > 64) return 0;
    switch (v->type) {
    case PB_REMOTE:
    case PB_OBJECT:
        return 0;
    case PB_LIST:
    case PB_TUPLE:
    case PB_SET:
    case PB_FROZENSET:
    case PB_SEXP_LIST:
        for (size_t i = 0; i < v->u.seq.len; i++)
            if (!plain_value(v->u.seq.items[i], depth + 1)) return 0;
        return 1;
    case PB_DICT:
        for (size_t i = 0; i < 2 * v->u.dict.len; i++)
            if (!plain_value(v->u.dict.kv[i], depth + 1)) return 0;
        return 1;
    case PB_INSTANCE:
        return plain_value(v->u.inst.state, depth + 1);
    case PB_DECIMAL:
        return plain_value(v->u.dec.digits, depth + 1);
    default:
        return 1;
    }
}

/* The jelly of ARGS and KW in one dialect, encoded once. */
typedef struct shared_form {
    int have, bad;
    pb_dialect dialect;
    const pb_jelly_registry *registry;
    unsigned max_depth;
    pb_buf bytes;
} shared_form;

static int shared_encode(shared_form *f, pb_broker *b, const pb_value *args,
                         const pb_value *kw) {
    enc_ctx c = {b, NULL, NULL, 0, 0, 0, 0, NULL};
    pb_jelly_hooks h = {&c, hook_encode, NULL};
    pb_jelly_opts o;
    opts_for(b, &o, &h);
    pb_buf_init(&f->bytes);
    int rc = PB_OK;
    if (!args) {
        if (!(rc = pb_banana_put_list(&f->bytes, 1)))
            rc = pb_banana_put_bytes(&f->bytes, b->dialect, "tuple", 5);
    } else {
        rc = pb_jelly_encode(&f->bytes, b->dialect, args, &o, NULL);
    }
    if (!rc && !kw) {
        if (!(rc = pb_banana_put_list(&f->bytes, 1)))
            rc = pb_banana_put_bytes(&f->bytes, b->dialect, "dictionary", 10);
    } else if (!rc) {
        rc = pb_jelly_encode(&f->bytes, b->dialect, kw, &o, NULL);
    }
    journal_free(&c);
    f->have = 1;
    f->bad = rc != PB_OK || c.nj != 0;
    f->dialect = b->dialect;
    f->registry = b->cfg->registry;
    f->max_depth = b->cfg->limits.max_depth;
    return rc;
}

/* (message REQ OBJ NAME 0 ARGS KW) with ARGS KW already encoded. */
static int send_shared(pb_broker *b, pb_ref *r, const char *method, const shared_form *f) {
    if (!connected(b)) return PB_ECLOSED;
    if (b->out.len >= b->cfg->max_output) return PB_ELIMIT;
    uint64_t req = b->next_req + 1;
    size_t before = b->out.len;
    int rc;
    if ((rc = pb_banana_put_list(&b->out, 7)) || (rc = put_word(b, "message")) ||
        (rc = pb_banana_put_int(&b->out, (int64_t)req)) ||
        (rc = r->is_root ? put_word(b, "root") : pb_banana_put_int(&b->out, (int64_t)r->luid)) ||
        (rc = put_word(b, method)) || (rc = pb_banana_put_int(&b->out, 0)) ||
        (rc = pb_buf_append(&b->out, f->bytes.data, f->bytes.len))) {
        b->out.len = before;
        return rc;
    }
    b->next_req = req;
    out_done(b, before);
    return PB_OK;
}

int pb_ref_send_many(pb_ref *const *refs, size_t n, const char *method, const pb_value *args,
                     const pb_value *kwargs, size_t *sent) {
    size_t ok = 0;
    int first_err = PB_OK;
    if (sent) *sent = 0;
    if (!method || (n && !refs)) return PB_EINVAL;
    if (args && args->type != PB_TUPLE && args->type != PB_LIST) return PB_EINVAL;
    pb_arena *tmp = NULL;
    const pb_value *kw = kwargs;
    if (kwargs) {
        if (!(tmp = pb_arena_new(0))) return PB_ENOMEM;
        if (text_kwargs(tmp, kwargs, &kw)) {
            pb_arena_free(tmp);
            return PB_EINVAL;
        }
    }
    int plain = plain_value(args, 0) && plain_value(kw, 0);
    shared_form forms[2]; /* one per dialect: pb, none */
    memset(forms, 0, sizeof forms);
    for (size_t i = 0; i < n; i++) {
        pb_ref *r = refs[i];
        pb_broker *b = r ? r->lv->b : NULL;
        int rc;
        if (!r) {
            rc = PB_EINVAL;
        } else if (!b) {
            rc = PB_ECLOSED;
        } else if (!plain || !connected(b)) {
            rc = pb_ref_send(r, method, args, kw); /* references: a form per connection */
        } else {
            shared_form *f = &forms[b->dialect == PB_DIALECT_PB ? 0 : 1];
            if (!f->have) shared_encode(f, b, args, kw);
            if (f->bad || f->registry != b->cfg->registry ||
                f->max_depth != b->cfg->limits.max_depth)
                rc = pb_ref_send(r, method, args, kw);
            else
                rc = send_shared(b, r, method, f);
        }
        if (rc == PB_OK) ok++;
        else if (first_err == PB_OK) first_err = rc;
    }
    pb_buf_free(&forms[0].bytes);
    pb_buf_free(&forms[1].bytes);
    pb_arena_free(tmp);
    if (sent) *sent = ok;
    return first_err;
}

pb_value *pb__args_vformat(pb_arena *a, const char *fmt, va_list ap) {
    pb_value *t = pb_tuple(a, fmt ? strlen(fmt) : 0);
    int ok = t != NULL;
    for (const char *f = fmt; ok && f && *f; f++) {
        pb_value *v = NULL;
        switch (*f) {
        case 's': { const char *s = va_arg(ap, const char *); v = s ? pb_strz(a, s) : NULL; break; }
        case 'y': {
            const char *p = va_arg(ap, const char *);
            size_t n = va_arg(ap, size_t);
            v = pb_bytes(a, p ? p : "", p ? n : 0);
            break;
        }
        case 'i': v = pb_int(a, va_arg(ap, int64_t)); break;
        case 'b': v = pb_bool(a, va_arg(ap, int)); break;
        case 'f': v = pb_float(a, va_arg(ap, double)); break;
        case 'n': v = pb_none(a); break;
        case 'o': { pb_object *o = va_arg(ap, pb_object *); v = o ? pb_object_value(a, o) : pb_none(a); break; }
        case 'r': { pb_ref *x = va_arg(ap, pb_ref *); v = x ? pb_ref_value(a, x) : pb_none(a); break; }
        case 'v': { pb_value *x = va_arg(ap, pb_value *); v = x ? x : pb_none(a); break; }
        default: v = NULL;
        }
        ok = v && pb_seq_append(a, t, v) == PB_OK;
    }
    return ok ? t : NULL;
}

pb_deferred *pb_ref_callf(pb_ref *r, const char *method, const char *fmt, ...) {
    pb_arena *a = pb_arena_new(0);
    if (!a) return NULL;
    va_list ap;
    va_start(ap, fmt);
    pb_value *t = pb__args_vformat(a, fmt, ap);
    va_end(ap);
    pb_deferred *d = t ? pb_ref_call(r, method, t, NULL, NULL, NULL) : NULL;
    pb_arena_free(a);
    return d;
}

/* ---------------------------------------------------------- incoming calls */

static void call_unref(pb_call *c) {
    if (!c || --c->refs) return;
    pb_object *persp = c->persp;
    pb_arena *a = c->arena;
    pb_live *lv = c->lv;
    pb__tl_blk_put(c, sizeof *c);
    if (a) {
        /* may drop references (decrefs go out now) and run application
         * code, which may even free the broker */
        pb__arena_recycle(a, PB__POOL_ARENA_KEEP);
        pb__pool_arena_park(lv->b ? lv->b->dpool : NULL, a);
    }
    pb_object_unref(persp);
    live_unref(lv);
}

pb_arena *pb_call_arena(pb_call *call) { return call ? call->arena : NULL; }
pb_broker *pb_call_broker(pb_call *call) { return call ? call->lv->b : NULL; }
const char *pb_call_method(const pb_call *call) { return call ? call->method : NULL; }
void *pb_call_avatar(const pb_call *call) { return call ? call->persp : NULL; }

/* Mark answered; returns the broker to send on, or NULL if nothing is to
 * be sent (no answer wanted, or the connection is gone). */
static pb_broker *answer_begin(pb_call *c) {
    c->answered = 1;
    pb_broker *b = c->lv->b;
    if (b && c->counted) {
        b->inflight--;
        c->counted = 0;
    }
    if (!b || !c->answer_required || !connected(b)) return NULL;
    return b;
}

/* The deferred reference goes once the answer is out. */
static void answer_end(pb_call *c) {
    if (c->deferred) {
        c->deferred = 0;
        call_unref(c);
    }
}

static int send_error_value(pb_broker *b, int64_t req, const pb_value *fv) {
    size_t before = b->out.len;
    enc_ctx ec = {b, NULL, NULL, 0, 0, 0, 0, NULL};
    int rc;
    if ((rc = pb_banana_put_list(&b->out, 3)) || (rc = put_word(b, "error")) ||
        (rc = pb_banana_put_int(&b->out, req)) || (rc = jelly(&ec, fv, NULL, NULL))) {
        b->out.len = before;
        journal_rollback(&ec);
    }
    journal_free(&ec);
    out_done(b, before);
    return rc;
}

static int send_failure(pb_broker *b, int64_t req, const pb_failure *f) {
    const pb_value *raw = f->raw;
    if (raw && raw->type == PB_INSTANCE &&
        !(raw->u.inst.cls_len == 33 && !memcmp(raw->u.inst.cls, "twisted.spread.pb.CopyableFailure", 33))) {
        /* a Copyable exception goes out as itself, as Twisted sends Jellyable errors */
        if (send_error_value(b, req, raw) == PB_OK) return PB_OK;
    }
    pb_arena *a = pb_arena_new(0);
    if (!a) return PB_ENOMEM;
    pb_value *fv = pb_failure_to_value(a, f, b->cfg->unsafe_tracebacks);
    int rc = fv ? send_error_value(b, req, fv) : PB_ENOMEM;
    pb_arena_free(a);
    return rc;
}

static int send_error(pb_broker *b, int64_t req, const char *type, const char *msg) {
    pb_arena *a = pb_arena_new(0);
    if (!a) return PB_ENOMEM;
    pb_failure *f = pb_failure_new(a, 0, type, msg, NULL, 0);
    int rc = f ? send_failure(b, req, f) : PB_ENOMEM;
    pb_arena_free(a);
    return rc;
}

int pb_call_fail_failure(pb_call *call, const pb_failure *f) {
    if (!call || !f) return PB_EINVAL;
    if (call->answered) return PB_ESTATE;
    pb_broker *b = answer_begin(call);
    int rc = PB_OK;
    if (call->lv->b && !pb_failure_check(f, PB_FAILURE_PB_ERROR))
        logf_(call->lv->b, "Peer will receive following PB traceback: %s: %s",
              f->type ? f->type : "?", f->value ? f->value : "");
    if (b) rc = send_failure(b, call->req, f);
    else if (!call->lv->b || !connected(call->lv->b)) rc = call->answer_required ? PB_ECLOSED : PB_OK;
    answer_end(call);
    return rc;
}

/* The failure pb_call_fail sends: type (default pb.Error) and message, in
 * a (NULL: none). */
static pb_failure *call_failure(pb_arena *a, const char *type, const char *message) {
    return a ? pb_failure_new(a, 0, type ? type : PB_FAILURE_PB_ERROR, message ? message : "", NULL, 0)
             : NULL;
}

int pb_call_fail(pb_call *call, const char *type, const char *message) {
    if (!call) return PB_EINVAL;
    if (call->answered) return PB_ESTATE;
    pb_arena *a = pb_arena_new(0);
    pb_failure *f = call_failure(a, type, message);
    int rc;
    if (f) {
        rc = pb_call_fail_failure(call, f);
    } else {
        static const pb_failure oom = {"builtins.MemoryError", "out of memory", NULL, NULL, 0, NULL, PB_ENOMEM, 0};
        rc = pb_call_fail_failure(call, &oom);
    }
    pb_arena_free(a);
    return rc;
}

int pb_call_fail_pickled(pb_call *call, const char *type, const char *message) {
    if (!call) return PB_EINVAL;
    if (call->answered) return PB_ESTATE;
    pb_arena *a = pb_arena_new(0);
    pb_failure *f = call_failure(a, type, message);
    if (!f) {
        pb_arena_free(a);
        return pb_call_fail(call, type, message);
    }
    f->pickled = 1;
    int rc = pb_call_fail_failure(call, f);
    pb_arena_free(a);
    return rc;
}

static int call_fail_code(pb_call *call, int code) {
    return pb_call_fail(call, pb__failure_type_for_code(code), pb_strerror(code));
}

int pb_call_return(pb_call *call, const pb_value *v) {
    if (!call) return PB_EINVAL;
    if (call->answered) return PB_ESTATE;
    pb_broker *b = answer_begin(call);
    if (!b) {
        int rc = call->answer_required && (!call->lv->b || !connected(call->lv->b)) ? PB_ECLOSED : PB_OK;
        answer_end(call);
        return rc;
    }
    size_t before = b->out.len;
    enc_ctx ec = {b, call->persp, NULL, 0, 0, 0, 0, NULL};
    pb_errbuf err = {0, ""};
    pb_value none = {.type = PB_NONE};
    int rc;
    if ((rc = pb_banana_put_list(&b->out, 3)) || (rc = put_word(b, "answer")) ||
        (rc = pb_banana_put_int(&b->out, call->req)) || (rc = jelly(&ec, v ? v : &none, NULL, &err))) {
        /* Twisted raises while serializing: the caller gets the error instead */
        b->out.len = before;
        journal_rollback(&ec);
        journal_free(&ec);
        if (ec.thirdparty) rc = PB_ETHIRDPARTY;
        if (ec.limit) {
            rc = PB_ELIMIT;
            send_error(b, call->req, PB_FAILURE_PB_ERROR, ec.limit == 2 ? "Maximum PB cache count exceeded."
                                                                         : "Maximum PB reference count exceeded.");
            if (++b->refs_violations > 3)
                fatal(b, PB_ELIMIT, "Maximum PB %s count exceeded.  Goodbye.", ec.limit == 2 ? "cache" : "reference");
        } else {
            logf_(b, "answer to %s could not be sent: %s", call->method, err.msg);
            send_error(b, call->req, PB_FAILURE_TYPE_ERROR, err.msg[0] ? err.msg : pb_strerror(rc));
        }
        answer_end(call);
        return rc;
    }
    journal_free(&ec);
    out_done(b, before);
    answer_end(call);
    return PB_OK;
}

int pb_call_return_none(pb_call *call) { return pb_call_return(call, NULL); }

int pb_call_return_object(pb_call *call, pb_object *o) {
    if (!call || !o) return PB_EINVAL;
    if (call->answered) return PB_ESTATE;
    pb_value *v = pb_object_value(call->arena, o);
    if (!v) return call_fail_code(call, PB_ENOMEM), PB_ENOMEM;
    return pb_call_return(call, v);
}

int pb_call_defer(pb_call *call) {
    if (!call) return PB_EINVAL;
    if (call->answered) return PB_ESTATE;
    if (!call->deferred) {
        call->deferred = 1;
        call->refs++;
    }
    return PB_OK;
}

static int rd_callback(pb_deferred *d, void *ud) {
    pb_call *c = ud;
    if (!c->answered) pb_call_return(c, pb_deferred_value(d));
    return 0;
}

static int rd_errback(pb_deferred *d, void *ud) {
    pb_call *c = ud;
    if (!c->answered) pb_call_fail_failure(c, pb_deferred_failure(d));
    return 0;
}

static void rd_free(void *ud) {
    pb_call *c = ud;
    /* the deferred was dropped unfired: nobody will answer any more */
    if (!c->answered) pb_call_fail(c, PB_FAILURE_PB_ERROR, "the answer was abandoned");
    call_unref(c);
}

int pb_call_return_deferred(pb_call *call, pb_deferred *d) {
    if (!call || !d) return PB_EINVAL;
    if (call->answered) return PB_ESTATE;
    int rc = pb_call_defer(call);
    if (rc) return rc;
    call->refs++;
    rc = pb__deferred_add_full(d, rd_callback, rd_errback, call, rd_free);
    if (rc) call_unref(call);
    return rc;
}

static const pb_method *find_method(const pb_class *cls, const char *name, int view) {
    if (!cls || !cls->methods) return NULL;
    const pb_method *any = NULL; /* a "*" entry takes every name not listed */
    for (const pb_method *m = cls->methods; m->name; m++) {
        if (!strcmp(m->name, name)) return (view ? m->view != NULL : m->fn != NULL) ? m : NULL;
        if (!any && !strcmp(m->name, "*")) any = m;
    }
    return any && (view ? any->view != NULL : any->fn != NULL) ? any : NULL;
}

void pb__id_repr(const pb_value *id, char *buf, size_t cap, const char *empty) {
    if (id && id->type == PB_INT) {
        snprintf(buf, cap, "%lld", (long long)id->u.i);
        return;
    }
    pb_buf r;
    pb_buf_init(&r);
    r.limit = cap;
    if (id) pb_value_repr(id, &r);
    snprintf(buf, cap, "%.*s", (int)r.len, r.data ? (const char *)r.data : empty);
    pb_buf_free(&r);
}

static const char *unjelly_error_type(int rc) {
    switch (rc) {
    case PB_EINSECURE: return PB_FAILURE_INSECURE_JELLY;
    case PB_EUTF8: return "builtins.UnicodeDecodeError";
    case PB_ENOMEM: case PB_ELIMIT: return "builtins.MemoryError";
    case PB_EDEPTH: return "builtins.RecursionError";
    case PB_ENOTFOUND: return PB_FAILURE_KEY_ERROR; /* (cached N) / (lcache N) unknown */
    default: return PB_FAILURE_VALUE_ERROR;
    }
}

/* "Class.prefix_name" for error texts, truncated as snprintf would
 * (snprintf costs more than the rest of an echo call's dispatch). */
static void qual_name(char *out, size_t cap, const char *cname, const char *prefix,
                      const char *name) {
    const char *parts[4] = {cname, ".", prefix, name};
    size_t at = 0;
    for (int i = 0; i < 4; i++) {
        size_t n = strlen(parts[i]);
        if (n > cap - 1 - at) n = cap - 1 - at;
        memcpy(out + at, parts[i], n);
        at += n;
    }
    out[at] = 0;
}

/* (message REQ OBJ NAME ANSWER ARGS KW) whose target e was found. */
static void dispatch(pb_broker *b, export *e, int64_t req, const char *name, int answer,
                     const pb_value *sargs, const pb_value *skw) {
    if (b->inflight >= b->cfg->max_inflight) {
        if (answer) {
            char msg[96];
            snprintf(msg, sizeof msg, "Too many calls in flight (limit %zu)", b->cfg->max_inflight);
            send_error(b, req, PB_FAILURE_PB_ERROR, msg);
        }
        return;
    }
    /* who runs it: flavour decides prefix, self and the perspective */
    pb_object *self = e->kind == EX_WRAPPER ? ((wrapper *)e->obj)->avatar : e->obj;
    pb_object *persp = NULL;
    pb_flavor fl = self->cls ? self->cls->flavor : PB_REFERENCEABLE;
    if (e->kind == EX_VIEWPOINT) {
        fl = PB_VIEWABLE;
        persp = e->persp;
    } else if (fl == PB_AVATAR) {
        persp = self;
    }
    const char *prefix = fl == PB_VIEWABLE ? "view_" : fl == PB_AVATAR ? "perspective_"
                         : fl == PB_REMOTE_CACHE ? "observe_" : "remote_";
    const char *cname = self->cls && self->cls->name ? self->cls->name : "object";

    pb_arena *a = take_msg_arena(b);
    if (!a) {
        fatal(b, PB_ENOMEM, "out of memory taking a message arena");
        return;
    }
    pb_call *c = pb__tl_blk_get(sizeof *c);
    if (c) {
        memset(c, 0, sizeof *c);
    } else {
        pb__pool_arena_put(b->dpool, a);
        fatal(b, PB_ENOMEM, "out of memory for a call");
        return;
    }
    c->refs = 1;
    c->lv = b->lv;
    b->lv->refs++;
    c->arena = a;
    c->req = req;
    c->answer_required = answer;
    c->method = name;
    c->persp = pb_object_ref(persp);
    pb_object_ref(self); /* a handler may lose the connection, which releases the table */

    pb_errbuf err = {0, ""};
    pb_value *args = NULL, *kw = NULL;
    int rc = unjelly(b, a, sargs, persp, &args, &err);
    if (!rc) rc = unjelly(b, a, skw, persp, &kw, &err);
    if (rc) {
        pb_call_fail(c, unjelly_error_type(rc), err.msg[0] ? err.msg : pb_strerror(rc));
        goto done;
    }
    char qual[256];
    qual_name(qual, sizeof qual, cname, prefix, name);
    if (args->type != PB_TUPLE && args->type != PB_LIST) {
        char msg[320];
        snprintf(msg, sizeof msg, "%s() argument after * must be an iterable, not %s", qual,
                 pb_type_name((pb_type)args->type));
        pb_call_fail(c, PB_FAILURE_TYPE_ERROR, msg);
        goto done;
    }
    if (kw->type != PB_DICT) {
        char msg[320];
        snprintf(msg, sizeof msg, "%s() argument after ** must be a mapping, not %s", qual,
                 pb_type_name((pb_type)kw->type));
        pb_call_fail(c, PB_FAILURE_TYPE_ERROR, msg);
        goto done;
    }
    const pb_method *m = find_method(self->cls, name, fl == PB_VIEWABLE);
    if (!m) {
        char msg[320];
        if (fl == PB_REFERENCEABLE) {
            snprintf(msg, sizeof msg, "No such method: remote_%s", name);
            pb_call_fail(c, PB_FAILURE_NO_SUCH_METHOD, msg);
        } else {
            snprintf(msg, sizeof msg, "'%s' object has no attribute '%s%s'", cname, prefix, name);
            pb_call_fail(c, PB_FAILURE_ATTRIBUTE_ERROR, msg);
        }
        goto done;
    }
    pb_args pa;
    char msg[320];
    rc = pb__args_bind(a, m->signature, qual, args, kw, fl == PB_REFERENCEABLE, &pa, msg, sizeof msg);
    if (!rc && !m->signature && fl != PB_REFERENCEABLE) {
        /* unchecked, but Python still refuses non-text keywords here */
        for (size_t i = 0; i < kw->u.dict.len; i++)
            if (kw->u.dict.kv[2 * i]->type != PB_STR) {
                snprintf(msg, sizeof msg, "keywords must be strings");
                rc = PB_EINVAL;
            }
    }
    if (rc) {
        if (rc == PB_ENOMEM) call_fail_code(c, rc);
        else pb_call_fail(c, PB_FAILURE_TYPE_ERROR, msg);
        goto done;
    }
    b->inflight++;
    c->counted = 1;
    rc = fl == PB_VIEWABLE ? m->view(c, self, persp, &pa) : m->fn(c, self, &pa);
    if (!c->answered && !c->deferred) {
        if (rc < 0) call_fail_code(c, rc);
        else pb_call_return_none(c);
    }
done:
    call_unref(c);
    pb_object_unref(self);
}

/* ---------------------------------------------------------------- commands */

static int is_int(const pb_value *v) { return v && v->type == PB_INT; }

static void send_version(pb_broker *b) {
    size_t before = b->out.len;
    if (pb_banana_put_list(&b->out, 2) || put_word(b, "version") || pb_banana_put_int(&b->out, 6))
        b->out.len = before;
    out_done(b, before);
}

static void cmd_message(pb_broker *b, const pb_value *x, int cache) {
    pb_value **it = x->u.seq.items;
    if (x->u.seq.len != 7) {
        fatal(b, PB_EPROTO, "%s with %zu elements (expected 7)", cache ? "cachemessage" : "message",
              x->u.seq.len);
        return;
    }
    if (!is_int(it[1])) {
        fatal(b, PB_EPROTO, "message: request id is not an int");
        return;
    }
    if (it[3]->type != PB_BYTES || !pb_utf8_valid(it[3]->u.s.ptr, it[3]->u.s.len) ||
        memchr(it[3]->u.s.ptr, 0, it[3]->u.s.len)) {
        fatal(b, PB_EPROTO, "message: method name is not a UTF-8 byte string");
        return;
    }
    if (!is_int(it[4]) && it[4]->type != PB_BOOL) {
        fatal(b, PB_EPROTO, "message: answerRequired is not an int");
        return;
    }
    int64_t req = it[1]->u.i;
    int answer = it[4]->type == PB_BOOL ? it[4]->u.b : it[4]->u.i != 0;
    const char *name = it[3]->u.s.ptr;
    if (cache) {
        pb_object *co = pb__cache_lookup(b, it[2]);
        if (co) {
            export ce = {0, EX_OBJECT, co, NULL, 1}; /* dispatches observe_NAME */
            dispatch(b, &ce, req, name, answer, it[5], it[6]);
            return;
        }
        if (answer) {
            char buf[128];
            pb__id_repr(it[2], buf, sizeof buf, "");
            send_error(b, req, PB_FAILURE_KEY_ERROR, buf);
        }
        return;
    }
    export *e = export_lookup(b, it[2]);
    if (!e) {
        if (answer) send_error(b, req, PB_FAILURE_PB_ERROR, "Invalid Object ID");
        return;
    }
    dispatch(b, e, req, name, answer, it[5], it[6]);
}

static void cmd_result(pb_broker *b, const pb_value *x, int is_error) {
    const char *what = is_error ? "error" : "answer";
    if (x->u.seq.len != 3 || !is_int(x->u.seq.items[1])) {
        fatal(b, PB_EPROTO, "malformed %s", what);
        return;
    }
    int64_t req = x->u.seq.items[1]->u.i;
    pending *p = kmap_del(&b->pending, (uint64_t)req, 0);
    if (!p) {
        fatal(b, PB_EPROTO, "%s for unknown request id %lld", what, (long long)req);
        return;
    }
    pb_deferred *d = p->d;
    if (p->ping) b->ping_outstanding = 0;
    if (d) b->npending--;
    pending_free(b, p);
    if (!d) return; /* a tombstone or a ping: the late answer is dropped */
    pb_arena *a = take_msg_arena(b);
    pb_errbuf err = {0, ""};
    pb_value *v = NULL;
    const pb_value *payload = x->u.seq.items[2];
    int rc;
    if (!a) {
        rc = PB_ENOMEM;
    } else if (is_error && payload->type == PB_SEXP_LIST && payload->u.seq.len == 2 &&
               pb_value_is(payload->u.seq.items[0], "twisted.spread.pb.CopyableFailure")) {
        /* every PB peer accepts CopyableFailure (Twisted registers it in
         * pb.py), whatever the application's registry says */
        pb_value *state = NULL;
        rc = unjelly(b, a, payload->u.seq.items[1], NULL, &state, &err);
        if (!rc && !(v = pb_instance(a, "twisted.spread.pb.CopyableFailure", 33, state))) rc = PB_ENOMEM;
    } else {
        rc = unjelly(b, a, payload, NULL, &v, &err);
    }
    if (rc) {
        /* Twisted drops the connection and never fires the call; we fail it
         * with the reason first */
        pb_deferred_fail(d, rc, unjelly_error_type(rc), err.msg[0] ? err.msg : pb_strerror(rc));
        pb_deferred_unref(d);
        pb__pool_arena_put(b->dpool, a);
        fatal(b, rc, "undecodable %s for request %lld: %s", what, (long long)req,
              err.msg[0] ? err.msg : pb_strerror(rc));
        return;
    }
    if (is_error) {
        pb_failure *f = pb_failure_from_value(a, v);
        if (f) pb_deferred_errback(d, f);
        else pb_deferred_fail(d, PB_ENOMEM, "builtins.MemoryError", "out of memory");
    } else if (pb__deferred_callback_adopt(d, v, a) == PB_OK) {
        a = NULL; /* the deferred keeps the message's arena: v is not copied */
    } else {
        pb_deferred_callback(d, v);
    }
    pb_deferred_unref(d);
    pb__pool_arena_put(b->dpool, a);
}

static void cmd_decref(pb_broker *b, const pb_value *x) {
    export *e = x->u.seq.len == 2 ? export_lookup(b, x->u.seq.items[1]) : NULL;
    if (!e) {
        char buf[64] = "?";
        if (x->u.seq.len == 2) pb__id_repr(x->u.seq.items[1], buf, sizeof buf, "");
        fatal(b, PB_EPROTO, "decref of unknown LUID %s", buf);
        return;
    }
    if (--e->refs == 0) export_remove(b, e);
}

static void handle_expr(pb_broker *b, const pb_value *x) {
    b->st.messages_in++;
    if (b->state == ST_HANDSHAKE) {
        pb_dialect d;
        if (b->cfg->is_server) {
            /* the client's choice: a bare string we offered */
            if (pb_value_is(x, "pb") && x->type == PB_BYTES) d = PB_DIALECT_PB;
            else if (pb_value_is(x, "none") && x->type == PB_BYTES) d = PB_DIALECT_NONE;
            else {
                fatal(b, PB_EPROTO, "client chose a dialect we did not offer");
                return;
            }
        } else {
            /* the server's offer: a list; take the first we know */
            int found = 0;
            d = PB_DIALECT_NONE;
            if (x->type == PB_SEXP_LIST)
                for (size_t i = 0; i < x->u.seq.len && !found; i++) {
                    const pb_value *w = x->u.seq.items[i];
                    if (w->type != PB_BYTES) continue;
                    if (pb_value_is(w, "pb")) d = PB_DIALECT_PB, found = 1;
                    else if (pb_value_is(w, "none")) d = PB_DIALECT_NONE, found = 1;
                }
            if (!found) {
                fatal(b, PB_EPROTO, "server offered no dialect we know");
                return;
            }
            size_t before = b->out.len;
            if (pb_banana_put_bytes(&b->out, PB_DIALECT_NONE, d == PB_DIALECT_PB ? "pb" : "none",
                                    d == PB_DIALECT_PB ? 2 : 4))
                b->out.len = before;
            out_done(b, before);
        }
        b->dialect = d;
        if (b->dec) pb_banana_dec_set_dialect(b->dec, d);
        b->state = ST_CONNECTED;
        send_version(b);
        /* a server seldom calls its client's root: made on demand there */
        if (!b->root_ref && !b->cfg->is_server) b->root_ref = ref_new(b, 0, 1, NULL);
        if (!b->root_ref && !b->cfg->is_server) {
            fatal(b, PB_ENOMEM, "out of memory");
            return;
        }
        if (b->cb.connected) b->cb.connected(b, b->cb.ud);
        return;
    }
    if (x->type != PB_SEXP_LIST) {
        fatal(b, PB_EPROTO, "Non-list expression received.");
        return;
    }
    if (x->u.seq.len == 0 || x->u.seq.items[0]->type != PB_BYTES) {
        fatal(b, PB_EPROTO, "message without a command word");
        return;
    }
    const pb_value *cmd = x->u.seq.items[0];
    if (pb_value_is(cmd, "message")) cmd_message(b, x, 0);
    else if (pb_value_is(cmd, "answer")) cmd_result(b, x, 0);
    else if (pb_value_is(cmd, "error")) cmd_result(b, x, 1);
    else if (pb_value_is(cmd, "decref")) cmd_decref(b, x);
    else if (pb_value_is(cmd, "version")) {
        if (x->u.seq.len != 2) fatal(b, PB_EPROTO, "malformed version message");
        else if (!is_int(x->u.seq.items[1]) || x->u.seq.items[1]->u.i != 6) {
            char buf[64] = "?";
            pb__id_repr(x->u.seq.items[1], buf, sizeof buf, "");
            fatal(b, PB_EPROTO, "Version Incompatibility: 6 %s", buf);
        }
    } else if (pb_value_is(cmd, "cachemessage")) cmd_message(b, x, 1);
    else if (pb_value_is(cmd, "decache") || pb_value_is(cmd, "uncache")) {
        char msg[160];
        int rc = pb__cache_command(b, x, msg, sizeof msg); /* unknown LUID: fatal, as Twisted */
        if (rc) fatal(b, rc, "%s", msg);
    } else if (pb_value_is(cmd, "didNotUnderstand")) {
        logf_(b, "peer did not understand a command");
    } else {
        fatal(b, PB_EPROTO, "unknown command '%.40s'", cmd->u.s.ptr);
    }
}

/* -------------------------------------------------------------- the broker */

void pb_broker_config_default(pb_broker_config *c) {
    if (!c) return;
    memset(c, 0, sizeof *c);
    c->max_refs = 1024;
    c->max_pending_calls = 10000;
    c->max_inflight = 10000;
    c->max_output = 16u << 20;
    pb_banana_limits_default(&c->limits);
}

pb_broker *pb_broker_new(const pb_broker_config *cfg, const pb_broker_callbacks *cb,
                         pb_object *root) {
    pb_broker *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    pb_broker_config def, in, n;
    pb_broker_config_default(&def);
    in = cfg ? *cfg : def;
    /* field by field into a zeroed struct, so equal settings compare equal */
    memset(&n, 0, sizeof n);
    n.is_server = in.is_server;
    n.unsafe_tracebacks = in.unsafe_tracebacks;
    n.max_refs = in.max_refs ? in.max_refs : def.max_refs;
    n.max_pending_calls = in.max_pending_calls ? in.max_pending_calls : def.max_pending_calls;
    n.max_inflight = in.max_inflight ? in.max_inflight : def.max_inflight;
    n.max_output = in.max_output ? in.max_output : def.max_output;
    n.limits.max_string = in.limits.max_string ? in.limits.max_string : def.limits.max_string;
    n.limits.max_list = in.limits.max_list ? in.limits.max_list : def.limits.max_list;
    n.limits.max_depth = in.limits.max_depth ? in.limits.max_depth : def.limits.max_depth;
    n.limits.max_items = in.limits.max_items ? in.limits.max_items : def.limits.max_items;
    n.limits.max_bytes = in.limits.max_bytes ? in.limits.max_bytes : def.limits.max_bytes;
    n.registry = in.registry;
    n.idle_ping_ms = in.idle_ping_ms;
    b->cfg = cfg_intern(&n);
    if (!b->cfg) {
        free(b);
        return NULL;
    }
    if (cb) b->cb = *cb;
    b->lv = calloc(1, sizeof *b->lv);
    /* the decoder is made when bytes arrive, the deferred pool by the first call */
    pb_buf_init(&b->out);
    if (!b->lv) goto fail;
    b->lv->refs = 1;
    b->lv->b = b;
    b->dialect = PB_DIALECT_NONE;
    if (root && pb_broker_set_root(b, root)) goto fail;
    if (b->cfg->is_server) {
        /* the dialect offer, queued now: the transport finds it in
         * pb_broker_output() (output_ready is not called from here) */
        if (pb_banana_put_list(&b->out, 2) || pb_banana_put_bytes(&b->out, PB_DIALECT_NONE, "pb", 2) ||
            pb_banana_put_bytes(&b->out, PB_DIALECT_NONE, "none", 4))
            goto fail;
        b->st.messages_out++;
        b->st.bytes_out += b->out.len;
    }
    return b;
fail:
    if (b->root_export) export_free(b, b->root_export);
    pb_object_unref(b->root_obj);
    free(b->lv);
    pb_banana_dec_free(b->dec);
    pb__dpool_close(b->dpool);
    pb_buf_free(&b->out);
    cfg_release(b->cfg);
    free(b);
    return NULL;
}

int pb_broker_set_root(pb_broker *b, pb_object *root) {
    if (!b) return PB_EINVAL;
    export *e = NULL;
    if (root) {
        e = calloc(1, sizeof *e);
        if (!e) return PB_ENOMEM;
        e->kind = EX_ROOT;
        e->obj = pb_object_ref(root);
        e->refs = 1;
    }
    if (b->root_export) export_free(b, b->root_export);
    pb_object_unref(b->root_obj);
    b->root_export = e;
    b->root_obj = pb_object_ref(root);
    return PB_OK;
}

int pb_broker_feed(pb_broker *b, const uint8_t *data, size_t len) {
    if (!b || (!data && len)) return PB_EINVAL;
    if (b->fatal_code) return b->fatal_code;
    if (b->state == ST_LOST) return PB_ECLOSED;
    if (!b->dec && len) { /* idle until now: a decoder from the thread's cache */
        pb_banana_dec *d = pb__tl_dec_get();
        if (!d) d = pb_banana_dec_new(b->dialect, &b->cfg->limits);
        if (!d) return PB_ENOMEM;
        pb__banana_dec_rebind(d, b->dialect, &b->cfg->limits, b->dec_off);
        b->dec = d;
    }
    enter(b);
    b->st.bytes_in += len;
    b->last_rx = now_of(b);
    while (len && !b->free_pending && (b->state == ST_HANDSHAKE || b->state == ST_CONNECTED)) {
        size_t used = 0;
        pb_value *x = NULL;
        int rc = pb_banana_dec_feed(b->dec, data, len, &used, &x);
        data += used;
        len -= used;
        if (rc < 0) {
            fatal(b, rc, "banana: %s", pb_banana_dec_errmsg(b->dec));
            break;
        }
        if (rc == 0) break;
        handle_expr(b, x);
        if (connected(b) && b->out.len > 2 * b->cfg->max_output)
            fatal(b, PB_ELIMIT, "%zu bytes of output queued: the peer is not reading", b->out.len);
    }
    int ret = b->fatal_code ? b->fatal_code : b->state == ST_LOST ? PB_ECLOSED : PB_OK;
    if (!ret && b->dec && !b->free_pending && pb__banana_dec_idle(b->dec)) {
        /* between messages: an idle connection holds no decoder */
        b->dec_off = pb_banana_dec_offset(b->dec);
        pb__tl_dec_put(b->dec);
        b->dec = NULL;
    }
    leave(b);
    return ret;
}

size_t pb_broker_output(pb_broker *b, const uint8_t **data) {
    if (!b) return 0;
    if (data) *data = b->out.data;
    return b->out.len;
}

void pb_broker_output_consume(pb_broker *b, size_t n) {
    if (!b) return;
    pb_buf_consume(&b->out, n);
    if (!b->out.len && b->out.data) { /* drained: an idle connection holds no buffer */
        pb__tl_buf_put(b->out.data, b->out.cap);
        b->out.data = NULL;
        b->out.cap = 0;
    }
}

int pb_broker_want_read_paused(const pb_broker *b) { return b && b->out.len > b->cfg->max_output; }

static void send_ping(pb_broker *b) {
    if (send_message(b, 0, PING_OBJECT, "ping", NULL, NULL, NULL, 1, b->cfg->idle_ping_ms, 1, NULL,
                     NULL) == PB_OK)
        b->ping_outstanding = 1;
}

void pb_broker_tick(pb_broker *b, uint64_t now_ms) {
    if (!b) return;
    enter(b);
    if (!b->have_now) {
        b->have_now = 1;
        b->last_rx = now_ms;
    }
    b->now = now_ms;
    while (b->nheap && b->heap[0].deadline <= now_ms && b->state != ST_LOST) {
        hent h = heap_pop(b);
        pending *p = kmap_get(&b->pending, h.req, 0);
        if (!p || p->deadline != h.deadline) continue; /* answered or tombstoned since */
        if (p->ping) {
            pending_free(b, kmap_del(&b->pending, h.req, 0));
            b->ping_outstanding = 0;
            if (b->last_rx + b->cfg->idle_ping_ms <= now_ms)
                fatal(b, PB_ETIMEOUT, "the peer did not answer an idle ping within %u ms",
                      b->cfg->idle_ping_ms);
            continue;
        }
        pb_deferred *d = p->d;
        tombstone(b, p);
        pb_deferred_fail(d, PB_ETIMEOUT, PB_FAILURE_TIMEOUT, "remote call timed out");
        pb_deferred_unref(d);
    }
    if (b->nheap > 64 && b->nheap > 4 * (b->pending.len + 1)) {
        /* mostly stale entries (answered calls): rebuild */
        hent *old = b->heap;
        size_t n = b->nheap;
        b->heap = NULL;
        b->nheap = b->capheap = 0;
        for (size_t i = 0; i < n; i++) {
            pending *p = kmap_get(&b->pending, old[i].req, 0);
            if (p && p->deadline == old[i].deadline) heap_push(b, old[i].deadline, old[i].req);
        }
        free(old);
    }
    if (b->cfg->idle_ping_ms && connected(b) && !b->ping_outstanding &&
        now_ms >= b->last_rx + b->cfg->idle_ping_ms)
        send_ping(b);
    leave(b);
}

uint64_t pb_broker_next_deadline(const pb_broker *b) {
    if (!b || b->state == ST_LOST) return UINT64_MAX;
    uint64_t t = b->nheap ? b->heap[0].deadline : UINT64_MAX;
    if (b->cfg->idle_ping_ms && connected(b) && !b->ping_outstanding) {
        uint64_t p = b->last_rx + b->cfg->idle_ping_ms;
        if (p < t) t = p;
    }
    return t;
}

/* Connection gone: pending calls fail, notifications and cleanups run,
 * tables are released; each exactly once. */
static void lost_internal(pb_broker *b, const char *why) {
    if (b->state == ST_LOST) return;
    enter(b);
    b->state = ST_LOST;
    if (!b->errmsg) set_errmsg(b, why ? why : "connection lost");
    /* 1. our pending calls */
    size_t n = 0;
    pending **ps = b->pending.len ? malloc(b->pending.len * sizeof *ps) : NULL;
    for (size_t i = 0; i < b->pending.cap; i++)
        if (b->pending.e[i].v) {
            if (ps) ps[n++] = b->pending.e[i].v;
            else free(b->pending.e[i].v); /* no memory: at least nothing leaks */
        }
    kmap_free(&b->pending);
    b->npending = 0;
    free(b->heap);
    b->heap = NULL;
    b->nheap = b->capheap = 0;
    for (size_t i = 0; i < n; i++) {
        pending *p = ps[i];
        if (p->d) {
            pb_deferred_fail(p->d, PB_ECLOSED, PB_FAILURE_CONNECTION_LOST, why ? why : "connection lost");
            pb_deferred_unref(p->d);
        }
        free(p);
    }
    free(ps);
    /* 2. disconnect notifications of references */
    n = 0;
    pb_ref **rs = malloc((b->imports.len + 1) * sizeof *rs);
    if (rs) {
        if (b->root_ref && b->root_ref->nnotes) rs[n++] = pb_ref_ref(b->root_ref);
        for (size_t i = 0; i < b->imports.cap; i++) {
            pb_ref *r = b->imports.e[i].v;
            if (r && r->nnotes) rs[n++] = pb_ref_ref(r);
        }
        for (size_t i = 0; i < n; i++) {
            pb_ref *r = rs[i];
            while (r->nnotes) { /* one at a time: a notifier may remove others */
                note nt = r->notes[0];
                memmove(&r->notes[0], &r->notes[1], (r->nnotes - 1) * sizeof *r->notes);
                r->nnotes--;
                nt.fn(r, nt.ud);
            }
        }
        for (size_t i = 0; i < n; i++) pb_ref_unref(rs[i]);
        free(rs);
    }
    /* 3. per-connection cleanups (cred logouts) and avatar releases */
    while (b->nlost) {
        lost_cb l = b->lost[0];
        memmove(&b->lost[0], &b->lost[1], (b->nlost - 1) * sizeof *b->lost);
        b->nlost--;
        l.fn(l.ud);
    }
    pb__cache_lost(b); /* stoppedObserving; forget received caches */
    /* 4. the export table */
    n = 0;
    export **es = malloc((b->exports.len + 1) * sizeof *es);
    if (es) {
        for (size_t i = 0; i < b->exports.cap; i++)
            if (b->exports.e[i].v) es[n++] = b->exports.e[i].v;
    }
    kmap_free(&b->exports);
    kmap_free(&b->rev);
    if (es)
        for (size_t i = 0; i < n; i++) export_free(b, es[i]);
    free(es);
    while (b->wrappers) wrapper_release(b, b->wrappers);
    /* 5. references stop holding their avatars (breaks avatar <-> ref cycles) */
    for (size_t i = 0; i < b->imports.cap; i++)
        if (b->imports.e[i].v) ref_detach(b->imports.e[i].v);
    free(b->tomb);
    b->tomb = NULL;
    b->tomb_len = b->tomb_cap = b->tomb_head = 0;
    leave(b);
}

void pb_broker_connection_lost(pb_broker *b, const char *why) {
    if (!b) return;
    enter(b);
    lost_internal(b, why);
    leave(b);
}

/* The free lists and the pool (deferreds still out are freed when dropped). */
static void free_recycled(pb_broker *b) {
    pb__dpool_close(b->dpool);
    b->dpool = NULL;
}

static void really_free(pb_broker *b) {
    b->busy = 1; /* callbacks below may call pb_broker_free again: ignored */
    lost_internal(b, "broker freed");
    pb__cache_free(b);
    pb_ref *root = b->root_ref;
    b->root_ref = NULL;
    pb_ref_unref(root);
    /* references still held by the application outlive us: cut them loose */
    for (size_t i = 0; i < b->imports.cap; i++)
        if (b->imports.e[i].v) ref_detach(b->imports.e[i].v);
    kmap_free(&b->imports);
    if (b->root_export) export_free(b, b->root_export);
    b->root_export = NULL;
    pb_object_unref(b->root_obj);
    free(b->lost);
    pb_banana_dec_free(b->dec);
    pb_buf_free(&b->out);
    free_errmsg(b);
    b->lv->b = NULL;
    live_unref(b->lv);
    free_recycled(b);
    cfg_release(b->cfg);
    free(b);
}

void pb_broker_free(pb_broker *b) {
    if (!b) return;
    if (b->busy) {
        b->free_pending = 1;
        return;
    }
    really_free(b);
}

int pb_broker_is_connected(const pb_broker *b) { return b && connected(b); }

pb_ref *pb_broker_root(pb_broker *b) {
    if (b && !b->root_ref && b->state == ST_CONNECTED) b->root_ref = ref_new(b, 0, 1, NULL);
    return b && b->root_ref && b->state != ST_HANDSHAKE ? b->root_ref : NULL;
}

uint64_t pb_broker_on_lost(pb_broker *b, void (*fn)(void *ud), void *ud) {
    if (!b || !fn || b->state == ST_LOST) return 0;
    if (b->nlost == b->caplost) {
        size_t cap = b->caplost ? b->caplost * 2 : 1;
        lost_cb *l = realloc(b->lost, cap * sizeof *l);
        if (!l) return 0;
        b->lost = l;
        b->caplost = cap;
    }
    uint64_t id = ++b->next_lost_id;
    b->lost[b->nlost++] = (lost_cb){id, fn, ud};
    return id;
}

void pb_broker_cancel_on_lost(pb_broker *b, uint64_t id) {
    if (!b) return;
    for (size_t i = 0; i < b->nlost; i++)
        if (b->lost[i].id == id) {
            memmove(&b->lost[i], &b->lost[i + 1], (b->nlost - i - 1) * sizeof *b->lost);
            b->nlost--;
            return;
        }
}

pb_value *pb_broker_export_avatar(pb_broker *b, pb_arena *a, pb_object *avatar,
                                  void (*on_release)(void *ud), void *ud) {
    if (!b || !a || !avatar || b->state == ST_LOST || b->state == ST_FATAL) return NULL;
    wrapper *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    pb_object_init(&w->obj, &wrapper_class);
    w->avatar = pb_object_ref(avatar);
    w->on_release = on_release;
    w->ud = ud;
    pb_value *v = pb_object_value(a, &w->obj);
    if (!v) {
        w->on_release = NULL;
        w->released = 1;
        pb_object_unref(&w->obj);
        return NULL;
    }
    /* the list keeps the init reference until the wrapper is released */
    w->next = b->wrappers;
    b->wrappers = w;
    return v;
}

void pb_broker_set_userdata(pb_broker *b, void *ud) {
    if (b) b->userdata = ud;
}
void *pb_broker_userdata(const pb_broker *b) { return b ? b->userdata : NULL; }
const char *pb_broker_errmsg(const pb_broker *b) { return b && b->errmsg ? b->errmsg : ""; }

void pb_broker_get_stats(const pb_broker *b, pb_broker_stats *s) {
    if (!b || !s) return;
    *s = b->st;
    s->exported = export_count(b);
    s->pending_calls = b->npending;
    s->inflight = b->inflight;
}

/* ---------------------------------------------------- hooks for cache.c */

pb__caches **pb__broker_caches(pb_broker *b) { return &b->caches; }
void *pb__broker_cb_ud(const pb_broker *b, void (*fn)(pb_broker *, void *)) {
    return b && b->cb.output_ready == fn ? b->cb.ud : NULL;
}
const pb_broker_config *pb__broker_cfg(const pb_broker *b) { return b->cfg; }
uint64_t pb__broker_new_luid(pb_broker *b) { return ++b->next_luid; }
void pb__broker_log(pb_broker *b, const char *msg) { logf_(b, "%s", msg); }

int pb__broker_send_luid(pb_broker *b, const char *cmd, uint64_t luid) {
    if (!connected(b)) return PB_ECLOSED;
    size_t before = b->out.len;
    int rc;
    if ((rc = pb_banana_put_list(&b->out, 2)) || (rc = put_word(b, cmd)) ||
        (rc = pb_banana_put_int(&b->out, (int64_t)luid)))
        b->out.len = before;
    out_done(b, before);
    return rc;
}

int pb__broker_send_cachemessage(pb_broker *b, uint64_t luid, const char *method,
                                 const pb_value *args, const pb_value *kwargs, pb_object *persp,
                                 pb_deferred **dout, pb_errbuf *err) {
    b->send_cache = 1;
    int rc = send_message(b, luid, NULL, method, args, kwargs, persp, 1, 0, 0, dout, err);
    b->send_cache = 0;
    return rc;
}
