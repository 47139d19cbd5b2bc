/*
 * pb3server - C counterpart of the docs' pb3server.py: takeTwo(two)
 * receives a reference to the client's object and calls print(12) on it.
 */
#include "listing.h"

static int one_take_two(pb_call *call, void *self, const pb_args *a)
{
    pb_ref *two = pb_arg_ref(a, 0);
    printf("received a Two called <twisted.spread.pb.RemoteReference object at %p>\n", (void *)two);
    printf("telling it to print(12)\n");
    pb_deferred *d = pb_ref_callf(two, "print", "i", (int64_t)12);
    if (d)
        pb_deferred_unref(d); /* like the listing: the result is not used */
    return pb_call_return_none(call);
}

static const pb_method one_methods[] = {{"takeTwo", "r:two", one_take_two, NULL}, {NULL, NULL, NULL, NULL}};
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
