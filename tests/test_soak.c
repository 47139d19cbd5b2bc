/*
 * tests/test_soak.c - the chaos soak (tests/interop/test_soak.sh) as a unit
 * test, for sanitizer builds.
 *
 * CI runs the unit tests under ASan/UBSan with `ctest -E '^interop_'`,
 * which leaves out interop_test_soak; this binary brings the soak back
 * there: in a sanitizer build it runs the script on its own build
 * directory (the script sees PB_SANITIZE=ON in CMakeCache.txt and runs a
 * shorter soak against the sanitized chatserver, whose exit status then
 * carries any ASan, UBSan or leak report).  In other builds
 * interop_test_soak runs the soak already, so this one says so and passes.
 * Runs from the source directory (ctest's working directory here).
 */
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

int main(void)
{
    if (!SANITIZED) {
        printf("not a sanitizer build: interop_test_soak runs the soak here\n0 passed, 0 failed\n");
        return 0;
    }
    /* <build>/bin/test_soak -> <build> */
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        perror("readlink /proc/self/exe");
        return 1;
    }
    exe[n] = 0;
    char *build = dirname(dirname(exe));
    if (access("tests/interop/test_soak.sh", R_OK) != 0) {
        fprintf(stderr, "run from the source directory (tests/interop/test_soak.sh not found)\n");
        return 1;
    }
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) {
        execlp("bash", "bash", "tests/interop/test_soak.sh", build, (char *)NULL);
        perror("exec bash");
        _exit(127);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) < 0) {
        perror("waitpid");
        return 1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
