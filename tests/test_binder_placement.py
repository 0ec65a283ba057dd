import pytest

from gdb_nsb.binder.errors import NoAddressSpace, OutOfReach
from gdb_nsb.binder.placement import HEAP_RESERVE, STACK_RESERVE, GiB, choose_placement, free_gaps, reserved_ranges
from gdb_nsb.mappings import Mapping

MiB = 1 << 20
EXE = 0x555555554000
LIB = 0x7FFFF7C00000


def m(lo, hi, name="", perms="r--p"):
    return Mapping(lo, hi, 0, perms, name)


def pie_layout():
    return [
        m(EXE, EXE + 0x5000, "/bin/target", "r-xp"),
        m(EXE + 0x5000, EXE + 0x6000, "/bin/target", "rw-p"),
        m(EXE + 0x100000, EXE + 0x121000, "[heap]", "rw-p"),
        m(LIB, LIB + 0x200000, "/lib/libc.so.6", "r-xp"),
        m(0x7FFFF7FC0000, 0x7FFFF7FC4000, "[vvar]"),
        m(0x7FFFF7FC4000, 0x7FFFF7FC6000, "[vdso]", "r-xp"),
        m(0x7FFFFFFDE000, 0x7FFFFFFFF000, "[stack]", "rw-p"),
    ]


def assert_free_and_in_reach(p, maps, extent, size):
    assert p.end - p.start == size and p.start % 0x1000 == 0
    for x in maps:
        assert x.end <= p.start or x.start >= p.end, "overlaps %s" % (x,)
    assert max(p.end, extent[1]) - min(p.start, extent[0]) < (1 << 31)


def test_pie_executable_target_goes_near_and_not_into_heap_growth():
    maps = pie_layout()
    extent = (EXE, EXE + 0x6000)
    p = choose_placement((0, 0x4000), 0x1000, extent, maps)
    assert p.near and p.bias == p.start
    assert_free_and_in_reach(p, maps, extent, 0x4000)
    heap = maps[2]
    assert not (heap.end <= p.start < heap.end + HEAP_RESERVE)
    # Deterministic: the closest free range below the executable.
    assert p.end <= EXE and EXE - p.end <= 0x2000
    assert choose_placement((0, 0x4000), 0x1000, extent, maps) == p


def test_library_target_avoids_vdso_vvar_stack():
    maps = pie_layout()
    extent = (LIB, LIB + 0x200000)
    p = choose_placement((0, 0x3000), 0x1000, extent, maps)
    assert p.near
    assert_free_and_in_reach(p, maps, extent, 0x3000)
    for name in ("[vdso]", "[vvar]"):
        v = next(x for x in maps if x.name == name)
        assert p.end <= v.start or p.start >= v.end
    stack = maps[-1]
    assert p.end <= stack.start - STACK_RESERVE


def test_alignment_of_segments_is_respected():
    maps = pie_layout()
    p = choose_placement((0, 0x3000), 0x200000, (LIB, LIB + 0x200000), maps)
    assert p.bias % 0x200000 == 0 and p.near


def test_span_not_starting_at_zero():
    maps = pie_layout()
    p = choose_placement((0x1000, 0x5000), 0x1000, (EXE, EXE + 0x6000), maps)
    assert p.start == p.bias + 0x1000 and p.end - p.start == 0x4000


def test_no_heap_mapping_reserves_brk_area_after_executable():
    # Static binary before its first brk: no [heap] yet.
    exe = [m(0x400000, 0x4C0000, "/bin/static", "r-xp"), m(0x4C0000, 0x4C8000, "/bin/static", "rw-p")]
    p = choose_placement((0, 0x2000), 0x1000, (0x400000, 0x4C8000), exe, main_executable_end=0x4C8000)
    assert p.near and not (0x4C8000 <= p.start < 0x4C8000 + GiB)
    assert p.end <= 0x400000


def test_program_break_area_reserved():
    maps = [m(0x10000000, 0x10010000, "/bin/t", "r-xp")]
    r = reserved_ranges(maps, program_break=0x20000000)
    assert (0x20000000, 0x20000000 + HEAP_RESERVE) in r


def test_crowded_space_falls_back_to_far_placement():
    t = (0x100000000, 0x100010000)
    maps = [m(t[0], t[1], "/bin/t", "r-xp"), m(0x10000, t[0] - 0x1000), m(t[1] + 0x1000, t[1] + 3 * GiB)]
    p = choose_placement((0, 0x2000), 0x1000, t, maps)
    assert not p.near
    for x in maps:
        assert x.end <= p.start or x.start >= p.end
    # Deterministic choice: the first free page after the blocker (closest to the target).
    assert p.start == t[1] + 3 * GiB + 0x1000


def test_far_refused_when_four_byte_fixups_need_reach():
    t = (0x100000000, 0x100010000)
    maps = [m(t[0], t[1], "/bin/t", "r-xp"), m(0x10000, t[0] - 0x1000), m(t[1] + 0x1000, t[1] + 3 * GiB)]
    with pytest.raises(OutOfReach, match="4-byte fix-ups"):
        choose_placement((0, 0x2000), 0x1000, t, maps, need_near=True, what="fix.so")


def test_exact_reach_boundary():
    # Target 2 GiB - 3 pages long: only a 1-page patch fits, right next to it.
    t = (0x200000000, 0x200000000 + 2 * GiB - 0x3000)
    maps = [m(t[0], t[1], "/bin/huge", "r-xp")]
    p = choose_placement((0, 0x1000), 0x1000, t, maps)
    assert p.near and max(p.end, t[1]) - min(p.start, t[0]) < (1 << 31)
    p2 = choose_placement((0, 0x3000), 0x1000, t, maps)
    assert not p2.near


def test_no_space_at_all():
    maps = [m(0x10000, 0x7FFFFFFFF000)]
    with pytest.raises(NoAddressSpace):
        choose_placement((0, 0x1000), 0x1000, (0x400000, 0x401000), maps)


def test_free_gaps():
    assert free_gaps([(0x20000, 0x30000)], 0x10000, 0x50000) == [(0x10000, 0x20000), (0x30000, 0x50000)]
    assert free_gaps([(0, 0x60000)], 0x10000, 0x50000) == []
