"""Patch series, pure: the replace plan against a simulated process, its busy ranges, the choice of
stacked or replace that apply and check share (lifecycle/apply_kind.py), and the dependency rules
(lifecycle/series.py) on registries."""

import dataclasses

import pytest

import targets as T
from binder_fakes import EXE_BIAS, Sim, applied_sim, build_world, load
from gdb_nsb.binder.jumps import decode_jump
from gdb_nsb.binder.plan import evaluate, plan_load
from gdb_nsb.binder.replace import plan_replace
from gdb_nsb.elf.livepatch import FuncJump, LivePatch, State
from gdb_nsb.errors import DependencyError
from gdb_nsb.lifecycle import apply_kind, outcome, series, verdicts
from gdb_nsb.lifecycle.busy import _without, busy_for_apply, busy_for_replace, busy_for_revert, copy_range
from gdb_nsb.registry import STATE_ACTIVE, STATE_INACTIVE, PatchRecord, Registry
from gdb_nsb.safepoint import Frame, SafePointCheck, ThreadStack


@pytest.fixture(scope="module", params=["plain", "cet"])
def world(request):
    target, f, patches = build_world(request.param)
    # D replaces f and nop: after a replace by C (f only), nop must get its original code back.
    nop = next(s for s in target.symtab if s.name == "nop")
    img = load(T.build_patch([("pD.c", "int f(int x) { return x + 7; }\nvoid nop(void) { }\n")], "pD.so"))
    sym = {s.name: s for s in img.dynsyms}
    lp = LivePatch(old_bid=target.build_id, new_bid=img.build_id, target_is_executable=True,
                   func_jumps=[FuncJump(n, s.value, s.size, sym[n].value, s.shndx,
                                        entry_bytes=target.read_vaddr(s.value, min(24, s.size)))
                               for n, s in (("f", f), ("nop", nop))])
    patches["D"] = (lp, img)
    return target, f, patches


def test_replace_switches_every_entry_in_one_write_and_restores_what_only_old_patches_changed(world):
    target, f, patches = world
    sim = applied_sim(world, "D", "A")
    nop = next(s for s in target.symtab if s.name == "nop")
    lp_c, img_c = patches["C"]
    plan = plan_replace(sim.view(), lp_c, img_c, sim.registry)
    assert [r.patch_build_id for r in plan.replaced] == [patches["D"][0].new_bid, patches["A"][0].new_bid]
    assert plan.restored == ["nop"]
    # One write per entry, each expecting what is there now (A's jump over f, D's over nop).
    by_what = {w.what: w for w in plan.jump_writes}
    assert sorted(by_what) == ["jump over f", "restore nop"]
    assert evaluate(plan, sim.mem) == []
    assert "replace %s, %s" % (patches["D"][0].new_bid[:16], patches["A"][0].new_bid[:16]) in "\n".join(
        plan.describe())
    sim.execute(plan)
    # f jumps into C; nop is the file's code again; only C is recorded, standing for D and A.
    rec = sim.registry.patch(lp_c.new_bid)
    fe = rec.functions[0]
    j = decode_jump(fe.entry, sim.mem.read(fe.entry, 14))
    assert j is not None and j.dest == rec.patch_load_base + lp_c.func_jumps[0].patch_value
    assert sim.mem.read(EXE_BIAS + nop.value, nop.size) == target.read_vaddr(nop.value, nop.size)
    assert [p.patch_build_id for p in sim.registry.patches] == [lp_c.new_bid]
    assert rec.replaced == [patches["D"][0].new_bid, patches["A"][0].new_bid]
    assert [b for b, _ in sim.registry.stack(rec.functions[0].entry)] == [lp_c.new_bid]
    assert set(plan.retire) == {patches["D"][0].new_bid, patches["A"][0].new_bid}


def test_keep_mapped_leaves_an_inactive_record_without_layers(world):
    sim = applied_sim(world, "D", "A")
    lp_c, img_c = world[2]["C"]
    plan = plan_replace(sim.view(), lp_c, img_c, sim.registry)
    d = world[2]["D"][0].new_bid
    plan.keep_mapped(d, "the word at 0x1000")
    sim.execute(plan)
    rec = sim.registry.patch(d)
    assert rec.state == STATE_INACTIVE and rec.functions == [] and plan.kept == {d: "the word at 0x1000"}
    assert d not in plan.retire
    # Re-applying D later (after C's revert) reuses the kept mapping.
    from gdb_nsb.binder.plan import plan_revert
    sim.execute(plan_revert(sim.registry, lp_c.new_bid))
    assert plan_load(sim.view(), *world[2]["D"], sim.registry).mapping is None


def test_replace_with_nothing_applied_is_an_apply(world):
    target, f, patches = world
    sim = Sim(target)
    plan = plan_replace(sim.view(), *patches["B"], sim.registry)
    assert plan.replaced == [] and plan.retire == {} and [w.what for w in plan.jump_writes] == ["jump over f"]
    sim.execute(plan)
    assert sim.registry.patch(patches["B"][0].new_bid).state == STATE_ACTIVE


def test_busy_for_replace_covers_old_and_new_code(world):
    sim = applied_sim(world, "D", "A")
    lp_c, _ = world[2]["C"]
    old = list(sim.registry.patches)
    busy, entries = busy_for_replace(lp_c, EXE_BIAS, sim.registry, {}, old)
    apply_busy, _ = busy_for_apply(lp_c, EXE_BIAS, sim.registry, {})
    for name, ranges in apply_busy.items():
        assert busy[name][:len(ranges)] == ranges
    for rec in old:
        for name, ranges in busy_for_revert(rec).items():
            assert set(ranges) <= set(busy[name]) and entries[name] == set()


def test_busy_for_replace_names_the_replaced_copies_by_function(world):
    sim = applied_sim(world, "D", "A")
    lp_c, _ = world[2]["C"]
    d_lp, d_img = world[2]["D"]
    d = sim.registry.patch(d_lp.new_bid)
    nop = copy_range(d, next(x for x in d.functions if x.name == "nop"), d_img)
    busy, entries = busy_for_replace(lp_c, EXE_BIAS, sim.registry, {d_lp.new_bid: d_img}, list(sim.registry.patches))
    named = "nop of patch %s" % d_lp.new_bid[:12]
    assert busy[named] == [nop] and entries[named] == set()
    # The rest of D's executable memory stays busy, under the patch's name, without the copies.
    rest = busy["patch %s" % d_lp.new_bid[:12]]
    assert rest and not [r for r in rest if r[0] < nop[1] and nop[0] < r[1]]
    assert SafePointCheck(busy, entries).function_at(nop[0] + 1) == named
    assert _without([(0, 100)], [(10, 20), (50, 60)]) == [(0, 10), (20, 50), (60, 100)]
    assert _without([(0, 100)], [(0, 10), (90, 120)]) == [(10, 90)] and _without([(5, 8)], [(0, 10)]) == []


def test_check_and_apply_judge_the_same_plan_stacked_or_replace(world):
    """A thread parked in D's copy of nop (a function only D changed): stacking C over D and A does not
    touch nop, a replace (--replace, or C cumulative) takes D out and must wait for that thread."""
    target, f, patches = world
    sim = applied_sim(world, "D", "A")
    lp_c, img_c = patches["C"]
    d_lp, d_img = patches["D"]
    d = sim.registry.patch(d_lp.new_bid)
    nop = copy_range(d, next(x for x in d.functions if x.name == "nop"), d_img)
    cumulative = dataclasses.replace(lp_c, cumulative=True)
    assert not apply_kind.replaces(lp_c, False)
    assert apply_kind.replaces(lp_c, True) and apply_kind.replaces(cumulative, False)
    stacks = [ThreadStack(1, 100, None, [Frame(nop[0] + 1), Frame(EXE_BIAS + f.value - 1)])]

    def judge(lp, replace_option):
        return verdicts.reasons_against_apply(sim.view(), lp, img_c, sim.registry, sim.mem, [], "refuse",
                                              replace_option, lambda: {d_lp.new_bid: d_img}, lambda: stacks, 42)

    reasons, plan = judge(lp_c, False)
    assert reasons == [] and outcome.plan_dict(plan) == {"kind": "stack", "functions": ["f"], "replaces": [],
                                                         "restores": []}
    assert outcome.plan_lines(plan) == []
    for lp, option in ((lp_c, True), (cumulative, False)):
        reasons, plan = judge(lp, option)
        assert [c for _, c in reasons] == [3], reasons
        assert "inside nop of patch %s" % d_lp.new_bid[:12] in reasons[0][0]
        assert outcome.plan_dict(plan) == {"kind": "replace", "functions": ["f"],
                                           "replaces": [d_lp.new_bid, patches["A"][0].new_bid], "restores": ["nop"]}
        assert outcome.plan_lines(plan)[0] == "an apply replaces patches %s, %s in the same stop" % (
            d_lp.new_bid[:16], patches["A"][0].new_bid[:16])
        # The very plan (and busy ranges) the apply makes.
        same = apply_kind.plan(sim.view(), lp, img_c, sim.registry, [], "refuse", option)
        assert [w.addr for w in same.writes] == [w.addr for w in plan.writes] and evaluate(same, sim.mem) == []
        assert apply_kind.busy(same, lp, sim.registry, {d_lp.new_bid: d_img})[0]["nop of patch %s"
                                                                                 % d_lp.new_bid[:12]] == [nop]
    # The series rules as the apply applies them: a need of D is met while D stays, not once it leaves.
    needs_d = dataclasses.replace(lp_c, needs_patches=[d_lp.new_bid])
    stacks[:] = []
    assert judge(needs_d, False) == ([], judge(needs_d, False)[1])
    reasons, plan = judge(needs_d, True)
    assert [c for _, c in reasons] == [20] and "needs patch %s" % d_lp.new_bid[:16] in reasons[0][0]
    with pytest.raises(DependencyError) as e:
        apply_kind.refuse_series(needs_d, sim.registry, plan)
    assert str(e.value) == reasons[0][0]


# ---------------------------------------------------------------- dependencies and states

T_BID, A, B, C, Q = "11" * 20, "aa" * 20, "bb" * 20, "cc" * 20, "dd" * 20


def rec(bid, needs=(), needs_states=(), states=(), replaced=(), target=T_BID, state=STATE_ACTIVE):
    r = PatchRecord(bid, target, "t", 0x1000, 0x7f0000000000, [], "/p/%s.so" % bid[:4], state)
    r.needs, r.needs_states, r.states, r.replaced = list(needs), list(needs_states), list(states), list(replaced)
    return r


def lp(bid, needs=(), needs_states=(), provides=()):
    return LivePatch(T_BID, bid, needs_patches=list(needs), needs_states=[State(*s) for s in needs_states],
                     provides_states=[State(*s) for s in provides])


def test_apply_refuses_a_missing_patch_or_state_naming_it():
    reg = Registry([rec(A, states=[(7, 1)])])
    series.refuse_apply(lp(B, needs=[A], needs_states=[(7, 1)]), reg)
    with pytest.raises(DependencyError) as e:
        series.refuse_apply(lp(B, needs=[C]), reg)
    assert e.value.exit_code == 20 and "needs patch %s" % C[:16] in str(e.value)
    with pytest.raises(DependencyError, match="state 7 version 2 \\(version 1 is applied\\)"):
        series.refuse_apply(lp(B, needs_states=[(7, 2)]), reg)
    with pytest.raises(DependencyError, match="state 9 \\(version 1 or later\\)"):
        series.refuse_apply(lp(B, needs_states=[(9, 1)]), reg)
    # An inactive (reverted) patch meets nothing.
    with pytest.raises(DependencyError):
        series.refuse_apply(lp(B, needs=[A]), Registry([rec(A, state=STATE_INACTIVE)]))


def test_a_cumulative_patch_stands_for_those_it_replaced():
    reg = Registry([rec(C, replaced=[A, B], states=[(7, 1)])])
    series.refuse_apply(lp(Q, needs=[A]), reg)
    assert series.dependents(Registry([rec(C, replaced=[A]), rec(Q, needs=[A])]), C)[0][0].patch_build_id == Q


def test_replace_must_carry_every_state_forward_and_never_downgrade():
    old = rec(A, states=[(7, 2)])
    reg = Registry([old])
    series.refuse_apply(lp(C, provides=[(7, 2)]), reg, [old])
    series.refuse_apply(lp(C, provides=[(7, 3)]), reg, [old])
    with pytest.raises(DependencyError, match="replaces %s, which provides state 7 version 2" % A[:16]):
        series.refuse_apply(lp(C), reg, [old])
    with pytest.raises(DependencyError, match="provides state 7 version 1, older than version 2"):
        series.refuse_apply(lp(C, provides=[(7, 1)]), reg)
    # What the replaced patches provided does not meet the cumulative patch's own needs.
    with pytest.raises(DependencyError, match="needs state 7"):
        series.refuse_apply(lp(C, needs_states=[(7, 1)], provides=[(7, 2)]), reg, [old])


def test_revert_refuses_while_an_applied_patch_depends_on_it():
    reg = Registry([rec(A, states=[(7, 1)]), rec(B, needs=[A]), rec(Q, needs_states=[(7, 1)])])
    with pytest.raises(DependencyError) as e:
        series.refuse_revert(reg, A)
    msg = str(e.value)
    assert e.value.exit_code == 20 and "\n" not in msg
    assert "applied patch %s needs patch %s" % (B[:16], A[:16]) in msg
    assert "applied patch %s needs state 7" % Q[:16] in msg and "revert them first" in msg
    series.refuse_revert(reg, B)  # nobody needs B
    # Another provider of the state keeps Q's need met; a need unmet before does not block.
    reg = Registry([rec(A, states=[(7, 1)]), rec(C, states=[(7, 1)]), rec(Q, needs_states=[(7, 1)]),
                    rec(B, needs=["ee" * 20])])
    series.refuse_revert(reg, A)


def _repair(sim, registry):
    """What the tool does after a kill: a record with none of its jumps in place counts as not applied (the
    next apply settles it); the one the memory shows partly in effect is reverted (finishing the job, as
    ``skip_done``).  Returns the registry after."""
    from gdb_nsb.binder.plan import plan_revert
    from gdb_nsb.lifecycle.consistency import consistency
    from gdb_nsb.lifecycle.instances import not_in_effect
    for rec in list(registry.active()):
        if not_in_effect(rec, sim.mem):  # as the next apply settles it (instances.settle_gone_instances)
            registry = plan_revert(registry, rec.patch_build_id).registry_after
            continue
        if not consistency(registry, sim.mem):
            continue
        top_entries = [f.entry for f in rec.functions if registry.top(f.entry) == rec.patch_build_id]
        if all(sim.mem.read(e, len(rec.function_at(e).jump)) == rec.function_at(e).jump for e in top_entries):
            continue  # this record is whole: another one is the partial one
        plan = plan_revert(registry, rec.patch_build_id)
        for w in plan.writes:
            if sim.mem.read(w.addr, len(w.data)) != w.data:
                assert sim.mem.read(w.addr, len(w.expected)) == w.expected, w.what
                sim.mem.write(w.addr, w.data)
        registry = plan.registry_after
    return registry


def test_replace_killed_after_any_write_leaves_a_state_a_revert_finishes(world):
    """Between any two entry writes of a replace the committed registry (stacked while entries switch,
    the old records reduced while their own entries are restored) accounts for every jump in memory:
    ``consistency`` sees at most a partial apply or revert, and reverting that record makes it whole."""
    from gdb_nsb.lifecycle.consistency import consistency
    target, f, patches = world
    lp_c, img_c = patches["C"]
    d, a, c = patches["D"][0].new_bid, patches["A"][0].new_bid, lp_c.new_bid
    base = applied_sim(world, "D", "A")
    plan = plan_replace(base.view(), lp_c, img_c, base.registry)
    switches, restores = plan.switch_writes(), plan.restore_writes()
    assert [w.what for w in switches] == ["jump over f"] and [w.what for w in restores] == ["restore nop"]
    stacked, reduced = plan.registry_stacked(), plan.registry_reduced()
    assert [b for b, _ in stacked.stack(switches[0].addr)] == [d, a, c] and stacked.patch(c).replaced == []
    assert [p.patch_build_id for p in reduced.active()] == [d, c]
    assert [fn.name for fn in reduced.patch(d).functions] == ["nop"]
    entry_writes = switches + restores
    n = len(switches)
    # (entry writes made, the registry committed then): the stacked one up to the last switch, the
    # reduced one from then on (committed before the first restore).
    points = [(k, stacked) for k in range(n + 1)] + [(k, reduced) for k in range(n, len(entry_writes) + 1)]
    for k, registry in points:
        sim = applied_sim(world, "D", "A")
        sim.mem.add(plan.mapping.start, bytes(plan.mapping.length))
        for seg in plan.segment_writes:
            sim.mem.write(seg.addr, seg.data)
        for w in entry_writes[:k]:
            sim.mem.write(w.addr, w.data)
        problems = consistency(registry, sim.mem)
        assert len(problems) <= 1, (k, problems)
        after = _repair(sim, registry)
        assert consistency(after, sim.mem) == [], k
        tops = {e: after.top(e) for e in (switches[0].addr, restores[0].addr)}
        if k < n:                  # the new patch reverted: the old set as before the replace
            assert tops == {switches[0].addr: a, restores[0].addr: d}, k
        elif registry is stacked:  # the new patch whole, stacked over the old set
            assert tops == {switches[0].addr: c, restores[0].addr: d}, k
        else:                      # the new patch in place; nop's original code back (or D's jump, D reduced)
            assert tops[switches[0].addr] == c and tops[restores[0].addr] in ((None,) if k > n else (d,)), k
        for e in tops:
            assert sim.mem.read(e, 5) == after.expected_bytes(e, 5, target.read_vaddr(e - EXE_BIAS, 5)), (k, hex(e))
