/*
 * pb1server - C counterpart of the docs' pb1server.py: the root's getTwo()
 * hands out a new Two; Two.three(arg) prints its argument.
 */
#include "listing.h"

typedef struct two {
    pb_object base; /* first */
} two;

static int two_three(pb_call *call, void *self, const pb_args *a)
{
    printf("Two.three was given %s\n", ls_str(pb_arg(a, 0)));
    return pb_call_return_none(call);
}

static void two_destroy(pb_object *o) { free(o); }

static const pb_method two_methods[] = {{"three", "v:arg", two_three, NULL}, {NULL, NULL, NULL, NULL}};
static const pb_class Two = {"Two", PB_REFERENCEABLE, two_methods, two_destroy};

static int one_get_two(pb_call *call, void *self, const pb_args *a)
{
    two *t = calloc(1, sizeof *t);
    if (!t)
        return PB_ENOMEM;
    pb_object_init(&t->base, &Two);
    printf("returning a Two called <__main__.Two object at %p>\n", (void *)t);
    int rc = pb_call_return_object(call, &t->base);
    pb_object_unref(&t->base); /* the broker holds it while the client does */
    return rc;
}

static const pb_method one_methods[] = {{"getTwo", "", one_get_two, NULL}, {NULL, NULL, NULL, NULL}};
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
