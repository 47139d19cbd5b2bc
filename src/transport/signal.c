/*
 * signal.c - pb_run_until_signal: run a loop until SIGINT/SIGTERM asks the
 * application to stop.  The signal handles do not keep the loop alive by
 * themselves, so the loop also ends when the application closes
 * everything on its own.
 */
#include <signal.h>
#include "transport_int.h"

typedef struct sigrun {
    uv_signal_t sint, sterm;
    void (*stop)(void *ud);
    void *ud;
    int fired, closed;
} sigrun;

static void close_signals(sigrun *s) {
    if (s->closed) return;
    s->closed = 1;
    uv_close((uv_handle_t *)&s->sint, NULL);
    uv_close((uv_handle_t *)&s->sterm, NULL);
}

static void on_signal(uv_signal_t *h, int signum) {
    (void)signum;
    sigrun *s = h->data;
    /* Closing restores the default action: a second Ctrl-C kills. */
    close_signals(s);
    if (!s->fired) {
        s->fired = 1;
        if (s->stop) s->stop(s->ud);
    }
}

/* A write to a connection the peer has already reset raises SIGPIPE
 * (libuv writes with write(2)), whose default action would kill the whole
 * process: ignore it, so the write fails with EPIPE and only that
 * connection closes.  Python, hence Twisted, does the same.  An
 * application's own disposition is left alone.  Called by every listen and
 * connect entry point. */
void pb__ignore_sigpipe(void) {
    struct sigaction pipe_action;
    if (sigaction(SIGPIPE, NULL, &pipe_action) == 0 && pipe_action.sa_handler == SIG_DFL)
        signal(SIGPIPE, SIG_IGN);
}

int pb_run_until_signal(uv_loop_t *loop, void (*stop)(void *ud), void *ud) {
    if (!loop) return PB_EINVAL;
    pb__ignore_sigpipe();
    sigrun s = {.stop = stop, .ud = ud};
    uv_signal_init(loop, &s.sint);
    uv_signal_init(loop, &s.sterm);
    s.sint.data = s.sterm.data = &s;
    uv_signal_start(&s.sint, on_signal, SIGINT);
    uv_signal_start(&s.sterm, on_signal, SIGTERM);
    uv_unref((uv_handle_t *)&s.sint);
    uv_unref((uv_handle_t *)&s.sterm);
    uv_run(loop, UV_RUN_DEFAULT);
    close_signals(&s);
    uv_run(loop, UV_RUN_DEFAULT); /* the close callbacks */
    return 0;
}
