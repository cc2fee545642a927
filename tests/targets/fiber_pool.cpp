// Fibers whose stacks share one mapping with a thread's stack, and a thread running a fiber,
// for the --coroutines tests.
//   "pool" thread: its stack is the lowest slice of one mmap'd pool (pthread_attr_setstack);
//     12 fibers, on the pool's other slices (a stack allocator handing them out), sleep
//     in pool_leaf <- pool_entry; then the thread blocks in read() on its own stack.
//   "runner" thread: runner_main joins a fiber (default stack) that blocks the thread in
//     read() from running_leaf <- running_entry: the thread runs a fiber, its main context
//     is saved on its own stack.
// Prints "ready pool TID" and "ready runner TID" as each gets there, then "ready main TID";
// the main thread blocks reading stdin.
#include <boost/fiber/all.hpp>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "ready.h"

#define NOINLINE __attribute__((noinline))

static const size_t SLICE = 256 * 1024;
static char *pool;
static std::atomic<int> next_slice{1};  // slice 0 is the pool thread's own stack
static volatile int parked;
static int never[2];  // a pipe nobody writes: read() blocks on it for good

struct slice_allocator {
    boost::context::stack_context allocate() {
        boost::context::stack_context sc;
        sc.size = SLICE;
        sc.sp = pool + (size_t)(next_slice++ + 1) * SLICE;  // the slice's top
        return sc;
    }
    void deallocate(boost::context::stack_context &) {}
};

extern "C" NOINLINE void pool_leaf() {
    ++parked;
    boost::this_fiber::sleep_for(std::chrono::hours(1000));
    asm volatile("" ::: "memory");
}
extern "C" NOINLINE void pool_entry() { pool_leaf(); asm volatile("" ::: "memory"); }

static void *pool_thread(void *arg) {
    int fibers = *(int *)arg;
    std::vector<boost::fibers::fiber> started;
    for (int i = 0; i < fibers; i++)
        started.emplace_back(std::allocator_arg, slice_allocator(), pool_entry);
    while (parked < fibers) boost::this_fiber::yield();
    announce("pool");
    char byte;
    (void)!read(never[0], &byte, 1);
    _exit(0);
}

extern "C" NOINLINE void running_leaf() {
    announce("runner");
    char byte;
    (void)!read(never[0], &byte, 1);
    asm volatile("" ::: "memory");
}
extern "C" NOINLINE void running_entry() { running_leaf(); asm volatile("" ::: "memory"); }
extern "C" NOINLINE void runner_main() {
    boost::fibers::fiber running(running_entry);
    running.join();
    asm volatile("" ::: "memory");
}
static void *runner_thread(void *) {
    runner_main();
    return nullptr;
}

int main(int argc, char **argv) {
    (void)argc;
    (void)argv;
    static int fibers = 12;
    if (pipe(never) != 0) return 1;
    pool = (char *)mmap(nullptr, (fibers + 1) * SLICE, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (pool == MAP_FAILED) return 1;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstack(&attr, pool, SLICE);
    pthread_t a, b;
    pthread_create(&a, &attr, pool_thread, &fibers);
    pthread_create(&b, nullptr, runner_thread, nullptr);
    announce("main");
    char buffer[16];
    while (read(0, buffer, sizeof buffer) > 0) {
    }
    _exit(0);
}
