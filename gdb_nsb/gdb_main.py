"""GDB-side entry: imported inside GDB to register the nsb-* commands."""

import gdb  # noqa: F401  (fails clearly outside GDB)

from gdb_nsb import commands, timeline

commands.register_all()
timeline.mark("extension_loaded")
