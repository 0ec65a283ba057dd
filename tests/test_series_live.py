"""Patch series live (issue 18): dependencies both ways, atomic replace on every flavor with the
acceptance oracles (values before, during, after; entry bytes restored), no mixed call chain under
load, a pointer into code only a replaced patch had, the GDB command and gdbserver."""

import pytest

import targets as T
from gdb_nsb.elf.livepatch import build_id_of
from targets.series import FLAVORS, VALUE, Running, build_flavor, patch_for

pytestmark = [pytest.mark.gdb, pytest.mark.timeout(400)]
SECONDS = 90
CHAIN = ("gen_a", "gen_b", "gen_c")


def nsb(*args):
    return T.nsb(*(list(args) + ["--json"]), timeout=SECONDS + 60)


def patch(t, p, *extra):
    return nsb("patch", "-p", t.pid, "-f", p, "--timeout", SECONDS, *extra)


def revert(t, p, *extra):
    return nsb("revert", "-p", t.pid, "-f", p, "--timeout", SECONDS, *extra)


def listing(t):
    r = nsb("list", "-p", t.pid)
    assert r.returncode == 0, r.process
    return {p["build_id"]: p for p in r.process["patches"]}


def assert_original(t, f, names=CHAIN):
    for name in names:
        mem, want = T.memory_matches_file(t.pid, f.target, name)
        assert mem == want, "%s: memory %s, file %s" % (name, mem.hex(), want.hex())


def step(t, allowed_after, run):
    """``run()`` while the workers allow the value now and ``allowed_after`` only; then it is the value."""
    t.allow(t.value(), allowed_after)
    r = run()
    assert r.returncode == 0, (r.returncode, r.process)
    assert t.value() == allowed_after
    s = t.wait_calls()
    assert s["mixed"] == 0, s
    return r


@pytest.mark.parametrize("flavor", FLAVORS)
def test_series_dependencies_replace_and_back_to_the_original(flavor):
    f = build_flavor(flavor)
    p1, p2, p3, p4 = (patch_for(f, n) for n in ("p1", "p2", "p3", "p4"))
    b1, b2, b3, b4 = (build_id_of(p) for p in (p1, p2, p3, p4))
    with Running(f) as t:
        assert t.value() == VALUE["orig"]
        maps_before = T.maps(t.pid)
        # p2 needs p1: refused, naming it, nothing changed.
        r = patch(t, p2)
        assert r.returncode == 20 and b1[:16] in r.process["message"], r.process
        assert_original(t, f)
        assert T.maps(t.pid) == maps_before
        r = nsb("check", "-p", t.pid, "-f", p2)  # check tells the same reason
        assert r.returncode == 20 and any(b1[:16] in x for x in r.process["reasons"]), r.process

        step(t, VALUE["p1"], lambda: patch(t, p1))
        step(t, VALUE["p1p2"], lambda: patch(t, p2))
        # p1 cannot go while p2 needs it.
        r = revert(t, p1)
        assert r.returncode == 20 and b2[:16] in r.process["message"], r.process
        assert t.value() == VALUE["p1p2"]
        rel = listing(t)
        assert rel[b2]["needs"] == [b1] and rel[b2]["states"] == [{"id": 1, "version": 1}]
        old_ranges = [rel[b]["range"] for b in (b1, b2)]

        # The cumulative p3 replaces p1 and p2 in one stop: only +112 or +303, never a mix.
        r = step(t, VALUE["p3"], lambda: patch(t, p3))
        doc = r.process
        gone = [(x["build_id"], x["unmapped"]) for x in doc["replaced"]]
        assert gone == [(b1, True), (b2, True)], "\n".join(doc["lines"])
        assert any("original code restored: gen_b" in line for line in doc["lines"]), doc["lines"]
        assert_original(t, f, ["gen_b"])  # only p1 changed it
        rel = listing(t)
        assert list(rel) == [b3] and rel[b3]["replaced"] == [b1, b2] and rel[b3]["state"] == "active"
        # Both old mappings are gone (unmapped at commit).
        assert not [m for m in T.mappings(t.pid) for lo, hi in old_ranges if m.start < hi and lo < m.end]

        # The state p2 introduced lives on in p3: p4 needs it.
        step(t, VALUE["p3p4"], lambda: patch(t, p4))
        r = revert(t, p3)
        assert r.returncode == 20 and b4[:16] in r.process["message"] and "state 1" in r.process["message"]
        step(t, VALUE["p3"], lambda: revert(t, p4))
        step(t, VALUE["orig"], lambda: revert(t, p3))
        assert_original(t, f)
        # Reverting the cumulative patch leaves the original program: the replaced patches are gone.
        assert set(listing(t)) == {b3, b4} and all(p["state"] == "inactive" for p in listing(t).values())
        assert t.stats()["mixed"] == 0 and t.alive()


def test_replace_under_load_never_mixes_generations():
    f = build_flavor("pie")
    p1, p2, p3 = (patch_for(f, n) for n in ("p1", "p2", "p3"))
    with Running(f, workers=12, pause_ns=20000) as t:
        calls = t.stats()["calls"]
        for _ in range(3):
            step(t, VALUE["p1"], lambda: patch(t, p1))
            step(t, VALUE["p1p2"], lambda: patch(t, p2))
            r = step(t, VALUE["p3"], lambda: patch(t, p3))
            assert len(r.process["replaced"]) == 2
            step(t, VALUE["orig"], lambda: revert(t, p3))
        s = t.stats()
        assert s["mixed"] == 0 and s["calls"] > calls + 1000, s
        # A dry run plans the replace and writes nothing.
        step(t, VALUE["p1"], lambda: patch(t, p1))
        r = step(t, VALUE["p1"], lambda: patch(t, p3, "--dry-run"))
        assert any(line.startswith("replace %s" % build_id_of(p1)[:16]) for line in r.process["lines"]), r.process
        # p1 cannot replace p3: p3 provides a state p1 knows nothing of (the kernel's rule).
        step(t, VALUE["p3"], lambda: patch(t, p3))
        r = patch(t, p1, "--replace")
        assert r.returncode == 20 and "provides state 1 version 1" in r.process["message"], r.process
        assert t.value() == VALUE["p3"]


def test_pointer_into_code_only_a_replaced_patch_had_keeps_it_mapped():
    f = build_flavor("pie")
    p1hook, p3 = patch_for(f, "p1hook"), patch_for(f, "p3")
    bh = build_id_of(p1hook)
    with Running(f) as t:
        step(t, VALUE["p1"], lambda: patch(t, p1hook))
        assert T.wait_for(lambda: t.stats()["hooks"] > 100)
        r = step(t, VALUE["p3"], lambda: patch(t, p3))
        [old] = r.process["replaced"]
        assert old["build_id"] == bh and old["unmapped"] is False, old
        assert "the word at" in old["kept_mapped_because"], old
        rel = listing(t)
        assert rel[bh]["state"] == "inactive" and rel[bh]["replaced_by"] == build_id_of(p3)
        # The program keeps calling the old patch's helper: its memory is still there.
        hooks = t.stats()["hooks"]
        assert T.wait_for(lambda: t.stats()["hooks"] > hooks + 100) and t.alive()
        t.unhook()
        r = revert(t, p1hook, "--unmap")
        assert r.returncode == 0, r.process
        assert bh not in listing(t) and t.value() == VALUE["p3"]


def test_gdb_command_and_gdbserver_replace():
    f = build_flavor("pie")
    p1, p2, p3 = (patch_for(f, n) for n in ("p1", "p2", "p3"))
    with Running(f) as t:
        t.allow(VALUE["orig"], VALUE["p1"], VALUE["p1p2"], VALUE["p3"])
        b1, b2 = build_id_of(p1)[:16], build_id_of(p2)[:16]
        g = T.run_gdb(t.pid, ["nsb-patch %s" % p1, "nsb-patch %s" % p2, "nsb-patch --dry-run %s" % p3,
                              "nsb-patch --replace %s" % p2, "nsb-list"], timeout=SECONDS)
        out = g.stdout + g.stderr
        assert "dry run: nothing written" in out and "replace %s, %s" % (b1, b2) in out, g
        # --replace with p2 (not cumulative): its need of p1 is met by nothing once p1 goes.
        assert "needs patch %s" % b1 in out, g
        assert "    needs patch %s" % b1 in out and "    provides state 1 version 1" in out, g  # nsb-list
        assert t.value() == VALUE["p1p2"]
        t.allow(VALUE["p1p2"], VALUE["p3"])
        with T.GdbServer(["--attach", "127.0.0.1:{port}", str(t.pid)]) as gs:
            r = T.nsb("patch", "--remote", gs.address, "-f", p3, "--json", "--timeout", SECONDS,
                      timeout=SECONDS + 60)
        assert r.returncode == 0, r.process
        assert [x["build_id"][:16] for x in r.process["replaced"]] == [b1, b2]
        assert t.value() == VALUE["p3"]
        assert t.wait_calls()["mixed"] == 0
