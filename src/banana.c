/*
 * banana.c - Banana framing: a streaming decoder and the token writers.
 *
 * The decoder is a byte-driven state machine (picohttpparser style): the
 * only state kept between feeds is the partial prefix, a partial STRING or
 * FLOAT body and the stack of open lists, so input may be cut anywhere.
 * Every length is checked against its limit when the type byte arrives,
 * before anything is allocated for the body.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "pb/banana.h"
#include "arena_int.h"
#include "tlcache_int.h"

enum { T_LIST = 0x80, T_INT, T_STRING, T_NEG, T_FLOAT, T_LONGINT, T_LONGNEG, T_VOCAB };

/* ------------------------------------------------------------- vocabulary */

static const char *const vocab[PB_BANANA_VOCAB_SIZE + 1] = {
    NULL,          "None",      "class",        "dereference", "reference",
    "dictionary",  "function",  "instance",     "list",        "module",
    "persistent",  "tuple",     "unpersistable", "copy",       "cache",
    "cached",      "remote",    "local",        "lcache",      "version",
    "login",       "password",  "challenge",    "logged_in",   "not_logged_in",
    "cachemessage", "message",  "answer",       "error",       "decref",
    "decache",     "uncache"};

/* Candidate indices by word length (4..13), so a lookup is at most six
 * first-byte checks instead of a strcmp over the whole table. */
static const uint8_t by_len[10][7] = {
    {1, 8, 13},              /* 4: None list copy */
    {2, 11, 14, 17, 20, 28}, /* 5: class tuple cache local login error */
    {9, 15, 16, 18, 27, 29}, /* 6: module cached remote lcache answer decref */
    {19, 26, 30, 31},        /* 7: version message decache uncache */
    {6, 7, 21},              /* 8: function instance password */
    {4, 22, 23},             /* 9: reference challenge logged_in */
    {5, 10},                 /* 10: dictionary persistent */
    {3},                     /* 11: dereference */
    {25},                    /* 12: cachemessage */
    {12, 24},                /* 13: unpersistable not_logged_in */
};

const char *pb_banana_vocab_word(unsigned i) {
    return i >= 1 && i <= PB_BANANA_VOCAB_SIZE ? vocab[i] : NULL;
}

unsigned pb_banana_vocab_index(const void *p, size_t n) {
    if (n < 4 || n > 13) return 0;
    const char *s = p;
    for (const uint8_t *c = by_len[n - 4]; c < by_len[n - 4] + 7 && *c; c++)
        if (vocab[*c][0] == s[0] && memcmp(vocab[*c], s, n) == 0) return *c;
    return 0;
}

/* ---------------------------------------------------------------- decoder */

void pb_banana_limits_default(pb_banana_limits *l) {
    l->max_string = PB_BANANA_SIZE_LIMIT;
    l->max_list = PB_BANANA_SIZE_LIMIT;
    l->max_depth = 64;
    l->max_items = (size_t)1 << 20;
    l->max_bytes = (size_t)16 << 20;
}

enum { ST_PREFIX, ST_STRING, ST_FLOAT };

typedef struct frame {
    pb_value *list;
    size_t want;
} frame;

struct pb_banana_dec {
    pb_dialect dialect;
    pb_banana_limits lim;
    pb_arena *arena;    /* holds the current / last expression */
    int state;          /* ST_* */
    int err;            /* sticky */
    int delivered;      /* an expression was handed out: reset before more */
    unsigned plen;
    uint8_t prefix[PB_BANANA_PREFIX_LIMIT];
    pb_value *str;      /* STRING being filled (its body follows it) */
    char *body;
    size_t body_len, body_have;
    uint8_t fbuf[8];
    unsigned fhave;
    frame *stack;
    unsigned depth, stack_cap;
    size_t items;       /* tokens in the current expression */
    unsigned char *slab; /* small values are carved from here (arena memory) */
    size_t slab_left;
    uint64_t offset;    /* stream bytes consumed before the current feed */
    pb_value *result;
    char errmsg[256];
};

pb_banana_dec *pb_banana_dec_new(pb_dialect dialect, const pb_banana_limits *limits) {
    pb_banana_dec *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    if (limits) d->lim = *limits;
    else pb_banana_limits_default(&d->lim);
    d->dialect = dialect;
    d->arena = pb_arena_new(d->lim.max_bytes);
    if (!d->arena) {
        free(d);
        return NULL;
    }
    return d;
}

void pb_banana_dec_free(pb_banana_dec *d) {
    if (!d) return;
    pb_arena_free(d->arena);
    free(d->stack);
    free(d);
}

void pb_banana_dec_set_dialect(pb_banana_dec *d, pb_dialect dialect) { d->dialect = dialect; }
const char *pb_banana_dec_errmsg(const pb_banana_dec *d) { return d->errmsg; }
uint64_t pb_banana_dec_offset(const pb_banana_dec *d) { return d->offset; }
pb_arena *pb_banana_dec_arena(pb_banana_dec *d) { return d->arena; }

pb_arena *pb__banana_dec_swap_arena(pb_banana_dec *d, pb_arena *fresh) {
    /* only at an expression boundary: a half-built list lives in the arena */
    if (!fresh || d->depth || d->state == ST_STRING) return NULL;
    pb__arena_set_limit(fresh, d->lim.max_bytes);
    pb_arena *old = d->arena;
    d->arena = fresh;
    d->slab_left = 0;
    d->delivered = 0;
    d->result = NULL;
    return old;
}

int pb__banana_dec_idle(const pb_banana_dec *d) {
    return d && !d->err && d->state == ST_PREFIX && d->plen == 0 && d->depth == 0;
}

void pb__banana_dec_rebind(pb_banana_dec *d, pb_dialect dialect, const pb_banana_limits *lim,
                           uint64_t offset) {
    d->dialect = dialect;
    if (lim) d->lim = *lim;
    else pb_banana_limits_default(&d->lim);
    pb__arena_set_limit(d->arena, d->lim.max_bytes);
    d->state = ST_PREFIX;
    d->err = 0;
    d->delivered = 0;
    d->plen = 0;
    d->str = NULL;
    d->body = NULL;
    d->body_len = d->body_have = 0;
    d->fhave = 0;
    d->depth = 0;
    d->items = 0;
    d->slab = NULL;
    d->slab_left = 0;
    d->offset = offset;
    d->result = NULL;
    d->errmsg[0] = 0;
}

pb_arena *pb_banana_dec_take_arena(pb_banana_dec *d) {
    if (d->depth || d->state == ST_STRING) return NULL;
    pb_arena *fresh = pb_arena_new(d->lim.max_bytes);
    pb_arena *old = pb__banana_dec_swap_arena(d, fresh);
    if (!old) pb_arena_free(fresh);
    return old;
}

#if defined(__GNUC__)
__attribute__((format(printf, 4, 5), cold, noinline))
#endif
static int fail(pb_banana_dec *d, int code, uint64_t off, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(d->errmsg, sizeof d->errmsg, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof d->errmsg)
        snprintf(d->errmsg + n, sizeof d->errmsg - (size_t)n, " (at stream offset %llu)",
                 (unsigned long long)off);
    d->err = code;
    return code;
}

#if defined(__GNUC__)
__attribute__((cold, noinline))
#endif
static int fail_alloc(pb_banana_dec *d, uint64_t off) {
    if (pb_arena_over_limit(d->arena))
        return fail(d, PB_ELIMIT, off, "expression needs more than %zu bytes of memory",
                    d->lim.max_bytes);
    return fail(d, PB_ENOMEM, off, "out of memory");
}

/* ---- values, each one arena allocation (a string's body and a list's
 * first item array follow the value itself) */

static inline pb_value *new_atom(pb_arena *a, pb_type t) {
    pb_value *v = pb_arena_alloc(a, sizeof *v);
    if (v) *v = (pb_value){.type = (uint8_t)t};
    return v;
}

/* A PB_BYTES value with room for an n-byte body, NUL already in place. */
static inline pb_value *new_string(pb_arena *a, size_t n) {
    if (n > SIZE_MAX - sizeof(pb_value) - 1) return NULL;
    pb_value *v = pb_arena_alloc(a, sizeof *v + n + 1);
    if (!v) return NULL;
    char *body = (char *)(v + 1);
    body[n] = 0;
    *v = (pb_value){.type = PB_BYTES};
    v->u.s.ptr = body;
    v->u.s.len = n;
    return v;
}

static inline pb_value *new_list(pb_arena *a, size_t cap) {
    if (cap > (SIZE_MAX - sizeof(pb_value)) / sizeof(pb_value *)) return NULL;
    pb_value *v = pb_arena_alloc(a, sizeof *v + cap * sizeof(pb_value *));
    if (!v) return NULL;
    *v = (pb_value){.type = PB_SEXP_LIST};
    v->u.seq.items = cap ? (pb_value **)(void *)(v + 1) : NULL;
    v->u.seq.cap = cap;
    return v;
}

static const uint8_t vocab_len[PB_BANANA_VOCAB_SIZE + 1] = {
    0, 4, 5, 11, 9, 10, 8, 8, 4, 6, 10, 5, 13, 4, 5, 6,
    6, 5, 6, 7, 5, 8, 9, 9, 13, 12, 7, 6, 5, 6, 7, 7};

/* Significant prefix length (trailing zero groups are high-order zeros). */
static unsigned prefix_sig(const pb_banana_dec *d) {
    unsigned n = d->plen;
    while (n && d->prefix[n - 1] == 0) n--;
    return n;
}

/* The prefix as a number; 0 if it does not fit in 63 bits (*big set). */
static uint64_t prefix_u64(const pb_banana_dec *d, int *big) {
    unsigned n = prefix_sig(d);
    *big = n > 9;
    if (*big) return 0;
    uint64_t v = 0;
    for (unsigned i = n; i-- > 0;) v = (v << 7) | d->prefix[i];
    return v;
}

/* Append v to the open list, closing every list it completes.  Returns 1
 * when a top-level expression is complete (d->result), 0, or <0. */
static inline int deliver(pb_banana_dec *d, pb_value *v, uint64_t off) {
    while (d->depth) {
        frame *f = &d->stack[d->depth - 1];
        pb_value *l = f->list;
        if (l->u.seq.len < l->u.seq.cap) l->u.seq.items[l->u.seq.len++] = v;
        else if (pb_seq_append(d->arena, l, v)) return fail_alloc(d, off);
        if (l->u.seq.len < f->want) return 0;
        v = l;
        d->depth--;
    }
    d->result = v;
    return 1;
}

/* An integer whose prefix (in d->prefix) does not fit in 63 bits. */
static pb_value *make_bigint(pb_banana_dec *d, int neg) {
    /* up to 64 groups of 7 bits = 448 bits = 14 limbs */
    uint32_t limbs[15] = {0};
    unsigned n = prefix_sig(d);
    for (unsigned i = 0; i < n; i++) {
        unsigned bit = 7 * i;
        uint64_t g = (uint64_t)d->prefix[i] << (bit % 32);
        limbs[bit / 32] |= (uint32_t)g;
        limbs[bit / 32 + 1] |= (uint32_t)(g >> 32);
    }
    return pb_bigint(d->arena, neg, limbs, 15);
}

static int push_list(pb_banana_dec *d, pb_value *v, size_t want, uint64_t off) {
    if (d->depth == d->stack_cap) {
        unsigned nc = d->stack_cap ? d->stack_cap * 2 : 16;
        if (nc > d->lim.max_depth) nc = d->lim.max_depth;
        frame *s = realloc(d->stack, nc * sizeof *s);
        if (!s) return fail(d, PB_ENOMEM, off, "out of memory");
        d->stack = s;
        d->stack_cap = nc;
    }
    d->stack[d->depth].list = v;
    d->stack[d->depth].want = want;
    d->depth++;
    return 0;
}

/*
 * One token: type byte t (at stream offset off) with prefix value n (big:
 * the prefix, still in d->prefix, does not fit in 63 bits).  rest[0..avail)
 * are the bytes after the type byte in this chunk; a STRING or FLOAT body
 * found whole there is taken directly (*used says how many bytes), else
 * the decoder enters ST_STRING / ST_FLOAT to collect it.  Returns 1 when a
 * top-level expression is complete, 0, or <0.
 */
static int on_token(pb_banana_dec *d, uint8_t t, uint64_t n, int big, uint64_t off,
                           const uint8_t *rest, size_t avail, size_t *used) {
    pb_value *v;
    *used = 0;
    if (++d->items > d->lim.max_items)
        return fail(d, PB_ELIMIT, off, "expression has more than %zu tokens", d->lim.max_items);
    switch (t) {
    case T_LIST:
        if (big || n > d->lim.max_list)
            return fail(d, PB_ELISTLEN, off,
                        "Security precaution: List too long. (%s%llu elements, limit %zu)",
                        big ? ">" : "", (unsigned long long)(big ? UINT64_MAX >> 1 : n),
                        d->lim.max_list);
        if (d->depth >= d->lim.max_depth)
            return fail(d, PB_EDEPTH, off, "lists nested deeper than %u", d->lim.max_depth);
        {
            /* each element takes at least one byte: never reserve more
             * slots than bytes actually received */
            size_t cap = (size_t)n < avail ? (size_t)n : avail;
            if (cap < 16) cap = (size_t)n < 16 ? (size_t)n : 16;
            v = new_list(d->arena, cap);
        }
        if (!v) return fail_alloc(d, off);
        if (n == 0) return deliver(d, v, off);
        return push_list(d, v, (size_t)n, off);
    case T_STRING:
        if (big || n > d->lim.max_string)
            return fail(d, PB_ESTRLEN, off,
                        "Security precaution: String too long. (%s%llu bytes, limit %zu)",
                        big ? ">" : "", (unsigned long long)(big ? UINT64_MAX >> 1 : n),
                        d->lim.max_string);
        if (n == 0) { /* no body bytes will come to finish it */
            v = pb_bytes_static(d->arena, "", 0);
            return v ? deliver(d, v, off) : fail_alloc(d, off);
        }
        /* value and body at once, before any body byte: the limit holds */
        v = new_string(d->arena, (size_t)n);
        if (!v) return fail_alloc(d, off);
        if (avail >= n) { /* the whole body is here */
            memcpy((char *)(v + 1), rest, (size_t)n);
            *used = (size_t)n;
            return deliver(d, v, off + 1 + n);
        }
        d->str = v;
        d->body = (char *)(v + 1);
        d->body_len = (size_t)n;
        d->body_have = 0;
        d->state = ST_STRING;
        return 0;
    case T_INT: case T_LONGINT: case T_NEG: case T_LONGNEG:
        if (big) v = make_bigint(d, t == T_NEG || t == T_LONGNEG);
        else if ((v = new_atom(d->arena, PB_INT)))
            v->u.i = t == T_NEG || t == T_LONGNEG ? -(int64_t)n : (int64_t)n;
        if (!v) return fail_alloc(d, off);
        return deliver(d, v, off);
    case T_FLOAT:
        /* Twisted ignores a FLOAT prefix */
        if (avail >= 8) {
            uint64_t bits = 0;
            for (int k = 0; k < 8; k++) bits = (bits << 8) | rest[k];
            if (!(v = new_atom(d->arena, PB_FLOAT))) return fail_alloc(d, off);
            memcpy(&v->u.f, &bits, sizeof bits);
            *used = 8;
            return deliver(d, v, off + 9);
        }
        d->fhave = 0;
        d->state = ST_FLOAT;
        return 0;
    case T_VOCAB:
        if (big || n < 1 || n > PB_BANANA_VOCAB_SIZE)
            return fail(d, PB_EVOCAB, off, "unknown VOCAB index %s%llu", big ? ">" : "",
                        (unsigned long long)(big ? UINT64_MAX >> 1 : n));
        if (d->dialect != PB_DIALECT_PB)
            return fail(d, PB_EVOCAB, off, "Invalid item for pb protocol b'%s'", vocab[n]);
        if (!(v = new_atom(d->arena, PB_BYTES))) return fail_alloc(d, off);
        v->u.s.ptr = vocab[n]; /* zero copy: the static word */
        v->u.s.len = vocab_len[n];
        return deliver(d, v, off);
    default:
        return fail(d, PB_ETYPEBYTE, off, "Invalid Type Byte b'\\x%02x'", t);
    }
}


/* ---- the fast path
 *
 * Small values are carved from SLAB-byte pieces of the arena, so most
 * tokens cost a compare and a bump, not a call.  A piece is at most a
 * quarter of the arena's first block, so it never needs a block of its
 * own.  Bigger values, values that do not fit the piece's tail while that
 * tail is still worth keeping, and every value once the arena limit is
 * near, are allocated from the arena exactly.  So the limit is checked
 * before each allocation as before; what the pieces' abandoned tails add
 * is under 64 bytes per piece (1/16), and nothing within 2 pieces of the
 * limit. */
#define SLAB 1024u
#define SLAB_SMALL 256u
#define SLAB_TAIL 64u

#if defined(__GNUC__)
__attribute__((noinline))
#endif
static void *slab_refill(pb_banana_dec *d, unsigned char **cur, size_t *left, size_t n) {
    if (n > SLAB_SMALL || *left >= SLAB_TAIL) return pb_arena_alloc(d->arena, n);
    size_t lim = d->lim.max_bytes;
    if (lim && lim - pb_arena_used(d->arena) < 2 * SLAB) return pb_arena_alloc(d->arena, n);
    unsigned char *p = pb_arena_alloc(d->arena, SLAB);
    if (!p) return pb_arena_alloc(d->arena, n);
    *cur = p + n;
    *left = SLAB - n;
    return p;
}

/* n: a multiple of 8 */
#define SLAB_ALLOC(d, cur, left, n)                                          \
    ((n) <= (left) ? ((left) -= (n), (cur) += (n), (void *)((cur) - (n)))    \
                   : slab_refill((d), &(cur), &(left), (n)))

/* Copy n bytes, n small (the usual case) without a call. */
static inline void copy_small(char *dst, const uint8_t *src, size_t n) {
    if (n >= 8 && n <= 16) {
        uint64_t x, y;
        memcpy(&x, src, 8);
        memcpy(&y, src + n - 8, 8);
        memcpy(dst, &x, 8);
        memcpy(dst + n - 8, &y, 8);
    } else if (n >= 4 && n < 8) {
        uint32_t x, y;
        memcpy(&x, src, 4);
        memcpy(&y, src + n - 4, 4);
        memcpy(dst, &x, 4);
        memcpy(dst + n - 4, &y, 4);
    } else if (n < 4) {
        for (size_t k = 0; k < n; k++) dst[k] = (char)src[k];
    } else {
        memcpy(dst, src, n);
    }
}

/*
 * Decode whole tokens straight from data[*pi..len) while each one is
 * complete in the chunk and well-formed, with the decoder's state in
 * locals (the open list's length and capacity too).  Stops, consuming
 * nothing of it, at the first token it does not handle (near the chunk's
 * end, a long prefix, any limit or error, a new stack level to allocate):
 * the general path then takes that token.  Returns 1 when an expression is
 * complete, 0, or <0 (allocation failure).
 */
static int fast_run(pb_banana_dec *d, const uint8_t *data, size_t len, size_t *pi) {
    size_t i = *pi;
    if (len - i < 11) return 0;
    /* every token started before stop has its prefix and type byte (at
     * most 10 bytes) inside the chunk */
    const size_t stop = len - 10;
    unsigned depth = d->depth;
    frame *const stack = d->stack;
    size_t budget = d->lim.max_items - d->items; /* tokens still allowed */
    unsigned char *cur = d->slab;
    size_t left = d->slab_left;
    int r = 0;
    pb_value *v;
    /* the open list, cached: its items, length, capacity and target */
    pb_value *tl = NULL, **titems = NULL;
    size_t tlen = 0, tcap = 0, twant = 0;
    if (depth) {
        tl = stack[depth - 1].list;
        titems = tl->u.seq.items;
        tlen = tl->u.seq.len;
        tcap = tl->u.seq.cap;
        twant = stack[depth - 1].want;
    }
    while (i < stop && budget) {
        size_t j = i;
        uint64_t n = 0;
        uint8_t c = data[j];
        if (c < 0x80) {
            unsigned sh = 0;
            do {
                n |= (uint64_t)c << sh;
                sh += 7;
                c = data[++j];
            } while (c < 0x80 && sh < 63);
            if (c < 0x80) break; /* more than 9 prefix bytes */
        }
        const size_t rest = len - j - 1;
        size_t sz;
        if (c == T_LIST) {
            if (n == 0 || n > d->lim.max_list || n > SIZE_MAX / 16 ||
                depth >= d->lim.max_depth || depth == d->stack_cap)
                break;
            size_t cap = (size_t)n < rest ? (size_t)n : rest;
            if (cap < 16) cap = (size_t)n < 16 ? (size_t)n : 16;
            /* no overflow (cap < SIZE_MAX / 16); a big one is allocated exactly */
            sz = sizeof *v + cap * sizeof(pb_value *);
            if (!(v = SLAB_ALLOC(d, cur, left, sz))) goto nomem;
            *v = (pb_value){.type = PB_SEXP_LIST};
            v->u.seq.items = (pb_value **)(void *)(v + 1);
            v->u.seq.cap = cap;
            if (depth) tl->u.seq.len = tlen;
            stack[depth].list = v;
            stack[depth].want = (size_t)n;
            depth++;
            tl = v;
            titems = v->u.seq.items;
            tlen = 0;
            tcap = cap;
            twant = (size_t)n;
            budget--;
            i = j + 1;
            continue;
        }
        switch (c) {
        case T_STRING: {
            if (n == 0 || n > d->lim.max_string || n > rest || n > PB_BANANA_SIZE_LIMIT)
                goto out;
            sz = (sizeof *v + (size_t)n + 1 + 7) & ~(size_t)7;
            if (!(v = SLAB_ALLOC(d, cur, left, sz))) goto nomem;
            char *body = (char *)(v + 1);
            copy_small(body, data + j + 1, (size_t)n);
            body[n] = 0;
            *v = (pb_value){.type = PB_BYTES};
            v->u.s.ptr = body;
            v->u.s.len = (size_t)n;
            i = j + 1 + (size_t)n;
            break;
        }
        case T_INT: case T_LONGINT:
            if (!(v = SLAB_ALLOC(d, cur, left, sizeof *v))) goto nomem;
            *v = (pb_value){.type = PB_INT};
            v->u.i = (int64_t)n;
            i = j + 1;
            break;
        case T_NEG: case T_LONGNEG:
            if (!(v = SLAB_ALLOC(d, cur, left, sizeof *v))) goto nomem;
            *v = (pb_value){.type = PB_INT};
            v->u.i = -(int64_t)n;
            i = j + 1;
            break;
        case T_FLOAT: {
            if (rest < 8) goto out;
            if (!(v = SLAB_ALLOC(d, cur, left, sizeof *v))) goto nomem;
            uint64_t bits;
            memcpy(&bits, data + j + 1, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            bits = __builtin_bswap64(bits);
#elif !(defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__)
            bits = 0;
            for (int k = 0; k < 8; k++) bits = (bits << 8) | data[j + 1 + k];
#endif
            *v = (pb_value){.type = PB_FLOAT};
            memcpy(&v->u.f, &bits, sizeof bits);
            i = j + 9;
            break;
        }
        case T_VOCAB:
            if (d->dialect != PB_DIALECT_PB || n < 1 || n > PB_BANANA_VOCAB_SIZE) goto out;
            if (!(v = SLAB_ALLOC(d, cur, left, sizeof *v))) goto nomem;
            *v = (pb_value){.type = PB_BYTES};
            v->u.s.ptr = vocab[n]; /* zero copy: the static word */
            v->u.s.len = vocab_len[n];
            i = j + 1;
            break;
        default:
            goto out;
        }
        budget--;
        /* deliver v: append it, closing every list it completes */
        for (;;) {
            if (depth == 0) {
                d->result = v;
                r = 1;
                goto out;
            }
            if (tlen == tcap) { /* more items than bytes seen when it opened */
                tl->u.seq.len = tlen;
                d->slab = cur;
                d->slab_left = left;
                if (pb_seq_append(d->arena, tl, v)) {
                    depth = 0; /* the decoder is dead: no state to keep */
                    goto nomem;
                }
                titems = tl->u.seq.items;
                tcap = tl->u.seq.cap;
                tlen++;
            } else {
                titems[tlen++] = v;
            }
            if (tlen < twant) break;
            tl->u.seq.len = tlen;
            v = tl;
            if (--depth) {
                tl = stack[depth - 1].list;
                titems = tl->u.seq.items;
                tlen = tl->u.seq.len;
                tcap = tl->u.seq.cap;
                twant = stack[depth - 1].want;
            }
        }
    }
out:
    if (depth) tl->u.seq.len = tlen;
    d->depth = depth;
    d->items = d->lim.max_items - budget;
    d->slab = cur;
    d->slab_left = left;
    *pi = i;
    return r;
nomem:
    if (depth) tl->u.seq.len = tlen;
    d->depth = depth;
    d->slab = cur;
    d->slab_left = left;
    *pi = i;
    return fail_alloc(d, d->offset + i);
}

/* The byte-at-a-time path: one prefix byte, or the type byte ending a
 * prefix gathered across feeds (or longer than the fast path takes). */
static int slow_byte(pb_banana_dec *d, const uint8_t *data, size_t len, size_t *pi) {
    size_t i = *pi;
    uint8_t c = data[i];
    if (c < 0x80) {
        if (d->plen == PB_BANANA_PREFIX_LIMIT)
            return fail(d, PB_EPREFIX, d->offset + i,
                        "Security precaution: more than %u bytes of prefix",
                        PB_BANANA_PREFIX_LIMIT);
        d->prefix[d->plen++] = c;
        *pi = i + 1;
        return 0;
    }
    i++;
    int big;
    uint64_t n = prefix_u64(d, &big);
    size_t used;
    int r = on_token(d, c, n, big, d->offset + i - 1, data + i, len - i, &used);
    d->plen = 0;
    *pi = i + used;
    return r;
}

int pb_banana_dec_feed(pb_banana_dec *d, const uint8_t *data, size_t len, size_t *consumed,
                       pb_value **out) {
    size_t i = 0;
    int r = 0;
    *consumed = 0;
    *out = NULL;
    if (d->err) return d->err;
    if (d->delivered) {
        pb_arena_reset(d->arena);
        d->slab_left = 0;
        d->delivered = 0;
        d->result = NULL;
    }
    if (!data && len) return fail(d, PB_EINVAL, d->offset, "NULL data");
    while (i < len) {
        if (d->state == ST_PREFIX && d->plen == 0) {
            r = fast_run(d, data, len, &i);
            if (r == 0 && i < len) {
                /* a token the fast path left: the general path, which
                 * knows every case (and every error) */
                size_t j = i, lim = len - i > 10 ? i + 10 : len;
                uint64_t n = 0;
                unsigned sh = 0;
                uint8_t c;
                while (j < lim && (c = data[j]) < 0x80) {
                    n |= (uint64_t)c << sh;
                    sh += 7;
                    j++;
                }
                if (j == lim) { /* cut by the chunk's end, or long */
                    r = slow_byte(d, data, len, &i);
                } else {
                    size_t used;
                    j++; /* the type byte */
                    r = on_token(d, data[j - 1], n, 0, d->offset + j - 1, data + j, len - j,
                                 &used);
                    i = j + used;
                }
            }
        } else if (d->state == ST_PREFIX) {
            r = slow_byte(d, data, len, &i);
        } else if (d->state == ST_STRING) {
            size_t k = d->body_len - d->body_have;
            if (k > len - i) k = len - i;
            memcpy(d->body + d->body_have, data + i, k);
            d->body_have += k;
            i += k;
            if (d->body_have < d->body_len) break;
            d->state = ST_PREFIX;
            r = deliver(d, d->str, d->offset + i);
        } else { /* ST_FLOAT */
            while (d->fhave < 8 && i < len) d->fbuf[d->fhave++] = data[i++];
            if (d->fhave < 8) break;
            d->state = ST_PREFIX;
            uint64_t bits = 0;
            for (int k = 0; k < 8; k++) bits = (bits << 8) | d->fbuf[k];
            double f;
            memcpy(&f, &bits, sizeof f);
            pb_value *v = pb_float(d->arena, f);
            r = v ? deliver(d, v, d->offset + i) : fail_alloc(d, d->offset + i);
        }
        if (r < 0) {
            *consumed = i;
            return r;
        }
        if (r == 1) {
            d->offset += i;
            d->items = 0;
            d->delivered = 1;
            *consumed = i;
            *out = d->result;
            return 1;
        }
    }
    d->offset += len;
    *consumed = len;
    return 0;
}

/* ---------------------------------------------------------------- encoder */

/* Base-128, least significant group first, at least one byte. */
static size_t put_b128(uint8_t *p, uint64_t v) {
    size_t n = 0;
    do {
        p[n++] = (uint8_t)(v & 0x7f);
        v >>= 7;
    } while (v);
    return n;
}

static int put_token(pb_buf *out, uint64_t n, uint8_t type) {
    int rc = pb_buf_reserve(out, 11);
    if (rc) return rc;
    size_t k = put_b128(out->data + out->len, n);
    out->data[out->len + k] = type;
    out->len += k + 1;
    return PB_OK;
}

int pb_banana_put_list(pb_buf *out, size_t n) {
    if (n > PB_BANANA_SIZE_LIMIT) return PB_EUNSENDABLE;
    return put_token(out, n, T_LIST);
}

int pb_banana_put_int(pb_buf *out, int64_t v) {
    if (v >= 0) return put_token(out, (uint64_t)v, v <= INT32_MAX ? T_INT : T_LONGINT);
    uint64_t m = (uint64_t)(-(v + 1)) + 1; /* no overflow at INT64_MIN */
    return put_token(out, m, m <= (uint64_t)1 << 31 ? T_NEG : T_LONGNEG);
}

int pb_banana_put_bigint(pb_buf *out, const pb_value *big) {
    if (!big) return PB_EINVAL;
    if (big->type == PB_INT) return pb_banana_put_int(out, big->u.i);
    if (big->type != PB_BIGINT) return PB_EINVAL;
    size_t n = big->u.big.nlimbs;
    const uint32_t *l = big->u.big.limbs;
    while (n && l[n - 1] == 0) n--;
    if (n <= 2) { /* not normalised: take the small path */
        uint64_t m = n ? l[0] : 0;
        if (n == 2) m |= (uint64_t)l[1] << 32;
        if (!big->u.big.neg && m <= (uint64_t)INT64_MAX) return pb_banana_put_int(out, (int64_t)m);
        if (big->u.big.neg && m <= (uint64_t)1 << 31) return put_token(out, m, m ? T_NEG : T_INT);
    }
    size_t bits = n ? (n - 1) * 32 : 0;
    for (uint32_t top = n ? l[n - 1] : 0; top; top >>= 1) bits++;
    if (bits > 448) return PB_EUNSENDABLE; /* |v| >= 2**448: prefix would pass 64 bytes */
    size_t groups = bits ? (bits + 6) / 7 : 1;
    int rc = pb_buf_reserve(out, groups + 1);
    if (rc) return rc;
    uint8_t *p = out->data + out->len;
    for (size_t g = 0; g < groups; g++) {
        size_t bit = 7 * g, li = bit / 32, sh = bit % 32;
        uint64_t w = li < n ? l[li] : 0;
        if (li + 1 < n) w |= (uint64_t)l[li + 1] << 32;
        p[g] = (uint8_t)((w >> sh) & 0x7f);
    }
    p[groups] = big->u.big.neg ? T_LONGNEG : T_LONGINT;
    out->len += groups + 1;
    return PB_OK;
}

int pb_banana_put_float(pb_buf *out, double f) {
    int rc = pb_buf_reserve(out, 9);
    if (rc) return rc;
    uint64_t bits;
    memcpy(&bits, &f, sizeof bits);
    uint8_t *p = out->data + out->len;
    p[0] = T_FLOAT;
    for (int k = 0; k < 8; k++) p[1 + k] = (uint8_t)(bits >> (56 - 8 * k));
    out->len += 9;
    return PB_OK;
}

int pb_banana_put_bytes(pb_buf *out, pb_dialect dialect, const void *p, size_t n) {
    if (n > PB_BANANA_SIZE_LIMIT) return PB_EUNSENDABLE;
    if (dialect == PB_DIALECT_PB) {
        unsigned w = pb_banana_vocab_index(p, n);
        if (w) return put_token(out, w, T_VOCAB);
    }
    int rc = pb_buf_reserve(out, n + 11);
    if (rc) return rc;
    size_t k = put_b128(out->data + out->len, n);
    out->data[out->len + k] = T_STRING;
    if (n) memcpy(out->data + out->len + k + 1, p, n);
    out->len += k + 1 + n;
    return PB_OK;
}

#define RAW_MAX_DEPTH 4096 /* guards against cyclic raw trees */

static int enc_raw(pb_buf *out, pb_dialect dialect, const pb_value *v, unsigned depth,
                   pb_errbuf *err) {
    int rc;
    if (!v) return pb_err_set(err, PB_EINVAL, "NULL value in s-expression");
    switch ((pb_type)v->type) {
    case PB_SEXP_LIST:
        if (depth >= RAW_MAX_DEPTH)
            return pb_err_set(err, PB_EDEPTH, "s-expression nested deeper than %d",
                              RAW_MAX_DEPTH);
        rc = pb_banana_put_list(out, v->u.seq.len);
        if (rc == PB_EUNSENDABLE)
            return pb_err_set(err, rc, "list/tuple is too long to send (%zu)", v->u.seq.len);
        for (size_t i = 0; !rc && i < v->u.seq.len; i++)
            rc = enc_raw(out, dialect, v->u.seq.items[i], depth + 1, err);
        return rc;
    case PB_INT: rc = pb_banana_put_int(out, v->u.i); break;
    case PB_BIGINT:
        rc = pb_banana_put_bigint(out, v);
        if (rc == PB_EUNSENDABLE) return pb_err_set(err, rc, "int is too large to send");
        break;
    case PB_FLOAT: rc = pb_banana_put_float(out, v->u.f); break;
    case PB_BYTES: case PB_STR:
        rc = pb_banana_put_bytes(out, dialect, v->u.s.ptr, v->u.s.len);
        if (rc == PB_EUNSENDABLE)
            return pb_err_set(err, rc, "byte string is too long to send (%zu)", v->u.s.len);
        break;
    default:
        return pb_err_set(err, PB_EUNSENDABLE, "Banana cannot send %s objects",
                          pb_type_name((pb_type)v->type));
    }
    if (rc) return pb_err_set(err, rc, "%s", pb_strerror(rc));
    return rc;
}

int pb_banana_encode(pb_buf *out, pb_dialect dialect, const pb_value *sexp, pb_errbuf *err) {
    size_t saved = out->len;
    int rc = enc_raw(out, dialect, sexp, 0, err);
    if (rc) out->len = saved;
    return rc;
}
