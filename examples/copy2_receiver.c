/*
 * copy2_receiver - C counterpart of the docs' copy2_receiver.py: accepts
 * a copy of the sender's pond (a pb.Copyable) because its class is
 * registered, as setUnjellyableForClass(SenderPond, ReceiverPond) does.
 */
#include "listing.h"

static pb_server *server;

static int take_pond(pb_call *call, void *self, const pb_args *a)
{
    pb_value *pond = pb_arg(a, 0);
    pb_value *state = pond && pond->type == PB_INSTANCE ? pond->u.inst.state : NULL;
    pb_value *n = state && state->type == PB_DICT ? pb_dict_get(state, "frogsAndToads") : NULL;
    printf(" got pond: <copy2_classes.ReceiverPond object at %p>\n", (void *)pond);
    printf(" count %lld\n", n && n->type == PB_INT ? (long long)n->u.i : -1LL);
    return pb_call_return(call, pb_strz(pb_call_arena(call), "safe and sound"));
}

static int shutdown_(pb_call *call, void *self, const pb_args *a)
{
    pb_server_close(server, NULL, NULL);
    return pb_call_return_none(call);
}

static const pb_method methods[] = {
    {"takePond", "v:pond", take_pond, NULL},
    {"shutdown", "", shutdown_, NULL},
    {NULL, NULL, NULL, NULL},
};
static const pb_class Receiver = {"Receiver", PB_REFERENCEABLE, methods, NULL};

int main(int argc, char **argv)
{
    ex_args a;
    ex_parse(argc, argv, &a);
    pb_jelly_registry *reg = pb_jelly_registry_new();
    pb_jelly_registry_add(reg, "copy2_classes.SenderPond", NULL, NULL);
    pb_server_opts o;
    pb_server_opts_default(&o);
    o.broker.registry = reg;
    pb_object root;
    pb_object_init(&root, &Receiver);
    int rc = ls_serve(&root, &a, &o, &server);
    pb_object_unref(&root);
    pb_jelly_registry_free(reg);
    return rc;
}
