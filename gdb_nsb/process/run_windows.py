"""All threads stopped, and run windows: the process runs a bounded time, then every thread is stopped again.

What works in GDB 13.1 here (measured; see REFERENCE 6):

* All-stop ``interrupt`` sends a real SIGINT: a target that blocks SIGINT never
  stops, and one that waits for it in ``sigwait`` receives ours.  Not usable.
* Non-stop mode cannot be driven from a batch Python script: every synchronous
  execution command (``continue``, ``advance``, ``stepi``) returns at the first
  stop of *any* thread, so after ``interrupt -a`` the other threads' stops are
  only processed one per command, and a thread must be resumed to get the event
  loop to run at all; sleeping in Python freezes the loop.  A non-stop batch
  session that detaches also leaves the process in group-stop (state ``T``):
  the SIGSTOPs of the attach are still queued when GDB detaches (see ``detach``).
* All-stop works, because GDB 13 drives a native Linux target in non-stop
  underneath (``maint show target-non-stop``: auto, currently on): as soon as
  one thread reports any event, GDB stops every other thread with a SIGSTOP it
  absorbs itself.  So a run window is a synchronous ``continue`` while a timer
  thread sends one thread-directed SIGSTOP (``tgkill``) at the window's end,
  with ``handle SIGSTOP stop nopass`` for the duration (``sigstop``): the stop
  is reported to GDB, never delivered, and cannot be caught or blocked by the
  program.  Run windows of 1/5/50/200 ms came back in about 13/19/52/207 ms.
  On a native target the timer is a thread of GDB's own that calls ``tgkill``;
  on a remote one it is a timer inside the process (``remote_alarm``).

The first safe-point check needs no window at all.  What GDB reported during a
window is read by ``stop_log``; a process lost during one by ``vanished``.
"""

import ctypes
import signal
import threading
import time

import gdb

from gdb_nsb import procstate
from gdb_nsb.errors import BusyError, NsbError, UnsupportedError
from gdb_nsb.process.inferior import is_native
from gdb_nsb.process.remote_alarm import remote_window
from gdb_nsb.process.sigstop import anchor_thread, caught, drain_sigstop, forget_sigstop
from gdb_nsb.process.stop_log import StopLog, window_result
from gdb_nsb.process.vanished import exited_error, explain_lost_process

SYS_TGKILL = 234  # x86_64
_libc = ctypes.CDLL(None, use_errno=True)


class RunWindowsOff(BusyError):
    """The process may not run between safe-point tries (``set nsb run-windows``): busy now."""


class policy:
    """Whether the command in progress may let the process run (``set nsb run-windows``).

    At the GDB prompt the user stopped the program, and the tool does not
    resume it unless the setting allows it; scripts and the runner may."""

    allowed = True

    def __init__(self, allowed):
        self.want = allowed

    def __enter__(self):
        self.saved, policy.allowed = policy.allowed, self.want
        return self

    def __exit__(self, *exc):
        policy.allowed = self.saved
        return False


RUN_WINDOWS_HINT = ("the process stays stopped: at the GDB prompt nsb-* commands do not let it run between "
                    "safe-point tries unless 'set nsb run-windows on'")


def _selected_process():
    inf = gdb.selected_inferior()
    if not inf.pid:
        raise NsbError("no process: attach to the target first")
    return inf


def _check_mode(inf):
    if gdb.parameter("non-stop"):
        raise UnsupportedError("non-stop mode is not supported for run windows: attach in all-stop mode "
                               "(set non-stop off before attaching)")


def ensure_all_stopped():
    """Check that every thread of the selected inferior is stopped; return the threads.

    In all-stop mode GDB keeps every thread stopped whenever it has control,
    so nothing has to be sent.  A process left running in the background
    (``continue &``) cannot be stopped without the event loop: refused with a
    clear message rather than stopped with a signal.
    """
    inf = _selected_process()
    _check_mode(inf)
    threads = inf.threads()
    running = [t.num for t in threads if t.is_running()]
    if running:
        raise NsbError("threads %s are running in the background: stop the process first" %
                       ", ".join(map(str, sorted(running))))
    return threads


def _tgkill(pid, tid, sig):
    r = _libc.syscall(SYS_TGKILL, pid, tid, sig)
    if r != 0:
        return ctypes.get_errno()
    return 0


def run_window(seconds, ours=()):
    """Let the whole process run about ``seconds``, then have every thread stopped again.

    ``ours`` are numbers of breakpoints the caller placed (run-out); hitting
    one ends the window early and is reported in the result.  Must be called
    inside :class:`~gdb_nsb.process.sigstop.sigstop_handling`.  Raises
    StoppedByUser when a user breakpoint stopped the process,
    TargetExitedError when the process exited and TargetExecError when it
    executed a new program (GDB then detached: see ``vanished``).
    """
    if not policy.allowed:
        raise RunWindowsOff(RUN_WINDOWS_HINT)
    inf = _selected_process()
    _check_mode(inf)
    if not is_native(inf):
        return remote_window(inf, seconds, set(ours))
    pid = inf.pid
    ours = set(ours)
    cancel = threading.Event()
    state = {"sent_to": None}
    lock = threading.Lock()
    anchor_lwp = anchor_thread(inf).ptid[1]

    def fire():
        if cancel.wait(max(0.0, seconds)):
            return
        with lock:
            if cancel.is_set():
                return
            # The anchor may have exited during the window: any live thread ends it as well.
            for lwp in [anchor_lwp] + [t for t in procstate.live_threads(pid) if t != anchor_lwp]:
                if _tgkill(pid, lwp, signal.SIGSTOP) == 0:
                    state["sent_to"] = lwp
                    return

    timer = threading.Thread(target=fire, name="nsb-run-window", daemon=True)
    t0 = time.monotonic()
    with StopLog() as log:
        timer.start()
        lost = None
        try:
            with caught("SIGSTOP"):
                gdb.execute("continue", to_string=True)
        except (gdb.error, KeyboardInterrupt) as e:  # an internal error of GDB arrives as "Command aborted."
            lost = e
        finally:
            with lock:
                cancel.set()
            timer.join()
        elapsed = time.monotonic() - t0
        if not inf.pid:
            raise exited_error(pid)
        if lost is not None:
            explain_lost_process(pid, lost, state["sent_to"])
        sent = state["sent_to"]
        if sent is not None and not log.got_sigstop(sent):
            drain_sigstop(inf, pid, sent)
        if sent is not None and log.last_is_sigstop(sent):
            forget_sigstop(inf, sent)
    return window_result(elapsed, log, ours)
