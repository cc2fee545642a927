"""stackdump: print the native stack of every thread of a live Linux process."""

__version__ = "0.1.0"
