// bthreads (brpc) parked in known functions, for the --coroutines tests.
// Usage: bthreads SLEEPERS LOCKERS BUTEXES [SPINNERS]
//   SLEEPERS sleep in bthread_usleep:  bt_sleep_leaf <- bt_sleep_middle <- bt_sleep_entry
//   LOCKERS wait on a bthread::Mutex main holds: bt_lock_leaf <- bt_lock_entry
//   BUTEXES wait on a butex:            bt_butex_leaf <- bt_butex_entry
//   SPINNERS spin for ever on a worker: bt_spin_leaf <- bt_spin_entry (never suspended)
// Prints "ready main TID" once every bthread has parked; EOF on stdin ends the process.
#include <bthread/bthread.h>
#include <bthread/butex.h>
#include <bthread/mutex.h>
#include <dirent.h>
#include <sys/syscall.h>
#include <cstring>
#include <unistd.h>
#include <atomic>
#include <cstdio>
#include <cstdlib>

#define NOINLINE __attribute__((noinline))

static bthread::Mutex held;
static std::atomic<int> parked{0};
static void *butex;

extern "C" NOINLINE void bt_sleep_leaf() {
    parked++;
    bthread_usleep(1000ULL * 1000 * 1000 * 1000);
    asm volatile("" ::: "memory");
}
extern "C" NOINLINE void bt_sleep_middle() { bt_sleep_leaf(); asm volatile("" ::: "memory"); }
extern "C" NOINLINE void *bt_sleep_entry(void *) { bt_sleep_middle(); asm volatile("" ::: "memory"); return nullptr; }

extern "C" NOINLINE void bt_lock_leaf() {
    parked++;
    held.lock();
    held.unlock();
    asm volatile("" ::: "memory");
}
extern "C" NOINLINE void *bt_lock_entry(void *) { bt_lock_leaf(); asm volatile("" ::: "memory"); return nullptr; }

extern "C" NOINLINE void bt_butex_leaf() {
    parked++;
    while (bthread::butex_wait(butex, 0, nullptr) == 0 || true) {
    }
}
extern "C" NOINLINE void *bt_butex_entry(void *) { bt_butex_leaf(); asm volatile("" ::: "memory"); return nullptr; }

static volatile unsigned long spins;
extern "C" NOINLINE void bt_spin_leaf() {
    parked++;
    for (;;) spins++;
}
extern "C" NOINLINE void *bt_spin_entry(void *) { bt_spin_leaf(); asm volatile("" ::: "memory"); return nullptr; }

// Whether every thread but this one is blocked in a system call (/proc/self/task/*/syscall
// not "running"): the bthread workers are then parked, so are their bthreads.
static bool workers_idle(int running_allowed) {
    DIR *dir = opendir("/proc/self/task");
    if (dir == nullptr) return false;
    int running = 0;
    long self = (long)syscall(SYS_gettid);
    while (struct dirent *entry = readdir(dir)) {
        if (entry->d_name[0] == '.' || atol(entry->d_name) == self) continue;
        char path[64], text[32] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/syscall", entry->d_name);
        FILE *f = fopen(path, "r");
        if (f == nullptr) continue;
        if (fgets(text, sizeof text, f) != nullptr && strncmp(text, "running", 7) == 0) running++;
        fclose(f);
    }
    closedir(dir);
    return running <= running_allowed;
}

int main(int argc, char **argv) {
    int sleepers = argc > 1 ? atoi(argv[1]) : 5;
    int lockers = argc > 2 ? atoi(argv[2]) : 3;
    int butexes = argc > 3 ? atoi(argv[3]) : 2;
    int spinners = argc > 4 ? atoi(argv[4]) : 0;
    butex = bthread::butex_create_checked<int>();
    *static_cast<int *>(butex) = 0;
    held.lock();
    bthread_t id;
    for (int i = 0; i < sleepers; i++) bthread_start_background(&id, nullptr, bt_sleep_entry, nullptr);
    for (int i = 0; i < lockers; i++) bthread_start_background(&id, nullptr, bt_lock_entry, nullptr);
    for (int i = 0; i < butexes; i++) bthread_start_background(&id, nullptr, bt_butex_entry, nullptr);
    for (int i = 0; i < spinners; i++) bthread_start_background(&id, nullptr, bt_spin_entry, nullptr);
    while (parked.load() < sleepers + lockers + butexes + spinners) usleep(1000);
    // Each counted itself just before it waits: it has parked once no worker thread runs
    // but the spinners' own.
    while (!workers_idle(spinners)) usleep(1000);
    printf("ready main %ld\n", (long)syscall(SYS_gettid));
    fflush(stdout);
    char buffer[16];
    while (read(0, buffer, sizeof buffer) > 0) {
    }
    _exit(0);
}
