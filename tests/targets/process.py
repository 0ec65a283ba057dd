"""A running target process, and what a test reads of it from /proc: state, threads, maps, memory.

Every process started here is killed when its context ends, also when the
test fails.  Memory is compared with the file through the load bias that the
product itself computes (``binder.process_view.compute_load_bias``).
"""

import os
import select
import signal
import subprocess
import time

from gdb_nsb.procstate import thread_states  # noqa: F401 - the product's reader serves the tests too


def proc_state(pid):
    """Single-letter state of a process from /proc (R, S, T, t, Z ...), or None if gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(")") + 2]


def maps(pid):
    """The lines of /proc/PID/maps."""
    with open("/proc/%d/maps" % pid) as f:
        return f.read().splitlines()


def mappings(pid):
    """/proc/PID/maps as the product's ``Mapping`` records."""
    from gdb_nsb.mappings import Mapping
    out = []
    for line in maps(pid):
        parts = line.split(None, 5)
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        out.append(Mapping(lo, hi, int(parts[2], 16), parts[1], parts[5] if len(parts) == 6 else ""))
    return out


def is_mapped(pid, path):
    real = os.path.realpath(path)
    return any(m.name == real for m in mappings(pid))


def read_mem(pid, addr, size):
    with open("/proc/%d/mem" % pid, "rb") as f:
        f.seek(addr)
        return f.read(size)


def write_mem(pid, addr, data):
    with open("/proc/%d/mem" % pid, "r+b", buffering=0) as f:
        f.seek(addr)
        f.write(data)


def load_bias(pid, path, mapped_as=None):
    """The load bias of the object ``path`` in process ``pid`` (0 for ET_EXEC), as the product computes it.

    ``mapped_as``: the path the process maps ``path`` under, when it differs (a replaced file).
    """
    from gdb_nsb.binder.process_view import compute_load_bias
    from gdb_nsb.elf.image import ElfImage
    real = os.path.realpath(mapped_as or path)
    own = [m for m in mappings(pid) if m.name == real]
    assert own, "%s is not mapped in %d" % (real, pid)
    return compute_load_bias(ElfImage(path), own)


def function_symbol(path, name):
    """The defined, sized function symbol ``name`` of ``path``."""
    from gdb_nsb.elf.image import ElfImage
    return next(s for s in ElfImage(path).symbols_named(name) if s.type == "STT_FUNC" and s.size)


def file_bytes(path, vaddr, size):
    """The bytes of the file ``path`` at link-time address ``vaddr``."""
    from gdb_nsb.elf.image import ElfImage
    return ElfImage(path).read_vaddr(vaddr, size)


def function_bytes(path, name, size=None):
    """(link-time address, file bytes) of function ``name`` in ``path`` (its first ``size`` bytes, or all)."""
    sym = function_symbol(path, name)
    return sym.value, file_bytes(path, sym.value, sym.size if size is None else min(size, sym.size))


def memory_and_file(pid, path, name, size=None, mapped_as=None):
    """(address, bytes in memory, bytes in the file) of function ``name`` of ``path`` in process ``pid``."""
    vaddr, want = function_bytes(path, name, size)
    addr = load_bias(pid, path, mapped_as) + vaddr
    return addr, read_mem(pid, addr, len(want)), want


def memory_matches_file(pid, path, name):
    """(in-memory bytes, file bytes) of function ``name`` of ``path`` in ``pid``."""
    _addr, now, want = memory_and_file(pid, path, name)
    return now, want


ENDBR64 = bytes.fromhex("f30f1efa")


def entry_state(pid, path, name):
    """'original' when the entry of ``name`` equals the file, 'jump' when it holds E9 rel32 (after an endbr64)."""
    _addr, now, want = memory_and_file(pid, path, name, size=18)
    if now == want:
        return "original"
    start = 4 if want[:4] == ENDBR64 else 0
    if now[start] == 0xE9 and now[start + 5:] == want[start + 5:] and now[:start] == want[:start]:
        return "jump"
    return "torn: %s (file %s)" % (now.hex(), want.hex())


def status_field(pid, field):
    """An integer field of /proc/PID/status (the first number after ``field:``), None if absent."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def tracer_pid(pid):
    return status_field(pid, "TracerPid") or 0


def rss_kb(pid):
    return status_field(pid, "VmRSS")


def wait_for(pred, timeout=10.0, step=0.01):
    """The first true value of ``pred()`` within ``timeout`` seconds, else None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return None


def wait_progress(stats, more=200, timeout=5.0):
    """Let a target's workers make ``more`` further calls (``stats()["calls"]``); the last stats."""
    start = stats()["calls"]

    def moved():
        now = stats()
        return now if now["calls"] >= start + more else None
    now = wait_for(moved, timeout)
    if now is None:
        raise AssertionError("workers stalled: %d calls in %.1fs" % (stats()["calls"] - start, timeout))
    return now


def make_fifo(directory, name="input.fifo"):
    path = os.path.join(str(directory), name)
    if not os.path.exists(path):
        os.mkfifo(path)
    return path


def write_fifo(path, text):
    """Write ``text`` into the FIFO ``path`` without blocking (the target's reader holds it open)."""
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


class Target:
    """A target process started from a compiled binary.

    stdin and stdout are pipes (line protocol is up to the fixture);
    the process gets its own session so GDB-sent signals never reach pytest.
    """

    def __init__(self, argv, env=None, ready_line=None, timeout=20, cwd=None):
        self.argv = [str(a) for a in argv]
        self.env = env
        self.ready_line = ready_line
        self.timeout = timeout
        self.cwd = cwd
        self.proc = None

    def __enter__(self):
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=self.env, cwd=self.cwd,
                                     start_new_session=True, text=True, bufsize=1)
        if self.ready_line is not None:
            line = self.readline(self.timeout)
            if self.ready_line not in line:
                raise RuntimeError("target did not become ready: %r" % line)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def readline(self, timeout=10):
        """Read one line of the target's stdout, bounded in time."""
        deadline = time.monotonic() + timeout
        buf = ""
        fd = self.proc.stdout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                # What every thread does now: a silent target is a finding (stopped? blocked? starved?).
                raise TimeoutError("target %d printed no line within %ss (got %r)\n%s" % (
                    self.pid, timeout, buf, silence_report(self.pid)))
            r, _, _ = select.select([fd], [], [], left)
            if r:
                line = fd.readline()
                if line == "":
                    raise EOFError("target %d closed stdout (exit %s): %s" % (
                        self.pid, self.proc.poll(), self.proc.stderr.read() if self.proc.poll() is not None else ""))
                return line.rstrip("\n")

    def send(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def ask(self, line, timeout=10):
        self.send(line)
        return self.readline(timeout)

    def alive(self):
        return self.proc.poll() is None

    def state(self):
        return proc_state(self.pid)

    def check_running(self, timeout=10):
        """The target is alive and, within ``timeout``, none of its threads is stopped."""
        assert self.alive(), "target %d is gone (exit %s)" % (self.pid, self.proc.poll())
        assert wait_running(self.pid, timeout), thread_states(self.pid)

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                self.proc.kill()
            except OSError:
                pass
        if self.proc:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        return False


def child_named(ppid, name):
    """The pid of a child of ``ppid`` whose command name is ``name`` (e.g. the runner's gdb), or None."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid) as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        if comm == name and int(stat[stat.rindex(")") + 2:].split()[1]) == ppid:
            return int(pid)
    return None


def silence_report(pid):
    """One line per thread of ``pid`` saying what it does now, for a target that did not answer: state,
    wchan, CPU ticks, run and run-queue wait from schedstat (ms), pending and blocked signals; then the
    process's shared pending signals, its tracer and the machine's load."""
    def read(path):
        try:
            with open(path) as f:
                return f.read()
        except OSError:
            return ""
    status = dict(l.split(":", 1) for l in read("/proc/%d/status" % pid).splitlines() if ":" in l)
    lines = ["process %d: ShdPnd %s TracerPid %s, load %s" % (
        pid, status.get("ShdPnd", "?").strip(), status.get("TracerPid", "?").strip(),
        " ".join(read("/proc/loadavg").split()[:4]))]
    for tid in sorted(int(t) for t in (os.listdir("/proc/%d/task" % pid) if os.path.isdir("/proc/%d/task" % pid)
                                       else [])):
        base = "/proc/%d/task/%d/" % (pid, tid)
        stat = read(base + "stat")
        fields = stat[stat.rindex(")") + 2:].split() if ")" in stat else []
        tstatus = dict(l.split(":", 1) for l in read(base + "status").splitlines() if ":" in l)
        sched = (read(base + "schedstat").split() + ["?", "?"])[:2]
        lines.append("  tid %d %s wchan %s cpu %s ticks, run %s ms, runqueue wait %s ms, SigPnd %s SigBlk %s" % (
            tid, fields[0] if fields else "?", read(base + "wchan") or "?",
            int(fields[11]) + int(fields[12]) if len(fields) > 12 else "?",
            *(int(v) // 1000000 if v.isdigit() else v for v in sched),
            tstatus.get("SigPnd", "?").strip(), tstatus.get("SigBlk", "?").strip()))
    return "\n".join(lines)


def wait_running(pid, timeout=5.0):
    """True once no thread of ``pid`` is in a stopped state (T/t)."""
    def running():
        states = thread_states(pid)
        return bool(states) and not any(s in "Tt" for s in states.values())
    return bool(wait_for(running, timeout, step=0.02))


class CountingWorkers:
    """For targets whose workers count the values they see: ``stats()["seen"][value]`` and ``wait_calls()``."""

    def workers_see(self, value):
        """The workers' count of calls returning ``value`` still grows: they run that code now."""
        before = self.stats()["seen"][value]
        return self.wait_calls()["seen"][value] > before
