/* Traces a process with PTRACE_SEIZE and holds on until stdin closes: a stand-in for a
 * debugger already attached to the target. Prints "traced" once attached. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/ptrace.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    pid_t pid = (pid_t)atoi(argv[1]);
    if (ptrace(PTRACE_SEIZE, pid, 0, 0) != 0) { perror("ptrace"); return 1; }
    printf("traced\n");
    fflush(stdout);
    char c;
    while (read(0, &c, 1) > 0) {}
    return 0;
}
