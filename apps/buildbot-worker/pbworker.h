/*
 * pbworker.h - a Buildbot worker on libpb: shared types.
 *
 * pbworker.c   connection, login, the bot and builder objects, keepalive,
 *              shutdown, reconnect
 * command.c    one running command: status updates (line splitting and
 *              batching as buildbot-worker 3.7 does), complete, failures,
 *              Python-style text helpers
 * process.c    child processes over libuv (the RunProcess of the Python
 *              worker): headers, env, timeouts, kill, logfiles
 * commands_shell.c      shell, rmdir, cpdir (the commands that run programs)
 * commands_fs.c         mkdir, stat, glob, listdir, rmfile
 * commands_transfer.c   uploadFile, downloadFile, uploadDirectory
 *
 * Uses libpb's public API only.
 */
#ifndef PBWORKER_H
#define PBWORKER_H

#include <stddef.h>
#include <stdint.h>

#include "pb/pb.h"

typedef struct wk_worker wk_worker;
typedef struct wk_builder wk_builder;
typedef struct wk_cmd wk_cmd;

/* ------------------------------------------------------------- the worker */

struct wk_worker {
    uv_loop_t *loop;
    const char *host;
    int port;
    char *name, *password;
    char *basedir;          /* absolute */
    unsigned keepalive_s;   /* 0: off */
    unsigned max_retries;   /* 0: forever */
    int use_tls;
    pb_tls_opts tls;
    int verbose;

    pb_object bot;          /* the mind */
    wk_builder *builders;   /* linked list */
    pb_reconnector *rc;
    pb_conn *conn;          /* current connection, or NULL */
    pb_ref *avatar;         /* the master's Connection (perspective), or NULL */
    uint64_t conn_gen;      /* bumped on every connection */
    uv_timer_t keepalive_timer;
    uv_timer_t exit_timer;
    uv_signal_t sig_hup, sig_int, sig_term;
    int stopping;           /* leaving: no more reconnects */
    int exit_code;
};

extern wk_worker *wk_the_worker;

void wk_log(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

/* ------------------------------------------------------------ a builder */

struct wk_builder {
    pb_object obj;          /* first: the per-builder object the master calls */
    wk_worker *w;
    wk_builder *next;
    char *name, *builddir;
    char *basedir;          /* <worker basedir>/<builddir> */
    wk_cmd *cmd;            /* the current command, or NULL */
};

/* ------------------------------------------------------------ a command */

/* What a command implementation provides. */
typedef struct wk_cmd_ops {
    const char *name;
    /* Check args and set up (the Python worker's protocol_args_setup,
     * requiredArgs and setup()).  A non-zero return refuses startCommand
     * with the failure in *type / msg (as Python raises in the
     * constructor). */
    int (*setup)(wk_cmd *c, const char **type, char *msg, size_t msglen);
    /* Start.  The command reports with wk_cmd_* and ends with
     * wk_cmd_finished() (possibly from inside start).  A non-zero return
     * means start itself raised: wk_cmd_finished_failure has been called. */
    void (*start)(wk_cmd *c);
    /* Master asked to interrupt (after running was cleared); may be NULL. */
    void (*interrupt)(wk_cmd *c);
    /* Release impl (the command is being freed); may be NULL. */
    void (*destroy)(wk_cmd *c);
} wk_cmd_ops;

/* One buffered update item (see command.c). */
typedef struct wk_item wk_item;
/* Per-stream partial line state (LineBoundaryFinder). */
typedef struct wk_lines wk_lines;

struct wk_cmd {
    wk_builder *b;          /* NULL once detached from its builder */
    wk_worker *w;
    const wk_cmd_ops *ops;
    pb_ref *sink;           /* the master's RemoteCommand; NULL once released */
    char *id, *cmdname;
    pb_arena *arena;        /* holds args (a copy) and the paths below */
    pb_value *args;         /* the args dict */
    double start_time;
    int running;            /* Command.running: sendStatus allowed */
    int interrupted;
    int is_complete;        /* complete sent (nothing more goes out) */
    int finished;           /* the command's work is over */
    int lost;               /* its connection is gone: send nothing */
    unsigned refs;          /* lifetime: running work + outstanding calls */
    /* update machinery */
    wk_lines *lines;        /* linked list of per-stream line finders */
    wk_item *items, *items_tail;
    size_t buflen;
    uv_timer_t *flush_timer;
    void *impl;             /* the command's own state */
};

/* Lookup of implemented commands; NULL if unknown. */
const wk_cmd_ops *wk_cmd_lookup(const char *name);
/* The names advertised in getWorkerInfo's worker_commands. */
extern const char *const wk_command_names[];

/* Start a command on builder b (the body of remote_startCommand). */
int wk_cmd_start(wk_builder *b, pb_call *call, pb_ref *sink, const char *id, const char *name,
                 const pb_value *args);
/* Interrupt (remote_interruptCommand / stopCommand). */
void wk_cmd_interrupt(wk_cmd *c);
/* The builder forgets c (stopCommand, lost connection): c keeps running
 * until it ends but sends nothing more. */
void wk_cmd_detach(wk_cmd *c, int lost);

void wk_cmd_hold(wk_cmd *c);
void wk_cmd_release(wk_cmd *c);

/* send_update (always, unless complete) and sendStatus (only while
 * running).  Text is UTF-8. */
void wk_cmd_update_text(wk_cmd *c, const char *key, const char *text, size_t n);
void wk_cmd_update_log(wk_cmd *c, const char *logname, const char *text, size_t n);
/* v is copied. */
void wk_cmd_update_value(wk_cmd *c, const char *key, const pb_value *v);
void wk_cmd_update_int(wk_cmd *c, const char *key, int64_t v);
void wk_cmd_status_text(wk_cmd *c, const char *key, const char *text, size_t n);
void wk_cmd_status_value(wk_cmd *c, const char *key, const pb_value *v);
void wk_cmd_status_int(wk_cmd *c, const char *key, int64_t v);
/* The command's work is done: send elapsed (if running), flush, complete(None). */
void wk_cmd_finished(wk_cmd *c);
/* As wk_cmd_finished, completing with a CopyableFailure. */
void wk_cmd_finished_failure(wk_cmd *c, const char *type, const char *value);

/* Args helpers (on c->args). */
pb_value *wk_arg(const wk_cmd *c, const char *key);
int wk_arg_has(const wk_cmd *c, const char *key);
/* Text argument or NULL. */
const char *wk_arg_str(const wk_cmd *c, const char *key);
/* Python truthiness of an argument (absent: def). */
int wk_arg_true(const wk_cmd *c, const char *key, int def);
/* Integer/float argument (absent or None: def). */
double wk_arg_num(const wk_cmd *c, const char *key, double def);

/* ------------------------------------------------------------ helpers */

double wk_now(void);
/* os.path.join(a, b) into c's arena. */
char *wk_join(pb_arena *a, const char *x, const char *y);
/* os.path.expanduser. */
char *wk_expanduser(pb_arena *a, const char *p);
/* os.path.abspath. */
char *wk_abspath(pb_arena *a, const char *p);
char *wk_strdup(pb_arena *a, const char *s);
char *wk_printf(pb_arena *a, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Python repr of a str / bytes / value, appended to out. */
void wk_repr_str(pb_buf *out, const char *s, size_t n);
void wk_repr_bytes(pb_buf *out, const char *s, size_t n);
void wk_repr_value(pb_buf *out, const pb_value *v);
/* str() of a Python number. */
void wk_fmt_num(pb_buf *out, const pb_value *v);
void wk_fmt_double(pb_buf *out, double d);
/* Incremental UTF-8 decoding with U+FFFD replacement (Python's 'replace'). */
typedef struct wk_utf8dec {
    unsigned char pend[4];
    size_t npend;
} wk_utf8dec;
void wk_utf8_decode(wk_utf8dec *d, const char *p, size_t n, int final, pb_buf *out);
/* mkdir -p; 0 or -errno. */
int wk_makedirs(const char *path);

/* ------------------------------------------------------------ processes */

typedef struct wk_proc wk_proc;
typedef struct wk_proc_opts {
    const pb_value *command;   /* PB_STR/PB_BYTES (sh -c) or a list */
    const char *workdir;
    const pb_value *env;       /* dict or NULL/None */
    int send_stdout, send_stderr, send_rc;
    double timeout;            /* 0: none */
    const pb_value *timeout_v; /* for the header text (as the master sent it) */
    double max_time;
    const pb_value *max_time_v;
    int has_sigterm;
    double sigterm_time;
    const pb_value *initial_stdin;
    int log_environ;
    const pb_value *logfiles;  /* dict or NULL */
    int use_pty;
    const char *interrupt_signal; /* "KILL" by default */
} wk_proc_opts;
/* Start a RunProcess for c.  done(c, rc, ud) runs once when it ends.
 * Returns 0, or -1 with *errtype/errmsg set if it raised before starting
 * (the Python constructor's exceptions: bad env). */
int wk_proc_start(wk_cmd *c, const wk_proc_opts *o, void (*done)(wk_cmd *c, int rc, void *ud),
                  void *ud, wk_proc **out, const char **errtype, char *errmsg, size_t errlen);
/* kill(msg): "command interrupted" etc. */
void wk_proc_kill(wk_proc *p, const char *msg);

/* ------------------------------------------------------------ command tables */

extern const wk_cmd_ops wk_cmd_shell, wk_cmd_rmdir, wk_cmd_cpdir;
extern const wk_cmd_ops wk_cmd_mkdir, wk_cmd_stat, wk_cmd_glob, wk_cmd_listdir, wk_cmd_rmfile;
extern const wk_cmd_ops wk_cmd_upload_file, wk_cmd_download_file, wk_cmd_upload_dir;

#endif
