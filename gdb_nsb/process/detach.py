"""Detaching so that the process keeps running, also in non-stop mode and at GDB's exit.

Nothing is installed on import: every entry point that loads the extension
calls :func:`install_exit_hook` (``commands.register_all`` does).
"""

import gdb

from gdb_nsb import procstate
from gdb_nsb.process.inferior import is_native


def detach_leaving_running():
    """Detach from the selected inferior so that the process keeps running.

    In all-stop mode GDB's own detach does that.  In non-stop mode GDB 13 can
    leave the process in group-stop (state ``T``: the attach's SIGSTOPs are
    still queued), so the process, if it is found stopped right after the
    detach, gets the SIGCONT that ends a group stop (native only).
    """
    inf = gdb.selected_inferior()
    pid = inf.pid
    if not pid:
        return
    native = is_native(inf)
    gdb.execute("detach", to_string=True)
    if native:
        # The queued SIGSTOPs may turn into a group stop only after the detach (seen: all threads
        # 'T' a moment later): watch until no thread is stopped and no stop signal is pending.
        procstate.ensure_running(pid, clean_exit=True)


_hook_installed = False


def _on_gdb_exiting(_event):
    # GDB's own exit detaches too, but in non-stop mode that leaves the target
    # stopped: detach here, the way that keeps it running.
    try:
        if gdb.parameter("non-stop"):
            for inf in gdb.inferiors():
                if inf.pid and getattr(inf, "was_attached", True):
                    gdb.execute("inferior %d" % inf.num, to_string=True)
                    detach_leaving_running()
    except gdb.error:
        pass


def install_exit_hook():
    """Make GDB's exit leave attached targets running, also in non-stop mode (idempotent)."""
    global _hook_installed
    if not _hook_installed and hasattr(gdb.events, "gdb_exiting"):
        gdb.events.gdb_exiting.connect(_on_gdb_exiting)
        _hook_installed = True
