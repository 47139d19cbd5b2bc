/*
 * cache_sender - C counterpart of the docs' cache_sender.py: sends a
 * MasterDuckPond (a pb.Cacheable) to the receiver, changes it (each change
 * reaches the receiver's cache as a cachemessage), lets the receiver drop
 * it, then shuts the receiver down.
 */
#include "cache_classes.h"

static master_duck_pond master;
static pb_ref *remote;
static uv_timer_t later;

static int phase5(pb_deferred *d, void *ud);

static int phase6(pb_deferred *d, void *ud)
{
    ex_done(0);
    return 0;
}

/* The receiver may stop before its answer to shutdown is out. */
static int phase6_lost(pb_deferred *d, void *ud)
{
    if (pb_failure_check(pb_deferred_failure(d), PB_FAILURE_CONNECTION_LOST))
        return phase6(d, ud);
    return ex_failed(d, "shutdown");
}

static int phase5(pb_deferred *d, void *ud)
{
    pb_deferred *s = pb_ref_callf(remote, "shutdown", "");
    if (!s) {
        ex_done(1);
        return 0;
    }
    pb_deferred_add(s, phase6, phase6_lost, NULL);
    pb_deferred_unref(s);
    return 0;
}

static int phase4(pb_deferred *d, void *ud)
{
    mdp_remove_duck(&master, "one duck");
    mdp_count(&master);
    pb_deferred_unref(pb_ref_callf(remote, "checkDucks", ""));
    ex_then(pb_ref_callf(remote, "ignorePond", ""), phase5, "ignorePond");
    return 0;
}

static void phase3(uv_timer_t *t)
{
    uv_close((uv_handle_t *)t, NULL);
    ex_then(pb_ref_callf(remote, "checkDucks", ""), phase4, "checkDucks");
}

static int phase2(pb_deferred *d, void *ud)
{
    mdp_add_duck(&master, "ugly duckling");
    mdp_count(&master);
    uv_timer_init(uv_default_loop(), &later);
    uv_timer_start(&later, phase3, 1000, 0);
    return 0;
}

static void phase1(pb_conn *c)
{
    remote = pb_conn_root(c);
    ex_then(pb_ref_callf(remote, "takePond", "o", &master.c.obj), phase2, "takePond");
}

int main(int argc, char **argv)
{
    ex_args a;
    ex_parse(argc, argv, &a);
    pb_cacheable_init(&master.c, &MasterDuckPond);
    mdp_add_duck(&master, "one duck");
    mdp_add_duck(&master, "two duck");
    mdp_count(&master);
    int rc = ex_client(&a, phase1);
    pb_object_unref(&master.c.obj);
    return rc;
}
