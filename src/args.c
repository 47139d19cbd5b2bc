/*
 * args.c - method signatures (the mini-language of pb/broker.h) and the
 * pb_arg_* accessors.  A call's raw (args, kwargs) are bound to declared
 * parameters the way Python binds them, and refused with Python's own
 * TypeError wording, before any handler runs.
 */
#include <stdio.h>
#include <string.h>
#include "broker_int.h"

#define MAX_PARAMS 32

typedef struct param {
    char type;     /* s y i I f b l t d n r o v */
    char nullable; /* ?X */
    const char *name;
    size_t name_len;
} param;

typedef struct sig {
    param p[MAX_PARAMS];
    size_t n, required;
    int star;
} sig;

static int parse_sig(const char *s, sig *out) {
    memset(out, 0, sizeof *out);
    int optional = 0, nullable = 0;
    size_t required = SIZE_MAX;
    for (; *s && *s != ':'; s++) {
        char c = *s;
        if (c == '|') { optional = 1; if (required == SIZE_MAX) required = out->n; continue; }
        if (c == '*') { out->star = 1; continue; }
        if (c == '?') { nullable = 1; continue; }
        if (!strchr("syiIfbltdnrov", c) || out->n == MAX_PARAMS) return -1;
        out->p[out->n].type = c;
        out->p[out->n].nullable = (char)nullable;
        out->n++;
        nullable = 0;
    }
    (void)optional;
    out->required = required == SIZE_MAX ? out->n : required;
    if (*s == ':') {
        s++;
        for (size_t i = 0; i < out->n && *s; i++) {
            const char *e = strchr(s, ',');
            size_t len = e ? (size_t)(e - s) : strlen(s);
            out->p[i].name = s;
            out->p[i].name_len = len;
            s += len;
            if (*s == ',') s++;
        }
    }
    return 0;
}

static const char *type_word(char t) {
    switch (t) {
    case 's': return "str";
    case 'y': return "bytes";
    case 'i': case 'I': return "int";
    case 'f': return "float";
    case 'b': return "bool";
    case 'l': return "list";
    case 't': return "tuple";
    case 'd': return "dict";
    case 'n': return "None";
    case 'r': return "RemoteReference";
    case 'o': return "Referenceable";
    default: return "object";
    }
}

static int type_ok(char t, const pb_value *v) {
    switch (t) {
    case 's': return v->type == PB_STR || (v->type == PB_BYTES && pb_utf8_valid(v->u.s.ptr, v->u.s.len));
    case 'y': return v->type == PB_BYTES;
    case 'i': return v->type == PB_INT || v->type == PB_BOOL;
    case 'I': return v->type == PB_INT || v->type == PB_BIGINT || v->type == PB_BOOL;
    case 'f': return v->type == PB_FLOAT || v->type == PB_INT;
    case 'b': return v->type == PB_BOOL;
    case 'l': return v->type == PB_LIST;
    case 't': return v->type == PB_TUPLE;
    case 'd': return v->type == PB_DICT;
    case 'n': return v->type == PB_NONE;
    case 'r': return v->type == PB_REMOTE;
    case 'o': return v->type == PB_OBJECT;
    default: return 1;
    }
}

/* 'a' / 'a' and 'b' / 'a', 'b', and 'c' (Python's list of missing names) */
static void name_list(char *out, size_t cap, const sig *s, const size_t *idx, size_t n) {
    size_t len = 0;
    out[0] = 0;
    for (size_t i = 0; i < n && len < cap; i++) {
        const param *p = &s->p[idx[i]];
        const char *sep = i == 0 ? "" : n == 2 ? " and " : i == n - 1 ? ", and " : ", ";
        int w = p->name ? snprintf(out + len, cap - len, "%s'%.*s'", sep, (int)p->name_len, p->name)
                        : snprintf(out + len, cap - len, "%s'arg%zu'", sep, idx[i]);
        if (w < 0) break;
        len += (size_t)w;
    }
}

int pb__args_bind(pb_arena *a, const char *sigstr, const char *qual, pb_value *args,
                  pb_value *kwargs, int bytes_keys_ok, pb_args *out, char *msg, size_t cap) {
    memset(out, 0, sizeof *out);
    out->args = args;
    out->kwargs = kwargs;
    size_t npos = args ? args->u.seq.len : 0;
    if (!sigstr) {
        out->n = npos;
        out->v = npos ? args->u.seq.items : NULL;
        return PB_OK;
    }
    sig s;
    if (parse_sig(sigstr, &s)) {
        snprintf(msg, cap, "%s() has an invalid signature", qual);
        return PB_EINVAL;
    }
    out->n = s.n;
    out->v = pb_arena_alloc(a, (s.n ? s.n : 1) * sizeof *out->v);
    if (!out->v) return PB_ENOMEM;
    for (size_t i = 0; i < s.n; i++) out->v[i] = i < npos ? args->u.seq.items[i] : NULL;
    /* keywords first, as CPython checks them before counting positionals */
    for (size_t k = 0; kwargs && k < kwargs->u.dict.len; k++) {
        const pb_value *key = kwargs->u.dict.kv[2 * k];
        if (!(key->type == PB_STR || (key->type == PB_BYTES && bytes_keys_ok))) {
            snprintf(msg, cap, "keywords must be strings");
            return PB_EINVAL;
        }
        size_t i;
        for (i = 0; i < s.n; i++)
            if (s.p[i].name && s.p[i].name_len == key->u.s.len &&
                !memcmp(s.p[i].name, key->u.s.ptr, key->u.s.len))
                break;
        if (i == s.n) {
            snprintf(msg, cap, "%s() got an unexpected keyword argument '%.*s'", qual,
                     (int)(key->u.s.len > 200 ? 200 : key->u.s.len), key->u.s.ptr);
            return PB_EINVAL;
        }
        if (i < npos) {
            snprintf(msg, cap, "%s() got multiple values for argument '%.*s'", qual,
                     (int)s.p[i].name_len, s.p[i].name);
            return PB_EINVAL;
        }
        out->v[i] = kwargs->u.dict.kv[2 * k + 1];
    }
    if (npos > s.n && !s.star) {
        if (s.required == s.n)
            snprintf(msg, cap, "%s() takes %zu positional argument%s but %zu %s given", qual,
                     s.n + 1, s.n ? "s" : "", npos + 1, npos ? "were" : "was");
        else
            snprintf(msg, cap, "%s() takes from %zu to %zu positional arguments but %zu were given",
                     qual, s.required + 1, s.n + 1, npos + 1);
        return PB_EINVAL;
    }
    size_t missing[MAX_PARAMS], nm = 0;
    for (size_t i = 0; i < s.required; i++)
        if (!out->v[i]) missing[nm++] = i;
    if (nm) {
        char names[160];
        name_list(names, sizeof names, &s, missing, nm);
        snprintf(msg, cap, "%s() missing %zu required positional argument%s: %s", qual, nm,
                 nm == 1 ? "" : "s", names);
        return PB_EINVAL;
    }
    for (size_t i = 0; i < s.n; i++) {
        const pb_value *v = out->v[i];
        if (!v || type_ok(s.p[i].type, v) || (s.p[i].nullable && v->type == PB_NONE)) continue;
        if (s.p[i].name)
            snprintf(msg, cap, "%s() argument '%.*s' must be %s%s, not %s", qual,
                     (int)s.p[i].name_len, s.p[i].name, type_word(s.p[i].type),
                     s.p[i].nullable ? " or None" : "", pb_type_name((pb_type)v->type));
        else
            snprintf(msg, cap, "%s() argument %zu must be %s%s, not %s", qual, i + 1,
                     type_word(s.p[i].type), s.p[i].nullable ? " or None" : "",
                     pb_type_name((pb_type)v->type));
        return PB_EINVAL;
    }
    return PB_OK;
}

/* ------------------------------------------------------------- accessors */

const char *pb_arg_str(const pb_args *a, size_t i, const char *def) {
    const pb_value *v = pb_arg(a, i);
    return v && (v->type == PB_STR || v->type == PB_BYTES) ? v->u.s.ptr : def;
}

int64_t pb_arg_int(const pb_args *a, size_t i, int64_t def) {
    const pb_value *v = pb_arg(a, i);
    if (!v) return def;
    if (v->type == PB_INT) return v->u.i;
    if (v->type == PB_BOOL) return v->u.b;
    return def;
}

int pb_arg_bool(const pb_args *a, size_t i, int def) {
    const pb_value *v = pb_arg(a, i);
    if (!v) return def;
    if (v->type == PB_BOOL) return v->u.b;
    if (v->type == PB_INT) return v->u.i != 0;
    return def;
}

double pb_arg_float(const pb_args *a, size_t i, double def) {
    const pb_value *v = pb_arg(a, i);
    if (!v) return def;
    if (v->type == PB_FLOAT) return v->u.f;
    if (v->type == PB_INT) return (double)v->u.i;
    return def;
}

pb_ref *pb_arg_ref(const pb_args *a, size_t i) {
    const pb_value *v = pb_arg(a, i);
    return v && v->type == PB_REMOTE ? (pb_ref *)v->u.h : NULL;
}

pb_object *pb_arg_object(const pb_args *a, size_t i) {
    const pb_value *v = pb_arg(a, i);
    return v && v->type == PB_OBJECT ? (pb_object *)v->u.h : NULL;
}
