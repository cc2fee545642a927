#!/usr/bin/env python3
"""Generate and build a C++ program with a large amount of DWARF (for benchmarks only).

Each translation unit instantiates many distinct class templates over std containers, which
makes gcc emit a lot of debug information per line of source. The program itself is a
threads target like tests/targets/threads.c: it prints `ready ROLE TID` lines and serves
`status` on stdin, so benchmarks/run.py can drive it.

    python3 benchmarks/gen_big_dwarf.py [OUT_DIR] [--units 40] [--per-unit 150] [--copies N]

`--copies N` links N more copies of every unit without compiling them again: each is the
unit's object with its namespace renamed (`objcopy --redefine-syms`, so the copies' symbols
and COMDAT groups are their own), which multiplies the DWARF by N + 1 in seconds instead of
the hour gcc would take. `--units 70 --per-unit 150 --copies 8` gives about 1 GB of DWARF.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

UNIT = """
#include <map>
#include <string>
#include <vector>
#include <functional>
namespace big{u} {{
template <int N> struct Node {{
    std::map<std::string, std::vector<std::pair<int, std::string>>> index;
    std::function<long(int)> fn;
    __attribute__((noinline)) long work(int k) {{
        index[std::to_string(k + N)].push_back({{k, std::to_string(N)}});
        long total = 0;
        for (auto &kv : index) total += kv.second.size() + kv.first.size();
        return total + (fn ? fn(k) : 0);
    }}
}};
{instances}
long unit_entry_{u}(int k) {{
    long total = 0;
{calls}
    return total;
}}
}}  // namespace big{u}
"""

MAIN = r"""
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>
#include <unistd.h>
#include <sys/syscall.h>
{decls}
static int idle_pipe[2];
__attribute__((noinline)) void blocked_reader() {{
    std::printf("ready read %ld\n", (long)syscall(SYS_gettid)); std::fflush(stdout);
    char c; for (;;) read(idle_pipe[0], &c, 1);
}}
int main(int argc, char **argv) {{
    if (pipe(idle_pipe)) return 1;
    int threads = argc > 1 ? std::atoi(std::strchr(argv[1], '=') + 1) : 8;
    long sink = 0;
    if (argc > 99) {{ {uses} }}
    std::vector<std::thread> pool;
    for (int i = 0; i < threads; i++) pool.emplace_back(blocked_reader);
    std::printf("ready main %ld\n", (long)syscall(SYS_gettid)); std::fflush(stdout);
    char line[64];
    while (std::fgets(line, sizeof line, stdin)) {{
        std::printf("status read_returned=0 spin=0 sink=%ld\n", sink); std::fflush(stdout);
    }}
    _exit(0);
}}
"""


def copy_unit(u: int, obj: Path, copy: int) -> Path:
    """The unit's object with namespace big{u} renamed c{copy}u{u} in every symbol."""
    out = obj.with_name(f"{obj.stem}-copy{copy}.o")
    if out.exists():
        return out
    old, new = f"big{u}", f"c{copy}u{u}"
    old_m, new_m = f"{len(old)}{old}", f"{len(new)}{new}"
    names = subprocess.run(
        ["nm", "-P", "--defined-only", str(obj)], check=True, capture_output=True, text=True
    ).stdout.split("\n")
    renames = obj.with_name(f"{obj.stem}-copy{copy}.syms")
    renames.write_text(
        "".join(
            f"{n} {n.replace(old_m, new_m)}\n"
            for n in (line.split(" ")[0] for line in names)
            if old_m in n
        )
    )
    subprocess.run(["objcopy", f"--redefine-syms={renames}", str(obj), str(out)], check=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "out",
        type=Path,
        nargs="?",
        help="where to build (default: ~/.cache/stackdump-tests/big-dwarf-UNITS-PER-COPIES, "
        "reused when the binary is there)",
    )
    parser.add_argument("--units", type=int, default=40)
    parser.add_argument("--per-unit", type=int, default=150)
    parser.add_argument("--copies", type=int, default=0)
    args = parser.parse_args()
    if args.out is None:
        cache = Path(os.environ.get("STACKDUMP_TEST_CACHE", Path.home() / ".cache/stackdump-tests"))
        args.out = cache / f"big-dwarf-{args.units}-{args.per_unit}-{args.copies}"
        if (args.out / "big_dwarf").exists():
            print(args.out / "big_dwarf")
            return 0
    args.out.mkdir(parents=True, exist_ok=True)
    sources = []
    for u in range(args.units):
        instances = "\n".join(f"template struct Node<{i}>;" for i in range(args.per_unit))
        calls = "\n".join(f"    total += Node<{i}>().work(k);" for i in range(args.per_unit))
        path = args.out / f"unit{u}.cpp"
        path.write_text(UNIT.format(u=u, instances=instances, calls=calls))
        sources.append(path)
    decls = "\n".join(
        f"namespace big{u} {{ long unit_entry_{u}(int); }}" for u in range(args.units)
    )
    uses = " ".join(f"sink += big{u}::unit_entry_{u}(argc);" for u in range(args.units))
    main_src = args.out / "main.cpp"
    main_src.write_text(MAIN.format(decls=decls, uses=uses))
    sources.append(main_src)

    def compile_one(src: Path) -> Path:
        obj = src.with_suffix(".o")
        if not obj.exists():
            subprocess.run(["g++", "-O1", "-g", "-c", str(src), "-o", str(obj)], check=True)
        return obj

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        objects = list(pool.map(compile_one, sources))
        units = objects[: args.units]
        jobs = [(u, obj, c) for c in range(1, args.copies + 1) for u, obj in enumerate(units)]
        objects += list(pool.map(lambda job: copy_unit(*job), jobs))
    binary = args.out / "big_dwarf"
    subprocess.run(["g++", "-pthread", *map(str, objects), "-o", str(binary)], check=True)
    print(binary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
