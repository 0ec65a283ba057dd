"""A guided demo: live-patch a running multithreaded server, then take the patch back.

It builds (once, cached) a small server and its live patch from the sources in
gdb_nsb/data/demo, starts the server, shows its output, patches it with
`nsb patch`, shows the changed output, lists, reverts, shows the original
output again, and stops the server.  No arguments needed.  With --series: a
patch series instead (docs/patch-series.md): fix.so, then bulk.so which needs
it, replaced in one stop by the cumulative cumulative.so, then reverted to the
original program.
"""

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time

from gdb_nsb import errors
from gdb_nsb.standalone.cflags import patch_cflags

DEMO_SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "demo")
TARGET_FLAGS = ["-O2", "-flive-patching=inline-clone", "-g", "-pthread"]


def add_arguments(parser):
    parser.add_argument("--workdir", default=None,
                        help="where to build and keep the demo binaries (default: a cache directory)")
    parser.add_argument("--seconds", type=float, default=1.6, help="how long to watch the server at each step")
    parser.add_argument("--series", action="store_true",
                        help="a patch series: patch 1, patch 2 (needs 1), replaced by the cumulative patch 3, "
                             "reverted to the original")


def _cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "gdb-nsb", "demo")


def _nsb(*args, expect=0):
    """Run an nsb subcommand the way a user would, echoing it; its exit code must be ``expect``."""
    print("\n$ nsb %s" % " ".join(args), flush=True)
    r = subprocess.run([sys.executable, "-m", "gdb_nsb.standalone.cli"] + list(args), text=True,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    for line in r.stdout.splitlines():
        print("  " + line)
    if expect:
        print("  (exit code %d)" % r.returncode)
    if r.returncode != expect:
        raise errors.NsbError("demo step `nsb %s` failed with exit code %d" % (" ".join(args), r.returncode))
    return r


SERIES = ("bulk", "cumulative")


def _build(workdir):
    """Compile the server and the patches, and bind them; skipped when up to date.

    Returns the server and {name: patch}: fix, and the series' bulk (built knowing fix's build-id, which
    it needs) and cumulative."""
    os.makedirs(workdir, exist_ok=True)
    server_c = os.path.join(DEMO_SRC, "server.c")
    sources = {name: os.path.join(DEMO_SRC, name + ".c") for name in ("fix",) + SERIES}
    server = os.path.join(workdir, "demo-server")
    patches = {name: os.path.join(workdir, name + ".so") for name in sources}
    stamp = os.path.join(workdir, "stamp")
    want = "".join(open(p).read() + "\n" for p in [server_c] + list(sources.values())) + " ".join(TARGET_FLAGS)
    if os.path.exists(stamp) and open(stamp).read() == want and all(
            os.path.exists(p) for p in [server] + list(patches.values())):
        return server, patches
    if not shutil.which("gcc"):
        raise errors.NsbError("the demo needs gcc to build its server (apt-get install -y gcc)")
    print("Building the demo server and its live patches in %s ..." % workdir)
    subprocess.run(["gcc"] + TARGET_FLAGS + [server_c, "-o", server], check=True, cwd=DEMO_SRC)
    for name in ("fix",) + SERIES:
        defines = []
        if name == "bulk":
            from gdb_nsb.elf.livepatch import build_id_of
            defines = ['-DFIX_BUILD_ID="%s"' % build_id_of(patches["fix"])]
        subprocess.run(["gcc"] + patch_cflags() + defines + ["-shared", sources[name], "-o", patches[name]],
                       check=True, cwd=DEMO_SRC)
        _nsb("generate", server, patches[name])
    with open(stamp, "w") as f:
        f.write(want)
    return server, patches


class _ServerOutput:
    """The server's lines, read by a thread so that none waits in a pipe buffer.

    Lines printed while an nsb command runs describe the moment before the change
    took effect; ``skip_stale`` drops them so the output after a command shows its effect.
    """

    def __init__(self, proc):
        self.proc = proc
        self.lines = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def watch(self, seconds):
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                return
            if line is None:
                raise errors.NsbError("the demo server exited unexpectedly (code %s)" % self.proc.wait())
            print("  | " + line.rstrip(), flush=True)

    def skip_stale(self):
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return
            if line is None:
                self.lines.put(None)
                return


class _Server:
    """The demo server, running in its own session for the demo's steps; killed however they end."""

    def __init__(self, path, seconds):
        self.path, self.seconds = path, seconds

    def __enter__(self):
        self.proc = subprocess.Popen([self.path], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                                     bufsize=1, start_new_session=True)
        self.output = _ServerOutput(self.proc)
        self.pid = str(self.proc.pid)
        return self

    def step(self, *cmd, expect=0):
        """One nsb command, then the server's output once it took effect."""
        _nsb(*cmd, expect=expect)
        self.output.skip_stale()
        if not expect:
            self.output.watch(self.seconds)

    def done(self):
        if self.proc.poll() is not None:
            raise errors.NsbError("the demo server died (code %s)" % self.proc.returncode)
        print("\nThe server ran the whole time: same pid, requests never stopped. Demo done.")
        return 0

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        return False


def run(args):
    workdir = args.workdir or _cache_dir()
    server, patches = _build(workdir)
    if args.series:
        return _run_series(args, server, patches)
    fix = patches["fix"]
    print("\nStarting the demo server: 4 threads answer requests by calling quote_price().")
    print("Its quote ignores the loyalty discount; the live patch fix.so (from %s) makes it apply it."
          % os.path.join(DEMO_SRC, "fix.c"))
    with _Server(server, args.seconds) as s:
        s.output.watch(args.seconds)
        print("\nPatching the running server (pid %s), without stopping it for longer than a blink:" % s.pid)
        s.step("patch", "-p", s.pid, "-f", fix)
        _nsb("list", "-p", s.pid)
        print("\nTaking the patch back:")
        s.step("revert", "-p", s.pid, "-f", fix)
        return s.done()


def _run_series(args, server, patches):
    """The series: fix.so, bulk.so (needs fix.so), replaced by cumulative.so, reverted to the original."""
    fix, bulk, cumulative = patches["fix"], patches["bulk"], patches["cumulative"]
    print("\nStarting the demo server; a patch series will change its quote_price() three times (%s)."
          % os.path.join(DEMO_SRC, "{fix,bulk,cumulative}.c"))
    with _Server(server, args.seconds) as s:
        s.output.watch(args.seconds)
        print("\nPatch 1, fix.so: the loyalty discount.")
        s.step("patch", "-p", s.pid, "-f", fix)
        print("\nPatch 2, bulk.so, needs patch 1 (VZP_NEEDS_PATCH): a bulk discount on top.")
        s.step("patch", "-p", s.pid, "-f", bulk)
        print("\nPatch 1 cannot go while patch 2 needs it:")
        s.step("revert", "-p", s.pid, "-f", fix, expect=errors.DependencyError.exit_code)
        _nsb("list", "-p", s.pid)
        print("\nPatch 3, cumulative.so (VZP_CUMULATIVE), replaces patches 1 and 2 in one stop:")
        s.step("patch", "-p", s.pid, "-f", cumulative)
        _nsb("list", "-p", s.pid)
        print("\nReverting the cumulative patch gives back the original program:")
        s.step("revert", "-p", s.pid, "-f", cumulative)
        return s.done()
