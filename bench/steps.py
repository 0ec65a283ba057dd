"""Per-step profile of one ``nsb`` command from its timeline (``gdb_nsb/timeline.py``, NSB_TIMELINE).

Latency steps run from the benchmark spawning the runner to the runner's exit;
the pause steps are the ones between GDB's attach and its detach (the
command's own plan / safe point / write come from its JSON ``timings``).
"""

import statistics

# (step, from mark, to mark, inside the pause); "spawn" and "exit" are the benchmark's own clock reads.
LATENCY_STEPS = (
    ("runner start-up (Python, imports)", "spawn", "runner_start", False),
    ("runner: arguments, preflight", "runner_start", "gdb_spawn", False),
    ("GDB start", "gdb_spawn", "gdb_python", False),
    ("extension imports", "gdb_python", "extension_loaded", False),
    ("prefetch (maps, ELF files, `file`)", "extension_loaded", "prefetch_done", False),
    ("wait at the gate (runner reads the patch)", "prefetch_done", "gate_open", False),
    ("attach (every LWP, symbols)", "gate_open", "command_start", True),
    ("the nsb command", "command_start", "command_done", True),
    ("detach", "command_done", "detached", True),
    ("GDB exit", "detached", "gdb_exited", False),
    ("runner: result", "gdb_exited", "runner_done", False),
    ("runner exit", "runner_done", "exit", False),
)
COMMAND_STEPS = ("plan_s", "safe_point_s", "replan_s", "write_s")


def durations(marks, spawn, end, timings=None):
    """{step: seconds} of one run: ``marks`` [(name, t, pid)] from the timeline, ``spawn``/``end`` the
    benchmark's clock around the command, ``timings`` the command's JSON timings."""
    at = {"spawn": spawn, "exit": end}
    for name, t, _pid in marks:
        at.setdefault(name, t)
    out = {}
    for step, a, b, _pause in LATENCY_STEPS:
        if a in at and b in at:
            out[step] = at[b] - at[a]
    for key in COMMAND_STEPS:
        if timings and timings.get(key) is not None:
            out["  " + key[:-2].replace("_", " ")] = timings[key]
    return out


def cpu_durations(marks):
    """{step: CPU seconds} of one run from a timeline read with ``cpu=True``: within one process the
    difference of its CPU at the two marks; a step that ends at a process's first mark (GDB's start,
    the runner's) is that process's CPU since it began.  Steps across processes otherwise are left out."""
    at, first = {}, {}
    for name, _t, pid, spent in marks:
        at.setdefault(name, (pid, spent))
        first.setdefault(pid, name)
    out = {}
    for step, a, b, _pause in LATENCY_STEPS:
        if b not in at:
            continue
        pid_b, cpu_b = at[b]
        if a in at and at[a][0] == pid_b:
            out[step] = cpu_b - at[a][1]
        elif first[pid_b] == b:
            out[step] = cpu_b
    return out


def summarize(runs):
    """{step: {median, min, max}} over the runs' durations() dicts, in LATENCY_STEPS order."""
    names = [s for s, _a, _b, _p in LATENCY_STEPS] + ["  " + k[:-2].replace("_", " ") for k in COMMAND_STEPS]
    out = {}
    for name in names:
        vals = [r[name] for r in runs if name in r]
        if vals:
            out[name] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}
    return out


def table(profile, title):
    """Markdown: one row per step, ms median [min-max], with the steps inside the pause marked."""
    pause = {s for s, _a, _b, p in LATENCY_STEPS if p}
    lines = ["| %s: step | in pause | ms median [min-max] |" % title, "|---|---|---|"]
    for name, s in profile.items():
        inside = "yes" if name in pause or name.startswith("  ") else ""
        lines.append("| %s | %s | %.1f [%.1f-%.1f] |" % (name.replace("  ", "- "), inside, s["median"] * 1e3,
                                                          s["min"] * 1e3, s["max"] * 1e3))
    return "\n".join(lines)
