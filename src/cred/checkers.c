/*
 * cred/checkers.c - MD5 helpers and the simple credential checkers:
 * in memory, anonymous, password file.
 *
 * Every username/password checker stores MD5(password) only: it is all
 * PB's challenge-response needs (see PASSWORD EQUIVALENCE in pb/cred.h).
 * Unknown users are checked against a dummy digest so that "no such user"
 * and "wrong password" take the same time and give the same answer.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "pb/cred.h"

/* ------------------------------------------------------------------- MD5 */

void pb_md5(const void *p, size_t n, uint8_t out[16])
{
    unsigned len = 16;
    if (!EVP_Digest(p, n, out, &len, EVP_md5(), NULL))
        memset(out, 0, 16); /* cannot happen with the default provider */
}

static void md5_concat(const uint8_t md5pw[16], const uint8_t *challenge, size_t clen,
                       uint8_t out[16])
{
    unsigned len = 16;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || !EVP_DigestInit_ex(ctx, EVP_md5(), NULL) || !EVP_DigestUpdate(ctx, md5pw, 16) ||
        (clen && !EVP_DigestUpdate(ctx, challenge, clen)) || !EVP_DigestFinal_ex(ctx, out, &len))
        memset(out, 0, 16);
    EVP_MD_CTX_free(ctx);
}

void pb_cred_response(const void *password, size_t n, const uint8_t *challenge, size_t clen,
                      uint8_t out[16])
{
    uint8_t h[16];
    pb_md5(password, n, h);
    md5_concat(h, challenge, clen, out);
    OPENSSL_cleanse(h, sizeof h);
}

int pb_cred_check_md5(const pb_credentials *c, const uint8_t md5_password[16])
{
    uint8_t want[16];
    if (!c || c->kind != PB_CRED_MD5_CHALLENGE)
        return 0;
    md5_concat(md5_password, c->challenge, c->challenge_len, want);
    int ok = c->response_len == 16 && c->response && CRYPTO_memcmp(want, c->response, 16) == 0;
    OPENSSL_cleanse(want, sizeof want);
    return ok;
}

/* Used for unknown users: same work, never matches a real response by
 * anything but a 2^-128 accident, and we refuse those anyway. */
static const uint8_t dummy_md5[16] = {0};

/* ------------------------------------------------------- in-memory table */

/* Open addressing, FNV-1a; grows at 50% load.  Entries own their name. */
typedef struct mem_entry {
    char *name;
    size_t len;
    uint8_t md5[16];
} mem_entry;

typedef struct mem_table {
    mem_entry *slots;
    size_t cap, n;
} mem_table;

static uint64_t fnv1a(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)p[i]) * 1099511628211ull;
    return h;
}

static mem_entry *mem_find(mem_table *t, const char *name, size_t len)
{
    if (!t->cap)
        return NULL;
    for (size_t i = fnv1a(name, len) & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
        mem_entry *e = &t->slots[i];
        if (!e->name)
            return NULL;
        if (e->len == len && memcmp(e->name, name, len) == 0)
            return e;
    }
}

static int mem_grow(mem_table *t)
{
    size_t ncap = t->cap ? t->cap * 2 : 16;
    mem_entry *ns = calloc(ncap, sizeof *ns);
    if (!ns)
        return PB_ENOMEM;
    for (size_t j = 0; j < t->cap; j++) {
        mem_entry *e = &t->slots[j];
        if (!e->name)
            continue;
        size_t i = fnv1a(e->name, e->len) & (ncap - 1);
        while (ns[i].name)
            i = (i + 1) & (ncap - 1);
        ns[i] = *e;
    }
    free(t->slots);
    t->slots = ns;
    t->cap = ncap;
    return 0;
}

static int mem_put(mem_table *t, const char *name, size_t len, const uint8_t md5[16])
{
    mem_entry *e = mem_find(t, name, len);
    if (e) {
        memcpy(e->md5, md5, 16);
        return 0;
    }
    if ((t->n + 1) * 2 > t->cap && mem_grow(t))
        return PB_ENOMEM;
    char *copy = malloc(len + 1);
    if (!copy)
        return PB_ENOMEM;
    memcpy(copy, name, len);
    copy[len] = 0;
    size_t i = fnv1a(name, len) & (t->cap - 1);
    while (t->slots[i].name)
        i = (i + 1) & (t->cap - 1);
    t->slots[i].name = copy;
    t->slots[i].len = len;
    memcpy(t->slots[i].md5, md5, 16);
    t->n++;
    return 0;
}

static void mem_clear(mem_table *t)
{
    for (size_t i = 0; i < t->cap; i++) {
        OPENSSL_cleanse(t->slots[i].md5, 16);
        free(t->slots[i].name);
    }
    free(t->slots);
    t->slots = NULL;
    t->cap = t->n = 0;
}

static void mem_check(pb_checker *c, const pb_credentials *cred, pb_check_result *r)
{
    mem_entry *e = mem_find(c->ud, cred->username, cred->username_len);
    int ok = pb_cred_check_md5(cred, e ? e->md5 : dummy_md5);
    if (ok && e)
        pb_check_ok(r, e->name);
    else
        pb_check_fail(r);
}

static void mem_destroy(pb_checker *c)
{
    mem_clear(c->ud);
    free(c->ud);
    free(c);
}

static const pb_checker_ops mem_ops = {PB_CRED_MD5_CHALLENGE, mem_check, mem_destroy};

static pb_checker *mem_checker_new(void)
{
    pb_checker *c = calloc(1, sizeof *c);
    mem_table *t = calloc(1, sizeof *t);
    if (!c || !t) {
        free(c);
        free(t);
        return NULL;
    }
    c->ops = &mem_ops;
    c->ud = t;
    return c;
}

pb_checker *pb_checker_memory_new(void) { return mem_checker_new(); }

int pb_checker_memory_add(pb_checker *c, const char *user, const char *password)
{
    if (!c || c->ops != &mem_ops || !user || !password)
        return PB_EINVAL;
    uint8_t h[16];
    pb_md5(password, strlen(password), h);
    int rc = mem_put(c->ud, user, strlen(user), h);
    OPENSSL_cleanse(h, sizeof h);
    return rc;
}

/* -------------------------------------------------------------- anonymous */

static void anon_check(pb_checker *c, const pb_credentials *cred, pb_check_result *r)
{
    if (cred->kind == PB_CRED_ANONYMOUS)
        pb_check_ok(r, "anonymous");
    else
        pb_check_fail(r);
}

static void anon_destroy(pb_checker *c) { free(c); }

static const pb_checker_ops anon_ops = {PB_CRED_ANONYMOUS, anon_check, anon_destroy};

pb_checker *pb_checker_anonymous_new(void)
{
    pb_checker *c = calloc(1, sizeof *c);
    if (c)
        c->ops = &anon_ops;
    return c;
}

/* ---------------------------------------------------------- password file */

static int unhex(const char *s, size_t n, uint8_t out[16])
{
    if (n != 32)
        return -1;
    for (size_t i = 0; i < 16; i++) {
        int v = 0;
        for (int k = 0; k < 2; k++) {
            char ch = (char)tolower((unsigned char)s[2 * i + k]);
            int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
            if (d < 0)
                return -1;
            v = v * 16 + d;
        }
        out[i] = (uint8_t)v;
    }
    return 0;
}

pb_checker *pb_checker_file_new(const char *path, pb_errbuf *err)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        pb_err_set(err, PB_EIO, "%s: %s", path, strerror(errno));
        return NULL;
    }
    pb_checker *c = mem_checker_new();
    if (!c) {
        fclose(f);
        pb_err_set(err, PB_ENOMEM, "out of memory");
        return NULL;
    }
    char line[4096];
    unsigned lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t n = strlen(line);
        if (n == sizeof line - 1 && line[n - 1] != '\n')
            goto malformed;
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = 0;
        if (!n || line[0] == '#')
            continue;
        char *colon = strchr(line, ':');
        if (!colon || colon == line)
            goto malformed;
        size_t ulen = (size_t)(colon - line);
        const char *rest = colon + 1;
        uint8_t h[16];
        if (strncmp(rest, "plain:", 6) == 0)
            pb_md5(rest + 6, strlen(rest + 6), h);
        else if (unhex(rest, strlen(rest), h))
            goto malformed;
        if (mem_put(c->ud, line, ulen, h)) {
            pb_err_set(err, PB_ENOMEM, "out of memory");
            goto fail;
        }
        OPENSSL_cleanse(h, sizeof h);
    }
    OPENSSL_cleanse(line, sizeof line);
    fclose(f);
    return c;
malformed:
    pb_err_set(err, PB_EINVAL, "%s:%u: expected user:md5hex or user:plain:password", path,
               lineno);
fail:
    OPENSSL_cleanse(line, sizeof line);
    fclose(f);
    c->ops->destroy(c);
    return NULL;
}
