"""Sources of snapshots: a live process (`live.py`), read through /proc and
captured one thread at a time, by a ptrace stop (`ptrace.py`, the only code that stops a
thread) or in place while it is blocked (`passive.py`), with stack bytes copied by
`remote.py`; and a core file (`core.py`, `core_notes.py`). Each produces a
`types.ProcessSnapshot`, after handing a `view.ProcessView` to the runtimes' hook it is given
(`runtimes.after_capture`: their words for threads, their coroutines); nothing after it
touches the process.
"""
