/*
 * examples/cache_classes.h - C counterparts of the docs' cache_classes.py:
 * MasterDuckPond, a pb.Cacheable holding a list of ducks that tells every
 * observer about each duck added or removed, and SlaveDuckPond, the
 * pb.RemoteCache that mirrors it on the other side (registered for the
 * tag "cache_classes.MasterDuckPond", as setUnjellyableForClass does).
 * Shared by cache_sender.c and cache_receiver.c.
 */
#ifndef EXAMPLES_CACHE_CLASSES_H
#define EXAMPLES_CACHE_CLASSES_H

#include "listing.h"

/* ------------------------------------------------- MasterDuckPond (owner) */

typedef struct master_duck_pond {
    pb_cacheable c; /* first */
    char *ducks[16];
    int nducks;
    pb_cache_observer *observers[8];
    int nobservers;
} master_duck_pond;

static inline void mdp_count(master_duck_pond *p) { printf("I have [%d] ducks\n", p->nducks); }

static inline void mdp_tell(master_duck_pond *p, const char *what, const char *duck)
{
    for (int i = 0; i < p->nobservers; i++)
        pb_deferred_unref(pb_cache_observer_callf(p->observers[i], what, "s", duck));
}

static inline void mdp_add_duck(master_duck_pond *p, const char *duck)
{
    if (p->nducks < 16)
        p->ducks[p->nducks++] = strdup(duck);
    mdp_tell(p, "addDuck", duck);
}

static inline void mdp_remove_duck(master_duck_pond *p, const char *duck)
{
    for (int i = 0; i < p->nducks; i++)
        if (!strcmp(p->ducks[i], duck)) {
            free(p->ducks[i]);
            memmove(&p->ducks[i], &p->ducks[i + 1], (size_t)(p->nducks - i - 1) * sizeof *p->ducks);
            p->nducks--;
            break;
        }
    mdp_tell(p, "removeDuck", duck);
}

/* getStateToCacheAndObserveFor: remember the observer, send the ducks. */
static inline pb_value *mdp_state(pb_cacheable *self, pb_arena *a, void *avatar, pb_cache_observer *o)
{
    master_duck_pond *p = (master_duck_pond *)self;
    if (p->nobservers < 8)
        p->observers[p->nobservers++] = pb_cache_observer_ref(o);
    pb_value *l = pb_list(a, (size_t)p->nducks);
    for (int i = 0; l && i < p->nducks; i++)
        if (pb_seq_append(a, l, pb_strz(a, p->ducks[i])))
            return NULL;
    return l;
}

static inline void mdp_stopped(pb_cacheable *self, void *avatar, pb_cache_observer *o)
{
    master_duck_pond *p = (master_duck_pond *)self;
    for (int i = 0; i < p->nobservers; i++)
        if (p->observers[i] == o) {
            p->observers[i] = p->observers[--p->nobservers];
            pb_cache_observer_unref(o);
            break;
        }
}

static inline void mdp_destroy(pb_object *o)
{
    master_duck_pond *p = (master_duck_pond *)o;
    for (int i = 0; i < p->nducks; i++)
        free(p->ducks[i]);
    p->nducks = 0;
}

static const pb_cacheable_class MasterDuckPond = {
    {"cache_classes.MasterDuckPond", PB_CACHEABLE, NULL, mdp_destroy}, mdp_state, mdp_stopped};

/* ---------------------------------------------- SlaveDuckPond (the cache) */

typedef struct slave_duck_pond {
    pb_remote_cache base; /* first */
    pb_arena *arena;      /* holds cacheducks */
    pb_value *cacheducks; /* a list */
} slave_duck_pond;

static inline int sdp_count(slave_duck_pond *p) { return p->cacheducks ? (int)pb_len(p->cacheducks) : 0; }

/* setCopyableState */
static inline int sdp_set_state(pb_remote_cache *self, const pb_value *state)
{
    slave_duck_pond *p = (slave_duck_pond *)self;
    printf(" cache - sitting, er, setting ducks\n");
    if (!state || state->type != PB_LIST)
        return PB_EINVAL;
    if (!(p->arena = pb_arena_new(0)) || !(p->cacheducks = pb_value_copy(p->arena, state)))
        return PB_ENOMEM;
    return 0;
}

static inline int sdp_add_duck(pb_call *call, void *self, const pb_args *a)
{
    slave_duck_pond *p = self;
    printf(" cache - addDuck\n");
    pb_value *d = pb_value_copy(p->arena, pb_arg(a, 0));
    if (!d || pb_seq_append(p->arena, p->cacheducks, d))
        return PB_ENOMEM;
    return pb_call_return_none(call);
}

static inline int sdp_remove_duck(pb_call *call, void *self, const pb_args *a)
{
    slave_duck_pond *p = self;
    printf(" cache - removeDuck\n");
    const pb_value *dead = pb_arg(a, 0);
    pb_value *l = pb_list(p->arena, pb_len(p->cacheducks));
    int found = 0;
    for (size_t i = 0; l && i < pb_len(p->cacheducks); i++) {
        pb_value *d = p->cacheducks->u.seq.items[i];
        if (!found && pb_value_equal(d, dead))
            found = 1;
        else if (pb_seq_append(p->arena, l, d))
            return PB_ENOMEM;
    }
    if (!l)
        return PB_ENOMEM;
    if (!found)
        return pb_call_fail(call, PB_FAILURE_VALUE_ERROR, "list.remove(x): x not in list");
    p->cacheducks = l;
    return pb_call_return_none(call);
}

static inline void sdp_destroy(pb_object *o)
{
    slave_duck_pond *p = (slave_duck_pond *)o;
    pb_arena_free(p->arena);
    p->arena = NULL;
}

static const pb_method sdp_methods[] = {
    {"addDuck", "v:newDuck", sdp_add_duck, NULL},
    {"removeDuck", "v:deadDuck", sdp_remove_duck, NULL},
    {NULL, NULL, NULL, NULL},
};

static const pb_remote_cache_class SlaveDuckPond = {
    {"SlaveDuckPond", PB_REMOTE_CACHE, sdp_methods, sdp_destroy},
    "cache_classes.MasterDuckPond", sizeof(slave_duck_pond), sdp_set_state};

#endif
