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

import contextlib
import re
import signal

import gdb

from gdb_nsb.errors import NsbError
from gdb_nsb.process import stop_log
from gdb_nsb.process.inferior import is_native
from gdb_nsb.process.session_state import ONE_THREAD_STEPS, SURVIVABLE_INTERNAL_ERRORS, changed, signals_handled


def absorbed(name):
    """Context: GDB stops on signal ``name`` and never passes it (``handle NAME stop print nopass``);
    the user's setting restored on exit."""
    return signals_handled(lambda table: {name: (True, True, False)}, name)


@contextlib.contextmanager
def caught(name):
    """Context of one window's ``continue`` (or a drain's step): signal ``name`` stops GDB through a catchpoint
    of ours rather than as a signal stop, so that GDB prints nothing.

    GDB 13 prints every signal stop (``Thread N "x" received signal SIGSTOP``: its signal_received observer
    ignores ``suppress-cli-notifications``, and ``handle`` cannot stop without printing).  A catchpoint's
    stop is a normal stop, which that setting keeps quiet; ``StopLog`` still logs it as the signal's stop
    (``stop_log.CATCHPOINTS``), the signal is still never passed, and the catchpoint is deleted after the window.
    Not for inferior calls: a catchpoint, unlike a signal, would leave the call unfinished."""
    with signals_handled(lambda table: {name: (False, False, False)}, name):
        out = gdb.execute("catch signal %s" % name, to_string=True)
        number = re.search(r"Catchpoint (\d+)", out)
        if number is None:
            raise NsbError("GDB made no catchpoint for %s: %s" % (name, out.strip()))
        stop_log.CATCHPOINTS[int(number.group(1))] = name
        try:
            yield
        finally:
            del stop_log.CATCHPOINTS[int(number.group(1))]
            gdb.execute("delete %s" % number.group(1), to_string=True)


@contextlib.contextmanager
def sigstop_handling():
    """Context of run windows: ``handle SIGSTOP stop print nopass``, internal errors of GDB survivable
    (``SURVIVABLE_INTERNAL_ERRORS``; a GDB without those settings: they stay fatal, as before); the
    user's settings restored on exit."""
    with absorbed("SIGSTOP"), changed(SURVIVABLE_INTERNAL_ERRORS):
        yield


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
    try:
        with changed(ONE_THREAD_STEPS), caught("SIGSTOP"):
            th.switch()
            for _ in range(3):
                gdb.execute("stepi", to_string=True)
                if not sigstop_pending(pid, lwp, native):
                    break
    finally:
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
