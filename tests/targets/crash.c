/* A target that crashes the way servers do, for core-file tests: two threads blocked in
 * read(), and one that dereferences a null pointer in crash_here() (called through
 * crash_caller()); its SIGSEGV handler, on_segv(), calls abort() as a crash reporter would,
 * so the kernel's core shows the faulting thread's stack through the signal frame.
 * With the argument "plain", no handler: the SIGSEGV itself ends the process.
 * Every thread prints "ready ROLE TID" first. The crasher reads a line from stdin, then
 * crashes; main sits in pause() throughout, so that every other thread is blocked in a
 * known call when the crash comes.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ready.h"

static int idle_pipe[2];

static void on_segv(int sig) {
    (void)sig;
    abort();
}

__attribute__((noinline)) static void crash_here(volatile int *where) {
    *where = 42;
}

__attribute__((noinline)) static void crash_caller(volatile int *where) {
    crash_here(where);
    __asm__ volatile("" ::: "memory"); /* not a tail call */
}

static void *crasher_main(void *arg) {
    (void)arg;
    announce("crasher");
    char c;
    while (read(0, &c, 1) == 1 && c != '\n') {
    }
    crash_caller(NULL);
    return NULL;
}

__attribute__((noinline)) static void blocking_read(void) {
    char c;
    while (read(idle_pipe[0], &c, 1) != 0) {
    }
}

static void *reader_main(void *arg) {
    (void)arg;
    announce("read");
    blocking_read();
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "plain") != 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_segv;
        sigaction(SIGSEGV, &sa, NULL);
    }
    if (pipe(idle_pipe)) return 1;
    pthread_t t;
    for (int i = 0; i < 2; i++)
        if (pthread_create(&t, NULL, reader_main, NULL)) return 3;
    if (pthread_create(&t, NULL, crasher_main, NULL)) return 3;
    announce("main");
    for (;;) pause();
}
