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
    char *body;         /* STRING body being filled */
    size_t body_len, body_have;
    uint8_t fbuf[8];
    unsigned fhave;
    frame *stack;
    unsigned depth, stack_cap;
    size_t items;       /* tokens in the current expression */
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

pb_arena *pb_banana_dec_take_arena(pb_banana_dec *d) {
    /* only at an expression boundary: a half-built list lives in the arena */
    if (d->depth || d->state == ST_STRING) return NULL;
    pb_arena *fresh = pb_arena_new(d->lim.max_bytes);
    if (!fresh) return NULL;
    pb_arena *old = d->arena;
    d->arena = fresh;
    d->delivered = 0;
    d->result = NULL;
    return old;
}

#if defined(__GNUC__)
__attribute__((format(printf, 4, 5)))
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

static int fail_alloc(pb_banana_dec *d, uint64_t off) {
    if (pb_arena_over_limit(d->arena))
        return fail(d, PB_ELIMIT, off, "expression needs more than %zu bytes of memory",
                    d->lim.max_bytes);
    return fail(d, PB_ENOMEM, off, "out of memory");
}

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
static int deliver(pb_banana_dec *d, pb_value *v, uint64_t off) {
    for (;;) {
        if (d->depth == 0) {
            d->result = v;
            return 1;
        }
        frame *f = &d->stack[d->depth - 1];
        if (pb_seq_append(d->arena, f->list, v)) return fail_alloc(d, off);
        if (f->list->u.seq.len < f->want) return 0;
        v = f->list;
        d->depth--;
    }
}

static pb_value *make_int(pb_banana_dec *d, int neg) {
    int big;
    uint64_t m = prefix_u64(d, &big);
    if (!big) {
        if (!neg) return pb_int(d->arena, (int64_t)m);
        return pb_int(d->arena, -(int64_t)m);
    }
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

/* A type byte arrived (at stream offset off); avail bytes follow in this
 * chunk (a hint for sizing lists). */
static int on_type(pb_banana_dec *d, uint8_t t, uint64_t off, size_t avail) {
    int big;
    uint64_t n;
    pb_value *v;
    if (++d->items > d->lim.max_items)
        return fail(d, PB_ELIMIT, off, "expression has more than %zu tokens", d->lim.max_items);
    switch (t) {
    case T_LIST:
        n = prefix_u64(d, &big);
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
            v = pb_container(d->arena, PB_SEXP_LIST, cap);
        }
        if (!v) return fail_alloc(d, off);
        d->plen = 0;
        if (n == 0) return deliver(d, v, off);
        if (d->depth == d->stack_cap) {
            unsigned nc = d->stack_cap ? d->stack_cap * 2 : 16;
            if (nc > d->lim.max_depth) nc = d->lim.max_depth;
            frame *s = realloc(d->stack, nc * sizeof *s);
            if (!s) return fail(d, PB_ENOMEM, off, "out of memory");
            d->stack = s;
            d->stack_cap = nc;
        }
        d->stack[d->depth].list = v;
        d->stack[d->depth].want = (size_t)n;
        d->depth++;
        return 0;
    case T_STRING:
        n = prefix_u64(d, &big);
        if (big || n > d->lim.max_string)
            return fail(d, PB_ESTRLEN, off,
                        "Security precaution: String too long. (%s%llu bytes, limit %zu)",
                        big ? ">" : "", (unsigned long long)(big ? UINT64_MAX >> 1 : n),
                        d->lim.max_string);
        d->plen = 0;
        if (n == 0) { /* no body bytes will come to finish it */
            v = pb_bytes_static(d->arena, "", 0);
            return v ? deliver(d, v, off) : fail_alloc(d, off);
        }
        d->body = pb_arena_alloc(d->arena, (size_t)n + 1);
        if (!d->body) return fail_alloc(d, off);
        d->body_len = (size_t)n;
        d->body_have = 0;
        d->state = ST_STRING;
        return 0;
    case T_INT: case T_LONGINT: case T_NEG: case T_LONGNEG:
        v = make_int(d, t == T_NEG || t == T_LONGNEG);
        d->plen = 0;
        if (!v) return fail_alloc(d, off);
        return deliver(d, v, off);
    case T_FLOAT:
        d->plen = 0; /* Twisted ignores a FLOAT prefix */
        d->fhave = 0;
        d->state = ST_FLOAT;
        return 0;
    case T_VOCAB:
        n = prefix_u64(d, &big);
        d->plen = 0;
        if (big || n < 1 || n > PB_BANANA_VOCAB_SIZE)
            return fail(d, PB_EVOCAB, off, "unknown VOCAB index %s%llu", big ? ">" : "",
                        (unsigned long long)(big ? UINT64_MAX >> 1 : n));
        if (d->dialect != PB_DIALECT_PB)
            return fail(d, PB_EVOCAB, off, "Invalid item for pb protocol b'%s'", vocab[n]);
        v = pb_bytes_static(d->arena, vocab[n], strlen(vocab[n]));
        if (!v) return fail_alloc(d, off);
        return deliver(d, v, off);
    default:
        return fail(d, PB_ETYPEBYTE, off, "Invalid Type Byte b'\\x%02x'", t);
    }
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
        d->delivered = 0;
        d->result = NULL;
    }
    if (!data && len) return fail(d, PB_EINVAL, d->offset, "NULL data");
    while (i < len) {
        if (d->state == ST_STRING) {
            size_t k = d->body_len - d->body_have;
            if (k > len - i) k = len - i;
            memcpy(d->body + d->body_have, data + i, k);
            d->body_have += k;
            i += k;
            if (d->body_have < d->body_len) break;
            d->body[d->body_len] = 0;
            d->state = ST_PREFIX;
            pb_value *v = pb_bytes_static(d->arena, d->body, d->body_len);
            r = v ? deliver(d, v, d->offset + i) : fail_alloc(d, d->offset + i);
        } else if (d->state == ST_FLOAT) {
            while (d->fhave < 8 && i < len) d->fbuf[d->fhave++] = data[i++];
            if (d->fhave < 8) break;
            d->state = ST_PREFIX;
            uint64_t bits = 0;
            for (int k = 0; k < 8; k++) bits = (bits << 8) | d->fbuf[k];
            double f;
            memcpy(&f, &bits, sizeof f);
            pb_value *v = pb_float(d->arena, f);
            r = v ? deliver(d, v, d->offset + i) : fail_alloc(d, d->offset + i);
        } else {
            uint8_t c = data[i];
            if (c < 0x80) {
                if (d->plen == PB_BANANA_PREFIX_LIMIT)
                    return fail(d, PB_EPREFIX, d->offset + i,
                                "Security precaution: more than %u bytes of prefix",
                                PB_BANANA_PREFIX_LIMIT);
                d->prefix[d->plen++] = c;
                i++;
                continue;
            }
            i++;
            r = on_type(d, c, d->offset + i - 1, len - i);
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
