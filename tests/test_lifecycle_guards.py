"""The write guards: a plan computed from real ELF files passes; every tampered write is refused."""

import dataclasses

import pytest

from binder_fakes import EXE_BIAS, Sim, build_world, make_view
from gdb_nsb import errors
from gdb_nsb.binder.plan import Write, plan_load, plan_revert
from gdb_nsb.lifecycle.guards import guard_apply_writes, guard_revert_writes


@pytest.fixture(scope="module", params=["plain", "cet"])
def world(request):
    return build_world(request.param)


def fresh_plan(world, key="A"):
    target, _, patches = world
    sim = Sim(target)
    lp, img = patches[key]
    return sim, plan_load(sim.view(), lp, img, sim.registry)


def test_segment_writes_stay_inside_the_patch_mapping(world):
    sim, plan = fresh_plan(world)
    guard_apply_writes(plan, sim.view())
    end = plan.placement.end
    for addr, size in ((end, 8), (end - 4, 8), (plan.placement.start - 1, 2)):
        bad = dataclasses.replace(plan, segment_writes=plan.segment_writes + [Write(addr, bytes(size), None, "evil")])
        with pytest.raises(errors.MismatchError, match="outside the patch mapping"):
            guard_apply_writes(bad, sim.view())


def test_jump_destination_must_be_patch_code(world):
    sim, plan = fresh_plan(world)
    name, j = plan.jumps[0]
    rec = plan.registry_after.patch(plan.patch_build_id)
    data_only = [r for r in rec.ranges if not r.prot & 4]
    for dest in [EXE_BIAS] + [r.start for r in data_only]:
        bad = dataclasses.replace(plan, jumps=[(name, dataclasses.replace(j, dest=dest))])
        with pytest.raises(errors.PatchFileError, match="outside the patch's executable segments"):
            guard_apply_writes(bad, sim.view())


def test_jump_writes_only_over_recorded_entries_in_target_code(world):
    sim, plan = fresh_plan(world)
    w = plan.jump_writes[0]
    for moved in (Write(w.addr + 1, w.data, w.expected, w.what), Write(w.addr - 1, w.data, w.expected, w.what)):
        with pytest.raises(errors.MismatchError, match="not the recorded jump bytes"):
            guard_apply_writes(dataclasses.replace(plan, jump_writes=[moved]), sim.view())
    # The right bytes, but the target's code is not mapped executable: refused too.
    no_code = sim.view()
    no_code.objects[0] = dataclasses.replace(no_code.objects[0], ranges=[
        dataclasses.replace(m, perms="r--p") for m in no_code.objects[0].ranges])
    with pytest.raises(errors.MismatchError, match="target's code"):
        guard_apply_writes(plan, no_code)


def test_revert_restores_only_recorded_jump_bytes(world):
    target, _, patches = world
    sim, plan = fresh_plan(world)
    sim.execute(plan)
    bid = plan.patch_build_id
    rec = sim.registry.patch(bid)
    rp = plan_revert(sim.registry, bid)
    assert rp.writes
    guard_revert_writes(rp, rec, sim.view())
    guard_revert_writes(rp, rec, make_view([]))  # target gone: the recorded jump bytes alone bound the writes
    w = rp.writes[0]
    for view in (sim.view(), make_view([])):
        bad = dataclasses.replace(rp, writes=[Write(w.addr + len(w.data), w.data, w.expected, w.what)])
        with pytest.raises(errors.MismatchError, match="not the recorded jump bytes"):
            guard_revert_writes(bad, rec, view)
