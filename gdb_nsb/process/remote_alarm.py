"""Run windows on a remote target (gdbserver): the ending stop comes from a timer inside the process.

A remote target cannot be reached by ``tgkill`` from GDB's host, and its
``interrupt`` (``\\x03``/``vCtrlC``) makes gdbserver send SIGINT to the process
group.  So the kernel sends the window's end instead: a POSIX timer created
inside the process by injected syscalls (``timer_create`` with
``SIGEV_THREAD_ID`` on one thread, armed per window with ``timer_settime``,
deleted with its one-page scratch mapping when the loop ends).

The timer never sends SIGSTOP: if GDB or gdbserver died while it was armed,
that SIGSTOP would stop the untraced process for good.  It sends a signal the
process ignores and the anchor thread does not block (read from its status:
``SigIgn``, ``SigBlk``, rechecked before each window): while traced, the
kernel reports it as a stop that GDB absorbs (``nopass``); once untraced, the
kernel discards it as it is sent.  A process that ignores no usable signal
gets no remote run window: the operation ends busy (exit 3) saying so.
"""

import struct
import time

import gdb

from gdb_nsb import procstate
from gdb_nsb.errors import BusyError, NsbError, UnsupportedError
from gdb_nsb.process import syscalls as sc
from gdb_nsb.process.inferior import Inferior, is_native
from gdb_nsb.process.sigstop import absorbed, anchor_thread, caught, forget_sigstop
from gdb_nsb.process.stop_log import StopLog, window_result
from gdb_nsb.process.vanished import exited_error


def window_signal(inf, lwp):
    """The signal that ends a remote window on thread ``lwp``: ignored by the process, not blocked by it.

    Raises BusyError (no run window, so no safe point can be waited for) when there is none."""
    text = Inferior(inf).status_text(lwp)
    try:
        sig = procstate.ignored_unblocked_signal(text)
    except ValueError as e:
        raise BusyError("no run window on this remote target: cannot read the signal masks of thread %d (%s)"
                        % (lwp, e)) from None
    if sig is None:
        masks = dict(l.split(":", 1) for l in text.splitlines() if l.startswith(("SigIgn", "SigBlk")))
        raise BusyError("no run window on this remote target: process %d ignores no signal that thread %d leaves "
                        "unblocked (SigIgn %s, SigBlk %s), and a timer sending SIGSTOP would leave the process "
                        "stopped if GDB or gdbserver died while it was armed; try again when no thread is in the "
                        "patched code, or patch through a local GDB" % (inf.pid, lwp, masks.get("SigIgn", "?").strip(),
                                                                        masks.get("SigBlk", "?").strip()))
    return sig


class RemoteAlarm:
    """A one-shot POSIX timer inside the process that sends an ignored signal to one thread.

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
        self.signal = None      # the signal the timer sends (see window_signal)
        self.handling = None    # GDB's ``absorbed`` context for it

    def _injector(self):
        if self.injector is None:
            self.injector = sc.SyscallInjector()
        return self.injector

    def _absorb(self, sig):
        if self.signal == sig:
            return
        self._release()
        self.handling = absorbed(procstate.gdb_signal_name(sig))
        self.handling.__enter__()
        self.signal = sig

    def _release(self):
        if self.handling is not None:
            handling, self.handling, self.signal = self.handling, None, None
            handling.__exit__(None, None, None)

    @property
    def signal_name(self):
        return procstate.gdb_signal_name(self.signal)

    def arm(self, inf, lwp, seconds):
        # Checked before every window: the program may have changed its dispositions or mask meanwhile.
        sig = window_signal(inf, lwp)
        inj = self._injector()
        mem = inj.inferior
        try:
            with inj.session():
                if self.page is None:
                    self.page = inj.mmap(0, 4096, sc.PROT_READ | sc.PROT_WRITE, sc.MAP_PRIVATE | sc.MAP_ANONYMOUS)
                if self.timer is not None and (self.tid != lwp or self.signal != sig):
                    inj.check("timer_delete", self._TIMER_DELETE, self.timer)
                    self.timer = None
                self._absorb(sig)
                if self.timer is None:
                    sev = struct.pack("<qiii", 0, sig, self._SIGEV_THREAD_ID, lwp) + bytes(44)
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
        """Delete the timer and the scratch page (nothing to delete once the process is gone); GDB's handling
        of the signal restored."""
        if self.injector is None or not gdb.selected_inferior().pid:
            self._release()
            return
        inj = self.injector
        try:
            with inj.session():
                if self.timer is not None:
                    inj.check("timer_delete", self._TIMER_DELETE, self.timer)
                    self.timer = None
                if self.page is not None:
                    inj.munmap(self.page, 4096)
                    self.page = None
        finally:
            self._release()


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
                with caught(alarm.signal_name):
                    gdb.execute("continue", to_string=True)
            except gdb.error as e:
                raise NsbError("the process did not come back from a run window: %s" % e)
            elapsed = time.monotonic() - t0
            if not inf.pid:
                raise exited_error()
            name = alarm.signal_name
            fired = log.got_sigstop(anchor_lwp, name)
            for _ in range(3):
                if fired or alarm.disarm() > 0:
                    # A SIGSTOP still pending on the thread now is gdbserver's own (sent to stop
                    # all threads, expected, swallowed at the next resume).  Ours, if it came due
                    # just now, is an ignored signal: harmless whenever it is delivered.
                    break
                # Ours came due while the process was stopping: let one short window take it.
                alarm.arm(inf, anchor_lwp, 0.001)
                with caught(name):
                    gdb.execute("continue", to_string=True)
                if not inf.pid:
                    raise exited_error()
                fired = log.got_sigstop(anchor_lwp, name)
            if log.last_is_sigstop(anchor_lwp, name):
                forget_sigstop(inf, anchor_lwp)
    finally:
        if own:
            alarm.close()
    return window_result(elapsed, log, ours)
