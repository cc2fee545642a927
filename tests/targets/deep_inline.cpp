// Deep inlining for the inline-chain reader's differential test (issue 31): templates that
// inline into each other several levels deep, lambdas, and the standard library's own
// inlined algorithms and containers. Compiled only, never run.
#include <algorithm>
#include <map>
#include <numeric>
#include <string>
#include <vector>

namespace deep {

template <int N>
struct Level {
    static inline __attribute__((always_inline)) long step(long x) {
        return Level<N - 1>::step(x * 3 + N) ^ (x >> 2);
    }
};

template <>
struct Level<0> {
    static inline __attribute__((always_inline)) long step(long x) { return x + 1; }
};

inline long through_lambdas(std::vector<long>& v) {
    auto twice = [](long x) { return Level<6>::step(x) * 2; };
    std::transform(v.begin(), v.end(), v.begin(), twice);
    std::sort(v.begin(), v.end(), [](long a, long b) { return Level<3>::step(a) < b; });
    return std::accumulate(v.begin(), v.end(), 0L);
}

}  // namespace deep

struct Registry {
    std::map<std::string, long> counts;
    void add(const std::string& key, long n) { counts[key] += deep::Level<4>::step(n); }
};

int main(int argc, char** argv) {
    std::vector<long> v(static_cast<size_t>(argc) * 1000);
    std::iota(v.begin(), v.end(), argc);
    Registry registry;
    for (int i = 0; i < argc; i++) registry.add(argv[i], deep::through_lambdas(v));
    return static_cast<int>(registry.counts.size());
}
