/*
 * pb6client2 - log in as user2 and call foo(14) on the avatar (the C
 * counterpart of pb6client2.py), then exit.
 */
#include "common.h"

static int foo_done(pb_deferred *d, void *ud)
{
    ex_done(0);
    return 0;
}

static int connected(pb_deferred *d, void *ud)
{
    pb_value *perspective = pb_deferred_value(d);
    printf("got perspective2 ref: %s\n", ex_repr(perspective));
    printf("asking it to foo(14)\n");
    ex_then(pb_ref_callf((pb_ref *)perspective->u.h, "foo", "i", (int64_t)14), foo_done, "foo");
    return 0;
}

static void up(pb_conn *c) { ex_then(pb_login(c, "user2", "pass2", NULL), connected, "login"); }

int main(int argc, char **argv)
{
    ex_args a;
    ex_parse(argc, argv, &a);
    return ex_client(&a, up);
}
