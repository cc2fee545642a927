/* Threads that make progress and threads that do not, for `stackdump --watch`.
 *
 * Usage: progress idle=N
 *   ab, ba  : an AB/BA deadlock (each holds one mutex and waits for the other's)
 *   queued  : waits for mutex A, held by `ab` (blocked behind the deadlock, not in it)
 *   spinner : computes forever in one function (on a CPU, no progress visible)
 *   steady  : works on a CPU through a chain of calls whose depth follows the clock (one
 *             more level every 40 ms, 50 levels: its stack is never the same 40 ms apart
 *             within 2 s)
 *   idle    : N workers waiting on a condition variable no one signals (waiting for work)
 *   main    : reads stdin; EOF ends the process
 * Each thread prints "ready ROLE TID" just before it enters its state.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ready.h"

#define NOINLINE __attribute__((noinline, noclone))

static pthread_mutex_t a = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t b = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t work_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work = PTHREAD_COND_INITIALIZER;
static pthread_barrier_t both_hold;
static volatile unsigned long sink;

NOINLINE static void take(pthread_mutex_t *first, pthread_mutex_t *second, const char *role) {
    pthread_mutex_lock(first);
    pthread_barrier_wait(&both_hold);
    announce(role);
    pthread_mutex_lock(second); /* never returns */
}

NOINLINE void *ab_main(void *arg) { (void)arg; take(&a, &b, "ab"); return NULL; }
NOINLINE void *ba_main(void *arg) { (void)arg; take(&b, &a, "ba"); return NULL; }

NOINLINE void *queued_main(void *arg) {
    (void)arg;
    announce("queued");
    pthread_mutex_lock(&a);
    return NULL;
}

NOINLINE static void spin_forever(void) {
    for (;;) sink = sink * 6364136223846793005UL + 1;
}

NOINLINE void *spinner_main(void *arg) {
    (void)arg;
    announce("spinner");
    spin_forever();
    return NULL;
}

static long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* One level of the chain; at the bottom, work until the clock says another depth. */
NOINLINE static void descend(int level, int depth, long phase) {
    if (level < depth) {
        descend(level + 1, depth, phase);
        sink += (unsigned long)level; /* not a tail call */
        return;
    }
    while (now_ms() / 40 == phase) sink = sink * 3 + 1;
}

NOINLINE void *steady_main(void *arg) {
    (void)arg;
    announce("steady");
    for (;;) {
        long phase = now_ms() / 40;
        descend(0, (int)(phase % 50) + 1, phase);
    }
    return NULL;
}

NOINLINE void *idle_main(void *arg) {
    (void)arg;
    pthread_mutex_lock(&work_lock);
    announce("idle");
    for (;;) pthread_cond_wait(&work, &work_lock); /* no one signals: waits for work */
    return NULL;
}

int main(int argc, char **argv) {
    pthread_t t;
    char buffer[16];
    int idle = 2;
    for (int i = 1; i < argc; i++)
        if (strncmp(argv[i], "idle=", 5) == 0) idle = atoi(argv[i] + 5);
    pthread_barrier_init(&both_hold, NULL, 3);
    pthread_create(&t, NULL, ab_main, NULL);
    pthread_create(&t, NULL, ba_main, NULL);
    pthread_barrier_wait(&both_hold); /* A is held by ab before queued asks for it */
    pthread_create(&t, NULL, queued_main, NULL);
    pthread_create(&t, NULL, spinner_main, NULL);
    pthread_create(&t, NULL, steady_main, NULL);
    for (int i = 0; i < idle; i++) pthread_create(&t, NULL, idle_main, NULL);
    announce("main");
    while (read(0, buffer, sizeof buffer) > 0) {
    }
    return 0;
}
