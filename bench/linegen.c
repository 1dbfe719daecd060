/* Writes BYTES bytes of 100-byte lines ("line 000000042 xxx...\n") to stdout
 * in 64 KiB writes: the log benchmark's chatty service. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long long total = argc > 1 ? atoll(argv[1]) : 1000000000LL;
    static char buf[65500];
    long long line = 0, written = 0;
    while (written < total) {
        size_t used = 0;
        while (used + 100 <= sizeof buf && written + (long long)used < total) {
            int n = snprintf(buf + used, 100, "line %012lld ", line++);
            memset(buf + used + n, 'x', 99 - n);
            buf[used + 99] = '\n';
            used += 100;
        }
        for (size_t off = 0; off < used;) {
            ssize_t w = write(1, buf + off, used - off);
            if (w <= 0) return 1;
            off += (size_t)w;
        }
        written += (long long)used;
    }
    return 0;
}
