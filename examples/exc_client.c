/*
 * exc_client - C counterpart of the docs' exc_client.py: call broken()
 * and show the failure that comes back.
 */
#include "listing.h"

static int working(pb_deferred *d, void *ud)
{
    printf("erm, it wasn't *supposed* to work..\n");
    ex_done(1);
    return 0;
}

static int broken(pb_deferred *d, void *ud)
{
    const pb_failure *f = pb_deferred_failure(d);
    printf("got remote Exception\n");
    /* What Twisted's client sees: a CopiedFailure whose type is the
     * remote class's qualified name (bytes, in 22.4). */
    printf(" .__class__ = <class 'twisted.spread.pb.CopiedFailure'>\n");
    printf(" .getErrorMessage() = %s\n", f->value ? f->value : "");
    printf(" .type = b'%s'\n", f->type);
    ex_done(0);
    return 0;
}

static void got_obj(pb_conn *c)
{
    pb_deferred *d = pb_ref_callf(pb_conn_root(c), "broken", "");
    if (!d) {
        ex_done(1);
        return;
    }
    pb_deferred_add(d, working, broken, NULL);
    pb_deferred_unref(d);
}

int main(int argc, char **argv)
{
    ex_args a;
    ex_parse(argc, argv, &a);
    return ex_client(&a, got_obj);
}
