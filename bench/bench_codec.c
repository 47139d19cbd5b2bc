/*
 * bench_codec - encode and decode throughput of the benchmark payload
 * (shared/bench/CONTRACT.md: a list of 100 dicts {"id": i, "name":
 * "benchmark-item-%05d" % i, "score": i * 1.25}, str keys; 10,404 bytes
 * jellied and banana-encoded in the pb dialect).
 *
 *   encode: value graph -> banana bytes (pb_jelly_encode into a reused
 *           pb_buf, as a connection's output buffer would be).
 *   decode: banana bytes -> value graph (pb_banana_dec_feed, then
 *           pb_unjelly into the decoder's arena, which the next feed
 *           resets, as on a connection).
 *
 * usage: bench_codec [--seconds S] [--json] [--split] [--only encode|decode]
 * Prints MB/s, payloads/s and values/s (701 values per payload: the list,
 * 100 dicts, 300 keys, 300 values) for each direction.  --split also times
 * the two halves of decode on their own (banana feed only; feed + unjelly
 * with share_bytes, the zero-copy path a broker can use), in microseconds
 * per payload.  --only runs one direction (for profiling).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "pb/banana.h"
#include "pb/jelly.h"
#include "pb/value.h"

#define PAYLOAD_BYTES 10404u
#define PAYLOAD_VALUES 701u

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static pb_value *build_payload(pb_arena *a) {
    pb_value *l = pb_list(a, 100);
    if (!l) return NULL;
    for (int i = 0; i < 100; i++) {
        pb_value *d = pb_dict(a, 3);
        char name[32];
        snprintf(name, sizeof name, "benchmark-item-%05d", i);
        if (!d || pb_dict_append(a, d, pb_strz(a, "id"), pb_int(a, i)) ||
            pb_dict_append(a, d, pb_strz(a, "name"), pb_strz(a, name)) ||
            pb_dict_append(a, d, pb_strz(a, "score"), pb_float(a, i * 1.25)) ||
            pb_seq_append(a, l, d))
            return NULL;
    }
    return l;
}

typedef struct result {
    double secs;
    unsigned long iters;
} result;

/* Run fn in batches until at least secs have passed. */
static int bench_encode(const pb_value *v, double secs, result *r) {
    pb_buf out;
    pb_buf_init(&out);
    unsigned long n = 0;
    double t0 = now(), t;
    do {
        for (int k = 0; k < 64; k++) {
            out.len = 0;
            if (pb_jelly_encode(&out, PB_DIALECT_PB, v, NULL, NULL)) {
                pb_buf_free(&out);
                return -1;
            }
        }
        n += 64;
        t = now() - t0;
    } while (t < secs);
    pb_buf_free(&out);
    r->secs = t;
    r->iters = n;
    return 0;
}

static int decode_once(pb_banana_dec *d, const pb_buf *in, const pb_value *expect) {
    size_t used = 0;
    pb_value *sexp = NULL, *v = NULL;
    pb_errbuf e = {0};
    if (pb_banana_dec_feed(d, in->data, in->len, &used, &sexp) != 1 || used != in->len) {
        fprintf(stderr, "bench_codec: banana decode failed: %s\n", pb_banana_dec_errmsg(d));
        return -1;
    }
    if (pb_unjelly(pb_banana_dec_arena(d), sexp, NULL, &v, &e)) {
        fprintf(stderr, "bench_codec: unjelly failed: %s\n", e.msg);
        return -1;
    }
    if (expect && !pb_value_equal(v, expect)) {
        fprintf(stderr, "bench_codec: decoded payload differs from the original\n");
        return -1;
    }
    return 0;
}

/* mode 0: feed + unjelly (copying); 1: feed only; 2: feed + unjelly shared */
static int decode_mode(pb_banana_dec *d, const pb_buf *in, int mode) {
    size_t used = 0;
    pb_value *sexp = NULL, *v = NULL;
    if (pb_banana_dec_feed(d, in->data, in->len, &used, &sexp) != 1) return -1;
    if (mode == 1) return 0;
    pb_jelly_opts o = {0};
    o.share_bytes = 1;
    return pb_unjelly(pb_banana_dec_arena(d), sexp, &o, &v, NULL) ? -1 : 0;
}

static double bench_decode_mode(const pb_buf *in, double secs, int mode) {
    pb_banana_dec *d = pb_banana_dec_new(PB_DIALECT_PB, NULL);
    if (!d) return -1;
    unsigned long n = 0;
    double t0 = now(), t;
    do {
        for (int k = 0; k < 64; k++)
            if (decode_mode(d, in, mode)) {
                pb_banana_dec_free(d);
                return -1;
            }
        n += 64;
        t = now() - t0;
    } while (t < secs);
    pb_banana_dec_free(d);
    return t / (double)n * 1e6;
}

static int bench_decode(const pb_buf *in, const pb_value *expect, double secs, result *r) {
    pb_banana_dec *d = pb_banana_dec_new(PB_DIALECT_PB, NULL);
    if (!d) return -1;
    if (decode_once(d, in, expect)) { /* correctness first */
        pb_banana_dec_free(d);
        return -1;
    }
    unsigned long n = 0;
    double t0 = now(), t;
    do {
        for (int k = 0; k < 64; k++)
            if (decode_once(d, in, NULL)) {
                pb_banana_dec_free(d);
                return -1;
            }
        n += 64;
        t = now() - t0;
    } while (t < secs);
    pb_banana_dec_free(d);
    r->secs = t;
    r->iters = n;
    return 0;
}

int main(int argc, char **argv) {
    double secs = 2.0;
    int json = 0, split = 0, only = 0; /* only: 1 encode, 2 decode */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seconds") && i + 1 < argc) secs = atof(argv[++i]);
        else if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "--split")) split = 1;
        else if (!strcmp(argv[i], "--only") && i + 1 < argc && !strcmp(argv[i + 1], "encode"))
            only = 1, i++;
        else if (!strcmp(argv[i], "--only") && i + 1 < argc && !strcmp(argv[i + 1], "decode"))
            only = 2, i++;
        else {
            fprintf(stderr,
                    "usage: bench_codec [--seconds S] [--json] [--split] [--only encode|decode]\n");
            return 2;
        }
    }
    pb_arena *a = pb_arena_new(0);
    pb_value *payload = a ? build_payload(a) : NULL;
    if (!payload) {
        fprintf(stderr, "bench_codec: out of memory\n");
        return 1;
    }
    pb_buf wire;
    pb_buf_init(&wire);
    pb_errbuf e = {0};
    if (pb_jelly_encode(&wire, PB_DIALECT_PB, payload, NULL, &e)) {
        fprintf(stderr, "bench_codec: encode failed: %s\n", e.msg);
        return 1;
    }
    if (wire.len != PAYLOAD_BYTES) {
        fprintf(stderr, "bench_codec: payload is %zu bytes, CONTRACT.md says %u\n", wire.len,
                PAYLOAD_BYTES);
        return 1;
    }
    result enc = {1, 0}, dec = {1, 0};
    if ((only != 2 && bench_encode(payload, only ? secs : secs / 2, &enc)) ||
        (only != 1 && bench_decode(&wire, payload, only ? secs : secs / 2, &dec)))
        return 1;
    double enc_ps = enc.iters / enc.secs, dec_ps = dec.iters / dec.secs;
    if (json) {
        printf("{\"impl\": \"libpb\", \"payload_bytes\": %zu, \"payload_values\": %u, "
               "\"encode\": {\"mb_s\": %.2f, \"payloads_s\": %.0f, \"values_s\": %.0f}, "
               "\"decode\": {\"mb_s\": %.2f, \"payloads_s\": %.0f, \"values_s\": %.0f}}\n",
               wire.len, PAYLOAD_VALUES, enc_ps * wire.len / 1e6, enc_ps, enc_ps * PAYLOAD_VALUES,
               dec_ps * wire.len / 1e6, dec_ps, dec_ps * PAYLOAD_VALUES);
    } else {
        printf("payload: %zu bytes, %u values\n", wire.len, PAYLOAD_VALUES);
        printf("libpb encode: %8.2f MB/s  %9.0f payloads/s  %11.0f values/s\n",
               enc_ps * wire.len / 1e6, enc_ps, enc_ps * PAYLOAD_VALUES);
        printf("libpb decode: %8.2f MB/s  %9.0f payloads/s  %11.0f values/s\n",
               dec_ps * wire.len / 1e6, dec_ps, dec_ps * PAYLOAD_VALUES);
    }
    if (split) {
        double feed = bench_decode_mode(&wire, secs / 2, 1);
        double shared = bench_decode_mode(&wire, secs / 2, 2);
        if (feed < 0 || shared < 0) return 1;
        double full = dec.iters ? dec.secs / (double)dec.iters * 1e6 : 0;
        fprintf(json ? stderr : stdout,
                "decode split: banana feed %.2f us; feed+unjelly %.2f us (unjelly %.2f us); "
                "feed+unjelly shared %.2f us (%.2f MB/s)\n",
                feed, full, full - feed, shared, wire.len / shared);
    }
    pb_buf_free(&wire);
    pb_arena_free(a);
    return 0;
}
