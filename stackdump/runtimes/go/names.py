"""The Go runtime's variables a Go process is recognised and read by: the package needs
them to find a Go process, and `goroutines.py`, loaded only then, to read it."""

ALLGS, ALLM, WAIT_REASONS = "runtime.allgs", "runtime.allm", "runtime.waitReasonStrings"
SYMBOLS = frozenset((ALLGS, ALLM, WAIT_REASONS))
