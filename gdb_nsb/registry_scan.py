"""Where a process's registry is, and reading it through any memory reader (pure: no gdb).

The registry is a memfd named ``nsb-registry`` (gdb_nsb.process.registry_store
creates and writes it); every map of the process names it
``/memfd:nsb-registry (deleted)``.  Reading it needs only the map and a way
to read memory: GDB's inferior, or ``/proc/PID/mem`` for the host-wide list
that never attaches.  The bytes are decoded by ``registry_slots.decode`` alone
(format 2, and format 1 through ``Registry.decode``).
"""

from gdb_nsb import mappings as _mappings
from gdb_nsb import registry_slots as slots
from gdb_nsb.errors import RegistryCorrupt

REGISTRY_NAME = "nsb-registry"
REGISTRY_OBJFILE = "/memfd:" + REGISTRY_NAME


def registry_ranges(mappings):
    """(start, size) of each registry mapping in ``mappings`` (gdb_nsb.mappings.Mapping)."""
    return _mappings.contiguous_runs(mappings, REGISTRY_OBJFILE)


def read_registry(ranges, read):
    """The process's Registry from its registry ``ranges``, or None when it has none.

    ``read(addr, size)`` returns bytes (raises OSError or NsbError when it
    cannot).  A mapping with nothing committed yet holds no registry.  With
    several registries (a move to a larger mapping cut short) the valid one of
    the highest generation wins.  RegistryCorrupt when registries exist and
    none is valid; read failures propagate.
    """
    found, problems = [], []
    for addr, size in ranges:
        try:
            f = slots.decode(lambda offset, n, base=addr: read(base + offset, n), size, "registry at 0x%x" % addr)
        except RegistryCorrupt as e:
            problems.append(str(e))
            continue
        if f.registry is not None:
            found.append(f)
    if not found:
        if problems:
            raise RegistryCorrupt(problems[0])
        return None
    return max(found, key=lambda f: f.generation).registry
