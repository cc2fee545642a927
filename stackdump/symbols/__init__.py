"""Symbolization: which module holds a pc, and what function, file and line it is."""
