"""The target's memory map as GDB's ``info proc mappings`` prints it (pure).

GDB prints the map the same way for a native process and through
``gdbserver`` (it reads ``/proc/PID/maps`` on the target side), so this text
is the one source of the map that works everywhere.  GDB 12+ prints a
``Perms`` column; older versions do not, and then ``perms`` is ``None``.
"""

import re
from dataclasses import dataclass
from typing import List, Optional

_HEX = r"0x[0-9a-fA-F]+"
_LINE = re.compile(r"^\s*(%s)\s+(%s)\s+(%s)\s+(%s)(?:\s+([r-][w-][x-][psS-]))?(?:\s+(.*?))?\s*$"
                   % (_HEX, _HEX, _HEX, _HEX))

DELETED_SUFFIX = " (deleted)"
PAGE_SIZE = 4096


@dataclass(frozen=True)
class Mapping:
    """One mapped range: [start, end), file offset, permissions, backing object."""

    start: int
    end: int
    offset: int
    perms: Optional[str]  # "r-xp" style, None when GDB does not print permissions
    objfile: str          # path, "[heap]", "[stack]", "/memfd:name (deleted)", or "" (anonymous)

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def readable(self) -> bool:
        return self.perms is not None and self.perms[0:1] == "r"

    @property
    def writable(self) -> bool:
        return self.perms is not None and self.perms[1:2] == "w"

    @property
    def executable(self) -> bool:
        return self.perms is not None and self.perms[2:3] == "x"

    @property
    def private(self) -> bool:
        return self.perms is not None and self.perms[3:4] == "p"

    @property
    def deleted(self) -> bool:
        return self.objfile.endswith(DELETED_SUFFIX)

    @property
    def name(self) -> str:
        """The backing object without the " (deleted)" suffix."""
        return self.objfile[:-len(DELETED_SUFFIX)] if self.deleted else self.objfile

    @property
    def is_anonymous(self) -> bool:
        return self.objfile == ""

    @property
    def is_special(self) -> bool:
        """A kernel-provided region: [heap], [stack], [vdso], [vvar], [vsyscall] ..."""
        return self.objfile.startswith("[")

    def contains(self, addr: int) -> bool:
        return self.start <= addr < self.end


def parse_mappings(text: str) -> List[Mapping]:
    """Parse the output of ``info proc mappings``; header lines are skipped.

    Raises ValueError if the text holds no mapping line at all (GDB printed an
    error or the process has no map), since an empty map is never real.
    """
    out = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        start, end, size, offset = (int(m.group(i), 16) for i in range(1, 5))
        if end - start != size:
            raise ValueError("inconsistent mapping line: %r" % line.strip())
        out.append(Mapping(start, end, offset, m.group(5), m.group(6) or ""))
    if not out:
        raise ValueError("no mapping lines in 'info proc mappings' output: %r" % text.strip()[:200])
    return out


def parse_proc_maps(text: str) -> List[Mapping]:
    """Parse ``/proc/PID/maps`` (read directly, without GDB); an empty map is an empty list."""
    out = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5 or "-" not in parts[0]:
            continue
        lo, hi = parts[0].split("-", 1)
        out.append(Mapping(int(lo, 16), int(hi, 16), int(parts[2], 16), parts[1],
                           parts[5].strip() if len(parts) == 6 else ""))
    return out


def contiguous_runs(mappings: List[Mapping], name: str) -> List[tuple]:
    """(start, size) of each run of mappings of ``name`` that starts at file offset 0 and
    continues at the next offset (one mapped file may be split by permissions)."""
    out: List[tuple] = []
    for m in named(mappings, name):
        if out and out[-1][0] + out[-1][1] == m.start and m.offset == out[-1][2] + out[-1][1]:
            out[-1] = (out[-1][0], out[-1][1] + m.size, out[-1][2])
        else:
            out.append((m.start, m.size, m.offset))
    return [(start, size) for start, size, offset in out if offset == 0]


def mapping_at(mappings: List[Mapping], addr: int) -> Optional[Mapping]:
    """The mapping containing ``addr``, or None."""
    for m in mappings:
        if m.contains(addr):
            return m
    return None


def named(mappings: List[Mapping], name: str) -> List[Mapping]:
    """Mappings whose backing object (without " (deleted)") equals ``name``."""
    return [m for m in mappings if m.name == name]


def is_free(mappings: List[Mapping], start: int, end: int) -> bool:
    """True if no mapping overlaps [start, end)."""
    return all(m.end <= start or m.start >= end for m in mappings)


def gaps(mappings: List[Mapping], lo: int = PAGE_SIZE, hi: int = 1 << 47) -> List[tuple]:
    """Unmapped (start, end) ranges between ``lo`` and ``hi``, in address order."""
    out = []
    cur = lo
    for m in sorted(mappings, key=lambda m: m.start):
        if m.end <= cur:
            continue
        if m.start >= hi:
            break
        if m.start > cur:
            out.append((cur, m.start))
        cur = max(cur, m.end)
    if cur < hi:
        out.append((cur, hi))
    return out


class RangeIndex:
    """Answers "does one of these [start, end) ranges contain [lo, hi)?" in O(log n).

    The ranges may overlap.  Sorted by start, with the running maximum of
    their ends: some range starting at or below ``lo`` reaches ``hi`` exactly
    when that maximum, over the ranges starting at or below ``lo``, does.
    (A linear scan per write made the write guards quadratic: 1000 functions
    cost half a million comparisons inside the stop.)
    """

    def __init__(self, ranges):
        import bisect
        self._bisect = bisect.bisect_right
        pairs = sorted((int(s), int(e)) for s, e in ranges)
        self._starts = [s for s, _ in pairs]
        self._reach = []
        best = None
        for _, e in pairs:
            best = e if best is None else max(best, e)
            self._reach.append(best)

    def contains(self, lo: int, hi: int) -> bool:
        i = self._bisect(self._starts, lo)
        return i > 0 and self._reach[i - 1] >= hi

    def __len__(self):
        return len(self._starts)
