"""Run windows on a remote target (gdbserver): the ending SIGSTOP comes from a timer inside the process.

A remote target cannot be reached by ``tgkill`` from GDB's host, and its
``interrupt`` (``\\x03``/``vCtrlC``) makes gdbserver send SIGINT to the process
group.  So the same SIGSTOP is sent by the kernel instead: a POSIX timer
created inside the process by injected syscalls (``timer_create`` with
``SIGEV_THREAD_ID`` on one thread, armed per window with ``timer_settime``,
deleted with its one-page scratch mapping when the loop ends).  gdbserver
reports the SIGSTOP like any signal and GDB drops it (``nopass``).
"""

import signal
import struct
import time

import gdb

from gdb_nsb.errors import NsbError, UnsupportedError
from gdb_nsb.process import syscalls as sc
from gdb_nsb.process.inferior import is_native
from gdb_nsb.process.sigstop import anchor_thread, forget_sigstop
from gdb_nsb.process.stop_log import StopLog, window_result
from gdb_nsb.process.vanished import exited_error


class RemoteAlarm:
    """A one-shot POSIX timer inside the process that sends SIGSTOP to one thread.

    Created by injected syscalls on first use (its sigevent and itimerspec
    live in a one-page private scratch mapping), re-armed for each window,
    deleted with the page by :meth:`close`.  ``current`` is the alarm of the
    safe-point loop in progress, so a loop of windows creates it once.
    """

    current = None
    _SIGEV_THREAD_ID = 4
    _CLOCK_MONOTONIC = 1
    _TIMER_CREATE, _TIMER_SETTIME, _TIMER_DELETE = 222, 223, 226

    def __init__(self):
        self.injector = None
        self.page = None
        self.timer = None
        self.tid = None

    def _injector(self):
        if self.injector is None:
            self.injector = sc.SyscallInjector()
        return self.injector

    def arm(self, inf, lwp, seconds):
        inj = self._injector()
        mem = inj.inferior
        try:
            with inj.session():
                if self.page is None:
                    self.page = inj.mmap(0, 4096, sc.PROT_READ | sc.PROT_WRITE, sc.MAP_PRIVATE | sc.MAP_ANONYMOUS)
                if self.timer is not None and self.tid != lwp:
                    inj.check("timer_delete", self._TIMER_DELETE, self.timer)
                    self.timer = None
                if self.timer is None:
                    sev = struct.pack("<qiii", 0, signal.SIGSTOP, self._SIGEV_THREAD_ID, lwp) + bytes(44)
                    mem.write(self.page, sev)
                    inj.check("timer_create", self._TIMER_CREATE, self._CLOCK_MONOTONIC, self.page, self.page + 64)
                    self.timer = struct.unpack("<i", mem.read(self.page + 64, 4))[0]
                    self.tid = lwp
                ns = max(1000, int(seconds * 1e9))
                mem.write(self.page + 128, struct.pack("<qqqq", 0, 0, ns // 10 ** 9, ns % 10 ** 9))
                inj.check("timer_settime", self._TIMER_SETTIME, self.timer, 0, self.page + 128, 0)
        except NsbError as e:
            raise UnsupportedError("cannot end a run window on this remote target: %s (gdbserver's interrupt "
                                   "would send SIGINT to the process, so none is used)" % e)

    def disarm(self):
        """Stop the timer; the nanoseconds it had left (0: it fired already)."""
        if self.timer is None:
            return 0
        inj = self._injector()
        # Another thread runs it, so a SIGSTOP that just came due stays with ours.
        other = [t for t in inj.inferior.threads() if t.ptid[1] != self.tid]
        if other:
            inj.prefer(other[0])
        inj.inferior.write(self.page + 128, bytes(64))
        inj.check("timer_settime", self._TIMER_SETTIME, self.timer, 0, self.page + 128, self.page + 192)
        _, _, sec, nsec = struct.unpack("<qqqq", inj.inferior.read(self.page + 192, 32))
        return sec * 10 ** 9 + nsec

    def close(self):
        """Delete the timer and the scratch page (best effort once the process is gone)."""
        if self.injector is None or not gdb.selected_inferior().pid:
            return
        inj = self.injector
        with inj.session():
            if self.timer is not None:
                inj.check("timer_delete", self._TIMER_DELETE, self.timer)
                self.timer = None
            if self.page is not None:
                inj.munmap(self.page, 4096)
                self.page = None


class shared_alarm:
    """Context of a safe-point loop: one remote alarm for all its windows (nothing on native targets)."""

    def __enter__(self):
        inf = gdb.selected_inferior()
        self.mine = inf.pid and not is_native(inf) and RemoteAlarm.current is None
        if self.mine:
            RemoteAlarm.current = RemoteAlarm()
        return self

    def __exit__(self, *exc):
        if self.mine:
            alarm, RemoteAlarm.current = RemoteAlarm.current, None
            try:
                alarm.close()
            except (NsbError, gdb.error):
                if exc[0] is None:
                    raise
        return False


def remote_window(inf, seconds, ours):
    """``run_windows.run_window`` on a remote target: the SIGSTOP comes from a timer inside the process."""
    own = RemoteAlarm.current is None
    alarm = RemoteAlarm() if own else RemoteAlarm.current
    try:
        anchor_lwp = anchor_thread(inf).ptid[1]
        alarm.arm(inf, anchor_lwp, seconds)
        t0 = time.monotonic()
        with StopLog() as log:
            try:
                gdb.execute("continue", to_string=True)
            except gdb.error as e:
                raise NsbError("the process did not come back from a run window: %s" % e)
            elapsed = time.monotonic() - t0
            if not inf.pid:
                raise exited_error()
            fired = log.got_sigstop(anchor_lwp)
            for _ in range(3):
                if fired or alarm.disarm() > 0:
                    # A SIGSTOP still pending on the thread now is gdbserver's own (sent to stop
                    # all threads, expected, swallowed at the next resume): no step here, it
                    # would wait forever for a SIGSTOP gdbserver filters out.
                    break
                # Ours came due while the process was stopping: let one short window take it.
                alarm.arm(inf, anchor_lwp, 0.001)
                gdb.execute("continue", to_string=True)
                if not inf.pid:
                    raise exited_error()
                fired = log.got_sigstop(anchor_lwp)
            if log.last_is_sigstop(anchor_lwp):
                forget_sigstop(inf, anchor_lwp)
    finally:
        if own:
            alarm.close()
    return window_result(elapsed, log, ours)
