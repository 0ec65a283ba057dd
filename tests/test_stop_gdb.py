"""Run windows and re-stops send no signal the application sees; timings; non-stop exit."""

import pytest

from targets import Target, run_gdb, thread_states, wait_running
from test_safepoint_gdb import build, ranges, reply, safe_point

pytestmark = pytest.mark.timeout(180)

WINDOWS = '''
import gdb, json, time
from gdb_nsb.process import run_windows, sigstop
out = {"windows": []}
run_windows.ensure_all_stopped()
with sigstop.sigstop_handling():
    for w in [0.001, 0.005, 0.05] * %d:
        t0 = time.monotonic()
        r = run_windows.run_window(w)
        out["windows"].append([w, time.monotonic() - t0, len(r.events)])
        assert all(t.is_stopped() for t in gdb.selected_inferior().threads())
print("NSB-RESULT:" + json.dumps(out))
'''


def test_sigwait_target_sees_no_signal_through_run_windows():
    exe = build()
    with Target([exe], ready_line="ready") as t:
        reply(t, "x")
        r = run_gdb(t.pid, python=WINDOWS % 5, timeout=90)
        assert r.results, r
        wins = r.results[0]["windows"]
        assert len(wins) == 15
        for want, got, _ in wins:
            # Each window lasts at least what was asked and ends (the bound is for a hang, not a speed:
            # a 1 ms window took 0.86 s beside the slow tier); how long they take is bench's.
            assert want <= got < want + 5, wins
        print("run windows (requested s, took s):", [(w, round(g, 4)) for w, g, _ in wins])
        assert wait_running(t.pid), thread_states(t.pid)
        assert reply(t, "x")["sigseen"] == 0


def test_sigusr1_storm_during_safe_point_loop_keeps_count_exact():
    exe = build()
    busy = {"busy_fn": [ranges(exe, "busy_fn")["busy_fn"]]}
    with Target([exe], ready_line="ready") as t:
        reply(t, "park")
        reply(t, "storm 3000")
        res = safe_point(t.pid, busy, "retry", tries=12,
                         delays=[0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.1])
        assert not res["safe"] and "busy_fn" in res["error"]
        mid = reply(t, "x")
        assert mid["sent"] > 0, mid
        res = safe_point(t.pid, busy, "runout", tries=8, delays=[0.01, 0.05])
        assert not res["safe"]
        assert wait_running(t.pid), thread_states(t.pid)
        reply(t, "release")
        import time
        deadline = time.monotonic() + 60
        while True:
            c = reply(t, "x")
            if c["sent"] == 3000 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        time.sleep(0.2)
        c = reply(t, "x")
        assert c["sent"] == 3000 and c["handled"] == 3000, c
        assert c["sigseen"] == 0


STACKS_TIMING = '''
import gdb, json, time
from gdb_nsb.process import stacks
from gdb_nsb.safepoint import SafePointCheck
t0 = time.monotonic()
st = stacks.collect_stacks()
t1 = time.monotonic()
v = SafePointCheck({"nothing": [(1, 2)]}).check(st)
t2 = time.monotonic()
print("NSB-RESULT:" + json.dumps({"threads": len(st), "collect": t1 - t0, "check": t2 - t1, "safe": v.safe,
      "msg": v.message(), "frames": sum(len(s.frames) for s in st),
      "pm": gdb.parameter("backtrace past-main"), "limit": gdb.parameter("backtrace limit")}))
'''


def test_stacks_of_256_threads_are_complete_and_settings_restored():
    # Reliability only: how fast this is belongs to bench/run.py (256 threads row).  A time bound here
    # failed CI (2.6 s against 0.04 s quiet) when the machine's other tests took the CPUs.
    exe = build()
    with Target([exe, "254"], ready_line="ready") as t:
        r = run_gdb(t.pid, commands=["set backtrace limit 7"], python=STACKS_TIMING, timeout=120)
        assert r.results, r
        res = r.results[0]
        print("collect_stacks of %d threads (%d frames): %.3f s, check %.4f s" % (
            res["threads"], res["frames"], res["collect"], res["check"]))
        assert res["threads"] == 257
        assert res["safe"], res["msg"]          # every stack reaches its outermost frame through known code
        assert res["pm"] is False and res["limit"] == 7   # user settings restored
        assert wait_running(t.pid), thread_states(t.pid)


USER_STOP = '''
import gdb, json
from gdb_nsb.errors import StoppedByUser
from gdb_nsb.process import safepoint_wait
from gdb_nsb.safepoint import SafePointCheck
wp = gdb.Breakpoint("spin", gdb.BP_WATCHPOINT, gdb.WP_WRITE)
check = SafePointCheck({"busy_fn": [tuple(%r)]})
out = {}
try:
    safepoint_wait.wait_for_safe_point(check, strategy="retry", tries=3, delays=[0.5])
except StoppedByUser as e:
    th = gdb.selected_thread()
    out = {"error": str(e), "code": e.exit_code, "wp": wp.number, "hits": wp.hit_count,
           "stopped": all(t.is_stopped() for t in gdb.selected_inferior().threads()),
           "function": gdb.selected_frame().name(),
           "sigstop": [l for l in gdb.execute("info signals SIGSTOP", to_string=True).splitlines()
                       if l.startswith("SIGSTOP")][0].split()[1:4]}
wp.delete()
print("NSB-RESULT:" + json.dumps(out))
'''


def test_user_watchpoint_during_a_window_stops_the_operation_there():
    """A stop the user asked for is never swallowed: exit 21, the process stays where it stopped."""
    exe = build()
    busy = ranges(exe, "busy_fn")["busy_fn"]
    with Target([exe], ready_line="ready") as t:
        reply(t, "park")
        r = run_gdb(t.pid, python=USER_STOP % (busy,), timeout=90)
        assert r.results and r.results[0], r
        res = r.results[0]
        assert res["code"] == 21 and res["hits"] >= 1, res
        assert res["error"].startswith("breakpoint %d stopped LWP" % res["wp"]), res
        assert res["stopped"] and res["function"] == "busy_fn", res
        assert res["sigstop"] == ["Yes", "Yes", "Yes"], res   # the user's handling of SIGSTOP is back
        assert wait_running(t.pid), thread_states(t.pid)
        reply(t, "release")
        assert reply(t, "x")["sigseen"] == 0


def test_non_stop_session_leaves_target_running():
    exe = build()
    with Target([exe], ready_line="ready") as t:
        r = run_gdb(t.pid, python="import gdb_nsb.gdb_main\n", timeout=60,
                    extra_args=["-iex", "set non-stop on"])
        assert r.returncode == 0, r
        assert wait_running(t.pid), thread_states(t.pid)
        assert reply(t, "x")["sigseen"] == 0
