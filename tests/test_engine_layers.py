"""Stacked patches reverted in both orders; applied twice; revert of a patch not applied; --dry-run (issue 4).

Each step is one runner call (its own GDB).  compute() tells which layer is on
top: base + 1 (original), + 100 (plus100), + 200 (plus200).
"""

import pytest

from targets import maps, memory_matches_file, nsb
from targets.engine import Running, build_flavor, patch_for

pytestmark = [pytest.mark.gdb, pytest.mark.timeout(300)]


def _apply(t, patch, delta):
    run = nsb("patch", "-p", t.pid, "-f", patch, "--json", "--timeout", 90)
    rc, doc = run.returncode, run.process
    assert rc == 0, doc
    assert t.value() == t.expect(delta)
    return doc


def _revert(t, patch, delta):
    run = nsb("revert", "-p", t.pid, "-f", patch, "--json", "--timeout", 90)
    rc, doc = run.returncode, run.process
    assert rc == 0, doc
    assert t.value() == t.expect(delta), "after reverting %s" % patch
    return doc


@pytest.mark.parametrize("flavor", ["pie", "shlib"])
def test_stacked_layers_reverted_in_both_orders(flavor, tmp_path):
    f = build_flavor(flavor)
    a, b = patch_for(f, "plus100"), patch_for(f, "plus200")
    with Running(f, tmp_path) as t:
        # Bottom first: B stays on top, then the original comes back.
        _apply(t, a, 100)
        doc = _apply(t, b, 200)
        assert doc["functions"][0]["layer"] == 2, doc
        run = nsb("list", "-p", t.pid, "--json", "--timeout", 90)
        rc, listing = run.returncode, run.process
        assert rc == 0, listing
        layers = {p["build_id"]: p["functions"][0]["layer"] for p in listing["patches"]}
        assert sorted(layers.values()) == [1, 2], listing
        _revert(t, a, 200)
        t.wait_calls()
        _revert(t, b, 0)
        mem, want = memory_matches_file(t.pid, f.target, "compute")
        assert mem == want
        # Top first: A comes back, then the original.
        _apply(t, a, 100)
        _apply(t, b, 200)
        _revert(t, b, 100)
        t.wait_calls()
        _revert(t, a, 0)
        mem, want = memory_matches_file(t.pid, f.target, "compute")
        assert mem == want
        s = t.stats()
        assert s["unexpected"] == 0, s
        assert s["seen"][100] > 0 and s["seen"][200] > 0, s


def test_applied_twice_not_applied_and_dry_run(tmp_path):
    f = build_flavor("pie")
    a, b = patch_for(f, "plus100"), patch_for(f, "plus200")
    with Running(f, tmp_path) as t:
        # Revert before anything was applied: code 2, nothing touched.
        run = nsb("revert", "-p", t.pid, "-f", a, "--json", "--timeout", 90)
        rc, doc = run.returncode, run.process
        assert rc == 2, doc
        assert "not applied" in doc["message"] or "no live patch" in doc["message"], doc

        # Dry run of an apply: the plan is printed, no byte and no mapping changes.
        maps0 = maps(t.pid)
        mem0, want = memory_matches_file(t.pid, f.target, "compute")
        run = nsb("patch", "-p", t.pid, "-f", a, "--dry-run", "--json", "--timeout", 90)
        rc, doc = run.returncode, run.process
        assert rc == 0, doc
        assert doc["lines"][0].startswith("dry run"), doc
        assert any("compute" in line for line in doc["lines"][1:]), doc["lines"]
        assert maps(t.pid) == maps0
        assert memory_matches_file(t.pid, f.target, "compute") == (mem0, want) and mem0 == want
        assert t.value() == t.expect(0)

        _apply(t, a, 100)
        # The same patch again: "already applied", code 5, nothing changed.
        maps1 = maps(t.pid)
        mem1, _ = memory_matches_file(t.pid, f.target, "compute")
        run = nsb("patch", "-p", t.pid, "-f", a, "--json", "--timeout", 90)
        rc, doc = run.returncode, run.process
        assert rc == 5, doc
        assert "already applied" in doc["message"], doc
        assert maps(t.pid) == maps1
        assert memory_matches_file(t.pid, f.target, "compute")[0] == mem1
        assert t.value() == t.expect(100)

        # A patch that was never applied, while another one is: code 2.
        run = nsb("revert", "-p", t.pid, "-f", b, "--json", "--timeout", 90)
        rc, doc = run.returncode, run.process
        assert rc == 2, doc
        assert t.value() == t.expect(100)

        # Dry run of a revert: plan printed, nothing written; dry run of a stacked apply too.
        run = nsb("revert", "-p", t.pid, "-f", a, "--dry-run", "--json", "--timeout", 90)
        rc, doc = run.returncode, run.process
        assert rc == 0, doc
        assert doc["lines"][0].startswith("dry run") and len(doc["lines"]) > 1, doc
        run = nsb("patch", "-p", t.pid, "-f", b, "--dry-run", "--json", "--timeout", 90)
        rc, doc = run.returncode, run.process
        assert rc == 0, doc
        assert maps(t.pid) == maps1
        assert memory_matches_file(t.pid, f.target, "compute")[0] == mem1
        assert t.value() == t.expect(100)

        _revert(t, a, 0)
        # Reverted means not applied: a second revert is code 2.
        run = nsb("revert", "-p", t.pid, "-f", a, "--json", "--timeout", 90)
        rc, doc = run.returncode, run.process
        assert rc == 2, doc
        assert t.stats()["unexpected"] == 0


def test_unmap_now_or_after_an_earlier_revert(tmp_path):
    f = build_flavor("pie")
    patch = patch_for(f, "plus100")
    with Running(f, tmp_path) as t:
        maps0 = maps(t.pid)
        _apply(t, patch, 100)
        with_patch = len(maps(t.pid))
        run = nsb("revert", "-p", t.pid, "-f", patch, "--unmap", "--json", "--timeout", 90)
        rc, doc = run.returncode, run.process
        assert rc == 0 and "unmapped" in doc["message"], doc
        assert t.value() == t.expect(0)
        # Only the registry is left of it (one mapping more than before the first apply).
        assert len(maps(t.pid)) == len(maps0) + 1
        run = nsb("list", "-p", t.pid, "--json", "--timeout", 90)
        rc, doc = run.returncode, run.process
        assert rc == 0 and doc["patches"] == [], doc
        # Reverted without --unmap (memory kept), then unmapped by a later call.
        _apply(t, patch, 100)
        assert len(maps(t.pid)) == with_patch
        _revert(t, patch, 0)
        assert len(maps(t.pid)) == with_patch
        run = nsb("revert", "-p", t.pid, "-f", patch, "--unmap", "--json", "--timeout", 90)
        rc, doc = run.returncode, run.process
        assert rc == 0 and "unmapped" in doc["message"], doc
        assert len(maps(t.pid)) == len(maps0) + 1
        run = nsb("revert", "-p", t.pid, "-f", patch, "--unmap", "--json", "--timeout", 90)
        rc, doc = run.returncode, run.process
        assert rc == 2, doc
        mem, want = memory_matches_file(t.pid, f.target, "compute")
        assert mem == want
        assert t.value() == t.expect(0) and t.stats()["unexpected"] == 0
