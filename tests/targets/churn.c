/* A target whose threads come and go: creators start short-lived threads in a loop (about
 * 1,000 a second in total by default), and some threads stay blocked throughout.
 *
 * Usage: churn RATE   (threads created per second, default 1000)
 * Prints "ready main TID" once churning; serves "status" on stdin:
 *   status -> "status created=N"
 * Exits on EOF. With "exec" as second argument the process instead re-execs itself every
 * 20 ms (a target that execs mid-dump); with "exit" it exits after 50 ms.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static volatile long created;
static long rate = 1000;

static void *short_lived(void *arg) {
    (void)arg;
    /* Runs a little, then blocks a little: dumps find these threads in every state,
     * including gone. */
    volatile unsigned long x = 0;
    for (int i = 0; i < 200000; i++) x += i;
    struct timespec ts = {0, 2000000L};
    nanosleep(&ts, NULL);
    return NULL;
}

static void *creator(void *arg) {
    (void)arg;
    struct timespec gap = {0, 1000000000L / (rate / 4 > 0 ? rate / 4 : 1)};
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    for (;;) {
        pthread_t t;
        if (pthread_create(&t, &attr, short_lived, NULL) == 0)
            __atomic_add_fetch(&created, 1, __ATOMIC_RELAXED);
        nanosleep(&gap, NULL);
    }
    return NULL;
}

static void *blocked(void *arg) {
    (void)arg;
    for (;;) pause();
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1) rate = atol(argv[1]);
    const char *mode = argc > 2 ? argv[2] : "";
    for (int i = 0; i < 4; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, creator, NULL)) return 3;
        if (pthread_create(&t, NULL, blocked, NULL)) return 3;
    }
    if (strcmp(mode, "exec") == 0) {
        struct timespec ts = {0, 20000000L};
        nanosleep(&ts, NULL);
        execv("/proc/self/exe", argv);
        return 4;
    }
    if (strcmp(mode, "exit") == 0) {
        struct timespec ts = {0, 50000000L};
        nanosleep(&ts, NULL);
        exit(0);
    }
    printf("ready main %ld\n", (long)syscall(SYS_gettid));
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        if (strncmp(line, "status", 6) == 0) {
            printf("status created=%ld\n", created);
            fflush(stdout);
        }
    }
    return 0;
}
