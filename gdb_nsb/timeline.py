"""Where the time of one ``nsb`` run goes: named marks on CLOCK_MONOTONIC (bench/run.py --profile).

Written only when the environment names a file (``NSB_TIMELINE``); GDB inherits
it from the runner, so the runner, GDB's Python and the engine append to the
same file, one ``NAME SECONDS PID CPU`` line per mark (CPU: the process's CPU
seconds so far, every thread, so that a step's wait shows apart from its work).
Nothing is done otherwise (one environment lookup at import).
"""

import os
import time

_PATH = os.environ.get("NSB_TIMELINE")


def mark(name):
    if not _PATH:
        return
    line = "%s %.6f %d %.6f\n" % (name, time.monotonic(), os.getpid(), time.process_time())
    fd = os.open(_PATH, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())  # one write per line: marks of several processes never interleave
    finally:
        os.close(fd)


def read(path, cpu=False):
    """[(name, seconds, pid)] of a timeline file, in the order written; with ``cpu``, (name, seconds,
    pid, cpu seconds of that process at the mark)."""
    out = []
    with open(path) as f:
        for line in f:
            name, t, pid, spent = line.split()
            out.append((name, float(t), int(pid), float(spent)) if cpu else (name, float(t), int(pid)))
    return out
