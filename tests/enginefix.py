"""Transition only (issue 17 item 4): the harness is tests/targets/; this name serves test files written
before it and goes away once they are moved."""
import targets as T
from targets import load_bias, memory_matches_file  # noqa: F401
from targets import maps as maps_lines  # noqa: F401
from targets.engine import *  # noqa: F401,F403


def nsb(command, pid, *args, timeout=90):
    run = T.nsb(command, "-p", pid, *args, "--json", "--timeout", timeout)
    return run.returncode, run.process
