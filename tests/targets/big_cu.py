"""Writes big_cu.c: one translation unit with 30,000 small functions, so that its DWARF line
table (~200,000 rows) takes pyelftools a second or more to decode. The main thread blocks in
read(0) inside `waiter`, in that unit, after printing "ready main TID".

    python3 big_cu.py OUT.c
"""

import sys

FUNCTIONS = 30000

HEAD = "#include <stdio.h>\n#include <sys/syscall.h>\n#include <unistd.h>\n"
FUNCTION = (
    "long f_{i}(long x) {{\n  long y = x * {i};\n  y ^= y >> 3;\n  y += {i};\n  return y;\n}}\n"
)
TAIL = """
__attribute__((noinline)) static long waiter(void) {
    char c;
    printf("ready main %ld\\n", (long)syscall(SYS_gettid));
    fflush(stdout);
    return read(0, &c, 1) + f_1(2);
}

int main(void) { return (int)waiter(); }
"""

if __name__ == "__main__":
    with open(sys.argv[1], "w") as out:
        out.write(HEAD)
        for i in range(FUNCTIONS):
            out.write(FUNCTION.format(i=i))
        out.write(TAIL)
