"""Load: 200 apply/revert cycles on a target whose 16 threads call the patched functions all the time
and signal themselves (handler runs counted exactly).  Zero wrong values, zero crashes, no growth of
mappings or RSS after the cycles.  Slow tier (NSB_SLOW=1); NSB_LOAD_CYCLES overrides the count."""

import os
import time

import pytest

import targets as T
from targets import run_gdb
from targets import stress as R

pytestmark = [pytest.mark.gdb, pytest.mark.slow]

CYCLES = int(os.environ.get("NSB_LOAD_CYCLES", "200"))

LOOP = T.PROC_PRELUDE + r'''
import time
from gdb_nsb.process import run_windows, sigstop
def run(seconds):
    with sigstop.sigstop_handling():
        run_windows.run_window(seconds)
times, marks = [], {}
for i in range(CYCLES):
    t0 = time.monotonic()
    gdb.execute("nsb-patch --timeout 60 " + PATCH, to_string=True)
    t1 = time.monotonic()
    run(0.02)                       # the workers run the patched code
    t2 = time.monotonic()
    gdb.execute("nsb-revert --timeout 60 " + PATCH, to_string=True)
    t3 = time.monotonic()
    run(0.02)                       # ... and the original again
    times.append((t1 - t0, t3 - t2))
    if i == 0:
        marks["maps_after_first"] = maps()
        marks["rss_after_first"] = rss()
marks["maps_after_last"] = maps()
marks["rss_after_last"] = rss()
print("NSB-RESULT: " + json.dumps({"times": times, "marks": marks}))
'''


@pytest.mark.timeout(3600)
def test_apply_revert_cycles_under_load():
    p = R.patch("both")
    with R.RTarget(workers=16) as t:
        before = t.settle()
        rss0 = T.rss_kb(t.pid)
        started = time.monotonic()
        res = run_gdb(t.pid, python=LOOP.replace("CYCLES", str(CYCLES)).replace("PATCH", repr(p)),
                      timeout=60 + 10 * CYCLES)
        wall = time.monotonic() - started
        assert res.results, res
        out = res.results[0]
        assert len(out["times"]) == CYCLES
        assert T.wait_for(lambda: T.tracer_pid(t.pid) == 0, 10)
        assert t.alive()
        assert t.values() == (0, 0)
        assert [T.entry_state(t.pid, R.target(), f) for f in ("compute", "scale")] == ["original", "original"]
        # The workers kept calling through every cycle and never saw a value outside {original, patched}.
        after = t.settle()
        assert after["wrong"] == 0, after
        assert after["sent"] == after["handled"], after
        assert after["calls"] > before["calls"] + 16 * CYCLES, (before, after)
        m = out["marks"]
        # Re-applying reuses the inactive mapping: the address space is the same after 1 and after N cycles.
        assert m["maps_after_last"] == m["maps_after_first"]
        growth = m["rss_after_last"] - m["rss_after_first"]
        assert growth < 512, "RSS grew by %d KiB over %d cycles" % (growth, CYCLES)
        applies = sorted(a for a, _ in out["times"])
        reverts = sorted(r for _, r in out["times"])
        print("load: %d cycles (16 threads, %d calls, %d signals sent = %d handled, 0 wrong) in %.1f s; "
              "apply median %.0f ms (max %.0f), revert median %.0f ms (max %.0f); RSS %d -> %d -> %d KiB; "
              "%d mappings, unchanged" % (
                  CYCLES, after["calls"] - before["calls"], after["sent"], after["handled"], wall,
                  applies[len(applies) // 2] * 1e3, applies[-1] * 1e3, reverts[len(reverts) // 2] * 1e3,
                  reverts[-1] * 1e3, rss0, m["rss_after_first"], m["rss_after_last"], len(m["maps_after_last"])))
