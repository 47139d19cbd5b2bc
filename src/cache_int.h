/*
 * cache_int.h - what broker.c and cache.c (Cacheable / RemoteCache, SPEC
 * §4.4) ask of each other.  Not public API.
 */
#ifndef PB_CACHE_INT_H
#define PB_CACHE_INT_H

#include "pb/broker.h"

/* Per-broker cache tables (cache.c), created on first use. */
typedef struct pb__caches pb__caches;

/* ---- provided by broker.c */

/* The broker's cache tables slot (NULL until cache.c creates them). */
pb__caches **pb__broker_caches(pb_broker *b);
/* The broker's settings (max_refs, limits). */
const pb_broker_config *pb__broker_cfg(const pb_broker *b);
/* A fresh LUID from the counter referenceables use too. */
uint64_t pb__broker_new_luid(pb_broker *b);
/* Send (cmd luid) if connected: 0, PB_ECLOSED or PB_ENOMEM. */
int pb__broker_send_luid(pb_broker *b, const char *cmd, uint64_t luid);
/* Send (cachemessage REQ LUID METHOD 1 ARGS KW) like pb_ref_call. */
int pb__broker_send_cachemessage(pb_broker *b, uint64_t luid, const char *method,
                                 const pb_value *args, const pb_value *kwargs, pb_object *persp,
                                 pb_deferred **dout, pb_errbuf *err);
/* One diagnostic line through the log callback. */
void pb__broker_log(pb_broker *b, const char *msg);

/* ---- provided by cache.c */

/* The broker and perspective of the unjelly running on this thread, for
 * the registry hook that turns (TAG LUID STATE) into a cache. */
typedef struct pb__cache_dctx {
    pb_broker *b;
    pb_object *persp;
} pb__cache_dctx;
extern _Thread_local const pb__cache_dctx *pb__cache_cur;

/* Encode a PB_CACHEABLE or PB_REMOTE_CACHE object o: (TAG LUID STATE),
 * (cached LUID) or (lcache LUID).  h: the broker's hooks, for the state.
 * *journal records registrations so a failed message can undo them;
 * *limit is set when the cache count limit refused it. */
int pb__cache_encode(pb_broker *b, pb_object *persp, pb_buf *out, pb_dialect d, pb_object *o,
                     const pb_jelly_hooks *h, void **journal, int *limit, pb_errbuf *err);
/* The message is out (rollback 0) or was abandoned (rollback 1). */
void pb__cache_journal_end(pb_broker *b, void **journal, int rollback);
/* Decode (cached LUID) / (lcache LUID). */
int pb__cache_decode(pb_broker *b, pb_arena *a, const char *tag, const pb_value *sexp,
                     pb_value **out, pb_errbuf *err);
/* The cache a cachemessage addresses, or NULL. */
pb_object *pb__cache_lookup(pb_broker *b, const pb_value *id);
/* (decache LUID) / (uncache LUID): 0, or PB_EPROTO with msg (fatal). */
int pb__cache_command(pb_broker *b, const pb_value *x, char *msg, size_t cap);
/* Connection lost: stoppedObserving for every cache we sent, forget
 * every cache we hold.  Idempotent. */
void pb__cache_lost(pb_broker *b);
/* Broker freed: release the tables (after pb__cache_lost). */
void pb__cache_free(pb_broker *b);

#endif
