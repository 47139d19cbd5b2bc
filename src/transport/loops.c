/*
 * loops.c - pb_loop_post: run a function on another event loop's thread.
 *
 * Every loop of a multi-loop server has a mailbox: a uv_async_t on that
 * loop and a FIFO of (fn, ud) items.  Posting appends to the FIFO and
 * wakes the loop; the loop's async callback takes the whole FIFO at once
 * and runs it in order.  One global mutex guards the registry of mailboxes
 * (found by loop) and every FIFO: posts are short, and per (sender,
 * target) order follows from the single FIFO per target.  A mailbox being
 * closed leaves the registry first, so later posts fail with PB_ECLOSED;
 * what was queued before still runs.
 */
#include <pthread.h>
#include <stdlib.h>
#include "transport_int.h"

typedef struct post_item {
    void (*fn)(void *ud);
    void *ud;
    struct post_item *next;
} post_item;

struct pb_mailbox {
    uv_async_t async;
    uv_loop_t *loop;
    post_item *head, *tail; /* guarded by g_mb_mu */
    pb_mailbox *next;       /* in the registry (guarded by g_mb_mu) */
    void (*done)(void *ud);
    void *done_ud;
};

static pthread_mutex_t g_mb_mu = PTHREAD_MUTEX_INITIALIZER;
static pb_mailbox *g_mbs;

static void mb_run(pb_mailbox *m) {
    pthread_mutex_lock(&g_mb_mu);
    post_item *it = m->head;
    m->head = m->tail = NULL;
    pthread_mutex_unlock(&g_mb_mu);
    while (it) {
        post_item *next = it->next;
        it->fn(it->ud);
        free(it);
        it = next;
    }
}

static void on_mb_async(uv_async_t *h) { mb_run(h->data); }

pb_mailbox *pb__mailbox_new(uv_loop_t *loop, int keep_alive) {
    pb_mailbox *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->loop = loop;
    if (uv_async_init(loop, &m->async, on_mb_async) < 0) {
        free(m);
        return NULL;
    }
    m->async.data = m;
    if (!keep_alive) uv_unref((uv_handle_t *)&m->async);
    pthread_mutex_lock(&g_mb_mu);
    m->next = g_mbs;
    g_mbs = m;
    pthread_mutex_unlock(&g_mb_mu);
    return m;
}

static void on_mb_closed(uv_handle_t *h) {
    pb_mailbox *m = h->data;
    void (*done)(void *) = m->done;
    void *ud = m->done_ud;
    free(m);
    if (done) done(ud);
}

void pb__mailbox_close(pb_mailbox *m, void (*done)(void *ud), void *ud) {
    pthread_mutex_lock(&g_mb_mu);
    for (pb_mailbox **p = &g_mbs; *p; p = &(*p)->next)
        if (*p == m) {
            *p = m->next;
            break;
        }
    pthread_mutex_unlock(&g_mb_mu);
    /* Nothing can be added any more: run what was accepted (it may post
     * elsewhere, or here and be refused). */
    while (m->head) mb_run(m);
    m->done = done;
    m->done_ud = ud;
    uv_close((uv_handle_t *)&m->async, on_mb_closed);
}

int pb_loop_post(uv_loop_t *target, void (*fn)(void *ud), void *ud) {
    if (!target || !fn) return PB_EINVAL;
    post_item *it = malloc(sizeof *it);
    if (!it) return PB_ENOMEM;
    it->fn = fn;
    it->ud = ud;
    it->next = NULL;
    pthread_mutex_lock(&g_mb_mu);
    pb_mailbox *m = g_mbs;
    while (m && m->loop != target) m = m->next;
    if (!m) {
        pthread_mutex_unlock(&g_mb_mu);
        free(it);
        return PB_ECLOSED;
    }
    if (m->tail) m->tail->next = it;
    else m->head = it;
    m->tail = it;
    /* under the lock: the mailbox cannot be closed (and its handle freed)
     * between finding it and waking its loop */
    uv_async_send(&m->async);
    pthread_mutex_unlock(&g_mb_mu);
    return 0;
}
