/*
 * stackbomb.c - hostile: unbounded recursion.
 *
 * dive() recurses forever: each call keeps a small volatile array in its frame and
 * adds one of its elements to the result of the recursive call, so the call is not a
 * tail call and the compiler cannot turn it into a loop. The stop condition compares
 * with a volatile global that is never reached. Prints "diving" first.
 * In wasm the call frames live on the host's stack, not in linear memory: a correct
 * sandbox bounds that stack (wasmtime's Config.max_wasm_stack) and reports the
 * resulting stack-overflow trap as a crash of the pod, while the host itself survives.
 */
#include <stdio.h>

static volatile long never = -1;

static long dive(long depth) {
    volatile long frame[4];
    frame[depth & 3] = depth;
    if (depth == never) {
        return 0;
    }
    return dive(depth + 1) + frame[(depth + 1) & 3];
}

int main(void) {
    puts("diving");
    fflush(stdout);
    long r = dive(0);
    printf("returned %ld\n", r); /* never reached */
    return 0;
}
