/* A target whose threads block in calls that a ptrace stop may or may not interrupt, each
 * counting the EINTRs it sees, for stackdump's never-harm-the-target tests.
 *
 * Usage: eintr ROLE=COUNT ...
 *   roles: epoll epoll_pwait semop sigtimedwait recv accept read poll futex nanosleep
 * Each thread prints "ready ROLE TID" before it blocks; the main thread prints
 * "ready main TID" last and serves commands on stdin:
 *   status -> "status semid=N eintr_ROLE=N ... returned_ROLE=N ..."
 * eintr_ROLE counts calls that failed with EINTR, returned_ROLE calls that returned at all.
 * Every call blocks for an hour at least, so any return is a disturbance. EOF on stdin ends
 * the process (and removes its semaphore set).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ipc.h>
#include <sys/sem.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "ready.h"

#define NOINLINE __attribute__((noinline, noclone))

enum { EPOLL, EPOLL_PWAIT, SEMOP, SIGTIMEDWAIT, RECV, ACCEPT, READ, POLL, FUTEX, NANOSLEEP, NROLES };
static const char *const role_names[NROLES] = {
    "epoll", "epoll_pwait", "semop", "sigtimedwait", "recv",
    "accept", "read", "poll", "futex", "nanosleep",
};

static volatile long eintr_count[NROLES];
static volatile long returned_count[NROLES];
static int idle_pipe[2];
static int semid = -1;
static int futex_word;

static void count(int role, long r) {
    __atomic_add_fetch(&returned_count[role], 1, __ATOMIC_RELAXED);
    if (r < 0 && errno == EINTR) __atomic_add_fetch(&eintr_count[role], 1, __ATOMIC_RELAXED);
}

NOINLINE void wait_epoll(void) {
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN};
    epoll_ctl(ep, EPOLL_CTL_ADD, idle_pipe[0], &ev);
    announce("epoll");
    for (;;) count(EPOLL, epoll_wait(ep, &ev, 1, -1));
}

NOINLINE void wait_epoll_pwait(void) {
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN};
    sigset_t none;
    sigemptyset(&none);
    sigaddset(&none, SIGUSR2);
    epoll_ctl(ep, EPOLL_CTL_ADD, idle_pipe[0], &ev);
    announce("epoll_pwait");
    for (;;) count(EPOLL_PWAIT, epoll_pwait(ep, &ev, 1, -1, &none));
}

NOINLINE void wait_semop(void) {
    struct sembuf op = {.sem_num = 0, .sem_op = -1, .sem_flg = 0};
    announce("semop");
    for (;;) count(SEMOP, semop(semid, &op, 1));
}

NOINLINE void wait_sigtimedwait(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    struct timespec ts = {7200, 0};
    announce("sigtimedwait");
    for (;;) count(SIGTIMEDWAIT, sigtimedwait(&set, NULL, &ts));
}

NOINLINE void wait_recv(void) {
    int sv[2];
    char c;
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) abort();
    struct timeval tv = {7200, 0};
    if (setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv)) abort();
    announce("recv");
    for (;;) count(RECV, recv(sv[0], &c, 1, 0));
}

NOINLINE void wait_accept(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 1)) abort();
    announce("accept");
    for (;;) count(ACCEPT, accept(s, NULL, NULL));
}

NOINLINE void wait_read(void) {
    char c;
    announce("read");
    for (;;) count(READ, read(idle_pipe[0], &c, 1));
}

NOINLINE void wait_poll(void) {
    struct pollfd p = {.fd = idle_pipe[0], .events = POLLIN};
    announce("poll");
    for (;;) count(POLL, poll(&p, 1, -1));
}

NOINLINE void wait_futex(void) {
    announce("futex");
    for (;;) count(FUTEX, syscall(SYS_futex, &futex_word, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0));
}

NOINLINE void wait_nanosleep(void) {
    struct timespec ts = {7200, 0};
    announce("nanosleep");
    for (;;) count(NANOSLEEP, nanosleep(&ts, NULL));
}

static void (*const role_fn[NROLES])(void) = {
    wait_epoll, wait_epoll_pwait, wait_semop, wait_sigtimedwait, wait_recv,
    wait_accept, wait_read, wait_poll, wait_futex, wait_nanosleep,
};

NOINLINE void *role_main(void *arg) {
    role_fn[(long)arg]();
    __asm__ volatile("" ::: "memory");
    return NULL;
}

int main(int argc, char **argv) {
    if (pipe(idle_pipe)) abort();
    semid = semget(IPC_PRIVATE, 1, IPC_CREAT | 0600);
    if (semid < 0) abort();
    /* sigtimedwait needs its signal blocked; every thread inherits this mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    for (int i = 1; i < argc; i++) {
        char role[64];
        int n = 0;
        if (sscanf(argv[i], "%63[^=]=%d", role, &n) != 2) abort();
        long r = 0;
        while (r < NROLES && strcmp(role_names[r], role) != 0) r++;
        if (r == NROLES) abort();
        for (int k = 0; k < n; k++) {
            pthread_t t;
            if (pthread_create(&t, NULL, role_main, (void *)r)) abort();
        }
    }
    announce("main");
    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        if (strncmp(line, "status", 6) == 0) {
            pthread_mutex_lock(&print_lock);
            printf("status semid=%d", semid);
            for (int r = 0; r < NROLES; r++)
                printf(" eintr_%s=%ld returned_%s=%ld", role_names[r], eintr_count[r],
                       role_names[r], returned_count[r]);
            printf("\n");
            fflush(stdout);
            pthread_mutex_unlock(&print_lock);
        }
    }
    semctl(semid, 0, IPC_RMID);
    return 0;
}
