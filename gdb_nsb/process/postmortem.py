"""Core files: what a registry read on a core means (issue 16, post-mortem).

GDB reads a core like a stopped process: `info proc mappings` comes from
the core's NT_FILE note and memory from its segments, so the registry, the
patch records and the patch code are all there, and nsb-list works as on a
live process.  One difference: the kernel (and gcore) leave out of the core
what the process's ``coredump_filter`` excludes.  The registry's written
pages are private anonymous memory (bit 0, set by default); without them the
registry mapping is listed but unreadable, which must not read as "no patches".
"""

from gdb_nsb.process.inferior import ProcessAccessError


def is_core(inf) -> bool:
    """The inferior is a core file (GDB's core target), not a live process."""
    return inf.connection_type == "core"


def registry_read_error(inf, error):
    """The error to report when reading the registry failed with ``error`` (a ProcessAccessError)."""
    if not is_core(inf):
        return error
    return ProcessAccessError(
        "the core file does not hold the registry's pages (%s): the process's dump filter "
        "(/proc/PID/coredump_filter) left them out, so its live patches are unknown; bit 0 (private "
        "anonymous memory, set in the default 0x33) keeps them" % error)
