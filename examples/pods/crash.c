/*
 * crash.c - hostile: a pod that fails.
 *
 * Prints "about to fail" to stdout and "fatal: simulated failure" to stderr, then
 * exits with code 3 (WASI proc_exit(3)). With argv[1] == "abort" it calls abort()
 * instead, which in wasm32-wasi is a trap (the `unreachable` instruction), not an exit.
 * A correct sandbox reports exit code 3 as a failed pod with that code and keeps both
 * streams; for the abort it reports a trap (a crash with no exit code of its own).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    puts("about to fail");
    fflush(stdout);
    fputs("fatal: simulated failure\n", stderr);
    fflush(stderr);
    if (argc > 1 && strcmp(argv[1], "abort") == 0) {
        abort();
    }
    return 3;
}
