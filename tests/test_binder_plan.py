"""Load/revert plans executed against a simulated process: stacking 3 layers in every order."""

import itertools

import pytest

import targets as T
from binder_fakes import EXE_BIAS, Sim, build_world, load
from gdb_nsb.binder.errors import BreakpointInJump, FunctionTooShort
from gdb_nsb.binder.jumps import KIND_ABS, KIND_REL32, decode_jump
from gdb_nsb.binder.placement import GiB
from gdb_nsb.binder.plan import BREAKPOINTS_DISABLE, evaluate, identify_jump, plan_load, plan_revert
from gdb_nsb.elf.livepatch import FuncJump, LivePatch
from gdb_nsb.errors import AlreadyAppliedError, NotAppliedError
from gdb_nsb.mappings import Mapping
from gdb_nsb.registry import STATE_INACTIVE, Registry


@pytest.fixture(scope="module", params=["plain", "cet"])
def world(request):
    return build_world(request.param)


def far_blockers(sim):
    """Fill everything within 2 GiB of the target so that the next patch lands out of rel32 reach."""
    lo, hi = sim.main.low, sim.main.high
    return [Mapping(lo - 2 * GiB - 0x100000, lo - 0x1000, 0, "---p", ""),
            Mapping(hi + 0x1000, hi + 2 * GiB + 0x100000, 0, "---p", "")]


def check_state(sim, f, patches, stack):
    entry = EXE_BIAS + f.value
    now = sim.mem.read(entry, f.size)
    if not stack:
        assert now == sim.target.read_vaddr(f.value, f.size)
        assert identify_jump(sim.registry, entry, now) is None
        return
    top = stack[-1]
    rec = sim.registry.patch(patches[top][0].new_bid)
    dest = rec.patch_load_base + patches[top][0].func_jumps[0].patch_value
    j = decode_jump(entry, now[:18])
    assert j is not None and j.dest == dest
    # Bytes past the jump are the original code.
    assert now[j.end - entry:] == sim.target.read_vaddr(f.value + (j.end - entry), f.size - (j.end - entry))
    assert [b for b, _ in sim.registry.stack(j.at)] == [patches[k][0].new_bid for k in stack]
    assert identify_jump(sim.registry, j.at, sim.mem.read(j.at, 14)) == patches[top][0].new_bid


@pytest.mark.parametrize("apply_order", list(itertools.permutations("ABC")))
def test_three_layers_every_order(world, apply_order):
    target, f, patches = world
    for revert_order in itertools.permutations("ABC"):
        sim = Sim(target)
        stack = []
        for i, key in enumerate(apply_order):
            lp, img = patches[key]
            blockers = far_blockers(sim) if i == 1 else ()  # the middle layer uses an absolute jump
            plan = plan_load(sim.view(blockers), lp, img, sim.registry)
            assert plan.mapping is not None and plan.placement.near == (i != 1)
            assert plan.jumps[0][1].kind == (KIND_ABS if i == 1 else KIND_REL32)
            sim.execute(plan)
            stack.append(key)
            check_state(sim, f, patches, stack)
        maps_before = len(sim.patch_maps)
        for key in revert_order:
            lp, _ = patches[key]
            rp = plan_revert(sim.registry, lp.new_bid)
            on_top = stack[-1] == key
            assert bool(rp.writes) == on_top  # a patch under others only leaves the stack
            sim.execute(rp)
            stack.remove(key)
            assert sim.registry.patch(lp.new_bid).state == STATE_INACTIVE
            check_state(sim, f, patches, stack)
        assert len(sim.patch_maps) == maps_before
        # Re-apply one: the existing mapping is reused, nothing new is mapped.
        lp, img = patches[revert_order[0]]
        rec = sim.registry.patch(lp.new_bid)
        again = plan_load(sim.view(), lp, img, sim.registry)
        assert again.mapping is None and again.placement.bias == rec.patch_load_base
        sim.execute(again)
        check_state(sim, f, patches, [revert_order[0]])
        assert len(sim.patch_maps) == maps_before


def test_plan_refusals_and_describe(world):
    target, f, patches = world
    sim = Sim(target)
    lp, img = patches["A"]
    with pytest.raises(NotAppliedError):
        plan_revert(sim.registry, lp.new_bid)
    plan = plan_load(sim.view(), lp, img, sim.registry)
    text = "\n".join(plan.describe())
    assert "map " in text and "redirect f" in text and "write" in text
    assert sim.registry.patches == []  # planning does not change the registry it was given
    sim.execute(plan)
    with pytest.raises(AlreadyAppliedError):
        plan_load(sim.view(), lp, img, sim.registry)
    assert "restore f" in "\n".join(plan_revert(sim.registry, lp.new_bid).describe())


def test_entry_bytes_changed_by_someone_else(world):
    target, f, patches = world
    sim = Sim(target)
    lp, img = patches["A"]
    plan = plan_load(sim.view(), lp, img, sim.registry)
    at = plan.jumps[0][1].at
    sim.mem.write(at, b"\xcc")
    reasons = evaluate(plan, sim.mem)
    assert len(reasons) == 1 and "jump over f" in reasons[0] and "expected" in reasons[0]


def test_target_file_differs_from_entry_bytes(world):
    target, f, patches = world
    lp, img = patches["A"]
    bad = LivePatch(old_bid=lp.old_bid, new_bid=lp.new_bid, func_jumps=[FuncJump(
        "f", f.value, f.size, lp.func_jumps[0].patch_value, f.shndx, entry_bytes=b"\x90\x90\x90\x90\x90")])
    plan = plan_load(Sim(target).view(), bad, img, Registry())
    assert plan.problems and "differ" in str(plan.problems[0])


def test_breakpoints_inside_jump(world):
    target, f, patches = world
    lp, img = patches["A"]
    sim = Sim(target)
    entry = EXE_BIAS + f.value
    ok = plan_load(sim.view(), lp, img, sim.registry, breakpoints=[entry, entry + 64])
    assert ok.problems == []
    at = ok.jumps[0][1].at
    bad = plan_load(sim.view(), lp, img, sim.registry, breakpoints=[at + 1])
    assert isinstance(bad.problems[0], BreakpointInJump) and hex(at + 1) in str(bad.problems[0])
    assert any(hex(at + 1) in r for r in evaluate(bad, sim.mem))
    dis = plan_load(sim.view(), lp, img, sim.registry, breakpoints=[at + 1], breakpoint_policy=BREAKPOINTS_DISABLE)
    assert dis.problems == [] and [b.addr for b in dis.breakpoints_to_disable] == [at + 1]


def test_too_short_function_is_a_problem(world):
    target, f, patches = world
    nop = next(s for s in target.symtab if s.name == "nop")
    lp, img = patches["A"]
    short = LivePatch(old_bid=lp.old_bid, new_bid=lp.new_bid, func_jumps=[FuncJump(
        "nop", nop.value, 3, lp.func_jumps[0].patch_value, nop.shndx, entry_bytes=target.read_vaddr(nop.value, 3))])
    plan = plan_load(Sim(target).view(), short, img, Registry())
    assert isinstance(plan.problems[0], FunctionTooShort) and "nop" in str(plan.problems[0])
    with pytest.raises(FunctionTooShort):
        plan.check()
    assert plan.jump_writes == []


def test_target_not_mapped(world):
    target, f, patches = world
    lp, img = patches["A"]
    other = LivePatch(old_bid="00" * 20, new_bid=lp.new_bid, func_jumps=lp.func_jumps)
    from gdb_nsb.errors import MismatchError
    with pytest.raises(MismatchError, match="not mapped"):
        plan_load(Sim(target).view(), other, img, Registry())


def test_check_lists_unresolved_symbol_and_fatal_reasons(world):
    from gdb_nsb.binder.plan import check_load
    target, f, patches = world
    img = load(T.build_patch([("u.c", "extern int nowhere_sym; int f(int x) { return x + nowhere_sym; }")],
                                  "u.so"))
    pf = next(s for s in img.dynsyms if s.name == "f")
    lp = LivePatch(old_bid=target.build_id, new_bid=img.build_id, func_jumps=[FuncJump(
        "f", f.value, f.size, pf.value, f.shndx, entry_bytes=target.read_vaddr(f.value, 24))])
    sim = Sim(target)
    reasons = check_load(sim.view(), lp, img, sim.registry)
    assert len(reasons) == 1 and "nowhere_sym" in reasons[0]
    lp_a, img_a = patches["A"]
    assert check_load(sim.view(), lp_a, img_a, sim.registry) == []
    sim.execute(plan_load(sim.view(), lp_a, img_a, sim.registry))
    assert "already applied" in check_load(sim.view(), lp_a, img_a, sim.registry)[0]


def test_mapping_protections_never_writable(world):
    target, f, patches = world
    lp, img = patches["A"]
    plan = plan_load(Sim(target).view(), lp, img, Registry())
    prots = plan.mapping.protections
    assert prots and all(p in (1, 5) for _, _, p in prots)  # PROT_READ or PROT_READ|PROT_EXEC
    x = [s for s in img.segments if s.flags & 1]
    for s in x:
        a = plan.placement.bias + s.vaddr
        assert any(st <= a < st + n and p == 5 for st, n, p in prots)
    assert plan.mapping.start == plan.placement.start and plan.mapping.length == plan.placement.length
