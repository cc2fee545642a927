/* A target whose code mappings change while it is sampled: its "swap" thread loads one of
 * two libraries, blocks in read() inside it, and on each byte read unloads it and loads
 * the other, which the loader mostly places where the first was. The main thread passes
 * each byte of stdin on to it, and exits when stdin ends.
 *
 * Built three ways from this file: -DSWAP_LIB=1 and -DSWAP_LIB=2 make the two libraries
 * (-shared -fPIC), without either the program (arguments: swap=1 LIB1 LIB2). The libraries
 * lay their code out in opposite orders, so that a pc of one read with the other's layout
 * falls in a function of another name: in library 1 `swapped_one` comes first and then a
 * large `pad_one`; in library 2 a large `pad_two` comes first, then `swapped_two`.
 * Announces "ready main TID", then "ready swap TID" once, when first blocked. */
#include <stdio.h>
#include <unistd.h>

#if SWAP_LIB == 1
__attribute__((noinline)) int swapped_one(int fd) {
    char c;
    return (int)read(fd, &c, 1);
}
/* 64 KiB of code after it. */
__attribute__((noinline)) void pad_one(void) { __asm__ volatile(".fill 65536, 1, 0x90"); }
#elif SWAP_LIB == 2
__attribute__((noinline)) void pad_two(void) { __asm__ volatile(".fill 65536, 1, 0x90"); }
__attribute__((noinline)) int swapped_two(int fd) {
    char c;
    return (int)read(fd, &c, 1);
}
#else
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "ready.h"

static const char *libraries[2];
static int bytes[2];  // a pipe from the main thread to the swap thread

static void *swap_main(void *arg) {
    static const char *names[2] = {"swapped_one", "swapped_two"};
    (void)arg;
    for (unsigned long i = 0;; i++) {
        void *handle = dlopen(libraries[i % 2], RTLD_NOW | RTLD_LOCAL);
        if (handle == NULL) {
            fprintf(stderr, "%s\n", dlerror());
            exit(2);
        }
        int (*swapped)(int) = (int (*)(int))dlsym(handle, names[i % 2]);
        if (i == 0) announce("swap");  // blocks in read just after: the test waits for it
        swapped(bytes[0]);
        dlclose(handle);
    }
    return NULL;
}

int main(int argc, char **argv) {
    pthread_t thread;
    if (argc < 4 || strcmp(argv[1], "swap=1") != 0) {
        fprintf(stderr, "usage: %s swap=1 LIB1 LIB2\n", argv[0]);
        return 2;
    }
    libraries[0] = argv[2];
    libraries[1] = argv[3];
    if (pipe(bytes) != 0) return 2;
    pthread_create(&thread, NULL, swap_main, NULL);
    announce("main");
    for (;;) {
        char c;
        if (read(0, &c, 1) <= 0) return 0;  // stdin closed: the test is over
        if (write(bytes[1], &c, 1) != 1) return 2;
    }
}
#endif
