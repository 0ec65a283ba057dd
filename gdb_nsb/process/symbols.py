"""Tell GDB about the patches mapped in the process (REFERENCE.md 2.7).

A patch mapped without its symbols makes backtraces through patch frames
wrong, and with them the safe-point check of a later revert.  So every
session that meets a patched process adds each patch's symbol file at its
load bias, found by build-id: the file the command was given, or the path
recorded in the registry when the file there still has that build-id.
"""

import os

import gdb

from gdb_nsb import errors
from gdb_nsb.process import filecache


def loaded_build_ids():
    return {o.build_id for o in gdb.objfiles() if o.is_valid() and o.build_id}


def _find_file(record, hints=()):
    for path in list(hints) + [record.patch_path]:
        if not path or not os.path.isfile(path):
            continue
        try:
            if filecache.image(path).build_id == record.patch_build_id:
                return os.path.abspath(path)
        except errors.NsbError:
            continue
    return None


def register(record, hints=()):
    """Add the symbols of ``record``'s patch at its load bias; the file's path, or None if not found."""
    if record.patch_build_id in loaded_build_ids():
        return next(o.filename for o in gdb.objfiles() if o.is_valid() and o.build_id == record.patch_build_id)
    path = _find_file(record, hints)
    if path is None:
        return None
    confirm = gdb.parameter("confirm")
    gdb.execute("set confirm off", to_string=True)
    try:
        gdb.execute("add-symbol-file %s -o %#x" % (_quote(path), record.patch_load_base), to_string=True)
    finally:
        if confirm:
            gdb.execute("set confirm on", to_string=True)
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
