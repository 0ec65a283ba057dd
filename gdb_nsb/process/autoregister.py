"""Register patch symbols as soon as GDB meets a patched process (REFERENCE.md 2.7).

The first stop of every newly attached process (GDB reports the attach as a
stop) looks for the registry and adds each patch's symbols at its load bias,
so `bt`, `break` and unwinding through patch frames are right in a session
that never ran an nsb-* command.  One `info proc mappings` per attach.
A core file raises no stop: there the first object file GDB reads from it
triggers the same registration (post-mortem `bt` through patch frames).
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
    _register(gdb.selected_inferior())


def _on_new_objfile(_event):
    # A core file raises no stop: its first object file (read once the core's memory and
    # mappings are there) is the moment to register, before GDB prints the crash frame.
    inf = gdb.selected_inferior()
    conn = getattr(inf, "connection", None)
    if operation_running or conn is None or conn.type != "core":
        return
    _register(inf)


def _register(inf):
    key = (inf.num, inf.pid)
    if not inf.pid or key in _seen:
        return
    _seen.add(key)
    from gdb_nsb.process import postmortem, symbols
    from gdb_nsb.process.inferior import Inferior, ProcessAccessError
    from gdb_nsb.process.registry_store import RegistryStore
    core = False
    try:
        nsb_inf = Inferior(inf)
        core = postmortem.is_core(nsb_inf)
        registry = RegistryStore(nsb_inf, None).load()
    except ProcessAccessError as e:
        if core:
            gdb.write("nsb: %s\n" % postmortem.registry_read_error(nsb_inf, e))
        return  # a live process GDB cannot read (no /proc through this connection ...): nothing to register
    except errors.RegistryCorrupt as e:
        gdb.write("nsb: %s\n" % e)
        return
    except (errors.NsbError, gdb.error):
        return
    if registry is None:
        return
    try:
        missing = symbols.register_all(registry)
    except (errors.NsbError, gdb.error) as e:
        gdb.write("nsb: cannot register the patches' symbols: %s\n" % e)
        return
    if missing:
        gdb.write("nsb: patch file not found for %s; its frames count as unreliable (set nsb patch-dir DIR)\n"
                  % ", ".join(b[:16] for b in missing))


def install():
    if not getattr(install, "done", False):
        gdb.events.stop.connect(_on_stop)
        gdb.events.new_objfile.connect(_on_new_objfile)
        install.done = True
