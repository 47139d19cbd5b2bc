/** @file
 * pb/deferred.h - results that arrive later, in the spirit of Twisted's
 * Deferred, and failures as PB carries them.
 *
 * A pb_deferred holds a callback chain and, once fired, a result: a value
 * or a pb_failure.  Callbacks run in order; each sees the current result
 * and may replace it (pb_deferred_set_value / pb_deferred_set_failure),
 * which moves the chain between its callback and errback sides just as
 * raising or returning does in Twisted.  Callbacks added after firing run
 * at once.
 *
 * OWNERSHIP: deferreds are reference counted.  pb_deferred_new() and every
 * function documented as "returns a new deferred" give the caller one
 * reference, which it drops with pb_deferred_unref() when done (typically
 * right after adding callbacks).  Whoever is going to fire a deferred keeps
 * a reference until it has.  The result lives in the deferred's own arena:
 * pointers obtained from it are borrowed and valid only inside a callback
 * (or while the caller holds a reference and does not fire or replace it).
 * The same thread must create, fire and drop a deferred (one event loop).
 */
#ifndef PB_DEFERRED_H
#define PB_DEFERRED_H

#include "pb/value.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A failure: Twisted's (type, value, parents) triple.  Strings are NUL
 * terminated and borrowed from the arena of whatever holds the failure. */
typedef struct pb_failure {
    const char *type;       /**< qualified exception class: "builtins.ValueError" */
    const char *value;      /**< str(exception): the message */
    const char *traceback;  /**< "Traceback unavailable\n" unless the peer opted in; may be NULL */
    const char **parents;   /**< the class's MRO as qualified names; what check() uses */
    size_t nparents;        /**< number of entries in parents */
    pb_value *raw;          /**< the failure as received (CopyableFailure or a Copyable
                               exception instance), or NULL when made locally */
    int code;               /**< PB_EREMOTE for peer failures; a local PB_E* otherwise
                               (PB_ECLOSED, PB_ETIMEOUT, PB_ECANCELLED, ...) */
    int pickled;            /**< went through Deferred callbacks, as Twisted's cleaned
                               failures: sent with the `pickled` key (SPEC §5.5) */
} pb_failure;

/** True if the failure is of type `type` or a subclass (looks at parents,
 * as Twisted's Failure.check does). */
int pb_failure_check(const pb_failure *f, const char *type);

/* Well-known failure types. */
#define PB_FAILURE_PB_ERROR "twisted.spread.pb.Error" /**< pb.Error raised by a method */
#define PB_FAILURE_CONNECTION_LOST "twisted.spread.pb.PBConnectionLost" /**< pending call, connection gone */
#define PB_FAILURE_NO_SUCH_METHOD "twisted.spread.flavors.NoSuchMethod" /**< no remote_NAME */
#define PB_FAILURE_UNAUTHORIZED "twisted.cred.error.UnauthorizedLogin" /**< login refused */
#define PB_FAILURE_UNHANDLED_CREDENTIALS "twisted.cred.error.UnhandledCredentials" /**< no checker */
#define PB_FAILURE_TYPE_ERROR "builtins.TypeError" /**< wrong arguments */
#define PB_FAILURE_VALUE_ERROR "builtins.ValueError" /**< Python ValueError */
#define PB_FAILURE_ATTRIBUTE_ERROR "builtins.AttributeError" /**< no perspective_/view_NAME */
#define PB_FAILURE_KEY_ERROR "builtins.KeyError" /**< unknown key or cache LUID */
#define PB_FAILURE_INSECURE_JELLY "twisted.spread.jelly.InsecureJelly" /**< tag not allowed */
#define PB_FAILURE_TIMEOUT "twisted.internet.defer.TimeoutError" /**< call timed out */
#define PB_FAILURE_CANCELLED "twisted.internet.defer.CancelledError" /**< deferred cancelled */

/** Build a failure in arena a.  parents may be NULL: the standard MRO is
 * filled in for the well-known types above (and [type, Exception,
 * BaseException, object] otherwise).  NULL on ENOMEM. */
pb_failure *pb_failure_new(pb_arena *a, int code, const char *type, const char *value,
                           const char *const *parents, size_t nparents);
/** Deep copy into arena a. */
pb_failure *pb_failure_copy(pb_arena *a, const pb_failure *f);
/** Read a failure from a received value (CopyableFailure state, a Copyable
 * exception, or anything else, tolerated as Twisted does).  Never NULL
 * unless out of memory. */
pb_failure *pb_failure_from_value(pb_arena *a, const pb_value *v);
/** The CopyableFailure instance value Twisted 22.4 and newer accept, with
 * every key 22.4 sends (count, type, value, captureVars, frames, stack, tb,
 * parents, then pickled if f->pickled, unsafeTracebacks, traceback).  traceback NULL: the fixed
 * "Traceback unavailable\n". */
pb_value *pb_failure_to_value(pb_arena *a, const pb_failure *f, int unsafe_tracebacks);

/** A result that arrives later (opaque, reference counted). */
typedef struct pb_deferred pb_deferred;

/** A callback sees the deferred; pb_deferred_value() / pb_deferred_failure()
 * give the current result.  Return 0, or a PB_E* code to turn the result
 * into a failure carrying that code (like raising). */
typedef int (*pb_deferred_fn)(pb_deferred *d, void *ud);

/** New unfired deferred (one reference for the caller).  NULL on ENOMEM. */
pb_deferred *pb_deferred_new(void);
/** Take one more reference to d; returns d. */
pb_deferred *pb_deferred_ref(pb_deferred *d);
/** Drop one reference; the last one frees d and its result.  NULL is a no-op. */
void pb_deferred_unref(pb_deferred *d);

/** Add a callback/errback pair; either may be NULL (pass-through).  If the
 * deferred has already fired, the matching one runs now.  Returns 0 or
 * PB_ENOMEM (then neither will ever be called). */
int pb_deferred_add(pb_deferred *d, pb_deferred_fn callback, pb_deferred_fn errback, void *ud);
/** Called with the deferred when it is cancelled before it fired
 * (pb_deferred_cancel); lets the producer stop its work.  At most one. */
void pb_deferred_set_canceller(pb_deferred *d, void (*fn)(pb_deferred *d, void *ud), void *ud);

/** Fire with a value (deep-copied into the deferred's arena; NULL means
 * None) or a failure (copied).  A deferred fires once: a second fire
 * returns PB_ESTATE and changes nothing. */
int pb_deferred_callback(pb_deferred *d, const pb_value *v);
/** Fire with failure f (copied); PB_ESTATE if already fired. */
int pb_deferred_errback(pb_deferred *d, const pb_failure *f);
/** Shorthand: errback with pb_failure_new(code, type, value). */
int pb_deferred_fail(pb_deferred *d, int code, const char *type, const char *value);
/** Cancel: if not fired yet, runs the canceller and then errbacks with
 * twisted.internet.defer.CancelledError (PB_ECANCELLED).  Otherwise nothing. */
void pb_deferred_cancel(pb_deferred *d);

/** True once d has fired. */
int pb_deferred_fired(const pb_deferred *d);
/** Current result: value (NULL while failed or unfired) or failure (NULL
 * while succeeded or unfired). */
pb_value *pb_deferred_value(const pb_deferred *d);
/** The current failure, or NULL (see pb_deferred_value()). */
const pb_failure *pb_deferred_failure(const pb_deferred *d);
/** The arena the result lives in: callbacks build replacement values here. */
pb_arena *pb_deferred_arena(pb_deferred *d);
/** Inside a callback: replace the current result. */
int pb_deferred_set_value(pb_deferred *d, pb_value *v);
/** Inside a callback: replace the current result with failure f (copied). */
int pb_deferred_set_failure(pb_deferred *d, const pb_failure *f);

/** Chain: when src fires, fire dst with the same result. */
int pb_deferred_chain(pb_deferred *src, pb_deferred *dst);

#ifdef __cplusplus
}
#endif
#endif
