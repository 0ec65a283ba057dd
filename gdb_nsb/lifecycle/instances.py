"""Which instance of the target a patch or a record belongs to, and what became of it.

The registry names a target by build-id and load bias.  Between two runs of
the tool the target may have been unloaded (dlclose), loaded again elsewhere
or at the same address with fresh code, or the whole process may have
executed another program.  These decisions read the process through a
``ProcessView`` and a ``MemoryReader`` only.
"""

import copy
import os

from gdb_nsb import errors
from gdb_nsb.binder import plan as planmod
from gdb_nsb.registry import STATE_ACTIVE


def absent_target_reason(view, lp, pid):
    """Why the patch's target (by build-id) is not in the process: a build-id mismatch when an
    object of the target's name (or, for an executable target, the main executable) is mapped."""
    named = [o for o in view.objects if not o.is_vdso and lp.target_name and
             (os.path.basename(o.path) == lp.target_name or o.soname == lp.target_name)]
    if not named and lp.target_is_executable:
        named = [o for o in view.objects if o.is_main_executable]
    if named:
        return ("build-id mismatch: %s is mapped with build-id %s, the patch is for %s (%s)"
                % (named[0].path, named[0].build_id, lp.old_bid, lp.target_name or "?"))
    return "target not mapped: no object with build-id %s (%s) in process %d" % (lp.old_bid, lp.target_name or "?",
                                                                               pid)


def target_unloaded(record, view):
    """The object ``record`` patched is gone: its build-id is not mapped, or mapped at another load bias
    (dlclose, then dlopen elsewhere).  Its recorded entries may be unmapped or hold other code now."""
    obj = view.object_by_build_id(record.target_build_id)
    return obj is None or obj.load_bias != record.target_load_bias


def not_in_effect(record, memory):
    """An active record whose every entry holds the target's own code: no jump of any layer is there.

    Seen when the target was dlclosed and dlopened again at the same address
    (the loader maps fresh code), or when an apply or revert was cut short.
    An entry that cannot be read counts as in effect (the record keeps blocking)."""
    if record.state != STATE_ACTIVE or not record.functions:
        return False
    for f in record.functions:
        try:
            if memory.read(f.entry, len(f.original)) != f.original:
                return False
        except (errors.NsbError, OSError):
            return False
    return True


def settle_gone_instances(registry, view, memory, target_build_id):
    """Before an apply to ``target_build_id``: records of an earlier instance of that object stop blocking it.

    A record whose target is unloaded, or whose jumps are all gone, becomes
    inactive (its layers leave the stacks; no byte is written: the recorded
    addresses are not the old code any more), and an inactive record is bound
    to the object's current load bias so a re-apply reuses its mapping.
    Returns (registry, [one line per record settled]); the input is not modified.
    """
    reg = registry
    lines = []
    obj = view.object_by_build_id(target_build_id)
    for rec in registry.patches:
        if rec.target_build_id != target_build_id:
            continue
        gone = target_unloaded(rec, view)
        if not gone and not not_in_effect(rec, memory):
            continue
        if reg.patch(rec.patch_build_id).state == STATE_ACTIVE:
            reg = planmod.plan_revert(reg, rec.patch_build_id).registry_after  # its writes are dropped
        else:
            reg = copy.deepcopy(reg) if reg is registry else reg
        if obj is not None:
            reg.patch(rec.patch_build_id).target_load_bias = obj.load_bias
        lines.append("patch %s was made for an earlier instance of %s (%s): its record is inactive now, "
                     "nothing written at its old addresses" % (rec.patch_build_id[:16], rec.target_name,
                                                                "unloaded" if gone else "its jumps are gone"))
    return reg, lines


def _program(view):
    m = view.main_executable
    return None if m is None else (m.path, m.build_id, m.load_bias)


def abort_if_exec(before, after, pid):
    """An exec during a run window replaces the whole image: abort (nothing was written yet)."""
    if _program(before) != _program(after):
        old, new = _program(before), _program(after)
        raise errors.TargetExecError("process %d executed a new program while it ran between safe-point tries "
                                     "(%s -> %s); operation aborted, nothing written"
                                     % (pid, old[0] if old else "?", new[0] if new else "?"))
