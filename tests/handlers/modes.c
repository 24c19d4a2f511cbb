/*
 * modes.c - a CGI handler for the handler tests (tests/test_handler.py, test_kubelet.py):
 * what it does depends on PATH_INFO, so one module covers every case.
 *
 *   /trap            traps (__builtin_trap) before writing anything
 *   /trap-late       writes its head and one body line, then traps
 *   /garbage         prints a line that is not a header
 *   /loop            spins forever without writing
 *   /slow?n=N&ms=M   writes its head, then N lines, one every M ms (flushed each time)
 *   /big?kb=N        writes its head, then N KiB of 'x' as fast as it can
 *   /stderr?tag=T    writes "handler error T" and "done T" to stderr, then answers 200
 *   /stderr-flood    writes 1 KiB lines to stderr forever
 *   /mem?mb=N        allocates and touches N MiB, then answers 200
 *   /exit?code=N     writes nothing and exits with code N
 *   /status?code=N   answers with Status N
 *   /ready           200 if /data/ready exists (a mounted directory), else 503
 *   anything else    200 with the method, path, query, body length, X-Echo, POD_NAME,
 *                    POD_NAMESPACE, NODE_NAME and SERVER_PORT, one per line
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *var(const char *name) {
    const char *value = getenv(name);
    return value && *value ? value : "-";
}

/* The integer value of `key` in QUERY_STRING, or `fallback`. */
static long query_int(const char *key, long fallback) {
    const char *q = getenv("QUERY_STRING");
    size_t n = strlen(key);
    while (q && *q) {
        if (strncmp(q, key, n) == 0 && q[n] == '=') return strtol(q + n + 1, NULL, 10);
        q = strchr(q, '&');
        if (q) q++;
    }
    return fallback;
}

static void head(int status) {
    printf("Status: %d\nContent-Type: text/plain\n\n", status);
}

static long body_length(void) {
    static char buf[65536];
    long total = 0;
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, stdin)) > 0) total += (long)got;
    return total;
}

int main(void) {
    const char *path = var("PATH_INFO");
    if (!strcmp(path, "/trap")) __builtin_trap();
    if (!strcmp(path, "/trap-late")) {
        head(200);
        printf("about to trap\n");
        fflush(stdout);
        __builtin_trap();
    }
    if (!strcmp(path, "/garbage")) {
        printf("this is not a header\n\nbody\n");
        return 0;
    }
    if (!strcmp(path, "/loop")) {
        volatile unsigned long spin = 0;
        for (;;) spin++;
    }
    if (!strcmp(path, "/slow")) {
        long n = query_int("n", 5), ms = query_int("ms", 100);
        struct timespec pause = {ms / 1000, (ms % 1000) * 1000000L};
        head(200);
        fflush(stdout);
        for (long i = 0; i < n; i++) {
            printf("line %ld\n", i);
            fflush(stdout);
            nanosleep(&pause, NULL);
        }
        return 0;
    }
    if (!strcmp(path, "/big")) {
        static char block[1024];
        memset(block, 'x', sizeof block);
        head(200);
        for (long i = 0; i < query_int("kb", 1024); i++) fwrite(block, 1, sizeof block, stdout);
        return 0;
    }
    if (!strcmp(path, "/stderr")) {
        const char *tag = var("QUERY_STRING");
        fprintf(stderr, "handler error %s\n", tag);
        fprintf(stderr, "done %s\n", tag);
        head(200);
        printf("ok\n");
        return 0;
    }
    if (!strcmp(path, "/stderr-flood")) {
        static char line[1024];
        memset(line, 'e', sizeof line - 1);
        line[sizeof line - 1] = '\n';
        for (;;) fwrite(line, 1, sizeof line, stderr);
    }
    if (!strcmp(path, "/mem")) {
        long mb = query_int("mb", 1);
        /* 16 blocks a MiB (a little under 64 KiB each, as the allocator rounds sizes up to
         * a power of two), touched (volatile: the compiler may not drop an allocation that
         * nothing seems to read), so the memory grows to its cap before a malloc fails */
        for (long i = 0; i < mb * 16; i++) {
            char *volatile p = malloc(65536 - 64);
            if (!p) abort();
            for (size_t j = 0; j < 65536 - 64; j += 4096) p[j] = 1;
        }
        head(200);
        printf("allocated %ld MiB\n", mb);
        return 0;
    }
    if (!strcmp(path, "/exit")) return (int)query_int("code", 1);
    if (!strcmp(path, "/status")) {
        head((int)query_int("code", 200));
        printf("status\n");
        return 0;
    }
    if (!strcmp(path, "/ready")) {
        head(access("/data/ready", F_OK) == 0 ? 200 : 503);
        return 0;
    }
    long length = body_length();
    head(200);
    printf("method: %s\n", var("REQUEST_METHOD"));
    printf("path: %s\n", path);
    printf("query: %s\n", var("QUERY_STRING"));
    printf("body: %ld bytes\n", length);
    printf("x-echo: %s\n", var("HTTP_X_ECHO"));
    printf("pod: %s\n", var("POD_NAME"));
    printf("namespace: %s\n", var("POD_NAMESPACE"));
    printf("node: %s\n", var("NODE_NAME"));
    printf("port: %s\n", var("SERVER_PORT"));
    return 0;
}
