/* The floor for one sample of a profile: what a minimal C sampler costs per sample, woken
 * every INTERVAL_MS as stackdump's sampling loop is. Each sample lists /proc/PID/task,
 * reads every thread's /proc/PID/task/TID/schedstat from a descriptor kept open (pread),
 * and captures only the threads whose run time moved since the last sample (stackdump's
 * capture/unchanged.py skips the others; the line is read again after a capture, which
 * itself makes the thread run): PTRACE_SEIZE, PTRACE_INTERRUPT, waitpid,
 * PTRACE_GETREGS, process_vm_readv of BYTES from sp, PTRACE_DETACH. No unwinding, no
 * symbols, no output: everything stackdump does beyond this is above the floor.
 * Usage: sample_floor PID SAMPLES INTERVAL_MS [BYTES]. SIGINT ends it early. Prints
 * "samples=N captured=N cpu_us_per_sample=X" on stderr, X from getrusage over the whole run
 * (start-up included: a few microseconds). */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 4096

struct thread {
    int tid;
    int fd;
    char last[128];
};

static struct thread threads[MAX_THREADS];
static int thread_count;
static char buffer[1 << 20];
static volatile sig_atomic_t interrupted;

static void on_interrupt(int signum) {
    (void)signum;
    interrupted = 1;
}

static struct thread *find(int tid, const char *pid) {
    for (int i = 0; i < thread_count; i++)
        if (threads[i].tid == tid) return &threads[i];
    if (thread_count == MAX_THREADS) return NULL;
    char path[96];
    snprintf(path, sizeof path, "/proc/%s/task/%d/schedstat", pid, tid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    struct thread *t = &threads[thread_count++];
    t->tid = tid;
    t->fd = fd;
    t->last[0] = 0;
    return t;
}

static int capture(int tid, size_t bytes, pid_t pid) {
    if (ptrace(PTRACE_SEIZE, tid, 0, 0)) return 0;
    int status = 0;
    struct user_regs_struct regs;
    ptrace(PTRACE_INTERRUPT, tid, 0, 0);
    waitpid(tid, &status, __WALL);
    ptrace(PTRACE_GETREGS, tid, 0, &regs);
    struct iovec local = {buffer, bytes};
#if defined(__x86_64__)
    struct iovec remote = {(void *)regs.rsp, bytes};
#else
    struct iovec remote = {(void *)regs.sp, bytes};
#endif
    process_vm_readv(pid, &local, 1, &remote, 1, 0);
    ptrace(PTRACE_DETACH, tid, 0, 0);
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 4 && argc != 5) return 2;
    const char *pid = argv[1];
    int samples = atoi(argv[2]);
    long interval_ns = atol(argv[3]) * 1000000L;
    size_t bytes = argc == 5 ? (size_t)atol(argv[4]) : 64 * 1024;
    if (bytes > sizeof buffer) bytes = sizeof buffer;
    char path[64];
    snprintf(path, sizeof path, "/proc/%s/task", pid);
    struct sigaction action = {.sa_handler = on_interrupt};
    sigaction(SIGINT, &action, NULL); /* no SA_RESTART: the sleep ends at once */
    long captured = 0;
    int sample = 0;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    for (; sample < samples && !interrupted; sample++) {
        DIR *dir = opendir(path);
        if (!dir) return 3;
        struct dirent *e;
        while ((e = readdir(dir))) {
            int tid = atoi(e->d_name);
            if (tid <= 0) continue;
            struct thread *t = find(tid, pid);
            if (!t) continue;
            char now[128];
            ssize_t n = pread(t->fd, now, sizeof now - 1, 0);
            if (n <= 0) continue;
            now[n] = 0;
            if (strcmp(now, t->last) == 0) continue;
            captured += capture(tid, bytes, (pid_t)atoi(pid));
            /* The stop itself runs the thread: its line after the capture is the one a
             * thread that does not run again will show. */
            n = pread(t->fd, t->last, sizeof t->last - 1, 0);
            t->last[n > 0 ? n : 0] = 0;
        }
        closedir(dir);
        next.tv_nsec += interval_ns;
        while (next.tv_nsec >= 1000000000L) {
            next.tv_nsec -= 1000000000L;
            next.tv_sec++;
        }
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
    }
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    double us = usage.ru_utime.tv_sec * 1e6 + usage.ru_utime.tv_usec + usage.ru_stime.tv_sec * 1e6 +
                usage.ru_stime.tv_usec;
    fprintf(stderr, "samples=%d captured=%ld cpu_us_per_sample=%.1f\n", sample, captured,
            us / (sample ? sample : 1));
    return 0;
}
