"""Running a patch's callback in the target: a GDB inferior call with the other threads running.

Why the other threads run: a callback may need a lock, or the allocator,
that another thread holds at the stop; with that thread stopped the callback
would wait forever.  So the call is made with ``scheduler-locking off``: GDB
resumes every thread, runs the callback on one of them, and stops them all
again when it returns (all-stop).  What GDB 13 does, measured on a target
whose main thread waits in ``sigwait`` (tests/test_callbacks_live.py):

* it saves the calling thread's registers and stop signal and restores them
  after the call, also when the call is cut short (``unwindonsignal on``); a
  thread taken out of ``sigtimedwait`` for the call goes back into it;
* a signal that stops the call (the callback crashed: SIGSEGV ...) is
  dropped with the restored context: the program never receives it.

The time limit is the run windows' signal-invisible stop: a thread-directed
SIGSTOP sent by a timer thread of GDB's own (native), or the remote alarm's
ignored signal (gdbserver, ``remote_alarm``); GDB absorbs either (``nopass``)
and ends the call as cut short by a signal.  While the call runs, the
program's own signals pass without stopping it (``nostop noprint pass``),
except those a crash raises, which end the call; user breakpoints are
disabled for its duration, so none can leave the thread inside a
half-finished call.

The thread: the lowest-numbered thread that holds no signal (the main
thread, usually) and is not inside the allocator, the dynamic loader or a
shadow-variable call (their locks: ``thread_for_call``), borrowed where it stopped, like a signal
handler borrows it; docs/CALLBACKS.md states what this asks of a callback.
"""

import contextlib
import signal
import threading
import time

import gdb

from gdb_nsb import errors
from gdb_nsb.lifecycle import callbacks as cbmod
from gdb_nsb.lifecycle.callbacks import Call, Result
from gdb_nsb.process import run_windows
from gdb_nsb.process.inferior import Inferior, is_native
from gdb_nsb.process.remote_alarm import RemoteAlarm
from gdb_nsb.process.sigstop import drain_sigstop, forget_sigstop, sigstop_handling
from gdb_nsb.process.session_state import CALLBACK_CALL, changed, signals_handled
from gdb_nsb.process.syscalls import SyscallInjector
from gdb_nsb.process.undo import UndoLog

# Signals a crashing callback raises: they end the call (every other signal passes to the program).
_CRASH_SIGNALS = ("SIGSEGV", "SIGBUS", "SIGILL", "SIGFPE", "SIGABRT", "SIGSYS", "SIGTRAP")


def require_run_allowed(what):
    """Callbacks run with the process running: refused (busy, 3) where the process may not run."""
    if not run_windows.policy.allowed:
        raise run_windows.RunWindowsOff("%s runs with the process's threads running; %s"
                                        % (what, run_windows.RUN_WINDOWS_HINT))


def _program_signals_pass(keep_stopping):
    """The program's own signals are delivered without stopping the call; ``keep_stopping`` still stop."""
    return signals_handled(lambda table: {
        name: (False, False, True) for name in table
        if name.startswith("SIG") and name not in keep_stopping and name not in _CRASH_SIGNALS
        and name not in ("SIGINT", "SIGKILL")})


@contextlib.contextmanager
def user_breakpoints_off():
    off = [b for b in gdb.breakpoints() or () if b.enabled and b.visible]
    for b in off:
        b.enabled = False
    try:
        yield
    finally:
        for b in off:
            if b.is_valid():
                b.enabled = True


# A thread is judged by its innermost frames (a lock-holding libc function is among them).
_FRAMES_LOOKED_AT = 32
# When every thread that could run a callback is inside such a function: run windows this long, this many.
_WINDOWS, _WINDOW_SECONDS = 20, 0.005


def _frame_names(thread):
    """The names of ``thread``'s innermost frames (selects it)."""
    thread.switch()
    names = []
    frame = gdb.newest_frame()
    while frame is not None and len(names) < _FRAMES_LOOKED_AT:
        names.append(frame.name())
        try:
            frame = frame.older()
        except gdb.error:
            break  # the unwinder gave up: judged by the frames it read
    return names


def thread_for_call(inf):
    """The thread a callback borrows: the lowest-numbered one that holds no signal and is not inside a
    function holding a lock the callback may need (``lifecycle.callbacks.LOCK_HOLDERS``: the allocator's, the
    dynamic loader's, the shadow region's).  When every such thread is inside one, the process runs a few
    milliseconds (a run window: it runs during the call anyway) and they are looked at again; after the last
    look the first of them is borrowed all the same (as before there was a choice: a callback that then waits
    for that lock fails at its time limit, with its state recorded, rather than the operation failing busy
    after a post-patch stop that already committed)."""
    injector = SyscallInjector(inf)
    for window in range(_WINDOWS + 1):
        clean = [t for t in sorted(inf.threads(), key=lambda t: t.num) if injector.clean(t)]
        if not clean:
            raise errors.BusyError("no thread of process %d can run a callback now: every thread holds a signal"
                                   % inf.pid)
        for t in clean:
            if cbmod.lock_holder(_frame_names(t)) is None:
                return t
        if window < _WINDOWS:
            with sigstop_handling():
                run_windows.run_window(_WINDOW_SECONDS)
    return clean[0]


class _Timer:
    """Ends the call after ``seconds`` with a stop the program never sees (see the module's docstring)."""

    def __init__(self, inf, lwp, seconds):
        self.inf, self.lwp, self.seconds = inf, lwp, seconds
        self.native = is_native(inf)
        self.cancel = threading.Event()
        self.lock = threading.Lock()
        self.sent = False
        self.alarm = None
        self.signal_name = "SIGSTOP"

    def __enter__(self):
        if self.native:
            self.thread = threading.Thread(target=self._fire, name="nsb-callback-timer", daemon=True)
            self.thread.start()
        else:
            self.alarm = RemoteAlarm()
            self.alarm.arm(self.inf, self.lwp, self.seconds)
            self.signal_name = self.alarm.signal_name
        return self

    def _fire(self):
        if self.cancel.wait(self.seconds):
            return
        with self.lock:
            if not self.cancel.is_set():
                self.sent = run_windows._tgkill(self.inf.pid, self.lwp, signal.SIGSTOP) == 0

    def stop(self):
        """Disarm; whether the timer went off."""
        if self.native:
            with self.lock:
                self.cancel.set()
            self.thread.join()
            return self.sent
        if not self.inf.pid:
            return False
        return self.alarm.disarm() == 0

    def __exit__(self, *exc):
        if self.alarm is not None and self.inf.pid:
            self.alarm.close()
        return False


def call(inf: Inferior, c: Call, seconds: float) -> Result:
    """Run callback ``c`` once; the Result says what it returned, or that it timed out or crashed.

    TargetExitedError when the process exited during the call."""
    gi = gdb.selected_inferior()
    previous = gdb.selected_thread()
    thread = thread_for_call(inf)
    lwp = thread.ptid[1]
    pid = gi.pid
    signals = []

    def on_stop(event):
        sig = getattr(event, "stop_signal", None)
        if sig:
            signals.append(sig)

    expr = "((%s (*)(void)) %d)()" % ("int" if c.returns_value else "void", c.address)
    t0 = time.monotonic()
    with contextlib.ExitStack() as stack:
        stack.enter_context(sigstop_handling())
        stack.enter_context(changed(CALLBACK_CALL))
        stack.enter_context(user_breakpoints_off())
        thread.switch()
        timer = stack.enter_context(_Timer(gi, lwp, seconds))
        stack.enter_context(_program_signals_pass({"SIGSTOP", timer.signal_name}))
        gdb.events.stop.connect(on_stop)
        failure = None
        try:
            value = gdb.parse_and_eval(expr)
            returned = int(value) if c.returns_value else None
        except gdb.error as e:
            failure, returned = str(e), None
        finally:
            gdb.events.stop.disconnect(on_stop)
            fired = timer.stop()
        elapsed = time.monotonic() - t0
        if not gi.pid:
            raise errors.TargetExitedError("process %d exited while its %s ran" % (pid, c.label))
        if fired and timer.native and not signals:
            drain_sigstop(gi, pid, lwp)  # sent as the call returned: never let it stop the process later
        if fired and timer.native:
            forget_sigstop(gi, lwp)
    if previous is not None and previous.is_valid():
        previous.switch()
    if failure is None:
        return Result(returned=returned, seconds=elapsed)
    ours = {"SIGSTOP", timer.signal_name}
    got = [s for s in signals if s not in ours]
    if got:
        return Result(signal=got[0], seconds=elapsed)
    if fired or any(s in ours for s in signals):
        return Result(timed_out=True, seconds=elapsed)
    raise errors.NsbError("%s could not be called: %s" % (c.label, failure.splitlines()[0]))


class Runner:
    """The callbacks of one operation: each run at its point, its verdict applied (lifecycle.callbacks).

    Constructed before anything is written: a process that may not run (``set nsb run-windows``)
    refuses callbacks at once."""

    def __init__(self, inf, injector, store, limit, deadline, operation):
        require_run_allowed("a patch with callbacks")
        self.inf, self.injector, self.store = inf, injector, store
        self.limit, self.deadline, self.operation = limit, deadline, operation

    def _seconds(self):
        remaining = self.deadline.remaining()
        # Never past the operation's deadline: a GDB killed in the middle of a call would leave the
        # thread to return into GDB's dummy frame breakpoint.
        return self.limit if remaining is None else max(0.2, min(self.limit, remaining))

    def _run(self, record, kind):
        c = cbmod.recorded(record, kind)
        if c is None:
            return None, None, None
        seconds = self._seconds()
        return c, call(self.inf, c, seconds), seconds

    def record_failure(self, bid, c, result, seconds):
        """Write "failed: ..." into the patch's record (``list`` shows it)."""
        reg = self.store.load()
        rec = reg.patch(bid) if reg is not None else None
        if rec is None:
            return
        rec.callback_state = cbmod.failed_state(c, result, seconds)
        with self.injector.session():
            undo = UndoLog(self.inf, self.injector, None)
            try:
                self.store.save(reg, undo)
            except BaseException:
                undo.rollback()
                raise
            undo.commit()

    def _judge(self, record, c, result, seconds, keep=None):
        if not result.completed:
            if keep is not None:
                keep.commit()
            self.record_failure(record.patch_build_id, c, result, seconds)
        cbmod.judge(c, result, seconds, self.operation)

    def pre_patch(self, record, loaded):
        """Run pre-patch with the patch loaded (``loaded``: the open UndoLog of the load).  Refused: the
        load is rolled back; failed: it is kept (inactive, "callback failed")."""
        c, result, seconds = self._run(record, "pre_patch")
        if result.completed and result.returned:
            loaded.rollback()
        self._judge(record, c, result, seconds, keep=loaded)

    def after_failed_apply(self, record, loaded, error):
        """The apply failed after pre-patch succeeded: post-unpatch, then the load is rolled back."""
        if not gdb.selected_inferior().pid:
            return  # the process is gone: nothing to call, nothing to roll back
        c, result, seconds = self._run(record, "post_unpatch")
        if result is not None and not result.completed:
            loaded.commit()
            self.record_failure(record.patch_build_id, c, result, seconds)
            raise errors.CallbackFailed("%s: %s; then %s; %s" % (
                self.operation, error, cbmod.failure(c, result, seconds), cbmod.LEAVES["pre_patch"])) from error
        loaded.rollback()

    def post_patch(self, record):
        c, result, seconds = self._run(record, "post_patch")
        if c is not None:
            self._judge(record, c, result, seconds)

    def pre_unpatch(self, record):
        c, result, seconds = self._run(record, "pre_unpatch")
        if c is not None:
            self._judge(record, c, result, seconds)

    def post_unpatch(self, record):
        c, result, seconds = self._run(record, "post_unpatch")
        if c is not None:
            self._judge(record, c, result, seconds)
