"""The frozen dataclasses that carry data between the layers, made cheaper to define.

Every dump starts a new interpreter, and `dataclasses` compiles six functions for each
frozen class (issue 31): ~1.2 ms for a class of twenty fields, 30 ms of a dump's start-up
over the classes a dump loads. `frozen` and `record` have `dataclasses` compile only
`__init__` and the two that refuse assignment, and give the class an `__eq__`, `__hash__`
and `__repr__` that behave as the generated ones do (the same fields, in the same order,
compared as tuples, only with an instance of the same class), shared by every class. A
class that defines any of those three itself is left to `dataclasses` whole.

`record` also gives each instance slots instead of a dict (Python 3.10+): what a dump keeps
one of per thread or frame (10,000 threads make ~100,000).
"""

from __future__ import annotations

import dataclasses
import operator
import sys
from typing import Any, Callable, Tuple, TypeVar

_C = TypeVar("_C", bound=type)
_OWN = ("__eq__", "__hash__", "__repr__")


def _key(names: Tuple[str, ...]) -> Callable[[Any], tuple]:
    """The tuple of `names`' values (a tuple even of one or none, as dataclasses compares)."""
    if not names:
        return lambda obj: ()
    if len(names) == 1:
        (name,) = names
        return lambda obj: (getattr(obj, name),)
    return operator.attrgetter(*names)


def _methods(cls: type) -> None:
    fields = dataclasses.fields(cls)
    compared = _key(tuple(f.name for f in fields if f.compare))
    hashed = _key(tuple(f.name for f in fields if (f.compare if f.hash is None else f.hash)))
    shown = tuple(f.name for f in fields if f.repr)

    def __eq__(self, other):  # noqa: N807 - a dunder, set on the class below
        if other.__class__ is self.__class__:
            return compared(self) == compared(other)
        return NotImplemented

    def __hash__(self):  # noqa: N807
        return hash(hashed(self))

    def __repr__(self):  # noqa: N807
        values = ", ".join(f"{name}={getattr(self, name)!r}" for name in shown)
        return f"{self.__class__.__qualname__}({values})"

    for method in (__eq__, __hash__, __repr__):
        method.__qualname__ = f"{cls.__qualname__}.{method.__name__}"
        setattr(cls, method.__name__, method)


def _frozen(**options: Any) -> Callable[[_C], _C]:
    lean = dataclasses.dataclass(frozen=True, eq=False, repr=False, **options)
    whole = dataclasses.dataclass(frozen=True, **options)

    def decorate(cls: _C) -> _C:
        if any(name in cls.__dict__ for name in _OWN):
            return whole(cls)
        made = lean(cls)
        _methods(made)
        return made

    return decorate


frozen = _frozen()
record = _frozen(slots=True) if sys.version_info >= (3, 10) else frozen
