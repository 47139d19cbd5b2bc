/* fuzz_jelly - arbitrary bytes decoded as Banana, then unjellied with a
 * registry that allows one class, then jellied again.
 * (fz_jelly_one is also run by tests/test_fuzz_regressions.c.) */
#include <stdint.h>
#include <stddef.h>
#include "pb/jelly.h"

int fz_jelly_one(const uint8_t *data, size_t size) {
    pb_banana_dec *dec = pb_banana_dec_new(PB_DIALECT_PB, NULL);
    pb_jelly_registry *reg = pb_jelly_registry_new();
    if (!dec || !reg) goto done;
    pb_jelly_registry_add(reg, "fuzz.Point", NULL, NULL);
    pb_jelly_opts o = {.registry = reg, .hooks = NULL, .max_depth = 0};
    size_t off = 0;
    while (off < size) {
        size_t used = 0;
        pb_value *sexp = NULL;
        int rc = pb_banana_dec_feed(dec, data + off, size - off, &used, &sexp);
        if (rc <= 0) break;
        off += used;
        pb_arena *a = pb_banana_dec_arena(dec);
        pb_value *v = NULL;
        if (pb_unjelly(a, sexp, &o, &v, NULL) == 0) {
            pb_buf b;
            pb_buf_init(&b);
            (void)pb_jelly_encode(&b, PB_DIALECT_PB, v, &o, NULL);
            pb_buf_free(&b);
            pb_buf_init(&b);
            (void)pb_value_repr(v, &b);
            (void)pb_value_to_json(v, &b, NULL);
            pb_buf_free(&b);
        }
    }
done:
    pb_jelly_registry_free(reg);
    pb_banana_dec_free(dec);
    return 0;
}

#ifndef FZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return fz_jelly_one(data, size);
}
#endif
