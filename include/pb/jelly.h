/** @file
 * pb/jelly.h - Jelly: value graphs <-> s-expressions, as Twisted 22.4 does.
 *
 * Encoding goes straight from a pb_value graph to Banana bytes (no
 * intermediate tree), reproducing Twisted's output byte for byte: shared
 * and cyclic containers become (reference N ...)/(dereference N) with ids
 * in the order Twisted assigns them.  Decoding takes a Banana tree (see
 * pb/banana.h) and builds values; tags outside the basic set are refused
 * (PB_EINSECURE) unless registered in a pb_jelly_registry.
 *
 * PB-specific forms (remote, local, cached, lcache) are delegated to the
 * broker through pb_jelly_hooks, so this layer knows nothing of brokers.
 */
#ifndef PB_JELLY_H
#define PB_JELLY_H

#include "pb/banana.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------- class registry */

/** Which instance tags ("pkg.mod.Class") may be unjellied: the equivalent of
 * setUnjellyableForClass.  Owned by the caller; may be shared by many
 * brokers (read-only once they run). */
typedef struct pb_jelly_registry pb_jelly_registry;

/** A new, empty registry (nothing allowed); NULL on ENOMEM. */
pb_jelly_registry *pb_jelly_registry_new(void);
/** Free r; NULL is a no-op.  No broker may still use it. */
void pb_jelly_registry_free(pb_jelly_registry *r);
/** Allow instances tagged cls.  The optional hook may rewrite the instance
 * as it arrives (state in); it returns 0 or a PB_E* and may replace *inout
 * with another value of arena a. */
typedef int (*pb_unjelly_hook)(void *ud, pb_arena *a, pb_value **inout, pb_errbuf *err);
/** Allow instances tagged cls (copied), with an optional hook and its ud;
 * registering a tag again replaces its hook.  0, PB_EINVAL or PB_ENOMEM. */
int pb_jelly_registry_add(pb_jelly_registry *r, const char *cls, pb_unjelly_hook hook,
                          void *ud);
/** True if cls[0..n) is registered in r (r may be NULL). */
int pb_jelly_registry_has(const pb_jelly_registry *r, const char *cls, size_t n);

/* ---------------------------------------------------------------- hooks */

/** How PB references are encoded and decoded: the broker's side of Jelly. */
typedef struct pb_jelly_hooks {
    void *ud; /**< passed to both callbacks */
    /** Encode a PB_REMOTE or PB_OBJECT value: append its form, e.g.
     * (remote 3) or (local 5), to out.  NULL: such values are unsendable. */
    int (*encode_ref)(void *ud, pb_buf *out, pb_dialect d, const pb_value *v,
                      pb_errbuf *err);
    /** Decode a list whose tag is remote, local, cached or lcache (tag and
     * the whole list given).  NULL: such tags are insecure. */
    int (*decode_ref)(void *ud, pb_arena *a, const char *tag, const pb_value *sexp,
                      pb_value **out, pb_errbuf *err);
} pb_jelly_hooks;

/** Options for one jelly or unjelly call; every field may be 0/NULL. */
typedef struct pb_jelly_opts {
    const pb_jelly_registry *registry; /**< NULL: no classes allowed */
    const pb_jelly_hooks *hooks;       /**< NULL: no PB references */
    unsigned max_depth;                /**< 0: default 64 (at most 10000) */
    /** pb_unjelly only: nonzero when the tree lives in the target arena (or
     * outlives it), so atoms and byte strings are referenced, not copied. */
    int share_bytes;
} pb_jelly_opts;

/** Jelly v and append its Banana encoding to out.  On error out is left as
 * it was (nothing half-written).  PB_EUNSENDABLE for values Twisted refuses
 * (ints >= 2**448, strings/lists > 640 KiB); PB_EDEPTH when too deep. */
int pb_jelly_encode(pb_buf *out, pb_dialect d, const pb_value *v, const pb_jelly_opts *o,
                    pb_errbuf *err);

/** Jelly v into a raw s-expression tree in arena a (for tests and tools;
 * the wire path uses pb_jelly_encode). */
int pb_jelly_to_sexp(pb_arena *a, const pb_value *v, const pb_jelly_opts *o, pb_value **out,
                     pb_errbuf *err);

/** Unjelly a Banana tree into values of arena a (which may be the tree's
 * own arena: with o->share_bytes set, byte strings are then shared, not
 * copied).  A (dereference N) whose N is not (yet) defined becomes a
 * PB_UNPERSISTABLE placeholder (Twisted leaves an unresolved placeholder
 * too).  A registered tag with more than one argument, such as a cache's
 * (TAG LUID STATE), becomes an instance whose state is the tuple of its
 * arguments.  (unpersistable R) keeps R as the reason.  Errors:
 * PB_EINSECURE (tag not allowed; the message is Twisted's), PB_EJELLY
 * (malformed form), PB_EUTF8 (bad unicode payload), PB_EDEPTH. */
int pb_unjelly(pb_arena *a, const pb_value *sexp, const pb_jelly_opts *o, pb_value **out,
               pb_errbuf *err);

#ifdef __cplusplus
}
#endif
#endif
