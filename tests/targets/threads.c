/* A target whose threads take known roles, for stackdump's live tests.
 *
 * Usage: threads ROLE=COUNT ...
 *   roles: spin read cond sleep vfork epoll poll accept sigalt recurse nap
 * Each thread prints "ready ROLE TID" once it is about to enter its known state; the main
 * thread prints "ready main TID" last and then serves commands on stdin:
 *   status -> "status read_returned=N spin=N spin_max_gap_ns=N"  (reads that returned, i.e.
 *             were disturbed; the spinner's iterations and its longest stall)
 *   reset  -> the spinner starts measuring its longest stall afresh
 *   name TID NAME -> renames thread TID without waking it (as pthread_setname_np does from
 *             another thread: a write to /proc/self/task/TID/comm)
 * EOF on stdin ends the process.
 */
#define _GNU_SOURCE
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ready.h"

#define NOINLINE __attribute__((noinline, noclone))

static pthread_mutex_t cond_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t never = PTHREAD_COND_INITIALIZER;
static volatile unsigned long spin_counter;
static volatile int never_set; /* keeps "forever" loops finite in the compiler's eyes */
static volatile long read_returned;
static int idle_pipe[2];
static char read_buffer[1 << 16];

/* The spinner also measures the longest gap between two of its iterations: how long a
 * dumper stalled it (benchmarks/run.py reads it; "reset" on stdin starts a new measurement).
 * It reads the TSC inline, so the spinning frame stays leaf itself, never a clock call. */
static volatile unsigned long long spin_max_gap_ticks;
static volatile int spin_reset;
static double ns_per_tick;
NOINLINE void leaf(void) {
    announce("spin");
    unsigned long long last = __builtin_ia32_rdtsc();
    for (;;) {
        spin_counter++;
        unsigned long long t = __builtin_ia32_rdtsc();
        if (spin_reset) {
            spin_reset = 0;
            spin_max_gap_ticks = 0;
        } else if (t - last > spin_max_gap_ticks) {
            spin_max_gap_ticks = t - last;
        }
        last = t;
    }
}
static void calibrate_tsc(void) {
    struct timespec a, b, pause = {0, 20000000L};
    clock_gettime(CLOCK_MONOTONIC, &a);
    unsigned long long t0 = __builtin_ia32_rdtsc();
    nanosleep(&pause, NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    unsigned long long t1 = __builtin_ia32_rdtsc();
    double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
    ns_per_tick = t1 > t0 ? ns / (double)(t1 - t0) : 0;
}
NOINLINE void middle(void) { leaf(); __asm__ volatile("" ::: "memory"); }
NOINLINE void outer(void) { middle(); __asm__ volatile("" ::: "memory"); }
NOINLINE void *spin_main(void *arg) { (void)arg; outer(); __asm__ volatile("" ::: "memory"); return NULL; }

NOINLINE void blocking_read(void) {
    announce("read");
    for (;;) {
        /* Each read gets a new buffer address, so /proc/<tid>/syscall shows whether a read
         * returned and was re-entered (its second argument changes). */
        if (read(idle_pipe[0], read_buffer + (read_returned % sizeof read_buffer), 1) != 0) /* LINE:blocking_read */
            read_returned++;
        else
            read_returned++;
    }
}
NOINLINE void *read_main(void *arg) { (void)arg; blocking_read(); __asm__ volatile("" ::: "memory"); return NULL; }

NOINLINE void wait_forever(void) {
    pthread_mutex_lock(&cond_lock);
    announce("cond");
    for (;;) pthread_cond_wait(&never, &cond_lock);
}
NOINLINE void *cond_main(void *arg) { (void)arg; wait_forever(); __asm__ volatile("" ::: "memory"); return NULL; }

NOINLINE void sleep_forever(void) {
    announce("sleep");
    for (;;) {
        struct timespec ts = {3600, 0};
        nanosleep(&ts, NULL);
    }
}
NOINLINE void *sleep_main(void *arg) { (void)arg; sleep_forever(); __asm__ volatile("" ::: "memory"); return NULL; }

/* The parent of a vfork waits uninterruptibly (killable only) until the child execs or exits,
 * so it cannot reach a ptrace stop: a real thread that times out. The child blocks in read
 * on stdin of its own pipe and exits when the process's write end closes. */
static int vfork_pipe[2];
NOINLINE void *vfork_main(void *arg) {
    (void)arg;
    announce("vfork");
    pid_t child = vfork();
    if (child == 0) {
        char c;
        syscall(SYS_close, vfork_pipe[1]);
        syscall(SYS_read, vfork_pipe[0], &c, 1);
        syscall(SYS_exit, 0);
    }
    waitpid(child, NULL, 0);
    return NULL;
}

NOINLINE void wait_epoll(void) {
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN};
    epoll_ctl(ep, EPOLL_CTL_ADD, idle_pipe[0], &ev);
    announce("epoll");
    for (;;) epoll_wait(ep, &ev, 1, -1);
}
NOINLINE void *epoll_main(void *arg) { (void)arg; wait_epoll(); __asm__ volatile("" ::: "memory"); return NULL; }

NOINLINE void wait_poll(void) {
    struct pollfd p = {.fd = idle_pipe[0], .events = POLLIN};
    announce("poll");
    for (;;) poll(&p, 1, -1);
}
NOINLINE void *poll_main(void *arg) { (void)arg; wait_poll(); __asm__ volatile("" ::: "memory"); return NULL; }

NOINLINE void wait_accept(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 1)) abort();
    announce("accept");
    for (;;) accept(s, NULL, NULL);
}
NOINLINE void *accept_main(void *arg) { (void)arg; wait_accept(); __asm__ volatile("" ::: "memory"); return NULL; }

/* A signal handler running on an alternate stack, blocked in read(): frames on both sides
 * of the kernel's signal trampoline. */
static int handler_pipe[2];
NOINLINE void handler_blocks(void) {
    char c;
    announce("sigalt");
    for (;;) read(handler_pipe[0], &c, 1);
}
NOINLINE void on_signal(int sig) { (void)sig; handler_blocks(); __asm__ volatile("" ::: "memory"); }
NOINLINE void raise_on_self(void) {
    stack_t ss = {.ss_size = 64 * 1024};
    ss.ss_sp = mmap(NULL, ss.ss_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    sigaltstack(&ss, NULL);
    struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_ONSTACK};
    sigaction(SIGUSR1, &sa, NULL);
    pthread_kill(pthread_self(), SIGUSR1);
    __asm__ volatile("" ::: "memory");
}
NOINLINE void *sigalt_main(void *arg) { (void)arg; raise_on_self(); __asm__ volatile("" ::: "memory"); return NULL; }

/* 200 frames of recursion, then blocked in nanosleep. */
NOINLINE int recurse(int depth) {
    if (depth == 0) {
        announce("recurse");
        while (!never_set) { struct timespec ts = {3600, 0}; nanosleep(&ts, NULL); }
        return 0;
    }
    int r = recurse(depth - 1);
    __asm__ volatile("" ::: "memory");
    return r + 1;
}
NOINLINE void *recurse_main(void *arg) { (void)arg; recurse(200); __asm__ volatile("" ::: "memory"); return NULL; }

/* Blocked most of the time, but never for long: sleeps of 5 us (no timer slack), back to
 * back, so it wakes faster than a checked passive copy takes. */
NOINLINE void nap_forever(void) {
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    announce("nap");
    for (;;) {
        struct timespec ts = {0, 5000};
        nanosleep(&ts, NULL);
    }
}
NOINLINE void *nap_main(void *arg) { (void)arg; nap_forever(); __asm__ volatile("" ::: "memory"); return NULL; }

typedef void *(*thread_fn)(void *);
static const struct { const char *name; thread_fn fn; } roles[] = {
    {"spin", spin_main}, {"read", read_main}, {"cond", cond_main},
    {"sleep", sleep_main}, {"vfork", vfork_main}, {"epoll", epoll_main}, {"poll", poll_main},
    {"accept", accept_main}, {"sigalt", sigalt_main}, {"recurse", recurse_main},
    {"nap", nap_main},
};

int main(int argc, char **argv) {
    calibrate_tsc();
    if (pipe(idle_pipe) || pipe(vfork_pipe) || pipe(handler_pipe)) return 1;
    for (int i = 1; i < argc; i++) {
        char role[32];
        int count = 0;
        if (sscanf(argv[i], "%31[^=]=%d", role, &count) != 2) return 2;
        size_t r = 0;
        while (r < sizeof roles / sizeof roles[0] && strcmp(roles[r].name, role)) r++;
        if (r == sizeof roles / sizeof roles[0]) return 2;
        for (int k = 0; k < count; k++) {
            pthread_t t;
            pthread_attr_t attr;
            pthread_attr_init(&attr);
            pthread_attr_setstacksize(&attr, 256 * 1024);
            if (pthread_create(&t, &attr, roles[r].fn, NULL)) return 3;
            pthread_attr_destroy(&attr);
        }
    }
    announce("main");
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        if (strncmp(line, "reset", 5) == 0) spin_reset = 1;
        long tid;
        char name[16];
        if (sscanf(line, "name %ld %15s", &tid, name) == 2) {
            char path[64];
            snprintf(path, sizeof path, "/proc/self/task/%ld/comm", tid);
            FILE *comm = fopen(path, "w");
            if (comm) {
                fputs(name, comm);
                fclose(comm);
            }
        }
        if (strncmp(line, "status", 6) == 0) {
            pthread_mutex_lock(&print_lock);
            printf("status read_returned=%ld spin=%lu spin_max_gap_ns=%ld\n", read_returned,
                   spin_counter, (long)(spin_max_gap_ticks * ns_per_tick));
            fflush(stdout);
            pthread_mutex_unlock(&print_lock);
        }
    }
    close(vfork_pipe[1]);
    return 0;
}
