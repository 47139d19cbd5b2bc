/*
 * pb2client - C counterpart of the docs' pb2client.py: get Two from the
 * root and give it back with checkTwo(two).  Exits once checkTwo answered.
 */
#include "listing.h"

static pb_ref *one_ref;

static int checked(pb_deferred *d, void *ud)
{
    ex_done(0);
    return 0;
}

static int step2(pb_deferred *d, void *ud)
{
    pb_value *v = pb_deferred_value(d);
    if (!v || v->type != PB_REMOTE) {
        fprintf(stderr, "getTwo did not return a reference\n");
        ex_done(1);
        return 0;
    }
    pb_ref *two = (pb_ref *)v->u.h;
    printf("got two object: <twisted.spread.pb.RemoteReference object at %p>\n", (void *)two);
    printf("giving it back to one\n");
    printf("one is <twisted.spread.pb.RemoteReference object at %p>\n", (void *)one_ref);
    ex_then(pb_ref_callf(one_ref, "checkTwo", "r", two), checked, "checkTwo");
    return 0;
}

static void step1(pb_conn *c)
{
    one_ref = pb_conn_root(c);
    printf("got one object: <twisted.spread.pb.RemoteReference object at %p>\n", (void *)one_ref);
    printf("asking it to getTwo\n");
    ex_then(pb_ref_callf(one_ref, "getTwo", ""), step2, "getTwo");
}

int main(int argc, char **argv)
{
    ex_args a;
    ex_parse(argc, argv, &a);
    return ex_client(&a, step1);
}
