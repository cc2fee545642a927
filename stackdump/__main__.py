"""The process entry point (`stackdump`, `python -m stackdump`): make the standard streams
and SIGINT/SIGTERM safe, then import and run the CLI.

This runs before click, rich, pyelftools and the engine are imported (a third of a second),
so a Ctrl-C during those imports ends stackdump the documented way instead of in a
traceback. Only the interpreter's own start-up, before this module runs, is beyond reach.
"""

import os
import resource
import signal
import sys

from stackdump import collector
from stackdump.interrupts import Interrupted, Interrupts, die_by


def _reopen_closed_streams() -> bool:
    """Put /dev/null on a closed stdin, stdout or stderr, so no file opened later takes its
    number (a report or a temporary file written as fd 2 would receive error messages).
    Returns whether stdout was usable."""
    stdout_usable = True
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            stdout_usable = stdout_usable and fd != 1
    # Python leaves these None when the descriptor was closed at start-up.
    if sys.stdout is None:
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - lives as long as we do
    if sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
    return stdout_usable


def _more_descriptors() -> None:
    """Raise stackdump's own soft limit on open files to its hard limit (at most 65,536), as
    servers that hold many files open do at start-up. A dump pins up to 512 mapped files, a
    profile keeps /proc files open (as many as the limit leaves room for), and each object
    read holds its files: under a low soft limit (`ulimit -n`), files past it would not open
    and their frames would go unnamed. Only this process and what it runs are affected; the
    target never is."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = _MAX_DESCRIPTORS if hard == resource.RLIM_INFINITY else min(hard, _MAX_DESCRIPTORS)
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (OSError, ValueError):
        pass  # left as it was: a file that cannot be opened degrades as before


_MAX_DESCRIPTORS = 1 << 16


def main() -> None:
    interrupts = Interrupts()
    try:
        interrupts.install()
        stdout_usable = _reopen_closed_streams()
        _more_descriptors()
        # held: an exception raised inside an import can be lost
        with interrupts.held(), collector.importing():
            from stackdump import cli  # after the handlers: see the module docstring
    except (Interrupted, KeyboardInterrupt) as e:
        interrupts.ignore()
        signum = e.signum if isinstance(e, Interrupted) else signal.SIGINT
        try:
            sys.stderr.write(
                f"stackdump: error: interrupted by {signal.Signals(signum).name} while "
                "starting: no thread was stopped, no report written\n"
            )
            sys.stderr.flush()
        except (OSError, AttributeError):
            pass
        die_by(signum)
    cli.main(interrupts=interrupts, stdout_usable=stdout_usable)


if __name__ == "__main__":
    main()
