"""UndoLog.write_all without GDB: few reads, every check before the first write, rollback, repairs."""

from types import SimpleNamespace as W

import pytest

from gdb_nsb.errors import MismatchError, NsbError
from gdb_nsb.process.undo import UndoLog


class FakeMemory:
    """Memory at 0x1000..0x1000+size with an unmapped hole; counts reads and writes."""

    def __init__(self, size=0x40000, hole=None):
        self.base, self.mem, self.hole = 0x1000, bytearray(range(256)) * (size // 256), hole
        self.reads, self.writes = 0, []

    def _check(self, addr, n):
        if self.hole and addr < self.hole[1] and self.hole[0] < addr + n:
            raise NsbError("cannot read %d bytes at 0x%x" % (n, addr))

    def read(self, addr, n):
        self.reads += 1
        self._check(addr, n)
        return bytes(self.mem[addr - self.base:addr - self.base + n])

    def write(self, addr, data):
        self._check(addr, len(data))
        self.writes.append(addr)
        self.mem[addr - self.base:addr - self.base + len(data)] = data


def _jumps(mem, addrs, data=b"\xe9\0\0\0\0"):
    return [W(addr=a, data=data, expected=mem.read(a, len(data)), what="jump %#x" % a) for a in addrs]


def test_one_read_per_cluster_and_all_writes_made():
    mem = FakeMemory()
    addrs = [0x1000 + 0x40 * i for i in range(1000)] + [0x30000]  # 1000 close entries, one far away
    writes = _jumps(mem, addrs)
    mem.reads = 0
    seen = []
    with UndoLog(mem) as undo:
        done = undo.write_all(reversed(writes), after=lambda w: seen.append(w.addr))
        undo.commit()
    assert mem.reads == 2 and len(done) == 1001 and seen == sorted(addrs)
    assert all(mem.read(a, 5) == b"\xe9\0\0\0\0" for a in addrs)


def test_a_mismatch_anywhere_writes_nothing():
    mem = FakeMemory()
    writes = _jumps(mem, [0x1000 + 0x100 * i for i in range(50)])
    writes[37].expected = b"nope!"
    before = bytes(mem.mem)
    with pytest.raises(MismatchError, match="jump"):
        with UndoLog(mem) as undo:
            undo.write_all(writes)
    assert mem.writes == [] and bytes(mem.mem) == before


def test_rollback_after_a_failure_between_writes():
    mem = FakeMemory()
    writes = _jumps(mem, [0x1000 + 0x100 * i for i in range(10)])
    before = bytes(mem.mem)

    calls = []

    def fail_at_fifth(w):
        calls.append(w)
        if len(calls) == 5:
            raise RuntimeError("injected")
    with pytest.raises(RuntimeError):
        with UndoLog(mem) as undo:
            undo.write_all(writes, after=fail_at_fifth)
    assert len(mem.writes) > 5 and bytes(mem.mem) == before  # written, then all taken back


def test_skip_done_and_a_hole_between_writes():
    mem = FakeMemory(hole=(0x2000, 0x2100))
    writes = _jumps(mem, [0x1f00, 0x2200, 0x2300])
    mem.write(0x2200, writes[1].data)  # already done (a cut-short job)
    mem.writes = []
    with UndoLog(mem) as undo:
        done = undo.write_all(writes, skip_done=True)
        undo.commit()
    assert [w.addr for w in done] == [0x1f00, 0x2300] and mem.writes == [0x1f00, 0x2300]


def test_overlapping_writes_go_one_after_the_other():
    mem = FakeMemory()
    a = W(addr=0x1100, data=b"\xaa" * 8, expected=mem.read(0x1100, 8), what="a")
    b = W(addr=0x1104, data=b"\xbb" * 4, expected=b"\xaa" * 4, what="b")  # sees a's bytes
    with UndoLog(mem) as undo:
        undo.write_all([a, b])
        undo.commit()
    assert mem.read(0x1100, 8) == b"\xaa" * 4 + b"\xbb" * 4
