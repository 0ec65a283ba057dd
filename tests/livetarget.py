"""Transition only (issue 17 item 4): the harness is tests/targets/; this name serves test files written
before it and goes away once they are moved."""
import targets as T
from targets import ROOT, GdbServer, free_port, nsb  # noqa: F401
from targets.live import *  # noqa: F401,F403


def text_bytes(pid, path, symbol, mapped_as=None):
    return T.memory_and_file(pid, path, symbol, 16, mapped_as)
