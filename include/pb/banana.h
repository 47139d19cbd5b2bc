/** @file
 * pb/banana.h - Banana, PB's wire framing, as a sans-I/O codec.
 *
 * Banana turns a byte stream into s-expressions: lists, integers, byte
 * strings and floats.  The decoder is fed arbitrary chunks and yields one
 * complete top-level expression at a time as a tree of pb_values whose
 * types are PB_SEXP_LIST, PB_INT, PB_BIGINT, PB_BYTES and PB_FLOAT (a VOCAB
 * token decodes to the PB_BYTES of its word).  Feeding a stream one byte at
 * a time yields the same expressions as feeding it all at once.
 *
 * Limits are checked as soon as a header is parsed, before anything is
 * allocated for its body: no allocation is ever sized by an unchecked
 * number from the network.
 */
#ifndef PB_BANANA_H
#define PB_BANANA_H

#include "pb/value.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PB_BANANA_SIZE_LIMIT 655360u /**< Twisted's SIZE_LIMIT (640 KiB) */
#define PB_BANANA_PREFIX_LIMIT 64u   /**< Twisted's prefix limit */
#define PB_BANANA_VOCAB_SIZE 31      /**< words, indices 1..31 */

/** The Banana dialect: with or without the pb vocabulary (SPEC 2.6, 2.7). */
typedef enum pb_dialect {
    PB_DIALECT_NONE = 0, /**< no vocabulary ('none') */
    PB_DIALECT_PB = 1    /**< the 'pb' vocabulary */
} pb_dialect;

/** The word for vocabulary index i (1..31), or NULL. */
const char *pb_banana_vocab_word(unsigned i);
/** Vocabulary index of p[0..n) (1..31), or 0 when it is not a word. */
unsigned pb_banana_vocab_index(const void *p, size_t n);

/* ---------------------------------------------------------------- decoder */

/** Decoder limits, checked as soon as a header is parsed; start from
 * pb_banana_limits_default().  An expression over any of them is an error
 * (PB_ELIMIT, PB_EDEPTH); a broker then closes the connection
 * (pb_broker_config.limits, where zero fields take the defaults). */
typedef struct pb_banana_limits {
    size_t max_string;   /**< default PB_BANANA_SIZE_LIMIT */
    size_t max_list;     /**< elements in one list; default PB_BANANA_SIZE_LIMIT */
    unsigned max_depth;  /**< nesting of lists; default 64 */
    size_t max_items;    /**< tokens in one top-level expression; default 1<<20 */
    size_t max_bytes;    /**< arena bytes for one expression; default 16 MiB */
} pb_banana_limits;

/** Fill l with the defaults (Twisted's limits for strings and lists). */
void pb_banana_limits_default(pb_banana_limits *l);

/** A streaming Banana decoder (opaque; one per direction of a connection). */
typedef struct pb_banana_dec pb_banana_dec;

/** New decoder; limits may be NULL for the defaults.  NULL on ENOMEM. */
pb_banana_dec *pb_banana_dec_new(pb_dialect d, const pb_banana_limits *limits);
/** Free d and the arena of its last expression (unless taken).  NULL is a
 * no-op. */
void pb_banana_dec_free(pb_banana_dec *d);
/** Switch the dialect for the expressions that follow (after the dialect
 * handshake). */
void pb_banana_dec_set_dialect(pb_banana_dec *d, pb_dialect dialect);

/**
 * Feed bytes.  Consumes input up to and including the end of the first
 * complete top-level expression, or all of it.
 *   returns 1: *out is a complete expression (valid until the next call to
 *              pb_banana_dec_feed or pb_banana_dec_take_arena); *consumed
 *              bytes were used; call again with the rest.
 *   returns 0: all len bytes consumed, no expression complete yet.
 *   returns <0: a PB_E* error; the stream is unusable from here on (the
 *              connection should be closed) and pb_banana_dec_errmsg() says
 *              what was wrong and at which stream offset.
 */
int pb_banana_dec_feed(pb_banana_dec *d, const uint8_t *data, size_t len,
                       size_t *consumed, pb_value **out);
/** Take ownership of the arena holding the last expression returned, so
 * that values built from it (e.g. by pb_unjelly into the same arena) may
 * outlive the next feed.  The caller frees it with pb_arena_free().  NULL
 * on ENOMEM (the decoder then keeps it). */
pb_arena *pb_banana_dec_take_arena(pb_banana_dec *d);
/** The arena the current/last expression lives in (borrowed). */
pb_arena *pb_banana_dec_arena(pb_banana_dec *d);
/** What the last error was and at which stream offset ("" if none);
 * borrowed, valid until d is freed. */
const char *pb_banana_dec_errmsg(const pb_banana_dec *d);
/** Total bytes consumed so far (for error offsets). */
uint64_t pb_banana_dec_offset(const pb_banana_dec *d);

/* ---------------------------------------------------------------- encoder */
/** Low-level token writers.  All append to out and return 0 or a PB_E*
 * (PB_ENOMEM, PB_ELIMIT from the buffer, PB_EUNSENDABLE for values Twisted
 * refuses to send: strings or lists over 640 KiB, ints of 2**448 and
 * beyond). */
int pb_banana_put_list(pb_buf *out, size_t n);
/** An integer: INT or NEG within 32 bits (|v| < 2**31, and -2**31), else
 * LONGINT or LONGNEG, as Twisted chooses. */
int pb_banana_put_int(pb_buf *out, int64_t v);
/** A PB_INT or PB_BIGINT of any size below 2**448. */
int pb_banana_put_bigint(pb_buf *out, const pb_value *big);
/** A FLOAT: 8 bytes, big-endian IEEE-754. */
int pb_banana_put_float(pb_buf *out, double f);
/** A byte string; in the pb dialect a vocabulary word goes out as VOCAB. */
int pb_banana_put_bytes(pb_buf *out, pb_dialect d, const void *p, size_t n);

/** Encode a whole raw tree (PB_SEXP_LIST, PB_INT, PB_BIGINT, PB_BYTES,
 * PB_FLOAT, PB_STR treated as its bytes). */
int pb_banana_encode(pb_buf *out, pb_dialect d, const pb_value *sexp, pb_errbuf *err);

#ifdef __cplusplus
}
#endif
#endif
