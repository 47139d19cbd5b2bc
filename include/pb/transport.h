/** @file
 * pb/transport.h - the libuv adapter: TCP (IPv4/IPv6) and UNIX sockets
 * carrying pb_brokers, on the server and the client side.
 *
 * This layer moves bytes between sockets and brokers, runs the brokers'
 * timers and batches writes (everything a broker queued during one loop
 * iteration goes out in one write).  It knows nothing about Jelly.
 *
 * OWNERSHIP: pb_server and pb_conn are handles owned by the library once
 * created; pb_server_close() / pb_conn_close() start closing them and they
 * free themselves when libuv is done.  The uv_loop_t is the caller's.
 * Callbacks run on the loop's thread.
 * (libuv's uv.h needs POSIX types: build with -D_GNU_SOURCE under -std=c11;
 * the pkg-config file adds it.)
 */
#ifndef PB_TRANSPORT_H
#define PB_TRANSPORT_H

#include <uv.h>
#include "pb/broker.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A listening socket and its connections (a handle; see OWNERSHIP). */
typedef struct pb_server pb_server;
/** One connection and the broker running on it (a handle). */
typedef struct pb_conn pb_conn;

/** Server settings; start from pb_server_opts_default(). */
typedef struct pb_server_opts {
    pb_broker_config broker;   /**< per-connection broker settings (is_server forced on) */
    int backlog;               /**< default 511 */
    size_t max_connections;    /**< 0: unlimited */
    int tcp_keepalive_s;       /**< 0: off */
} pb_server_opts;
/** Fill o with the defaults. */
void pb_server_opts_default(pb_server_opts *o);

/** Called for each accepted connection: return the root object to serve on
 * it (a new reference the broker takes over), or NULL to refuse it.
 * cred's pb_portal_root() is such a function. */
typedef pb_object *(*pb_root_fn)(pb_broker *b, void *ud);

/** Listen on host:port ("localhost", "127.0.0.1", "::1", "0.0.0.0"; port 0
 * picks a free one, see pb_server_port).  Returns 0 or a PB_E* with
 * err filled. */
int pb_listen_tcp(uv_loop_t *loop, const char *host, int port, const pb_server_opts *opts,
                  pb_root_fn root, void *ud, pb_server **out, pb_errbuf *err);
/** As pb_listen_tcp(), on the UNIX socket path. */
int pb_listen_unix(uv_loop_t *loop, const char *path, const pb_server_opts *opts,
                   pb_root_fn root, void *ud, pb_server **out, pb_errbuf *err);
/** The port s listens on (the one picked for port 0). */
int pb_server_port(const pb_server *s);
/** Connections open right now. */
size_t pb_server_connections(const pb_server *s);
/** Stop listening and close every connection; cb (may be NULL) runs when
 * everything is closed. */
void pb_server_close(pb_server *s, void (*cb)(void *ud), void *ud);

/** Client settings; start from pb_client_opts_default(). */
typedef struct pb_client_opts {
    pb_broker_config broker;     /**< broker settings */
    int tcp_keepalive_s;         /**< 0: off */
    unsigned connect_timeout_ms; /**< 0: 10 s */
} pb_client_opts;
/** Fill o with the defaults. */
void pb_client_opts_default(pb_client_opts *o);

/** connected(conn, 0, NULL) once the PB handshake is done and
 * pb_conn_root() is usable, or connected(NULL, code, msg) on failure
 * (then nothing else is ever called). */
typedef void (*pb_connect_fn)(pb_conn *c, int status, const char *msg, void *ud);
/** Called once when an established connection ends. */
typedef void (*pb_lost_fn)(pb_conn *c, const char *why, void *ud);

/** Connect to host:port and run the PB handshake; on_connect reports the
 * outcome, on_lost the end of an established connection.  Returns 0 or a
 * PB_E* with err filled (then no callback is ever called). */
int pb_connect_tcp(uv_loop_t *loop, const char *host, int port, const pb_client_opts *opts,
                   pb_connect_fn on_connect, pb_lost_fn on_lost, void *ud, pb_errbuf *err);
/** As pb_connect_tcp(), to the UNIX socket path. */
int pb_connect_unix(uv_loop_t *loop, const char *path, const pb_client_opts *opts,
                    pb_connect_fn on_connect, pb_lost_fn on_lost, void *ud, pb_errbuf *err);

/** The broker running on c (borrowed). */
pb_broker *pb_conn_broker(pb_conn *c);
/** The server's root object (borrowed; pb_ref_ref to keep). */
pb_ref *pb_conn_root(pb_conn *c);
/** Start closing c, like Twisted's loseConnection: what is already queued
 * still goes out (for at most 2 s), then the socket closes.  Pending calls
 * fail with PBConnectionLost and on_lost runs from the loop afterwards,
 * never from inside this call; c stays valid until on_lost has returned.
 * Safe from any callback, and more than once. */
void pb_conn_close(pb_conn *c);
/** The connection a broker runs on (NULL for brokers not made here). */
pb_conn *pb_conn_of(pb_broker *b);
/** "127.0.0.1:5555" or "unix:/path" of the peer. */
const char *pb_conn_peer(const pb_conn *c);

/** Run a loop until SIGINT/SIGTERM: installs signal handlers on loop that
 * call stop(ud) (which should close servers), then runs the loop to the
 * end.  Returns 0. */
int pb_run_until_signal(uv_loop_t *loop, void (*stop)(void *ud), void *ud);

/* --------------------------------------------------------------- reconnect */

/** A client that keeps a connection up: connects, calls on_up for every
 * (re)established connection (log in there), on_down when it is lost,
 * and retries with exponential backoff (initial_ms doubling up to max_ms,
 * with jitter) until pb_reconnector_stop().  max_retries 0: forever.
 * on_down's attempt is 0 when an established connection was lost and n
 * after the n-th failed attempt in a row (failed connects report too).
 * After max_retries failures it stops trying; pb_reconnector_stop() still
 * frees it.  No callback runs after pb_reconnector_stop(), which may be
 * called from inside on_up/on_down.  Defaults: 500 ms, 30 s. */
typedef struct pb_reconnector pb_reconnector;
/** Reconnector settings; start from pb_reconnect_opts_default(). */
typedef struct pb_reconnect_opts {
    pb_client_opts client; /**< settings of each connection */
    /** Backoff: first delay, in ms (then doubling, with jitter). */
    unsigned initial_ms, max_ms, max_retries;
} pb_reconnect_opts;
/** @var pb_reconnect_opts::max_ms
 * Backoff: the longest delay between attempts, in ms. */
/** @var pb_reconnect_opts::max_retries
 * Attempts before giving up; 0: forever. */
/** Fill o with the defaults. */
void pb_reconnect_opts_default(pb_reconnect_opts *o);
/** Start a reconnector to host:port (see pb_reconnector), storing its
 * handle in out.  Returns 0 or a PB_E* with err filled. */
int pb_reconnector_start(uv_loop_t *loop, const char *host, int port,
                         const pb_reconnect_opts *opts,
                         void (*on_up)(pb_conn *c, void *ud),
                         void (*on_down)(const char *why, unsigned attempt, void *ud),
                         void *ud, pb_reconnector **out, pb_errbuf *err);
/** Stop retrying and close the current connection; frees r. */
void pb_reconnector_stop(pb_reconnector *r);

#ifdef __cplusplus
}
#endif
#endif
