/* Second unit of the two-CU target: a thread blocked in read() inside lib_blocking_read. */
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

__attribute__((noinline)) void lib_blocking_read(int fd) {
    char c;
    printf("ready read %ld\n", (long)syscall(SYS_gettid));
    fflush(stdout);
    for (;;) read(fd, &c, 1);
}

void *lib_thread_main(void *arg) {
    int p[2];
    (void)arg;
    if (pipe(p)) return NULL;
    lib_blocking_read(p[0]);
    return NULL;
}
