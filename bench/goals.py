"""The goals of issue 15, checked on bench/run.py's results (``--check``).

Each goal compares medians of the same rounds (ours and the floor measured
alternately on the same target).  A goal whose scenario did not run is
reported as not measured; ``--check`` fails on any goal missed.
"""

# (goal, scenario, what is compared, limit): "bare" = ours / bare-ptrace floor, "gdb" = ours / GDB floor.
PAUSE_GOALS = (
    ("pause <= 3x the bare-ptrace floor, 1 function", "1 func, 4 threads", "pause", "bare", 3.0),
    ("pause <= 3x the bare-ptrace floor, 1 function (funcs)", "1 funcs", "pause", "bare", 3.0),
    ("pause <= 6x the bare-ptrace floor, 100 functions", "100 funcs", "pause", "bare", 6.0),
    ("pause <= 6x the bare-ptrace floor, 64 threads", "64 threads", "pause", "bare", 6.0),
    ("latency <= 1.2x the GDB floor, 1 function", "1 func, 4 threads", "latency", "floor", 1.2),
)
FLEET_GOALS = (
    ("100 processes in <= 0.25x the time of 100 serial GDB attach/detach", 100, 0.25),
)


def ratio(ours, floor):
    if not ours or not floor or floor["median"] <= 0:
        return None
    return ours["median"] / floor["median"]


def evaluate(results, fleets=()):
    """[(goal, value or None, limit, verdict 'met'|'MISSED'|'not measured')] for every goal."""
    by_name = {r["name"]: r for r in results}
    out = []
    for goal, scenario, measure, floor, limit in PAUSE_GOALS:
        r = by_name.get(scenario)
        value = ratio(r["patch"][measure], r[floor][measure]) if r else None
        verdict = _verdict(value, limit)
        # A pause goal below what GDB's attach alone costs cannot be met by any tool in which GDB
        # attaches: say so with the figure (it stays missed).
        alone = ratio(r.get("attach", {}).get("pause"), r[floor][measure]) if r and floor == "bare" else None
        if verdict == "MISSED" and alone is not None and alone > limit:
            verdict = "MISSED (GDB's attach alone: %.2fx)" % alone
        out.append((goal, value, limit, verdict))
    by_count = {f["processes"]: f for f in fleets}
    for goal, count, limit in FLEET_GOALS:
        f = by_count.get(count)
        value = ratio(f["patch"], f["gdb_serial"]) if f else None
        out.append((goal, value, limit, _verdict(value, limit)))
    return out


def _verdict(value, limit):
    if value is None:
        return "not measured"
    return "met" if value <= limit else "MISSED"


def report(rows):
    lines = ["| goal | measured | limit | verdict |", "|---|---|---|---|"]
    for goal, value, limit, verdict in rows:
        lines.append("| %s | %s | %.2fx | %s |" % (goal, "-" if value is None else "%.2fx" % value, limit, verdict))
    return "\n".join(lines)


def missed(rows):
    return [goal for goal, _v, _l, verdict in rows if verdict.startswith("MISSED")]
