/* test_value_json - JSON rendering and the hostile-input-safe parser. */
#include <math.h>
#include "pb/value.h"
#include "test.h"

/* Render v; returns a malloc'd C string (NULL on error, rc in *rcp). */
static char *to_json(const pb_value *v, int *rcp) {
    pb_buf b;
    pb_buf_init(&b);
    pb_errbuf e = {0};
    int rc = pb_value_to_json(v, &b, &e);
    if (rcp) *rcp = rc;
    if (rc) { pb_buf_free(&b); return NULL; }
    pb_buf_putc(&b, 0);
    return (char *)b.data;
}

static int parse(pb_arena *a, const char *s, pb_value **out, pb_errbuf *e) {
    return pb_value_from_json(a, s, strlen(s), out, e);
}

/* parse(text) must fail with code; the message must mention "byte". */
static void expect_error(const char *text, size_t len, int code) {
    pb_arena *a = pb_arena_new(0);
    pb_errbuf e = {0};
    pb_value *v = (pb_value *)1;
    int rc = pb_value_from_json(a, text, len, &v, &e);
    CHECK_MSG(rc == code, "%.40s: got %d (%s), want %d", text, rc, e.msg, code);
    CHECK(v == NULL);
    CHECK_MSG(rc == 0 || strstr(e.msg, "byte") || strstr(e.msg, "json:"), "%s", e.msg);
    pb_arena_free(a);
}
#define EXPECT_ERROR(s, code) expect_error(s, strlen(s), code)

TEST(scalars_render_as_json) {
    pb_arena *a = pb_arena_new(0);
    struct { pb_value *v; const char *json; } cases[] = {
        {pb_none(a), "null"},
        {pb_bool(a, 1), "true"},
        {pb_bool(a, 0), "false"},
        {pb_int(a, -42), "-42"},
        {pb_int(a, INT64_MIN), "-9223372036854775808"},
        {pb_float(a, 1.5), "1.5"},
        {pb_float(a, 1.0), "1.0"},
        {pb_float(a, -0.0), "-0.0"},
        {pb_float(a, 0.1), "0.1"},
        {pb_float(a, 1e100), "1e+100"},
        {pb_float(a, NAN), "\"NaN\""},
        {pb_float(a, INFINITY), "\"Infinity\""},
        {pb_float(a, -INFINITY), "\"-Infinity\""},
        {pb_strz(a, "a\"b\\c\n\x01\xc3\xa9"), "\"a\\\"b\\\\c\\n\\u0001\xc3\xa9\""},
        {pb_bytesz(a, "abc"), "\"abc\""},
        {pb_bytes(a, "\xff\x00\x01", 3), "{\"$bytes\":\"/wAB\"}"},
        {pb_bytes(a, "\xff", 1), "{\"$bytes\":\"/w==\"}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *s = to_json(cases[i].v, NULL);
        CHECK_MSG(s && !strcmp(s, cases[i].json), "case %zu: %s", i, s ? s : "(error)");
        free(s);
    }
    pb_arena_free(a);
}

TEST(bigints_render_in_decimal_and_parse_back) {
    pb_arena *a = pb_arena_new(0);
    const char *nums[] = {
        "9223372036854775808", "-9223372036854775809", "18446744073709551616",
        /* 2**448 - 1 */
        ("7268387242956068905493238078880045343536413606873180602814901991806392"
         "88113397923326191050713763565560762521606266177933534601628614655"),
        "-1000000000000000000000000000000000000000000000000000000001",
    };
    for (size_t i = 0; i < sizeof nums / sizeof *nums; i++) {
        pb_value *v = NULL;
        CHECK(parse(a, nums[i], &v, NULL) == 0);
        CHECK(v && v->type == PB_BIGINT);
        char *s = to_json(v, NULL);
        CHECK_MSG(s && !strcmp(s, nums[i]), "%s", s ? s : "(error)");
        free(s);
    }
    pb_value *v;
    CHECK(parse(a, "-9223372036854775808", &v, NULL) == 0 && v->type == PB_INT &&
          v->u.i == INT64_MIN);
    CHECK(parse(a, "999999999999999999", &v, NULL) == 0 && v->type == PB_INT &&
          v->u.i == 999999999999999999LL);
    CHECK(parse(a, "-0", &v, NULL) == 0 && v->type == PB_INT && v->u.i == 0);
    pb_arena_free(a);
}

TEST(containers_render_and_dicts_with_other_keys_become_pairs) {
    pb_arena *a = pb_arena_new(0);
    pb_value *l = pb_list(a, 0), *t = pb_tuple(a, 0), *d = pb_dict(a, 0), *d2 = pb_dict(a, 0);
    pb_seq_append(a, t, pb_int(a, 1));
    pb_seq_append(a, t, pb_strz(a, "x"));
    pb_dict_append(a, d, pb_strz(a, "k"), t);
    pb_dict_append(a, d, pb_bytesz(a, "b"), pb_none(a));
    pb_dict_append(a, d2, pb_int(a, 1), pb_int(a, 2));
    pb_seq_append(a, l, d);
    pb_seq_append(a, l, d2);
    pb_seq_append(a, l, pb_set(a, 0));
    char *s = to_json(l, NULL);
    CHECK_MSG(s && !strcmp(s, "[{\"k\":[1,\"x\"],\"b\":null},[[1,2]],[]]"), "%s", s);
    free(s);
    /* a real dict {"$bytes": "x"} must not read back as bytes */
    pb_value *d3 = pb_dict(a, 0);
    pb_dict_append(a, d3, pb_strz(a, "$bytes"), pb_strz(a, "AAAA"));
    s = to_json(d3, NULL);
    CHECK_MSG(s && !strcmp(s, "[[\"$bytes\",\"AAAA\"]]"), "%s", s);
    free(s);
    pb_arena_free(a);
}

TEST(shared_values_render_twice_but_cycles_are_refused) {
    pb_arena *a = pb_arena_new(0);
    pb_value *inner = pb_list(a, 0), *outer = pb_list(a, 0);
    pb_seq_append(a, inner, pb_int(a, 7));
    pb_seq_append(a, outer, inner);
    pb_seq_append(a, outer, inner);
    char *s = to_json(outer, NULL);
    CHECK_MSG(s && !strcmp(s, "[[7],[7]]"), "%s", s);
    free(s);
    pb_value *cyc = pb_list(a, 0);
    pb_seq_append(a, cyc, pb_int(a, 1));
    pb_seq_append(a, cyc, cyc);
    pb_buf b;
    pb_buf_init(&b);
    pb_buf_append(&b, "keep", 4);
    pb_errbuf e = {0};
    CHECK_EQ_INT(pb_value_to_json(cyc, &b, &e), PB_EUNSENDABLE);
    CHECK(b.len == 4); /* nothing half-written */
    CHECK(strstr(e.msg, "cyclic") != NULL);
    CHECK_EQ_INT(pb_value_to_json(pb_instance(a, "a.B", 3, pb_none(a)), &b, NULL),
                 PB_EUNSENDABLE);
    pb_buf_free(&b);
    pb_arena_free(a);
}

TEST(parser_reads_every_json_form) {
    pb_arena *a = pb_arena_new(0);
    pb_value *v;
    pb_errbuf e = {0};
    const char *text = " {\"a\" : [1, -2.5e3, true, false, null, \"x\\u00e9\\ud83d\\ude00\\/\"],"
                       "\"b\": {}, \"c\": [], \"d\": 1E2, \"e\": 0.5} ";
    CHECK_MSG(parse(a, text, &v, &e) == 0, "%s", e.msg);
    CHECK(v && v->type == PB_DICT && v->u.dict.len == 5);
    pb_value *arr = pb_dict_get(v, "a");
    CHECK(arr && arr->type == PB_LIST && arr->u.seq.len == 6);
    CHECK(arr->u.seq.items[0]->type == PB_INT && arr->u.seq.items[0]->u.i == 1);
    CHECK(arr->u.seq.items[1]->type == PB_FLOAT && arr->u.seq.items[1]->u.f == -2500.0);
    CHECK(arr->u.seq.items[2]->type == PB_BOOL && arr->u.seq.items[2]->u.b == 1);
    CHECK(arr->u.seq.items[4]->type == PB_NONE);
    CHECK(pb_value_is(arr->u.seq.items[5], "x\xc3\xa9\xf0\x9f\x98\x80/"));
    CHECK(arr->u.seq.items[5]->type == PB_STR);
    CHECK(pb_dict_get(v, "d")->type == PB_FLOAT && pb_dict_get(v, "d")->u.f == 100.0);
    CHECK(pb_dict_get(v, "b")->type == PB_DICT && pb_dict_get(v, "c")->type == PB_LIST);
    /* Python's json leniencies */
    CHECK(parse(a, "[NaN, Infinity, -Infinity, 1e999]", &v, NULL) == 0);
    CHECK(isnan(v->u.seq.items[0]->u.f) && v->u.seq.items[1]->u.f == INFINITY &&
          v->u.seq.items[2]->u.f == -INFINITY && v->u.seq.items[3]->u.f == INFINITY);
    /* duplicate keys: kept, lookup finds the last as json.loads would */
    CHECK(parse(a, "{\"k\": 1, \"k\": 2}", &v, NULL) == 0 && pb_dict_get(v, "k")->u.i == 2);
    /* embedded NUL via \u0000 */
    CHECK(parse(a, "\"a\\u0000b\"", &v, NULL) == 0 && v->u.s.len == 3 && v->u.s.ptr[1] == 0 &&
          v->u.s.ptr[3] == 0);
    pb_arena_free(a);
}

TEST(bytes_objects_decode_base64) {
    pb_arena *a = pb_arena_new(0);
    pb_value *v;
    CHECK(parse(a, "{\"$bytes\": \"/wAB\"}", &v, NULL) == 0);
    CHECK(v->type == PB_BYTES && v->u.s.len == 3 && !memcmp(v->u.s.ptr, "\xff\x00\x01", 4));
    CHECK(parse(a, "{\"$bytes\": \"/w\"}", &v, NULL) == 0 && v->u.s.len == 1);
    CHECK(parse(a, "{\"$bytes\": \"\"}", &v, NULL) == 0 && v->type == PB_BYTES && v->u.s.len == 0);
    EXPECT_ERROR("{\"$bytes\": \"a*bc\"}", PB_EINVAL);
    EXPECT_ERROR("{\"$bytes\": \"abcde\"}", PB_EINVAL);
    EXPECT_ERROR("{\"$bytes\": 5}", PB_EINVAL);
    /* with a second key it is just a dict */
    CHECK(parse(a, "{\"$bytes\": \"AA\", \"x\": 1}", &v, NULL) == 0 && v->type == PB_DICT);
    pb_arena_free(a);
}

TEST(round_trip_of_a_mixed_graph) {
    pb_arena *a = pb_arena_new(0), *b = pb_arena_new(0);
    pb_value *top = pb_list(a, 0);
    for (int i = 0; i < 50; i++) {
        pb_value *d = pb_dict(a, 0);
        char name[40];
        snprintf(name, sizeof name, "item-%05d-\xe2\x82\xac", i);
        pb_dict_append(a, d, pb_strz(a, "id"), pb_int(a, (int64_t)i * 1000003 - 25000000));
        pb_dict_append(a, d, pb_strz(a, "name"), pb_strz(a, name));
        pb_dict_append(a, d, pb_strz(a, "score"), pb_float(a, i * 1.25 / 3.0));
        pb_dict_append(a, d, pb_strz(a, "raw"), pb_bytes(a, "\x80\x81", 2));
        pb_value *l = pb_list(a, 0);
        pb_seq_append(a, l, pb_none(a));
        pb_seq_append(a, l, pb_bool(a, i & 1));
        pb_seq_append(a, l, pb_float(a, -1e-300 * i));
        pb_dict_append(a, d, pb_strz(a, "l"), l);
        pb_seq_append(a, top, d);
    }
    char *s = to_json(top, NULL);
    CHECK(s != NULL);
    pb_value *back = NULL;
    pb_errbuf e = {0};
    CHECK_MSG(parse(b, s, &back, &e) == 0, "%s", e.msg);
    CHECK(back && pb_value_equal(top, back));
    char *s2 = to_json(back, NULL);
    CHECK(s2 && !strcmp(s, s2));
    free(s);
    free(s2);
    pb_arena_free(a);
    pb_arena_free(b);
}

TEST(floats_round_trip_bit_for_bit) {
    pb_arena *a = pb_arena_new(0);
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < 20000; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        double f;
        memcpy(&f, &x, sizeof f);
        if (isnan(f) || isinf(f)) continue;
        char *s = to_json(pb_float(a, f), NULL);
        pb_value *v = NULL;
        CHECK(s && parse(a, s, &v, NULL) == 0);
        CHECK_MSG(v && v->type == PB_FLOAT && !memcmp(&v->u.f, &f, sizeof f), "%s", s);
        free(s);
        if (i % 1000 == 0) pb_arena_reset(a);
    }
    pb_arena_free(a);
}

TEST(deep_nesting_is_refused_not_recursed) {
    size_t n = 100000;
    char *s = malloc(2 * n + 1);
    memset(s, '[', n);
    memset(s + n, ']', n);
    s[2 * n] = 0;
    expect_error(s, 2 * n, PB_EDEPTH);
    memset(s, '[', n); /* unclosed */
    expect_error(s, n, PB_EDEPTH);
    for (size_t i = 0; i < n; i += 5) memcpy(s + i, "{\"a\":", 5);
    expect_error(s, n, PB_EDEPTH);
    free(s);
    /* exactly 64 levels are fine, 65 are not */
    char ok[200], deep[200];
    memset(ok, '[', 64); memset(ok + 64, ']', 64); ok[128] = 0;
    memset(deep, '[', 65); memset(deep + 65, ']', 65); deep[130] = 0;
    pb_arena *a = pb_arena_new(0);
    pb_value *v;
    CHECK(parse(a, ok, &v, NULL) == 0);
    pb_arena_free(a);
    EXPECT_ERROR(deep, PB_EDEPTH);
}

TEST(malformed_text_is_refused_with_an_offset) {
    EXPECT_ERROR("", PB_EINVAL);
    EXPECT_ERROR("   ", PB_EINVAL);
    EXPECT_ERROR("[1, 2", PB_EINVAL);
    EXPECT_ERROR("[1 2]", PB_EINVAL);
    EXPECT_ERROR("[1,]", PB_EINVAL);
    EXPECT_ERROR("{\"a\" 1}", PB_EINVAL);
    EXPECT_ERROR("{\"a\": 1,}", PB_EINVAL);
    EXPECT_ERROR("{1: 2}", PB_EINVAL);
    EXPECT_ERROR("\"abc", PB_EINVAL);
    EXPECT_ERROR("\"abc\\", PB_EINVAL);
    EXPECT_ERROR("\"a\\qb\"", PB_EINVAL);
    EXPECT_ERROR("\"\\u12\"", PB_EINVAL);
    EXPECT_ERROR("\"\\u12g4\"", PB_EINVAL);
    EXPECT_ERROR("\"tab\there\"", PB_EINVAL);
    EXPECT_ERROR("01", PB_EINVAL);
    EXPECT_ERROR("1.", PB_EINVAL);
    EXPECT_ERROR(".5", PB_EINVAL);
    EXPECT_ERROR("1e", PB_EINVAL);
    EXPECT_ERROR("-", PB_EINVAL);
    EXPECT_ERROR("+1", PB_EINVAL);
    EXPECT_ERROR("0x10", PB_EINVAL);
    EXPECT_ERROR("nul", PB_EINVAL);
    EXPECT_ERROR("truex", PB_EINVAL);
    EXPECT_ERROR("Inf", PB_EINVAL);
    EXPECT_ERROR("1 2", PB_EINVAL);
    EXPECT_ERROR("[] x", PB_EINVAL);
    expect_error("[1,\0 2]", 7, PB_EINVAL);
    pb_errbuf e = {0};
    pb_arena *a = pb_arena_new(0);
    pb_value *v;
    CHECK(parse(a, "[1, 2, x]", &v, &e) == PB_EINVAL);
    CHECK_MSG(strstr(e.msg, "byte 7") != NULL, "%s", e.msg);
    CHECK(pb_value_from_json(a, "[1]", 2, &v, &e) == PB_EINVAL); /* truncated by len */
    CHECK_MSG(strstr(e.msg, "end of input") != NULL, "%s", e.msg);
    pb_arena_free(a);
    /* every truncation of a valid document fails cleanly */
    const char *doc = "{\"k\": [1, 2.5, \"\\ud83d\\ude00x\", {\"$bytes\": \"AAE=\"}, null]}";
    a = pb_arena_new(0);
    for (size_t n = 0; n < strlen(doc); n++) {
        int rc = pb_value_from_json(a, doc, n, &v, NULL);
        CHECK_MSG(rc < 0, "prefix %zu accepted", n);
    }
    CHECK(pb_value_from_json(a, doc, strlen(doc), &v, NULL) == 0);
    pb_arena_free(a);
}

TEST(bad_unicode_is_refused) {
    EXPECT_ERROR("\"\\ud83d\"", PB_EUTF8);        /* lone high */
    EXPECT_ERROR("\"\\ud83dx\"", PB_EUTF8);
    EXPECT_ERROR("\"\\ud83d\\u0041\"", PB_EUTF8); /* high + non-low */
    EXPECT_ERROR("\"\\ude00\"", PB_EUTF8);        /* lone low */
    EXPECT_ERROR("\"\\ude00\\ud83d\"", PB_EUTF8); /* reversed pair */
    EXPECT_ERROR("\"\xff\"", PB_EUTF8);
    EXPECT_ERROR("\"\xc0\x80\"", PB_EUTF8);         /* overlong */
    EXPECT_ERROR("\"\xed\xa0\x80\"", PB_EUTF8);     /* encoded surrogate */
    EXPECT_ERROR("\"\xf4\x90\x80\x80\"", PB_EUTF8); /* > U+10FFFF */
    EXPECT_ERROR("\"\xe2\x82\"", PB_EUTF8);         /* truncated sequence */
    EXPECT_ERROR("[\"ok\", \"\\n\xe2\x82\"]", PB_EUTF8);
    EXPECT_ERROR("{\"\xff\": 1}", PB_EUTF8);
}

TEST(huge_numbers_are_bounded) {
    pb_arena *a = pb_arena_new(0);
    pb_value *v;
    char *s = malloc(20001);
    memset(s, '9', 4300);
    CHECK(pb_value_from_json(a, s, 4300, &v, NULL) == 0 && v->type == PB_BIGINT);
    memset(s, '9', 20000);
    expect_error(s, 4301, PB_ELIMIT);
    expect_error(s, 20000, PB_ELIMIT);
    /* long floats: fine up to the limit, refused past it */
    s[0] = '0';
    s[1] = '.';
    CHECK(pb_value_from_json(a, s, 4000, &v, NULL) == 0 && v->type == PB_FLOAT);
    expect_error(s, 20000, PB_ELIMIT);
    CHECK(parse(a, "1e-400", &v, NULL) == 0 && v->u.f == 0.0);
    CHECK(parse(a, "-1e400", &v, NULL) == 0 && v->u.f == -INFINITY);
    free(s);
    pb_arena_free(a);
}

TEST(arena_limit_bounds_parser_memory) {
    /* a 1 MB array of zeros must not fit a 64 KiB arena */
    size_t count = 1 << 19, n = 2 * count + 1; /* "[0,0,...,0]" */
    char *s = malloc(n);
    s[0] = '[';
    for (size_t i = 0; i < count; i++) { s[2 * i + 1] = '0'; s[2 * i + 2] = ','; }
    s[n - 1] = ']';
    pb_arena *a = pb_arena_new(64 * 1024);
    pb_value *v;
    pb_errbuf e = {0};
    CHECK_EQ_INT(pb_value_from_json(a, s, n, &v, &e), PB_ELIMIT);
    CHECK(v == NULL);
    CHECK_MSG(strstr(e.msg, "limit") != NULL, "%s", e.msg);
    pb_arena_free(a);
    a = pb_arena_new(0);
    CHECK(pb_value_from_json(a, s, n, &v, NULL) == 0 && v->u.seq.len == count);
    pb_arena_free(a);
    free(s);
}

TEST(random_bytes_never_crash_the_parser) {
    pb_arena *a = pb_arena_new(1 << 20);
    static const char alphabet[] = "[]{}\",:0123456789.eE+-tfnul\\ \xc3\xa9\xff";
    uint32_t x = 12345;
    char buf[64];
    for (int i = 0; i < 200000; i++) {
        size_t n = (size_t)(i % 63) + 1;
        for (size_t k = 0; k < n; k++) {
            x = x * 1103515245u + 12345u;
            buf[k] = alphabet[(x >> 16) % (sizeof alphabet - 1)];
        }
        pb_value *v;
        int rc = pb_value_from_json(a, buf, n, &v, NULL);
        if (rc == 0) { /* anything accepted must render again */
            pb_buf b;
            pb_buf_init(&b);
            CHECK(pb_value_to_json(v, &b, NULL) == 0);
            pb_buf_free(&b);
        }
        pb_arena_reset(a);
    }
    pb_arena_free(a);
}

int main(void) {
    RUN(scalars_render_as_json);
    RUN(bigints_render_in_decimal_and_parse_back);
    RUN(containers_render_and_dicts_with_other_keys_become_pairs);
    RUN(shared_values_render_twice_but_cycles_are_refused);
    RUN(parser_reads_every_json_form);
    RUN(bytes_objects_decode_base64);
    RUN(round_trip_of_a_mixed_graph);
    RUN(floats_round_trip_bit_for_bit);
    RUN(deep_nesting_is_refused_not_recursed);
    RUN(malformed_text_is_refused_with_an_offset);
    RUN(bad_unicode_is_refused);
    RUN(huge_numbers_are_bounded);
    RUN(arena_limit_bounds_parser_memory);
    RUN(random_bytes_never_crash_the_parser);
    return TEST_SUMMARY();
}
