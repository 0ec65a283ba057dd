"""Busy ranges of the safe point, from real ELF files: the target's function and every layer's copy."""

import pytest

from binder_fakes import EXE_BIAS, Sim, build_world
from gdb_nsb.binder.plan import plan_load
from gdb_nsb.lifecycle.busy import busy_for_apply, busy_for_revert, layer_ranges


@pytest.fixture(scope="module", params=["plain", "cet"])
def world(request):
    return build_world(request.param)


def test_apply_over_nothing_busies_the_function_and_names_safe_entries(world):
    target, f, patches = world
    lp, _ = patches["A"]
    busy, entries = busy_for_apply(lp, EXE_BIAS, Sim(target).registry, {})
    entry = EXE_BIAS + f.value
    assert busy == {"f": [(entry, entry + f.size)]}
    cet = target.read_vaddr(f.value, 4) == bytes.fromhex("f30f1efa")
    assert entries == {"f": {entry, entry + 4} if cet else {entry}}


def test_apply_over_a_layer_busies_its_copy(world):
    target, f, patches = world
    sim = Sim(target)
    lp_a, img_a = patches["A"]
    sim.execute(plan_load(sim.view(), lp_a, img_a, sim.registry))
    rec_a = sim.registry.patch(lp_a.new_bid)
    copy_a = next(s for s in img_a.symtab if s.name == "f")
    lo = rec_a.patch_load_base + copy_a.value
    entry = EXE_BIAS + f.value
    lp_b, _ = patches["B"]
    busy, _ = busy_for_apply(lp_b, EXE_BIAS, sim.registry, {lp_a.new_bid: img_a})
    assert busy["f"] == [(entry, entry + f.size), (lo, lo + copy_a.size)]
    # Without A's file, A's whole code is its busy copy.
    exec_a = [(r.start, r.start + r.length) for r in rec_a.ranges if r.prot & 4]
    assert exec_a and lo >= exec_a[0][0]
    busy, _ = busy_for_apply(lp_b, EXE_BIAS, sim.registry, {})
    assert busy["f"] == [(entry, entry + f.size)] + exec_a
    at = sim.registry.entries()[0]
    assert layer_ranges(sim.registry, at, {lp_a.new_bid: img_a}) == [(lo, lo + copy_a.size)]


def test_revert_busies_the_patch_code(world):
    target, _, patches = world
    sim = Sim(target)
    lp, img = patches["C"]
    sim.execute(plan_load(sim.view(), lp, img, sim.registry))
    rec = sim.registry.patch(lp.new_bid)
    busy = busy_for_revert(rec)
    assert list(busy) == ["patch " + lp.new_bid[:12]]
    code = [s for s in img.segments if s.flags & 1]
    assert len(busy["patch " + lp.new_bid[:12]]) == 1 and code
    lo, hi = busy["patch " + lp.new_bid[:12]][0]
    assert lo <= rec.patch_load_base + code[0].vaddr < hi
