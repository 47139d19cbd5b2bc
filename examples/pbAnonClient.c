/*
 * pbAnonClient - log in twice over one connection, anonymously and as
 * user1, call foo(13) on each avatar, and exit once both calls are done
 * (the C counterpart of pbAnonClient.py).
 */
#include "common.h"

static int calls_left = 2;

static int foo_done(pb_deferred *d, void *ud)
{
    if (--calls_left == 0)
        ex_done(0);
    return 0;
}

static int connected(pb_deferred *d, void *what)
{
    pb_value *perspective = pb_deferred_value(d);
    printf("got perspective1 ref: %s\n", ex_repr(perspective));
    printf("asking it to foo(13)\n");
    ex_then(pb_ref_callf((pb_ref *)perspective->u.h, "foo", "i", (int64_t)13), foo_done, what);
    return 0;
}

static void up(pb_conn *c)
{
    ex_then(pb_login(c, NULL, NULL, NULL), connected, "Anonymous login");
    ex_then(pb_login(c, "user1", "pass1", NULL), connected, "Username/password login");
}

int main(int argc, char **argv)
{
    ex_args a;
    ex_parse(argc, argv, &a);
    return ex_client(&a, up);
}
