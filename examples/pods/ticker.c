/*
 * ticker.c - a long-running service-like pod.
 *
 * Prints "tick 1" at once, then "tick 2", ... one line per interval (argv[1], seconds as
 * a float, default 1.0), forever, or argv[2] lines and then exits 0. Sleeps with nanosleep,
 * which wasi-libc implements with the WASI poll_oneoff call (a clock subscription), so
 * the module is idle between ticks. Flushes after every line so a log reader sees each
 * tick when it happens. Exits 2 on a bad argument.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
    double interval = 1.0;
    long count = -1; /* -1: forever */
    char *end;
    if (argc > 1) {
        interval = strtod(argv[1], &end);
        if (*argv[1] == '\0' || *end != '\0' || !(interval >= 0.0) || interval > 1e9) {
            fprintf(stderr, "usage: ticker [SECONDS [COUNT]]\n");
            return 2;
        }
    }
    if (argc > 2) {
        count = strtol(argv[2], &end, 10);
        if (*argv[2] == '\0' || *end != '\0' || count < 0) {
            fprintf(stderr, "usage: ticker [SECONDS [COUNT]]\n");
            return 2;
        }
    }
    struct timespec ts;
    ts.tv_sec = (time_t)interval;
    ts.tv_nsec = (long)((interval - (double)ts.tv_sec) * 1e9);
    for (long n = 1; count < 0 || n <= count; n++) {
        if (n > 1) nanosleep(&ts, NULL);
        printf("tick %ld\n", n);
        fflush(stdout);
    }
    return 0;
}
