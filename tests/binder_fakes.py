"""Synthetic process views built from real ELF files, for the binder's tests."""

from gdb_nsb.binder.process_view import MappedObject, ProcessView, page_down, page_up
from gdb_nsb.elf.image import ElfImage
from gdb_nsb.mappings import Mapping


def object_mappings(image, bias):
    """The mappings the kernel would create for ``image`` at ``bias`` (file-backed part only)."""
    out = []
    for s in image.segments:
        perms = ("r" if s.flags & 4 else "-") + ("w" if s.flags & 2 else "-") + ("x" if s.flags & 1 else "-") + "p"
        out.append(Mapping(page_down(bias + s.vaddr), page_up(bias + s.vaddr + s.memsz), page_down(s.offset),
                           perms, image.path))
    return out


def fake_object(image, bias, **kw):
    return MappedObject(path=image.path, build_id=image.build_id, load_bias=bias,
                        ranges=object_mappings(image, bias), soname=image.soname, **kw)


class FakeMemory:
    """Sparse memory: regions of bytes; reads outside raise OSError like an unmapped page."""

    def __init__(self):
        self.regions = {}

    def add(self, start, data):
        self.regions[start] = bytearray(data)

    def _find(self, addr, size):
        for start, buf in self.regions.items():
            if start <= addr and addr + size <= start + len(buf):
                return start, buf
        raise OSError("cannot access memory at %#x" % addr)

    def read(self, addr, size):
        start, buf = self._find(addr, size)
        return bytes(buf[addr - start:addr - start + size])

    def write(self, addr, data):
        start, buf = self._find(addr, len(data))
        buf[addr - start:addr - start + len(data)] = data

    def load_image(self, image, bias):
        for s in image.segments:
            self.add(bias + s.vaddr, image.read_vaddr(s.vaddr, s.memsz))


def make_view(objects, extra_mappings=(), memory=None, **kw):
    maps = [m for o in objects for m in o.ranges] + list(extra_mappings)
    return ProcessView(objects=list(objects), mappings=maps, memory=memory, **kw)


def load(path):
    return ElfImage(path)
