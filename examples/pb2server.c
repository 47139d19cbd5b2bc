/*
 * pb2server - C counterpart of the docs' pb2server.py: the root owns one
 * Two; getTwo() hands it out and checkTwo(two) checks that what came
 * back is the very same object (a reference returns as the original).
 */
#include "listing.h"

typedef struct one {
    pb_object base; /* first */
    pb_object *two;
} one;

static int two_print(pb_call *call, void *self, const pb_args *a)
{
    printf("two.print was given %s\n", ls_str(pb_arg(a, 0)));
    return pb_call_return_none(call);
}

static const pb_method two_methods[] = {{"print", "v:arg", two_print, NULL}, {NULL, NULL, NULL, NULL}};
static const pb_class Two = {"Two", PB_REFERENCEABLE, two_methods, NULL};

static int one_get_two(pb_call *call, void *self, const pb_args *a)
{
    one *o = self;
    printf("One.getTwo(), returning my two called <__main__.Two object at %p>\n", (void *)o->two);
    return pb_call_return_object(call, o->two);
}

static int one_check_two(pb_call *call, void *self, const pb_args *a)
{
    one *o = self;
    pb_object *newtwo = pb_arg_object(a, 0);
    printf("One.checkTwo(): comparing my two <__main__.Two object at %p>\n", (void *)o->two);
    if (newtwo)
        printf("One.checkTwo(): against your two <__main__.Two object at %p>\n", (void *)newtwo);
    else
        printf("One.checkTwo(): against your two %s\n", ls_str(pb_arg(a, 0)));
    if (newtwo == o->two)
        printf("One.checkTwo(): our twos are the same\n");
    return pb_call_return_none(call);
}

static const pb_method one_methods[] = {
    {"getTwo", "", one_get_two, NULL},
    {"checkTwo", "v:newtwo", one_check_two, NULL},
    {NULL, NULL, NULL, NULL},
};
static const pb_class One = {"One", PB_REFERENCEABLE, one_methods, NULL};

int main(int argc, char **argv)
{
    ex_args a;
    ex_parse(argc, argv, &a);
    pb_object two;
    one root;
    pb_object_init(&two, &Two);
    pb_object_init(&root.base, &One);
    root.two = &two;
    int rc = ls_serve(&root.base, &a, NULL, NULL);
    pb_object_unref(&root.base);
    pb_object_unref(&two);
    return rc;
}
