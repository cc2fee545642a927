"""The frozen dataclasses that carry data between the layers, made cheaper to define.

Every dump starts a new interpreter, and `dataclasses` compiles six functions for each
frozen class (issue 31): ~1.2 ms for a class of twenty fields, 30 ms of a dump's start-up
over the classes a dump loads. `frozen` and `record` compile one function per class, its
`__init__` (`_init`), and give every class the same `__eq__`, `__hash__` and `__repr__`,
which behave as the generated ones do (the same fields, in the same order, compared as
tuples, only with an instance of the same class), and the same `__setattr__` and
`__delattr__`, which refuse as a frozen dataclass's do. A class that defines any of
`__eq__`, `__hash__` or `__repr__` itself is left to `dataclasses` whole.

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


def _refuse_assignment(self, name: str, value: Any) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")


def _refuse_deletion(self, name: str) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")


_NO_VALUE = object()  # a field with a default factory that was not given


def _init(cls: type) -> Callable[..., None]:
    """`__init__` as a frozen dataclass's, compiled once: each field set past the refusing
    `__setattr__` (by its slot's own setter when it has one: ~40% cheaper per field than
    `object.__setattr__`, and a coroutine's snapshot has 27), defaults and default
    factories as `dataclasses` applies them."""
    env: dict = {"__set": object.__setattr__, "__no_value": _NO_VALUE}
    params, body = ["__rec"], []
    for i, f in enumerate(dataclasses.fields(cls)):
        value = f.name
        if f.default is not dataclasses.MISSING:
            env[f"__default{i}"] = f.default
            params.append(f"{f.name}=__default{i}")
        elif f.default_factory is not dataclasses.MISSING:
            env[f"__factory{i}"] = f.default_factory
            params.append(f"{f.name}=__no_value")
            value = f"__factory{i}() if {f.name} is __no_value else {f.name}"
        else:
            params.append(f.name)
        if f.name in getattr(cls, "__slots__", ()):
            env[f"__slot{i}"] = cls.__dict__[f.name].__set__
            body.append(f"    __slot{i}(__rec, {value})")
        else:
            body.append(f"    __set(__rec, {f.name!r}, {value})")
    source = f"def __init__({', '.join(params)}):\n" + ("\n".join(body) or "    pass") + "\n"
    exec(source, env)  # noqa: S102 - our own text, from the class's field names
    init = env["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init


def _getstate(self) -> list:
    """Pickling and `copy` of a slotted record (as `dataclasses` gives a frozen one)."""
    return [getattr(self, f.name) for f in dataclasses.fields(self)]


def _setstate(self, state: list) -> None:
    for f, value in zip(dataclasses.fields(self), state):
        object.__setattr__(self, f.name, value)


def _frozen(**options: Any) -> Callable[[_C], _C]:
    # Not frozen=True: `dataclasses` would compile a `__setattr__`, a `__delattr__` and an
    # `__init__` that goes through them for each class. A 5-field record took 0.26 ms to
    # make so, 0.15 now; 20 fields 0.55 ms, 0.30 now.
    lean = dataclasses.dataclass(init=False, eq=False, repr=False, **options)
    whole = dataclasses.dataclass(frozen=True, **options)

    def decorate(cls: _C) -> _C:
        if any(name in cls.__dict__ for name in _OWN):
            return whole(cls)
        # `dataclasses` writes a class without a docstring one from `inspect.signature`,
        # which for a class with no `__init__` yet parses object's text signature: ~5 ms for
        # the first class of a dump's start-up (tokenize's pattern), ~0.1 ms each after.
        undocumented = not cls.__dict__.get("__doc__")
        if undocumented:
            cls.__doc__ = cls.__name__
        made = lean(cls)
        if undocumented:
            made.__doc__ = f"{cls.__name__}({', '.join(f.name for f in dataclasses.fields(made))})"
        made.__init__ = _init(made)
        made.__setattr__ = _refuse_assignment
        made.__delattr__ = _refuse_deletion
        if "__slots__" in made.__dict__:
            made.__getstate__, made.__setstate__ = _getstate, _setstate
        _methods(made)
        return made

    return decorate


frozen = _frozen()
record = _frozen(slots=True) if sys.version_info >= (3, 10) else frozen
