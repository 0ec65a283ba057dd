"""What apply and revert report, for a human and for --json."""

import os

import pytest

from binder_fakes import EXE_BIAS, Sim, build_world, make_view
from gdb_nsb import errors
from gdb_nsb.binder.plan import plan_load, plan_revert
from gdb_nsb.lifecycle import outcome
from gdb_nsb.lifecycle.outcome import Outcome


@pytest.fixture(scope="module")
def world():
    return build_world("plain")


def test_apply_reports(world):
    target, f, patches = world
    lp, img = patches["A"]
    sim = Sim(target)
    plan = plan_load(sim.view(), lp, img, sim.registry)
    dry = outcome.apply_dry_run(Outcome(), plan, [])
    assert dry.code == 0 and dry.message == "dry run: patch %s could be applied now" % lp.new_bid
    assert dry.lines == ["dry run: nothing written"] + plan.describe()
    dry = outcome.apply_dry_run(Outcome(), plan, ["bytes differ", "busy"])
    assert dry.code == errors.MismatchError.exit_code and dry.reasons == ["bytes differ", "busy"]
    assert dry.message.endswith("cannot be applied now: bytes differ") and dry.lines[-1] == "cannot apply now: busy"
    sim.execute(plan)
    done = outcome.applied(Outcome(), plan, ["settled one"])
    name, j = plan.jumps[0]
    assert done.functions == [{"name": "f", "entry": EXE_BIAS + f.value, "jump": j.kind, "destination": j.dest,
                               "layer": 1}]
    assert done.message == "patch %s applied to %s: 1 function redirected (load base %#x)" % (
        lp.new_bid[:16], os.path.basename(target.path), plan.placement.bias)
    assert done.lines == ["settled one", done.message]
    d = done.as_dict()
    assert d["result"] == "ok" and "reasons" not in d and "state" not in d and "patches" not in d


def test_revert_reports(world):
    target, f, patches = world
    lp, img = patches["A"]
    sim = Sim(target)
    sim.execute(plan_load(sim.view(), lp, img, sim.registry))
    rec = sim.registry.patch(lp.new_bid)
    plan = plan_revert(sim.registry, lp.new_bid)
    dry = outcome.revert_dry_run(Outcome(), plan, ["bytes differ"])
    assert dry.code == errors.PartialStateError.exit_code
    assert dry.message == "dry run: patch %s cannot be reverted now: bytes differ" % lp.new_bid
    assert outcome.revert_dry_run(Outcome(), plan, []).message.endswith("could be reverted now")
    bid = lp.new_bid[:16]
    out = outcome.reverted(Outcome(), rec, plan, was_active=True, unloaded=False)
    assert out.message == "patch %s reverted: 1 function restored (memory kept, inactive)" % bid
    assert out.functions == [{"name": "f", "entry": EXE_BIAS + f.value}] and out.lines == [out.message]
    unmapped = plan_revert(sim.registry, lp.new_bid, unmap=True)
    assert outcome.reverted(Outcome(), rec, unmapped, True, False).message.endswith(", memory unmapped")
    assert outcome.reverted(Outcome(), rec, unmapped, False, False).message == (
        "patch %s was reverted earlier: its memory is unmapped now" % bid)
    gone = outcome.reverted(Outcome(), rec, plan, True, True).message
    assert gone.startswith("patch %s: its target %s (build-id %s) is unloaded" % (bid, rec.target_name,
                                                                                 rec.target_build_id[:16]))
    assert gone.endswith("record kept inactive (memory kept)")
    assert outcome.reverted(Outcome(), rec, unmapped, True, True).message.endswith("record and memory removed")
    assert outcome.record_dict(rec) == {"build_id": lp.new_bid, "path": rec.patch_path,
                                        "target_build_id": rec.target_build_id, "target_name": rec.target_name}


def test_failure_and_target_fields(world):
    target, _, patches = world
    lp, _ = patches["A"]
    out = Outcome(patch=outcome.patch_dict(lp, "/p.so")).fail(errors.RegistryCorrupt("bad crc"))
    assert (out.code, out.message, out.lines) == (errors.RegistryCorrupt.exit_code, "bad crc", ["bad crc"])
    d = out.as_dict()
    assert d["result"] == "error" and d["patch"] == {"path": "/p.so", "build_id": lp.new_bid,
                                                     "target_build_id": lp.old_bid, "target_name": ""}
    assert outcome.target_dict(Sim(target).view(), lp.old_bid) == {
        "build_id": lp.old_bid, "mapped": True, "path": target.path, "load_bias": EXE_BIAS}
    assert outcome.target_dict(make_view([]), lp.old_bid) == {"build_id": lp.old_bid, "mapped": False}
    listed = Outcome(patches=[], state="applied", reasons=["r"]).as_dict()
    assert listed["patches"] == [] and listed["state"] == "applied" and listed["reasons"] == ["r"]
