"""Sources of snapshots: a live process (`live.py`), read through /proc and
captured one thread at a time, by a ptrace stop (`ptrace.py`, the only code that stops a
thread) or in place while it is blocked (`passive.py`), with stack bytes copied by
`remote.py`; suspended coroutines found in its memory (`fcontext.py`, `bthreads.py`); and a
core file (`core.py`, `core_notes.py`). Each produces a `types.ProcessSnapshot`; nothing
after it touches the process.
"""
