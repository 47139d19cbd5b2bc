/*
 * arena_int.h - arena internals shared by the library's own recyclers
 * (the banana decoder, the broker's arena pool, pooled deferreds).  Not
 * public API.
 */
#ifndef PB_ARENA_INT_H
#define PB_ARENA_INT_H

#include "pb/banana.h"
#include "pb/value.h"

/* Change a's limit (0: none); what is already handed out counts against
 * the new one. */
void pb__arena_set_limit(pb_arena *a, size_t limit);
/* pb_arena_reset, keeping at most keep bytes of standard blocks for reuse
 * (so an arena parked in a pool holds little memory). */
void pb__arena_recycle(pb_arena *a, size_t keep);

/* pb_banana_dec_take_arena with a replacement supplied by the caller:
 * fresh (an empty arena, e.g. from a pool; it gets the decoder's limit)
 * becomes the decoder's arena and the one holding the last expression is
 * returned.  NULL when not at an expression boundary (fresh is then
 * untouched and still the caller's). */
pb_arena *pb__banana_dec_swap_arena(pb_banana_dec *d, pb_arena *fresh);

#endif
