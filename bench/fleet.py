"""Many processes at once (issue 15 item 3): one patch applied to N running copies of a target.

Per round, on the same N processes: the bare-ptrace floor run on each in turn,
``gdb -nx -batch -p PID -ex detach`` on each in turn (what N separate GDB
sessions cost), then ``nsb patch -p P1 ... -p PN`` and ``nsb revert`` the same
way (one runner).  Figures: wall time of each, and the largest pause any
process saw during our command (median over the processes and the slowest).
"""

import json
import statistics
import time

import bare
from target import Target

FLEET_SLEEP_US = 5000  # per loop and thread: 100 processes wake up 20,000 times a second in all


def _serial(argvs, timed):
    t = time.monotonic()
    for argv in argvs:
        _lat, r = timed(argv)
        if r.returncode != 0:
            raise RuntimeError("%s failed (%d): %s" % (" ".join(argv), r.returncode, r.stderr[-2000:]))
    return time.monotonic() - t


def _reset(targets):
    for t in targets:
        t.reset()


def _pauses(targets):
    time.sleep(0.05)
    return [t.worst(0)[0] for t in targets]


def _ours(argv, targets, timed, count, timeout):
    _reset(targets)
    latency, r = timed(argv, timeout=timeout)
    pauses = _pauses(targets)
    doc = json.loads(r.stdout) if r.stdout.strip().startswith("{") else {}
    codes = [p["code"] for p in doc.get("processes", [])]
    if r.returncode != 0 or len(codes) != count or set(codes) != {0}:
        raise RuntimeError("%s failed (%d, codes %s): %s" % (argv[:2], r.returncode, codes, r.stderr[-2000:]))
    return latency, pauses


def run_fleet(built, count, runs, probe, nsb, timed, workdir):
    """Rounds on ``count`` processes of ``built`` (one thread each); a result dict."""
    targets = [Target(built["exe"], 1, workdir, sleep=FLEET_SLEEP_US) for _ in range(count)]
    rows = []
    try:
        for t in targets:
            t.start()
        for t in targets:
            t.wait_ready()
        pids = [t.pid for t in targets]
        many = sum((["-p", str(p)] for p in pids), [])
        timeout = 60 + 10 * count
        for _ in range(runs):
            row = {"bare_serial": _serial([bare.argv(probe, built["exe"], p) for p in pids], timed),
                   "gdb_serial": _serial([["gdb", "-batch", "-nx", "-p", str(p), "-ex", "detach"] for p in pids],
                                         timed)}
            row["patch"], row["patch_pauses"] = _ours([nsb, "patch", "-f", built["patch"], "--json"] + many,
                                                      targets, timed, count, timeout)
            row["revert"], row["revert_pauses"] = _ours([nsb, "revert", "-f", built["patch"], "--json"] + many,
                                                        targets, timed, count, timeout)
            if not all(t.alive() for t in targets):
                raise RuntimeError("a target died during the fleet round")
            rows.append(row)
    finally:
        for t in targets:
            t.__exit__(None, None, None)
    out = {"processes": count, "runs": runs, "rows": rows}
    for key in ("bare_serial", "gdb_serial", "patch", "revert"):
        vals = [r[key] for r in rows]
        out[key] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}
    for key in ("patch_pauses", "revert_pauses"):
        vals = [p for r in rows for p in r[key]]
        out[key] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}
    return out


def table(fleets):
    head = ("processes", "bare serial s", "GDB serial s", "patch s", "x GDB", "x bare", "revert s", "x GDB",
            "patch pause ms per process", "revert pause ms")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def s(v):
        return "%.2f [%.2f-%.2f]" % (v["median"], v["min"], v["max"])

    def m(v):
        return "%.1f [%.1f-%.1f]" % (v["median"] * 1e3, v["min"] * 1e3, v["max"] * 1e3)

    for f in fleets:
        lines.append("| %d | %s | %s | %s | %.2f | %.1f | %s | %.2f | %s | %s |" % (
            f["processes"], s(f["bare_serial"]), s(f["gdb_serial"]), s(f["patch"]),
            f["patch"]["median"] / f["gdb_serial"]["median"], f["patch"]["median"] / f["bare_serial"]["median"],
            s(f["revert"]), f["revert"]["median"] / f["gdb_serial"]["median"], m(f["patch_pauses"]),
            m(f["revert_pauses"])))
    return "\n".join(lines)
