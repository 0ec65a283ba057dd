"""ELF files read once per GDB session, and read before the process is stopped.

Parsing the ELF files of the mapped objects (libc's dynamic symbols and
version tables, section headers, build-ids) costs tens of milliseconds in
pure Python.  Done inside the stop, that time is added to the pause the
target sees.  So the runner calls :func:`prefetch` before attaching: it reads
``/proc/PID/maps`` (native targets only), opens every mapped file and the
patch, and computes what the engine will ask for.  In the stop the engine
gets the very same :class:`ElfImage` objects back from :func:`image`, with
their lazily computed properties already filled in.

Images are keyed by the file's identity (device, inode, size, mtime), never
by path alone: a file replaced on disk after the prefetch is a new file, and
``/proc/PID/map_files/...`` of the same file shares its entry.
"""

from gdb_nsb import errors
from gdb_nsb.elf.image import ElfImage
from gdb_nsb.fileid import file_identity

_IMAGES = {}
_PATCHES = {}

# Properties the snapshot, the binder and the engine read from mapped objects and patches.
_WARM = ("build_id", "segments", "sections", "_sections_by_name", "dynamic", "needed", "soname", "dynsyms",
         "_version_index_names", "relocations")


def image(path):
    """The ElfImage of ``path``, shared with every earlier open of the same file (ElfError as ElfImage)."""
    try:
        key = file_identity(path)
    except OSError:
        return ElfImage(path)  # raises the usual one-line ElfError
    img = _IMAGES.get(key)
    if img is None:
        img = _IMAGES[key] = ElfImage(path)
    return img


def livepatch(path, check_identity=True):
    """LivePatch.read(path, check_identity), cached by file identity (the same errors).  A decode made
    without the identity check never stands for one asked with it."""
    from gdb_nsb.elf.livepatch import LivePatch
    try:
        key = file_identity(path)
    except OSError:
        return LivePatch.read(path, check_identity=check_identity)
    cached = _PATCHES.get(key)
    if cached is None or (check_identity and not cached[1]):
        cached = _PATCHES[key] = (LivePatch.read(path, check_identity=check_identity), check_identity)
    return cached[0]


def seed(path, identity, patch, identity_checked=True):
    """Take ``patch`` (a LivePatch someone else decoded from ``path`` when it had ``identity``,
    ``identity_checked`` or not) as this session's decode of it, while the file keeps that identity."""
    try:
        if file_identity(path) != identity:
            return False
    except OSError:
        return False
    _PATCHES[identity] = (patch, identity_checked)
    return True


def warm(img):
    """Compute the lazily read parts of ``img`` now (errors are left for the real use to report)."""
    for name in _WARM:
        try:
            getattr(img, name)
        except (errors.NsbError, ValueError, KeyError, IndexError):
            pass
    return img


def mapped_files(pid):
    """Paths of the regular files mapped by process ``pid`` (from /proc/PID/maps), in map order."""
    out = []
    try:
        with open("/proc/%d/maps" % pid) as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) < 6:
                    continue
                name = parts[5].strip()
                if name.startswith("/") and not name.startswith("/memfd:") and not name.endswith("(deleted)") \
                        and name not in out:
                    out.append(name)
    except OSError:
        pass
    return out


def prefetch(pid=None, patches=(), decode_patches=True):
    """Open and warm the patch files and every file mapped by local process ``pid``; never raises.

    Returns the number of images ready.  Run it before attaching: nothing
    here touches the process beyond reading ``/proc/PID/maps``.  Without
    ``decode_patches`` the patches' ``vzpatch`` sections are left for later
    (the runner hands its decode over: see :func:`seed`).
    """
    count = 0
    for path in patches if decode_patches else ():
        try:
            livepatch(path)
        except errors.NsbError:
            pass
    for path in list(patches) + (mapped_files(pid) if pid else []):
        try:
            warm(image(path))
            count += 1
        except (errors.NsbError, OSError):
            continue
    return count
