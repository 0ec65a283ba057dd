"""Synthetic process views built from real ELF files, for the tests of the binder and the lifecycle."""

import targets as T
from gdb_nsb.binder.jumps import ENDBR64
from gdb_nsb.binder.plan import evaluate
from gdb_nsb.binder.process_view import MappedObject, ProcessView, page_down, page_up
from gdb_nsb.elf.image import ElfImage
from gdb_nsb.elf.livepatch import FuncJump, LivePatch
from gdb_nsb.mappings import Mapping
from gdb_nsb.registry import Registry

EXE_BIAS = 0x555555554000
TARGET_C = r"""
#include <stdio.h>
int f(int x) { int y = x * 3; if (y > 100) y -= 7; printf("%d\n", y); return y + 1; }
void nop(void) { }
int main(int argc, char **argv) { (void)argv; nop(); return f(argc); }
"""


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


def patch_src(k):
    return "int f(int x) { return x + %d; }\n" % (100 * (k + 1))


def build_world(flavor):
    """A PIE target (``plain`` or ``cet``: endbr64 at entries) and three patches A, B, C of its ``f``.

    Returns (target image, f's symbol, {key: (LivePatch, patch image)})."""
    cet = ["-fcf-protection=full"] if flavor == "cet" else ["-fcf-protection=none"]
    target = load(T.build([("t.c", TARGET_C)], ["-O0", "-g", "-fPIE", "-pie"] + cet, "t-" + flavor))
    f = next(s for s in target.symtab if s.name == "f")
    assert (target.read_vaddr(f.value, 4) == ENDBR64) == (flavor == "cet")
    patches = {}
    for k, key in enumerate("ABC"):
        img = load(T.build_patch([("p%s.c" % key, patch_src(k))], "p%s.so" % key))
        pf = next(s for s in img.dynsyms if s.name == "f")
        lp = LivePatch(old_bid=target.build_id, new_bid=img.build_id, target_is_executable=True,
                       func_jumps=[FuncJump("f", f.value, f.size, pf.value, f.shndx,
                                            entry_bytes=target.read_vaddr(f.value, 24))])
        patches[key] = (lp, img)
    return target, f, patches


class Sim:
    """A process holding the target; executes plans the way the GDB layer must (checking expected bytes)."""

    def __init__(self, target):
        self.target = target
        self.main = fake_object(target, EXE_BIAS, is_main_executable=True)
        self.mem = FakeMemory()
        self.mem.load_image(target, EXE_BIAS)
        self.patch_maps = []
        self.registry = Registry()

    def view(self, blockers=()):
        return make_view([self.main], extra_mappings=self.patch_maps + list(blockers), memory=self.mem)

    def execute(self, plan):
        assert evaluate(plan, self.mem) == []
        plan.check()
        if getattr(plan, "mapping", None) is not None:
            mp = plan.mapping
            assert all(not (p & 2) for _, _, p in mp.protections)  # never writable
            self.mem.add(mp.start, bytes(mp.length))
            self.patch_maps.append(Mapping(mp.start, mp.end, 0, "r-xp", ""))
        for w in plan.writes:
            if w.expected is not None:
                assert self.mem.read(w.addr, len(w.expected)) == w.expected
            self.mem.write(w.addr, w.data)
        self.registry = plan.registry_after


def applied_sim(world, *keys):
    """A Sim of ``world``'s target with its patches ``keys`` applied in that order."""
    from gdb_nsb.binder.plan import plan_load
    target, _, patches = world
    sim = Sim(target)
    for k in keys:
        lp, img = patches[k]
        sim.execute(plan_load(sim.view(), lp, img, sim.registry))
    return sim
