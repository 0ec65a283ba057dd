"""gdb-nsb: userspace live patching for x86_64 Linux, as a GDB extension.

The package is split into a functional core that never imports ``gdb``
(``elf``, ``binder``, ``generator``) and a thin shell that does
(``process``, ``commands``).  ``standalone`` holds the command-line tools.
"""

__version__ = "0.1.0"
