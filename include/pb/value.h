/** @file
 * pb/value.h - the values Jelly carries, and the arena they live in.
 *
 * OWNERSHIP RULE (the one rule for every pb_value in libpb):
 *   Every pb_value belongs to exactly one pb_arena and lives until that
 *   arena is reset or freed.  Values are never freed one by one.  A value
 *   may point only at values of its own arena (or at static data); to keep
 *   a value beyond its arena's life, pb_value_copy() it into another arena.
 *   Functions that return a pb_value* return a pointer *borrowed from the
 *   arena* given to them.  Byte and text payloads are always followed by a
 *   NUL byte (not counted in len) so they can be printed as C strings.
 *
 * Because an arena owns a whole graph, shared and cyclic structures (a list
 * that contains itself) need no reference counting and cannot leak.
 *
 * The pb_value struct is public so that readers can be fast; treat its
 * fields as read-only and build values with the constructors below.
 * Remote references (PB_REMOTE) and local objects (PB_OBJECT) are owned by
 * the broker (see pb/broker.h); the arena holds a counted reference to each
 * and drops it when the arena is reset or freed.
 */
#ifndef PB_VALUE_H
#define PB_VALUE_H

#include <stddef.h>
#include <stdint.h>
#include "pb/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ arena */

/** An arena: owns every value allocated in it (opaque). */
typedef struct pb_arena pb_arena;

/** New arena.  limit: most bytes it may hand out in total (0: no limit), so
 * that decoding hostile input is bounded.  NULL on allocation failure. */
pb_arena *pb_arena_new(size_t limit);
/** Runs the cleanup hooks (last registered first), then frees everything.
 * NULL is a no-op. */
void pb_arena_free(pb_arena *a);
/** Runs the cleanup hooks and forgets every allocation; keeps the first
 * block for reuse so a steady state does not call malloc. */
void pb_arena_reset(pb_arena *a);
/** n bytes, 8-byte aligned, uninitialised; NULL when out of memory or over
 * the limit (pb_arena_over_limit() tells which). */
void *pb_arena_alloc(pb_arena *a, size_t n);
/** Copy of p[0..n) followed by a NUL byte. */
char *pb_arena_memdup(pb_arena *a, const void *p, size_t n);
/** Bytes handed out since the last reset. */
size_t pb_arena_used(const pb_arena *a);
/** True if the last failed allocation failed because of the limit. */
int pb_arena_over_limit(const pb_arena *a);
/** True if p points into memory a has handed out since its last reset (a
 * walk over its blocks).  pb_unjelly uses it to see that a tree already
 * lives in its target arena, so its atoms can be shared, not copied. */
int pb_arena_owns(const pb_arena *a, const void *p);
/** Register fn(p) to run when the arena is reset or freed. */
int pb_arena_on_free(pb_arena *a, void (*fn)(void *), void *p);

/* ------------------------------------------------------------ byte buffer */

/** A growable byte buffer, used by every encoder.  Caller owns the struct;
 * pb_buf_free() releases data.  limit 0: no limit; otherwise appends that
 * would grow len beyond limit fail with PB_ELIMIT. */
typedef struct pb_buf {
    uint8_t *data; /**< the bytes (malloc'd; NULL while empty) */
    size_t len;    /**< bytes used */
    size_t cap;    /**< bytes allocated */
    size_t limit;  /**< most bytes len may reach; 0: no limit */
} pb_buf;

/** Make b empty, with no limit and nothing allocated. */
void pb_buf_init(pb_buf *b);
/** Release b's data and make it empty again (b itself is the caller's). */
void pb_buf_free(pb_buf *b);
/** Make room for extra more bytes: 0, PB_ENOMEM or PB_ELIMIT. */
int pb_buf_reserve(pb_buf *b, size_t extra);
/** Append p[0..n): 0, PB_ENOMEM or PB_ELIMIT (b unchanged on failure). */
int pb_buf_append(pb_buf *b, const void *p, size_t n);
/** Append one byte: 0, PB_ENOMEM or PB_ELIMIT. */
int pb_buf_putc(pb_buf *b, uint8_t c);
/** Append printf-style text (no NUL): 0, PB_ENOMEM or PB_ELIMIT. */
int pb_buf_printf(pb_buf *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/** Drop the first n bytes (a consumed prefix). */
void pb_buf_consume(pb_buf *b, size_t n);

/* ----------------------------------------------------------------- values */

/** The kind of a pb_value, and which member of its union u holds the data. */
typedef enum pb_type {
    PB_NONE = 0,     /**< Python None */
    PB_BOOL,         /**< u.b: 0 or 1 */
    PB_INT,          /**< fits in int64_t: u.i */
    PB_BIGINT,       /**< anything else: u.big */
    PB_FLOAT,        /**< u.f; inf, nan, -0.0 kept bit for bit */
    PB_BYTES,        /**< u.s: raw bytes (Python bytes) */
    PB_STR,          /**< u.s: valid UTF-8 text (Python str) */
    PB_LIST,         /**< u.seq */
    PB_TUPLE,        /**< u.seq */
    PB_SET,          /**< u.seq (unordered on the wire) */
    PB_FROZENSET,    /**< u.seq */
    PB_DICT,         /**< u.dict: insertion order kept */
    PB_INSTANCE,     /**< u.inst: class name + state (Copyable, CopyableFailure) */
    PB_DATETIME,     /**< u.s: "Y M D h m s us" as Twisted sends it */
    PB_DATE,         /**< u.s: "Y M D" */
    PB_TIME,         /**< u.s: "h m s us" */
    PB_TIMEDELTA,    /**< u.s: "days seconds microseconds" */
    PB_DECIMAL,      /**< u.dec: digits * 10**exponent */
    PB_UNPERSISTABLE,/**< u.s: reason; what a sender could not serialise */
    PB_REMOTE,       /**< u.h (a pb_ref): a reference to an object on the peer */
    PB_OBJECT,       /**< u.h (a pb_object): a local object passed by reference */
    PB_SEXP_LIST     /**< only in raw banana trees: an untyped banana LIST (u.seq) */
} pb_type;

/** A Jelly value; see struct pb_value. */
typedef struct pb_value pb_value;
typedef struct pb_ref pb_ref;       /**< defined by the broker */
typedef struct pb_object pb_object; /**< defined by the broker */

/** The counted header that pb_ref and pb_object start with, so this layer
 * can hold them without knowing the broker.  refs counts owners; destroy
 * runs when the last one lets go.  Not atomic: a handle belongs to one
 * event-loop thread. */
typedef struct pb_handle {
    unsigned long refs;                    /**< number of owners */
    void (*destroy)(struct pb_handle *h);  /**< runs when refs drops to 0 */
} pb_handle;
/** Take one more reference to h. */
void pb_handle_incref(pb_handle *h);
/** Drop one reference to h; the last one runs h->destroy(h). */
void pb_handle_decref(pb_handle *h);

/** One value of a graph: a type tag and the matching member of u.  Read-only
 * for callers; built with the constructors below.  Lives in a pb_arena. */
struct pb_value {
    uint8_t type;      /**< pb_type */
    uint8_t flags;     /**< internal */
    uint32_t mark;     /**< scratch used by encoders/copy; not for callers */
    /** The data, by type (see pb_type for which member). */
    union {
        int b;
        int64_t i;
        double f;
        struct { const char *ptr; size_t len; } s;
        struct { pb_value **items; size_t len, cap; } seq;
        struct { pb_value **kv; size_t len, cap; } dict;  /**< kv[2i]=key, kv[2i+1]=value */
        struct { int neg; size_t nlimbs; uint32_t *limbs; } big; /**< little-endian magnitude */
        struct { const char *cls; size_t cls_len; pb_value *state; } inst;
        struct { pb_value *digits; int64_t exponent; } dec;
        pb_handle *h;   /**< PB_REMOTE: a pb_ref; PB_OBJECT: a pb_object */
    } u;
};

/** A PB_NONE.
 *
 * Constructors (this one and those below): each returns a value allocated
 * in a, or NULL when out of memory (or over the arena limit, or, where
 * noted, on invalid input). */
pb_value *pb_none(pb_arena *a);
/** A PB_BOOL: b != 0 is True. */
pb_value *pb_bool(pb_arena *a, int b);
/** A PB_INT. */
pb_value *pb_int(pb_arena *a, int64_t i);
/** From a little-endian magnitude of n 32-bit limbs; normalised, so a value
 * that fits int64_t comes back as PB_INT. */
pb_value *pb_bigint(pb_arena *a, int neg, const uint32_t *limbs, size_t n);
/** From decimal text ("-123..."); NULL if not a valid integer. */
pb_value *pb_int_parse(pb_arena *a, const char *dec, size_t len);
/** A PB_FLOAT (every bit pattern kept). */
pb_value *pb_float(pb_arena *a, double f);
pb_value *pb_bytes(pb_arena *a, const void *p, size_t n);       /**< copies */
pb_value *pb_bytesz(pb_arena *a, const char *s);                /**< copies a C string */
/** Refers to p without copying: p must stay valid as long as a does, and
 * p[n] must be a NUL byte (use for static strings). */
pb_value *pb_bytes_static(pb_arena *a, const char *p, size_t n);
pb_value *pb_str(pb_arena *a, const char *utf8, size_t n);      /**< copies; NULL if not UTF-8 */
pb_value *pb_strz(pb_arena *a, const char *utf8);               /**< C string; NULL if not UTF-8 */
/** An empty PB_LIST with room for cap items (it grows as needed). */
pb_value *pb_list(pb_arena *a, size_t cap);
/** An empty PB_TUPLE with room for cap items. */
pb_value *pb_tuple(pb_arena *a, size_t cap);
/** An empty PB_SET with room for cap items. */
pb_value *pb_set(pb_arena *a, size_t cap);
/** An empty PB_FROZENSET with room for cap items. */
pb_value *pb_frozenset(pb_arena *a, size_t cap);
/** An empty PB_DICT with room for cap entries. */
pb_value *pb_dict(pb_arena *a, size_t cap);
/** A PB_INSTANCE of class tag cls[0..cls_len) (copied) whose state is
 * state (a value of a, or NULL). */
pb_value *pb_instance(pb_arena *a, const char *cls, size_t cls_len, pb_value *state);
/** A PB_UNPERSISTABLE placeholder with reason[0..n) (copied). */
pb_value *pb_unpersistable(pb_arena *a, const char *reason, size_t n);
/** A PB_DECIMAL: digits (a PB_INT or PB_BIGINT of a) * 10**exponent. */
pb_value *pb_decimal(pb_arena *a, pb_value *digits, int64_t exponent);
/** Date/time in Twisted's textual form (type is one of PB_DATETIME ...). */
pb_value *pb_timeval(pb_arena *a, pb_type type, const char *text, size_t n);
/** A PB_REMOTE or PB_OBJECT value for h (a pb_ref or pb_object cast to
 * its pb_handle).  Takes a new reference, which the arena drops when it is
 * reset or freed. */
pb_value *pb_handle_value(pb_arena *a, pb_type type, pb_handle *h);
/** An empty container of any sequence type (PB_LIST, PB_TUPLE, PB_SET,
 * PB_FROZENSET, PB_SEXP_LIST) or PB_DICT. */
pb_value *pb_container(pb_arena *a, pb_type type, size_t cap);

/** Append item to a sequence (list, tuple, set, frozenset, sexp list). */
int pb_seq_append(pb_arena *a, pb_value *seq, pb_value *item);
/** Append an entry to a dict.  No duplicate check (decoding must stay
 * linear); lookups find the *last* entry with an equal key, as Python's
 * dict ends up holding the last value. */
int pb_dict_append(pb_arena *a, pb_value *dict, pb_value *key, pb_value *val);
/** Insert or replace by key (linear scan: for building small dicts). */
int pb_dict_set(pb_arena *a, pb_value *dict, pb_value *key, pb_value *val);
/** Value for a text or bytes key equal to the C string key, or NULL. */
pb_value *pb_dict_get(const pb_value *dict, const char *key);
/** Value for a key equal to k (pb_value_equal), or NULL. */
pb_value *pb_dict_getv(const pb_value *dict, const pb_value *k);

/* ---------------------------------------------------------------- helpers */

/** Python-style name of a type ("list", "bytes", ...); static storage,
 * never NULL ("?" for an unknown type). */
const char *pb_type_name(pb_type t);
/** True for the sequence types: list, tuple, set, frozenset, sexp list. */
static inline int pb_is_seq(const pb_value *v) {
    return v->type == PB_LIST || v->type == PB_TUPLE || v->type == PB_SET ||
           v->type == PB_FROZENSET || v->type == PB_SEXP_LIST;
}
/** Items of a sequence, entries of a dict, 0 for anything else. */
static inline size_t pb_len(const pb_value *v) {
    return pb_is_seq(v) ? v->u.seq.len : v->type == PB_DICT ? v->u.dict.len : 0;
}
/** True for PB_BYTES or PB_STR whose bytes equal the C string s. */
int pb_value_is(const pb_value *v, const char *s);

/** Deep equality as Python's == would see it (bool != int here; sets compare
 * as sets, dicts as mappings; cycles handled).  NaN equals a NaN of the same
 * bit pattern so that round-trip tests can compare floats exactly. */
int pb_value_equal(const pb_value *x, const pb_value *y);

/** Deep copy into dst, preserving sharing and cycles.  NULL on failure. */
pb_value *pb_value_copy(pb_arena *dst, const pb_value *v);

/** Python-repr-like rendering for logs and tools, appended to out.
 * Bounded: shared and cyclic parts render as [...]. */
int pb_value_repr(const pb_value *v, pb_buf *out);

/** JSON.  Mapping: None->null, bool, int (any size) and float (nan/inf are
 * rendered as the strings "NaN"/"Infinity"/"-Infinity"), str->string,
 * bytes->string when valid UTF-8 else {"$bytes": "<base64>"}, list/tuple/
 * set/frozenset->array, dict->object when every key is text or bytes,
 * otherwise an array of [key, value] pairs.  Instances, references and
 * cycles have no JSON form: PB_EUNSENDABLE. */
int pb_value_to_json(const pb_value *v, pb_buf *out, pb_errbuf *err);
/** Parse JSON text into values of a: null, true/false, integers (any size),
 * floats, strings -> PB_STR, arrays -> PB_LIST, objects -> PB_DICT with
 * PB_STR keys, {"$bytes": "<base64>"} -> PB_BYTES.  Depth is limited. */
int pb_value_from_json(pb_arena *a, const char *text, size_t len, pb_value **out,
                       pb_errbuf *err);

/** UTF-8 validation (strict: no surrogates, no overlongs). */
int pb_utf8_valid(const void *p, size_t n);

#ifdef __cplusplus
}
#endif
#endif
