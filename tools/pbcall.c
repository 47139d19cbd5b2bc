/*
 * pbcall - call methods on a Perspective Broker server from the command
 * line, in the spirit of grpcurl.  See `pbcall --help` or docs/man/pbcall.1.
 *
 *   pbcall [OPTION]... HOST:PORT [METHOD [ARG]... [-- METHOD [ARG]...]...]
 *
 * One connection; optionally a cred login (username + password, or
 * anonymous), whose avatar receives the first call; otherwise the first
 * call goes to the server's root object.  Every later call (after "--")
 * goes to the reference the previous call answered.  Arguments are JSON
 * (pb_value_from_json); the last answer is printed as JSON
 * (pb_value_to_json) or Python-style (pb_value_repr).
 *
 * The client passes a mind when it logs in (the object servers call back,
 * like chatclient's print); with --listen every call made on it is printed
 * as one JSON line.  Its method table has one "*" entry, so it accepts
 * every method name.
 *
 * Exit status: 0 done; 1 a call failed (remote failure or timeout);
 * 2 connection or login failure; 3 usage error or bad argument; 130
 * interrupted before the calls were done.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "pb/pb.h"

enum { EXIT_OK = 0, EXIT_CALL = 1, EXIT_CONN = 2, EXIT_USAGE = 3, EXIT_INTR = 130 };

static const char usage_text[] =
"Usage: pbcall [OPTION]... HOST:PORT [METHOD [ARG]... [-- METHOD [ARG]...]...]\n"
"       pbcall [OPTION]... --unix PATH [METHOD [ARG]... [-- METHOD [ARG]...]...]\n"
"Call methods on a Twisted Perspective Broker (PB) server and print the answer.\n";

static const char help_text[] =
"\n"
"pbcall connects to HOST:PORT (a name, an IPv4 address or [IPv6]:PORT), or\n"
"to a UNIX socket with --unix, runs the PB handshake and, with --user or\n"
"--anonymous, logs in through cred.  The first METHOD is called on the\n"
"avatar the login returned, or, without a login, on the server's root\n"
"object (what Twisted's getRootObject() gives).  Each \"--\" starts another\n"
"call, made on the reference the previous call answered: that is how a\n"
"client follows references, e.g. joinGroup returns a group, then send is\n"
"called on that group.  The answer of the last call is printed on\n"
"standard output, one line.  With no METHOD, pbcall only connects (and\n"
"logs in), which checks that a server and a login work.\n"
"\n"
"Arguments (each one shell word):\n"
"  JSON            a positional argument, as JSON: 12, 1.5, true, null,\n"
"                  '\"text\"', '[1, 2]', '{\"k\": \"v\"}'.  JSON strings are\n"
"                  sent as str (unicode), arrays as lists, objects as dicts\n"
"                  with str keys; {\"$bytes\": \"BASE64\"} is sent as bytes.\n"
"                  Remember the quotes: a JSON string needs them inside the\n"
"                  shell's, as in '\"hello\"'.\n"
"  NAME=JSON       a keyword argument (NAME is a Python identifier), e.g.\n"
"                  allowMattress=false.\n"
"  --              ends this call's arguments; the next word is a METHOD\n"
"                  called on the reference this call answers.\n"
"Options must come before HOST:PORT; everything after it is calls.\n"
"\n"
"Login:\n"
"  -u, --user USER          log in as USER with PB's challenge-response; the\n"
"                           password comes from --password-file, else the\n"
"                           PB_PASSWORD environment variable, else a prompt\n"
"                           on the terminal (not echoed).\n"
"  -p, --password-file FILE read the password from the first line of FILE\n"
"                           (- for standard input); a final newline is not\n"
"                           part of it.\n"
"  -a, --anonymous          log in anonymously (loginAnonymous).\n"
"  Without --user or --anonymous there is no login: calls go to the root.\n"
"  -U, --user-text          send the username as str instead of bytes (both\n"
"                           work with libpb servers; Twisted's checkers want\n"
"                           bytes, the default).\n"
"\n"
"Calls and output:\n"
"  -b, --bytes              send every JSON string in the arguments as bytes\n"
"                           instead of str (dict keys too; keyword names stay\n"
"                           str).  For servers that expect bytes.\n"
"  -r, --repr               print answers Python-style (pb_value_repr), e.g.\n"
"                           ('a', b'b', None), instead of JSON.\n"
"  -t, --timeout MS         give up on each call (and on the connect and the\n"
"                           login) after MS milliseconds; default: no limit\n"
"                           for calls, 10000 for the connect.\n"
"  -v, --verbose            progress on standard error: connected, logged in,\n"
"                           each call and each intermediate answer.\n"
"JSON output: None is null, str and UTF-8 bytes are strings, other bytes\n"
"{\"$bytes\": \"BASE64\"}, tuples, lists and sets are arrays, dicts with str or\n"
"bytes keys are objects (others arrays of [key, value] pairs).  A value with\n"
"no JSON form (a reference, a Copyable instance, a cycle) is printed as\n"
"{\"$repr\": \"TEXT\"}.\n"
"\n"
"Listening (the client's mind):\n"
"  -l, --listen             after the calls, stay connected and print every\n"
"                           call the server makes on the client's mind, one\n"
"                           JSON line each: {\"method\":\"print\",\"args\":\n"
"                           [...],\"kwargs\":{...}} (with --repr:\n"
"                           print('text',) {}).  The mind answers None.\n"
"                           Runs until SIGINT/SIGTERM (exit 0), the end of\n"
"                           --listen-for, or the server closing (exit 2).\n"
"  -L, --listen-for SECONDS as --listen, then exit 0 after SECONDS.\n"
"  The mind is passed with every login (servers such as the chat server\n"
"  need one); without --listen, calls on it are answered but not printed.\n"
"\n"
"Transport:\n"
"  -x, --unix PATH          connect to the UNIX socket PATH instead of\n"
"                           HOST:PORT (which is then left out).\n"
"      --tls                speak TLS (1.2 or later); implied by the next four.\n"
"                           The server's certificate is always verified: it\n"
"                           must chain to --ca (default: the system's CAs)\n"
"                           and carry the HOST name (or --server-name).\n"
"      --ca FILE            PEM CA certificates that verify the server.\n"
"      --cert FILE          PEM client certificate, for servers that ask.\n"
"      --key FILE           PEM private key of --cert (default: read from\n"
"                           the --cert file).\n"
"      --server-name NAME   the name the server certificate must carry (and\n"
"                           SNI), instead of HOST.\n"
"                           TLS is for TCP only, not with --unix.\n"
"  -h, --help               show this help and exit.\n"
"  -V, --version            show the version and exit.\n"
"\n"
"Exit status:\n"
"  0    every call succeeded (and listening ended by signal or timer);\n"
"  1    a call failed: the server answered with a failure (its type and\n"
"       message are printed on standard error as TYPE: MESSAGE), a call\n"
"       timed out, or an answer that should be followed was no reference;\n"
"  2    connection or login failure: refused, unreachable, handshake\n"
"       failed, login refused (UnauthorizedLogin, UnhandledCredentials),\n"
"       connection lost, TLS handshake or certificate refused;\n"
"  3    usage error: bad option, invalid JSON argument, no password;\n"
"  130  interrupted (SIGINT/SIGTERM) before the calls were done.\n"
"\n"
"Environment:\n"
"  PB_PASSWORD   the password for --user when no --password-file is given.\n"
"                Other users of the machine may read a process's\n"
"                environment on some systems; prefer a file with mode 600.\n"
"  PB_LOG        set to 1 to log broker diagnostics on standard error.\n"
"\n"
"Examples:\n"
"  pbcall localhost:8800 getTwo -- three 12\n"
"  pbcall --user user1 --password-file pw localhost:8800 foo 12\n"
"  pbcall --anonymous localhost:8800 foo '\"hi\"'\n"
"  PB_PASSWORD=1234 pbcall --user alice localhost:8800 \\\n"
"      joinGroup '\"#NeedAFourth\"' allowMattress=false -- send '\"hello\"'\n"
"  PB_PASSWORD=secret pbcall --user bob --listen localhost:8800 \\\n"
"      joinGroup '\"#NeedAFourth\"'\n"
"  pbcall --repr --unix /run/app.sock getStatus\n"
"\n"
"See also: pbcall(1), pbdump(1), chatserver(1), the libpb guide (GUIDE.md).\n";

/* ---------------------------------------------------------------- options */

typedef struct call_spec {
    const char *method;
    pb_value *args;   /* PB_TUPLE in g_arena */
    pb_value *kwargs; /* PB_DICT in g_arena, or NULL */
} call_spec;

static struct {
    const char *host, *unix_path, *user, *password_file;
    int port, anonymous, user_text, as_bytes, repr, verbose, listen, tls;
    double listen_for; /* seconds; 0: until interrupted */
    unsigned timeout_ms;
    const char *ca, *cert, *key, *server_name;
} opt;

static pb_arena *g_arena;
static call_spec *calls;
static size_t ncalls;
static char *password;

static void usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "pbcall: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry 'pbcall --help' for more information.\n");
    exit(EXIT_USAGE);
}

/* JSON strings (and dict keys) -> bytes, for --bytes.  JSON values are trees. */
static pb_value *strs_to_bytes(pb_value *v)
{
    if (v->type == PB_STR)
        return pb_bytes(g_arena, v->u.s.ptr, v->u.s.len);
    if (v->type == PB_LIST)
        for (size_t i = 0; i < v->u.seq.len; i++)
            if (!(v->u.seq.items[i] = strs_to_bytes(v->u.seq.items[i])))
                return NULL;
    if (v->type == PB_DICT)
        for (size_t i = 0; i < 2 * v->u.dict.len; i++)
            if (!(v->u.dict.kv[i] = strs_to_bytes(v->u.dict.kv[i])))
                return NULL;
    return v;
}

static pb_value *parse_json_arg(const char *text, const char *what)
{
    pb_value *v;
    pb_errbuf err = {0, ""};
    if (pb_value_from_json(g_arena, text, strlen(text), &v, &err)) {
        fprintf(stderr, "pbcall: %s: invalid JSON %s: %s\n", what, text, err.msg);
        fprintf(stderr, "pbcall: (a string needs JSON quotes inside the shell's: '\"%s\"')\n",
                text);
        exit(EXIT_USAGE);
    }
    if (opt.as_bytes && !(v = strs_to_bytes(v))) {
        fprintf(stderr, "pbcall: out of memory\n");
        exit(EXIT_USAGE);
    }
    return v;
}

/* NAME=... with NAME a Python identifier: length of NAME, else 0. */
static size_t keyword_len(const char *s)
{
    size_t i = 0;
    if (!(s[0] == '_' || (s[0] >= 'A' && s[0] <= 'Z') || (s[0] >= 'a' && s[0] <= 'z')))
        return 0;
    while (s[i] == '_' || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') ||
           (s[i] >= '0' && s[i] <= '9'))
        i++;
    return s[i] == '=' ? i : 0;
}

/* words: METHOD ARG... [-- METHOD ARG...]... */
static void parse_calls(int n, char **w)
{
    if (!(calls = calloc((size_t)n + 1, sizeof *calls)))
        exit(EXIT_USAGE);
    for (int i = 0; i < n;) {
        call_spec *c = &calls[ncalls++];
        if (!strcmp(w[i], "--") || !w[i][0])
            usage_error("a METHOD name is missing%s (before or after \"--\")", "");
        c->method = w[i++];
        c->args = pb_tuple(g_arena, 4);
        for (; i < n && strcmp(w[i], "--") != 0; i++) {
            size_t k = keyword_len(w[i]);
            char what[300];
            if (k) {
                snprintf(what, sizeof what, "%s: keyword argument %.*s", c->method, (int)k, w[i]);
                pb_value *name = pb_str(g_arena, w[i], k);
                if (!c->kwargs)
                    c->kwargs = pb_dict(g_arena, 4);
                if (pb_dict_getv(c->kwargs, name))
                    usage_error("keyword argument %s given twice", what);
                pb_dict_append(g_arena, c->kwargs, name, parse_json_arg(w[i] + k + 1, what));
            } else {
                snprintf(what, sizeof what, "%s: argument %zu", c->method,
                         pb_len(c->args) + 1);
                pb_seq_append(g_arena, c->args, parse_json_arg(w[i], what));
            }
        }
        if (i < n) { /* at "--" */
            i++;
            if (i == n)
                usage_error("a METHOD name is missing%s after the last \"--\"", "");
        }
    }
}

static void parse_host_port(const char *s)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || !colon[1])
        usage_error("expected HOST:PORT, got '%s' (or use --unix PATH)", s);
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 1 || port > 65535)
        usage_error("bad port in '%s'", s);
    size_t n = (size_t)(colon - s);
    if (s[0] == '[' && n >= 2 && s[n - 1] == ']') { /* [::1]:8800 */
        s++;
        n -= 2;
    }
    opt.host = pb_arena_memdup(g_arena, s, n);
    opt.port = (int)port;
}

static unsigned parse_uint(const char *s, const char *what)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || !*s || s[0] == '-' || v > 0xffffffffUL)
        usage_error(what, s);
    return (unsigned)v;
}

static void parse_options(int argc, char **argv)
{
    enum { O_TLS = 256, O_CA, O_CERT, O_KEY, O_SNI };
    static const struct option longs[] = {
        {"user", required_argument, NULL, 'u'},
        {"password-file", required_argument, NULL, 'p'},
        {"anonymous", no_argument, NULL, 'a'},
        {"user-text", no_argument, NULL, 'U'},
        {"bytes", no_argument, NULL, 'b'},
        {"repr", no_argument, NULL, 'r'},
        {"timeout", required_argument, NULL, 't'},
        {"verbose", no_argument, NULL, 'v'},
        {"listen", no_argument, NULL, 'l'},
        {"listen-for", required_argument, NULL, 'L'},
        {"unix", required_argument, NULL, 'x'},
        {"tls", no_argument, NULL, O_TLS},
        {"ca", required_argument, NULL, O_CA},
        {"cert", required_argument, NULL, O_CERT},
        {"key", required_argument, NULL, O_KEY},
        {"server-name", required_argument, NULL, O_SNI},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0}};
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+u:p:aUbrt:vlL:x:hV", longs, NULL)) != -1) {
        switch (c) {
        case 'u': opt.user = optarg; break;
        case 'p': opt.password_file = optarg; break;
        case 'a': opt.anonymous = 1; break;
        case 'U': opt.user_text = 1; break;
        case 'b': opt.as_bytes = 1; break;
        case 'r': opt.repr = 1; break;
        case 't': opt.timeout_ms = parse_uint(optarg, "bad --timeout '%s' (milliseconds)"); break;
        case 'v': opt.verbose = 1; break;
        case 'l': opt.listen = 1; break;
        case 'L': {
            char *end;
            opt.listen_for = strtod(optarg, &end);
            if (*end || !*optarg || !(opt.listen_for > 0) || opt.listen_for > 1e7)
                usage_error("bad --listen-for '%s' (seconds, more than 0)", optarg);
            opt.listen = 1;
            break;
        }
        case 'x': opt.unix_path = optarg; break;
        case O_TLS: opt.tls = 1; break;
        case O_CA: opt.ca = optarg; opt.tls = 1; break;
        case O_CERT: opt.cert = optarg; opt.tls = 1; break;
        case O_KEY: opt.key = optarg; opt.tls = 1; break;
        case O_SNI: opt.server_name = optarg; opt.tls = 1; break;
        case 'h':
            fputs(usage_text, stdout);
            fputs(help_text, stdout);
            exit(EXIT_OK);
        case 'V':
            printf("pbcall (libpb) 0.1.0\n");
            exit(EXIT_OK);
        default:
            if (optopt && optopt < 256)
                usage_error("unknown option or missing value: -%c",
                            (char[]){(char)optopt, 0});
            usage_error("unknown option or missing value: %s", argv[optind - 1]);
        }
    }
    if (opt.user && opt.anonymous)
        usage_error("--user and --anonymous exclude each other%s", "");
    if (opt.password_file && !opt.user)
        usage_error("--password-file needs --user%s", "");
    if (opt.key && !opt.cert)
        usage_error("--key needs --cert%s", "");
    if (opt.tls && opt.unix_path)
        usage_error("TLS is for TCP connections, not with --unix%s", "");
    if (!opt.unix_path) {
        if (optind >= argc)
            usage_error("HOST:PORT is missing%s", "");
        parse_host_port(argv[optind++]);
    }
    parse_calls(argc - optind, argv + optind);
}

/* --------------------------------------------------------------- password */

static struct termios saved_tty;
static int tty_fd = -1;

static void restore_tty(int sig)
{
    if (tty_fd >= 0)
        tcsetattr(tty_fd, TCSAFLUSH, &saved_tty);
    signal(sig, SIG_DFL);
    raise(sig);
}

/* One line from f without its newline; NULL at EOF or on error. */
static char *read_line(FILE *f)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, f);
    if (n < 0) {
        free(line);
        return NULL;
    }
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = 0;
    return line;
}

static char *prompt_password(void)
{
    int fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    FILE *f = fdopen(fd, "r+");
    if (!f) {
        close(fd);
        return NULL;
    }
    struct termios t;
    int have_tty = tcgetattr(fd, &saved_tty) == 0;
    struct sigaction sa = {0}, old_int, old_term;
    if (have_tty) {
        tty_fd = fd;
        sa.sa_handler = restore_tty;
        sigaction(SIGINT, &sa, &old_int);
        sigaction(SIGTERM, &sa, &old_term);
        t = saved_tty;
        t.c_lflag &= ~(tcflag_t)ECHO;
        t.c_lflag |= ECHONL;
        tcsetattr(fd, TCSAFLUSH, &t);
    }
    fprintf(f, "Password for %s: ", opt.user);
    fflush(f);
    char *line = read_line(f);
    if (have_tty) {
        tcsetattr(fd, TCSAFLUSH, &saved_tty);
        tty_fd = -1;
        sigaction(SIGINT, &old_int, NULL);
        sigaction(SIGTERM, &old_term, NULL);
    }
    fclose(f);
    return line;
}

static void get_password(void)
{
    if (opt.password_file) {
        FILE *f = strcmp(opt.password_file, "-") ? fopen(opt.password_file, "r") : stdin;
        if (!f) {
            fprintf(stderr, "pbcall: cannot read %s: %s\n", opt.password_file, strerror(errno));
            exit(EXIT_USAGE);
        }
        password = read_line(f);
        if (f != stdin)
            fclose(f);
        if (!password)
            password = strdup("");
    } else if (getenv("PB_PASSWORD")) {
        password = strdup(getenv("PB_PASSWORD"));
    } else if (!(password = prompt_password())) {
        fprintf(stderr, "pbcall: no password for %s: use --password-file FILE, PB_PASSWORD or "
                        "run on a terminal\n", opt.user);
        exit(EXIT_USAGE);
    }
    if (!password)
        exit(EXIT_USAGE);
}

/* ------------------------------------------------------------------- state */

static uv_loop_t loop;
static pb_conn *conn;
static uv_signal_t sig_int, sig_term;
static uv_timer_t timer; /* login timeout, then --listen-for */
static int status = EXIT_CONN, finished, listening;
static size_t next_call;
static pb_ref *held[256]; /* every reference we follow: dropping the avatar logs out */
static size_t nheld;

static void release_all(void)
{
    while (nheld)
        pb_ref_unref(held[--nheld]);
}

static void close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* Finish with exit status st: release references, hang up, let the loop end. */
static void finish(int st)
{
    if (finished)
        return;
    finished = 1;
    status = st;
    release_all();
    /* The signal handles stay (unreferenced) until the loop is done: closing
     * one restores the default action, and a second SIGINT (timeout(1) sends
     * one to the child and one to the group) would then kill us mid-close. */
    close_handle((uv_handle_t *)&timer);
    if (conn)
        pb_conn_close(conn);
}

static void on_signal(uv_signal_t *s, int signum)
{
    if (opt.verbose)
        fprintf(stderr, "pbcall: %s\n", signum == SIGINT ? "interrupted" : "terminated");
    finish(listening ? EXIT_OK : EXIT_INTR);
}

static void on_timer(uv_timer_t *t)
{
    if (listening) {
        finish(EXIT_OK);
    } else {
        fprintf(stderr, "pbcall: login timed out after %u ms\n", opt.timeout_ms);
        finish(EXIT_CONN);
    }
}

/* ------------------------------------------------------------------ output */

static void print_value(FILE *out, const pb_value *v)
{
    pb_buf b;
    pb_buf_init(&b);
    pb_errbuf err;
    if (opt.repr || pb_value_to_json(v, &b, &err)) {
        pb_buf r;
        pb_buf_init(&r);
        b.len = 0;
        if (pb_value_repr(v, &r) == 0) {
            if (opt.repr) {
                pb_buf_append(&b, r.data, r.len);
            } else { /* {"$repr": TEXT}, TEXT as a JSON string */
                pb_value *s = pb_str(g_arena, (const char *)r.data, r.len);
                if (!s)
                    s = pb_bytes(g_arena, r.data, r.len);
                pb_arena *tmp = pb_arena_new(0);
                pb_value *d = pb_dict(tmp, 1);
                pb_dict_append(tmp, d, pb_strz(tmp, "$repr"), pb_value_copy(tmp, s));
                pb_value_to_json(d, &b, &err);
                pb_arena_free(tmp);
            }
        }
        pb_buf_free(&r);
    }
    fprintf(out, "%.*s", (int)b.len, b.data ? (const char *)b.data : "");
    pb_buf_free(&b);
}

static void print_failure(const char *what, const pb_failure *f)
{
    const char *msg = f && f->value ? f->value : "";
    fprintf(stderr, "pbcall: %s failed: %s%s%s\n", what, f && f->type ? f->type : "?",
            *msg ? ": " : "", msg);
}

/* ------------------------------------------------------------------- mind */

static int mind_call(pb_call *call, void *self, const pb_args *a)
{
    if (opt.listen) {
        if (opt.repr) {
            printf("%s", pb_call_method(call));
            print_value(stdout, a->args);
            if (a->kwargs && pb_len(a->kwargs)) {
                putchar(' ');
                print_value(stdout, a->kwargs);
            }
        } else {
            pb_buf m;
            pb_buf_init(&m);
            pb_errbuf err;
            pb_value *name = pb_strz(pb_call_arena(call), pb_call_method(call));
            printf("{\"method\":");
            if (name && pb_value_to_json(name, &m, &err) == 0)
                printf("%.*s", (int)m.len, (const char *)m.data);
            else
                printf("\"?\"");
            pb_buf_free(&m);
            printf(",\"args\":");
            print_value(stdout, a->args);
            printf(",\"kwargs\":");
            if (a->kwargs)
                print_value(stdout, a->kwargs);
            else
                printf("{}");
            putchar('}');
        }
        putchar('\n');
        fflush(stdout);
    } else if (opt.verbose) {
        fprintf(stderr, "pbcall: the server called %s on the mind\n", pb_call_method(call));
    }
    return pb_call_return_none(call);
}

/* "*" takes every method name: the mind prints whatever the server calls. */
static const pb_method mind_methods[] = {{"*", NULL, mind_call, NULL}, {NULL, NULL, NULL, NULL}};
static const pb_class mind_class = {"Mind", PB_REFERENCEABLE, mind_methods, NULL};
static pb_object mind;

static void make_mind(void)
{
    pb_object_init(&mind, &mind_class);
}

/* ------------------------------------------------------------------- calls */

static void call_next(pb_ref *target);

static void start_listening(void)
{
    listening = 1;
    if (opt.verbose)
        fprintf(stderr, "pbcall: listening%s\n", opt.listen_for > 0 ? "" : " (Ctrl-C stops)");
    if (opt.listen_for > 0)
        uv_timer_start(&timer, on_timer, (uint64_t)(opt.listen_for * 1000.0), 0);
}

static int call_failed(pb_deferred *d, void *ud)
{
    const pb_failure *f = pb_deferred_failure(d);
    const call_spec *c = ud;
    print_failure(c->method, f);
    finish(f && f->code == PB_ECLOSED ? EXIT_CONN : EXIT_CALL);
    return 0;
}

static int call_done(pb_deferred *d, void *ud)
{
    const call_spec *c = ud;
    pb_value *v = pb_deferred_value(d);
    if (finished)
        return 0;
    if (next_call < ncalls) { /* follow the reference */
        if (!v || v->type != PB_REMOTE) {
            fprintf(stderr, "pbcall: %s answered ", c->method);
            print_value(stderr, v);
            fprintf(stderr, ", not a reference: cannot call %s on it\n",
                    calls[next_call].method);
            finish(EXIT_CALL);
            return 0;
        }
        if (opt.verbose) {
            fprintf(stderr, "pbcall: %s answered ", c->method);
            print_value(stderr, v);
            fputc('\n', stderr);
        }
        call_next((pb_ref *)v->u.h);
        return 0;
    }
    print_value(stdout, v);
    putchar('\n');
    fflush(stdout);
    if (opt.listen) {
        if (v && v->type == PB_REMOTE && nheld < sizeof held / sizeof held[0])
            held[nheld++] = pb_ref_ref((pb_ref *)v->u.h); /* keep what we were given */
        start_listening();
    } else {
        finish(EXIT_OK);
    }
    return 0;
}

static void call_next(pb_ref *target)
{
    if (nheld == sizeof held / sizeof held[0]) {
        fprintf(stderr, "pbcall: too many calls in one chain\n");
        finish(EXIT_USAGE);
        return;
    }
    held[nheld++] = pb_ref_ref(target);
    call_spec *c = &calls[next_call++];
    pb_call_opts co = {opt.timeout_ms, 0};
    pb_errbuf err = {0, ""};
    if (opt.verbose)
        fprintf(stderr, "pbcall: calling %s\n", c->method);
    pb_deferred *d = pb_ref_call(target, c->method, c->args, c->kwargs, &co, &err);
    if (!d) {
        fprintf(stderr, "pbcall: cannot call %s: %s\n", c->method,
                err.msg[0] ? err.msg : pb_strerror(err.code));
        finish(err.code == PB_ECLOSED ? EXIT_CONN : EXIT_CALL);
        return;
    }
    if (pb_deferred_add(d, call_done, call_failed, c)) {
        fprintf(stderr, "pbcall: out of memory\n");
        finish(EXIT_CALL);
    }
    pb_deferred_unref(d);
}

static void begin_calls(pb_ref *first)
{
    if (ncalls)
        call_next(first);
    else if (opt.listen) {
        held[nheld++] = pb_ref_ref(first);
        start_listening();
    } else
        finish(EXIT_OK);
}

/* ------------------------------------------------------------------ login */

static int login_failed(pb_deferred *d, void *ud)
{
    uv_timer_stop(&timer);
    print_failure("login", pb_deferred_failure(d));
    finish(EXIT_CONN);
    return 0;
}

static int logged_in(pb_deferred *d, void *ud)
{
    uv_timer_stop(&timer);
    pb_value *v = pb_deferred_value(d);
    if (finished)
        return 0;
    if (!v || v->type != PB_REMOTE) {
        fprintf(stderr, "pbcall: login answered no avatar reference\n");
        finish(EXIT_CONN);
        return 0;
    }
    if (opt.verbose)
        fprintf(stderr, "pbcall: logged in as %s\n", opt.anonymous ? "anonymous" : opt.user);
    begin_calls((pb_ref *)v->u.h);
    return 0;
}

static void on_connect(pb_conn *c, int st, const char *msg, void *ud)
{
    if (st) {
        if (msg && *msg)
            fprintf(stderr, "pbcall: %s\n", msg);
        else
            fprintf(stderr, "pbcall: cannot connect to %s: %s\n", (const char *)ud,
                    pb_strerror(st));
        finish(EXIT_CONN);
        return;
    }
    conn = c;
    if (finished) { /* interrupted while connecting */
        pb_conn_close(c);
        return;
    }
    if (opt.verbose)
        fprintf(stderr, "pbcall: connected to %s%s\n", pb_conn_peer(c),
                pb_conn_is_tls(c) ? " over TLS" : "");
    if (!opt.user && !opt.anonymous) {
        begin_calls(pb_conn_root(c));
        return;
    }
    pb_deferred *d = opt.user_text ? pb_login_text(c, opt.user, password, &mind)
                                   : pb_login(c, opt.user, opt.anonymous ? NULL : password, &mind);
    if (!d) {
        fprintf(stderr, "pbcall: cannot send the login\n");
        finish(EXIT_CONN);
        return;
    }
    if (opt.timeout_ms)
        uv_timer_start(&timer, on_timer, opt.timeout_ms, 0);
    pb_deferred_add(d, logged_in, login_failed, NULL);
    pb_deferred_unref(d);
}

static void on_lost(pb_conn *c, const char *why, void *ud)
{
    conn = NULL;
    if (!finished) {
        fprintf(stderr, "pbcall: connection lost: %s\n", why ? why : "?");
        finish(EXIT_CONN);
    }
}

/* -------------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    if (!(g_arena = pb_arena_new(0)))
        return EXIT_USAGE;
    parse_options(argc, argv);
    if (opt.user && !opt.anonymous)
        get_password();
    if (opt.anonymous && opt.user_text)
        opt.user_text = 0;
    make_mind();

    char where[300];
    if (opt.unix_path)
        snprintf(where, sizeof where, "unix:%s", opt.unix_path);
    else
        snprintf(where, sizeof where, "%s:%d", opt.host, opt.port);

    uv_loop_init(&loop);
    uv_signal_init(&loop, &sig_int);
    uv_signal_init(&loop, &sig_term);
    uv_timer_init(&loop, &timer);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_unref((uv_handle_t *)&sig_int);
    uv_unref((uv_handle_t *)&sig_term);

    pb_client_opts co;
    pb_client_opts_default(&co);
    if (opt.timeout_ms)
        co.connect_timeout_ms = opt.timeout_ms;
    pb_tls_opts tls;
    if (opt.tls) {
        pb_tls_opts_default(&tls);
        tls.ca_file = opt.ca;
        tls.cert_file = opt.cert;
        tls.key_file = opt.key;
        tls.server_name = opt.server_name;
        tls.verify_peer = 1; /* never talk to an unverified server */
        co.tls = &tls;
    }
    pb_errbuf err = {0, ""};
    int rc = opt.unix_path
                 ? pb_connect_unix(&loop, opt.unix_path, &co, on_connect, on_lost, where, &err)
                 : pb_connect_tcp(&loop, opt.host, opt.port, &co, on_connect, on_lost, where, &err);
    if (rc) {
        fprintf(stderr, "pbcall: cannot connect to %s: %s\n", where,
                err.msg[0] ? err.msg : pb_strerror(rc));
        finish(EXIT_CONN);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    finish(status); /* no-op unless the loop ran dry unexpectedly */
    uv_run(&loop, UV_RUN_DEFAULT);
    /* Done: a late SIGINT/SIGTERM must not turn the status into a kill.
     * Closing the handles restores the default actions, so ignore both. */
    sigset_t block, old_mask;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigprocmask(SIG_BLOCK, &block, &old_mask);
    close_handle((uv_handle_t *)&sig_int);
    close_handle((uv_handle_t *)&sig_term);
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    sigprocmask(SIG_SETMASK, &old_mask, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);

    pb_object_unref(&mind);
    free(calls);
    if (password) {
        memset(password, 0, strlen(password));
        free(password);
    }
    pb_arena_free(g_arena);
    return status;
}
