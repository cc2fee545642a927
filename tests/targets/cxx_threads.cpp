// A C++ target for unwinding and symbolization tests: namespaces, templates, lambdas,
// always_inline helpers, exceptions and std::thread. Built -O2 -g.
//
// Threads announce "ready ROLE TID"; roles: worker (blocked in read() under templates and a
// lambda), waiter (std::condition_variable::wait), thrower (blocked in a catch handler after
// a throw), spin (spins in an inlined helper). The main thread then serves "status" on stdin.
#include <sys/syscall.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#define NOINLINE __attribute__((noinline))
#define ALWAYS_INLINE inline __attribute__((always_inline))

namespace {
std::mutex print_mutex;
int idle_pipe[2];
volatile unsigned long spins;

void announce(const char *role) {
    std::lock_guard<std::mutex> lock(print_mutex);
    std::printf("ready %s %ld\n", role, static_cast<long>(syscall(SYS_gettid)));
    std::fflush(stdout);
}
}  // namespace

namespace storage {
namespace engine {

struct Block {
    char bytes[16];
};

template <typename T>
class Reader {
public:
    NOINLINE long read_one(T *into) {
        announce("worker");
        long n = 0;
        for (;;) n += ::read(idle_pipe[0], into->bytes, 1);
        return n;
    }
};

template <typename T, int Depth>
struct Pipeline {
    static NOINLINE long run(Reader<T> &reader, T *block) {
        long r = Pipeline<T, Depth - 1>::run(reader, block);
        __asm__ volatile("" ::: "memory");
        return r + 1;
    }
};

template <typename T>
struct Pipeline<T, 0> {
    static NOINLINE long run(Reader<T> &reader, T *block) {
        auto step = [&](int k) NOINLINE { return reader.read_one(block) + k; };
        long r = step(1);
        __asm__ volatile("" ::: "memory");
        return r;
    }
};

ALWAYS_INLINE void inner_spin() {
    for (;;) spins = spins + 1;
}

ALWAYS_INLINE void middle_spin() {
    inner_spin();
}

NOINLINE void spin_forever() {
    announce("spin");
    middle_spin();
}

}  // namespace engine
}  // namespace storage

NOINLINE void wait_on_condition() {
    std::mutex m;
    std::condition_variable cv;
    std::unique_lock<std::mutex> lock(m);
    announce("waiter");
    cv.wait(lock, [] { return false; });
}

NOINLINE void throw_and_block() {
    try {
        throw std::runtime_error("boom");
    } catch (const std::exception &e) {
        announce("thrower");
        char c;
        for (;;) ::read(idle_pipe[0], &c, 1);
    }
}

int main() {
    if (pipe(idle_pipe)) return 1;
    std::vector<std::thread> threads;
    threads.emplace_back([] {
        storage::engine::Reader<storage::engine::Block> reader;
        storage::engine::Block block;
        storage::engine::Pipeline<storage::engine::Block, 3>::run(reader, &block);
    });
    threads.emplace_back(wait_on_condition);
    threads.emplace_back(throw_and_block);
    threads.emplace_back(storage::engine::spin_forever);
    announce("main");
    char line[64];
    while (std::fgets(line, sizeof line, stdin)) {
        std::lock_guard<std::mutex> lock(print_mutex);
        std::printf("status read_returned=0 spin=%lu\n", spins);
        std::fflush(stdout);
    }
    _exit(0);
}
