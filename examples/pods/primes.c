/*
 * primes.c - a CPU-bound batch job.
 *
 * Counts the primes below N (argv[1], default 5000000) by trial division: every odd k
 * is divided by 3, 5, 7, ... up to sqrt(k). No memory beyond a few locals, so the run
 * time measures pure integer compute (about 0.5 s natively at the default N).
 * Prints "primes below N: COUNT" and exits 0; exits 2 on a bad argument.
 * primes.py is the same algorithm in pure Python, with the same output.
 */
#include <stdio.h>
#include <stdlib.h>

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

int main(int argc, char **argv) {
    unsigned long n = 5000000;
    if (argc > 1) {
        char *end;
        n = strtoul(argv[1], &end, 10);
        if (*argv[1] == '\0' || *end != '\0' || n > 4000000000UL) {
            fprintf(stderr, "usage: primes [N]   (N an integer, at most 4000000000)\n");
            return 2;
        }
    }
    unsigned long count = 0;
    for (unsigned long k = 2; k < n; k++) {
        count += is_prime((unsigned)k);
    }
    printf("primes below %lu: %lu\n", n, count);
    fflush(stdout);
    return 0;
}
