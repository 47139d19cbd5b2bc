/*
 * pbworker - a Buildbot worker written on libpb.
 *
 *   pbworker --master HOST:PORT --name NAME --password-file F --basedir DIR
 *            [--keepalive S] [--max-retries N] [--verbose]
 *            [--tls] [--ca F] [--cert F] [--key F] [--server-name N]
 *
 * Connects to a Buildbot (3.x) master's PB port, logs in with the worker's
 * bot as the mind, serves the master's attach calls while the login is
 * still pending (print, getWorkerInfo, setBuilderList), then runs the
 * commands the master starts on the per-builder objects (shell, the file
 * system commands and the file transfers; see command.c).  Sends keepalive
 * every --keepalive seconds (default 600; 0: off).  SIGHUP asks the master
 * for a graceful shutdown (as buildbot-worker --allow-shutdown=signal);
 * SIGINT/SIGTERM stop at once, killing running commands.  When the
 * connection is lost it reconnects with exponential backoff (1 s doubling
 * up to 60 s) and logs in again; --max-retries N gives up (exit 1) after N
 * failed attempts in a row.  Logs go to stderr.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "pbworker.h"

extern char **environ;

#define WORKER_VERSION "3.7.0"
#define COMMAND_VERSION "3.1"

wk_worker *wk_the_worker;

void wk_log(const char *fmt, ...)
{
    char ts[32];
    time_t t = time(NULL);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%d %H:%M:%S", &tm);
    fprintf(stderr, "%s pbworker: ", ts);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: pbworker --master HOST:PORT --name NAME --password-file F --basedir DIR\n"
            "                [--keepalive S] [--max-retries N] [--verbose]\n"
            "                [--tls] [--ca F] [--cert F] [--key F] [--server-name N]\n"
            "  --master HOST:PORT  the Buildbot master's PB port\n"
            "  --name NAME         worker name\n"
            "  --password-file F   file holding the worker's password (first line)\n"
            "  --basedir DIR       worker base directory (builders run in DIR/<builddir>)\n"
            "  --keepalive S       send keepalive every S seconds (default 600; 0: off)\n"
            "  --max-retries N     give up after N failed connection attempts (default: never)\n"
            "  --tls               connect with TLS (implied by --ca/--cert/--key)\n"
            "  --ca F              PEM CAs that verify the master (default: system CAs)\n"
            "  --cert F, --key F   client certificate and key\n"
            "  --server-name N     name the master's certificate must carry (default HOST)\n"
            "SIGHUP: graceful shutdown through the master; SIGINT/SIGTERM: stop now.\n");
}

/* ------------------------------------------------------------ exit */

static void walk_close(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void stop_everything(wk_worker *w)
{
    if (w->stopping)
        return;
    w->stopping = 1;
    for (wk_builder *b = w->builders; b; b = b->next)
        if (b->cmd) {
            wk_cmd *c = b->cmd;
            wk_cmd_detach(c, 1);
            c->running = 0;
            if (c->ops->interrupt)
                c->ops->interrupt(c);
        }
    uv_timer_stop(&w->keepalive_timer);
    if (w->avatar) {
        pb_ref_unref(w->avatar);
        w->avatar = NULL;
    }
    if (w->rc) {
        pb_reconnector_stop(w->rc);
        w->rc = NULL;
    }
    w->conn = NULL;
    uv_signal_stop(&w->sig_hup);
    uv_signal_stop(&w->sig_int);
    uv_signal_stop(&w->sig_term);
}

static void exit_timer_cb(uv_timer_t *t)
{
    wk_worker *w = t->data;
    stop_everything(w);
    uv_stop(w->loop);
}

/* Leave after delay_ms (lets the last answers go out). */
static void schedule_exit(wk_worker *w, unsigned delay_ms, int code)
{
    w->exit_code = code;
    uv_timer_start(&w->exit_timer, exit_timer_cb, delay_ms, 0);
}

/* ------------------------------------------------------------ builders */

static int b_start_build(pb_call *call, void *self, const pb_args *a)
{
    return pb_call_return_none(call);
}

static int b_start_command(pb_call *call, void *self, const pb_args *a)
{
    wk_builder *b = self;
    return wk_cmd_start(b, call, pb_arg_ref(a, 0), pb_arg_str(a, 1, ""), pb_arg_str(a, 2, ""),
                        pb_arg(a, 3));
}

static int b_interrupt_command(pb_call *call, void *self, const pb_args *a)
{
    wk_builder *b = self;
    wk_log("asked to interrupt current command: %s", pb_arg_str(a, 1, ""));
    if (!b->cmd)
        wk_log(" .. but none was running");
    else
        wk_cmd_interrupt(b->cmd);
    return pb_call_return_none(call);
}

static int b_print(pb_call *call, void *self, const pb_args *a)
{
    wk_builder *b = self;
    pb_value *m = pb_arg(a, 0);
    wk_log("WorkerForBuilder.remote_print(%s): message from master: %s", b->name,
           m && (m->type == PB_STR || m->type == PB_BYTES) ? m->u.s.ptr : "?");
    return pb_call_return_none(call);
}

static int b_set_master(pb_call *call, void *self, const pb_args *a)
{
    return pb_call_return_none(call);
}

static void builder_destroy(pb_object *o)
{
    wk_builder *b = (wk_builder *)o;
    free(b->name);
    free(b->builddir);
    free(b->basedir);
    free(b);
}

static const pb_method builder_methods[] = {
    {"startBuild", NULL, b_start_build, NULL},
    {"startCommand", "rssv", b_start_command, NULL},
    {"interruptCommand", "sv", b_interrupt_command, NULL},
    {"print", "|v:message", b_print, NULL},
    {"setMaster", "v", b_set_master, NULL},
    {NULL, NULL, NULL, NULL}};
static const pb_class builder_class = {"WorkerForBuilderPb", PB_REFERENCEABLE, builder_methods,
                                       builder_destroy};

static void set_builddir(wk_worker *w, wk_builder *b, const char *builddir)
{
    free(b->builddir);
    free(b->basedir);
    b->builddir = strdup(builddir);
    size_t n = strlen(w->basedir) + strlen(builddir) + 2;
    b->basedir = malloc(n);
    if (builddir[0] == '/')
        snprintf(b->basedir, n, "%s", builddir);
    else
        snprintf(b->basedir, n, "%s/%s", w->basedir, builddir);
    int r = wk_makedirs(b->basedir);
    if (r)
        wk_log("cannot create %s: %s", b->basedir, strerror(-r));
}

/* ------------------------------------------------------------ the bot */

static int bot_print(pb_call *call, void *self, const pb_args *a)
{
    pb_value *m = pb_arg(a, 0);
    wk_log("message from master: %s",
           m && (m->type == PB_STR || m->type == PB_BYTES) ? m->u.s.ptr : "?");
    return pb_call_return_none(call);
}

static void read_os_release(pb_arena *a, pb_value *d)
{
    FILE *f = fopen("/etc/os-release", "r");
    if (!f)
        return;
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0] || line[0] == '#')
            continue;
        char *eq = strchr(line, '=');
        if (!eq || !eq[1])
            continue;
        *eq = 0;
        char *v = eq + 1;
        size_t vl = strlen(v);
        while (vl && v[vl - 1] == '"') /* str.strip('"') */
            v[--vl] = 0;
        while (*v == '"')
            v++;
        char key[1100];
        snprintf(key, sizeof key, "os_%s", line);
        for (char *k = key; *k; k++)
            if (*k >= 'A' && *k <= 'Z')
                *k = (char)(*k - 'A' + 'a');
        pb_value *sv = pb_strz(a, v);
        if (sv)
            pb_dict_set(a, d, pb_strz(a, key), sv);
    }
    fclose(f);
}

static int bot_get_worker_info(pb_call *call, void *self, const pb_args *args)
{
    wk_worker *w = wk_the_worker;
    pb_arena *a = pb_call_arena(call);
    pb_value *d = pb_dict(a, 16);
    char path[4096];
    snprintf(path, sizeof path, "%s/info", w->basedir);
    DIR *dir = opendir(path);
    if (dir) {
        struct dirent *e;
        while ((e = readdir(dir))) {
            char fn[4352];
            struct stat st;
            snprintf(fn, sizeof fn, "%s/%s", path, e->d_name);
            if (stat(fn, &st) || !S_ISREG(st.st_mode))
                continue;
            FILE *f = fopen(fn, "rb");
            if (!f)
                continue;
            pb_buf b;
            pb_buf_init(&b);
            char buf[4096];
            size_t n;
            while ((n = fread(buf, 1, sizeof buf, f)) > 0)
                pb_buf_append(&b, buf, n);
            fclose(f);
            pb_buf out;
            pb_buf_init(&out);
            wk_utf8dec dec = {{0}, 0};
            wk_utf8_decode(&dec, (const char *)b.data, b.len, 1, &out);
            pb_dict_set(a, d, pb_strz(a, e->d_name),
                        pb_str(a, out.data ? (const char *)out.data : "", out.len));
            pb_buf_free(&b);
            pb_buf_free(&out);
        }
        closedir(dir);
    }
    read_os_release(a, d);
    pb_value *env = pb_dict(a, 16);
    for (char **e = environ; *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq)
            continue;
        pb_value *k = pb_str(a, *e, (size_t)(eq - *e)), *v = pb_strz(a, eq + 1);
        if (k && v)
            pb_dict_set(a, env, k, v);
    }
    pb_dict_set(a, d, pb_strz(a, "environ"), env);
    pb_dict_set(a, d, pb_strz(a, "system"), pb_strz(a, "posix"));
    pb_dict_set(a, d, pb_strz(a, "basedir"), pb_strz(a, w->basedir));
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    pb_dict_set(a, d, pb_strz(a, "numcpus"), pb_int(a, ncpu > 0 ? ncpu : 1));
    pb_dict_set(a, d, pb_strz(a, "version"), pb_strz(a, WORKER_VERSION));
    pb_value *cmds = pb_dict(a, 16);
    for (size_t i = 0; wk_command_names[i]; i++)
        pb_dict_set(a, cmds, pb_strz(a, wk_command_names[i]), pb_strz(a, COMMAND_VERSION));
    pb_dict_set(a, d, pb_strz(a, "worker_commands"), cmds);
    pb_dict_set(a, d, pb_strz(a, "delete_leftover_dirs"), pb_int(a, 0));
    return pb_call_return(call, d);
}

static int bot_get_commands(pb_call *call, void *self, const pb_args *args)
{
    pb_arena *a = pb_call_arena(call);
    pb_value *cmds = pb_dict(a, 16);
    for (size_t i = 0; wk_command_names[i]; i++)
        pb_dict_set(a, cmds, pb_strz(a, wk_command_names[i]), pb_strz(a, COMMAND_VERSION));
    return pb_call_return(call, cmds);
}

static int bot_get_version(pb_call *call, void *self, const pb_args *args)
{
    pb_value *v = pb_strz(pb_call_arena(call), WORKER_VERSION);
    return pb_call_return(call, v);
}

static int bot_set_builder_list(pb_call *call, void *self, const pb_args *args)
{
    wk_worker *w = wk_the_worker;
    pb_value *wanted = pb_arg(args, 0);
    pb_arena *a = pb_call_arena(call);
    pb_value *ret = pb_dict(a, pb_len(wanted));
    /* mark */
    size_t n = pb_len(wanted);
    char **names = calloc(n + 1, sizeof *names);
    for (size_t i = 0; i < n; i++) {
        pb_value *t = wanted->u.seq.items[i];
        if (!pb_is_seq(t) || pb_len(t) != 2)
            continue;
        pb_value *nv = t->u.seq.items[0], *dv = t->u.seq.items[1];
        if ((nv->type != PB_STR && nv->type != PB_BYTES) || (dv->type != PB_STR && dv->type != PB_BYTES))
            continue;
        names[i] = (char *)nv->u.s.ptr;
        wk_builder *b;
        for (b = w->builders; b; b = b->next)
            if (!strcmp(b->name, nv->u.s.ptr))
                break;
        if (b) {
            if (strcmp(b->builddir, dv->u.s.ptr)) {
                wk_log("changing builddir for builder %s from %s to %s", b->name, b->builddir,
                       dv->u.s.ptr);
                set_builddir(w, b, dv->u.s.ptr);
            }
        } else {
            b = calloc(1, sizeof *b);
            pb_object_init(&b->obj, &builder_class);
            b->w = w;
            b->name = strdup(nv->u.s.ptr);
            set_builddir(w, b, dv->u.s.ptr);
            b->next = w->builders;
            w->builders = b;
        }
        pb_dict_set(a, ret, pb_strz(a, b->name), pb_object_value(a, &b->obj));
    }
    /* disown builders no longer wanted */
    for (wk_builder **pp = &w->builders; *pp;) {
        wk_builder *b = *pp;
        int keep = 0;
        for (size_t i = 0; i < n && !keep; i++)
            keep = names[i] && !strcmp(names[i], b->name);
        if (keep) {
            pp = &b->next;
            continue;
        }
        *pp = b->next;
        if (b->cmd) {
            wk_cmd *c = b->cmd;
            wk_cmd_interrupt(c);
            wk_cmd_detach(c, 0);
        }
        pb_object_unref(&b->obj);
    }
    free(names);
    return pb_call_return(call, ret);
}

static int bot_shutdown(pb_call *call, void *self, const pb_args *args)
{
    wk_worker *w = wk_the_worker;
    wk_log("worker shutting down on command from master");
    int r = pb_call_return_none(call);
    schedule_exit(w, 200, 0);
    return r;
}

static const pb_method bot_methods[] = {
    {"print", "|v:message", bot_print, NULL},
    {"getWorkerInfo", NULL, bot_get_worker_info, NULL},
    {"getCommands", NULL, bot_get_commands, NULL},
    {"getVersion", NULL, bot_get_version, NULL},
    {"setBuilderList", "l", bot_set_builder_list, NULL},
    {"shutdown", NULL, bot_shutdown, NULL},
    {NULL, NULL, NULL, NULL}};
static const pb_class bot_class = {"BotPb", PB_REFERENCEABLE, bot_methods, NULL};

/* ------------------------------------------------------------ keepalive */

static int keepalive_answered(pb_deferred *d, void *ud)
{
    const pb_failure *f = pb_deferred_failure(d);
    if (f)
        wk_log("error sending keepalive: %s: %s", f->type, f->value ? f->value : "");
    else if (wk_the_worker->verbose)
        wk_log("Master replied to keepalive, everything's fine");
    return 0;
}

static void keepalive_cb(uv_timer_t *t)
{
    wk_worker *w = t->data;
    if (!w->avatar)
        return;
    pb_deferred *d = pb_ref_callf(w->avatar, "keepalive", "");
    if (d) {
        pb_deferred_add(d, keepalive_answered, keepalive_answered, NULL);
        pb_deferred_unref(d);
    }
}

/* ------------------------------------------------------------ connection */

static int logged_in(pb_deferred *d, void *ud)
{
    wk_worker *w = wk_the_worker;
    uint64_t gen = (uint64_t)(uintptr_t)ud;
    pb_value *v = pb_deferred_value(d);
    if (gen != w->conn_gen || !w->conn || w->stopping)
        return 0;
    if (!v || v->type != PB_REMOTE) {
        wk_log("login answered with something else than a reference");
        pb_conn_close(w->conn);
        return 0;
    }
    w->avatar = pb_ref_ref((pb_ref *)v->u.h);
    wk_log("Connected to %s:%d; worker is ready", w->host, w->port);
    if (w->keepalive_s)
        uv_timer_start(&w->keepalive_timer, keepalive_cb, (uint64_t)w->keepalive_s * 1000,
                       (uint64_t)w->keepalive_s * 1000);
    return 0;
}

static int login_failed(pb_deferred *d, void *ud)
{
    wk_worker *w = wk_the_worker;
    uint64_t gen = (uint64_t)(uintptr_t)ud;
    const pb_failure *f = pb_deferred_failure(d);
    wk_log("failed to get perspective: %s: %s", f ? f->type : "?", f && f->value ? f->value : "");
    if (gen == w->conn_gen && w->conn)
        pb_conn_close(w->conn); /* the reconnector tries again */
    return 0;
}

static void on_up(pb_conn *c, void *ud)
{
    wk_worker *w = ud;
    w->conn = c;
    w->conn_gen++;
    wk_log("connected to %s", pb_conn_peer(c));
    pb_deferred *d = pb_login(c, w->name, w->password, &w->bot);
    if (!d) {
        wk_log("cannot send login");
        pb_conn_close(c);
        return;
    }
    pb_deferred_add(d, logged_in, login_failed, (void *)(uintptr_t)w->conn_gen);
    pb_deferred_unref(d);
}

static void on_down(const char *why, unsigned attempt, void *ud)
{
    wk_worker *w = ud;
    uv_timer_stop(&w->keepalive_timer);
    if (w->avatar) {
        pb_ref_unref(w->avatar);
        w->avatar = NULL;
    }
    if (w->conn)
        wk_log("lost connection to master: %s", why ? why : "?");
    else
        wk_log("connection attempt %u failed: %s", attempt, why ? why : "?");
    w->conn = NULL;
    w->conn_gen++;
    /* lostRemoteStep: running commands are stopped and forgotten */
    for (wk_builder *b = w->builders; b; b = b->next)
        if (b->cmd) {
            wk_cmd *c = b->cmd;
            wk_cmd_detach(c, 1);
            wk_cmd_interrupt(c);
        }
    if (w->max_retries && attempt >= w->max_retries && !w->stopping) {
        wk_log("giving up after %u attempts", attempt);
        schedule_exit(w, 0, 1);
    }
}

/* ------------------------------------------------------------ signals */

static int shutdown_answered(pb_deferred *d, void *ud)
{
    const pb_failure *f = pb_deferred_failure(d);
    if (f)
        wk_log("callRemote(\"shutdown\") failed: %s: %s", f->type, f->value ? f->value : "");
    return 0;
}

static void on_signal(uv_signal_t *s, int signum)
{
    wk_worker *w = s->data;
    if (signum == SIGHUP) {
        wk_log("Initiating shutdown because we got SIGHUP");
        if (!w->avatar) {
            wk_log("No active connection, shutting down NOW");
            schedule_exit(w, 0, 0);
            return;
        }
        wk_log("Telling the master we want to shutdown after any running builds are finished");
        pb_deferred *d = pb_ref_callf(w->avatar, "shutdown", "");
        if (d) {
            pb_deferred_add(d, shutdown_answered, shutdown_answered, NULL);
            pb_deferred_unref(d);
        }
        return;
    }
    wk_log("got signal %d, stopping", signum);
    schedule_exit(w, 0, 0);
}

/* ------------------------------------------------------------ main */

static char *read_password(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char buf[1024];
    if (!fgets(buf, sizeof buf, f))
        buf[0] = 0;
    fclose(f);
    buf[strcspn(buf, "\r\n")] = 0;
    return strdup(buf);
}

int main(int argc, char **argv)
{
    static wk_worker W;
    wk_worker *w = &W;
    wk_the_worker = w;
    const char *master = NULL, *pwfile = NULL, *basedir = NULL;
    w->keepalive_s = 600;
    pb_tls_opts_default(&w->tls);
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(k, "--help") || !strcmp(k, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(k, "--tls")) {
            w->use_tls = 1;
        } else if (!strcmp(k, "--verbose") || !strcmp(k, "-v")) {
            w->verbose = 1;
        } else if (v && !strcmp(k, "--master")) {
            master = v, i++;
        } else if (v && !strcmp(k, "--name")) {
            w->name = strdup(v), i++;
        } else if (v && !strcmp(k, "--password-file")) {
            pwfile = v, i++;
        } else if (v && !strcmp(k, "--basedir")) {
            basedir = v, i++;
        } else if (v && !strcmp(k, "--keepalive")) {
            w->keepalive_s = (unsigned)strtoul(v, NULL, 10), i++;
        } else if (v && !strcmp(k, "--max-retries")) {
            w->max_retries = (unsigned)strtoul(v, NULL, 10), i++;
        } else if (v && !strcmp(k, "--ca")) {
            w->tls.ca_file = v, w->use_tls = 1, i++;
        } else if (v && !strcmp(k, "--cert")) {
            w->tls.cert_file = v, w->use_tls = 1, i++;
        } else if (v && !strcmp(k, "--key")) {
            w->tls.key_file = v, w->use_tls = 1, i++;
        } else if (v && !strcmp(k, "--server-name")) {
            w->tls.server_name = v, w->use_tls = 1, i++;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (!master || !w->name || !pwfile || !basedir) {
        usage(stderr);
        return 2;
    }
    const char *colon = strrchr(master, ':');
    if (!colon || !colon[1]) {
        fprintf(stderr, "pbworker: --master must be HOST:PORT\n");
        return 2;
    }
    static char hostbuf[256];
    size_t hl = (size_t)(colon - master);
    if (hl >= sizeof hostbuf)
        hl = sizeof hostbuf - 1;
    memcpy(hostbuf, master, hl);
    hostbuf[hl] = 0;
    if (hostbuf[0] == '[' && hl > 2 && hostbuf[hl - 1] == ']') { /* [::1]:port */
        memmove(hostbuf, hostbuf + 1, hl - 2);
        hostbuf[hl - 2] = 0;
    }
    w->host = hostbuf;
    w->port = atoi(colon + 1);
    w->password = read_password(pwfile);
    if (!w->password) {
        fprintf(stderr, "pbworker: cannot read %s: %s\n", pwfile, strerror(errno));
        return 2;
    }
    if (wk_makedirs(basedir)) {
        fprintf(stderr, "pbworker: cannot create %s\n", basedir);
        return 2;
    }
    pb_arena *tmp = pb_arena_new(0);
    w->basedir = strdup(wk_abspath(tmp, basedir));
    pb_arena_free(tmp);
    setvbuf(stderr, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);

    w->loop = uv_default_loop();
    pb_object_init(&w->bot, &bot_class);
    uv_timer_init(w->loop, &w->keepalive_timer);
    w->keepalive_timer.data = w;
    uv_timer_init(w->loop, &w->exit_timer);
    w->exit_timer.data = w;
    uv_signal_init(w->loop, &w->sig_hup);
    uv_signal_init(w->loop, &w->sig_int);
    uv_signal_init(w->loop, &w->sig_term);
    w->sig_hup.data = w->sig_int.data = w->sig_term.data = w;
    uv_signal_start(&w->sig_hup, on_signal, SIGHUP);
    uv_signal_start(&w->sig_int, on_signal, SIGINT);
    uv_signal_start(&w->sig_term, on_signal, SIGTERM);

    pb_reconnect_opts ro;
    pb_reconnect_opts_default(&ro);
    ro.initial_ms = 1000;
    ro.max_ms = 60000;
    ro.max_retries = w->max_retries;
    ro.client.tcp_keepalive_s = 600;
    ro.client.tls = w->use_tls ? &w->tls : NULL;
    pb_errbuf err;
    wk_log("Starting Worker -- version: %s (pbworker on libpb); basedir %s", WORKER_VERSION,
           w->basedir);
    if (pb_reconnector_start(w->loop, w->host, w->port, &ro, on_up, on_down, w, &w->rc, &err)) {
        fprintf(stderr, "pbworker: cannot connect to %s: %s\n", master, err.msg);
        return 1;
    }
    uv_run(w->loop, UV_RUN_DEFAULT);
    /* drain: let closing handles and finished children settle */
    stop_everything(w);
    uv_walk(w->loop, walk_close, NULL);
    uv_run(w->loop, UV_RUN_DEFAULT);
    while (w->builders) {
        wk_builder *b = w->builders;
        w->builders = b->next;
        pb_object_unref(&b->obj);
    }
    pb_object_unref(&w->bot);
    uv_loop_close(w->loop);
    free(w->name);
    free(w->password);
    free(w->basedir);
    wk_log("exiting with status %d", w->exit_code);
    return w->exit_code;
}
