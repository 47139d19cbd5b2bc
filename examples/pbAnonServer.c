/*
 * pbAnonServer - anonymous and username/password logins side by side (the
 * C counterpart of pbAnonServer.py).  Anonymous avatars are named
 * "Anonymous" (so, as in the listing, a user called "anonymous" would
 * share that name).
 */
#include "common.h"

typedef struct perspective {
    pb_object base;
    char name[128];
} perspective;

static int foo(pb_call *call, void *self, const pb_args *a)
{
    perspective *p = self;
    printf("I am %s.  perspective_foo(%s) called on <MyPerspective object at %p>.\n", p->name,
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
    snprintf(p->name, sizeof p->name, "%s",
             strcmp(avatar_id, "anonymous") == 0 ? "Anonymous" : avatar_id);
    pb_realm_answer(req, &p->base, NULL, NULL);
    pb_object_unref(&p->base);
}

int main(int argc, char **argv)
{
    ex_args a;
    ex_parse(argc, argv, &a);
    pb_portal *portal = pb_portal_new(request_avatar, NULL, NULL);
    pb_checker *users = pb_checker_memory_new();
    pb_checker_memory_add(users, "user1", "pass1");
    pb_checker_memory_add(users, "user2", "pass2");
    pb_portal_add_checker(portal, users);
    pb_portal_add_checker(portal, pb_checker_anonymous_new());
    return ex_serve(portal, &a);
}
