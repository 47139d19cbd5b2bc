/*
 * trap_client - C counterpart of the docs' trap_client.py: five calls one
 * second apart showing how each kind of failure is told apart (the
 * listing's failure.trap() chain is pb_failure_check() here).
 */
#include "listing.h"

static pb_ref *remote;

static int worked(pb_deferred *d, void *ud)
{
    printf(" method successful, response: %s\n", ls_str(pb_deferred_value(d)));
    return 0;
}

static int failed(pb_deferred *d, void *ud)
{
    const pb_failure *f = pb_deferred_failure(d);
    if (pb_failure_check(f, PB_FAILURE_INSECURE_JELLY))
        printf(" InsecureJelly: you tried to send something unsafe to them\n");
    else if (pb_failure_check(f, "__main__.MyException"))
        printf(" remote raised a MyException\n");
    else if (pb_failure_check(f, "__main__.MyOtherException"))
        printf(" remote raised a MyOtherException\n");
    else if (pb_failure_check(f, PB_FAILURE_CONNECTION_LOST))
        printf(" stale reference: the client disconnected or crashed\n");
    else {
        printf(" something else happened\n");
        fprintf(stderr, "Unhandled failure: %s: %s\n", f->type, f->value ? f->value : "");
    }
    return 0;
}

static void do_call(const char *explanation, const pb_value *arg)
{
    printf("%s\n", explanation);
    pb_arena *ar = pb_arena_new(0);
    pb_value *args = pb_tuple(ar, 1);
    pb_seq_append(ar, args, (pb_value *)arg);
    pb_errbuf err = {0, ""};
    pb_deferred *d = remote ? pb_ref_call(remote, "fooMethod", args, NULL, NULL, &err) : NULL;
    if (!d) {
        if (!remote || err.code == PB_ECLOSED)
            printf(" stale reference: the client disconnected or crashed\n");
        else if (err.code == PB_EINSECURE || err.code == PB_EUNSENDABLE)
            printf(" InsecureJelly: you tried to send something unsafe to them\n");
        else
            printf(" something else happened\n");
    } else {
        pb_deferred_add(d, worked, failed, NULL);
        pb_deferred_unref(d);
    }
    pb_arena_free(ar);
}

static void step(uv_timer_t *t)
{
    static int n;
    pb_arena *ar = pb_arena_new(0);
    switch (++n) {
    case 1:
        do_call("callOne: call with safe object", pb_strz(ar, "safe string"));
        break;
    case 2: /* an instance of a class nobody registered, like ScaryObject() */
        do_call("callTwo: call with dangerous object",
                pb_instance(ar, "__main__.ScaryObject", 20, pb_none(ar)));
        break;
    case 3:
        do_call("callThree: call that raises remote exception", pb_strz(ar, "panic!"));
        break;
    case 4: {
        printf("telling them to shut down\n");
        ex_finished = 1; /* the connection is expected to end now */
        ex_status = 0;
        pb_deferred *d = pb_ref_callf(remote, "shutdown", "");
        if (d)
            pb_deferred_unref(d);
        break;
    }
    case 5:
        do_call("callFour: call on stale reference", pb_strz(ar, "dummy"));
        break;
    default:
        uv_close((uv_handle_t *)t, NULL);
        ex_done(0); /* remote is kept to the end: callFour shows using it late */
    }
    pb_arena_free(ar);
}

static uv_timer_t timer;

static void got_obj(pb_conn *c)
{
    remote = pb_ref_ref(pb_conn_root(c));
    uv_timer_init(uv_default_loop(), &timer);
    uv_timer_start(&timer, step, 1000, 1000);
}

int main(int argc, char **argv)
{
    ex_args a;
    ex_parse(argc, argv, &a);
    int rc = ex_client(&a, got_obj);
    if (remote)
        pb_ref_unref(remote);
    return rc;
}
