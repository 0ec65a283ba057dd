"""The safe-point rule without GDB: frames as data, every rule of REFERENCE 2.1."""

import pytest

from gdb_nsb.safepoint import DUMMY, INLINE, NORMAL, OUTERMOST, SIGTRAMP, Frame, KnownCode, SafePointCheck, ThreadStack

F = 0x401000          # busy function f: [F, F+0x40), cold fragment [COLD, COLD+0x10)
COLD = 0x402000
G = 0x403000          # busy function g (a layer copy elsewhere)
CHECK = SafePointCheck({"f": [(F, F + 0x40), (COLD, COLD + 0x10)], "g": [(G, G + 0x20)]})
OUT = 0x500000        # code outside every busy range


def stack(*frames, reason=OUTERMOST, num=1, lwp=100, name="worker"):
    return ThreadStack(num, lwp, name, list(frames), reason)


def fr(pc, kind=NORMAL, known=True, name=None):
    return Frame(pc, kind, known, name)


def test_no_busy_frame_is_safe():
    v = CHECK.check([stack(fr(OUT), fr(OUT + 0x100), fr(OUT + 0x200))])
    assert v.safe and v.message() == "safe point reached"


def test_innermost_inside_function_is_busy_and_named():
    v = CHECK.check([stack(fr(F + 5), fr(OUT), num=3, lwp=1234, name="srv")])
    assert not v.safe
    o = v.offenders[0]
    assert (o.thread, o.level, o.function, o.busy) == (3, 0, "f", True)
    msg = v.message()
    assert "thread 3" in msg and "LWP 1234" in msg and "frame #0" in msg and "f" in msg and "0x401005" in msg
    assert "\n" not in msg


def test_innermost_exactly_at_entry_is_safe():
    assert CHECK.check([stack(fr(F), fr(OUT))]).safe


def test_innermost_at_end_of_range_is_outside():
    assert CHECK.check([stack(fr(F + 0x40), fr(OUT))]).safe
    assert not CHECK.check([stack(fr(F + 0x3f), fr(OUT))]).safe


def test_caller_frame_tested_at_pc_minus_one():
    # Return address just past f's last byte: the call instruction is inside f.
    v = CHECK.check([stack(fr(OUT), fr(F + 0x40), fr(OUT + 0x10))])
    assert [(o.level, o.function) for o in v.offenders] == [(1, "f")]
    # Return address exactly at f's entry: the call is before f (not busy).
    assert CHECK.check([stack(fr(OUT), fr(F), fr(OUT + 0x10))]).safe
    # Return address at entry+1: the call instruction covers the entry byte: busy, entry rule not applied.
    assert not CHECK.check([stack(fr(OUT), fr(F + 1), fr(OUT + 0x10))]).safe


def test_cold_fragment_is_busy():
    v = CHECK.check([stack(fr(COLD + 4), fr(OUT))])
    assert v.offenders[0].function == "f"
    # ... and the cold fragment's first byte is no entry.
    assert not CHECK.check([stack(fr(COLD), fr(OUT))]).safe


def test_signal_frames_unwound_through_and_interrupted_frame_tested_at_pc():
    # handler (outside) <- sigtramp <- interrupted frame at F (entry): tested at pc, so safe.
    assert CHECK.check([stack(fr(OUT), fr(OUT + 0x800, SIGTRAMP), fr(F), fr(OUT + 0x10))]).safe
    # interrupted frame at F+0x40 (just past f): tested at pc, outside; at pc-1 it would be inside.
    assert CHECK.check([stack(fr(OUT), fr(OUT + 0x800, SIGTRAMP), fr(F + 0x40), fr(OUT))]).safe
    # interrupted inside f: busy, found below the signal frame.
    v = CHECK.check([stack(fr(OUT), fr(OUT + 0x800, SIGTRAMP), fr(F + 8), fr(OUT))])
    assert [(o.level, o.function) for o in v.offenders] == [(2, "f")]
    # A frame older than the interrupted one is a caller again: pc-1.
    v = CHECK.check([stack(fr(OUT), fr(OUT + 0x800, SIGTRAMP), fr(OUT + 4), fr(G + 0x20), fr(OUT))])
    assert [(o.level, o.function) for o in v.offenders] == [(3, "g")]


def test_handler_stopped_inside_replaced_function_is_busy():
    v = CHECK.check([stack(fr(G + 3), fr(OUT + 0x800, SIGTRAMP), fr(OUT + 4), fr(OUT))])
    assert [(o.level, o.function) for o in v.offenders] == [(0, "g")]


def test_inline_frame_shares_test_address_with_its_physical_frame():
    # Inline frame innermost at pc F+0x40 (outside f), its containing frame has the same pc:
    # tested at pc too, not pc-1 (which would land in f).
    assert CHECK.check([stack(fr(F + 0x40, INLINE), fr(F + 0x40), fr(OUT))]).safe
    v = CHECK.check([stack(fr(OUT), fr(F + 0x40, INLINE), fr(F + 0x40), fr(OUT))])
    assert [o.level for o in v.offenders] == [1, 2]


def test_dummy_frame_makes_the_older_frame_interrupted():
    assert CHECK.check([stack(fr(OUT), fr(0x7ffff000, DUMMY, known=False), fr(F + 0x40), fr(OUT))]).safe
    assert not CHECK.check([stack(fr(OUT), fr(0x7ffff000, DUMMY, known=False), fr(F + 2), fr(OUT))]).safe


@pytest.mark.parametrize("frames,reason,words", [
    ((fr(0), fr(OUT)), OUTERMOST, "pc 0"),
    ((fr(OUT), fr(None)), OUTERMOST, "unreadable memory"),
    ((fr(OUT), fr(0x7f0000001000, known=False, name="??")), OUTERMOST, "unknown code"),
    ((fr(OUT), fr(OUT + 8)), "previous frame identical to this frame (corrupt stack?)", "not unwound"),
    ((fr(OUT),), "frame did not save the PC", "did not save the PC"),
    ((), "no frames", "not unwound"),
])
def test_unreliable_stacks_are_unsafe_with_reason(frames, reason, words):
    v = CHECK.check([stack(*frames, reason=reason)])
    assert not v.safe
    assert words in v.message()
    assert not v.offenders[-1].busy
    assert v.unreliable_threads() == [1]


def test_unknown_code_stops_the_walk_and_says_so():
    v = CHECK.check([stack(fr(OUT, known=False), fr(F + 3))])
    assert len(v.offenders) == 1 and "unknown code" in v.offenders[0].reason


def test_several_threads_and_outermost_busy_frame():
    v = CHECK.check([
        stack(fr(OUT), num=1, lwp=10),
        stack(fr(F + 3), fr(G + 0x10), fr(F + 0x10), fr(OUT), num=2, lwp=11),
        stack(fr(G + 1), fr(OUT), num=3, lwp=12),
    ])
    assert [(o.thread, o.level) for o in v.offenders] == [(2, 0), (2, 1), (2, 2), (3, 0)]
    ob = v.outermost_busy()
    assert ob[2].level == 2 and ob[3].level == 0 and 1 not in ob
    assert "and 3 more frames" in v.message()


def test_overlapping_and_nested_ranges_found():
    c = SafePointCheck({"big": [(0x1000, 0x9000)], "small": [(0x2000, 0x2100)]})
    assert c.function_at(0x8fff) == "big"
    assert c.function_at(0x2050) in ("big", "small")
    assert c.function_at(0x9000) is None and c.function_at(0xfff) is None


def test_explicit_entries_and_empty_range_refused():
    c = SafePointCheck({"f": [(F, F + 0x40)], "f_layer": [(G, G + 0x20)]}, entries={"f_layer": [G]})
    assert c.check([stack(fr(G), fr(OUT))]).safe
    with pytest.raises(ValueError):
        SafePointCheck({"f": [(F, F)]})


SECTIONS = """Exec file: `/tmp/t', file type elf64-x86-64.
 [13]     0x555555555000->0x555555555017 at 0x00001000: .init ALLOC LOAD READONLY CODE HAS_CONTENTS
 [14]     0x555555555130->0x555555555411 at 0x00001130: .text ALLOC LOAD READONLY CODE HAS_CONTENTS
 [18]     0x555555556070->0x555555556194 at 0x00002070: .eh_frame ALLOC LOAD READONLY DATA HAS_CONTENTS
Object file: `/lib/x86_64-linux-gnu/libc.so.6', file type elf64-x86-64.
 [15]     0x7ffff7c19380->0x7ffff7d6d22d at 0x00026380: .text ALLOC LOAD READONLY CODE HAS_CONTENTS
Object file: `/usr/lib/debug/.build-id/93/ac.debug', file type elf64-x86-64.
 [15]     0x7ffff7c19380->0x7ffff7d6d22d at 0x00001000: .text ALLOC READONLY CODE
 [30]     0x0->0x2a0 at 0x00001000: .debug_frame READONLY HAS_CONTENTS
Object file: `/tmp/nounwind.so', file type elf64-x86-64.
 [11]     0x7ffff7fb0000->0x7ffff7fb0100 at 0x00001000: .text ALLOC LOAD READONLY CODE HAS_CONTENTS
Object file: `system-supplied DSO at 0x7ffff7fc1000', file type elf64-x86-64.
 [10]     0x7ffff7fc1660->0x7ffff7fc177c at 0x00000660: .eh_frame ALLOC LOAD READONLY DATA HAS_CONTENTS
 [11]     0x7ffff7fc1780->0x7ffff7fc247c at 0x00000780: .text ALLOC LOAD READONLY CODE HAS_CONTENTS
"""


def test_known_code_from_gdb_sections():
    k = KnownCode.from_sections_text(SECTIONS)
    assert 0x555555555000 in k and 0x555555555200 in k
    assert 0x555555555017 not in k and 0x555555556080 not in k     # data (.eh_frame) is no code
    assert 0x7ffff7c20000 in k                                       # libc: tables in its debug file
    assert 0x7ffff7fc1800 in k                                       # vDSO
    assert 0x7ffff7fb0010 not in k                                   # no unwind tables at all
    assert 0x1000 not in k
