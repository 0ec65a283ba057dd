"""Fault injection at named steps of apply and revert (for the reliability tests).

The environment variable ``NSB_FAULT`` (read at each step, so a script
inside GDB may change it between operations) holds comma-separated specs::

    [ACTION@]POINT[:K][=SECONDS]

ACTION is ``fail`` (default: raise InjectedFault, which the undo log rolls
back), ``kill`` (GDB sends itself SIGKILL: the tool dies at that exact
instant, as if an operator killed it) or ``sleep`` (pause SECONDS there, to
widen a window for an outside SIGKILL).  K selects the K-th time the point
is reached in this GDB process (default 1; ``*`` = every time; ``reset()``
starts counting again).  With ``NSB_FAULT_READY=FILE`` a sleep first creates
FILE, so that a test knows the tool is inside that step (and in no injected
system call) before it kills it.

Points, in the order an apply reaches them: ``after-mmap``,
``after-mprotect`` (once per protection run), ``after-segment-write`` (per
segment), ``registry-save``, ``after-jump`` (per jump), ``before-commit``;
a revert: ``revert-after-jump`` (per restored entry), ``revert-registry-save``,
``revert-before-commit``.  Finer, in any operation: ``after-write`` after
each memory write of the undo log (segments, registry slot and commit word,
jumps, the registry memfd's name) and ``after-syscall`` after each injected
system call (its thread's registers and bytes restored); ``step`` is
either of them, counted together.  ``restore-settings``: in any operation,
just before a step puts back the GDB settings or signal handling it changed
(``session_state``); a ``fail`` there leaves them changed, as a GDB error in
the put-back would.  With
``NSB_FAULT_LOG=FILE`` a kill first appends "POINT K DETAIL" to FILE, so that
a test knows which write it stopped after.  With ``NSB_FAULT_PID=PID`` the
faults act only while the current inferior is process PID (one process of
several served by one session, gdb_nsb/process/many.py).  Unset, every check
is one dictionary lookup.
"""

import os
import signal
import time

from gdb_nsb.errors import NsbError, UsageError

ENV = "NSB_FAULT"
READY_ENV = "NSB_FAULT_READY"
ACTIONS = ("fail", "kill", "sleep")
APPLY_POINTS = ("after-mmap", "after-mprotect", "after-segment-write", "registry-save", "after-jump",
                "before-commit")
REVERT_POINTS = ("revert-after-jump", "revert-registry-save", "revert-before-commit")
WRITE_POINTS = ("after-write", "after-syscall")
STEP = "step"  # either of WRITE_POINTS, counted together: kill@step:K stops after the K-th write or call
STATE_POINTS = ("restore-settings",)
POINTS = APPLY_POINTS + REVERT_POINTS + WRITE_POINTS + (STEP,) + STATE_POINTS
LOG_ENV = "NSB_FAULT_LOG"
PID_ENV = "NSB_FAULT_PID"


class InjectedFault(NsbError):
    """A failure forced by NSB_FAULT (tests only)."""

    exit_code = 10


_hits = {}


def reset():
    """Forget how often each point was reached."""
    _hits.clear()


def hits(point):
    """How often ``point`` was reached since the last reset."""
    return _hits.get(point, 0)


def parse(text):
    """``NSB_FAULT`` text → [(action, point, k or None for every time, seconds)]."""
    specs = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        action, _, rest = part.rpartition("@")
        action = action or "fail"
        rest, _, secs = rest.partition("=")
        point, _, k = rest.partition(":")
        if action not in ACTIONS or point not in POINTS:
            raise UsageError("%s: bad fault %r (actions %s; points %s)" % (ENV, part, "/".join(ACTIONS),
                                                                         ", ".join(POINTS)))
        try:
            count = None if k == "*" else int(k or 1)
            seconds = float(secs or 0)
        except ValueError:
            raise UsageError("%s: bad count or seconds in %r" % (ENV, part))
        specs.append((action, point, count, seconds))
    return specs


def point(name, detail=""):
    """Called by the engine when it reaches step ``name``; acts when NSB_FAULT says so."""
    _hits[name] = _hits.get(name, 0) + 1
    if name in WRITE_POINTS:
        _hits[STEP] = _hits.get(STEP, 0) + 1
    text = os.environ.get(ENV)
    if not text:
        return
    only = os.environ.get(PID_ENV)
    if only:
        import gdb
        if str(gdb.selected_inferior().pid) != only.strip():
            return
    for action, where, k, seconds in parse(text):
        if where == STEP and name in WRITE_POINTS:
            n = _hits[STEP]
            detail = "%s %s" % (name, detail)
        elif where == name:
            n = _hits[name]
        else:
            continue
        if k is not None and k != n:
            continue
        if action == "sleep":
            ready = os.environ.get(READY_ENV)
            if ready:
                with open(ready, "w") as f:
                    f.write("%s %d\n" % (name, n))
            time.sleep(seconds)
        elif action == "kill":
            log = os.environ.get(LOG_ENV)
            if log:
                with open(log, "a") as f:
                    f.write("%s %d %s\n" % (where, n, detail))
            os.kill(os.getpid(), signal.SIGKILL)
        else:
            raise InjectedFault("injected fault at %s #%d%s" % (name, n, " (%s)" % detail if detail else ""))
