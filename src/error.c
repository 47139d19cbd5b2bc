/* error.c - names for error codes and the pb_errbuf helper. */
#include <stdarg.h>
#include <stdio.h>
#include "pb/error.h"

const char *pb_strerror(int code) {
    switch (code) {
    case PB_OK: return "success";
    case PB_ENOMEM: return "out of memory";
    case PB_EINVAL: return "invalid argument";
    case PB_ELIMIT: return "resource limit exceeded";
    case PB_EPROTO: return "protocol violation";
    case PB_ETYPEBYTE: return "invalid banana type byte";
    case PB_EPREFIX: return "banana prefix too long";
    case PB_ESTRLEN: return "banana string too long";
    case PB_ELISTLEN: return "banana list too long";
    case PB_EVOCAB: return "invalid banana vocabulary item";
    case PB_EDEPTH: return "nesting too deep";
    case PB_EINSECURE: return "insecure jelly";
    case PB_EJELLY: return "malformed jelly";
    case PB_EUTF8: return "invalid UTF-8";
    case PB_EUNSENDABLE: return "value cannot be sent";
    case PB_ECLOSED: return "connection closed";
    case PB_ETIMEOUT: return "timed out";
    case PB_ECANCELLED: return "cancelled";
    case PB_EREMOTE: return "remote failure";
    case PB_EIO: return "I/O error";
    case PB_EAUTH: return "unauthorized login";
    case PB_ENOTFOUND: return "not found";
    case PB_ETHIRDPARTY: return "reference belongs to another connection";
    case PB_EAGAIN: return "incomplete input";
    case PB_ESTATE: return "invalid state";
    default: return "unknown error";
    }
}

int pb_err_set(pb_errbuf *e, int code, const char *fmt, ...) {
    if (e) {
        va_list ap;
        e->code = code;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}
