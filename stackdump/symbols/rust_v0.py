"""Rust's v0 symbol mangling (`_R...`), demangled as libiberty (gdb, c++filt) prints it,
without the crate disambiguator hashes (`core::fmt::Debug`, not `core[4915620dd430ba15]::...`).

Grammar: https://doc.rust-lang.org/rustc/symbol-mangling/v0.html. Recursion and back
references are bounded so a hostile symbol costs at most a few thousand steps.
"""

from __future__ import annotations

from typing import List, Optional

BASIC_TYPES = {
    "a": "i8",
    "b": "bool",
    "c": "char",
    "d": "f64",
    "e": "str",
    "f": "f32",
    "h": "u8",
    "i": "isize",
    "j": "usize",
    "l": "i32",
    "m": "u32",
    "n": "i128",
    "o": "u128",
    "s": "i16",
    "t": "u16",
    "u": "()",
    "v": "...",
    "x": "i64",
    "y": "u64",
    "z": "!",
    "p": "_",
}
_MAX_DEPTH = 200
_MAX_STEPS = 100_000


class _Invalid(Exception):
    pass


def demangle_rust_v0(name: str) -> Optional[str]:
    if not name.startswith("_R"):
        return None
    body = name.split(".", 1)[0]  # v0 identifiers never hold '.'; LLVM suffixes follow one
    try:
        parser = _Parser(body[2:])
        if parser.peek().isdigit():  # encoding version: only 0 exists
            return None
        text = parser.path(in_value=True)
        return text
    except (_Invalid, IndexError, ValueError, RecursionError):
        return None


class _Parser:
    def __init__(self, text: str) -> None:
        self.s = text
        self.pos = 0
        self.depth = 0
        self.steps = 0
        self.bound_lifetimes = 0

    # -- lexing -------------------------------------------------------------------------------

    def peek(self) -> str:
        return self.s[self.pos] if self.pos < len(self.s) else ""

    def next(self) -> str:
        if self.pos >= len(self.s):
            raise _Invalid("truncated")
        c = self.s[self.pos]
        self.pos += 1
        return c

    def eat(self, c: str) -> bool:
        if self.peek() == c:
            self.pos += 1
            return True
        return False

    def base62(self) -> int:
        if self.eat("_"):
            return 0
        value = 0
        while True:
            c = self.next()
            if c == "_":
                return value + 1
            if c.isdigit():
                d = ord(c) - 48
            elif "a" <= c <= "z":
                d = ord(c) - 97 + 10
            elif "A" <= c <= "Z":
                d = ord(c) - 65 + 36
            else:
                raise _Invalid("base62")
            value = value * 62 + d

    def opt_base62(self, tag: str) -> int:
        return self.base62() + 1 if self.eat(tag) else 0

    def decimal(self) -> int:
        # "0" | nonzero-digit {digit}: "00" is two numbers (two empty identifiers)
        start = self.pos
        if self.eat("0"):
            return 0
        while self.peek().isdigit():
            self.pos += 1
        if start == self.pos:
            raise _Invalid("decimal")
        return int(self.s[start : self.pos])

    def ident(self) -> str:
        punycode = self.eat("u")
        length = self.decimal()
        self.eat("_")
        raw = self.s[self.pos : self.pos + length]
        if len(raw) != length:
            raise _Invalid("identifier")
        self.pos += length
        if not punycode:
            return raw
        # Rust writes punycode with '_' where RFC 3492 has its last '-'.
        basic, sep, extended = raw.rpartition("_")
        encoded = f"{basic}-{extended}" if sep else extended
        return encoded.encode("ascii").decode("punycode")

    # -- grammar ------------------------------------------------------------------------------

    def _enter(self) -> None:
        self.depth += 1
        self.steps += 1
        if self.depth > _MAX_DEPTH or self.steps > _MAX_STEPS:
            raise _Invalid("too deep")

    def backref(self, parse):
        start = self.pos - 1
        target = self.base62()
        if target >= start:
            raise _Invalid("forward backref")
        saved = self.pos
        self.pos = target
        try:
            return parse()
        finally:
            self.pos = saved

    def path(self, in_value: bool) -> str:
        self._enter()
        try:
            tag = self.next()
            if tag == "C":
                self.opt_base62("s")
                return self.ident()
            if tag == "M":
                self.opt_base62("s")
                self.path(in_value=False)
                return f"<{self.type()}>"
            if tag == "X":
                self.opt_base62("s")
                self.path(in_value=False)
                self_type = self.type()
                trait = self.path(in_value=False)
                return f"<{self_type} as {trait}>"
            if tag == "Y":
                self_type = self.type()
                trait = self.path(in_value=False)
                return f"<{self_type} as {trait}>"
            if tag == "N":
                namespace = self.next()
                prefix = self.path(in_value)
                dis = self.opt_base62("s")
                name = self.ident()
                if namespace.isupper():
                    kind = {"C": "closure", "S": "shim"}.get(namespace, namespace)
                    label = f"{kind}:{name}" if name else kind
                    return f"{prefix}::{{{label}#{dis}}}"
                return f"{prefix}::{name}" if name else prefix
            if tag == "I":
                prefix = self.path(in_value)
                args = self.generic_args()
                return f"{prefix}{'::' if in_value else ''}<{args}>"
            if tag == "B":
                return self.backref(lambda: self.path(in_value))
            raise _Invalid(f"path tag {tag}")
        finally:
            self.depth -= 1

    def generic_args(self) -> str:
        args: List[str] = []
        while not self.eat("E"):
            if self.eat("L"):
                lifetime = self.lifetime(self.base62())
                if lifetime != "'_":
                    args.append(lifetime)
            elif self.eat("K"):
                args.append(self.const())
            else:
                args.append(self.type())
        return ", ".join(args)

    def lifetime(self, index: int) -> str:
        if index == 0:
            return "'_"
        depth = self.bound_lifetimes - index
        if depth < 0:
            raise _Invalid("lifetime")
        return "'" + (chr(ord("a") + depth) if depth < 26 else f"_{depth}")

    def binder(self) -> str:
        count = self.opt_base62("G")
        if not count:
            return ""
        names = []
        for _ in range(count):
            self.bound_lifetimes += 1
            names.append(self.lifetime(1))
        return f"for<{', '.join(names)}> "

    def type(self) -> str:
        self._enter()
        try:
            tag = self.next()
            if tag in BASIC_TYPES:
                return BASIC_TYPES[tag]
            if tag in ("R", "Q"):
                lifetime = self.lifetime(self.base62()) if self.eat("L") else "'_"
                inner = self.type()
                mut = "mut " if tag == "Q" else ""
                lt = "" if lifetime == "'_" else f"{lifetime} "
                return f"&{lt}{mut}{inner}"
            if tag == "P":
                return f"*const {self.type()}"
            if tag == "O":
                return f"*mut {self.type()}"
            if tag == "A":
                inner = self.type()
                return f"[{inner}; {self.const()}]"
            if tag == "S":
                return f"[{self.type()}]"
            if tag == "T":
                items = []
                while not self.eat("E"):
                    items.append(self.type())
                return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
            if tag == "F":
                return self.fn_sig()
            if tag == "D":
                return self.dyn_bounds()
            if tag == "B":
                return self.backref(self.type)
            self.pos -= 1
            return self.path(in_value=False)
        finally:
            self.depth -= 1

    def fn_sig(self) -> str:
        saved = self.bound_lifetimes
        binder = self.binder()
        unsafe = "unsafe " if self.eat("U") else ""
        abi = ""
        if self.eat("K"):
            abi = '"C"' if self.eat("C") else '"' + self.ident().replace("_", "-") + '"'
            abi = f"extern {abi} "
        params = []
        while not self.eat("E"):
            params.append(self.type())
        ret = self.type()
        self.bound_lifetimes = saved
        out = f"{binder}{unsafe}{abi}fn({', '.join(params)})"
        return out if ret == "()" else f"{out} -> {ret}"

    def dyn_bounds(self) -> str:
        saved = self.bound_lifetimes
        binder = self.binder()
        traits = []
        while not self.eat("E"):
            trait = self.path(in_value=False)
            bindings = []
            while self.eat("p"):
                name = self.ident()
                bindings.append(f"{name} = {self.type()}")
            if bindings:
                if trait.endswith(">"):
                    trait = f"{trait[:-1]}, {', '.join(bindings)}>"
                else:
                    trait = f"{trait}<{', '.join(bindings)}>"
            traits.append(trait)
        self.bound_lifetimes = saved
        self.eat("L") and self.base62()  # the object lifetime bound is not printed
        return f"dyn {binder}{' + '.join(traits)}"

    def const(self) -> str:
        self._enter()
        try:
            if self.eat("p"):
                return "_"
            if self.eat("B"):
                return self.backref(self.const)
            kind = self.next()
            negative = self.eat("n")
            start = self.pos
            while self.peek() != "_":
                c = self.peek()
                if not c or c not in "0123456789abcdef":  # "" is in every string
                    raise _Invalid("const")
                self.pos += 1
            digits = self.s[start : self.pos]
            self.pos += 1
            value = int(digits, 16) if digits else 0
            if kind == "b":
                return "true" if value == 1 else "false"
            if kind == "c":
                return repr(chr(value))
            if kind not in "hitmjyonlxsa":
                raise _Invalid("const type")
            return f"{'-' if negative else ''}{value}: {BASIC_TYPES[kind]}"
        finally:
            self.depth -= 1
