// Fibers (boost.fiber, on boost.context's jump_fcontext) parked in known functions, for the
// --coroutines tests. Usage: fibers SLEEPERS WAITERS
//   SLEEPERS fibers sleep in fiber_sleep_leaf <- fiber_sleep_middle <- fiber_sleep_entry
//   WAITERS fibers wait on a fiber mutex held by main, in fiber_lock_leaf <- fiber_lock_entry
// Prints "ready main TID" once every fiber has parked; EOF on stdin ends the process.
#include <boost/fiber/all.hpp>
#include <sys/syscall.h>
#include <unistd.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#define NOINLINE __attribute__((noinline))

static boost::fibers::mutex held;
static volatile int parked;

extern "C" NOINLINE void fiber_sleep_leaf() {
    ++parked;
    boost::this_fiber::sleep_for(std::chrono::hours(1000));
    asm volatile("" ::: "memory");
}
extern "C" NOINLINE void fiber_sleep_middle() { fiber_sleep_leaf(); asm volatile("" ::: "memory"); }
extern "C" NOINLINE void fiber_sleep_entry() { fiber_sleep_middle(); asm volatile("" ::: "memory"); }

extern "C" NOINLINE void fiber_lock_leaf() {
    ++parked;
    held.lock();
    held.unlock();
    asm volatile("" ::: "memory");
}
extern "C" NOINLINE void fiber_lock_entry() { fiber_lock_leaf(); asm volatile("" ::: "memory"); }

int main(int argc, char **argv) {
    int sleepers = argc > 1 ? atoi(argv[1]) : 5;
    int waiters = argc > 2 ? atoi(argv[2]) : 3;
    held.lock();
    std::vector<boost::fibers::fiber> fibers;
    for (int i = 0; i < sleepers; i++) fibers.emplace_back(fiber_sleep_entry);
    for (int i = 0; i < waiters; i++) fibers.emplace_back(fiber_lock_entry);
    while (parked < sleepers + waiters) boost::this_fiber::yield();
    printf("ready main %ld\n", (long)syscall(SYS_gettid));
    fflush(stdout);
    char buffer[16];
    while (read(0, buffer, sizeof buffer) > 0) {
    }
    _exit(0);  // the fibers never finish: leave without joining them
}
