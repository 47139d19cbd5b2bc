/*
 * tlcache.c - per-thread caches of idle per-connection resources (see
 * tlcache_int.h).  Plain arrays in thread-local storage; a pthread key's
 * destructor frees what is left when a thread exits.
 */
#include <pthread.h>
#include <stdlib.h>
#include "arena_int.h"
#include "tlcache_int.h"

#define TL_ARENAS 64
#define TL_DECS 32
#define TL_BUFS 32
#define TL_BUF_MAX 65536u   /* bigger output buffers are freed when drained */
#define TL_ARENA_KEEP 65536u
#define TL_BLK_CLASSES 4
#define TL_BLK_MAX 64       /* records kept per size */

typedef struct tlc {
    pb_arena *arenas[TL_ARENAS];
    size_t narenas;
    pb_banana_dec *decs[TL_DECS];
    size_t ndecs;
    struct {
        uint8_t *p;
        size_t cap;
    } bufs[TL_BUFS];
    size_t nbufs;
    struct {
        size_t size; /* 0: unused class */
        void *head;  /* free list linked through the blocks' first word */
        size_t n;
    } blk[TL_BLK_CLASSES];
    int registered;
} tlc;

static _Thread_local tlc g_tl;
static pthread_key_t g_key;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void tl_free_all(void *p) {
    tlc *t = p;
    while (t->narenas) pb_arena_free(t->arenas[--t->narenas]);
    while (t->ndecs) pb_banana_dec_free(t->decs[--t->ndecs]);
    while (t->nbufs) free(t->bufs[--t->nbufs].p);
    for (int i = 0; i < TL_BLK_CLASSES; i++) {
        while (t->blk[i].head) {
            void *q = t->blk[i].head;
            t->blk[i].head = *(void **)q;
            free(q);
        }
        t->blk[i].n = 0;
    }
    t->registered = 0;
}

static void make_key(void) { pthread_key_create(&g_key, tl_free_all); }

static void tl_register(void) {
    if (g_tl.registered) return;
    pthread_once(&g_once, make_key);
    if (pthread_setspecific(g_key, &g_tl) == 0) g_tl.registered = 1;
}

pb_arena *pb__tl_arena_get(void) {
    if (g_tl.narenas) return g_tl.arenas[--g_tl.narenas];
    return pb_arena_new(0);
}

void pb__tl_arena_put(pb_arena *a) {
    if (!a) return;
    if (g_tl.narenas < TL_ARENAS) {
        tl_register();
        pb__arena_set_limit(a, 0);
        g_tl.arenas[g_tl.narenas++] = a;
    } else {
        pb_arena_free(a);
    }
}

pb_banana_dec *pb__tl_dec_get(void) { return g_tl.ndecs ? g_tl.decs[--g_tl.ndecs] : NULL; }

void pb__tl_dec_put(pb_banana_dec *d) {
    if (!d) return;
    pb__arena_recycle(pb_banana_dec_arena(d), TL_ARENA_KEEP);
    if (g_tl.ndecs < TL_DECS) {
        tl_register();
        g_tl.decs[g_tl.ndecs++] = d;
    } else {
        pb_banana_dec_free(d);
    }
}

uint8_t *pb__tl_buf_get(size_t need, size_t *cap) {
    /* the most recently parked buffer that is big enough */
    for (size_t i = g_tl.nbufs; i-- > 0;)
        if (g_tl.bufs[i].cap >= need) {
            uint8_t *p = g_tl.bufs[i].p;
            *cap = g_tl.bufs[i].cap;
            g_tl.bufs[i] = g_tl.bufs[--g_tl.nbufs];
            return p;
        }
    return NULL;
}

void pb__tl_buf_put(uint8_t *p, size_t cap) {
    if (!p) return;
    if (cap <= TL_BUF_MAX && g_tl.nbufs < TL_BUFS) {
        tl_register();
        g_tl.bufs[g_tl.nbufs].p = p;
        g_tl.bufs[g_tl.nbufs].cap = cap;
        g_tl.nbufs++;
    } else {
        free(p);
    }
}

void *pb__tl_blk_get(size_t size) {
    for (int i = 0; i < TL_BLK_CLASSES; i++)
        if (g_tl.blk[i].size == size && g_tl.blk[i].head) {
            void *p = g_tl.blk[i].head;
            g_tl.blk[i].head = *(void **)p;
            g_tl.blk[i].n--;
            return p;
        }
    return malloc(size < sizeof(void *) ? sizeof(void *) : size);
}

void pb__tl_blk_put(void *p, size_t size) {
    if (!p) return;
    int free_class = -1;
    for (int i = 0; i < TL_BLK_CLASSES; i++) {
        if (g_tl.blk[i].size == size) {
            if (g_tl.blk[i].n >= TL_BLK_MAX) break;
            tl_register();
            *(void **)p = g_tl.blk[i].head;
            g_tl.blk[i].head = p;
            g_tl.blk[i].n++;
            return;
        }
        if (free_class < 0 && !g_tl.blk[i].head) free_class = i;
    }
    int known = 0;
    for (int i = 0; i < TL_BLK_CLASSES; i++) known |= g_tl.blk[i].size == size;
    if (!known && free_class >= 0 && size >= sizeof(void *)) {
        tl_register();
        g_tl.blk[free_class].size = size;
        *(void **)p = NULL;
        g_tl.blk[free_class].head = p;
        g_tl.blk[free_class].n = 1;
        return;
    }
    free(p);
}
