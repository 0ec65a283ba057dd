"""A process GDB lost during a run window: it exited, or it executed a new program.

Measured with GDB 13.1 (native, all-stop over target-non-stop): when the
process exits (exit_group) or execs while its threads run, ``continue`` fails
on the first vanished thread ("Couldn't get registers: No such process",
"Couldn't read debug register", "Cannot find user-level thread for LWP ...")
and leaves its threads marked running; every later command fails, and its
``detach`` then dies of an internal error (exit: linux-nat asserts one LWP is
left) or hangs (exec: the execing thread waits for its dead siblings to be
collected).  /proc tells which of the two happened; GDB is then left sane
(process forgotten, or detached from the new program) before the typed error
is raised.
"""

import os
import signal
import time

import gdb

from gdb_nsb import procstate
from gdb_nsb.errors import NsbError, TargetExecError, TargetExitedError
from gdb_nsb.process.sigstop import sigstop_pending

SYS_EXECVE, SYS_EXECVEAT = 59, 322  # x86_64
_WALL = 0x40000000
VANISH_SETTLE = 2.0  # seconds to let an exit or exec in progress finish before judging it


def exited_error(pid=None):
    """The error of a process that exited while it ran between safe-point tries."""
    who = "process %d" % pid if pid else "the process"
    return TargetExitedError("%s exited while it ran between safe-point tries; nothing was written" % who)


def in_exec(pid, tid):
    """Whether task ``tid`` is inside execve/execveat (waiting for its siblings to die, or at the exec stop)."""
    try:
        with open("/proc/%d/task/%d/syscall" % (pid, tid)) as f:
            first = f.read().split()
    except OSError:
        return False
    return bool(first) and first[0] in (str(SYS_EXECVE), str(SYS_EXECVEAT))


def reap_dead_threads(pid):
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


def explain_lost_process(pid, error, sent_to):
    """GDB lost the process during a window (``continue`` failed with ``error``): find out why, leave GDB
    sane, raise.  ``sent_to``: the thread our window's SIGSTOP went to (None: not sent).

    * every task a zombie (or the process gone): it exited.  ``kill`` only
      collects the zombies and makes GDB forget the process cleanly.
    * a live task inside execve: it is executing a new program.  Its dead
      siblings are collected, the exec completes and stops for the tracer,
      and GDB's ``detach`` then lets the new program run untouched.

    Anything else stays the generic failure it was.
    """
    deadline = time.monotonic() + VANISH_SETTLE
    while True:
        live = procstate.live_threads(pid)
        if not live:
            try:
                gdb.execute("kill", to_string=True)
            except gdb.error:
                pass
            raise exited_error(pid)
        execing = [t for t in live if in_exec(pid, t)]
        if execing:
            _leave_exec(pid, execing[0], sent_to, deadline)
            raise TargetExecError("process %d executed a new program while it ran between safe-point tries; "
                                  "operation aborted, nothing written, GDB detached" % pid)
        if time.monotonic() > deadline:
            if isinstance(error, KeyboardInterrupt) and str(error) != "Command aborted.":
                raise error  # the user's ^C
            raise NsbError("the process did not come back from a run window: %s" % error)
        time.sleep(0.01)


def _leave_exec(pid, tid, sent_to, deadline):
    """Let the exec of task ``tid`` finish and detach from the new program, leaving it running."""
    while time.monotonic() < deadline:
        reap_dead_threads(pid)
        states = procstate.thread_states(pid)
        # A non-leader thread that execs takes over the leader's task id.
        if states.get(tid) == "t" or (tid not in states and states.get(pid) == "t"):
            break
        time.sleep(0.005)
    # Our SIGSTOP, if its thread survived as the new program, would stop that program after the
    # detach: SIGCONT discards a pending stop signal (and only resumes what a stop signal stopped).
    if sent_to is not None and any(sigstop_pending(pid, t) for t in procstate.live_threads(pid)):
        os.kill(pid, signal.SIGCONT)
    try:
        gdb.execute("detach", to_string=True)
    except gdb.error:
        pass
    if procstate.thread_states(pid).get(pid) == "T":  # the main thread in group stop
        os.kill(pid, signal.SIGCONT)
