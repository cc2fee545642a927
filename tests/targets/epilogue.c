/* A thread held in a function's epilogue, after it popped its frame pointer and before it
 * returns (x86-64 only). There the CFI still says the caller's rbp was saved at CFA-16, which
 * is now 8 bytes below the stack pointer (in the red zone), and rbp already holds the
 * caller's value, so a frame-pointer walk skips the caller. V8's ieee754::sin, called from
 * JIT code, was caught this way, and the JIT frame vanished from the report.
 *
 *   epilogue_leaf (spins in its epilogue) <- epilogue_caller <- epilogue_main <- start_thread
 *
 * The spinning loop itself raises a flag, so once the main thread sees it the thread is in
 * the loop (every pc of which has the same CFI row). The main thread then prints
 * "ready epilogue TID" and "ready main TID", and blocks reading stdin.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline, noclone))

volatile int epilogue_reached;
static volatile long leaf_tid;

void epilogue_leaf(void);
__asm__(
    ".text\n"
    ".globl epilogue_leaf\n"
    ".type epilogue_leaf, @function\n"
    "epilogue_leaf:\n"
    "    .cfi_startproc\n"
    "    push %rbp\n"
    "    .cfi_def_cfa_offset 16\n"
    "    .cfi_offset %rbp, -16\n"
    "    mov %rsp, %rbp\n"
    "    .cfi_def_cfa_register %rbp\n"
    "    pop %rbp\n"
    "    .cfi_def_cfa %rsp, 8\n" /* rbp's rule stays: CFA-16, below sp now */
    "1:  movl $1, epilogue_reached(%rip)\n"
    "    pause\n"
    "    jmp 1b\n"
    "    .cfi_endproc\n"
    ".size epilogue_leaf, .-epilogue_leaf\n");

NOINLINE void epilogue_caller(void) {
    epilogue_leaf();
    __asm__ volatile("" ::: "memory"); /* not a tail call */
}

NOINLINE void *epilogue_main(void *arg) {
    (void)arg;
    leaf_tid = syscall(SYS_gettid);
    epilogue_caller();
    __asm__ volatile("" ::: "memory");
    return NULL;
}

int main(void) {
    pthread_t thread;
    pthread_create(&thread, NULL, epilogue_main, NULL);
    while (!epilogue_reached) sched_yield();
    printf("ready epilogue %ld\n", leaf_tid);
    printf("ready main %ld\n", (long)getpid());
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
    }
    return 0;
}
