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

import targets as T
from targets import live as lt

pytestmark = [pytest.mark.timeout(600),
              pytest.mark.skipif(shutil.which("gdbserver") is None, reason="gdbserver not installed")]

# Under load, `target remote` alone (file transfers through gdbserver) takes seconds.
SECONDS = 240


def _gdb_remote(address, commands, extended_pid=None):
    if extended_pid is None:
        pre = ["target remote " + address]
    else:
        pre = ["target extended-remote " + address, "attach %d" % extended_pid]
    return T.run_gdb(None, commands=pre + list(commands) + ["detach"], timeout=SECONDS)



def test_gdbserver_attach_and_multi_apply_list_check_revert(tmp_path):
    target = lt.build_target()
    patch = lt.make_patch(target, tmp_path)
    with lt.start_target(target) as tg:
        assert tg.ask("ignore 13") == "ignored 13"  # as servers do: remote run windows use it
        assert lt.value(tg) == 1002
        addr, before, filebytes = T.memory_and_file(tg.pid, target, "compute", 16)
        assert before == filebytes
        maps_before = len(T.maps(tg.pid))

        # 1. gdbserver --attach, runner over `target remote`.
        with T.GdbServer(["--attach", "127.0.0.1:{port}", str(tg.pid)]) as gs:
            r = T.nsb("patch", "--remote", gs.address, "-f", patch, "--timeout", SECONDS, timeout=SECONDS + 60)
            assert r.returncode == 0, r.stdout + r.stderr
            assert "applied" in r.stdout
            assert gs.wait_exit(30) is not None  # gdbserver --attach ends with the detach
        tg.check_running()
        assert lt.value(tg) == 1502
        tg.ask("base 2000")
        assert lt.value(tg) == 2502  # the patch reads the target's variable
        maps_applied = len(T.maps(tg.pid))

        # 2. gdbserver --multi: list, check, revert (runner: extended-remote + attach).
        with T.GdbServer(["--multi", "127.0.0.1:{port}"]) as gs:
            r = T.nsb("list", "--remote", gs.address, "-p", tg.pid, "--json", timeout=SECONDS + 60)
            assert r.returncode == 0, r.stdout + r.stderr
            import json
            doc = json.loads(r.stdout)["processes"][0]
            assert [p["state"] for p in doc["patches"]] == ["active"]
            assert doc["patches"][0]["functions"][0]["name"] == "compute"
            r = T.nsb("check", "--remote", gs.address, "-p", tg.pid, "-f", patch, timeout=SECONDS + 60)
            assert r.returncode == 0 and "is applied" in r.stdout, r.stdout + r.stderr
            tg.check_running()
            r = T.nsb("revert", "--remote", gs.address, "-p", tg.pid, "-f", patch, "--timeout", SECONDS,
                      timeout=SECONDS + 60)
            assert r.returncode == 0, r.stdout + r.stderr
            assert gs.alive()  # --multi survives the detach
        tg.check_running()
        assert lt.value(tg) == 2002
        assert T.memory_and_file(tg.pid, target, "compute", 16)[1] == filebytes

        # 3. Inside GDB: `target remote` + nsb-patch (re-apply reuses the mapping), nsb-list.
        with T.GdbServer(["--attach", "127.0.0.1:{port}", str(tg.pid)]) as gs:
            res = _gdb_remote(gs.address, ["nsb-patch " + patch, "nsb-list"])
            assert "applied to target" in res.stdout, res
            assert "layer 1 of 1 (top)" in res.stdout, res
        tg.check_running()
        assert lt.value(tg) == 2502
        assert len(T.maps(tg.pid)) == maps_applied >= maps_before

        # 4. Inside GDB over extended-remote + attach: nsb-revert.
        with T.GdbServer(["--multi", "127.0.0.1:{port}"]) as gs:
            res = _gdb_remote(gs.address, ["nsb-revert " + patch, "nsb-check " + patch], extended_pid=tg.pid)
            assert "reverted" in res.stdout, res
            assert "is not applied; it could be applied now" in res.stdout, res
        tg.check_running()
        assert lt.value(tg) == 2002
        assert T.memory_and_file(tg.pid, target, "compute", 16)[1] == filebytes
        lt.assert_no_bad_values(tg)


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
        # check through gdbserver: one look, which says so (no run window: check writes nothing, and a
        # remote window needs a timer inside the process).
        with T.GdbServer(["--attach", "127.0.0.1:{port}", str(tg.pid)]) as gs:
            r = T.nsb("check", "--remote", gs.address, "-f", patch, "--timeout", SECONDS, timeout=SECONDS + 60)
            assert r.returncode == 3 and "busy at this instant" in r.stdout + r.stderr, r.stdout + r.stderr
        tg.check_running()
        with T.GdbServer(["--attach", "127.0.0.1:{port}", str(tg.pid)]) as gs:
            r = T.nsb("patch", "--remote", gs.address, "-f", patch, "--retries", "5", "--timeout", SECONDS,
                       timeout=SECONDS + 60)
            assert r.returncode == 3, r.stdout + r.stderr
            assert "no safe point" in r.stderr and "compute" in r.stderr, r.stderr
        tg.check_running()
        assert lt.value(tg) == 1002
        assert "nsb-registry" not in "".join(T.maps(tg.pid))  # nothing left behind
        with open("/proc/%d/timers" % tg.pid) as f:
            assert f.read() == ""  # the run windows' timer is deleted

        with T.GdbServer(["--attach", "127.0.0.1:{port}", str(tg.pid)]) as gs:
            timer = threading.Timer(1.0, lambda: tg.send("unpark"))
            timer.start()
            try:
                r = T.nsb("patch", "--remote", gs.address, "-f", patch, "--strategy", "run-out",
                           "--timeout", SECONDS, timeout=SECONDS + 60)
            finally:
                timer.cancel()
            assert r.returncode == 0, r.stdout + r.stderr
        assert tg.readline(30) == "unparked"
        tg.check_running()
        assert lt.value(tg) == 1502
        with open("/proc/%d/timers" % tg.pid) as f:
            assert f.read() == ""
        lt.assert_no_bad_values(tg)


def test_gdbserver_no_ignored_signal_no_run_window(tmp_path):
    """A process that ignores no signal gets no remote run window: exit 3 saying why, nothing left behind.

    A timer sending SIGSTOP would stop the process for good if GDB or gdbserver died while it was armed."""
    target = lt.build_target()
    patch = lt.make_patch(target, tmp_path)
    with lt.start_target(target) as tg:
        assert tg.ask("park") == "parked"
        maps_before = T.maps(tg.pid)
        with T.GdbServer(["--attach", "127.0.0.1:{port}", str(tg.pid)]) as gs:
            r = T.nsb("patch", "--remote", gs.address, "-f", patch, "--retries", "3", "--timeout", SECONDS,
                       timeout=SECONDS + 60)
        assert r.returncode == 3, r.stdout + r.stderr
        tid = int(r.stderr.split("leaves unblocked")[0].rsplit("thread ", 1)[1].split()[0])
        assert ("no run window on this remote target: process %d ignores no signal that thread %d leaves unblocked "
                "(SigIgn 0000000000000000, SigBlk 0000000000000000), and a timer sending SIGSTOP would leave the "
                "process stopped if GDB or gdbserver died while it was armed" % (tg.pid, tid)) in r.stderr, r.stderr
        tg.check_running()
        assert T.maps(tg.pid) == maps_before
        with open("/proc/%d/timers" % tg.pid) as f:
            assert f.read() == ""
        assert lt.value(tg) == 1002
