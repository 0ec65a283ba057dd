"""What GDB reported while the process ran in a window, and what it means for the operation.

Stops we did not cause are never swallowed: an application signal stays the
thread's pending stop signal and GDB delivers it when the thread resumes (or
at detach); a user breakpoint (or watchpoint, catchpoint) hit during a window
ends the operation with :class:`~gdb_nsb.errors.StoppedByUser`, the process
stopped there as GDB shows it.  A SIGSTOP sent by someone else to the same
thread during a window is indistinguishable from ours and is absorbed
(documented limit).
"""

import gdb

from gdb_nsb.errors import StoppedByUser


# Catchpoints of ours that stand for a signal stop (``sigstop.caught``): number -> signal name.  GDB 13.1 reports
# their stops to Python as the signal's SignalEvent; GDBs that report a BreakpointEvent for a catchpoint (its
# Python API has BP_CATCHPOINT since 11) must not make them look like a user's breakpoint.
CATCHPOINTS = {}


class StopLog:
    """Records the stop events GDB reports while connected: ``events`` of (kind, lwp, detail)."""

    def __init__(self):
        self.events = []

    def __enter__(self):
        gdb.events.stop.connect(self._on_stop)
        return self

    def __exit__(self, *exc):
        gdb.events.stop.disconnect(self._on_stop)
        return False

    def _on_stop(self, ev):
        th = getattr(ev, "inferior_thread", None) or gdb.selected_thread()
        lwp = th.ptid[1] if th is not None else None
        if isinstance(ev, gdb.BreakpointEvent):
            numbers = [b.number for b in ev.breakpoints]
            others = [n for n in numbers if n not in CATCHPOINTS]
            if others:
                self.events.append(("breakpoint", lwp, others))
            else:
                self.events.append(("signal", lwp, CATCHPOINTS[numbers[0]]))
        elif isinstance(ev, gdb.SignalEvent):
            self.events.append(("signal", lwp, ev.stop_signal))
        else:
            self.events.append(("stop", lwp, None))

    def got_sigstop(self, lwp, name="SIGSTOP"):
        """Whether GDB reported signal ``name`` (a SIGSTOP unless told) of thread ``lwp``."""
        return any(k == "signal" and l == lwp and d == name for k, l, d in self.events)

    def last_is_sigstop(self, lwp, name="SIGSTOP"):
        """Whether the last stop GDB reported for thread ``lwp`` is signal ``name`` (its stop signal now)."""
        mine = [e for e in self.events if e[1] == lwp]
        return bool(mine) and mine[-1][0] == "signal" and mine[-1][2] == name


class WindowResult:
    """What happened during one run window."""

    def __init__(self, elapsed, events, ours_hit):
        self.elapsed = elapsed          # seconds from resume to all threads stopped
        self.events = events            # (kind, lwp, detail) of every stop GDB reported
        self.ours_hit = ours_hit        # numbers of our breakpoints that stopped the process

    def __repr__(self):
        return "WindowResult(%.2f ms, %r)" % (self.elapsed * 1e3, self.events)


def window_result(elapsed, log, ours):
    """The result of a window whose stops ``log`` recorded; ``ours``: numbers of our breakpoints.

    Raises StoppedByUser when any other breakpoint stopped the process.
    """
    # Internal breakpoints (numbers below 1) are the tool's own: an injected call's end, run-out breakpoints.
    user = [e for e in log.events if e[0] == "breakpoint" and any(n > 0 and n not in ours for n in e[2])]
    if user:
        _, lwp, nums = user[0]
        raise StoppedByUser("breakpoint %s stopped LWP %d during a run window; the process stays stopped there"
                            % (",".join(str(n) for n in nums if n > 0 and n not in ours), lwp), lwp=lwp)
    ours_hit = sorted({n for k, _, nums in log.events if k == "breakpoint" for n in nums if n in ours})
    return WindowResult(elapsed, log.events, ours_hit)
