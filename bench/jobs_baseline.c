/* The baseline for bench/jobs.py: at every whole second, posix_spawn N
 * `true` and reap them. No config, no logs, no pipes: the floor of running
 * N per-second jobs. */
#define _GNU_SOURCE
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>

extern char **environ;

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 1000;
    int seconds = argc > 2 ? atoi(argv[2]) : 60;
    char *args[] = {"true", NULL};
    for (int s = 0; s < seconds; s++) {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        struct timespec tick = {now.tv_sec + 1, 0};
        while (clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &tick, NULL) != 0) {}
        for (int i = 0; i < n; i++) {
            pid_t pid;
            if (posix_spawnp(&pid, "true", NULL, NULL, args, environ) != 0) {
                perror("posix_spawnp");
                return 1;
            }
        }
        for (int i = 0; i < n; i++) wait(NULL);
    }
    return 0;
}
