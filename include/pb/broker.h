/** @file
 * pb/broker.h - Perspective Broker itself, sans I/O.
 *
 * A pb_broker is one PB connection's protocol engine, like an nghttp2
 * session: bytes go in (pb_broker_feed), bytes come out
 * (pb_broker_output / pb_broker_output_consume), time goes in
 * (pb_broker_tick), and everything else is callbacks.  It never touches a
 * socket, a clock or a thread, so it can be tested and fuzzed with
 * scripted bytes and driven by any event loop (pb/transport.h is the libuv
 * one).
 *
 * OBJECTS.  Local objects a peer may call are pb_objects: the application
 * embeds a pb_object as the FIRST member of its own struct and gives it a
 * pb_class (a method table).  The flavour decides how calls dispatch:
 *   PB_REFERENCEABLE  remote_NAME   handler(call, self, args)
 *   PB_AVATAR         perspective_NAME, self is the avatar; each login
 *                     exports it under a fresh id (cred wraps it)
 *   PB_VIEWABLE       view_NAME     view(call, self, avatar, args): the
 *                     calling avatar comes from the server, never the wire
 * Objects are reference counted (pb_object_ref/unref); a broker holds a
 * reference to every object it has exported while the peer holds it.  The
 * class's destroy runs when the last reference goes.
 *
 * REFERENCES.  A pb_ref is a RemoteReference: an object on the peer.  It
 * belongs to the connection it arrived on; passing it to another
 * connection fails with PB_ETHIRDPARTY.  Dropping the last reference sends
 * decref to the owner.
 *
 * THREADS: a broker, its objects' dispatch and its refs belong to one
 * event-loop thread.
 */
#ifndef PB_BROKER_H
#define PB_BROKER_H

#include "pb/deferred.h"
#include "pb/jelly.h"

#ifdef __cplusplus
extern "C" {
#endif

/** One PB connection's protocol engine (opaque). */
typedef struct pb_broker pb_broker;
/** One incoming call being handled (opaque; see pb_call_defer()). */
typedef struct pb_call pb_call;
/** A method table and flavour shared by objects; see struct pb_class. */
typedef struct pb_class pb_class;

/* -------------------------------------------------------------- arguments */

/** The arguments of an incoming call, already checked against the
 * method's signature.  Borrowed: valid during the handler call (use
 * pb_call_defer() + pb_value_copy() to keep them). */
typedef struct pb_args {
    pb_value **v;       /**< normalised parameters: positional then keyword, per signature */
    size_t n;           /**< number of declared parameters (absent optionals are NULL) */
    pb_value *args;     /**< the raw positional tuple */
    pb_value *kwargs;   /**< the raw keyword dict */
} pb_args;

/** Parameter i or NULL if it was optional and not given. */
static inline pb_value *pb_arg(const pb_args *a, size_t i) { return i < a->n ? a->v[i] : NULL; }
/** Text of parameter i (PB_STR or PB_BYTES); def if absent. */
const char *pb_arg_str(const pb_args *a, size_t i, const char *def);
/** Parameter i as an int64_t; def if absent. */
int64_t pb_arg_int(const pb_args *a, size_t i, int64_t def);
/** Parameter i as a truth value; def if absent. */
int pb_arg_bool(const pb_args *a, size_t i, int def);
/** Parameter i as a double; def if absent. */
double pb_arg_float(const pb_args *a, size_t i, double def);
/** Remote reference passed as parameter i (borrowed; pb_ref_ref() to keep). */
pb_ref *pb_arg_ref(const pb_args *a, size_t i);
/** Local object passed back to us as parameter i (borrowed). */
pb_object *pb_arg_object(const pb_args *a, size_t i);

/*
 * Signatures.  One letter per parameter, checked before the handler runs;
 * a mismatch answers builtins.TypeError and the handler never runs.
 *   s  text: str, or bytes that are valid UTF-8     y  bytes
 *   i  int (64-bit)    I  int of any size            f  float (int accepted)
 *   b  bool            l  list    t  tuple   d  dict  n  None
 *   r  a remote reference (the caller's object)      o  a local object sent back
 *   v  any value
 *   ?X None or X      |  the rest are optional      *  extra positionals allowed
 *   :name1,name2,...  parameter names, so callers may pass them by keyword
 * Example: "s|b:groupname,allowMattress".  NULL signature: anything goes,
 * pb_args.v holds the positionals.
 */

/* ---------------------------------------------------------------- objects */

/** How calls to an object dispatch (see OBJECTS in the file comment). */
typedef enum pb_flavor {
    PB_REFERENCEABLE = 0, /**< remote_ */
    PB_AVATAR = 1,        /**< perspective_ */
    PB_VIEWABLE = 2,      /**< view_ */
    PB_CACHEABLE = 3,     /**< a pb_cacheable: sent by cache, never called (see CACHES) */
    PB_REMOTE_CACHE = 4   /**< a pb_remote_cache: observe_, called by the cache's owner */
} pb_flavor;

/** Handlers return 0 after answering (pb_call_return...), deferring
 * (pb_call_defer) or failing (pb_call_fail...).  Returning a PB_E* code
 * without answering answers a failure built from that code. */
typedef int (*pb_method_fn)(pb_call *call, void *self, const pb_args *args);
/** A view_ handler: as pb_method_fn, plus the calling avatar. */
typedef int (*pb_view_fn)(pb_call *call, void *self, void *avatar, const pb_args *args);

/** One method of a pb_class. */
typedef struct pb_method {
    const char *name;      /**< without the remote_/perspective_/view_ prefix; "*" takes
                                every name not listed (pb_call_method() tells which) */
    const char *signature; /**< see above; NULL: unchecked */
    pb_method_fn fn;       /**< for PB_REFERENCEABLE and PB_AVATAR */
    pb_view_fn view;       /**< for PB_VIEWABLE */
} pb_method;

/** What objects of one kind can do: their flavour and methods. */
struct pb_class {
    const char *name;           /**< for error texts: "'User' object has no attribute ..." */
    pb_flavor flavor;           /**< how calls dispatch */
    const pb_method *methods;   /**< terminated by an entry with name NULL */
    void (*destroy)(pb_object *o); /**< last reference gone; may be NULL */
};

/** A local object a peer may call; embedded as the first member of the
 * application's struct. */
struct pb_object {
    pb_handle h;                /**< refcount; first member */
    const pb_class *cls;        /**< its class */
    void *impl;                 /**< internal */
};

/** Initialise an embedded object with one reference, owned by the caller. */
void pb_object_init(pb_object *o, const pb_class *cls);
/** Take one more reference to o; returns o. */
pb_object *pb_object_ref(pb_object *o);
/** Drop one reference; the last one runs the class's destroy. */
void pb_object_unref(pb_object *o);
/** A PB_OBJECT value for o in arena a (arena holds a reference). */
pb_value *pb_object_value(pb_arena *a, pb_object *o);

/* ---------------------------------------------------------- incoming call */

pb_arena *pb_call_arena(pb_call *call);   /**< build answers here */
/** The broker the call came in on. */
pb_broker *pb_call_broker(pb_call *call);
/** The method name, without its remote_/perspective_/view_ prefix. */
const char *pb_call_method(const pb_call *call);
/** The avatar the call runs under (the avatar for perspective_ calls, the
 * viewpoint's avatar for view_ calls), or NULL. */
void *pb_call_avatar(const pb_call *call);

/** Answer.  Exactly one answer per call; later ones return PB_ESTATE.
 * v is borrowed (it is encoded at once). */
int pb_call_return(pb_call *call, const pb_value *v);
/** Answer None. */
int pb_call_return_none(pb_call *call);
/** Answer with a reference to a local object (for a PB_VIEWABLE, a
 * viewpoint bound to the call's avatar). */
int pb_call_return_object(pb_call *call, pb_object *o);
/** Answer with a failure of the given type and message.  Types named
 * "twisted.spread.pb.Error" (or any type whose parents include it) are
 * "expected" and not logged, as in Twisted. */
int pb_call_fail(pb_call *call, const char *type, const char *message);
/** Answer with the failure f (copied). */
int pb_call_fail_failure(pb_call *call, const pb_failure *f);
/** As pb_call_fail(), for failures that Twisted would have carried through
 * Deferred callbacks before sending (a portal's login failures): the
 * CopyableFailure then carries the extra `pickled` key (pb_failure.pickled,
 * SPEC §5.5), so the bytes match Twisted 22.4's. */
int pb_call_fail_pickled(pb_call *call, const char *type, const char *message);
/** Answer later: keeps the call alive (call now also holds the args) until
 * one pb_call_return/fail.  If the connection closes first (or the broker
 * is freed), the answer is dropped safely and returns PB_ECLOSED.  Once a
 * deferred call is answered the pb_call pointer is no longer valid. */
int pb_call_defer(pb_call *call);
/** Answer with whatever d fires with. */
int pb_call_return_deferred(pb_call *call, pb_deferred *d);

/* ------------------------------------------------------------ references */

/** Take one more reference to r; returns r. */
pb_ref *pb_ref_ref(pb_ref *r);
/** Drop a reference; the last one sends decref to the owner. */
void pb_ref_unref(pb_ref *r);
/** The broker (connection) r belongs to. */
pb_broker *pb_ref_broker(const pb_ref *r);
/** A PB_REMOTE value for r in arena a (arena holds a reference). */
pb_value *pb_ref_value(pb_arena *a, pb_ref *r);
/** Avatar-context attached to a ref that arrived as an argument to one of
 * our avatar's methods (used for viewpoints); NULL otherwise. */
void *pb_ref_avatar(const pb_ref *r);

/** Options of one outgoing call; NULL means all zero. */
typedef struct pb_call_opts {
    unsigned timeout_ms; /**< 0: none; on expiry the deferred fails with
                            PB_FAILURE_TIMEOUT and a late answer is dropped */
    int no_answer;       /**< send pbanswer=0; returns no deferred */
} pb_call_opts;

/** Call method on the remote object.  args: a PB_TUPLE (or NULL for ()),
 * kwargs: a PB_DICT with text keys (or NULL); both borrowed (encoded at
 * once).  Returns a new deferred (caller unrefs), or NULL on failure with
 * *err set: PB_ECLOSED, PB_ETHIRDPARTY (an argument holds a reference from
 * another connection), PB_EUNSENDABLE, PB_ELIMIT (too many calls
 * outstanding), PB_ENOMEM. */
pb_deferred *pb_ref_call(pb_ref *r, const char *method, const pb_value *args,
                         const pb_value *kwargs, const pb_call_opts *opts, pb_errbuf *err);
/** Convenience: arguments from a format, one letter each:
 *   s const char* (sent as text)  y const char*, size_t (bytes)
 *   i int64_t  b int  f double  n (None)  o pb_object*  r pb_ref*  v pb_value*
 * Returns a new deferred or NULL (see pb_ref_call). */
pb_deferred *pb_ref_callf(pb_ref *r, const char *method, const char *fmt, ...);
/** Fire-and-forget (pbanswer=0): 0 or a PB_E* code. */
int pb_ref_send(pb_ref *r, const char *method, const pb_value *args, const pb_value *kwargs);

/** Encode-once fan-out: pb_ref_send(refs[i], method, args, kwargs) for
 * every i, but when args and kwargs hold no reference or local object
 * (whose wire form differs per connection) they are jellied once per
 * dialect and the same bytes are appended after each connection's own
 * (message REQ OBJ NAME 0 ...) header; with references it falls back to
 * one pb_ref_send per ref.  The bytes each connection gets are exactly
 * what pb_ref_send would have queued.  refs may belong to different
 * connections of the same thread; NULL entries fail with PB_EINVAL.
 * Returns 0 when every send succeeded, else the first PB_E* code (the
 * others were still attempted); *sent (may be NULL) gets the number sent. */
int pb_ref_send_many(pb_ref *const *refs, size_t n, const char *method, const pb_value *args,
                     const pb_value *kwargs, size_t *sent);

/** Disconnect notification for a reference's connection. */
typedef void (*pb_disconnect_fn)(pb_ref *r, void *ud);
/** Call fn(r, ud) once when r's connection is lost: 0 or a PB_E*. */
int pb_ref_notify_on_disconnect(pb_ref *r, pb_disconnect_fn fn, void *ud);
/** Cancel a pb_ref_notify_on_disconnect() with the same fn and ud. */
int pb_ref_dont_notify_on_disconnect(pb_ref *r, pb_disconnect_fn fn, void *ud);

/* ---------------------------------------------------------------- broker */

/** Broker settings; start from pb_broker_config_default(). */
typedef struct pb_broker_config {
    int is_server;                /**< accepting side: offers dialects first */
    int unsafe_tracebacks;        /**< send tracebacks in failures (Twisted's option) */
    /** Exported objects per connection; 0: the default, 1024 (Twisted's).
     * Past it, a call or answer that would export one more fails with
     * pb.Error "Maximum PB reference count exceeded." (the object is not
     * kept); the fourth such violation on a connection closes it, as in
     * Twisted.  Per connection: other peers are not affected. */
    size_t max_refs;
    /** Our outstanding calls (awaiting an answer); 0: the default, 10000.
     * Past it pb_ref_call() fails with PB_ELIMIT and sends nothing;
     * fire-and-forget sends are not counted. */
    size_t max_pending_calls;
    /** The peer's calls we have not answered yet (deferred handlers); 0:
     * the default, 10000.  Past it a call is answered at once with pb.Error
     * "Too many calls in flight (limit N)" without running (a pbanswer=0
     * call is dropped); the connection stays up. */
    size_t max_inflight;
    /** Bytes queued for the peer before we stop reading from it (and
     * pb_ref_call() fails with PB_ELIMIT); over twice this the connection
     * is closed; 0: the default, 16 MiB. */
    size_t max_output;
    /** Decoder limits on what the peer sends (see pb_banana_limits for
     * each default; zero fields take the defaults).  A message over any of
     * them is a protocol violation: the connection is closed. */
    pb_banana_limits limits;
    const pb_jelly_registry *registry; /**< classes peers may send us (Copyable); may be NULL */
    unsigned idle_ping_ms;        /**< 0: off.  When nothing arrived for this long, sends a call
                                     to a non-existent object (the peer answers "Invalid
                                     Object ID", which Twisted does not log); no answer
                                     within idle_ping_ms more closes with PB_ETIMEOUT */
} pb_broker_config;

/** Fill c with the defaults (client side, Twisted's limits). */
void pb_broker_config_default(pb_broker_config *c);

/** What the broker asks of its transport and application. */
typedef struct pb_broker_callbacks {
    void *ud; /**< passed to every callback */
    /** New bytes are waiting in pb_broker_output(): schedule a write. */
    void (*output_ready)(pb_broker *b, void *ud);
    /** The broker wants the connection closed (protocol violation, limit);
     * code is a PB_E* and msg says why.  The transport closes and later
     * calls pb_broker_connection_lost(). */
    void (*close)(pb_broker *b, int code, const char *msg, void *ud);
    /** Handshake done (dialect + version): the root reference is usable. */
    void (*connected)(pb_broker *b, void *ud);
    /** Diagnostics (one line, no newline); may be NULL. */
    void (*log)(pb_broker *b, const char *msg, void *ud);
    /** The current time in milliseconds, on the same clock as
     * pb_broker_tick(); may be NULL.  When set, call deadlines
     * (pb_call_opts.timeout_ms) and the idle timer start from it rather
     * than from the last tick, which may be stale after an idle spell. */
    uint64_t (*now_ms)(void *ud);
} pb_broker_callbacks;

/** root: the object served under the name "root" (server side; may be
 * NULL).  The broker takes a reference to it.  cfg NULL: defaults.
 * A server broker queues its dialect offer at once: output_ready is NOT
 * called from pb_broker_new, so check pb_broker_output() after creating
 * it.  Callbacks may call pb_broker_free(): the broker is then freed when
 * the outermost pb_broker_* call returns. */
pb_broker *pb_broker_new(const pb_broker_config *cfg, const pb_broker_callbacks *cb,
                         pb_object *root);
/** Replace the object served as "root" (NULL: none); the broker takes a
 * reference.  For root functions that need the broker first. */
int pb_broker_set_root(pb_broker *b, pb_object *root);
/** Fails every pending call with PBConnectionLost if not done already,
 * releases every table entry, frees the broker. */
void pb_broker_free(pb_broker *b);

/** Feed received bytes.  Returns 0, or a PB_E* code when the stream was
 * fatal (the close callback has then been called; feed no more). */
int pb_broker_feed(pb_broker *b, const uint8_t *data, size_t len);
/** Pending output: *data points at n bytes (n == 0: nothing to send). */
size_t pb_broker_output(pb_broker *b, const uint8_t **data);
/** The first n bytes of pb_broker_output() have been sent. */
void pb_broker_output_consume(pb_broker *b, size_t n);
/** True while output is over max_output: stop reading from this peer. */
int pb_broker_want_read_paused(const pb_broker *b);

/** Time, in milliseconds from any fixed origin.  tick fires expired call
 * timeouts and idle pings; next_deadline returns the next time tick wants
 * to run, or UINT64_MAX. */
void pb_broker_tick(pb_broker *b, uint64_t now_ms);
/** When pb_broker_tick() wants to run next, or UINT64_MAX. */
uint64_t pb_broker_next_deadline(const pb_broker *b);

/** The connection is gone: fail every pending call (PBConnectionLost),
 * run disconnect notifications and per-connection cleanups (cred logouts)
 * exactly once. */
void pb_broker_connection_lost(pb_broker *b, const char *why);
/** True from the end of the handshake until the connection is lost. */
int pb_broker_is_connected(const pb_broker *b);

/** The peer's root object (client side): getRootObject.  Borrowed ref
 * owned by the broker; pb_ref_ref() it to keep.  NULL before connected. */
pb_ref *pb_broker_root(pb_broker *b);

/** Per-connection cleanups (cred uses this for logout): run once on
 * connection loss or pb_broker_free.  Returns an id for cancel. */
uint64_t pb_broker_on_lost(pb_broker *b, void (*fn)(void *ud), void *ud);
/** Cancel the cleanup registered as id by pb_broker_on_lost(). */
void pb_broker_cancel_on_lost(pb_broker *b, uint64_t id);

/** Export a per-login avatar wrapper (used by cred): sends o under a fresh
 * id; when the peer decrefs that id (or the connection is lost, or the
 * broker is freed) on_release runs exactly once.  Returns a PB_OBJECT
 * value (in arena a) to answer with; calls on it run the avatar's
 * perspective_ methods.  NULL (out of memory, or the connection is
 * already closed): on_release will never run. */
pb_value *pb_broker_export_avatar(pb_broker *b, pb_arena *a, pb_object *avatar,
                                  void (*on_release)(void *ud), void *ud);

/** Application data. */
void pb_broker_set_userdata(pb_broker *b, void *ud);
/** The application data set with pb_broker_set_userdata(), or NULL. */
void *pb_broker_userdata(const pb_broker *b);
/** Why the broker last failed or closed ("" if it has not); borrowed. */
const char *pb_broker_errmsg(const pb_broker *b);

/** Counters for tests and benchmarks. */
typedef struct pb_broker_stats {
    uint64_t messages_in, messages_out, bytes_in, bytes_out;
    size_t exported, pending_calls, inflight;
} pb_broker_stats;
/** @var pb_broker_stats::messages_in
 * top-level messages received */
/** @var pb_broker_stats::messages_out
 * top-level messages sent */
/** @var pb_broker_stats::bytes_in
 * bytes received */
/** @var pb_broker_stats::bytes_out
 * bytes sent */
/** @var pb_broker_stats::exported
 * local objects the peer holds references to */
/** @var pb_broker_stats::pending_calls
 * our calls awaiting an answer */
/** @var pb_broker_stats::inflight
 * the peer's calls not answered yet */
/** Copy the broker's counters into s. */
void pb_broker_get_stats(const pb_broker *b, pb_broker_stats *s);


/* ---------------------------------------------------------------- caches */

/*
 * CACHES (Twisted's pb.Cacheable / pb.RemoteCache, SPEC §4.4).
 *
 * Owner side: a pb_cacheable is a pb_object (embed it FIRST in the
 * application's struct) whose class is a pb_cacheable_class.  Sending it
 * (pb_cacheable_value() in any argument or answer) registers it on that
 * connection under a fresh LUID (shared with referenceables) and sends
 * (TAG LUID STATE), STATE being what get_state returns; it is given a
 * pb_cache_observer, the owner's handle on that one remote cache, through
 * which updates go out as cachemessage (pb_cache_observer_call()).  Later
 * sends on the same connection are (cached LUID).  When the peer has
 * dropped every copy (decache), stopped_observing runs with the same
 * observer and (uncache LUID) goes out; the same happens, minus the
 * uncache, when the connection is lost.  At most max_refs caches per
 * connection ("Maximum PB cache count exceeded.").
 *
 * Receiving side: register a pb_remote_cache_class for the sender's tag
 * in the pb_jelly_registry given as pb_broker_config.registry
 * (pb_remote_cache_register()).  The broker then creates one
 * pb_remote_cache per LUID (the class's size bytes, zeroed), gives it the
 * state (set_state) and delivers it as a PB_OBJECT value
 * (pb_value_remote_cache(), pb_arg_cache()).  References to its pb_object
 * are the copies Twisted counts: when the last one is dropped, one
 * (decache LUID) per copy received goes out; the object stays known until
 * the owner's uncache, and is freed once it is both uncached and
 * unreferenced.  cachemessage calls dispatch to the class's methods as
 * observe_NAME (self: the pb_remote_cache).  Sending a pb_remote_cache back
 * to its owner is (lcache LUID); the owner sees its own pb_cacheable.
 *
 * Limitation: a cacheable's STATE is jellied on its own, so (reference N)
 * ids inside it restart at 1; and the same cacheable twice in one message
 * goes out as (TAG LUID STATE) then (cached LUID) rather than Twisted's
 * (dereference N).  Both are read correctly by Twisted.
 */

/** A Cacheable's handle on one remote cache (Twisted's RemoteCacheObserver):
 * one per (cacheable, connection) while the peer holds the cache.
 * Reference counted; see pb_cache_observer_ref(). */
typedef struct pb_cache_observer pb_cache_observer;
/** A local object sent by cache; see struct pb_cacheable. */
typedef struct pb_cacheable pb_cacheable;
/** A received cache of a peer's Cacheable; see struct pb_remote_cache. */
typedef struct pb_remote_cache pb_remote_cache;

/** What a kind of Cacheable does when it is sent. */
typedef struct pb_cacheable_class {
    /** flavor must be PB_CACHEABLE; name is the type tag sent (Twisted:
     * the Cacheable's module.Class, e.g. "cache_classes.MasterDuckPond");
     * methods are unused; destroy runs when the last reference goes. */
    pb_class base;
    /** getStateToCacheAndObserveFor: the state to send, built in arena a
     * (NULL: the send fails).  avatar: the perspective the message is
     * serialised under (or NULL).  Keep the observer (pb_cache_observer_ref)
     * to send updates, and drop it in stopped_observing (it holds a
     * reference to the cacheable).  Runs in the middle of encoding a message: it must
     * not send anything on this broker itself.  NULL: the state is None. */
    pb_value *(*get_state)(pb_cacheable *self, pb_arena *a, void *avatar,
                           pb_cache_observer *observer);
    /** stoppedObserving: the peer dropped the cache (or the connection
     * went); observer is the one get_state was given.  May be NULL. */
    void (*stopped_observing)(pb_cacheable *self, void *avatar, pb_cache_observer *observer);
} pb_cacheable_class;

/** A local object sent by cache; embedded as the FIRST member of the
 * application's struct.  Its references are pb_object references. */
struct pb_cacheable {
    pb_object obj; /**< first; its cls is &pb_cacheable_class.base */
};

/** Initialise an embedded cacheable with one reference, owned by the caller. */
void pb_cacheable_init(pb_cacheable *c, const pb_cacheable_class *cls);
/** A PB_OBJECT value for c in arena a (arena holds a reference): send it
 * as an argument or answer to send the cache. */
pb_value *pb_cacheable_value(pb_arena *a, pb_cacheable *c);
/** The cacheable a value stands for (a PB_OBJECT of a pb_cacheable, e.g.
 * received back as (lcache LUID)), or NULL. */
pb_cacheable *pb_value_cacheable(const pb_value *v);

/** Take one more reference to o; returns o. */
pb_cache_observer *pb_cache_observer_ref(pb_cache_observer *o);
/** Drop a reference to o. */
void pb_cache_observer_unref(pb_cache_observer *o);
/** True while the peer still holds the cache (calls can be sent). */
int pb_cache_observer_active(const pb_cache_observer *o);
/** The connection o's cache lives on, or NULL once it is gone. */
pb_broker *pb_cache_observer_broker(const pb_cache_observer *o);
/** The cacheable o observes for. */
pb_cacheable *pb_cache_observer_cacheable(const pb_cache_observer *o);
/** The perspective the cache was sent under (or NULL). */
void *pb_cache_observer_avatar(const pb_cache_observer *o);
/** observer.callRemote(method, *args, **kwargs): sends (cachemessage REQ
 * LUID NAME 1 ARGS KW), dispatched to observe_NAME on the peer's cache.
 * args/kwargs as pb_ref_call().  Returns a new deferred, or NULL with *err
 * set: PB_ESTATE (the peer no longer holds the cache), PB_ECLOSED, or what
 * pb_ref_call() reports. */
pb_deferred *pb_cache_observer_call(pb_cache_observer *o, const char *method,
                                    const pb_value *args, const pb_value *kwargs,
                                    pb_errbuf *err);
/** Convenience: arguments from a format, as pb_ref_callf(). */
pb_deferred *pb_cache_observer_callf(pb_cache_observer *o, const char *method,
                                     const char *fmt, ...);

/** What a kind of received cache is (Twisted's RemoteCache subclass). */
typedef struct pb_remote_cache_class {
    /** flavor must be PB_REMOTE_CACHE; name is the class name used in
     * error texts; methods are the observe_NAME handlers (without the
     * prefix; self is the pb_remote_cache); destroy, if set, releases what
     * the application struct holds (the broker frees the memory). */
    pb_class base;
    /** The sender's type tag this class stands for ("cache_classes.MasterDuckPond"). */
    const char *tag;
    /** Bytes the broker allocates (zeroed) per cache: the size of the
     * application struct that starts with pb_remote_cache (0: just that). */
    size_t size;
    /** setCopyableState: called once with the state (borrowed: copy what
     * is kept); a PB_E* code refuses the cache (the message carrying it
     * fails).  NULL: a copy is kept, see pb_remote_cache_state(). */
    int (*set_state)(pb_remote_cache *self, const pb_value *state);
} pb_remote_cache_class;

/** A cache of a peer's Cacheable; the FIRST member of the application's
 * struct (allocated by the broker, see pb_remote_cache_class.size). */
struct pb_remote_cache {
    pb_object obj;                    /**< first; references are copies (see CACHES) */
    const pb_remote_cache_class *cls; /**< its class */
};

/** Allow caches tagged cls->tag on every broker using registry r:
 * 0, PB_EINVAL or PB_ENOMEM.  cls must outlive r. */
int pb_remote_cache_register(pb_jelly_registry *r, const pb_remote_cache_class *cls);
/** The cache a value stands for, or NULL (borrowed: pb_object_ref(&c->obj)
 * to keep it). */
pb_remote_cache *pb_value_remote_cache(const pb_value *v);
/** The cache passed as parameter i, or NULL (borrowed). */
pb_remote_cache *pb_arg_cache(const pb_args *a, size_t i);
/** The state kept for a class without set_state (NULL otherwise); it
 * lives as long as the cache. */
pb_value *pb_remote_cache_state(const pb_remote_cache *c);
/** The connection c arrived on, or NULL once the owner uncached it or the
 * connection is gone. */
pb_broker *pb_remote_cache_broker(const pb_remote_cache *c);
/** The owner's LUID for c (0 once forgotten). */
uint64_t pb_remote_cache_luid(const pb_remote_cache *c);

#ifdef __cplusplus
}
#endif
#endif
