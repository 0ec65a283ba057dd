"""The matrix table: cells from test ids of the matrix and of the auto-mode live tests."""

from types import SimpleNamespace

from matrix import summary


def rep(nodeid):
    return SimpleNamespace(nodeid=nodeid, when="call")


def test_cells_from_matrix_and_auto_ids():
    stats = {"passed": [rep("tests/test_matrix.py::test_positive[global-pie-O2ic-t4]"),
                        rep("tests/test_auto_live.py::test_auto_patch_live[static_variable-shlib]")],
             "failed": [rep("tests/test_matrix.py::test_negative[neg-twice-nopie-t4]")]}
    cells = summary.collect(stats)
    assert cells == {("global", "pie"): "pass", ("auto:static_variable", "shlib"): "pass",
                     ("neg:twice", "nopie"): "FAIL"}
    lines = summary.table(cells)
    assert lines[-1] == "3 cells: 1 FAIL, 2 pass"
