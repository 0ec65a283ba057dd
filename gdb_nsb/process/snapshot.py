"""Snapshot of the stopped process for the binder: mapped objects, their files, breakpoints.

Target objects are identified by build-id, never by path alone: after a
package upgrade the path names another file.  The ELF bytes of a mapped
object come from, in order: its path, when that is the very file mapped
(same device and inode as /proc/PID/map_files, native targets); the
map_files entry itself (a replaced or deleted file); or, through a remote
connection, `remote get` into a private temporary directory (GDB's sysroot
protocol, so a gdbserver in another mount namespace works too).
"""

import os
import re
import shutil
import tempfile

import gdb

from gdb_nsb import errors
from gdb_nsb.binder.process_view import MappedObject, ProcessView, compute_load_bias
from gdb_nsb.elf.image import ElfImage
from gdb_nsb.elf.memnote import build_id_in_memory
from gdb_nsb.process import filecache
from gdb_nsb.process.session_state import NO_CONFIRM, changed

_AT_ENTRY = re.compile(r"^\s*9\s+AT_ENTRY\s.*?(0x[0-9a-fA-F]+)", re.M)
_REMOTE_CACHE = None


def _remote_cache_dir():
    global _REMOTE_CACHE
    if _REMOTE_CACHE is None or not os.path.isdir(_REMOTE_CACHE):
        _REMOTE_CACHE = tempfile.mkdtemp(prefix="nsb-remote-")
        import atexit
        atexit.register(shutil.rmtree, _REMOTE_CACHE, True)
    return _REMOTE_CACHE


def entry_point():
    """AT_ENTRY of the inferior (locates the main executable), or None."""
    try:
        text = gdb.execute("info auxv", to_string=True)
    except gdb.error:
        return None
    m = _AT_ENTRY.search(text)
    return int(m.group(1), 16) if m else None


class ObjectFiles:
    """Opens the ELF file behind each mapped object, verified, and caches it per snapshot."""

    def __init__(self, inferior):
        self.inferior = inferior
        self._images = {}

    def open(self, name, first_mapping):
        if name in self._images:
            return self._images[name]
        image = None
        if not self.inferior.is_remote:
            mapfile = "/proc/%d/map_files/%x-%x" % (self.inferior.pid, first_mapping.start, first_mapping.end)
            try:
                same = os.path.samestat(os.stat(name), os.stat(mapfile)) and not first_mapping.deleted
            except OSError:
                same = False
            try:
                image = filecache.image(name if same else mapfile)  # parsed before the stop when prefetched
            except (OSError, errors.NsbError):
                image = None
        else:
            image = self._remote(name, first_mapping)
        self._images[name] = image
        return image

    def _remote(self, name, first_mapping):
        """The file behind a remote mapping: a local file of that name only if it is the mapped build.

        The build-id to match is read from the process's memory (the object's
        note), else GDB's own objfile of that name.  A "(deleted)" mapping is
        fetched from /proc/PID/map_files: the path names another file, if any.
        """
        want = None
        if first_mapping.offset == 0:
            want = build_id_in_memory(self.inferior.read, first_mapping.start)
        if want is None:
            objfile_bid = {o.filename.replace("target:", "", 1): o.build_id
                           for o in gdb.objfiles() if o.is_valid() and o.filename}
            want = objfile_bid.get(name)
        if first_mapping.deleted:
            sources = ["/proc/%d/map_files/%x-%x" % (self.inferior.pid, first_mapping.start, first_mapping.end)]
        else:
            if os.path.exists(name) and want is not None:
                try:
                    img = ElfImage(name)
                    if img.build_id == want:
                        return img
                except errors.NsbError:
                    pass
            sources = [name]
        for source in sources:
            dest = os.path.join(_remote_cache_dir(), source.strip("/").replace("/", "__"))
            try:
                gdb.execute("remote get %s %s" % (source, dest), to_string=True)
                img = ElfImage(dest)
            except (gdb.error, errors.NsbError, OSError):
                continue
            if want is None or img.build_id == want:
                return img
        return None


def ensure_main_executable(inferior, maps, entry):
    """Make GDB read the executable the process really runs, when it reads none or another build.

    After the file at the executable's path was replaced (a package upgrade),
    GDB finds only "PATH (deleted)" or the new build: no symbols, no solibs,
    no unwind tables, so every stack looks unreliable.  /proc/PID/exe still
    opens the running inode (read through gdbserver on a remote target).
    """
    main = next((m for m in maps if entry is not None and m.contains(entry)), None)
    if main is None or main.is_anonymous:
        return False
    pspace = gdb.selected_inferior().progspace
    have = None
    if pspace.filename:
        have = next((o.build_id for o in gdb.objfiles() if o.is_valid() and o.filename == pspace.filename), None)
    want = None
    if not inferior.is_remote:
        try:
            # The prefetched image of the same file when there is one (keyed by device and inode).
            want = filecache.image("/proc/%d/map_files/%x-%x" % (inferior.pid, main.start, main.end)).build_id
        except (OSError, errors.NsbError):
            want = None
    if have is not None and (have == want or (want is None and not main.deleted)):
        return False
    exe = ("target:" if inferior.is_remote else "") + "/proc/%d/exe" % inferior.pid
    try:
        with changed(NO_CONFIRM):
            gdb.execute("file %s" % exe, to_string=True)
    except gdb.error as e:
        raise errors.NsbError("GDB cannot read the running executable through %s: %s" % (exe, e)) from None
    return True


def snapshot(inferior, files=None):
    """A ProcessView of the stopped inferior (pure data plus a memory reader)."""
    files = files or ObjectFiles(inferior)
    maps = inferior.mappings()
    entry = entry_point()
    ensure_main_executable(inferior, maps, entry)
    groups = {}
    order = []
    vdso = None
    for m in maps:
        if m.objfile == "[vdso]":
            vdso = m
            continue
        if m.is_anonymous or m.is_special or m.name.startswith("/memfd:") or not m.name.startswith("/"):
            continue
        if m.name not in groups:
            groups[m.name] = []
            order.append(m.name)
        groups[m.name].append(m)
    objects = []
    images = {}
    for name in order:
        own = groups[name]
        image = files.open(name, own[0])
        if image is None:
            continue
        try:
            bias = compute_load_bias(image, own)
        except errors.NsbError:
            continue
        is_main = entry is not None and any(m.contains(entry) for m in own)
        obj = MappedObject(path=name, build_id=image.build_id, load_bias=bias, ranges=own,
                           is_main_executable=is_main, how_loaded="main" if is_main else None,
                           soname=image.soname)
        objects.append(obj)
        images[id(obj)] = image
    # The main executable first, the rest in address order (the binder orders the scope by DT_NEEDED).
    objects.sort(key=lambda o: (not o.is_main_executable, o.low))
    _mark_needed(objects, images)
    if vdso is not None:
        objects.append(MappedObject(path="[vdso]", build_id=None, load_bias=vdso.start, ranges=[vdso], is_vdso=True))
    view = ProcessView(objects=objects, mappings=maps, threads=len(inferior.threads()), memory=inferior,
                       open_image=lambda o: images[id(o)])
    return view


def _mark_needed(objects, images):
    """how_loaded='needed' for the DT_NEEDED closure of the main executable (breadth first)."""
    main = next((o for o in objects if o.is_main_executable), None)
    if main is None:
        return
    by_soname = {}
    for o in objects:
        by_soname.setdefault(o.soname or os.path.basename(o.path), o)
    seen = {id(main)}
    queue = [main]
    while queue:
        cur = queue.pop(0)
        for lib in images[id(cur)].needed:
            dep = by_soname.get(lib)
            if dep is not None and id(dep) not in seen:
                seen.add(id(dep))
                if dep.how_loaded is None:
                    dep.how_loaded = "needed"
                queue.append(dep)


def breakpoint_locations():
    """Addresses of every enabled breakpoint location GDB will insert."""
    out = []
    for b in gdb.breakpoints() or ():
        if not b.enabled or b.type not in (gdb.BP_BREAKPOINT, getattr(gdb, "BP_HARDWARE_BREAKPOINT", -1)):
            continue
        locs = getattr(b, "locations", None)
        if locs is not None:
            out += [loc.address for loc in locs if loc.enabled and loc.address is not None]
        else:
            out += _parse_locations(b.number)
    return out


def _parse_locations(number):
    try:
        text = gdb.execute("info breakpoints %d" % number, to_string=True)
    except gdb.error:
        return []
    return [int(a, 16) for a in re.findall(r"\s(0x[0-9a-fA-F]+)\s", text)]
