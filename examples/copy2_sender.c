/*
 * copy2_sender - C counterpart of the docs' copy2_sender.py: sends a
 * SenderPond by copy; what goes over the wire is its getStateToCopy(),
 * {"frogsAndToads": numFrogs + numToads}, tagged copy2_classes.SenderPond.
 */
#include "listing.h"

static int num_frogs = 3, num_toads = 4;

static int ok(pb_deferred *d, void *ud)
{
    printf("pond arrived %s\n", ls_str(pb_deferred_value(d)));
    ex_done(0);
    return 0;
}

static int not_ok(pb_deferred *d, void *ud)
{
    const pb_failure *f = pb_deferred_failure(d);
    printf("error during takePond:\n");
    if (pb_failure_check(f, PB_FAILURE_INSECURE_JELLY))
        printf(" InsecureJelly\n");
    else
        printf("[Failure instance: %s: %s]\n", f->type, f->value ? f->value : "");
    ex_done(0);
    return 0;
}

static void got_obj(pb_conn *c)
{
    pb_arena *ar = pb_arena_new(0);
    pb_value *state = pb_dict(ar, 1);
    pb_dict_append(ar, state, pb_strz(ar, "frogsAndToads"), pb_int(ar, num_frogs + num_toads));
    pb_value *pond = pb_instance(ar, "copy2_classes.SenderPond", 24, state);
    pb_deferred *d = pb_ref_callf(pb_conn_root(c), "takePond", "v", pond);
    pb_arena_free(ar);
    if (!d) {
        ex_done(1);
        return;
    }
    pb_deferred_add(d, ok, not_ok, NULL);
    pb_deferred_unref(d);
}

int main(int argc, char **argv)
{
    ex_args a;
    ex_parse(argc, argv, &a);
    printf("count %d\n", num_frogs + num_toads);
    return ex_client(&a, got_obj);
}
