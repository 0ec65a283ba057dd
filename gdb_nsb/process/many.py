"""Many processes in one GDB session (issue 15 item 3): each attached, operated on and detached in turn.

A GDB start and the extension's imports cost several hundred milliseconds of
CPU; with one session per process they are most of the time of ``nsb patch
--all-of``.  Here one session serves a list of processes, each in an inferior
of its own (its own program space: the executable's and the patches' symbols
of one process never serve the unwinding of another), removed after its
detach.  Between processes the GDB settings the fast attach changes are put
back and the fault-injection counts start again, so every process sees the
session a fresh GDB would give it.

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

from gdb_nsb.process import fastattach, faults

_RESET_SETTINGS = ("debug-file-directory",)


def _journal(path, line):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _setting(name):
    return gdb.parameter(name)


def _restore(saved):
    for name, value in saved.items():
        if _setting(name) != value:
            gdb.execute("set %s %s" % (name, value or ""), to_string=True)


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


def one(job, spec, saved):
    """Attach, run the command, detach, for one process of the job file; never raises."""
    pid, result = job["pid"], job["result_file"]
    _journal(spec["journal"], "start %d" % pid)
    faults.reset()
    num = _new_inferior()
    try:
        fastattach.prepare(pid, spec.get("patches", ()))
        try:
            gdb.execute("attach %d" % pid, to_string=True)
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
            _restore(saved)
            _journal(spec["journal"], "done %d" % pid)


def run(spec_path):
    """Run every job of the JSON spec the runner wrote, in order, then leave GDB at once."""
    with open(spec_path) as f:
        spec = json.load(f)
    saved = {name: _setting(name) for name in _RESET_SETTINGS}
    for job in spec["jobs"]:
        one(job, spec, saved)
    fastattach.exit_if_detached()


def _quote(arg):
    return '"%s"' % str(arg).replace("\\", "\\\\").replace('"', '\\"')
