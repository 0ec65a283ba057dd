"""Find the separate debug file of an ELF image, the way GDB does.

Order (GDB "Separate Debug Files"):

1. the image itself, when it has ``.debug_info``;
2. an explicit path given by the user (its build-id must match the image's);
3. ``<debugdir>/.build-id/xx/rest.debug`` by the image's build-id;
4. the ``.gnu_debuglink`` name next to the image, in its ``.debug/`` subdirectory,
   and under ``<debugdir>/<image's directory>/`` (the CRC32 must match).

``search_dirs`` replaces the global debug directory (``/usr/lib/debug``), so
tests can use a temporary directory.
"""

from __future__ import annotations

import os
import zlib

from gdb_nsb.errors import DebugInfoError, ElfError
from gdb_nsb.elf.image import ElfImage

DEFAULT_DEBUG_DIRS = ("/usr/lib/debug",)


def _image(x) -> ElfImage:
    return x if isinstance(x, ElfImage) else ElfImage(x)


def _dirs(search_dirs):
    return list(DEFAULT_DEBUG_DIRS if search_dirs is None else search_dirs)


def build_id_path(debug_dir: str, build_id: str, suffix: str = ".debug") -> str:
    """``<debug_dir>/.build-id/xx/rest<suffix>``."""
    return os.path.join(debug_dir, ".build-id", build_id[:2], build_id[2:] + suffix)


def file_crc32(path: str) -> int:
    """The CRC32 that ``.gnu_debuglink`` records (zlib's CRC-32 of the whole file)."""
    crc = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            crc = zlib.crc32(chunk, crc)
    return crc & 0xFFFFFFFF


def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _usable(candidate, image, want_build_id=None):
    """``candidate`` as an ElfImage if it is a readable ELF file with DWARF, else None."""
    if not os.path.isfile(candidate) or _same_file(candidate, image.path):
        return None
    try:
        dbg = ElfImage(candidate)
    except ElfError:
        return None
    if want_build_id is not None and dbg.build_id != want_build_id:
        return None
    return dbg if dbg.has_debug_info else None


def find_debug_file(image, explicit: str | None = None, search_dirs=None) -> str | None:
    """Path of the file holding ``image``'s DWARF, or None when there is none.

    ``explicit``: a user-given debug file; a build-id mismatch or missing
    ``.debug_info`` there is a DebugInfoError, not a silent fallback."""
    image = _image(image)
    if explicit is not None:
        try:
            dbg = ElfImage(explicit)
        except ElfError as e:
            raise DebugInfoError("debug file %s: %s" % (explicit, e)) from e
        if image.build_id and dbg.build_id != image.build_id:
            raise DebugInfoError("debug file %s has build-id %s, but %s has %s"
                                 % (explicit, dbg.build_id or "none", image.path, image.build_id))
        if not dbg.has_debug_info:
            raise DebugInfoError("debug file %s has no .debug_info" % explicit)
        return dbg.path
    if image.has_debug_info:
        return image.path
    dirs = _dirs(search_dirs)
    bid = image.build_id
    if bid and len(bid) > 2:
        for d in dirs:
            if _usable(build_id_path(d, bid), image, bid) is not None:
                return build_id_path(d, bid)
    link = image.debuglink
    if link is not None:
        name, crc = link
        here = os.path.dirname(os.path.realpath(image.path))
        candidates = [os.path.join(here, name), os.path.join(here, ".debug", name)]
        candidates += [os.path.join(d, here.lstrip("/"), name) for d in dirs]
        for c in candidates:
            if os.path.isfile(c) and not _same_file(c, image.path) and file_crc32(c) == crc \
                    and _usable(c, image) is not None:
                return c
    return None


def find_alt_file(image, search_dirs=None) -> str | None:
    """Path of the dwz common file named by ``image``'s ``.gnu_debugaltlink`` (None if it has none).

    The link path is taken relative to the debug file's directory; failing that
    (or on a build-id mismatch) ``<debugdir>/.build-id/xx/rest.debug``.  A link
    that cannot be satisfied is a DebugInfoError: the DWARF is unusable without it."""
    image = _image(image)
    link = image.debugaltlink
    if link is None:
        return None
    path, bid = link
    cands = [path if os.path.isabs(path) else os.path.join(os.path.dirname(os.path.realpath(image.path)), path)]
    cands += [build_id_path(d, bid) for d in _dirs(search_dirs)]
    for c in cands:
        if not os.path.isfile(c):
            continue
        try:
            alt = ElfImage(c, allow_relocatable=True)
        except ElfError:
            continue
        if alt.build_id == bid:
            return c
    raise DebugInfoError("%s: dwz alt file %s (build-id %s) not found" % (image.path, path, bid))


def open_dwarf(image, explicit: str | None = None, search_dirs=None):
    """DwarfIndex over ``image``'s debug info (separate debug file and dwz alt file found).

    Raises DebugInfoError when there is no debug info."""
    from gdb_nsb.elf.dwarf import DwarfIndex

    image = _image(image)
    path = find_debug_file(image, explicit, search_dirs)
    if path is None:
        raise DebugInfoError("%s: no debug info (no .debug_info, no build-id debug file, no debuglink match)"
                             % image.path)
    dbg = image if path == image.path else ElfImage(path)
    alt = find_alt_file(dbg, search_dirs)
    return DwarfIndex(dbg, ElfImage(alt, allow_relocatable=True) if alt else None)
