"""The decisions of a patch's lifecycle (apply, revert, check, list), as plain Python.

The binder plans the bytes; this package decides around that plan what the
GDB layer (``gdb_nsb.process.engine``) only executes: which code must be idle
at the safe point, which writes the tool may make, what became of a target
instance since the registry recorded it, whether registry, memory and file
agree, and what an operation reports.  No module here imports ``gdb``; the
process is seen through a ``ProcessView`` and a ``MemoryReader``.
"""
