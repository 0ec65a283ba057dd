"""What list and check conclude, and what refuses an apply outright, from observations built on real ELF files."""

import dataclasses

import pytest

from binder_fakes import EXE_BIAS, FakeMemory, Sim, applied_sim, build_world, fake_object, make_view
from gdb_nsb import errors
from gdb_nsb.binder.errors import IfuncNeedsResolver
from gdb_nsb.binder.plan import plan_load
from gdb_nsb.lifecycle import verdicts
from gdb_nsb.lifecycle.consistency import consistency
from gdb_nsb.lifecycle.outcome import Outcome
from gdb_nsb.process.environment import Finding
from gdb_nsb.registry import STATE_INACTIVE
from gdb_nsb.safepoint import Frame, ThreadStack

MISMATCH, BUSY, ENV = errors.MismatchError.exit_code, errors.BusyError.exit_code, errors.EnvironmentRefusal.exit_code


@pytest.fixture(scope="module")
def world():
    return build_world("plain")


def test_refusals_of_an_apply(world):
    seccomp = Finding("seccomp-filter", "2 seccomp filters", "refuse")
    verdicts.refuse_environment([Finding("tracer", "x", "info"), seccomp], allow_seccomp=True)
    with pytest.raises(errors.EnvironmentRefusal, match="^2 seccomp filters; applying could make the kernel kill"):
        verdicts.refuse_environment([Finding("mdwe", "m", "refuse"), seccomp], allow_seccomp=False)
    target, _, patches = world
    lp, img = patches["A"]
    plan = plan_load(Sim(target).view(), lp, img, Sim(target).registry)
    verdicts.refuse_unresolved_ifunc(plan)
    plan.problems.append(IfuncNeedsResolver("strlen", 0x1234))
    with pytest.raises(errors.UnsupportedError, match="IFUNC symbol strlen .*; no loaded object has a resolved slot"):
        verdicts.refuse_unresolved_ifunc(plan)


def test_pending_resolvers_one_per_resolver_and_their_stand_ins(world):
    target, _, patches = world
    lp, img = patches["A"]
    plan = plan_load(Sim(target).view(), lp, img, Sim(target).registry)
    assert verdicts.pending_resolvers(plan) == []
    plan.problems += [IfuncNeedsResolver("ceil", 0x1234), IfuncNeedsResolver("ceil", 0x1234),
                      IfuncNeedsResolver("floor", 0x5678), errors.MismatchError("other")]
    pending = verdicts.pending_resolvers(plan)
    assert [(p.symbol, p.resolver_addr) for p in pending] == [("ceil", 0x1234), ("floor", 0x5678)]
    assert verdicts.resolver_stand_ins(pending) == {0x1234: 0x1234, 0x5678: 0x5678}


def test_listing_of_two_layers(world):
    sim = applied_sim(world, "A", "B")
    a, b = (r.patch_build_id for r in sim.registry.patches)
    out = verdicts.listing(Outcome(), sim.registry, sim.view(), [], {b}, 42)
    assert out.code == 0 and out.message == "2 live patches in process 42"
    assert [p["state"] for p in out.patches] == ["active", "active"]
    assert [p["symbols"] for p in out.patches] == [True, False]
    fa, fb = out.patches[0]["functions"][0], out.patches[1]["functions"][0]
    assert (fa["layer"], fa["layers"], fa["top"]) == (1, 2, False)
    assert (fb["layer"], fb["layers"], fb["top"]) == (2, 2, True)
    assert out.functions == [dict(fa, patch=a), dict(fb, patch=b)]
    assert out.lines[0] == "%s  active  %s" % (a, sim.registry.patches[0].patch_path)
    assert out.lines[-1].endswith("layer 2 of 2 (top)") and out.lines[2].endswith("layer 1 of 2")
    assert out.lines[5] == ("    patch file not found (recorded %s, build-id %s): no symbols for its frames; set nsb "
                            "patch-dir DIR" % (sim.registry.patches[1].patch_path or "no path", b[:16]))
    assert not any("patch file not found" in line for line in out.lines[:5])


def test_listing_partial_unloaded_and_inactive(world):
    sim = applied_sim(world, "A")
    entry = sim.registry.entries()[0]
    sim.mem.write(entry, b"\xcc")
    broken = consistency(sim.registry, sim.mem, sim.view())
    out = verdicts.listing(Outcome(), sim.registry, sim.view(), broken, set(), 42)
    assert out.patches[0]["state"] == "partial" and out.code == errors.PartialStateError.exit_code
    assert out.message == "1 live patch in process 42; partial state found: " + broken[0]
    assert out.lines[-1] == "partial state: " + broken[0]
    moved = make_view([fake_object(sim.target, EXE_BIAS + 0x100000, is_main_executable=True)])
    assert verdicts.record_state(sim.registry.patches[0], moved, broken) == "target unloaded"
    rec = sim.registry.patches[0]
    rec.state = STATE_INACTIVE
    out = verdicts.listing(Outcome(), sim.registry, sim.view(), [], set(), 42)
    assert out.patches[0]["state"] == "inactive" and out.patches[0]["functions"][0]["layers"] == 0
    assert not out.lines[-1].endswith(")")  # no layer shown for an inactive patch
    empty = verdicts.no_patches(Outcome(), 42)
    assert empty.patches == [] and empty.lines == ["no live patches in process 42"]


def test_check_answered_by_the_registry(world):
    target, _, patches = world
    lp, _ = patches["A"]
    sim = applied_sim(world, "A")
    rec = sim.registry.patch(lp.new_bid)
    out = Outcome()
    assert verdicts.check_recorded(out, lp, rec, [])
    assert (out.state, out.code, out.message) == ("applied", 0, "patch %s is applied (1 function)" % lp.new_bid[:16])
    broken = ["f at 0x1 holds cc, the registry expects the jump of patch %s (e9)" % lp.new_bid[:16]]
    out = Outcome()
    assert verdicts.check_recorded(out, lp, rec, broken)
    assert out.state == "partial" and out.code == errors.PartialStateError.exit_code and out.reasons == broken
    assert out.lines == [out.message, "  " + broken[0]] and "nsb-revert repairs it" in out.message
    # Not applied: another patch's partial state is not ours, unless we have a record.
    other = ["g at 0x2 still jumps into inactive patch %s" % ("ee" * 8)]
    assert not verdicts.check_recorded(Outcome(), lp, None, other)
    inactive = dataclasses.replace(rec, state=STATE_INACTIVE)
    out = Outcome()
    assert verdicts.check_recorded(out, lp, inactive, other)
    assert out.state == "partial" and out.message.startswith("patch %s is not applied but left a partial state"
                                                             % lp.new_bid[:16])
    assert not verdicts.check_recorded(Outcome(), lp, inactive, [])


def test_environment_reasons():
    findings = [Finding("seccomp-filter", "filters", "refuse"), Finding("mdwe", "no exec", "refuse"),
                Finding("tracer", "traced", "warning"), Finding("ptrace-scope", "scope 1", "info")]
    reasons, warnings = verdicts.environment_reasons(findings, allow_seccomp=False)
    assert reasons == [("environment: filters (apply refuses without --allow-seccomp)", ENV),
                       ("environment: no exec", ENV)]
    assert warnings == ["warning: traced"]
    reasons, _ = verdicts.environment_reasons(findings, allow_seccomp=True)
    assert reasons == [("environment: filters", ENV), ("environment: no exec", ENV)]


def test_check_not_applied_picks_the_first_hard_cause(world):
    lp, _ = world[2]["A"]
    out = verdicts.check_not_applied(Outcome(), lp, [], ["warning: w"])
    assert out.code == errors.NotAppliedError.exit_code and out.state == "not applied"
    assert out.lines == ["patch %s is not applied; it could be applied now" % lp.new_bid[:16], "warning: w"]
    out = verdicts.check_not_applied(Outcome(), lp, [("busy now: t", BUSY)], [])
    assert out.code == BUSY and out.message.endswith("cannot be applied now: busy now: t")
    out = verdicts.check_not_applied(Outcome(), lp, [("busy now: t", BUSY), ("env", ENV), ("bytes", MISMATCH)],
                                     ["warning: w"])
    assert out.code == ENV and out.reasons == ["busy now: t", "env", "bytes"]
    assert out.lines[1:] == ["  - env", "  - bytes", "warning: w"]


def stacks_at(*pcs):
    return [ThreadStack(i + 1, 100 + i, None, [Frame(pc), Frame(0x401000)]) for i, pc in enumerate(pcs)]


def test_reasons_against_apply(world):
    target, f, patches = world
    lp, img = patches["A"]
    sim = Sim(target)
    entry = EXE_BIAS + f.value

    def reasons(view, registry=sim.registry, memory=sim.mem, pcs=()):
        out, plans[0] = verdicts.reasons_against_apply(view, lp, img, registry, memory, [], "refuse", False, dict,
                                                       lambda: stacks_at(*pcs), 42)
        return out

    plans = [None]  # the plan of the last call
    assert reasons(sim.view()) == [] and plans[0].jumps[0][0] == "f" and not hasattr(plans[0], "replaced")
    assert reasons(sim.view(), pcs=[entry]) == []  # at the entry nothing of the old code ran yet
    busy = reasons(sim.view(), pcs=[entry + 8])
    assert len(busy) == 1 and busy[0][1] == BUSY
    assert busy[0][0].startswith("busy now: not at a safe point: thread 1 (LWP 100) frame #0")
    gone = reasons(make_view([]))
    assert len(gone) == 1 and gone[0] == ("target not mapped: no object with build-id %s (?) in process 42"
                                          % lp.old_bid, MISMATCH) and plans[0] is None
    bytes_ = reasons(sim.view(), memory=FakeMemory(), pcs=[entry + 8])
    assert [c for _, c in bytes_] == [MISMATCH, BUSY] and "cannot read" in bytes_[0][0]
    sim.execute(plan_load(sim.view(), lp, img, sim.registry))
    again = reasons(sim.view(), registry=sim.registry)
    assert again == [("patch %s is already applied (load base %#x)" % (
        lp.new_bid, sim.registry.patch(lp.new_bid).patch_load_base), errors.AlreadyAppliedError.exit_code)]
    assert plans[0] is None  # planning refused: no plan to show
