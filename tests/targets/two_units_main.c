/* Main unit of a two-CU target: the thread's function lives in two_units_lib.c, whose
 * .debug_aranges the test strips before linking (FAST cannot find it, FULL can). */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

void *lib_thread_main(void *arg);

int main(void) {
    pthread_t t;
    if (pthread_create(&t, NULL, lib_thread_main, NULL)) return 1;
    printf("ready main %ld\n", (long)syscall(SYS_gettid));
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin))
        if (strncmp(line, "status", 6) == 0) {
            printf("status read_returned=0 spin=0\n");
            fflush(stdout);
        }
    return 0;
}
