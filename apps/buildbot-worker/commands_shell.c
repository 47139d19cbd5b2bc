/*
 * commands_shell.c - the commands that run programs: shell, and rmdir /
 * cpdir, which the Python worker implements on POSIX as `rm -rf` and
 * `cp -R -P -p -v` through the same process runner (so their headers and
 * output are those of a program run in the worker's base directory).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pbworker.h"

static int missing_key(const char **type, char *msg, size_t len, const char *key)
{
    *type = "builtins.KeyError";
    snprintf(msg, len, "'%s'", key);
    return -1;
}

static int missing_args(const char **type, char *msg, size_t len, const char *cls,
                        const char *args)
{
    *type = "builtins.ValueError";
    snprintf(msg, len, "%s is missing args: %s", cls, args);
    return -1;
}

static int is_text(const pb_value *v) { return v && (v->type == PB_STR || v->type == PB_BYTES); }

/* ------------------------------------------------------------------ shell */

typedef struct shell_impl {
    char *workdir;
    wk_proc *proc;
} shell_impl;

static int shell_setup(wk_cmd *c, const char **type, char *msg, size_t len)
{
    pb_value *wd = wk_arg(c, "workdir");
    if (!wd)
        return missing_key(type, msg, len, "workdir");
    if (!wk_arg_has(c, "command"))
        return missing_args(type, msg, len, "WorkerShellCommand", "command");
    shell_impl *s = pb_arena_alloc(c->arena, sizeof *s);
    memset(s, 0, sizeof *s);
    s->workdir = wk_join(c->arena, c->b->basedir, is_text(wd) ? wd->u.s.ptr : "");
    c->impl = s;
    return 0;
}

static void shell_done(wk_cmd *c, int rc, void *ud)
{
    shell_impl *s = c->impl;
    s->proc = NULL;
    wk_cmd_finished(c);
}

static void shell_start(wk_cmd *c)
{
    shell_impl *s = c->impl;
    wk_proc_opts o;
    memset(&o, 0, sizeof o);
    o.command = wk_arg(c, "command");
    o.workdir = s->workdir;
    o.env = wk_arg(c, "env");
    o.timeout_v = wk_arg(c, "timeout");
    o.timeout = wk_arg_num(c, "timeout", 0);
    o.max_time_v = wk_arg(c, "maxTime");
    o.max_time = wk_arg_num(c, "maxTime", 0);
    pb_value *st = wk_arg(c, "sigtermTime");
    o.has_sigterm = st && st->type != PB_NONE;
    o.sigterm_time = wk_arg_num(c, "sigtermTime", 0);
    o.send_stdout = wk_arg_true(c, "want_stdout", 1);
    o.send_stderr = wk_arg_true(c, "want_stderr", 1);
    o.send_rc = 1;
    o.initial_stdin = wk_arg(c, "initial_stdin");
    o.logfiles = wk_arg(c, "logfiles");
    o.use_pty = wk_arg_true(c, "usePTY", 0);
    o.log_environ = wk_arg_true(c, "logEnviron", 1);
    const char *sig = wk_arg_str(c, "interruptSignal");
    o.interrupt_signal = sig && *sig ? sig : "KILL";
    if (!o.command || (!is_text(o.command) && o.command->type != PB_LIST &&
                       o.command->type != PB_TUPLE)) {
        wk_cmd_finished_failure(c, "builtins.TypeError", "command must be a string or a list");
        return;
    }
    pb_value *pty = wk_arg(c, "usePTY");
    if (pty && pty->type != PB_BOOL && !(pty->type == PB_INT && (pty->u.i == 0 || pty->u.i == 1))) {
        pb_buf b;
        pb_buf_init(&b);
        pb_buf_append(&b, "Unexpected usePTY argument value: ", 34);
        wk_repr_value(&b, pty);
        pb_buf_append(&b, ". Expected boolean.", 19);
        pb_buf_putc(&b, 0);
        wk_cmd_finished_failure(c, "builtins.AssertionError", (const char *)b.data);
        pb_buf_free(&b);
        return;
    }
    const char *etype = NULL;
    char emsg[512];
    if (wk_proc_start(c, &o, shell_done, NULL, &s->proc, &etype, emsg, sizeof emsg))
        wk_cmd_finished_failure(c, etype, emsg);
}

static void shell_interrupt(wk_cmd *c)
{
    shell_impl *s = c->impl;
    c->interrupted = 1;
    if (s->proc)
        wk_proc_kill(s->proc, "command interrupted");
}

const wk_cmd_ops wk_cmd_shell = {"shell", shell_setup, shell_start, shell_interrupt, NULL};

/* ------------------------------------------------------------------ rmdir */

typedef struct rm_impl {
    char **paths;
    size_t n, i;
    int rc;
    int chmod_done; /* for the current path */
    int phase;      /* 0: rm, 1: chmod, 2: rm again */
    wk_proc *proc;
} rm_impl;

static int rmdir_setup(wk_cmd *c, const char **type, char *msg, size_t len)
{
    pb_value *d = wk_arg(c, "dir");
    if (!d)
        return missing_key(type, msg, len, "dir");
    rm_impl *r = pb_arena_alloc(c->arena, sizeof *r);
    memset(r, 0, sizeof *r);
    if (d->type == PB_LIST) {
        r->paths = pb_arena_alloc(c->arena, (pb_len(d) + 1) * sizeof *r->paths);
        for (size_t i = 0; i < pb_len(d); i++)
            if (is_text(d->u.seq.items[i]))
                r->paths[r->n++] = wk_join(c->arena, c->b->basedir, d->u.seq.items[i]->u.s.ptr);
    } else {
        r->paths = pb_arena_alloc(c->arena, sizeof *r->paths);
        r->paths[r->n++] = wk_join(c->arena, c->b->basedir, is_text(d) ? d->u.s.ptr : "");
    }
    c->impl = r;
    return 0;
}

static void run_tool(wk_cmd *c, pb_value *argv, void (*done)(wk_cmd *, int, void *), int send_rc,
                     wk_proc **out)
{
    wk_proc_opts o;
    memset(&o, 0, sizeof o);
    o.command = argv;
    o.workdir = c->w->basedir;
    o.env = NULL;
    pb_value *tv = wk_arg(c, "timeout");
    if (!tv)
        tv = pb_int(c->arena, 120);
    o.timeout_v = tv;
    o.timeout = tv->type == PB_INT ? (double)tv->u.i : tv->type == PB_FLOAT ? tv->u.f : 0;
    o.max_time_v = wk_arg(c, "maxTime");
    o.max_time = wk_arg_num(c, "maxTime", 0);
    o.send_stdout = o.send_stderr = 1;
    o.send_rc = send_rc;
    o.log_environ = wk_arg_true(c, "logEnviron", 1);
    o.interrupt_signal = "KILL";
    const char *etype = NULL;
    char emsg[512];
    if (wk_proc_start(c, &o, done, NULL, out, &etype, emsg, sizeof emsg))
        wk_cmd_finished_failure(c, etype, emsg);
}

static pb_value *argv3(pb_arena *a, const char *x, const char *y, const char *z)
{
    pb_value *l = pb_list(a, 3);
    pb_seq_append(a, l, pb_strz(a, x));
    pb_seq_append(a, l, pb_strz(a, y));
    pb_seq_append(a, l, pb_strz(a, z));
    return l;
}

static void rm_next(wk_cmd *c);

static void rm_step_done(wk_cmd *c, int rc, void *ud)
{
    rm_impl *r = c->impl;
    r->proc = NULL;
    const char *path = r->paths[r->i];
    if (r->phase == 0 && rc != 0) {
        r->phase = 1; /* chmod -Rf u+rwx, then rm -rf once more */
        pb_value *l = argv3(c->arena, "chmod", "-Rf", "u+rwx");
        pb_seq_append(c->arena, l, pb_strz(c->arena, path));
        run_tool(c, l, rm_step_done, 0, &r->proc);
        return;
    }
    if (r->phase == 1) {
        r->phase = 2;
        run_tool(c, argv3(c->arena, "rm", "-rf", path), rm_step_done, 0, &r->proc);
        return;
    }
    if (rc != 0)
        r->rc = rc;
    r->i++;
    r->phase = 0;
    rm_next(c);
}

static void rm_next(wk_cmd *c)
{
    rm_impl *r = c->impl;
    if (r->i >= r->n) {
        wk_cmd_status_int(c, "rc", r->rc);
        wk_cmd_finished(c);
        return;
    }
    run_tool(c, argv3(c->arena, "rm", "-rf", r->paths[r->i]), rm_step_done, 0, &r->proc);
}

static void rmdir_start(wk_cmd *c)
{
    rm_impl *r = c->impl;
    if (r->n == 0) {
        wk_cmd_finished_failure(c, "builtins.AssertionError", "");
        return;
    }
    rm_next(c);
}

const wk_cmd_ops wk_cmd_rmdir = {"rmdir", rmdir_setup, rmdir_start, NULL, NULL};

/* ------------------------------------------------------------------ cpdir */

typedef struct cp_impl {
    char *from, *to;
    wk_proc *proc;
} cp_impl;

static int cpdir_setup(wk_cmd *c, const char **type, char *msg, size_t len)
{
    pb_value *f = wk_arg(c, "fromdir"), *t = wk_arg(c, "todir");
    if (!f)
        return missing_key(type, msg, len, "fromdir");
    if (!t)
        return missing_key(type, msg, len, "todir");
    cp_impl *p = pb_arena_alloc(c->arena, sizeof *p);
    memset(p, 0, sizeof *p);
    p->from = wk_join(c->arena, c->b->basedir, is_text(f) ? f->u.s.ptr : "");
    p->to = wk_join(c->arena, c->b->basedir, is_text(t) ? t->u.s.ptr : "");
    c->impl = p;
    return 0;
}

static void cp_done(wk_cmd *c, int rc, void *ud)
{
    cp_impl *p = c->impl;
    p->proc = NULL;
    wk_cmd_status_int(c, "rc", rc); /* _abandonOnFailure/_checkAbandoned or _sendRC */
    wk_cmd_finished(c);
}

static void cpdir_start(wk_cmd *c)
{
    cp_impl *p = c->impl;
    char *dir = wk_strdup(c->arena, p->to);
    char *slash = strrchr(dir, '/');
    if (slash) {
        *slash = 0;
        struct stat st;
        if (*dir && stat(dir, &st) != 0)
            wk_makedirs(dir);
    }
    pb_value *l = pb_list(c->arena, 7);
    const char *args[] = {"cp", "-R", "-P", "-p", "-v", p->from, p->to};
    for (size_t i = 0; i < 7; i++)
        pb_seq_append(c->arena, l, pb_strz(c->arena, args[i]));
    run_tool(c, l, cp_done, 0, &p->proc);
}

const wk_cmd_ops wk_cmd_cpdir = {"cpdir", cpdir_setup, cpdir_start, NULL, NULL};
