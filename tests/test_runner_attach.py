"""Processes the runner may not attach to (7), and the runner's hard kill of a hung GDB (15).

The unprivileged cases run the runner as `nobody` (setpriv): against a root process
(refused before GDB starts) and against a non-dumpable process of its own user (GDB's
ptrace attach fails with EPERM; GDB goes on with the next -ex command, whose result must
not win over the failed attach).
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

import targets as T
from targets import only_process as one
from targets import runner as rt

pytestmark = [pytest.mark.gdb, pytest.mark.timeout(300)]

AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def _checkout_open_to_others():
    """`nobody` can run the runner from this checkout only if every directory up to it is searchable
    by others (a clone inside `mktemp -d`, mode 700, is not)."""
    path = os.path.realpath(T.ROOT)
    while True:
        if not os.stat(path).st_mode & 0o001:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


needs_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv") or not _checkout_open_to_others(),
                                reason="needs root, setpriv and a checkout other users can reach, to run the "
                                       "runner as nobody")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    target = rt.build_target()
    patch = rt.make_patch(target, tmp_path_factory.mktemp("attach"))
    return target, patch


@pytest.fixture
def public_patch(built):
    """The patch in a directory `nobody` can read (pytest's tmp dirs are private)."""
    d = tempfile.mkdtemp(prefix="nsb-runner-")
    try:
        os.chmod(d, 0o755)
        path = os.path.join(d, "patch.so")
        shutil.copyfile(built[1], path)
        os.chmod(path, 0o644)
        yield path
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_already_traced_is_7_naming_the_tracer(built):
    target, patch = built
    with rt.start(target) as t:
        holder = subprocess.Popen(["gdb", "-nx", "-batch", "-p", str(t.pid), "-ex", "shell sleep 60"],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while T.tracer_pid(t.pid) == 0:
                assert time.monotonic() < deadline, "gdb never attached"
                time.sleep(0.05)
            for cmd in (["patch", "-f", patch], ["check", "-f", patch], ["list"]):
                run = T.nsb(*cmd, "-p", t.pid, "--json")
                rc, doc = run.returncode, run.doc
                p = one(doc)
                assert rc == 7, p
                assert "already traced by pid %d (gdb)" % holder.pid in p["message"], p
        finally:
            os.killpg(holder.pid, signal.SIGKILL)
            holder.wait(timeout=10)
        assert T.wait_running(t.pid, 10)
        assert t.ask("v") == rt.ORIGINAL


@needs_root
def test_unprivileged_runner_against_root_process_is_7(built, public_patch):
    target, _ = built
    with rt.start(target) as t:
        for cmd in (["patch", "-f", public_patch], ["list"]):
            run = T.nsb(*cmd, "-p", t.pid, "--json", prefix=AS_NOBODY)
            rc, doc = run.returncode, run.doc
            p = one(doc)
            assert rc == 7 and "not permitted" in p["message"], p
        assert t.ask("v") == rt.ORIGINAL


@needs_root
def test_gdb_attach_eperm_wins_over_the_command_result():
    """Same user, non-dumpable: only GDB's ptrace fails; the runner must say 7, not the 10 nsb-list wrote."""
    code = ("import ctypes, sys, time; ctypes.CDLL(None).prctl(4, 0, 0, 0, 0); "
            "print('ready', flush=True); time.sleep(120)")
    with T.Target(AS_NOBODY + ["/usr/bin/python3", "-c", code], ready_line="ready") as t:
        # The target is the setpriv'd python itself (setpriv execs).
        run = T.nsb("list", "-p", t.pid, "--json", prefix=AS_NOBODY)
        rc, doc = run.returncode, run.doc
        p = one(doc)
        assert rc == 7, p
        assert p["error"] == "AttachFailed" and "ptrace: Operation not permitted" in p["message"], p
        assert t.alive()


def test_hung_gdb_is_killed_after_the_grace_and_the_target_keeps_running(built, tmp_path):
    """GDB stopped (SIGSTOP) in the middle of an apply: the runner kills it at --timeout + grace,
    exits 15, and the target is left running (not in state T), unpatched.

    Stopped where a kill is harmless (after the first injected call, its thread restored): stopped as
    soon as it attached, a loaded machine let GDB run on into an injected call now and then, and a kill
    there is the one window that hurts the target (docs/TRUST.md; CI saw the target die)."""
    target, patch = built
    ready = tmp_path / "gdb-in-the-step"
    with rt.start(target) as t:
        runner = T.start_nsb("patch", "-p", t.pid, "-f", patch, "--timeout", "15", "--json",
                             env={"NSB_GRACE_SECONDS": "1", "NSB_FAULT": "sleep@after-syscall:1=120",
                                  "NSB_FAULT_READY": str(ready)})
        gdb_pid = None
        try:
            deadline = time.monotonic() + 60
            while gdb_pid is None and runner.poll() is None and time.monotonic() < deadline:
                tracer = T.tracer_pid(t.pid)
                if tracer and ready.exists():
                    os.kill(tracer, signal.SIGSTOP)
                    gdb_pid = tracer
                time.sleep(0.002)
            assert gdb_pid is not None, "GDB never attached (runner rc %s)" % runner.poll()
            started = time.monotonic()
            run = T.finish(runner, timeout=60)
            waited = time.monotonic() - started
        finally:
            if runner.poll() is None:
                os.killpg(runner.pid, signal.SIGKILL)
                runner.wait(timeout=10)
        doc = run.doc
        p = one(doc)
        assert run.returncode == 15 and doc["exit_code"] == 15, run
        assert p["error"] == "TimeoutExpired" and "killed" in p["message"], p
        assert waited < 15 + 1 + 10, waited
        assert not os.path.exists("/proc/%d" % gdb_pid) or T.proc_state(gdb_pid) in (None, "Z")
        assert T.tracer_pid(t.pid) == 0
        states = T.thread_states(t.pid)
        assert states and not any(s in "Tt" for s in states.values()), (states, p)
        assert t.ask("v") == rt.ORIGINAL
        assert T.nsb("check", "-p", t.pid, "-f", patch, "--json").returncode == 2


def test_a_process_stopped_before_us_stays_stopped(built):
    """The runner continues a target GDB left stopped, but not one the operator had stopped."""
    target, patch = built
    with rt.start(target) as t:
        os.kill(t.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while T.proc_state(t.pid) != "T":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        run = T.nsb("list", "-p", t.pid, "--json")
        rc, doc = run.returncode, run.doc
        assert rc == 0, doc
        time.sleep(0.2)
        assert T.proc_state(t.pid) == "T"
        os.kill(t.pid, signal.SIGCONT)
        assert T.wait_running(t.pid, 10)
        assert t.ask("v") == rt.ORIGINAL
