/* How a test target says a thread has reached its known state: "ready ROLE TID" on stdout,
 * one whole line at a time (tests/helpers.py's Target reads them). Included by the C and
 * C++ targets whose threads announce themselves; `print_lock` also guards their other
 * output. */
#ifndef STACKDUMP_TESTS_READY_H
#define STACKDUMP_TESTS_READY_H

#include <pthread.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

static pthread_mutex_t print_lock = PTHREAD_MUTEX_INITIALIZER;

static void announce(const char *role) {
    pthread_mutex_lock(&print_lock);
    printf("ready %s %ld\n", role, (long)syscall(SYS_gettid));
    fflush(stdout);
    pthread_mutex_unlock(&print_lock);
}

#endif
