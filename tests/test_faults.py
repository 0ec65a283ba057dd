"""Fault injection at every step of apply and revert (NSB_FAULT, gdb_nsb/process/faults.py).

After each injected failure the target keeps running and is exactly as it was
(bytes, mappings, registry).  After the tool is killed at each step, the
target keeps running, every entry is either the original code or a whole
jump (never torn), `nsb check` tells applied (0), not applied (2) or partial
(8), and `nsb revert` brings it back to the original; a fresh apply then works.
"""

import os
import signal

import pytest

import targets as T
from gdb_nsb.process import faults
from targets import finish, nsb, start_nsb
from targets import stress as R

pytestmark = pytest.mark.gdb

FUNCS, DELTA = R.FUNCS, R.DELTA
MAX_K = 8


def _nsb_check(t, p):
    run = nsb("check", "-p", t.pid, "-f", p, "--json", "--timeout", 90)
    return run.returncode, run.process


def _assert_consistent(t):
    """Entries are whole (original or jump) and each function's value matches its entry."""
    return R.whole_entries(t)


def _assert_original(t, base_maps):
    assert t.alive()
    assert _assert_consistent(t) == {"compute": "original", "scale": "original"}
    assert T.maps(t.pid) == base_maps


def _fired(doc, point, k):
    return "injected fault at %s #%d" % (point, k) in doc.get("message", "")


FAIL_LOOP = T.PROC_PRELUDE + r'''
import os
from gdb_nsb.process import engine, faults
def entries():
    with open("/proc/%d/mem" % PID, "rb") as f:
        out = []
        for a in ENTRIES:
            f.seek(a)
            out.append(f.read(14).hex())
        return out
def check():
    return engine.check(PATCH, engine.Options()).code
if SETUP:
    gdb.execute(SETUP, to_string=True)
base_maps, base_entries = maps(), entries()
steps = []
for k in range(1, MAX_K + 1):
    os.environ["NSB_FAULT"] = "%s:%d" % (POINT, k)
    faults.reset()
    try:
        gdb.execute(COMMAND, to_string=True)
        steps.append({"k": k, "fired": False})
        break
    except gdb.error as e:
        steps.append({"k": k, "fired": True, "message": str(e), "maps_same": maps() == base_maps,
                      "entries_same": entries() == base_entries, "check": check()})
os.environ.pop("NSB_FAULT")
print("NSB-RESULT: " + json.dumps({"steps": steps, "after_entries_changed": entries() != base_entries}))
'''


def _entry_addrs(t):
    from gdb_nsb.elf.image import ElfImage
    image = ElfImage(R.target())
    bias = T.load_bias(t.pid, R.target())
    out = []
    for f in FUNCS:
        sym = next(s for s in image.symbols_named(f) if s.type == "STT_FUNC" and s.size)
        out.append(bias + sym.value)
    return out


def _fail_loop(t, p, point, command, setup=None):
    from targets import run_gdb
    script = (FAIL_LOOP.replace("PATCH", repr(p)).replace("ENTRIES", repr(_entry_addrs(t)))
              .replace("MAX_K", str(MAX_K)).replace("POINT", repr(point))
              .replace("COMMAND", repr(command % p)).replace("SETUP", repr(setup and setup % p)))
    res = run_gdb(t.pid, python=script, timeout=180)
    assert res.results, res
    steps = res.results[0]["steps"]
    fired = [s for s in steps if s["fired"]]
    assert fired and not steps[-1]["fired"], steps  # reached at least once; the last try went through
    return fired, res.results[0]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("point", faults.APPLY_POINTS)
def test_apply_failure_at_every_step_rolls_back(point):
    """fail@POINT:K for every K the apply reaches: bytes, mappings and registry exactly as before each time."""
    p = R.patch("both")
    with R.RTarget(workers=4) as t:
        fired, res = _fail_loop(t, p, point, "nsb-patch %s")
        for s in fired:
            assert "injected fault at %s #%d" % (point, s["k"]) in s["message"], s
            assert s["maps_same"] and s["entries_same"] and s["check"] == 2, s
        assert t.values() == (100, 1000)  # the unfaulted apply that ended the loop
        s = t.settle()
        assert s["wrong"] == 0 and s["sent"] == s["handled"], s
        print("faults injected (fail@%s): %d" % (point, len(fired)))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("point", faults.REVERT_POINTS)
def test_revert_failure_at_every_step_rolls_back(point):
    """fail@POINT:K during revert: the patch stays whole and applied (check 0); a clean revert then works."""
    p = R.patch("both")
    with R.RTarget(workers=4) as t:
        fired, res = _fail_loop(t, p, point, "nsb-revert %s", setup="nsb-patch %s")
        for s in fired:
            assert "injected fault at %s #%d" % (point, s["k"]) in s["message"], s
            assert s["maps_same"] and s["entries_same"] and s["check"] == 0, s
        assert _assert_consistent(t) == {"compute": "original", "scale": "original"}
        s = t.settle()
        assert s["wrong"] == 0 and s["sent"] == s["handled"], s
        print("faults injected (fail@%s): %d" % (point, len(fired)))


def _recover(t, p, base_maps, allow_orphan):
    """After a killed tool: check reports a truthful state, revert repairs, a full cycle works again."""
    states = _assert_consistent(t)
    rc, doc = _nsb_check(t, p)
    both = set(states.values())
    if rc == 0:
        assert both == {"jump"}, (states, doc)
    elif rc == 2:
        assert both == {"original"}, (states, doc)
    else:
        assert rc == 8 and doc.get("state") == "partial", (rc, doc)
    if rc in (0, 8):
        run = nsb("revert", "-p", t.pid, "-f", p, "--json", "--timeout", 90)
        rc2, doc2, err = run.returncode, run.process, run.stderr
        assert rc2 == 0, (doc2.get("message"), doc2.get("timings"), err)
        assert _assert_consistent(t) == {"compute": "original", "scale": "original"}
        rc3, doc3 = _nsb_check(t, p)
        assert rc3 == 2, doc3
    run = nsb("patch", "-p", t.pid, "-f", p, "--json", "--timeout", 90)
    rc4, doc4, err = run.returncode, run.process, run.stderr
    assert rc4 == 0, (doc4.get("message"), doc4.get("timings"), err)
    assert t.values() == (100, 1000)
    run = nsb("revert", "-p", t.pid, "-f", p, "--json", "--timeout", 90)
    rc5, doc5, err = run.returncode, run.process, run.stderr
    assert rc5 == 0, (doc5.get("message"), doc5.get("timings"), err)
    assert t.values() == (0, 0)
    extra = [m for m in T.maps(t.pid) if m not in base_maps]
    # Left over: the registry memfd, the (inactive) patch mapping; after a kill right after the
    # mmap, also that first unrecorded mapping (PROT_NONE: inert).
    named = [m for m in extra if "nsb-registry" in m]
    anon = [m for m in extra if m not in named]
    assert named, extra
    orphans = [m for m in anon if m.split()[1] == "---p"]
    assert len(orphans) <= (1 if allow_orphan else len(anon) - 1), extra
    return rc


# after-mprotect:1 leaves a recorded mapping with pages still PROT_NONE: the re-apply in _recover must
# restore their protections (it once reused them as they were and the target died of SIGSEGV).
_QUICK = {("after-mprotect", 1), ("after-segment-write", 1), ("registry-save", 1), ("after-jump", 1)}
# How often the `both` patch's first apply reaches each point (2 mprotects down, 4 segments, 2 jumps):
# every cell listed must be reached (test_faults_writes.py pins the exact write sequence).
_REACHED = {"after-mprotect": 2, "after-segment-write": 3, "after-jump": 2}
KILL_POINTS = [pytest.param(pt, k, marks=() if (pt, k) in _QUICK else pytest.mark.slow)
               for pt in faults.APPLY_POINTS for k in range(1, _REACHED.get(pt, 1) + 1)]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("point,k", KILL_POINTS)
def test_tool_killed_at_each_apply_step(point, k):
    """kill@POINT:K (GDB SIGKILLs itself there): nothing torn, check truthful, revert repairs."""
    p = R.patch("both")
    with R.RTarget(workers=4) as t:
        base_maps = T.maps(t.pid)
        run = nsb("patch", "-p", t.pid, "-f", p, "--json", "--timeout", 90,
                  env={"NSB_FAULT": "kill@%s:%d" % (point, k)})
        rc, doc, err = run.returncode, run.process, run.stderr
        if rc == 0:
            pytest.fail("kill point %s #%d was never reached: the apply ended normally" % (point, k))
        assert rc == 10 and "GDB failed" in doc["message"], (rc, doc, err)
        assert T.wait_for(lambda: T.tracer_pid(t.pid) == 0, 5)
        rc = _recover(t, p, base_maps, allow_orphan=(point == "after-mmap"))
        print("faults injected (kill@%s:%d): 1, check said %d" % (point, k, rc))


@pytest.mark.timeout(240)
@pytest.mark.parametrize("point,k", [("revert-after-jump", 1),
                                     pytest.param("revert-after-jump", 2, marks=pytest.mark.slow),
                                     pytest.param("revert-registry-save", 1, marks=pytest.mark.slow),
                                     pytest.param("revert-before-commit", 1, marks=pytest.mark.slow)])
def test_tool_killed_at_each_revert_step(point, k):
    p = R.patch("both")
    with R.RTarget(workers=4) as t:
        base_maps = T.maps(t.pid)
        run = nsb("patch", "-p", t.pid, "-f", p, "--json", "--timeout", 90)
        rc, doc, err = run.returncode, run.process, run.stderr
        assert rc == 0, doc
        run = nsb("revert", "-p", t.pid, "-f", p, "--json", "--timeout", 90,
                  env={"NSB_FAULT": "kill@%s:%d" % (point, k)})
        rc, doc, err = run.returncode, run.process, run.stderr
        assert rc == 10 and "GDB failed" in doc["message"], (rc, doc, err)
        rc = _recover(t, p, base_maps, allow_orphan=False)
        if point == "revert-after-jump" and k == 1:
            assert rc == 8  # one jump restored, the other not, the registry still says active
        print("faults injected (kill@%s:%d): 1, check said %d" % (point, k, rc))


@pytest.mark.timeout(240)
@pytest.mark.parametrize("point", [pytest.param("after-segment-write", marks=pytest.mark.slow), "registry-save",
                                   pytest.param("after-jump", marks=pytest.mark.slow)])
def test_gdb_sigkilled_from_outside_in_a_long_apply(point, tmp_path):
    """sleep@POINT widens the step; an operator's SIGKILL of GDB lands there (outside any injected syscall)."""
    p = R.patch("both")
    ready = str(tmp_path / "ready")
    with R.RTarget(workers=4) as t:
        base_maps = T.maps(t.pid)
        runner = start_nsb("patch", "-p", t.pid, "-f", p, "--json",
                           env={"NSB_FAULT": "sleep@%s:1=60" % point, "NSB_FAULT_READY": ready})
        try:
            assert T.wait_for(lambda: os.path.exists(ready), 60), "the apply never reached %s" % point
            gdb_pid = T.tracer_pid(t.pid)
            assert gdb_pid
            os.kill(gdb_pid, signal.SIGKILL)
            run = finish(runner, timeout=60)
        finally:
            if runner.poll() is None:
                os.killpg(runner.pid, signal.SIGKILL)
                runner.wait()
        assert run.returncode == 10, run
        assert T.wait_for(lambda: T.tracer_pid(t.pid) == 0, 5)
        rc = _recover(t, p, base_maps, allow_orphan=False)
        if point == "registry-save":
            # The registry says applied, no jump written yet: nothing of the patch is in effect (the
            # same as a target loaded again at the same address): not applied, the next apply settles it.
            assert rc == 2
        print("faults injected (SIGKILL of GDB during sleep@%s): 1, check said %d" % (point, rc))


MEASURE = r'''
import gdb, json, time
from gdb_nsb.process import faults, registry_store, syscalls
spans, marks, saves = [], {}, []
_attempt = syscalls.SyscallInjector._attempt
def timed(self, thread, nr, args):
    t0 = time.monotonic()
    try:
        return _attempt(self, thread, nr, args)
    finally:
        spans.append((nr, t0, time.monotonic()))
syscalls.SyscallInjector._attempt = timed
_point = faults.point
def point(name, detail=""):
    marks.setdefault(name, time.monotonic())
    return _point(name, detail)
faults.point = point
_save = registry_store.RegistryStore.save
def save(self, reg, undo):
    r = _save(self, reg, undo)
    saves.append(time.monotonic())
    return r
registry_store.RegistryStore.save = save
out = {}
for op, cmd in (("apply", "nsb-patch %(p)s"), ("revert", "nsb-revert %(p)s")):
    del spans[:]; marks.clear(); del saves[:]
    t0 = time.monotonic()
    gdb.execute(cmd % {"p": PATCH}, to_string=True)
    total = time.monotonic() - t0
    d = {"total_s": total, "syscalls": len(spans), "in_syscalls_s": sum(b - a for _, a, b in spans),
         "longest_syscall_s": max([b - a for _, a, b in spans] or [0])}
    if op == "apply":
        mmap_end = [b for nr, a, b in spans if nr == 9][-1]
        d["unrecorded_mapping_s"] = min(s for s in saves if s > mmap_end) - mmap_end
    out[op] = d
print("NSB-RESULT: " + json.dumps(out))
'''


@pytest.mark.timeout(120)
def test_measure_injected_syscall_window():
    """The residual risk: time spent with our syscall stub at a thread's pc (docs/TRUST.md)."""
    from targets import run_gdb
    p = R.patch("both")
    with R.RTarget(workers=16) as t:
        res = run_gdb(t.pid, python=MEASURE.replace("PATCH", repr(p)), timeout=90)
        assert res.results, res
        m = res.results[0]
        for op in ("apply", "revert"):
            d = m[op]
            assert d["in_syscalls_s"] < d["total_s"]
            print("%s: %.1f ms in the command, %d injected syscalls, %.2f ms inside them (%.2f%%), "
                  "longest %.3f ms" % (op, d["total_s"] * 1e3, d["syscalls"], d["in_syscalls_s"] * 1e3,
                                      100 * d["in_syscalls_s"] / d["total_s"], d["longest_syscall_s"] * 1e3))
        print("apply: new mapping unrecorded for %.3f ms" % (m["apply"]["unrecorded_mapping_s"] * 1e3))
        assert m["apply"]["syscalls"] >= 3  # registry memfd, mmap, mprotect ...
        assert t.values() == (0, 0)
