"""The busy ranges a safe point needs: the code no thread may be inside while jumps change.

For an apply, every fragment of each replaced function in the target, plus
the copy of that function in each patch layered over it (a thread may be
running any layer's copy); for a revert, the patch's own executable memory;
for a replace, both at once: one safe point covers the old and the new code,
so no thread is inside a call chain that could mix them.
"""

from gdb_nsb.binder.jumps import ENDBR64, decode_jump
from gdb_nsb.binder.relocate import PROT_EXEC


def layer_ranges(registry, entry, images_by_bid):
    """Code ranges of the copies of the function at ``entry`` in every applied layer.

    ``images_by_bid`` maps a patch build-id to its ElfImage, when its file was found."""
    out = []
    for bid, f in registry.stack(entry):
        rec = registry.patch(bid)
        copy = copy_range(rec, f, images_by_bid.get(bid))
        if copy is not None:
            out.append(copy)
        else:
            # Without the patch's symbols its whole code counts as the busy copy.
            out += [(r.start, r.start + r.length) for r in rec.ranges if r.prot & PROT_EXEC]
    return out


def copy_range(record, function, image):
    """[lo, hi) of the patch's copy of ``function`` (a FunctionRecord of ``record``) in the process, from the
    patch's symbols; None when its file (``image``) is not known or no symbol holds the jump's destination."""
    j = decode_jump(function.entry, function.jump)
    if j is None or image is None:
        return None
    rel = j.dest - record.patch_load_base
    sym = next((s for s in image.symtab or image.dynsyms
                if s.type == "STT_FUNC" and s.value <= rel < s.value + max(s.size, 1)), None)
    if sym is None:
        return None
    return record.patch_load_base + sym.value, record.patch_load_base + sym.value + max(sym.size, 1)


def busy_for_apply(livepatch, target_bias, registry, images_by_bid):
    """({function: busy ranges}, {function: safe entry pcs}) for applying ``livepatch`` at ``target_bias``."""
    entries = set(registry.entries())
    busy, safe_entries = {}, {}
    for fj in livepatch.func_jumps:
        entry = target_bias + fj.func_value
        ranges = [(target_bias + lo, target_bias + hi) for lo, hi in fj.busy_ranges()]
        for at in (entry, entry + 4):  # the registry keys a layer by where its jump starts (after endbr64)
            if at in entries:
                ranges += layer_ranges(registry, at, images_by_bid)
        busy[fj.name] = ranges
        # A pc exactly at the entry (or at the jump after an endbr64) has run nothing of the old code.
        safe_entries[fj.name] = {entry, entry + 4} if fj.entry_bytes[:4] == ENDBR64 else {entry}
    return busy, safe_entries


def busy_for_revert(record):
    """{"patch <id>": the patch's executable ranges}: no thread may run its code while it is taken out."""
    exec_ranges = [(r.start, r.start + r.length) for r in record.ranges if r.prot & PROT_EXEC]
    return {"patch %s" % record.patch_build_id[:12]: exec_ranges}


def busy_for_replace(livepatch, target_bias, registry, images_by_bid, replaced):
    """``busy_for_apply`` of the new patch united with ``busy_for_revert`` of every record it ``replaced``.

    A replaced patch's copy of a function it redirected is named after the function ("gen_b of patch
    <id>"), when its file (``images_by_bid``) gives the copy's symbol, so that a busy verdict names what
    the thread runs; the rest of its executable memory keeps the patch's name.  No entry pc is safe there:
    a thread at an old copy's entry would run code that goes away."""
    busy, safe_entries = busy_for_apply(livepatch, target_bias, registry, images_by_bid)
    for record in replaced:
        image = images_by_bid.get(record.patch_build_id)
        copies = []
        for f in record.functions:
            copy = copy_range(record, f, image)
            if copy is not None:
                copies.append(copy)
                busy.setdefault("%s of patch %s" % (f.name, record.patch_build_id[:12]), []).append(copy)
        for name, ranges in busy_for_revert(record).items():
            busy.setdefault(name, []).extend(_without(ranges, copies))
    for name in busy:
        safe_entries.setdefault(name, set())
    return busy, safe_entries


def _without(ranges, holes):
    """[lo, hi) ``ranges`` minus the ``holes``, so that no address lies in two busy names."""
    out = []
    for lo, hi in ranges:
        for a, b in sorted(holes):
            if a > lo and a < hi:
                out.append((lo, a))
            if b > lo and a < hi:
                lo = max(lo, b)
        if lo < hi:
            out.append((lo, hi))
    return out
