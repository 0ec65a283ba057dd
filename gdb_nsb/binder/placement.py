"""Where to map a patch: free address space within +-2 GiB of the whole target object.

The patch's PT_LOAD span is placed so that every byte of it and every byte
of the target lie in one window of less than 2 GiB: then a ``jmp rel32``
from any target entry reaches any patch address, and a 4-byte fix-up in the
patch reaches any target address, in both directions.  Ranges the process
will still grow into are kept free: 1 GiB after the heap (or after the
program break, or after the main executable when there is no [heap] yet,
where brk starts), the stack with room to grow, [vdso] and [vvar].  When no
free range is in reach, the patch goes anywhere free and uses absolute
jumps, unless a 4-byte fix-up needs reach (then: refused).
The choice is deterministic: the candidate closest to the target wins, the
lower address on ties.
"""

from __future__ import annotations

from dataclasses import dataclass

from gdb_nsb.binder.errors import NoAddressSpace, OutOfReach
from gdb_nsb.binder.process_view import PAGE_SIZE
from gdb_nsb.mappings import Mapping

GiB = 1 << 30
MiB = 1 << 20
REACH = (1 << 31) - 64  # max span of target+patch; margin for the jump's own length
HEAP_RESERVE = 1 * GiB
STACK_RESERVE = 256 * MiB  # below [stack]: RLIMIT_STACK growth plus the guard gap
GUARD = PAGE_SIZE  # never abut an existing mapping
MMAP_MIN = 0x10000
USER_TOP = 0x7FFFFFFFF000  # 47-bit user space; we never place above it


@dataclass(frozen=True)
class Placement:
    """The patch's load bias and the span it occupies; ``near`` when rel32 reaches."""

    bias: int
    start: int
    end: int
    near: bool

    @property
    def length(self) -> int:
        return self.end - self.start


def _align_up(x: int, a: int) -> int:
    return (x + a - 1) // a * a


def _align_down(x: int, a: int) -> int:
    return x // a * a


def reserved_ranges(mappings: list[Mapping], program_break: int | None = None,
                    main_executable_end: int | None = None) -> list[tuple[int, int]]:
    """Every range a patch must not take: the mappings plus the growth areas around them."""
    out = []
    heap = None
    for m in mappings:
        lo, hi = m.start - GUARD, m.end + GUARD
        if m.name == "[heap]":
            heap = m
            hi = m.end + HEAP_RESERVE
        elif m.name == "[stack]":
            lo = m.start - STACK_RESERVE
        out.append((max(0, lo), hi))
    if program_break is not None:
        out.append((program_break, program_break + HEAP_RESERVE))
    if heap is None and main_executable_end is not None:
        # brk starts (randomised by up to 32 MiB) right after the executable.
        out.append((main_executable_end, main_executable_end + HEAP_RESERVE))
    return sorted(out)


def free_gaps(reserved: list[tuple[int, int]], lo: int = MMAP_MIN, hi: int = USER_TOP) -> list[tuple[int, int]]:
    """Free [start, end) ranges between the reserved ones, within [lo, hi)."""
    gaps, cur = [], lo
    for a, b in sorted(reserved):
        if a > cur:
            gaps.append((cur, min(a, hi)))
        cur = max(cur, b)
        if cur >= hi:
            break
    if cur < hi:
        gaps.append((cur, hi))
    return [(a, b) for a, b in gaps if b > a]


def choose_placement(span: tuple[int, int], align: int, target_extent: tuple[int, int], mappings: list[Mapping],
                     program_break: int | None = None, main_executable_end: int | None = None,
                     need_near: bool = False, what: str = "patch") -> Placement:
    """Pick the patch's load bias.

    ``span`` is the patch's page-aligned link-time [lo, hi) of its PT_LOAD
    segments, ``align`` the largest segment alignment (the bias must be a
    multiple of it), ``target_extent`` the runtime [lo, hi) of every byte of
    the target object.  ``need_near`` refuses a far placement (4-byte fix-ups).
    """
    align = max(PAGE_SIZE, align)
    size = span[1] - span[0]
    t_lo, t_hi = target_extent
    gaps = free_gaps(reserved_ranges(mappings, program_break, main_executable_end))
    # Window that keeps target+patch under REACH: start >= t_hi - REACH, end <= t_lo + REACH.
    w_lo, w_hi = t_hi - REACH, t_lo + REACH
    near = _closest(gaps, w_lo, w_hi, size, align, span[0], t_lo, t_hi)
    if near is not None:
        return Placement(near - span[0], near, near + size, True)
    if need_near:
        raise OutOfReach("no free address range within +-2 GiB of the target for %s (%d KiB), and it has"
                         " 4-byte fix-ups that need that reach" % (what, size // 1024))
    far = _closest(gaps, 0, USER_TOP, size, align, span[0], t_lo, t_hi)
    if far is not None:
        return Placement(far - span[0], far, far + size, False)
    raise NoAddressSpace("no free address range of %d KiB for %s" % (size // 1024, what))


def _closest(gaps, w_lo, w_hi, size, align, span_lo, t_lo, t_hi):
    """The aligned start inside a gap and inside [w_lo, w_hi) closest to the target (lower on ties)."""
    best = None
    for g_lo, g_hi in gaps:
        for start in _candidates(max(g_lo, w_lo), min(g_hi, w_hi), size, align, span_lo, t_lo, t_hi):
            key = (max(t_lo - (start + size), start - t_hi, 0), start)
            if best is None or key < best:
                best = key
    return None if best is None else best[1]


def _candidates(lo: int, hi: int, size: int, align: int, span_lo: int, t_lo: int, t_hi: int):
    """Aligned starts in [lo, hi - size] closest to the target: the top and the bottom of the range."""
    out = []
    # bias = start - span_lo must be a multiple of align; span_lo is page aligned.
    top = _align_down(hi - size - span_lo, align) + span_lo
    bottom = _align_up(lo - span_lo, align) + span_lo
    for s in (top, bottom):
        if lo <= s and s + size <= hi and s not in out:
            out.append(s)
    return out
