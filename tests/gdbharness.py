"""Run real targets and real GDB sessions from tests, with bounded time.

Every process started here is killed when its context ends, also when the
test fails.  GDB runs with -nx (no user init files) and loads gdb-nsb through
nsb-gdb.py, exactly as users do.
"""

import json
import os
import signal
import subprocess
import tempfile
import textwrap
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOADER = os.path.join(ROOT, "nsb-gdb.py")
RESULT_MARK = "NSB-RESULT:"

GDB_BASE = ["gdb", "-nx", "-batch", "-iex", "set debuginfod enabled off",
            "-iex", "set auto-load safe-path /", "-iex", "set pagination off"]


def proc_state(pid):
    """Single-letter state of a process from /proc (R, S, T, t, Z ...), or None if gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(")") + 2]


def thread_states(pid):
    out = {}
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            try:
                with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                    data = f.read()
                out[int(tid)] = data[data.rindex(")") + 2]
            except OSError:
                pass
    except OSError:
        pass
    return out


def maps(pid):
    with open("/proc/%d/maps" % pid) as f:
        return f.read().splitlines()


def read_mem(pid, addr, size):
    with open("/proc/%d/mem" % pid, "rb") as f:
        f.seek(addr)
        return f.read(size)


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
        import select
        deadline = time.monotonic() + timeout
        buf = ""
        fd = self.proc.stdout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("target %d printed no line within %ss (got %r)" % (self.pid, timeout, buf))
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


def wait_running(pid, timeout=5.0):
    """True once no thread of ``pid`` is in a stopped state (T/t)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = thread_states(pid)
        if states and not any(s in "Tt" for s in states.values()):
            return True
        time.sleep(0.02)
    return False
