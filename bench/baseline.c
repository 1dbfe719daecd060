/* The baseline for bench/supervise.py: a bare supervisor that posix_spawns N
 * `sleep 86400`, respawns any that exits, and on SIGTERM kills them all.
 * No config, no logs, no process groups: the floor any supervisor pays. */
#define _GNU_SOURCE
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

extern char **environ;

static pid_t start(posix_spawnattr_t *attr) {
    char *argv[] = {"sleep", "86400", NULL};
    pid_t pid;
    if (posix_spawnp(&pid, "sleep", NULL, attr, argv, environ) != 0) {
        perror("posix_spawnp");
        exit(1);
    }
    return pid;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 100;
    pid_t *pids = calloc(n, sizeof *pids);
    sigset_t set, empty;
    sigemptyset(&set);
    sigemptyset(&empty);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigprocmask(SIG_BLOCK, &set, NULL);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setsigmask(&attr, &empty);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
    for (int i = 0; i < n; i++) pids[i] = start(&attr);
    for (;;) {
        siginfo_t info;
        if (sigwaitinfo(&set, &info) < 0) continue;
        if (info.si_signo == SIGTERM) {
            for (int i = 0; i < n; i++) kill(pids[i], SIGTERM);
            while (wait(NULL) > 0) {}
            return 0;
        }
        pid_t pid;
        int status;
        while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
            for (int i = 0; i < n; i++)
                if (pids[i] == pid) pids[i] = start(&attr);
    }
}
