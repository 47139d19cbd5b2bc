/*
 * commands_fs.c - the synchronous file-system commands: mkdir, stat, glob,
 * listdir, rmfile.  They send their result and rc (or a header
 * "<cmd>: <strerror>: <path>" and rc = errno) and complete at once, before
 * startCommand is answered, as the Python worker does.
 */
#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pbworker.h"

static int is_text(const pb_value *v) { return v && (v->type == PB_STR || v->type == PB_BYTES); }

static int missing_key(const char **type, char *msg, size_t len, const char *key)
{
    *type = "builtins.KeyError";
    snprintf(msg, len, "'%s'", key);
    return -1;
}

static void fs_error(wk_cmd *c, const char *cmd, int err, const char *path)
{
    char *h = wk_printf(c->arena, "%s: %s: %s", cmd, strerror(err), path);
    wk_cmd_status_text(c, "header", h, strlen(h));
    wk_cmd_status_int(c, "rc", err);
}

/* ------------------------------------------------------------------ mkdir */

static int mkdir_setup(wk_cmd *c, const char **type, char *msg, size_t len)
{
    pb_value *d = wk_arg(c, "dir");
    if (!d)
        return missing_key(type, msg, len, "dir");
    c->impl = wk_join(c->arena, c->b->basedir, is_text(d) ? d->u.s.ptr : "");
    return 0;
}

static void mkdir_start(wk_cmd *c)
{
    const char *path = c->impl;
    struct stat st;
    if (!(stat(path, &st) == 0 && S_ISDIR(st.st_mode))) {
        int r = wk_makedirs(path);
        if (r) {
            fs_error(c, "mkdir", -r, path);
            wk_cmd_finished(c);
            return;
        }
    }
    wk_cmd_status_int(c, "rc", 0);
    wk_cmd_finished(c);
}

const wk_cmd_ops wk_cmd_mkdir = {"mkdir", mkdir_setup, mkdir_start, NULL, NULL};

/* ------------------------------------------------------------------ stat */

static int stat_setup(wk_cmd *c, const char **type, char *msg, size_t len)
{
    pb_value *f = wk_arg(c, "file");
    if (!f)
        return missing_key(type, msg, len, "file");
    const char *wd = wk_arg_str(c, "workdir");
    char *base = wk_join(c->arena, c->b->basedir, wd ? wd : "");
    c->impl = wk_join(c->arena, base, is_text(f) ? f->u.s.ptr : "");
    return 0;
}

static void stat_start(wk_cmd *c)
{
    const char *path = c->impl;
    struct stat st;
    if (stat(path, &st)) {
        fs_error(c, "stat", errno, path);
        wk_cmd_finished(c);
        return;
    }
    pb_arena *a = pb_arena_new(0);
    pb_value *t = pb_tuple(a, 10);
    int64_t f[10] = {st.st_mode, (int64_t)st.st_ino, (int64_t)st.st_dev, (int64_t)st.st_nlink,
                     st.st_uid,  st.st_gid,          st.st_size,         st.st_atime,
                     st.st_mtime, st.st_ctime};
    for (int i = 0; i < 10; i++)
        pb_seq_append(a, t, pb_int(a, f[i]));
    wk_cmd_status_value(c, "stat", t);
    wk_cmd_status_int(c, "rc", 0);
    pb_arena_free(a);
    wk_cmd_finished(c);
}

const wk_cmd_ops wk_cmd_stat = {"stat", stat_setup, stat_start, NULL, NULL};

/* ------------------------------------------------------------------ glob */

/* Python's glob.glob(pattern, recursive=True), results in directory order. */
typedef struct strvec {
    char **v;
    size_t n, cap;
} strvec;

static void sv_push(strvec *s, const char *x)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
    }
    s->v[s->n++] = strdup(x);
}
static void sv_free(strvec *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    s->v = NULL;
    s->n = s->cap = 0;
}

static int has_magic(const char *s) { return strpbrk(s, "*?[") != NULL; }

static char *pjoin(const char *a, const char *b)
{
    size_t al = strlen(a), bl = strlen(b);
    if (b[0] == '/')
        return strdup(b);
    char *r = malloc(al + bl + 2);
    memcpy(r, a, al);
    size_t o = al;
    if (al && a[al - 1] != '/')
        r[o++] = '/';
    memcpy(r + o, b, bl + 1);
    return r;
}

static void listdir(const char *dir, int dironly, strvec *out)
{
    DIR *d = opendir(*dir ? dir : ".");
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (dironly) {
            char *p = pjoin(dir, e->d_name);
            struct stat st;
            int isdir = stat(p, &st) == 0 && S_ISDIR(st.st_mode);
            free(p);
            if (!isdir)
                continue;
        }
        sv_push(out, e->d_name);
    }
    closedir(d);
}

static void rlistdir(const char *dir, int dironly, strvec *out)
{
    strvec names = {0};
    listdir(dir, dironly, &names);
    for (size_t i = 0; i < names.n; i++) {
        if (names.v[i][0] == '.')
            continue;
        sv_push(out, names.v[i]);
        char *path = *dir ? pjoin(dir, names.v[i]) : strdup(names.v[i]);
        strvec sub = {0};
        rlistdir(path, dironly, &sub);
        for (size_t j = 0; j < sub.n; j++) {
            char *y = pjoin(names.v[i], sub.v[j]);
            sv_push(out, y);
            free(y);
        }
        sv_free(&sub);
        free(path);
    }
    sv_free(&names);
}

static void split(const char *p, char **dir, char **base)
{
    const char *slash = strrchr(p, '/');
    size_t i = slash ? (size_t)(slash - p) + 1 : 0;
    *base = strdup(p + i);
    size_t hl = i;
    /* strip trailing slashes unless the head is all slashes */
    size_t k = hl;
    while (k > 0 && p[k - 1] == '/')
        k--;
    if (k > 0)
        hl = k;
    *dir = strndup(p, hl);
}

static int lexists(const char *p)
{
    struct stat st;
    return lstat(p, &st) == 0;
}
static int isdir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static void iglob(const char *pattern, int dironly, strvec *out);

static void glob_in_dir(const char *dirname, const char *basename, int dironly, strvec *names)
{
    if (has_magic(basename)) {
        if (!strcmp(basename, "**")) {
            sv_push(names, "");
            rlistdir(dirname, dironly, names);
        } else {
            strvec all = {0};
            listdir(dirname, dironly, &all);
            for (size_t i = 0; i < all.n; i++) {
                if (basename[0] != '.' && all.v[i][0] == '.')
                    continue;
                if (fnmatch(basename, all.v[i], FNM_NOESCAPE) == 0)
                    sv_push(names, all.v[i]);
            }
            sv_free(&all);
        }
    } else {
        if (*basename) {
            char *p = pjoin(dirname, basename);
            if (lexists(p))
                sv_push(names, basename);
            free(p);
        } else if (isdir(dirname)) {
            sv_push(names, basename);
        }
    }
}

static void iglob(const char *pattern, int dironly, strvec *out)
{
    char *dirname, *basename;
    split(pattern, &dirname, &basename);
    if (!has_magic(pattern)) {
        if (*basename ? lexists(pattern) : isdir(dirname))
            sv_push(out, pattern);
    } else if (!*dirname) {
        strvec names = {0};
        glob_in_dir("", basename, dironly, &names);
        for (size_t i = 0; i < names.n; i++)
            sv_push(out, names.v[i]);
        sv_free(&names);
    } else {
        strvec dirs = {0};
        if (strcmp(dirname, pattern) && has_magic(dirname))
            iglob(dirname, 1, &dirs);
        else
            sv_push(&dirs, dirname);
        for (size_t d = 0; d < dirs.n; d++) {
            strvec names = {0};
            glob_in_dir(dirs.v[d], basename, dironly, &names);
            for (size_t i = 0; i < names.n; i++) {
                char *j = pjoin(dirs.v[d], names.v[i]);
                sv_push(out, j);
                free(j);
            }
            sv_free(&names);
        }
        sv_free(&dirs);
    }
    free(dirname);
    free(basename);
}

static int glob_setup(wk_cmd *c, const char **type, char *msg, size_t len)
{
    pb_value *p = wk_arg(c, "path");
    if (!p)
        return missing_key(type, msg, len, "path");
    c->impl = wk_join(c->arena, c->b->basedir, is_text(p) ? p->u.s.ptr : "");
    return 0;
}

static void send_files(wk_cmd *c, strvec *files)
{
    pb_arena *a = pb_arena_new(0);
    pb_value *l = pb_list(a, files->n);
    for (size_t i = 0; i < files->n; i++) {
        pb_value *s = pb_strz(a, files->v[i]);
        if (!s) { /* not UTF-8: Python would send surrogate escapes; use bytes */
            s = pb_bytesz(a, files->v[i]);
        }
        pb_seq_append(a, l, s);
    }
    wk_cmd_status_value(c, "files", l);
    wk_cmd_status_int(c, "rc", 0);
    pb_arena_free(a);
}

static void glob_start(wk_cmd *c)
{
    strvec out = {0};
    const char *pattern = c->impl;
    iglob(pattern, 0, &out);
    send_files(c, &out);
    sv_free(&out);
    wk_cmd_finished(c);
}

const wk_cmd_ops wk_cmd_glob = {"glob", glob_setup, glob_start, NULL, NULL};

/* ------------------------------------------------------------------ listdir */

static int listdir_setup(wk_cmd *c, const char **type, char *msg, size_t len)
{
    pb_value *d = wk_arg(c, "dir");
    if (!d)
        return missing_key(type, msg, len, "dir");
    c->impl = wk_join(c->arena, c->b->basedir, is_text(d) ? d->u.s.ptr : "");
    return 0;
}

static void listdir_start(wk_cmd *c)
{
    const char *path = c->impl;
    DIR *d = opendir(path);
    if (!d) {
        fs_error(c, "listdir", errno, path);
        wk_cmd_finished(c);
        return;
    }
    closedir(d);
    strvec out = {0};
    listdir(path, 0, &out);
    send_files(c, &out);
    sv_free(&out);
    wk_cmd_finished(c);
}

const wk_cmd_ops wk_cmd_listdir = {"listdir", listdir_setup, listdir_start, NULL, NULL};

/* ------------------------------------------------------------------ rmfile */

static int rmfile_setup(wk_cmd *c, const char **type, char *msg, size_t len)
{
    pb_value *p = wk_arg(c, "path");
    if (!p)
        return missing_key(type, msg, len, "path");
    c->impl = wk_join(c->arena, c->b->basedir, is_text(p) ? p->u.s.ptr : "");
    return 0;
}

static void rmfile_start(wk_cmd *c)
{
    const char *path = c->impl;
    if (unlink(path)) {
        fs_error(c, "rmfile", errno, path);
    } else {
        wk_cmd_status_int(c, "rc", 0);
    }
    wk_cmd_finished(c);
}

const wk_cmd_ops wk_cmd_rmfile = {"rmfile", rmfile_setup, rmfile_start, NULL, NULL};
