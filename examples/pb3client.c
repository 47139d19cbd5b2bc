/*
 * pb3client - C counterpart of the docs' pb3client.py: hands the server a
 * reference to a local Two, whose print() the server then calls.  Exits
 * once print() ran and takeTwo answered.
 */
#include "listing.h"

static int printed, answered;

static int two_print(pb_call *call, void *self, const pb_args *a)
{
    printf("Two.print() called with %s\n", ls_str(pb_arg(a, 0)));
    printed = 1;
    int rc = pb_call_return_none(call);
    if (answered)
        ex_done(0);
    return rc;
}

static const pb_method two_methods[] = {{"print", "v:arg", two_print, NULL}, {NULL, NULL, NULL, NULL}};
static const pb_class Two = {"Two", PB_REFERENCEABLE, two_methods, NULL};
static pb_object two;

static int took(pb_deferred *d, void *ud)
{
    answered = 1;
    if (printed)
        ex_done(0);
    return 0;
}

static void got_obj(pb_conn *c)
{
    pb_ref *obj = pb_conn_root(c);
    printf("got One: <twisted.spread.pb.RemoteReference object at %p>\n", (void *)obj);
    printf("giving it our two\n");
    ex_then(pb_ref_callf(obj, "takeTwo", "o", &two), took, "takeTwo");
}

int main(int argc, char **argv)
{
    ex_args a;
    ex_parse(argc, argv, &a);
    pb_object_init(&two, &Two);
    int rc = ex_client(&a, got_obj);
    pb_object_unref(&two);
    return rc;
}
