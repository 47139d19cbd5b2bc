/*
 * pb5server - one avatar per login (the C counterpart of pb5server.py).
 * user1/pass1 may log in; the avatar's only method is foo(arg).
 */
#include "common.h"

typedef struct perspective {
    pb_object base; /* first: an avatar, so foo is perspective_foo */
    char name[128];
} perspective;

static int foo(pb_call *call, void *self, const pb_args *a)
{
    perspective *p = self;
    printf("I am %s perspective_foo( %s ) called on <MyPerspective object at %p>\n", p->name,
           ex_repr(pb_arg(a, 0)), self);
    return pb_call_return_none(call);
}

static void destroy(pb_object *o) { free(o); }

static const pb_method methods[] = {{"foo", "v:arg", foo, NULL}, {NULL, NULL, NULL, NULL}};
static const pb_class MyPerspective = {"MyPerspective", PB_AVATAR, methods, destroy};

static void request_avatar(pb_realm_request *req, const char *avatar_id, pb_ref *mind, void *ud)
{
    perspective *p = calloc(1, sizeof *p);
    if (!p) {
        pb_realm_fail(req, "builtins.MemoryError", "");
        return;
    }
    pb_object_init(&p->base, &MyPerspective);
    snprintf(p->name, sizeof p->name, "%s", avatar_id);
    pb_realm_answer(req, &p->base, NULL, NULL); /* the portal keeps its own reference */
    pb_object_unref(&p->base);
}

int main(int argc, char **argv)
{
    ex_args a;
    ex_parse(argc, argv, &a);
    pb_portal *portal = pb_portal_new(request_avatar, NULL, NULL);
    pb_checker *users = pb_checker_memory_new();
    pb_checker_memory_add(users, "user1", "pass1");
    pb_portal_add_checker(portal, users);
    return ex_serve(portal, &a);
}
