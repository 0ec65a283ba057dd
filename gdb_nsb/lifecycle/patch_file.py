"""The patch file as the lifecycle sees it: the checks on its identity and its pre-resolved symbols
before anything touches the process, and which registered patch a file or build-id names."""

import os

from gdb_nsb import errors
from gdb_nsb.elf.image import ElfImage
from gdb_nsb.elf.livepatch import LivePatch


def check_patch(lp, image, path):
    """Refuse a patch whose vzpatch section cannot be trusted for keying and binding (PatchFileError)."""
    if lp.new_bid == lp.old_bid:
        # Registry, symbols and safe-point ranges key patches and targets by build-id: they must differ.
        raise errors.PatchFileError("%s: the patch's build-id %s equals its target's; a live patch must be a "
                                    "build of its own" % (path, lp.new_bid))
    # Every pre-resolved symbol of the section must name a real undefined .dynsym entry of the patch.
    dynsyms = image.dynsyms
    for what, marked in (("manual_symbols", lp.manual_symbols), ("global_symbols", lp.global_symbols)):
        for m in marked:
            if not 0 < m.idx < len(dynsyms):
                raise errors.PatchFileError("vzpatch %s names symbol index %d, but the patch's .dynsym has %d entries"
                                            % (what, m.idx, len(dynsyms)))


def _read_unchecked(path):
    return LivePatch.read(path, check_identity=False)


def resolve_patch_id(ident, registry, read=None):
    """A build-id (hex, prefix allowed) or a patch file → the patch's build-id.

    A file without a readable vzpatch section is named by its own ELF build-id;
    an unknown hex string of 8 digits or more is taken as a full build-id (the
    caller then says it is not applied).  ``read(path)`` decodes a patch file
    without the identity check (GDB's side passes its cache)."""
    bid = None
    if os.path.isfile(ident):
        try:
            bid = (read or _read_unchecked)(ident).new_bid
        except errors.PatchFileError:
            bid = ElfImage(ident).build_id
    else:
        cand = [p for p in registry.patches if p.patch_build_id.startswith(ident.lower())]
        if len(cand) > 1:
            raise errors.UsageError("build-id prefix %s is ambiguous (%d patches)" % (ident, len(cand)))
        if cand:
            bid = cand[0].patch_build_id
        elif all(c in "0123456789abcdef" for c in ident.lower()) and len(ident) >= 8:
            bid = ident.lower()
        else:
            raise errors.PatchFileError("no such patch file or build-id: %s" % ident)
    return bid
