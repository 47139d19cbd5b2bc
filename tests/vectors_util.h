/*
 * tests/vectors_util.h - reading ../shared/protocol/vectors.json in tests:
 * the file is parsed with pb_value_from_json, and its JSON conventions
 * (README.md there) are turned into Banana trees here.
 */
#ifndef PB_VECTORS_UTIL_H
#define PB_VECTORS_UTIL_H

#include <math.h>
#include <stdint.h>
#include "pb/banana.h"
#include "test.h"

/* The parsed vectors.json in a (NULL, with a message, if unavailable). */
static inline pb_value *vu_load(pb_arena *a) {
    char path[512];
    snprintf(path, sizeof path, "%s/protocol/vectors.json", test_shared_dir());
    size_t len;
    char *text = test_read_file(path, &len);
    if (!text) {
        fprintf(stderr, "  cannot read %s\n", path);
        return NULL;
    }
    pb_value *root = NULL;
    pb_errbuf e = {0};
    int rc = pb_value_from_json(a, text, len, &root, &e);
    free(text);
    if (rc) {
        fprintf(stderr, "  vectors.json: %s\n", e.msg);
        return NULL;
    }
    return root;
}

/* A field as a C string (JSON strings are NUL-terminated PB_STR). */
static inline const char *vu_str(const pb_value *obj, const char *key) {
    const pb_value *v = pb_dict_get(obj, key);
    return v && v->type == PB_STR ? v->u.s.ptr : NULL;
}

/* Hex text to malloc'd bytes. */
static inline uint8_t *vu_unhex(const char *hex, size_t *n) {
    size_t len = strlen(hex) / 2;
    uint8_t *b = malloc(len + 1);
    *n = test_unhex(hex, b, len);
    return b;
}

/* JSON text whose code points are bytes (latin-1 convention) as PB_BYTES. */
static inline pb_value *vu_latin1(pb_arena *a, const pb_value *s) {
    const unsigned char *p = (const unsigned char *)s->u.s.ptr, *e = p + s->u.s.len;
    unsigned char *out = malloc(s->u.s.len + 1);
    size_t n = 0;
    while (p < e) {
        if (*p < 0x80) out[n++] = *p++;
        else { /* two-byte UTF-8 for U+0080..U+00FF */
            out[n++] = (unsigned char)(((p[0] & 0x1f) << 6) | (p[1] & 0x3f));
            p += 2;
        }
    }
    pb_value *v = pb_bytes(a, out, n);
    free(out);
    return v;
}

static inline pb_value *vu_float_text(pb_arena *a, const char *t) {
    double f = strtod(t, NULL); /* handles inf, -inf, nan, -nan, -0.0 */
    if (strcmp(t, "nan") == 0) { uint64_t b = 0x7ff8000000000000ull; memcpy(&f, &b, 8); }
    if (strcmp(t, "-nan") == 0) { uint64_t b = 0xfff8000000000000ull; memcpy(&f, &b, 8); }
    return pb_float(a, f);
}

/* A JSON s-expression (README "JSON conventions") as a Banana tree. */
static inline pb_value *vu_sexp(pb_arena *a, const pb_value *j) {
    if (!j) return NULL;
    switch (j->type) {
    case PB_INT: case PB_BIGINT: return pb_value_copy(a, j);
    case PB_LIST: {
        pb_value *l = pb_container(a, PB_SEXP_LIST, j->u.seq.len);
        for (size_t i = 0; i < j->u.seq.len; i++) pb_seq_append(a, l, vu_sexp(a, j->u.seq.items[i]));
        return l;
    }
    case PB_DICT: {
        const pb_value *b = pb_dict_get(j, "b"), *n = pb_dict_get(j, "int"),
                       *f = pb_dict_get(j, "float");
        if (b) return vu_latin1(a, b);
        if (n) return pb_int_parse(a, n->u.s.ptr, n->u.s.len);
        if (f) return vu_float_text(a, f->u.s.ptr);
        return NULL;
    }
    default: return NULL;
    }
}

/* Decode a whole stream; fills up to max expressions.  Returns the count,
 * or a negative error. */
static inline int vu_decode_all(pb_arena *a, pb_dialect d, const uint8_t *p, size_t n, pb_value **exprs,
                         int max, int *incomplete) {
    pb_banana_dec *dec = pb_banana_dec_new(d, NULL);
    int count = 0;
    size_t off = 0;
    *incomplete = 0;
    while (off < n) {
        size_t used;
        pb_value *v;
        int rc = pb_banana_dec_feed(dec, p + off, n - off, &used, &v);
        off += used;
        if (rc < 0) { pb_banana_dec_free(dec); return rc; }
        if (rc == 0) { *incomplete = 1; break; }
        if (count < max) exprs[count] = pb_value_copy(a, v);
        count++;
    }
    pb_banana_dec_free(dec);
    return count;
}

/* Hex of a buffer into a static string (for failure messages). */
static inline const char *vu_hex(const uint8_t *p, size_t n) {
    static char s[2048];
    size_t k = 0;
    for (size_t i = 0; i < n && k + 3 < sizeof s; i++) k += (size_t)snprintf(s + k, 3, "%02x", p[i]);
    s[k] = 0;
    return s;
}

/* FNV-1a, to pin long outputs without storing them. */
static inline uint64_t vu_fnv(const uint8_t *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}
#endif
