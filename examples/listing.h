/*
 * examples/listing.h - what the C counterparts of the Twisted PB docs
 * listings (pb1..pb3, exc, trap, copy2) share on top of common.h: serving
 * one plain root object (pb.PBServerFactory(root), no cred) and a
 * Python-str()-like rendering of values for the listings' prints.
 */
#ifndef EXAMPLES_LISTING_H
#define EXAMPLES_LISTING_H

#include "common.h"

/* str(v) as Python's print() shows it: text as is, bytes as b'...',
 * everything else as repr. */
static inline const char *ls_str(const pb_value *v)
{
    if (v && v->type == PB_STR)
        return v->u.s.ptr;
    return ex_repr(v);
}

static inline pb_object *ls_root_of(pb_broker *b, void *root)
{
    (void)b;
    return pb_object_ref(root); /* one root shared by every connection */
}

static inline void ls_stop(void *server) { pb_server_close(server, NULL, NULL); }

/* Serve root on a->host:a->port (opts may be NULL) until SIGINT/SIGTERM or until the program
 * closes *server_out itself.  Prints "listening on HOST:PORT". */
static inline int ls_serve(pb_object *root, const ex_args *a, const pb_server_opts *opts,
                    pb_server **server_out)
{
    uv_loop_t *loop = uv_default_loop();
    pb_server *server;
    pb_errbuf err;
    pb_server_opts o;
    if (opts)
        o = *opts;
    else
        pb_server_opts_default(&o);
    if (!o.tls)
        o.tls = ex_tls_opts(a, 1); /* --tls --cert --key --ca */
    if (pb_listen_tcp(loop, a->host, a->port, &o, ls_root_of, root, &server, &err)) {
        fprintf(stderr, "cannot listen on %s:%d: %s\n", a->host, a->port, err.msg);
        return 1;
    }
    if (server_out)
        *server_out = server;
    printf("listening on %s:%d\n", a->host, pb_server_port(server));
    pb_run_until_signal(loop, ls_stop, server);
    uv_loop_close(loop);
    return 0;
}

#endif
