"""The patch's own mapping over its life: pending while it is set up, its protections, its removal.

An apply records a new mapping before anything jumps into it (the pending
registry), a re-apply sets again the protections the memory map shows lost,
a re-apply maps afresh the memory the program unmapped itself, and ``--unmap``
of a patch reverted earlier removes record and mapping only.
"""

import copy

from gdb_nsb.binder import plan as planmod
from gdb_nsb.binder.replace import ReplacePlan
from gdb_nsb.errors import MismatchError
from gdb_nsb.registry import STATE_INACTIVE


def pending_registry(plan):
    """The registry as it must be while the new mapping exists but nothing jumps into it.

    For a replace that is the registry before it plus the new record: the patches it replaces are still
    in effect until their entries switch (a record dropped here left their jumps unaccounted for)."""
    reg = plan.registry_stacked() if isinstance(plan, ReplacePlan) else copy.deepcopy(plan.registry_after)
    rec = reg.patch(plan.patch_build_id)
    rec.state = STATE_INACTIVE
    rec.functions = []
    return reg


def protections_to_restore(ranges, mappings):
    """(start, length, prot) of each recorded range whose pages the memory map shows with other
    permissions, or not wholly mapped (its mprotect then fails: ENOMEM), or unknown (old GDB)."""
    out = []
    for r in ranges:
        want = "".join((("r" if r.prot & 1 else "-"), ("w" if r.prot & 2 else "-"), ("x" if r.prot & 4 else "-")))
        end, covered, same = r.start + r.length, 0, True
        for m in mappings:
            if m.start < end and r.start < m.end:
                covered += min(m.end, end) - max(m.start, r.start)
                same = same and m.perms is not None and m.perms[:3] == want
        if not same or covered != r.length:
            out.append((r.start, r.length, r.prot))
    return out


def mapping_to_restore(plan, mappings):
    """A re-apply whose recorded memory the program itself unmapped: a MappingPlan that maps it afresh at
    the same place (its mprotects used to fail with ENOMEM).  None while it is wholly mapped; refused
    (MismatchError) when only part of it is, since the rest may be the program's own memory now."""
    lo, hi = plan.placement.start, plan.placement.end
    covered = sum(min(m.end, hi) - max(m.start, lo) for m in mappings if m.start < hi and lo < m.end)
    if covered == hi - lo:
        return None
    if covered:
        raise MismatchError("the memory of patch %s at %#x..%#x is only partly mapped (the program unmapped "
                            "some of it): revert it with --unmap, then apply again"
                            % (plan.patch_build_id[:16], lo, hi))
    rec = plan.registry_after.patch(plan.patch_build_id)
    return planmod.MappingPlan(lo, hi - lo, [(r.start, r.length, r.prot) for r in rec.ranges])


def plan_unmap_inactive(registry, rec):
    """``--unmap`` of a patch reverted earlier (kept mapped): no byte to restore; its record and mapping go.

    Without this a patch once reverted without --unmap could never be unmapped."""
    after = copy.deepcopy(registry)
    after.patches.remove(after.patch(rec.patch_build_id))
    span = None
    if rec.ranges:
        lo = min(r.start for r in rec.ranges)
        span = (lo, max(r.start + r.length for r in rec.ranges) - lo)
    return planmod.RevertPlan(rec.patch_build_id, [], after, [], span)
