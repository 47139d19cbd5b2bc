/*
 * cache_receiver - C counterpart of the docs' cache_receiver.py: accepts
 * the sender's MasterDuckPond as a SlaveDuckPond cache, which the sender
 * keeps up to date (observe_addDuck / observe_removeDuck), and drops it
 * when told to (the sender then sees stoppedObserving).
 */
#include "cache_classes.h"

static pb_server *server;
static slave_duck_pond *pond; /* one reference held while we watch it */

static int check_ducks(pb_call *call, void *self, const pb_args *a)
{
    if (!pond)
        return pb_call_fail(call, "builtins.AttributeError", "'Receiver' object has no attribute 'pond'");
    printf("[%d] ducks:  %s\n", sdp_count(pond), ls_str(pond->cacheducks));
    return pb_call_return_none(call);
}

static int take_pond(pb_call *call, void *self, const pb_args *a)
{
    pb_remote_cache *c = pb_arg_cache(a, 0);
    if (!c || c->cls != &SlaveDuckPond)
        return pb_call_fail(call, PB_FAILURE_TYPE_ERROR, "takePond wants a MasterDuckPond cache");
    if (pond)
        pb_object_unref(&pond->base.obj);
    pond = (slave_duck_pond *)c;
    pb_object_ref(&pond->base.obj);
    printf("got pond: <cache_classes.SlaveDuckPond object at %p>\n", (void *)pond);
    return check_ducks(call, self, a);
}

static int ignore_pond(pb_call *call, void *self, const pb_args *a)
{
    printf("dropping pond\n");
    if (pond) /* the last copy: (decache LUID) goes to the sender */
        pb_object_unref(&pond->base.obj);
    pond = NULL;
    return pb_call_return_none(call);
}

static int shutdown_(pb_call *call, void *self, const pb_args *a)
{
    pb_server_close(server, NULL, NULL);
    return pb_call_return_none(call);
}

static const pb_method methods[] = {
    {"takePond", "v:pond", take_pond, NULL},
    {"checkDucks", "", check_ducks, NULL},
    {"ignorePond", "", ignore_pond, NULL},
    {"shutdown", "", shutdown_, NULL},
    {NULL, NULL, NULL, NULL},
};
static const pb_class Receiver = {"Receiver", PB_REFERENCEABLE, methods, NULL};

int main(int argc, char **argv)
{
    ex_args a;
    ex_parse(argc, argv, &a);
    pb_jelly_registry *reg = pb_jelly_registry_new();
    pb_remote_cache_register(reg, &SlaveDuckPond);
    pb_server_opts o;
    pb_server_opts_default(&o);
    o.broker.registry = reg;
    pb_object root;
    pb_object_init(&root, &Receiver);
    int rc = ls_serve(&root, &a, &o, &server);
    if (pond)
        pb_object_unref(&pond->base.obj);
    pb_object_unref(&root);
    pb_jelly_registry_free(reg);
    return rc;
}
