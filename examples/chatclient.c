/*
 * chatclient - log in with a mind, join a group, talk (the C counterpart
 * of chatclient.py).
 *
 *   chatclient [--user alice --password 1234 --group '#NeedAFourth']
 *              [--message M]
 *
 * Every message the server prints to us goes to stdout as it arrives
 * ("<NAME> says: MESSAGE").  With --message, sends M and exits once it
 * has come back; otherwise sends each non-empty line of stdin and exits at
 * the end of input, once every send has been answered.  Progress and
 * errors go to stderr.
 */
#include <unistd.h>

#include "common.h"

static ex_args args;
static pb_ref *avatar, *group; /* kept: dropping the avatar would log us out */
static int sends_pending, input_done, echoed, reading;
static uv_fs_t read_req;
static char read_buf[4096];
static pb_buf line;

static void maybe_finish(void)
{
    if (args.message ? echoed && !sends_pending : input_done && !sends_pending)
        ex_done(0);
}

/* The mind: the server calls print(message) on it. */
static int client_print(pb_call *call, void *self, const pb_args *a)
{
    const char *text = pb_arg_str(a, 0, "");
    printf("%s\n", text);
    if (args.message) {
        size_t n = strlen(text), m = strlen(args.message);
        if (n >= m + 8 && !strcmp(text + n - m, args.message) &&
            !strncmp(text + n - m - 8, "> says: ", 8)) {
            echoed = 1;
            maybe_finish();
        }
    }
    return pb_call_return_none(call);
}

static const pb_method client_methods[] = {{"print", "v:message", client_print, NULL},
                                           {NULL, NULL, NULL, NULL}};
static const pb_class Client = {"Client", PB_REFERENCEABLE, client_methods, NULL};
static pb_object mind;

static int sent(pb_deferred *d, void *ud)
{
    sends_pending--;
    maybe_finish();
    return 0;
}

static void send_message(const char *text)
{
    sends_pending++;
    ex_then(pb_ref_callf(group, "send", "s", text), sent, "send");
}

/* stdin, read through libuv's thread pool so pipes, files and terminals all work. */
static void read_stdin(void);

static void got_input(uv_fs_t *req)
{
    ssize_t n = req->result;
    uv_fs_req_cleanup(req);
    reading = 0;
    if (ex_finished)
        return;
    if ((n > 0 && pb_buf_append(&line, read_buf, (size_t)n)) || pb_buf_reserve(&line, 1)) {
        fprintf(stderr, "out of memory\n");
        ex_done(1);
        return;
    }
    size_t start = 0;
    for (size_t i = 0; i < line.len; i++) {
        if (line.data[i] != '\n' && (n > 0 || i + 1 < line.len))
            continue;
        size_t end = line.data[i] == '\n' ? i : i + 1;
        if (end > start && line.data[end - 1] == '\r')
            end--;
        if (end > start) {
            line.data[end] = 0;
            send_message((const char *)line.data + start);
        }
        start = i + 1;
    }
    pb_buf_consume(&line, start);
    if (n > 0) {
        read_stdin();
    } else {
        if (n < 0)
            fprintf(stderr, "reading stdin: %s\n", uv_strerror((int)n));
        input_done = 1;
        maybe_finish();
    }
}

static void read_stdin(void)
{
    uv_buf_t b = uv_buf_init(read_buf, sizeof read_buf);
    reading = 1;
    uv_fs_read(uv_default_loop(), &read_req, 0, &b, 1, -1, got_input);
}

static int joined(pb_deferred *d, void *ud)
{
    group = pb_ref_ref((pb_ref *)pb_deferred_value(d)->u.h);
    fprintf(stderr, "joined group %s\n", args.group);
    if (args.message)
        send_message(args.message);
    else
        read_stdin();
    return 0;
}

static int connected(pb_deferred *d, void *ud)
{
    avatar = pb_ref_ref((pb_ref *)pb_deferred_value(d)->u.h);
    fprintf(stderr, "connected, joining group %s\n", args.group);
    ex_then(pb_ref_callf(avatar, "joinGroup", "s", args.group), joined, "joinGroup");
    return 0;
}

static void up(pb_conn *c)
{
    ex_then(pb_login(c, args.user, args.password, &mind), connected, "login");
}

static void release(void)
{
    if (reading) { /* a blocked read of stdin cannot be cancelled: leave now */
        fflush(stdout);
        _exit(ex_status);
    }
    if (group)
        pb_ref_unref(group);
    if (avatar)
        pb_ref_unref(avatar);
    group = avatar = NULL;
}

int main(int argc, char **argv)
{
    ex_parse(argc, argv, &args);
    pb_object_init(&mind, &Client);
    pb_buf_init(&line);
    ex_on_done = release;
    int rc = ex_client(&args, up);
    pb_buf_free(&line);
    return rc;
}
