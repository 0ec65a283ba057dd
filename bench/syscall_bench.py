#!/usr/bin/env python3
"""Time one injected system call (REFERENCE.md 6 measured ~0.35 ms for a bare mmap step).

Starts a 4-thread target (tests/proctarget.py), attaches one GDB batch
session and times, inside it: getpid inside one session (GDB settings
changed once), mmap+munmap pairs, and a call that opens its own session.
Usage: .venv/bin/python bench/syscall_bench.py [count]
"""

import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

import pathlib  # noqa: E402

from targets import run_gdb, wait_running  # noqa: E402
from targets.fifo import FifoTarget  # noqa: E402

SCRIPT = '''
import json, time
from gdb_nsb.process.inferior import Inferior
from gdb_nsb.process import syscalls as S
inf = Inferior()
inj = S.SyscallInjector(inf)
N = %d
def per_call(f, n=N):
    f()
    t0 = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t0) / n * 1000
with inj.session():
    getpid = per_call(lambda: inj.call(S.SYS_getpid))
    def pair():
        a = inj.mmap(0, 0x1000, S.PROT_READ, S.MAP_PRIVATE | S.MAP_ANONYMOUS)
        inj.munmap(a, 0x1000)
    mmap_pair = per_call(pair) / 2
standalone = per_call(lambda: inj.call(S.SYS_getpid), max(5, N // 5))
print("NSB-RESULT: " + json.dumps({"getpid_ms": getpid, "mmap_munmap_ms_per_call": mmap_pair,
                                   "own_session_ms": standalone, "threads": len(inf.threads())}))
'''


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    with tempfile.TemporaryDirectory() as d:
        with FifoTarget(pathlib.Path(d)) as t:
            r = run_gdb(t.pid, python=SCRIPT % count, timeout=120)
            if not r.results:
                print(r)
                return 1
            res = r.results[0]
            print("threads in target:            %d" % res["threads"])
            print("injected getpid (in session): %.3f ms" % res["getpid_ms"])
            print("injected mmap/munmap, each:   %.3f ms" % res["mmap_munmap_ms_per_call"])
            print("call opening its own session: %.3f ms" % res["own_session_ms"])
            print("target running after detach: %s" % wait_running(t.pid))
    return 0


if __name__ == "__main__":
    sys.exit(main())
