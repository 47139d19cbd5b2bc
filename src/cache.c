/*
 * cache.c - Cacheable and RemoteCache (SPEC §4.4, §5.3, §5.6).
 *
 * Owner side, per connection: `out` maps LUID -> entry and `out_rev` maps
 * the cacheable -> entry (Twisted keys remotelyCachedLUIDs by object
 * alone, so the first perspective sticks).  An entry counts the copies
 * the peer holds; it owns one pb_cache_observer, which outlives it only
 * as a detached handle.  Registrations made while a message is encoded
 * are journalled so that a message that fails to encode leaves nothing
 * behind (stoppedObserving runs for an entry whose state was taken).
 *
 * Receiving side: `in` maps the owner's LUID -> pb_remote_cache.  The
 * broker allocates the application's struct with a private record after
 * it (obj.impl).  The object's reference count counts the copies the
 * application holds: at 0 the owed decaches go out, but the object stays
 * in the table (cachemessages may still arrive) until uncache; it is freed
 * when it is neither in the table nor referenced.  (TAG LUID STATE)
 * arrives through the jelly registry hook registered per class, which
 * finds its broker through a thread-local set around each unjelly.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "broker_int.h"
#include "broker_map.h"
#include "cache_int.h"

_Thread_local const pb__cache_dctx *pb__cache_cur;

typedef struct cout {
    uint64_t luid;
    pb_cacheable *obj;      /* reference held */
    pb_object *persp;       /* reference held */
    unsigned long refs;     /* copies the peer holds */
    pb_cache_observer *obs; /* reference held */
    int observed;           /* get_state ran */
} cout;

struct pb_cache_observer {
    unsigned long refs;
    pb_broker *b;      /* NULL once the cache is gone */
    cout *e;           /* NULL once the cache is gone */
    pb_cacheable *obj; /* reference held */
    pb_object *persp;  /* reference held */
};

typedef struct rcache {
    pb_broker *b;          /* NULL once forgotten (uncache, connection lost) */
    uint64_t luid;
    unsigned long tokens;  /* decaches owed: copies received since the last drop */
    int in_table;
    pb_arena *arena;       /* default state copy (no set_state) */
    pb_value *state;
} rcache;

struct pb__caches {
    kmap out, out_rev, in;
};

typedef struct cj_ent {
    cout *e;
    int created;
} cj_ent;

typedef struct cjournal {
    cj_ent *v;
    size_t n, cap;
} cjournal;

static pb__caches *tables(pb_broker *b, int create) {
    pb__caches **slot = pb__broker_caches(b);
    if (!*slot && create) *slot = calloc(1, sizeof **slot);
    return *slot;
}

/* ------------------------------------------------------------ observers */

pb_cache_observer *pb_cache_observer_ref(pb_cache_observer *o) {
    if (o) o->refs++;
    return o;
}

void pb_cache_observer_unref(pb_cache_observer *o) {
    if (!o || --o->refs) return;
    pb_object *persp = o->persp;
    pb_cacheable *c = o->obj;
    free(o);
    pb_object_unref(persp);
    if (c) pb_object_unref(&c->obj);
}

int pb_cache_observer_active(const pb_cache_observer *o) { return o && o->b && o->e; }
pb_broker *pb_cache_observer_broker(const pb_cache_observer *o) { return o ? o->b : NULL; }
pb_cacheable *pb_cache_observer_cacheable(const pb_cache_observer *o) { return o ? o->obj : NULL; }
void *pb_cache_observer_avatar(const pb_cache_observer *o) { return o ? o->persp : NULL; }

pb_deferred *pb_cache_observer_call(pb_cache_observer *o, const char *method,
                                    const pb_value *args, const pb_value *kwargs,
                                    pb_errbuf *err) {
    if (!o || !method) {
        pb_err_set(err, PB_EINVAL, "NULL observer or method");
        return NULL;
    }
    if (!o->b || !o->e) {
        pb_err_set(err, PB_ESTATE,
                   "You can't call a cached method when the object hasn't been given to the peer yet.");
        return NULL;
    }
    pb_deferred *d = NULL;
    int rc = pb__broker_send_cachemessage(o->b, o->e->luid, method, args, kwargs, o->persp, &d, err);
    if (!rc && err) err->code = 0;
    return d;
}

pb_deferred *pb_cache_observer_callf(pb_cache_observer *o, const char *method, const char *fmt, ...) {
    pb_arena *a = pb_arena_new(0);
    if (!a) return NULL;
    va_list ap;
    va_start(ap, fmt);
    pb_value *t = pb__args_vformat(a, fmt, ap);
    va_end(ap);
    pb_deferred *d = t ? pb_cache_observer_call(o, method, t, NULL, NULL) : NULL;
    pb_arena_free(a);
    return d;
}

/* ------------------------------------------------------ the owner's side */

void pb_cacheable_init(pb_cacheable *c, const pb_cacheable_class *cls) {
    if (c) pb_object_init(&c->obj, cls ? &cls->base : NULL);
}

pb_value *pb_cacheable_value(pb_arena *a, pb_cacheable *c) {
    return c ? pb_object_value(a, &c->obj) : NULL;
}

pb_cacheable *pb_value_cacheable(const pb_value *v) {
    if (!v || v->type != PB_OBJECT || !v->u.h) return NULL;
    const pb_object *o = (const pb_object *)v->u.h;
    return o->cls && o->cls->flavor == PB_CACHEABLE ? (pb_cacheable *)v->u.h : NULL;
}

static const pb_cacheable_class *cacheable_class(const pb_cacheable *c) {
    return (const pb_cacheable_class *)c->obj.cls;
}

/* Forget an entry: tables, then stoppedObserving (if its state was
 * taken), then the observer is cut loose and the references go. */
static void cout_release(pb_broker *b, pb__caches *t, cout *e, int stopped) {
    if (t) {
        if (kmap_get(&t->out, e->luid, 0) == e) kmap_del(&t->out, e->luid, 0);
        if (kmap_get(&t->out_rev, (uint64_t)(uintptr_t)e->obj, 0) == e)
            kmap_del(&t->out_rev, (uint64_t)(uintptr_t)e->obj, 0);
    }
    const pb_cacheable_class *cls = cacheable_class(e->obj);
    if (stopped && e->observed && cls->stopped_observing)
        cls->stopped_observing(e->obj, e->persp, e->obs);
    e->obs->b = NULL;
    e->obs->e = NULL;
    pb_cache_observer_unref(e->obs);
    pb_object_unref(e->persp);
    pb_object_unref(&e->obj->obj);
    free(e);
    (void)b;
}

static int journal_add(void **journal, cout *e, int created) {
    cjournal *j = *journal;
    if (!j) {
        if (!(j = calloc(1, sizeof *j))) return PB_ENOMEM;
        *journal = j;
    }
    if (j->n == j->cap) {
        size_t cap = j->cap ? 2 * j->cap : 4;
        cj_ent *v = realloc(j->v, cap * sizeof *v);
        if (!v) return PB_ENOMEM;
        j->v = v;
        j->cap = cap;
    }
    j->v[j->n++] = (cj_ent){e, created};
    return PB_OK;
}

void pb__cache_journal_end(pb_broker *b, void **journal, int rollback) {
    cjournal *j = *journal;
    *journal = NULL;
    if (!j) return;
    if (rollback) {
        pb__caches *t = tables(b, 0);
        while (j->n) {
            cj_ent je = j->v[--j->n];
            if (je.created) cout_release(b, t, je.e, 1);
            else je.e->refs--;
        }
    }
    free(j->v);
    free(j);
}

static int put_luid_form(pb_buf *out, pb_dialect d, const char *word, uint64_t luid) {
    int rc;
    if ((rc = pb_banana_put_list(out, 2)) || (rc = pb_banana_put_bytes(out, d, word, strlen(word))) ||
        (rc = pb_banana_put_int(out, (int64_t)luid)))
        return rc;
    return PB_OK;
}

static int encode_remote_cache(pb_broker *b, pb_buf *out, pb_dialect d, pb_remote_cache *c,
                               pb_errbuf *err) {
    rcache *r = c->obj.impl;
    if (!r || !r->b || !r->in_table)
        return pb_err_set(err, PB_ESTATE, "the cache was forgotten (uncached, or its connection is gone)");
    if (r->b != b)
        return pb_err_set(err, PB_ETHIRDPARTY, "You cannot exchange cached proxies between brokers.");
    return put_luid_form(out, d, "lcache", r->luid);
}

int pb__cache_encode(pb_broker *b, pb_object *persp, pb_buf *out, pb_dialect d, pb_object *o,
                     const pb_jelly_hooks *h, void **journal, int *limit, pb_errbuf *err) {
    if (o->cls->flavor == PB_REMOTE_CACHE)
        return encode_remote_cache(b, out, d, (pb_remote_cache *)o, err);
    pb_cacheable *c = (pb_cacheable *)o;
    const pb_cacheable_class *cls = cacheable_class(c);
    pb__caches *t = tables(b, 1);
    if (!t) return pb_err_set(err, PB_ENOMEM, "out of memory");
    cout *e = kmap_get(&t->out_rev, (uint64_t)(uintptr_t)c, 0);
    if (e) { /* the peer has it: (cached LUID) */
        if (journal_add(journal, e, 0)) return pb_err_set(err, PB_ENOMEM, "out of memory");
        e->refs++;
        return put_luid_form(out, d, "cached", e->luid);
    }
    const pb_broker_config *cfg = pb__broker_cfg(b);
    if (t->out.len > cfg->max_refs) {
        *limit = 1;
        return pb_err_set(err, PB_ELIMIT, "Maximum PB cache count exceeded.");
    }
    if (!(e = calloc(1, sizeof *e))) return pb_err_set(err, PB_ENOMEM, "out of memory");
    pb_cache_observer *obs = calloc(1, sizeof *obs);
    if (!obs) {
        free(e);
        return pb_err_set(err, PB_ENOMEM, "out of memory");
    }
    e->luid = pb__broker_new_luid(b);
    e->obj = c;
    pb_object_ref(&c->obj);
    e->persp = pb_object_ref(persp);
    e->refs = 1;
    e->obs = obs;
    obs->refs = 1;
    obs->b = b;
    obs->e = e;
    obs->obj = c;
    pb_object_ref(&c->obj);
    obs->persp = pb_object_ref(persp);
    if (kmap_put(&t->out, e->luid, 0, e)) {
        cout_release(b, t, e, 0);
        return pb_err_set(err, PB_ENOMEM, "out of memory");
    }
    if (kmap_put(&t->out_rev, (uint64_t)(uintptr_t)c, 0, e) || journal_add(journal, e, 1)) {
        cout_release(b, t, e, 0);
        return pb_err_set(err, PB_ENOMEM, "out of memory");
    }
    /* from here a failure is undone by the journal (rollback) */
    pb_arena *sa = pb_arena_new(0);
    if (!sa) return pb_err_set(err, PB_ENOMEM, "out of memory");
    e->observed = 1;
    pb_value *state = cls->get_state ? cls->get_state(c, sa, persp, obs) : pb_none(sa);
    int rc;
    const char *tag = cls->base.name ? cls->base.name : "";
    if (!state) {
        rc = pb_err_set(err, PB_EUNSENDABLE, "%.80s: get_state gave no state", tag);
    } else if (!(rc = pb_banana_put_list(out, 3)) &&
               !(rc = pb_banana_put_bytes(out, d, tag, strlen(tag))) &&
               !(rc = pb_banana_put_int(out, (int64_t)e->luid))) {
        pb_jelly_opts jo;
        memset(&jo, 0, sizeof jo);
        jo.hooks = h;
        jo.max_depth = cfg->limits.max_depth;
        rc = pb_jelly_encode(out, d, state, &jo, err);
    }
    pb_arena_free(sa);
    return rc;
}

/* -------------------------------------------------- the receiving side */

static void rcache_free(pb_remote_cache *c) {
    rcache *r = c->obj.impl;
    if (c->cls && c->cls->base.destroy) c->cls->base.destroy(&c->obj);
    pb_arena_free(r->arena);
    free(c);
}

/* The application dropped its last copy: the owed decaches go out; the
 * object stays known until the owner's uncache. */
static void rcache_handle_destroy(pb_handle *h) {
    pb_remote_cache *c = (pb_remote_cache *)h;
    rcache *r = c->obj.impl;
    if (r->b && r->in_table) {
        unsigned long n = r->tokens;
        r->tokens = 0;
        for (unsigned long i = 0; i < n; i++)
            if (pb__broker_send_luid(r->b, "decache", r->luid)) break;
        return;
    }
    rcache_free(c);
}

static size_t rcache_offset(const pb_remote_cache_class *cls) {
    size_t n = cls->size > sizeof(pb_remote_cache) ? cls->size : sizeof(pb_remote_cache);
    return (n + 15) & ~(size_t)15;
}

/* (TAG LUID STATE) of a registered class: the instance arrives with the
 * tuple (LUID, STATE) as its state. */
static int cache_hook(void *ud, pb_arena *a, pb_value **inout, pb_errbuf *err) {
    const pb_remote_cache_class *cls = ud;
    const pb__cache_dctx *cx = pb__cache_cur;
    if (!cx || !cx->b) return PB_OK; /* not on a connection: left as an instance */
    pb_broker *b = cx->b;
    const pb_value *st = (*inout)->u.inst.state;
    if (!st || st->type != PB_TUPLE || st->u.seq.len != 2 || st->u.seq.items[0]->type != PB_INT ||
        st->u.seq.items[0]->u.i <= 0)
        return pb_err_set(err, PB_EJELLY, "malformed cache form for %.80s (expected TAG LUID STATE)",
                          cls->tag);
    uint64_t luid = (uint64_t)st->u.seq.items[0]->u.i;
    const pb_value *state = st->u.seq.items[1];
    pb__caches *t = tables(b, 1);
    if (!t) return pb_err_set(err, PB_ENOMEM, "out of memory");
    if (kmap_get(&t->in, luid, 0))
        return pb_err_set(err, PB_EJELLY, "cache LUID %llu sent again while cached", (unsigned long long)luid);
    size_t maxc = pb__broker_cfg(b)->max_refs;
    if (maxc < 1024) maxc = 1024;
    if (t->in.len > maxc) return pb_err_set(err, PB_ELIMIT, "too many caches (%zu)", (size_t)t->in.len);
    size_t off = rcache_offset(cls);
    pb_remote_cache *c = calloc(1, off + sizeof(rcache));
    if (!c) return pb_err_set(err, PB_ENOMEM, "out of memory");
    rcache *r = (rcache *)((char *)c + off);
    pb_object_init(&c->obj, &cls->base);
    c->obj.h.destroy = rcache_handle_destroy;
    c->obj.h.refs = 0; /* the copies delivered are the references */
    c->obj.impl = r;
    c->cls = cls;
    r->luid = luid;
    int rc = PB_OK;
    if (cls->set_state) {
        rc = cls->set_state(c, state);
        if (rc && err && !err->code) pb_err_set(err, rc, "%.80s refused its state", cls->tag);
    } else if (!(r->arena = pb_arena_new(0)) || !(r->state = pb_value_copy(r->arena, state))) {
        rc = pb_err_set(err, PB_ENOMEM, "out of memory");
    }
    if (!rc && kmap_put(&t->in, luid, 0, c)) rc = pb_err_set(err, PB_ENOMEM, "out of memory");
    if (rc) {
        rcache_free(c);
        return rc;
    }
    r->b = b;
    r->in_table = 1;
    r->tokens = 1;
    pb_value *v = pb_object_value(a, &c->obj);
    if (!v) {
        /* the owner counts this copy: give it back at once */
        r->tokens = 0;
        pb__broker_send_luid(b, "decache", luid);
        return pb_err_set(err, PB_ENOMEM, "out of memory");
    }
    *inout = v;
    return PB_OK;
}

int pb_remote_cache_register(pb_jelly_registry *r, const pb_remote_cache_class *cls) {
    if (!r || !cls || !cls->tag || !*cls->tag || cls->base.flavor != PB_REMOTE_CACHE) return PB_EINVAL;
    return pb_jelly_registry_add(r, cls->tag, cache_hook, (void *)cls);
}

pb_remote_cache *pb_value_remote_cache(const pb_value *v) {
    if (!v || v->type != PB_OBJECT || !v->u.h) return NULL;
    const pb_object *o = (const pb_object *)v->u.h;
    return o->cls && o->cls->flavor == PB_REMOTE_CACHE && o->impl ? (pb_remote_cache *)v->u.h : NULL;
}

pb_remote_cache *pb_arg_cache(const pb_args *a, size_t i) {
    return a ? pb_value_remote_cache(pb_arg(a, i)) : NULL;
}

pb_value *pb_remote_cache_state(const pb_remote_cache *c) {
    return c && c->obj.impl ? ((rcache *)c->obj.impl)->state : NULL;
}

pb_broker *pb_remote_cache_broker(const pb_remote_cache *c) {
    return c && c->obj.impl ? ((rcache *)c->obj.impl)->b : NULL;
}

uint64_t pb_remote_cache_luid(const pb_remote_cache *c) {
    const rcache *r = c ? c->obj.impl : NULL;
    return r && r->in_table ? r->luid : 0;
}

/* ------------------------------------------------------- broker hooks */

int pb__cache_decode(pb_broker *b, pb_arena *a, const char *tag, const pb_value *sexp,
                     pb_value **out, pb_errbuf *err) {
    const pb_value *id = sexp->u.seq.len == 2 ? sexp->u.seq.items[1] : NULL;
    int lcache = !strcmp(tag, "lcache");
    if (!lcache && strcmp(tag, "cached"))
        return pb_err_set(err, PB_EINSECURE, "unknown reference form %.20s", tag);
    if (!id || id->type != PB_INT) return pb_err_set(err, PB_EJELLY, "malformed %s", tag);
    pb__caches *t = tables(b, 0);
    char buf[64];
    if (lcache) { /* our own cacheable, back from the peer */
        cout *e = t ? kmap_get(&t->out, (uint64_t)id->u.i, 0) : NULL;
        if (!e) {
            pb__id_repr(id, buf, sizeof buf, "?");
            return pb_err_set(err, PB_ENOTFOUND, "%s", buf);
        }
        *out = pb_object_value(a, &e->obj->obj);
    } else {
        pb_remote_cache *c = t ? kmap_get(&t->in, (uint64_t)id->u.i, 0) : NULL;
        if (!c) {
            pb__id_repr(id, buf, sizeof buf, "?");
            return pb_err_set(err, PB_ENOTFOUND, "%s", buf);
        }
        *out = pb_object_value(a, &c->obj);
        if (*out) ((rcache *)c->obj.impl)->tokens++;
    }
    return *out ? PB_OK : pb_err_set(err, PB_ENOMEM, "out of memory");
}

pb_object *pb__cache_lookup(pb_broker *b, const pb_value *id) {
    pb__caches *t = tables(b, 0);
    if (!t || !id || id->type != PB_INT) return NULL;
    pb_remote_cache *c = kmap_get(&t->in, (uint64_t)id->u.i, 0);
    return c ? &c->obj : NULL;
}

int pb__cache_command(pb_broker *b, const pb_value *x, char *msg, size_t cap) {
    const pb_value *cmd = x->u.seq.items[0];
    int decache = pb_value_is(cmd, "decache");
    const pb_value *id = x->u.seq.len == 2 ? x->u.seq.items[1] : NULL;
    pb__caches *t = tables(b, 0);
    void *found = NULL;
    if (t && id && id->type == PB_INT)
        found = kmap_get(decache ? &t->out : &t->in, (uint64_t)id->u.i, 0);
    if (!found) {
        char buf[64] = "?";
        if (id) pb__id_repr(id, buf, sizeof buf, "?");
        snprintf(msg, cap, "%s of unknown LUID %s", decache ? "decache" : "uncache", buf);
        return PB_EPROTO;
    }
    if (decache) {
        cout *e = found;
        if (--e->refs == 0) {
            uint64_t luid = e->luid;
            cout_release(b, t, e, 1); /* stoppedObserving, then forget */
            pb__broker_send_luid(b, "uncache", luid);
        }
        return PB_OK;
    }
    pb_remote_cache *c = found;
    rcache *r = c->obj.impl;
    kmap_del(&t->in, r->luid, 0);
    r->in_table = 0;
    r->b = NULL;
    r->tokens = 0;
    if (c->obj.h.refs == 0) rcache_free(c);
    return PB_OK;
}

void pb__cache_lost(pb_broker *b) {
    pb__caches *t = tables(b, 0);
    if (!t) return;
    /* caches we sent: stoppedObserving, as Twisted's connectionLost */
    while (t->out.len) {
        cout *e = NULL;
        for (size_t i = 0; i < t->out.cap && !e; i++) e = t->out.e[i].v;
        cout_release(b, t, e, 1);
    }
    /* caches we hold: forgotten; freed now unless the application holds them */
    while (t->in.len) {
        pb_remote_cache *c = NULL;
        for (size_t i = 0; i < t->in.cap && !c; i++) c = t->in.e[i].v;
        rcache *r = c->obj.impl;
        kmap_del(&t->in, r->luid, 0);
        r->in_table = 0;
        r->b = NULL;
        r->tokens = 0;
        if (c->obj.h.refs == 0) rcache_free(c);
    }
}

void pb__cache_free(pb_broker *b) {
    pb__caches **slot = pb__broker_caches(b);
    pb__caches *t = *slot;
    if (!t) return;
    pb__cache_lost(b);
    kmap_free(&t->out);
    kmap_free(&t->out_rev);
    kmap_free(&t->in);
    free(t);
    *slot = NULL;
}
