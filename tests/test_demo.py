"""`nsb demo` runs end to end: the server's quote goes 300 -> 255 (patched) -> 300 (reverted)."""

import os
import re
import signal
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = [pytest.mark.gdb, pytest.mark.timeout(600)]


def _demo(tmp_path, *args):
    """``nsb demo ARGS`` run to its end (bounded, killed when it overruns); its output, exit 0 asserted."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    p = subprocess.Popen([sys.executable, "-m", "gdb_nsb.standalone.cli", "demo", *args, "--workdir", str(tmp_path)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env,
                         start_new_session=True)
    try:
        out, _ = p.communicate(timeout=540)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        raise AssertionError("demo overran:\n" + out)
    assert p.returncode == 0, out
    return out


def test_demo_shows_original_patched_original(tmp_path):
    out = _demo(tmp_path)

    # The quote values in order, with the nsb steps between them.
    events = []
    for line in out.splitlines():
        m = re.search(r"quote for 3 x 100: (\d+)", line)
        if m:
            events.append(int(m.group(1)))
        elif line.startswith("$ nsb ") and line.split()[2] in ("patch", "list", "revert"):
            events.append(line.split()[2])
    assert events.index("patch") < events.index("list") < events.index("revert"), out
    before = events[:events.index("patch")]
    patched = events[events.index("patch") + 1:events.index("list")]
    after = events[events.index("revert") + 1:]
    assert before and set(before) == {300}, out
    assert patched and set(patched) == {255}, out
    assert after and set(after) == {300}, out
    assert "applied to demo-server: 1 function redirected" in out
    assert "quote_price" in out and "layer 1 of 1 (top)" in out
    assert "reverted: 1 function restored" in out
    assert "Demo done." in out

    # The server is gone: the demo cleans up after itself.
    server = os.path.join(str(tmp_path), "demo-server")
    r = subprocess.run(["pgrep", "-f", "^" + server], capture_output=True, text=True)
    assert r.stdout.strip() == "", r.stdout

    # A second run reuses the build (no "Building" line).
    out2 = _demo(tmp_path, "--seconds", "0.6")
    assert "Building" not in out2, out2


def test_demo_series_patch_1_patch_2_cumulative_3_then_the_original(tmp_path):
    out = _demo(tmp_path, "--series")
    # The distinct quotes in order: original, patch 1, patch 2, cumulative patch 3, original again.
    distinct = []
    for line in out.splitlines():
        m = re.search(r"quote for 3 x 100: (\d+)", line)
        if m and (not distinct or distinct[-1] != int(m.group(1))):
            distinct.append(int(m.group(1)))
    assert distinct == [300, 255, 242, 240, 300], out
    assert "(exit code 20)" in out and "needs patch" in out
    assert "replaced patch" in out and "memory unmapped" in out
    assert "Demo done." in out
