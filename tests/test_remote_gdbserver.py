"""Live patching through gdbserver (REFERENCE.md 2, "All access to the process goes through GDB").

gdbserver --attach (runner ``--remote HOST:PORT``, GDB ``target remote``) and
gdbserver --multi (runner ``--remote HOST:PORT -p PID``: extended-remote +
attach): apply, list, check, revert; the patch's value shows in the target,
which keeps running after every detach.  A busy target through gdbserver:
run windows end without any signal the program sees (a target that took
gdbserver's SIGINT would die: it has no handler).
"""

import shutil
import threading

import pytest

import gdbharness
import livetarget as lt

pytestmark = [pytest.mark.timeout(600),
              pytest.mark.skipif(shutil.which("gdbserver") is None, reason="gdbserver not installed")]

# Under load, `target remote` alone (file transfers through gdbserver) takes seconds.
T = 240


def _gdb_remote(address, commands, extended_pid=None):
    if extended_pid is None:
        pre = ["target remote " + address]
    else:
        pre = ["target extended-remote " + address, "attach %d" % extended_pid]
    return gdbharness.run_gdb(None, commands=pre + list(commands) + ["detach"], timeout=T)


def _check_running(tg):
    assert tg.alive()
    assert gdbharness.wait_running(tg.pid, 10), gdbharness.thread_states(tg.pid)


def test_gdbserver_attach_and_multi_apply_list_check_revert(tmp_path):
    target = lt.build_target()
    patch = lt.make_patch(target, tmp_path)
    with lt.start_target(target) as tg:
        assert tg.ask("ignore 13") == "ignored 13"  # as servers do: remote run windows use it
        assert lt.value(tg) == 1002
        addr, before, filebytes = lt.text_bytes(tg.pid, target, "compute")
        assert before == filebytes
        maps_before = len(gdbharness.maps(tg.pid))

        # 1. gdbserver --attach, runner over `target remote`.
        with lt.GdbServer(["--attach", "127.0.0.1:{port}", str(tg.pid)]) as gs:
            r = lt.nsb("patch", "--remote", gs.address, "-f", patch, "--timeout", T, timeout=T + 60)
            assert r.returncode == 0, r.stdout + r.stderr
            assert "applied" in r.stdout
            assert gs.wait_exit(30) is not None  # gdbserver --attach ends with the detach
        _check_running(tg)
        assert lt.value(tg) == 1502
        tg.ask("base 2000")
        assert lt.value(tg) == 2502  # the patch reads the target's variable
        maps_applied = len(gdbharness.maps(tg.pid))

        # 2. gdbserver --multi: list, check, revert (runner: extended-remote + attach).
        with lt.GdbServer(["--multi", "127.0.0.1:{port}"]) as gs:
            r = lt.nsb("list", "--remote", gs.address, "-p", tg.pid, "--json", timeout=T + 60)
            assert r.returncode == 0, r.stdout + r.stderr
            import json
            doc = json.loads(r.stdout)["processes"][0]
            assert [p["state"] for p in doc["patches"]] == ["active"]
            assert doc["patches"][0]["functions"][0]["name"] == "compute"
            r = lt.nsb("check", "--remote", gs.address, "-p", tg.pid, "-f", patch, timeout=T + 60)
            assert r.returncode == 0 and "is applied" in r.stdout, r.stdout + r.stderr
            _check_running(tg)
            r = lt.nsb("revert", "--remote", gs.address, "-p", tg.pid, "-f", patch, "--timeout", T, timeout=T + 60)
            assert r.returncode == 0, r.stdout + r.stderr
            assert gs.alive()  # --multi survives the detach
        _check_running(tg)
        assert lt.value(tg) == 2002
        assert lt.text_bytes(tg.pid, target, "compute")[1] == filebytes

        # 3. Inside GDB: `target remote` + nsb-patch (re-apply reuses the mapping), nsb-list.
        with lt.GdbServer(["--attach", "127.0.0.1:{port}", str(tg.pid)]) as gs:
            res = _gdb_remote(gs.address, ["nsb-patch " + patch, "nsb-list"])
            assert "applied to target" in res.stdout, res
            assert "layer 1 of 1 (top)" in res.stdout, res
        _check_running(tg)
        assert lt.value(tg) == 2502
        assert len(gdbharness.maps(tg.pid)) == maps_applied >= maps_before

        # 4. Inside GDB over extended-remote + attach: nsb-revert.
        with lt.GdbServer(["--multi", "127.0.0.1:{port}"]) as gs:
            res = _gdb_remote(gs.address, ["nsb-revert " + patch, "nsb-check " + patch], extended_pid=tg.pid)
            assert "reverted" in res.stdout, res
            assert "is not applied; it could be applied now" in res.stdout, res
        _check_running(tg)
        assert lt.value(tg) == 2002
        assert lt.text_bytes(tg.pid, target, "compute")[1] == filebytes
        ok, line = lt.no_bad_values(tg)
        assert ok, line


def test_gdbserver_busy_target_windows_send_no_signal(tmp_path):
    """A thread parked inside compute: retry windows time out cleanly, run-out succeeds once it leaves.

    The target has no SIGINT handler: gdbserver's interrupt (SIGINT to the
    process group) would kill it.  The windows end by the signal the process
    ignores (SIGPIPE, as servers do), which GDB drops.
    """
    target = lt.build_target()
    patch = lt.make_patch(target, tmp_path)
    with lt.start_target(target) as tg:
        assert tg.ask("ignore 13") == "ignored 13"
        assert tg.ask("park") == "parked"
        with lt.GdbServer(["--attach", "127.0.0.1:{port}", str(tg.pid)]) as gs:
            r = lt.nsb("patch", "--remote", gs.address, "-f", patch, "--retries", "5", "--timeout", T,
                       timeout=T + 60)
            assert r.returncode == 3, r.stdout + r.stderr
            assert "no safe point" in r.stderr and "compute" in r.stderr, r.stderr
        _check_running(tg)
        assert lt.value(tg) == 1002
        assert "nsb-registry" not in "".join(gdbharness.maps(tg.pid))  # nothing left behind
        with open("/proc/%d/timers" % tg.pid) as f:
            assert f.read() == ""  # the run windows' timer is deleted

        with lt.GdbServer(["--attach", "127.0.0.1:{port}", str(tg.pid)]) as gs:
            timer = threading.Timer(1.0, lambda: tg.send("unpark"))
            timer.start()
            try:
                r = lt.nsb("patch", "--remote", gs.address, "-f", patch, "--strategy", "run-out",
                           "--timeout", T, timeout=T + 60)
            finally:
                timer.cancel()
            assert r.returncode == 0, r.stdout + r.stderr
        assert tg.readline(30) == "unparked"
        _check_running(tg)
        assert lt.value(tg) == 1502
        with open("/proc/%d/timers" % tg.pid) as f:
            assert f.read() == ""
        ok, line = lt.no_bad_values(tg)
        assert ok, line


def test_gdbserver_no_ignored_signal_no_run_window(tmp_path):
    """A process that ignores no signal gets no remote run window: exit 3 saying why, nothing left behind.

    A timer sending SIGSTOP would stop the process for good if GDB or gdbserver died while it was armed."""
    target = lt.build_target()
    patch = lt.make_patch(target, tmp_path)
    with lt.start_target(target) as tg:
        assert tg.ask("park") == "parked"
        maps_before = gdbharness.maps(tg.pid)
        with lt.GdbServer(["--attach", "127.0.0.1:{port}", str(tg.pid)]) as gs:
            r = lt.nsb("patch", "--remote", gs.address, "-f", patch, "--retries", "3", "--timeout", T,
                       timeout=T + 60)
        assert r.returncode == 3, r.stdout + r.stderr
        tid = int(r.stderr.split("leaves unblocked")[0].rsplit("thread ", 1)[1].split()[0])
        assert ("no run window on this remote target: process %d ignores no signal that thread %d leaves unblocked "
                "(SigIgn 0000000000000000, SigBlk 0000000000000000), and a timer sending SIGSTOP would leave the "
                "process stopped if GDB or gdbserver died while it was armed" % (tg.pid, tid)) in r.stderr, r.stderr
        _check_running(tg)
        assert gdbharness.maps(tg.pid) == maps_before
        with open("/proc/%d/timers" % tg.pid) as f:
            assert f.read() == ""
        assert lt.value(tg) == 1002
