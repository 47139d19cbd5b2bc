/*
 * commands_transfer.c - uploadFile, downloadFile, uploadDirectory.
 *
 * The worker drives the transfer by calling the master's reader/writer
 * objects (passed inside the args as remote references): one block per
 * call, the next only after the answer.  uploadDirectory builds a tar
 * (PAX, optionally gzip or bzip2) of the directory with libarchive in a
 * temporary file first.  Each ends with rc (and a stderr text on error)
 * sent even after an interrupt, as the Python worker's TransferCommand.
 */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pbworker.h"

static int is_text(const pb_value *v) { return v && (v->type == PB_STR || v->type == PB_BYTES); }

typedef struct xfer {
    char *path;
    pb_ref *peer;        /* writer or reader */
    int64_t blocksize;
    int has_remaining;
    int64_t remaining;
    int keepstamp;
    double atime, mtime;
    FILE *fp;
    int rc;
    char *stderr_text;
    int is_dir;
    const char *compress; /* NULL, "gz", "bz2" */
    int mode;             /* -1: none */
    pb_failure *failure;  /* a failed remote call: completes with it */
    pb_arena *fa;
    char *buf;
} xfer;

static int missing_key(const char **type, char *msg, size_t len, const char *key)
{
    *type = "builtins.KeyError";
    snprintf(msg, len, "'%s'", key);
    return -1;
}

static int xfer_setup(wk_cmd *c, const char **type, char *msg, size_t len, const char *pathkey,
                      const char *peerkey, const char *cls)
{
    pb_value *wd = wk_arg(c, "workdir"), *p = wk_arg(c, pathkey);
    if (!wd)
        return missing_key(type, msg, len, "workdir");
    if (!p)
        return missing_key(type, msg, len, pathkey);
    pb_value *peer = wk_arg(c, peerkey);
    if (!peer || !wk_arg(c, "blocksize")) {
        *type = "builtins.ValueError";
        snprintf(msg, len, "%s is missing args: %s", cls,
                 !peer && !wk_arg(c, "blocksize") ? (strcmp(peerkey, "reader") ? "writer, blocksize" : "reader, blocksize")
                 : !peer                         ? peerkey
                                                 : "blocksize");
        return -1;
    }
    if (!wk_arg(c, "maxsize"))
        return missing_key(type, msg, len, "maxsize");
    if (peer->type != PB_REMOTE) {
        *type = "builtins.AttributeError";
        snprintf(msg, len, "'%s' object has no attribute 'callRemote'", peer->type == PB_STR ? "str" : "object");
        return -1;
    }
    xfer *x = pb_arena_alloc(c->arena, sizeof *x);
    memset(x, 0, sizeof *x);
    char *base = wk_join(c->arena, c->b->basedir, is_text(wd) ? wd->u.s.ptr : "");
    x->path = wk_join(c->arena, base, wk_expanduser(c->arena, is_text(p) ? p->u.s.ptr : ""));
    x->peer = pb_ref_ref((pb_ref *)peer->u.h);
    x->blocksize = (int64_t)wk_arg_num(c, "blocksize", 16384);
    pb_value *ms = wk_arg(c, "maxsize");
    x->has_remaining = ms->type == PB_INT || ms->type == PB_FLOAT;
    x->remaining = (int64_t)wk_arg_num(c, "maxsize", 0);
    x->mode = -1;
    c->impl = x;
    return 0;
}

static void xfer_destroy(wk_cmd *c)
{
    xfer *x = c->impl;
    if (!x)
        return;
    if (x->fp)
        fclose(x->fp);
    if (x->peer)
        pb_ref_unref(x->peer);
    pb_arena_free(x->fa);
    free(x->buf);
    free(x->stderr_text);
}

static void set_stderr(xfer *x, const char *fmt, const char *path)
{
    if (x->stderr_text)
        return;
    size_t n = strlen(fmt) + strlen(path) + 1;
    x->stderr_text = malloc(n);
    snprintf(x->stderr_text, n, fmt, path);
}

/* TransferCommand.finished, then the command's end. */
static void xfer_finished(wk_cmd *c)
{
    xfer *x = c->impl;
    if (x->fp) {
        fclose(x->fp);
        x->fp = NULL;
    }
    wk_cmd_update_int(c, "rc", x->rc);
    if (x->stderr_text)
        wk_cmd_update_text(c, "stderr", x->stderr_text, strlen(x->stderr_text));
    if (x->failure)
        wk_cmd_finished_failure(c, x->failure->type, x->failure->value ? x->failure->value : "");
    else
        wk_cmd_finished(c);
    wk_cmd_release(c);
}

static void keep_failure(xfer *x, pb_deferred *d)
{
    const pb_failure *f = pb_deferred_failure(d);
    if (!f || x->failure)
        return;
    x->fa = pb_arena_new(0);
    x->failure = pb_failure_copy(x->fa, f);
}

/* Call method on the peer; cb runs with the deferred (success or failure). */
static void call_peer(wk_cmd *c, const char *method, pb_value *args, pb_deferred_fn cb)
{
    xfer *x = c->impl;
    pb_errbuf err;
    pb_deferred *d = pb_ref_call(x->peer, method, args, NULL, NULL, &err);
    if (!d) {
        d = pb_deferred_new();
        pb_deferred_fail(d, err.code ? err.code : PB_ECLOSED, PB_FAILURE_CONNECTION_LOST, err.msg);
    }
    pb_deferred_add(d, cb, cb, c);
    pb_deferred_unref(d);
}

/* ------------------------------------------------------------ uploads */

static void upload_loop(wk_cmd *c);

static int utime_done(pb_deferred *d, void *ud)
{
    xfer_finished(ud);
    return 0;
}

static int close_done(pb_deferred *d, void *ud)
{
    wk_cmd *c = ud;
    xfer *x = c->impl;
    if (pb_deferred_failure(d) && !x->failure)
        keep_failure(x, d); /* _close_ok: a failed close fails the command */
    if (x->keepstamp && !x->failure && !x->is_dir) {
        pb_arena *a = pb_arena_new(0);
        pb_value *args = pb_tuple(a, 1), *t = pb_tuple(a, 2);
        pb_seq_append(a, t, pb_float(a, x->atime));
        pb_seq_append(a, t, pb_float(a, x->mtime));
        pb_seq_append(a, args, t);
        call_peer(c, "utime", args, utime_done);
        pb_arena_free(a);
        return 0;
    }
    xfer_finished(c);
    return 0;
}

static int close_after_error(pb_deferred *d, void *ud)
{
    xfer_finished(ud); /* errors of close itself are ignored here */
    return 0;
}

static int unpack_done(pb_deferred *d, void *ud)
{
    wk_cmd *c = ud;
    xfer *x = c->impl;
    if (pb_deferred_failure(d)) {
        x->rc = 1;
        keep_failure(x, d);
    }
    xfer_finished(c);
    return 0;
}

static int write_done(pb_deferred *d, void *ud)
{
    wk_cmd *c = ud;
    xfer *x = c->impl;
    if (pb_deferred_failure(d)) {
        keep_failure(x, d);
        x->rc = 1;
        if (x->fp) {
            fclose(x->fp);
            x->fp = NULL;
        }
        if (x->is_dir) {
            xfer_finished(c);
            return 0;
        }
        call_peer(c, "close", NULL, close_after_error);
        return 0;
    }
    upload_loop(c);
    return 0;
}

/* The length of the next block, or 0 when the transfer ends now:
 * interrupted, no file, or maxsize reached (said in stderr, rc 1). */
static int64_t next_block(wk_cmd *c)
{
    xfer *x = c->impl;
    if (c->interrupted || !x->fp)
        return 0;
    int64_t length = x->blocksize;
    if (x->has_remaining && length > x->remaining)
        length = x->remaining;
    if (length <= 0) {
        if (!x->stderr_text) {
            set_stderr(x, "Maximum filesize reached, truncating file '%s'", x->path);
            x->rc = 1;
        }
        return 0;
    }
    return length;
}

static void upload_end(wk_cmd *c)
{
    xfer *x = c->impl;
    if (x->fp) {
        fclose(x->fp);
        x->fp = NULL;
    }
    call_peer(c, x->is_dir ? "unpack" : "close", NULL, x->is_dir ? unpack_done : close_done);
}

static void upload_loop(wk_cmd *c)
{
    xfer *x = c->impl;
    int64_t length = next_block(c);
    if (length <= 0) {
        upload_end(c);
        return;
    }
    if (!x->buf)
        x->buf = malloc((size_t)x->blocksize);
    size_t n = fread(x->buf, 1, (size_t)length, x->fp);
    if (n == 0) {
        upload_end(c);
        return;
    }
    if (x->has_remaining)
        x->remaining -= (int64_t)n;
    pb_arena *a = pb_arena_new(0);
    pb_value *args = pb_tuple(a, 1);
    pb_seq_append(a, args, pb_bytes(a, x->buf, n));
    call_peer(c, "write", args, write_done);
    pb_arena_free(a);
}

static int upload_file_setup(wk_cmd *c, const char **type, char *msg, size_t len)
{
    if (xfer_setup(c, type, msg, len, "workersrc", "writer", "WorkerFileUploadCommand"))
        return -1;
    xfer *x = c->impl;
    x->keepstamp = wk_arg_true(c, "keepstamp", 0);
    return 0;
}

static void upload_file_start(wk_cmd *c)
{
    xfer *x = c->impl;
    struct stat st;
    int ok = 1;
    if (x->keepstamp) {
        if (stat(x->path, &st) == 0) {
            x->atime = (double)st.st_atim.tv_sec + st.st_atim.tv_nsec / 1e9;
            x->mtime = (double)st.st_mtim.tv_sec + st.st_mtim.tv_nsec / 1e9;
        } else {
            ok = 0;
        }
    }
    if (ok) {
        x->fp = fopen(x->path, "rb");
        if (x->fp && fstat(fileno(x->fp), &st) == 0 && S_ISDIR(st.st_mode)) {
            fclose(x->fp); /* Python's open() refuses directories */
            x->fp = NULL;
        }
    }
    if (!x->fp) {
        set_stderr(x, "Cannot open file '%s' for upload", x->path);
        x->rc = 1;
    }
    char *h = wk_printf(c->arena, "sending %s\n", x->path);
    wk_cmd_status_text(c, "header", h, strlen(h));
    wk_cmd_hold(c);
    upload_loop(c);
}

static void xfer_interrupt(wk_cmd *c)
{
    xfer *x = c->impl;
    if (c->interrupted)
        return;
    x->rc = 1;
    c->interrupted = 1;
}

const wk_cmd_ops wk_cmd_upload_file = {"uploadFile", upload_file_setup, upload_file_start,
                                       xfer_interrupt, xfer_destroy};

/* ------------------------------------------------------------ uploadDirectory */

static int upload_dir_setup(wk_cmd *c, const char **type, char *msg, size_t len)
{
    if (xfer_setup(c, type, msg, len, "workersrc", "writer", "WorkerDirectoryUploadCommand"))
        return -1;
    if (!wk_arg(c, "compress"))
        return missing_key(type, msg, len, "compress");
    xfer *x = c->impl;
    x->is_dir = 1;
    const char *comp = wk_arg_str(c, "compress");
    x->compress = comp && !strcmp(comp, "gz") ? "gz" : comp && !strcmp(comp, "bz2") ? "bz2" : NULL;
    return 0;
}

/* Tar path (its contents, names relative to it) into fp. */
static int make_tar(const char *path, const char *compress, FILE *fp, char *err, size_t errlen)
{
    struct archive *w = archive_write_new();
    archive_write_set_format_pax_restricted(w);
    if (compress && !strcmp(compress, "gz"))
        archive_write_add_filter_gzip(w);
    else if (compress && !strcmp(compress, "bz2"))
        archive_write_add_filter_bzip2(w);
    if (archive_write_open_FILE(w, fp) != ARCHIVE_OK) {
        snprintf(err, errlen, "%s", archive_error_string(w));
        archive_write_free(w);
        return -1;
    }
    struct archive *disk = archive_read_disk_new();
    archive_read_disk_set_standard_lookup(disk);
    archive_read_disk_set_symlink_physical(disk);
    int r = archive_read_disk_open(disk, path);
    size_t plen = strlen(path);
    while (plen > 1 && path[plen - 1] == '/')
        plen--;
    int rc = 0;
    while (r == ARCHIVE_OK) {
        struct archive_entry *e = archive_entry_new();
        r = archive_read_next_header2(disk, e);
        if (r == ARCHIVE_EOF) {
            archive_entry_free(e);
            break;
        }
        if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
            snprintf(err, errlen, "%s", archive_error_string(disk));
            archive_entry_free(e);
            rc = -1;
            break;
        }
        r = ARCHIVE_OK;
        archive_read_disk_descend(disk);
        const char *full = archive_entry_pathname(e);
        if (strncmp(full, path, plen) || (full[plen] != '/' && full[plen] != 0)) {
            archive_entry_free(e);
            continue;
        }
        const char *rel = full + plen;
        while (*rel == '/')
            rel++;
        if (!*rel) { /* the directory itself */
            archive_entry_free(e);
            continue;
        }
        char *name = strdup(rel);
        archive_entry_set_pathname(e, name);
        free(name);
        if (archive_write_header(w, e) != ARCHIVE_OK) {
            snprintf(err, errlen, "%s", archive_error_string(w));
            archive_entry_free(e);
            rc = -1;
            break;
        }
        if (archive_entry_filetype(e) == AE_IFREG && archive_entry_size(e) > 0) {
            FILE *in = fopen(archive_entry_sourcepath(e), "rb");
            char buf[65536];
            size_t n;
            while (in && (n = fread(buf, 1, sizeof buf, in)) > 0)
                archive_write_data(w, buf, n);
            if (in)
                fclose(in);
        }
        archive_entry_free(e);
    }
    archive_read_close(disk);
    archive_read_free(disk);
    archive_write_close(w);
    archive_write_free(w);
    return rc;
}

static void upload_dir_start(wk_cmd *c)
{
    xfer *x = c->impl;
    struct stat st;
    if (lstat(x->path, &st)) {
        char *m = wk_printf(c->arena, "[Errno %d] %s: '%s'", errno, strerror(errno), x->path);
        wk_cmd_finished_failure(c, errno == ENOENT ? "builtins.FileNotFoundError" : "builtins.OSError", m);
        return;
    }
    x->fp = tmpfile();
    char err[256] = "";
    if (!x->fp || make_tar(x->path, x->compress, x->fp, err, sizeof err)) {
        wk_cmd_finished_failure(c, "tarfile.TarError", err[0] ? err : "cannot create archive");
        return;
    }
    fflush(x->fp);
    rewind(x->fp);
    char *h = wk_printf(c->arena, "sending %s\n", x->path);
    wk_cmd_status_text(c, "header", h, strlen(h));
    wk_cmd_hold(c);
    upload_loop(c);
}

const wk_cmd_ops wk_cmd_upload_dir = {"uploadDirectory", upload_dir_setup, upload_dir_start,
                                      xfer_interrupt, xfer_destroy};

/* ------------------------------------------------------------ downloadFile */

static void download_loop(wk_cmd *c);

static int reader_closed(pb_deferred *d, void *ud)
{
    wk_cmd *c = ud;
    const pb_failure *f = pb_deferred_failure(d);
    if (f)
        wk_log("while trying to close reader: %s: %s", f->type, f->value ? f->value : "");
    xfer_finished(c);
    return 0;
}

static void download_end(wk_cmd *c) { call_peer(c, "close", NULL, reader_closed); }

static int read_done(pb_deferred *d, void *ud)
{
    wk_cmd *c = ud;
    xfer *x = c->impl;
    if (pb_deferred_failure(d)) {
        keep_failure(x, d);
        download_end(c);
        return 0;
    }
    pb_value *v = pb_deferred_value(d);
    if (!v || (v->type != PB_BYTES && v->type != PB_STR) || v->u.s.len == 0) {
        download_end(c);
        return 0;
    }
    if (x->has_remaining)
        x->remaining -= (int64_t)v->u.s.len;
    if (x->fp && fwrite(v->u.s.ptr, 1, v->u.s.len, x->fp) != v->u.s.len) {
        pb_arena *a = pb_arena_new(0);
        x->fa = a;
        x->failure = pb_failure_new(a, PB_EIO, "builtins.OSError", strerror(errno), NULL, 0);
        download_end(c);
        return 0;
    }
    download_loop(c);
    return 0;
}

static void download_loop(wk_cmd *c)
{
    int64_t length = next_block(c);
    if (length <= 0) {
        download_end(c);
        return;
    }
    pb_arena *a = pb_arena_new(0);
    pb_value *args = pb_tuple(a, 1);
    pb_seq_append(a, args, pb_int(a, length));
    call_peer(c, "read", args, read_done);
    pb_arena_free(a);
}

static int download_setup(wk_cmd *c, const char **type, char *msg, size_t len)
{
    if (xfer_setup(c, type, msg, len, "workerdest", "reader", "WorkerFileDownloadCommand"))
        return -1;
    pb_value *m = wk_arg(c, "mode");
    if (!m)
        return missing_key(type, msg, len, "mode");
    xfer *x = c->impl;
    x->mode = m->type == PB_INT ? (int)m->u.i : -1;
    return 0;
}

static void download_start(wk_cmd *c)
{
    xfer *x = c->impl;
    char *dir = wk_strdup(c->arena, x->path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = 0;
        struct stat st;
        if (stat(dir, &st) != 0) {
            int r = wk_makedirs(dir);
            if (r) {
                char *m = wk_printf(c->arena, "[Errno %d] %s: '%s'", -r, strerror(-r), dir);
                wk_cmd_finished_failure(c, -r == EACCES ? "builtins.PermissionError"
                                                        : "builtins.OSError", m);
                return;
            }
        }
    }
    x->fp = fopen(x->path, "wb");
    if (x->fp && x->mode >= 0 && chmod(x->path, (mode_t)x->mode)) {
        fclose(x->fp);
        x->fp = NULL;
    }
    if (!x->fp) {
        set_stderr(x, "Cannot open file '%s' for download", x->path);
        x->rc = 1;
    }
    wk_cmd_hold(c);
    download_loop(c);
}

const wk_cmd_ops wk_cmd_download_file = {"downloadFile", download_setup, download_start,
                                         xfer_interrupt, xfer_destroy};
