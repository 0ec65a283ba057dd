"""Transition only (issue 17 item 4): the harness is tests/targets/; this name serves test files written
before it and goes away once they are moved."""
import targets as T
from targets import load_bias, maps, rss_kb, thread_states, tracer_pid, wait_for  # noqa: F401
from targets.stress import *  # noqa: F401,F403
from targets.stress import target


def nsb(command, pid, *args, timeout=90, env=None, input_timeout=None):
    run = T.nsb(command, "-p", pid, *args, "--json", "--timeout", timeout, env=env, timeout=input_timeout)
    return run.returncode, run.process, run.stderr


def entry_state(pid, name):
    return T.entry_state(pid, target(), name)
