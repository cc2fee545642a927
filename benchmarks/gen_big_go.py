#!/usr/bin/env python3
"""Generate and build a large Go server (for benchmarks only): tests/targets/goserver/main.go
plus generated packages of distinct functions, all reachable so the linker keeps them, which
makes a binary of the size real Go servers have (50-150 MB).

    python3 benchmarks/gen_big_go.py OUT_DIR [--packages 60] [--functions 600] [--go GO]

Builds OUT_DIR/bigserver (with DWARF) and OUT_DIR/bigserver-stripped (`-ldflags=-s -w`).
`--packages 60 --functions 600` gives about 60 MB with DWARF.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
from pathlib import Path

SERVER = Path(__file__).resolve().parent.parent / "tests" / "targets" / "goserver" / "main.go"

FUNCTION = """
//go:noinline
func F{i}(x int, s string) string {{
	m := map[string]int{{s: x}}
	switch x % 5 {{
	case 0:
		return fmt.Sprintf("%d-%s-{i}-%v", x, s, m) + strings.Repeat(s, x%3)
	case 1:
		return strconv.Itoa(x*{i}) + s + fmt.Sprint(len(m))
	case 2:
		return strings.ToUpper(s) + fmt.Sprintf("%x", x+{i})
	case 3:
		parts := strings.Split(s, "{i}")
		return strings.Join(parts, strconv.Itoa(x))
	}}
	return fmt.Sprintf("%q", s+strconv.Itoa({i}))
}}
"""


def generate(out: Path, packages: int, functions: int) -> None:
    src = out / "src" / "bigserver"
    for p in range(packages):
        pkg = src / f"gen{p}"
        pkg.mkdir(parents=True, exist_ok=True)
        body = [f"package gen{p}\n", 'import (\n\t"fmt"\n\t"strconv"\n\t"strings"\n)\n']
        body += [FUNCTION.format(i=i) for i in range(functions)]
        calls = "\n".join(f"\tout = append(out, F{i}(x, s))" for i in range(functions))
        body.append(f"\nfunc All(x int, s string) []string {{\n\tvar out []string\n{calls}\n"
                    "\treturn out\n}\n")  # fmt: skip
        (pkg / "gen.go").write_text("".join(body))
    main = SERVER.read_text()
    imports = "".join(f'\tgen{p} "bigserver/gen{p}"\n' for p in range(packages))
    main = main.replace("import (\n", "import (\n" + imports, 1)
    uses = "".join(f"\t\tgen{p}.All(len(os.Args), os.Args[0])\n" for p in range(packages))
    main = re.sub(r"(func main\(\) \{\n)", r"\1\tif len(os.Args) > 99 {\n" + uses + "\t}\n", main)
    (src / "main.go").write_text(main)
    (src / "go.mod").write_text("module bigserver\n\ngo 1.19\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--packages", type=int, default=60)
    parser.add_argument("--functions", type=int, default=600)
    parser.add_argument("--go", default="go")
    args = parser.parse_args()
    out = args.out.resolve()
    generate(out, args.packages, args.functions)
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"}
    env.setdefault("GOCACHE", str(out / "gocache"))
    for name, flags in (("bigserver", []), ("bigserver-stripped", ["-ldflags=-s -w"])):
        subprocess.run(
            [args.go, "build", *flags, "-o", str(out / name), "."],
            cwd=out / "src" / "bigserver",
            env=env,
            check=True,
        )
        print(out / name, (out / name).stat().st_size // (1 << 20), "MiB")


if __name__ == "__main__":
    main()
