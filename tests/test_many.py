"""Many processes in one GDB session (issue 15 item 3): per-process results and exit codes as with a
session per process, and a fault in process 5 of 10 costs that process only, GDB's state included."""

import contextlib
import json

import pytest

import targets as T
from targets import runner as rt

pytestmark = [pytest.mark.gdb, pytest.mark.timeout(900)]

# The runner pinned to one core: one GDB session serves all ten, in -p order (one per core otherwise).
ONE_SESSION = ("taskset", "-c", "0")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    target = rt.build_target("\nint many_sessions_build;\n")
    patch = rt.make_patch(target, tmp_path_factory.mktemp("many"))
    return target, patch


def _lone(target, patch, fault):
    """What one session per process gives for the same fault on a fresh target: (code, error)."""
    with rt.start(target) as t:
        env = {"NSB_FAULT": fault, "NSB_SESSION_PER_PROCESS": "1"}
        run = T.nsb("patch", "-p", t.pid, "-f", patch, "--json", env=env)
        p = run.doc["processes"][0]
        return run.returncode, p["code"], p.get("error")


# kill: GDB dies inside the apply's writes; fail: rolled back from inside the injected calls' settings;
# restore-settings: the first step that put back GDB settings fails to, leaving them changed.
@pytest.mark.parametrize("fault", ["kill@after-jump:1", "fail@after-segment-write:1", "fail@restore-settings:1"])
def test_a_fault_in_process_5_of_10_costs_that_process_only(built, fault, tmp_path):
    target, patch = built
    expected = _lone(target, patch, fault)
    state_file = tmp_path / "states"
    with contextlib.ExitStack() as stack:
        ts = [stack.enter_context(rt.start(target)) for _ in range(10)]
        victim = ts[4]
        env = {"NSB_FAULT": fault, "NSB_FAULT_PID": str(victim.pid), "NSB_MANY_STATE": str(state_file)}
        run = T.nsb("patch", *sum((["-p", str(t.pid)] for t in ts), []), "-f", patch, "--json", env=env,
                    prefix=ONE_SESSION)
        doc = run.doc
        assert [p["pid"] for p in doc["processes"]] == [t.pid for t in ts]
        codes = [p["code"] for p in doc["processes"]]
        assert codes[:4] + codes[5:] == [0] * 9, doc
        v = doc["processes"][4]
        assert (run.returncode, v["code"], v.get("error")) == expected, v
        assert doc["result"] == "mixed"
        # GDB's state as each process found it and left it (session_state's table), per process.  Process 1
        # starts in a fresh session; as it attaches GDB makes glibc's internal signals SIG32 and SIG33
        # nostop noprint, once per session: a later process of a fresh session finds them so.
        record = {r["pid"]: r for r in map(json.loads, state_file.read_text().splitlines())}
        fresh = record[ts[0].pid]["start"]
        later = dict(fresh, signals=dict(fresh["signals"], SIG32=[False, False, True], SIG33=[False, False, True]))
        new_session = {ts[5].pid} if fault.startswith("kill") else set()  # GDB died in process 5
        assert [record[t.pid]["start"] for t in ts[5:]] == [fresh if t.pid in new_session else later
                                                          for t in ts[5:]]
        if fault.startswith("kill"):
            assert victim.pid not in record  # GDB died in it: 6..10 ran in a fresh session
        else:
            # What process 5 left changed (besides the fast attach's debug-file directory, which every
            # process leaves): a failed put-back (restore-settings) leaves its step's settings; only the
            # session's put-back keeps them from process 6.
            start, left = record[victim.pid]["start"], record[victim.pid]["left"]
            changed = sorted(k for part in ("settings", "signals", "breakpoints")
                             for k in set(start[part]) | set(left[part])
                             if left[part].get(k) != start[part].get(k) and k != "debug-file-directory")
            assert bool(changed) == ("restore-settings" in fault), changed
        for i, t in enumerate(ts):
            if i != 4:
                assert t.ask("v") == rt.PATCHED, i
            assert T.wait_running(t.pid)
        # the victim: rolled back (fail), or each entry original or a whole jump (kill), and it answers
        states = {n: T.entry_state(victim.pid, target, n) for n in ("compute", "scale")}
        if fault.startswith("fail"):
            assert victim.ask("v") == rt.ORIGINAL and set(states.values()) == {"original"}, states
        else:
            assert set(states.values()) <= {"original", "jump"}, states
            assert victim.ask("v") in (rt.ORIGINAL, rt.PATCHED, "v 1501 2", "v 1001 3")
        # the victim runs on, and a later revert of all ten (one session again) leaves every one original
        run = T.nsb("revert", *sum((["-p", str(t.pid)] for t in ts), []), "-f", patch, "--json")
        rcodes = [p["code"] for p in run.doc["processes"]]
        assert rcodes[:4] + rcodes[5:] == [0] * 9, run.doc
        assert all(t.ask("v") == rt.ORIGINAL for t in ts[:4] + ts[5:])


def test_a_hang_in_one_process_is_killed_at_its_deadline_and_the_rest_continue(built):
    target, patch = built
    with contextlib.ExitStack() as stack:
        ts = [stack.enter_context(rt.start(target)) for _ in range(4)]
        env = {"NSB_FAULT": "sleep@after-segment-write:1=600", "NSB_FAULT_PID": str(ts[1].pid),
               "NSB_GRACE_SECONDS": "2"}
        run = T.nsb("patch", *sum((["-p", str(t.pid)] for t in ts), []), "-f", patch, "--json", "--timeout", "20",
                    env=env)
        codes = [p["code"] for p in run.doc["processes"]]
        assert codes == [0, 15, 0, 0], run.doc
        assert "GDB did not finish within --timeout" in run.doc["processes"][1]["message"]
        assert run.returncode == 15
        assert [t.ask("v") for t in ts] == [rt.PATCHED, rt.ORIGINAL, rt.PATCHED, rt.PATCHED]
        assert all(T.wait_running(t.pid) for t in ts)
