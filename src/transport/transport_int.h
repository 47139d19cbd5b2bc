/*
 * transport_int.h - shared internals of the libuv adapter (src/transport/).
 *
 * Layout: conn.c holds connections, clients and the per-loop write
 * batcher; server.c listening sockets; reconnect.c the reconnector;
 * signal.c pb_run_until_signal.  Nothing here knows about Jelly.
 */
#ifndef PB_TRANSPORT_INT_H
#define PB_TRANSPORT_INT_H

#include "pb/transport.h"

/* Per-loop shared state: the write batcher (one uv_check + uv_idle per
 * loop, not per connection).  Reference counted by the connections of
 * that loop; closed and freed when the last one goes. */
typedef struct pb_uvctx pb_uvctx;

enum conn_state {
    CONN_RESOLVING,  /* client: waiting for getaddrinfo */
    CONN_CONNECTING, /* client: waiting for connect() */
    CONN_HANDSHAKE,  /* socket up, PB dialect/version exchange running */
    CONN_UP,         /* connected callback delivered */
};

struct pb_conn {
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } io;
    uv_timer_t timer;           /* broker deadlines; connect timeout; close linger */
    uv_write_t wreq;
    uv_connect_t creq;
    uv_loop_t *loop;
    pb_uvctx *ctx;
    pb_broker *broker;
    struct pb_server *server;   /* accepting side; NULL for clients */
    pb_broker_config cfg;

    /* client side */
    pb_connect_fn on_connect;
    pb_lost_fn on_lost;
    void *ud;
    uv_getaddrinfo_t *gai;      /* while resolving */
    unsigned connect_timeout_ms;
    int port;                   /* while resolving */
    int keepalive_s;

    /* write state */
    uint8_t *wbuf;              /* bytes of the write in flight (owned) */
    size_t wlen;
    pb_conn *wnext, *wprev;     /* in the loop's flush list */

    uint64_t armed_deadline;    /* what the timer is set for (UINT64_MAX: stopped) */
    int state;                  /* enum conn_state */
    unsigned is_tcp : 1, writing : 1, in_wlist : 1, read_paused : 1, reading : 1,
        closing : 1, lingering : 1, handles_closed : 1, ever_up : 1;
    int pending_handles;        /* uv_close callbacks still to come (+1 while resolving) */
    int close_code;             /* PB_E* of the close reason */
    char *close_why;            /* malloc'd reason */

    pb_conn *snext, *sprev;     /* in the server's list */
    pb_conn *hnext;             /* broker -> conn map chain */
    char peer[112];
};

/* conn.c */
pb_conn *pb__conn_alloc(uv_loop_t *loop, int is_tcp, pb_errbuf *err);
/* Discard a conn whose handles were never initialised (setup failure). */
void pb__conn_discard(pb_conn *c);
/* The socket is connected: set options, make the broker, start reading.
 * Server side: root(broker, ud) names the root object (NULL refuses the
 * connection).  Returns 0 or a PB_E*; on failure the conn is already
 * closing. */
int pb__conn_start(pb_conn *c, int is_server, pb_root_fn root, void *ud);
/* Close: graceful flushes what is queued first (bounded linger). */
void pb__conn_close(pb_conn *c, int code, const char *why, int graceful);
/* Client connect that also hands back the conn (for the reconnector,
 * which may need to cancel it before it is up). */
int pb__connect(uv_loop_t *loop, const char *host, int port, const char *unix_path,
                const pb_client_opts *opts, pb_connect_fn on_connect, pb_lost_fn on_lost,
                void *ud, pb_conn **out, pb_errbuf *err);
/* Resolve host for listen/connect (numeric fast path; "localhost" prefers
 * 127.0.0.1).  Synchronous. */
int pb__resolve(uv_loop_t *loop, const char *host, int port, struct sockaddr_storage *ss,
                pb_errbuf *err);
/* "1.2.3.4:5" / "[::1]:5" */
void pb__format_addr(const struct sockaddr *sa, char *out, size_t n);

/* server.c */
void pb__server_conn_gone(struct pb_server *s, pb_conn *c);

#endif
