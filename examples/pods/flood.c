/*
 * flood.c - hostile: writes output as fast as it can, forever.
 *
 * Writes 100-byte lines ("flood 0000000001 xxxx...x\n", a counter then padding) in a
 * tight loop through stdio (fully buffered when stdout is not a terminal, so the host
 * sees large writes). Write errors are ignored, as a careless program would: the loop
 * never ends by itself. A correct sandbox bounds what it keeps of the pod's logs
 * (a size cap, rotation or truncation) so the flood cannot fill memory or disk, and
 * stops the pod at its deadline.
 */
#include <stdio.h>
#include <string.h>

#define LINE 100

int main(void) {
    char line[LINE + 1];
    memset(line, 'x', LINE);
    line[LINE - 1] = '\n';
    line[LINE] = '\0';
    for (unsigned long n = 1;; n++) {
        /* "flood " + 10 digits + " " = 17 bytes, then padding up to the newline */
        snprintf(line, 18, "flood %010lu ", n);
        line[17] = 'x'; /* snprintf's terminating NUL */
        fwrite(line, 1, LINE, stdout);
        clearerr(stdout);
    }
}
