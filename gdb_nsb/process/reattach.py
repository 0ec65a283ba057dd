"""A run window that leaves nothing of ours in the process: detach, let it run, attach again (check's retries).

A run window in GDB (``run_windows``) is a ``continue``, and at every resume
GDB inserts its breakpoints: measured here (GDB 13.1), the int3 of its
shared-library event breakpoint sits in ld.so's ``_dl_debug_state`` for the
whole window (GDB's internal breakpoints cannot be disabled, ``disable -4``
is refused).  A GDB killed in the window would leave it there, and the
program's next dlopen would die of SIGTRAP.  ``nsb check`` writes nothing,
so its later looks come from this window instead: GDB detaches (removing
every breakpoint; the process runs untraced, with no timer and no
breakpoint of ours), sleeps, and attaches again, which stops every thread
the way the first attach did.

Local targets only: a remote target cannot be detached from and reached
again the same way.  Costs a detach and an attach per look (GDB re-reads
the thread list and the shared libraries).
"""

import os
import time

import gdb

from gdb_nsb.errors import NotAttachableError
from gdb_nsb.process.detach import detach_leaving_running
from gdb_nsb.process.inferior import is_native
from gdb_nsb.process.vanished import exited_error


def can_reattach(inf=None):
    inf = inf or gdb.selected_inferior()
    return bool(inf.pid) and is_native(inf) and not gdb.parameter("non-stop")


def reattach_window(seconds):
    """Let the selected (native) process run about ``seconds`` untraced, then attach to it again.

    Raises TargetExitedError when the process exited meanwhile and
    NotAttachableError when it cannot be attached again (another tracer took it)."""
    inf = gdb.selected_inferior()
    pid = inf.pid
    detach_leaving_running()
    time.sleep(max(0.0, seconds))
    if not os.path.exists("/proc/%d" % pid):
        raise exited_error(pid)
    try:
        gdb.execute("attach %d" % pid, to_string=True)
    except gdb.error as e:
        if not os.path.exists("/proc/%d" % pid):
            raise exited_error(pid)
        raise NotAttachableError("cannot attach to process %d again after letting it run: %s"
                                 % (pid, " ".join(str(e).split())))
    if gdb.selected_inferior().pid != pid:
        raise NotAttachableError("attaching to process %d again gave process %d" % (pid, gdb.selected_inferior().pid))
