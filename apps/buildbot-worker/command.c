/*
 * command.c - one running worker command and the status stream it sends.
 *
 * Mirrors what buildbot-worker 3.7 puts on the wire: every text stream
 * (stdout, stderr, header, and each logfile) goes through a line finder
 * that only releases whole lines (an unterminated last line is released
 * with a '\n' added when the command completes), and everything goes
 * through a buffer that merges consecutive items of the same stream and is
 * flushed after 5 s, when 64 KiB are waiting, or at the end; every buffered
 * item is one update([[{key: value}, 0]]) call.  The end is elapsed (if the
 * command is still "running"), the flush, then complete(None or failure).
 */
#include <errno.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "pbworker.h"

#define BUFFER_SIZE (64 * 1024)
#define BUFFER_TIMEOUT_MS 5000
#define MAX_LINE_LENGTH 4096

struct wk_lines {
    wk_lines *next;
    char *key;      /* stream or logfile name */
    int is_log;
    pb_buf partial;
};

struct wk_item {
    wk_item *next;
    char *key;      /* stdout/stderr/header/log or a value key */
    char *logname;  /* for log */
    pb_buf text;    /* for text kinds */
    pb_arena *va;   /* for values */
    pb_value *value;
};

/* ------------------------------------------------------------ helpers */

double wk_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

char *wk_strdup(pb_arena *a, const char *s) { return pb_arena_memdup(a, s, strlen(s)); }

char *wk_printf(pb_arena *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *p = pb_arena_alloc(a, (size_t)n + 1);
    if (!p)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

char *wk_join(pb_arena *a, const char *x, const char *y)
{
    if (y[0] == '/')
        return wk_strdup(a, y);
    size_t n = strlen(x);
    if (n == 0 || x[n - 1] == '/')
        return wk_printf(a, "%s%s", x, y);
    return wk_printf(a, "%s/%s", x, y);
}

char *wk_expanduser(pb_arena *a, const char *p)
{
    if (p[0] != '~')
        return wk_strdup(a, p);
    const char *slash = strchr(p, '/');
    size_t ulen = slash ? (size_t)(slash - p - 1) : strlen(p + 1);
    const char *home = NULL;
    if (ulen == 0) {
        home = getenv("HOME");
        if (!home) {
            struct passwd *pw = getpwuid(getuid());
            home = pw ? pw->pw_dir : NULL;
        }
    } else {
        char *u = pb_arena_memdup(a, p + 1, ulen);
        struct passwd *pw = u ? getpwnam(u) : NULL;
        home = pw ? pw->pw_dir : NULL;
    }
    if (!home)
        return wk_strdup(a, p);
    size_t hl = strlen(home);
    while (hl > 1 && home[hl - 1] == '/')
        hl--;
    return wk_printf(a, "%.*s%s", (int)hl, home, slash ? slash : "");
}

char *wk_abspath(pb_arena *a, const char *p)
{
    char cwd[4096];
    const char *full = p;
    if (p[0] != '/') {
        if (!getcwd(cwd, sizeof cwd))
            strcpy(cwd, "/");
        full = wk_join(a, cwd, p);
    }
    /* normpath */
    size_t n = strlen(full);
    char *out = pb_arena_alloc(a, n + 2);
    size_t o = 0;
    const char *s = full;
    while (*s) {
        while (*s == '/')
            s++;
        if (!*s)
            break;
        const char *e = strchr(s, '/');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if (len == 1 && s[0] == '.') {
        } else if (len == 2 && s[0] == '.' && s[1] == '.') {
            while (o > 0 && out[o - 1] != '/')
                o--;
            if (o > 0)
                o--;
        } else {
            out[o++] = '/';
            memcpy(out + o, s, len);
            o += len;
        }
        s += len;
    }
    if (o == 0)
        out[o++] = '/';
    out[o] = 0;
    return out;
}

int wk_makedirs(const char *path)
{
    char buf[4096];
    size_t n = strlen(path);
    if (n >= sizeof buf)
        return -ENAMETOOLONG;
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == 0) {
            char c = buf[i];
            buf[i] = 0;
            if (mkdir(buf, 0777) && errno != EEXIST) {
                int e = errno;
                buf[i] = c;
                return -e;
            }
            buf[i] = c;
        }
    }
    struct stat st;
    if (stat(path, &st))
        return -errno;
    return S_ISDIR(st.st_mode) ? 0 : -EEXIST;
}

/* s[n] in Python repr quotes (chosen as CPython does): backslash, the
 * quote, newline, CR and tab escaped, other control bytes as \xNN; bytes
 * above 0x7e too when escape_high (bytes), else kept (str). */
static void repr_quoted(pb_buf *out, const char *s, size_t n, int escape_high)
{
    int sq = memchr(s, '\'', n) != NULL, dq = memchr(s, '"', n) != NULL;
    char q = sq && !dq ? '"' : '\'';
    pb_buf_putc(out, (uint8_t)q);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == (unsigned char)q || ch == '\\') {
            pb_buf_putc(out, '\\');
            pb_buf_putc(out, ch);
        } else if (ch == '\n') {
            pb_buf_append(out, "\\n", 2);
        } else if (ch == '\r') {
            pb_buf_append(out, "\\r", 2);
        } else if (ch == '\t') {
            pb_buf_append(out, "\\t", 2);
        } else if (ch < 0x20 || ch == 0x7f || (escape_high && ch > 0x7f)) {
            pb_buf_printf(out, "\\x%02x", ch);
        } else {
            pb_buf_putc(out, ch); /* non-ASCII printable text kept as is (str) */
        }
    }
    pb_buf_putc(out, (uint8_t)q);
}

/* Python's repr of str. */
void wk_repr_str(pb_buf *out, const char *s, size_t n)
{
    repr_quoted(out, s, n, 0);
}

void wk_repr_bytes(pb_buf *out, const char *s, size_t n)
{
    pb_buf_putc(out, 'b');
    repr_quoted(out, s, n, 1);
}

void wk_fmt_double(pb_buf *out, double d)
{
    char tmp[40];
    if (d != d) {
        pb_buf_append(out, "nan", 3);
        return;
    }
    if (d == 1.0 / 0.0 || d == -1.0 / 0.0) {
        pb_buf_printf(out, "%sinf", d < 0 ? "-" : "");
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, d);
        if (strtod(tmp, NULL) == d)
            break;
    }
    /* Python: repr uses exponent only outside 1e-4 <= |d| < 1e16 */
    if (!strchr(tmp, 'e') && !strchr(tmp, '.') && !strchr(tmp, 'n') && !strchr(tmp, 'i'))
        strcat(tmp, ".0");
    pb_buf_append(out, tmp, strlen(tmp));
}

void wk_fmt_num(pb_buf *out, const pb_value *v)
{
    if (!v)
        pb_buf_append(out, "None", 4);
    else if (v->type == PB_INT)
        pb_buf_printf(out, "%lld", (long long)v->u.i);
    else if (v->type == PB_FLOAT)
        wk_fmt_double(out, v->u.f);
    else if (v->type == PB_BOOL)
        pb_buf_printf(out, "%s", v->u.b ? "True" : "False");
    else
        wk_repr_value(out, v);
}

void wk_repr_value(pb_buf *out, const pb_value *v)
{
    if (!v) {
        pb_buf_append(out, "None", 4);
        return;
    }
    switch (v->type) {
    case PB_NONE: pb_buf_append(out, "None", 4); break;
    case PB_BOOL: pb_buf_printf(out, "%s", v->u.b ? "True" : "False"); break;
    case PB_INT:
    case PB_FLOAT: wk_fmt_num(out, v); break;
    case PB_STR: wk_repr_str(out, v->u.s.ptr, v->u.s.len); break;
    case PB_BYTES: wk_repr_bytes(out, v->u.s.ptr, v->u.s.len); break;
    case PB_LIST:
    case PB_TUPLE:
        pb_buf_putc(out, v->type == PB_LIST ? '[' : '(');
        for (size_t i = 0; i < v->u.seq.len; i++) {
            if (i)
                pb_buf_append(out, ", ", 2);
            wk_repr_value(out, v->u.seq.items[i]);
        }
        if (v->type == PB_TUPLE && v->u.seq.len == 1)
            pb_buf_putc(out, ',');
        pb_buf_putc(out, v->type == PB_LIST ? ']' : ')');
        break;
    case PB_DICT:
        pb_buf_putc(out, '{');
        for (size_t i = 0; i < v->u.dict.len; i++) {
            if (i)
                pb_buf_append(out, ", ", 2);
            wk_repr_value(out, v->u.dict.kv[2 * i]);
            pb_buf_append(out, ": ", 2);
            wk_repr_value(out, v->u.dict.kv[2 * i + 1]);
        }
        pb_buf_putc(out, '}');
        break;
    default: pb_value_repr(v, out); break;
    }
}

/* Python's incremental utf-8 decoder with errors='replace'. */
static size_t seq_len(unsigned char c)
{
    return c < 0x80 ? 1 : c < 0xc2 ? 0 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : c < 0xf5 ? 4 : 0;
}
static int cont_ok(unsigned char lead, size_t i, unsigned char c)
{
    if ((c & 0xc0) != 0x80)
        return 0;
    if (i == 1) {
        if (lead == 0xe0 && c < 0xa0) return 0;
        if (lead == 0xed && c > 0x9f) return 0;
        if (lead == 0xf0 && c < 0x90) return 0;
        if (lead == 0xf4 && c > 0x8f) return 0;
    }
    return 1;
}
void wk_utf8_decode(wk_utf8dec *d, const char *p, size_t n, int final, pb_buf *out)
{
    pb_buf tmp;
    pb_buf_init(&tmp);
    pb_buf_append(&tmp, d->pend, d->npend);
    pb_buf_append(&tmp, p, n);
    d->npend = 0;
    const unsigned char *s = tmp.data;
    size_t len = tmp.len, i = 0;
    while (i < len) {
        unsigned char c = s[i];
        size_t need = seq_len(c);
        if (need == 1) {
            pb_buf_putc(out, c);
            i++;
            continue;
        }
        if (need == 0) {
            pb_buf_append(out, "\xef\xbf\xbd", 3);
            i++;
            continue;
        }
        size_t k = 1;
        while (k < need && i + k < len && cont_ok(c, k, s[i + k]))
            k++;
        if (k == need) {
            pb_buf_append(out, s + i, need);
            i += need;
        } else if (i + k == len && !final) {
            memcpy(d->pend, s + i, k); /* incomplete, wait for more */
            d->npend = k;
            i = len;
        } else {
            pb_buf_append(out, "\xef\xbf\xbd", 3);
            i += k;
        }
    }
    pb_buf_free(&tmp);
}

/* ------------------------------------------------------------ args */

pb_value *wk_arg(const wk_cmd *c, const char *key)
{
    return c->args && c->args->type == PB_DICT ? pb_dict_get(c->args, key) : NULL;
}
int wk_arg_has(const wk_cmd *c, const char *key) { return wk_arg(c, key) != NULL; }
const char *wk_arg_str(const wk_cmd *c, const char *key)
{
    pb_value *v = wk_arg(c, key);
    return v && (v->type == PB_STR || v->type == PB_BYTES) ? v->u.s.ptr : NULL;
}
int wk_arg_true(const wk_cmd *c, const char *key, int def)
{
    pb_value *v = wk_arg(c, key);
    if (!v)
        return def;
    switch (v->type) {
    case PB_NONE: return 0;
    case PB_BOOL: return v->u.b;
    case PB_INT: return v->u.i != 0;
    case PB_FLOAT: return v->u.f != 0;
    case PB_STR:
    case PB_BYTES: return v->u.s.len != 0;
    default: return pb_len(v) != 0 || !(pb_is_seq(v) || v->type == PB_DICT);
    }
}
double wk_arg_num(const wk_cmd *c, const char *key, double def)
{
    pb_value *v = wk_arg(c, key);
    if (!v)
        return def;
    if (v->type == PB_INT)
        return (double)v->u.i;
    if (v->type == PB_FLOAT)
        return v->u.f;
    if (v->type == PB_BOOL)
        return v->u.b;
    return def;
}

/* ------------------------------------------------------------ lifetime */

void wk_cmd_hold(wk_cmd *c) { c->refs++; }

static void timer_closed(uv_handle_t *h) { free(h); }

void wk_cmd_release(wk_cmd *c)
{
    if (--c->refs)
        return;
    if (c->ops && c->ops->destroy)
        c->ops->destroy(c);
    if (c->flush_timer)
        uv_close((uv_handle_t *)c->flush_timer, timer_closed);
    while (c->lines) {
        wk_lines *l = c->lines;
        c->lines = l->next;
        pb_buf_free(&l->partial);
        free(l->key);
        free(l);
    }
    while (c->items) {
        wk_item *it = c->items;
        c->items = it->next;
        pb_buf_free(&it->text);
        pb_arena_free(it->va);
        free(it->key);
        free(it->logname);
        free(it);
    }
    if (c->sink)
        pb_ref_unref(c->sink);
    pb_arena_free(c->arena);
    free(c);
}

/* ------------------------------------------------------------ sending */

static int update_failed(pb_deferred *d, void *ud)
{
    const pb_failure *f = pb_deferred_failure(d);
    if (f && f->code != PB_ECLOSED)
        wk_log("update failed: %s: %s", f->type, f->value ? f->value : "");
    return 0;
}

static int can_send(wk_cmd *c) { return c->sink && !c->lost && c->w->conn; }

static void send_item(wk_cmd *c, wk_item *it)
{
    if (!can_send(c))
        return;
    pb_arena *a = pb_arena_new(0);
    pb_value *args = pb_tuple(a, 1), *updates = pb_list(a, 1), *pair = pb_list(a, 2),
             *d = pb_dict(a, 1), *val;
    if (!strcmp(it->key, "log")) {
        val = pb_tuple(a, 2);
        pb_seq_append(a, val, pb_strz(a, it->logname));
        pb_buf_putc(&it->text, 0);
        it->text.len--;
        pb_seq_append(a, val, pb_str(a, (const char *)it->text.data, it->text.len));
    } else if (it->value) {
        val = pb_value_copy(a, it->value);
    } else {
        pb_buf_putc(&it->text, 0);
        it->text.len--;
        val = pb_str(a, it->text.data ? (const char *)it->text.data : "", it->text.len);
    }
    if (!val) {
        wk_log("cannot encode update %s", it->key);
        pb_arena_free(a);
        return;
    }
    pb_dict_append(a, d, pb_strz(a, it->key), val);
    pb_seq_append(a, pair, d);
    pb_seq_append(a, pair, pb_int(a, 0));
    pb_seq_append(a, updates, pair);
    pb_seq_append(a, args, updates);
    pb_errbuf err;
    pb_deferred *df = pb_ref_call(c->sink, "update", args, NULL, NULL, &err);
    if (df) {
        pb_deferred_add(df, NULL, update_failed, c);
        pb_deferred_unref(df);
    } else {
        wk_log("update: %s", err.msg);
    }
    pb_arena_free(a);
}

static void free_item(wk_item *it)
{
    pb_buf_free(&it->text);
    pb_arena_free(it->va);
    free(it->key);
    free(it->logname);
    free(it);
}

static void buffer_flush(wk_cmd *c)
{
    wk_item *it = c->items;
    c->items = c->items_tail = NULL;
    c->buflen = 0;
    if (c->flush_timer)
        uv_timer_stop(c->flush_timer);
    while (it) {
        wk_item *next = it->next;
        send_item(c, it);
        free_item(it);
        it = next;
    }
}

static void flush_timer_cb(uv_timer_t *t)
{
    wk_cmd *c = t->data;
    buffer_flush(c);
}

static void setup_timeout(wk_cmd *c)
{
    if (!c->flush_timer) {
        c->flush_timer = malloc(sizeof *c->flush_timer);
        uv_timer_init(c->w->loop, c->flush_timer);
        c->flush_timer->data = c;
    }
    if (!uv_is_active((uv_handle_t *)c->flush_timer))
        uv_timer_start(c->flush_timer, flush_timer_cb, BUFFER_TIMEOUT_MS, 0);
}

static size_t nchars(const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += ((unsigned char)s[i] & 0xc0) != 0x80;
    return k;
}
static size_t nlines(const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += s[i] == '\n';
    return k;
}

static wk_item *new_text_item(const char *key, const char *logname, const char *s, size_t n)
{
    wk_item *it = calloc(1, sizeof *it);
    it->key = strdup(key);
    it->logname = logname ? strdup(logname) : NULL;
    pb_buf_init(&it->text);
    pb_buf_append(&it->text, s, n);
    return it;
}

static void push_item(wk_cmd *c, wk_item *it)
{
    if (c->items_tail)
        c->items_tail->next = it;
    else
        c->items = it;
    c->items_tail = it;
}

/* BufferManager.append for text (stdout/stderr/header/log). */
static void buffer_append_text(wk_cmd *c, const char *key, const char *logname, const char *s,
                               size_t n)
{
    size_t len_data = nchars(s, n) + 16 * nlines(s, n);
    size_t space_left = BUFFER_SIZE - c->buflen;
    if (len_data <= space_left) {
        wk_item *last = c->items_tail;
        if (last && !last->value && !strcmp(last->key, key) &&
            (!logname || (last->logname && !strcmp(last->logname, logname)))) {
            pb_buf_append(&last->text, s, n);
        } else {
            push_item(c, new_text_item(key, logname, s, n));
        }
        c->buflen += len_data;
        setup_timeout(c);
        return;
    }
    buffer_flush(c);
    if (len_data <= BUFFER_SIZE) {
        push_item(c, new_text_item(key, logname, s, n));
        c->buflen += len_data;
        setup_timeout(c);
        return;
    }
    /* too big for one message: send runs of whole lines that fit */
    size_t start = 0;
    while (start < n) {
        size_t end = start, size = 0;
        while (end < n) {
            const char *nl = memchr(s + end, '\n', n - end);
            size_t stop = nl ? (size_t)(nl - s) + 1 : n;
            size_t add = nchars(s + end, stop - end) + 16;
            if (size + add > BUFFER_SIZE && end > start)
                break;
            size += add;
            end = stop;
        }
        wk_item *it = new_text_item(key, logname, s + start, end - start);
        send_item(c, it);
        free_item(it);
        start = end;
    }
}

static void buffer_append_value(wk_cmd *c, const char *key, const pb_value *v)
{
    wk_item *it = calloc(1, sizeof *it);
    it->key = strdup(key);
    pb_buf_init(&it->text);
    it->va = pb_arena_new(0);
    it->value = pb_value_copy(it->va, v);
    if (20 <= BUFFER_SIZE - c->buflen) {
        push_item(c, it);
        c->buflen += 20;
        setup_timeout(c);
        return;
    }
    buffer_flush(c);
    push_item(c, it);
    c->buflen += 20;
    setup_timeout(c);
}

/* LineBoundaryFinder.append: returns whole lines in out (may be empty). */
static void lines_append(wk_lines *l, const char *s, size_t n, pb_buf *out)
{
    pb_buf text;
    pb_buf_init(&text);
    pb_buf_append(&text, l->partial.data, l->partial.len);
    pb_buf_append(&text, s, n);
    /* newline_re: \r\n | \r(?=.) | ESC[u | ESC[n;nH / ESC[n;nf | ESC[2J | \x08+  ->  \n */
    pb_buf sub;
    pb_buf_init(&sub);
    const char *t = (const char *)text.data;
    size_t tn = text.len;
    for (size_t i = 0; i < tn;) {
        if (t[i] == '\r' && i + 1 < tn) {
            pb_buf_putc(&sub, '\n');
            i += t[i + 1] == '\n' ? 2 : 1;
            continue;
        }
        if (t[i] == '\x08') {
            while (i < tn && t[i] == '\x08')
                i++;
            pb_buf_putc(&sub, '\n');
            continue;
        }
        if (t[i] == '\033' && i + 2 < tn && t[i + 1] == '[') {
            if (t[i + 2] == 'u') {
                pb_buf_putc(&sub, '\n');
                i += 3;
                continue;
            }
            if (i + 3 < tn && t[i + 2] == '2' && t[i + 3] == 'J') {
                pb_buf_putc(&sub, '\n');
                i += 4;
                continue;
            }
            size_t j = i + 2, d1 = 0, d2 = 0;
            while (j < tn && t[j] >= '0' && t[j] <= '9')
                j++, d1++;
            if (d1 && j < tn && t[j] == ';') {
                j++;
                while (j < tn && t[j] >= '0' && t[j] <= '9')
                    j++, d2++;
                if (d2 && j < tn && (t[j] == 'H' || t[j] == 'f')) {
                    pb_buf_putc(&sub, '\n');
                    i = j + 1;
                    continue;
                }
            }
        }
        pb_buf_putc(&sub, (uint8_t)t[i]);
        i++;
    }
    pb_buf_free(&text);
    const char *u = (const char *)sub.data;
    size_t un = sub.len, first = 0;
    for (size_t i = 0; i < un; i++) {
        if (u[i] != '\n')
            continue;
        /* split over-long lines (in characters; approximated in bytes at a
         * character boundary) */
        while (nchars(u + first, i - first) >= MAX_LINE_LENGTH) {
            size_t cut = first, k = 0;
            while (k < MAX_LINE_LENGTH - 1) {
                cut++;
                while (cut < i && ((unsigned char)u[cut] & 0xc0) == 0x80)
                    cut++;
                k++;
            }
            pb_buf_append(out, u + first, cut - first);
            pb_buf_putc(out, '\n');
            first = cut;
        }
        pb_buf_append(out, u + first, i + 1 - first);
        first = i + 1;
    }
    while (un > first && nchars(u + first, un - first) >= MAX_LINE_LENGTH) {
        size_t cut = first, k = 0;
        while (k < MAX_LINE_LENGTH - 1) {
            cut++;
            while (cut < un && ((unsigned char)u[cut] & 0xc0) == 0x80)
                cut++;
            k++;
        }
        pb_buf_append(out, u + first, cut - first);
        pb_buf_putc(out, '\n');
        first = cut;
    }
    l->partial.len = 0;
    pb_buf_append(&l->partial, u + first, un - first);
    pb_buf_free(&sub);
}

static wk_lines *lines_for(wk_cmd *c, const char *key, int is_log)
{
    for (wk_lines *l = c->lines; l; l = l->next)
        if (!strcmp(l->key, key))
            return l;
    wk_lines *l = calloc(1, sizeof *l);
    l->key = strdup(key);
    l->is_log = is_log;
    pb_buf_init(&l->partial);
    l->next = c->lines;
    c->lines = l;
    return l;
}

void wk_cmd_update_text(wk_cmd *c, const char *key, const char *text, size_t n)
{
    if (c->is_complete || c->lost)
        return;
    wk_lines *l = lines_for(c, key, 0);
    pb_buf out;
    pb_buf_init(&out);
    lines_append(l, text, n, &out);
    if (out.len)
        buffer_append_text(c, key, NULL, (const char *)out.data, out.len);
    pb_buf_free(&out);
}

void wk_cmd_update_log(wk_cmd *c, const char *logname, const char *text, size_t n)
{
    if (c->is_complete || c->lost)
        return;
    wk_lines *l = lines_for(c, logname, 1);
    pb_buf out;
    pb_buf_init(&out);
    lines_append(l, text, n, &out);
    if (out.len)
        buffer_append_text(c, "log", logname, (const char *)out.data, out.len);
    pb_buf_free(&out);
}

void wk_cmd_update_value(wk_cmd *c, const char *key, const pb_value *v)
{
    if (c->is_complete || c->lost)
        return;
    buffer_append_value(c, key, v);
}

void wk_cmd_update_int(wk_cmd *c, const char *key, int64_t v)
{
    pb_arena *a = pb_arena_new(0);
    wk_cmd_update_value(c, key, pb_int(a, v));
    pb_arena_free(a);
}

void wk_cmd_status_text(wk_cmd *c, const char *key, const char *text, size_t n)
{
    if (c->running)
        wk_cmd_update_text(c, key, text, n);
}
void wk_cmd_status_value(wk_cmd *c, const char *key, const pb_value *v)
{
    if (c->running)
        wk_cmd_update_value(c, key, v);
}
void wk_cmd_status_int(wk_cmd *c, const char *key, int64_t v)
{
    if (c->running)
        wk_cmd_update_int(c, key, v);
}

/* ------------------------------------------------------------ the end */

static int cmp_lines(const void *x, const void *y)
{
    return strcmp((*(wk_lines *const *)x)->key, (*(wk_lines *const *)y)->key);
}

static int complete_answered(pb_deferred *d, void *ud)
{
    wk_cmd *c = ud;
    const pb_failure *f = pb_deferred_failure(d);
    if (f && f->code != PB_ECLOSED)
        wk_log("complete failed: %s: %s", f->type, f->value ? f->value : "");
    if (c->sink) { /* done with the master's RemoteCommand: decref it */
        pb_ref_unref(c->sink);
        c->sink = NULL;
    }
    wk_cmd_release(c);
    return 0;
}

static void finish(wk_cmd *c, const pb_failure *failure)
{
    if (c->finished)
        return;
    c->finished = 1;
    /* doStart's commandComplete */
    if (c->running) {
        pb_arena *a = pb_arena_new(0);
        wk_cmd_update_value(c, "elapsed", pb_float(a, wk_now() - c->start_time));
        pb_arena_free(a);
    }
    c->running = 0;
    /* on_command_complete */
    if (c->b && c->b->cmd == c)
        c->b->cmd = NULL;
    c->b = NULL;
    if (c->is_complete || c->lost) {
        wk_cmd_release(c);
        return;
    }
    /* flush_command_output: partial lines, streams in sorted order */
    size_t n = 0;
    for (wk_lines *l = c->lines; l; l = l->next)
        n++;
    wk_lines **v = calloc(n ? n : 1, sizeof *v);
    n = 0;
    for (wk_lines *l = c->lines; l; l = l->next)
        v[n++] = l;
    qsort(v, n, sizeof *v, cmp_lines);
    for (size_t i = 0; i < n; i++) {
        if (!v[i]->partial.len)
            continue;
        pb_buf out;
        pb_buf_init(&out);
        lines_append(v[i], "\n", 1, &out);
        if (out.len) {
            if (v[i]->is_log)
                buffer_append_text(c, "log", v[i]->key, (const char *)out.data, out.len);
            else
                buffer_append_text(c, v[i]->key, NULL, (const char *)out.data, out.len);
        }
        pb_buf_free(&out);
    }
    free(v);
    buffer_flush(c);
    c->is_complete = 1;
    if (!can_send(c)) {
        wk_cmd_release(c);
        return;
    }
    pb_arena *a = pb_arena_new(0);
    pb_value *args = pb_tuple(a, 1);
    if (failure) {
        pb_value *fv = pb_failure_to_value(a, failure, 1);
        pb_seq_append(a, args, fv ? fv : pb_none(a));
    } else {
        pb_seq_append(a, args, pb_none(a));
    }
    pb_errbuf err;
    pb_deferred *d = pb_ref_call(c->sink, "complete", args, NULL, NULL, &err);
    pb_arena_free(a);
    if (!d) {
        wk_log("complete: %s", err.msg);
        wk_cmd_release(c);
        return;
    }
    pb_deferred_add(d, complete_answered, complete_answered, c); /* takes the work's ref */
    pb_deferred_unref(d);
}

void wk_cmd_finished(wk_cmd *c) { finish(c, NULL); }

void wk_cmd_finished_failure(wk_cmd *c, const char *type, const char *value)
{
    pb_arena *a = pb_arena_new(0);
    pb_failure *f = pb_failure_new(a, PB_EREMOTE, type, value, NULL, 0);
    if (f) {
        f->pickled = 1;
        f->traceback = wk_printf(a,
                                 "Traceback (most recent call last):\n"
                                 "  File \"pbworker\", in startCommand\n%s: %s\n",
                                 type, value);
    }
    finish(c, f);
    pb_arena_free(a);
}

/* ------------------------------------------------------------ start / stop */

static const struct {
    const char *name;
    const wk_cmd_ops *ops;
} table[] = {
    {"shell", &wk_cmd_shell},
    {"uploadFile", &wk_cmd_upload_file},
    {"upload_file", &wk_cmd_upload_file},
    {"uploadDirectory", &wk_cmd_upload_dir},
    {"upload_directory", &wk_cmd_upload_dir},
    {"downloadFile", &wk_cmd_download_file},
    {"download_file", &wk_cmd_download_file},
    {"mkdir", &wk_cmd_mkdir},
    {"rmdir", &wk_cmd_rmdir},
    {"cpdir", &wk_cmd_cpdir},
    {"stat", &wk_cmd_stat},
    {"glob", &wk_cmd_glob},
    {"listdir", &wk_cmd_listdir},
    {"rmfile", &wk_cmd_rmfile},
};

const char *const wk_command_names[] = {
    "shell", "uploadFile", "upload_file", "uploadDirectory", "upload_directory",
    "downloadFile", "download_file", "mkdir", "rmdir", "cpdir", "stat", "glob",
    "listdir", "rmfile", NULL};

const wk_cmd_ops *wk_cmd_lookup(const char *name)
{
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (!strcmp(table[i].name, name))
            return table[i].ops;
    return NULL;
}

void wk_cmd_detach(wk_cmd *c, int lost)
{
    if (lost)
        c->lost = 1;
    if (c->b && c->b->cmd == c)
        c->b->cmd = NULL;
    c->b = NULL;
}

void wk_cmd_interrupt(wk_cmd *c)
{
    /* doInterrupt: running = False, then interrupt() */
    c->running = 0;
    if (c->finished)
        return;
    if (c->ops->interrupt)
        c->ops->interrupt(c);
}

static const char *const unknown_parents[] = {
    "buildbot_worker.base.UnknownCommand", "twisted.spread.pb.Error", "builtins.Exception",
    "builtins.BaseException", "builtins.object"};

int wk_cmd_start(wk_builder *b, pb_call *call, pb_ref *sink, const char *id, const char *name,
                 const pb_value *args)
{
    if (b->cmd) {
        wk_log("leftover command, dropping it");
        wk_cmd *old = b->cmd;
        wk_cmd_interrupt(old);
        wk_cmd_detach(old, 0);
    }
    const wk_cmd_ops *ops = wk_cmd_lookup(name);
    wk_cmd *c = calloc(1, sizeof *c);
    c->w = b->w;
    c->b = b;
    c->ops = ops;
    c->refs = 1;
    c->arena = pb_arena_new(0);
    c->id = wk_strdup(c->arena, id);
    c->cmdname = wk_strdup(c->arena, name);
    c->args = args && args->type == PB_DICT ? pb_value_copy(c->arena, args) : pb_dict(c->arena, 0);
    const char *etype = NULL;
    char emsg[512] = "";
    if (!ops) {
        pb_arena *a = pb_call_arena(call);
        pb_failure *f = pb_failure_new(a, PB_EREMOTE, unknown_parents[0],
                                       wk_printf(a, "unrecognized WorkerCommand '%s'", name),
                                       unknown_parents, 5);
        wk_cmd_release(c);
        return f ? pb_call_fail_failure(call, f) : pb_call_fail(call, unknown_parents[0], name);
    }
    if (ops->setup(c, &etype, emsg, sizeof emsg)) {
        wk_cmd_release(c);
        return pb_call_fail(call, etype, emsg);
    }
    c->sink = pb_ref_ref(sink);
    wk_log(" startCommand:%s [id %s]", name, id);
    b->cmd = c;
    c->running = 1;
    c->start_time = wk_now();
    ops->start(c);
    return pb_call_return_none(call);
}
