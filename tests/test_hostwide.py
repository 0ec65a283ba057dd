"""Every process on the host (issue 16, item 3): `nsb list` without -p, `list -f`, `revert --all-of`,
progress on a terminal.  Real targets, real patches; the host-wide read must never attach."""

import os
import pty
import select
import threading
import time

import pytest
import targets as T
from targets import runner as rt


pytestmark = [pytest.mark.gdb, pytest.mark.timeout(400)]


def build(tmp_path, tag):
    """A target build of the test's own (unique build-id: no other test's process maps it) and its patch."""
    target = rt.build_target("\nint hostwide_%s;\n" % tag)
    return target, rt.make_patch(target, tmp_path)


def by_pid(doc):
    return {p["pid"]: p for p in doc["processes"]}


class TracerWatch:
    """Samples TracerPid of some processes while a command runs: any nonzero value is an attach."""

    def __init__(self, pids):
        self.pids, self.seen, self._stop = pids, set(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for pid in self.pids:
                try:
                    with open("/proc/%d/status" % pid) as f:
                        for line in f:
                            if line.startswith("TracerPid:") and int(line.split()[1]):
                                self.seen.add(pid)
                except OSError:
                    pass
            time.sleep(0.002)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)


def test_host_wide_list_reads_without_attaching(tmp_path):
    target, patch = build(tmp_path, "list")
    with rt.start(target) as a, rt.start(target) as b:
        assert T.nsb("patch", "-p", a.pid, "-f", patch, "--json").returncode == 0
        with TracerWatch([a.pid, b.pid]) as watch:
            run = T.nsb("list", "--json")
            rc, doc = run.returncode, run.doc
        assert watch.seen == set(), "host-wide list attached to %s" % watch.seen
        procs = by_pid(doc)
        assert a.pid in procs and b.pid not in procs, doc  # exit code: other processes on the host count too
        p = procs[a.pid]
        assert p["code"] == 0 and p["passive"] is True and p["comm"] == "target", p
        assert [x["state"] for x in p["patches"]] == ["active"] and p["patches"][0]["symbols"] is True, p
        assert {f["name"]: f["layer"] for f in p["functions"]} == {"compute": 1, "scale": 1}, p
        assert a.ask("v") == rt.PATCHED and b.ask("v") == rt.ORIGINAL

        # Plain text: each process named; scoped to the patch: both processes, each with its state.
        r = T.nsb("list")
        assert "pid %d: 1 live patch in process %d" % (a.pid, a.pid) in r.stdout, r.stdout + r.stderr
        run = T.nsb("list", "-f", patch, "--json")
        rc, doc = run.returncode, run.doc
        procs = by_pid(doc)
        assert rc == 0 and sorted(procs) == sorted([a.pid, b.pid]), doc
        assert procs[a.pid]["state"] == "applied" and procs[b.pid]["state"] == "not applied", doc

        # The patch file gone from where it was applied from: said in text, symbols false in JSON,
        # found again by build-id in a patch directory.
        moved = tmp_path / "store"
        moved.mkdir()
        hidden = str(moved / "renamed.so")
        os.rename(patch, hidden)
        try:
            r = T.nsb("list", "-f", hidden)
            assert "patch file not found (recorded %s" % patch in r.stdout, r.stdout
            run = T.nsb("list", "-f", hidden, "--json")
            rc, doc = run.returncode, run.doc
            assert by_pid(doc)[a.pid]["patches"][0]["symbols"] is False, doc
            run = T.nsb("list", "-f", hidden, "--patch-dir", str(moved), "--json")
            rc, doc = run.returncode, run.doc
            assert by_pid(doc)[a.pid]["patches"][0]["symbols"] is True, doc
        finally:
            os.rename(hidden, patch)


def test_revert_all_of_reverts_every_carrier(tmp_path):
    target, patch = build(tmp_path, "revert")
    with rt.start(target) as a, rt.start(target) as b, rt.start(target) as c:
        assert T.nsb("patch", "-p", "%d,%d" % (a.pid, b.pid), "-f", patch, "--json").returncode == 0
        run = T.nsb("revert", "--all-of", "-f", patch, "--json")
        rc, doc = run.returncode, run.doc
        assert rc == 0 and sorted(by_pid(doc)) == sorted([a.pid, b.pid]), doc
        assert a.ask("v") == b.ask("v") == c.ask("v") == rt.ORIGINAL
        # Nothing carries it applied any more (the reverted records stay, inactive).
        run = T.nsb("revert", "--all-of", "-f", patch, "--json")
        rc, doc = run.returncode, run.doc
        assert rc == 6 and doc["processes"] == [] and "no process carries patch" in doc["message"], doc
        # With --unmap the inactive records count too.  (By file: a build-id prefix alone would also
        # name the same .so bound to another test's target.)
        run = T.nsb("revert", "--all-of", "--unmap", "-f", patch, "--json")
        rc, doc = run.returncode, run.doc
        assert rc == 0 and sorted(by_pid(doc)) == sorted([a.pid, b.pid]), doc
        assert T.nsb("list", "-f", patch, "--json").doc["processes"][0]["state"] == "not applied"


def _on_pty(args, timeout=180):
    """Run ``nsb ARGS`` with stdout and stderr on a terminal: everything it wrote there."""
    master, slave = pty.openpty()
    p = T.start_nsb(*args, stdout=slave, stderr=slave)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 0.5)
            if r:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
            elif p.poll() is not None:
                break
        p.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)
    return p.returncode, out.decode(errors="replace")


def test_progress_on_a_terminal_only(tmp_path):
    target, patch = build(tmp_path, "progress")
    with rt.start(target) as a, rt.start(target) as b:
        pids = "%d,%d" % (a.pid, b.pid)
        rc, out = _on_pty(["check", "-p", pids, "-f", patch])
        assert rc == 2 and "2/2 processes done, 0 failed, slowest pid " in out, out
        rc, out = _on_pty(["check", "-p", "%s,999999999" % pids, "-f", patch])
        assert "3/3 processes done, 1 failed" in out, out
        rc, out = _on_pty(["check", "-p", pids, "-f", patch, "--json"])
        assert "processes done" not in out, out
        r = T.nsb("check", "-p", pids, "-f", patch)
        assert "processes done" not in r.stdout + r.stderr, r
        assert a.ask("v") == b.ask("v") == rt.ORIGINAL
