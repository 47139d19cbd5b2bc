/*
 * value.c - constructors, containers, equality and copy for pb_value.
 * Rendering (repr, JSON) lives in value_repr.c / value_json.c.
 */
#include <math.h>
#include <string.h>
#include "pb/value.h"
#include "ptrmap.h"

static pb_value *mk(pb_arena *a, pb_type t) {
    pb_value *v = pb_arena_alloc(a, sizeof *v);
    if (v) {
        memset(v, 0, sizeof *v);
        v->type = (uint8_t)t;
    }
    return v;
}

pb_value *pb_none(pb_arena *a) { return mk(a, PB_NONE); }

pb_value *pb_bool(pb_arena *a, int b) {
    pb_value *v = mk(a, PB_BOOL);
    if (v) v->u.b = b ? 1 : 0;
    return v;
}

pb_value *pb_int(pb_arena *a, int64_t i) {
    pb_value *v = mk(a, PB_INT);
    if (v) v->u.i = i;
    return v;
}

pb_value *pb_bigint(pb_arena *a, int neg, const uint32_t *limbs, size_t n) {
    while (n && limbs[n - 1] == 0) n--;
    /* fits int64? */
    if (n <= 2) {
        uint64_t m = n ? limbs[0] : 0;
        if (n == 2) m |= (uint64_t)limbs[1] << 32;
        if (!neg && m <= (uint64_t)INT64_MAX) return pb_int(a, (int64_t)m);
        if (neg && m <= (uint64_t)INT64_MAX + 1)
            return pb_int(a, m == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)m);
    }
    pb_value *v = mk(a, PB_BIGINT);
    if (!v) return NULL;
    uint32_t *l = pb_arena_alloc(a, n * sizeof *l);
    if (!l) return NULL;
    memcpy(l, limbs, n * sizeof *l);
    v->u.big.neg = neg ? 1 : 0;
    v->u.big.nlimbs = n;
    v->u.big.limbs = l;
    return v;
}

pb_value *pb_int_parse(pb_arena *a, const char *s, size_t len) {
    size_t i = 0;
    int neg = 0;
    if (i < len && (s[i] == '-' || s[i] == '+')) neg = s[i++] == '-';
    if (i == len) return NULL;
    /* limbs needed: ~ digits * log2(10)/32 + 1 */
    size_t cap = (len - i) / 9 + 2;
    if (cap > 4096) return NULL; /* refuse absurd sizes */
    uint32_t stack[64], *l = cap <= 64 ? stack : pb_arena_alloc(a, cap * sizeof *l);
    if (!l) return NULL;
    size_t n = 0;
    for (; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') return NULL;
        uint64_t carry = (uint64_t)(s[i] - '0');
        for (size_t k = 0; k < n; k++) {
            uint64_t t = (uint64_t)l[k] * 10 + carry;
            l[k] = (uint32_t)t;
            carry = t >> 32;
        }
        if (carry) {
            if (n == cap) return NULL;
            l[n++] = (uint32_t)carry;
        }
    }
    return pb_bigint(a, neg, l, n);
}

pb_value *pb_float(pb_arena *a, double f) {
    pb_value *v = mk(a, PB_FLOAT);
    if (v) v->u.f = f;
    return v;
}

static pb_value *mkstr(pb_arena *a, pb_type t, const void *p, size_t n) {
    pb_value *v = mk(a, t);
    if (!v) return NULL;
    char *d = pb_arena_memdup(a, p, n);
    if (!d) return NULL;
    v->u.s.ptr = d;
    v->u.s.len = n;
    return v;
}

pb_value *pb_bytes(pb_arena *a, const void *p, size_t n) { return mkstr(a, PB_BYTES, p, n); }
pb_value *pb_bytesz(pb_arena *a, const char *s) { return mkstr(a, PB_BYTES, s, strlen(s)); }

pb_value *pb_bytes_static(pb_arena *a, const char *p, size_t n) {
    pb_value *v = mk(a, PB_BYTES);
    if (v) {
        v->u.s.ptr = p;
        v->u.s.len = n;
    }
    return v;
}

pb_value *pb_str(pb_arena *a, const char *utf8, size_t n) {
    if (!pb_utf8_valid(utf8, n)) return NULL;
    return mkstr(a, PB_STR, utf8, n);
}
pb_value *pb_strz(pb_arena *a, const char *utf8) { return pb_str(a, utf8, strlen(utf8)); }

pb_value *pb_unpersistable(pb_arena *a, const char *reason, size_t n) {
    return mkstr(a, PB_UNPERSISTABLE, reason, n);
}

pb_value *pb_timeval(pb_arena *a, pb_type type, const char *text, size_t n) {
    if (type != PB_DATETIME && type != PB_DATE && type != PB_TIME && type != PB_TIMEDELTA)
        return NULL;
    return mkstr(a, type, text, n);
}

void pb_handle_incref(pb_handle *h) { h->refs++; }

void pb_handle_decref(pb_handle *h) {
    if (h && --h->refs == 0 && h->destroy) h->destroy(h);
}

static void handle_drop(void *p) { pb_handle_decref(p); }

pb_value *pb_handle_value(pb_arena *a, pb_type type, pb_handle *h) {
    if (!h || (type != PB_REMOTE && type != PB_OBJECT)) return NULL;
    pb_value *v = mk(a, type);
    if (!v || pb_arena_on_free(a, handle_drop, h)) return NULL;
    h->refs++;
    v->u.h = h;
    return v;
}

pb_value *pb_container(pb_arena *a, pb_type type, size_t cap) {
    pb_value *v = mk(a, type);
    if (!v) return NULL;
    if (type == PB_DICT) {
        if (cap > SIZE_MAX / (2 * sizeof(pb_value *))) return NULL;
        if (cap) {
            v->u.dict.kv = pb_arena_alloc(a, 2 * cap * sizeof(pb_value *));
            if (!v->u.dict.kv) return NULL;
        }
        v->u.dict.cap = cap;
        return v;
    }
    if (!pb_is_seq(v)) return NULL;
    if (cap > SIZE_MAX / sizeof(pb_value *)) return NULL;
    if (cap) {
        v->u.seq.items = pb_arena_alloc(a, cap * sizeof(pb_value *));
        if (!v->u.seq.items) return NULL;
    }
    v->u.seq.cap = cap;
    return v;
}

pb_value *pb_list(pb_arena *a, size_t cap) { return pb_container(a, PB_LIST, cap); }
pb_value *pb_tuple(pb_arena *a, size_t cap) { return pb_container(a, PB_TUPLE, cap); }
pb_value *pb_set(pb_arena *a, size_t cap) { return pb_container(a, PB_SET, cap); }
pb_value *pb_frozenset(pb_arena *a, size_t cap) { return pb_container(a, PB_FROZENSET, cap); }
pb_value *pb_dict(pb_arena *a, size_t cap) { return pb_container(a, PB_DICT, cap); }

pb_value *pb_instance(pb_arena *a, const char *cls, size_t cls_len, pb_value *state) {
    pb_value *v = mk(a, PB_INSTANCE);
    if (!v) return NULL;
    v->u.inst.cls = pb_arena_memdup(a, cls, cls_len);
    if (!v->u.inst.cls) return NULL;
    v->u.inst.cls_len = cls_len;
    v->u.inst.state = state;
    return v;
}

pb_value *pb_decimal(pb_arena *a, pb_value *digits, int64_t exponent) {
    if (!digits || (digits->type != PB_INT && digits->type != PB_BIGINT)) return NULL;
    pb_value *v = mk(a, PB_DECIMAL);
    if (v) {
        v->u.dec.digits = digits;
        v->u.dec.exponent = exponent;
    }
    return v;
}

/* Grow an arena array of pointers: old contents are abandoned in the arena
 * (arenas never free), so growth doubles to keep the waste bounded. */
static int grow(pb_arena *a, pb_value ***items, size_t *cap, size_t len, size_t unit) {
    size_t ncap = *cap ? *cap * 2 : 4;
    if (ncap > SIZE_MAX / (unit * sizeof(pb_value *))) return PB_ENOMEM;
    pb_value **n = pb_arena_alloc(a, ncap * unit * sizeof(pb_value *));
    if (!n) return pb_arena_over_limit(a) ? PB_ELIMIT : PB_ENOMEM;
    if (len) memcpy(n, *items, len * unit * sizeof(pb_value *));
    *items = n;
    *cap = ncap;
    return PB_OK;
}

int pb_seq_append(pb_arena *a, pb_value *seq, pb_value *item) {
    if (!seq || !item || !pb_is_seq(seq)) return PB_EINVAL;
    if (seq->u.seq.len == seq->u.seq.cap) {
        int rc = grow(a, &seq->u.seq.items, &seq->u.seq.cap, seq->u.seq.len, 1);
        if (rc) return rc;
    }
    seq->u.seq.items[seq->u.seq.len++] = item;
    return PB_OK;
}

int pb_dict_append(pb_arena *a, pb_value *d, pb_value *k, pb_value *v) {
    if (!d || !k || !v || d->type != PB_DICT) return PB_EINVAL;
    if (d->u.dict.len == d->u.dict.cap) {
        int rc = grow(a, &d->u.dict.kv, &d->u.dict.cap, d->u.dict.len, 2);
        if (rc) return rc;
    }
    d->u.dict.kv[2 * d->u.dict.len] = k;
    d->u.dict.kv[2 * d->u.dict.len + 1] = v;
    d->u.dict.len++;
    return PB_OK;
}

int pb_dict_set(pb_arena *a, pb_value *d, pb_value *k, pb_value *v) {
    if (!d || !k || !v || d->type != PB_DICT) return PB_EINVAL;
    for (size_t i = d->u.dict.len; i-- > 0;)
        if (pb_value_equal(d->u.dict.kv[2 * i], k)) {
            d->u.dict.kv[2 * i + 1] = v;
            return PB_OK;
        }
    return pb_dict_append(a, d, k, v);
}

int pb_value_is(const pb_value *v, const char *s) {
    if (!v || (v->type != PB_BYTES && v->type != PB_STR)) return 0;
    size_t n = strlen(s);
    return v->u.s.len == n && memcmp(v->u.s.ptr, s, n) == 0;
}

pb_value *pb_dict_get(const pb_value *d, const char *key) {
    if (!d || d->type != PB_DICT) return NULL;
    for (size_t i = d->u.dict.len; i-- > 0;)
        if (pb_value_is(d->u.dict.kv[2 * i], key)) return d->u.dict.kv[2 * i + 1];
    return NULL;
}

pb_value *pb_dict_getv(const pb_value *d, const pb_value *k) {
    if (!d || d->type != PB_DICT) return NULL;
    for (size_t i = d->u.dict.len; i-- > 0;)
        if (pb_value_equal(d->u.dict.kv[2 * i], k)) return d->u.dict.kv[2 * i + 1];
    return NULL;
}

const char *pb_type_name(pb_type t) {
    static const char *names[] = {"None", "bool", "int", "int", "float", "bytes", "str",
                                  "list", "tuple", "set", "frozenset", "dict", "instance",
                                  "datetime", "date", "time", "timedelta", "Decimal",
                                  "unpersistable", "RemoteReference", "Referenceable",
                                  "sexp"};
    return (unsigned)t < sizeof names / sizeof *names ? names[t] : "?";
}

/* ---------------------------------------------------------------- equality */

typedef struct eqctx {
    pb_ptrmap seen; /* pairs already assumed equal (cycle guard) */
    unsigned depth;
} eqctx;

static int eq(eqctx *c, const pb_value *x, const pb_value *y);

static int seq_eq_ordered(eqctx *c, const pb_value *x, const pb_value *y) {
    for (size_t i = 0; i < x->u.seq.len; i++)
        if (!eq(c, x->u.seq.items[i], y->u.seq.items[i])) return 0;
    return 1;
}

/* Sets: every x member has an equal y member (sizes already equal); O(n^2)
 * but only used by tests and tools. */
static int seq_eq_unordered(eqctx *c, const pb_value *x, const pb_value *y) {
    for (size_t i = 0; i < x->u.seq.len; i++) {
        int found = 0;
        for (size_t j = 0; j < y->u.seq.len && !found; j++)
            found = eq(c, x->u.seq.items[i], y->u.seq.items[j]);
        if (!found) return 0;
    }
    return 1;
}

static int eq(eqctx *c, const pb_value *x, const pb_value *y) {
    if (x == y) return 1;
    if (!x || !y) return 0;
    if (x->type != y->type) return 0;
    if (c->depth > 10000) return 0;
    switch ((pb_type)x->type) {
    case PB_NONE: return 1;
    case PB_BOOL: return x->u.b == y->u.b;
    case PB_INT: return x->u.i == y->u.i;
    case PB_BIGINT:
        return x->u.big.neg == y->u.big.neg && x->u.big.nlimbs == y->u.big.nlimbs &&
               !memcmp(x->u.big.limbs, y->u.big.limbs, x->u.big.nlimbs * sizeof(uint32_t));
    case PB_FLOAT:
        if (isnan(x->u.f) || isnan(y->u.f)) return !memcmp(&x->u.f, &y->u.f, sizeof(double));
        return x->u.f == y->u.f && signbit(x->u.f) == signbit(y->u.f);
    case PB_BYTES: case PB_STR: case PB_UNPERSISTABLE:
    case PB_DATETIME: case PB_DATE: case PB_TIME: case PB_TIMEDELTA:
        return x->u.s.len == y->u.s.len && !memcmp(x->u.s.ptr, y->u.s.ptr, x->u.s.len);
    case PB_REMOTE: case PB_OBJECT: return x->u.h == y->u.h;
    case PB_DECIMAL:
        return x->u.dec.exponent == y->u.dec.exponent && eq(c, x->u.dec.digits, y->u.dec.digits);
    default: break;
    }
    /* containers: assume equal while comparing (cycles) */
    if (pb_ptrmap_get(&c->seen, x) == y) return 1;
    if (pb_ptrmap_put(&c->seen, x, (void *)y)) return 0;
    int r;
    c->depth++;
    switch ((pb_type)x->type) {
    case PB_LIST: case PB_TUPLE: case PB_SEXP_LIST:
        r = x->u.seq.len == y->u.seq.len && seq_eq_ordered(c, x, y);
        break;
    case PB_SET: case PB_FROZENSET:
        r = x->u.seq.len == y->u.seq.len && seq_eq_unordered(c, x, y);
        break;
    case PB_DICT:
        r = x->u.dict.len == y->u.dict.len;
        for (size_t i = 0; r && i < x->u.dict.len; i++) {
            const pb_value *k = x->u.dict.kv[2 * i], *v = x->u.dict.kv[2 * i + 1];
            int found = 0;
            for (size_t j = 0; j < y->u.dict.len && !found; j++)
                found = eq(c, k, y->u.dict.kv[2 * j]) && eq(c, v, y->u.dict.kv[2 * j + 1]);
            r = found;
        }
        break;
    case PB_INSTANCE:
        r = x->u.inst.cls_len == y->u.inst.cls_len &&
            !memcmp(x->u.inst.cls, y->u.inst.cls, x->u.inst.cls_len) &&
            eq(c, x->u.inst.state, y->u.inst.state);
        break;
    default: r = 0;
    }
    c->depth--;
    return r;
}

int pb_value_equal(const pb_value *x, const pb_value *y) {
    eqctx c = {.depth = 0};
    pb_ptrmap_init(&c.seen);
    int r = eq(&c, x, y);
    pb_ptrmap_free(&c.seen);
    return r;
}

/* -------------------------------------------------------------------- copy */

typedef struct copyctx {
    pb_arena *a;
    pb_ptrmap done; /* old container -> new container */
    unsigned depth;
} copyctx;

static pb_value *cp(copyctx *c, const pb_value *v) {
    if (!v) return NULL;
    pb_value *n = pb_ptrmap_get(&c->done, v);
    if (n) return n;
    if (c->depth > 10000) return NULL;
    switch ((pb_type)v->type) {
    case PB_NONE: return pb_none(c->a);
    case PB_BOOL: return pb_bool(c->a, v->u.b);
    case PB_INT: return pb_int(c->a, v->u.i);
    case PB_BIGINT: return pb_bigint(c->a, v->u.big.neg, v->u.big.limbs, v->u.big.nlimbs);
    case PB_FLOAT: return pb_float(c->a, v->u.f);
    case PB_BYTES: case PB_STR: case PB_UNPERSISTABLE:
    case PB_DATETIME: case PB_DATE: case PB_TIME: case PB_TIMEDELTA:
        return mkstr(c->a, (pb_type)v->type, v->u.s.ptr, v->u.s.len);
    case PB_DECIMAL: return pb_decimal(c->a, cp(c, v->u.dec.digits), v->u.dec.exponent);
    case PB_REMOTE: case PB_OBJECT: return pb_handle_value(c->a, (pb_type)v->type, v->u.h);
    default: break;
    }
    c->depth++;
    if (pb_is_seq(v)) {
        n = pb_container(c->a, (pb_type)v->type, v->u.seq.len);
        if (!n || pb_ptrmap_put(&c->done, v, n)) goto fail;
        for (size_t i = 0; i < v->u.seq.len; i++) {
            pb_value *it = cp(c, v->u.seq.items[i]);
            if (!it) goto fail;
            n->u.seq.items[n->u.seq.len++] = it;
        }
    } else if (v->type == PB_DICT) {
        n = pb_dict(c->a, v->u.dict.len);
        if (!n || pb_ptrmap_put(&c->done, v, n)) goto fail;
        for (size_t i = 0; i < v->u.dict.len; i++) {
            pb_value *k = cp(c, v->u.dict.kv[2 * i]), *val = cp(c, v->u.dict.kv[2 * i + 1]);
            if (!k || !val) goto fail;
            n->u.dict.kv[2 * i] = k;
            n->u.dict.kv[2 * i + 1] = val;
            n->u.dict.len++;
        }
    } else if (v->type == PB_INSTANCE) {
        n = pb_instance(c->a, v->u.inst.cls, v->u.inst.cls_len, NULL);
        if (!n || pb_ptrmap_put(&c->done, v, n)) goto fail;
        if (v->u.inst.state && !(n->u.inst.state = cp(c, v->u.inst.state))) goto fail;
    } else {
        goto fail;
    }
    c->depth--;
    return n;
fail:
    c->depth--;
    return NULL;
}

pb_value *pb_value_copy(pb_arena *dst, const pb_value *v) {
    copyctx c = {.a = dst, .depth = 0};
    pb_ptrmap_init(&c.done);
    pb_value *r = cp(&c, v);
    pb_ptrmap_free(&c.done);
    return r;
}

/* -------------------------------------------------------------------- UTF-8 */

int pb_utf8_valid(const void *p, size_t n) {
    const unsigned char *s = p, *e = s + n;
    while (s < e) {
        /* ASCII fast path: eight bytes at a time while no high bit is set */
        while ((size_t)(e - s) >= 8) {
            uint64_t w;
            memcpy(&w, s, 8);
            if (w & 0x8080808080808080ull) break;
            s += 8;
        }
        if (s == e) break;
        unsigned c = *s;
        if (c < 0x80) { s++; continue; }
        size_t k;
        unsigned min;
        if (c >= 0xC2 && c <= 0xDF) { k = 1; min = 0x80; c &= 0x1F; }
        else if (c >= 0xE0 && c <= 0xEF) { k = 2; min = 0x800; c &= 0x0F; }
        else if (c >= 0xF0 && c <= 0xF4) { k = 3; min = 0x10000; c &= 0x07; }
        else return 0;
        if ((size_t)(e - s) <= k) return 0;
        for (size_t i = 1; i <= k; i++) {
            if ((s[i] & 0xC0) != 0x80) return 0;
            c = (c << 6) | (s[i] & 0x3F);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 0;
        s += k + 1;
    }
    return 1;
}
