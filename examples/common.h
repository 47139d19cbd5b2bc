/*
 * examples/common.h - what every example program shares: options, a
 * server main loop, a one-connection client loop, and error reporting.
 *
 * Options (all programs): --host H (localhost) --port N (8800); TLS with
 * --tls (implied by the next three) --cert F --key F (a server's, or a
 * client's own certificate) --ca F (CAs that verify the peer; a server
 * with --ca asks clients for a certificate, optional); chat also
 * --user --password --group --message --db.  stdout is line buffered;
 * diagnostics go to stderr.  Clients exit 0 when done, 1 with the reason
 * on stderr otherwise.
 */
#ifndef EXAMPLES_COMMON_H
#define EXAMPLES_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pb/pb.h"

typedef struct ex_args {
    const char *host;
    int port;
    const char *user, *password, *group, *message, *db;
    int tls;
    const char *cert, *key, *ca;
} ex_args;

/* The usage text: every program's --host/--port, plus chat's own options. */
static inline void ex_usage(FILE *f, const char *argv0)
{
    const char *name = strrchr(argv0, '/') ? strrchr(argv0, '/') + 1 : argv0;
    int server = strstr(name, "erver") || strstr(name, "receiver");
    int chatserver = !strcmp(name, "chatserver"), chatclient = !strcmp(name, "chatclient");
    fprintf(f, "usage: %s [--host H] [--port N]%s%s\n", name, chatserver ? " [--db PATH]" : "",
            chatclient ? " [--user U] [--password P] [--group G] [--message M]" : "");
    fprintf(f, "  --host H      %s (default localhost)\n",
            server ? "address to listen on" : "server to connect to");
    fprintf(f, "  --port N      TCP port (default 8800)%s\n",
            server ? "; 0 picks a free one" : "");
    if (chatserver)
        fprintf(f, "  --db PATH     SQLite user store (default chat.db; a new one gets alice/1234,\n"
                   "                bob/secret and carol/fido)\n");
    if (chatclient)
        fprintf(f, "  --user U      login name (default alice)\n"
                   "  --password P  password (default 1234)\n"
                   "  --group G     group to join (default #NeedAFourth)\n"
                   "  --message M   send M, wait for it to come back, exit (default: send\n"
                   "                each line of standard input)\n");
    fprintf(f, "  --tls         speak TLS (implied by --cert, --key, --ca)\n"
               "  --cert F      PEM certificate: %s\n"
               "  --key F       PEM private key of --cert\n"
               "  --ca F        PEM CAs that verify the %s\n",
            server ? "the server's (required with --tls)" : "ours, if the server asks",
            server ? "clients' certificates (then asked for, optional)" : "server");
    fprintf(f, "  -h, --help    show this help and exit\n");
    fprintf(f, server ? "Prints \"listening on HOST:PORT\" and serves until SIGINT/SIGTERM.\n"
                      : "Exits 0 when done, 1 with the reason on stderr otherwise.\n");
    fprintf(f, "Usage errors exit 2.  See %s(1).\n", name);
}

static inline void ex_parse(int argc, char **argv, ex_args *a)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    *a = (ex_args){"localhost", 8800, "alice", "1234", "#NeedAFourth", NULL, "chat.db", 0, NULL, NULL, NULL};
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        const char **dst = !strcmp(k, "--host")       ? &a->host
                           : !strcmp(k, "--user")     ? &a->user
                           : !strcmp(k, "--password") ? &a->password
                           : !strcmp(k, "--group")    ? &a->group
                           : !strcmp(k, "--message")  ? &a->message
                           : !strcmp(k, "--db")       ? &a->db
                           : !strcmp(k, "--cert")     ? &a->cert
                           : !strcmp(k, "--key")      ? &a->key
                           : !strcmp(k, "--ca")       ? &a->ca
                                                      : NULL;
        if (!strcmp(k, "--tls")) {
            a->tls = 1;
            continue;
        }
        if (dst == &a->cert || dst == &a->key || dst == &a->ca)
            a->tls = 1;
        if (v && dst) {
            *dst = v;
            i++;
        } else if (v && !strcmp(k, "--port")) {
            a->port = atoi(v);
            i++;
        } else if (!strcmp(k, "--help") || !strcmp(k, "-h")) {
            ex_usage(stdout, argv[0]);
            exit(0);
        } else {
            ex_usage(stderr, argv[0]);
            exit(2);
        }
    }
}

/* The TLS settings of --tls/--cert/--key/--ca, or NULL for plain TCP. */
static inline const pb_tls_opts *ex_tls_opts(const ex_args *a, int server)
{
    static pb_tls_opts t;
    if (!a->tls)
        return NULL;
    pb_tls_opts_default(&t);
    t.cert_file = a->cert;
    t.key_file = a->key;
    t.ca_file = a->ca;
    /* a client always verifies the server; a server asks for client
     * certificates only when given --ca */
    t.verify_peer = server ? a->ca != NULL : 1;
    return &t;
}

/* Server options with the command line's TLS settings applied. */
static inline void ex_server_opts(const ex_args *a, pb_server_opts *o)
{
    pb_server_opts_default(o);
    o->tls = ex_tls_opts(a, 1);
}

/* Printable form of any value ("12", "'text'", "<RemoteReference ...>"). */
static inline const char *ex_repr(const pb_value *v)
{
    static pb_buf b;
    pb_buf_free(&b);
    pb_buf_init(&b);
    if (!v || pb_value_repr(v, &b) || pb_buf_putc(&b, 0))
        return "?";
    return (const char *)b.data;
}

/* ----------------------------------------------------------------- server */

static inline void ex_stop(void *server) { pb_server_close(server, NULL, NULL); }

/* Serve the portal on host:port until SIGINT/SIGTERM, then free it. */
static inline int ex_serve(pb_portal *portal, const ex_args *a)
{
    uv_loop_t *loop = uv_default_loop();
    pb_server *server;
    pb_errbuf err;
    pb_server_opts so;
    ex_server_opts(a, &so);
    if (pb_portal_listen_tcp(portal, loop, a->host, a->port, &so, &server, &err)) {
        fprintf(stderr, "cannot listen on %s:%d: %s\n", a->host, a->port, err.msg);
        pb_portal_free(portal);
        return 1;
    }
    printf("listening on %s:%d\n", a->host, pb_server_port(server));
    pb_run_until_signal(loop, ex_stop, server);
    pb_portal_free(portal);
    uv_run(loop, UV_RUN_DEFAULT); /* let closing handles finish */
    uv_loop_close(loop);
    return 0;
}

/* ----------------------------------------------------------------- client */

static pb_conn *ex_conn;
static int ex_status = 1, ex_finished;
static void (*ex_on_up)(pb_conn *c);
static void (*ex_on_done)(void); /* optional: release what the program holds */

/* Finish: remember the exit status and hang up. */
static inline void ex_done(int status)
{
    if (ex_finished)
        return;
    ex_finished = 1;
    ex_status = status;
    if (ex_on_done)
        ex_on_done();
    if (ex_conn)
        pb_conn_close(ex_conn);
}

static inline void ex_connected(pb_conn *c, int status, const char *msg, void *ud)
{
    if (status) {
        fprintf(stderr, "cannot connect: %s\n", msg ? msg : pb_strerror(status));
        ex_finished = 1;
        return;
    }
    ex_conn = c;
    ex_on_up(c);
}

static inline void ex_lost(pb_conn *c, const char *why, void *ud)
{
    ex_conn = NULL;
    if (!ex_finished)
        fprintf(stderr, "connection lost: %s\n", why ? why : "?");
    ex_done(ex_finished ? ex_status : 1);
}

/* Errback for any step: report "<what> failed: TYPE: VALUE" and stop. */
static inline int ex_failed(pb_deferred *d, void *what)
{
    const pb_failure *f = pb_deferred_failure(d);
    fprintf(stderr, "%s failed: %s: %s\n", (const char *)what, f ? f->type : "?",
            f && f->value ? f->value : "");
    ex_done(1);
    return 0;
}

/* Run cb when d succeeds; report and stop when it fails.  Takes d. */
static inline void ex_then(pb_deferred *d, pb_deferred_fn cb, const char *what)
{
    if (!d) {
        fprintf(stderr, "%s failed: could not send\n", what);
        ex_done(1);
        return;
    }
    pb_deferred_add(d, cb, ex_failed, (void *)what);
    pb_deferred_unref(d);
}

/* Connect, call up() once the PB connection is ready, run until done. */
static inline int ex_client(const ex_args *a, void (*up)(pb_conn *c))
{
    uv_loop_t *loop = uv_default_loop();
    pb_client_opts opts;
    pb_errbuf err;
    pb_client_opts_default(&opts);
    opts.tls = ex_tls_opts(a, 0);
    ex_on_up = up;
    if (pb_connect_tcp(loop, a->host, a->port, &opts, ex_connected, ex_lost, NULL, &err)) {
        fprintf(stderr, "cannot connect to %s:%d: %s\n", a->host, a->port, err.msg);
        return 1;
    }
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    return ex_status;
}

#endif
