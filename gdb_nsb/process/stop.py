"""Stopping the process, run windows and the safe-point loop, with no signal the application sees.

What works in GDB 13.1 here (measured; see REFERENCE 6):

* All-stop ``interrupt`` sends a real SIGINT: a target that blocks SIGINT never
  stops, and one that waits for it in ``sigwait`` receives ours.  Not usable.
* Non-stop mode cannot be driven from a batch Python script: every synchronous
  execution command (``continue``, ``advance``, ``stepi``) returns at the first
  stop of *any* thread, so after ``interrupt -a`` the other threads' stops are
  only processed one per command, and a thread must be resumed to get the event
  loop to run at all; sleeping in Python freezes the loop.  A non-stop batch
  session that detaches also leaves the process in group-stop (state ``T``):
  the SIGSTOPs of the attach are still queued when GDB detaches.
* All-stop works, because GDB 13 drives a native Linux target in non-stop
  underneath (``maint show target-non-stop``: auto, currently on): as soon as
  one thread reports any event, GDB stops every other thread with a SIGSTOP it
  absorbs itself.  So a run window is a synchronous ``continue`` while a timer
  thread sends one thread-directed SIGSTOP (``tgkill``) at the window's end,
  with ``handle SIGSTOP stop nopass`` for the duration: the stop is reported
  to GDB, never delivered, and cannot be caught or blocked by the program.
  Run windows of 1/5/50/200 ms came back in about 13/19/52/207 ms.
  On a native target the timer is a thread of GDB's own that calls ``tgkill``.
* A remote target (gdbserver) cannot be reached by ``tgkill`` from GDB's host,
  and its ``interrupt`` (``\x03``/``vCtrlC``) makes gdbserver send SIGINT to the
  process group.  So the same SIGSTOP is sent by the kernel instead: a POSIX
  timer created inside the process by injected syscalls (``timer_create`` with
  ``SIGEV_THREAD_ID`` on one thread, armed per window with ``timer_settime``,
  deleted with its one-page scratch mapping when the loop ends).  gdbserver
  reports the SIGSTOP like any signal and GDB drops it (``nopass``).  The
  first safe-point check needs no window at all.

Stops we did not cause are never swallowed: an application signal stays the
thread's pending stop signal and GDB delivers it when the thread resumes (or
at detach); a user breakpoint (or watchpoint, catchpoint) hit during a window
ends the operation with :class:`StoppedByUser`, the process stopped there as
GDB shows it.  A SIGSTOP sent by someone else to the same thread during a
window is indistinguishable from ours and is absorbed (documented limit).
"""

import ctypes
import os
import signal
import threading
import time

import gdb

from gdb_nsb.errors import BusyError, NsbError, TargetExecError, TargetExitedError, UnsupportedError
from gdb_nsb import procstate
from gdb_nsb.process import stacks as stacks_mod

SYS_TGKILL = 234  # x86_64
SYS_EXECVE, SYS_EXECVEAT = 59, 322
_WALL = 0x40000000
VANISH_SETTLE = 2.0  # seconds to let an exit or exec in progress finish before judging it
_libc = ctypes.CDLL(None, use_errno=True)

DEFAULT_TRIES = 25
FIRST_DELAY = 0.001
DELAY_CAP = 1.0


class StoppedByUser(NsbError):
    """A user breakpoint (or watchpoint, catchpoint) stopped the process during a run window."""

    exit_code = 10


def default_delays(tries=DEFAULT_TRIES, first=FIRST_DELAY, cap=DELAY_CAP):
    """Growing delays between safe-point tries: ``first`` doubling up to ``cap``."""
    out, d = [], first
    for _ in range(max(0, tries - 1)):
        out.append(min(d, cap))
        d *= 2
    return out


def _inferior():
    inf = gdb.selected_inferior()
    if not inf.pid:
        raise NsbError("no process: attach to the target first")
    return inf


def _check_mode(inf):
    if gdb.parameter("non-stop"):
        raise UnsupportedError("non-stop mode is not supported for run windows: attach in all-stop mode "
                               "(set non-stop off before attaching)")


def _is_native(inf):
    conn = getattr(inf, "connection", None)
    return conn is None or conn.type == "native"


def ensure_all_stopped():
    """Check that every thread of the selected inferior is stopped; return the threads.

    In all-stop mode GDB keeps every thread stopped whenever it has control,
    so nothing has to be sent.  A process left running in the background
    (``continue &``) cannot be stopped without the event loop: refused with a
    clear message rather than stopped with a signal.
    """
    inf = _inferior()
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


def _sigstop_pending(pid, tid, native=True):
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


# While windows run, a GDB internal error (GDB 13 has some when threads vanish at an exit or exec)
# must become an error we can handle, not GDB's death: no quit, no core file, and no backtrace
# (printing it while ``to_string`` captures the output made GDB die of "Recursive internal problem").
_INTERNAL_ERROR_SETTINGS = (("quit", "no"), ("corefile", "no"), ("backtrace", "off"))


class sigstop_handling:
    """Context of run windows: ``handle SIGSTOP stop print nopass``, internal errors of GDB survivable
    (see ``_INTERNAL_ERROR_SETTINGS``); the user's settings restored on exit."""

    def __enter__(self):
        out = gdb.execute("info signals SIGSTOP", to_string=True)
        row = [l for l in out.splitlines() if l.startswith("SIGSTOP")][0].split()
        self.saved = ["stop" if row[1] == "Yes" else "nostop", "print" if row[2] == "Yes" else "noprint",
                      "pass" if row[3] == "Yes" else "nopass"]
        self.internal = []
        for name, value in _INTERNAL_ERROR_SETTINGS:
            try:
                shown = gdb.execute("maint show internal-error %s" % name, to_string=True)
                self.internal.append((name, shown.rsplit('"', 2)[1]))
                gdb.execute("maint set internal-error %s %s" % (name, value), to_string=True)
            except (gdb.error, IndexError):
                pass
        gdb.execute("handle SIGSTOP stop print nopass", to_string=True)
        return self

    def __exit__(self, *exc):
        for name, value in self.internal:
            gdb.execute("maint set internal-error %s %s" % (name, value), to_string=True)
        gdb.execute("handle SIGSTOP %s" % " ".join(self.saved), to_string=True)
        return False


class _StopLog:
    """Records the stop events GDB reports while connected."""

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
            self.events.append(("breakpoint", lwp, [b.number for b in ev.breakpoints]))
        elif isinstance(ev, gdb.SignalEvent):
            self.events.append(("signal", lwp, ev.stop_signal))
        else:
            self.events.append(("stop", lwp, None))


class WindowResult:
    """What happened during one run window."""

    def __init__(self, elapsed, events, ours_hit):
        self.elapsed = elapsed          # seconds from resume to all threads stopped
        self.events = events            # (kind, lwp, detail) of every stop GDB reported
        self.ours_hit = ours_hit        # numbers of our breakpoints that stopped the process

    def __repr__(self):
        return "WindowResult(%.2f ms, %r)" % (self.elapsed * 1e3, self.events)


def _pick_thread(inf, exclude=()):
    ths = sorted((t for t in inf.threads() if t.is_valid() and t.ptid[1] not in exclude), key=lambda t: t.num)
    return ths[0] if ths else None


def run_window(seconds, ours=()):
    """Let the whole process run about ``seconds``, then have every thread stopped again.

    ``ours`` are numbers of breakpoints this module placed (run-out); hitting
    one ends the window early and is reported in the result.  Must be called
    inside :class:`sigstop_handling`.  Raises :class:`StoppedByUser` when a
    user breakpoint stopped the process, :class:`TargetExitedError` when the
    process exited and :class:`TargetExecError` when it executed a new program
    (GDB then detached: see :func:`_vanished`).
    """
    inf = _inferior()
    _check_mode(inf)
    if not _is_native(inf):
        return _remote_window(inf, seconds, set(ours))
    pid = inf.pid
    ours = set(ours)
    cancel = threading.Event()
    state = {"sent_to": None}
    lock = threading.Lock()
    anchor = _pick_thread(inf)
    anchor_lwp = anchor.ptid[1]

    def fire():
        if cancel.wait(max(0.0, seconds)):
            return
        with lock:
            if cancel.is_set():
                return
            # The anchor may have exited during the window: any live thread ends it as well.
            for lwp in [anchor_lwp] + [t for t in _live_tasks(pid) if t != anchor_lwp]:
                if _tgkill(pid, lwp, signal.SIGSTOP) == 0:
                    state["sent_to"] = lwp
                    return

    timer = threading.Thread(target=fire, name="nsb-run-window", daemon=True)
    t0 = time.monotonic()
    with _StopLog() as log:
        timer.start()
        lost = None
        try:
            gdb.execute("continue", to_string=True)
        except (gdb.error, KeyboardInterrupt) as e:  # an internal error of GDB arrives as "Command aborted."
            lost = e
        finally:
            with lock:
                cancel.set()
            timer.join()
        elapsed = time.monotonic() - t0
        if not inf.pid:
            raise TargetExitedError("process %d exited while it ran between safe-point tries; nothing was written"
                                    % pid)
        if lost is not None:
            _vanished(inf, pid, lost, state["sent_to"])
        sent = state["sent_to"]
        if sent is not None and not any(k == "signal" and l == sent and d == "SIGSTOP" for k, l, d in log.events):
            _drain_sigstop(inf, pid, sent, log)
        mine = [e for e in log.events if e[1] == sent]
        if sent is not None and mine and mine[-1][0] == "signal" and mine[-1][2] == "SIGSTOP":
            _forget_sigstop(inf, sent)
    return _window_result(elapsed, log, ours)


def _remote_window(inf, seconds, ours):
    """run_window on a remote target: the SIGSTOP comes from a timer inside the process."""
    own = _RemoteAlarm.current is None
    alarm = _RemoteAlarm() if own else _RemoteAlarm.current
    try:
        anchor_lwp = _pick_thread(inf).ptid[1]
        alarm.arm(inf, anchor_lwp, seconds)
        t0 = time.monotonic()
        with _StopLog() as log:
            try:
                gdb.execute("continue", to_string=True)
            except gdb.error as e:
                raise NsbError("the process did not come back from a run window: %s" % e)
            elapsed = time.monotonic() - t0
            if not inf.pid:
                raise TargetExitedError("the process exited while it ran between safe-point tries; "
                                        "nothing was written")
            fired = any(k == "signal" and l == anchor_lwp and d == "SIGSTOP" for k, l, d in log.events)
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
                    raise TargetExitedError("the process exited while it ran between safe-point tries; "
                                            "nothing was written")
                fired = any(k == "signal" and l == anchor_lwp and d == "SIGSTOP" for k, l, d in log.events)
            mine = [e for e in log.events if e[1] == anchor_lwp]
            if mine and mine[-1][0] == "signal" and mine[-1][2] == "SIGSTOP":
                _forget_sigstop(inf, anchor_lwp)
    finally:
        if own:
            alarm.close()
    return _window_result(elapsed, log, ours)


def _live_tasks(pid):
    return sorted(t for t, s in procstate.thread_states(pid).items() if s not in "ZX")


def _in_exec(pid, tid):
    """Whether task ``tid`` is inside execve/execveat (waiting for its siblings to die, or at the exec stop)."""
    try:
        with open("/proc/%d/task/%d/syscall" % (pid, tid)) as f:
            first = f.read().split()
    except OSError:
        return False
    return bool(first) and first[0] in (str(SYS_EXECVE), str(SYS_EXECVEAT))


def _reap_dead_threads(pid):
    """Collect the exit status of every zombie thread of ``pid`` (our tracees).

    An exec must wait until the tracer has collected the threads it killed;
    GDB 13 stopped collecting when it failed on the first vanished thread, so
    the exec hung (its thread in state D) and GDB's detach with it.  GDB treats
    a thread whose status someone else collected as gone (ECHILD).
    """
    for tid, st in procstate.thread_states(pid).items():
        if tid != pid and st in "ZX":
            try:
                os.waitpid(tid, _WALL | os.WNOHANG)
            except ChildProcessError:
                pass


def _vanished(inf, pid, error, sent_to):
    """GDB lost the process during a window (``continue`` failed): find out why, leave GDB sane, raise.

    Measured with GDB 13.1 (native, all-stop over target-non-stop): when the
    process exits (exit_group) or execs while its threads run, ``continue``
    fails on the first vanished thread ("Couldn't get registers: No such
    process", "Couldn't read debug register", "Cannot find user-level thread
    for LWP ...") and leaves its threads marked running; every later command
    fails, and its ``detach`` then dies of an internal error (exit: linux-nat
    asserts one LWP is left) or hangs (exec: the execing thread waits for its
    dead siblings to be collected).  So:

    * every task a zombie (or the process gone): it exited.  ``kill`` only
      collects the zombies and makes GDB forget the process cleanly.
    * a live task inside execve: it is executing a new program.  Its dead
      siblings are collected, the exec completes and stops for the tracer,
      and GDB's ``detach`` then lets the new program run untouched.

    Anything else stays the generic failure it was.
    """
    deadline = time.monotonic() + VANISH_SETTLE
    while True:
        states = procstate.thread_states(pid)
        live = [t for t, s in states.items() if s not in "ZX"]
        if not live:
            try:
                gdb.execute("kill", to_string=True)
            except gdb.error:
                pass
            raise TargetExitedError("process %d exited while it ran between safe-point tries; nothing was written"
                                    % pid)
        execing = [t for t in live if _in_exec(pid, t)]
        if execing:
            _leave_exec(inf, pid, execing[0], sent_to, deadline)
            raise TargetExecError("process %d executed a new program while it ran between safe-point tries; "
                                  "operation aborted, nothing written, GDB detached" % pid)
        if time.monotonic() > deadline:
            if isinstance(error, KeyboardInterrupt) and str(error) != "Command aborted.":
                raise error  # the user's ^C
            raise NsbError("the process did not come back from a run window: %s" % error)
        time.sleep(0.01)


def _leave_exec(inf, pid, tid, sent_to, deadline):
    """Let the exec of task ``tid`` finish and detach from the new program, leaving it running."""
    while time.monotonic() < deadline:
        _reap_dead_threads(pid)
        states = procstate.thread_states(pid)
        # A non-leader thread that execs takes over the leader's task id.
        if states.get(tid) == "t" or (tid not in states and states.get(pid) == "t"):
            break
        time.sleep(0.005)
    # Our SIGSTOP, if its thread survived as the new program, would stop that program after the
    # detach: SIGCONT discards a pending stop signal (and only resumes what a stop signal stopped).
    if sent_to is not None and any(_sigstop_pending(pid, t) for t in _live_tasks(pid)):
        os.kill(pid, signal.SIGCONT)
    try:
        gdb.execute("detach", to_string=True)
    except gdb.error:
        pass
    if procstate.thread_states(pid).get(pid) == "T":  # the main thread in group stop
        os.kill(pid, signal.SIGCONT)


def _window_result(elapsed, log, ours):
    user = [e for e in log.events if e[0] == "breakpoint" and not set(e[2]) <= ours]
    if user:
        _, lwp, nums = user[0]
        raise StoppedByUser("breakpoint %s stopped LWP %d during a run window; the process stays stopped there"
                            % (",".join(str(n) for n in nums if n not in ours), lwp))
    ours_hit = sorted({n for k, _, nums in log.events if k == "breakpoint" for n in nums if n in ours})
    return WindowResult(elapsed, log.events, ours_hit)


class _RemoteAlarm:
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
            from gdb_nsb.process.syscalls import SyscallInjector
            self.injector = SyscallInjector()
        return self.injector

    def arm(self, inf, lwp, seconds):
        import struct
        from gdb_nsb.process import syscalls as sc
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
        import struct
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


class remote_alarm:
    """Context of a safe-point loop: one remote alarm for all its windows (nothing on native targets)."""

    def __enter__(self):
        inf = gdb.selected_inferior()
        self.mine = inf.pid and not _is_native(inf) and _RemoteAlarm.current is None
        if self.mine:
            _RemoteAlarm.current = _RemoteAlarm()
        return self

    def __exit__(self, *exc):
        if self.mine:
            alarm, _RemoteAlarm.current = _RemoteAlarm.current, None
            try:
                alarm.close()
            except (NsbError, gdb.error):
                if exc[0] is None:
                    raise
        return False


def _drain_sigstop(inf, pid, lwp, log):
    """Consume our SIGSTOP if it still waits for its thread (that thread had stopped first).

    Left queued it would stop the next resume, or group-stop the process at
    detach.  The thread alone takes one step with the scheduler locked: the
    signal is reported before any instruction runs, and ``nopass`` drops it.
    """
    native = _is_native(inf)
    if not _sigstop_pending(pid, lwp, native):
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
            if not _sigstop_pending(pid, lwp, native):
                break
    finally:
        gdb.execute("set scheduler-locking %s" % lock, to_string=True)
        if old is not None and old.is_valid():
            old.switch()


def _forget_sigstop(inf, lwp):
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


class _RunOutBreakpoint(gdb.Breakpoint):
    """Stops ``thread`` once it has returned from its outermost busy frame.

    The thread's sp at the return address equals the sp the unwinder gave the
    caller frame; a hit with a smaller sp is a deeper recursion of the caller,
    not the return we wait for.
    """

    def __init__(self, pc, thread_num, sp):
        super().__init__("*0x%x" % pc, gdb.BP_BREAKPOINT, internal=True)
        self.silent = True
        self.thread = thread_num
        self.want_sp = sp

    def stop(self):
        if self.want_sp is None:
            return True
        try:
            return int(gdb.selected_frame().read_register("rsp")) >= self.want_sp
        except gdb.error:
            return True


def _collect():
    return stacks_mod.collect_stacks()


def wait_for_safe_point(check, strategy="retry", tries=DEFAULT_TRIES, delays=None, deadline=None,
                        collect=_collect):
    """Return the safe Verdict once no thread is inside a busy range; all threads stopped.

    ``check`` is a :class:`gdb_nsb.safepoint.SafePointCheck` (or anything with
    ``check(stacks) -> Verdict``).  ``strategy``: ``"retry"`` lets the process
    run between tries for growing ``delays`` (default 1 ms doubling to 1 s);
    ``"runout"`` puts temporary breakpoints at the return addresses of each
    busy thread's outermost busy frame and lets the process run until they
    are hit, each window bounded by the same delays, so a thread blocked
    forever inside costs only time.  ``deadline`` (``expired()``/``remaining()``)
    bounds the whole loop.  Raises BusyError naming thread, frame and function
    when the tries or the time run out; the process is then stopped, as
    unchanged as the windows leave any running program.
    """
    if strategy not in ("retry", "runout"):
        raise NsbError("unknown safe-point strategy %r (retry, runout)" % strategy)
    if tries < 1:
        raise NsbError("safe-point tries must be at least 1")
    delays = list(delays) if delays is not None else default_delays(tries)
    if not delays:
        delays = [FIRST_DELAY]
    ensure_all_stopped()
    verdict = check.check(collect())
    checks = 1
    if verdict.safe:
        return verdict
    with sigstop_handling(), remote_alarm():
        for i in range(tries - 1):
            if deadline is not None and deadline.expired():
                break
            window = delays[min(i, len(delays) - 1)]
            if deadline is not None and deadline.remaining() is not None:
                window = min(window, deadline.remaining())
            if strategy == "runout":
                _run_out_once(verdict, window)
            else:
                run_window(window)
            verdict = check.check(collect())
            checks += 1
            if verdict.safe:
                return verdict
    raise BusyError("no safe point after %d check%s: %s" % (checks, "s" if checks > 1 else "", verdict.message()))


def _run_out_once(verdict, window):
    """One run-out window: breakpoints just outside each busy thread's outermost busy frame."""
    stacks_by_thread = {}
    for st in stacks_mod.collect_stacks():
        stacks_by_thread[st.num] = st
    bps = []
    try:
        for num, off in verdict.outermost_busy().items():
            st = stacks_by_thread.get(num)
            if st is None or off.level + 1 >= len(st.frames):
                continue
            caller = st.frames[off.level + 1]
            if caller.pc is None or caller.kind == "dummy":
                continue
            bps.append(_RunOutBreakpoint(caller.pc, num, caller.sp))
        return run_window(window, ours=[b.number for b in bps])
    finally:
        for b in bps:
            if b.is_valid():
                b.delete()


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
    native = getattr(inf, "connection", None) is None or inf.connection.type == "native"
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


install_exit_hook()
