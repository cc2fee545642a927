"""`records.frozen` and `records.record` (issue 31: cheaper to define than
`@dataclass(frozen=True)`) behave as dataclasses' own frozen classes: equality, hashing,
repr, assignment refused, `replace`, `fields`, slots."""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import field
from typing import Optional, Tuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stackdump.records import frozen, record

SLOTS = {"slots": True} if sys.version_info >= (3, 10) else {}


def _shapes(ours, theirs):
    """The same four classes made by our decorator and by dataclasses."""

    def make(decorate):
        @decorate
        class Empty:
            pass

        @decorate
        class One:
            a: object

        @decorate
        class Many:
            a: object
            b: object = 0
            c: Tuple[object, ...] = ()
            hidden: Optional[object] = field(default=None, repr=False)
            ignored: Optional[object] = field(default=None, compare=False)
            unhashed: object = field(default=None, hash=False)

        @decorate
        class Own:
            a: object

            def __repr__(self) -> str:
                return "own"

        return Empty, One, Many, Own

    return make(ours), make(theirs)


VALUES = st.one_of(
    st.integers(), st.floats(allow_nan=True), st.text(max_size=5), st.none(),
    st.tuples(st.integers()),
)  # fmt: skip


@pytest.mark.parametrize(
    "ours,theirs",
    [
        (frozen, dataclasses.dataclass(frozen=True)),
        (record, dataclasses.dataclass(frozen=True, **SLOTS)),
    ],
    ids=["frozen", "record"],
)  # fmt: skip
@given(st.lists(VALUES, min_size=6, max_size=6), st.lists(VALUES, min_size=6, max_size=6))
def test_they_behave_as_dataclasses_frozen_classes(ours, theirs, x, y):
    for mine, reference in zip(*_shapes(ours, theirs)):
        count = len(dataclasses.fields(reference))
        a, b = mine(*x[:count]), mine(*y[:count])
        ra, rb = reference(*x[:count]), reference(*y[:count])
        assert (a == b) == (ra == rb) and (a != b) == (ra != rb)
        assert (a == a) == (ra == ra)  # NaN: a tuple compares it by identity first
        assert (a == x[0]) == (ra == x[0])  # another type is never equal
        if not any(isinstance(v, float) and math.isnan(v) for v in x[:count]):
            assert hash(a) == hash(ra)
        assert repr(a).replace(mine.__qualname__, "X") == repr(ra).replace(
            reference.__qualname__, "X"
        )
        if count:  # (a slotted class without fields refuses with TypeError, as dataclasses')
            with pytest.raises(dataclasses.FrozenInstanceError):
                a.a = 1
        assert [f.name for f in dataclasses.fields(a)] == [f.name for f in dataclasses.fields(ra)]
        assert dataclasses.replace(a, **{f.name: 7 for f in dataclasses.fields(a)[:1]}) == (
            mine(7, *x[1:count]) if count else a
        )
        assert hasattr(a, "__dict__") == hasattr(ra, "__dict__")


def test_fields_left_out_of_comparing_and_hashing_are_left_out():
    (_, _, many, _), _ = _shapes(frozen, dataclasses.dataclass(frozen=True))
    assert many(1, ignored="x") == many(1, ignored="y")
    assert hash(many(1, unhashed=[1])) == hash(many(1, unhashed=[2]))
    assert many(1, unhashed=1) != many(1, unhashed=2)
    assert "hidden" not in repr(many(1, hidden="secret"))


def test_a_record_copies_pickles_and_is_replaced_as_a_dataclass():
    """What `frozen=True` gave and the shared refusing methods must keep: a copy and a
    pickle of a slotted record are equal to it, deletion is refused, and `types.replaced`
    (slot by slot, no `__init__`) gives what `dataclasses.replace` gives."""
    import copy
    import pickle

    from stackdump.types import ThreadSnapshot, ThreadStatus, replaced

    snapshot = ThreadSnapshot(tid=7, name="worker", status=ThreadStatus.OK, stack=b"\x01\x02")
    assert copy.copy(snapshot) == snapshot and copy.copy(snapshot) is not snapshot
    assert pickle.loads(pickle.dumps(snapshot)) == snapshot
    with pytest.raises(dataclasses.FrozenInstanceError):
        del snapshot.tid
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.name = "other"
    changes = {"stack": b"", "extra_stacks": (), "pause_ns": 5}
    assert replaced(snapshot, **changes) == dataclasses.replace(snapshot, **changes)
    assert replaced(snapshot, **changes).stack == b"" and snapshot.stack == b"\x01\x02"
    (_, _, many, _), _ = _shapes(record, dataclasses.dataclass(frozen=True, **SLOTS))
    item = many(1, 2, (3,), hidden="h", ignored="i", unhashed=[4])
    assert replaced(item, b=5) == dataclasses.replace(item, b=5)
    assert replaced(item, b=5).hidden == "h" and replaced(item, b=5).unhashed == [4]


def test_a_class_keeps_its_docstring_and_one_without_is_given_its_fields():
    """`dataclasses` gives a class without a docstring one from `inspect.signature`; ours
    names the fields without asking `inspect` (~5 ms of a dump's start-up)."""
    for decorate in (frozen, record):

        @decorate
        class Documented:
            """Its own words."""

            a: int

        @decorate
        class Bare:
            a: int
            b: str = ""

        assert Documented.__doc__ == "Its own words."
        assert Bare.__doc__ == "Bare(a, b)"
