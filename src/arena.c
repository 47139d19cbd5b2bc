/*
 * arena.c - bump allocator that owns value graphs, and the growable pb_buf.
 *
 * Blocks are chained; big requests get a block of their own.  reset keeps
 * the first block so a connection that decodes one message after another
 * reaches a steady state without malloc.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "pb/value.h"
#include "arena_int.h"
#include "tlcache_int.h"

#define ARENA_BLOCK 4096u      /* first block */
#define ARENA_BLOCK_MAX 65536u /* later blocks double up to this */
#define ARENA_KEEP 262144u     /* most bytes of blocks a reset keeps for reuse */

typedef struct block {
    struct block *next;
    size_t size;
    int std; /* a standard block (reusable), not a one-off for a big request */
    _Alignas(16) unsigned char data[];
} block;

typedef struct hook {
    struct hook *next;
    void (*fn)(void *);
    void *p;
} hook;

/* The current block is head; cur/left describe its free tail, so the
 * common allocation is a compare and a bump.  budget is what the limit
 * still allows (SIZE_MAX when there is none). */
struct pb_arena {
    block *head;       /* current block (most recent first) */
    unsigned char *cur;
    size_t left;
    size_t budget;
    block *spare;      /* standard blocks kept by reset, for reuse */
    size_t spare_bytes;
    size_t next_size;  /* size of the next standard block */
    hook *hooks;
    size_t limit, total;
    int over_limit;
};

pb_arena *pb_arena_new(size_t limit) {
    pb_arena *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->limit = limit;
    a->budget = limit ? limit : SIZE_MAX;
    a->next_size = ARENA_BLOCK;
    return a;
}

static void run_hooks(pb_arena *a) {
    /* hooks live in the arena itself, so run them all before freeing */
    hook *h = a->hooks;
    a->hooks = NULL;
    for (; h; h = h->next) h->fn(h->p);
}

static void free_chain(block *b) {
    while (b) {
        block *n = b->next;
        free(b);
        b = n;
    }
}

void pb_arena_free(pb_arena *a) {
    if (!a) return;
    run_hooks(a);
    free_chain(a->head);
    free_chain(a->spare);
    free(a);
}

void pb__arena_recycle(pb_arena *a, size_t keep) {
    run_hooks(a);
    if (a->spare_bytes > keep) {
        /* blocks kept by earlier resets beyond keep go first */
        free_chain(a->spare);
        a->spare = NULL;
        a->spare_bytes = 0;
    }
    block *b = a->head;
    while (b) {
        block *n = b->next;
        if (b->std && a->spare_bytes + b->size <= keep) {
            b->next = a->spare;
            a->spare = b;
            a->spare_bytes += b->size;
        } else {
            free(b);
        }
        b = n;
    }
    a->head = NULL;
    a->cur = NULL;
    a->left = 0;
    a->total = 0;
    a->budget = a->limit ? a->limit : SIZE_MAX;
    a->over_limit = 0;
}

void pb_arena_reset(pb_arena *a) { pb__arena_recycle(a, ARENA_KEEP); }

void pb__arena_set_limit(pb_arena *a, size_t limit) {
    a->limit = limit;
    a->budget = !limit ? SIZE_MAX : limit > a->total ? limit - a->total : 0;
}

/* A standard block with room for n: a kept one if any fits, else a new one. */
static block *std_block(pb_arena *a, size_t n) {
    for (block **pp = &a->spare; *pp; pp = &(*pp)->next) {
        block *b = *pp;
        if (b->size >= n) {
            *pp = b->next;
            a->spare_bytes -= b->size;
            return b;
        }
    }
    size_t size = a->next_size;
    while (size < n) size *= 2; /* n <= ARENA_BLOCK_MAX / 4 here */
    block *b = malloc(sizeof(block) + size);
    if (!b) return NULL;
    b->size = size;
    b->std = 1;
    if (a->next_size < ARENA_BLOCK_MAX) a->next_size *= 2;
    return b;
}

#if defined(__GNUC__)
__attribute__((noinline)) /* keep the bump path free of its register saves */
#endif
static void *alloc_slow(pb_arena *a, size_t n) {
    if (n > a->budget) {
        a->over_limit = 1;
        return NULL;
    }
    if (n > a->next_size / 4) {
        /* a big one-off gets a block of its own */
        if (n > SIZE_MAX - sizeof(block)) return NULL;
        block *nb = malloc(sizeof(block) + n);
        if (!nb) {
            a->over_limit = 0;
            return NULL;
        }
        nb->size = n;
        nb->std = 0;
        if (a->head && a->left >= 64) {
            /* link it behind the current block, keep filling that */
            nb->next = a->head->next;
            a->head->next = nb;
        } else {
            nb->next = a->head;
            a->head = nb;
            a->cur = nb->data + n;
            a->left = 0;
        }
        a->budget -= n;
        a->total += n;
        return nb->data;
    }
    block *b = std_block(a, n);
    if (!b) {
        a->over_limit = 0;
        return NULL;
    }
    b->next = a->head;
    a->head = b;
    a->cur = b->data + n;
    a->left = b->size - n;
    a->budget -= n;
    a->total += n;
    return b->data;
}

void *pb_arena_alloc(pb_arena *a, size_t n) {
    if (n > SIZE_MAX - 64) return NULL;
    n = n ? (n + 7) & ~(size_t)7 : 8;
    if (n <= a->left && n <= a->budget) {
        void *p = a->cur;
        a->cur += n;
        a->left -= n;
        a->budget -= n;
        a->total += n;
        return p;
    }
    return alloc_slow(a, n);
}

char *pb_arena_memdup(pb_arena *a, const void *p, size_t n) {
    if (n == SIZE_MAX) return NULL;
    char *d = pb_arena_alloc(a, n + 1);
    if (!d) return NULL;
    if (n) memcpy(d, p, n);
    d[n] = 0;
    return d;
}

int pb_arena_owns(const pb_arena *a, const void *p) {
    uintptr_t x = (uintptr_t)p;
    for (const block *b = a ? a->head : NULL; b; b = b->next)
        if (x >= (uintptr_t)b->data && x < (uintptr_t)b->data + b->size) return 1;
    return 0;
}

size_t pb_arena_used(const pb_arena *a) { return a->total; }
int pb_arena_over_limit(const pb_arena *a) { return a->over_limit; }

int pb_arena_on_free(pb_arena *a, void (*fn)(void *), void *p) {
    /* hooks must not count against the limit: they protect resources */
    size_t saved = a->budget;
    a->budget = SIZE_MAX;
    hook *h = pb_arena_alloc(a, sizeof *h);
    a->budget = saved;
    if (!h) return PB_ENOMEM;
    h->fn = fn;
    h->p = p;
    h->next = a->hooks;
    a->hooks = h;
    return PB_OK;
}

/* ------------------------------------------------------------------ pb_buf */

void pb_buf_init(pb_buf *b) { memset(b, 0, sizeof *b); }

void pb_buf_free(pb_buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

int pb_buf_reserve(pb_buf *b, size_t extra) {
    if (extra > SIZE_MAX - b->len) return PB_ENOMEM;
    size_t need = b->len + extra;
    if (b->limit && need > b->limit) return PB_ELIMIT;
    if (need <= b->cap) return PB_OK;
    if (!b->data) { /* an idle connection's drained buffer, if one is parked */
        size_t tcap;
        uint8_t *t = pb__tl_buf_get(need, &tcap);
        if (t) {
            b->data = t;
            b->cap = tcap;
            return PB_OK;
        }
    }
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    uint8_t *d = realloc(b->data, cap);
    if (!d) return PB_ENOMEM;
    b->data = d;
    b->cap = cap;
    return PB_OK;
}

int pb_buf_append(pb_buf *b, const void *p, size_t n) {
    int rc = pb_buf_reserve(b, n);
    if (rc) return rc;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    return PB_OK;
}

int pb_buf_putc(pb_buf *b, uint8_t c) {
    if (b->len == b->cap) {
        int rc = pb_buf_reserve(b, 1);
        if (rc) return rc;
    }
    b->data[b->len++] = c;
    return PB_OK;
}

int pb_buf_printf(pb_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return PB_EINVAL;
    int rc = pb_buf_reserve(b, (size_t)n + 1);
    if (rc) return rc;
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return PB_OK;
}

void pb_buf_consume(pb_buf *b, size_t n) {
    if (n >= b->len) { b->len = 0; return; }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}
