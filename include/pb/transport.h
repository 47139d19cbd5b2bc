/** @file
 * pb/transport.h - the libuv adapter: TCP (IPv4/IPv6, optionally TLS) and UNIX sockets
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
 *
 * SIGPIPE: the first listen or connect sets SIGPIPE to SIG_IGN if it is
 * still at its default, so that a peer resetting its connection makes a
 * write fail with EPIPE instead of killing the process (as Python does).
 * A disposition the application chose itself is left alone.
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

/** TLS settings (OpenSSL, TLS 1.2 and later only); start from
 * pb_tls_opts_default().  Used by pb_server_opts::tls and
 * pb_client_opts::tls.  The strings are borrowed (see those fields).
 *
 * Server: cert_file + key_file are required; with verify_peer the server
 * asks for a client certificate and verifies it against ca_file when one
 * is sent; with require_client_cert a client without a valid certificate
 * fails the handshake.  The verified subject is pb_conn_peer_subject(),
 * known before the root function runs, so it can serve as a credential.
 *
 * Client: with verify_peer (the default) the server certificate must chain
 * to ca_file (NULL: the system's CAs) and match server_name; cert_file +
 * key_file present a client certificate.
 *
 * Handshake failures close the connection with OpenSSL's reason (e.g.
 * "TLS handshake with 127.0.0.1:5 failed: certificate verify failed
 * (unable to get local issuer certificate)"): PB_EAUTH when a certificate
 * was refused, PB_EPROTO otherwise.  Closing sends TLS close_notify. */
typedef struct pb_tls_opts {
    const char *cert_file;   /**< PEM certificate (chain) presented to the peer; NULL: none */
    const char *key_file;    /**< PEM private key of cert_file; NULL: read from cert_file */
    const char *ca_file;     /**< PEM CA certificates that verify the peer; NULL: system CAs */
    int verify_peer;         /**< verify the peer's certificate (default 1; see above) */
    int require_client_cert; /**< server: refuse clients without a valid certificate */
    /** Client: SNI and the name (or IP address) the server certificate must
     * carry.  NULL: the host given to pb_connect_tcp; "": no name check
     * (the chain is still verified). */
    const char *server_name;
    /** Server: TLS plus PB handshake deadline per connection, in ms;
     * 0: 10 s.  (Clients use pb_client_opts::connect_timeout_ms.) */
    unsigned handshake_timeout_ms;
} pb_tls_opts;
/** Fill o with the defaults (no files, verify_peer on). */
void pb_tls_opts_default(pb_tls_opts *o);

/** Server settings; start from pb_server_opts_default(). */
typedef struct pb_server_opts {
    pb_broker_config broker;   /**< per-connection broker settings (is_server forced on) */
    int backlog;               /**< default 511 */
    size_t max_connections;    /**< 0: unlimited (the default); extra ones are accepted and closed */
    int tcp_keepalive_s;       /**< 0: off */
    /** TLS (borrowed, read only during the pb_listen_* call, which loads
     * the files): NULL serves plain TCP.  See pb_tls_opts. */
    const struct pb_tls_opts *tls;
    /** Open connections allowed from one source address (IP, any port);
     * 0: unlimited (the default).  Extra ones are accepted and closed at
     * once; other addresses are not affected. */
    size_t max_connections_per_addr;
    /** Close a connection when no bytes went either way for this long, in
     * ms; 0: never (the default).  The PB-level keepalive is the
     * broker's idle_ping_ms. */
    unsigned idle_timeout_ms;
    /** Where the server reports limit hits (max_connections,
     * max_connections_per_addr, idle_timeout_ms) and peers the broker
     * drops (a protocol violation or a broker limit: message size, depth,
     * items, arena bytes, repeated max_refs violations): one line, no
     * newline.  Rate-limited: the first hit of each kind is reported,
     * later ones of that kind at most once per 10 s, with the count
     * suppressed meanwhile.  NULL: written to stderr as "pb: MSG".  Limits
     * answered with an error while the connection stays (max_inflight,
     * a max_refs violation) are not reported here, and refused logins
     * go to pb_portal_opts::log; the broker's diagnostics (one line per
     * event) go to stderr only when the environment sets PB_LOG.  msg is
     * borrowed for the call. */
    void (*log)(const char *msg, void *ud);
    void *log_ud;              /**< passed to log */
    /** Event loops serving a TCP listener (multi-core; see MULTI-LOOP
     * SERVERS below).  0 or 1: the caller's loop only (the default).  N > 1:
     * pb_listen_tcp() starts N-1 threads, each running its own uv_loop_t
     * with its own listening socket on the same address (SO_REUSEPORT: the
     * kernel spreads new connections over the N loops).  Not for UNIX
     * sockets (PB_EINVAL). */
    unsigned loops;
    /** Multi-loop servers: called once on every loop's own thread before
     * that loop accepts (index 0 is the caller's loop, called from inside
     * pb_listen_tcp(); 1..N-1 the extra loops); what it returns is the ud
     * given to the root function for connections of that loop.  NULL: every
     * loop passes the listen call's ud (the root function must then be safe
     * to call from several threads at once). */
    void *(*loop_init)(uv_loop_t *loop, unsigned index, void *ud);
    /** Multi-loop servers: called on each loop's thread once the server is
     * closed on that loop (its connections are gone), with what loop_init
     * returned (or ud); close the handles the application opened on that
     * loop here, or the loop's thread cannot end.  NULL: nothing. */
    void (*loop_fini)(uv_loop_t *loop, unsigned index, void *loop_ud, void *ud);
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
 * everything is closed.  Multi-loop servers: also stops the extra loops
 * (each closes its own connections and runs loop_fini) and joins their
 * threads; cb runs on the caller's loop once all of them have ended.
 * Call it on the loop given to pb_listen_tcp(). */
void pb_server_close(pb_server *s, void (*cb)(void *ud), void *ud);

/* ---------------------------------------------------- multi-loop servers */

/** @name Multi-loop servers
 * With pb_server_opts::loops = N > 1 a TCP server runs N event loops, one
 * per thread: the caller's loop (index 0) plus N-1 loops the library
 * starts.  THREAD RULES:
 *  - Everything of one connection (its pb_conn, broker, pb_ref handles,
 *    the objects it serves, the arenas and values of its calls) belongs to
 *    the loop that accepted it and may only be touched on that loop's
 *    thread: pb_conn_loop() / pb_broker_loop() tell which loop that is.
 *    The root function, the portal's realm and checkers, the server's log
 *    and every broker callback run on that thread.
 *  - pb_object reference counts are not atomic: never share a pb_object,
 *    pb_ref or pb_value between loops.  To reach an object living on
 *    another loop, pb_loop_post() a function to that loop and let it act
 *    there; carry data across in memory of your own (e.g. pb_value_copy()
 *    into a pb_arena_new() arena the receiving side frees).
 *  - pb_loop_post() is the only call that may be made from any thread.
 *    Posts are run in the order they were made per (sender, target) pair
 *    (each loop has one FIFO), so e.g. a chat group living on one loop
 *    that posts each message to its members' loops delivers every message
 *    to every member in order.
 *  - pb_server_port(), pb_server_connections(), pb_server_loops(),
 *    pb_server_loop() and pb_server_close() are for the caller's loop.
 *  - max_connections and max_connections_per_addr count the connections
 *    of all loops together (one table per server, under a mutex).
 * @{ */

/** Number of event loops of s (1 for single-loop servers). */
unsigned pb_server_loops(const pb_server *s);
/** Loop index of s (0: the caller's; NULL past the end).  The loop
 * belongs to its thread: use it only as a pb_loop_post() target or to
 * compare with pb_conn_loop(). */
uv_loop_t *pb_server_loop(const pb_server *s, unsigned index);
/** Run fn(ud) on the thread of loop target, soon (from that loop's
 * callbacks).  Thread-safe; callable from any thread, including target's
 * own.  Calls are run in the order they were posted to target (one FIFO
 * per loop).  target must be a loop of a running multi-loop server; once
 * it is stopping (pb_server_close()) this returns PB_ECLOSED and fn is
 * never called, so the caller keeps ownership of ud.  Posts accepted
 * before are still run while the loop closes (connections already gone).
 * Returns 0, PB_ECLOSED or PB_ENOMEM. */
int pb_loop_post(uv_loop_t *target, void (*fn)(void *ud), void *ud);
/** @} */

/** Client settings; start from pb_client_opts_default(). */
typedef struct pb_client_opts {
    pb_broker_config broker;     /**< broker settings */
    int tcp_keepalive_s;         /**< 0: off */
    unsigned connect_timeout_ms; /**< 0: 10 s; with TLS it covers the TLS handshake too */
    /** TLS (borrowed: must stay valid while connecting, and for a
     * reconnector until it stops; files are loaded on every attempt):
     * NULL: plain TCP.  Not for UNIX sockets. */
    const struct pb_tls_opts *tls;
    /** Local IP address to connect from ("127.0.0.2"; port 0), NULL: any. */
    const char *bind_addr;
    /** As pb_server_opts::idle_timeout_ms; 0: never (the default). */
    unsigned idle_timeout_ms;
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
/** The loop c runs on (whose thread alone may touch c and its broker). */
uv_loop_t *pb_conn_loop(const pb_conn *c);
/** The loop the broker b runs on (NULL for brokers not made here). */
uv_loop_t *pb_broker_loop(pb_broker *b);
/** "127.0.0.1:5555" or "unix:/path" of the peer. */
const char *pb_conn_peer(const pb_conn *c);
/** The subject of the peer's verified TLS certificate in RFC 2253 form
 * ("CN=alice,O=Example"), or NULL (plain TCP, handshake not done, or no
 * certificate).  Borrowed: valid while c is. */
const char *pb_conn_peer_subject(const pb_conn *c);
/** Non-zero when c runs over TLS. */
int pb_conn_is_tls(const pb_conn *c);

/** Run a loop until SIGINT/SIGTERM: installs signal handlers on loop that
 * call stop(ud) (which should close servers), then runs the loop to the
 * end.  Returns 0.  For a multi-loop server pass its caller's loop (index
 * 0): closing the server there stops the other loops too, and this
 * returns once their threads have ended. */
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
