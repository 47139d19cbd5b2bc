/*
 * cred/sqlite.c - a checker over an SQLite user store:
 *   users(name TEXT PRIMARY KEY, md5 BLOB)   md5 = MD5(password), 16 bytes
 *
 * Lookups use one prepared statement by primary key, so a check costs one
 * B-tree descent however many users there are (microseconds at millions
 * of rows); it runs on the loop thread.  Bulk loads go through one
 * transaction (pb_checker_sqlite_add_many).  The database is opened in
 * WAL mode so other connections (an application's own, on worker threads)
 * can read while this one writes.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <sqlite3.h>

#include "pb/cred.h"

typedef struct sq {
    sqlite3 *db;
    sqlite3_stmt *get, *put;
} sq;

static const uint8_t dummy_md5[16] = {0};

static void sq_check(pb_checker *c, const pb_credentials *cred, pb_check_result *r)
{
    sq *s = c->ud;
    uint8_t md5[16];
    int found = 0;
    sqlite3_reset(s->get);
    if (sqlite3_bind_text(s->get, 1, cred->username, (int)cred->username_len, SQLITE_STATIC) ==
            SQLITE_OK &&
        sqlite3_step(s->get) == SQLITE_ROW && sqlite3_column_bytes(s->get, 0) == 16) {
        memcpy(md5, sqlite3_column_blob(s->get, 0), 16);
        found = 1;
    }
    sqlite3_reset(s->get);
    sqlite3_clear_bindings(s->get);
    int ok = pb_cred_check_md5(cred, found ? md5 : dummy_md5);
    OPENSSL_cleanse(md5, sizeof md5);
    if (ok && found)
        pb_check_ok(r, cred->username);
    else
        pb_check_fail(r);
}

static void sq_destroy(pb_checker *c)
{
    sq *s = c->ud;
    sqlite3_finalize(s->get);
    sqlite3_finalize(s->put);
    sqlite3_close(s->db);
    free(s);
    free(c);
}

static const pb_checker_ops sq_ops = {PB_CRED_MD5_CHALLENGE, sq_check, sq_destroy};

pb_checker *pb_checker_sqlite_open(const char *path, pb_errbuf *err)
{
    pb_checker *c = calloc(1, sizeof *c);
    sq *s = calloc(1, sizeof *s);
    if (!c || !s) {
        free(c);
        free(s);
        pb_err_set(err, PB_ENOMEM, "out of memory");
        return NULL;
    }
    c->ops = &sq_ops;
    c->ud = s;
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
            SQLITE_OK ||
        sqlite3_busy_timeout(s->db, 5000) != SQLITE_OK ||
        sqlite3_exec(s->db,
                     "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                     "CREATE TABLE IF NOT EXISTS users(name TEXT PRIMARY KEY, md5 BLOB);",
                     NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v3(s->db, "SELECT md5 FROM users WHERE name = ?1", -1,
                           SQLITE_PREPARE_PERSISTENT, &s->get, NULL) != SQLITE_OK ||
        sqlite3_prepare_v3(s->db, "INSERT OR REPLACE INTO users(name, md5) VALUES (?1, ?2)", -1,
                           SQLITE_PREPARE_PERSISTENT, &s->put, NULL) != SQLITE_OK) {
        pb_err_set(err, PB_EIO, "%s: %s", path, s->db ? sqlite3_errmsg(s->db) : "out of memory");
        sq_destroy(c);
        return NULL;
    }
    return c;
}

static int sq_put(sq *s, const char *user, const char *password)
{
    uint8_t h[16];
    pb_md5(password, strlen(password), h);
    sqlite3_reset(s->put);
    int rc = sqlite3_bind_text(s->put, 1, user, -1, SQLITE_STATIC) == SQLITE_OK &&
                     sqlite3_bind_blob(s->put, 2, h, 16, SQLITE_STATIC) == SQLITE_OK &&
                     sqlite3_step(s->put) == SQLITE_DONE
                 ? 0
                 : PB_EIO;
    sqlite3_reset(s->put);
    sqlite3_clear_bindings(s->put);
    OPENSSL_cleanse(h, sizeof h);
    return rc;
}

int pb_checker_sqlite_add(pb_checker *c, const char *user, const char *password)
{
    if (!c || c->ops != &sq_ops || !user || !password)
        return PB_EINVAL;
    return sq_put(c->ud, user, password);
}

int pb_checker_sqlite_add_many(pb_checker *c, const char *const *users,
                               const char *const *passwords, size_t n)
{
    if (!c || c->ops != &sq_ops || (n && (!users || !passwords)))
        return PB_EINVAL;
    sq *s = c->ud;
    if (sqlite3_exec(s->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
        return PB_EIO;
    for (size_t i = 0; i < n; i++) {
        if (!users[i] || !passwords[i] || sq_put(s, users[i], passwords[i])) {
            sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
            return users[i] && passwords[i] ? PB_EIO : PB_EINVAL;
        }
    }
    return sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK ? 0 : PB_EIO;
}
