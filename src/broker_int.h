/*
 * broker_int.h - internals shared by deferred.c, failure.c, args.c and
 * broker.c.  Not public API.
 */
#ifndef PB_BROKER_INT_H
#define PB_BROKER_INT_H

#include "pb/broker.h"

/* failure.c: the failure type a local PB_E* code is reported as. */
const char *pb__failure_type_for_code(int code);

/* deferred.c: add with a finaliser for ud that runs exactly once, when
 * the entry has run or when the deferred is dropped unfired.  On error
 * free_ud is not called. */
int pb__deferred_add_full(pb_deferred *d, pb_deferred_fn callback, pb_deferred_fn errback,
                          void *ud, void (*free_ud)(void *));

/* args.c: check raw args/kwargs against a signature and fill out (v in
 * arena a).  qual names the method for messages ("Root.remote_echo").
 * bytes_keys_ok: accept byte-string keyword names (Twisted does for
 * Referenceables only).  Returns 0, PB_ENOMEM, or PB_EINVAL with a
 * Python-like TypeError text in msg. */
int pb__args_bind(pb_arena *a, const char *sig, const char *qual, pb_value *args,
                  pb_value *kwargs, int bytes_keys_ok, pb_args *out, char *msg, size_t msgcap);

#endif
