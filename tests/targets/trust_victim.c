/* The real program of tests/test_live_trust.py: blocks in read() inside victim_wait. */
#include <unistd.h>

__attribute__((noinline)) void victim_wait(void) {
    char c;
    while (read(0, &c, 1) > 0) {
    }
}

int main(void) {
    victim_wait();
    return 0;
}
