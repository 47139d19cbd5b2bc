/** @file
 * pb/error.h - error codes shared by every libpb layer.
 *
 * Every libpb function that can fail returns an int: 0 (PB_OK) on success,
 * a negative PB_E* code on failure.  pb_strerror() names a code.  Where a
 * human needs to know *where* and *why*, functions also fill an optional
 * pb_errbuf (may be NULL) with a one-line message.
 */
#ifndef PB_ERROR_H
#define PB_ERROR_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    PB_OK = 0,
    PB_ENOMEM = -1,        /**< allocation failed */
    PB_EINVAL = -2,        /**< caller passed a bad argument */
    PB_ELIMIT = -3,        /**< a configured resource limit was hit */
    PB_EPROTO = -4,        /**< peer violated the PB protocol */
    PB_ETYPEBYTE = -5,     /**< banana: invalid type byte (0x88..0xff) */
    PB_EPREFIX = -6,       /**< banana: more than 64 bytes of prefix */
    PB_ESTRLEN = -7,       /**< banana: string longer than 640 KiB */
    PB_ELISTLEN = -8,      /**< banana: list longer than 640 Ki elements */
    PB_EVOCAB = -9,        /**< banana: unknown vocabulary index, or vocab in 'none' dialect */
    PB_EDEPTH = -10,       /**< nesting deeper than the configured limit */
    PB_EINSECURE = -11,    /**< jelly: class/tag not allowed (Twisted's InsecureJelly) */
    PB_EJELLY = -12,       /**< jelly: malformed s-expression */
    PB_EUTF8 = -13,        /**< text that is not valid UTF-8 */
    PB_EUNSENDABLE = -14,  /**< value cannot be encoded (too large, wrong kind) */
    PB_ECLOSED = -15,      /**< connection closed / lost */
    PB_ETIMEOUT = -16,     /**< operation timed out */
    PB_ECANCELLED = -17,   /**< operation cancelled locally */
    PB_EREMOTE = -18,      /**< the peer answered with a failure */
    PB_EIO = -19,          /**< operating-system I/O error */
    PB_EAUTH = -20,        /**< login refused */
    PB_ENOTFOUND = -21,    /**< no such object / method / key */
    PB_ETHIRDPARTY = -22,  /**< a reference was used on a connection it did not come from */
    PB_EAGAIN = -23,       /**< incomplete: feed more bytes */
    PB_ESTATE = -24        /**< call not valid in the object's current state */
};

/** Name of an error code ("out of memory", ...).  Never NULL; static storage. */
const char *pb_strerror(int code);

/** Human-readable detail for the last failure of a call that took it. */
typedef struct pb_errbuf {
    int code;      /**< the PB_E* code */
    char msg[240]; /**< NUL-terminated one-line message */
} pb_errbuf;

/** Set code and printf-style message on e (e may be NULL).  Returns code. */
int pb_err_set(pb_errbuf *e, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

#ifdef __cplusplus
}
#endif
#endif
