"""The state of a local process's threads, read from /proc (no GDB): is it running, stopped, about to stop.

Shared by the runner (after GDB is gone) and by the GDB side's non-stop detach.
"""

import os
import signal
import time


def ensure_running(pid, was_stopped=False, clean_exit=False):
    """After GDB is gone, a target left in group-stop (T) is continued.

    A process that was stopped before we came (``was_stopped``) is left stopped:
    GDB's attach continues a stopped process (SIGCONT), so it gets its SIGSTOP back.
    After a ``clean_exit`` of GDB (it detached and wrote its result), no thread
    stopped and no stop signal pending anywhere means nothing can stop the
    process later: that is settled at once instead of watching it for 40 ms.
    Returns the thread states seen last.
    """
    states = thread_states(pid)
    if clean_exit and not was_stopped and states and not any(s in "Tt" for s in states.values()) \
            and not stop_signal_pending(pid, states):
        return states
    if was_stopped:
        if states and not all(s == "T" for s in states.values()):
            try:
                os.kill(pid, signal.SIGSTOP)
            except OSError:
                pass
        return states
    # Until the states stay calm: a dying tracer's stops may still turn into group-stops.
    deadline = time.monotonic() + 5.0
    calm = 0
    while time.monotonic() < deadline:
        states = thread_states(pid)
        if not states:
            return states
        if any(s == "T" for s in states.values()) or (
                not any(s == "t" for s in states.values()) and stop_signal_pending(pid, states)):
            # A stop signal still pending (the attach's SIGSTOP of a thread the loaded machine has not
            # run since) would group-stop the process after we looked: SIGCONT discards it (CI: every
            # thread 'T' after a clean non-stop exit).
            calm = 0
            try:
                os.kill(pid, signal.SIGCONT)
            except OSError:
                return states
        elif any(s == "t" for s in states.values()):
            calm = 0
        else:
            calm += 1
            if calm >= 3:
                return states
        time.sleep(0.02)
    return states


_STOP_SIGNALS = (1 << (signal.SIGSTOP - 1)) | (1 << (signal.SIGTSTP - 1)) | (1 << (signal.SIGTTIN - 1)) \
    | (1 << (signal.SIGTTOU - 1))


def stop_signal_pending(pid, states):
    """True when a stop signal is pending for the process or one of ``states``' threads (or unreadable)."""
    for tid in states:
        try:
            with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            pending = int(fields["SigPnd"], 16) | int(fields["ShdPnd"], 16)
        except (OSError, KeyError, ValueError):
            return True
        if pending & _STOP_SIGNALS:
            return True
    return False


def comm(pid):
    """The process's command name (``/proc/PID/comm``), or "?" once it is gone."""
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return "?"


def thread_states(pid):
    """{tid: state letter} of every thread of ``pid`` (empty once the process is gone)."""
    out = {}
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                data = f.read()
            out[int(tid)] = data[data.rindex(")") + 2]
        except OSError:
            pass
    return out


def live_threads(pid):
    """Sorted ids of the threads of ``pid`` that are not dead (zombie or being reaped)."""
    return sorted(t for t, s in thread_states(pid).items() if s not in "ZX")


# x86_64 Linux's SIGSTKFLT (the signal module names it from Python 3.11 on).
SIGSTKFLT = getattr(signal, "SIGSTKFLT", 16)

# Signals never used to end a remote run window even when ignored: stop/continue signals act when
# sent, whatever the disposition; SIGTRAP and SIGINT mean something to GDB itself; the kernel forces
# the fault signals through an ignore; 32 and 33 are the C library's.
_NOT_FOR_WINDOWS = {signal.SIGKILL, signal.SIGSTOP, signal.SIGCONT, signal.SIGTSTP, signal.SIGTTIN,
                    signal.SIGTTOU, signal.SIGTRAP, signal.SIGINT, signal.SIGSEGV, signal.SIGBUS,
                    signal.SIGILL, signal.SIGFPE, signal.SIGSYS, SIGSTKFLT, 32, 33}


def ignored_unblocked_signal(status_text):
    """The lowest signal whose disposition is ignore and that the thread does not block, or None.

    ``status_text``: the thread's ``/proc/PID/task/TID/status`` (``SigIgn`` is
    the process's, ``SigBlk`` the thread's).  Sent to that thread while it is
    traced, the kernel reports it as a stop the tracer absorbs; untraced, it
    discards it at once: an alarm with it cannot stop the process after its
    owner died.  Raises ValueError when a mask is missing."""
    fields = dict(line.split(":", 1) for line in status_text.splitlines() if ":" in line)
    try:
        ignored, blocked = int(fields["SigIgn"], 16), int(fields["SigBlk"], 16)
    except KeyError as e:
        raise ValueError("no %s line in the thread's status" % e.args[0]) from None
    usable = ignored & ~blocked
    for sig in range(1, 65):
        if usable & (1 << (sig - 1)) and sig not in _NOT_FOR_WINDOWS:
            return sig
    return None


def gdb_signal_name(sig):
    """GDB's name of Linux signal ``sig`` (real-time ones are ``SIG34`` ...)."""
    if sig >= 32:
        return "SIG%d" % sig
    return signal.Signals(sig).name
