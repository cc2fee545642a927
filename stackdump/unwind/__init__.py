"""Unwinding on copied stack bytes: frame-pointer walk and DWARF CFI."""
