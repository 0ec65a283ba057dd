"""Anything still pointing into a patch before it is unmapped: registers and writable words."""

import struct

import pytest

from binder_fakes import FakeMemory
from gdb_nsb import errors
from gdb_nsb.lifecycle.pointers import CHUNK, find_pointer_into
from gdb_nsb.mappings import Mapping

LO, HI = 0x7f1234560000, 0x7f1234570000


def world(words):
    """A writable heap of 3 MiB (over several read chunks) and a read-only page, with ``words`` at offsets."""
    mem = FakeMemory()
    heap = bytearray(3 * CHUNK)
    for off, value in words.items():
        struct.pack_into("<Q", heap, off, value)
    mem.add(0x10000000, heap)
    mem.add(0x20000000, struct.pack("<Q", LO + 8) * 512)
    maps = [Mapping(0x10000000, 0x10000000 + len(heap), 0, "rw-p", "[heap]"),
            Mapping(0x20000000, 0x20001000, 0, "r--p", "/lib/x.so")]
    return mem, maps


def test_a_register_of_any_thread():
    def registers():
        yield 1, {"rip": 0x401000, "rsp": 0x7ffc0000}
        yield 2, {"rip": LO + 0x10, "rax": "<unavailable>"}
        raise AssertionError("threads past the first hit are not read")

    mem, maps = world({})
    assert find_pointer_into(registers(), maps, mem, LO, HI) == "register rip of thread 2 (%#x)" % (LO + 0x10)
    assert find_pointer_into([(1, {"rip": HI})], maps, mem, LO, HI) is None  # the end is outside


def test_an_aligned_writable_word_in_any_chunk():
    for off in (0, 8, CHUNK - 8, CHUNK + 16, 3 * CHUNK - 8):
        mem, maps = world({off: LO + 0x20})
        assert find_pointer_into([], maps, mem, LO, HI).startswith("the word at %#x ([heap]" % (0x10000000 + off))
    mem, maps = world({4: LO + 0x20})  # unaligned: not a pointer a program would follow
    assert find_pointer_into([], maps, mem, LO, HI) is None
    # The read-only mapping full of pointers is not scanned, nor an excluded one.
    mem, maps = world({64: LO})
    assert find_pointer_into([], maps, mem, LO, HI, exclude=[(0x10000000, 0x1000)]) is None


def test_a_range_across_a_4_gib_boundary():
    lo, hi = 0x7fff_fff0_0000, 0x8000_0010_0000
    for value in (lo, 0x8000_0000_0000, hi - 1):
        mem, maps = world({CHUNK + 24: value})
        hit = find_pointer_into([], maps, mem, lo, hi)
        assert hit.startswith("the word at %#x ([heap]" % (0x10000000 + CHUNK + 24))
    mem, maps = world({CHUNK + 24: hi})
    assert find_pointer_into([], maps, mem, lo, hi) is None


def test_an_unreadable_writable_mapping_refuses_naming_it():
    # It could hold the one pointer into the patch: an unmap must not go ahead unchecked
    # (the scan used to stop at it and answer "nothing points there").
    mem, maps = world({})
    maps.append(Mapping(0x30000000, 0x30001000, 0, "rw-p", ""))  # listed, but no memory behind it
    with pytest.raises(errors.BusyError, match=r"^the writable mapping 0x30000000-0x30001000 \(anonymous memory\) "
                       r"cannot be read at 0x30000000, so it cannot be checked for pointers into the patch \("):
        find_pointer_into([], maps, mem, LO, HI)
    # Readable for its first chunk only: named at the chunk that failed.
    mem, maps = world({})
    maps[0] = Mapping(0x10000000, 0x10000000 + 4 * CHUNK, 0, "rw-p", "[heap]")
    with pytest.raises(errors.BusyError, match=r"^the writable mapping 0x10000000-0x10400000 \(\[heap\]\) "
                       r"cannot be read at 0x10300000,"):
        find_pointer_into([], maps, mem, LO, HI)
    # A pointer found before the unreadable part still answers first.
    mem, maps = world({16: LO})
    maps.append(Mapping(0x30000000, 0x30001000, 0, "rw-p", ""))
    assert find_pointer_into([], maps, mem, LO, HI).startswith("the word at 0x10000010 ([heap], ")


def test_stack_below_the_stack_pointer_is_dead_except_the_red_zone():
    """A stale return address below a thread's rsp (a call into the patch that returned) holds nothing alive."""
    base = 0x10000000
    sp = base + 2 * CHUNK + 0x800
    stale, red, live = sp - 0x400, sp - 64, sp + 0x100
    for where, found in ((stale, False), (red, True), (live, True)):
        mem, maps = world({where - base: LO + 0x10})
        regs = [(1, {"rip": 0x401000, "rsp": sp}), (2, {"rip": 0x401000, "rsp": 0x7ffc0000})]
        hit = find_pointer_into(iter(regs), maps, mem, LO, HI)
        assert (hit is not None) == found, (hex(where - sp), hit)
        if found:
            assert "the word at %#x" % where in hit


def test_holes_are_not_pointed_into():
    """A replaced patch's copy of a redirected function: a word there is a stale return address, not a pointer."""
    mem, maps = world({64: LO + 0x100, 128: LO + 0x900})
    assert "%#x" % (LO + 0x100) in find_pointer_into([], maps, mem, LO, HI)
    hit = find_pointer_into([], maps, mem, LO, HI, holes=[(LO, LO + 0x800)])
    assert hit is not None and "%#x" % (LO + 0x900) in hit
    assert find_pointer_into([(1, {"rbx": LO + 0x10})], maps, mem, LO, HI, holes=[(LO, LO + 0x1000)]) is None
