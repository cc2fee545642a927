/* A process that calls exec() while stackdump is capturing it (issue 28).
 *
 * Usage: exec_midway busy=N
 * Starts N spinning threads and a watcher, prints "ready busy TID" for each spinner
 * and "ready main TID" last. The watcher polls the first spinner's voluntary context
 * switches: a thread spinning in user space makes none until a tracer stops it (a ptrace
 * stop is one), a count that stays up after the stop, however briefly it lasted (its
 * TracerPid is shown only during the stop, which a watcher among 30 spinners could miss). As
 * soon as it moves, the watcher execs this program again as "exec_midway after", which
 * prints "ready after TID" and blocks in read(0). EOF on stdin ends either image.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ready.h"

static volatile unsigned long spins;
static volatile long first_spinner;
static volatile int announced;
static int spinners;

static void *spin(void *arg) {
    long tid = syscall(SYS_gettid);
    __sync_val_compare_and_swap(&first_spinner, 0, tid);
    announce("busy");
    __sync_fetch_and_add(&announced, 1);
    for (;;) spins++;
    return arg;
}

static long voluntary_switches(long tid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/self/task/%ld/status", tid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long found = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "voluntary_ctxt_switches:", 24) == 0) found = atol(line + 24);
    fclose(f);
    return found;
}

static char *self;

static void *watch(void *arg) {
    while (announced < spinners) usleep(100); /* every spinner is past its last print */
    long before = voluntary_switches(first_spinner);
    while (voluntary_switches(first_spinner) == before) usleep(50);
    execl(self, self, "after", (char *)NULL);
    perror("execl");
    exit(1);
    return arg;
}

int main(int argc, char **argv) {
    char buf[64];
    self = argv[0];
    if (argc > 1 && strcmp(argv[1], "after") == 0) {
        announce("after");
        while (read(0, buf, sizeof buf) > 0) {
        }
        return 0;
    }
    const char *count = argc > 1 ? strchr(argv[1], '=') : NULL;
    int n = count ? atoi(count + 1) : 20;
    pthread_t t;
    spinners = n;
    for (int i = 0; i < n; i++) pthread_create(&t, NULL, spin, NULL);
    while (!first_spinner) usleep(100);
    usleep(1000);
    pthread_create(&t, NULL, watch, NULL);
    announce("main");
    while (read(0, buf, sizeof buf) > 0) {
    }
    return 0;
}
