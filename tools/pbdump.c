/*
 * pbdump - decode a Perspective Broker byte stream into readable messages.
 *
 * Reads one direction of a PB connection (a file, or stdin), splits it into
 * top-level Banana expressions with libpb's decoder, recognises the dialect
 * handshake and shows every later expression as a PB message with its
 * arguments unjellied.  See `pbdump --help` or docs/man/pbdump.1.
 *
 * A dump tool must show whatever a peer sent, so unjellying is permissive:
 * every instance tag found in an expression is registered for that
 * expression only, and PB references (remote, local, cached, lcache) are
 * turned into placeholder instances that render as <remote 3>.  None of
 * this touches the library's own security defaults.
 */
#include <errno.h>
#include <stdarg.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "pb/banana.h"
#include "pb/jelly.h"
#include "pb/value.h"
#include "ptrmap.h"

#define MAX_TAGS 256                 /* tags registered per expression */
#define MSG_ARENA_LIMIT (64u << 20)  /* bytes for one message's values */
#define JSON_NODE_BUDGET 200000u     /* values converted for one JSON field */

enum { EXIT_OK = 0, EXIT_MALFORMED = 1, EXIT_USAGE = 2 };

static const char usage_text[] =
"Usage: pbdump [OPTION]... [FILE]...\n"
"       pbdump [OPTION]... --both C2S S2C\n"
"Decode Twisted Perspective Broker (PB) byte streams into readable messages.\n";

static const char help_text[] =
"\n"
"Each FILE holds the raw bytes of ONE direction of a PB connection, from\n"
"the first byte on (a TCP payload, not a capture file).  With no FILE, or\n"
"when FILE is -, standard input is read.  Several FILEs are dumped one\n"
"after another, each under a '== FILE' header.\n"
"\n"
"The stream is split into top-level Banana expressions.  The first one is\n"
"the dialect handshake: a server's stream starts with the offer list\n"
"(\"pb\" \"none\") and a client's with its choice as a bare string (\"pb\").\n"
"pbdump labels the stream s2c or c2s accordingly, then decodes the rest in\n"
"the chosen dialect (with the pb vocabulary unless the choice was \"none\").\n"
"A stream that does not start with a handshake is decoded as PB messages\n"
"from its first byte.\n"
"\n"
"Every later expression is one PB message, shown on one line as\n"
"  DIR #N KIND FIELDS\n"
"where KIND and FIELDS are:\n"
"  version       version=6\n"
"  message       req=REQ obj=OBJ method=\"NAME\" answer=0|1 args=... kwargs=...\n"
"  cachemessage  as message; obj is the LUID of a cache the receiver holds\n"
"  answer        req=REQ result=...\n"
"  error         req=REQ failure=TYPE: 'VALUE'   (a CopyableFailure), or\n"
"                req=REQ failure=<the exception object, when it is Copyable>\n"
"  decref, decache, uncache   luid=LUID\n"
"  didNotUnderstand           name=...\n"
"Values are shown Python-style: b'..' bytes, '..' str, (..) tuple, [..]\n"
"list, {..} dict; <remote 3>, <local 2>, <cached 1>, <lcache 1> are PB\n"
"references; <pkg.Class STATE> is a Copyable (or Cacheable, whose STATE is\n"
"the tuple (LUID, STATE)) instance.  Every instance tag is accepted: this\n"
"is a dump tool, not a peer.\n"
"\n"
"Options:\n"
"  -j, --json        one JSON object per line per expression instead of text.\n"
"                    Fields: file, dir (\"c2s\", \"s2c\" or \"?\"), n (1-based\n"
"                    index), offset, length, kind (offer, choice, version,\n"
"                    message, cachemessage, answer, error, decref, decache,\n"
"                    uncache, didNotUnderstand, unknown, invalid), then per\n"
"                    kind: dialects; dialect; version; req, obj, method,\n"
"                    answer_required, args, kwargs; req, result; req,\n"
"                    failure, failure_type, failure_value; luid; name.\n"
"                    Every decoded value VALUE also has VALUE_repr, the text\n"
"                    form.  In the JSON form str and UTF-8 bytes are strings,\n"
"                    other bytes {\"$bytes\": BASE64}, instances {\"$class\": TAG,\n"
"                    \"state\": ...}, references {\"$remote\": LUID} (also\n"
"                    $local, $cached, $lcache), dates {\"$datetime\": TEXT}...,\n"
"                    and anything else {\"$repr\": TEXT}.  A problem with the\n"
"                    input adds a line of kind \"invalid\" with a \"problem\".\n"
"  -x, --hex         after each message, an annotated hex view of its bytes:\n"
"                    one line per Banana token (stream offset, bytes, meaning),\n"
"                    string bodies 16 bytes a line.  With --json: a \"hex\"\n"
"                    field holding the expression's bytes.\n"
"  -s, --sexp        also show each expression as a raw s-expression.\n"
"  -o, --offset      show each message's stream offset and length (@OFF+LEN);\n"
"                    JSON lines always carry them.\n"
"  -d, --dialect D   decode what follows the handshake in dialect D (pb or\n"
"                    none) whatever the choice said; also the dialect for a\n"
"                    stream without handshake.  Default: the client's choice\n"
"                    when seen, else pb.\n"
"  -b, --both        exactly two FILEs follow: the client-to-server stream,\n"
"                    then the server-to-client stream of one connection; they\n"
"                    are dumped one after the other, labelled c2s and s2c, and\n"
"                    the client's dialect choice applies to both.\n"
"  -h, --help        show this help and exit.\n"
"  -V, --version     show the version and exit.\n"
"\n"
"Malformed input: everything decoded so far is printed, then one line on\n"
"standard error names the stream offset and the problem (invalid type\n"
"byte, string or list over Twisted's 640 KiB limit, overlong prefix,\n"
"unknown vocabulary index, truncated expression, ...).  A Banana error\n"
"ends the dump of that stream (a Twisted peer would drop the connection);\n"
"a PB-level problem (non-list message, wrong number of elements, unknown\n"
"command, arguments that do not unjelly) is reported and dumping goes on.\n"
"\n"
"Exit status:\n"
"  0  every stream decoded completely and cleanly;\n"
"  1  some input was malformed or truncated (see standard error);\n"
"  2  usage error, or a file could not be read.\n"
"\n"
"Examples:\n"
"  pbdump session.c2s.bin\n"
"  pbdump --both session.c2s.bin session.s2c.bin\n"
"  pbdump --json --offset session.s2c.bin | jq .kind\n"
"  pbdump --hex session.c2s.bin | less\n"
"\n"
"  Capturing a live connection (port 8800) and dumping each direction:\n"
"    tcpdump -i lo -w cap.pcap 'tcp port 8800'\n"
"    tshark -r cap.pcap -q -z follow,tcp,raw,0 > follow.txt\n"
"  In follow.txt the payload lines of the side that opened the connection\n"
"  (the client) start at the left margin, the other side's are indented by\n"
"  a tab; the header and footer lines are framed by '=' lines.  So:\n"
"    sed -n '/^Node 1:/,/^=====/p' follow.txt | sed '1d;$d' \\\n"
"      | grep -v $'^\\t' | xxd -r -p > c2s.bin\n"
"    sed -n '/^Node 1:/,/^=====/p' follow.txt | sed '1d;$d' \\\n"
"      | grep $'^\\t' | tr -d '\\t' | xxd -r -p > s2c.bin\n"
"    pbdump --both c2s.bin s2c.bin\n"
"  (-z follow,tcp,raw,N follows TCP stream number N, as numbered by\n"
"  tshark -r cap.pcap -T fields -e tcp.stream.)  With Wireshark: Follow TCP\n"
"  Stream, pick one direction, \"Show data as: Raw\", Save as.\n"
"\n"
"See also: pbdump(1), the libpb wire-protocol notes (SPEC.md).\n";

/* ------------------------------------------------------------- options */

typedef struct opts {
    int json, hex, sexp, offset, both;
    int force_dialect; /* -1: not forced; else a pb_dialect */
} opts;

/* --------------------------------------------------------- text helpers */

static int out_err; /* sticky: an output buffer could not grow */

static void put(pb_buf *b, const char *s) {
    if (pb_buf_append(b, s, strlen(s))) out_err = 1;
}

static void putf(pb_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(pb_buf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n >= sizeof tmp) n = (int)sizeof tmp - 1;
    if (pb_buf_append(b, tmp, (size_t)n)) out_err = 1;
}

/* Bytes as a double-quoted C-style string: printable ASCII as is. */
static void put_quoted(pb_buf *b, const void *p, size_t n, size_t max) {
    const unsigned char *s = p;
    put(b, "\"");
    for (size_t i = 0; i < n; i++) {
        if (i == max) {
            put(b, "...");
            break;
        }
        unsigned c = s[i];
        if (c == '"' || c == '\\') putf(b, "\\%c", c);
        else if (c == '\n') put(b, "\\n");
        else if (c == '\t') put(b, "\\t");
        else if (c == '\r') put(b, "\\r");
        else if (c < 0x20 || c >= 0x7f) putf(b, "\\x%02x", c);
        else if (pb_buf_putc(b, (uint8_t)c)) out_err = 1;
    }
    put(b, "\"");
}

static void put_repr(pb_buf *b, const pb_value *v) {
    if (pb_value_repr(v, b)) put(b, "<unprintable>");
}

/* A JSON string for arbitrary bytes: valid UTF-8 passes, other bytes show
 * as the Latin-1 character of the same number. */
static void json_str(pb_buf *b, const void *p, size_t n) {
    const unsigned char *s = p;
    int utf8 = pb_utf8_valid(p, n);
    put(b, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned c = s[i];
        if (c == '"' || c == '\\') putf(b, "\\%c", c);
        else if (c == '\n') put(b, "\\n");
        else if (c == '\t') put(b, "\\t");
        else if (c == '\r') put(b, "\\r");
        else if (c < 0x20 || c == 0x7f || (c >= 0x80 && !utf8)) putf(b, "\\u%04x", c);
        else if (pb_buf_putc(b, (uint8_t)c)) out_err = 1;
    }
    put(b, "\"");
}

static void json_strz(pb_buf *b, const char *s) { json_str(b, s, strlen(s)); }

static void put_hex(pb_buf *b, const uint8_t *p, size_t n) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        if (pb_buf_putc(b, (uint8_t)digits[p[i] >> 4]) ||
            pb_buf_putc(b, (uint8_t)digits[p[i] & 15]))
            out_err = 1;
    }
}

static int is_bytes(const pb_value *v) { return v && v->type == PB_BYTES; }

static int bytes_eq(const pb_value *v, const char *s) {
    size_t n = strlen(s);
    return is_bytes(v) && v->u.s.len == n && memcmp(v->u.s.ptr, s, n) == 0;
}

/* -------------------------------------------------- permissive unjelly */

/* remote/local/cached/lcache -> an instance of that tag whose state is the
 * LUID, which pb_value_repr shows as <remote 3>. */
static int dump_decode_ref(void *ud, pb_arena *a, const char *tag, const pb_value *sexp,
                           pb_value **out, pb_errbuf *err) {
    (void)ud;
    if (sexp->u.seq.len != 2)
        return pb_err_set(err, PB_EJELLY, "(%s ...) with %zu elements, expected 2", tag,
                          sexp->u.seq.len);
    const pb_value *luid = sexp->u.seq.items[1];
    if (luid->type == PB_SEXP_LIST)
        return pb_err_set(err, PB_EJELLY, "(%s ...) whose LUID is a list", tag);
    pb_value *st = pb_value_copy(a, luid);
    pb_value *v = st ? pb_instance(a, tag, strlen(tag), st) : NULL;
    if (!v) return pb_err_set(err, PB_ENOMEM, "out of memory");
    *out = v;
    return PB_OK;
}

static const pb_jelly_hooks dump_hooks = {NULL, NULL, dump_decode_ref};

/* Register every list tag of sexp (depth bounded by the decoder's limit). */
static void allow_tags(pb_jelly_registry *r, const pb_value *x, size_t *ntags) {
    if (x->type != PB_SEXP_LIST) return;
    size_t n = x->u.seq.len;
    if (n && is_bytes(x->u.seq.items[0]) && *ntags < MAX_TAGS) {
        const pb_value *t = x->u.seq.items[0];
        if (t->u.s.len && !memchr(t->u.s.ptr, 0, t->u.s.len) &&
            !pb_jelly_registry_has(r, t->u.s.ptr, t->u.s.len) &&
            pb_jelly_registry_add(r, t->u.s.ptr, NULL, NULL) == PB_OK)
            (*ntags)++;
    }
    for (size_t i = 0; i < n; i++) allow_tags(r, x->u.seq.items[i], ntags);
}

static int unjelly_any(pb_arena *a, const pb_value *sexp, pb_value **out, pb_errbuf *err) {
    pb_jelly_registry *r = pb_jelly_registry_new();
    if (!r) return pb_err_set(err, PB_ENOMEM, "out of memory");
    size_t ntags = 0;
    allow_tags(r, sexp, &ntags);
    pb_jelly_opts o = {r, &dump_hooks, 0, 1};
    int rc = pb_unjelly(a, sexp, &o, out, err);
    pb_jelly_registry_free(r);
    return rc;
}

/* ------------------------------------------------------------ JSON form */

typedef struct jconv {
    pb_arena *a;
    pb_ptrmap active;
    size_t nodes;
    int fail;
} jconv;

static pb_value *jc(jconv *c, const pb_value *v);

static pb_value *tagged(jconv *c, const char *key, pb_value *val) {
    pb_value *d = pb_dict(c->a, 1);
    pb_value *k = pb_strz(c->a, key);
    if (!d || !k || !val || pb_dict_append(c->a, d, k, val)) {
        c->fail = 1;
        return NULL;
    }
    return d;
}

static pb_value *jtext(jconv *c, const char *p, size_t n) {
    pb_value *s = pb_str(c->a, p, n);
    return s ? s : pb_bytes(c->a, p, n);
}

static pb_value *jrepr(jconv *c, const pb_value *v) {
    pb_buf b;
    pb_buf_init(&b);
    pb_value *r = NULL;
    if (!pb_value_repr(v, &b)) r = jtext(c, (const char *)b.data, b.len);
    pb_buf_free(&b);
    return tagged(c, "$repr", r);
}

/* A copy of v that pb_value_to_json accepts: instances, references, dates,
 * decimals and the like become tagged dicts; a cycle becomes $repr. */
static pb_value *jc(jconv *c, const pb_value *v) {
    if (c->fail) return NULL;
    if (++c->nodes > JSON_NODE_BUDGET) {
        c->fail = 1;
        return NULL;
    }
    switch ((pb_type)v->type) {
    case PB_NONE: case PB_BOOL: case PB_INT: case PB_BIGINT: case PB_FLOAT:
    case PB_BYTES: case PB_STR:
        return (pb_value *)v;
    case PB_DATETIME: case PB_DATE: case PB_TIME: case PB_TIMEDELTA: {
        const char *k = v->type == PB_DATETIME ? "$datetime" : v->type == PB_DATE ? "$date"
                      : v->type == PB_TIME ? "$time" : "$timedelta";
        return tagged(c, k, jtext(c, v->u.s.ptr, v->u.s.len));
    }
    case PB_UNPERSISTABLE:
        return tagged(c, "$unpersistable", jtext(c, v->u.s.ptr, v->u.s.len));
    case PB_DECIMAL: case PB_REMOTE: case PB_OBJECT:
        return jrepr(c, v);
    default:
        break;
    }
    if (pb_ptrmap_has(&c->active, v)) return jrepr(c, v); /* a cycle: [...] */
    if (pb_ptrmap_put(&c->active, v, (void *)1)) {
        c->fail = 1;
        return NULL;
    }
    pb_value *r = NULL;
    if (v->type == PB_INSTANCE) {
        static const char *const refs[] = {"remote", "local", "cached", "lcache"};
        for (size_t i = 0; i < 4 && !r; i++)
            if (v->u.inst.cls_len == strlen(refs[i]) &&
                memcmp(v->u.inst.cls, refs[i], v->u.inst.cls_len) == 0) {
                char key[16];
                snprintf(key, sizeof key, "$%s", refs[i]);
                r = tagged(c, key, v->u.inst.state ? jc(c, v->u.inst.state) : pb_none(c->a));
            }
        if (!r) {
            r = pb_dict(c->a, 2);
            pb_value *st = v->u.inst.state ? jc(c, v->u.inst.state) : pb_none(c->a);
            pb_value *k1 = pb_strz(c->a, "$class"), *k2 = pb_strz(c->a, "state");
            pb_value *cls = jtext(c, v->u.inst.cls, v->u.inst.cls_len);
            if (!r || !st || !k1 || !k2 || !cls || pb_dict_append(c->a, r, k1, cls) ||
                pb_dict_append(c->a, r, k2, st))
                c->fail = 1;
        }
    } else if (v->type == PB_DICT) {
        r = pb_dict(c->a, v->u.dict.len);
        for (size_t i = 0; r && i < v->u.dict.len && !c->fail; i++) {
            pb_value *k = jc(c, v->u.dict.kv[2 * i]);
            pb_value *x = k ? jc(c, v->u.dict.kv[2 * i + 1]) : NULL;
            if (!x || pb_dict_append(c->a, r, k, x)) c->fail = 1;
        }
    } else if (pb_is_seq(v)) {
        r = pb_list(c->a, v->u.seq.len);
        for (size_t i = 0; r && i < v->u.seq.len && !c->fail; i++) {
            pb_value *x = jc(c, v->u.seq.items[i]);
            if (!x || pb_seq_append(c->a, r, x)) c->fail = 1;
        }
    } else {
        r = jrepr(c, v);
    }
    if (!r) c->fail = 1;
    pb_ptrmap_put(&c->active, v, NULL);
    return c->fail ? NULL : r;
}

/* Append the JSON form of v; falls back to {"$repr": "..."}. */
static void put_json(pb_buf *b, const pb_value *v) {
    pb_arena *a = pb_arena_new(MSG_ARENA_LIMIT);
    int done = 0;
    if (a) {
        jconv c = {a, {0}, 0, 0};
        pb_ptrmap_init(&c.active);
        pb_value *j = jc(&c, v);
        pb_ptrmap_free(&c.active);
        if (j && !c.fail && pb_value_to_json(j, b, NULL) == PB_OK) done = 1;
        pb_arena_free(a);
    }
    if (!done) {
        pb_buf r;
        pb_buf_init(&r);
        put(b, "{\"$repr\": ");
        if (pb_value_repr(v, &r) == PB_OK) json_str(b, r.data, r.len);
        else put(b, "null");
        put(b, "}");
        pb_buf_free(&r);
    }
}

/* ---------------------------------------------------- s-expression text */

static void put_sexp(pb_buf *b, const pb_value *x) {
    if (x->type == PB_SEXP_LIST) {
        put(b, "(");
        for (size_t i = 0; i < x->u.seq.len; i++) {
            if (i) put(b, " ");
            put_sexp(b, x->u.seq.items[i]);
        }
        put(b, ")");
    } else if (x->type == PB_BYTES) {
        put_quoted(b, x->u.s.ptr, x->u.s.len, (size_t)-1);
    } else {
        put_repr(b, x);
    }
}

/* ------------------------------------------------------- annotated hex */

static void hex_line(pb_buf *b, uint64_t off, unsigned depth, const uint8_t *p, size_t n,
                     const char *desc) {
    size_t mark = b->len;
    putf(b, "  %8" PRIu64 "  %*s", off, (int)(2 * depth), "");
    for (size_t i = 0; i < n; i++) putf(b, "%s%02x", i ? " " : "", p[i]);
    size_t w = b->len - mark;
    putf(b, "%*s%s\n", w < 48 ? (int)(48 - w) : 1, "", desc);
}

/* Decimal text of a base-128 prefix (any length up to 64 bytes). */
static void prefix_text(const uint8_t *p, size_t n, int neg, char *out, size_t outsz) {
    uint32_t limbs[16] = {0};
    for (size_t i = 0; i < n && i < 64; i++) {
        size_t bit = 7 * i, w = bit / 32, off = bit % 32;
        limbs[w] |= (uint32_t)p[i] << off;
        if (off > 25 && w + 1 < 16) limbs[w + 1] |= (uint32_t)p[i] >> (32 - off);
    }
    snprintf(out, outsz, "?");
    pb_arena *a = pb_arena_new(0);
    pb_value *v = a ? pb_bigint(a, neg, limbs, 16) : NULL;
    pb_buf t;
    pb_buf_init(&t);
    if (v && pb_value_repr(v, &t) == PB_OK && t.len < outsz) {
        memcpy(out, t.data, t.len);
        out[t.len] = 0;
    }
    pb_buf_free(&t);
    pb_arena_free(a);
}

static uint64_t prefix_u64(const uint8_t *p, size_t n) {
    uint64_t v = 0;
    for (size_t i = 0; i < n && i < 9; i++) v |= (uint64_t)p[i] << (7 * i);
    return n > 9 ? UINT64_MAX : v;
}

/* One line per token of the complete expression p[0..n), which starts at
 * stream offset base. */
static void hexview(pb_buf *b, const uint8_t *p, size_t n, uint64_t base) {
    enum { MAXD = 1024 };
    static uint64_t remain[MAXD];
    unsigned depth = 0;
    size_t i = 0;
    while (i < n) {
        size_t t0 = i;
        while (i < n && p[i] < 0x80) i++;
        if (i >= n) {
            hex_line(b, base + t0, depth, p + t0, n - t0, "(incomplete token)");
            return;
        }
        uint8_t type = p[i++];
        const uint8_t *pre = p + t0;
        size_t plen = i - 1 - t0;
        char desc[256], num[160];
        size_t body = 0;
        int opens = 0;
        uint64_t count = 0;
        switch (type) {
        case 0x80:
            count = prefix_u64(pre, plen);
            snprintf(desc, sizeof desc, "LIST %" PRIu64, count);
            opens = 1;
            break;
        case 0x81: case 0x83: case 0x85: case 0x86:
            prefix_text(pre, plen, type == 0x83 || type == 0x86, num, sizeof num);
            snprintf(desc, sizeof desc, "%s %s",
                     type == 0x81 ? "INT" : type == 0x83 ? "NEG" : type == 0x85 ? "LONGINT"
                                                                            : "LONGNEG",
                     num);
            break;
        case 0x82: {
            uint64_t len = prefix_u64(pre, plen);
            body = len > n - i ? n - i : (size_t)len;
            pb_buf q;
            pb_buf_init(&q);
            put_quoted(&q, p + i, body, 40);
            snprintf(desc, sizeof desc, "STRING %" PRIu64 " %.*s", len, (int)q.len,
                     (const char *)q.data);
            pb_buf_free(&q);
            break;
        }
        case 0x84: {
            body = n - i < 8 ? n - i : 8;
            if (body == 8) {
                uint64_t bits = 0;
                for (int k = 0; k < 8; k++) bits = bits << 8 | p[i + (size_t)k];
                double f;
                memcpy(&f, &bits, sizeof f);
                pb_arena *a = pb_arena_new(0);
                pb_value *fv = a ? pb_float(a, f) : NULL;
                pb_buf t;
                pb_buf_init(&t);
                if (fv) pb_value_repr(fv, &t);
                snprintf(desc, sizeof desc, "FLOAT %.*s", (int)t.len, (const char *)t.data);
                pb_buf_free(&t);
                pb_arena_free(a);
            } else {
                snprintf(desc, sizeof desc, "FLOAT (truncated)");
            }
            break;
        }
        case 0x87: {
            uint64_t k = prefix_u64(pre, plen);
            const char *w = k <= 31 ? pb_banana_vocab_word((unsigned)k) : NULL;
            snprintf(desc, sizeof desc, "VOCAB %" PRIu64 " %s", k, w ? w : "(unknown)");
            break;
        }
        default:
            snprintf(desc, sizeof desc, "invalid type byte 0x%02x", type);
            hex_line(b, base + t0, depth, pre, plen + 1, desc);
            return;
        }
        hex_line(b, base + t0, depth, pre, plen + 1, desc);
        for (size_t k = 0; k < body; k += 16) {
            size_t m = body - k < 16 ? body - k : 16;
            char asc[20];
            for (size_t j = 0; j < m; j++) {
                uint8_t c = p[i + k + j];
                asc[j] = c >= 0x20 && c < 0x7f ? (char)c : '.';
            }
            asc[m] = 0;
            char d2[32];
            snprintf(d2, sizeof d2, "|%s|", asc);
            hex_line(b, base + i + k, depth + 1, p + i + k, m, d2);
        }
        i += body;
        if (opens && count > 0 && depth < MAXD) {
            remain[depth++] = count;
            continue;
        }
        while (depth > 0) { /* a token (or an empty list) is complete */
            if (--remain[depth - 1] > 0) break;
            depth--;
        }
    }
}

/* --------------------------------------------------------------- stream */

typedef struct stream {
    const opts *o;
    const char *name; /* for messages */
    const char *dir;  /* "c2s", "s2c" or "?" */
    pb_banana_dec *dec;
    pb_dialect dialect;    /* after the handshake */
    int *shared_choice;    /* --both: the client's choice, for the server side */
    int first;             /* next expression is the first one */
    unsigned long n;       /* expressions seen */
    uint64_t start;        /* offset where the current expression starts */
    pb_buf bytes;          /* its bytes (kept for --hex) */
    pb_arena *arena;       /* unjellied values of the current message */
    int problems;
    int fatal;             /* a Banana error or fatal handshake problem */
} stream;

typedef struct line {
    pb_buf b;
    int json;
    int any;     /* a field was written (JSON comma) */
} line;

static void field_key(line *l, const char *key) {
    if (l->json) {
        put(&l->b, ", ");
        json_strz(&l->b, key);
        put(&l->b, ": ");
    } else {
        put(&l->b, " ");
        put(&l->b, key);
        put(&l->b, "=");
    }
}

/* An atom field (req, obj, luid...): number, or quoted bytes. */
static void field_atom(line *l, const char *key, const pb_value *v) {
    field_key(l, key);
    if (l->json) {
        put_json(&l->b, v);
    } else if (v->type == PB_BYTES) {
        put_quoted(&l->b, v->u.s.ptr, v->u.s.len, 200);
    } else if (v->type == PB_SEXP_LIST) {
        put_sexp(&l->b, v);
    } else {
        put_repr(&l->b, v);
    }
}

static void field_text(line *l, const char *key, const char *text, size_t n) {
    field_key(l, key);
    if (l->json) json_str(&l->b, text, n);
    else put(&l->b, text);
}

/* A jellied field: unjelly it and show value (text: repr; JSON: the JSON
 * form plus KEY_repr).  Returns the value or NULL (problem recorded). */
static pb_value *field_jelly(stream *s, line *l, const char *key, const pb_value *sexp,
                             char *problem, size_t psz) {
    pb_value *v = NULL;
    pb_errbuf err = {0, ""};
    int rc = unjelly_any(s->arena, sexp, &v, &err);
    if (rc) {
        snprintf(problem, psz, "%s does not unjelly: %s", key,
                 err.msg[0] ? err.msg : pb_strerror(rc));
        field_key(l, key);
        if (l->json) {
            put(&l->b, "null");
        } else {
            put(&l->b, "<undecodable ");
            put_sexp(&l->b, sexp);
            put(&l->b, ">");
        }
        return NULL;
    }
    if (l->json) {
        field_key(l, key);
        put_json(&l->b, v);
        char k2[64];
        snprintf(k2, sizeof k2, "%s_repr", key);
        field_key(l, k2);
        pb_buf r;
        pb_buf_init(&r);
        if (pb_value_repr(v, &r) == PB_OK) json_str(&l->b, r.data, r.len);
        else put(&l->b, "null");
        pb_buf_free(&r);
    } else {
        field_key(l, key);
        put_repr(&l->b, v);
    }
    return v;
}

static int inst_is(const pb_value *v, const char *cls) {
    return v && v->type == PB_INSTANCE && v->u.inst.cls_len == strlen(cls) &&
           memcmp(v->u.inst.cls, cls, v->u.inst.cls_len) == 0;
}

/* error's FAILURE: CopyableFailure -> "TYPE: 'VALUE'". */
static void field_failure(stream *s, line *l, const pb_value *sexp, char *problem,
                          size_t psz) {
    pb_value *v = NULL;
    pb_errbuf err = {0, ""};
    int rc = unjelly_any(s->arena, sexp, &v, &err);
    if (rc) {
        snprintf(problem, psz, "failure does not unjelly: %s",
                 err.msg[0] ? err.msg : pb_strerror(rc));
        field_key(l, "failure");
        if (l->json) put(&l->b, "null");
        else {
            put(&l->b, "<undecodable ");
            put_sexp(&l->b, sexp);
            put(&l->b, ">");
        }
        return;
    }
    const pb_value *st = v->type == PB_INSTANCE ? v->u.inst.state : NULL;
    const pb_value *type = NULL, *value = NULL;
    if (inst_is(v, "twisted.spread.pb.CopyableFailure") && st && st->type == PB_DICT) {
        type = pb_dict_get(st, "type");
        value = pb_dict_get(st, "value");
    }
    pb_buf t, r;
    pb_buf_init(&t);
    pb_buf_init(&r);
    if (type && (type->type == PB_BYTES || type->type == PB_STR)) {
        if (pb_buf_append(&t, type->u.s.ptr, type->u.s.len)) out_err = 1;
    } else if (type) {
        put_repr(&t, type);
    } else if (v->type == PB_INSTANCE) {
        if (pb_buf_append(&t, v->u.inst.cls, v->u.inst.cls_len)) out_err = 1;
    } else {
        put(&t, pb_type_name((pb_type)v->type));
    }
    if (value) put_repr(&r, value);
    else if (st) put_repr(&r, st);
    else put_repr(&r, v);
    if (l->json) {
        field_key(l, "failure");
        put_json(&l->b, v);
        field_key(l, "failure_repr");
        pb_buf fr;
        pb_buf_init(&fr);
        put_repr(&fr, v);
        json_str(&l->b, fr.data, fr.len);
        pb_buf_free(&fr);
        field_text(l, "failure_type", (const char *)t.data, t.len);
        field_key(l, "failure_value");
        if (value && value->type == PB_STR) json_str(&l->b, value->u.s.ptr, value->u.s.len);
        else json_str(&l->b, r.data, r.len);
    } else {
        field_key(l, "failure");
        if (type) {
            if (pb_buf_append(&l->b, t.data, t.len)) out_err = 1;
            put(&l->b, ": ");
            if (pb_buf_append(&l->b, r.data, r.len)) out_err = 1;
        } else {
            put_repr(&l->b, v);
        }
    }
    pb_buf_free(&t);
    pb_buf_free(&r);
}

static void problem_report(stream *s, uint64_t off, const char *problem) {
    fflush(stdout);
    fprintf(stderr, "pbdump: %s: offset %" PRIu64 ": %s\n", s->name, off, problem);
    s->problems++;
}

/* An "invalid" JSON line for a problem that has no expression of its own. */
static void json_problem_line(stream *s, uint64_t off, uint64_t len, const char *problem) {
    if (!s->o->json) return;
    pb_buf b;
    pb_buf_init(&b);
    put(&b, "{\"file\": ");
    json_strz(&b, s->name);
    put(&b, ", \"dir\": ");
    json_strz(&b, s->dir);
    putf(&b, ", \"n\": null, \"offset\": %" PRIu64 ", \"length\": %" PRIu64
             ", \"kind\": \"invalid\", \"problem\": ", off, len);
    json_strz(&b, problem);
    put(&b, "}\n");
    fwrite(b.data, 1, b.len, stdout);
    pb_buf_free(&b);
}

static const char *const commands[] = {"version", "message", "cachemessage", "answer",
                                       "error", "decref", "decache", "uncache",
                                       "didNotUnderstand"};

static const char *command_of(const pb_value *x) {
    if (x->type != PB_SEXP_LIST || !x->u.seq.len) return NULL;
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (bytes_eq(x->u.seq.items[0], commands[i])) return commands[i];
    return NULL;
}

/* Is x the server's offer: a list of byte strings that is not a message? */
static int is_offer(const pb_value *x) {
    if (x->type != PB_SEXP_LIST || command_of(x)) return 0;
    for (size_t i = 0; i < x->u.seq.len; i++)
        if (!is_bytes(x->u.seq.items[i])) return 0;
    return 1;
}

/* Show one complete expression x that occupies [start, end) of the stream. */
static void show(stream *s, const pb_value *x, uint64_t end) {
    const opts *o = s->o;
    line l;
    pb_buf_init(&l.b);
    l.json = o->json;
    l.any = 0;
    char problem[400] = "";
    const char *kind;
    uint64_t len = end - s->start;
    s->n++;
    pb_arena_reset(s->arena);

    /* classify */
    int handshake = 0;
    if (s->first) {
        s->first = 0;
        if (x->type == PB_BYTES) {
            kind = "choice";
            handshake = 1;
            if (!strcmp(s->dir, "?")) s->dir = "c2s";
        } else if (is_offer(x)) {
            kind = "offer";
            handshake = 2;
            if (!strcmp(s->dir, "?")) s->dir = "s2c";
        } else {
            kind = NULL;
        }
    } else {
        kind = NULL;
    }
    if (!handshake) {
        if (x->type != PB_SEXP_LIST) {
            kind = "invalid";
            snprintf(problem, sizeof problem, "non-list expression received");
        } else if (!(kind = command_of(x))) {
            kind = "unknown";
            if (!x->u.seq.len) snprintf(problem, sizeof problem, "empty list received");
            else if (!is_bytes(x->u.seq.items[0]))
                snprintf(problem, sizeof problem, "command is not a byte string");
            else {
                pb_buf q;
                pb_buf_init(&q);
                put_quoted(&q, x->u.seq.items[0]->u.s.ptr, x->u.seq.items[0]->u.s.len, 60);
                snprintf(problem, sizeof problem, "unknown command %.*s", (int)q.len,
                         (const char *)q.data);
                pb_buf_free(&q);
            }
        }
    }

    /* common head */
    if (l.json) {
        put(&l.b, "{\"file\": ");
        json_strz(&l.b, s->name);
        put(&l.b, ", \"dir\": ");
        json_strz(&l.b, s->dir);
        putf(&l.b, ", \"n\": %lu, \"offset\": %" PRIu64 ", \"length\": %" PRIu64 ", \"kind\": ",
             s->n, s->start, len);
        json_strz(&l.b, kind);
    } else {
        size_t mark = l.b.len;
        putf(&l.b, "%s #%lu", s->dir, s->n);
        if (o->offset) putf(&l.b, " @%" PRIu64 "+%" PRIu64, s->start, len);
        size_t w = l.b.len - mark, col = o->offset ? 22 : 8;
        putf(&l.b, "%*s %-12s", w < col ? (int)(col - w) : 0, "", kind);
    }

    /* fields */
    size_t n = x->type == PB_SEXP_LIST ? x->u.seq.len : 0;
    pb_value *const *it = n ? x->u.seq.items : NULL;
    if (handshake == 1) {
        field_atom(&l, "dialect", x);
        if (bytes_eq(x, "pb")) s->dialect = PB_DIALECT_PB;
        else if (bytes_eq(x, "none")) s->dialect = PB_DIALECT_NONE;
        else {
            snprintf(problem, sizeof problem, "client chose a dialect that was not offered");
            s->fatal = 1;
        }
        if (o->force_dialect >= 0) s->dialect = (pb_dialect)o->force_dialect;
        if (s->shared_choice) *s->shared_choice = (int)s->dialect;
    } else if (handshake == 2) {
        field_key(&l, "dialects");
        put(&l.b, "[");
        for (size_t i = 0; i < n; i++) {
            if (i) put(&l.b, ", ");
            if (l.json) json_str(&l.b, it[i]->u.s.ptr, it[i]->u.s.len);
            else put_quoted(&l.b, it[i]->u.s.ptr, it[i]->u.s.len, 60);
        }
        put(&l.b, "]");
    } else if (!strcmp(kind, "message") || !strcmp(kind, "cachemessage")) {
        if (n != 7) {
            snprintf(problem, sizeof problem, "%s with %zu elements, expected 7", kind, n);
        } else {
            field_atom(&l, "req", it[1]);
            field_atom(&l, "obj", it[2]);
            field_atom(&l, "method", it[3]);
            if (!is_bytes(it[3]))
                snprintf(problem, sizeof problem, "method name is not a byte string");
            field_atom(&l, l.json ? "answer_required" : "answer", it[4]);
            char p2[400] = "";
            field_jelly(s, &l, "args", it[5], problem[0] ? p2 : problem, sizeof problem);
            field_jelly(s, &l, "kwargs", it[6], problem[0] ? p2 : problem, sizeof problem);
        }
    } else if (!strcmp(kind, "answer") || !strcmp(kind, "error")) {
        if (n != 3) {
            snprintf(problem, sizeof problem, "%s with %zu elements, expected 3", kind, n);
        } else {
            field_atom(&l, "req", it[1]);
            if (kind[0] == 'a') field_jelly(s, &l, "result", it[2], problem, sizeof problem);
            else field_failure(s, &l, it[2], problem, sizeof problem);
        }
    } else if (!strcmp(kind, "version") || !strcmp(kind, "decref") ||
               !strcmp(kind, "decache") || !strcmp(kind, "uncache") ||
               !strcmp(kind, "didNotUnderstand")) {
        const char *key = kind[0] == 'v' ? "version" : kind[1] == 'i' ? "name" : "luid";
        if (n != 2) snprintf(problem, sizeof problem, "%s with %zu elements, expected 2", kind, n);
        else field_atom(&l, key, it[1]);
        if (!problem[0] && kind[0] == 'v' && !(it[1]->type == PB_INT && it[1]->u.i == 6))
            snprintf(problem, sizeof problem, "protocol version is not 6");
    }
    if (problem[0] && l.json) field_text(&l, "problem", problem, strlen(problem));
    if (o->sexp || (!handshake && (!strcmp(kind, "invalid") || !strcmp(kind, "unknown")) &&
                    !l.json)) {
        field_key(&l, "sexp");
        if (l.json) {
            pb_buf t;
            pb_buf_init(&t);
            put_sexp(&t, x);
            json_str(&l.b, t.data, t.len);
            pb_buf_free(&t);
        } else {
            put_sexp(&l.b, x);
        }
    }
    if (l.json && o->hex) {
        field_key(&l, "hex");
        put(&l.b, "\"");
        put_hex(&l.b, s->bytes.data, s->bytes.len);
        put(&l.b, "\"");
    }
    put(&l.b, l.json ? "}\n" : "\n");
    if (!l.json && o->hex) hexview(&l.b, s->bytes.data, s->bytes.len, s->start);
    if (out_err) {
        fputs("pbdump: out of memory formatting output\n", stderr);
        exit(EXIT_USAGE);
    }
    fwrite(l.b.data, 1, l.b.len, stdout);
    pb_buf_free(&l.b);
    if (problem[0]) problem_report(s, s->start, problem);

    if (handshake) pb_banana_dec_set_dialect(s->dec, s->dialect);
}

/* Feed p[0..len); returns 0, or -1 once the stream is unusable. */
static int feed(stream *s, const uint8_t *p, size_t len) {
    while (len > 0 && !s->fatal) {
        size_t used = 0;
        pb_value *x = NULL;
        int rc = pb_banana_dec_feed(s->dec, p, len, &used, &x);
        if (rc < 0) {
            /* The decoder's message ends in " (at stream offset N)": move
             * N to the front, where every pbdump error line has it. */
            const char *m = pb_banana_dec_errmsg(s->dec);
            char msg[300];
            uint64_t at = pb_banana_dec_offset(s->dec);
            snprintf(msg, sizeof msg, "%s", m && *m ? m : pb_strerror(rc));
            char *tail = strstr(msg, " (at stream offset ");
            if (tail) {
                at = strtoull(tail + 19, NULL, 10);
                *tail = 0;
            }
            char full[500];
            snprintf(full, sizeof full, "%s (%s; expression #%lu starts at offset %" PRIu64 ")",
                     msg, pb_strerror(rc), s->n + 1, s->start);
            problem_report(s, at, full);
            json_problem_line(s, at, 0, full);
            s->fatal = 1;
            return -1;
        }
        if (s->o->hex && pb_buf_append(&s->bytes, p, used)) {
            fputs("pbdump: out of memory\n", stderr);
            exit(EXIT_USAGE);
        }
        p += used;
        len -= used;
        if (rc == 1) {
            uint64_t end = pb_banana_dec_offset(s->dec);
            show(s, x, end);
            s->start = end;
            s->bytes.len = 0;
        }
    }
    return s->fatal ? -1 : 0;
}

/* Dump one input; returns EXIT_OK, EXIT_MALFORMED or EXIT_USAGE. */
static int dump(const opts *o, const char *path, const char *dir, int *shared_choice) {
    FILE *f = stdin;
    const char *name = "<stdin>";
    if (path && strcmp(path, "-") != 0) {
        f = fopen(path, "rb");
        if (!f) {
            fprintf(stderr, "pbdump: %s: %s\n", path, strerror(errno));
            return EXIT_USAGE;
        }
        name = path;
    }
    stream s;
    memset(&s, 0, sizeof s);
    s.o = o;
    s.name = name;
    s.dir = dir ? dir : "?";
    s.first = 1;
    s.shared_choice = shared_choice;
    s.dialect = o->force_dialect >= 0 ? (pb_dialect)o->force_dialect
              : shared_choice && *shared_choice >= 0 ? (pb_dialect)*shared_choice
              : PB_DIALECT_PB;
    pb_buf_init(&s.bytes);
    s.dec = pb_banana_dec_new(s.dialect, NULL);
    s.arena = pb_arena_new(MSG_ARENA_LIMIT);
    if (!s.dec || !s.arena) {
        fputs("pbdump: out of memory\n", stderr);
        exit(EXIT_USAGE);
    }
    int rc = EXIT_OK;
    static uint8_t chunk[65536];
    for (;;) {
        size_t got = fread(chunk, 1, sizeof chunk, f);
        if (got && feed(&s, chunk, got) < 0) break;
        if (got < sizeof chunk) {
            if (ferror(f)) {
                fprintf(stderr, "pbdump: %s: read error: %s\n", name, strerror(errno));
                rc = EXIT_USAGE;
            }
            if (feof(f) || ferror(f)) break;
        }
    }
    uint64_t total = pb_banana_dec_offset(s.dec);
    if (!s.fatal && rc == EXIT_OK && total > s.start) {
        char m[200];
        snprintf(m, sizeof m,
                 "truncated stream: expression #%lu is incomplete (%" PRIu64
                 " bytes of it present; the stream ends at offset %" PRIu64 ")",
                 s.n + 1, total - s.start, total);
        problem_report(&s, s.start, m);
        json_problem_line(&s, s.start, total - s.start, m);
    }
    if (rc == EXIT_OK && s.problems) rc = EXIT_MALFORMED;
    fflush(stdout);
    pb_buf_free(&s.bytes);
    pb_arena_free(s.arena);
    pb_banana_dec_free(s.dec);
    if (f != stdin) fclose(f);
    return rc;
}

int main(int argc, char **argv) {
    opts o = {0, 0, 0, 0, 0, -1};
    static const struct option longopts[] = {
        {"json", no_argument, NULL, 'j'},   {"hex", no_argument, NULL, 'x'},
        {"sexp", no_argument, NULL, 's'},   {"offset", no_argument, NULL, 'o'},
        {"dialect", required_argument, NULL, 'd'},
        {"both", no_argument, NULL, 'b'},   {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'}, {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "jxsod:bhV", longopts, NULL)) != -1) {
        switch (c) {
        case 'j': o.json = 1; break;
        case 'x': o.hex = 1; break;
        case 's': o.sexp = 1; break;
        case 'o': o.offset = 1; break;
        case 'b': o.both = 1; break;
        case 'd':
            if (!strcmp(optarg, "pb")) o.force_dialect = PB_DIALECT_PB;
            else if (!strcmp(optarg, "none")) o.force_dialect = PB_DIALECT_NONE;
            else {
                fprintf(stderr, "pbdump: --dialect must be pb or none, not '%s'\n", optarg);
                fputs("Try 'pbdump --help' for more information.\n", stderr);
                return EXIT_USAGE;
            }
            break;
        case 'h':
            fputs(usage_text, stdout);
            fputs(help_text, stdout);
            return EXIT_OK;
        case 'V':
            puts("pbdump (libpb) 0.1.0");
            return EXIT_OK;
        default:
            fputs("Try 'pbdump --help' for more information.\n", stderr);
            return EXIT_USAGE;
        }
    }
    int nfiles = argc - optind;
    if (o.both && nfiles != 2) {
        fputs("pbdump: --both needs exactly two files: C2S S2C\n", stderr);
        fputs("Try 'pbdump --help' for more information.\n", stderr);
        return EXIT_USAGE;
    }
    int worst = EXIT_OK;
    int choice = -1;
    if (nfiles == 0) return dump(&o, NULL, NULL, NULL);
    for (int i = 0; i < nfiles; i++) {
        const char *path = argv[optind + i];
        const char *dir = o.both ? (i == 0 ? "c2s" : "s2c") : NULL;
        if (nfiles > 1 && !o.json) {
            if (i) putchar('\n');
            if (dir) printf("== %s: %s\n", dir, path);
            else printf("== %s\n", path);
        }
        int rc = dump(&o, path, dir, o.both ? &choice : NULL);
        if (rc > worst) worst = rc;
    }
    return worst;
}
