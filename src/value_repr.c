/*
 * value_repr.c - Python-repr-like rendering of value graphs, for logs,
 * tools and test failure messages.
 *
 * Also home of the two number formatters value_json.c shares:
 *   pb_fmt_bigint  - a PB_INT/PB_BIGINT in decimal (any size);
 *   pb_fmt_double  - a double as Python's repr() prints it (shortest text
 *                    that reads back to the same bits).
 *
 * Bounded: a container met again while it is still being rendered (a
 * cycle) prints as [...] (as Python prints a recursive list); nesting
 * beyond REPR_MAX_DEPTH and anything after REPR_MAX_NODES values prints
 * as "...", so a hostile shared DAG (a=[x,x], b=[a,a], ...) cannot make
 * the output explode.
 */
#include <inttypes.h>
#include <math.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "pb/value.h"
#include "ptrmap.h"

/* Shared with value_json.c (library-internal). */
int pb_fmt_bigint(const pb_value *v, pb_buf *out);
size_t pb_fmt_double(double f, char buf[40]);

#define REPR_MAX_DEPTH 200
#define REPR_MAX_NODES 1000000u

/* ------------------------------------------------------------ numbers */

/* Decimal text of an integer value: repeated division of a copy of the
 * magnitude by 10^9, collecting 9-digit groups least significant first. */
int pb_fmt_bigint(const pb_value *v, pb_buf *out) {
    if (v->type == PB_INT) return pb_buf_printf(out, "%" PRId64, v->u.i);
    if (v->type != PB_BIGINT) return PB_EINVAL;
    size_t n = v->u.big.nlimbs;
    if (n == 0) return pb_buf_putc(out, '0');
    if (n > SIZE_MAX / 8) return PB_ENOMEM;
    /* 32 bits < 10 digits < 2 groups of 9: n*32*log10(2)/9 + 1 groups */
    size_t maxg = n * 32 / 29 + 2;
    uint32_t *l = malloc(n * sizeof *l);
    uint32_t *g = malloc(maxg * sizeof *g);
    int rc = PB_ENOMEM;
    if (!l || !g) goto done;
    memcpy(l, v->u.big.limbs, n * sizeof *l);
    size_t ng = 0;
    while (n) {
        uint64_t rem = 0;
        for (size_t k = n; k-- > 0;) {
            uint64_t cur = (rem << 32) | l[k];
            l[k] = (uint32_t)(cur / 1000000000u);
            rem = cur % 1000000000u;
        }
        g[ng++] = (uint32_t)rem;
        while (n && l[n - 1] == 0) n--;
    }
    rc = pb_buf_printf(out, "%s%" PRIu32, v->u.big.neg ? "-" : "", g[ng - 1]);
    for (size_t k = ng - 1; rc == 0 && k-- > 0;) rc = pb_buf_printf(out, "%09" PRIu32, g[k]);
done:
    free(l);
    free(g);
    return rc;
}

/* Python repr of a float into buf (NUL-terminated); returns its length.
 * Finds the shortest %.Ne that round-trips, then lays the digits out the
 * way CPython's float_repr does: fixed notation for 1e-4 <= |f| < 1e16
 * (always with a ".0" when integral), else d.ddde+XX. */
size_t pb_fmt_double(double f, char buf[40]) {
    if (isnan(f)) return (size_t)snprintf(buf, 40, "nan");
    if (isinf(f)) return (size_t)snprintf(buf, 40, "%sinf", f < 0 ? "-" : "");
    char tmp[40];
    int prec;
    for (prec = 0; prec < 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec, f);
        if (strtod(tmp, NULL) == f) break;
    }
    if (prec == 17) snprintf(tmp, sizeof tmp, "%.16e", f);
    /* tmp: [-]d[.ddd]e[+-]XX */
    char digits[24];
    size_t nd = 0;
    const char *p = tmp;
    int neg = 0;
    if (*p == '-') { neg = 1; p++; }
    for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9' && nd < sizeof digits - 1) digits[nd++] = *p;
    int exp10 = *p == 'e' ? atoi(p + 1) : 0;
    while (nd > 1 && digits[nd - 1] == '0') nd--; /* "1.500e+00" -> 15 */
    digits[nd] = 0;
    int decpt = exp10 + 1; /* value = 0.DIGITS * 10^decpt */
    size_t o = 0;
    if (neg) buf[o++] = '-';
    if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {
            buf[o++] = '0';
            buf[o++] = '.';
            for (int i = 0; i < -decpt; i++) buf[o++] = '0';
            memcpy(buf + o, digits, nd);
            o += nd;
        } else if ((size_t)decpt >= nd) {
            memcpy(buf + o, digits, nd);
            o += nd;
            for (size_t i = nd; i < (size_t)decpt; i++) buf[o++] = '0';
            buf[o++] = '.';
            buf[o++] = '0';
        } else {
            memcpy(buf + o, digits, (size_t)decpt);
            o += (size_t)decpt;
            buf[o++] = '.';
            memcpy(buf + o, digits + decpt, nd - (size_t)decpt);
            o += nd - (size_t)decpt;
        }
        buf[o] = 0;
    } else {
        buf[o++] = digits[0];
        if (nd > 1) {
            buf[o++] = '.';
            memcpy(buf + o, digits + 1, nd - 1);
            o += nd - 1;
        }
        o += (size_t)snprintf(buf + o, 40 - o, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
    }
    return o;
}

/* ------------------------------------------------------------ strings */

static int put(pb_buf *b, const char *s) { return pb_buf_append(b, s, strlen(s)); }

/* Quote as Python does: single quotes unless the text has ' and no ". */
static char pick_quote(const char *p, size_t n) {
    int sq = memchr(p, '\'', n) != NULL, dq = memchr(p, '"', n) != NULL;
    return sq && !dq ? '"' : '\'';
}

static int repr_bytes(pb_buf *b, const char *prefix, const char *p, size_t n) {
    char q = pick_quote(p, n);
    int rc = put(b, prefix);
    if (!rc) rc = pb_buf_putc(b, (uint8_t)q);
    for (size_t i = 0; i < n && !rc; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\\' || c == (unsigned char)q) rc = pb_buf_printf(b, "\\%c", c);
        else if (c == '\t') rc = put(b, "\\t");
        else if (c == '\n') rc = put(b, "\\n");
        else if (c == '\r') rc = put(b, "\\r");
        else if (c < 0x20 || c >= 0x7f) rc = pb_buf_printf(b, "\\x%02x", c);
        else rc = pb_buf_putc(b, c);
    }
    return rc ? rc : pb_buf_putc(b, (uint8_t)q);
}

/* Decode one UTF-8 sequence (input known valid); returns its length. */
static size_t utf8_next(const unsigned char *s, size_t n, uint32_t *cp) {
    if (s[0] < 0x80 || n < 2) { *cp = s[0]; return 1; }
    if (s[0] < 0xE0) { *cp = ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F); return 2; }
    if (s[0] < 0xF0 || n < 4) {
        if (n < 3) { *cp = s[0]; return 1; }
        *cp = ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        return 3;
    }
    *cp = ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
          ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    return 4;
}

/* An approximation of !str.isprintable() good enough for logs: controls,
 * non-breaking/zero-width/format spaces, line separators, BOM, private use
 * and noncharacters. */
static int unprintable(uint32_t c) {
    return c < 0x20 || (c >= 0x7f && c <= 0xa0) || c == 0xad || (c >= 0x2000 && c <= 0x200f) ||
           (c >= 0x2028 && c <= 0x202f) || (c >= 0x205f && c <= 0x206f) || c == 0x3000 ||
           c == 0xfeff || (c >= 0xe000 && c <= 0xf8ff) || (c >= 0xfff0 && c <= 0xfffb) ||
           (c & 0xfffe) == 0xfffe || c >= 0xf0000;
}

static int repr_text(pb_buf *b, const char *p, size_t n) {
    if (!pb_utf8_valid(p, n)) return repr_bytes(b, "b", p, n); /* should not happen */
    char q = pick_quote(p, n);
    int rc = pb_buf_putc(b, (uint8_t)q);
    const unsigned char *s = (const unsigned char *)p;
    for (size_t i = 0; i < n && !rc;) {
        uint32_t c;
        size_t k = utf8_next(s + i, n - i, &c);
        if (c == '\\' || c == (uint32_t)q) rc = pb_buf_printf(b, "\\%c", (char)c);
        else if (c == '\t') rc = put(b, "\\t");
        else if (c == '\n') rc = put(b, "\\n");
        else if (c == '\r') rc = put(b, "\\r");
        else if (unprintable(c))
            rc = c < 0x100     ? pb_buf_printf(b, "\\x%02" PRIx32, c)
                 : c < 0x10000 ? pb_buf_printf(b, "\\u%04" PRIx32, c)
                               : pb_buf_printf(b, "\\U%08" PRIx32, c);
        else rc = pb_buf_append(b, s + i, k);
        i += k;
    }
    return rc ? rc : pb_buf_putc(b, (uint8_t)q);
}

/* ------------------------------------------------------ dates, decimals */

/* Up to max space-separated integers of t; count, or -1 if t is not that. */
static int parse_ints(const char *t, size_t n, long long *out, int max) {
    char tmp[128];
    if (n >= sizeof tmp) return -1;
    memcpy(tmp, t, n);
    tmp[n] = 0;
    int k = 0;
    char *p = tmp;
    while (*p) {
        if (k == max) return -1;
        char *end;
        if (!((*p >= '0' && *p <= '9') || *p == '-')) return -1;
        out[k++] = strtoll(p, &end, 10);
        if (end == p) return -1;
        p = end;
        if (*p == ' ') p++;
        else if (*p) return -1;
    }
    return k;
}

static int repr_timeval(pb_buf *b, const pb_value *v) {
    long long x[7];
    int want = v->type == PB_DATETIME ? 7 : v->type == PB_DATE ? 3 : v->type == PB_TIME ? 4 : 3;
    const char *name = v->type == PB_DATETIME ? "datetime.datetime"
                       : v->type == PB_DATE   ? "datetime.date"
                       : v->type == PB_TIME   ? "datetime.time"
                                              : "datetime.timedelta";
    int k = parse_ints(v->u.s.ptr, v->u.s.len, x, 7);
    int rc = pb_buf_printf(b, "%s(", name);
    if (rc) return rc;
    if (k != want) { /* not Twisted's form: show the text itself */
        rc = repr_text(b, v->u.s.ptr, v->u.s.len);
        return rc ? rc : pb_buf_putc(b, ')');
    }
    if (v->type == PB_TIMEDELTA) {
        static const char *names[] = {"days", "seconds", "microseconds"};
        int any = 0;
        for (int i = 0; i < 3 && !rc; i++)
            if (x[i]) rc = pb_buf_printf(b, "%s%s=%lld", any++ ? ", " : "", names[i], x[i]);
        if (!any && !rc) rc = pb_buf_putc(b, '0');
    } else {
        /* Python drops trailing zero microseconds, then seconds (times) */
        int shown = k, min = v->type == PB_DATETIME ? 5 : v->type == PB_TIME ? 2 : 3;
        while (shown > min && x[shown - 1] == 0) shown--;
        for (int i = 0; i < shown && !rc; i++) rc = pb_buf_printf(b, "%s%lld", i ? ", " : "", x[i]);
    }
    return rc ? rc : pb_buf_putc(b, ')');
}

/* Decimal('...') as Python's str(Decimal) spells digits * 10**exponent. */
static int repr_decimal(pb_buf *b, const pb_value *v) {
    pb_buf d;
    pb_buf_init(&d);
    int rc = pb_fmt_bigint(v->u.dec.digits, &d);
    if (!rc) rc = pb_buf_putc(&d, 0);
    if (rc) { pb_buf_free(&d); return rc; }
    const char *s = (const char *)d.data;
    int neg = *s == '-';
    if (neg) s++;
    long long n = (long long)strlen(s), e = v->u.dec.exponent;
    /* e + n - 1 can pass LLONG_MAX for a hostile exponent: then print it
     * as unsigned (n is bounded by the digit count, so the sum fits). */
    int huge = e > 0 && n - 1 > LLONG_MAX - e;
    long long adjusted = huge ? LLONG_MAX : e + (n - 1);
    rc = put(b, "Decimal('");
    if (!rc && neg) rc = pb_buf_putc(b, '-');
    if (rc) goto done;
    if (e <= 0 && adjusted >= -6) {
        if (e == 0) rc = put(b, s);
        else if (n > -e) {
            rc = pb_buf_append(b, s, (size_t)(n + e));
            if (!rc) rc = pb_buf_printf(b, ".%s", s + n + e);
        } else {
            rc = put(b, "0.");
            for (long long i = 0; i < -e - n && !rc; i++) rc = pb_buf_putc(b, '0');
            if (!rc) rc = put(b, s);
        }
    } else {
        rc = pb_buf_putc(b, (uint8_t)s[0]);
        if (!rc && n > 1) rc = pb_buf_printf(b, ".%s", s + 1);
        if (!rc)
            rc = huge ? pb_buf_printf(b, "E+%llu", (unsigned long long)e + (unsigned long long)(n - 1))
                      : pb_buf_printf(b, "E%+lld", adjusted);
    }
    if (!rc) rc = put(b, "')");
done:
    pb_buf_free(&d);
    return rc;
}

/* ------------------------------------------------------------ the walk */

typedef struct rctx {
    pb_buf *out;
    pb_ptrmap active; /* containers being rendered -> (void *)1 */
    unsigned depth;
    size_t nodes;
} rctx;

static int rv(rctx *c, const pb_value *v);

static int items(rctx *c, pb_value *const *it, size_t n, size_t stride, const char *sep) {
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        if (i) rc = put(c->out, ", ");
        if (!rc) rc = rv(c, it[i * stride]);
        if (!rc && sep) rc = put(c->out, sep);
        if (!rc && sep) rc = rv(c, it[i * stride + 1]);
    }
    return rc;
}

static int container(rctx *c, const pb_value *v) {
    pb_buf *b = c->out;
    if (pb_ptrmap_get(&c->active, v)) return put(b, "[...]");
    if (c->depth >= REPR_MAX_DEPTH) return put(b, "...");
    if (pb_ptrmap_put(&c->active, v, (void *)1)) return PB_ENOMEM;
    c->depth++;
    int rc = 0;
    size_t n = pb_len(v);
    switch ((pb_type)v->type) {
    case PB_LIST: case PB_SEXP_LIST:
        rc = put(b, "[");
        if (!rc) rc = items(c, v->u.seq.items, n, 1, NULL);
        if (!rc) rc = put(b, "]");
        break;
    case PB_TUPLE:
        rc = put(b, "(");
        if (!rc) rc = items(c, v->u.seq.items, n, 1, NULL);
        if (!rc) rc = put(b, n == 1 ? ",)" : ")");
        break;
    case PB_SET: case PB_FROZENSET: {
        const char *pre = v->type == PB_SET ? "" : "frozenset(";
        const char *post = v->type == PB_SET ? "" : ")";
        if (n == 0) { rc = put(b, v->type == PB_SET ? "set()" : "frozenset()"); break; }
        rc = pb_buf_printf(b, "%s{", pre);
        if (!rc) rc = items(c, v->u.seq.items, n, 1, NULL);
        if (!rc) rc = pb_buf_printf(b, "}%s", post);
        break;
    }
    case PB_DICT:
        rc = put(b, "{");
        if (!rc) rc = items(c, v->u.dict.kv, n, 2, ": ");
        if (!rc) rc = put(b, "}");
        break;
    case PB_INSTANCE:
        rc = pb_buf_putc(b, '<');
        if (!rc) rc = pb_buf_append(b, v->u.inst.cls, v->u.inst.cls_len);
        if (!rc && v->u.inst.state) {
            rc = pb_buf_putc(b, ' ');
            if (!rc) rc = rv(c, v->u.inst.state);
        }
        if (!rc) rc = pb_buf_putc(b, '>');
        break;
    default: rc = put(b, "<?>");
    }
    c->depth--;
    if (!rc && pb_ptrmap_put(&c->active, v, NULL)) rc = PB_ENOMEM;
    return rc;
}

static int rv(rctx *c, const pb_value *v) {
    pb_buf *b = c->out;
    if (!v) return put(b, "NULL");
    if (++c->nodes > REPR_MAX_NODES) return c->nodes == REPR_MAX_NODES + 1 ? put(b, "...") : 0;
    switch ((pb_type)v->type) {
    case PB_NONE: return put(b, "None");
    case PB_BOOL: return put(b, v->u.b ? "True" : "False");
    case PB_INT: case PB_BIGINT: return pb_fmt_bigint(v, b);
    case PB_FLOAT: {
        char tmp[40];
        return pb_buf_append(b, tmp, pb_fmt_double(v->u.f, tmp));
    }
    case PB_BYTES: return repr_bytes(b, "b", v->u.s.ptr, v->u.s.len);
    case PB_STR: return repr_text(b, v->u.s.ptr, v->u.s.len);
    case PB_DATETIME: case PB_DATE: case PB_TIME: case PB_TIMEDELTA: return repr_timeval(b, v);
    case PB_DECIMAL:
        if (!v->u.dec.digits) return put(b, "Decimal(?)");
        return repr_decimal(b, v);
    case PB_UNPERSISTABLE: {
        int rc = put(b, "Unpersistable(");
        if (!rc) rc = repr_text(b, v->u.s.ptr, v->u.s.len);
        return rc ? rc : pb_buf_putc(b, ')');
    }
    case PB_REMOTE: return put(b, "<RemoteReference>");
    case PB_OBJECT: return put(b, "<Referenceable>");
    default: return container(c, v);
    }
}

int pb_value_repr(const pb_value *v, pb_buf *out) {
    if (!out) return PB_EINVAL;
    rctx c = {.out = out, .depth = 0, .nodes = 0};
    pb_ptrmap_init(&c.active);
    size_t mark = out->len;
    int rc = rv(&c, v);
    pb_ptrmap_free(&c.active);
    if (rc) out->len = mark;
    return rc;
}
