/* test_value - arena and value model promises. */
#include <math.h>
#include "pb/value.h"
#include "test.h"

TEST(arena_limit_refuses_over_budget) {
    pb_arena *a = pb_arena_new(1024);
    CHECK(pb_arena_alloc(a, 512) != NULL);
    CHECK(pb_arena_alloc(a, 1024) == NULL);
    CHECK(pb_arena_over_limit(a));
    pb_arena_free(a);
}

TEST(self_containing_list_is_equal_to_its_copy) {
    pb_arena *a = pb_arena_new(0), *b = pb_arena_new(0);
    pb_value *l = pb_list(a, 0);
    CHECK(pb_seq_append(a, l, l) == 0);
    pb_value *c = pb_value_copy(b, l);
    CHECK(c && c->type == PB_LIST && c->u.seq.items[0] == c);
    CHECK(pb_value_equal(l, c));
    pb_arena_free(a);
    pb_arena_free(b);
}

TEST(bigint_normalises_to_int64_when_it_fits) {
    pb_arena *a = pb_arena_new(0);
    pb_value *v = pb_int_parse(a, "-9223372036854775808", 20);
    CHECK(v && v->type == PB_INT && v->u.i == INT64_MIN);
    v = pb_int_parse(a, "18446744073709551616", 20);
    CHECK(v && v->type == PB_BIGINT && v->u.big.nlimbs == 3);
    CHECK(pb_int_parse(a, "12x", 3) == NULL);
    pb_arena_free(a);
}

TEST(utf8_validation_is_strict) {
    CHECK(pb_utf8_valid("h\xc3\xa9", 3));
    CHECK(!pb_utf8_valid("\xc0\x80", 2));         /* overlong */
    CHECK(!pb_utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
    CHECK(!pb_utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
    CHECK(pb_utf8_valid("\xf0\x9f\x98\x80", 4));
}

TEST(negative_zero_and_nan_compare_bitwise) {
    pb_arena *a = pb_arena_new(0);
    CHECK(!pb_value_equal(pb_float(a, 0.0), pb_float(a, -0.0)));
    CHECK(pb_value_equal(pb_float(a, NAN), pb_float(a, NAN)));
    pb_arena_free(a);
}

TEST(dict_lookup_finds_last_entry) {
    pb_arena *a = pb_arena_new(0);
    pb_value *d = pb_dict(a, 0);
    pb_dict_append(a, d, pb_strz(a, "k"), pb_int(a, 1));
    pb_dict_append(a, d, pb_bytesz(a, "k"), pb_int(a, 2));
    CHECK(pb_dict_get(d, "k")->u.i == 2);
    pb_arena_free(a);
}

int main(void) {
    RUN(arena_limit_refuses_over_budget);
    RUN(self_containing_list_is_equal_to_its_copy);
    RUN(bigint_normalises_to_int64_when_it_fits);
    RUN(utf8_validation_is_strict);
    RUN(negative_zero_and_nan_compare_bitwise);
    RUN(dict_lookup_finds_last_entry);
    return TEST_SUMMARY();
}
