"""The acceptance matrix (issue 6, REFERENCE.md section 5): every scenario on
every kind of target, through the runner, with oracles at every step.

One cell = one target process with all its steps; cells are pytest
parameters so that xdist spreads them.  The table scenario x flavor is
printed at the end of the session (tests/matrix/summary.py)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "matrix"))

import harness  # noqa: E402

CELL_TIMEOUT = 240

POSITIVE = harness.positive_scenarios()


def _positive_cells():
    cells = []
    for name in POSITIVE:
        for flavor in harness.FLAVORS:
            cells.append(pytest.param(name, flavor, "O2ic", 4, id="%s-%s-O2ic-t4" % (name, flavor)))
    return cells


@pytest.mark.timeout(CELL_TIMEOUT)
@pytest.mark.parametrize("name,flavor,opt,workers", _positive_cells())
def test_positive(name, flavor, opt, workers, tmp_path):
    harness.run_positive(name, flavor, opt, workers, str(tmp_path))


def _negative_cells():
    return [pytest.param(kind, flavor, 4, id="neg-%s-%s-t4" % (kind, flavor))
            for kind in harness.NEGATIVE for flavor in ("pie",)]


@pytest.mark.timeout(CELL_TIMEOUT)
@pytest.mark.parametrize("kind,flavor,workers", _negative_cells())
def test_negative(kind, flavor, workers, tmp_path):
    harness.run_negative(kind, flavor, workers, str(tmp_path))
