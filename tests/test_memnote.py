"""build_id_in_memory: the build-id note read from an object's mapped image (no file needed)."""

import pytest

import targets as T
from gdb_nsb.elf.image import ElfImage
from gdb_nsb.elf.memnote import build_id_in_memory

SRC = [("m.c", "int main(void) { return 0; }\n")]


class FakeMemory:
    """The PT_LOAD segments of ``image`` mapped at ``bias`` (reads outside them raise)."""

    def __init__(self, image, bias):
        self.image, self.bias = image, bias

    def read(self, addr, size):
        va = addr - self.bias
        for s in self.image.segments:
            lo = s.vaddr & ~0xfff
            if lo <= va and va + size <= s.vaddr + s.memsz:
                if va < s.vaddr:  # the page head before the segment holds the file bytes before it
                    return self.image.data[s.offset - (s.vaddr - va):][:size]
                return self.image.read_vaddr(va, size)
        raise OSError("unmapped %#x" % addr)


@pytest.mark.parametrize("flags,bias", [(["-fPIE", "-pie"], 0x55d0c0de0000), (["-no-pie", "-fno-pie"], 0)])
def test_build_id_from_mapped_image(flags, bias):
    path = T.build(SRC, flags, "memnote-%s" % flags[0].strip("-"))
    img = ElfImage(path)
    assert img.build_id
    first = min(s.vaddr for s in img.segments) & ~0xfff
    assert build_id_in_memory(FakeMemory(img, bias).read, bias + first) == img.build_id


def test_unknown_when_not_an_elf_or_unreadable():
    assert build_id_in_memory(lambda a, n: b"\0" * n, 0x1000) is None

    def fail(addr, size):
        raise OSError("no")
    assert build_id_in_memory(fail, 0x1000) is None
    path = T.build(SRC, ["-fPIE", "-pie"], "memnote-short")
    data = open(path, "rb").read()
    # Header readable, program headers cut short: unknown, not a wrong answer.
    assert build_id_in_memory(lambda a, n: data[a:a + n][:70], 0) is None


def test_build_id_without_note_is_none():
    path = T.build(SRC, ["-fPIE", "-pie", "-Wl,--build-id=none"], "memnote-none")
    img = ElfImage(path)
    assert img.build_id is None
    assert build_id_in_memory(FakeMemory(img, 0x7f0000000000).read, 0x7f0000000000) is None
