/*
 * trap_server - C counterpart of the docs' trap_server.py: fooMethod(arg)
 * answers "response" or fails with MyException for "panic!"; shutdown()
 * stops the server.
 */
#include "listing.h"

static const char *const my_exception_mro[] = {"__main__.MyException", "twisted.spread.pb.Error",
                                               "builtins.Exception", "builtins.BaseException",
                                               "builtins.object"};
static pb_server *server;

static int one_foo(pb_call *call, void *self, const pb_args *a)
{
    pb_value *arg = pb_arg(a, 0);
    if (arg && pb_value_is(arg, "panic!")) {
        pb_failure *f = pb_failure_new(pb_call_arena(call), PB_EREMOTE, "__main__.MyException",
                                       "", my_exception_mro, 5);
        return f ? pb_call_fail_failure(call, f) : PB_ENOMEM;
    }
    return pb_call_return(call, pb_strz(pb_call_arena(call), "response"));
}

static int one_shutdown(pb_call *call, void *self, const pb_args *a)
{
    /* reactor.stop(): no answer goes out, the connection just ends. */
    pb_server_close(server, NULL, NULL);
    return pb_call_return_none(call);
}

static const pb_method one_methods[] = {
    {"fooMethod", "v:arg", one_foo, NULL},
    {"shutdown", "", one_shutdown, NULL},
    {NULL, NULL, NULL, NULL},
};
static const pb_class One = {"One", PB_REFERENCEABLE, one_methods, NULL};

int main(int argc, char **argv)
{
    ex_args a;
    ex_parse(argc, argv, &a);
    pb_object one;
    pb_object_init(&one, &One);
    int rc = ls_serve(&one, &a, NULL, &server);
    pb_object_unref(&one);
    return rc;
}
