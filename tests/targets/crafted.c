/* A thread whose frame-pointer chain, past frames that have no CFI, leads to the return
 * address 0x16, in no mapping (as a Go netpoller thread's stack did). Built with frame
 * pointers and without unwind tables, so only the frame records describe its own frames:
 *
 *   epoll_wait (libc, CFI) <- crafted_wait <- crafted_main, whose saved frame pointer
 *   crafted_wait overwrote with the address of {0, 0x16}, a fake record in crafted_main's
 *   own frame (on the stack, above, as a real one would be).
 *
 * The thread prints "ready crafted TID" and blocks in epoll_wait on an empty set (copied in
 * place by default, stopped with --capture ptrace); the main thread prints "ready main TID"
 * and blocks reading stdin.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline, noclone))

static int epfd;

NOINLINE void crafted_wait(void **fake) {
    void **record = __builtin_frame_address(0);
    record[0] = fake;
    printf("ready crafted %ld\n", (long)syscall(SYS_gettid));
    fflush(stdout);
    struct epoll_event event;
    for (;;) epoll_wait(epfd, &event, 1, -1);
}

NOINLINE void *crafted_main(void *arg) {
    (void)arg;
    void *volatile fake[2] = {0, (void *)0x16};
    crafted_wait((void **)fake);
    return (void *)fake[0];
}

int main(void) {
    epfd = epoll_create1(0);
    pthread_t thread;
    if (epfd < 0 || pthread_create(&thread, NULL, crafted_main, NULL)) return 1;
    /* The thread's line comes first: wait_ready reads lines in any order anyway. */
    char c;
    usleep(0);
    printf("ready main %ld\n", (long)syscall(SYS_gettid));
    fflush(stdout);
    while (read(0, &c, 1) > 0) {
    }
    return 0;
}
