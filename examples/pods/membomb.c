/*
 * membomb.c - hostile: allocates memory until it cannot.
 *
 * Allocates 1 MiB blocks forever and writes every byte of each (memset), so the host
 * really backs the memory. A block is 1 MiB less 64 bytes, so that block plus malloc's
 * header is exactly 1 MiB: zig's libc malloc for wasm rounds allocations of 64 KiB and
 * more up to a power of two, and a full 1 MiB request would take 2 MiB. Blocks are chained through a global list so the compiler
 * cannot remove the allocations. Prints "allocated N MiB" every 16 MiB. When malloc
 * returns NULL (wasi-libc's malloc gets -1 from memory.grow once the host's memory cap
 * is reached) it prints "malloc failed at N MiB" to stderr and calls abort(), which in
 * wasm32-wasi is a trap (the `unreachable` instruction).
 * A correct sandbox caps the linear memory (for wasmtime, Store.set_limits), so
 * memory.grow fails at the cap, and reports the resulting trap as OOMKilled.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK (1024 * 1024 - 64)

struct block {
    struct block *next;
};

static struct block *volatile head;

int main(void) {
    unsigned long mib = 0;
    for (;;) {
        struct block *b = malloc(BLOCK);
        if (b == NULL) {
            fprintf(stderr, "malloc failed at %lu MiB\n", mib);
            abort();
        }
        memset(b, (int)(mib & 0x7f) | 1, BLOCK);
        b->next = head;
        head = b;
        mib++;
        if (mib % 16 == 0) {
            printf("allocated %lu MiB\n", mib);
            fflush(stdout);
        }
    }
}
