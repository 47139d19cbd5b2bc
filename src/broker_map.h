/*
 * broker_map.h - internal open-addressing hash map keyed by a pair of
 * 64-bit words, with deletion (backward shift, no tombstones), used for
 * the broker's tables: LUID -> export, (object, perspective) -> export,
 * (LUID, perspective) -> pb_ref, request id -> pending call.  Values are
 * never NULL (NULL marks an empty slot).  Header-only; not public API.
 */
#ifndef PB_BROKER_MAP_H
#define PB_BROKER_MAP_H

#include <stdint.h>
#include <stdlib.h>

typedef struct kmap_ent {
    uint64_t k1, k2;
    void *v;
} kmap_ent;

typedef struct kmap {
    kmap_ent *e;
    uint32_t cap, len; /* cap is 0 or a power of two; the broker's limits keep
                          every table far below 2^32 entries */
} kmap;

static inline size_t kmap_hash(uint64_t k1, uint64_t k2) {
    uint64_t h = k1 * 0x9E3779B97F4A7C15ull ^ (k2 + 0x632BE59BD9B4E019ull + (k1 << 6));
    h ^= h >> 31;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 29;
    return (size_t)h;
}

static inline size_t kmap_find(const kmap *m, uint64_t k1, uint64_t k2) {
    size_t mask = m->cap - 1, i = kmap_hash(k1, k2) & mask;
    while (m->e[i].v && (m->e[i].k1 != k1 || m->e[i].k2 != k2)) i = (i + 1) & mask;
    return i;
}

static inline void *kmap_get(const kmap *m, uint64_t k1, uint64_t k2) {
    if (!m->cap) return NULL;
    return m->e[kmap_find(m, k1, k2)].v;
}

/* 0, or -1 on allocation failure (the map is unchanged). */
static inline int kmap_put(kmap *m, uint64_t k1, uint64_t k2, void *v) {
    if ((m->len + 1) * 4 > m->cap * 3) {
        /* most tables of a connection hold one or two entries: start at 2 */
        uint32_t cap = m->cap ? m->cap * 2 : 2;
        if (!cap) return -1;
        kmap_ent *ne = calloc(cap, sizeof *ne);
        if (!ne) return -1;
        kmap old = *m;
        m->e = ne;
        m->cap = cap;
        for (size_t i = 0; i < old.cap; i++)
            if (old.e[i].v) m->e[kmap_find(m, old.e[i].k1, old.e[i].k2)] = old.e[i];
        free(old.e);
    }
    size_t i = kmap_find(m, k1, k2);
    if (!m->e[i].v) m->len++;
    m->e[i] = (kmap_ent){k1, k2, v};
    return 0;
}

/* Remove and return the value for (k1, k2), or NULL. */
static inline void *kmap_del(kmap *m, uint64_t k1, uint64_t k2) {
    if (!m->cap) return NULL;
    size_t mask = m->cap - 1, i = kmap_find(m, k1, k2);
    void *v = m->e[i].v;
    if (!v) return NULL;
    m->e[i].v = NULL;
    m->len--;
    for (size_t j = (i + 1) & mask; m->e[j].v; j = (j + 1) & mask) {
        size_t h = kmap_hash(m->e[j].k1, m->e[j].k2) & mask;
        /* move e[j] into the hole at i unless its home lies in (i, j] */
        int stays = i <= j ? (h > i && h <= j) : (h > i || h <= j);
        if (!stays) {
            m->e[i] = m->e[j];
            m->e[j].v = NULL;
            i = j;
        }
    }
    return v;
}

static inline void kmap_free(kmap *m) {
    free(m->e);
    m->e = NULL;
    m->cap = m->len = 0;
}

#endif
