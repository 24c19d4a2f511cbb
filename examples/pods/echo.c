/*
 * echo.c - an HTTP handler pod: a CGI script (RFC 3875) that echoes its request.
 *
 * A handler pod runs one instance per request: the request's meta-variables are in the
 * environment, its body is on stdin, and whatever the script prints on stdout is the response
 * (a header block, a blank line, the body; lines end with LF, which RFC 3875 allows).
 *
 * Prints "Status: 200 OK" and "Content-Type: text/plain", a blank line, then one line each for
 * REQUEST_METHOD, PATH_INFO, QUERY_STRING, the X-Echo request header (HTTP_X_ECHO), the number
 * of body bytes read from stdin, and POD_NAME and NODE_NAME (the Downward API's values). A
 * variable that is missing or empty prints as "-". Stdin is read to EOF, or only up to
 * CONTENT_LENGTH bytes when that is a valid number. Exits 0 whatever the input.
 */
#include <stdio.h>
#include <stdlib.h>

/* The value of an environment variable, or "-" when it is missing or empty. */
static const char *var(const char *name) {
    const char *value = getenv(name);
    return value && *value ? value : "-";
}

/* CONTENT_LENGTH as a byte count, or -1 when it is missing or not all decimal digits. */
static long long content_length(void) {
    const char *text = getenv("CONTENT_LENGTH");
    if (!text || !*text) return -1;
    long long n = 0;
    for (const char *p = text; *p; p++) {
        if (*p < '0' || *p > '9') return -1;
        if (n > (1LL << 50)) return -1; /* absurdly large: ignore it, read to EOF */
        n = n * 10 + (*p - '0');
    }
    return n;
}

/* Reads the body from stdin (at most `limit` bytes, or to EOF when limit < 0), counting it. */
static long long body_length(long long limit) {
    static char buf[65536];
    long long total = 0;
    while (limit < 0 || total < limit) {
        size_t want = sizeof buf;
        if (limit >= 0 && (long long)want > limit - total) want = (size_t)(limit - total);
        size_t got = fread(buf, 1, want, stdin);
        total += (long long)got;
        if (got < want) break; /* EOF or a read error: the body is what arrived */
    }
    return total;
}

int main(void) {
    long long length = body_length(content_length());

    printf("Status: 200 OK\n");
    printf("Content-Type: text/plain\n");
    printf("\n");
    printf("method: %s\n", var("REQUEST_METHOD"));
    printf("path: %s\n", var("PATH_INFO"));
    printf("query: %s\n", var("QUERY_STRING"));
    printf("x-echo: %s\n", var("HTTP_X_ECHO"));
    printf("body: %lld bytes\n", length);
    printf("pod: %s\n", var("POD_NAME"));
    printf("node: %s\n", var("NODE_NAME"));
    return 0;
}
