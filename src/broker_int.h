/*
 * broker_int.h - internals shared by deferred.c, failure.c, args.c and
 * broker.c.  Not public API.
 */
#ifndef PB_BROKER_INT_H
#define PB_BROKER_INT_H

#include <stdarg.h>
#include "pb/broker.h"

/* failure.c: the failure type a local PB_E* code is reported as. */
const char *pb__failure_type_for_code(int code);

/* deferred.c: add with a finaliser for ud that runs exactly once, when
 * the entry has run or when the deferred is dropped unfired.  On error
 * free_ud is not called. */
int pb__deferred_add_full(pb_deferred *d, pb_deferred_fn callback, pb_deferred_fn errback,
                          void *ud, void (*free_ud)(void *));

/* deferred.c: a per-broker pool of unused deferreds and of empty arenas
 * (see pb__deferred_new_pooled).  close: the owner is done with it
 * (parked deferreds and arenas are freed; live deferreds are freed when
 * dropped). */
typedef struct pb__dpool pb__dpool;
pb__dpool *pb__dpool_new(void);
void pb__dpool_close(pb__dpool *p);
/* A new deferred (one reference), from p when it has one to reuse; when
 * its last reference goes it returns to p (unless p is closed or full). */
pb_deferred *pb__deferred_new_pooled(pb__dpool *p);
/* Fire d with v, which lives in arena a: d takes a over (so v is not
 * copied) and keeps it until it is dropped.  PB_OK (a is d's now) or
 * PB_ESTATE / PB_EINVAL (a is still the caller's). */
int pb__deferred_callback_adopt(pb_deferred *d, pb_value *v, pb_arena *a);
/* Most bytes of blocks an arena parked in a pool keeps. */
#define PB__POOL_ARENA_KEEP 65536u
/* An empty arena (no limit) from p, or a new one; NULL on ENOMEM. */
pb_arena *pb__pool_arena_get(pb__dpool *p);
/* Reset a (running its hooks) and park it in p, or free it when p is
 * NULL, closed or full.  p must stay valid while the hooks run. */
void pb__pool_arena_put(pb__dpool *p, pb_arena *a);
/* Park an arena that was already reset (nothing runs), or free it. */
void pb__pool_arena_park(pb__dpool *p, pb_arena *a);

/* args.c: check raw args/kwargs against a signature and fill out (v in
 * arena a).  qual names the method for messages ("Root.remote_echo").
 * bytes_keys_ok: accept byte-string keyword names (Twisted does for
 * Referenceables only).  Returns 0, PB_ENOMEM, or PB_EINVAL with a
 * Python-like TypeError text in msg. */
int pb__args_bind(pb_arena *a, const char *sig, const char *qual, pb_value *args,
                  pb_value *kwargs, int bytes_keys_ok, pb_args *out, char *msg, size_t msgcap);

/* broker.c: the arguments tuple of pb_ref_callf's format fmt (see
 * pb/broker.h), built in a from ap; NULL on an unknown letter, a NULL
 * string or no memory. */
pb_value *pb__args_vformat(pb_arena *a, const char *fmt, va_list ap);

/* broker.c: Twisted's repr of an object id for KeyError texts, in
 * buf[cap]; the text empty when id is missing or has no repr. */
void pb__id_repr(const pb_value *id, char *buf, size_t cap, const char *empty);

/* broker.c: the ud of b's callbacks when its output_ready is fn, else
 * NULL (how the transport finds the connection of a broker). */
void *pb__broker_cb_ud(const pb_broker *b, void (*fn)(pb_broker *, void *));

#endif
