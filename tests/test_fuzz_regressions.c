/*
 * tests/test_fuzz_regressions.c - every input under fuzz/regressions/
 * <harness>/ goes through that harness's body, without libFuzzer, so the
 * crashes fuzzing found stay fixed under the normal test suite (and its
 * ASan/UBSan/LSan CI runs).  The harness sources are included with
 * FZ_NO_MAIN, which leaves out their LLVMFuzzerTestOneInput; a harness
 * aborts (FZ_CHECK) on a broken invariant, which fails this test.
 *
 * Besides the checked-in regressions, a few fixed inputs per harness (the
 * scripted-login modes, empty and one-byte streams) run every time, so
 * the harness code itself stays compiled and working.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

#define FZ_NO_MAIN 1
/* the harnesses' statics do not clash: each uses its own prefix */
#include "../fuzz/fuzz_banana.c"
#include "../fuzz/fuzz_jelly.c"
#include "../fuzz/fuzz_broker_client.c"
#include "../fuzz/fuzz_broker_login.c"
#include "../fuzz/fuzz_broker_server.c"

typedef int (*harness_fn)(const uint8_t *data, size_t size);

static const struct {
    const char *name;
    harness_fn fn;
} harnesses[] = {
    {"fuzz_banana", fz_banana_one},
    {"fuzz_jelly", fz_jelly_one},
    {"fuzz_broker_server", fz_broker_server_one},
    {"fuzz_broker_login", fz_broker_login_one},
    {"fuzz_broker_client", fz_broker_client_one},
};

static harness_fn harness_for(const char *name) {
    for (size_t i = 0; i < sizeof harnesses / sizeof *harnesses; i++)
        if (!strcmp(harnesses[i].name, name)) return harnesses[i].fn;
    return NULL;
}

static int run_dir(const char *dir, harness_fn fn) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        size_t len = 0;
        char *buf = test_read_file(path, &len);
        CHECK_MSG(buf != NULL, "cannot read %s", path);
        if (!buf) continue;
        printf("     %s (%zu bytes)\n", path, len);
        fflush(stdout);
        fn((const uint8_t *)buf, len); /* aborts on a failed invariant */
        free(buf);
        n++;
    }
    closedir(d);
    return n;
}

TEST(checked_in_regressions) {
    DIR *d = opendir("fuzz/regressions");
    if (!d) {
        printf("     (no fuzz/regressions directory)\n");
        return;
    }
    struct dirent *e;
    int total = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        harness_fn fn = harness_for(e->d_name);
        char path[512];
        snprintf(path, sizeof path, "fuzz/regressions/%s", e->d_name);
        CHECK_MSG(fn != NULL, "no harness for %s", path);
        if (!fn) continue;
        total += run_dir(path, fn);
    }
    closedir(d);
    printf("     %d regression inputs\n", total);
}

TEST(fixed_inputs) {
    static const uint8_t hs[] = {0x02, 0x82, 'p', 'b', 0x02, 0x80, 0x13, 0x87, 0x06, 0x81};
    uint8_t buf[64];
    for (unsigned ctl = 0; ctl < 256; ctl += 0x11) {
        buf[0] = (uint8_t)ctl;
        memcpy(buf + 1, hs, sizeof hs);
        for (size_t i = 0; i < sizeof harnesses / sizeof *harnesses; i++) {
            harnesses[i].fn(buf, 1);
            harnesses[i].fn(buf, 1 + sizeof hs);
        }
    }
    /* the scripted logins of fuzz_broker_login: alice, anonymous, + group */
    for (unsigned mode = 1; mode < 4; mode++) {
        buf[0] = (uint8_t)(mode << FZ_MODE_SHIFT);
        fz_broker_login_one(buf, 1);
    }
    CHECK(1);
}

int main(void) {
    RUN(checked_in_regressions);
    RUN(fixed_inputs);
    return TEST_SUMMARY();
}
