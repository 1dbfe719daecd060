/* The baseline for bench/supervise.py: a bare supervisor that posix_spawns N
 * `sleep 86400`, respawns any that exits, and on SIGTERM kills them all.
 * No config, no logs, no process groups: the floor any supervisor pays.
 *
 * `baseline N CGROUP_DIR` adds the one thing the kernel charges for
 * tracking each service in a cgroup of its own, as corral does: it makes
 * CGROUP_DIR/baseline-<pid>/<i> for child i and creates the child in it
 * (clone3 with CLONE_INTO_CGROUP, then exec; like posix_spawn, it returns
 * once the child has exec'd). The floor of a supervisor that keeps that
 * guarantee. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static char *sleep_argv[] = {"sleep", "86400", NULL};

static pid_t start(posix_spawnattr_t *attr) {
    pid_t pid;
    if (posix_spawnp(&pid, "sleep", NULL, attr, sleep_argv, environ) != 0) {
        perror("posix_spawnp");
        exit(1);
    }
    return pid;
}

static sigset_t child_mask;

static void child_main(void) {
    sigprocmask(SIG_SETMASK, &child_mask, NULL);
    execvp("sleep", sleep_argv);
    _exit(127);
}

/* Starts sleep in the cgroup open at `cgroup` and returns once it has
 * exec'd. On x86-64 the way posix_spawn and corral do it: the child shares
 * this process's memory on a stack of its own until it execs (CLONE_VM |
 * CLONE_VFORK); elsewhere a fork, and a close-on-exec pipe to wait for it. */
static pid_t start_in(int cgroup) {
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_INTO_CGROUP;
    args.exit_signal = SIGCHLD;
    args.cgroup = (uint64_t)cgroup;
    long pid;
#ifdef __x86_64__
    static char stack[64 * 1024] __attribute__((aligned(16)));
    args.flags |= CLONE_VM | CLONE_VFORK;
    args.stack = (uint64_t)(uintptr_t)stack;
    args.stack_size = sizeof stack;
    /* The raw system call: the child starts on `stack` and must not return
     * through this frame; it calls child_main, which execs or exits. */
    register void (*entry)(void) __asm__("r13") = child_main;
    __asm__ volatile(
        "syscall\n\t"
        "test %%rax, %%rax\n\t"
        "jnz 1f\n\t"
        "xor %%ebp, %%ebp\n\t"
        "call *%%r13\n\t"
        "ud2\n"
        "1:"
        : "=a"(pid)
        : "a"((long)SYS_clone3), "D"(&args), "S"(sizeof args), "r"(entry)
        : "rcx", "r11", "memory");
#else
    int status[2];
    if (pipe2(status, O_CLOEXEC) != 0) {
        perror("pipe2");
        exit(1);
    }
    pid = syscall(SYS_clone3, &args, sizeof args);
    if (pid < 0) pid = -errno;
    if (pid == 0) child_main();
    if (pid >= 0) {
        close(status[1]);
        char byte;
        while (read(status[0], &byte, 1) > 0) {}
    }
    close(status[0]);
#endif
    if (pid < 0) {
        errno = (int)-pid;
        perror("clone3");
        exit(1);
    }
    return (pid_t)pid;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 100;
    const char *parent = argc > 2 ? argv[2] : NULL;
    pid_t *pids = calloc(n, sizeof *pids);
    int *cgroups = calloc(n, sizeof *cgroups);
    sigset_t set, empty;
    sigemptyset(&set);
    sigemptyset(&empty);
    child_mask = empty;
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigprocmask(SIG_BLOCK, &set, NULL);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setsigmask(&attr, &empty);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
    char run[4096];
    int run_fd = -1;
    if (parent) {
        snprintf(run, sizeof run, "%s/baseline-%d", parent, (int)getpid());
        if (mkdir(run, 0755) != 0 || (run_fd = open(run, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
            perror(run);
            return 1;
        }
    }
    for (int i = 0; i < n; i++) {
        if (parent) {
            char leaf[32];
            snprintf(leaf, sizeof leaf, "%d", i);
            if (mkdirat(run_fd, leaf, 0755) != 0 ||
                (cgroups[i] = openat(run_fd, leaf, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
                perror("leaf cgroup");
                return 1;
            }
            pids[i] = start_in(cgroups[i]);
        } else {
            pids[i] = start(&attr);
        }
    }
    for (;;) {
        siginfo_t info;
        if (sigwaitinfo(&set, &info) < 0) continue;
        if (info.si_signo == SIGTERM) {
            for (int i = 0; i < n; i++) kill(pids[i], SIGTERM);
            while (wait(NULL) > 0) {}
            if (parent) {
                for (int i = 0; i < n; i++) {
                    char leaf[32];
                    snprintf(leaf, sizeof leaf, "%d", i);
                    unlinkat(run_fd, leaf, AT_REMOVEDIR);
                }
                rmdir(run);
            }
            return 0;
        }
        pid_t pid;
        int status;
        while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
            for (int i = 0; i < n; i++)
                if (pids[i] == pid) pids[i] = parent ? start_in(cgroups[i]) : start(&attr);
    }
}
