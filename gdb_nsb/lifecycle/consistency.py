"""Does the registry agree with the process's memory, and with the target's file?

Memory first: every entry must hold the top layer's jump, and no inactive
patch's jump may be left in place (``nsb-list``/``nsb-check`` report any
difference as a partial state).  The file second: the original bytes a revert
is about to restore must be the target file's own, never garbage from a
damaged or forged registry.
"""

import copy

from gdb_nsb import errors
from gdb_nsb.lifecycle.instances import not_in_effect, target_unloaded
from gdb_nsb.registry import STATE_ACTIVE


def consistency(registry, memory, view=None):
    """Problems between registry and memory: entries whose bytes are not the top layer's jump.

    Records whose target is unloaded are left out: their addresses no longer hold the code they patched.
    So are records none of whose jumps is in place (``not_in_effect``): the target was loaded again at
    the same address, or an apply was cut short before its first jump; the code is the target's own."""
    problems = []
    stale = [rec for rec in registry.patches
             if (view is not None and target_unloaded(rec, view)) or not_in_effect(rec, memory)]
    if stale:
        registry = copy.deepcopy(registry)
        gone = {rec.patch_build_id for rec in stale}
        registry.patches = [rec for rec in registry.patches if rec.patch_build_id not in gone]
    for entry in registry.entries():
        stack = registry.stack(entry)
        jump = stack[-1][1].jump
        try:
            now = memory.read(entry, len(jump))
        except (errors.NsbError, OSError) as e:
            problems.append("cannot read %#x: %s" % (entry, e))
            continue
        if now != jump:
            problems.append("%s at %#x holds %s, the registry expects the jump of patch %s (%s)"
                            % (stack[-1][1].name, entry, now.hex(), stack[-1][0][:16], jump.hex()))
    # Inactive patches whose jumps are still in memory (a revert cut short).
    for rec in registry.patches:
        if rec.state == STATE_ACTIVE:
            continue
        for f in rec.functions:
            try:
                now = memory.read(f.entry, len(f.jump))
            except (errors.NsbError, OSError):
                continue  # an unreadable entry holds no jump of ours to report
            if now == f.jump:
                problems.append("%s at %#x still jumps into inactive patch %s"
                                % (f.name, f.entry, rec.patch_build_id[:16]))
    return problems


def verify_saved_bytes(view, record):
    """Original bytes about to be restored must equal the target file's (never restore garbage).

    Entries restored to another patch's jump (``below`` set) are that patch's
    bytes, not the file's.  An entry outside the file's loadable bytes cannot
    be checked: the record does not describe this file, so the revert is
    refused (RegistryCorrupt) rather than writing unchecked bytes into code."""
    target = view.object_by_build_id(record.target_build_id)
    if target is None:
        return
    image = view.image(target)
    for f in record.functions:
        if f.below:
            continue
        try:
            want = image.read_vaddr(f.entry - target.load_bias, len(f.original))
        except errors.ElfError as e:
            raise errors.RegistryCorrupt("saved bytes of %s at %#x cannot be checked against the target file (%s); "
                                         "refusing to restore them" % (f.name, f.entry, e)) from None
        if want != f.original:
            raise errors.RegistryCorrupt("saved bytes of %s at %#x differ from the target file (%s vs %s); "
                                         "refusing to restore them" % (f.name, f.entry, f.original.hex(), want.hex()))
