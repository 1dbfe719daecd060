/* Writes BYTES bytes of 100-byte lines to stdout in 64 KiB writes: the log
 * benchmark's chatty service. The lines are built once, so the generator
 * itself costs next to nothing and the figures measure the log path. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LINES 655

int main(int argc, char **argv) {
    long long total = argc > 1 ? atoll(argv[1]) : 1000000000LL;
    static char buf[LINES * 100];
    for (int i = 0; i < LINES; i++) {
        char *line = buf + i * 100;
        int n = snprintf(line, 100, "line %06d ", i);
        memset(line + n, 'x', 99 - n);
        line[99] = '\n';
    }
    long long written = 0;
    while (written < total) {
        size_t want = sizeof buf;
        if ((long long)want > total - written) want = (size_t)(total - written) / 100 * 100;
        if (want == 0) break;
        for (size_t off = 0; off < want;) {
            ssize_t w = write(1, buf + off, want - off);
            if (w <= 0) return 1;
            off += (size_t)w;
        }
        written += (long long)want;
    }
    return 0;
}
