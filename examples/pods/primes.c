/*
 * primes.c - a CPU-bound batch job.
 *
 * Counts the primes below N (argv[1], default 5000000) by trial division: every odd k
 * is divided by 3, 5, 7, ... up to sqrt(k). No memory beyond a few locals, so the run
 * time measures pure integer compute (about 0.5 s natively at the default N).
 * Prints "primes below N: COUNT" and exits 0; exits 2 on a bad argument.
 * primes.py is the same algorithm in pure Python, with the same output.
 *
 * primes N SECONDS: a long-running worker instead: counts again every SECONDS (a float),
 * forever, printing "round R: primes below N: COUNT (T ms)" after each round.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static int is_prime(unsigned k) {
    if (k < 2) {
        return 0;
    }
    if (k % 2 == 0) {
        return k == 2;
    }
    for (unsigned d = 3; d * d <= k; d += 2) {
        if (k % d == 0) {
            return 0;
        }
    }
    return 1;
}

static unsigned long count_below(unsigned long n) {
    unsigned long count = 0;
    for (unsigned long k = 2; k < n; k++) {
        count += is_prime((unsigned)k);
    }
    return count;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
    unsigned long n = 5000000;
    char *end;
    if (argc > 1) {
        n = strtoul(argv[1], &end, 10);
        if (*argv[1] == '\0' || *end != '\0' || n > 4000000000UL) {
            fprintf(stderr, "usage: primes [N [SECONDS]]   (N an integer, at most 4000000000)\n");
            return 2;
        }
    }
    if (argc > 2) {
        double interval = strtod(argv[2], &end);
        if (*argv[2] == '\0' || *end != '\0' || !(interval >= 0.0) || interval > 1e6) {
            fprintf(stderr, "usage: primes [N [SECONDS]]   (SECONDS a number)\n");
            return 2;
        }
        struct timespec pause = {(time_t)interval, (long)((interval - (long)interval) * 1e9)};
        for (unsigned long round = 1;; round++) {
            double started = now_ms();
            unsigned long count = count_below(n);
            printf("round %lu: primes below %lu: %lu (%.0f ms)\n", round, n, count, now_ms() - started);
            fflush(stdout);
            nanosleep(&pause, NULL);
        }
    }
    printf("primes below %lu: %lu\n", n, count_below(n));
    fflush(stdout);
    return 0;
}
