"""Rollback from the undo log leaves bytes, mappings and registers exactly as they were."""

import time

import pytest

import targets as T
from targets import run_gdb, wait_running
from targets.fifo import FifoTarget

pytestmark = pytest.mark.gdb

PRELUDE = T.INFERIOR_PRELUDE + '''
from gdb_nsb import mappings as M
from gdb_nsb.process.undo import UndoLog, Deadline
from gdb_nsb.process.registry_store import RegistryStore
from gdb_nsb.registry import Registry, PatchRecord
from gdb_nsb.errors import TimeoutExpired, NsbError

class Boom(NsbError):
    pass

class FailingWrites:
    """Inferior whose n-th write raises (the failure a step can meet midway)."""
    def __init__(self, inner, fail_at):
        self.inner, self.fail_at, self.count = inner, fail_at, 0
    def read(self, a, n):
        return self.inner.read(a, n)
    def write(self, a, d):
        self.count += 1
        if self.count == self.fail_at:
            raise Boom("write %d fails on purpose" % self.count)
        self.inner.write(a, d)
    def __getattr__(self, name):
        return getattr(self.inner, name)

text = next(m for m in inf.mappings() if m.executable and m.objfile.endswith("proctarget"))
'''

SCENARIOS = PRELUDE + '''
outcomes = {}
before = all_registers()
maps_before = [(m.start, m.end, m.perms) for m in inf.mappings()]
code_before = inf.read(text.start, 0x100)
free = next((a, b) for a, b in M.gaps(inf.mappings(), 1 << 32) if b - a >= 1 << 24)[0] + (1 << 20)

def run(name, body):
    try:
        with inj.session():
            with UndoLog(inf, inj) as undo:
                body(undo)
                undo.commit()
        outcomes[name] = "committed"
    except NsbError as e:
        outcomes[name] = type(e).__name__
    outcomes[name + ":same"] = ([(m.start, m.end, m.perms) for m in inf.mappings()] == maps_before
                                and inf.read(text.start, 0x100) == code_before)

def after_mmap(undo):
    undo.mmap(free, 0x4000, S.PROT_READ, S.MAP_PRIVATE | S.MAP_ANONYMOUS)
    raise Boom("after mmap")
run("after_mmap", after_mmap)

for k in (1, 2, 3):
    def kth_write(undo, k=k):
        a = undo.mmap(free, 0x2000, S.PROT_READ, S.MAP_PRIVATE | S.MAP_ANONYMOUS)
        undo.inferior = FailingWrites(inf, k)
        undo.write(text.start + 0x10, b"\\xcc" * 8)
        undo.write(a, b"patch code")
        undo.write(text.start + 0x40, b"\\xe9\\x00\\x00\\x00\\x00")
        raise Boom("all writes done")
    run("write_%d" % k, kth_write)

for k in (1, 2, 3):
    def registry_update(undo, k=k):
        undo.write(text.start + 0x10, b"\\x90" * 4)
        # Writes of a registry creation: its name (scratch page), payload, header.
        store = RegistryStore(FailingWrites(inf, k), inj)
        undo.inferior = store.inferior
        reg = Registry()
        reg.patches.append(PatchRecord("ab" * 20, "cd" * 20, "t", 0, 0))
        store.save(reg, undo)
    run("registry_%d" % k, registry_update)

def deadline(undo):
    undo.deadline = Deadline(0.05)
    undo.write(text.start + 0x10, b"\\x90" * 4)
    a = undo.mmap(0, 0x1000, S.PROT_READ, S.MAP_PRIVATE | S.MAP_ANONYMOUS)
    import time
    time.sleep(0.1)
    undo.write(a, b"late")
run("deadline", deadline)

outcomes["regs_same"] = all_registers() == before
result(**outcomes)
'''

GROW_FAILS = PRELUDE + '''
store = RegistryStore(inf, inj)
reg = Registry()
reg.patches.append(PatchRecord("ab" * 20, "cd" * 20, "t", 0, 0))
with inj.session():
    undo = UndoLog(inf, inj)
    store.save(reg, undo)
    undo.commit()
first = store.location
before = all_registers()
for i in range(80):
    reg.patches.append(PatchRecord("%040x" % i, "cd" * 20, "target", i, i))
outcome = None
try:
    with inj.session():
        with UndoLog(inf, inj) as undo:
            undo.inferior = FailingWrites(inf, 3)  # name, payload ok; header of the new registry fails
            store.inferior = undo.inferior
            store.save(reg, undo)
            undo.commit()
except Boom as e:
    outcome = str(e)
store = RegistryStore(inf, inj)
again = store.load()
result(outcome=outcome, first=first, found=store.location, patches=len(again.patches),
       mappings=len(store.registry_mappings()), regs_same=all_registers() == before)
'''


def test_rollback_restores_bytes_mappings_registers(tmp_path):
    with FifoTarget(tmp_path) as t:
        maps_before = T.maps(t.pid)
        r = run_gdb(t.pid, python=SCENARIOS, timeout=90)
        assert len(r.results) == 1, r
        out = r.results[0]
        for name in ["after_mmap", "write_1", "write_2", "write_3", "registry_1", "registry_2", "registry_3"]:
            assert out[name] == "Boom", (name, out)
            assert out[name + ":same"], (name, out)
        assert out["deadline"] == "TimeoutExpired" and out["deadline:same"]
        assert out["regs_same"]
        assert wait_running(t.pid)
        assert T.maps(t.pid) == maps_before
        t.write_fifo("still fine\n")
        # Until the target's reader thread has read it: a deadline, not a count of asks (a loaded
        # machine ran 50 asks before that thread ran once).
        deadline = time.monotonic() + 20
        while (got := t.ask("got?")) == "got 0 -" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert got == "got 1 still fine"


def test_failed_registry_grow_keeps_the_old_one(tmp_path):
    with FifoTarget(tmp_path) as t:
        r = run_gdb(t.pid, python=GROW_FAILS, timeout=90)
        assert len(r.results) == 1, r
        out = r.results[0]
        assert out["outcome"] == "write 3 fails on purpose"
        assert out["found"] == out["first"] and out["patches"] == 1 and out["mappings"] == 1
        assert out["regs_same"]
        assert wait_running(t.pid)
        assert sum("nsb-registry" in line for line in T.maps(t.pid)) == 1
