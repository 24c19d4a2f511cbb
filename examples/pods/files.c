/*
 * files.c - shows what of the host filesystem a pod sees: only the directories its
 * manifest mounts (WASI preopens), read-only unless the mount says readOnly: false.
 *
 * For every directory given as an argument (default /data): lists its entries, prints the
 * first line of DIR/input.txt if there is one, then tries to create DIR/output.txt and
 * prints "write DIR/output.txt: ok" or "write DIR/output.txt: <error>". Also tries to open
 * /etc/passwd, which no pod may see. Exits 0 when every listed directory could be read,
 * 1 otherwise.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

static int show(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) {
        printf("list %s: %s\n", dir, strerror(errno));
        return 1;
    }
    struct dirent *entry;
    while ((entry = readdir(d)) != NULL) {
        if (entry->d_name[0] != '.') printf("entry %s/%s\n", dir, entry->d_name);
    }
    closedir(d);

    char path[1024];
    snprintf(path, sizeof path, "%s/input.txt", dir);
    FILE *in = fopen(path, "r");
    if (in) {
        char line[256] = "";
        if (fgets(line, sizeof line, in)) {
            line[strcspn(line, "\n")] = '\0';
            printf("read %s: %s\n", path, line);
        }
        fclose(in);
    }

    snprintf(path, sizeof path, "%s/output.txt", dir);
    FILE *out = fopen(path, "w");
    if (out) {
        fputs("written by files.wasm\n", out);
        fclose(out);
        printf("write %s: ok\n", path);
    } else {
        printf("write %s: %s\n", path, strerror(errno));
    }
    return 0;
}

int main(int argc, char **argv) {
    int failed = 0;
    if (argc < 2) {
        failed |= show("/data");
    }
    for (int i = 1; i < argc; i++) {
        failed |= show(argv[i]);
    }
    FILE *secret = fopen("/etc/passwd", "r");
    printf("open /etc/passwd: %s\n", secret ? "ok" : strerror(errno));
    if (secret) fclose(secret);
    return failed;
}
