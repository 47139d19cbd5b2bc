/* test_banana - the Banana decoder and token writers. */
#include "pb/banana.h"
#include "test.h"
#include "vectors_util.h"

static pb_value *g_root;
static pb_arena *g_va;

/* Feed p in chunks given by next_chunk; collect copies of the expressions.
 * Returns the final rc (<0 error, 0 incomplete/clean end). */
typedef struct run {
    int rc;
    int count;
    pb_value *exprs[8];
    char msg[256];
    size_t consumed;
} run;

static void feed_chunks(pb_arena *a, pb_dialect d, const pb_banana_limits *lim, const uint8_t *p,
                        size_t n, unsigned seed, run *r) {
    pb_banana_dec *dec = pb_banana_dec_new(d, lim);
    memset(r, 0, sizeof *r);
    size_t off = 0;
    uint32_t x = seed ? seed : 1;
    while (off < n) {
        size_t len = n - off;
        if (seed == 1) len = 1;
        else if (seed > 1) { x ^= x << 13; x ^= x >> 17; x ^= x << 5; len = 1 + x % 7; if (len > n - off) len = n - off; }
        /* a chunk may hold several expressions */
        size_t cur = 0;
        while (cur < len) {
            size_t used;
            pb_value *v;
            int rc = pb_banana_dec_feed(dec, p + off + cur, len - cur, &used, &v);
            cur += used;
            if (rc < 0) {
                r->rc = rc;
                snprintf(r->msg, sizeof r->msg, "%s", pb_banana_dec_errmsg(dec));
                r->consumed = off + cur;
                pb_banana_dec_free(dec);
                return;
            }
            if (rc == 1) {
                if (r->count < 8) r->exprs[r->count] = pb_value_copy(a, v);
                r->count++;
            }
            if (rc == 0) break;
        }
        off += len;
    }
    r->consumed = off;
    pb_banana_dec_free(dec);
}

static int expected_code(const char *exc, const char *msg) {
    if (!msg) msg = "";
    if (strstr(msg, "String too long")) return PB_ESTRLEN;
    if (strstr(msg, "List too long")) return PB_ELISTLEN;
    if (strstr(msg, "prefix")) return PB_EPREFIX;
    if (strstr(msg, "Invalid Type Byte")) return PB_ETYPEBYTE;
    if (strstr(msg, "Invalid item for pb protocol") || (exc && !strcmp(exc, "KeyError")))
        return PB_EVOCAB;
    return 1;
}

TEST(vocabulary_words_and_indices_agree) {
    CHECK(pb_banana_vocab_word(0) == NULL);
    CHECK(pb_banana_vocab_word(32) == NULL);
    for (unsigned i = 1; i <= PB_BANANA_VOCAB_SIZE; i++) {
        const char *w = pb_banana_vocab_word(i);
        CHECK(w != NULL);
        CHECK_EQ_INT(pb_banana_vocab_index(w, strlen(w)), i);
    }
    CHECK_EQ_INT(pb_banana_vocab_index("unicode", 7), 0);
    CHECK_EQ_INT(pb_banana_vocab_index("Nonf", 4), 0);
    CHECK_EQ_INT(pb_banana_vocab_index("None\0", 5), 0);
    CHECK_EQ_INT(pb_banana_vocab_index("", 0), 0);
    CHECK(strcmp(pb_banana_vocab_word(31), "uncache") == 0);
    /* against the table in vectors.json */
    const pb_value *meta = g_root ? pb_dict_get(g_root, "meta") : NULL;
    const pb_value *voc = meta ? pb_dict_get(meta, "vocabulary") : NULL;
    CHECK(voc && voc->u.seq.len == 31);
    for (size_t i = 0; voc && i < voc->u.seq.len; i++) {
        const pb_value *e = voc->u.seq.items[i];
        unsigned idx = (unsigned)e->u.seq.items[0]->u.i;
        CHECK(strcmp(pb_banana_vocab_word(idx), e->u.seq.items[1]->u.s.ptr) == 0);
    }
}

/* Every `decode` vector, fed whole, byte at a time and in random chunks. */
TEST(decode_vectors_match_twisted_under_any_chunking) {
    const pb_value *sec = g_root ? pb_dict_get(g_root, "decode") : NULL;
    CHECK(sec && sec->u.seq.len == 25);
    for (size_t i = 0; sec && i < sec->u.seq.len; i++) {
        const pb_value *vec = sec->u.seq.items[i];
        const char *name = vu_str(vec, "name"), *res = vu_str(vec, "result");
        pb_dialect d = strcmp(vu_str(vec, "dialect"), "pb") ? PB_DIALECT_NONE : PB_DIALECT_PB;
        size_t n;
        uint8_t *in = vu_unhex(vu_str(vec, "input_hex"), &n);
        const pb_value *want = pb_dict_get(vec, "expressions");
        pb_arena *a = pb_arena_new(0);
        for (unsigned seed = 0; seed < 12; seed++) {
            run r;
            feed_chunks(a, d, NULL, in, n, seed < 2 ? seed : seed * 7919u, &r);
            if (!strcmp(res, "error")) {
                int code = expected_code(vu_str(vec, "exception"), vu_str(vec, "message"));
                CHECK_MSG(r.rc == code, "%s seed %u: rc %d (%s), want %d", name, seed, r.rc, r.msg, code);
                CHECK_MSG(strstr(r.msg, "stream offset") != NULL, "%s: %s", name, r.msg);
            } else {
                CHECK_MSG(r.rc == 0, "%s seed %u: rc %d (%s)", name, seed, r.rc, r.msg);
                CHECK_MSG((size_t)r.count == want->u.seq.len, "%s: %d expressions", name, r.count);
                for (size_t k = 0; k < want->u.seq.len && k < (size_t)r.count; k++)
                    CHECK_MSG(pb_value_equal(r.exprs[k], vu_sexp(a, want->u.seq.items[k])),
                              "%s: expression %zu differs", name, k);
            }
        }
        /* Twisted's own messages, where they name the same thing */
        if (!strcmp(res, "error")) {
            run r;
            feed_chunks(a, d, NULL, in, n, 0, &r);
            const char *m = vu_str(vec, "message");
            if (strstr(m, "too long") || strstr(m, "Invalid"))
                CHECK_MSG(strncmp(r.msg, m, strlen(m)) == 0, "%s: '%s' vs '%s'", name, r.msg, m);
        }
        pb_arena_free(a);
        free(in);
    }
}

/* `messages` and every `encode` vector's bytes decode to their trees, and
 * re-encoding a decoded tree gives the same bytes. */
TEST(message_and_encode_bytes_decode_to_their_trees) {
    const char *secs[] = {"messages", "encode", "pb_objects"};
    int checked = 0;
    for (int s = 0; s < 3 && g_root; s++) {
        const pb_value *sec = pb_dict_get(g_root, secs[s]);
        for (size_t i = 0; sec && i < sec->u.seq.len; i++) {
            const pb_value *vec = sec->u.seq.items[i];
            const char *name = vu_str(vec, "name");
            size_t n;
            uint8_t *in = vu_unhex(vu_str(vec, "banana_hex"), &n);
            pb_arena *a = pb_arena_new(0);
            const pb_value *want = pb_dict_get(vec, s == 0 ? "decoded" : "jelly");
            /* "decoded" is a list of expressions unless it is one bare atom or
             * one list of atoms (the dialect offer/choice) */
            pb_value *wants[8];
            size_t nw = 0;
            int many = s == 0 && want->type == PB_LIST && want->u.seq.len &&
                       want->u.seq.items[0]->type == PB_LIST;
            if (many) for (size_t k = 0; k < want->u.seq.len && k < 8; k++) wants[nw++] = vu_sexp(a, want->u.seq.items[k]);
            else wants[nw++] = vu_sexp(a, want);
            pb_value *got[8] = {0};
            int inc;
            int c = vu_decode_all(a, PB_DIALECT_PB, in, n, got, 8, &inc);
            CHECK_MSG(c == (int)nw && !inc, "%s: %d expressions", name, c);
            for (size_t k = 0; k < nw && (int)k < c; k++) {
                CHECK_MSG(pb_value_equal(got[k], wants[k]), "%s: tree differs", name);
                pb_buf b;
                pb_buf_init(&b);
                pb_errbuf e = {0};
                CHECK(pb_banana_encode(&b, PB_DIALECT_PB, got[k], &e) == 0);
                if (nw == 1 && !strstr(name, "'none'")) CHECK_MSG(b.len == n && !memcmp(b.data, in, n), "%s: re-encode %s", name, vu_hex(b.data, b.len));
                pb_buf_free(&b);
            }
            /* byte at a time and random chunks: the same expressions */
            for (unsigned seed = 1; seed < 4; seed++) {
                run r;
                feed_chunks(a, PB_DIALECT_PB, NULL, in, n, seed == 1 ? 1 : seed * 31u, &r);
                CHECK_MSG(r.rc == 0 && r.count == (int)nw, "%s: chunked %d", name, r.count);
                for (size_t k = 0; k < nw && (int)k < r.count && k < 8; k++)
                    CHECK_MSG(pb_value_equal(r.exprs[k], wants[k]), "%s: chunked tree", name);
            }
            /* none-dialect bytes decode to the same tree */
            const char *hn = vu_str(vec, "banana_hex_none_dialect");
            if (hn) {
                size_t nn;
                uint8_t *inn = vu_unhex(hn, &nn);
                c = vu_decode_all(a, PB_DIALECT_NONE, inn, nn, got, 8, &inc);
                CHECK_MSG(c == 1 && pb_value_equal(got[0], wants[0]), "%s: none dialect", name);
                free(inn);
            }
            checked++;
            pb_arena_free(a);
            free(in);
        }
    }
    CHECK(checked >= 150);
}

static int enc_int_hex(int64_t v, const char *hex) {
    pb_buf b;
    pb_buf_init(&b);
    int rc = pb_banana_put_int(&b, v);
    int ok = rc == 0 && !strcmp(vu_hex(b.data, b.len), hex);
    if (!ok) fprintf(stderr, "  int %lld -> %s, want %s\n", (long long)v, vu_hex(b.data, b.len), hex);
    pb_buf_free(&b);
    return ok;
}

TEST(integers_use_twisteds_token_types_and_minimal_prefixes) {
    CHECK(enc_int_hex(0, "0081"));
    CHECK(enc_int_hex(127, "7f81"));
    CHECK(enc_int_hex(128, "000181"));
    CHECK(enc_int_hex(2147483647, "7f7f7f7f0781"));
    CHECK(enc_int_hex(2147483648LL, "000000000885"));
    CHECK(enc_int_hex(-1, "0183"));
    CHECK(enc_int_hex(-2147483648LL, "000000000883"));
    CHECK(enc_int_hex(-2147483649LL, "010000000886"));
    CHECK(enc_int_hex(INT64_MAX, "7f7f7f7f7f7f7f7f7f85"));
    CHECK(enc_int_hex(INT64_MIN, "0000000000000000000186"));
}

TEST(bigints_round_trip_and_2_pow_448_is_refused) {
    pb_arena *a = pb_arena_new(0);
    uint32_t l[15] = {0};
    for (int i = 0; i < 14; i++) l[i] = 0xffffffffu; /* 2**448 - 1 */
    pb_buf b;
    pb_buf_init(&b);
    for (int neg = 0; neg < 2; neg++) {
        b.len = 0;
        pb_value *v = pb_bigint(a, neg, l, 14);
        CHECK(pb_banana_put_bigint(&b, v) == 0);
        CHECK_EQ_INT(b.len, 65);
        CHECK_EQ_INT(b.data[64], neg ? 0x86 : 0x85);
        int inc;
        pb_value *got[1] = {0};
        CHECK(vu_decode_all(a, PB_DIALECT_PB, b.data, b.len, got, 1, &inc) == 1);
        CHECK(pb_value_equal(got[0], v));
    }
    l[14] = 1; /* 2**448 */
    for (int i = 0; i < 14; i++) l[i] = 0;
    b.len = 3;
    CHECK(pb_banana_put_bigint(&b, pb_bigint(a, 0, l, 15)) == PB_EUNSENDABLE);
    CHECK(pb_banana_put_bigint(&b, pb_bigint(a, 1, l, 15)) == PB_EUNSENDABLE);
    CHECK_EQ_INT(b.len, 3);
    /* 2**64 decodes to a bigint */
    const uint8_t in[] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0x85};
    pb_value *got[1] = {0};
    int inc;
    CHECK(vu_decode_all(a, PB_DIALECT_PB, in, sizeof in, got, 1, &inc) == 1);
    CHECK(got[0]->type == PB_BIGINT && got[0]->u.big.nlimbs == 3 && got[0]->u.big.limbs[2] == 1);
    pb_buf_free(&b);
    pb_arena_free(a);
}

TEST(floats_keep_their_bits_and_skip_a_prefix) {
    pb_buf b;
    pb_buf_init(&b);
    CHECK(pb_banana_put_float(&b, -0.0) == 0);
    CHECK(!strcmp(vu_hex(b.data, b.len), "848000000000000000"));
    pb_arena *a = pb_arena_new(0);
    const uint8_t in[] = {0x05, 0x7f, 0x84, 0x7f, 0xf8, 0, 0, 0, 0, 0, 1};
    pb_value *got[1] = {0};
    int inc;
    CHECK(vu_decode_all(a, PB_DIALECT_PB, in, sizeof in, got, 1, &inc) == 1);
    uint64_t bits;
    memcpy(&bits, &got[0]->u.f, 8);
    CHECK(bits == 0x7ff8000000000001ull);
    pb_buf_free(&b);
    pb_arena_free(a);
}

TEST(byte_strings_become_vocab_only_in_the_pb_dialect) {
    pb_buf b;
    pb_buf_init(&b);
    CHECK(pb_banana_put_bytes(&b, PB_DIALECT_PB, "version", 7) == 0);
    CHECK(!strcmp(vu_hex(b.data, b.len), "1387"));
    b.len = 0;
    CHECK(pb_banana_put_bytes(&b, PB_DIALECT_NONE, "version", 7) == 0);
    CHECK(!strcmp(vu_hex(b.data, b.len), "078276657273696f6e"));
    b.len = 0;
    CHECK(pb_banana_put_bytes(&b, PB_DIALECT_PB, "versio", 6) == 0);
    CHECK(!strcmp(vu_hex(b.data, b.len), "068276657273696f"));
    char *big = calloc(1, PB_BANANA_SIZE_LIMIT + 1);
    b.len = 0;
    CHECK(pb_banana_put_bytes(&b, PB_DIALECT_PB, big, PB_BANANA_SIZE_LIMIT) == 0);
    CHECK_EQ_INT(b.len, PB_BANANA_SIZE_LIMIT + 4);
    b.len = 0;
    CHECK(pb_banana_put_bytes(&b, PB_DIALECT_PB, big, PB_BANANA_SIZE_LIMIT + 1) == PB_EUNSENDABLE);
    CHECK(pb_banana_put_list(&b, PB_BANANA_SIZE_LIMIT) == 0);
    CHECK(pb_banana_put_list(&b, PB_BANANA_SIZE_LIMIT + 1) == PB_EUNSENDABLE);
    free(big);
    pb_buf_free(&b);
}

TEST(a_string_body_may_span_many_feeds) {
    pb_banana_dec *d = pb_banana_dec_new(PB_DIALECT_PB, NULL);
    uint8_t in[3 + 1000];
    in[0] = 0x68; in[1] = 0x07; in[2] = 0x82; /* 1000 */
    for (int i = 0; i < 1000; i++) in[3 + i] = (uint8_t)i;
    size_t used, off = 0;
    pb_value *v = NULL;
    int rc = 0;
    while (off < sizeof in && rc == 0) {
        size_t n = sizeof in - off < 333 ? sizeof in - off : 333;
        rc = pb_banana_dec_feed(d, in + off, n, &used, &v);
        off += used;
    }
    CHECK(rc == 1 && v && v->type == PB_BYTES && v->u.s.len == 1000);
    CHECK(v && !memcmp(v->u.s.ptr, in + 3, 1000) && v->u.s.ptr[1000] == 0);
    CHECK_EQ_INT(pb_banana_dec_offset(d), sizeof in);
    pb_banana_dec_free(d);
}

TEST(a_top_level_atom_is_a_complete_expression) {
    pb_banana_dec *d = pb_banana_dec_new(PB_DIALECT_NONE, NULL);
    const uint8_t in[] = {0x02, 0x82, 'p', 'b', 0x01, 0x80, 0x13, 0x87};
    size_t used;
    pb_value *v;
    CHECK(pb_banana_dec_feed(d, in, sizeof in, &used, &v) == 1);
    CHECK_EQ_INT(used, 4);
    CHECK(pb_value_is(v, "pb"));
    pb_banana_dec_set_dialect(d, PB_DIALECT_PB); /* the choice switches the dialect */
    CHECK(pb_banana_dec_feed(d, in + 4, 4, &used, &v) == 1);
    CHECK(v->type == PB_SEXP_LIST && pb_value_is(v->u.seq.items[0], "version"));
    /* zero copy: the word is the static vocabulary string */
    CHECK(v->u.seq.items[0]->u.s.ptr == pb_banana_vocab_word(19));
    pb_banana_dec_free(d);
}

static int feed_once(pb_banana_dec *d, const uint8_t *p, size_t n, size_t *used) {
    pb_value *v;
    return pb_banana_dec_feed(d, p, n, used, &v);
}

TEST(limits_are_checked_before_anything_is_allocated) {
    pb_banana_limits lim;
    pb_banana_limits_default(&lim);
    lim.max_string = 10;
    lim.max_list = 3;
    lim.max_bytes = 4096;
    pb_banana_dec *d = pb_banana_dec_new(PB_DIALECT_PB, &lim);
    size_t used;
    const uint8_t s11[] = {0x0b, 0x82};
    CHECK(feed_once(d, s11, 2, &used) == PB_ESTRLEN);
    CHECK_EQ_INT(pb_arena_used(pb_banana_dec_arena(d)), 0);
    CHECK(strstr(pb_banana_dec_errmsg(d), "String too long") && strstr(pb_banana_dec_errmsg(d), "offset 1"));
    CHECK(feed_once(d, s11, 2, &used) == PB_ESTRLEN); /* sticky */
    pb_banana_dec_free(d);

    d = pb_banana_dec_new(PB_DIALECT_PB, &lim);
    const uint8_t l4[] = {0x02, 0x80, 0x04, 0x80};
    CHECK(feed_once(d, l4, 4, &used) == PB_ELISTLEN);
    CHECK(strstr(pb_banana_dec_errmsg(d), "List too long") && strstr(pb_banana_dec_errmsg(d), "offset 3"));
    pb_banana_dec_free(d);

    /* a string the arena cannot hold fails at its header, not after 5000 bytes */
    lim.max_string = PB_BANANA_SIZE_LIMIT;
    d = pb_banana_dec_new(PB_DIALECT_PB, &lim);
    const uint8_t s5000[] = {0x08, 0x27, 0x82};
    CHECK(feed_once(d, s5000, 3, &used) == PB_ELIMIT);
    CHECK(strstr(pb_banana_dec_errmsg(d), "offset 2") != NULL);
    pb_banana_dec_free(d);

    /* the default: exactly 640 KiB allowed, one more refused, both before the body */
    d = pb_banana_dec_new(PB_DIALECT_PB, NULL);
    const uint8_t ok[] = {0x00, 0x00, 0x28, 0x82};
    CHECK(feed_once(d, ok, 4, &used) == 0);
    pb_banana_dec_free(d);
}

TEST(depth_items_and_prefix_limits) {
    pb_banana_limits lim;
    pb_banana_limits_default(&lim);
    lim.max_depth = 3;
    lim.max_items = 5;
    pb_banana_dec *d = pb_banana_dec_new(PB_DIALECT_PB, &lim);
    size_t used;
    const uint8_t deep[] = {0x01, 0x80, 0x01, 0x80, 0x01, 0x80, 0x01, 0x80};
    CHECK(feed_once(d, deep, 6, &used) == 0); /* three levels are fine */
    CHECK(feed_once(d, deep + 6, 2, &used) == PB_EDEPTH);
    CHECK(strstr(pb_banana_dec_errmsg(d), "offset 7") != NULL);
    pb_banana_dec_free(d);

    d = pb_banana_dec_new(PB_DIALECT_PB, &lim);
    const uint8_t many[] = {0x06, 0x80, 1, 0x81, 2, 0x81, 3, 0x81, 4, 0x81, 5, 0x81};
    CHECK(feed_once(d, many, sizeof many, &used) == PB_ELIMIT);
    pb_banana_dec_free(d);

    /* 64 prefix bytes wait; the 65th is refused at once */
    d = pb_banana_dec_new(PB_DIALECT_PB, NULL);
    uint8_t pre[65];
    memset(pre, 1, sizeof pre);
    CHECK(feed_once(d, pre, 64, &used) == 0);
    CHECK(feed_once(d, pre, 1, &used) == PB_EPREFIX);
    CHECK(strstr(pb_banana_dec_errmsg(d), "offset 64") != NULL);
    pb_banana_dec_free(d);
}

TEST(expressions_in_one_chunk_come_out_one_by_one) {
    pb_banana_dec *d = pb_banana_dec_new(PB_DIALECT_PB, NULL);
    const uint8_t in[] = {0x02, 0x80, 0x01, 0x81, 0x00, 0x80, 0x03, 0x81};
    size_t used, off = 0;
    pb_value *v;
    CHECK(pb_banana_dec_feed(d, in, sizeof in, &used, &v) == 1);
    off += used;
    CHECK_EQ_INT(used, 6);
    CHECK(v->u.seq.len == 2 && v->u.seq.items[1]->type == PB_SEXP_LIST);
    pb_arena *keep = pb_banana_dec_take_arena(d);
    CHECK(keep != NULL);
    pb_value *kept = v;
    CHECK(pb_banana_dec_feed(d, in + off, sizeof in - off, &used, &v) == 1);
    CHECK(v->type == PB_INT && v->u.i == 3);
    /* the taken expression survived the next feed */
    CHECK(kept->u.seq.items[0]->u.i == 1);
    pb_arena_free(keep);
    pb_banana_dec_free(d);
}

TEST(random_garbage_never_crashes) {
    uint32_t x = 12345;
    pb_banana_limits lim;
    pb_banana_limits_default(&lim);
    lim.max_bytes = 1 << 20;
    for (int round = 0; round < 2000; round++) {
        uint8_t buf[256];
        for (size_t i = 0; i < sizeof buf; i++) {
            x ^= x << 13; x ^= x >> 17; x ^= x << 5;
            /* biased toward small prefixes and valid type bytes */
            buf[i] = (uint8_t)(x % 3 == 0 ? 0x80 + (x >> 8) % 9 : (x >> 8) % 5);
        }
        pb_banana_dec *d = pb_banana_dec_new(round & 1 ? PB_DIALECT_PB : PB_DIALECT_NONE, &lim);
        size_t off = 0;
        while (off < sizeof buf) {
            size_t used;
            pb_value *v;
            int rc = pb_banana_dec_feed(d, buf + off, sizeof buf - off, &used, &v);
            CHECK(used <= sizeof buf - off);
            off += used;
            if (rc <= 0) break;
        }
        pb_banana_dec_free(d);
    }
}

/* A random well-formed stream mixing every token kind, long zero-padded
 * prefixes, strings past the small-value size and lists longer than the
 * bytes that follow their header. */
static void gen_expr(pb_buf *b, uint32_t *x, int depth) {
    *x ^= *x << 13; *x ^= *x >> 17; *x ^= *x << 5;
    unsigned k = depth > 4 ? 1 + *x % 6 : *x % 7;
    uint32_t r = *x >> 8;
    switch (k) {
    case 0: { /* list */
        size_t n = r % 40;
        pb_banana_put_list(b, n);
        for (size_t i = 0; i < n; i++) gen_expr(b, x, depth + 1);
        break;
    }
    case 1: pb_banana_put_int(b, (int64_t)(r % 3 ? r % 300 : r) * (r & 1 ? -1 : 1)); break;
    case 2: pb_banana_put_float(b, r * 0.25); break;
    case 3: { /* a string, sometimes past 256 bytes */
        char s[700];
        size_t n = r % 5 == 0 ? 200 + r % 500 : r % 24;
        for (size_t i = 0; i < n; i++) s[i] = (char)('a' + (r + i) % 26);
        pb_banana_put_bytes(b, PB_DIALECT_NONE, s, n);
        break;
    }
    case 4: pb_banana_put_bytes(b, PB_DIALECT_PB, "dictionary", 10); break; /* VOCAB */
    case 5: { /* int with a zero-padded 12-byte prefix */
        uint8_t t[13] = {(uint8_t)(r & 0x7f), (uint8_t)(r >> 7 & 0x7f)};
        t[12] = 0x81;
        pb_buf_append(b, t, sizeof t);
        break;
    }
    default: { /* a big int (more than 63 bits) */
        uint8_t t[11];
        for (int i = 0; i < 10; i++) t[i] = (uint8_t)((r >> i) & 0x7f) | 1;
        t[10] = r & 1 ? 0x85 : 0x86;
        pb_buf_append(b, t, sizeof t);
        break;
    }
    }
}

TEST(fast_and_byte_at_a_time_paths_build_the_same_trees) {
    uint32_t x = 777;
    for (int round = 0; round < 200; round++) {
        pb_buf b;
        pb_buf_init(&b);
        pb_banana_put_list(&b, 3);
        for (int i = 0; i < 3; i++) gen_expr(&b, &x, 0);
        pb_arena *a = pb_arena_new(0);
        run whole, bytes, rnd;
        feed_chunks(a, PB_DIALECT_PB, NULL, b.data, b.len, 0, &whole);
        feed_chunks(a, PB_DIALECT_PB, NULL, b.data, b.len, 1, &bytes);
        feed_chunks(a, PB_DIALECT_PB, NULL, b.data, b.len, (unsigned)round + 2, &rnd);
        CHECK_MSG(whole.rc == 0 && whole.count == 1, "round %d: rc %d %s", round, whole.rc, whole.msg);
        CHECK(bytes.count == 1 && rnd.count == 1);
        if (whole.count == 1 && bytes.count == 1 && rnd.count == 1) {
            CHECK_MSG(pb_value_equal(whole.exprs[0], bytes.exprs[0]), "round %d", round);
            CHECK_MSG(pb_value_equal(whole.exprs[0], rnd.exprs[0]), "round %d", round);
            /* and it is what was encoded */
            pb_buf again;
            pb_buf_init(&again);
            CHECK(pb_banana_encode(&again, PB_DIALECT_PB, whole.exprs[0], NULL) == 0);
            pb_arena *a2 = pb_arena_new(0);
            run re;
            feed_chunks(a2, PB_DIALECT_PB, NULL, again.data, again.len, 0, &re);
            CHECK(re.count == 1 && pb_value_equal(re.exprs[0], whole.exprs[0]));
            pb_arena_free(a2);
            pb_buf_free(&again);
        }
        pb_arena_free(a);
        pb_buf_free(&b);
    }
}

TEST(the_memory_limit_is_exact_under_the_fast_path) {
    /* 40 one-byte strings: each value plus its body takes 40 arena bytes,
     * the list 32 + 8 * 40: 1952 bytes in all */
    uint8_t in[2 + 40 * 3];
    size_t n = 0;
    in[n++] = 40;
    in[n++] = 0x80;
    for (int i = 0; i < 40; i++) {
        in[n++] = 1;
        in[n++] = 0x82;
        in[n++] = (uint8_t)('a' + i % 26);
    }
    pb_banana_limits lim;
    pb_banana_limits_default(&lim);
    for (size_t max = 1900; max <= 2100; max += 8) {
        lim.max_bytes = max;
        pb_banana_dec *d = pb_banana_dec_new(PB_DIALECT_PB, &lim);
        size_t used;
        pb_value *v;
        int rc = pb_banana_dec_feed(d, in, n, &used, &v);
        if (max >= 1952) {
            CHECK_MSG(rc == 1 && v->u.seq.len == 40, "max %zu: rc %d", max, rc);
            CHECK(rc != 1 || (v->u.seq.items[39]->u.s.len == 1 &&
                              v->u.seq.items[39]->u.s.ptr[0] == 'a' + 39 % 26 &&
                              v->u.seq.items[39]->u.s.ptr[1] == 0));
        } else {
            CHECK_MSG(rc == PB_ELIMIT, "max %zu: rc %d", max, rc);
            CHECK(strstr(pb_banana_dec_errmsg(d), "bytes of memory") != NULL);
        }
        pb_banana_dec_free(d);
    }
}

TEST(arenas_are_reused_across_expressions_and_taken_arenas_stay_valid) {
    /* many expressions through one decoder: reset keeps the blocks, a
     * taken arena keeps its values while the decoder goes on */
    pb_buf b;
    pb_buf_init(&b);
    uint32_t x = 99;
    for (int i = 0; i < 50; i++) {
        pb_banana_put_list(&b, 2);
        gen_expr(&b, &x, 0);
        gen_expr(&b, &x, 0);
    }
    pb_banana_dec *d = pb_banana_dec_new(PB_DIALECT_PB, NULL);
    pb_arena *keep[50] = {0}, *copies = pb_arena_new(0);
    pb_value *kept[50] = {0}, *copy[50] = {0};
    size_t off = 0;
    int k = 0;
    while (off < b.len && k < 50) {
        size_t used;
        pb_value *v;
        int rc = pb_banana_dec_feed(d, b.data + off, b.len - off, &used, &v);
        off += used;
        CHECK(rc == 1);
        if (rc != 1) break;
        copy[k] = pb_value_copy(copies, v);
        if (k % 3 == 0) {
            kept[k] = v;
            keep[k] = pb_banana_dec_take_arena(d);
            CHECK(keep[k] != NULL && pb_arena_owns(keep[k], v));
        }
        k++;
    }
    CHECK(k == 50 && off == b.len);
    for (int i = 0; i < k; i++)
        if (keep[i]) {
            CHECK(pb_value_equal(kept[i], copy[i]));
            pb_arena_free(keep[i]);
        }
    pb_arena_free(copies);
    pb_banana_dec_free(d);
    pb_buf_free(&b);
}

int main(void) {
    g_va = pb_arena_new(0);
    g_root = vu_load(g_va);
    RUN(vocabulary_words_and_indices_agree);
    RUN(decode_vectors_match_twisted_under_any_chunking);
    RUN(message_and_encode_bytes_decode_to_their_trees);
    RUN(integers_use_twisteds_token_types_and_minimal_prefixes);
    RUN(bigints_round_trip_and_2_pow_448_is_refused);
    RUN(floats_keep_their_bits_and_skip_a_prefix);
    RUN(byte_strings_become_vocab_only_in_the_pb_dialect);
    RUN(a_string_body_may_span_many_feeds);
    RUN(a_top_level_atom_is_a_complete_expression);
    RUN(limits_are_checked_before_anything_is_allocated);
    RUN(depth_items_and_prefix_limits);
    RUN(expressions_in_one_chunk_come_out_one_by_one);
    RUN(random_garbage_never_crashes);
    RUN(fast_and_byte_at_a_time_paths_build_the_same_trees);
    RUN(the_memory_limit_is_exact_under_the_fast_path);
    RUN(arenas_are_reused_across_expressions_and_taken_arenas_stay_valid);
    pb_arena_free(g_va);
    return TEST_SUMMARY();
}
