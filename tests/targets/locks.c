/* Threads blocked on pthread mutexes in known patterns, for the lock-holder tests.
 *
 * Usage: locks
 *   ab, ba  : an AB/BA deadlock (each holds one mutex and waits for the other's)
 *   queued  : waits for mutex A, held by `ab` (queued behind the deadlock, not in it)
 *   holder  : holds mutex C and sleeps
 *   blocked : waits for mutex C (a plain wait: its holder sleeps, it is not stuck on a cycle)
 * With the argument handoff=3, three more threads around mutex D:
 *   owner   : holds mutex D and waits for "release" on stdin, then unlocks it and sleeps
 *   waiter  : (two of them) waits for mutex D; the one the unlock wakes takes it, prints
 *             "took TID" and sleeps holding it, the other sleeps on, never woken
 * Each thread prints "ready ROLE TID" just before it blocks; main prints "ready main TID"
 * last and then reads commands on stdin ("release"). EOF on stdin ends the process.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ready.h"

#define NOINLINE __attribute__((noinline, noclone))

static pthread_mutex_t a = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t b = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t c = PTHREAD_MUTEX_INITIALIZER;
static pthread_barrier_t both_hold;
static sem_t step;

NOINLINE static void take(pthread_mutex_t *first, pthread_mutex_t *second, const char *role) {
    pthread_mutex_lock(first);
    pthread_barrier_wait(&both_hold); /* with main: both first mutexes are held */
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

NOINLINE void *holder_main(void *arg) {
    (void)arg;
    pthread_mutex_lock(&c);
    sem_post(&step);
    announce("holder");
    for (;;) sleep(1000);
    return NULL;
}

NOINLINE void *blocked_main(void *arg) {
    (void)arg;
    announce("blocked");
    pthread_mutex_lock(&c);
    return NULL;
}

static pthread_mutex_t d = PTHREAD_MUTEX_INITIALIZER;
static sem_t release_d;

NOINLINE void *owner_main(void *arg) {
    (void)arg;
    pthread_mutex_lock(&d);
    sem_post(&step);
    announce("owner");
    while (sem_wait(&release_d)) {
    }
    pthread_mutex_unlock(&d);
    for (;;) sleep(1000);
    return NULL;
}

NOINLINE void *waiter_main(void *arg) {
    (void)arg;
    announce("waiter");
    pthread_mutex_lock(&d);
    pthread_mutex_lock(&print_lock);
    printf("took %ld\n", (long)syscall(SYS_gettid));
    fflush(stdout);
    pthread_mutex_unlock(&print_lock);
    for (;;) sleep(1000);
    return NULL;
}

int main(int argc, char **argv) {
    pthread_t t;
    char line[64];
    int handoff = 0;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "handoff=3") == 0) handoff = 1;
    pthread_barrier_init(&both_hold, NULL, 3);
    sem_init(&step, 0, 0);
    pthread_create(&t, NULL, ab_main, NULL);
    pthread_create(&t, NULL, ba_main, NULL);
    pthread_barrier_wait(&both_hold); /* A is held by ab before queued asks for it */
    pthread_create(&t, NULL, queued_main, NULL);
    pthread_create(&t, NULL, holder_main, NULL);
    sem_wait(&step); /* C is held before anyone waits for it */
    pthread_create(&t, NULL, blocked_main, NULL);
    if (handoff) {
        sem_init(&release_d, 0, 0);
        pthread_create(&t, NULL, owner_main, NULL);
        sem_wait(&step); /* D is held before anyone waits for it */
        pthread_create(&t, NULL, waiter_main, NULL);
        pthread_create(&t, NULL, waiter_main, NULL);
    }
    announce("main");
    while (fgets(line, sizeof line, stdin)) {
        if (strncmp(line, "release", 7) == 0) sem_post(&release_d);
    }
    return 0;
}
