"""The benchmark's running target: a generated program (bench/cgen.py) whose threads record their largest
gap between clock reads in a stats file mapped here too (reset and read without a debugger)."""

import itertools
import mmap
import os
import struct
import subprocess
import time

import cgen

_SERIAL = itertools.count()


def sleep_us(nthreads):
    """Each thread's sleep per loop: 200 us, longer with many threads so that the target wakes up at
    most ~20,000 times a second in all (256 threads at 200 us saturated both cores by themselves:
    even the floor then took 43 s).  The gap resolution (and the noise row) grows with it."""
    return max(200, 50 * nthreads)


class Target:
    """The benchmark target, running, with its stats file mapped here."""

    def __init__(self, exe, nthreads, workdir, sleep=None):
        self.exe, self.nthreads = exe, nthreads
        self.sleep = sleep_us(nthreads) if sleep is None else sleep
        self.stats_path = os.path.join(workdir, "stats-%d-%d" % (os.getpid(), next(_SERIAL)))
        self.proc = None

    def __enter__(self):
        self.start()
        return self.wait_ready()

    def start(self):
        """Start the program (wait_ready() then waits for it: many targets start side by side)."""
        size = cgen.HEADER + cgen.SLOT * self.nthreads
        with open(self.stats_path, "wb") as f:
            f.write(b"\0" * size)
        self.proc = subprocess.Popen([self.exe, self.stats_path, str(self.nthreads), str(self.sleep)],
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        fd = os.open(self.stats_path, os.O_RDWR)
        try:
            self.mem = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        return self

    def wait_ready(self):
        try:
            self._wait(lambda: self._u64(0) == cgen.MAGIC, 60, "target start")
            self.reset()
        except BaseException:
            self.__exit__(None, None, None)  # never leave the target running
            raise
        return self

    def __exit__(self, *exc):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        if getattr(self, "mem", None) is not None and not self.mem.closed:
            self.mem.close()
        if os.path.exists(self.stats_path):
            os.unlink(self.stats_path)
        return False

    @property
    def pid(self):
        return self.proc.pid

    def _u64(self, off):
        return struct.unpack_from("<Q", self.mem, off)[0]

    def _set(self, off, v):
        struct.pack_into("<Q", self.mem, off, v)

    def _wait(self, cond, timeout, what):
        end = time.monotonic() + timeout
        while not cond():
            if self.proc.poll() is not None:
                raise RuntimeError("target exited (%s) during %s" % (self.proc.returncode, what))
            if time.monotonic() > end:
                raise RuntimeError("target did not answer: %s" % what)
            time.sleep(0.001)

    def slot(self, i):
        return struct.unpack_from("<5Q", self.mem, cgen.HEADER + cgen.SLOT * i)

    def reset(self):
        """Every thread forgets its largest gap (each acknowledges the new generation)."""
        gen = self._u64(8) + 1
        self._set(8, gen)
        self._wait(lambda: all(self.slot(i)[0] == gen for i in range(self.nthreads)), 120, "reset")

    def worst(self, settle=0.05):
        """(largest gap in s, its start, its end) over all threads, after letting every thread run again."""
        time.sleep(settle)
        best = max((self.slot(i) for i in range(self.nthreads)), key=lambda s: s[1])
        return best[1] / 1e9, best[2] / 1e9, best[3] / 1e9

    def micro(self):
        """Run the call microbenchmark in the target; picoseconds per call {unpatched|patched, direct}."""
        req = self._u64(16) + 1
        self._set(16, req)
        self._wait(lambda: self._u64(24) == req, 60, "microbenchmark")
        return {"unpatched_ps": self._u64(32), "patched_ps": self._u64(40), "direct_ps": self._u64(48)}

    def alive(self):
        return self.proc.poll() is None
