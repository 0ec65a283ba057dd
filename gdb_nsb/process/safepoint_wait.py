"""The safe-point loop: check the stacks, let the process run a window, check again, until safe or out of tries.

Between tries the process runs (``run_windows``), either for growing delays
(strategy ``retry``) or until each busy thread returns from its outermost busy
frame, caught by a temporary run-out breakpoint (strategy ``runout``, `run-out` to users).
"""

import gdb

from gdb_nsb.errors import BusyError, NsbError
from gdb_nsb.options import DEFAULT_TRIES, ENGINE_STRATEGY
from gdb_nsb.process import stacks as stacks_mod
from gdb_nsb.process.remote_alarm import shared_alarm
from gdb_nsb.process.run_windows import RUN_WINDOWS_HINT, RunWindowsOff, ensure_all_stopped, policy, run_window
from gdb_nsb.process.sigstop import sigstop_handling
FIRST_DELAY = 0.001
DELAY_CAP = 1.0


def default_delays(tries=DEFAULT_TRIES, first=FIRST_DELAY, cap=DELAY_CAP):
    """Growing delays between safe-point tries: ``first`` doubling up to ``cap``."""
    out, d = [], first
    for _ in range(max(0, tries - 1)):
        out.append(min(d, cap))
        d *= 2
    return out


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
    unchanged as the windows leave any running program.  A user breakpoint hit
    during a window raises StoppedByUser.
    """
    if strategy not in ENGINE_STRATEGY.values():
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
    if not policy.allowed:
        raise RunWindowsOff("no safe point now: %s; %s" % (verdict.message(), RUN_WINDOWS_HINT))
    with sigstop_handling(), shared_alarm():
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
