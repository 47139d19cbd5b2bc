/*
 * test_tls.c - PB over TLS (OpenSSL), C client <-> C server in one process
 * over 127.0.0.1.  A throwaway CA, server and client certificates (and a
 * second, untrusted CA with a client of its own) are made with the
 * `openssl` command into a temporary directory at start.
 *
 * Peer modes for tests/interop/test_tls_twisted.sh:
 *   test_tls --make-certs DIR      only write those files
 *   test_tls --serve DIR [--require]   TLS server, "listening on HOST:PORT"
 *   test_tls --call PORT DIR [--no-cert] [--ca FILE]   echo/add/whoami as alice  Every test runs its own loop and ends by checking
 * uv_loop_close() succeeds (no handle left behind).
 */
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>
#include "pb/pb.h"
#include "test.h"
#include "loop_util.h"

/* ------------------------------------------------------------ certificates */

static char g_dir[256];
static char f_ca[300], f_ca_key[300], f_other_ca[300], f_srv[300], f_srv_key[300], f_cli[300],
    f_cli_key[300], f_mallory[300], f_mallory_key[300];

static int sh(const char *cmd) {
    int rc = system(cmd);
    if (rc != 0) fprintf(stderr, "command failed (%d): %s\n", rc, cmd);
    return rc;
}

/* CA, other CA, server (localhost, 127.0.0.1), client alice (our CA) and
 * client mallory (the other CA), EC P-256, valid for two days. */
static int make_certs(const char *dir) {
    char cmd[4096];
#define KEY "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
    snprintf(cmd, sizeof cmd,
             "set -e; cd '%s'; exec 2>openssl.log;"
             "openssl req -x509 " KEY " -keyout ca.key -out ca.pem -days 2"
             " -subj '/O=libpb test/CN=libpb test CA'"
             " -addext basicConstraints=critical,CA:TRUE -addext keyUsage=keyCertSign,cRLSign;"
             "openssl req -x509 " KEY " -keyout other-ca.key -out other-ca.pem -days 2"
             " -subj '/O=elsewhere/CN=other CA'"
             " -addext basicConstraints=critical,CA:TRUE -addext keyUsage=keyCertSign,cRLSign;"
             "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n'"
             " >server.ext;"
             "printf 'extendedKeyUsage=clientAuth\\n' >client.ext;"
             "openssl req " KEY " -keyout server.key -out server.csr -subj '/O=libpb test/CN=localhost';"
             "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial"
             " -out server.pem -days 2 -extfile server.ext;"
             "openssl req " KEY " -keyout client.key -out client.csr -subj '/O=libpb test/CN=alice';"
             "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial"
             " -out client.pem -days 2 -extfile client.ext;"
             "openssl req " KEY " -keyout mallory.key -out mallory.csr -subj '/O=libpb test/CN=mallory';"
             "openssl x509 -req -in mallory.csr -CA other-ca.pem -CAkey other-ca.key -CAcreateserial"
             " -out mallory.pem -days 2 -extfile client.ext",
             dir);
#undef KEY
    return sh(cmd);
}

static void cert_paths(const char *dir) {
    snprintf(f_ca, sizeof f_ca, "%s/ca.pem", dir);
    snprintf(f_ca_key, sizeof f_ca_key, "%s/ca.key", dir);
    snprintf(f_other_ca, sizeof f_other_ca, "%s/other-ca.pem", dir);
    snprintf(f_srv, sizeof f_srv, "%s/server.pem", dir);
    snprintf(f_srv_key, sizeof f_srv_key, "%s/server.key", dir);
    snprintf(f_cli, sizeof f_cli, "%s/client.pem", dir);
    snprintf(f_cli_key, sizeof f_cli_key, "%s/client.key", dir);
    snprintf(f_mallory, sizeof f_mallory, "%s/mallory.pem", dir);
    snprintf(f_mallory_key, sizeof f_mallory_key, "%s/mallory.key", dir);
}

/* ------------------------------------------------------------ the server */

/* whoami(): the verified client certificate subject, or None. */
static int root_whoami(pb_call *call, void *self, const pb_args *a) {
    const char *subj = pb_conn_peer_subject(pb_conn_of(pb_call_broker(call)));
    pb_arena *ar = pb_call_arena(call);
    return pb_call_return(call, subj ? pb_strz(ar, subj) : pb_none(ar));
}

static const pb_method root_methods[] = {
    {"echo", "v", root_echo, NULL},
    {"add", "ii", root_add, NULL},
    {"whoami", "", root_whoami, NULL},
    {NULL, NULL, NULL, NULL},
};
static const pb_class Root = {"Root", PB_REFERENCEABLE, root_methods, NULL};

/* What the root function saw: the subject is known before PB starts. */
static char g_root_subject[256];
static int g_roots, g_verbose_root;
static pb_object *root_of(pb_broker *b, void *ud) {
    const char *s = pb_conn_peer_subject(pb_conn_of(b));
    g_roots++;
    snprintf(g_root_subject, sizeof g_root_subject, "%s", s ? s : "(none)");
    if (g_verbose_root) printf("server: connection from %s\n", g_root_subject);
    return pb_object_ref(&g_root);
}

static pb_tls_opts server_tls(void) {
    pb_tls_opts t;
    pb_tls_opts_default(&t);
    t.cert_file = f_srv;
    t.key_file = f_srv_key;
    t.ca_file = f_ca;      /* for client certificates */
    t.verify_peer = 0;     /* no client certificate asked */
    return t;
}

static pb_tls_opts client_tls(void) {
    pb_tls_opts t;
    pb_tls_opts_default(&t);
    t.ca_file = f_ca;
    return t;
}

static pb_server *listen_tls(uv_loop_t *loop, const pb_tls_opts *t, unsigned hs_ms) {
    pb_server_opts so;
    pb_server_opts_default(&so);
    so.tls = t;
    pb_server *s = NULL;
    pb_errbuf err = {0, ""};
    int rc = pb_listen_tcp(loop, "127.0.0.1", 0, &so, root_of, NULL, &s, &err);
    CHECK_MSG(rc == 0, "listen: %s", err.msg);
    return s;
}

static void check_calls(uv_loop_t *loop, client *cl) {
    pb_ref *root = pb_conn_root(cl->conn);
    CHECK(root != NULL);
    if (!root) return;
    vresult r1, r2;
    vres_watch(&r1, pb_ref_callf(root, "echo", "s", "hello over TLS"));
    vres_watch(&r2, pb_ref_callf(root, "add", "ii", (int64_t)2, (int64_t)40));
    CHECK(wait_for(loop, &r2.fired, 5000));
    CHECK(wait_for(loop, &r1.fired, 5000));
    CHECK(!r1.failed && r1.v && pb_value_is(r1.v, "hello over TLS"));
    CHECK(!r2.failed && r2.v && r2.v->type == PB_INT && r2.v->u.i == 42);
    vres_free(&r1);
    vres_free(&r2);
}

/* whoami() over cl: the subject the server sees ("" for None). */
static void whoami(uv_loop_t *loop, client *cl, char *out, size_t n) {
    vresult r;
    snprintf(out, n, "?");
    vres_watch(&r, pb_ref_callf(pb_conn_root(cl->conn), "whoami", ""));
    if (wait_for(loop, &r.fired, 5000) && !r.failed && r.v) {
        if (r.v->type == PB_NONE) snprintf(out, n, "%s", "");
        else if (r.v->type == PB_STR || r.v->type == PB_BYTES)
            snprintf(out, n, "%.*s", (int)r.v->u.s.len, r.v->u.s.ptr);
    }
    vres_free(&r);
}

/* -------------------------------------------------------------- the tests */

TEST(tls_calls_get_answers) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_tls_opts st = server_tls(), ct = client_tls();
    pb_server *s = listen_tls(&loop, &st, 0);
    client cl;
    connect_to(&loop, s, "127.0.0.1", &ct, &cl);
    CHECK_MSG(cl.up, "%s", cl.why);
    if (cl.up) {
        CHECK(pb_conn_is_tls(cl.conn));
        /* the client verified the server: its subject is known */
        const char *subj = pb_conn_peer_subject(cl.conn);
        CHECK_MSG(subj && !strcmp(subj, "CN=localhost,O=libpb test"), "%s", subj ? subj : "NULL");
        check_calls(&loop, &cl);
        close_client(&loop, &cl);
        CHECK_EQ_INT(cl.lost, 1);
    }
    finish(&loop, s);
}

/* The name check: "localhost" is in the certificate, "example.com" not. */
TEST(server_name_must_match_certificate) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_tls_opts st = server_tls(), ct = client_tls();
    pb_server *s = listen_tls(&loop, &st, 0);
    client a, b;
    connect_to(&loop, s, "localhost", &ct, &a);
    CHECK_MSG(a.up, "%s", a.why);
    close_client(&loop, &a);
    ct.server_name = "example.com";
    connect_to(&loop, s, "127.0.0.1", &ct, &b);
    CHECK(!b.up);
    CHECK_EQ_INT(b.failed_status, PB_EAUTH);
    CHECK_MSG(strstr(b.why, "certificate verify failed") && strstr(b.why, "hostname mismatch"),
              "%s", b.why);
    finish(&loop, s);
}

/* A client trusting another CA refuses the server, saying why; the
 * server keeps serving others. */
TEST(wrong_ca_fails_verification_clearly) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_tls_opts st = server_tls(), bad = client_tls(), good = client_tls();
    bad.ca_file = f_other_ca;
    pb_server *s = listen_tls(&loop, &st, 0);
    client b, g;
    connect_to(&loop, s, "127.0.0.1", &bad, &b);
    CHECK(!b.up);
    CHECK_EQ_INT(b.failed_status, PB_EAUTH);
    CHECK_MSG(strstr(b.why, "TLS handshake with 127.0.0.1:") &&
                  strstr(b.why, "certificate verify failed") &&
                  strstr(b.why, "unable to get local issuer certificate"),
              "%s", b.why);
    connect_to(&loop, s, "127.0.0.1", &good, &g);
    CHECK_MSG(g.up, "%s", g.why);
    if (g.up) check_calls(&loop, &g);
    close_client(&loop, &g);
    finish(&loop, s);
}

/* require_client_cert: no certificate, or one from an unknown CA, fails;
 * alice's works and the server (root function and handlers) sees her
 * subject. */
TEST(client_cert_required) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_tls_opts st = server_tls(), none = client_tls(), alice = client_tls(),
                mallory = client_tls();
    st.verify_peer = 1;
    st.require_client_cert = 1;
    alice.cert_file = f_cli;
    alice.key_file = f_cli_key;
    mallory.cert_file = f_mallory;
    mallory.key_file = f_mallory_key;
    pb_server *s = listen_tls(&loop, &st, 0);
    client n, m, a;
    g_roots = 0;
    connect_to(&loop, s, "127.0.0.1", &none, &n);
    CHECK(!n.up);
    CHECK_MSG(n.failed_status == PB_EAUTH && strstr(n.why, "certificate required"), "%d %s",
              n.failed_status, n.why);
    connect_to(&loop, s, "127.0.0.1", &mallory, &m);
    CHECK(!m.up);
    CHECK_MSG(m.failed_status == PB_EAUTH && strstr(m.why, "unknown ca"), "%d %s",
              m.failed_status, m.why);
    CHECK_EQ_INT(g_roots, 0); /* PB never started for them */
    connect_to(&loop, s, "127.0.0.1", &alice, &a);
    CHECK_MSG(a.up, "%s", a.why);
    if (a.up) {
        CHECK_MSG(!strcmp(g_root_subject, "CN=alice,O=libpb test"), "%s", g_root_subject);
        char who[256];
        whoami(&loop, &a, who, sizeof who);
        CHECK_MSG(!strcmp(who, "CN=alice,O=libpb test"), "%s", who);
        check_calls(&loop, &a);
    }
    close_client(&loop, &a);
    finish(&loop, s);
}

/* verify_peer without require: a client may come without a certificate
 * (no subject) or with one (subject). */
TEST(client_cert_optional) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_tls_opts st = server_tls(), none = client_tls(), alice = client_tls();
    st.verify_peer = 1;
    alice.cert_file = f_cli;
    alice.key_file = f_cli_key;
    pb_server *s = listen_tls(&loop, &st, 0);
    client n, a;
    char who[256];
    connect_to(&loop, s, "127.0.0.1", &none, &n);
    CHECK_MSG(n.up, "%s", n.why);
    if (n.up) {
        whoami(&loop, &n, who, sizeof who);
        CHECK_MSG(!strcmp(who, ""), "%s", who);
    }
    connect_to(&loop, s, "127.0.0.1", &alice, &a);
    CHECK_MSG(a.up, "%s", a.why);
    if (a.up) {
        whoami(&loop, &a, who, sizeof who);
        CHECK_MSG(!strcmp(who, "CN=alice,O=libpb test"), "%s", who);
    }
    close_client(&loop, &n);
    close_client(&loop, &a);
    finish(&loop, s);
}

/* A plain-TCP PB client waits for the server's dialect offer, the TLS
 * server for a ClientHello: the handshake deadline ends it, and the
 * server goes on serving TLS clients. */
TEST(plaintext_client_refused_cleanly) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_tls_opts st = server_tls(), ct = client_tls();
    st.handshake_timeout_ms = 300;
    pb_server *s = listen_tls(&loop, &st, 300);
    client p, g;
    g_roots = 0;
    connect_to(&loop, s, "127.0.0.1", NULL, &p);
    CHECK(!p.up);
    CHECK_MSG(p.failed_status == PB_ECLOSED || p.failed_status == PB_EIO, "%d %s",
              p.failed_status, p.why);
    CHECK_EQ_INT(g_roots, 0);
    CHECK_EQ_INT(pb_server_connections(s), 0);
    connect_to(&loop, s, "127.0.0.1", &ct, &g);
    CHECK_MSG(g.up, "%s", g.why);
    if (g.up) check_calls(&loop, &g);
    close_client(&loop, &g);
    finish(&loop, s);
}

/* A raw client that sends garbage instead of a ClientHello is dropped at
 * once with a TLS alert; the server carries on. */
TEST(garbage_instead_of_tls_is_dropped) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_tls_opts st = server_tls(), ct = client_tls();
    pb_server *s = listen_tls(&loop, &st, 0);
    static char junk[] = "GET / HTTP/1.0\r\n\r\n";
    CHECK(raw_send(&loop, pb_server_port(s), junk, sizeof junk - 1, 3000));
    client g;
    connect_to(&loop, s, "127.0.0.1", &ct, &g);
    CHECK_MSG(g.up, "%s", g.why);
    close_client(&loop, &g);
    finish(&loop, s);
}

/* A TLS client against a plain server fails with OpenSSL's reason. */
TEST(tls_client_against_plain_server_fails_clearly) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_server *s = NULL;
    pb_errbuf err = {0, ""};
    CHECK(pb_listen_tcp(&loop, "127.0.0.1", 0, NULL, root_of, NULL, &s, &err) == 0);
    pb_tls_opts ct = client_tls();
    client c;
    connect_to(&loop, s, "127.0.0.1", &ct, &c);
    CHECK(!c.up);
    CHECK_MSG(c.failed_status == PB_EPROTO && strstr(c.why, "TLS handshake with"), "%d %s",
              c.failed_status, c.why);
    finish(&loop, s);
}

/* Values bigger than a TLS record and than the ciphertext buffer cross
 * intact, many calls pipelined. */
TEST(large_values_and_many_calls_over_tls) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_tls_opts st = server_tls(), ct = client_tls();
    pb_server *s = listen_tls(&loop, &st, 0);
    client cl;
    connect_to(&loop, s, "127.0.0.1", &ct, &cl);
    CHECK_MSG(cl.up, "%s", cl.why);
    if (cl.up) {
        enum { BIG = 600 * 1024, N = 8, M = 500 };
        char *big = malloc(BIG + 1);
        for (size_t i = 0; i < BIG; i++) big[i] = (char)('a' + i % 26);
        big[BIG] = 0;
        pb_ref *root = pb_conn_root(cl.conn);
        static vresult rb[N], rs[M];
        for (int i = 0; i < N; i++) vres_watch(&rb[i], pb_ref_callf(root, "echo", "s", big));
        for (int i = 0; i < M; i++)
            vres_watch(&rs[i], pb_ref_callf(root, "add", "ii", (int64_t)i, (int64_t)1));
        CHECK(wait_for(&loop, &rs[M - 1].fired, 20000));
        CHECK(wait_for(&loop, &rb[N - 1].fired, 20000));
        int ok = 0;
        for (int i = 0; i < N; i++) {
            ok += rb[i].fired && !rb[i].failed && rb[i].v && rb[i].v->u.s.len == BIG &&
                  !memcmp(rb[i].v->u.s.ptr, big, BIG);
            vres_free(&rb[i]);
        }
        CHECK_EQ_INT(ok, N);
        ok = 0;
        for (int i = 0; i < M; i++) {
            ok += rs[i].fired && !rs[i].failed && rs[i].v && rs[i].v->u.i == i + 1;
            vres_free(&rs[i]);
        }
        CHECK_EQ_INT(ok, M);
        free(big);
    }
    close_client(&loop, &cl);
    finish(&loop, s);
}

/* Bad settings fail at listen/connect time with OpenSSL's reason. */
TEST(bad_files_fail_at_setup) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_server_opts so;
    pb_server_opts_default(&so);
    pb_tls_opts t = server_tls();
    t.cert_file = "/nonexistent/cert.pem";
    so.tls = &t;
    pb_server *s = NULL;
    pb_errbuf err = {0, ""};
    CHECK(pb_listen_tcp(&loop, "127.0.0.1", 0, &so, root_of, NULL, &s, &err) == PB_EINVAL);
    CHECK_MSG(strstr(err.msg, "cannot load certificate /nonexistent/cert.pem"), "%s", err.msg);
    t = server_tls();
    t.key_file = f_cli_key; /* alice's key with the server's certificate */
    CHECK(pb_listen_tcp(&loop, "127.0.0.1", 0, &so, root_of, NULL, &s, &err) == PB_EINVAL);
    CHECK_MSG(strstr(err.msg, "does not match") || strstr(err.msg, "values mismatch"), "%s",
              err.msg);
    t = server_tls();
    t.cert_file = NULL;
    CHECK(pb_listen_tcp(&loop, "127.0.0.1", 0, &so, root_of, NULL, &s, &err) == PB_EINVAL);
    pb_tls_opts ct = client_tls();
    ct.ca_file = "/nonexistent/ca.pem";
    pb_client_opts co;
    pb_client_opts_default(&co);
    co.tls = &ct;
    client c;
    memset(&c, 0, sizeof c);
    CHECK(pb_connect_tcp(&loop, "127.0.0.1", 9, &co, on_connect, on_lost, &c, &err) == PB_EINVAL);
    CHECK_MSG(strstr(err.msg, "cannot load CA file"), "%s", err.msg);
    finish(&loop, NULL);
    CHECK(!c.settled); /* no callback after a failed call */
}

/* Both sides may close at once, mid-traffic; nothing leaks (ASan). */
TEST(close_from_either_side) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_tls_opts st = server_tls(), ct = client_tls();
    pb_server *s = listen_tls(&loop, &st, 0);
    client a, b;
    connect_to(&loop, s, "127.0.0.1", &ct, &a);
    connect_to(&loop, s, "127.0.0.1", &ct, &b);
    CHECK(a.up && b.up);
    if (a.up && b.up) {
        vresult r;
        vres_watch(&r, pb_ref_callf(pb_conn_root(a.conn), "echo", "s", "x"));
        pb_conn_close(a.conn); /* the call fails: closed before the answer */
        CHECK(wait_for(&loop, &a.lost, 3000));
        CHECK(r.fired);
        vres_free(&r);
        CHECK(wait_for(&loop, &b.up, 10));
        check_calls(&loop, &b);
    }
    /* server close: b learns it (close_notify or EOF) */
    g_server_closed = 0;
    pb_server_close(s, on_server_closed, NULL);
    CHECK(wait_for(&loop, &b.lost, 3000));
    CHECK(wait_for(&loop, &g_server_closed, 3000));
    finish(&loop, NULL);
}

/* ------------------------------------------- peer modes for interop tests */

static void stop_server(void *s) { pb_server_close(s, NULL, NULL); }

/* --serve CERTDIR [--require]: a TLS server on 127.0.0.1 (free port). */
static int serve_mode(int require) {
    uv_loop_t *loop = uv_default_loop();
    pb_tls_opts st = server_tls();
    st.verify_peer = require;
    st.require_client_cert = require;
    pb_server_opts so;
    pb_server_opts_default(&so);
    so.tls = &st;
    pb_server *s = NULL;
    pb_errbuf err = {0, ""};
    if (pb_listen_tcp(loop, "127.0.0.1", 0, &so, root_of, NULL, &s, &err)) {
        fprintf(stderr, "listen: %s\n", err.msg);
        return 1;
    }
    g_verbose_root = 1;
    printf("listening on 127.0.0.1:%d\n", pb_server_port(s));
    pb_run_until_signal(loop, stop_server, s);
    uv_loop_close(loop);
    return 0;
}

/* --call PORT CERTDIR [--no-cert] [--ca FILE]: echo, add, whoami as alice. */
static int call_mode(int port, int with_cert, const char *ca) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    pb_tls_opts ct = client_tls();
    if (ca) ct.ca_file = ca;
    if (with_cert) {
        ct.cert_file = f_cli;
        ct.key_file = f_cli_key;
    }
    pb_client_opts o;
    pb_client_opts_default(&o);
    o.tls = &ct;
    o.connect_timeout_ms = 5000;
    client cl;
    memset(&cl, 0, sizeof cl);
    pb_errbuf err = {0, ""};
    int status = 1;
    if (pb_connect_tcp(&loop, "localhost", port, &o, on_connect, on_lost, &cl, &err)) {
        printf("failed: %s\n", err.msg);
    } else if (!wait_for(&loop, &cl.settled, 8000) || !cl.up) {
        printf("failed: %s (%s)\n", cl.why, pb_strerror(cl.failed_status));
    } else {
        const char *subj = pb_conn_peer_subject(cl.conn);
        printf("server certificate: %s\n", subj ? subj : "(none)");
        pb_ref *root = pb_conn_root(cl.conn);
        vresult r1, r2;
        vres_watch(&r1, pb_ref_callf(root, "echo", "s", "hello over TLS"));
        vres_watch(&r2, pb_ref_callf(root, "add", "ii", (int64_t)2, (int64_t)40));
        wait_for(&loop, &r2.fired, 5000);
        wait_for(&loop, &r1.fired, 5000);
        if (r1.fired && !r1.failed && r1.v && r1.v->type == PB_STR)
            printf("echo: %.*s\n", (int)r1.v->u.s.len, r1.v->u.s.ptr);
        if (r2.fired && !r2.failed && r2.v && r2.v->type == PB_INT)
            printf("add: %lld\n", (long long)r2.v->u.i);
        char who[256];
        whoami(&loop, &cl, who, sizeof who);
        printf("whoami: %s\n", *who ? who : "None");
        status = r1.fired && !r1.failed && r2.fired && !r2.failed ? 0 : 1;
        vres_free(&r1);
        vres_free(&r2);
        close_client(&loop, &cl);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return status;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 3 && !strcmp(argv[1], "--make-certs")) {
        mkdir(argv[2], 0700);
        return make_certs(argv[2]) ? 1 : 0;
    }
    if (argc >= 3 && !strcmp(argv[1], "--serve")) {
        cert_paths(argv[2]);
        pb_object_init(&g_root, &Root);
        return serve_mode(argc >= 4 && !strcmp(argv[3], "--require"));
    }
    if (argc >= 4 && !strcmp(argv[1], "--call")) {
        const char *ca = NULL;
        int with_cert = 1;
        for (int i = 4; i < argc; i++) {
            if (!strcmp(argv[i], "--no-cert")) with_cert = 0;
            else if (!strcmp(argv[i], "--ca") && i + 1 < argc) ca = argv[++i];
        }
        cert_paths(argv[3]);
        return call_mode(atoi(argv[2]), with_cert, ca);
    }
    snprintf(g_dir, sizeof g_dir, "/tmp/pb-tls-test.XXXXXX");
    if (!mkdtemp(g_dir) || make_certs(g_dir)) {
        fprintf(stderr, "cannot make test certificates\n");
        return 1;
    }
    cert_paths(g_dir);
    pb_object_init(&g_root, &Root);
    RUN(tls_calls_get_answers);
    RUN(server_name_must_match_certificate);
    RUN(wrong_ca_fails_verification_clearly);
    RUN(client_cert_required);
    RUN(client_cert_optional);
    RUN(plaintext_client_refused_cleanly);
    RUN(garbage_instead_of_tls_is_dropped);
    RUN(tls_client_against_plain_server_fails_clearly);
    RUN(large_values_and_many_calls_over_tls);
    RUN(bad_files_fail_at_setup);
    RUN(close_from_either_side);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", g_dir);
    return TEST_SUMMARY();
}
