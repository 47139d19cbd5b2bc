/*
 * ratelimit.h - internal: how log lines about hostile peers are kept from
 * flooding the log, shared by the transport's limit log (server.c) and the
 * portal's login log (cred/portal.c).  A window of window_ms opens at the
 * first line; at most max lines pass in it; the first line let through
 * afterwards learns how many were held back.  Not thread-safe: callers
 * sharing one across threads lock around it.  Header-only; not public API.
 */
#ifndef PB_RATELIMIT_H
#define PB_RATELIMIT_H

#include <stdint.h>

typedef struct pb_ratelimit {
    uint64_t start;        /* this window's start (+1); 0: no window yet */
    unsigned lines;        /* lines let through in it */
    unsigned long dropped; /* lines held back since the last one let through */
} pb_ratelimit;

/* At now_ms (any fixed origin): 1 to log this line, with *dropped set to
 * how many were held back before it; 0 to drop it (and count it). */
static inline int pb__ratelimit(pb_ratelimit *r, uint64_t now_ms, uint64_t window_ms,
                                unsigned max, unsigned long *dropped) {
    uint64_t now = now_ms + 1;
    if (!r->start || now - r->start >= window_ms) {
        r->start = now;
        r->lines = 0;
    }
    if (r->lines >= max) {
        r->dropped++;
        return 0;
    }
    r->lines++;
    *dropped = r->dropped;
    r->dropped = 0;
    return 1;
}

#endif
