"""The process's shadow region (gdb_nsb.shadow): found by name in its memory map, or mapped once.

Like the registry it is a private memfd mapping (``/memfd:nsb-shadow``), so
any later session finds it again by name, through gdbserver too, and a forked
child gets its own copy.  Unlike the registry it is read-write for the
process: the patches' shadow-variable code (vzp_shadow.h) runs there.  The
tool writes its header once, when it maps it, before the first patch that
uses shadow variables is bound to it; nothing ever unmaps it (reverts and
replaces leave the variables to the patches' own callbacks, as the kernel
does), and it costs only the pages the variables use.
"""

from gdb_nsb import shadow
from gdb_nsb.process import syscalls as _sys
from gdb_nsb.process.registry_store import create_memfd_mapping
from gdb_nsb.process.undo import UndoLog


def ensure(inf, injector, deadline):
    """Start of the process's shadow region, mapped (and its header written) now if it has none."""
    found = shadow.region_in(inf.mappings())
    if found is not None:
        return found[0]
    lay = shadow.layout()
    injector.require_clean_thread()
    with injector.session():
        undo = UndoLog(inf, injector, deadline)
        try:
            addr = create_memfd_mapping(injector, undo, shadow.SHADOW_NAME, lay.size, _sys.PROT_READ | _sys.PROT_WRITE)
            undo.write(addr, lay.header(), what="shadow region header")
        except BaseException:
            undo.rollback()
            raise
        undo.commit()
    return addr
