"""What the GDB layer snapshots of a stopped process, as plain data.

The binder plans against a :class:`ProcessView` only; it never talks to GDB.
The GDB layer fills it from ``info proc mappings``, the link map and its
thread list, and hands a :class:`MemoryReader` for the few words the binder
must read (resolved GOT slots of IFUNC symbols, bytes at function entries).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

from gdb_nsb import shadow
from gdb_nsb.errors import ElfError
from gdb_nsb.mappings import Mapping

PAGE_SIZE = 0x1000

# How an object came into the process, as far as the GDB layer can tell.
LOADED_MAIN = "main"
LOADED_PRELOAD = "preload"
LOADED_NEEDED = "needed"
LOADED_DLOPEN_GLOBAL = "dlopen-global"
LOADED_DLOPEN_LOCAL = "dlopen-local"
LOADED_UNKNOWN = None

def page_down(x: int) -> int:
    return x & ~(PAGE_SIZE - 1)


def page_up(x: int) -> int:
    return (x + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


class MemoryReader(Protocol):
    """Reads the inferior's memory; raises NsbError (or OSError) if unreadable."""

    def read(self, addr: int, size: int) -> bytes: ...


@dataclass
class MappedObject:
    """An ELF object mapped in the process (the main executable, a library, the vDSO)."""

    path: str
    build_id: str | None
    load_bias: int
    ranges: list[Mapping] = field(default_factory=list)  # gdb_nsb.mappings.Mapping
    is_vdso: bool = False
    is_main_executable: bool = False
    how_loaded: str | None = LOADED_UNKNOWN
    soname: str | None = None

    @property
    def low(self) -> int:
        return min(m.start for m in self.ranges)

    @property
    def high(self) -> int:
        return max(m.end for m in self.ranges)

    def contains(self, addr: int) -> bool:
        return any(m.contains(addr) for m in self.ranges)


@dataclass
class ProcessView:
    """A snapshot of a stopped process.

    ``objects`` are in link-map order (the main executable first, then the
    objects in the order the dynamic linker loaded them), ``mappings`` sorted
    by address.  ``program_break`` is the current brk when the GDB layer knows
    it.  ``open_image`` opens the ELF file of an object (the GDB layer may
    point it at /proc/PID/map_files or a sysroot copy when the path on disk
    has another build-id); the default opens ``obj.path``.
    """

    objects: list[MappedObject]
    mappings: list[Mapping]
    threads: int = 1
    memory: MemoryReader | None = None
    program_break: int | None = None
    open_image: Callable[[MappedObject], object] | None = None
    # True for a plan that only describes (dry run, check): the shadow region an apply would map first
    # is then taken as mapped (at 0) instead of refusing the patch.
    shadow_planned: bool = False
    _images: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        self.mappings = sorted(self.mappings, key=lambda m: m.start)

    @property
    def shadow_region(self) -> int | None:
        """Start of the process's shadow region (gdb_nsb.shadow), None while it has none."""
        found = shadow.region_in(self.mappings)
        return found[0] if found else None

    @property
    def main_executable(self) -> MappedObject | None:
        return next((o for o in self.objects if o.is_main_executable), None)

    def object_by_build_id(self, build_id: str) -> MappedObject | None:
        return next((o for o in self.objects if o.build_id == build_id and not o.is_vdso), None)

    def object_containing(self, addr: int) -> MappedObject | None:
        return next((o for o in self.objects if o.contains(addr)), None)

    def mapping_named(self, name: str) -> Mapping | None:
        return next((m for m in self.mappings if m.name == name), None)

    def image(self, obj: MappedObject):
        """The ElfImage of ``obj`` (cached per snapshot)."""
        key = id(obj)
        if key not in self._images:
            if self.open_image is not None:
                self._images[key] = self.open_image(obj)
            else:
                from gdb_nsb.elf.image import ElfImage
                self._images[key] = ElfImage(obj.path)
        return self._images[key]


def compute_load_bias(image, mappings: list[Mapping]) -> int:
    """The real load bias of ``image`` given the mappings of its file.

    0 for ET_EXEC.  For ET_DYN: the start of the mapping that holds the
    segment with file offset 0, minus that segment's page-aligned p_vaddr;
    if no such mapping is listed, any file-backed mapping whose offset lies
    in a PT_LOAD segment gives the same answer.  Never "start of the first
    executable mapping": with text at 0x1000 that is off by a page.
    """
    if image.elf_type == "ET_EXEC":
        return 0
    file_maps = [m for m in mappings if not m.is_anonymous and not m.is_special]
    candidates = sorted(file_maps, key=lambda m: (m.offset != 0, m.start))
    for m in candidates:
        for s in image.segments:
            seg_off = page_down(s.offset)
            if seg_off <= m.offset < max(s.offset + s.filesz, seg_off + PAGE_SIZE):
                return m.start - (page_down(s.vaddr) + (m.offset - seg_off))
    raise ElfError("%s: none of its %d mappings matches a PT_LOAD segment; cannot compute its load bias"
                   % (image.path, len(file_maps)))


def object_from_mappings(image, mappings: list[Mapping], **kw) -> MappedObject:
    """A MappedObject for ``image`` from the mappings of its file (bias computed)."""
    own = [m for m in mappings if m.name == image.path]
    return MappedObject(path=image.path, build_id=image.build_id, load_bias=compute_load_bias(image, own),
                        ranges=own, soname=image.soname, **kw)
