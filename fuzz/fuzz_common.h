/*
 * fuzz/fuzz_common.h - shared by the broker harnesses (fuzz_broker_*.c).
 *
 * INPUT LAYOUT.  The first byte of every broker harness input is a control
 * byte; the rest is the byte stream a hostile peer sends:
 *   bits 0-2  chunking: 0 all at once, 1 one byte at a time, k >= 2 chunks
 *             of 1..2^(k+1) bytes (sizes from a PRNG seeded by the input)
 *   bit 3     time passes: after each chunk the clock advances 0..1.5 s and
 *             pb_broker_tick runs (timeouts, idle pings, deferred answers)
 *   bit 4     tight limits (few refs, few calls in flight, small output
 *             and banana limits) so the limit paths are reachable; with
 *             chunking 7 as well (ctl & 0x17 == 0x17) the peer does not
 *             read: output is drained only at the end
 *   bit 5     the close callback frees the broker from inside the callback
 *   bits 6-7  harness specific (see each harness)
 *
 * ORACLES beyond ASan/UBSan/LSan: everything the broker writes must decode
 * as Banana (we decode the output stream as it is drained), and the object
 * counters of each harness must be back to zero once the broker is freed
 * and the harness dropped what it held (every exported object released,
 * every avatar logged out exactly once).
 *
 * Each harness defines its body as fz_<name>_one(data, size) and, unless
 * FZ_NO_MAIN is defined, LLVMFuzzerTestOneInput calling it, so that
 * tests/test_fuzz_regressions.c can #include the harness sources and run
 * the checked-in regression inputs without libFuzzer.
 */
#ifndef PB_FUZZ_COMMON_H
#define PB_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pb/pb.h"

#define FZ_CHECK(cond)                                                                   \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "fuzz invariant failed at %s:%d: %s\n", __FILE__, __LINE__, \
                    #cond);                                                              \
            abort();                                                                     \
        }                                                                                \
    } while (0)

/* ------------------------------------------------------------------ PRNG */

typedef struct fz_rng {
    uint64_t s;
} fz_rng;

static inline void fz_rng_seed(fz_rng *r, const uint8_t *data, size_t size) {
    /* FNV-1a over (a bounded prefix of) the input: deterministic per input */
    uint64_t h = 1469598103934665603ull ^ size;
    for (size_t i = 0; i < size && i < 64; i++) h = (h ^ data[i]) * 1099511628211ull;
    r->s = h ? h : 0x9e3779b97f4a7c15ull;
}

static inline uint32_t fz_rand(fz_rng *r) {
    uint64_t x = r->s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    r->s = x;
    return (uint32_t)(x >> 32);
}

/* --------------------------------------------------------------- control */

enum {
    FZ_CHUNK_MASK = 0x07,
    FZ_TICKS = 0x08,
    FZ_TIGHT = 0x10,
    FZ_FREE_IN_CLOSE = 0x20,
    FZ_MODE_SHIFT = 6
};

/* One broker under test and what the harness observed of it. */
typedef struct fz_peer {
    pb_broker *b;
    unsigned ctl;
    int closed;              /* close callback ran */
    int freed;               /* we freed the broker (maybe from inside close) */
    int connected;           /* connected callback ran */
    uint64_t now;            /* the fake clock */
    fz_rng rng;
    pb_banana_dec *oracle;   /* decodes everything the broker sends */
    void (*on_connected)(struct fz_peer *p);
    void (*on_tick)(struct fz_peer *p);
    void *ud;
} fz_peer;

static void fz_cb_close(pb_broker *b, int code, const char *msg, void *ud) {
    fz_peer *p = ud;
    (void)code;
    (void)msg;
    FZ_CHECK(p->b == b);
    p->closed = 1;
    if (p->ctl & FZ_FREE_IN_CLOSE) {
        /* a transport that frees at once: allowed from inside a callback */
        pb_broker_free(b);
        p->freed = 1;
    }
}

static void fz_cb_connected(pb_broker *b, void *ud) {
    fz_peer *p = ud;
    FZ_CHECK(p->b == b);
    FZ_CHECK(!p->connected);
    p->connected = 1;
    if (p->on_connected) p->on_connected(p);
}

static void fz_cb_output_ready(pb_broker *b, void *ud) {
    (void)b;
    (void)ud;
}

static void fz_cb_log(pb_broker *b, const char *msg, void *ud) {
    (void)b;
    (void)ud;
    FZ_CHECK(msg != NULL);
    FZ_CHECK(strlen(msg) < 4096);
}

static inline pb_broker_callbacks fz_callbacks(fz_peer *p) {
    pb_broker_callbacks cb;
    memset(&cb, 0, sizeof cb);
    cb.ud = p;
    cb.output_ready = fz_cb_output_ready;
    cb.close = fz_cb_close;
    cb.connected = fz_cb_connected;
    cb.log = fz_cb_log;
    return cb;
}

static inline void fz_config(pb_broker_config *c, unsigned ctl, int is_server) {
    pb_broker_config_default(c);
    c->is_server = is_server;
    if (ctl & FZ_TIGHT) {
        c->max_refs = 6;
        c->max_pending_calls = 3;
        c->max_inflight = 3;
        c->max_output = 2048;
        c->limits.max_string = 4096;
        c->limits.max_list = 256;
        c->limits.max_depth = 12;
        c->limits.max_items = 2048;
        c->limits.max_bytes = 1 << 18;
        c->unsafe_tracebacks = 1;
    }
    if (ctl & FZ_TICKS) c->idle_ping_ms = 2000;
}

static inline void fz_peer_init(fz_peer *p, unsigned ctl, const uint8_t *data, size_t size) {
    memset(p, 0, sizeof *p);
    p->ctl = ctl;
    p->now = 1000;
    fz_rng_seed(&p->rng, data, size);
    pb_banana_limits l;
    pb_banana_limits_default(&l);
    l.max_depth = 100000;
    l.max_items = (size_t)1 << 26;
    l.max_bytes = (size_t)1 << 30;
    p->oracle = pb_banana_dec_new(PB_DIALECT_PB, &l);
    FZ_CHECK(p->oracle != NULL);
}

/* Everything the broker wants to send: consume it (in random portions, as
 * a socket would) and check that it is well-formed Banana. */
static inline int fz_stalled(const fz_peer *p) {
    return (p->ctl & (FZ_TIGHT | FZ_CHUNK_MASK)) == (FZ_TIGHT | FZ_CHUNK_MASK);
}

static inline void fz_drain_now(fz_peer *p);

static inline void fz_drain(fz_peer *p) {
    if (!fz_stalled(p)) fz_drain_now(p);
}

static inline void fz_drain_now(fz_peer *p) {
    if (p->freed || !p->b) return;
    for (;;) {
        const uint8_t *out = NULL;
        size_t n = pb_broker_output(p->b, &out);
        if (!n) return;
        FZ_CHECK(out != NULL);
        size_t take = n;
        if ((p->ctl & FZ_CHUNK_MASK) >= 2 && (fz_rand(&p->rng) & 3) == 0)
            take = 1 + fz_rand(&p->rng) % n;
        size_t off = 0;
        while (off < take) {
            size_t used = 0;
            pb_value *x = NULL;
            int rc = pb_banana_dec_feed(p->oracle, out + off, take - off, &used, &x);
            if (rc < 0)
                fprintf(stderr, "broker output is not valid banana: %s\n",
                        pb_banana_dec_errmsg(p->oracle));
            FZ_CHECK(rc >= 0);
            off += used;
            if (rc == 0) break;
        }
        FZ_CHECK(off == take);
        pb_broker_output_consume(p->b, take);
    }
}

static inline void fz_tick(fz_peer *p) {
    if (p->freed || !p->b) return;
    if (p->ctl & FZ_TICKS) {
        p->now += fz_rand(&p->rng) % 1500;
        pb_broker_tick(p->b, p->now);
    }
    if (!p->freed && p->on_tick) p->on_tick(p);
    fz_drain(p);
}

/* Feed data in chunks per the control byte; drain and tick after each. */
static inline void fz_feed(fz_peer *p, const uint8_t *data, size_t size) {
    unsigned mode = p->ctl & FZ_CHUNK_MASK;
    size_t off = 0;
    fz_drain(p);
    while (off < size && !p->freed) {
        size_t n = size - off;
        if (mode == 1) n = 1;
        else if (mode >= 2) {
            size_t cap = (size_t)1 << (mode + 1);
            size_t c = 1 + fz_rand(&p->rng) % cap;
            if (c < n) n = c;
        }
        int rc = pb_broker_feed(p->b, data + off, n);
        off += n;
        if (p->freed) break;
        fz_drain(p);
        fz_tick(p);
        if (rc) {
            /* fatal: the close callback ran; feeding more must stay harmless */
            FZ_CHECK(p->closed || p->freed || (rc == PB_ECLOSED && !pb_broker_is_connected(p->b)));
            if (!p->freed) FZ_CHECK(pb_broker_feed(p->b, data, size ? 1 : 0) != 0 || !size);
            break;
        }
    }
    /* let time run out: every timeout and idle ping fires */
    for (int i = 0; i < 4 && !p->freed; i++) {
        if (p->ctl & FZ_TICKS) p->now += 3000;
        fz_tick(p);
    }
}

/* The transport's side of the end: connection lost, then free. */
static inline void fz_finish(fz_peer *p) {
    if (!p->freed && p->b) {
        fz_drain_now(p);
        pb_broker_connection_lost(p->b, "fuzz input over");
        pb_broker_connection_lost(p->b, "twice"); /* idempotent */
        FZ_CHECK(!pb_broker_is_connected(p->b));
        FZ_CHECK(pb_broker_feed(p->b, (const uint8_t *)"x", 1) != 0);
        pb_broker_tick(p->b, p->now + 100000);
        pb_broker_free(p->b);
        p->freed = 1;
    }
    p->b = NULL;
    pb_banana_dec_free(p->oracle);
    p->oracle = NULL;
}

#endif
