"""The acceptance matrix (issue 6, REFERENCE.md section 5): every scenario on
every kind of target, through the runner, with oracles at every step.

One cell = one target process with all its steps; cells are pytest
parameters so that xdist spreads them, and compiled targets and patches are
shared through the build cache (tests/targets).  The table scenario x flavor is printed at
the end of the session (tests/matrix/summary.py).

Cells:
* every positive scenario on every flavor, -O2 -flive-patching=inline-clone,
  4 workers;
* every positive scenario with 1 worker, and a subset at -O0, each on one
  flavor in turn (so every flavor is met);
* every positive scenario at plain -O2 on every flavor.

Where the generator refuses by design (docs/IPA.md: unreplaced callers that
may rely on the old code, a specialised static the patch calls), the
scenario declares the refusal for exactly those cells (``//@ refuse ...``:
the callers and passes, or the function); the cell asserts that exact
refusal, then follows its advice (the override it names) and runs in full
with every oracle.  An undeclared refusal, or a declared one that does not
come, fails the cell.
* every negative scenario on PIE, and those that touch the process's state
  (entry bytes, parked thread, stacking) on every other flavor too.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "matrix"))

import harness  # noqa: E402

CELL_TIMEOUT = 300

POSITIVE = harness.positive_scenarios()
FLAVORS = harness.FLAVORS
O0_SUBSET = ("global_func", "mutual", "static_file", "local_static", "visibility", "alias", "funcptr", "ifunc")
NEGATIVE_ALL_FLAVORS = ("entry_changed", "parked", "stacked_out_of_order")


def _cell(name, flavor, opt, workers):
    return pytest.param(name, flavor, opt, workers, id="%s-%s-%s-t%d" % (name, flavor, opt, workers))


def _positive_cells():
    cells = [_cell(name, flavor, "O2ic", 4) for name in POSITIVE for flavor in FLAVORS]
    cells += [_cell(name, FLAVORS[i % len(FLAVORS)], "O2ic", 1) for i, name in enumerate(POSITIVE)]
    cells += [_cell(name, FLAVORS[i % len(FLAVORS)], "O0", 4) for i, name in enumerate(O0_SUBSET)]
    return cells


def _ipa_ra_cells():
    return [_cell(name, flavor, "O2", 4) for name in POSITIVE for flavor in FLAVORS]


def _negative_cells():
    cells = []
    for kind in harness.NEGATIVE:
        for flavor in FLAVORS if kind in NEGATIVE_ALL_FLAVORS else ("pie",):
            cells.append(pytest.param(kind, flavor, 4, id="neg-%s-%s-t4" % (kind, flavor)))
    return cells


@pytest.mark.timeout(CELL_TIMEOUT)
@pytest.mark.parametrize("name,flavor,opt,workers", _positive_cells())
def test_positive(name, flavor, opt, workers, tmp_path):
    harness.run_positive(name, flavor, opt, workers, str(tmp_path))


@pytest.mark.timeout(CELL_TIMEOUT)
@pytest.mark.parametrize("name,flavor,opt,workers", _ipa_ra_cells())
def test_positive_ipa_ra(name, flavor, opt, workers, tmp_path):
    harness.run_positive(name, flavor, opt, workers, str(tmp_path))


@pytest.mark.timeout(CELL_TIMEOUT)
@pytest.mark.parametrize("kind,flavor,workers", _negative_cells())
def test_negative(kind, flavor, workers, tmp_path):
    harness.run_negative(kind, flavor, workers, str(tmp_path))


def test_scenario_values_are_distinct():
    """Every scenario declares before != after, so a patch that did not take effect fails."""
    for name in POSITIVE + ["neg"]:
        meta = harness.scenario_meta(name)
        assert meta["before"] != meta["after"], name
        assert meta.get("after2", meta["before"]) not in (meta["after"],), name
