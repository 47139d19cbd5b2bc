/* fuzz_banana - arbitrary bytes into the streaming Banana decoder, fed in
 * chunks whose sizes come from the input itself, in both dialects.
 * (fz_banana_one is also run by tests/test_fuzz_regressions.c.) */
#include <stdint.h>
#include <stddef.h>
#include "pb/banana.h"

int fz_banana_one(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    pb_dialect d = (data[0] & 1) ? PB_DIALECT_PB : PB_DIALECT_NONE;
    size_t chunk = (size_t)(data[0] >> 1) + 1;
    data++, size--;
    pb_banana_limits lim;
    pb_banana_limits_default(&lim);
    lim.max_bytes = 1u << 20;
    pb_banana_dec *dec = pb_banana_dec_new(d, &lim);
    if (!dec) return 0;
    size_t off = 0;
    while (off < size) {
        size_t n = size - off < chunk ? size - off : chunk;
        while (n > 0) {
            size_t used = 0;
            pb_value *v = NULL;
            int rc = pb_banana_dec_feed(dec, data + off, n, &used, &v);
            if (rc < 0) goto done;
            off += used;
            n -= used;
            if (rc == 1) {
                /* re-encode what we decoded: must not fail for decoded trees
                 * except for values Twisted also refuses to send */
                pb_buf b;
                pb_buf_init(&b);
                (void)pb_banana_encode(&b, d, v, NULL);
                pb_buf_free(&b);
            }
            if (used == 0 && rc == 0) break;
        }
    }
done:
    pb_banana_dec_free(dec);
    return 0;
}

#ifndef FZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return fz_banana_one(data, size);
}
#endif
