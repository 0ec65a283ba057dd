"""The patch mapping's life: pending record, protections or memory restored on re-apply, --unmap when inactive."""

import pytest

from binder_fakes import Sim, build_world
from gdb_nsb.binder.plan import plan_load, plan_revert
from gdb_nsb.errors import MismatchError
from gdb_nsb.lifecycle.mapping import mapping_to_restore, pending_registry, plan_unmap_inactive, protections_to_restore
from gdb_nsb.mappings import Mapping
from gdb_nsb.registry import STATE_ACTIVE, STATE_INACTIVE, MappedRange, Registry


@pytest.fixture(scope="module")
def world():
    return build_world("plain")


def test_pending_registry_records_the_mapping_without_jumps(world):
    target, _, patches = world
    lp, img = patches["A"]
    plan = plan_load(Sim(target).view(), lp, img, Registry())
    pending = pending_registry(plan)
    rec = pending.patch(lp.new_bid)
    assert rec.state == STATE_INACTIVE and rec.functions == [] and pending.entries() == []
    assert rec.ranges == plan.registry_after.patch(lp.new_bid).ranges and rec.ranges
    assert plan.registry_after.patch(lp.new_bid).state == STATE_ACTIVE  # the plan keeps its own


R, RX = 1, 5


def test_protections_to_restore():
    code, data = MappedRange(0x10000, 0x2000, RX), MappedRange(0x12000, 0x1000, R)
    ok = [Mapping(0x10000, 0x12000, 0, "r-xp", ""), Mapping(0x12000, 0x13000, 0, "r--p", "")]
    assert protections_to_restore([code, data], ok) == []
    # One map entry may cover both ranges' pages only if it has each one's permissions.
    assert protections_to_restore([code, data], [Mapping(0x10000, 0x13000, 0, "r-xp", "")]) == [(0x12000, 0x1000, R)]
    # An apply killed before its mprotects left PROT_NONE pages.
    none = [Mapping(0x10000, 0x13000, 0, "---p", "")]
    assert protections_to_restore([code, data], none) == [(0x10000, 0x2000, RX), (0x12000, 0x1000, R)]
    # Partly unmapped (mprotect would fail with ENOMEM), or permissions unknown (old GDB): set again.
    assert protections_to_restore([code], [Mapping(0x10000, 0x11000, 0, "r-xp", "")]) == [(0x10000, 0x2000, RX)]
    assert protections_to_restore([code], [Mapping(0x10000, 0x12000, 0, None, "")]) == [(0x10000, 0x2000, RX)]
    # Split into two map entries with the right permissions: nothing to do.
    split = [Mapping(0x10000, 0x11000, 0, "r-xp", ""), Mapping(0x11000, 0x12000, 0, "r-xp", "/memfd:x")]
    assert protections_to_restore([code], split) == []


def test_unmap_of_an_inactive_patch_removes_record_and_mapping(world):
    target, _, patches = world
    sim = Sim(target)
    lp, img = patches["A"]
    sim.execute(plan_load(sim.view(), lp, img, sim.registry))
    sim.execute(plan_revert(sim.registry, lp.new_bid))
    rec = sim.registry.patch(lp.new_bid)
    assert rec.state == STATE_INACTIVE
    plan = plan_unmap_inactive(sim.registry, rec)
    assert plan.writes == [] and plan.problems == [] and plan.patch_build_id == lp.new_bid
    assert plan.registry_after.patch(lp.new_bid) is None and sim.registry.patch(lp.new_bid) is rec
    lo = min(r.start for r in rec.ranges)
    hi = max(r.start + r.length for r in rec.ranges)
    assert plan.unmap == (lo, hi - lo)
    rec.ranges = []
    assert plan_unmap_inactive(sim.registry, rec).unmap is None


def test_reapply_maps_afresh_memory_the_program_unmapped(world):
    target, _, patches = world
    sim = Sim(target)
    lp, img = patches["A"]
    sim.execute(plan_load(sim.view(), lp, img, sim.registry))
    sim.execute(plan_revert(sim.registry, lp.new_bid))
    again = plan_load(sim.view(), lp, img, sim.registry)
    assert again.mapping is None
    assert mapping_to_restore(again, sim.view().mappings) is None  # still wholly mapped: reused as it is
    lo, hi = again.placement.start, again.placement.end
    fresh = mapping_to_restore(again, [])
    rec = again.registry_after.patch(lp.new_bid)
    assert (fresh.start, fresh.end) == (lo, hi)
    assert fresh.protections == [(r.start, r.length, r.prot) for r in rec.ranges]
    part = [Mapping(lo, lo + 0x1000, 0, "r--p", "")]
    with pytest.raises(MismatchError, match="only partly mapped .*revert it with --unmap, then apply again"):
        mapping_to_restore(again, part)
