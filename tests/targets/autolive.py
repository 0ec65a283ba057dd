"""The auto-mode live target (tests/fixtures/auto_live): ``main.c`` runs workers that call the unit's
``unit_value()`` and count which values they see; its line protocol answers ``get`` and ``stat``.
Used by test_auto_live (every scenario and flavor) and test_auto_inlined (the -O2 inlining cases)."""

import os
import shutil

from .cbuild import FIXTURES
from .process import CountingWorkers, Target, wait_progress

HERE = os.path.join(FIXTURES, "auto_live")


def fixture_text(*parts):
    """A source file of the auto_live fixtures."""
    with open(os.path.join(HERE, *parts)) as f:
        return f.read()


def copy_to(path, directory, name):
    """A private copy of a built file (``nsb generate`` writes into the patch it is given)."""
    out = os.path.join(str(directory), name)
    shutil.copyfile(path, out)
    return out


class Running(CountingWorkers, Target):
    def __init__(self, built, reserve_below=False):
        env = dict(os.environ, AUTO_LIVE_RESERVE_BELOW="1") if reserve_below else None
        super().__init__([built.exe], env=env, ready_line="ready", timeout=20)

    def get(self):
        """(unit_value() - unit_base(), base, ticks) as the main thread sees them."""
        p = self.ask("get").split()
        assert p[0] == "value" and p[2] == "base" and p[4] == "ticks", p
        return int(p[1]) - int(p[3]), int(p[3]), int(p[5])

    def stats(self):
        p = self.ask("stat").split()
        return {"calls": int(p[1]), "unexpected": int(p[3]), "bad": int(p[5]), "seen": {0: int(p[7]), 100: int(p[8])}}

    def wait_calls(self, more=150, timeout=5.0):
        return wait_progress(self.stats, more, timeout)
