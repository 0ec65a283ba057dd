"""The generator: binds a patch ``.so`` to its target and describes the
binding as a ``vzpatch`` section (REFERENCE.md sections 3 and 4).

Manual mode (``vzp.h`` macros) lives in :mod:`gdb_nsb.generator.manual`.
"""

from gdb_nsb.generator.manual import Generation, generate, generate_file

__all__ = ["Generation", "generate", "generate_file"]
