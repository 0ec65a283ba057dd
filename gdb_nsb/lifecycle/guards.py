"""The last line against a hostile patch: every byte a plan writes must lie where the tool owns it.

The vzpatch section and the registry are not trusted.  Before executing, the
GDB layer passes each plan through these guards; they raise instead of
letting a write land outside the patch's own mapping or the recorded jump
bytes of a function entry in the target's code.
"""

from gdb_nsb import errors
from gdb_nsb.binder.relocate import PROT_EXEC
from gdb_nsb.mappings import RangeIndex


def _target_code(view, target_build_id):
    target = view.object_by_build_id(target_build_id)
    return RangeIndex([(m.start, m.end) for m in (target.ranges if target is not None else []) if m.executable])


def guard_apply_writes(plan, view):
    """Refuse a load plan that would write outside what the tool owns.

    Segment bytes must fall inside the patch's own mapping; each jump inside the
    jump bytes recorded for that function entry, in an executable mapping of the
    target object.
    """
    own = RangeIndex([(plan.placement.start, plan.placement.end)])
    for w in plan.segment_writes:
        if not own.contains(w.addr, w.end):
            raise errors.MismatchError("refusing to write %s at %#x..%#x: outside the patch mapping %#x..%#x"
                                       % (w.what, w.addr, w.end, plan.placement.start, plan.placement.end))
    rec = plan.registry_after.patch(plan.patch_build_id)
    # A jump must land in the patch's own code: a func_jumps[].patch_value pointing anywhere else
    # (the section is not trusted) would send every caller into the void.
    patch_code = RangeIndex([(r.start, r.start + r.length) for r in (rec.ranges if rec is not None else [])
                             if r.prot & PROT_EXEC])
    for name, j in plan.jumps:
        if not patch_code.contains(j.dest, j.dest + 1):
            raise errors.PatchFileError("the new code of %s at %#x lies outside the patch's executable segments "
                                        "(vzpatch patch_value is wrong)" % (name, j.dest))
    # A replace also writes the entries of the patches it replaces (their original bytes come back).
    owners = ([rec] if rec is not None else []) + list(getattr(plan, "replaced", []))
    jumps = RangeIndex([(f.entry, f.entry + len(f.jump)) for r in owners for f in r.functions])
    code = _target_code(view, plan.target_build_id)
    for w in plan.jump_writes:
        if not jumps.contains(w.addr, w.end) or not code.contains(w.addr, w.end):
            raise errors.MismatchError("refusing to write %s at %#x..%#x: not the recorded jump bytes of a "
                                       "function entry in the target's code" % (w.what, w.addr, w.end))


def guard_revert_writes(plan, record, view):
    """Every byte a revert restores lies in the jump bytes recorded for one of the patch's entries
    (and in the target's code, when the target is mapped)."""
    jumps = RangeIndex([(f.entry, f.entry + len(f.jump)) for f in record.functions])
    code = _target_code(view, record.target_build_id)
    for w in plan.writes:
        if not jumps.contains(w.addr, w.end) or (len(code) and not code.contains(w.addr, w.end)):
            raise errors.MismatchError("refusing to write %s at %#x..%#x: not the recorded jump bytes of a "
                                       "function entry in the target's code" % (w.what, w.addr, w.end))
