/*
 * loop.c - hostile: an endless busy loop.
 *
 * Prints "looping" and then spins forever on a volatile counter (the compiler must
 * perform every load and store, so it cannot drop or shorten the loop). It never
 * makes another WASI call, so nothing but the host can stop it: a correct sandbox
 * interrupts it (wasmtime epoch or fuel deadline, or killing the process that runs it)
 * when its time budget runs out, and reports the pod as killed, not as a success.
 */
#include <stdio.h>

static volatile unsigned long counter;

int main(void) {
    puts("looping");
    fflush(stdout);
    for (;;) {
        counter = counter + 1;
    }
}
