/*
 * process.c - run a program for a command, as buildbot-worker's RunProcess
 * does: the header lines, the environment rules (lists joined with ':',
 * PYTHONPATH extended, ${VAR} substituted from the worker's environment,
 * None unsets), stdout/stderr decoded as UTF-8, logfiles polled every 2 s,
 * the inactivity timeout and maxTime, kill (optional SIGTERM first, then
 * the interrupt signal to the process group), and the final rc/elapsedTime.
 *
 * Children run through uv_spawn in their own session (UV_PROCESS_DETACHED:
 * setsid, so the whole group can be signalled) with pipes, or with a
 * pseudo-terminal when usePTY is set.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pbworker.h"

extern char **environ;

#define BACKUP_TIMEOUT_MS 5000
#define LOG_POLL_MS 2000

typedef struct logwatch {
    char *name, *path;
    int follow;
    int have_old;
    struct stat old;
    int started;
    FILE *f;
    wk_utf8dec dec;
} logwatch;

struct wk_proc {
    wk_cmd *c;
    pb_arena *a;
    uv_process_t proc;
    uv_pipe_t in, out, err;
    uv_tty_t pty;
    int pty_fd;
    int use_pty;
    int handles; /* open uv handles */
    int pid, pgid_valid;
    int reading_out, reading_err; /* still open for reading */
    int exited, exit_status, term_signal;
    int killed, done_called, spawn_failed, proc_inited;
    uv_timer_t io_timer, max_timer, sigterm_timer, kill_timer, log_timer;
    wk_utf8dec dout, derr;
    logwatch *logs;
    size_t nlogs;
    int send_stdout, send_stderr, send_rc;
    double timeout, max_time, sigterm_time;
    const pb_value *timeout_v, *max_time_v;
    int has_sigterm;
    char *interrupt_signal;
    char *fake_repr; /* repr of the fake command, for messages */
    double start_time;
    void (*done)(wk_cmd *c, int rc, void *ud);
    void *ud;
    uv_write_t wreq;
    uv_buf_t wbuf;
    char *stdin_data;
    size_t stdin_len;
};

static const struct {
    const char *name;
    int sig;
} signals[] = {{"KILL", SIGKILL}, {"TERM", SIGTERM}, {"INT", SIGINT},   {"HUP", SIGHUP},
               {"QUIT", SIGQUIT}, {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"ABRT", SIGABRT},
               {"ALRM", SIGALRM}, {"STOP", SIGSTOP}, {"CONT", SIGCONT}};

static int signal_number(const char *name)
{
    for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++)
        if (!strcmp(signals[i].name, name))
            return signals[i].sig;
    return 0;
}

static void handle_closed(uv_handle_t *h)
{
    wk_proc *p = h->data;
    if (--p->handles == 0) {
        for (size_t i = 0; i < p->nlogs; i++)
            if (p->logs[i].f)
                fclose(p->logs[i].f);
        free(p->logs);
        free(p->stdin_data);
        wk_cmd *c = p->c;
        pb_arena_free(p->a);
        free(p);
        wk_cmd_release(c);
    }
}

static void close_handle(wk_proc *p, uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, handle_closed);
}

static void header(wk_proc *p, const char *s) { wk_cmd_update_text(p->c, "header", s, strlen(s)); }

/* ------------------------------------------------------------ logfiles */

static void log_poll(wk_proc *p, logwatch *w)
{
    if (!w->started) {
        struct stat st;
        int have = stat(w->path, &st) == 0;
        if (have == w->have_old &&
            (!have || (st.st_ctime == w->old.st_ctime && st.st_mtime == w->old.st_mtime &&
                       st.st_size == w->old.st_size)))
            return; /* not started yet */
        if (!have) {
            w->have_old = 0;
            return;
        }
        w->f = fopen(w->path, "rb");
        if (!w->f)
            return;
        if (w->follow)
            fseek(w->f, st.st_size, SEEK_SET);
        w->started = 1;
    }
    fseek(w->f, ftell(w->f), SEEK_SET);
    char buf[10000];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, w->f)) > 0) {
        pb_buf out;
        pb_buf_init(&out);
        wk_utf8_decode(&w->dec, buf, n, 0, &out);
        if (out.len) {
            wk_cmd_update_log(p->c, w->name, (const char *)out.data, out.len);
            if (p->timeout > 0 && uv_is_active((uv_handle_t *)&p->io_timer))
                uv_timer_again(&p->io_timer);
        }
        pb_buf_free(&out);
    }
    clearerr(w->f);
}

static void log_timer_cb(uv_timer_t *t)
{
    wk_proc *p = t->data;
    for (size_t i = 0; i < p->nlogs; i++)
        log_poll(p, &p->logs[i]);
}

/* ------------------------------------------------------------ ending */

static void cancel_timers(wk_proc *p)
{
    uv_timer_stop(&p->io_timer);
    uv_timer_stop(&p->max_timer);
    uv_timer_stop(&p->sigterm_timer);
    uv_timer_stop(&p->kill_timer);
}

static void close_all(wk_proc *p)
{
    cancel_timers(p);
    uv_timer_stop(&p->log_timer);
    close_handle(p, (uv_handle_t *)&p->io_timer);
    close_handle(p, (uv_handle_t *)&p->max_timer);
    close_handle(p, (uv_handle_t *)&p->sigterm_timer);
    close_handle(p, (uv_handle_t *)&p->kill_timer);
    close_handle(p, (uv_handle_t *)&p->log_timer);
    if (p->proc_inited)
        close_handle(p, (uv_handle_t *)&p->proc);
    if (p->use_pty) {
        if (!p->spawn_failed)
            close_handle(p, (uv_handle_t *)&p->pty);
    } else {
        close_handle(p, (uv_handle_t *)&p->in);
        close_handle(p, (uv_handle_t *)&p->out);
        close_handle(p, (uv_handle_t *)&p->err);
    }
}

static void finished(wk_proc *p, int sig, int rc)
{
    if (p->done_called)
        return;
    p->done_called = 1;
    double elapsed = wk_now() - p->start_time;
    for (size_t i = 0; i < p->nlogs; i++) /* final updates */
        log_poll(p, &p->logs[i]);
    if (sig)
        rc = -1;
    char tmp[64];
    if (p->send_rc) {
        if (sig) {
            snprintf(tmp, sizeof tmp, "process killed by signal %d\n", sig);
            header(p, tmp);
        }
        wk_cmd_update_int(p->c, "rc", rc);
    }
    snprintf(tmp, sizeof tmp, "elapsedTime=%0.6f\n", elapsed);
    header(p, tmp);
    wk_cmd *c = p->c;
    void (*done)(wk_cmd *, int, void *) = p->done;
    void *ud = p->ud;
    close_all(p);
    done(c, rc, ud);
}

static void maybe_ended(wk_proc *p)
{
    if (!p->exited || p->reading_out || p->reading_err)
        return;
    int sig = p->term_signal;
    int rc = sig ? 0 : p->exit_status;
    if (p->killed && rc == 0 && !sig)
        rc = -1;
    finished(p, sig, rc);
}

static void proc_exited(uv_process_t *h, int64_t status, int term_signal)
{
    wk_proc *p = h->data;
    p->exited = 1;
    p->exit_status = (int)status;
    p->term_signal = term_signal;
    maybe_ended(p);
}

/* ------------------------------------------------------------ output */

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    static char buf[65536];
    b->base = buf;
    b->len = sizeof buf;
}

static void got_output(wk_proc *p, int is_err, const char *data, size_t n)
{
    pb_buf out;
    pb_buf_init(&out);
    wk_utf8_decode(is_err ? &p->derr : &p->dout, data, n, 0, &out);
    if (out.len && (is_err ? p->send_stderr : p->send_stdout))
        wk_cmd_update_text(p->c, is_err ? "stderr" : "stdout", (const char *)out.data, out.len);
    pb_buf_free(&out);
    if (p->timeout > 0 && uv_is_active((uv_handle_t *)&p->io_timer))
        uv_timer_again(&p->io_timer);
}

static void stream_done(wk_proc *p, uv_stream_t *s)
{
    uv_read_stop(s);
    if (s == (uv_stream_t *)&p->err)
        p->reading_err = 0;
    else
        p->reading_out = 0;
    maybe_ended(p);
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    wk_proc *p = s->data;
    if (n > 0) {
        got_output(p, s == (uv_stream_t *)&p->err, b->base, (size_t)n);
    } else if (n < 0) {
        stream_done(p, s); /* EOF (or EIO from a pty whose slave closed) */
    }
}

/* ------------------------------------------------------------ killing */

static int send_sig(wk_proc *p, const char *name)
{
    int sig = signal_number(name);
    int hit = 0;
    if (p->spawn_failed || p->exited)
        return 0;
    if (sig && p->pgid_valid) {
        if (kill(-p->pid, sig) == 0) {
            p->pgid_valid = 0;
            hit = 1;
        }
    }
    if (!hit && sig) {
        if (kill(p->pid, sig) == 0)
            hit = 1;
    }
    return hit;
}

static void backup_timeout(uv_timer_t *t)
{
    wk_proc *p = t->data;
    char tmp[128];
    snprintf(tmp, sizeof tmp, "SIG%s failed to kill process\n", p->interrupt_signal);
    header(p, tmp);
    if (p->send_rc) {
        header(p, "using fake rc=-1\n");
        wk_cmd_update_int(p->c, "rc", -1);
    }
    if (p->done_called)
        return;
    p->done_called = 1;
    wk_cmd *c = p->c;
    close_all(p);
    snprintf(tmp, sizeof tmp, "SIG%s failed to kill process", p->interrupt_signal);
    wk_cmd_finished_failure(c, "builtins.RuntimeError", tmp);
}

static void clean_up(wk_proc *p)
{
    /* loseConnection: close our ends of the pipes (unread output is lost) */
    if (p->use_pty) {
        if (p->reading_out)
            stream_done(p, (uv_stream_t *)&p->pty);
    } else {
        if (p->reading_out)
            stream_done(p, (uv_stream_t *)&p->out);
        if (p->reading_err)
            stream_done(p, (uv_stream_t *)&p->err);
    }
    if (!p->done_called)
        uv_timer_start(&p->kill_timer, backup_timeout, BACKUP_TIMEOUT_MS, 0);
}

static void check_process(uv_timer_t *t)
{
    wk_proc *p = t->data;
    if (!p->exited && kill(p->pid, 0) == 0)
        send_sig(p, p->interrupt_signal);
    clean_up(p);
}

void wk_proc_kill(wk_proc *p, const char *msg)
{
    if (p->done_called)
        return;
    cancel_timers(p);
    char *m = wk_printf(p->a, "\n%s, attempting to kill\n", msg);
    header(p, m);
    p->killed = 1;
    if (p->has_sigterm) {
        send_sig(p, "TERM");
        uv_timer_start(&p->sigterm_timer, check_process, (uint64_t)(p->sigterm_time * 1000), 0);
    } else {
        send_sig(p, p->interrupt_signal);
        clean_up(p);
    }
}

static void io_timeout(uv_timer_t *t)
{
    wk_proc *p = t->data;
    pb_buf b;
    pb_buf_init(&b);
    pb_buf_append(&b, "command timed out: ", 19);
    wk_fmt_num(&b, p->timeout_v);
    pb_buf_printf(&b, " seconds without output running %s", p->fake_repr);
    pb_buf_putc(&b, 0);
    wk_proc_kill(p, (const char *)b.data);
    pb_buf_free(&b);
}

static void max_timeout(uv_timer_t *t)
{
    wk_proc *p = t->data;
    pb_buf b;
    pb_buf_init(&b);
    pb_buf_append(&b, "command timed out: ", 19);
    wk_fmt_num(&b, p->max_time_v);
    pb_buf_printf(&b, " seconds elapsed running %s", p->fake_repr);
    pb_buf_putc(&b, 0);
    wk_proc_kill(p, (const char *)b.data);
    pb_buf_free(&b);
}

/* ------------------------------------------------------------ env */

typedef struct envvec {
    char **kv; /* "K=V" malloc'd */
    size_t n, cap;
} envvec;

static ssize_t env_find(envvec *e, const char *k, size_t kl)
{
    for (size_t i = 0; i < e->n; i++)
        if (!strncmp(e->kv[i], k, kl) && e->kv[i][kl] == '=')
            return (ssize_t)i;
    return -1;
}
static void env_set(envvec *e, const char *k, size_t kl, const char *v)
{
    size_t vl = strlen(v);
    char *s = malloc(kl + vl + 2);
    memcpy(s, k, kl);
    s[kl] = '=';
    memcpy(s + kl + 1, v, vl + 1);
    ssize_t i = env_find(e, k, kl);
    if (i >= 0) {
        free(e->kv[i]);
        e->kv[i] = s;
        return;
    }
    if (e->n + 2 > e->cap) {
        e->cap = e->cap ? e->cap * 2 : 64;
        e->kv = realloc(e->kv, e->cap * sizeof *e->kv);
    }
    e->kv[e->n++] = s;
    e->kv[e->n] = NULL;
}
static void env_free(envvec *e)
{
    for (size_t i = 0; i < e->n; i++)
        free(e->kv[i]);
    free(e->kv);
}
static int cmp_str(const void *x, const void *y)
{
    const char *a = *(char *const *)x, *b = *(char *const *)y;
    /* compare the names only (up to '=') */
    size_t al = strcspn(a, "="), bl = strcspn(b, "=");
    int r = memcmp(a, b, al < bl ? al : bl);
    return r ? r : (al > bl) - (al < bl);
}

/* ${NAME} from the worker's own environment ("" if unset). */
static void subst(pb_buf *out, const char *v)
{
    while (*v) {
        if (v[0] == '$' && v[1] == '{') {
            const char *e = v + 2;
            while ((*e >= '0' && *e <= '9') || (*e >= 'a' && *e <= 'z') || (*e >= 'A' && *e <= 'Z') ||
                   *e == '_')
                e++;
            if (*e == '}') {
                char name[256];
                size_t nl = (size_t)(e - v - 2);
                if (nl < sizeof name) {
                    memcpy(name, v + 2, nl);
                    name[nl] = 0;
                    const char *val = getenv(name);
                    if (val)
                        pb_buf_append(out, val, strlen(val));
                }
                v = e + 1;
                continue;
            }
        }
        pb_buf_putc(out, (uint8_t)*v++);
    }
}

static const char *pytype(const pb_value *v)
{
    switch (v ? v->type : PB_NONE) {
    case PB_NONE: return "NoneType";
    case PB_BOOL: return "bool";
    case PB_INT: case PB_BIGINT: return "int";
    case PB_FLOAT: return "float";
    case PB_BYTES: return "bytes";
    case PB_STR: return "str";
    case PB_LIST: return "list";
    case PB_TUPLE: return "tuple";
    case PB_DICT: return "dict";
    default: return "object";
    }
}

/* Build the child's environment; -1 with a Python exception on error. */
static int build_env(const pb_value *env, envvec *out, pb_arena *a, const char **etype,
                     char *emsg, size_t elen)
{
    int truthy = env && env->type == PB_DICT && env->u.dict.len > 0;
    for (char **e = environ; *e; e++) {
        const char *eq = strchr(*e, '=');
        if (eq)
            env_set(out, *e, (size_t)(eq - *e), eq + 1);
    }
    if (!truthy)
        return 0;
    size_t n = env->u.dict.len;
    const char **keys = pb_arena_alloc(a, (n + 1) * sizeof *keys);
    const char **vals = pb_arena_alloc(a, (n + 1) * sizeof *vals); /* NULL: None */
    const pb_value **raw = pb_arena_alloc(a, (n + 1) * sizeof *raw);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const pb_value *kv = env->u.dict.kv[2 * i], *vv = env->u.dict.kv[2 * i + 1];
        if (kv->type != PB_STR && kv->type != PB_BYTES)
            continue;
        /* later duplicates win, as in a Python dict */
        size_t j;
        for (j = 0; j < k; j++)
            if (!strcmp(keys[j], kv->u.s.ptr))
                break;
        keys[j] = kv->u.s.ptr;
        raw[j] = vv;
        vals[j] = NULL;
        if (vv->type == PB_STR)
            vals[j] = vv->u.s.ptr;
        else if (vv->type == PB_LIST) {
            pb_buf b;
            pb_buf_init(&b);
            for (size_t m = 0; m < vv->u.seq.len; m++) {
                const pb_value *it = vv->u.seq.items[m];
                if (it->type != PB_STR) {
                    snprintf(emsg, elen, "sequence item %zu: expected str instance, %s found", m,
                             pytype(it));
                    *etype = "builtins.TypeError";
                    pb_buf_free(&b);
                    return -1;
                }
                if (m)
                    pb_buf_putc(&b, ':');
                pb_buf_append(&b, it->u.s.ptr, it->u.s.len);
            }
            vals[j] = pb_arena_memdup(a, b.data ? (const char *)b.data : "", b.len);
            pb_buf_free(&b);
            raw[j] = NULL; /* now a string */
        }
        if (j == k)
            k++;
    }
    for (size_t j = 0; j < k; j++) {
        if (!strcmp(keys[j], "PYTHONPATH")) {
            if (!vals[j]) {
                snprintf(emsg, elen, "unsupported operand type(s) for +=: '%s' and 'str'",
                         pytype(raw[j]));
                *etype = "builtins.TypeError";
                return -1;
            }
            vals[j] = wk_printf(a, "%s:${PYTHONPATH}", vals[j]);
        }
    }
    /* keys set to None are removed */
    for (size_t j = 0; j < k; j++) {
        if (!vals[j] && raw[j] && raw[j]->type == PB_NONE) {
            ssize_t i = env_find(out, keys[j], strlen(keys[j]));
            if (i >= 0) {
                free(out->kv[i]);
                memmove(out->kv + i, out->kv + i + 1, (out->n - (size_t)i) * sizeof *out->kv);
                out->n--;
            }
        }
    }
    for (size_t j = 0; j < k; j++) {
        if (!vals[j] && raw[j] && raw[j]->type == PB_NONE)
            continue;
        if (!vals[j]) {
            snprintf(emsg, elen, "'env' values must be strings or lists; key '%s' is incorrect",
                     keys[j]);
            *etype = "builtins.RuntimeError";
            return -1;
        }
        pb_buf b;
        pb_buf_init(&b);
        subst(&b, vals[j]);
        pb_buf_putc(&b, 0);
        env_set(out, keys[j], strlen(keys[j]), (const char *)b.data);
        pb_buf_free(&b);
    }
    return 0;
}

/* ------------------------------------------------------------ quoting */

static void shell_quote_one(pb_buf *out, const char *s, size_t n)
{
    if (n == 0) {
        pb_buf_append(out, "\"\"", 2);
        return;
    }
    int safe = 1;
    for (size_t i = 0; i < n && safe; i++) {
        unsigned char ch = (unsigned char)s[i];
        safe = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
               strchr("_@%+=:,./-", ch) != NULL;
        if (!ch)
            safe = 0;
    }
    if (safe) {
        pb_buf_append(out, s, n);
        return;
    }
    pb_buf_putc(out, '\'');
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\'')
            pb_buf_append(out, "'\"'\"'", 5);
        else
            pb_buf_putc(out, (uint8_t)s[i]);
    }
    pb_buf_putc(out, '\'');
}

static void timer_init(wk_proc *p, uv_timer_t *t)
{
    uv_timer_init(p->c->w->loop, t);
    t->data = p;
    p->handles++;
}

static void stdin_written(uv_write_t *req, int status)
{
    wk_proc *p = req->data;
    close_handle(p, (uv_handle_t *)&p->in);
}

/* Twisted's child reports a failed exec on stderr and exits 1. */
static void spawn_failed_cb(uv_timer_t *t)
{
    wk_proc *p = t->data;
    uv_timer_stop(t);
    p->reading_out = p->reading_err = 0;
    p->exited = 1;
    p->exit_status = 1;
    maybe_ended(p);
}

int wk_proc_start(wk_cmd *c, const wk_proc_opts *o, void (*done)(wk_cmd *c, int rc, void *ud),
                  void *ud, wk_proc **outp, const char **etype, char *emsg, size_t elen)
{
    pb_arena *a = pb_arena_new(0);
    const pb_value *cmd = o->command;
    int is_string = cmd->type == PB_STR || cmd->type == PB_BYTES;
    size_t argc = is_string ? 3 : pb_len(cmd);
    char **argv = pb_arena_alloc(a, (argc + 1) * sizeof *argv);
    pb_buf fake, display;
    pb_buf_init(&fake);
    pb_buf_init(&display);
    if (is_string) {
        argv[0] = "/bin/sh";
        argv[1] = "-c";
        argv[2] = (char *)cmd->u.s.ptr;
        wk_repr_bytes(&fake, cmd->u.s.ptr, cmd->u.s.len);
        pb_buf_append(&display, cmd->u.s.ptr, cmd->u.s.len);
    } else {
        pb_buf_putc(&fake, '[');
        for (size_t i = 0; i < argc; i++) {
            const pb_value *it = cmd->u.seq.items[i], *real = it, *shown = it;
            if (it->type == PB_TUPLE && it->u.seq.len == 3 &&
                pb_value_is(it->u.seq.items[0], "obfuscated")) {
                real = it->u.seq.items[1];
                shown = it->u.seq.items[2];
            }
            if (i) {
                pb_buf_append(&fake, ", ", 2);
                pb_buf_putc(&display, ' ');
            }
            if (shown->type == PB_STR || shown->type == PB_BYTES) {
                wk_repr_bytes(&fake, shown->u.s.ptr, shown->u.s.len);
                shell_quote_one(&display, shown->u.s.ptr, shown->u.s.len);
            } else {
                wk_repr_value(&fake, shown);
                wk_repr_value(&display, shown);
            }
            if (real->type == PB_STR || real->type == PB_BYTES) {
                argv[i] = (char *)real->u.s.ptr;
            } else {
                pb_buf t;
                pb_buf_init(&t);
                wk_repr_value(&t, real);
                argv[i] = pb_arena_memdup(a, t.data, t.len);
                pb_buf_free(&t);
            }
        }
        pb_buf_putc(&fake, ']');
    }
    argv[argc] = NULL;
    pb_buf_putc(&fake, 0);
    pb_buf_putc(&display, 0);

    /* the constructor: workdir, env, logfiles */
    wk_makedirs(o->workdir);
    envvec env = {0};
    if (build_env(o->env, &env, a, etype, emsg, elen)) {
        env_free(&env);
        pb_buf_free(&fake);
        pb_buf_free(&display);
        pb_arena_free(a);
        return -1;
    }
    int use_pty = o->use_pty;
    if (o->initial_stdin && o->initial_stdin->type != PB_NONE && use_pty) {
        wk_cmd_update_text(c, "header", "WARNING: disabling usePTY for this command", 42);
        use_pty = 0;
    }

    wk_proc *p = calloc(1, sizeof *p);
    p->c = c;
    p->a = a;
    p->done = done;
    p->ud = ud;
    p->use_pty = use_pty;
    p->send_stdout = o->send_stdout;
    p->send_stderr = o->send_stderr;
    p->send_rc = o->send_rc;
    p->timeout = o->timeout;
    p->timeout_v = o->timeout_v;
    p->max_time = o->max_time;
    p->max_time_v = o->max_time_v;
    p->has_sigterm = o->has_sigterm;
    p->sigterm_time = o->sigterm_time;
    p->interrupt_signal = wk_strdup(a, o->interrupt_signal ? o->interrupt_signal : "KILL");
    p->fake_repr = pb_arena_memdup(a, fake.data, fake.len - 1);
    wk_cmd_hold(c);

    if (o->logfiles && o->logfiles->type == PB_DICT && o->logfiles->u.dict.len) {
        p->logs = calloc(o->logfiles->u.dict.len, sizeof *p->logs);
        for (size_t i = 0; i < o->logfiles->u.dict.len; i++) {
            const pb_value *k = o->logfiles->u.dict.kv[2 * i], *v = o->logfiles->u.dict.kv[2 * i + 1];
            const pb_value *fn = v;
            int follow = 0;
            if (v->type == PB_DICT) {
                fn = pb_dict_get(v, "filename");
                const pb_value *fo = pb_dict_get(v, "follow");
                follow = fo && ((fo->type == PB_BOOL && fo->u.b) || (fo->type == PB_INT && fo->u.i));
            }
            if (!fn || (fn->type != PB_STR && fn->type != PB_BYTES) ||
                (k->type != PB_STR && k->type != PB_BYTES))
                continue;
            logwatch *w = &p->logs[p->nlogs++];
            w->name = wk_strdup(a, k->u.s.ptr);
            w->path = wk_join(a, o->workdir, fn->u.s.ptr);
            w->follow = follow;
            w->have_old = stat(w->path, &w->old) == 0;
        }
    }

    /* _startCommand */
    wk_makedirs(o->workdir);
    char *pwd = wk_abspath(a, o->workdir);
    env_set(&env, "PWD", 3, pwd);

    pb_buf h;
    pb_buf_init(&h);
    pb_buf_printf(&h, "%s\n", (const char *)display.data);
    pb_buf_printf(&h, " in dir %s", o->workdir);
    if (o->timeout != 0) {
        pb_buf_append(&h, " (timeout ", 10);
        wk_fmt_num(&h, o->timeout_v);
        pb_buf_printf(&h, " %s)", o->timeout == 1 ? "sec" : "secs");
    }
    if (o->max_time > 0) {
        pb_buf_append(&h, " (maxTime ", 10);
        wk_fmt_num(&h, o->max_time_v);
        pb_buf_printf(&h, " %s)", o->max_time == 1 ? "sec" : "secs");
    }
    pb_buf_append(&h, "\n watching logfiles ", 20);
    if (o->logfiles && o->logfiles->type == PB_DICT)
        wk_repr_value(&h, o->logfiles);
    else
        pb_buf_append(&h, "{}", 2);
    pb_buf_printf(&h, "\n argv: %s\n", (const char *)fake.data);
    if (o->log_environ) {
        pb_buf_append(&h, " environment:\n", 14);
        char **sorted = malloc((env.n + 1) * sizeof *sorted);
        memcpy(sorted, env.kv, env.n * sizeof *sorted);
        qsort(sorted, env.n, sizeof *sorted, cmp_str);
        for (size_t i = 0; i < env.n; i++)
            pb_buf_printf(&h, "  %s\n", sorted[i]);
        free(sorted);
    }
    if (o->initial_stdin && (o->initial_stdin->type == PB_STR || o->initial_stdin->type == PB_BYTES) &&
        o->initial_stdin->u.s.len) {
        p->stdin_len = o->initial_stdin->u.s.len;
        p->stdin_data = malloc(p->stdin_len);
        memcpy(p->stdin_data, o->initial_stdin->u.s.ptr, p->stdin_len);
        pb_buf_printf(&h, " writing %zu bytes to stdin\n", p->stdin_len);
    }
    pb_buf_printf(&h, " using PTY: %s\n", use_pty ? "True" : "False");
    wk_cmd_update_text(c, "header", (const char *)h.data, h.len);
    pb_buf_free(&h);
    pb_buf_free(&fake);
    pb_buf_free(&display);

    p->start_time = wk_now();
    uv_loop_t *loop = c->w->loop;
    timer_init(p, &p->io_timer);
    timer_init(p, &p->max_timer);
    timer_init(p, &p->sigterm_timer);
    timer_init(p, &p->kill_timer);
    timer_init(p, &p->log_timer);

    uv_process_options_t po;
    memset(&po, 0, sizeof po);
    uv_stdio_container_t stdio[3];
    int slave = -1;
    p->pty_fd = -1;
    if (use_pty) {
        p->pty_fd = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (p->pty_fd >= 0 && !grantpt(p->pty_fd) && !unlockpt(p->pty_fd))
            slave = open(ptsname(p->pty_fd), O_RDWR | O_NOCTTY | O_CLOEXEC);
        for (int i = 0; i < 3; i++) {
            stdio[i].flags = UV_INHERIT_FD;
            stdio[i].data.fd = slave;
        }
    } else {
        uv_pipe_init(loop, &p->in, 0);
        uv_pipe_init(loop, &p->out, 0);
        uv_pipe_init(loop, &p->err, 0);
        p->in.data = p->out.data = p->err.data = p;
        p->handles += 3;
        stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
        stdio[0].data.stream = (uv_stream_t *)&p->in;
        stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
        stdio[1].data.stream = (uv_stream_t *)&p->out;
        stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
        stdio[2].data.stream = (uv_stream_t *)&p->err;
    }
    po.exit_cb = proc_exited;
    po.file = argv[0];
    po.args = argv;
    po.env = env.kv ? env.kv : (char *[]){NULL};
    po.cwd = o->workdir;
    po.flags = UV_PROCESS_DETACHED;
    po.stdio_count = 3;
    po.stdio = stdio;
    p->proc.data = p;
    int r = UV_EIO;
    if (!use_pty || slave >= 0) {
        p->handles++; /* the process handle: closed by close_all even if spawn failed */
        p->proc_inited = 1;
        r = uv_spawn(loop, &p->proc, &po);
    }
    env_free(&env);
    if (slave >= 0)
        close(slave);
    if (r) {
        /* as Twisted's child would: a message on stderr, exit code 1 */
        p->spawn_failed = 1;
        if (use_pty && p->pty_fd >= 0)
            close(p->pty_fd);
        pb_buf m;
        pb_buf_init(&m);
        pb_buf_printf(&m, "Upon execvpe %s [", argv[0]);
        for (size_t i = 0; argv[i]; i++)
            pb_buf_printf(&m, "%s", i ? ", " : ""), wk_repr_bytes(&m, argv[i], strlen(argv[i]));
        pb_buf_printf(&m, "] in environment id 0\n:Traceback (most recent call last):\n"
                          "  File \"pbworker\", in spawn\n%s: [Errno %d] %s\n",
                      r == UV_ENOENT ? "FileNotFoundError" : r == UV_EACCES ? "PermissionError"
                                                                            : "OSError",
                      -r, strerror(-r));
        if (p->send_stderr)
            wk_cmd_update_text(c, "stderr", (const char *)m.data, m.len);
        pb_buf_free(&m);
        uv_timer_start(&p->kill_timer, spawn_failed_cb, 0, 0);
        *outp = p;
        return 0;
    }
    p->pid = p->proc.pid;
    p->pgid_valid = 1;
    if (use_pty) {
        uv_tty_init(loop, &p->pty, p->pty_fd, 1);
        p->pty.data = p;
        p->handles++;
        p->reading_out = 1;
        uv_read_start((uv_stream_t *)&p->pty, alloc_cb, read_cb);
    } else {
        p->reading_out = p->reading_err = 1;
        uv_read_start((uv_stream_t *)&p->out, alloc_cb, read_cb);
        uv_read_start((uv_stream_t *)&p->err, alloc_cb, read_cb);
        if (p->stdin_len) {
            p->wbuf = uv_buf_init(p->stdin_data, (unsigned)p->stdin_len);
            p->wreq.data = p;
            if (uv_write(&p->wreq, (uv_stream_t *)&p->in, &p->wbuf, 1, stdin_written))
                close_handle(p, (uv_handle_t *)&p->in);
        } else {
            close_handle(p, (uv_handle_t *)&p->in);
        }
    }
    if (p->timeout > 0)
        uv_timer_start(&p->io_timer, io_timeout, (uint64_t)(p->timeout * 1000),
                       (uint64_t)(p->timeout * 1000));
    if (p->max_time > 0)
        uv_timer_start(&p->max_timer, max_timeout, (uint64_t)(p->max_time * 1000), 0);
    if (p->nlogs) {
        log_timer_cb(&p->log_timer);
        uv_timer_start(&p->log_timer, log_timer_cb, LOG_POLL_MS, LOG_POLL_MS);
    }
    *outp = p;
    return 0;
}
