#!/usr/bin/env python3
"""Apply and revert under heavy CPU load, with the per-step profile of every revert (issue 14 item 7).

    .venv/bin/python bench/load_revert.py [--burners 12] [--workers 16] [--rounds 7] [--warmup 20] [--json OUT]
                                          [--nsb-arg=--nice=-10 ...]

Starts ``--burners`` CPU-burning processes, each in a session of its own like any other program
(with autogroup scheduling each session is one scheduling group), and the stress target of the
tests (tests/targets/stress.py: 16 threads calling the patched function, spinning, signalling
themselves).  After ``--warmup`` seconds, ``--rounds`` rounds of ``nsb patch`` then ``nsb revert``
of its patch ``plus``, each runner in a session of its own (an operator's terminal).  The target's
value is checked after each command.  Prints each round (wall and CPU seconds of the revert, of the
apply, the runnable tasks sampled during the revert), then the revert's steps from the timeline
(NSB_TIMELINE, bench/steps.py): wall and CPU per step, median [min-max], so that a step's wait on
the CPU shows apart from its work.  Bounded: ``--max-seconds`` (default 420) for the whole run; every
process it started is killed on the way out, also on failure or a signal.
"""

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests"), os.path.dirname(os.path.abspath(__file__))]

import steps  # noqa: E402
from gdb_nsb import timeline  # noqa: E402
from targets import stress  # noqa: E402

NSB = os.path.join(ROOT, "nsb")
RUNNER_TIMEOUT = 60.0  # --timeout of each command: GDB ends by itself past it even if we are killed
LIMIT_S = 10.0         # the goal: a revert at load 25-30 under 10 s


class Burners:
    """``n`` busy loops, each in a session of its own; all killed on exit."""

    def __init__(self, n):
        self.n, self.procs = n, []

    def __enter__(self):
        for _ in range(self.n):
            self.procs.append(subprocess.Popen(["sh", "-c", "while :; do :; done"], stdin=subprocess.DEVNULL,
                                               start_new_session=True))
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in self.procs:
            p.wait()


def runnable():
    """Tasks runnable now (the 4th field of /proc/loadavg, minus the reader itself), and the 1-min load."""
    with open("/proc/loadavg") as f:
        parts = f.read().split()
    return int(parts[3].split("/")[0]) - 1, float(parts[0])


class Sampler:
    """Samples runnable() every 0.25 s while a command runs."""

    def __init__(self):
        self.samples, self._stop = [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.25):
            self.samples.append(runnable()[0])

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def median(self):
        return statistics.median(self.samples) if self.samples else runnable()[0]


def nsb(command, pid, patch, extra):
    """One runner call: {wall_s, cpu_s (runner + GDB), runnable, load1, steps, cpu_steps, doc}."""
    fd, tl = tempfile.mkstemp(prefix="nsb-timeline-")
    os.close(fd)
    env = dict(os.environ, NSB_TIMELINE=tl)
    env.pop("NSB_FAULT", None)
    argv = [NSB, command, "-p", str(pid), "-f", patch, "--json", "--timeout", "%g" % RUNNER_TIMEOUT] + extra
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        with Sampler() as sampled:
            start = time.monotonic()
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, cwd=ROOT, env=env, start_new_session=True)
            try:
                out, err = p.communicate(timeout=RUNNER_TIMEOUT + 60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.communicate()
                raise RuntimeError("nsb %s overran %g s" % (command, RUNNER_TIMEOUT + 60))
            end = time.monotonic()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        marks = timeline.read(tl, cpu=True)
    finally:
        os.unlink(tl)
    if p.returncode != 0:
        raise RuntimeError("nsb %s exit %d: %s %s" % (command, p.returncode, out[-1500:], err[-1500:]))
    doc = json.loads(out)["processes"][0]
    timings = doc.get("timings", {})
    return {"wall_s": end - start,
            "cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
            "runnable": sampled.median(), "load1": runnable()[1],
            "steps": steps.durations([m[:3] for m in marks], start, end, timings),
            "cpu_steps": steps.cpu_durations(marks)}


def expect_value(t, want, step):
    got = t.values()[0]
    if got != want:
        raise RuntimeError("%s: compute shows +%d, expected +%d" % (step, got, want))


def profile_table(rounds):
    """Markdown: each step of the revert, wall and CPU ms median [min-max]."""
    walls = steps.summarize([r["revert"]["steps"] for r in rounds])
    lines = ["| revert step | wall ms median [min-max] | CPU ms median [min-max] |", "|---|---|---|"]
    for name, s in walls.items():
        cpus = [r["revert"]["cpu_steps"][name] for r in rounds if name in r["revert"]["cpu_steps"]]
        cpu = ("%.0f [%.0f-%.0f]" % (statistics.median(cpus) * 1e3, min(cpus) * 1e3, max(cpus) * 1e3)
               if cpus else "")
        lines.append("| %s | %.0f [%.0f-%.0f] | %s |" % (name.replace("  ", "- "), s["median"] * 1e3,
                                                         s["min"] * 1e3, s["max"] * 1e3, cpu))
    return "\n".join(lines)


def _bounded(seconds):
    def expired(signum, frame):
        raise TimeoutError("load_revert: past --max-seconds or signalled (%d)" % signum)
    signal.signal(signal.SIGALRM, expired)
    signal.signal(signal.SIGTERM, expired)
    signal.alarm(int(seconds))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--burners", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--warmup", type=float, default=20.0, help="seconds of load before the first round")
    ap.add_argument("--workers", type=int, default=16, help="threads of the stress target")
    ap.add_argument("--nsb-arg", action="append", default=[], help="an extra runner argument (repeatable)")
    ap.add_argument("--max-seconds", type=float, default=420.0)
    ap.add_argument("--json", help="write every round here")
    args = ap.parse_args(argv)
    _bounded(args.max_seconds)
    patch = stress.patch("plus")  # built (cached) before the load starts
    rounds = []
    try:
        with stress.RTarget(workers=args.workers) as t, Burners(args.burners):
            time.sleep(args.warmup)
            for i in range(args.rounds):
                applied = nsb("patch", t.pid, patch, args.nsb_arg)
                expect_value(t, 100, "round %d apply" % (i + 1))
                reverted = nsb("revert", t.pid, patch, args.nsb_arg)
                expect_value(t, 0, "round %d revert" % (i + 1))
                rounds.append({"apply": applied, "revert": reverted})
                print("round %d: revert %.1f s (CPU %.2f s), apply %.1f s (CPU %.2f s); runnable %g, load %.1f"
                      % (i + 1, reverted["wall_s"], reverted["cpu_s"], applied["wall_s"], applied["cpu_s"],
                         reverted["runnable"], reverted["load1"]), flush=True)
    finally:
        signal.alarm(0)
    walls = [r["revert"]["wall_s"] for r in rounds]
    print()
    print("burners %d, nsb args %s: revert median %.1f s, every round %s; under %g s in %d of %d"
          % (args.burners, " ".join(args.nsb_arg) or "(defaults)", statistics.median(walls),
             ", ".join("%.1f" % w for w in walls), LIMIT_S, sum(w < LIMIT_S for w in walls), len(walls)))
    print()
    print(profile_table(rounds))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"burners": args.burners, "nsb_args": args.nsb_arg, "rounds": rounds}, f, indent=1)
    return 0 if all(w < LIMIT_S for w in walls) else 1


if __name__ == "__main__":
    sys.exit(main())
