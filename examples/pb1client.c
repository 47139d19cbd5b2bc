/*
 * pb1client - C counterpart of the docs' pb1client.py: get the root, ask
 * it for a Two, call three(12) on that.  Exits once three() answered
 * (the Python listing runs until interrupted).
 */
#include "listing.h"

static int got_three(pb_deferred *d, void *ud)
{
    ex_done(0);
    return 0;
}

static int got_obj2(pb_deferred *d, void *ud)
{
    pb_value *v = pb_deferred_value(d);
    if (!v || v->type != PB_REMOTE) {
        fprintf(stderr, "getTwo did not return a reference\n");
        ex_done(1);
        return 0;
    }
    pb_ref *obj2 = (pb_ref *)v->u.h;
    printf("got second object: <twisted.spread.pb.RemoteReference object at %p>\n", (void *)obj2);
    printf("telling it to do three(12)\n");
    ex_then(pb_ref_callf(obj2, "three", "i", (int64_t)12), got_three, "three");
    return 0;
}

static void got_obj1(pb_conn *c)
{
    pb_ref *obj1 = pb_conn_root(c);
    printf("got first object: <twisted.spread.pb.RemoteReference object at %p>\n", (void *)obj1);
    printf("asking it to getTwo\n");
    ex_then(pb_ref_callf(obj1, "getTwo", ""), got_obj2, "getTwo");
}

int main(int argc, char **argv)
{
    ex_args a;
    ex_parse(argc, argv, &a);
    return ex_client(&a, got_obj1);
}
