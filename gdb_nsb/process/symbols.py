"""Tell GDB about the patches mapped in the process (REFERENCE.md 2.7).

A patch mapped without its symbols makes backtraces through patch frames
wrong, and with them the safe-point check of a later revert.  So every
session that meets a patched process adds each patch's symbol file at its
load bias, found by build-id: the file the command was given, or the path
recorded in the registry when the file there still has that build-id, or a file
of that build-id in a patch directory (gdb_nsb.patchfiles).
"""

import contextlib

import gdb

from gdb_nsb import patchfiles
from gdb_nsb.process import filecache
from gdb_nsb.process.session_state import NO_CONFIRM, changed


def loaded_build_ids():
    return {o.build_id for o in gdb.objfiles() if o.is_valid() and o.build_id}


# Patch directories searched by build-id (`set nsb patch-dir`, nsb-list --patch-dir).
patch_dirs = []


@contextlib.contextmanager
def extra_dirs(dirs):
    """Search ``dirs`` too (before the setting's) for the duration of one command."""
    global patch_dirs
    saved = patch_dirs
    patch_dirs = list(dirs or ()) + [d for d in saved if d not in (dirs or ())]
    try:
        yield
    finally:
        patch_dirs = saved


def _find_file(record, hints=()):
    return patchfiles.find(record.patch_build_id, record.patch_path, hints, patch_dirs,
                           read_build_id=lambda path: filecache.image(path).build_id)


def register(record, hints=()):
    """Add the symbols of ``record``'s patch at its load bias; the file's path, or None if not found."""
    if record.patch_build_id in loaded_build_ids():
        return next(o.filename for o in gdb.objfiles() if o.is_valid() and o.build_id == record.patch_build_id)
    path = _find_file(record, hints)
    if path is None:
        return None
    with changed(NO_CONFIRM):
        gdb.execute("add-symbol-file %s -o %#x" % (_quote(path), record.patch_load_base), to_string=True)
    return path


def unregister(record):
    """Remove the symbols of ``record``'s patch (after --unmap)."""
    for o in gdb.objfiles():
        if o.is_valid() and o.build_id == record.patch_build_id:
            # remove-symbol-file wants an address inside the file's text.
            addr = min((r.start for r in record.ranges if r.prot & 4), default=record.patch_load_base)
            try:
                gdb.execute("remove-symbol-file -a %#x" % addr, to_string=True)
            except gdb.error:
                gdb.execute("remove-symbol-file %s" % _quote(o.filename), to_string=True)
            return True
    return False


def register_all(registry, hints=()):
    """Register every mapped patch of ``registry``; returns the build-ids whose file was not found."""
    missing = []
    if registry is None:
        return missing
    for rec in registry.patches:
        if register(rec, hints) is None:
            missing.append(rec.patch_build_id)
    # With the patches' symbols known, keep breakpoints out of the redirected old bodies.
    from gdb_nsb.process import bpguard
    bpguard.track(registry)
    return missing


def _quote(path):
    if any(c in path for c in " \"'\\"):
        return '"%s"' % path.replace("\\", "\\\\").replace('"', '\\"')
    return path
