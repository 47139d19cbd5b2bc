/*
 * deferred.c - pb_deferred: a refcounted result-that-arrives-later with a
 * callback chain, in the spirit of Twisted's Deferred.
 *
 * The result (value or failure) lives in the deferred's own arena, so a
 * producer can fire it with values from any arena and drop its own.
 * Callbacks may replace the result; a callback that returns a PB_E* code
 * turns the result into a failure (like raising).  Callbacks added while
 * the chain runs (even from inside a callback) run in the same pass.
 */
#include <stdlib.h>
#include <string.h>
#include "pb/deferred.h"
#include "arena_int.h"
#include "broker_int.h"
#include "tlcache_int.h"

#define DPOOL_MAX 32               /* unused deferreds a pool keeps */
#define DPOOL_ARENA_KEEP 16384u    /* arena bytes a parked deferred keeps */
#define DPOOL_CBS_KEEP 8           /* callback slots a parked deferred keeps */

typedef struct dcb {
    pb_deferred_fn cb, eb;
    void *ud;
    void (*free_ud)(void *ud); /* runs once when the entry is used or dropped */
} dcb;

struct pb_deferred {
    unsigned long refs;
    pb_arena *arena;
    pb_arena *held;   /* an adopted arena the result lives in (see
                         pb__deferred_callback_adopt), or NULL */
    int fired, running;
    pb_value *value;
    pb_failure *failure;
    dcb *cbs;
    size_t n, cap, next;
    void (*canceller)(pb_deferred *d, void *ud);
    void *cancel_ud;
    pb__dpool *pool;          /* where it goes back to (reference held), or NULL */
    struct pb_deferred *nextfree; /* while parked in the pool */
};

/* A per-broker pool of unused deferreds (each with its arena and callback
 * array) and of empty arenas, so that a call in the steady state
 * allocates nothing.  Every live pooled deferred holds a reference; so
 * does the owner until it closes the pool, after which everything is
 * freed for real. */
struct pb__dpool {
    unsigned long refs;
    int closed;
    pb_deferred *free;
    size_t nfree;
};

pb__dpool *pb__dpool_new(void) {
    pb__dpool *p = calloc(1, sizeof *p);
    if (p) p->refs = 1;
    return p;
}

static void really_free_deferred(pb_deferred *d) {
    free(d->cbs);
    pb_arena_free(d->arena);
    pb_arena_free(d->held);
    free(d);
}

static void dpool_unref(pb__dpool *p) {
    if (p && --p->refs == 0) free(p);
}

void pb__dpool_close(pb__dpool *p) {
    if (!p) return;
    p->closed = 1;
    while (p->free) {
        pb_deferred *d = p->free;
        p->free = d->nextfree;
        really_free_deferred(d);
    }
    p->nfree = 0;
    dpool_unref(p);
}

/* Empty arenas are shared by the thread's connections (tlcache.c), so an
 * idle connection keeps none. */
pb_arena *pb__pool_arena_get(pb__dpool *p) {
    (void)p;
    return pb__tl_arena_get();
}

void pb__pool_arena_put(pb__dpool *p, pb_arena *a) {
    if (!a) return;
    pb__arena_recycle(a, PB__POOL_ARENA_KEEP); /* hooks: may run application code */
    pb__pool_arena_park(p, a);
}

void pb__pool_arena_park(pb__dpool *p, pb_arena *a) {
    (void)p;
    pb__tl_arena_put(a);
}

pb_deferred *pb__deferred_new_pooled(pb__dpool *p) {
    if (!p || p->closed) return pb_deferred_new();
    pb_deferred *d = p->free;
    if (d) {
        p->free = d->nextfree;
        p->nfree--;
        d->nextfree = NULL;
    } else if (!(d = pb_deferred_new())) {
        return NULL;
    }
    d->pool = p;
    p->refs++;
    return d;
}

/* Used when even building a failure is impossible (out of memory). */
static const char *const oom_parents[] = {"builtins.MemoryError", "builtins.Exception",
                                          "builtins.BaseException", "builtins.object"};
static const pb_failure oom_failure = {"builtins.MemoryError", "out of memory", NULL,
                                       (const char **)oom_parents, 4, NULL, PB_ENOMEM, 0};

pb_deferred *pb_deferred_new(void) {
    pb_deferred *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->arena = pb_arena_new(0);
    if (!d->arena) {
        free(d);
        return NULL;
    }
    d->refs = 1;
    return d;
}

pb_deferred *pb_deferred_ref(pb_deferred *d) {
    if (d) d->refs++;
    return d;
}

void pb_deferred_unref(pb_deferred *d) {
    if (!d || --d->refs) return;
    for (size_t i = d->next; i < d->n; i++)
        if (d->cbs[i].free_ud) d->cbs[i].free_ud(d->cbs[i].ud);
    pb__dpool *p = d->pool;
    if (!p) {
        really_free_deferred(d);
        return;
    }
    /* back to the pool: forget the result first (the arenas' hooks may
     * run application code, which may even close the pool; our reference
     * keeps p itself alive) */
    pb__arena_recycle(d->arena, DPOOL_ARENA_KEEP);
    pb_arena *held = d->held;
    d->held = NULL;
    if (held) pb__arena_recycle(held, PB__POOL_ARENA_KEEP);
    pb__pool_arena_park(p, held);
    if (!p->closed && p->nfree < DPOOL_MAX) {
        if (d->cap > DPOOL_CBS_KEEP) {
            free(d->cbs);
            d->cbs = NULL;
            d->cap = 0;
        }
        pb_arena *a = d->arena;
        dcb *cbs = d->cbs;
        size_t cap = d->cap;
        memset(d, 0, sizeof *d);
        d->refs = 1;
        d->arena = a;
        d->cbs = cbs;
        d->cap = cap;
        d->nextfree = p->free;
        p->free = d;
        p->nfree++;
    } else {
        really_free_deferred(d);
    }
    dpool_unref(p);
}

static void set_code_failure(pb_deferred *d, int code) {
    pb_failure *f = pb_failure_new(d->arena, code, pb__failure_type_for_code(code),
                                   pb_strerror(code), NULL, 0);
    d->failure = f ? f : (pb_failure *)&oom_failure;
    d->value = NULL;
}

static void run(pb_deferred *d) {
    if (d->running || !d->fired) return;
    d->running = 1;
    d->refs++;
    while (d->next < d->n) {
        dcb c = d->cbs[d->next++];
        pb_deferred_fn fn = d->failure ? c.eb : c.cb;
        if (fn) {
            int rc = fn(d, c.ud);
            if (rc < 0) set_code_failure(d, rc);
        }
        if (c.free_ud) c.free_ud(c.ud);
    }
    d->n = d->next = 0;
    d->running = 0;
    pb_deferred_unref(d);
}

int pb__deferred_add_full(pb_deferred *d, pb_deferred_fn callback, pb_deferred_fn errback,
                          void *ud, void (*free_ud)(void *)) {
    if (!d) return PB_EINVAL;
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 4;
        dcb *c = realloc(d->cbs, cap * sizeof *c);
        if (!c) return PB_ENOMEM;
        d->cbs = c;
        d->cap = cap;
    }
    d->cbs[d->n++] = (dcb){callback, errback, ud, free_ud};
    run(d);
    return PB_OK;
}

int pb_deferred_add(pb_deferred *d, pb_deferred_fn callback, pb_deferred_fn errback, void *ud) {
    return pb__deferred_add_full(d, callback, errback, ud, NULL);
}

void pb_deferred_set_canceller(pb_deferred *d, void (*fn)(pb_deferred *d, void *ud), void *ud) {
    if (!d) return;
    d->canceller = fn;
    d->cancel_ud = ud;
}

int pb_deferred_callback(pb_deferred *d, const pb_value *v) {
    if (!d) return PB_EINVAL;
    if (d->fired) return PB_ESTATE;
    d->fired = 1;
    d->canceller = NULL;
    d->value = v ? pb_value_copy(d->arena, v) : pb_none(d->arena);
    if (!d->value) d->failure = (pb_failure *)&oom_failure;
    run(d);
    return d->value ? PB_OK : PB_ENOMEM;
}

int pb__deferred_callback_adopt(pb_deferred *d, pb_value *v, pb_arena *a) {
    if (!d || !v || !a) return PB_EINVAL;
    if (d->fired || d->held) return PB_ESTATE;
    /* v stays where it is: the deferred keeps its arena alive (and
     * callbacks still build in d->arena, which stays put) */
    d->held = a;
    d->fired = 1;
    d->canceller = NULL;
    d->value = v;
    run(d);
    return PB_OK;
}

int pb_deferred_errback(pb_deferred *d, const pb_failure *f) {
    if (!d) return PB_EINVAL;
    if (d->fired) return PB_ESTATE;
    d->fired = 1;
    d->canceller = NULL;
    d->failure = f ? pb_failure_copy(d->arena, f)
                   : pb_failure_new(d->arena, PB_EREMOTE, NULL, NULL, NULL, 0);
    if (!d->failure) d->failure = (pb_failure *)&oom_failure;
    run(d);
    return PB_OK;
}

int pb_deferred_fail(pb_deferred *d, int code, const char *type, const char *value) {
    if (!d) return PB_EINVAL;
    if (d->fired) return PB_ESTATE;
    pb_failure *f = pb_failure_new(d->arena, code, type, value, NULL, 0);
    d->fired = 1;
    d->canceller = NULL;
    d->failure = f ? f : (pb_failure *)&oom_failure;
    run(d);
    return PB_OK;
}

void pb_deferred_cancel(pb_deferred *d) {
    if (!d || d->fired) return;
    d->refs++;
    void (*fn)(pb_deferred *, void *) = d->canceller;
    d->canceller = NULL;
    if (fn) fn(d, d->cancel_ud);
    if (!d->fired)
        pb_deferred_fail(d, PB_ECANCELLED, PB_FAILURE_CANCELLED, "Deferred was cancelled");
    pb_deferred_unref(d);
}

int pb_deferred_fired(const pb_deferred *d) { return d && d->fired; }
pb_value *pb_deferred_value(const pb_deferred *d) {
    return d && d->fired && !d->failure ? d->value : NULL;
}
const pb_failure *pb_deferred_failure(const pb_deferred *d) {
    return d && d->fired ? d->failure : NULL;
}
pb_arena *pb_deferred_arena(pb_deferred *d) { return d ? d->arena : NULL; }

int pb_deferred_set_value(pb_deferred *d, pb_value *v) {
    if (!d) return PB_EINVAL;
    if (!d->fired) return PB_ESTATE;
    pb_value *nv = v ? v : pb_none(d->arena);
    if (!nv) return PB_ENOMEM;
    d->value = nv;
    d->failure = NULL;
    return PB_OK;
}

int pb_deferred_set_failure(pb_deferred *d, const pb_failure *f) {
    if (!d || !f) return PB_EINVAL;
    if (!d->fired) return PB_ESTATE;
    if (f == d->failure) return PB_OK;
    pb_failure *c = pb_failure_copy(d->arena, f);
    if (!c) return PB_ENOMEM;
    d->failure = c;
    d->value = NULL;
    return PB_OK;
}

/* ------------------------------------------------------------------ chain */

static int chain_cb(pb_deferred *src, void *ud) {
    pb_deferred_callback(ud, pb_deferred_value(src));
    return 0;
}

static int chain_eb(pb_deferred *src, void *ud) {
    pb_deferred_errback(ud, pb_deferred_failure(src));
    return 0;
}

static void chain_free(void *ud) { pb_deferred_unref(ud); }

int pb_deferred_chain(pb_deferred *src, pb_deferred *dst) {
    if (!src || !dst || src == dst) return PB_EINVAL;
    pb_deferred_ref(dst);
    int rc = pb__deferred_add_full(src, chain_cb, chain_eb, dst, chain_free);
    if (rc) pb_deferred_unref(dst);
    return rc;
}
