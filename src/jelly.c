/*
 * jelly.c - Jelly: pb_value graphs to Banana bytes and s-expressions back
 * to values, reproducing Twisted 22.4 (twisted/spread/jelly.py).
 *
 * Encoding writes Banana straight into the caller's pb_buf.  Twisted gives
 * a container that is reached twice a (reference ID ...) wrapper at its
 * *first* occurrence, with IDs numbered in the order of *second*
 * encounters, so the encoder must know the IDs before it writes anything:
 * a pre-pass walks the graph in the same depth-first order and numbers
 * them in pb_value.mark.  Marks are back to 0 when the call returns.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "pb/jelly.h"

#define DEFAULT_DEPTH 64u
#define HARD_DEPTH 10000u /* recursion stays well inside a thread's stack */

static unsigned depth_limit(const pb_jelly_opts *o) {
    unsigned d = o && o->max_depth ? o->max_depth : DEFAULT_DEPTH;
    return d > HARD_DEPTH ? HARD_DEPTH : d;
}

/* ---------------------------------------------------------------- registry */

typedef struct reg_entry {
    char *cls;
    size_t len;
    pb_unjelly_hook hook;
    void *ud;
} reg_entry;

struct pb_jelly_registry {
    reg_entry *e;
    size_t n, cap;
};

pb_jelly_registry *pb_jelly_registry_new(void) { return calloc(1, sizeof(pb_jelly_registry)); }

void pb_jelly_registry_free(pb_jelly_registry *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n; i++) free(r->e[i].cls);
    free(r->e);
    free(r);
}

static const reg_entry *reg_find(const pb_jelly_registry *r, const char *cls, size_t n) {
    if (!r) return NULL;
    for (size_t i = 0; i < r->n; i++)
        if (r->e[i].len == n && memcmp(r->e[i].cls, cls, n) == 0) return &r->e[i];
    return NULL;
}

int pb_jelly_registry_add(pb_jelly_registry *r, const char *cls, pb_unjelly_hook hook,
                          void *ud) {
    if (!r || !cls || !*cls) return PB_EINVAL;
    size_t n = strlen(cls);
    reg_entry *old = (reg_entry *)reg_find(r, cls, n);
    if (old) { /* re-registering replaces, as setUnjellyableForClass does */
        old->hook = hook;
        old->ud = ud;
        return PB_OK;
    }
    if (r->n == r->cap) {
        size_t nc = r->cap ? r->cap * 2 : 8;
        reg_entry *e = realloc(r->e, nc * sizeof *e);
        if (!e) return PB_ENOMEM;
        r->e = e;
        r->cap = nc;
    }
    char *c = malloc(n + 1);
    if (!c) return PB_ENOMEM;
    memcpy(c, cls, n + 1);
    r->e[r->n++] = (reg_entry){c, n, hook, ud};
    return PB_OK;
}

int pb_jelly_registry_has(const pb_jelly_registry *r, const char *cls, size_t n) {
    return reg_find(r, cls, n) != NULL;
}

/* ================================================================ encoding */

enum { T_LIST = 0x80, T_INT, T_STRING, T_NEG, T_FLOAT, T_LONGINT, T_LONGNEG, T_VOCAB };
#define EMITTED 0x80000000u /* mark bit: the (reference ...) has been written */
#define MAX_ID 0x7ffffff0u

typedef struct enc {
    pb_buf *out;
    pb_dialect d;
    const pb_jelly_hooks *hooks;
    pb_errbuf *err;
    unsigned max_depth;
    uint32_t nextid;
    int shared; /* some container is reached twice: marks carry ids */
} enc;

/* Values with Python identity that Twisted may (de)reference. */
static int shareable(const pb_value *v) {
    switch ((pb_type)v->type) {
    case PB_LIST: case PB_TUPLE: case PB_SET: case PB_FROZENSET: case PB_DICT:
    case PB_INSTANCE: case PB_UNPERSISTABLE:
        return 1;
    default:
        return 0;
    }
}

/* Raw sexp lists are walked too (marked, never shared). */
static int tracked(const pb_value *v) { return shareable(v) || v->type == PB_SEXP_LIST; }

static size_t nkids(const pb_value *v) {
    if (v->type == PB_DICT) return 2 * v->u.dict.len;
    if (v->type == PB_INSTANCE) return v->u.inst.state ? 1 : 0;
    if (pb_is_seq(v)) return v->u.seq.len;
    return 0;
}

static pb_value *kid(const pb_value *v, size_t i) {
    if (v->type == PB_DICT) return v->u.dict.kv[i];
    if (v->type == PB_INSTANCE) return v->u.inst.state;
    return v->u.seq.items[i];
}

/* Pre-pass: mark 1 = seen once, mark 1+id = reached again (id assigned at
 * that second encounter, as Twisted's _cook does). */
static int scan(enc *e, pb_value *v, unsigned depth) {
    if (!v) return pb_err_set(e->err, PB_EINVAL, "NULL value in graph");
    if (!tracked(v)) return PB_OK;
    if (v->mark) {
        if (v->type == PB_SEXP_LIST)
            return pb_err_set(e->err, PB_EUNSENDABLE, "raw s-expression list reached twice");
        if (v->mark == 1) {
            if (e->nextid >= MAX_ID) return pb_err_set(e->err, PB_ELIMIT, "too many shared objects");
            v->mark = ++e->nextid + 1;
            e->shared = 1;
        }
        return PB_OK;
    }
    if (depth >= e->max_depth)
        return pb_err_set(e->err, PB_EDEPTH, "value nested deeper than %u", e->max_depth);
    v->mark = 1;
    size_t n = nkids(v);
    for (size_t i = 0; i < n; i++) {
        pb_value *k = kid(v, i);
        if (k && !tracked(k)) continue; /* leaves: skip the call */
        int rc = scan(e, k, depth + 1);
        if (rc) return rc;
    }
    return PB_OK;
}

/* Clear marks over the marked region (connected to the root). */
static void unmark(pb_value *v) {
    if (!v || !tracked(v) || !v->mark) return;
    v->mark = 0;
    size_t n = nkids(v);
    for (size_t i = 0; i < n; i++) unmark(kid(v, i));
}

/* Clear marks over a tree (no sharing), whatever their values. */
static void unmark_tree(pb_value *v) {
    if (!v || !tracked(v)) return;
    v->mark = 0;
    size_t n = nkids(v);
    for (size_t i = 0; i < n; i++) unmark_tree(kid(v, i));
}

/* ---- byte writers: reserve once, then write through a pointer */

static int room_slow(enc *e, size_t n);

static inline int room(enc *e, size_t n) {
    pb_buf *b = e->out;
    if (b->cap - b->len >= n && (!b->limit || b->limit - b->len >= n)) return PB_OK;
    return room_slow(e, n);
}

static int room_slow(enc *e, size_t n) {
    pb_buf *b = e->out;
    int rc = pb_buf_reserve(b, n);
    if (rc)
        return pb_err_set(e->err, rc, rc == PB_ELIMIT ? "output exceeds the buffer limit (%zu)"
                                                       : "out of memory (%zu)", b->limit);
    return PB_OK;
}

static inline uint8_t *b128(uint8_t *p, uint64_t v, uint8_t type) {
    do {
        *p++ = (uint8_t)(v & 0x7f);
        v >>= 7;
    } while (v);
    *p++ = type;
    return p;
}

#define CUR(e) ((e)->out->data + (e)->out->len)
#define SETCUR(e, p) ((e)->out->len = (size_t)((p) - (e)->out->data))

/* A byte string token, vocabulary-substituted in the pb dialect.  Needs
 * n + 11 bytes of room. */
/* First letters of the vocabulary words of each length 4..13, as bits
 * (c - 'A'): most strings are ruled out without a call. */
static const uint64_t vocab_first[10] = {
#define B(c) ((uint64_t)1 << ((c) - 'A'))
    B('N') | B('l') | B('c'), B('c') | B('t') | B('l') | B('e'),
    B('m') | B('c') | B('r') | B('l') | B('a') | B('d'), B('v') | B('m') | B('d') | B('u'),
    B('f') | B('i') | B('p'), B('r') | B('c') | B('l'), B('d') | B('p'), B('d'), B('c'),
    B('u') | B('n')
#undef B
};

static inline int maybe_vocab(const void *s, size_t n) {
    unsigned c = *(const unsigned char *)s - 'A';
    return n >= 4 && n <= 13 && c < 64 && (vocab_first[n - 4] >> c & 1);
}

static inline uint8_t *w_bytes(const enc *e, uint8_t *p, const void *s, size_t n) {
    if (e->d == PB_DIALECT_PB && maybe_vocab(s, n)) {
        unsigned w = pb_banana_vocab_index(s, n);
        if (w) return b128(p, w, T_VOCAB);
    }
    p = b128(p, n, T_STRING);
    memcpy(p, s, n);
    return p + n;
}

/* A list header and its tag atom; vidx is the tag's vocabulary index (0:
 * none), known at compile time so no lookup is needed.  Needs
 * 11 + 15 + 11 bytes of room. */
static inline uint8_t *w_head(const enc *e, uint8_t *p, size_t n, const char *tag, size_t tn,
                              unsigned vidx) {
    p = b128(p, n, T_LIST);
    if (vidx && e->d == PB_DIALECT_PB) {
        *p++ = (uint8_t)vidx;
        *p++ = T_VOCAB;
        return p;
    }
    *p++ = (uint8_t)tn;
    *p++ = T_STRING;
    memcpy(p, tag, tn);
    return p + tn;
}

static inline uint8_t *w_int(uint8_t *p, int64_t v) {
    if (v >= 0) return b128(p, (uint64_t)v, v <= INT32_MAX ? T_INT : T_LONGINT);
    uint64_t m = (uint64_t)(-(v + 1)) + 1;
    return b128(p, m, m <= (uint64_t)1 << 31 ? T_NEG : T_LONGNEG);
}

#define HEAD_ROOM 40

static int too_long(enc *e, const char *what, size_t n) {
    return pb_err_set(e->err, PB_EUNSENDABLE, "%s is too long to send (%zu)", what, n);
}

/* Decimal text of a big integer for messages (Twisted prints the value). */
static void big_text(const pb_value *v, char *buf, size_t cap) {
    uint32_t l[64];
    size_t n = v->u.big.nlimbs;
    if (n > 64) {
        snprintf(buf, cap, "a %zu-limb int", n);
        return;
    }
    memcpy(l, v->u.big.limbs, n * sizeof *l);
    char tmp[700];
    size_t k = sizeof tmp;
    tmp[--k] = 0;
    while (n) { /* divide by 10**9, collect 9 digits at a time */
        uint64_t r = 0;
        for (size_t i = n; i-- > 0;) {
            uint64_t cur = (r << 32) | l[i];
            l[i] = (uint32_t)(cur / 1000000000u);
            r = cur % 1000000000u;
        }
        while (n && l[n - 1] == 0) n--;
        for (int j = 0; j < 9 && (n || r); j++) {
            tmp[--k] = (char)('0' + r % 10);
            r /= 10;
        }
    }
    if (v->u.big.neg) tmp[--k] = '-';
    snprintf(buf, cap, "%s", tmp + k);
}

static int w_bigint(enc *e, const pb_value *v) {
    int rc = pb_banana_put_bigint(e->out, v);
    if (rc == PB_EUNSENDABLE) {
        char t[200];
        big_text(v, t, sizeof t);
        return pb_err_set(e->err, rc, "int is too large to send (%s)", t);
    }
    if (rc) return pb_err_set(e->err, rc, "%s", pb_strerror(rc));
    return PB_OK;
}

/* (TAG "payload") for str, date/time and unpersistable forms. */
static int w_tagged_text(enc *e, const char *tag, size_t tn, unsigned vidx,
                         const pb_value *v) {
    if (v->u.s.len > PB_BANANA_SIZE_LIMIT) return too_long(e, "byte string", v->u.s.len);
    int rc = room(e, HEAD_ROOM + 11 + v->u.s.len);
    if (rc) return rc;
    uint8_t *p = w_head(e, CUR(e), 2, tag, tn, vidx);
    SETCUR(e, w_bytes(e, p, v->u.s.ptr, v->u.s.len));
    return PB_OK;
}

static int enc_value(enc *e, const pb_value *v, unsigned depth);

static int enc_container(enc *e, pb_value *v, unsigned depth) {
    uint32_t m = v->mark;
    int rc;
    if (m & EMITTED) { /* (dereference ID) */
        if ((rc = room(e, HEAD_ROOM + 11))) return rc;
        uint8_t *p = w_head(e, CUR(e), 2, "dereference", 11, 3);
        SETCUR(e, w_int(p, (int64_t)(m & ~EMITTED) - 1));
        return PB_OK;
    }
    if (depth >= e->max_depth)
        return pb_err_set(e->err, PB_EDEPTH, "value nested deeper than %u", e->max_depth);
    if (m >= 2) { /* first occurrence of a shared one: (reference ID <form>) */
        v->mark = m | EMITTED;
        if ((rc = room(e, HEAD_ROOM + 11))) return rc;
        uint8_t *p = w_head(e, CUR(e), 3, "reference", 9, 4);
        SETCUR(e, w_int(p, (int64_t)m - 1));
    } else if (!e->shared) {
        v->mark = 0; /* a tree: this is the only visit */
    }
    const char *tag;
    size_t tn;
    unsigned vidx = 0;
    switch ((pb_type)v->type) {
    case PB_LIST: tag = "list"; tn = 4; vidx = 8; break;
    case PB_TUPLE: tag = "tuple"; tn = 5; vidx = 11; break;
    case PB_SET: tag = "set"; tn = 3; break;
    case PB_FROZENSET: tag = "frozenset"; tn = 9; break;
    case PB_DICT: tag = "dictionary"; tn = 10; vidx = 5; break;
    case PB_UNPERSISTABLE: return w_tagged_text(e, "unpersistable", 13, 12, v);
    case PB_INSTANCE: {
        if (v->u.inst.cls_len > PB_BANANA_SIZE_LIMIT)
            return too_long(e, "byte string", v->u.inst.cls_len);
        if ((rc = room(e, 11 + 11 + v->u.inst.cls_len))) return rc;
        uint8_t *p = b128(CUR(e), 2, T_LIST);
        SETCUR(e, w_bytes(e, p, v->u.inst.cls, v->u.inst.cls_len));
        if (!v->u.inst.state) { /* no state: send None rather than a malformed form */
            if ((rc = room(e, HEAD_ROOM))) return rc;
            SETCUR(e, w_head(e, CUR(e), 1, "None", 4, 1));
            return PB_OK;
        }
        return enc_value(e, v->u.inst.state, depth + 1);
    }
    case PB_SEXP_LIST: /* raw list: elements jellied, no tag */
        if (v->u.seq.len > PB_BANANA_SIZE_LIMIT) return too_long(e, "list/tuple", v->u.seq.len);
        if ((rc = room(e, 11))) return rc;
        SETCUR(e, b128(CUR(e), v->u.seq.len, T_LIST));
        for (size_t i = 0; i < v->u.seq.len; i++)
            if ((rc = enc_value(e, v->u.seq.items[i], depth + 1))) return rc;
        return PB_OK;
    default: return pb_err_set(e->err, PB_EINVAL, "not a container");
    }
    if (v->type == PB_DICT) {
        size_t n = v->u.dict.len;
        if (n + 1 > PB_BANANA_SIZE_LIMIT) return too_long(e, "list/tuple", n + 1);
        if ((rc = room(e, HEAD_ROOM))) return rc;
        SETCUR(e, w_head(e, CUR(e), n + 1, tag, tn, vidx));
        for (size_t i = 0; i < n; i++) {
            if ((rc = room(e, 2))) return rc;
            uint8_t *p = CUR(e);
            p[0] = 2;
            p[1] = T_LIST;
            e->out->len += 2;
            if ((rc = enc_value(e, v->u.dict.kv[2 * i], depth + 1))) return rc;
            if ((rc = enc_value(e, v->u.dict.kv[2 * i + 1], depth + 1))) return rc;
        }
        return PB_OK;
    }
    size_t n = v->u.seq.len;
    if (n + 1 > PB_BANANA_SIZE_LIMIT) return too_long(e, "list/tuple", n + 1);
    if ((rc = room(e, HEAD_ROOM))) return rc;
    SETCUR(e, w_head(e, CUR(e), n + 1, tag, tn, vidx));
    for (size_t i = 0; i < n; i++)
        if ((rc = enc_value(e, v->u.seq.items[i], depth + 1))) return rc;
    return PB_OK;
}

static int enc_value(enc *e, const pb_value *v, unsigned depth) {
    int rc;
    uint8_t *p;
    if (!v) return pb_err_set(e->err, PB_EINVAL, "NULL value in graph");
    switch ((pb_type)v->type) {
    case PB_INT:
        if ((rc = room(e, 11))) return rc;
        SETCUR(e, w_int(CUR(e), v->u.i));
        return PB_OK;
    case PB_STR:
        return w_tagged_text(e, "unicode", 7, 0, v);
    case PB_BYTES:
        if (v->u.s.len > PB_BANANA_SIZE_LIMIT) return too_long(e, "byte string", v->u.s.len);
        if ((rc = room(e, 11 + v->u.s.len))) return rc;
        SETCUR(e, w_bytes(e, CUR(e), v->u.s.ptr, v->u.s.len));
        return PB_OK;
    case PB_FLOAT: {
        if ((rc = room(e, 9))) return rc;
        uint64_t bits;
        memcpy(&bits, &v->u.f, sizeof bits);
        p = CUR(e);
        p[0] = T_FLOAT;
        for (int k = 0; k < 8; k++) p[1 + k] = (uint8_t)(bits >> (56 - 8 * k));
        e->out->len += 9;
        return PB_OK;
    }
    case PB_NONE:
        if ((rc = room(e, HEAD_ROOM))) return rc;
        SETCUR(e, w_head(e, CUR(e), 1, "None", 4, 1));
        return PB_OK;
    case PB_BOOL:
        if ((rc = room(e, HEAD_ROOM + 8))) return rc;
        p = w_head(e, CUR(e), 2, "boolean", 7, 0);
        SETCUR(e, v->u.b ? w_bytes(e, p, "true", 4) : w_bytes(e, p, "false", 5));
        return PB_OK;
    case PB_BIGINT:
        return w_bigint(e, v);
    case PB_DATETIME: return w_tagged_text(e, "datetime", 8, 0, v);
    case PB_DATE: return w_tagged_text(e, "date", 4, 0, v);
    case PB_TIME: return w_tagged_text(e, "time", 4, 0, v);
    case PB_TIMEDELTA: return w_tagged_text(e, "timedelta", 9, 0, v);
    case PB_DECIMAL: {
        const pb_value *dg = v->u.dec.digits;
        if (!dg || (dg->type != PB_INT && dg->type != PB_BIGINT))
            return pb_err_set(e->err, PB_EINVAL, "decimal without integer digits");
        if ((rc = room(e, HEAD_ROOM))) return rc;
        SETCUR(e, w_head(e, CUR(e), 3, "decimal", 7, 0));
        if (dg->type == PB_BIGINT) {
            if ((rc = w_bigint(e, dg))) return rc;
        } else {
            if ((rc = room(e, 11))) return rc;
            SETCUR(e, w_int(CUR(e), dg->u.i));
        }
        if ((rc = room(e, 11))) return rc;
        SETCUR(e, w_int(CUR(e), v->u.dec.exponent));
        return PB_OK;
    }
    case PB_REMOTE: case PB_OBJECT:
        if (!e->hooks || !e->hooks->encode_ref)
            return pb_err_set(e->err, PB_EUNSENDABLE, "Banana cannot send %s objects",
                              pb_type_name((pb_type)v->type));
        rc = e->hooks->encode_ref(e->hooks->ud, e->out, e->d, v, e->err);
        if (rc && e->err && e->err->code != rc)
            pb_err_set(e->err, rc, "encoding a reference failed: %s", pb_strerror(rc));
        return rc;
    default:
        if (tracked(v)) return enc_container(e, (pb_value *)v, depth);
        return pb_err_set(e->err, PB_EUNSENDABLE, "cannot jelly a value of type %u", v->type);
    }
}

int pb_jelly_encode(pb_buf *out, pb_dialect d, const pb_value *v, const pb_jelly_opts *o,
                    pb_errbuf *err) {
    if (!out || !v) return pb_err_set(err, PB_EINVAL, "NULL argument");
    enc e = {out, d, o ? o->hooks : NULL, err, depth_limit(o), 0, 0};
    pb_value *root = (pb_value *)v; /* marks are scratch space, restored below */
    size_t saved = out->len;
    int rc = PB_OK;
    if (tracked(root)) {
        rc = scan(&e, root, 0);
        if (rc) {
            unmark(root);
            return rc;
        }
    }
    rc = enc_value(&e, root, 0);
    if (e.shared) unmark(root);
    else if (rc) unmark_tree(root);
    if (rc) out->len = saved;
    return rc;
}

int pb_jelly_to_sexp(pb_arena *a, const pb_value *v, const pb_jelly_opts *o, pb_value **out,
                     pb_errbuf *err) {
    /* Through the wire form, so the tree is exactly what a peer decodes. */
    if (!a || !v || !out) return pb_err_set(err, PB_EINVAL, "NULL argument");
    *out = NULL;
    pb_buf b;
    pb_buf_init(&b);
    int rc = pb_jelly_encode(&b, PB_DIALECT_NONE, v, o, err);
    if (rc) return rc;
    pb_banana_limits lim;
    pb_banana_limits_default(&lim);
    lim.max_depth = 3 * depth_limit(o) + 8; /* dict entries and references add levels */
    lim.max_items = SIZE_MAX;
    lim.max_bytes = 0;
    pb_banana_dec *dec = pb_banana_dec_new(PB_DIALECT_NONE, &lim);
    if (!dec) {
        pb_buf_free(&b);
        return pb_err_set(err, PB_ENOMEM, "out of memory");
    }
    size_t used;
    pb_value *tree;
    rc = pb_banana_dec_feed(dec, b.data, b.len, &used, &tree);
    if (rc == 1) {
        *out = pb_value_copy(a, tree);
        rc = *out ? PB_OK : pb_err_set(err, PB_ENOMEM, "out of memory");
    } else {
        rc = pb_err_set(err, rc < 0 ? rc : PB_EJELLY, "re-decoding failed: %s",
                        pb_banana_dec_errmsg(dec));
    }
    pb_banana_dec_free(dec);
    pb_buf_free(&b);
    return rc;
}

/* ================================================================ decoding */

typedef struct refslot {
    int64_t id;
    pb_value *v; /* NULL: empty slot */
} refslot;

typedef struct udec {
    pb_arena *a;
    const pb_jelly_opts *o;
    pb_errbuf *err;
    unsigned max_depth;
    int share;
    refslot *refs; /* open addressing on id */
    size_t nrefs, cap;
} udec;

/* ---- allocation: one arena allocation per value (a string's body and a
 * container's first item array follow the value itself).  Exact, so the
 * target arena, which may live long and take many unjellies, is charged
 * only for what it holds. */
static inline void *u_alloc(udec *c, size_t n) { return pb_arena_alloc(c->a, n); }

static inline pb_value *u_value(udec *c, pb_type t) {
    pb_value *v = u_alloc(c, sizeof *v);
    if (v) *v = (pb_value){.type = (uint8_t)t};
    return v;
}

/* Value of type t holding a copy of p[0..n) (NUL-terminated), one allocation. */
static pb_value *u_text_copy(udec *c, pb_type t, const char *p, size_t n) {
    if (n > SIZE_MAX / 2) return NULL;
    pb_value *v = u_alloc(c, sizeof *v + n + 1);
    if (!v) return NULL;
    char *body = (char *)(v + 1);
    if (n) memcpy(body, p, n);
    body[n] = 0;
    *v = (pb_value){.type = (uint8_t)t};
    v->u.s.ptr = body;
    v->u.s.len = n;
    return v;
}

/* An empty sequence or dict with room for n items (entries), one allocation. */
static pb_value *u_container(udec *c, pb_type t, size_t n) {
    size_t unit = t == PB_DICT ? 2 * sizeof(pb_value *) : sizeof(pb_value *);
    if (n > (SIZE_MAX / 2 - sizeof(pb_value)) / unit) return NULL;
    pb_value *v = u_alloc(c, sizeof *v + n * unit);
    if (!v) return NULL;
    *v = (pb_value){.type = (uint8_t)t};
    pb_value **items = n ? (pb_value **)(void *)(v + 1) : NULL;
    if (t == PB_DICT) {
        v->u.dict.kv = items;
        v->u.dict.cap = n;
    } else {
        v->u.seq.items = items;
        v->u.seq.cap = n;
    }
    return v;
}

static size_t ref_slot(const udec *c, int64_t id) {
    uint64_t h = (uint64_t)id * 0x9E3779B97F4A7C15ull;
    size_t i = (size_t)(h >> 32) & (c->cap - 1);
    while (c->refs[i].v && c->refs[i].id != id) i = (i + 1) & (c->cap - 1);
    return i;
}

static pb_value *ref_get(const udec *c, int64_t id) {
    return c->cap ? c->refs[ref_slot(c, id)].v : NULL;
}

static int ref_put(udec *c, int64_t id, pb_value *v) {
    if ((c->nrefs + 1) * 2 > c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 16;
        refslot *n = calloc(nc, sizeof *n), *old = c->refs;
        if (!n) return pb_err_set(c->err, PB_ENOMEM, "out of memory");
        size_t oc = c->cap;
        c->refs = n;
        c->cap = nc;
        for (size_t i = 0; i < oc; i++)
            if (old[i].v) c->refs[ref_slot(c, old[i].id)] = old[i];
        free(old);
    }
    size_t i = ref_slot(c, id);
    if (!c->refs[i].v) c->nrefs++;
    c->refs[i].id = id;
    c->refs[i].v = v;
    return PB_OK;
}

static int oom(udec *c) {
    if (pb_arena_over_limit(c->a)) return pb_err_set(c->err, PB_ELIMIT, "arena limit reached");
    return pb_err_set(c->err, PB_ENOMEM, "out of memory");
}

static int is_atom_bytes(const pb_value *x) {
    return x && (x->type == PB_BYTES || x->type == PB_STR);
}

static int tag_is(const pb_value *t, const char *s, size_t n) {
    return t->u.s.len == n && memcmp(t->u.s.ptr, s, n) == 0;
}

/* Python's repr of a bytes object: b'...' */
static void bytes_repr(const char *p, size_t n, char *out, size_t cap) {
    int dq = memchr(p, '\'', n) && !memchr(p, '"', n);
    char q = dq ? '"' : '\'';
    size_t k = 0;
    if (cap < 8) { if (cap) *out = 0; return; }
    out[k++] = 'b';
    out[k++] = q;
    for (size_t i = 0; i < n && k + 6 < cap; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch == (unsigned char)q || ch == '\\') { out[k++] = '\\'; out[k++] = (char)ch; }
        else if (ch == '\n') { out[k++] = '\\'; out[k++] = 'n'; }
        else if (ch == '\r') { out[k++] = '\\'; out[k++] = 'r'; }
        else if (ch == '\t') { out[k++] = '\\'; out[k++] = 't'; }
        else if (ch < 0x20 || ch >= 0x7f) k += (size_t)snprintf(out + k, cap - k, "\\x%02x", ch);
        else out[k++] = (char)ch;
    }
    out[k++] = q;
    out[k] = 0;
}

static int insecure(udec *c, const pb_value *tag) {
    const char *p = tag->u.s.ptr;
    size_t n = tag->u.s.len;
    const char *dot = NULL;
    for (size_t i = n; i-- > 0;)
        if (p[i] == '.') { dot = p + i; break; }
    if (dot)
        return pb_err_set(c->err, PB_EINSECURE, "Module %.*s not allowed (in type %.*s).",
                          (int)(dot - p > 80 ? 80 : dot - p), p, (int)(n > 80 ? 80 : n), p);
    char r[200];
    bytes_repr(p, n, r, sizeof r);
    return pb_err_set(c->err, PB_EINSECURE, "%s", r);
}

/* Byte position and Python-style reason of the first invalid UTF-8. */
static void utf8_error(udec *c, const unsigned char *s, size_t n) {
    size_t i = 0;
    const char *why = "invalid start byte";
    while (i < n) {
        unsigned ch = s[i];
        size_t k = ch < 0x80 ? 1 : ch >= 0xC2 && ch <= 0xDF ? 2 : ch >= 0xE0 && ch <= 0xEF ? 3
                 : ch >= 0xF0 && ch <= 0xF4 ? 4 : 0;
        if (!k) break;
        if (i + k > n) {
            why = "unexpected end of data";
            break;
        }
        if (!pb_utf8_valid(s + i, k)) {
            why = "invalid continuation byte";
            break;
        }
        i += k;
    }
    pb_err_set(c->err, PB_EUTF8, "'utf-8' codec can't decode byte 0x%02x in position %zu: %s",
               i < n ? s[i] : 0, i, why);
}

/* A leaf of the tree as a value of c->a (shared when allowed). */
static pb_value *leaf(udec *c, const pb_value *x) {
    if (c->share && x->type != PB_STR) return (pb_value *)x;
    pb_value *v;
    switch ((pb_type)x->type) {
    case PB_INT:
        if ((v = u_value(c, PB_INT))) v->u.i = x->u.i;
        return v;
    case PB_BIGINT: return pb_bigint(c->a, x->u.big.neg, x->u.big.limbs, x->u.big.nlimbs);
    case PB_FLOAT:
        if ((v = u_value(c, PB_FLOAT))) v->u.f = x->u.f;
        return v;
    default: /* bytes, or PB_STR as bytes */
        return u_text_copy(c, PB_BYTES, x->u.s.ptr, x->u.s.len);
    }
}

/* Text payload as a value of type t (bytes shared when allowed). */
static pb_value *text_value(udec *c, pb_type t, const pb_value *x) {
    if (c->share) {
        pb_value *v = u_value(c, t);
        if (v) {
            v->u.s.ptr = x->u.s.ptr;
            v->u.s.len = x->u.s.len;
        }
        return v;
    }
    return u_text_copy(c, t, x->u.s.ptr, x->u.s.len);
}

/* "Y M D ..." with exactly nfields optionally negative integers. */
static int time_text_ok(const pb_value *x, int nfields) {
    const char *p = x->u.s.ptr, *e = p + x->u.s.len;
    int f = 0;
    while (p < e) {
        if (f && *p++ != ' ') return 0;
        if (p < e && *p == '-') p++;
        const char *d = p;
        while (p < e && *p >= '0' && *p <= '9') p++;
        if (p == d || p - d > 18) return 0;
        f++;
    }
    return f == nfields;
}

/* True if p[0..n) is all ASCII (so valid UTF-8): words, never past n. */
static inline int ascii_only(const char *p, size_t n) {
    uint64_t acc = 0, w;
    uint32_t h, t;
    if (n >= 8) {
        size_t k = 0;
        for (; k + 8 <= n; k += 8) {
            memcpy(&w, p + k, 8);
            acc |= w;
        }
        memcpy(&w, p + n - 8, 8); /* the tail, overlapping */
        acc |= w;
    } else if (n >= 4) {
        memcpy(&h, p, 4);
        memcpy(&t, p + n - 4, 4);
        acc = h | t;
    } else {
        for (size_t k = 0; k < n; k++) acc |= (unsigned char)p[k];
    }
    return !(acc & 0x8080808080808080ull);
}

static int uj_any(udec *c, const pb_value *x, unsigned depth, const int64_t *pend,
                  pb_value **out);
static int uj_list(udec *c, const pb_value *x, unsigned depth, const int64_t *pend,
                   pb_value **out);

/* Unjelly x.  Inline for the common cases: a list goes straight to
 * uj_list, and an atom that may be shared is its own value. */
static inline int uj(udec *c, const pb_value *x, unsigned depth, const int64_t *pend,
                     pb_value **out) {
    if (x) {
        if (x->type == PB_SEXP_LIST) return uj_list(c, x, depth, pend, out);
        if (!pend && c->share &&
            (x->type == PB_INT || x->type == PB_BYTES || x->type == PB_FLOAT)) {
            *out = (pb_value *)x;
            return PB_OK;
        }
    }
    return uj_any(c, x, depth, pend, out);
}

static int bind(udec *c, const int64_t *pend, pb_value *v) {
    return pend ? ref_put(c, *pend, v) : PB_OK;
}

static int uj_seq(udec *c, pb_type t, const pb_value *x, unsigned depth, const int64_t *pend,
                  pb_value **out) {
    size_t n = x->u.seq.len - 1;
    pb_value *v = u_container(c, t, n);
    if (!v) return oom(c);
    int rc = bind(c, pend, v); /* before the items, so cycles find it */
    if (rc) return rc;
    for (size_t i = 0; i < n; i++) {
        pb_value *it;
        if ((rc = uj(c, x->u.seq.items[i + 1], depth + 1, NULL, &it))) return rc;
        v->u.seq.items[v->u.seq.len++] = it;
    }
    *out = v;
    return PB_OK;
}

static int uj_dict(udec *c, const pb_value *x, unsigned depth, const int64_t *pend,
                   pb_value **out) {
    size_t n = x->u.seq.len - 1;
    pb_value *v = u_container(c, PB_DICT, n);
    if (!v) return oom(c);
    int rc = bind(c, pend, v);
    if (rc) return rc;
    for (size_t i = 0; i < n; i++) {
        const pb_value *ent = x->u.seq.items[i + 1];
        if (ent->type != PB_SEXP_LIST)
            return pb_err_set(c->err, PB_EJELLY, "cannot unpack non-iterable dictionary entry");
        if (ent->u.seq.len != 2) {
            if (ent->u.seq.len < 2)
                return pb_err_set(c->err, PB_EJELLY,
                              "not enough values to unpack (expected 2, got %zu)",
                              ent->u.seq.len);
            return pb_err_set(c->err, PB_EJELLY, "too many values to unpack (expected 2)");
        }
        if (depth + 1 >= c->max_depth)
            return pb_err_set(c->err, PB_EDEPTH, "jelly nested deeper than %u", c->max_depth);
        pb_value *k, *val;
        if ((rc = uj(c, ent->u.seq.items[0], depth + 2, NULL, &k))) return rc;
        if ((rc = uj(c, ent->u.seq.items[1], depth + 2, NULL, &val))) return rc;
        v->u.dict.kv[2 * v->u.dict.len] = k;
        v->u.dict.kv[2 * v->u.dict.len + 1] = val;
        v->u.dict.len++;
    }
    *out = v;
    return PB_OK;
}

/* A registered class: (TAG STATE) -> instance(TAG, STATE); a longer form
 * such as a cache's (TAG LUID STATE) gets the tuple of the rest. */
static int uj_instance(udec *c, const reg_entry *r, const pb_value *x, unsigned depth,
                       const int64_t *pend, pb_value **out) {
    const pb_value *tag = x->u.seq.items[0];
    if (x->u.seq.len < 2)
        return pb_err_set(c->err, PB_EJELLY, "instance of %.80s without state", tag->u.s.ptr);
    pb_value *v = pb_instance(c->a, tag->u.s.ptr, tag->u.s.len, NULL);
    if (!v) return oom(c);
    int rc = bind(c, pend, v);
    if (rc) return rc;
    if (x->u.seq.len == 2) {
        rc = uj(c, x->u.seq.items[1], depth + 1, NULL, &v->u.inst.state);
    } else {
        pb_value *t;
        rc = uj_seq(c, PB_TUPLE, x, depth, NULL, &t);
        v->u.inst.state = t;
    }
    if (rc) return rc;
    if (r->hook) {
        pb_value *nv = v;
        if ((rc = r->hook(r->ud, c->a, &nv, c->err))) {
            if (c->err && c->err->code != rc)
                pb_err_set(c->err, rc, "unjelly hook for %.80s failed", r->cls);
            return rc;
        }
        if (!nv) return pb_err_set(c->err, PB_EINVAL, "unjelly hook for %.80s gave NULL", r->cls);
        if (nv != v && pend && (rc = ref_put(c, *pend, nv))) return rc;
        v = nv;
    }
    *out = v;
    return PB_OK;
}

static int uj_list(udec *c, const pb_value *x, unsigned depth, const int64_t *pend,
                   pb_value **out) {
    if (depth >= c->max_depth)
        return pb_err_set(c->err, PB_EDEPTH, "jelly nested deeper than %u", c->max_depth);
    if (x->u.seq.len == 0) return pb_err_set(c->err, PB_EJELLY, "empty list has no type tag");
    const pb_value *tag = x->u.seq.items[0];
    if (!is_atom_bytes(tag))
        return pb_err_set(c->err, PB_EJELLY, "list tag is not a byte string");
    size_t n = x->u.seq.len;
    const pb_value *a1 = n > 1 ? x->u.seq.items[1] : NULL;
    pb_value *v = NULL;
    int rc;
    switch (tag->u.s.len) {
    case 3:
        if (tag_is(tag, "set", 3)) return uj_seq(c, PB_SET, x, depth, pend, out);
        break;
    case 4:
        if (tag_is(tag, "None", 4)) v = pb_none(c->a);
        else if (tag_is(tag, "list", 4)) return uj_seq(c, PB_LIST, x, depth, pend, out);
        else if (tag_is(tag, "date", 4) || tag_is(tag, "time", 4)) {
            int date = tag->u.s.ptr[1] == 'a';
            if (!is_atom_bytes(a1) || !time_text_ok(a1, date ? 3 : 4))
                return pb_err_set(c->err, PB_EJELLY, "malformed %s payload", date ? "date" : "time");
            v = text_value(c, date ? PB_DATE : PB_TIME, a1);
        } else break;
        goto made;
    case 5:
        if (tag_is(tag, "tuple", 5)) return uj_seq(c, PB_TUPLE, x, depth, pend, out);
        break;
    case 7:
        if (tag_is(tag, "unicode", 7)) {
            if (!is_atom_bytes(a1))
                return pb_err_set(c->err, PB_EJELLY, "unicode payload is not a byte string");
            if (!ascii_only(a1->u.s.ptr, a1->u.s.len) &&
                !pb_utf8_valid(a1->u.s.ptr, a1->u.s.len)) {
                utf8_error(c, (const unsigned char *)a1->u.s.ptr, a1->u.s.len);
                return PB_EUTF8;
            }
            v = text_value(c, PB_STR, a1);
            goto made;
        }
        if (tag_is(tag, "boolean", 7)) {
            if (!is_atom_bytes(a1) || !(tag_is(a1, "true", 4) || tag_is(a1, "false", 5)))
                return pb_err_set(c->err, PB_EJELLY, "AssertionError: boolean atom is not true/false");
            v = pb_bool(c->a, a1->u.s.len == 4);
            goto made;
        }
        if (tag_is(tag, "decimal", 7)) {
            const pb_value *ex = n > 2 ? x->u.seq.items[2] : NULL;
            if (!a1 || (a1->type != PB_INT && a1->type != PB_BIGINT) || !ex || ex->type != PB_INT)
                return pb_err_set(c->err, PB_EJELLY, "malformed decimal");
            pb_value *dg = leaf(c, a1);
            v = dg ? pb_decimal(c->a, dg, ex->u.i) : NULL;
            goto made;
        }
        break;
    case 8:
        if (tag_is(tag, "datetime", 8)) {
            if (!is_atom_bytes(a1) || !time_text_ok(a1, 7))
                return pb_err_set(c->err, PB_EJELLY, "malformed datetime payload");
            v = text_value(c, PB_DATETIME, a1);
            goto made;
        }
        break;
    case 9:
        if (tag_is(tag, "frozenset", 9)) return uj_seq(c, PB_FROZENSET, x, depth, pend, out);
        if (tag_is(tag, "timedelta", 9)) {
            if (!is_atom_bytes(a1) || !time_text_ok(a1, 3))
                return pb_err_set(c->err, PB_EJELLY, "malformed timedelta payload");
            v = text_value(c, PB_TIMEDELTA, a1);
            goto made;
        }
        if (tag_is(tag, "reference", 9)) {
            const pb_value *form = n > 2 ? x->u.seq.items[2] : NULL;
            if (!a1 || a1->type != PB_INT || !form)
                return pb_err_set(c->err, PB_EJELLY, "malformed reference");
            if (ref_get(c, a1->u.i))
                return pb_err_set(c->err, PB_EJELLY, "Multiple references with same ID!");
            int64_t id = a1->u.i;
            if ((rc = uj(c, form, depth + 1, &id, &v))) return rc;
            if (!ref_get(c, id) && (rc = ref_put(c, id, v))) return rc;
            if (pend && (rc = ref_put(c, *pend, v))) return rc;
            *out = v;
            return PB_OK;
        }
        break;
    case 10:
        if (tag_is(tag, "dictionary", 10)) return uj_dict(c, x, depth, pend, out);
        if (tag_is(tag, "persistent", 10)) {
            v = pb_unpersistable(c->a, "Persistent callback not found", 29);
            goto made;
        }
        break;
    case 11:
        if (tag_is(tag, "dereference", 11)) {
            if (!a1 || a1->type != PB_INT)
                return pb_err_set(c->err, PB_EJELLY, "malformed dereference");
            v = ref_get(c, a1->u.i);
            if (!v) { /* Twisted leaves a placeholder: keep a visible one */
                char r[64];
                int k = snprintf(r, sizeof r, "dereference of unknown id %lld", (long long)a1->u.i);
                v = pb_unpersistable(c->a, r, (size_t)k);
            }
            goto made;
        }
        break;
    case 13:
        if (tag_is(tag, "unpersistable", 13)) {
            if (!a1) return pb_err_set(c->err, PB_EJELLY, "unpersistable without a reason");
            if (is_atom_bytes(a1)) {
                v = text_value(c, PB_UNPERSISTABLE, a1);
                goto made;
            }
            /* Twisted: Unpersistable(f"Unpersistable data: {rest[0]}") */
            pb_buf b;
            pb_buf_init(&b);
            rc = pb_buf_append(&b, "Unpersistable data: ", 20);
            if (!rc) rc = pb_value_repr(a1, &b);
            if (!rc) v = u_text_copy(c, PB_UNPERSISTABLE, (const char *)b.data, b.len);
            pb_buf_free(&b);
            if (rc) return pb_err_set(c->err, rc, "rendering an unpersistable reason: %s",
                                      pb_strerror(rc));
            goto made;
        }
        break;
    }
    /* Allowed by Twisted's taster but without an unjellier: the module
     * check then refuses them. */
    static const char *const no_thunk[] = {"int", "float", "string", "str", "bool",
                                           "NoneType", "long", "long_int", "dict"};
    for (size_t i = 0; i < sizeof no_thunk / sizeof *no_thunk; i++)
        if (tag_is(tag, no_thunk[i], strlen(no_thunk[i])))
            return pb_err_set(c->err, PB_EINSECURE, "Module  not allowed (in type %s).",
                              no_thunk[i]);
    if (tag_is(tag, "remote", 6) || tag_is(tag, "local", 5) || tag_is(tag, "cached", 6) ||
        tag_is(tag, "lcache", 6)) {
        const pb_jelly_hooks *h = c->o ? c->o->hooks : NULL;
        if (h && h->decode_ref) {
            v = NULL;
            rc = h->decode_ref(h->ud, c->a, tag->u.s.ptr, x, &v, c->err);
            if (rc) {
                if (c->err && c->err->code != rc)
                    pb_err_set(c->err, rc, "decoding %s failed: %s", tag->u.s.ptr, pb_strerror(rc));
                return rc;
            }
            if (!v) return pb_err_set(c->err, PB_EINVAL, "decode_ref gave NULL");
            if ((rc = bind(c, pend, v))) return rc;
            *out = v;
            return PB_OK;
        }
    }
    const reg_entry *r = reg_find(c->o ? c->o->registry : NULL, tag->u.s.ptr, tag->u.s.len);
    if (r) return uj_instance(c, r, x, depth, pend, out);
    return insecure(c, tag);
made:
    if (!v) return oom(c);
    if ((rc = bind(c, pend, v))) return rc;
    *out = v;
    return PB_OK;
}

static int uj_any(udec *c, const pb_value *x, unsigned depth, const int64_t *pend,
                  pb_value **out) {
    if (!x) return pb_err_set(c->err, PB_EINVAL, "NULL in s-expression");
    switch ((pb_type)x->type) {
    case PB_SEXP_LIST: return uj_list(c, x, depth, pend, out);
    case PB_INT: case PB_BIGINT: case PB_FLOAT: case PB_BYTES: case PB_STR: {
        pb_value *v = leaf(c, x);
        if (!v) return oom(c);
        *out = v;
        return bind(c, pend, v);
    }
    default:
        return pb_err_set(c->err, PB_EJELLY, "%s is not an s-expression atom",
                          pb_type_name((pb_type)x->type));
    }
}

int pb_unjelly(pb_arena *a, const pb_value *sexp, const pb_jelly_opts *o, pb_value **out,
               pb_errbuf *err) {
    if (!a || !sexp || !out) return pb_err_set(err, PB_EINVAL, "NULL argument");
    *out = NULL;
    /* A tree that already lives in a (the decoder's arena, when unjellying
     * into it) dies with a: its atoms can be shared whatever the options. */
    int share = (o && o->share_bytes) || pb_arena_owns(a, sexp);
    udec c = {a, o, err, depth_limit(o), share, NULL, 0, 0};
    pb_value *v = NULL;
    int rc = uj(&c, sexp, 0, NULL, &v);
    free(c.refs);
    if (!rc) *out = v;
    return rc;
}
