"""Injected system calls on a real multi-threaded target, each test in its own GDB."""

import time

import pytest

import targets as T
from targets import run_gdb, wait_running
from targets.fifo import FifoTarget

pytestmark = pytest.mark.gdb

PRELUDE = T.INFERIOR_PRELUDE


def _script(body):
    return PRELUDE + "\n" + body


def test_mmap_memfd_round_trip_multithreaded(tmp_path):
    with FifoTarget(tmp_path) as t:
        maps_before = T.maps(t.pid)
        r = run_gdb(t.pid, timeout=60, python=_script('''
from gdb_nsb import mappings as M
regs_before = all_registers()
out = {"threads": len(inf.threads()), "pid": inj.call(S.SYS_getpid)}
ms = inf.mappings()
lo, hi = next((a, b) for a, b in M.gaps(ms, 1 << 32) if b - a >= 1 << 24)
want = lo + (1 << 20)
with inj.session():
    addr = inj.mmap(want, 0x3000, S.PROT_READ | S.PROT_WRITE, S.MAP_PRIVATE | S.MAP_ANONYMOUS)
    out["mmap_exact"] = addr == want
    m = M.mapping_at(inf.mappings(), addr)
    out["perms"] = m.perms
    out["size"] = m.size
    inf.write(addr + 0x1000, b"hello")
    out["readback"] = inf.read(addr + 0x1000, 5).decode()
    inj.mprotect(addr, 0x3000, S.PROT_READ | S.PROT_EXEC)
    out["perms_after_mprotect"] = M.mapping_at(inf.mappings(), addr).perms
    inf.write(addr, b"\\xcc\\xc3")  # GDB writes into r-x without mprotect
    out["rx_write"] = inf.read(addr, 2).hex()
    try:
        inj.mmap(addr, 0x1000, S.PROT_READ, S.MAP_PRIVATE | S.MAP_ANONYMOUS)
        out["overlap"] = "mapped"
    except S.SyscallFailed as e:
        out["overlap"] = e.errno_name
    inf.write(addr + 0x2000, b"nsb-test\\0")
    fd = inj.memfd_create(addr + 0x2000, S.MFD_CLOEXEC)
    inj.ftruncate(fd, 0x2000)
    fm = inj.mmap(0, 0x2000, S.PROT_READ, S.MAP_PRIVATE, fd, 0)
    inj.close(fd)
    out["memfd_objfile"] = M.mapping_at(inf.mappings(), fm).objfile
    try:
        inj.close(fd)
        out["close_again"] = "ok"
    except S.SyscallFailed as e:
        out["close_again"] = e.errno_name
    inj.munmap(fm, 0x2000)
    inj.munmap(addr, 0x3000)
    out["gone"] = M.mapping_at(inf.mappings(), addr) is None and M.mapping_at(inf.mappings(), fm) is None
out["regs_same"] = all_registers() == regs_before
out["interruptions"] = inj.interruptions
result(**out)
'''))
        assert len(r.results) == 1, r
        out = r.results[0]
        assert out["threads"] == 4 and out["pid"] == t.pid
        assert out["mmap_exact"] and out["perms"] == "rw-p" and out["size"] == 0x3000
        assert out["readback"] == "hello"
        assert out["perms_after_mprotect"] == "r-xp"
        assert out["rx_write"] == "ccc3"
        assert out["overlap"] == "EEXIST"
        assert out["memfd_objfile"] == "/memfd:nsb-test (deleted)"
        assert out["close_again"] == "EBADF"
        assert out["gone"] and out["regs_same"]
        assert wait_running(t.pid)
        assert T.maps(t.pid) == maps_before
        assert t.ask("ping") == "pong"


def test_thread_blocked_in_read_gets_its_data(tmp_path):
    with FifoTarget(tmp_path) as t:
        tids = t.tids()
        r = run_gdb(t.pid, timeout=60, python=_script('''
tids = %r
ran_on = []
before = all_registers()
reader = inf.thread_by_tid(tids[1])
with inf.selected(reader):
    reader_rax = inf.read_register("rax")
    reader_orig = inf.read_register("orig_rax")
for tid in [tids[1]] + tids + [tids[1]]:
    th = inf.thread_by_tid(tid)
    inj.prefer(th)
    with inj.session():
        a = inj.mmap(0, 0x1000, S.PROT_READ, S.MAP_PRIVATE | S.MAP_ANONYMOUS)
        inj.munmap(a, 0x1000)
    ran_on.append(inf.tid(inf.thread_by_num(inj.last_thread_num)))
result(ran_on=ran_on, regs_same=all_registers() == before,
       reader_rax=reader_rax - (1 << 64), reader_orig=reader_orig)
''' % (tids,)))
        assert len(r.results) == 1, r
        out = r.results[0]
        # The reader really was inside read(): restart pending, syscall number 0.
        assert out["reader_rax"] == -512 and out["reader_orig"] == 0
        assert out["ran_on"] == [tids[1]] + tids + [tids[1]]
        assert out["regs_same"]
        assert wait_running(t.pid)
        t.write_fifo("hello\n")
        deadline = time.monotonic() + 5
        got = None
        while time.monotonic() < deadline:
            got = t.ask("got?")
            if got != "got 0 -":
                break
            time.sleep(0.05)
        assert got == "got 1 hello"
        assert t.alive()


def test_sigusr1_storm_during_injection_keeps_exact_counts(tmp_path):
    with FifoTarget(tmp_path, "storm") as t:
        time.sleep(0.2)
        first = t.ask("count").split()
        assert int(first[1]) > 0, first  # the storm runs
        external = interruptions = 0
        # Several sessions: signals a session leaves with GDB are delivered when it detaches.
        for _session in range(3):
            r = run_gdb(t.pid, timeout=90, python=_script(STORM_SESSION))
            assert len(r.results) == 1, r
            out = r.results[0]
            assert out["calls"] == 80 and out["regs_same"], out
            external += out["external"]
            interruptions += out["interruptions"]
            assert wait_running(t.pid)
        assert external >= 3
        assert interruptions >= 1  # the signal-stop path was taken
        time.sleep(0.3)
        again = t.ask("count").split()
        assert int(again[1]) > int(first[1])  # the storm goes on after GDB left
        stopped = t.ask("stop").split()
        sent, handled, ext = int(stopped[1]), int(stopped[2]), int(stopped[3])
        assert handled == sent, stopped
        assert ext == external, (stopped, external)
        assert t.alive()


STORM_SESSION = '''
import re, signal
def shared_usr1_pending():
    with open("/proc/%d/status" % inf.pid) as f:
        m = re.search(r"^ShdPnd:\\s*([0-9a-f]+)", f.read(), re.M)
    return bool(int(m.group(1), 16) & (1 << (signal.SIGUSR1 - 1)))
external = 0
before = all_registers()
for i in range(40):
    if i % 15 == 5 and not shared_usr1_pending():
        # A process-directed signal arriving while the process is held: whichever
        # thread we step next would take it.
        os.kill(inf.pid, signal.SIGUSR1)
        external += 1
    a = inj.mmap(0, 0x1000, S.PROT_READ, S.MAP_PRIVATE | S.MAP_ANONYMOUS)
    inj.munmap(a, 0x1000)
result(external=external, calls=2 * (i + 1), interruptions=inj.interruptions, attempts=inj.attempts,
       regs_same=all_registers() == before)
'''
