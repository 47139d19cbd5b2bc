/*
 * tls.c - TLS (OpenSSL) between a libuv stream and a pb_broker.
 *
 * The SSL object never touches the socket: it reads ciphertext from one
 * memory BIO (filled from the read callback) and writes ciphertext into
 * another (drained into `out`, which conn_flush writes in place of the
 * broker's output).  So conn.c's write batching, back-pressure and
 * linger-on-close work unchanged over TLS:
 *
 *   socket --read--> rbio --SSL_read--> pb_broker_feed
 *   pb_broker_output --SSL_write--> wbio --> out --uv_try_write--> socket
 *
 * Plaintext is only taken from the broker while `out` holds less than
 * PB_TLS_OUT_CAP, so a peer that does not read leaves the backlog in the
 * broker, where pb_broker_want_read_paused() sees it.
 *
 * With TLS the broker is created only once the handshake is done (see
 * pb__conn_tls_up), so the root function already knows the verified peer
 * certificate subject.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "transport_int.h"

#define PB_TLS_OUT_CAP (64u * 1024)   /* ciphertext held before leaving plaintext in the broker */
#define PB_TLS_RECORD 16384           /* plaintext per SSL_write */

struct pb_tls {
    SSL *ssl;
    BIO *rbio, *wbio;               /* owned by ssl */
    uint8_t *out;                   /* ciphertext waiting for the socket */
    size_t out_off, out_len, out_cap;
    int is_server;
    unsigned started : 1, done : 1, want_shutdown : 1, shutdown_sent : 1, failed : 1;
    char *subject;                  /* verified peer subject (RFC 2253), or NULL */
};

static _Thread_local uint8_t g_plain[PB_TLS_RECORD];

/* ------------------------------------------------------------- errors */

/* "reason" of the oldest queued OpenSSL error (the queue is cleared);
 * returns that error. */
static unsigned long ssl_reason(char *buf, size_t n, const char *fallback) {
    unsigned long e = ERR_get_error();
    unsigned long last;
    while ((last = ERR_get_error()) != 0) (void)last; /* keep the first, drop the rest */
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    if (r) snprintf(buf, n, "%s", r);
    else if (e) ERR_error_string_n(e, buf, n);
    else snprintf(buf, n, "%s", fallback);
    return e;
}

/* Errors that mean a certificate was refused, by us or by the peer. */
static int cert_refused(unsigned long e) {
    if (ERR_GET_LIB(e) != ERR_LIB_SSL) return 0;
    switch (ERR_GET_REASON(e)) {
    case SSL_R_CERTIFICATE_VERIFY_FAILED:
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
    case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
    case SSL_R_TLSV1_ALERT_ACCESS_DENIED:
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
    case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
        return 1;
    default:
        return 0;
    }
}

static int ctx_fail(SSL_CTX *ctx, pb_errbuf *err, const char *what, const char *file) {
    char r[200];
    ssl_reason(r, sizeof r, "unknown error");
    if (ctx) SSL_CTX_free(ctx);
    if (file) return pb_err_set(err, PB_EINVAL, "TLS: %s %s: %s", what, file, r);
    return pb_err_set(err, PB_EINVAL, "TLS: %s: %s", what, r);
}

/* ------------------------------------------------------------- context */

void pb_tls_opts_default(pb_tls_opts *o) {
    memset(o, 0, sizeof *o);
    o->verify_peer = 1;
}

int pb__tls_ctx_new(const pb_tls_opts *o, int is_server, pb_tls_ctx **out, pb_errbuf *err) {
    *out = NULL;
    if (is_server && !o->cert_file)
        return pb_err_set(err, PB_EINVAL, "TLS: a server needs cert_file and key_file");
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(is_server ? TLS_server_method() : TLS_client_method());
    if (!ctx) return ctx_fail(NULL, err, "cannot create context", NULL);
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION))
        return ctx_fail(ctx, err, "cannot require TLS 1.2", NULL);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    if (is_server) SSL_CTX_set_num_tickets(ctx, 0); /* no resumption: nothing to send after */
    if (o->cert_file) {
        if (SSL_CTX_use_certificate_chain_file(ctx, o->cert_file) != 1)
            return ctx_fail(ctx, err, "cannot load certificate", o->cert_file);
        const char *key = o->key_file ? o->key_file : o->cert_file;
        if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
            return ctx_fail(ctx, err, "cannot load private key", key);
        if (SSL_CTX_check_private_key(ctx) != 1)
            return ctx_fail(ctx, err, "key does not match certificate", o->cert_file);
    }
    int verify = o->verify_peer || (is_server && o->require_client_cert);
    if (verify) {
        if (o->ca_file) {
            if (SSL_CTX_load_verify_locations(ctx, o->ca_file, NULL) != 1)
                return ctx_fail(ctx, err, "cannot load CA file", o->ca_file);
            if (is_server) {
                STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->ca_file);
                if (names) SSL_CTX_set_client_CA_list(ctx, names);
            }
        } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
            return ctx_fail(ctx, err, "cannot load the system CAs", NULL);
        }
        int mode = SSL_VERIFY_PEER;
        if (is_server && o->require_client_cert) mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
        SSL_CTX_set_verify(ctx, mode, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    ERR_clear_error();
    *out = ctx;
    return 0;
}

void pb__tls_ctx_free(pb_tls_ctx *ctx) { SSL_CTX_free(ctx); }

/* ------------------------------------------------------------ per conn */

int pb__tls_attach(pb_conn *c, pb_tls_ctx *ctx, int is_server, const char *server_name,
                   pb_errbuf *err) {
    struct pb_tls *t = calloc(1, sizeof *t);
    if (!t) return pb_err_set(err, PB_ENOMEM, "out of memory");
    ERR_clear_error();
    t->ssl = SSL_new(ctx);
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (!t->ssl || !t->rbio || !t->wbio) {
        BIO_free(t->rbio);
        BIO_free(t->wbio);
        SSL_free(t->ssl);
        free(t);
        return ctx_fail(NULL, err, "cannot create connection", NULL);
    }
    /* An empty rbio means "wait for more", not end of file. */
    BIO_set_mem_eof_return(t->rbio, -1);
    BIO_set_mem_eof_return(t->wbio, -1);
    SSL_set_bio(t->ssl, t->rbio, t->wbio);
    t->is_server = is_server;
    if (is_server) {
        SSL_set_accept_state(t->ssl);
    } else {
        SSL_set_connect_state(t->ssl);
        if (server_name && *server_name) {
            ASN1_OCTET_STRING *ip = a2i_IPADDRESS(server_name);
            int ok;
            if (ip) { /* an address: check the certificate's IP SANs, no SNI */
                ASN1_OCTET_STRING_free(ip);
                ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), server_name);
            } else {
                ok = SSL_set_tlsext_host_name(t->ssl, server_name) &&
                     SSL_set1_host(t->ssl, server_name);
            }
            if (!ok) {
                SSL_free(t->ssl);
                free(t);
                return ctx_fail(NULL, err, "bad server name", server_name);
            }
        }
    }
    c->tls = t;
    return 0;
}

void pb__tls_free(pb_conn *c) {
    struct pb_tls *t = c->tls;
    if (!t) return;
    SSL_free(t->ssl); /* frees both BIOs */
    free(t->out);
    free(t->subject);
    free(t);
    c->tls = NULL;
}

int pb__tls_handshake_done(const pb_conn *c) { return c->tls && c->tls->done; }

const char *pb__tls_subject(const pb_conn *c) { return c->tls ? c->tls->subject : NULL; }

/* Move what OpenSSL wrote into wbio to the end of out. */
static int drain_wbio(struct pb_tls *t) {
    size_t pending = BIO_ctrl_pending(t->wbio);
    if (!pending) return 0;
    if (t->out_off && t->out_off == t->out_len) t->out_off = t->out_len = 0;
    if (t->out_len + pending > t->out_cap) {
        if (t->out_off) { /* compact first */
            memmove(t->out, t->out + t->out_off, t->out_len - t->out_off);
            t->out_len -= t->out_off;
            t->out_off = 0;
        }
        if (t->out_len + pending > t->out_cap) {
            size_t ncap = t->out_cap ? t->out_cap : 16384;
            while (ncap < t->out_len + pending) ncap *= 2;
            uint8_t *n = realloc(t->out, ncap);
            if (!n) return PB_ENOMEM;
            t->out = n;
            t->out_cap = ncap;
        }
    }
    int r = BIO_read(t->wbio, t->out + t->out_len, (int)pending);
    if (r > 0) t->out_len += (size_t)r;
    return 0;
}

/* Close c for a TLS failure, with OpenSSL's reason.  graceful: send what
 * OpenSSL queued (the alert telling the peer why) before closing. */
static void tls_fail(pb_conn *c, const char *what) {
    struct pb_tls *t = c->tls;
    char reason[200], msg[400];
    unsigned long e = ssl_reason(reason, sizeof reason, "unexpected error");
    long vr = SSL_get_verify_result(t->ssl);
    int code = PB_EPROTO;
    if (vr != X509_V_OK) {
        snprintf(msg, sizeof msg, "%s %s failed: %s (%s)", what, c->peer[0] ? c->peer : "peer",
                 reason, X509_verify_cert_error_string(vr));
        code = PB_EAUTH;
    } else {
        snprintf(msg, sizeof msg, "%s %s failed: %s", what, c->peer[0] ? c->peer : "peer",
                 reason);
        if (cert_refused(e)) code = PB_EAUTH;
    }
    t->failed = 1;
    drain_wbio(t);
    pb__conn_close(c, code, msg, 1);
}

/* Handshake finished: remember the verified subject, start PB. */
static int handshake_done(pb_conn *c) {
    struct pb_tls *t = c->tls;
    t->done = 1;
    X509 *peer = SSL_get1_peer_certificate(t->ssl);
    if (peer && SSL_get_verify_result(t->ssl) == X509_V_OK &&
        (SSL_get_verify_mode(t->ssl) & SSL_VERIFY_PEER)) {
        BIO *m = BIO_new(BIO_s_mem());
        if (m && X509_NAME_print_ex(m, X509_get_subject_name(peer), 0, XN_FLAG_RFC2253) >= 0) {
            char *p;
            long n = BIO_get_mem_data(m, &p);
            t->subject = malloc((size_t)n + 1);
            if (t->subject) {
                memcpy(t->subject, p, (size_t)n);
                t->subject[n] = 0;
            }
        }
        BIO_free(m);
    }
    X509_free(peer);
    return pb__conn_tls_up(c);
}

void pb__tls_start(pb_conn *c) {
    struct pb_tls *t = c->tls;
    t->started = 1;
    if (t->is_server) return; /* waits for the ClientHello */
    ERR_clear_error();
    int r = SSL_do_handshake(t->ssl);
    if (r != 1 && SSL_get_error(t->ssl, r) != SSL_ERROR_WANT_READ) {
        tls_fail(c, "TLS handshake with");
        return;
    }
    drain_wbio(t);
}

void pb__tls_feed(pb_conn *c, const uint8_t *data, size_t n) {
    struct pb_tls *t = c->tls;
    if (t->failed) return;
    while (n) { /* a memory BIO takes everything (it grows) */
        int chunk = n > (1u << 30) ? (1 << 30) : (int)n;
        int w = BIO_write(t->rbio, data, chunk);
        if (w <= 0) {
            pb__conn_close(c, PB_ENOMEM, "out of memory", 0);
            return;
        }
        data += w;
        n -= (size_t)w;
    }
    ERR_clear_error();
    if (!t->done) {
        int r = SSL_do_handshake(t->ssl);
        drain_wbio(t);
        if (r != 1) {
            if (SSL_get_error(t->ssl, r) != SSL_ERROR_WANT_READ) tls_fail(c, "TLS handshake with");
            return;
        }
        if (handshake_done(c) < 0 || c->closing) return;
    }
    for (;;) {
        int r = SSL_read(t->ssl, g_plain, sizeof g_plain);
        if (r <= 0) {
            int e = SSL_get_error(t->ssl, r);
            drain_wbio(t);
            if (e == SSL_ERROR_WANT_READ) return;
            if (e == SSL_ERROR_ZERO_RETURN) {
                char msg[200];
                snprintf(msg, sizeof msg, "connection closed by %s (TLS close_notify)",
                         c->peer[0] ? c->peer : "peer");
                pb__conn_close(c, PB_ECLOSED, msg, 1);
                return;
            }
            /* TLS 1.3: a client learns here that the server refused its
             * certificate (the alert comes after its Finished). */
            tls_fail(c, c->state == CONN_UP ? "TLS connection with" : "TLS handshake with");
            return;
        }
        pb_broker_tick(c->broker, uv_now(c->loop));
        int rc = pb_broker_feed(c->broker, g_plain, (size_t)r);
        if (c->closing) return; /* the broker (or a handler) closed it */
        if (rc < 0) {
            const char *m = pb_broker_errmsg(c->broker);
            pb__conn_close(c, rc, m && *m ? m : pb_strerror(rc), 1);
            return;
        }
    }
}

size_t pb__tls_output(pb_conn *c, const uint8_t **data) {
    struct pb_tls *t = c->tls;
    if (t->done && !t->failed && !t->shutdown_sent && c->broker) {
        ERR_clear_error();
        while (t->out_len - t->out_off < PB_TLS_OUT_CAP) {
            const uint8_t *p;
            size_t n = pb_broker_output(c->broker, &p);
            if (!n) break;
            int r = SSL_write(t->ssl, p, n > PB_TLS_RECORD ? PB_TLS_RECORD : (int)n);
            if (r <= 0) { /* only after a fatal error, which closed c */
                t->failed = 1;
                ERR_clear_error();
                break;
            }
            pb_broker_output_consume(c->broker, (size_t)r);
            if (drain_wbio(t) < 0) break;
        }
        if (t->want_shutdown && !t->failed && !pb_broker_output(c->broker, &(const uint8_t *){0})) {
            SSL_shutdown(t->ssl); /* queues close_notify; we do not wait for the peer's */
            t->shutdown_sent = 1;
            ERR_clear_error();
        }
    }
    drain_wbio(t);
    *data = t->out ? t->out + t->out_off : NULL; /* no buffer yet: nothing pending */
    return t->out_len - t->out_off;
}

void pb__tls_consume(pb_conn *c, size_t n) {
    struct pb_tls *t = c->tls;
    t->out_off += n;
    if (t->out_off >= t->out_len) t->out_off = t->out_len = 0;
}

void pb__tls_shutdown(pb_conn *c) {
    if (c->tls && c->tls->done) c->tls->want_shutdown = 1;
}

const char *pb_conn_peer_subject(const pb_conn *c) { return c ? pb__tls_subject(c) : NULL; }

int pb_conn_is_tls(const pb_conn *c) { return c && c->tls; }
