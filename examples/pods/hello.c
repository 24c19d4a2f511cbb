/*
 * hello.c - the friendly pod: shows what the sandbox handed it.
 *
 * Prints "hello from <argv[0]>", then each argument as "argv[i] = ...", then every
 * environment variable as KEY=value in the order the host passed them, then echoes
 * stdin line by line prefixed with "stdin: ". Stdin is read until EOF, so an empty or
 * closed stdin ends the program at once. Exits 0.
 */
#include <stdio.h>
#include <stdlib.h>

extern char **environ; /* wasi-libc fills this from the WASI environ_get call */

int main(int argc, char **argv) {
    printf("hello from %s\n", argc > 0 && argv[0] ? argv[0] : "(no argv[0])");
    for (int i = 1; i < argc; i++) {
        printf("argv[%d] = %s\n", i, argv[i]);
    }
    for (char **e = environ; e && *e; e++) {
        printf("%s\n", *e);
    }
    fflush(stdout);

    /* Echo stdin; lines of any length (getline grows its buffer). */
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        if (line[n - 1] == '\n') {
            line[n - 1] = '\0';
        }
        printf("stdin: %s\n", line);
    }
    free(line);
    fflush(stdout);
    return 0;
}
