"""The SIGSTOP that ends a run window, kept invisible to the program.

A window ends with one SIGSTOP sent to one thread (the anchor): by a timer
thread of GDB's own with ``tgkill`` (native, see ``run_windows``) or by a
timer inside the process (remote, see ``remote_alarm``).  For the windows'
duration GDB stops on SIGSTOP and never passes it (``nopass``): the signal
cannot be caught or blocked, and the program never sees it.  Afterwards ours
must leave no trace: not still queued (:func:`drain_sigstop`), and not kept by
GDB as the thread's stop signal, which GDB would pass on resume or at detach
once the user's ``handle`` is back (:func:`forget_sigstop`).
"""

import signal

import gdb

from gdb_nsb.process.inferior import is_native

# While windows run, a GDB internal error (GDB 13 has some when threads vanish at an exit or exec)
# must become an error we can handle, not GDB's death: no quit, no core file, and no backtrace
# (printing it while ``to_string`` captures the output made GDB die of "Recursive internal problem").
_INTERNAL_ERROR_SETTINGS = (("quit", "no"), ("corefile", "no"), ("backtrace", "off"))


class absorbed:
    """Context: GDB stops on signal ``name`` and never passes it (``handle NAME stop print nopass``);
    the user's setting restored on exit."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        out = gdb.execute("info signals %s" % self.name, to_string=True)
        row = [l for l in out.splitlines() if l.startswith(self.name + " ")][0].split()
        self.saved = ["stop" if row[1] == "Yes" else "nostop", "print" if row[2] == "Yes" else "noprint",
                      "pass" if row[3] == "Yes" else "nopass"]
        gdb.execute("handle %s stop print nopass" % self.name, to_string=True)
        return self

    def __exit__(self, *exc):
        gdb.execute("handle %s %s" % (self.name, " ".join(self.saved)), to_string=True)
        return False


class sigstop_handling:
    """Context of run windows: ``handle SIGSTOP stop print nopass``, internal errors of GDB survivable
    (see ``_INTERNAL_ERROR_SETTINGS``); the user's settings restored on exit."""

    def __enter__(self):
        self.sigstop = absorbed("SIGSTOP").__enter__()
        self.internal = []
        for name, value in _INTERNAL_ERROR_SETTINGS:
            try:
                shown = gdb.execute("maint show internal-error %s" % name, to_string=True)
                self.internal.append((name, shown.rsplit('"', 2)[1]))
                gdb.execute("maint set internal-error %s %s" % (name, value), to_string=True)
            except (gdb.error, IndexError):
                pass  # a GDB without the setting: its internal errors stay fatal, as before
        return self

    def __exit__(self, *exc):
        for name, value in self.internal:
            gdb.execute("maint set internal-error %s %s" % (name, value), to_string=True)
        return self.sigstop.__exit__(*exc)


def anchor_thread(inf):
    """The thread a window's SIGSTOP goes to: the lowest-numbered valid one (None: no thread)."""
    ths = sorted((t for t in inf.threads() if t.is_valid()), key=lambda t: t.num)
    return ths[0] if ths else None


def sigstop_pending(pid, tid, native=True):
    """Whether a SIGSTOP waits in ``tid``'s private pending set (remote: read through GDB)."""
    try:
        if native:
            with open("/proc/%d/task/%d/status" % (pid, tid)) as f:
                text = f.read()
        else:
            text = gdb.execute("info proc status %d" % tid, to_string=True)
    except (OSError, gdb.error):
        return False
    for line in text.splitlines():
        if line.startswith("SigPnd:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGSTOP - 1)))
    return False


def drain_sigstop(inf, pid, lwp):
    """Consume our SIGSTOP if it still waits for its thread (that thread had stopped first).

    Left queued it would stop the next resume, or group-stop the process at
    detach.  The thread alone takes one step with the scheduler locked: the
    signal is reported before any instruction runs, and ``nopass`` drops it.
    """
    native = is_native(inf)
    if not sigstop_pending(pid, lwp, native):
        return
    th = next((t for t in inf.threads() if t.ptid[1] == lwp), None)
    if th is None:
        return
    old = gdb.selected_thread()
    lock = gdb.parameter("scheduler-locking")
    try:
        gdb.execute("set scheduler-locking on", to_string=True)
        th.switch()
        for _ in range(3):
            gdb.execute("stepi", to_string=True)
            if not sigstop_pending(pid, lwp, native):
                break
    finally:
        gdb.execute("set scheduler-locking %s" % lock, to_string=True)
        if old is not None and old.is_valid():
            old.switch()


def forget_sigstop(inf, lwp):
    """Clear our SIGSTOP as the thread's stop signal.

    GDB keeps the last stop signal of a thread and passes it on resume or at
    detach according to ``handle``; once the user's ``pass`` is restored our
    SIGSTOP would group-stop the process (state T).  ``queue-signal 0``
    discards it, without resuming anything.
    """
    th = next((t for t in inf.threads() if t.ptid[1] == lwp), None)
    if th is None:
        return
    old = gdb.selected_thread()
    try:
        th.switch()
        gdb.execute("queue-signal 0", to_string=True)
    finally:
        if old is not None and old.is_valid():
            old.switch()
