/*
 * failure.c - pb_failure: Twisted's (type, value, parents) triple, built
 * locally, read from whatever a peer sent, and written as the
 * CopyableFailure state Twisted 22.4 sends (key order of SPEC §5.5).
 */
#include <stdatomic.h>
#include <string.h>
#include "pb/deferred.h"
#include "broker_int.h"

/* Well-known classes and their MRO (checked against Twisted 22.4 /
 * CPython 3: `[c.__module__ + '.' + c.__qualname__ for c in C.__mro__]`).
 * Each row: the class, then its bases up to (excluding) the common tail
 * builtins.Exception, builtins.BaseException, builtins.object. */
static const char *const known_mro[][4] = {
    {"twisted.spread.pb.Error"},
    {"twisted.spread.pb.PBConnectionLost"},
    {"twisted.spread.pb.ProtocolError"},
    {"twisted.spread.pb.DeadReferenceError", "twisted.spread.pb.ProtocolError"},
    {"twisted.spread.flavors.NoSuchMethod", "builtins.AttributeError"},
    {"twisted.spread.jelly.InsecureJelly"},
    {"twisted.cred.error.UnauthorizedLogin", "twisted.cred.error.LoginFailed",
     "twisted.cred.error.Unauthorized"},
    {"twisted.cred.error.UnhandledCredentials", "twisted.cred.error.LoginFailed"},
    {"twisted.cred.error.LoginFailed"},
    {"twisted.cred.error.Unauthorized"},
    {"twisted.internet.defer.TimeoutError"},
    {"twisted.internet.defer.CancelledError"},
    {"builtins.TypeError"},
    {"builtins.ValueError"},
    {"builtins.AttributeError"},
    {"builtins.KeyError", "builtins.LookupError"},
    {"builtins.IndexError", "builtins.LookupError"},
    {"builtins.LookupError"},
    {"builtins.ZeroDivisionError", "builtins.ArithmeticError"},
    {"builtins.OverflowError", "builtins.ArithmeticError"},
    {"builtins.ArithmeticError"},
    {"builtins.RuntimeError"},
    {"builtins.NotImplementedError", "builtins.RuntimeError"},
    {"builtins.RecursionError", "builtins.RuntimeError"},
    {"builtins.MemoryError"},
    {"builtins.AssertionError"},
    {"builtins.OSError"},
    {"builtins.ConnectionError", "builtins.OSError"},
    {"builtins.UnicodeError", "builtins.ValueError"},
    {"builtins.UnicodeDecodeError", "builtins.UnicodeError", "builtins.ValueError"},
    {"builtins.StopIteration"},
};
static const char *const mro_tail[] = {"builtins.Exception", "builtins.BaseException",
                                       "builtins.object"};

const char *pb__failure_type_for_code(int code) {
    switch (code) {
    case PB_ECLOSED: return PB_FAILURE_CONNECTION_LOST;
    case PB_ETIMEOUT: return PB_FAILURE_TIMEOUT;
    case PB_ECANCELLED: return PB_FAILURE_CANCELLED;
    case PB_EAUTH: return PB_FAILURE_UNAUTHORIZED;
    case PB_ENOTFOUND: return PB_FAILURE_KEY_ERROR;
    case PB_EINVAL: return PB_FAILURE_VALUE_ERROR;
    case PB_ENOMEM: return "builtins.MemoryError";
    case PB_EINSECURE: return PB_FAILURE_INSECURE_JELLY;
    case PB_EUNSENDABLE: return PB_FAILURE_TYPE_ERROR;
    default: return PB_FAILURE_PB_ERROR;
    }
}

int pb_failure_check(const pb_failure *f, const char *type) {
    if (!f || !type) return 0;
    if (f->type && !strcmp(f->type, type)) return 1;
    for (size_t i = 0; i < f->nparents; i++)
        if (f->parents[i] && !strcmp(f->parents[i], type)) return 1;
    return 0;
}

static char *dupz(pb_arena *a, const char *s) { return s ? pb_arena_memdup(a, s, strlen(s)) : NULL; }

pb_failure *pb_failure_new(pb_arena *a, int code, const char *type, const char *value,
                           const char *const *parents, size_t nparents) {
    if (!a) return NULL;
    pb_failure *f = pb_arena_alloc(a, sizeof *f);
    if (!f) return NULL;
    memset(f, 0, sizeof *f);
    f->code = code;
    f->type = dupz(a, type ? type : "builtins.Exception");
    f->value = dupz(a, value ? value : "");
    if (!f->type || !f->value) return NULL;
    const char *const *src = parents;
    size_t n = nparents;
    const char *tmp[8];
    if (!parents) {
        /* the standard MRO: known row, or [type] alone, then the tail */
        size_t k = 0;
        for (size_t r = 0; r < sizeof known_mro / sizeof *known_mro && !k; r++)
            if (!strcmp(known_mro[r][0], f->type))
                for (; k < 4 && known_mro[r][k]; k++) tmp[k] = known_mro[r][k];
        if (!k && strcmp(f->type, "builtins.Exception") && strcmp(f->type, "builtins.BaseException") &&
            strcmp(f->type, "builtins.object"))
            tmp[k++] = f->type;
        size_t skip = !strcmp(f->type, "builtins.BaseException") ? 1
                      : !strcmp(f->type, "builtins.object")      ? 2
                                                                 : 0;
        for (size_t i = skip; i < 3; i++) tmp[k++] = mro_tail[i];
        src = tmp;
        n = k;
    }
    f->parents = pb_arena_alloc(a, (n ? n : 1) * sizeof *f->parents);
    if (!f->parents) return NULL;
    for (size_t i = 0; i < n; i++)
        if (!(f->parents[i] = dupz(a, src[i] ? src[i] : ""))) return NULL;
    f->nparents = n;
    return f;
}

pb_failure *pb_failure_copy(pb_arena *a, const pb_failure *f) {
    if (!a || !f) return NULL;
    pb_failure *n = pb_failure_new(a, f->code, f->type, f->value, f->parents, f->nparents);
    if (!n) return NULL;
    n->pickled = f->pickled;
    if (f->traceback && !(n->traceback = dupz(a, f->traceback))) return NULL;
    if (f->raw && !(n->raw = pb_value_copy(a, f->raw))) return NULL;
    return n;
}

/* Text of a str/bytes value, or a repr-like rendering of anything else. */
static const char *text_of(pb_arena *a, const pb_value *v) {
    if (!v) return NULL;
    if (v->type == PB_STR || v->type == PB_BYTES) return pb_arena_memdup(a, v->u.s.ptr, v->u.s.len);
    pb_buf b;
    pb_buf_init(&b);
    b.limit = 4096;
    const char *r = NULL;
    if (pb_value_repr(v, &b) == PB_OK || b.len) r = pb_arena_memdup(a, b.data ? (char *)b.data : "", b.len);
    pb_buf_free(&b);
    return r;
}

pb_failure *pb_failure_from_value(pb_arena *a, const pb_value *v) {
    if (!a) return NULL;
    const char *type = NULL, *value = NULL, *tb = NULL;
    const pb_value *state = NULL, *parents = NULL;
    if (v && v->type == PB_INSTANCE) {
        state = v->u.inst.state;
        if (state && state->type == PB_DICT) {
            const pb_value *t = pb_dict_get(state, "type");
            if (t && (t->type == PB_BYTES || t->type == PB_STR)) type = text_of(a, t);
            const pb_value *val = pb_dict_get(state, "value");
            if (val) value = text_of(a, val);
            const pb_value *trb = pb_dict_get(state, "traceback");
            if (trb && (trb->type == PB_STR || trb->type == PB_BYTES)) tb = text_of(a, trb);
            parents = pb_dict_get(state, "parents");
            if (parents && !pb_is_seq(parents)) parents = NULL;
        }
        int is_cf = v->u.inst.cls_len == 33 &&
                    !memcmp(v->u.inst.cls, "twisted.spread.pb.CopyableFailure", 33);
        if (!is_cf && !type) {
            /* a Copyable exception sent as itself: its class is the type */
            type = pb_arena_memdup(a, v->u.inst.cls, v->u.inst.cls_len);
            if (!value && state) value = text_of(a, state);
        }
    } else if (v && (v->type == PB_STR || v->type == PB_BYTES)) {
        value = text_of(a, v); /* a bare string: tolerated, as Twisted does */
    } else if (v) {
        value = text_of(a, v);
    }
    if (!type) type = "builtins.Exception";
    if (!value) value = "";
    pb_failure *f;
    if (parents) {
        size_t n = parents->u.seq.len, k = 0;
        const char **ps = pb_arena_alloc(a, (n + 1) * sizeof *ps);
        if (!ps) return NULL;
        for (size_t i = 0; i < n; i++) {
            const pb_value *p = parents->u.seq.items[i];
            if (p && (p->type == PB_STR || p->type == PB_BYTES)) ps[k++] = p->u.s.ptr;
        }
        f = pb_failure_new(a, PB_EREMOTE, type, value, ps, k);
    } else if (state || (v && v->type == PB_INSTANCE)) {
        /* no parents: the class alone (plus the tail) so check(type) works */
        const char *ps[4] = {type, mro_tail[0], mro_tail[1], mro_tail[2]};
        f = pb_failure_new(a, PB_EREMOTE, type, value, strcmp(type, mro_tail[0]) ? ps : ps + 1,
                           strcmp(type, mro_tail[0]) ? 4 : 3);
    } else {
        f = pb_failure_new(a, PB_EREMOTE, type, value, NULL, 0);
    }
    if (!f) return NULL;
    if (tb) f->traceback = tb;
    if (state && state->type == PB_DICT && v->u.inst.cls_len == 33 &&
        !memcmp(v->u.inst.cls, "twisted.spread.pb.CopyableFailure", 33) && pb_dict_get(state, "pickled"))
        f->pickled = 1; /* a cleaned failure stays one when relayed */
    if (v && !(f->raw = pb_value_copy(a, v))) return NULL;
    return f;
}

static atomic_ulong failure_count;

static pb_value *ustr(pb_arena *a, const char *s) {
    /* text that is not valid UTF-8 still has to go out as unicode: keep
     * the ASCII, replace the rest */
    size_t n = strlen(s);
    if (pb_utf8_valid(s, n)) return pb_str(a, s, n);
    char *t = pb_arena_memdup(a, s, n);
    if (!t) return NULL;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)t[i] >= 0x80) t[i] = '?';
    return pb_str(a, t, n);
}

static int put(pb_arena *a, pb_value *d, const char *key, pb_value *val) {
    if (!val) return PB_ENOMEM;
    pb_value *k = pb_strz(a, key);
    if (!k) return PB_ENOMEM;
    return pb_dict_append(a, d, k, val);
}

pb_value *pb_failure_to_value(pb_arena *a, const pb_failure *f, int unsafe_tracebacks) {
    if (!a || !f) return NULL;
    pb_value *d = pb_dict(a, 10);
    if (!d) return NULL;
    const char *type = f->type ? f->type : "builtins.Exception";
    pb_value *parents = pb_list(a, f->nparents);
    if (!parents) return NULL;
    for (size_t i = 0; i < f->nparents; i++) {
        pb_value *p = ustr(a, f->parents[i] ? f->parents[i] : "");
        if (!p || pb_seq_append(a, parents, p)) return NULL;
    }
    const char *tb = unsafe_tracebacks && f->traceback ? f->traceback : "Traceback unavailable\n";
    unsigned long count = atomic_fetch_add(&failure_count, 1) + 1;
    if (put(a, d, "count", pb_int(a, (int64_t)(count & 0x7fffffff))) ||
        put(a, d, "type", pb_bytesz(a, type)) ||
        put(a, d, "value", ustr(a, f->value ? f->value : "")) ||
        put(a, d, "captureVars", pb_bool(a, 0)) || put(a, d, "frames", pb_list(a, 0)) ||
        put(a, d, "stack", pb_list(a, 0)) || put(a, d, "tb", pb_none(a)) ||
        put(a, d, "parents", parents) ||
        (f->pickled && put(a, d, "pickled", pb_int(a, 1))) ||
        put(a, d, "unsafeTracebacks", pb_bool(a, unsafe_tracebacks ? 1 : 0)) ||
        put(a, d, "traceback", ustr(a, tb)))
        return NULL;
    static const char cf[] = "twisted.spread.pb.CopyableFailure";
    return pb_instance(a, cf, sizeof cf - 1, d);
}
