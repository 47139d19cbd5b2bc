/*
 * cred/login.c - the client side of cred over PB (PBClientFactory.login):
 *
 *   root.login(username)                    -> (challenge, challenger)
 *   challenger.respond(MD5(MD5(pw) || challenge), mind) -> avatar
 *   (drop the challenger: one decref, as Twisted does)
 *
 * or, anonymously, root.loginAnonymous(mind) -> avatar.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "pb/cred.h"
#include "broker_int.h"

/* Shared by the login's two steps (refs counts them); out always fires,
 * even when a step's deferred is dropped without firing. */
typedef struct login_op {
    unsigned refs;
    pb_deferred *out; /* what the caller holds; we keep a reference until it fires */
    pb_object *mind;
    char *password;
    size_t plen;
} login_op;

static void op_free(void *ud)
{
    login_op *op = ud;
    if (--op->refs)
        return;
    if (!pb_deferred_fired(op->out))
        pb_deferred_fail(op->out, PB_ECLOSED, PB_FAILURE_CONNECTION_LOST, "login abandoned");
    if (op->password) {
        OPENSSL_cleanse(op->password, op->plen);
        free(op->password);
    }
    if (op->mind)
        pb_object_unref(op->mind);
    pb_deferred_unref(op->out);
    free(op);
}

/* Forward the final result to out, then let go. */
static int forward_ok(pb_deferred *d, void *ud)
{
    login_op *op = ud;
    pb_deferred_callback(op->out, pb_deferred_value(d));
    return 0;
}

static int forward_fail(pb_deferred *d, void *ud)
{
    login_op *op = ud;
    pb_deferred_errback(op->out, pb_deferred_failure(d));
    return 0;
}

/* out fires with whatever d fires with. */
static void forward(pb_deferred *d, login_op *op)
{
    if (!d) {
        pb_deferred_fail(op->out, PB_ECLOSED, PB_FAILURE_CONNECTION_LOST, "cannot send the call");
        return;
    }
    op->refs++;
    if (pb__deferred_add_full(d, forward_ok, forward_fail, op, op_free)) {
        op->refs--;
        pb_deferred_fail(op->out, PB_ENOMEM, "builtins.MemoryError", "");
    }
    pb_deferred_unref(d);
}

/* One call on r with positional arguments built by the caller in a. */
static pb_deferred *call(pb_ref *r, const char *method, pb_arena *a, pb_value *args)
{
    pb_errbuf err;
    pb_deferred *d = args ? pb_ref_call(r, method, args, NULL, NULL, &err) : NULL;
    pb_arena_free(a);
    return d;
}

static int got_challenge(pb_deferred *d, void *ud)
{
    login_op *op = ud;
    pb_value *v = pb_deferred_value(d);
    if (!v || (v->type != PB_TUPLE && v->type != PB_LIST) || pb_len(v) != 2 ||
        v->u.seq.items[0]->type != PB_BYTES || v->u.seq.items[1]->type != PB_REMOTE) {
        pb_deferred_fail(op->out, PB_EPROTO, PB_FAILURE_TYPE_ERROR,
                         "login() did not answer (challenge, challenger)");
        return 0;
    }
    pb_value *c = v->u.seq.items[0];
    pb_ref *challenger = (pb_ref *)v->u.seq.items[1]->u.h;
    uint8_t resp[16];
    pb_cred_response(op->password, op->plen, (const uint8_t *)c->u.s.ptr, c->u.s.len, resp);

    pb_arena *a = pb_arena_new(0);
    pb_value *args = a ? pb_tuple(a, 2) : NULL;
    pb_value *r = args ? pb_bytes(a, resp, 16) : NULL;
    pb_value *m = !r ? NULL : op->mind ? pb_object_value(a, op->mind) : pb_none(a);
    OPENSSL_cleanse(resp, sizeof resp);
    if (!m || pb_seq_append(a, args, r) || pb_seq_append(a, args, m))
        args = NULL;
    /* The challenger reference lives in d's result and is released with
     * it right after this callback: that is the decref Twisted sends. */
    forward(call(challenger, "respond", a, args), op);
    return 0;
}

static int login_failed(pb_deferred *d, void *ud)
{
    return forward_fail(d, ud);
}

pb_deferred *pb_broker_login(pb_broker *b, const char *user, size_t user_len, int user_as_text,
                             const char *password, pb_object *mind)
{
    pb_ref *root = b ? pb_broker_root(b) : NULL;
    if (!root || (password && !user))
        return NULL;
    login_op *op = calloc(1, sizeof *op);
    if (op)
        op->refs = 1;
    pb_arena *a = pb_arena_new(0);
    pb_deferred *out = pb_deferred_new();
    if (!op || !a || !out)
        goto fail;
    if (password) {
        op->plen = strlen(password);
        if (!(op->password = malloc(op->plen + 1)))
            goto fail;
        memcpy(op->password, password, op->plen + 1);
    }
    op->mind = mind ? pb_object_ref(mind) : NULL;
    op->out = pb_deferred_ref(out);

    pb_value *args = pb_tuple(a, 1), *x;
    if (!password)
        x = mind ? pb_object_value(a, mind) : pb_none(a);
    else
        x = user_as_text ? pb_str(a, user, user_len) : pb_bytes(a, user, user_len);
    if (!args || !x || pb_seq_append(a, args, x))
        goto fail;
    pb_deferred *d = call(root, password ? "login" : "loginAnonymous", a, args);
    a = NULL;
    if (!d)
        goto fail;
    if (!password) {
        forward(d, op);
    } else {
        op->refs++;
        if (pb__deferred_add_full(d, got_challenge, login_failed, op, op_free)) {
            op->refs--;
            pb_deferred_fail(out, PB_ENOMEM, "builtins.MemoryError", "");
        }
        pb_deferred_unref(d);
    }
    op_free(op); /* ours; the steps hold theirs */
    return out;
fail:
    pb_arena_free(a);
    if (op) {
        if (op->out)
            op_free(op); /* drops its reference to out */
        else
            free(op);
    }
    if (out)
        pb_deferred_unref(out);
    return NULL;
}

pb_deferred *pb_login(pb_conn *c, const char *user, const char *password, pb_object *mind)
{
    if (!c)
        return NULL;
    return pb_broker_login(pb_conn_broker(c), user, user ? strlen(user) : 0, 0, password, mind);
}

pb_deferred *pb_login_text(pb_conn *c, const char *user, const char *password, pb_object *mind)
{
    if (!c)
        return NULL;
    return pb_broker_login(pb_conn_broker(c), user, user ? strlen(user) : 0, 1, password, mind);
}
