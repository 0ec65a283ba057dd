"""Target instances: a record's target unloaded, reloaded with fresh code, or the process exec'd."""

import copy
import dataclasses
import os

import pytest

from binder_fakes import EXE_BIAS, FakeMemory, Sim, applied_sim, build_world, fake_object, make_view
from gdb_nsb import errors
from gdb_nsb.lifecycle.instances import (
    abort_if_exec,
    absent_target_reason,
    not_in_effect,
    settle_gone_instances,
    target_unloaded,
)
from gdb_nsb.registry import STATE_ACTIVE, STATE_INACTIVE

OTHER_BIAS = EXE_BIAS + 0x100000


@pytest.fixture(scope="module", params=["plain", "cet"])
def world(request):
    return build_world(request.param)


def rebased(sim, bias):
    """The view after the target was unloaded and loaded again at ``bias``."""
    return make_view([fake_object(sim.target, bias, is_main_executable=True)], memory=sim.mem)


def restore_original_code(sim):
    """What a dlclose + dlopen at the same address does: fresh code, no jump left."""
    for rec in sim.registry.patches:
        for f in rec.functions:
            sim.mem.write(f.entry, f.original)


def test_absent_target_reason_names_the_mismatching_object(world):
    target, _, patches = world
    lp, _ = patches["A"]
    sim = Sim(target)
    other = dataclasses.replace(sim.main, build_id="ff" * 20)
    view = make_view([other])
    by_name = dataclasses.replace(lp, target_name=os.path.basename(target.path), target_is_executable=False)
    for patch in (by_name, lp):  # by name, or (executable target) the main executable
        assert absent_target_reason(view, patch, 42) == (
            "build-id mismatch: %s is mapped with build-id %s, the patch is for %s (%s)"
            % (target.path, "ff" * 20, lp.old_bid, patch.target_name or "?"))
    lib = dataclasses.replace(lp, target_name="libnothere.so", target_is_executable=False)
    assert absent_target_reason(view, lib, 42) == ("target not mapped: no object with build-id %s (libnothere.so) "
                                                   "in process 42" % lp.old_bid)


def test_target_unloaded_by_build_id_and_load_bias(world):
    sim = applied_sim(world, "A")
    rec = sim.registry.patches[0]
    assert not target_unloaded(rec, sim.view())
    assert target_unloaded(rec, rebased(sim, OTHER_BIAS))
    assert target_unloaded(rec, make_view([]))


def test_not_in_effect_only_when_every_entry_holds_the_original(world):
    sim = applied_sim(world, "A")
    rec = sim.registry.patches[0]
    assert not not_in_effect(rec, sim.mem)
    restore_original_code(sim)
    assert not_in_effect(rec, sim.mem)
    inactive = dataclasses.replace(rec, state=STATE_INACTIVE)
    assert not not_in_effect(inactive, sim.mem)
    assert not not_in_effect(rec, FakeMemory())  # unreadable: counts as in effect, the record keeps blocking


def test_settle_jumps_gone_makes_the_record_inactive(world):
    sim = applied_sim(world, "A")
    before = copy.deepcopy(sim.registry)
    reg, lines = settle_gone_instances(sim.registry, sim.view(), sim.mem, sim.target.build_id)
    assert reg is sim.registry and lines == []  # in effect: nothing to settle
    restore_original_code(sim)
    reg, lines = settle_gone_instances(sim.registry, sim.view(), sim.mem, sim.target.build_id)
    assert sim.registry == before  # the input is not modified
    rec = reg.patches[0]
    assert rec.state == STATE_INACTIVE and rec.functions == [] and reg.entries() == []
    assert rec.target_load_bias == EXE_BIAS
    assert len(lines) == 1 and "its jumps are gone" in lines[0] and rec.patch_build_id[:16] in lines[0]
    # Another target's records are not this apply's business.
    reg, lines = settle_gone_instances(sim.registry, sim.view(), sim.mem, "00" * 20)
    assert reg is sim.registry and lines == []


def test_settle_unloaded_target_rebinds_inactive_records(world):
    sim = applied_sim(world, "A", "B")
    a, b = (sim.registry.patches[i].patch_build_id for i in (0, 1))
    sim.registry.patch(b).state = STATE_INACTIVE  # B reverted earlier, kept mapped
    sim.registry.patch(b).functions = []
    view = rebased(sim, OTHER_BIAS)
    reg, lines = settle_gone_instances(sim.registry, view, sim.mem, sim.target.build_id)
    assert [r.state for r in reg.patches] == [STATE_INACTIVE, STATE_INACTIVE]
    assert [r.target_load_bias for r in reg.patches] == [OTHER_BIAS, OTHER_BIAS]
    assert sim.registry.patch(a).state == STATE_ACTIVE and sim.registry.patch(b).target_load_bias == EXE_BIAS
    assert len(lines) == 2 and all("(unloaded)" in line for line in lines)
    # Unloaded for good: the record is made inactive, its bias left as recorded.
    reg, lines = settle_gone_instances(sim.registry, make_view([]), sim.mem, sim.target.build_id)
    assert reg.patch(a).state == STATE_INACTIVE and reg.patch(a).target_load_bias == EXE_BIAS


def test_abort_if_exec_compares_the_main_executable(world):
    sim = Sim(world[0])
    abort_if_exec(sim.view(), sim.view(), 7)
    for after, names in ((rebased(sim, OTHER_BIAS), (sim.target.path, sim.target.path)),
                         (make_view([]), (sim.target.path, "?"))):
        with pytest.raises(errors.TargetExecError) as e:
            abort_if_exec(sim.view(), after, 7)
        assert str(e.value).startswith("process 7 executed a new program") and "(%s -> %s)" % names in str(e.value)
    with pytest.raises(errors.TargetExecError, match=r"\(\? -> "):
        abort_if_exec(make_view([]), sim.view(), 7)
