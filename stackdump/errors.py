"""The exception hierarchy: one root, narrow subclasses that carry what the CLI prints.

Only `cli.py` turns these into messages and exit codes; everything below it raises them,
converting foreign errors (OSError, PtraceError) at the boundary where they happen.
"""

from __future__ import annotations


class StackdumpError(Exception):
    """Root of every error stackdump raises on purpose."""

    exit_code = 3

    def __init__(self, message: str, help_text: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.help_text = help_text


class InvalidArgument(StackdumpError):
    """A command-line value is out of range or malformed (docs/FORMAT.md: exit 2)."""

    exit_code = 2


class ProcessNotFound(StackdumpError):
    """The target pid does not exist (any more)."""


class NotUserProcess(StackdumpError):
    """The target is a kernel thread or has no address space."""


class AlreadyTraced(StackdumpError):
    """Another process (a debugger, strace, another stackdump) traces the target."""


class NotMainThread(StackdumpError):
    """A live process was to be captured from a thread other than the main one: a ptrace
    stop's time limit is a SIGALRM, whose handler Python lets only the main thread set."""


class PermissionDenied(StackdumpError):
    """The kernel refused PTRACE_SEIZE for the target."""


class OutputError(StackdumpError):
    """The report could not be written whole (a full disk, a closed pipe): exit 4."""

    exit_code = 4


class InvalidCore(StackdumpError):
    """--core names no readable ELF core file of a processor stackdump knows: no report."""
