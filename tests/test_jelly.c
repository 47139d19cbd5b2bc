/* test_jelly - Jelly encode/decode against Twisted's vectors. */
#include <time.h>
#include "pb/jelly.h"
#include "test.h"
#include "vectors_util.h"

static pb_value *g_root;
static pb_arena *g_va;
static pb_jelly_registry *g_reg;

/* ------------------------------------------------------------ PB ref hooks */

/* A stand-in for the broker's pb_ref / pb_object: a luid (or "root"). */
typedef struct tref {
    pb_handle h;
    long luid; /* 0: the root */
} tref;

static int t_encode_ref(void *ud, pb_buf *out, pb_dialect d, const pb_value *v, pb_errbuf *err) {
    const tref *r = (const tref *)v->u.h;
    int rc = pb_banana_put_list(out, 2);
    if (!rc) rc = pb_banana_put_bytes(out, d, v->type == PB_OBJECT ? "remote" : "local",
                                      v->type == PB_OBJECT ? 6 : 5);
    if (!rc) rc = r->luid ? pb_banana_put_int(out, r->luid) : pb_banana_put_bytes(out, d, "root", 4);
    return rc;
}

static tref g_refs[4] = {{{1, NULL}, 1}, {{1, NULL}, 5}, {{1, NULL}, 9}, {{1, NULL}, 0}};

static int t_decode_ref(void *ud, pb_arena *a, const char *tag, const pb_value *sexp,
                        pb_value **out, pb_errbuf *err) {
    const pb_value *id = sexp->u.seq.len > 1 ? sexp->u.seq.items[1] : NULL;
    long luid = id && id->type == PB_INT ? (long)id->u.i : -1;
    if (!strcmp(tag, "remote")) {
        for (int i = 0; i < 4; i++)
            if (g_refs[i].luid == luid) return *out = pb_handle_value(a, PB_REMOTE, &g_refs[i].h), 0;
    }
    if (!strcmp(tag, "local")) { /* Twisted: an unknown luid unjellies to None */
        for (int i = 0; i < 4; i++)
            if (g_refs[i].luid == luid) return *out = pb_handle_value(a, PB_OBJECT, &g_refs[i].h), 0;
        return *out = pb_none(a), 0;
    }
    for (int i = 0; i < 4; i++) /* cached / lcache: known cache luids */
        if (g_refs[i].luid == luid) return *out = pb_handle_value(a, PB_REMOTE, &g_refs[i].h), 0;
    return pb_err_set(err, PB_ENOTFOUND, "KeyError: %ld", luid);
}

static const pb_jelly_hooks g_hooks = {NULL, t_encode_ref, t_decode_ref};

static pb_jelly_opts opts(void) {
    pb_jelly_opts o = {g_reg, &g_hooks, 0, 0};
    return o;
}

/* ------------------------------------------- values from tagged descriptions */

typedef struct idmap {
    int64_t id[64];
    pb_value *v[64];
    int n;
} idmap;

static void id_put(idmap *m, const pb_value *d, pb_value *v) {
    const pb_value *id = pb_dict_get(d, "id");
    if (id && m->n < 64) { m->id[m->n] = id->u.i; m->v[m->n++] = v; }
}

/* Numbers in "2024-01-02T03:04:05.000006" joined by spaces; ensure n fields. */
static pb_value *time_text(pb_arena *a, pb_type t, const char *s, int n) {
    char out[128];
    size_t k = 0;
    int f = 0;
    while (*s) {
        if (*s >= '0' && *s <= '9') {
            long x = strtol(s, (char **)&s, 10);
            k += (size_t)snprintf(out + k, sizeof out - k, "%s%ld", f++ ? " " : "", x);
        } else s++;
    }
    while (f < n) k += (size_t)snprintf(out + k, sizeof out - k, "%s0", f++ ? " " : "");
    return pb_timeval(a, t, out, k);
}

static pb_value *decimal_text(pb_arena *a, const char *s) {
    char dg[128];
    size_t k = 0;
    int64_t exp = 0, frac = 0, seen_dot = 0;
    if (*s == '-') dg[k++] = *s++;
    for (; *s && *s != 'E' && *s != 'e'; s++) {
        if (*s == '.') { seen_dot = 1; continue; }
        dg[k++] = *s;
        frac += seen_dot;
    }
    if (*s) exp = strtoll(s + 1, NULL, 10);
    return pb_decimal(a, pb_int_parse(a, dg, k), exp - frac);
}

static pb_value *build(pb_arena *a, const pb_value *d, idmap *m) {
    const char *t = vu_str(d, "type");
    size_t n;
    if (!strcmp(t, "int")) return pb_int_parse(a, vu_str(d, "value"), strlen(vu_str(d, "value")));
    if (!strcmp(t, "float")) {
        uint8_t *b = vu_unhex(vu_str(d, "ieee754_be"), &n);
        uint64_t bits = 0;
        for (int i = 0; i < 8; i++) bits = bits << 8 | b[i];
        free(b);
        double f;
        memcpy(&f, &bits, 8);
        return pb_float(a, f);
    }
    if (!strcmp(t, "bool")) return pb_bool(a, pb_dict_get(d, "value")->u.b);
    if (!strcmp(t, "None")) return pb_none(a);
    if (!strcmp(t, "bytes") || !strcmp(t, "str")) {
        uint8_t *b = vu_unhex(vu_str(d, t[0] == 'b' ? "hex" : "utf8_hex"), &n);
        pb_value *v = t[0] == 'b' ? pb_bytes(a, b, n) : pb_str(a, (char *)b, n);
        free(b);
        return v;
    }
    if (!strcmp(t, "ref")) {
        int64_t id = pb_dict_get(d, "id")->u.i;
        for (int i = 0; i < m->n; i++) if (m->id[i] == id) return m->v[i];
        return NULL;
    }
    if (!strcmp(t, "datetime")) return time_text(a, PB_DATETIME, vu_str(d, "value"), 7);
    if (!strcmp(t, "date")) return time_text(a, PB_DATE, vu_str(d, "value"), 3);
    if (!strcmp(t, "time")) return time_text(a, PB_TIME, vu_str(d, "value"), 4);
    if (!strcmp(t, "timedelta")) {
        char s[96];
        int k = snprintf(s, sizeof s, "%lld %lld %lld", (long long)pb_dict_get(d, "days")->u.i,
                         (long long)pb_dict_get(d, "seconds")->u.i,
                         (long long)pb_dict_get(d, "microseconds")->u.i);
        return pb_timeval(a, PB_TIMEDELTA, s, (size_t)k);
    }
    if (!strcmp(t, "decimal")) return decimal_text(a, vu_str(d, "value"));
    if (!strcmp(t, "object")) {
        char s[128];
        int k = snprintf(s, sizeof s, "instance of class %s deemed insecure", vu_str(d, "class"));
        pb_value *v = pb_unpersistable(a, s, (size_t)k);
        id_put(m, d, v);
        return v;
    }
    if (!strcmp(t, "copyable")) {
        const char *cls = vu_str(d, "class");
        if (!strcmp(cls, "pbvectors.Tagged")) cls = "TaggedThing"; /* its getTypeToCopy */
        pb_value *v = pb_instance(a, cls, strlen(cls), NULL);
        id_put(m, d, v);
        v->u.inst.state = build(a, pb_dict_get(d, "state"), m);
        return v;
    }
    pb_type ct = !strcmp(t, "list") ? PB_LIST : !strcmp(t, "tuple") ? PB_TUPLE
               : !strcmp(t, "set") ? PB_SET : !strcmp(t, "frozenset") ? PB_FROZENSET : PB_DICT;
    const pb_value *items = pb_dict_get(d, "items");
    pb_value *v = pb_container(a, ct, 0);
    id_put(m, d, v);
    for (size_t i = 0; i < items->u.seq.len; i++) {
        const pb_value *it = items->u.seq.items[i];
        if (ct == PB_DICT)
            pb_dict_append(a, v, build(a, it->u.seq.items[0], m), build(a, it->u.seq.items[1], m));
        else
            pb_seq_append(a, v, build(a, it, m));
    }
    return v;
}

/* Every container's mark is back to 0. */
static int marks_clear(const pb_value *v, int depth) {
    if (!v || depth > 100) return 1;
    if (v->mark) return 0;
    if (pb_is_seq(v)) {
        for (size_t i = 0; i < v->u.seq.len; i++)
            if (v->u.seq.items[i] != v && !marks_clear(v->u.seq.items[i], depth + 1)) return 0;
    } else if (v->type == PB_DICT) {
        for (size_t i = 0; i < 2 * v->u.dict.len; i++)
            if (v->u.dict.kv[i] != v && !marks_clear(v->u.dict.kv[i], depth + 1)) return 0;
    } else if (v->type == PB_INSTANCE) {
        return marks_clear(v->u.inst.state, depth + 1);
    }
    return 1;
}

static int decode_one(pb_arena *a, pb_dialect d, const uint8_t *p, size_t n, pb_value **out) {
    int inc;
    pb_value *got[2] = {0};
    int c = vu_decode_all(a, d, p, n, got, 2, &inc);
    *out = got[0];
    return c == 1 && !inc;
}

TEST(every_encode_vector_is_byte_identical_and_round_trips) {
    const pb_value *sec = g_root ? pb_dict_get(g_root, "encode") : NULL;
    CHECK(sec && sec->u.seq.len == 130);
    pb_jelly_opts o = opts();
    int exact = 0, sets = 0;
    for (size_t i = 0; sec && i < sec->u.seq.len; i++) {
        const pb_value *vec = sec->u.seq.items[i];
        const char *name = vu_str(vec, "name");
        pb_arena *a = pb_arena_new(0);
        idmap m = {.n = 0};
        pb_value *v = build(a, pb_dict_get(vec, "value"), &m);
        CHECK_MSG(v != NULL, "%s: cannot build", name);
        if (!v) { pb_arena_free(a); continue; }
        size_t n, nn;
        uint8_t *want = vu_unhex(vu_str(vec, "banana_hex"), &n);
        const char *hn = vu_str(vec, "banana_hex_none_dialect");
        uint8_t *wantn = vu_unhex(hn ? hn : vu_str(vec, "banana_hex"), &nn);
        int is_set = v->type == PB_SET || v->type == PB_FROZENSET;
        for (int dia = 0; dia < 2; dia++) {
            pb_buf b;
            pb_buf_init(&b);
            pb_errbuf e = {0};
            pb_dialect d = dia ? PB_DIALECT_NONE : PB_DIALECT_PB;
            const uint8_t *w = dia ? wantn : want;
            size_t wn = dia ? nn : n;
            int rc = pb_jelly_encode(&b, d, v, &o, &e);
            CHECK_MSG(rc == 0, "%s: %s", name, e.msg);
            CHECK_MSG(marks_clear(v, 0), "%s: marks left behind", name);
            if (b.len == wn && !memcmp(b.data, w, wn)) exact++;
            else if (is_set) { /* hash order: compare what a receiver sees */
                pb_value *x, *y;
                CHECK(decode_one(a, d, b.data, b.len, &x) && decode_one(a, d, w, wn, &y));
                pb_value *ux = NULL, *uy = NULL;
                CHECK(pb_unjelly(a, x, &o, &ux, &e) == 0 && pb_unjelly(a, y, &o, &uy, &e) == 0);
                CHECK_MSG(pb_value_equal(ux, uy), "%s: set differs", name);
                sets++;
            } else {
                CHECK_MSG(0, "%s (%s): got %s", name, dia ? "none" : "pb", vu_hex(b.data, b.len));
            }
            pb_buf_free(&b);
        }
        /* Twisted's bytes decode and unjelly to an equal value ... */
        pb_value *tree = NULL, *back = NULL;
        pb_errbuf e = {0};
        CHECK_MSG(decode_one(a, PB_DIALECT_PB, want, n, &tree), "%s: decode", name);
        int rc = tree ? pb_unjelly(a, tree, &o, &back, &e) : -1;
        CHECK_MSG(rc == 0 && pb_value_equal(v, back), "%s: round trip (%s)", name, e.msg);
        /* ... with the same sharing: re-jellying it gives the same bytes */
        if (back && !is_set) {
            pb_buf b;
            pb_buf_init(&b);
            CHECK(pb_jelly_encode(&b, PB_DIALECT_PB, back, &o, &e) == 0);
            CHECK_MSG(b.len == n && !memcmp(b.data, want, n), "%s: re-jelly differs", name);
            pb_buf_free(&b);
        }
        /* the "jelly" s-expression: to_sexp produces it, unjelly reads it */
        pb_value *js = vu_sexp(a, pb_dict_get(vec, "jelly")), *mine = NULL, *fromj = NULL;
        CHECK_MSG(pb_jelly_to_sexp(a, v, &o, &mine, &e) == 0, "%s: %s", name, e.msg);
        if (!is_set) CHECK_MSG(pb_value_equal(mine, js), "%s: to_sexp differs", name);
        CHECK_MSG(pb_unjelly(a, js, &o, &fromj, &e) == 0 && pb_value_equal(fromj, v),
                  "%s: unjelly(jelly) (%s)", name, e.msg);
        free(want);
        free(wantn);
        pb_arena_free(a);
    }
    printf("     %d byte-identical encodings, %d set encodings compared as sets\n", exact, sets);
    CHECK(exact >= 256);
}

TEST(every_vocabulary_word_is_substituted_in_jelly_output) {
    pb_arena *a = pb_arena_new(0);
    pb_buf b;
    pb_buf_init(&b);
    for (unsigned i = 1; i <= PB_BANANA_VOCAB_SIZE; i++) {
        const char *w = pb_banana_vocab_word(i);
        b.len = 0;
        CHECK(pb_jelly_encode(&b, PB_DIALECT_PB, pb_bytesz(a, w), NULL, NULL) == 0);
        CHECK_MSG(b.len == 2 && b.data[0] == i && b.data[1] == 0x87, "%s", w);
        b.len = 0;
        CHECK(pb_jelly_encode(&b, PB_DIALECT_NONE, pb_bytesz(a, w), NULL, NULL) == 0);
        CHECK_EQ_INT(b.len, 2 + strlen(w));
    }
    pb_buf_free(&b);
    pb_arena_free(a);
}

TEST(cycles_unjelly_to_the_same_container) {
    pb_arena *a = pb_arena_new(0);
    pb_jelly_opts o = opts();
    pb_errbuf e = {0};
    const uint8_t cyc[] = {0x03, 0x80, 0x04, 0x87, 0x01, 0x81, 0x02, 0x80, 0x08, 0x87,
                           0x02, 0x80, 0x03, 0x87, 0x01, 0x81}; /* l = [l] */
    pb_value *t, *v = NULL;
    CHECK(decode_one(a, PB_DIALECT_PB, cyc, sizeof cyc, &t));
    CHECK(pb_unjelly(a, t, &o, &v, &e) == 0);
    CHECK(v && v->type == PB_LIST && v->u.seq.len == 1 && v->u.seq.items[0] == v);
    /* [a, b, b, a] keeps both identities */
    pb_value *l = pb_list(a, 4), *x = pb_list(a, 1), *y = pb_list(a, 1);
    pb_seq_append(a, x, pb_int(a, 1));
    pb_seq_append(a, y, pb_int(a, 2));
    pb_seq_append(a, l, x); pb_seq_append(a, l, y); pb_seq_append(a, l, y); pb_seq_append(a, l, x);
    pb_buf b;
    pb_buf_init(&b);
    CHECK(pb_jelly_encode(&b, PB_DIALECT_PB, l, &o, &e) == 0);
    CHECK(!strcmp(vu_hex(b.data, b.len), "05800887038004870281028008870181038004870181028008870281028003870181028003870281"));
    CHECK(decode_one(a, PB_DIALECT_PB, b.data, b.len, &t));
    CHECK(pb_unjelly(a, t, &o, &v, &e) == 0);
    CHECK(v->u.seq.items[0] == v->u.seq.items[3] && v->u.seq.items[1] == v->u.seq.items[2]);
    CHECK(v->u.seq.items[0] != v->u.seq.items[1]);
    pb_buf_free(&b);
    pb_arena_free(a);
}

/* Error mapping: Twisted exception -> our code. */
static int exc_code(const char *exc) {
    if (!strcmp(exc, "InsecureJelly")) return PB_EINSECURE;
    if (!strcmp(exc, "UnicodeDecodeError")) return PB_EUTF8;
    if (!strcmp(exc, "KeyError")) return PB_ENOTFOUND; /* from the test's decode_ref */
    return PB_EJELLY;                                  /* AssertionError, ValueError */
}

TEST(unjelly_vectors_allow_and_refuse_as_twisted_does) {
    const pb_value *sec = g_root ? pb_dict_get(g_root, "unjelly") : NULL;
    CHECK(sec && sec->u.seq.len == 24);
    pb_jelly_opts o = opts();
    for (size_t i = 0; sec && i < sec->u.seq.len; i++) {
        const pb_value *vec = sec->u.seq.items[i];
        const char *name = vu_str(vec, "name");
        pb_arena *a = pb_arena_new(0);
        pb_value *v = NULL, *s = vu_sexp(a, pb_dict_get(vec, "jelly"));
        pb_errbuf e = {0};
        int rc = pb_unjelly(a, s, &o, &v, &e);
        if (!strcmp(vu_str(vec, "result"), "ok")) {
            CHECK_MSG(rc == 0 && v, "%s: %d %s", name, rc, e.msg);
        } else {
            const char *exc = vu_str(vec, "exception"), *msg = vu_str(vec, "message");
            CHECK_MSG(rc == exc_code(exc), "%s: rc %d (%s)", name, rc, e.msg);
            if (rc == PB_EINSECURE || rc == PB_EUTF8 || !strcmp(exc, "ValueError"))
                CHECK_MSG(!strcmp(e.msg, msg), "%s: '%s' vs '%s'", name, e.msg, msg);
            CHECK(v == NULL);
        }
        pb_arena_free(a);
    }
}

TEST(unjelly_results_have_the_right_types) {
    pb_arena *a = pb_arena_new(0);
    pb_jelly_opts o = opts();
    pb_errbuf e = {0};
    pb_value *v, *s = pb_container(a, PB_SEXP_LIST, 2);
    pb_seq_append(a, s, pb_bytesz(a, "list"));
    pb_value *d = pb_container(a, PB_SEXP_LIST, 2);
    pb_seq_append(a, d, pb_bytesz(a, "dereference"));
    pb_seq_append(a, d, pb_int(a, 3));
    pb_seq_append(a, s, d);
    CHECK(pb_unjelly(a, s, &o, &v, &e) == 0);
    CHECK(v->u.seq.items[0]->type == PB_UNPERSISTABLE); /* Twisted: a placeholder */
    /* without hooks, PB reference forms are insecure */
    s = pb_container(a, PB_SEXP_LIST, 2);
    pb_seq_append(a, s, pb_bytesz(a, "remote"));
    pb_seq_append(a, s, pb_int(a, 1));
    pb_jelly_opts plain = {0};
    CHECK(pb_unjelly(a, s, &plain, &v, &e) == PB_EINSECURE && !strcmp(e.msg, "b'remote'"));
    CHECK(pb_unjelly(a, s, &o, &v, &e) == 0 && v->type == PB_REMOTE);
    /* a Copyable arrives as an instance of its registered class */
    const uint8_t pt[] = {0x02, 0x80, 0x0f, 0x82, 'p', 'b', 'v', 'e', 'c', 't', 'o', 'r', 's', '.',
                          'P', 'o', 'i', 'n', 't', 0x01, 0x80, 0x05, 0x87};
    CHECK(decode_one(a, PB_DIALECT_PB, pt, sizeof pt, &s));
    CHECK(pb_unjelly(a, s, &o, &v, &e) == 0 && v->type == PB_INSTANCE &&
          !strcmp(v->u.inst.cls, "pbvectors.Point") && v->u.inst.state->type == PB_DICT);
    CHECK(pb_unjelly(a, s, &plain, &v, &e) == PB_EINSECURE &&
          !strcmp(e.msg, "Module pbvectors not allowed (in type pbvectors.Point)."));
    pb_arena_free(a);
}

TEST(shared_bytes_point_into_the_decoders_arena) {
    const uint8_t in[] = {0x02, 0x80, 0x07, 0x82, 'u', 'n', 'i', 'c', 'o', 'd', 'e', 0x02, 0x82, 'h', 'i'};
    pb_banana_dec *d = pb_banana_dec_new(PB_DIALECT_PB, NULL);
    size_t used;
    pb_value *t, *v = NULL;
    CHECK(pb_banana_dec_feed(d, in, sizeof in, &used, &t) == 1);
    pb_arena *a = pb_banana_dec_take_arena(d);
    pb_jelly_opts o = opts();
    o.share_bytes = 1;
    CHECK(pb_unjelly(a, t, &o, &v, NULL) == 0);
    CHECK(v->type == PB_STR && v->u.s.ptr == t->u.seq.items[1]->u.s.ptr);
    pb_banana_dec_free(d);
    CHECK(pb_value_is(v, "hi")); /* still valid: the arena is ours */
    pb_arena_free(a);
}

TEST(pb_object_forms_go_through_the_hooks) {
    const pb_value *sec = g_root ? pb_dict_get(g_root, "pb_objects") : NULL;
    CHECK(sec && sec->u.seq.len == 10);
    pb_jelly_opts o = opts();
    for (size_t i = 0; sec && i < sec->u.seq.len; i++) {
        const pb_value *vec = sec->u.seq.items[i];
        const char *name = vu_str(vec, "name");
        pb_arena *a = pb_arena_new(0);
        pb_value *s = vu_sexp(a, pb_dict_get(vec, "jelly")), *v = NULL;
        pb_errbuf e = {0};
        CHECK_MSG(pb_unjelly(a, s, &o, &v, &e) == 0, "%s: %s", name, e.msg);
        /* forms we can build: re-jelly byte for byte */
        const pb_value *form = s->u.seq.len == 3 ? s->u.seq.items[1] : s;
        int ref_form = form->type == PB_SEXP_LIST &&
                       (pb_value_is(form->u.seq.items[0], "remote") ||
                        pb_value_is(form->u.seq.items[0], "local"));
        if (v && ref_form && (v->type == PB_REMOTE || v->type == PB_OBJECT ||
                  (v->type == PB_LIST && v->u.seq.len == 2 && v->u.seq.items[0]->type == PB_REMOTE))) {
            /* what arrived as remote goes back as local and vice versa: flip */
            pb_value *x = v->type == PB_LIST ? v->u.seq.items[0] : v;
            pb_value *flip = pb_handle_value(a, x->type == PB_REMOTE ? PB_OBJECT : PB_REMOTE, x->u.h);
            pb_value *send = flip;
            if (v->type == PB_LIST) {
                send = pb_list(a, 2);
                pb_seq_append(a, send, flip);
                pb_seq_append(a, send, flip); /* same object twice: no reference form */
            }
            pb_buf b;
            pb_buf_init(&b);
            CHECK(pb_jelly_encode(&b, PB_DIALECT_PB, send, &o, &e) == 0);
            CHECK_MSG(!strcmp(vu_hex(b.data, b.len), vu_str(vec, "banana_hex")), "%s: %s", name,
                      vu_hex(b.data, b.len));
            pb_buf_free(&b);
        }
        pb_arena_free(a);
    }
}

TEST(values_twisted_refuses_to_send_are_unsendable_and_nothing_is_written) {
    pb_arena *a = pb_arena_new(0);
    pb_jelly_opts o = opts();
    pb_buf b;
    pb_buf_init(&b);
    pb_buf_append(&b, "abc", 3);
    pb_errbuf e = {0};
    uint32_t l[15] = {0};
    l[14] = 1; /* 2**448 */
    CHECK(pb_jelly_encode(&b, PB_DIALECT_PB, pb_bigint(a, 0, l, 15), &o, &e) == PB_EUNSENDABLE);
    const pb_value *errs = g_root ? pb_dict_get(g_root, "encode_errors") : NULL;
    const char *m0 = errs ? vu_str(errs->u.seq.items[0], "message") : "";
    const char *m1 = errs ? vu_str(errs->u.seq.items[1], "message") : "";
    CHECK_MSG(!strncmp(e.msg, m0, strstr(m0, "...") - m0), "%s", e.msg);
    CHECK(pb_jelly_encode(&b, PB_DIALECT_PB, pb_bigint(a, 1, l, 15), &o, &e) == PB_EUNSENDABLE);
    CHECK_MSG(!strncmp(e.msg, m1, strstr(m1, "...") - m1), "%s", e.msg);
    char *big = calloc(1, PB_BANANA_SIZE_LIMIT + 1);
    pb_value *lst = pb_list(a, 2);
    pb_seq_append(a, lst, pb_int(a, 1));
    pb_seq_append(a, lst, pb_bytes(a, big, PB_BANANA_SIZE_LIMIT + 1));
    CHECK(pb_jelly_encode(&b, PB_DIALECT_PB, lst, &o, &e) == PB_EUNSENDABLE);
    CHECK(!strcmp(e.msg, "byte string is too long to send (655361)"));
    CHECK(marks_clear(lst, 0));
    pb_value *many = pb_list(a, 655360);
    pb_value *zero = pb_int(a, 0);
    for (int i = 0; i < 655359; i++) pb_seq_append(a, many, zero);
    CHECK(pb_jelly_encode(&b, PB_DIALECT_PB, many, &o, &e) == 0);
    CHECK_EQ_INT(b.len, 3 + 1310724); /* Twisted's banana_len */
    b.len = 3;
    pb_seq_append(a, many, zero);
    CHECK(pb_jelly_encode(&b, PB_DIALECT_PB, many, &o, &e) == PB_EUNSENDABLE);
    CHECK(!strcmp(e.msg, "list/tuple is too long to send (655361)"));
    CHECK(pb_str(a, "\xed\xa0\x80", 3) == NULL); /* a lone surrogate cannot even be built */
    /* an unsendable value deep in a shared graph: nothing written, marks cleared */
    pb_value *sh = pb_list(a, 1), *top = pb_list(a, 3);
    pb_seq_append(a, top, sh);
    pb_seq_append(a, top, sh);
    pb_seq_append(a, sh, pb_bigint(a, 0, l, 15));
    CHECK(pb_jelly_encode(&b, PB_DIALECT_PB, top, &o, &e) == PB_EUNSENDABLE);
    CHECK(marks_clear(top, 0));
    pb_value *ref = pb_handle_value(a, PB_REMOTE, &g_refs[0].h);
    pb_seq_append(a, top, ref);
    pb_jelly_opts plain = {0};
    CHECK(pb_jelly_encode(&b, PB_DIALECT_PB, ref, &plain, &e) == PB_EUNSENDABLE);
    CHECK_EQ_INT(b.len, 3);
    CHECK(!memcmp(b.data, "abc", 3));
    free(big);
    pb_buf_free(&b);
    pb_arena_free(a);
}

TEST(nesting_beyond_max_depth_is_refused_both_ways) {
    pb_arena *a = pb_arena_new(0);
    pb_jelly_opts o = opts();
    pb_errbuf e = {0};
    pb_value *v = pb_list(a, 0);
    for (int i = 0; i < 64; i++) {
        pb_value *p = pb_list(a, 1);
        pb_seq_append(a, p, v);
        v = p;
    }
    pb_buf b;
    pb_buf_init(&b);
    CHECK(pb_jelly_encode(&b, PB_DIALECT_PB, v, &o, &e) == PB_EDEPTH);
    CHECK(b.len == 0 && marks_clear(v, 0));
    o.max_depth = 100;
    CHECK(pb_jelly_encode(&b, PB_DIALECT_PB, v, &o, &e) == 0);
    pb_banana_limits lim;
    pb_banana_limits_default(&lim);
    lim.max_depth = 200;
    pb_banana_dec *d = pb_banana_dec_new(PB_DIALECT_PB, &lim);
    size_t used;
    pb_value *t, *back = NULL;
    CHECK(pb_banana_dec_feed(d, b.data, b.len, &used, &t) == 1);
    CHECK(pb_unjelly(a, t, &o, &back, &e) == 0 && pb_value_equal(back, v));
    o.max_depth = 0;
    CHECK(pb_unjelly(a, t, &o, &back, &e) == PB_EDEPTH);
    pb_banana_dec_free(d);
    pb_buf_free(&b);
    pb_arena_free(a);
}

static pb_value *bench_payload(pb_arena *a) {
    pb_value *l = pb_list(a, 100);
    for (int i = 0; i < 100; i++) {
        char name[32];
        snprintf(name, sizeof name, "benchmark-item-%05d", i);
        pb_value *d = pb_dict(a, 3);
        pb_dict_append(a, d, pb_strz(a, "id"), pb_int(a, i));
        pb_dict_append(a, d, pb_strz(a, "name"), pb_strz(a, name));
        pb_dict_append(a, d, pb_strz(a, "score"), pb_float(a, i * 1.25));
        pb_seq_append(a, l, d);
    }
    return l;
}

TEST(benchmark_payload_matches_twisted_and_encodes_fast) {
    pb_arena *a = pb_arena_new(0);
    pb_value *v = bench_payload(a);
    pb_buf b;
    pb_buf_init(&b);
    CHECK(pb_jelly_encode(&b, PB_DIALECT_PB, v, NULL, NULL) == 0);
    CHECK_EQ_INT(b.len, 10404);
    CHECK(vu_fnv(b.data, b.len) == 0x569f05ab3835c610ull); /* Twisted 22.4's bytes */
    int iters = 20000;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < iters; i++) {
        b.len = 0;
        pb_jelly_encode(&b, PB_DIALECT_PB, v, NULL, NULL);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("     jelly+banana encode: %.2f us/payload, %.0f MB/s (Twisted 22.4: ~1077 us)\n",
           s / iters * 1e6, 10404.0 * iters / s / 1e6);
    pb_buf_free(&b);
    pb_arena_free(a);
}

TEST(unpersistable_takes_any_reason_as_twisted_does) {
    /* (unpersistable X): bytes are the reason as they are; anything else
     * becomes "Unpersistable data: <repr X>" (Twisted formats rest[0]) */
    pb_arena *a = pb_arena_new(0);
    pb_jelly_opts o = opts();
    pb_errbuf e = {0};
    pb_value *v, *s = pb_container(a, PB_SEXP_LIST, 2);
    pb_seq_append(a, s, pb_bytesz(a, "unpersistable"));
    pb_seq_append(a, s, pb_bytesz(a, "a socket"));
    CHECK(pb_unjelly(a, s, &o, &v, &e) == 0 && v->type == PB_UNPERSISTABLE &&
          pb_value_is(v, "a socket") == 0 && v->u.s.len == 8 && !strcmp(v->u.s.ptr, "a socket"));
    s->u.seq.items[1] = pb_int(a, 42);
    CHECK(pb_unjelly(a, s, &o, &v, &e) == 0 && v->type == PB_UNPERSISTABLE);
    CHECK(v && !strcmp(v->u.s.ptr, "Unpersistable data: 42") && v->u.s.len == 22);
    s->u.seq.items[1] = pb_float(a, 1.5);
    CHECK(pb_unjelly(a, s, &o, &v, &e) == 0 && !strcmp(v->u.s.ptr, "Unpersistable data: 1.5"));
    pb_value *l = pb_container(a, PB_SEXP_LIST, 2);
    pb_seq_append(a, l, pb_bytesz(a, "list"));
    pb_seq_append(a, l, pb_int(a, 1));
    s->u.seq.items[1] = l;
    CHECK(pb_unjelly(a, s, &o, &v, &e) == 0 &&
          !strcmp(v->u.s.ptr, "Unpersistable data: [b'list', 1]"));
    /* from the wire, as a peer sends it: (unpersistable 7) */
    const uint8_t in[] = {0x02, 0x80, 0x0c, 0x87, 0x07, 0x81};
    CHECK(decode_one(a, PB_DIALECT_PB, in, sizeof in, &s));
    CHECK(pb_unjelly(a, s, &o, &v, &e) == 0 && v->type == PB_UNPERSISTABLE &&
          !strcmp(v->u.s.ptr, "Unpersistable data: 7"));
    /* no reason at all is still malformed (Twisted: IndexError) */
    s = pb_container(a, PB_SEXP_LIST, 1);
    pb_seq_append(a, s, pb_bytesz(a, "unpersistable"));
    CHECK(pb_unjelly(a, s, &o, &v, &e) == PB_EJELLY);
    pb_arena_free(a);
}

TEST(unjelly_shares_only_a_tree_of_its_own_arena) {
    const uint8_t in[] = {0x03, 0x80, 0x04, 0x82, 'l', 'i', 's', 't', 0x02, 0x82, 'h', 'i', 0x05, 0x81};
    pb_banana_dec *d = pb_banana_dec_new(PB_DIALECT_PB, NULL);
    size_t used;
    pb_value *t, *v = NULL, *w = NULL;
    CHECK(pb_banana_dec_feed(d, in, sizeof in, &used, &t) == 1);
    /* into the decoder's own arena, without share_bytes: shared anyway */
    CHECK(pb_unjelly(pb_banana_dec_arena(d), t, NULL, &v, NULL) == 0);
    CHECK(v && v->type == PB_LIST && v->u.seq.items[0] == t->u.seq.items[1]);
    /* into another arena: copied, and it outlives the decoder's reset */
    pb_arena *other = pb_arena_new(0);
    CHECK(pb_unjelly(other, t, NULL, &w, NULL) == 0);
    CHECK(w && w->u.seq.items[0] != t->u.seq.items[1] &&
          w->u.seq.items[0]->u.s.ptr != t->u.seq.items[1]->u.s.ptr);
    CHECK(pb_arena_owns(other, w->u.seq.items[0]->u.s.ptr) &&
          pb_arena_owns(other, w->u.seq.items[1]));
    CHECK(pb_banana_dec_feed(d, in, sizeof in, &used, &t) == 1); /* resets the old arena */
    CHECK(pb_value_is(w->u.seq.items[0], "hi") && w->u.seq.items[1]->u.i == 5);
    pb_arena_free(other);
    pb_banana_dec_free(d);
}

int main(void) {
    g_va = pb_arena_new(0);
    g_root = vu_load(g_va);
    g_reg = pb_jelly_registry_new();
    pb_jelly_registry_add(g_reg, "pbvectors.Point", NULL, NULL);
    pb_jelly_registry_add(g_reg, "TaggedThing", NULL, NULL);
    pb_jelly_registry_add(g_reg, "pbvectors.Counter", NULL, NULL);
    pb_jelly_registry_add(g_reg, "twisted.spread.pb.CopyableFailure", NULL, NULL);
    RUN(every_encode_vector_is_byte_identical_and_round_trips);
    RUN(every_vocabulary_word_is_substituted_in_jelly_output);
    RUN(cycles_unjelly_to_the_same_container);
    RUN(unjelly_vectors_allow_and_refuse_as_twisted_does);
    RUN(unjelly_results_have_the_right_types);
    RUN(shared_bytes_point_into_the_decoders_arena);
    RUN(unpersistable_takes_any_reason_as_twisted_does);
    RUN(unjelly_shares_only_a_tree_of_its_own_arena);
    RUN(pb_object_forms_go_through_the_hooks);
    RUN(values_twisted_refuses_to_send_are_unsendable_and_nothing_is_written);
    RUN(nesting_beyond_max_depth_is_refused_both_ways);
    RUN(benchmark_payload_matches_twisted_and_encodes_fast);
    pb_jelly_registry_free(g_reg);
    pb_arena_free(g_va);
    return TEST_SUMMARY();
}
