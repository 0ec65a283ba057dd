#!/usr/bin/env python3
"""How long a live patch freezes the target, and how the cost grows (issue 7).

    .venv/bin/python bench/run.py [--quick] [--runs N] [--json OUT] [--only SCENARIO ...]

For each scenario a target is generated (bench/cgen.py), compiled -O2 -g
with ``-flive-patching=inline-clone``, and its patch generated with the
project's generator (the generation time is reported too).  Then, on the
running target, several rounds of:

* bare:   the bare-ptrace floor (bench/bare_floor.c: seize and interrupt every
          thread, rewrite 8 bytes, detach; what any live patcher pays);
* floor:  ``gdb -batch -nx -p PID -ex detach`` (what any GDB-based tool pays);
* patch:  ``./nsb patch -p PID -f PATCH --json``;
* revert: ``./nsb revert -p PID -f PATCH --json``.

Pause = the largest gap any target thread saw between two consecutive clock
reads during the command (the threads record it in a shared stats file the
benchmark resets before each command).  Latency = wall time of the command.
"ours" = from the end of the engine's last safe-point check to the moment
the target ran again (the end of that largest gap), both CLOCK_MONOTONIC.
Each figure: median over the rounds, with min and max.  Noise = the same
pause measure over a quiet interval of the same length, no command run.

Every patch and revert also writes its timeline (gdb_nsb/timeline.py): the
per-step profile of latency and pause (bench/steps.py).

Scenarios (``--only``): main (1 function, 4 threads; plus the call
microbenchmark), funcs (1, 10, 100, 1000 replaced functions), threads
(1, 8, 64, 256 target threads), size (10,000 extra functions, full debug info),
fleet (10 and 100 processes, bench/fleet.py).  ``--check`` exits 1 naming every
goal of issue 15 missed (bench/goals.py).
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.dirname(os.path.abspath(__file__))]

import bare  # noqa: E402
import cgen  # noqa: E402
import fleet  # noqa: E402
import goals  # noqa: E402
import steps  # noqa: E402
from gdb_nsb import timeline  # noqa: E402
from gdb_nsb.generator.manual import generate_file  # noqa: E402
from target import Target  # noqa: E402

NSB = os.path.join(ROOT, "nsb")
INCLUDE = os.path.join(ROOT, "gdb_nsb", "data")
TARGET_FLAGS = ["-O2", "-g", "-flive-patching=inline-clone", "-pthread"]
PATCH_FLAGS = ["-O0", "-g", "-fPIC", "-shared", "-I" + INCLUDE]


# ----------------------------------------------------------------------------- building

def build(workdir, name, nfuncs, nthreads, filler=0, patched=1):
    """Compile target and patch; generate the patch's vzpatch section.  Returns paths and timings."""
    d = os.path.join(workdir, name)
    os.makedirs(d, exist_ok=True)
    src = os.path.join(d, "target.c")
    with open(src, "w") as f:
        f.write(cgen.target_source(nfuncs, nthreads, filler=filler))
    exe = os.path.join(d, "target")
    t = time.perf_counter()
    subprocess.run(["gcc"] + TARGET_FLAGS + [src, "-o", exe], check=True, timeout=900, cwd=d)
    compile_s = time.perf_counter() - t
    psrc = os.path.join(d, "patch.c")
    with open(psrc, "w") as f:
        f.write(cgen.patch_source(patched))
    patch = os.path.join(d, "patch.so")
    subprocess.run(["gcc"] + PATCH_FLAGS + [psrc, "-o", patch], check=True, timeout=300, cwd=d)
    t = time.perf_counter()
    generate_file(exe, patch)
    generate_s = time.perf_counter() - t
    return {"exe": exe, "patch": patch, "compile_s": compile_s, "generate_s": generate_s,
            "exe_bytes": os.path.getsize(exe)}


# ----------------------------------------------------------------------------- the running target

# ----------------------------------------------------------------------------- measuring

def timed(argv, timeout=300, env=None, clock=None):
    """(wall seconds, CompletedProcess); ``clock`` (a list) receives the start and end reads."""
    t = time.monotonic()
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=timeout, env=env)
    end = time.monotonic()
    if clock is not None:
        clock[:] = [t, end]
    return end - t, r


def measure(target, argv, kind):
    target.reset()
    env = clock = None
    if kind not in ("floor", "bare"):
        fd, tl = tempfile.mkstemp(prefix="nsb-timeline-")
        os.close(fd)
        env, clock = dict(os.environ, NSB_TIMELINE=tl), []
    try:
        latency, r = timed(argv, env=env, clock=clock)
        marks = timeline.read(env["NSB_TIMELINE"]) if env else None
    finally:
        if env:
            os.unlink(env["NSB_TIMELINE"])
    pause, gap_start, gap_end = target.worst()
    row = {"kind": kind, "pause_s": pause, "latency_s": latency}
    if kind not in ("floor", "bare"):
        if r.returncode != 0:
            raise RuntimeError("%s failed (%d): %s %s" % (" ".join(argv), r.returncode, r.stdout[-2000:],
                                                          r.stderr[-2000:]))
        doc = json.loads(r.stdout)["processes"][0]
        timings = doc.get("timings", {})
        row["timings"] = timings
        done = timings.get("safe_point_done_at")
        if done is not None and gap_start <= done <= gap_end:
            row["ours_s"] = gap_end - done
        row["steps"] = steps.durations(marks, clock[0], clock[1], timings)
    elif r.returncode != 0:
        raise RuntimeError("%s command failed: %s" % (kind, r.stderr[-2000:]))
    if not target.alive():
        raise RuntimeError("target died during %s" % kind)
    return row


def noise(target, seconds):
    target.reset()
    time.sleep(seconds)
    return target.worst(0)[0]


def summary(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


# The GDB floor without libc's separate debug file (libc6-dbg stays installed): GDB looks for no debug file.
FLOOR_NO_DEBUG = ["gdb", "-batch", "-nx", "-iex", "set debug-file-directory"]


def attach_floor(exe, pid):
    """The least a GDB attach pauses the target: no separate debug file, the executable's symbols read
    before the attach (what our fast attach does), then attach and detach.  Any tool in which GDB
    attaches pays this pause (measured, session 5: also without thread_db and with auto-solib-add off,
    the pause stays within 0.5 ms of it)."""
    return FLOOR_NO_DEBUG + ["-iex", "file " + exe, "-p", str(pid), "-ex", "detach"]


def run_scenario(name, built, nthreads, runs, probe, with_micro=False):
    """Rounds of bare / floor / patch / revert on one running target (main: also the floor without
    separate debug files)."""
    rows = {"bare": [], "floor": [], "floor_nodebug": [], "attach": [], "patch": [], "revert": [], "noise": []}
    micro = {}
    patch = built["patch"]
    with Target(built["exe"], nthreads, os.path.dirname(built["exe"])) as t:
        time.sleep(0.2)
        if with_micro:
            micro.update(t.micro())
        bare_argv = bare.argv(probe, built["exe"], t.pid)
        for i in range(runs):
            rows["bare"].append(measure(t, bare_argv, "bare"))
            rows["floor"].append(measure(t, ["gdb", "-batch", "-nx", "-p", str(t.pid), "-ex", "detach"], "floor"))
            if with_micro:
                rows["floor_nodebug"].append(measure(t, FLOOR_NO_DEBUG + ["-p", str(t.pid), "-ex", "detach"],
                                                     "floor"))
            rows["attach"].append(measure(t, attach_floor(built["exe"], t.pid), "floor"))
            rows["patch"].append(measure(t, [NSB, "patch", "-p", str(t.pid), "-f", patch, "--json"], "patch"))
            if with_micro and i == 0:
                m = t.micro()
                micro["patched_ps"], micro["patched_direct_ps"] = m["patched_ps"], m["direct_ps"]
            rows["revert"].append(measure(t, [NSB, "revert", "-p", str(t.pid), "-f", patch, "--json"], "revert"))
            rows["noise"].append(noise(t, rows["floor"][-1]["latency_s"]))
    out = {"name": name, "threads": nthreads, "runs": runs, "rows": rows, "micro": micro,
           "generate_s": built["generate_s"], "exe_bytes": built["exe_bytes"]}
    for kind in ("bare", "floor", "floor_nodebug", "attach", "patch", "revert"):
        out[kind] = {"pause": summary([r["pause_s"] for r in rows[kind]]),
                     "latency": summary([r["latency_s"] for r in rows[kind]])}
        if kind in ("patch", "revert"):
            out[kind]["ours"] = summary([r.get("ours_s") for r in rows[kind]])
            for key in ("plan_s", "safe_point_s", "write_s", "command_s"):
                out[kind][key] = summary([r["timings"].get(key) for r in rows[kind]])
            out[kind]["steps"] = steps.summarize([r["steps"] for r in rows[kind]])
    out["noise"] = summary(rows["noise"])
    return out


# ----------------------------------------------------------------------------- reporting

def ms(s, key="median"):
    if s is None:
        return "-"
    return "%.1f" % (s[key] * 1e3)


def span(s):
    if s is None:
        return "-"
    return "%s [%s-%s]" % (ms(s), ms(s, "min"), ms(s, "max"))


def _ratio(a, b):
    return "%.2f" % (a["median"] / b["median"]) if a and b and b["median"] > 0 else "-"


def pause_table(results):
    """Pause, ms median [min-max] (the max is the slowest round); x = ours / floor of the same rounds."""
    head = ("scenario", "bare floor", "GDB floor", "GDB attach alone", "/bare", "patch", "/GDB", "/bare", "revert",
            "/GDB", "/bare", "ours patch", "ours revert", "noise")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        b, f, p, v = (r[k]["pause"] for k in ("bare", "floor", "patch", "revert"))
        a = r.get("attach", {}).get("pause")
        lines.append("| " + " | ".join([
            r["name"], span(b), span(f), span(a), _ratio(a, b), span(p), _ratio(p, f), _ratio(p, b), span(v),
            _ratio(v, f), _ratio(v, b),
            span(r["patch"].get("ours")), span(r["revert"].get("ours")), ms(r["noise"])]) + " |")
    return "\n".join(lines)


def latency_table(results):
    """Latency (wall time of the command), ms median [min-max]."""
    head = ("scenario", "bare floor", "GDB floor", "patch", "/GDB", "revert", "/GDB", "gen s")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        b, f, p, v = (r[k]["latency"] for k in ("bare", "floor", "patch", "revert"))
        lines.append("| " + " | ".join([r["name"], span(b), span(f), span(p), _ratio(p, f), span(v), _ratio(v, f),
                                        "%.2f" % r["generate_s"]]) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- real programs

GEN_LIMIT_S = 5.0  # issue 13 item 6: the generator on a real program, cold, for a function inlined into >= 3


def realprog_generation(runs):
    """The generator on Debian's builds (tests/debpkg.py, cached) for an auto-mode patch of a function
    the compiler inlined into at least 3 callers (tests/realprog.py INLINED): wall and CPU time of
    ``nsb generate`` in a fresh process each round; the first round is the cold one (nothing of the
    target read yet by any process of the round).  Returns rows; a cold wall time over GEN_LIMIT_S fails."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import resource

    import realprog  # noqa: E402 - the tests' helpers (tests/ on the path only here)
    rows = []
    for name in sorted(realprog.INLINED):
        pkg = realprog.debpkg.build(name)
        edit = realprog.INLINED[name]
        work = tempfile.mkdtemp(prefix="nsb-bench-realprog-")
        try:
            so, args = realprog.inlined_args(pkg, work)
            walls, cpus, codes = [], [], []
            for i in range(runs):
                copy = "%s.%d.so" % (so, i)
                shutil.copyfile(so, copy)
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                # Debian's plain -O2 units: the caller-side IPA refusal's advice followed (as the tests do),
                # so the figure is a whole generation, not the time to a refusal.
                wall, r = timed([sys.executable, "-m", "gdb_nsb.standalone.cli"] +
                                [copy if a == so else a for a in args] + ["--allow-ipa-ra"], timeout=600)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                walls.append(wall)
                cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
                codes.append(r.returncode)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        rows.append({"program": "%s %s" % (name, pkg.version), "target": os.path.basename(realprog.target(pkg)),
                     "function": "%s (%s), inlined into %d" % (edit["function"], edit["unit"], len(edit["callers"])),
                     "cold_s": walls[0], "cold_cpu_s": cpus[0], "wall": summary(walls), "cpu": summary(cpus),
                     "exit_codes": sorted(set(codes)), "ok": walls[0] <= GEN_LIMIT_S and set(codes) == {0}})
    return rows


def realprog_table(rows):
    out = ["| program | target | patch | cold s (CPU s) | median s [min-max] | exit | verdict |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        w = r["wall"]
        out.append("| %s | %s | %s | %.2f (%.2f) | %.2f [%.2f-%.2f] | %s | %s |" % (
            r["program"], r["target"], r["function"], r["cold_s"], r["cold_cpu_s"], w["median"], w["min"],
            w["max"], ",".join(map(str, r["exit_codes"])), "ok" if r["ok"] else "FAIL (> %.0f s)" % GEN_LIMIT_S))
    return "\n".join(out)


def _save(path, doc):
    """Write the JSON so far: a run cut short (a loaded machine, a deadline) keeps its finished scenarios."""
    with open(path + ".tmp", "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(path + ".tmp", path)


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    gdbv = subprocess.run(["gdb", "--version"], stdout=subprocess.PIPE, text=True).stdout.splitlines()[0]
    gccv = subprocess.run(["gcc", "--version"], stdout=subprocess.PIPE, text=True).stdout.splitlines()[0]
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(), "gdb": gdbv, "gcc": gccv,
            "python": platform.python_version()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer rounds and smaller scaling sets")
    ap.add_argument("--runs", type=int, default=None, help="rounds per scenario (default 7, quick 3)")
    ap.add_argument("--json", default=os.path.join(ROOT, "bench", "results.json"), help="where to write JSON")
    ap.add_argument("--funcs", type=int, nargs="*", default=None, help="replaced functions (default 1 10 100 1000)")
    ap.add_argument("--threads", type=int, nargs="*", default=None, help="thread counts (default 1 8 64 256)")
    ap.add_argument("--check", action="store_true", help="exit 1 naming every goal of issue 15 missed")
    ap.add_argument("--fleet", type=int, nargs="*", default=None, help="process counts of the fleet scenario "
                    "(default 10 100; quick 10)")
    ap.add_argument("--only", nargs="*", choices=("main", "funcs", "threads", "size", "fleet", "realprog"),
                    default=None,
                    help="scenarios (default: all but realprog, which builds Debian's sqlite3 and memcached "
                    "once, cached, and needs root)")
    ap.add_argument("--keep", action="store_true", help="keep the build directory")
    args = ap.parse_args(argv)
    runs = args.runs or (3 if args.quick else 7)
    only = set(args.only or ("main", "funcs", "threads", "size", "fleet"))
    fleet_sizes = args.fleet or ((10,) if args.quick else (10, 100))
    funcs = args.funcs or (1, 10, 100, 1000)
    threads = args.threads or ((1, 8, 64) if args.quick else (1, 8, 64, 256))
    filler = 10000
    workdir = tempfile.mkdtemp(prefix="nsb-bench-")
    results, fleets = [], []
    load_before = os.getloadavg()
    try:
        probe = bare.build(workdir)

        def scenario(name, nfuncs, nthreads, patched=1, fill=0, micro=False):
            built = build(workdir, name, nfuncs, nthreads, filler=fill, patched=patched)
            r = run_scenario(name, built, nthreads, runs, probe, with_micro=micro)
            results.append(r)
            print(pause_table([r]).splitlines()[-1], flush=True)
            _save(args.json, {"partial": True, "results": results, "fleets": fleets})

        print(pause_table([]), flush=True)
        if "main" in only:
            scenario("1 func, 4 threads", 1, 4, micro=True)
        if "funcs" in only:
            for n in funcs:
                scenario("%d funcs" % n, n, 4, patched=n)
        if "threads" in only:
            for n in threads:
                scenario("%d threads" % n, 1, n)
        if "size" in only:
            scenario("10k+ funcs program", 1, 4, fill=filler)
        if "fleet" in only:
            built = build(workdir, "fleet", 1, 1)
            for n in fleet_sizes:
                # 100 serial GDB runs take minutes per round: 3 rounds up to 10 processes, 1 beyond
                fleets.append(fleet.run_fleet(built, n, min(runs, 3 if n <= 10 else 1), probe, NSB, timed, workdir))
                print(fleet.table(fleets[-1:]).splitlines()[-1], flush=True)
                _save(args.json, {"partial": True, "results": results, "fleets": fleets})
        if "realprog" in only:
            real = realprog_generation(runs)
            print(realprog_table(real), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print("build directory kept: %s" % workdir)
    verdicts = goals.evaluate(results, fleets)
    doc = {"machine": machine(), "runs": runs, "load_before": load_before, "load_after": os.getloadavg(),
           "results": results, "fleets": fleets, "goals": verdicts}
    if "realprog" in only:
        doc["realprog_generation"] = real
    with open(args.json, "w") as f:
        json.dump(doc, f, indent=1)
    print("\nload average before %s, after %s" % (
        " ".join("%.2f" % x for x in load_before), " ".join("%.2f" % x for x in doc["load_after"])))
    print("\npause (ms):\n" + pause_table(results))
    print("\nlatency (ms):\n" + latency_table(results))
    if fleets:
        print("\nmany processes (rounds: %s):\n" % ", ".join("%d for %d" % (f["runs"], f["processes"])
                                                            for f in fleets) + fleet.table(fleets))
    for r in results:
        if r["floor_nodebug"]["pause"]:
            print("\nGDB floor of %s with libc's separate debug file: pause %s, latency %s ms; without it "
                  "(`set debug-file-directory` empty): pause %s, latency %s ms" % (
                      r["name"], span(r["floor"]["pause"]), span(r["floor"]["latency"]),
                      span(r["floor_nodebug"]["pause"]), span(r["floor_nodebug"]["latency"])))
    for r in results[:1]:
        for kind in ("patch", "revert"):
            print("\n" + steps.table(r[kind]["steps"], "%s, %s" % (r["name"], kind)))
    print("\ngoals (issue 15):\n" + goals.report(verdicts))
    for r in results:
        if r["micro"]:
            m = r["micro"]
            print("call microbenchmark (%s): unpatched %.2f ns, patched %.2f ns (new code called directly "
                  "%.2f ns: the jump costs %.2f ns)" % (
                      r["name"], m["unpatched_ps"] / 1e3, m["patched_ps"] / 1e3, m["patched_direct_ps"] / 1e3,
                      (m["patched_ps"] - m["patched_direct_ps"]) / 1e3))
    if "realprog" in only:
        print("\ngenerator on real programs (issue 13 item 6):\n" + realprog_table(real))
    print("JSON: %s" % args.json)
    if "realprog" in only and not all(r["ok"] for r in real):
        return 1
    if args.check and goals.missed(verdicts):
        print("missed: %s" % "; ".join(goals.missed(verdicts)), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
