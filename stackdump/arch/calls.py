"""What every processor's call-site decoder answers (`Arch.call_before`): the kind of call
instruction that ends just before a return address."""

from __future__ import annotations

import enum


class CallKind(enum.Enum):
    DIRECT = "direct"  # the target is in the instruction: known
    INDIRECT = "indirect"  # through a register or memory: known only at run time
