"""GDB from tests: one batch session attached to a target, and a gdbserver, each bounded in time.

GDB runs with -nx (no user init files) and loads gdb-nsb through nsb-gdb.py,
exactly as users do.  Every process started here is killed when it overruns
or its context ends, also when the test fails.
"""

import contextlib
import importlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import types

from .cbuild import ROOT

LOADER = os.path.join(ROOT, "nsb-gdb.py")
RESULT_MARK = "NSB-RESULT:"

# The start of a Python script that ``run_gdb(python=...)`` runs inside GDB on an attached target: the
# process layer's Inferior and SyscallInjector, ``result(**kw)`` handing a JSON result back, and every
# thread's registers.
INFERIOR_PRELUDE = '''
import gdb, json, os
from gdb_nsb.process.inferior import Inferior
from gdb_nsb.process import syscalls as S
inf = Inferior()
inj = S.SyscallInjector(inf)
def result(**kw):
    print("NSB-RESULT: " + json.dumps(kw))
def all_registers():
    return {str(t.num): dict(inf.save_registers(t)) for t in inf.threads()}
'''

# The same for a script that looks at the target only through /proc: its pid, maps() (the lines of
# /proc/PID/maps) and rss() (VmRSS in kB).
PROC_PRELUDE = '''
import gdb, json
PID = gdb.selected_inferior().pid
def maps():
    with open("/proc/%d/maps" % PID) as f:
        return f.read().splitlines()
def rss():
    with open("/proc/%d/status" % PID) as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
'''

GDB_BASE = ["gdb", "-nx", "-batch", "-iex", "set debuginfod enabled off",
            "-iex", "set auto-load safe-path /", "-iex", "set pagination off"]


def run_gdb(pid=None, commands=(), python=None, timeout=60, extra_args=(), load_nsb=True, env=None):
    """Run one GDB batch session attached to ``pid``.

    ``commands`` are GDB commands run after attaching; ``python`` is Python
    source run inside GDB (after gdb-nsb is loaded).  Results a script wants to
    hand back are printed as ``NSB-RESULT: <json>`` and collected in
    ``result.results``.  GDB is killed if it overruns ``timeout``.
    """
    args = list(GDB_BASE)
    if load_nsb:
        args += ["-iex", "source " + LOADER]
    args += list(extra_args)
    if pid is not None:
        args += ["-p", str(pid)]
    script = None
    try:
        for c in commands:
            args += ["-ex", c]
        if python is not None:
            fd, script = tempfile.mkstemp(suffix=".py", prefix="nsb-test-")
            with os.fdopen(fd, "w") as f:
                f.write(textwrap.dedent(python))
            args += ["-x", script]
        p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True, env=env)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
            raise TimeoutError("gdb overran %ss\nstdout:\n%s\nstderr:\n%s" % (timeout, out, err))
    finally:
        if script:
            os.unlink(script)
    results = []
    for line in out.splitlines():
        if line.startswith(RESULT_MARK):
            results.append(json.loads(line[len(RESULT_MARK):]))
    return GdbResult(p.returncode, out, err, results)


class GdbResult:
    def __init__(self, returncode, stdout, stderr, results):
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.results = results

    def __repr__(self):
        return "GdbResult(rc=%s)\n--- stdout ---\n%s\n--- stderr ---\n%s" % (self.returncode, self.stdout, self.stderr)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class GdbServer:
    """A gdbserver process (``argv`` after the program name), killed at exit.

    ``prefix`` wraps it (e.g. ``unshare -m sh -c ...``).  Waits for "Listening on port".
    """

    def __init__(self, args, prefix=None, port=None, timeout=60):
        self.port = port or free_port()
        self.args = [a.replace("{port}", str(self.port)) for a in args]
        self.prefix = prefix
        self.timeout = timeout
        self.proc = None
        self.output = []

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def __enter__(self):
        argv = ["gdbserver"] + self.args
        if self.prefix is not None:
            argv = self.prefix(argv)
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_listening()
        except BaseException:
            self.__exit__(None, None, None)  # __exit__ does not run when __enter__ raises
            raise
        return self

    def _wait_listening(self):
        deadline = time.monotonic() + self.timeout
        fd = self.proc.stdout.fileno()
        while b"Listening on port" not in b"".join(self.output):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("gdbserver did not listen: %r" % b"".join(self.output))
            r, _, _ = select.select([fd], [], [], left)
            if r:
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise RuntimeError("gdbserver exited: %r" % b"".join(self.output))
                self.output.append(chunk)

    def alive(self):
        return self.proc.poll() is None

    def wait_exit(self, timeout=10):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        return False


@contextlib.contextmanager
def without_gdb(monkeypatch, module):
    """``module`` (of process/) imported in the test's own Python, with an empty stand-in for ``gdb``, for
    its parts that need no GDB; forgotten again afterwards so that no other test sees that import."""
    monkeypatch.setitem(sys.modules, "gdb", types.ModuleType("gdb"))
    sys.modules.pop(module, None)
    try:
        yield importlib.import_module(module)
    finally:
        sys.modules.pop(module, None)
