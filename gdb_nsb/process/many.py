"""Many processes in one GDB session (issue 15 item 3): each attached, operated on and detached in turn.

A GDB start and the extension's imports cost several hundred milliseconds of
CPU; with one session per process they are most of the time of ``nsb patch
--all-of``.  Here one session serves a list of processes, each in an inferior
of its own (its own program space: the executable's and the patches' symbols
of one process never serve the unwinding of another), removed after its
detach.  Before the first process the session takes a snapshot of everything
the tool may change in GDB (``session_state``'s table: settings, signal
handling, breakpoints, hook-stop); after each process, also when its command
failed, its attach failed or a step's own put-back failed, what differs is put
back, and the fault-injection counts start again, so every process sees the
session a fresh GDB would give it.  A put-back that itself fails ends the
session (the runner continues the rest in a fresh one).  With
``NSB_MANY_STATE=FILE`` each process appends a line to FILE: its pid, the state
it started with and the state it left (before the put-back), as JSON.

The runner (``gdb_nsb/standalone/many.py``) follows a journal file: a
``start PID`` line before the attach, ``done PID`` after the detach; the
command's result file (or ``ATTACH`` + the attach error) is the result.  A
process whose ``done`` never comes (GDB killed at the deadline, or dead)
costs only that process: the runner continues the rest in a fresh session.
"""

import json
import os
import time

import gdb

from gdb_nsb.process import fastattach, faults, session_state

STATE_ENV = "NSB_MANY_STATE"


def _journal(path, line):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _new_inferior():
    """Add an inferior, make it current; its number."""
    before = {inf.num for inf in gdb.inferiors()}
    gdb.execute("add-inferior -no-connection", to_string=True)
    num = next(inf.num for inf in gdb.inferiors() if inf.num not in before)
    gdb.execute("inferior %d" % num, to_string=True)
    return num


def _drop_inferior(num):
    inf = next((i for i in gdb.inferiors() if i.num == num), None)
    if inf is not None and inf.pid:
        gdb.execute("detach", to_string=True)
    gdb.execute("inferior 1", to_string=True)
    gdb.execute("remove-inferiors %d" % num, to_string=True)


def _attach(pid, saved):
    """``attach PID``.  What GDB itself changes in the signal handling as it attaches joins the state put
    back after each process: at its first load of libthread_db, once per session, GDB makes the thread
    library's internal signals (glibc's SIG32 and SIG33) nostop noprint; put back, they would stop
    every later process, which a fresh session never does."""
    before = None if saved.get("gdb-signals") else session_state.signal_table()
    gdb.execute("attach %d" % pid, to_string=True)
    if before is not None:
        changed = {sig: list(flags) for sig, flags in session_state.signal_table().items()
                   if before.get(sig) != flags}
        if changed:
            saved["signals"].update(changed)
            saved["gdb-signals"] = sorted(changed)


def one(job, spec, saved):
    """Attach, run the command, detach, for one process of the job file; raises only when GDB's state
    cannot be put back (or the inferior not removed): the session must not serve another process."""
    pid, result = job["pid"], job["result_file"]
    _journal(spec["journal"], "start %d" % pid)
    record = os.environ.get(STATE_ENV)
    started = session_state.snapshot() if record else None
    faults.reset()
    num = _new_inferior()
    try:
        fastattach.prepare(pid, spec.get("patches", ()))
        try:
            _attach(pid, saved)
        except gdb.error as e:
            with open(result + ".attach", "w") as f:
                f.write(str(e))
            return
        cmd = "nsb-%s --result-file %s --deadline-at %.6f %s" % (
            spec["command"], _quote(result), time.monotonic() + spec["timeout"], spec["extra"])
        try:
            gdb.execute(cmd, to_string=not spec.get("verbose"))
        except gdb.error:
            pass  # the command wrote its error to the result file (no file: the runner reports a failure)
    finally:
        try:
            _drop_inferior(num)
        finally:
            try:
                if record:
                    _journal(record, json.dumps({"pid": pid, "start": started, "left": session_state.snapshot()}))
                session_state.restore(saved)
            finally:
                _journal(spec["journal"], "done %d" % pid)


def run(spec_path):
    """Run every job of the JSON spec the runner wrote, in order, then leave GDB at once."""
    with open(spec_path) as f:
        spec = json.load(f)
    saved = session_state.snapshot()
    for job in spec["jobs"]:
        one(job, spec, saved)
    fastattach.exit_if_detached()


def _quote(arg):
    return '"%s"' % str(arg).replace("\\", "\\\\").replace('"', '\\"')
