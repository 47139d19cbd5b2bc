/*
 * ptrmap.h - internal open-addressing map from pointers to pointers, used
 * where a graph walk must remember what it has seen (copy, equality,
 * jelly's shared-reference detection).  Header-only; not public API.
 */
#ifndef PB_PTRMAP_H
#define PB_PTRMAP_H

#include <stdint.h>
#include <stdlib.h>

typedef struct pb_ptrmap {
    const void **keys;
    void **vals;
    size_t cap, len; /* cap is 0 or a power of two */
} pb_ptrmap;

static inline void pb_ptrmap_init(pb_ptrmap *m) { m->keys = NULL; m->vals = NULL; m->cap = m->len = 0; }
static inline void pb_ptrmap_free(pb_ptrmap *m) { free(m->keys); free(m->vals); pb_ptrmap_init(m); }

static inline size_t pb_ptrmap_slot(const pb_ptrmap *m, const void *k) {
    uintptr_t h = (uintptr_t)k;
    h ^= h >> 17; h *= (uintptr_t)0x9E3779B97F4A7C15ull; h ^= h >> 29;
    size_t i = (size_t)h & (m->cap - 1);
    while (m->keys[i] && m->keys[i] != k) i = (i + 1) & (m->cap - 1);
    return i;
}

/* The value for k, or NULL (so NULL values cannot be told from absent). */
static inline void *pb_ptrmap_get(const pb_ptrmap *m, const void *k) {
    if (!m->cap) return NULL;
    size_t i = pb_ptrmap_slot(m, k);
    return m->keys[i] ? m->vals[i] : NULL;
}

static inline int pb_ptrmap_has(const pb_ptrmap *m, const void *k) {
    return m->cap && m->keys[pb_ptrmap_slot(m, k)] != NULL;
}

/* 0, or -1 on allocation failure. */
static inline int pb_ptrmap_put(pb_ptrmap *m, const void *k, void *v) {
    if ((m->len + 1) * 2 > m->cap) {
        pb_ptrmap old = *m;
        size_t cap = old.cap ? old.cap * 2 : 16;
        m->keys = calloc(cap, sizeof *m->keys);
        m->vals = calloc(cap, sizeof *m->vals);
        if (!m->keys || !m->vals) { free(m->keys); free(m->vals); *m = old; return -1; }
        m->cap = cap;
        m->len = 0;
        for (size_t i = 0; i < old.cap; i++)
            if (old.keys[i]) { size_t j = pb_ptrmap_slot(m, old.keys[i]); m->keys[j] = old.keys[i]; m->vals[j] = old.vals[i]; m->len++; }
        free(old.keys); free(old.vals);
    }
    size_t i = pb_ptrmap_slot(m, k);
    if (!m->keys[i]) { m->keys[i] = k; m->len++; }
    m->vals[i] = v;
    return 0;
}
#endif
