/*
 * value_json.c - JSON rendering and parsing of value graphs (see pb/value.h
 * for the mapping).
 *
 * The parser is meant for untrusted text: recursion is bounded by
 * JSON_MAX_DEPTH, every allocation comes from the caller's arena and is
 * checked (so an arena limit bounds memory), integers are limited to
 * JSON_MAX_DIGITS digits (as CPython limits int('...') to 4300 digits, and
 * for the same reason: decimal -> binary is quadratic), and every error
 * names the byte offset where the text went wrong.
 *
 * Leniencies, all matching Python's json module: bare NaN, Infinity and
 * -Infinity are read as floats; duplicate object keys are kept in order
 * (lookups find the last, as json.loads keeps the last).
 */
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "pb/value.h"
#include "ptrmap.h"

/* From value_repr.c (library-internal). */
int pb_fmt_bigint(const pb_value *v, pb_buf *out);
size_t pb_fmt_double(double f, char buf[40]);

#define JSON_MAX_DEPTH 64      /* arrays/objects nested in one another */
#define JSON_MAX_DIGITS 4300   /* digits in one integer literal */
#define JSON_MAX_NUMBER 4400   /* characters in one float literal */
#define JSON_OUT_MAX_DEPTH 1000

/* ============================================================== base64 */

static const char b64chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64_encode(pb_buf *b, const unsigned char *p, size_t n) {
    int rc = pb_buf_reserve(b, (n + 2) / 3 * 4);
    if (rc) return rc;
    uint8_t *o = b->data + b->len;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t x = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *o++ = (uint8_t)b64chars[x >> 18];
        *o++ = (uint8_t)b64chars[(x >> 12) & 63];
        *o++ = (uint8_t)b64chars[(x >> 6) & 63];
        *o++ = (uint8_t)b64chars[x & 63];
    }
    if (i < n) {
        uint32_t x = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0);
        *o++ = (uint8_t)b64chars[x >> 18];
        *o++ = (uint8_t)b64chars[(x >> 12) & 63];
        *o++ = i + 1 < n ? (uint8_t)b64chars[(x >> 6) & 63] : '=';
        *o++ = '=';
    }
    b->len = (size_t)(o - b->data);
    return PB_OK;
}

static int b64_val(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Strict standard base64; the '=' padding may be omitted.  Writes at most
 * n*3/4 bytes to out; returns the count, or -1 (bad at *bad). */
static long b64_decode(const char *s, size_t n, unsigned char *out, size_t *bad) {
    while (n && s[n - 1] == '=') n--;
    size_t o = 0, i = 0;
    uint32_t acc = 0;
    for (; i < n; i++) {
        int v = b64_val((unsigned char)s[i]);
        if (v < 0) { *bad = i; return -1; }
        acc = acc << 6 | (uint32_t)v;
        if (i % 4 == 3) {
            out[o++] = (unsigned char)(acc >> 16);
            out[o++] = (unsigned char)(acc >> 8);
            out[o++] = (unsigned char)acc;
            acc = 0;
        }
    }
    switch (i % 4) {
    case 1: *bad = i; return -1;
    case 2: out[o++] = (unsigned char)(acc >> 4); break;
    case 3:
        out[o++] = (unsigned char)(acc >> 10);
        out[o++] = (unsigned char)(acc >> 2);
        break;
    }
    return (long)o;
}

/* ============================================================ rendering */

typedef struct jout {
    pb_buf *out;
    pb_ptrmap active; /* containers on the current path (cycle check) */
    unsigned depth;
    pb_errbuf *err;
} jout;

static int jstring(pb_buf *b, const char *p, size_t n) {
    static const char hex[] = "0123456789abcdef";
    int rc = pb_buf_reserve(b, n + 2);
    if (rc) return rc;
    b->data[b->len++] = '"';
    size_t run = 0; /* start of bytes copied verbatim */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        if ((rc = pb_buf_append(b, p + run, i - run))) return rc;
        run = i + 1;
        char e[7] = {'\\', 0};
        size_t el = 2;
        switch (c) {
        case '"': e[1] = '"'; break;
        case '\\': e[1] = '\\'; break;
        case '\n': e[1] = 'n'; break;
        case '\r': e[1] = 'r'; break;
        case '\t': e[1] = 't'; break;
        case '\b': e[1] = 'b'; break;
        case '\f': e[1] = 'f'; break;
        default:
            memcpy(e + 1, "u00", 3);
            e[4] = hex[c >> 4];
            e[5] = hex[c & 15];
            el = 6;
        }
        if ((rc = pb_buf_append(b, e, el))) return rc;
    }
    if ((rc = pb_buf_append(b, p + run, n - run))) return rc;
    return pb_buf_putc(b, '"');
}

/* A bytes/str key or value as a JSON string; invalid-UTF-8 bytes values
 * become {"$bytes": "..."} (keys never reach here unless valid). */
static int jtext(pb_buf *b, const pb_value *v) {
    if (v->type == PB_STR || pb_utf8_valid(v->u.s.ptr, v->u.s.len))
        return jstring(b, v->u.s.ptr, v->u.s.len);
    int rc = pb_buf_append(b, "{\"$bytes\":\"", 11);
    if (!rc) rc = b64_encode(b, (const unsigned char *)v->u.s.ptr, v->u.s.len);
    return rc ? rc : pb_buf_append(b, "\"}", 2);
}

static int is_key(const pb_value *k) {
    return k && (k->type == PB_STR || (k->type == PB_BYTES && pb_utf8_valid(k->u.s.ptr, k->u.s.len)));
}

static int jv(jout *c, const pb_value *v);

static int jcontainer(jout *c, const pb_value *v) {
    pb_buf *b = c->out;
    if (pb_ptrmap_get(&c->active, v))
        return pb_err_set(c->err, PB_EUNSENDABLE, "json: cyclic %s has no JSON form",
                          pb_type_name((pb_type)v->type));
    if (c->depth >= JSON_OUT_MAX_DEPTH)
        return pb_err_set(c->err, PB_EDEPTH, "json: nesting deeper than %d", JSON_OUT_MAX_DEPTH);
    if (pb_ptrmap_put(&c->active, v, (void *)1)) return PB_ENOMEM;
    c->depth++;
    int rc = 0;
    if (v->type == PB_DICT) {
        size_t n = v->u.dict.len;
        int obj = 1;
        for (size_t i = 0; i < n && obj; i++) obj = is_key(v->u.dict.kv[2 * i]);
        /* {"$bytes": "..."} would read back as bytes: write it as pairs */
        if (obj && n == 1 && pb_value_is(v->u.dict.kv[0], "$bytes")) obj = 0;
        rc = pb_buf_putc(b, obj ? '{' : '[');
        for (size_t i = 0; i < n && !rc; i++) {
            if (i) rc = pb_buf_putc(b, ',');
            if (!rc && !obj) rc = pb_buf_putc(b, '[');
            if (!rc) rc = obj ? jtext(b, v->u.dict.kv[2 * i]) : jv(c, v->u.dict.kv[2 * i]);
            if (!rc) rc = pb_buf_putc(b, obj ? ':' : ',');
            if (!rc) rc = jv(c, v->u.dict.kv[2 * i + 1]);
            if (!rc && !obj) rc = pb_buf_putc(b, ']');
        }
        if (!rc) rc = pb_buf_putc(b, obj ? '}' : ']');
    } else {
        rc = pb_buf_putc(b, '[');
        for (size_t i = 0; i < v->u.seq.len && !rc; i++) {
            if (i) rc = pb_buf_putc(b, ',');
            if (!rc) rc = jv(c, v->u.seq.items[i]);
        }
        if (!rc) rc = pb_buf_putc(b, ']');
    }
    c->depth--;
    if (!rc && pb_ptrmap_put(&c->active, v, NULL)) rc = PB_ENOMEM;
    return rc;
}

static int jv(jout *c, const pb_value *v) {
    pb_buf *b = c->out;
    if (!v) return pb_err_set(c->err, PB_EINVAL, "json: NULL value");
    switch ((pb_type)v->type) {
    case PB_NONE: return pb_buf_append(b, "null", 4);
    case PB_BOOL: return v->u.b ? pb_buf_append(b, "true", 4) : pb_buf_append(b, "false", 5);
    case PB_INT: case PB_BIGINT: return pb_fmt_bigint(v, b);
    case PB_FLOAT: {
        if (isnan(v->u.f)) return pb_buf_append(b, "\"NaN\"", 5);
        if (isinf(v->u.f))
            return v->u.f > 0 ? pb_buf_append(b, "\"Infinity\"", 10)
                              : pb_buf_append(b, "\"-Infinity\"", 11);
        char tmp[40];
        return pb_buf_append(b, tmp, pb_fmt_double(v->u.f, tmp)); /* always has . or e */
    }
    case PB_BYTES: case PB_STR: return jtext(b, v);
    case PB_LIST: case PB_TUPLE: case PB_SET: case PB_FROZENSET: case PB_SEXP_LIST:
    case PB_DICT:
        return jcontainer(c, v);
    default:
        return pb_err_set(c->err, PB_EUNSENDABLE, "json: %s has no JSON form",
                          pb_type_name((pb_type)v->type));
    }
}

int pb_value_to_json(const pb_value *v, pb_buf *out, pb_errbuf *err) {
    if (!out) return pb_err_set(err, PB_EINVAL, "json: no output buffer");
    jout c = {.out = out, .depth = 0, .err = err};
    pb_ptrmap_init(&c.active);
    size_t mark = out->len;
    int rc = jv(&c, v);
    pb_ptrmap_free(&c.active);
    if (rc) {
        out->len = mark; /* nothing half-written */
        if (rc == PB_ENOMEM || rc == PB_ELIMIT)
            pb_err_set(err, rc, "json: output buffer: %s", pb_strerror(rc));
    }
    return rc;
}

/* ============================================================== parsing */

typedef struct jin {
    pb_arena *a;
    const unsigned char *s;
    size_t len, pos;
    unsigned depth;
    pb_errbuf *err;
} jin;

static int oom(jin *p) {
    int rc = pb_arena_over_limit(p->a) ? PB_ELIMIT : PB_ENOMEM;
    return pb_err_set(p->err, rc, "json: %s at byte %zu",
                      rc == PB_ELIMIT ? "arena limit reached" : "out of memory", p->pos);
}

static int bad(jin *p, size_t at, const char *what) {
    if (at >= p->len)
        return pb_err_set(p->err, PB_EINVAL, "json: %s at byte %zu (unexpected end of input)",
                          what, at);
    unsigned char c = p->s[at];
    if (c >= 0x20 && c < 0x7f)
        return pb_err_set(p->err, PB_EINVAL, "json: %s at byte %zu ('%c')", what, at, c);
    return pb_err_set(p->err, PB_EINVAL, "json: %s at byte %zu (0x%02x)", what, at, c);
}

static void skip_ws(jin *p) {
    while (p->pos < p->len) {
        unsigned char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

static int lit(jin *p, const char *word) {
    size_t n = strlen(word);
    return p->len - p->pos >= n && !memcmp(p->s + p->pos, word, n);
}

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static int parse_number(jin *p, pb_value **out) {
    size_t start = p->pos, i = p->pos;
    const unsigned char *s = p->s;
    int neg = 0;
    if (i < p->len && s[i] == '-') { neg = 1; i++; }
    if (lit(p, neg ? "-Infinity" : "Infinity")) {
        p->pos += neg ? 9 : 8;
        *out = pb_float(p->a, neg ? -INFINITY : INFINITY);
        return *out ? PB_OK : oom(p);
    }
    size_t int_start = i;
    if (i < p->len && s[i] == '0') i++;
    else if (i < p->len && s[i] >= '1' && s[i] <= '9')
        while (i < p->len && is_digit(s[i])) i++;
    else return bad(p, i, "expected a digit");
    size_t ndigits = i - int_start;
    int is_float = 0;
    if (i < p->len && s[i] == '.') {
        is_float = 1;
        i++;
        if (i >= p->len || !is_digit(s[i])) return bad(p, i, "expected a digit after '.'");
        while (i < p->len && is_digit(s[i])) i++;
    }
    if (i < p->len && (s[i] == 'e' || s[i] == 'E')) {
        is_float = 1;
        i++;
        if (i < p->len && (s[i] == '+' || s[i] == '-')) i++;
        if (i >= p->len || !is_digit(s[i])) return bad(p, i, "expected a digit in exponent");
        while (i < p->len && is_digit(s[i])) i++;
    }
    size_t n = i - start;
    if (!is_float) {
        if (ndigits <= 18) { /* fast path: fits int64 */
            int64_t x = 0;
            for (size_t k = int_start; k < i; k++) x = x * 10 + (s[k] - '0');
            *out = pb_int(p->a, neg ? -x : x);
        } else {
            if (ndigits > JSON_MAX_DIGITS)
                return pb_err_set(p->err, PB_ELIMIT,
                                  "json: integer of %zu digits at byte %zu (limit %d)", ndigits,
                                  start, JSON_MAX_DIGITS);
            *out = pb_int_parse(p->a, (const char *)s + start, n);
        }
        if (!*out) return oom(p);
        p->pos = i;
        return PB_OK;
    }
    if (n > JSON_MAX_NUMBER)
        return pb_err_set(p->err, PB_ELIMIT, "json: number of %zu characters at byte %zu", n,
                          start);
    /* strtod needs a NUL-terminated copy; keep the decimal point what the
     * current locale expects. */
    char stackbuf[128], *tmp = n < sizeof stackbuf ? stackbuf : pb_arena_alloc(p->a, n + 1);
    if (!tmp) return oom(p);
    memcpy(tmp, s + start, n);
    tmp[n] = 0;
    const char *dp = localeconv()->decimal_point;
    if (dp && dp[0] && dp[0] != '.' && !dp[1]) {
        char *dot = memchr(tmp, '.', n);
        if (dot) *dot = dp[0];
    }
    char *end;
    double f = strtod(tmp, &end); /* overflow gives +-inf, as in Python */
    if (end != tmp + n) return bad(p, start, "malformed number");
    *out = pb_float(p->a, f);
    if (!*out) return oom(p);
    p->pos = i;
    return PB_OK;
}

static int hex4(const unsigned char *s, uint32_t *v) {
    uint32_t x = 0;
    for (int k = 0; k < 4; k++) {
        unsigned char c = s[k];
        x <<= 4;
        if (c >= '0' && c <= '9') x |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f') x |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') x |= (uint32_t)(c - 'A' + 10);
        else return -1;
    }
    *v = x;
    return 0;
}

/* Length of the valid UTF-8 sequence at s (strict), or 0. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    size_t k;
    uint32_t cp, min;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) { k = 1; min = 0x80; cp = c & 0x1F; }
    else if (c >= 0xE0 && c <= 0xEF) { k = 2; min = 0x800; cp = c & 0x0F; }
    else if (c >= 0xF0 && c <= 0xF4) { k = 3; min = 0x10000; cp = c & 0x07; }
    else return 0;
    if (n <= k) return 0;
    for (size_t i = 1; i <= k; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return k + 1;
}

static size_t put_utf8(unsigned char *o, uint32_t cp) {
    if (cp < 0x80) { o[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | cp >> 6);
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | cp >> 12);
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | cp >> 18);
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* A JSON string at p->pos (the opening quote) -> PB_STR.  Pass 1 finds the
 * end and validates raw bytes; pass 2 (only if there were escapes) decodes
 * into a buffer no longer than the source (an escape never expands). */
static int parse_string(jin *p, pb_value **out) {
    const unsigned char *s = p->s;
    size_t start = ++p->pos, i = start;
    int escapes = 0;
    for (;;) {
        if (i >= p->len) return bad(p, i, "unterminated string");
        unsigned char c = s[i];
        if (c == '"') break;
        if (c == '\\') {
            escapes = 1;
            if (i + 1 < p->len && (!s[i + 1] || !strchr("\"\\/bfnrtu", s[i + 1])))
                return bad(p, i + 1, "invalid escape in string");
            i += 2; /* \u digits and surrogates are checked in pass 2 */
            continue;
        }
        if (c < 0x20) return bad(p, i, "control character in string");
        if (c < 0x80) { i++; continue; }
        size_t k = utf8_seq(s + i, p->len - i);
        if (!k)
            return pb_err_set(p->err, PB_EUTF8, "json: invalid UTF-8 in string at byte %zu (0x%02x)",
                              i, c);
        i += k;
    }
    size_t end = i; /* the closing quote */
    if (!escapes) {
        *out = pb_str(p->a, (const char *)s + start, end - start);
        if (!*out) return oom(p); /* validated above, so only memory */
        p->pos = end + 1;
        return PB_OK;
    }
    unsigned char *buf = pb_arena_alloc(p->a, end - start + 1);
    if (!buf) return oom(p);
    size_t o = 0;
    for (i = start; i < end;) {
        if (s[i] != '\\') { buf[o++] = s[i++]; continue; }
        unsigned char e = s[i + 1]; /* i + 1 < end: pass 1 stepped over it */
        uint32_t cp;
        switch (e) {
        case '"': buf[o++] = '"'; i += 2; continue;
        case '\\': buf[o++] = '\\'; i += 2; continue;
        case '/': buf[o++] = '/'; i += 2; continue;
        case 'b': buf[o++] = '\b'; i += 2; continue;
        case 'f': buf[o++] = '\f'; i += 2; continue;
        case 'n': buf[o++] = '\n'; i += 2; continue;
        case 'r': buf[o++] = '\r'; i += 2; continue;
        case 't': buf[o++] = '\t'; i += 2; continue;
        case 'u': break;
        default: return bad(p, i + 1, "invalid escape in string");
        }
        if (end - i < 6 || hex4(s + i + 2, &cp)) return bad(p, i, "invalid \\u escape");
        if (cp >= 0xDC00 && cp <= 0xDFFF)
            return pb_err_set(p->err, PB_EUTF8, "json: lone low surrogate \\u%04X at byte %zu",
                              (unsigned)cp, i);
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            uint32_t lo;
            if (end - i < 12 || s[i + 6] != '\\' || s[i + 7] != 'u' || hex4(s + i + 8, &lo) ||
                lo < 0xDC00 || lo > 0xDFFF)
                return pb_err_set(p->err, PB_EUTF8,
                                  "json: high surrogate \\u%04X at byte %zu not followed by a "
                                  "low surrogate", (unsigned)cp, i);
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            i += 12;
        } else {
            i += 6;
        }
        o += put_utf8(buf + o, cp);
    }
    buf[o] = 0;
    pb_value *v = pb_bytes_static(p->a, (const char *)buf, o);
    if (!v) return oom(p);
    v->type = PB_STR; /* valid: raw runs were checked, escapes encode scalars */
    *out = v;
    p->pos = end + 1;
    return PB_OK;
}

static int parse_value(jin *p, pb_value **out);

static int parse_array(jin *p, pb_value **out) {
    pb_value *l = pb_list(p->a, 0);
    if (!l) return oom(p);
    p->pos++;
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == ']') {
        p->pos++;
        *out = l;
        return PB_OK;
    }
    for (;;) {
        pb_value *item;
        int rc = parse_value(p, &item);
        if (rc) return rc;
        if (pb_seq_append(p->a, l, item)) return oom(p);
        skip_ws(p);
        if (p->pos < p->len && p->s[p->pos] == ',') { p->pos++; continue; }
        if (p->pos < p->len && p->s[p->pos] == ']') { p->pos++; break; }
        return bad(p, p->pos, "expected ',' or ']' in array");
    }
    *out = l;
    return PB_OK;
}

/* {"$bytes": "<base64>"} -> PB_BYTES, decided once the object is read. */
static int bytes_object(jin *p, pb_value *d, size_t at, pb_value **out) {
    const pb_value *t = d->u.dict.kv[1];
    if (t->type != PB_STR) return pb_err_set(p->err, PB_EINVAL,
                                             "json: \"$bytes\" at byte %zu is not a string", at);
    unsigned char *buf = pb_arena_alloc(p->a, t->u.s.len / 4 * 3 + 3);
    if (!buf) return oom(p);
    size_t badat = 0;
    long n = b64_decode(t->u.s.ptr, t->u.s.len, buf, &badat);
    if (n < 0)
        return pb_err_set(p->err, PB_EINVAL,
                          "json: invalid base64 in \"$bytes\" object at byte %zu (character %zu)",
                          at, badat);
    buf[n] = 0;
    *out = pb_bytes_static(p->a, (const char *)buf, (size_t)n);
    return *out ? PB_OK : oom(p);
}

static int parse_object(jin *p, pb_value **out) {
    size_t at = p->pos;
    pb_value *d = pb_dict(p->a, 0);
    if (!d) return oom(p);
    p->pos++;
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == '}') {
        p->pos++;
        *out = d;
        return PB_OK;
    }
    for (;;) {
        skip_ws(p);
        if (p->pos >= p->len || p->s[p->pos] != '"') return bad(p, p->pos, "expected a string key");
        pb_value *k, *v;
        int rc = parse_string(p, &k);
        if (rc) return rc;
        skip_ws(p);
        if (p->pos >= p->len || p->s[p->pos] != ':') return bad(p, p->pos, "expected ':' in object");
        p->pos++;
        if ((rc = parse_value(p, &v))) return rc;
        if (pb_dict_append(p->a, d, k, v)) return oom(p);
        skip_ws(p);
        if (p->pos < p->len && p->s[p->pos] == ',') { p->pos++; continue; }
        if (p->pos < p->len && p->s[p->pos] == '}') { p->pos++; break; }
        return bad(p, p->pos, "expected ',' or '}' in object");
    }
    if (d->u.dict.len == 1 && pb_value_is(d->u.dict.kv[0], "$bytes")) return bytes_object(p, d, at, out);
    *out = d;
    return PB_OK;
}

static int parse_value(jin *p, pb_value **out) {
    skip_ws(p);
    if (p->pos >= p->len) return bad(p, p->pos, "expected a value");
    unsigned char c = p->s[p->pos];
    switch (c) {
    case '{': case '[': {
        if (p->depth >= JSON_MAX_DEPTH)
            return pb_err_set(p->err, PB_EDEPTH, "json: nesting deeper than %d at byte %zu",
                              JSON_MAX_DEPTH, p->pos);
        p->depth++;
        int rc = c == '{' ? parse_object(p, out) : parse_array(p, out);
        p->depth--;
        return rc;
    }
    case '"': return parse_string(p, out);
    case 'n':
        if (!lit(p, "null")) break;
        p->pos += 4;
        *out = pb_none(p->a);
        return *out ? PB_OK : oom(p);
    case 't':
        if (!lit(p, "true")) break;
        p->pos += 4;
        *out = pb_bool(p->a, 1);
        return *out ? PB_OK : oom(p);
    case 'f':
        if (!lit(p, "false")) break;
        p->pos += 5;
        *out = pb_bool(p->a, 0);
        return *out ? PB_OK : oom(p);
    case 'N':
        if (!lit(p, "NaN")) break;
        p->pos += 3;
        *out = pb_float(p->a, NAN);
        return *out ? PB_OK : oom(p);
    default:
        if (c == '-' || c == 'I' || is_digit(c)) return parse_number(p, out);
    }
    return bad(p, p->pos, "unexpected character");
}

int pb_value_from_json(pb_arena *a, const char *text, size_t len, pb_value **out,
                       pb_errbuf *err) {
    if (out) *out = NULL;
    if (!a || !out || (!text && len)) return pb_err_set(err, PB_EINVAL, "json: bad arguments");
    jin p = {.a = a, .s = (const unsigned char *)text, .len = len, .pos = 0, .depth = 0,
             .err = err};
    pb_value *v;
    int rc = parse_value(&p, &v);
    if (rc) return rc;
    skip_ws(&p);
    if (p.pos != p.len) return bad(&p, p.pos, "trailing characters after the value");
    *out = v;
    return PB_OK;
}
