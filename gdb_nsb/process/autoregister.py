"""Register patch symbols as soon as GDB meets a patched process (REFERENCE.md 2.7).

The first stop of every newly attached process (GDB reports the attach as a
stop) looks for the registry and adds each patch's symbols at its load bias,
so `bt`, `break` and unwinding through patch frames are right in a session
that never ran an nsb-* command.  One `info proc mappings` per attach.
"""

import gdb

from gdb_nsb import errors

_seen = set()
# True while an nsb-* command runs: its own stops (run windows, injected steps) must not be
# disturbed by GDB commands from a stop handler, and it registers the symbols itself.
operation_running = False


def mark_seen():
    """The current process needs no registration at its next stop (an nsb-* command handles it)."""
    inf = gdb.selected_inferior()
    if inf.pid:
        _seen.add((inf.num, inf.pid))


def _on_stop(_event):
    if operation_running:
        return
    inf = gdb.selected_inferior()
    key = (inf.num, inf.pid)
    if not inf.pid or key in _seen:
        return
    _seen.add(key)
    try:
        from gdb_nsb.process import symbols
        from gdb_nsb.process.inferior import Inferior
        from gdb_nsb.process.registry_store import RegistryStore
        registry = RegistryStore(Inferior(inf), None).load()
        if registry is not None:
            missing = symbols.register_all(registry)
            if missing:
                gdb.write("nsb: patch file not found for %s; its frames count as unreliable\n"
                          % ", ".join(b[:16] for b in missing))
    except errors.RegistryCorrupt as e:
        gdb.write("nsb: %s\n" % e)
    except (errors.NsbError, gdb.error):
        pass  # no /proc access (core file, exited process ...): nothing to register


def install():
    if not getattr(install, "done", False):
        gdb.events.stop.connect(_on_stop)
        install.done = True
