/* The floor for capture: what a minimal C dumper costs. For every thread of PID, one at a
 * time: PTRACE_SEIZE, PTRACE_INTERRUPT, waitpid, PTRACE_GETREGS, process_vm_readv of 64 KiB
 * from sp, PTRACE_DETACH. Prints "pause_us=N" per thread (interrupt to detach), as
 * stackdump's report does, so benchmarks/run.py reads both the same way.
 * Usage: cloop PID [ROUNDS]: ROUNDS passes over the threads (benchmarks/cost.py divides its
 * CPU time by them), printing only the last pass's pauses. */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>

static char buffer[64 * 1024];

static long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 2 && argc != 3) return 2;
    int rounds = argc == 3 ? atoi(argv[2]) : 1;
    char path[64];
    snprintf(path, sizeof path, "/proc/%s/task", argv[1]);
    for (int round = 1; round <= rounds; round++) {
        DIR *dir = opendir(path);
        if (!dir) return 3;
        struct dirent *e;
        while ((e = readdir(dir))) {
            int tid = atoi(e->d_name);
            if (tid <= 0) continue;
            if (ptrace(PTRACE_SEIZE, tid, 0, 0)) continue;
            long start = now_ns();
            int status = 0;
            struct user_regs_struct regs;
            if (ptrace(PTRACE_INTERRUPT, tid, 0, 0) == 0 && waitpid(tid, &status, __WALL) == tid &&
                WIFSTOPPED(status) && ptrace(PTRACE_GETREGS, tid, 0, &regs) == 0) {
                struct iovec local = {buffer, sizeof buffer}, remote = {(void *)regs.rsp, sizeof buffer};
                process_vm_readv(tid, &local, 1, &remote, 1, 0);
            }
            /* A signal-delivery stop hands its signal back, as stackdump does. */
            int sig = (status >> 16) == PTRACE_EVENT_STOP ? 0 : WSTOPSIG(status);
            ptrace(PTRACE_DETACH, tid, 0, sig);
            if (round == rounds) printf("pause_us=%ld\n", (now_ns() - start) / 1000);
        }
        closedir(dir);
    }
    return 0;
}
