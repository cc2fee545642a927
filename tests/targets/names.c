/* Threads with hostile names, for the escaping tests: a newline, a forged key, terminal
 * escape sequences (OSC title change, erase screen, carriage return) and bytes that are not
 * UTF-8. Each thread names itself, prints "ready name TID" and blocks in read on a pipe
 * nobody writes; the main thread prints "ready main TID" last and blocks reading stdin.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static const char *const names[] = {
    "a\nb", "x) status=ok", "\x1b]0;pwned\x07", "\x1b[2J\rz", "\xff\xfe=\\",
};
#define COUNT (sizeof names / sizeof names[0])

static int pipe_fds[2];
static pthread_mutex_t print_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t ready_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ready_cond = PTHREAD_COND_INITIALIZER;
static unsigned ready;

static void *run(void *arg) {
    prctl(PR_SET_NAME, (const char *)arg);
    pthread_mutex_lock(&print_lock);
    printf("ready name %ld\n", (long)syscall(SYS_gettid));
    fflush(stdout);
    pthread_mutex_unlock(&print_lock);
    pthread_mutex_lock(&ready_lock);
    ready++;
    pthread_cond_signal(&ready_cond);
    pthread_mutex_unlock(&ready_lock);
    char c;
    return (void *)(long)read(pipe_fds[0], &c, 1);
}

int main(void) {
    if (pipe(pipe_fds)) return 1;
    pthread_t threads[COUNT];
    for (unsigned i = 0; i < COUNT; i++)
        if (pthread_create(&threads[i], NULL, run, (void *)names[i])) return 1;
    pthread_mutex_lock(&ready_lock);
    while (ready < COUNT) pthread_cond_wait(&ready_cond, &ready_lock);
    pthread_mutex_unlock(&ready_lock);
    pthread_mutex_lock(&print_lock);
    printf("ready main %ld\n", (long)syscall(SYS_gettid));
    fflush(stdout);
    pthread_mutex_unlock(&print_lock);
    char c;
    while (read(0, &c, 1) > 0) {
    }
    return 0;
}
