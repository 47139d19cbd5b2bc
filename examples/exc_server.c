/*
 * exc_server - C counterpart of the docs' exc_server.py: broken() fails
 * with MyError (a pb.Error: expected, not logged), broken2() with
 * MyError2 (an unexpected exception).
 */
#include "listing.h"

static const char *const my_error_mro[] = {"__main__.MyError", "twisted.spread.pb.Error",
                                           "builtins.Exception", "builtins.BaseException",
                                           "builtins.object"};
static const char *const my_error2_mro[] = {"__main__.MyError2", "builtins.Exception",
                                            "builtins.BaseException", "builtins.object"};

static int fail_with(pb_call *call, const char *type, const char *const *mro, size_t n,
                 const char *msg)
{
    pb_failure *f = pb_failure_new(pb_call_arena(call), PB_EREMOTE, type, msg, mro, n);
    if (!f)
        return PB_ENOMEM;
    return pb_call_fail_failure(call, f);
}

static int one_broken(pb_call *call, void *self, const pb_args *a)
{
    const char *msg = "fall down go boom";
    printf("raising a MyError exception with data '%s'\n", msg);
    return fail_with(call, "__main__.MyError", my_error_mro, 5, msg);
}

static int one_broken2(pb_call *call, void *self, const pb_args *a)
{
    const char *msg = "hadda owie";
    printf("raising a MyError2 exception with data '%s'\n", msg);
    return fail_with(call, "__main__.MyError2", my_error2_mro, 4, msg);
}

static const pb_method one_methods[] = {
    {"broken", "", one_broken, NULL},
    {"broken2", "", one_broken2, NULL},
    {NULL, NULL, NULL, NULL},
};
static const pb_class One = {"One", PB_REFERENCEABLE, one_methods, NULL};

int main(int argc, char **argv)
{
    ex_args a;
    ex_parse(argc, argv, &a);
    pb_object one;
    pb_object_init(&one, &One);
    int rc = ls_serve(&one, &a, NULL, NULL);
    pb_object_unref(&one);
    return rc;
}
