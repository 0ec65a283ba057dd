"""Terminal summary of the acceptance matrix: scenario x flavor -> outcome.

Hooked into pytest from tests/conftest.py.  Cells are recognised by their
test ids in tests/test_matrix.py: ``NAME-FLAVOR-OPT-tN`` (positive) and
``neg-KIND-FLAVOR-tN`` (negative).  A row is one scenario at one
optimisation level and worker count; a column is one target flavor."""

import re

FLAVORS = ("pie", "nopie", "static", "shlib", "dlopen")
_ID = re.compile(r"test_matrix\.py::test_(positive|positive_ipa_ra|negative)\[(.+)\]$")
# Auto-mode cells (issue 9) live in tests/test_auto_live.py: test_auto_patch_live[SCENARIO-FLAVOR].
_AUTO_ID = re.compile(r"test_auto_live\.py::test_auto_patch_live\[(.+)\]$")
_SHOW = {"passed": "pass", "failed": "FAIL", "error": "ERROR", "skipped": "skip", "xfailed": "xfail",
         "xpassed": "XPASS"}
_RANK = {"pass": 0, "skip": 1, "xfail": 2, "XPASS": 3, "FAIL": 4, "ERROR": 5}


def _cell(kind, ident):
    parts = ident.split("-")
    if kind == "negative":
        _neg, name, flavor, threads = parts
        return "neg:" + name, flavor
    name, flavor, opt, threads = parts
    row = name
    if opt != "O2ic" or threads != "t4":
        row += " [%s %s]" % (opt, threads)
    return row, flavor


def collect(stats):
    """{(row, flavor): outcome} from a terminal reporter's stats."""
    cells = {}
    for key, shown in _SHOW.items():
        for rep in stats.get(key, []):
            nodeid = getattr(rep, "nodeid", "") or ""
            m = _ID.search(nodeid)
            auto = _AUTO_ID.search(nodeid)
            if not m and not auto:
                continue
            if key == "passed" and getattr(rep, "when", "call") != "call":
                continue
            if auto:
                scenario, flavor = auto.group(1).rsplit("-", 1)
                at = ("auto:" + scenario, flavor)
            else:
                at = _cell(m.group(1), m.group(2))
            old = cells.get(at)
            if old is None or _RANK[shown] > _RANK[old]:
                cells[at] = shown
    return cells


def table(cells):
    rows = sorted({r for r, _ in cells}, key=lambda r: (r.startswith("neg:"), r))
    width = max(len(r) for r in rows) + 2
    lines = ["".ljust(width) + "".join(f.ljust(8) for f in FLAVORS)]
    for r in rows:
        lines.append(r.ljust(width) + "".join(cells.get((r, f), "-").ljust(8) for f in FLAVORS))
    counts = {}
    for v in cells.values():
        counts[v] = counts.get(v, 0) + 1
    lines.append("%d cells: %s" % (len(cells), ", ".join("%d %s" % (n, k) for k, n in sorted(counts.items()))))
    return lines


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    cells = collect(terminalreporter.stats)
    if not cells:
        return
    terminalreporter.section("acceptance matrix: scenario x flavor")
    for line in table(cells):
        terminalreporter.write_line(line)
