"""The runner's priority: on a busy machine (--sched auto, the default; always with --sched realtime; as root)
the runner and everything it starts (GDB, its helper threads, what GDB runs) run SCHED_RR at the lowest
real-time priority; on a quiet one they stay normal (real-time start-up work there only took the CPUs from
the target's threads: a longer pause, bench/README.md); --nice gives GDB's
session scheduling group a niceness.  Issue 14 item 7: under CPU load a revert lasts about what it lasts on a
quiet machine.

Measured with bench/load_revert.py (12 burners and the 16-thread stress target, load 30-44, 7 rounds):
a revert took 1.5-25.8 s (median 5.1 s) with the normal policy, 0.9-5.8 s (median 1.1 s) by default.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

import targets as T
from gdb_nsb import options
from gdb_nsb.standalone import gdbrun
from targets import live as lt

needs_autogroup = pytest.mark.skipif(not os.path.exists("/proc/self/autogroup"),
                                     reason="the kernel has no autogroup scheduling")


def _autogroup_nice(pid):
    with open("/proc/%d/autogroup" % pid) as f:
        return int(f.read().split()[-1])  # "/autogroup-123 nice -10"


@needs_autogroup
@pytest.mark.timeout(30)
def test_session_priority_is_the_autogroup_niceness():
    p = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        assert _autogroup_nice(p.pid) == 0
        assert gdbrun.set_session_priority(p.pid, -7) is (os.geteuid() == 0)
        if os.geteuid() == 0:
            assert _autogroup_nice(p.pid) == -7
        assert gdbrun.set_session_priority(p.pid, 0) is False  # 0: normal priority, nothing written
        assert gdbrun.set_session_priority(p.pid, None) is False
    finally:
        p.kill()
        p.wait()
    assert gdbrun.set_session_priority(p.pid, -7) is False  # gone: no error


@pytest.mark.timeout(30)
def test_realtime_policy_is_inherited():
    """The runner's thread runs SCHED_RR; everything it starts inherits it, down to a child's own child (GDB
    runs `iconv -l` at start-up: a normal one left a real-time GDB waiting in vfork).  Without privilege
    nothing changes; normal sets nothing."""
    # sh forks the first cut (the runner's grandchild) and execs the second (its child)
    shell = "cut -d' ' -f41 /proc/self/stat; cut -d' ' -f41 /proc/self/stat"
    code = ("import os, subprocess; from gdb_nsb.standalone import gdbrun; print(gdbrun.set_policy('normal')); "
            "print(gdbrun.set_policy('realtime')); print(os.sched_getscheduler(0)); "
            "print(subprocess.run(['sh', '-c', %r], capture_output=True, text=True).stdout); "
            "print(gdbrun.set_policy('normal')); print(os.sched_getscheduler(0))" % shell)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20,
                         env=dict(os.environ, PYTHONPATH=T.ROOT)).stdout.split()
    if os.geteuid() == 0:
        # ... and back to normal (the runner before sessions for several processes)
        assert out == ["False", "True", str(os.SCHED_RR), str(os.SCHED_RR), str(os.SCHED_RR), "True", "0"], out
    else:
        assert out == ["False", "False", "0", "0", "0", "False", "0"], out


@pytest.mark.timeout(60)
def test_nsb_script_starts_the_runner_raised(tmp_path):
    """./nsb raises itself before its set-up and Python start, for the runner commands only, not with
    --sched normal: a stand-in venv whose python prints the policy it was started with."""
    import hashlib
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text("#!/bin/sh\ncut -d' ' -f41 /proc/self/stat\n")
    python.chmod(0o755)
    with open(os.path.join(T.ROOT, "pyproject.toml"), "rb") as f:
        (venv / ".nsb-stamp").write_text("%s \n" % hashlib.sha256(f.read()).hexdigest())
    (venv / ".nsb-bytecode").touch()  # newer than every source: nothing to compile

    def policy(*args):
        run = subprocess.run([os.path.join(T.ROOT, "nsb")] + list(args), capture_output=True, text=True, timeout=30,
                             env=dict(os.environ, NSB_VENV=str(venv)))
        assert run.returncode == 0, run.stderr
        return int(run.stdout)

    raised = os.SCHED_RR if os.geteuid() == 0 else os.SCHED_OTHER
    assert policy("revert", "-p", "1", "-f", "x.so", "--sched", "realtime") == raised
    assert policy("check", "-p", "1", "--sched=realtime") == raised
    # auto (the default) on a machine made busy: more runnable tasks than twice the CPUs
    burners = [subprocess.Popen(["sh", "-c", "while :; do :; done"], start_new_session=True)
               for _ in range(3 * os.cpu_count() + 2)]
    try:
        deadline = time.monotonic() + 20
        while not gdbrun.busy(open("/proc/stat").read(), os.cpu_count()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert policy("revert", "-p", "1", "-f", "x.so") == raised
    finally:
        for b in burners:
            b.kill()
            b.wait()
    assert policy("patch", "-p", "1", "--sched", "normal") == os.SCHED_OTHER
    assert policy("generate", "a", "b") == policy("gdb") == os.SCHED_OTHER


@pytest.mark.timeout(30)
def test_thread_priority_inherited_by_children():
    code = ("import os, subprocess; from gdb_nsb.standalone import gdbrun; print(gdbrun.set_priority(-4)); "
            "print(subprocess.run(['sh', '-c', 'cut -d\" \" -f19 /proc/$$/stat'], capture_output=True, "
            "text=True).stdout.strip())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20,
                         env=dict(os.environ, PYTHONPATH=T.ROOT)).stdout.split()
    want = "-4" if os.geteuid() == 0 else str(os.getpriority(os.PRIO_PROCESS, 0))
    assert out == [want, want], out


def test_auto_is_realtime_only_on_a_busy_machine():
    stat = "cpu  1 2 3\ncpu0 1 2\ncpu1 1 2\nprocs_running %d\nprocs_blocked 0\n"
    assert not gdbrun.busy(stat % 1, 2) and not gdbrun.busy(stat % 4, 2)
    assert gdbrun.busy(stat % 5, 2) and gdbrun.busy(stat % 30, 2)
    assert gdbrun.busy(stat % 3, 1) and gdbrun.busy(stat % 3, 0)  # no CPU count: taken as one
    assert not gdbrun.busy("cpu 1\n", 2)  # no procs_running line: not busy
    assert gdbrun.resolve_policy("realtime") == "realtime" and gdbrun.resolve_policy("normal") == "normal"
    assert gdbrun.resolve_policy("auto") in ("realtime", "normal")


def test_policy_is_read_before_parsing():
    assert options.policy_in(["-p", "1", "-f", "x.so"]) == options.DEFAULT_POLICY == "auto"
    assert options.policy_in(["--sched", "normal", "-p", "1"]) == "normal"
    assert options.policy_in(["--sched=normal"]) == "normal" and options.policy_in(["--sched=realtime"]) == "realtime"
    assert options.policy_in(["--sched", "normal", "--sched", "realtime"]) == "realtime"  # the last one, as argparse
    assert options.policy_in(["--sched", "fifo"]) == options.policy_in(["--sched"]) == "normal"  # refused later


def test_nice_is_checked_and_documented():
    run = T.nsb("check", "-p", 1, "-f", "x.so", "--nice", "25")
    assert run.returncode == 1 and "--nice" in run.stderr and "-20 to 19" in run.stderr, run.stderr
    run = T.nsb("check", "-p", 1, "-f", "x.so", "--sched", "fifo")
    assert run.returncode == 1 and "--sched" in run.stderr and "realtime" in run.stderr, run.stderr
    run = T.nsb("patch", "--help")
    assert "--nice N" in run.stdout and "--sched auto|realtime|normal" in run.stdout, run.stdout


def _policies(pid):
    """{thread name: set of scheduling policies} of the threads of ``pid`` (empty once it is gone)."""
    out = {}
    for tid in T.thread_states(pid):  # the product's /proc task reader
        try:
            with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
                name = f.read().strip()
            out.setdefault(name, set()).add(os.sched_getscheduler(int(tid)))
        except OSError:
            pass
    return out


@needs_autogroup
@pytest.mark.gdb
@pytest.mark.timeout(120)
@pytest.mark.parametrize("sched", ["realtime", "normal"])
def test_gdb_of_the_runner_runs_raised(tmp_path, sched):
    """While `nsb check` looks again and again at a busy process: its GDB's group has the niceness, and
    GDB with its helper threads runs SCHED_RR by default, normal with --sched normal."""
    if os.geteuid() != 0:
        pytest.skip("raising a priority needs root")
    target = lt.build_target()
    patch = lt.make_patch(target, tmp_path)
    with lt.start_target(target) as tg:
        assert tg.ask("park") == "parked"
        p = T.start_nsb("check", "-p", tg.pid, "-f", patch, "--retries", "10000", "--timeout", "60",
                        "--nice", "-6", "--sched", sched)
        try:
            # The runner sets the niceness right after starting GDB: a look just before that sees 0.
            seen, policies, gdb = None, {}, None
            want = os.SCHED_RR if sched == "realtime" else os.SCHED_OTHER
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and p.poll() is None:
                gdb = T.child_named(p.pid, "gdb")
                if gdb is not None:
                    try:
                        seen = _autogroup_nice(gdb)
                    except OSError:
                        pass
                    policies = _policies(gdb)
                    if seen == -6 and "gdb worker" in policies:
                        break
                time.sleep(0.01)
            assert seen == -6, (seen, p.poll())
            assert policies.get("gdb") == policies.get("gdb worker") == {want}, policies
            assert _policies(p.pid).get("python") == {want}, _policies(p.pid)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
        assert tg.ask("unpark") == "unparked"


@pytest.mark.gdb
@pytest.mark.timeout(120)
def test_several_processes_run_at_normal_priority(tmp_path):
    """With several processes the runner goes back to normal before starting its GDB sessions: a GDB per
    core for the whole set must not hold the CPUs at real-time priority."""
    if os.geteuid() != 0:
        pytest.skip("raising a priority needs root")
    target = lt.build_target()
    patch = lt.make_patch(target, tmp_path)
    with lt.start_target(target) as one, lt.start_target(target) as two:
        for tg in (one, two):
            assert tg.ask("park") == "parked"
        p = T.start_nsb("check", "-p", one.pid, "-p", two.pid, "-f", patch, "--retries", "10000", "--timeout", "60")
        try:
            policies = {}
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and p.poll() is None and "gdb worker" not in policies:
                gdb = T.child_named(p.pid, "gdb")
                policies = _policies(gdb) if gdb is not None else {}
                time.sleep(0.01)
            assert policies.get("gdb") == policies.get("gdb worker") == {os.SCHED_OTHER}, policies
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
        for tg in (one, two):
            assert tg.ask("unpark") == "unparked"
