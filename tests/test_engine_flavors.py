"""Apply, revert, re-apply on every target flavor with worker threads calling the code (issue 4).

Each step is one runner call (its own GDB); the target's workers keep calling
compute() throughout and count any value outside the expected set.
"""

import pytest

from targets import maps, memory_matches_file, nsb
from targets.engine import Running, build_flavor, patch_for

pytestmark = [pytest.mark.gdb, pytest.mark.timeout(300)]


def _assert_file_bytes(t, flavor):
    mem, want = memory_matches_file(t.pid, flavor.target, "compute")
    assert mem == want, "compute after revert: memory %s, file %s" % (mem.hex(), want.hex())


@pytest.mark.parametrize("flavor", ["pie", "nopie", "static", "shlib"])
def test_apply_revert_reapply(flavor, tmp_path):
    f = build_flavor(flavor)
    patch = patch_for(f, "plus100")
    with Running(f, tmp_path) as t:
        assert t.value() == t.expect(0)
        _assert_file_bytes(t, f)

        run = nsb("patch", "-p", t.pid, "-f", patch, "--json", "--timeout", 90)
        rc, doc = run.returncode, run.process
        assert rc == 0, doc
        assert doc["functions"][0]["name"] == "compute" and doc["functions"][0]["jump"] == "rel32", doc
        assert t.value() == t.expect(100)
        seen = t.wait_calls()["seen"]
        assert seen[100] > 0, "the workers never ran the new code: %s" % seen
        maps_applied = maps(t.pid)

        run = nsb("revert", "-p", t.pid, "-f", patch, "--json", "--timeout", 90)
        rc, doc = run.returncode, run.process
        assert rc == 0, doc
        assert t.value() == t.expect(0)
        _assert_file_bytes(t, f)
        assert t.workers_see(0)

        run = nsb("patch", "-p", t.pid, "-f", patch, "--json", "--timeout", 90)
        rc, doc = run.returncode, run.process
        assert rc == 0, doc
        assert t.value() == t.expect(100)
        assert t.workers_see(100)
        maps_reapplied = maps(t.pid)
        assert len(maps_reapplied) == len(maps_applied)
        assert set(maps_reapplied) == set(maps_applied), sorted(set(maps_reapplied) ^ set(maps_applied))

        run = nsb("revert", "-p", t.pid, "-f", patch, "--json", "--timeout", 90)
        rc, doc = run.returncode, run.process
        assert rc == 0, doc
        assert t.value() == t.expect(0)
        _assert_file_bytes(t, f)
        s = t.stats()
        assert s["unexpected"] == 0, s
        assert t.alive()


@pytest.mark.parametrize("flavor", ["pie", "static", "shlib"])
def test_patch_calling_ifuncs(flavor, tmp_path):
    """strlen and memcpy are IFUNCs in glibc (also in a static binary): the patch gets the implementations."""
    f = build_flavor(flavor)
    patch = patch_for(f, "ifunc")
    with Running(f, tmp_path) as t:
        run = nsb("patch", "-p", t.pid, "-f", patch, "--json", "--timeout", 90)
        rc, doc = run.returncode, run.process
        assert rc == 0, doc
        # + 100 * strlen("abc") after memcpy into a buffer: both calls ran correctly.
        assert t.value() == t.expect(300)
        assert t.wait_calls()["seen"][300] > 0
        run = nsb("revert", "-p", t.pid, "-f", patch, "--json", "--timeout", 90)
        rc, doc = run.returncode, run.process
        assert rc == 0, doc
        assert t.value() == t.expect(0)
        _assert_file_bytes(t, f)
        assert t.stats()["unexpected"] == 0
