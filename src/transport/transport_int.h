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
    /* Deadlines (broker deadlines, connect timeout, close linger, idle
     * timeout) live in the loop's timer heap (pb_uvctx), not in a
     * uv_timer_t per connection: armed_deadline is the key, hidx the
     * position (+1; 0: not in the heap). */
    struct pb_wreq *wreq;       /* the write in flight (owned), or NULL */
    uv_loop_t *loop;
    pb_uvctx *ctx;
    pb_broker *broker;
    struct pb_server *server;   /* accepting side; NULL for clients */
    const pb_broker_config *cfg; /* the server's, or cl->cfg */
    struct pb_conn_client *cl;  /* client connections only (NULL when accepted) */
    unsigned connect_timeout_ms; /* client: connect; server: TLS handshake */
    int keepalive_s;

    pb_conn *wnext, *wprev;     /* in the loop's flush list */

    uint64_t armed_deadline;    /* what the timer is set for (UINT64_MAX: stopped) */
    uint32_t hidx;              /* position in the loop's timer heap + 1; 0: none */
    int state;                  /* enum conn_state */
    unsigned is_tcp : 1, writing : 1, in_wlist : 1, read_paused : 1, reading : 1,
        closing : 1, lingering : 1, handles_closed : 1, ever_up : 1,
        addr_counted : 1;       /* counted in its server's per-address table */
    int pending_handles;        /* uv_close callbacks still to come (+1 while resolving) */
    int close_code;             /* PB_E* of the close reason */
    char *close_why;            /* malloc'd reason */

    /* TLS (tls.c): NULL for plain connections.  With TLS the broker is
     * made only once the TLS handshake is done (root/root_ud wait here). */
    struct pb_tls *tls;
    /* idle timeout: checked lazily when the timer fires */
    unsigned idle_ms;           /* 0: off */
    uint64_t last_io;           /* uv_now of the last read or write */
    uint64_t idle_deadline;     /* when the timer next looks at last_io */

    pb_conn *snext, *sprev;     /* in the server's list */
    char peer[48];              /* "1.2.3.4:5", "[::1]:5", "unix:PATH" (long paths cut) */
};

/* What only a connection we opened needs (accepted ones have none: a
 * server holds many more of them). */
struct pb_conn_client {
    pb_connect_fn on_connect;
    pb_lost_fn on_lost;
    void *ud;
    uv_getaddrinfo_t *gai; /* while resolving */
    uv_connect_t *creq;    /* the connect in flight (owned), or NULL */
    int port;              /* while resolving */
    pb_broker_config cfg;  /* a copy of the caller's settings */
};

/* conn.c */
pb_conn *pb__conn_alloc(uv_loop_t *loop, int is_tcp, pb_errbuf *err);
/* Bytes of the write in flight (copied out of the broker), 0 if none. */
size_t pb__conn_write_pending(const pb_conn *c);
/* Discard a conn whose handles were never initialised (setup failure). */
void pb__conn_discard(pb_conn *c);
/* The socket is connected: set options, make the broker, start reading.
 * Server side: the server's root function names the root object (NULL
 * refuses the connection).  Returns 0 or a PB_E*; on failure the conn is already
 * closing. */
int pb__conn_start(pb_conn *c);
/* server.c: the root function (and its ud) connections of s start with. */
void pb__server_root(const struct pb_server *s, pb_root_fn *fn, void **ud);
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

/* The TLS handshake is done: make the broker and start PB (conn.c).
 * Returns 0 or a PB_E* (the conn is then closing). */
int pb__conn_tls_up(pb_conn *c);

/* server.c */
void pb__server_conn_gone(struct pb_server *s, pb_conn *c);
/* Report a limit hit through the server's rate-limited log. */
enum { PB_LIMIT_TOTAL, PB_LIMIT_PER_ADDR, PB_LIMIT_IDLE, PB_LIMIT_PROTOCOL, PB_LIMIT_KINDS };
void pb__server_limit(struct pb_server *s, int kind, const char *msg);

/* tls.c - TLS over memory BIOs between the socket and the broker.
 * The socket carries ciphertext; tls.c decrypts into pb_broker_feed and
 * encrypts pb_broker_output into its own bounded ciphertext buffer, which
 * conn_flush writes instead of the broker's output. */
typedef struct ssl_ctx_st pb_tls_ctx; /* OpenSSL's SSL_CTX */
/* Load opts into a new SSL_CTX (TLS 1.2+).  0 or a PB_E* with err set. */
int pb__tls_ctx_new(const pb_tls_opts *opts, int is_server, pb_tls_ctx **out, pb_errbuf *err);
void pb__tls_ctx_free(pb_tls_ctx *ctx);
/* Attach TLS to c (the SSL takes its own reference to ctx).  server_name:
 * client's expected name (NULL: no check).  0 or a PB_E* with err set. */
int pb__tls_attach(pb_conn *c, pb_tls_ctx *ctx, int is_server, const char *server_name,
                   pb_errbuf *err);
/* The socket is up: start the handshake (client: queue the ClientHello). */
void pb__tls_start(pb_conn *c);
/* Ciphertext arrived: run the handshake / decrypt into the broker.  On
 * failure c is closing. */
void pb__tls_feed(pb_conn *c, const uint8_t *data, size_t n);
/* Ciphertext to send (encrypting what the broker queued first). */
size_t pb__tls_output(pb_conn *c, const uint8_t **data);
void pb__tls_consume(pb_conn *c, size_t n);
/* Graceful close: queue close_notify after the pending output. */
void pb__tls_shutdown(pb_conn *c);
int pb__tls_handshake_done(const pb_conn *c);
const char *pb__tls_subject(const pb_conn *c);
void pb__tls_free(pb_conn *c);

/* loops.c - the per-loop mailboxes behind pb_loop_post. */
typedef struct pb_mailbox pb_mailbox;
/* Create loop's mailbox (before the loop runs, or on its thread);
 * keep_alive: its handle keeps the loop running.  NULL on ENOMEM. */
pb_mailbox *pb__mailbox_new(uv_loop_t *loop, int keep_alive);
/* On the loop's thread: refuse further posts, run the queued ones, close
 * the handle, then done(ud) and free. */
void pb__mailbox_close(pb_mailbox *m, void (*done)(void *ud), void *ud);

/* Set SIGPIPE to SIG_IGN if it is still at its default (signal.c). */
void pb__ignore_sigpipe(void);

#endif
