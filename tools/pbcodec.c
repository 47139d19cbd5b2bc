/*
 * pbcodec - drive libpb's Banana + Jelly codec from the command line; the C
 * half of tests/interop/test_differential.sh.
 *
 *   pbcodec roundtrip [--lp] [--none] [--show WHAT] [--allow CLS]...
 *       Reads banana streams on stdin, one expression at a time: hex lines
 *       (default; blank lines skipped) or, with --lp, records of a 4-byte
 *       big-endian length followed by that many bytes.  Each expression is
 *       decoded (pb_banana_dec_feed), unjellied (pb_unjelly), jellied again
 *       (pb_jelly_encode) and written back in the same framing: with hex, one
 *       line "HEX<TAB>SHOW" per expression, or "!CODE MESSAGE" on error; with
 *       --lp, a record (length 0xFFFFFFFF and the message on error).
 *   pbcodec gen SEED COUNT [--none] [--show WHAT]
 *       Generates COUNT random values from SEED and prints "HEX<TAB>SHOW"
 *       per value, HEX being pb_jelly_encode's bytes.
 *
 * SHOW is one of describe (default), repr, json, none.  "describe" is a
 * canonical text that tests/interop/diff_values.py computes the same way
 * for Python objects: containers referenced more than once are labelled
 * "#N" at their first occurrence (N in depth-first order) and "@N" after,
 * set members are sorted, floats are shown as their bits.
 *
 * The registry is permissive for the test's classes: __main__.Point plus
 * every --allow CLS.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "pb/banana.h"
#include "pb/jelly.h"
#include "pb/value.h"
#include "ptrmap.h"

enum show { SHOW_DESCRIBE, SHOW_REPR, SHOW_JSON, SHOW_NONE };

/* ------------------------------------------------------------- describe */

typedef struct dctx {
    pb_ptrmap count;  /* container -> (uintptr_t) times met */
    pb_ptrmap label;  /* container -> (uintptr_t) label number */
    uintptr_t next;
    pb_buf *out;
} dctx;

static void count(dctx *c, const pb_value *v) {
    if (!v) return;
    int container = pb_is_seq(v) || v->type == PB_DICT || v->type == PB_INSTANCE;
    if (!container) return;
    uintptr_t n = (uintptr_t)pb_ptrmap_get(&c->count, v);
    pb_ptrmap_put(&c->count, v, (void *)(n + 1));
    if (n) return;
    if (pb_is_seq(v))
        for (size_t i = 0; i < v->u.seq.len; i++) count(c, v->u.seq.items[i]);
    else if (v->type == PB_DICT)
        for (size_t i = 0; i < 2 * v->u.dict.len; i++) count(c, v->u.dict.kv[i]);
    else
        count(c, v->u.inst.state);
}

static void hex(pb_buf *b, const void *p, size_t n) {
    static const char digits[] = "0123456789abcdef";
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) {
        pb_buf_putc(b, (uint8_t)digits[s[i] >> 4]);
        pb_buf_putc(b, (uint8_t)digits[s[i] & 15]);
    }
}

int pb_fmt_bigint(const pb_value *v, pb_buf *out); /* src/value_repr.c */

static int cmpstr(const void *x, const void *y) {
    return strcmp(*(char *const *)x, *(char *const *)y);
}

static void describe(dctx *c, const pb_value *v);

/* Sets: describe every member on its own, sort, join. */
static void describe_set(dctx *c, const pb_value *v) {
    size_t n = v->u.seq.len;
    char **parts = calloc(n ? n : 1, sizeof *parts);
    pb_buf *saved = c->out;
    for (size_t i = 0; i < n; i++) {
        pb_buf tmp;
        pb_buf_init(&tmp);
        c->out = &tmp;
        describe(c, v->u.seq.items[i]);
        pb_buf_putc(&tmp, 0);
        parts[i] = (char *)tmp.data;
    }
    c->out = saved;
    qsort(parts, n, sizeof *parts, cmpstr);
    for (size_t i = 0; i < n; i++) {
        if (i) pb_buf_putc(c->out, ',');
        pb_buf_append(c->out, parts[i], strlen(parts[i]));
        free(parts[i]);
    }
    free(parts);
}

static void describe(dctx *c, const pb_value *v) {
    pb_buf *b = c->out;
    if (!v) { pb_buf_printf(b, "?NULL"); return; }
    switch ((pb_type)v->type) {
    case PB_NONE: pb_buf_putc(b, 'N'); return;
    case PB_BOOL: pb_buf_putc(b, v->u.b ? 'T' : 'F'); return;
    case PB_INT: case PB_BIGINT: pb_buf_putc(b, 'i'); pb_fmt_bigint(v, b); return;
    case PB_FLOAT: {
        uint64_t bits;
        memcpy(&bits, &v->u.f, sizeof bits);
        pb_buf_printf(b, "f%016" PRIx64, bits);
        return;
    }
    case PB_BYTES: pb_buf_putc(b, 'b'); hex(b, v->u.s.ptr, v->u.s.len); return;
    case PB_STR: pb_buf_putc(b, 's'); hex(b, v->u.s.ptr, v->u.s.len); return;
    case PB_DATETIME: case PB_DATE: case PB_TIME: case PB_TIMEDELTA:
        pb_buf_printf(b, "Y%s(%.*s)", pb_type_name((pb_type)v->type), (int)v->u.s.len, v->u.s.ptr);
        return;
    case PB_DECIMAL:
        pb_buf_putc(b, 'Q');
        pb_fmt_bigint(v->u.dec.digits, b);
        pb_buf_printf(b, ",%" PRId64, v->u.dec.exponent);
        return;
    case PB_UNPERSISTABLE: pb_buf_printf(b, "X(%.*s)", (int)v->u.s.len, v->u.s.ptr); return;
    case PB_REMOTE: pb_buf_printf(b, "R"); return;
    case PB_OBJECT: pb_buf_printf(b, "O"); return;
    default: break;
    }
    uintptr_t lab = (uintptr_t)pb_ptrmap_get(&c->label, v);
    if (lab) { pb_buf_printf(b, "@%" PRIuPTR, lab); return; }
    char tag[24] = "";
    if ((uintptr_t)pb_ptrmap_get(&c->count, v) > 1) {
        lab = ++c->next;
        pb_ptrmap_put(&c->label, v, (void *)lab);
        snprintf(tag, sizeof tag, "#%" PRIuPTR, lab);
    }
    switch ((pb_type)v->type) {
    case PB_LIST: case PB_TUPLE: case PB_SEXP_LIST:
        pb_buf_printf(b, "%c%s[", v->type == PB_TUPLE ? 'U' : 'L', tag);
        for (size_t i = 0; i < v->u.seq.len; i++) {
            if (i) pb_buf_putc(b, ',');
            describe(c, v->u.seq.items[i]);
        }
        pb_buf_putc(b, ']');
        return;
    case PB_SET: case PB_FROZENSET:
        pb_buf_printf(b, "%c%s{", v->type == PB_SET ? 'S' : 'Z', tag);
        describe_set(c, v);
        pb_buf_putc(b, '}');
        return;
    case PB_DICT:
        pb_buf_printf(b, "M%s{", tag);
        for (size_t i = 0; i < v->u.dict.len; i++) {
            if (i) pb_buf_putc(b, ',');
            describe(c, v->u.dict.kv[2 * i]);
            pb_buf_putc(b, ':');
            describe(c, v->u.dict.kv[2 * i + 1]);
        }
        pb_buf_putc(b, '}');
        return;
    case PB_INSTANCE:
        pb_buf_printf(b, "I%s<%.*s ", tag, (int)v->u.inst.cls_len, v->u.inst.cls);
        describe(c, v->u.inst.state);
        pb_buf_putc(b, '>');
        return;
    default: pb_buf_printf(b, "?%d", v->type); return;
    }
}

static void show(enum show what, const pb_value *v, pb_buf *out) {
    if (what == SHOW_NONE) return;
    pb_buf_putc(out, '\t');
    if (what == SHOW_REPR) {
        pb_value_repr(v, out);
    } else if (what == SHOW_JSON) {
        pb_errbuf e = {0};
        if (pb_value_to_json(v, out, &e)) pb_buf_printf(out, "!%s", e.msg);
    } else {
        dctx c = {.next = 0, .out = out};
        pb_ptrmap_init(&c.count);
        pb_ptrmap_init(&c.label);
        count(&c, v);
        describe(&c, v);
        pb_ptrmap_free(&c.count);
        pb_ptrmap_free(&c.label);
    }
}

/* ------------------------------------------------------- random values */

typedef struct rng { uint64_t s; } rng;

static uint64_t rnd(rng *r) { /* xorshift64* */
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545F4914F6CDD1Dull;
}
static unsigned below(rng *r, unsigned n) { return (unsigned)(rnd(r) % n); }

typedef struct gen {
    rng r;
    pb_arena *a;
    pb_value *pool[64]; /* finished containers that may be shared */
    size_t npool;
    unsigned uniq;      /* makes keys and set members distinct */
    pb_value *empty_tuple;
} gen;

static pb_value *gen_int(gen *g) {
    static const char *edges[] = {
        "0", "1", "-1", "2147483647", "2147483648", "-2147483648", "-2147483649",
        "9223372036854775807", "9223372036854775808", "-9223372036854775808",
        "-9223372036854775809", "18446744073709551616",
        "726838724295606890549323807888004534353641360687318060281490199180639288113397923326191050713763565560762521606266177933534601628614655",
        "-726838724295606890549323807888004534353641360687318060281490199180639288113397923326191050713763565560762521606266177933534601628614655",
    };
    unsigned k = below(&g->r, 10);
    if (k == 0) {
        const char *s = edges[below(&g->r, sizeof edges / sizeof *edges)];
        return pb_int_parse(g->a, s, strlen(s));
    }
    if (k < 6) { /* up to 64 bits */
        unsigned bits = below(&g->r, 64); /* 0..63 */
        int64_t x = bits ? (int64_t)(rnd(&g->r) >> (64 - bits)) : 0;
        return pb_int(g->a, below(&g->r, 2) ? -x : x);
    }
    /* bigint of 1..448 bits */
    uint32_t limbs[14] = {0};
    unsigned bits = 1 + below(&g->r, 448);
    for (unsigned i = 0; i < 14; i++) limbs[i] = (uint32_t)rnd(&g->r);
    unsigned full = bits / 32, rest = bits % 32;
    for (unsigned i = full + (rest ? 1 : 0); i < 14; i++) limbs[i] = 0;
    if (rest) limbs[full] &= (1u << rest) - 1;
    return pb_bigint(g->a, (int)below(&g->r, 2), limbs, 14);
}

static pb_value *gen_float(gen *g) {
    static const double special[] = {0.0, -0.0, 1.5, -2.25, 1e308, 5e-324, 0.1, 1e16};
    unsigned k = below(&g->r, 8);
    if (k == 0) return pb_float(g->a, INFINITY);
    if (k == 1) return pb_float(g->a, -INFINITY);
    if (k == 2) return pb_float(g->a, NAN);
    if (k == 3) return pb_float(g->a, special[below(&g->r, 8)]);
    uint64_t bits = rnd(&g->r);
    double f;
    memcpy(&f, &bits, sizeof f);
    if (isnan(f)) f = 1.0; /* only Python's canonical NaN travels unchanged */
    return pb_float(g->a, f);
}

static const char *const words[] = {"None", "list", "dictionary", "reference", "unicode",
                                    "tuple", "remote", "boolean", "set", ""};

static pb_value *gen_bytes(gen *g) {
    if (below(&g->r, 4) == 0) return pb_bytesz(g->a, words[below(&g->r, 10)]);
    unsigned char buf[40];
    unsigned n = below(&g->r, sizeof buf);
    for (unsigned i = 0; i < n; i++) buf[i] = (unsigned char)rnd(&g->r);
    return pb_bytes(g->a, buf, n);
}

static pb_value *gen_str(gen *g) {
    static const char *const pieces[] = {"a", "Z", " ", "\xc3\xa9", "\xe2\x82\xac",
                                         "\xf0\x9f\x98\x80", "\"", "\\", "\n", "None", "\x00",
                                         "\xe4\xb8\xad", "'", "x"};
    if (below(&g->r, 5) == 0) return pb_strz(g->a, words[below(&g->r, 10)]);
    char buf[128];
    size_t n = 0;
    unsigned k = below(&g->r, 16);
    for (unsigned i = 0; i < k; i++) {
        const char *p = pieces[below(&g->r, sizeof pieces / sizeof *pieces)];
        size_t l = *p ? strlen(p) : 1; /* "\x00" is one NUL byte */
        memcpy(buf + n, p, l);
        n += l;
    }
    return pb_str(g->a, buf, n);
}

/* A key or set member distinct from all others in Python's eyes. */
static pb_value *gen_hashable(gen *g) {
    unsigned u = ++g->uniq;
    char buf[32];
    switch (below(&g->r, 6)) {
    case 0: snprintf(buf, sizeof buf, "k%u\xc3\xa9", u); return pb_strz(g->a, buf);
    case 1: snprintf(buf, sizeof buf, "k%u", u); return pb_bytesz(g->a, buf);
    case 2: return pb_int(g->a, 100000 + (int64_t)u * (below(&g->r, 2) ? 1 : -1));
    case 3: return pb_float(g->a, u + 0.5);
    case 4: {
        pb_value *t = pb_tuple(g->a, 2);
        pb_seq_append(g->a, t, pb_int(g->a, (int64_t)u));
        pb_seq_append(g->a, t, gen_str(g));
        return t;
    }
    default: {
        pb_value *f = pb_frozenset(g->a, 1);
        pb_seq_append(g->a, f, pb_int(g->a, -(int64_t)u - 7));
        return f;
    }
    }
}

static pb_value *gen_value(gen *g, unsigned depth);

static pb_value *gen_container(gen *g, unsigned depth) {
    if (g->npool && below(&g->r, 6) == 0) return g->pool[below(&g->r, (unsigned)g->npool)];
    unsigned n = below(&g->r, 6);
    pb_value *v;
    switch (below(&g->r, 7)) {
    case 0: case 1:
        v = pb_list(g->a, 0);
        for (unsigned i = 0; i < n; i++) pb_seq_append(g->a, v, gen_value(g, depth + 1));
        if (below(&g->r, 8) == 0) pb_seq_append(g->a, v, v); /* a cycle */
        if (below(&g->r, 12) == 0) { /* a 2-cycle through a dict */
            pb_value *d = pb_dict(g->a, 1);
            pb_dict_append(g->a, d, pb_strz(g->a, "back"), v);
            pb_seq_append(g->a, v, d);
        }
        break;
    case 2:
        /* CPython has one empty tuple, so Twisted sees every () as shared:
         * do the same, or its re-encoding would differ for that reason */
        if (n == 0) {
            if (!g->empty_tuple) g->empty_tuple = pb_tuple(g->a, 0);
            return g->empty_tuple;
        }
        v = pb_tuple(g->a, 0);
        for (unsigned i = 0; i < n; i++) pb_seq_append(g->a, v, gen_value(g, depth + 1));
        break;
    case 3: case 4:
        v = pb_dict(g->a, 0);
        for (unsigned i = 0; i < n; i++)
            pb_dict_append(g->a, v, gen_hashable(g), gen_value(g, depth + 1));
        if (below(&g->r, 8) == 0) pb_dict_append(g->a, v, pb_strz(g->a, "self"), v);
        break;
    case 5:
        v = below(&g->r, 2) ? pb_set(g->a, 0) : pb_frozenset(g->a, 0);
        for (unsigned i = 0; i < n; i++) pb_seq_append(g->a, v, gen_hashable(g));
        break;
    default: {
        pb_value *st = pb_dict(g->a, 0);
        pb_dict_append(g->a, st, pb_strz(g->a, "x"), gen_value(g, depth + 1));
        pb_dict_append(g->a, st, pb_strz(g->a, "y"), gen_value(g, depth + 1));
        v = pb_instance(g->a, "__main__.Point", 14, st);
    }
    }
    if (g->npool < 64) g->pool[g->npool++] = v;
    else g->pool[below(&g->r, 64)] = v;
    return v;
}

static pb_value *gen_value(gen *g, unsigned depth) {
    unsigned k = below(&g->r, depth >= 4 ? 9 : 13);
    switch (k) {
    case 0: return pb_none(g->a);
    case 1: return pb_bool(g->a, (int)below(&g->r, 2));
    case 2: case 3: return gen_int(g);
    case 4: return gen_float(g);
    case 5: return gen_bytes(g);
    case 6: case 7: return gen_str(g);
    case 8: {
        char buf[64];
        switch (below(&g->r, 6)) {
        case 0:
            snprintf(buf, sizeof buf, "%u %u %u %u %u %u %u", 1 + below(&g->r, 9999),
                     1 + below(&g->r, 12), 1 + below(&g->r, 28), below(&g->r, 24),
                     below(&g->r, 60), below(&g->r, 60), below(&g->r, 1000000));
            return pb_timeval(g->a, PB_DATETIME, buf, strlen(buf));
        case 1:
            snprintf(buf, sizeof buf, "%u %u %u", 1 + below(&g->r, 9999), 1 + below(&g->r, 12),
                     1 + below(&g->r, 28));
            return pb_timeval(g->a, PB_DATE, buf, strlen(buf));
        case 2:
            snprintf(buf, sizeof buf, "%u %u %u %u", below(&g->r, 24), below(&g->r, 60),
                     below(&g->r, 60), below(&g->r, 1000000));
            return pb_timeval(g->a, PB_TIME, buf, strlen(buf));
        case 3:
            snprintf(buf, sizeof buf, "%d %u %u", (int)below(&g->r, 2000000) - 1000000,
                     below(&g->r, 86400), below(&g->r, 1000000));
            return pb_timeval(g->a, PB_TIMEDELTA, buf, strlen(buf));
        default:
            return pb_decimal(g->a, gen_int(g), (int64_t)below(&g->r, 40) - 20);
        }
    }
    default: return gen_container(g, depth);
    }
}

/* --------------------------------------------------------------- modes */

static pb_jelly_registry *make_registry(int argc, char **argv) {
    pb_jelly_registry *r = pb_jelly_registry_new();
    if (!r) return NULL;
    pb_jelly_registry_add(r, "__main__.Point", NULL, NULL);
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--allow")) pb_jelly_registry_add(r, argv[i + 1], NULL, NULL);
    return r;
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static void put_hex(FILE *f, const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) fprintf(f, "%02x", p[i]);
}

static void put_record(FILE *f, const void *p, size_t n, int error) {
    uint32_t len = error ? 0xFFFFFFFFu : (uint32_t)n;
    unsigned char hdr[4] = {(unsigned char)(len >> 24), (unsigned char)(len >> 16),
                            (unsigned char)(len >> 8), (unsigned char)len};
    fwrite(hdr, 1, 4, f);
    if (error) {
        uint32_t m = (uint32_t)n;
        unsigned char mh[4] = {(unsigned char)(m >> 24), (unsigned char)(m >> 16),
                               (unsigned char)(m >> 8), (unsigned char)m};
        fwrite(mh, 1, 4, f);
    }
    fwrite(p, 1, n, f);
}

/* One expression's worth of input bytes: decode, unjelly, re-jelly. */
static void roundtrip_one(const uint8_t *in, size_t n, pb_dialect dialect, const pb_jelly_opts *o,
                          enum show what, int lp) {
    char err[300] = "";
    pb_buf out, shown;
    pb_buf_init(&out);
    pb_buf_init(&shown);
    pb_banana_dec *d = pb_banana_dec_new(dialect, NULL);
    pb_value *sexp = NULL, *v = NULL;
    size_t used = 0;
    pb_errbuf e = {0};
    int rc = d ? pb_banana_dec_feed(d, in, n, &used, &sexp) : PB_ENOMEM;
    if (rc < 0) snprintf(err, sizeof err, "%d banana: %s", rc, pb_banana_dec_errmsg(d));
    else if (rc == 0) snprintf(err, sizeof err, "%d banana: incomplete expression", PB_EAGAIN);
    else if (used != n) snprintf(err, sizeof err, "%d banana: %zu trailing bytes", PB_EINVAL, n - used);
    else if ((rc = pb_unjelly(pb_banana_dec_arena(d), sexp, o, &v, &e)))
        snprintf(err, sizeof err, "%d unjelly: %s", rc, e.msg);
    else if ((rc = pb_jelly_encode(&out, dialect, v, o, &e)))
        snprintf(err, sizeof err, "%d jelly: %s", rc, e.msg);
    else show(what, v, &shown);
    for (char *c = err; *c; c++) /* messages may quote raw bytes: keep one line */
        if ((unsigned char)*c < 0x20) *c = '?';
    if (lp) {
        if (*err) put_record(stdout, err, strlen(err), 1);
        else put_record(stdout, out.data, out.len, 0);
    } else if (*err) {
        printf("!%s\n", err);
    } else {
        put_hex(stdout, out.data, out.len);
        fwrite(shown.data, 1, shown.len, stdout);
        putchar('\n');
    }
    pb_banana_dec_free(d);
    pb_buf_free(&out);
    pb_buf_free(&shown);
}

static int cmd_roundtrip(int lp, pb_dialect dialect, const pb_jelly_opts *o, enum show what) {
    pb_buf in;
    pb_buf_init(&in);
    if (lp) {
        unsigned char hdr[4];
        while (fread(hdr, 1, 4, stdin) == 4) {
            size_t n = (size_t)hdr[0] << 24 | (size_t)hdr[1] << 16 | (size_t)hdr[2] << 8 | hdr[3];
            in.len = 0;
            if (pb_buf_reserve(&in, n) || fread(in.data, 1, n, stdin) != n) {
                fprintf(stderr, "pbcodec: truncated record\n");
                pb_buf_free(&in);
                return 1;
            }
            roundtrip_one(in.data, n, dialect, o, what, lp);
        }
    } else {
        int c, hi = -1;
        in.len = 0;
        while ((c = getchar()) != EOF) {
            if (c == '\n') {
                if (hi >= 0) { fprintf(stderr, "pbcodec: odd hex digits\n"); return 1; }
                if (in.len) roundtrip_one(in.data, in.len, dialect, o, what, lp);
                in.len = 0;
                fflush(stdout);
                continue;
            }
            if (c == ' ' || c == '\r' || c == '\t') continue;
            int x = hexval(c);
            if (x < 0) { fprintf(stderr, "pbcodec: bad hex character 0x%02x\n", c); return 1; }
            if (hi < 0) hi = x;
            else { pb_buf_putc(&in, (uint8_t)(hi << 4 | x)); hi = -1; }
        }
        if (in.len) roundtrip_one(in.data, in.len, dialect, o, what, lp);
    }
    pb_buf_free(&in);
    fflush(stdout);
    return 0;
}

static int cmd_gen(uint64_t seed, unsigned long count, pb_dialect dialect, const pb_jelly_opts *o,
                   enum show what) {
    gen g = {.r = {seed * 0x9E3779B97F4A7C15ull + 1}, .npool = 0, .uniq = 0};
    g.a = pb_arena_new(0);
    pb_buf out;
    pb_buf_init(&out);
    for (unsigned long i = 0; i < count; i++) {
        pb_arena_reset(g.a);
        g.npool = 0;
        g.empty_tuple = NULL;
        pb_value *v = below(&g.r, 3) ? gen_container(&g, 0) : gen_value(&g, 0);
        pb_errbuf e = {0};
        out.len = 0;
        int rc = v ? pb_jelly_encode(&out, dialect, v, o, &e) : PB_ENOMEM;
        if (rc) {
            printf("!%d jelly: %s\n", rc, e.msg);
            continue;
        }
        put_hex(stdout, out.data, out.len);
        out.len = 0;
        show(what, v, &out);
        fwrite(out.data, 1, out.len, stdout);
        putchar('\n');
    }
    pb_buf_free(&out);
    pb_arena_free(g.a);
    fflush(stdout);
    return 0;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: pbcodec roundtrip [--lp] [--none] [--show describe|repr|json|none] "
            "[--allow CLS]...\n"
            "       pbcodec gen SEED COUNT [--none] [--show describe|repr|json|none]\n");
}

int main(int argc, char **argv) {
    if (argc < 2) { usage(stderr); return 2; }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) { usage(stdout); return 0; }
    int lp = 0;
    pb_dialect dialect = PB_DIALECT_PB;
    enum show what = SHOW_DESCRIBE;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--lp")) lp = 1;
        else if (!strcmp(argv[i], "--none")) dialect = PB_DIALECT_NONE;
        else if (!strcmp(argv[i], "--show") && i + 1 < argc) {
            const char *w = argv[++i];
            what = !strcmp(w, "repr") ? SHOW_REPR : !strcmp(w, "json") ? SHOW_JSON
                   : !strcmp(w, "none") ? SHOW_NONE : SHOW_DESCRIBE;
        }
    }
    pb_jelly_registry *reg = make_registry(argc, argv);
    if (!reg) return 1;
    pb_jelly_opts o = {.registry = reg, .hooks = NULL, .max_depth = 0};
    int rc;
    if (!strcmp(argv[1], "roundtrip")) {
        rc = cmd_roundtrip(lp, dialect, &o, what);
    } else if (!strcmp(argv[1], "gen") && argc >= 4) {
        rc = cmd_gen(strtoull(argv[2], NULL, 10), strtoul(argv[3], NULL, 10), dialect, &o, what);
    } else {
        usage(stderr);
        rc = 2;
    }
    pb_jelly_registry_free(reg);
    return rc;
}
