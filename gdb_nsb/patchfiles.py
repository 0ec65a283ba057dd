"""Find a patch's file by its build-id (pure: no gdb).

A registry records where each patch file was when it was applied.  On the
machine it was applied on that path is usually still right; on another one
(a core file carried to a developer's machine) or after a clean-up it is
not, so the search also looks in patch directories (``set nsb patch-dir``,
``--patch-dir``): ``DIR/.build-id/xx/rest`` (GDB's layout for debug files,
with or without ``.debug``), ``DIR/<recorded file name>``, then any file in
``DIR``.  A candidate counts only when its build-id is the patch's.
"""

import os

from gdb_nsb import errors
from gdb_nsb.elf.livepatch import build_id_of

# Files larger than this are not read while scanning a directory (a patch is small).
_SCAN_LIMIT = 64 << 20


def candidates(build_id, recorded_path="", hints=(), dirs=()):
    """Paths to try for the patch ``build_id``, most specific first (they may not exist)."""
    out = [p for p in hints if p]
    if recorded_path:
        out.append(recorded_path)
    base = os.path.basename(recorded_path) if recorded_path else ""
    for d in dirs:
        if not d:
            continue
        if len(build_id) > 2:
            out.append(os.path.join(d, ".build-id", build_id[:2], build_id[2:]))
            out.append(os.path.join(d, ".build-id", build_id[:2], build_id[2:] + ".debug"))
        if base:
            out.append(os.path.join(d, base))
    return out


def _matches(path, build_id, read_build_id):
    try:
        return os.path.isfile(path) and read_build_id(path) == build_id
    except (errors.NsbError, OSError, ValueError):
        return False


def find(build_id, recorded_path="", hints=(), dirs=(), read_build_id=build_id_of):
    """The absolute path of a file whose build-id is ``build_id``, or None.

    ``read_build_id(path)`` reads a file's build-id (GDB's side passes its file cache)."""
    seen = set()
    for path in candidates(build_id, recorded_path, hints, dirs):
        if path in seen:
            continue
        seen.add(path)
        if _matches(path, build_id, read_build_id):
            return os.path.abspath(path)
    for d in dirs:
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        for name in names:
            path = os.path.join(d, name)
            if path in seen:
                continue
            try:
                if os.path.getsize(path) > _SCAN_LIMIT:
                    continue
            except OSError:
                continue
            if _matches(path, build_id, read_build_id):
                return os.path.abspath(path)
    return None


def split_dirs(text):
    """Directories from a setting or option value: separated by ':' (like GDB's debug-file-directory)."""
    return [d for d in (text or "").split(os.pathsep) if d]
