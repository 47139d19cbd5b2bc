/*
 * tlcache_int.h - per-thread caches of idle per-connection resources.
 *
 * An idle connection should hold no buffers: its broker gives its banana
 * decoder (with the decoder's arena), its drained output buffer and its
 * spare message arenas back to a small cache belonging to the thread (=
 * the event loop) and takes them again when bytes arrive or are queued.
 * So memory is proportional to the connections busy right now, and the
 * steady state of a busy connection still allocates nothing (it takes
 * back what it just gave).  Everything here is bounded; beyond the bounds
 * resources are freed.  A thread's caches are freed when it exits.  Not
 * public API.
 */
#ifndef PB_TLCACHE_INT_H
#define PB_TLCACHE_INT_H

#include <stddef.h>
#include <stdint.h>
#include "pb/banana.h"
#include "pb/value.h"

/* An empty arena without limit (cached or new); NULL on ENOMEM. */
pb_arena *pb__tl_arena_get(void);
/* Park an arena that is already reset (its hooks ran) or free it. */
void pb__tl_arena_put(pb_arena *a);
/* A decoder from the cache (state reset, arena present), or NULL. */
pb_banana_dec *pb__tl_dec_get(void);
/* Park an idle decoder (see pb__banana_dec_idle) or free it. */
void pb__tl_dec_put(pb_banana_dec *d);
/* A cached buffer of at least need bytes (*cap set), or NULL. */
uint8_t *pb__tl_buf_get(size_t need, size_t *cap);
/* Park a buffer of cap bytes (not too big) or free it. */
void pb__tl_buf_put(uint8_t *p, size_t cap);

/* Small fixed-size records (a broker's call and pending-call records):
 * a block of exactly size bytes (uninitialised) from the cache, or
 * malloc'd; put parks it (or frees it). */
void *pb__tl_blk_get(size_t size);
void pb__tl_blk_put(void *p, size_t size);

/* banana.c: the decoder is between expressions with nothing pending. */
int pb__banana_dec_idle(const pb_banana_dec *d);
/* banana.c: ready a cached decoder for another stream. */
void pb__banana_dec_rebind(pb_banana_dec *d, pb_dialect dialect, const pb_banana_limits *lim,
                           uint64_t offset);

#endif
