/*
 * arena.c - bump allocator that owns value graphs, and the growable pb_buf.
 *
 * Blocks are chained; big requests get a block of their own.  reset keeps
 * the first block so a connection that decodes one message after another
 * reaches a steady state without malloc.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "pb/value.h"

#define ARENA_BLOCK 4096u

typedef struct block {
    struct block *next;
    size_t size, used;
    _Alignas(16) unsigned char data[];
} block;

typedef struct hook {
    struct hook *next;
    void (*fn)(void *);
    void *p;
} hook;

struct pb_arena {
    block *head;     /* current block (most recent first) */
    hook *hooks;
    size_t limit, total;
    int over_limit;
};

pb_arena *pb_arena_new(size_t limit) {
    pb_arena *a = calloc(1, sizeof *a);
    if (a) a->limit = limit;
    return a;
}

static void run_hooks(pb_arena *a) {
    /* hooks live in the arena itself, so run them all before freeing */
    hook *h = a->hooks;
    a->hooks = NULL;
    for (; h; h = h->next) h->fn(h->p);
}

void pb_arena_free(pb_arena *a) {
    if (!a) return;
    run_hooks(a);
    block *b = a->head;
    while (b) {
        block *n = b->next;
        free(b);
        b = n;
    }
    free(a);
}

void pb_arena_reset(pb_arena *a) {
    run_hooks(a);
    block *b = a->head, *keep = NULL;
    while (b) {
        block *n = b->next;
        if (!n && b->size == ARENA_BLOCK) keep = b; /* the oldest, standard-size block */
        else free(b);
        b = n;
    }
    if (keep) { keep->used = 0; keep->next = NULL; }
    a->head = keep;
    a->total = 0;
    a->over_limit = 0;
}

void *pb_arena_alloc(pb_arena *a, size_t n) {
    n = (n + 7) & ~(size_t)7;
    if (n == 0) n = 8;
    if (a->limit && (n > a->limit || a->total > a->limit - n)) {
        a->over_limit = 1;
        return NULL;
    }
    block *b = a->head;
    if (!b || b->size - b->used < n) {
        size_t size = n > ARENA_BLOCK / 4 ? n : ARENA_BLOCK;
        if (size > SIZE_MAX - sizeof(block)) return NULL;
        block *nb = malloc(sizeof(block) + size);
        if (!nb) return NULL;
        nb->size = size;
        nb->used = 0;
        if (b && size != ARENA_BLOCK && b->size - b->used >= 64) {
            /* a big one-off: link it behind the current block, keep filling that */
            nb->next = b->next;
            b->next = nb;
            nb->used = n;
            a->total += n;
            return nb->data;
        }
        nb->next = b;
        a->head = b = nb;
    }
    void *p = b->data + b->used;
    b->used += n;
    a->total += n;
    return p;
}

char *pb_arena_memdup(pb_arena *a, const void *p, size_t n) {
    if (n == SIZE_MAX) return NULL;
    char *d = pb_arena_alloc(a, n + 1);
    if (!d) return NULL;
    if (n) memcpy(d, p, n);
    d[n] = 0;
    return d;
}

size_t pb_arena_used(const pb_arena *a) { return a->total; }
int pb_arena_over_limit(const pb_arena *a) { return a->over_limit; }

int pb_arena_on_free(pb_arena *a, void (*fn)(void *), void *p) {
    /* hooks must not count against the limit: they protect resources */
    size_t saved = a->limit;
    a->limit = 0;
    hook *h = pb_arena_alloc(a, sizeof *h);
    a->limit = saved;
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
