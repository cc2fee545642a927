/* The forger of tests/test_live_trust.py: built with the victim's build-id and padded to its
 * size, run as nobody; every function it has is named HACKD_*, so a frame of the victim named
 * from this file's table shows it. */
#include <unistd.h>

__attribute__((noinline)) void HACKD_wait(void) {
    char c;
    while (read(0, &c, 1) > 0) {
    }
}

__attribute__((noinline)) void HACKD_pad1(void) { HACKD_wait(); }
__attribute__((noinline)) void HACKD_pad2(void) { HACKD_pad1(); }

int main(void) {
    HACKD_pad2();
    return 0;
}
