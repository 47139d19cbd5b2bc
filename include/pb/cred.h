/** @file
 * pb/cred.h - cred over PB: Portal, Realm, Checkers, Credentials, login.
 *
 * Server side: a pb_portal holds one realm and any number of checkers.
 * pb_portal_root() is a pb_root_fn (pb/transport.h) that serves, on each
 * connection, Twisted's per-connection root with login(username) ->
 * (challenge, challenger), challenger.respond(response, mind) -> avatar,
 * and loginAnonymous(mind) -> avatar, exactly as Twisted speaks them.
 * Usernames may arrive as bytes (Twisted's clients) or unicode text; both
 * mean the same UTF-8 name.  Each challenger accepts exactly one response
 * (a second one is refused with UnauthorizedLogin), and challenges are 16
 * bytes from the OS CSPRNG.
 *
 * Realm: when a login succeeds the realm's request function is called
 * with the avatar id and the client's mind (a pb_ref, or NULL when the
 * client sent None).  It answers once, now or later, with
 * pb_realm_answer(req, avatar, logout, ud) or pb_realm_fail(). The logout
 * function runs exactly once: when the client releases its avatar
 * reference (decref) or when the connection closes, whichever is first.
 *
 * PASSWORD EQUIVALENCE: PB's challenge-response is
 * MD5(MD5(password) || challenge).  Anyone who knows MD5(password) can log
 * in, so the stored MD5 digest is as secret as the password itself.  The
 * stores here keep only that digest (all the protocol needs), never the
 * plaintext; treat the store like a password file.  Without TLS, the
 * session itself is not encrypted.
 *
 * OWNERSHIP: the portal owns its checkers (pb_portal_add_checker takes
 * them) and its realm; the caller owns the portal and frees it after
 * every server using it has closed.
 */
#ifndef PB_CRED_H
#define PB_CRED_H

#include "pb/transport.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------ credentials */

/** Which kind of credentials a login presents (and a checker handles). */
typedef enum pb_cred_kind {
    PB_CRED_ANONYMOUS = 0,     /**< loginAnonymous (IAnonymous) */
    PB_CRED_MD5_CHALLENGE = 1  /**< PB's challenge/response (IUsernameMD5Password) */
} pb_cred_kind;

/** What a checker is asked to verify.  Borrowed by the checker for the
 * duration of its check call. */
typedef struct pb_credentials {
    pb_cred_kind kind;        /**< anonymous or MD5 challenge/response */
    const char *username;     /**< NUL-terminated; may contain any bytes but NUL */
    size_t username_len;      /**< bytes in username */
    const uint8_t *challenge; /**< the challenge we sent */
    size_t challenge_len;     /**< bytes in challenge */
    const uint8_t *response;  /**< what the client answered (16 bytes for Twisted) */
    size_t response_len;      /**< bytes in response */
} pb_credentials;

/** Does the response match this MD5(password) digest?  Constant time. */
int pb_cred_check_md5(const pb_credentials *c, const uint8_t md5_password[16]);
/** MD5(MD5(password) || challenge), as a client computes it. */
void pb_cred_response(const void *password, size_t n, const uint8_t *challenge, size_t clen,
                      uint8_t out[16]);
/** MD5 of p[0..n) into out. */
void pb_md5(const void *p, size_t n, uint8_t out[16]);

/* --------------------------------------------------------------- checkers */

/** A credentials checker (ICredentialsChecker): see struct pb_checker. */
typedef struct pb_checker pb_checker;
/** A checker's answer: avatar id on success (copied), or a failure. */
typedef struct pb_check_result pb_check_result;
/** Accept: the login succeeds as avatar_id (copied). */
void pb_check_ok(pb_check_result *r, const char *avatar_id);
void pb_check_fail(pb_check_result *r); /**< -> UnauthorizedLogin */

/** What a checker does; shared by every checker of one implementation. */
typedef struct pb_checker_ops {
    pb_cred_kind kind; /**< credentials it handles */
    /** Answer now (pb_check_ok/fail on r before returning) or later from the
     * loop thread; r stays valid until answered. */
    void (*check)(pb_checker *c, const pb_credentials *cred, pb_check_result *r);
    void (*destroy)(pb_checker *c); /**< free c (when its portal is freed) */
} pb_checker_ops;

/** A checker: its operations and its own data.  Custom checkers fill one in
 * (malloc'd; ops->destroy frees it) and give it to pb_portal_add_checker(). */
struct pb_checker {
    const pb_checker_ops *ops; /**< the implementation */
    void *ud;                  /**< the implementation's data */
};

/** In memory, for examples and tests; add users with pb_checker_memory_add. */
pb_checker *pb_checker_memory_new(void);
/** Add (or replace) user with password (only its MD5 is kept).  0, or
 * PB_EINVAL (not a memory checker) or PB_ENOMEM. */
int pb_checker_memory_add(pb_checker *c, const char *user, const char *password);
/** Allows anonymous logins, avatar id "anonymous" (AllowAnonymousAccess). */
pb_checker *pb_checker_anonymous_new(void);
/** A password file: lines "user:md5hex" (or "user:plain:password" for
 * tests); '#' comments.  NULL with err on unreadable/malformed file. */
pb_checker *pb_checker_file_new(const char *path, pb_errbuf *err);
/** SQLite user store (table users(name TEXT PRIMARY KEY, md5 BLOB)),
 * created if absent.  Lookups are by primary key, so it stays fast at
 * millions of users. */
pb_checker *pb_checker_sqlite_open(const char *path, pb_errbuf *err);
/** Add (or replace) one user of a SQLite checker: 0 or a PB_E*. */
int pb_checker_sqlite_add(pb_checker *c, const char *user, const char *password);
/** Add (or replace) n users in one transaction: the way to load many. */
int pb_checker_sqlite_add_many(pb_checker *c, const char *const *users,
                               const char *const *passwords, size_t n);

/* ------------------------------------------------------------------ realm */

/** One pending request to the realm for an avatar (opaque; ends when answered). */
typedef struct pb_realm_request pb_realm_request;

/** avatar_id: who logged in (borrowed).  mind: the client's mind, or NULL
 * (borrowed: pb_ref_ref() it to keep).  Answer with pb_realm_answer /
 * pb_realm_fail, now or later on the loop thread. */
typedef void (*pb_realm_fn)(pb_realm_request *req, const char *avatar_id, pb_ref *mind,
                            void *ud);

/** The avatar (refcounted object of flavor PB_AVATAR or any flavor; the
 * portal takes a reference) and the logout callback that runs exactly once
 * (may be NULL).  The answer ends the request: req is invalid afterwards.
 * If the connection was lost while the realm worked, logout runs at once
 * and PB_ECLOSED is returned. */
int pb_realm_answer(pb_realm_request *req, pb_object *avatar, void (*logout)(void *ud),
                    void *logout_ud);
/** Refuse the login with a failure of type (NULL: UnauthorizedLogin) and
 * message (NULL: empty).  Ends the request, like pb_realm_answer(). */
int pb_realm_fail(pb_realm_request *req, const char *type, const char *message);
/** Answer with whatever d fires with: a PB_OBJECT value (the avatar) or a
 * failure (sent to the client as is); logout as for pb_realm_answer.  The
 * caller keeps its own reference to d and fires it later on the loop
 * thread; if d is dropped without firing, the login fails with
 * CancelledError.  On error (PB_ENOMEM) nothing was registered and req
 * still needs an answer. */
int pb_realm_answer_deferred(pb_realm_request *req, pb_deferred *d, void (*logout)(void *ud),
                             void *logout_ud);
/** The connection the login came on. */
pb_broker *pb_realm_request_broker(const pb_realm_request *req);

/* ----------------------------------------------------------------- portal */

/** A portal: one realm and its checkers (opaque; see OWNERSHIP). */
typedef struct pb_portal pb_portal;

/** Failed logins are counted per peer address (pb_conn_peer without the
 * port; every hand-driven broker counts as one peer) in a fixed one-minute
 * window; past the limit, logins from that address are refused with
 * UnauthorizedLogin without asking the checkers.  The login timeout needs
 * the loop (pb_portal_set_loop / pb_portal_listen_tcp).  A throttled or
 * timed-out peer is not reported to pb_server_opts::log. */
typedef struct pb_portal_opts {
    unsigned login_timeout_ms;     /**< close connections not logged in by then; 0: 30000 */
    unsigned max_failures_per_min; /**< failed logins per peer address per minute; 0: 10 */
    /** Where refused logins and login timeouts are reported, one line each
     * ("login refused for \"NAME\" from ADDR: wrong password or unknown
     * user", "... too many failed logins", "closing ADDR: no login within
     * N ms").  Names are shown escaped and cut, never raw.  At most 20
     * lines per 10 s for the whole server; the next line after a quiet
     * spell says how many were left out.  NULL: standard error, prefixed
     * "pb: ".  Called on the loop thread of the connection (with several
     * loops, possibly on several threads at once); line is borrowed for
     * the call. */
    void (*log)(const char *line, void *ud);
    void *log_ud; /**< passed to log */
} pb_portal_opts;

/** A new portal for realm (called with realm_ud); opts may be NULL for the
 * defaults.  NULL when realm is NULL or out of memory. */
pb_portal *pb_portal_new(pb_realm_fn realm, void *realm_ud, const pb_portal_opts *opts);
/** Free p and its checkers, after every server using it has closed.  NULL
 * is a no-op. */
void pb_portal_free(pb_portal *p);
/** A login asks the checkers of its kind in the order they were added; the
 * first to accept wins, and if all refuse it is UnauthorizedLogin.  With
 * no checker of its kind it is UnhandledCredentials, as in Twisted. */
int pb_portal_add_checker(pb_portal *p, pb_checker *c);
/** A pb_root_fn: pass it with the portal as ud to pb_listen_tcp. */
pb_object *pb_portal_root(pb_broker *b, void *portal);
/** The loop the portal's connections run on: login timeouts need a timer,
 * so without a loop (brokers driven by hand) they are not enforced.  Set
 * once, before serving; pb_portal_listen_tcp sets it. */
void pb_portal_set_loop(pb_portal *p, uv_loop_t *loop);
/** pb_listen_tcp(loop, host, port, opts, pb_portal_root, p, out, err) with
 * the loop set for login timeouts.  opts may be NULL.
 *
 * Multi-loop servers (opts->loops > 1; see pb/transport.h): each extra
 * loop gets a per-loop copy of p (its own login timeouts; the failure
 * throttle is shared, so max_failures_per_min counts for the whole
 * server), made on that loop's
 * thread through pb_server_opts::loop_init, which the portal sets (its
 * loop_init and loop_fini must be NULL).  The realm and the checkers are
 * shared: they are called on the thread of the loop a login arrives on,
 * possibly on several threads at once, so they must be thread-safe (the
 * memory, anonymous and password-file checkers are once set up: they only
 * read; a custom or SQLite checker needs its own locking).  The avatar a
 * realm makes belongs to the loop of its login (pb_broker_loop()).  Add
 * the checkers before this call; free p after the server has closed. */
int pb_portal_listen_tcp(pb_portal *p, uv_loop_t *loop, const char *host, int port,
                         const pb_server_opts *opts, pb_server **out, pb_errbuf *err);

/* ----------------------------------------------------------------- client */

/** Log in over an established connection (PBClientFactory.login): with
 * user/password (password == NULL: anonymous).  mind may be NULL.  Returns
 * a new deferred firing with a PB_REMOTE value (the avatar) or a failure
 * (UnauthorizedLogin, ...); NULL on immediate failure. */
pb_deferred *pb_login(pb_conn *c, const char *user, const char *password, pb_object *mind);
/** Same, but sending the username as unicode text instead of bytes. */
pb_deferred *pb_login_text(pb_conn *c, const char *user, const char *password,
                           pb_object *mind);
/** Same over a bare broker (for tests without sockets). */
pb_deferred *pb_broker_login(pb_broker *b, const char *user, size_t user_len, int user_as_text,
                             const char *password, pb_object *mind);

#ifdef __cplusplus
}
#endif
#endif
