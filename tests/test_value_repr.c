/* test_value_repr - Python-repr-like rendering, bounded on hostile graphs. */
#include <math.h>
#include "pb/value.h"
#include "test.h"

static char *repr(const pb_value *v) {
    pb_buf b;
    pb_buf_init(&b);
    if (pb_value_repr(v, &b) || pb_buf_putc(&b, 0)) { pb_buf_free(&b); return NULL; }
    return (char *)b.data;
}

#define CHECK_REPR(v, want)                                                        \
    do {                                                                           \
        char *t_s = repr(v);                                                       \
        CHECK_MSG(t_s && !strcmp(t_s, want), "got %s, want %s", t_s ? t_s : "(null)", want); \
        free(t_s);                                                                 \
    } while (0)

TEST(scalars_look_like_python) {
    pb_arena *a = pb_arena_new(0);
    CHECK_REPR(pb_none(a), "None");
    CHECK_REPR(pb_bool(a, 1), "True");
    CHECK_REPR(pb_bool(a, 0), "False");
    CHECK_REPR(pb_int(a, -7), "-7");
    CHECK_REPR(pb_int(a, INT64_MIN), "-9223372036854775808");
    CHECK_REPR(pb_int_parse(a, "-123456789012345678901234567890", 31),
               "-123456789012345678901234567890");
    CHECK_REPR(pb_int_parse(a, "1000000000000000000000000000", 28), "1000000000000000000000000000");
    CHECK_REPR(pb_int_parse(a, "18446744073709551616", 20), "18446744073709551616");
    pb_arena_free(a);
}

/* A peer chooses the exponent: INT64 extremes must print, not overflow. */
TEST(decimals_with_extreme_exponents_print_exactly) {
    pb_arena *a = pb_arena_new(0);
    CHECK_REPR(pb_decimal(a, pb_int(a, 125), -2), "Decimal('1.25')");
    CHECK_REPR(pb_decimal(a, pb_int(a, 12345), INT64_MAX), "Decimal('1.2345E+9223372036854775811')");
    CHECK_REPR(pb_decimal(a, pb_int(a, 7), INT64_MIN), "Decimal('7E-9223372036854775808')");
    CHECK_REPR(pb_decimal(a, pb_int(a, 7), INT64_MAX), "Decimal('7E+9223372036854775807')");
    CHECK_REPR(pb_decimal(a, pb_int(a, -12), INT64_MAX), "Decimal('-1.2E+9223372036854775808')");
    pb_arena_free(a);
}

TEST(floats_print_like_python_repr) {
    pb_arena *a = pb_arena_new(0);
    struct { double f; const char *s; } cases[] = {
        {0.0, "0.0"}, {-0.0, "-0.0"}, {1.0, "1.0"}, {1.5, "1.5"}, {0.1, "0.1"},
        {1.0 / 3, "0.3333333333333333"}, {2.0 / 3, "0.6666666666666666"},
        {1e16, "1e+16"}, {1e15, "1000000000000000.0"}, {123456789012345678.0, "1.2345678901234568e+17"},
        {1e-4, "0.0001"}, {1e-5, "1e-05"}, {1.5e-5, "1.5e-05"}, {1e100, "1e+100"},
        {5e-324, "5e-324"}, {1.7976931348623157e308, "1.7976931348623157e+308"},
        {INFINITY, "inf"}, {-INFINITY, "-inf"}, {NAN, "nan"}, {-2.5, "-2.5"},
        {0.30000000000000004, "0.30000000000000004"}, {123.456, "123.456"},
        {9007199254740993.0, "9007199254740992.0"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) CHECK_REPR(pb_float(a, cases[i].f), cases[i].s);
    pb_arena_free(a);
}

TEST(bytes_and_text_are_quoted_and_escaped_like_python) {
    pb_arena *a = pb_arena_new(0);
    CHECK_REPR(pb_bytesz(a, "abc"), "b'abc'");
    CHECK_REPR(pb_bytes(a, "\x00\xff\t\n\r\\", 6), "b'\\x00\\xff\\t\\n\\r\\\\'");
    CHECK_REPR(pb_bytesz(a, "it's"), "b\"it's\"");
    CHECK_REPR(pb_bytesz(a, "'\""), "b'\\'\"'");
    CHECK_REPR(pb_strz(a, "h\xc3\xa9llo"), "'h\xc3\xa9llo'");
    CHECK_REPR(pb_strz(a, "it's"), "\"it's\"");
    CHECK_REPR(pb_strz(a, "a\x01\x7f\xc2\xa0\xe2\x80\xa8"), "'a\\x01\\x7f\\xa0\\u2028'");
    CHECK_REPR(pb_strz(a, "\xf0\x9f\x98\x80"), "'\xf0\x9f\x98\x80'");
    pb_arena_free(a);
}

TEST(containers_use_python_brackets) {
    pb_arena *a = pb_arena_new(0);
    pb_value *l = pb_list(a, 0), *t1 = pb_tuple(a, 0), *t0 = pb_tuple(a, 0), *d = pb_dict(a, 0);
    pb_seq_append(a, t1, pb_int(a, 1));
    pb_seq_append(a, l, t1);
    pb_seq_append(a, l, t0);
    pb_seq_append(a, l, pb_strz(a, "x"));
    CHECK_REPR(l, "[(1,), (), 'x']");
    pb_seq_append(a, t1, pb_int(a, 2));
    CHECK_REPR(t1, "(1, 2)");
    pb_dict_append(a, d, pb_strz(a, "k"), pb_bytesz(a, "v"));
    pb_dict_append(a, d, pb_int(a, 1), pb_none(a));
    CHECK_REPR(d, "{'k': b'v', 1: None}");
    CHECK_REPR(pb_dict(a, 0), "{}");
    CHECK_REPR(pb_list(a, 0), "[]");
    CHECK_REPR(pb_set(a, 0), "set()");
    CHECK_REPR(pb_frozenset(a, 0), "frozenset()");
    pb_value *s = pb_set(a, 0), *fs = pb_frozenset(a, 0);
    pb_seq_append(a, s, pb_int(a, 1));
    pb_seq_append(a, s, pb_int(a, 2));
    pb_seq_append(a, fs, pb_int(a, 3));
    CHECK_REPR(s, "{1, 2}");
    CHECK_REPR(fs, "frozenset({3})");
    pb_arena_free(a);
}

TEST(pb_specific_values_have_readable_forms) {
    pb_arena *a = pb_arena_new(0);
    pb_value *st = pb_dict(a, 0);
    pb_dict_append(a, st, pb_strz(a, "x"), pb_int(a, 1));
    CHECK_REPR(pb_instance(a, "mod.Point", 9, st), "<mod.Point {'x': 1}>");
    CHECK_REPR(pb_timeval(a, PB_DATETIME, "2020 1 2 3 4 5 6", 16), "datetime.datetime(2020, 1, 2, 3, 4, 5, 6)");
    CHECK_REPR(pb_timeval(a, PB_DATETIME, "2020 1 2 3 4 0 0", 16), "datetime.datetime(2020, 1, 2, 3, 4)");
    CHECK_REPR(pb_timeval(a, PB_DATE, "2020 1 2", 8), "datetime.date(2020, 1, 2)");
    CHECK_REPR(pb_timeval(a, PB_TIME, "3 4 5 0", 7), "datetime.time(3, 4, 5)");
    CHECK_REPR(pb_timeval(a, PB_TIMEDELTA, "-1 5 7", 6),
               "datetime.timedelta(days=-1, seconds=5, microseconds=7)");
    CHECK_REPR(pb_timeval(a, PB_TIMEDELTA, "0 0 0", 5), "datetime.timedelta(0)");
    CHECK_REPR(pb_timeval(a, PB_DATE, "junk", 4), "datetime.date('junk')");
    CHECK_REPR(pb_decimal(a, pb_int(a, 125), -2), "Decimal('1.25')");
    CHECK_REPR(pb_decimal(a, pb_int(a, -125), -5), "Decimal('-0.00125')");
    CHECK_REPR(pb_decimal(a, pb_int(a, 0), -2), "Decimal('0.00')");
    CHECK_REPR(pb_decimal(a, pb_int(a, 1), 3), "Decimal('1E+3')");
    CHECK_REPR(pb_decimal(a, pb_int(a, 12), -9), "Decimal('1.2E-8')");
    CHECK_REPR(pb_decimal(a, pb_int(a, 7), 0), "Decimal('7')");
    CHECK_REPR(pb_unpersistable(a, "no", 2), "Unpersistable('no')");
    pb_arena_free(a);
}

TEST(cycles_render_as_ellipsis) {
    pb_arena *a = pb_arena_new(0);
    pb_value *l = pb_list(a, 0);
    pb_seq_append(a, l, pb_int(a, 1));
    pb_seq_append(a, l, l);
    CHECK_REPR(l, "[1, [...]]");
    pb_value *d = pb_dict(a, 0);
    pb_dict_append(a, d, pb_strz(a, "self"), d);
    CHECK_REPR(d, "{'self': [...]}");
    /* shared but not cyclic: shown in full each time, as Python does */
    pb_value *in = pb_list(a, 0), *out = pb_list(a, 0);
    pb_seq_append(a, in, pb_int(a, 2));
    pb_seq_append(a, out, in);
    pb_seq_append(a, out, in);
    CHECK_REPR(out, "[[2], [2]]");
    pb_arena_free(a);
}

TEST(shared_dag_output_is_bounded) {
    /* 64 levels of [x, x]: 2^64 leaves if rendered naively */
    pb_arena *a = pb_arena_new(0);
    pb_value *v = pb_int(a, 0);
    for (int i = 0; i < 64; i++) {
        pb_value *l = pb_list(a, 2);
        pb_seq_append(a, l, v);
        pb_seq_append(a, l, v);
        v = l;
    }
    char *s = repr(v);
    CHECK(s != NULL && strlen(s) < 16u * 1000000u);
    CHECK(s && strstr(s, "...") != NULL);
    free(s);
    /* and a 100000-deep chain does not blow the stack */
    pb_value *deep = pb_int(a, 1);
    for (int i = 0; i < 100000; i++) {
        pb_value *l = pb_list(a, 1);
        pb_seq_append(a, l, deep);
        deep = l;
    }
    s = repr(deep);
    CHECK(s && strstr(s, "...") != NULL);
    free(s);
    pb_arena_free(a);
}

TEST(repr_appends_and_leaves_buffer_intact_on_success) {
    pb_arena *a = pb_arena_new(0);
    pb_buf b;
    pb_buf_init(&b);
    pb_buf_append(&b, "x=", 2);
    CHECK(pb_value_repr(pb_int(a, 5), &b) == 0);
    CHECK(b.len == 3 && !memcmp(b.data, "x=5", 3));
    b.limit = 4; /* too small for what follows */
    CHECK(pb_value_repr(pb_strz(a, "long text"), &b) == PB_ELIMIT);
    CHECK(b.len == 3);
    pb_buf_free(&b);
    pb_arena_free(a);
}

int main(void) {
    RUN(scalars_look_like_python);
    RUN(decimals_with_extreme_exponents_print_exactly);
    RUN(floats_print_like_python_repr);
    RUN(bytes_and_text_are_quoted_and_escaped_like_python);
    RUN(containers_use_python_brackets);
    RUN(pb_specific_values_have_readable_forms);
    RUN(cycles_render_as_ellipsis);
    RUN(shared_dag_output_is_bounded);
    RUN(repr_appends_and_leaves_buffer_intact_on_success);
    return TEST_SUMMARY();
}
