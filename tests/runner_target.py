"""Transition only (issue 17 item 4): the harness is tests/targets/; this name serves test files written
before it and goes away once they are moved."""
import targets as T
from targets import ROOT, nsb, validate  # noqa: F401
from targets.runner import *  # noqa: F401,F403


def nsb_json(*args, timeout=120, env=None, prefix=()):
    run = T.nsb(*args, "--json", timeout=timeout, env=env, prefix=prefix)
    return run.returncode, run.doc
