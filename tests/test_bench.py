"""The benchmark's own parts (issue 15 item 4): the goals it checks, the per-step profile of the
timeline, the bare-ptrace floor probe on a real process, and the timeline a real `nsb patch` writes."""

import os
import subprocess
import sys
import time

import pytest

import targets as T
from targets import only_process as one
from targets import runner as rt

sys.path.insert(0, os.path.join(T.ROOT, "bench"))

import bare  # noqa: E402
import cgen  # noqa: E402
import goals  # noqa: E402
import steps  # noqa: E402
from target import Target  # noqa: E402

from gdb_nsb import timeline  # noqa: E402


def _m(v):
    return {"median": v, "min": v, "max": v, "n": 1}


def _scenario(name, bare_pause, patch_pause, floor_lat=0.3, patch_lat=0.3):
    return {"name": name, "bare": {"pause": _m(bare_pause), "latency": _m(0.01)},
            "floor": {"pause": _m(0.2), "latency": _m(floor_lat)},
            "patch": {"pause": _m(patch_pause), "latency": _m(patch_lat)}}


def test_goals_met_missed_and_not_measured():
    rows = goals.evaluate([_scenario("1 func, 4 threads", 0.005, 0.015, 0.3, 0.36),
                           _scenario("100 funcs", 0.005, 0.031)],
                          [{"processes": 100, "patch": _m(7.4), "gdb_serial": _m(30.0)}])
    verdict = {g: v for g, _value, _limit, v in rows}
    assert verdict["pause <= 3x the bare-ptrace floor, 1 function"] == "met"      # 3.0x exactly
    assert verdict["latency <= 1.2x the GDB floor, 1 function"] == "met"          # 1.2x exactly
    assert verdict["pause <= 6x the bare-ptrace floor, 100 functions"] == "MISSED"  # 6.2x
    assert verdict["pause <= 6x the bare-ptrace floor, 64 threads"] == "not measured"
    assert verdict["100 processes in <= 0.25x the time of 100 serial GDB attach/detach"] == "met"
    assert goals.missed(rows) == ["pause <= 6x the bare-ptrace floor, 100 functions"]
    assert "MISSED" in goals.report(rows)


def test_a_pause_goal_below_gdbs_own_attach_says_so():
    s = _scenario("1 func, 4 threads", 0.001, 0.018)
    s["attach"] = {"pause": _m(0.0076), "latency": _m(0.07)}
    rows = goals.evaluate([s])
    verdict = {g: v for g, _value, _limit, v in rows}
    assert verdict["pause <= 3x the bare-ptrace floor, 1 function"] == "MISSED (GDB's attach alone: 7.60x)"
    assert goals.missed(rows) == ["pause <= 3x the bare-ptrace floor, 1 function"]
    s["attach"]["pause"] = _m(0.002)  # reachable in principle: plainly missed
    verdict = {g: v for g, _value, _limit, v in goals.evaluate([s])}
    assert verdict["pause <= 3x the bare-ptrace floor, 1 function"] == "MISSED"


def test_step_durations_from_a_timeline():
    marks = [("runner_start", 10.05, 1), ("gdb_spawn", 10.10, 1), ("gdb_python", 10.20, 2),
             ("extension_loaded", 10.30, 2), ("prefetch_done", 10.34, 2), ("gate_open", 10.35, 2),
             ("command_start", 10.37, 2), ("command_done", 10.40, 2), ("detached", 10.41, 2),
             ("gdb_exited", 10.45, 1), ("runner_done", 10.46, 1)]
    d = steps.durations(marks, 10.0, 10.5, {"plan_s": 0.01, "safe_point_s": 0.005, "write_s": 0.002})
    assert d["GDB start"] == pytest.approx(0.10) and d["extension imports"] == pytest.approx(0.10)
    assert d["attach (every LWP, symbols)"] == pytest.approx(0.02)
    assert d["runner exit"] == pytest.approx(0.04) and d["  plan"] == 0.01
    # every latency step together is the whole command
    total = sum(v for k, v in d.items() if not k.startswith("  "))
    assert total == pytest.approx(0.5)
    prof = steps.summarize([d, d])
    assert prof["detach"]["median"] == pytest.approx(0.01) and "  replan" not in prof


def test_step_cpu_from_a_timeline():
    """Within one process a step's CPU is the difference; a step ending at a process's first mark is all that
    process spent so far; a step from one process's mark to another's later mark is left out."""
    marks = [("runner_start", 10.05, 1, 0.04), ("gdb_spawn", 10.10, 1, 0.05), ("gdb_python", 10.20, 2, 0.03),
             ("extension_loaded", 10.30, 2, 0.09), ("detached", 10.41, 2, 0.15), ("gdb_exited", 10.45, 1, 0.06),
             ("runner_done", 10.46, 1, 0.07)]
    c = steps.cpu_durations(marks)
    assert c["runner start-up (Python, imports)"] == pytest.approx(0.04)
    assert c["runner: arguments, preflight"] == pytest.approx(0.01)
    assert c["GDB start"] == pytest.approx(0.03) and c["extension imports"] == pytest.approx(0.06)
    assert c["runner: result"] == pytest.approx(0.01)
    assert "GDB exit" not in c and "runner exit" not in c


def _bench_target(tmp_path):
    src = tmp_path / "target.c"
    src.write_text(cgen.target_source(1, 3))
    exe = str(tmp_path / "target")
    subprocess.run(["gcc", "-O2", "-g", "-pthread", str(src), "-o", exe], check=True, timeout=120)
    return exe


@pytest.mark.gdb
@pytest.mark.timeout(300)
def test_bare_floor_probe_stops_every_thread_and_leaves_the_process_running(tmp_path):
    exe = _bench_target(tmp_path)
    probe = bare.build(str(tmp_path))
    with Target(exe, 3, str(tmp_path)) as t:
        argv = bare.argv(probe, exe, t.pid)
        before = T.read_mem(t.pid, int(argv[2], 16), 8)
        t.reset()
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        gap, _start, _end = t.worst(0.05)
        assert gap > 0
        assert T.read_mem(t.pid, int(argv[2], 16), 8) == before
        # every thread runs on: each counts iterations again
        iters = [t.slot(i)[4] for i in range(3)]
        time.sleep(0.1)
        assert all(t.slot(i)[4] > n for i, n in enumerate(iters))
        assert T.wait_running(t.pid)


@pytest.mark.gdb
@pytest.mark.timeout(300)
def test_nsb_patch_writes_its_timeline(tmp_path):
    target = rt.build_target()
    patch = rt.make_patch(target, tmp_path)
    tl = str(tmp_path / "timeline")
    with rt.start(target) as t:
        run = T.nsb("patch", "-p", t.pid, "-f", patch, "--json", env={"NSB_TIMELINE": tl})
        assert run.returncode == 0, run.stderr
        names = [n for n, _t, _pid in timeline.read(tl)]
        # the runner reads the patch while GDB starts (gated start): patch_read falls anywhere in between
        assert names.index("gdb_spawn") < names.index("patch_read") < names.index("gate_open")
        names.remove("patch_read")
        assert names == ["runner_start", "gdb_spawn", "gdb_python", "extension_loaded", "prefetch_done",
                         "gate_open", "command_start", "command_done", "detached", "gdb_exited", "runner_done"]
        d = steps.durations(timeline.read(tl), 0, 1e12, one(run.doc)["timings"])
        cpu = steps.cpu_durations(timeline.read(tl, cpu=True))
        assert 0 < cpu["GDB start"] < d["GDB start"] + 0.05 and 0 < cpu["extension imports"]
        assert d["the nsb command"] > 0 and d["  safe point"] > 0
