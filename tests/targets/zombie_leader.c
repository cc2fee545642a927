/* A process whose main thread has exited while the others live on: the main thread starts
 * COUNT workers (default 3), each printing "ready worker TID" and blocking in read on a pipe
 * nobody writes, prints "ready leader TID" once they all have, then calls pthread_exit. The
 * leader stays a zombie (State Z, no memory of its own in /proc) as long as a worker lives.
 *
 * Usage: zombie_leader [worker=COUNT]
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline, noclone))

static int pipe_fds[2];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t all_ready = PTHREAD_COND_INITIALIZER;
static int ready;

NOINLINE void worker_wait(void) {
    char c;
    while (read(pipe_fds[0], &c, 1) != 0) {
    }
}

NOINLINE void *worker_main(void *arg) {
    (void)arg;
    pthread_mutex_lock(&lock);
    printf("ready worker %ld\n", (long)syscall(SYS_gettid));
    fflush(stdout);
    ready++;
    pthread_cond_signal(&all_ready);
    pthread_mutex_unlock(&lock);
    worker_wait();
    return NULL;
}

int main(int argc, char **argv) {
    int count = argc > 1 && strncmp(argv[1], "worker=", 7) == 0 ? atoi(argv[1] + 7) : 3;
    if (count < 1 || pipe(pipe_fds)) return 1;
    for (int i = 0; i < count; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, worker_main, NULL)) return 1;
    }
    pthread_mutex_lock(&lock);
    while (ready < count) pthread_cond_wait(&all_ready, &lock);
    printf("ready leader %ld\n", (long)syscall(SYS_gettid));
    fflush(stdout);
    pthread_mutex_unlock(&lock);
    pthread_exit(NULL);
}
