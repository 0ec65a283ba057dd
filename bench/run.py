#!/usr/bin/env python3
"""How long a live patch freezes the target, and how the cost grows (issue 7).

    .venv/bin/python bench/run.py [--quick] [--runs N] [--json OUT] [--only SCENARIO ...]

For each scenario a target is generated (bench/cgen.py), compiled -O2 -g
with ``-flive-patching=inline-clone``, and its patch generated with the
project's generator (the generation time is reported too).  Then, on the
running target, several rounds of:

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

Scenarios (``--only``): main (1 function, 4 threads; plus the call
microbenchmark), funcs (1, 10, 100, 1000 replaced functions), threads
(1, 8, 64, 256 target threads), size (10,000 extra functions, full debug info).
"""

import argparse
import json
import mmap
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.dirname(os.path.abspath(__file__))]

import cgen  # noqa: E402
from gdb_nsb.generator.manual import generate_file  # noqa: E402

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

def sleep_us(nthreads):
    """Each thread's sleep per loop: 200 us, longer with many threads so that the target wakes up at
    most ~20,000 times a second in all (256 threads at 200 us saturated both cores by themselves:
    even the floor then took 43 s).  The gap resolution (and the noise row) grows with it."""
    return max(200, 50 * nthreads)


class Target:
    """The benchmark target, running, with its stats file mapped here."""

    def __init__(self, exe, nthreads, workdir):
        self.exe, self.nthreads = exe, nthreads
        self.stats_path = os.path.join(workdir, "stats-%d" % os.getpid())
        self.proc = None

    def __enter__(self):
        size = cgen.HEADER + cgen.SLOT * self.nthreads
        with open(self.stats_path, "wb") as f:
            f.write(b"\0" * size)
        self.proc = subprocess.Popen([self.exe, self.stats_path, str(self.nthreads), str(sleep_us(self.nthreads))],
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        fd = os.open(self.stats_path, os.O_RDWR)
        try:
            self.mem = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        try:
            self._wait(lambda: self._u64(0) == cgen.MAGIC, 60, "target start")
            self.reset()
        except BaseException:
            self.__exit__(None, None, None)  # never leave the target running
            raise
        return self

    def __exit__(self, *exc):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.mem.close()
        os.unlink(self.stats_path)
        return False

    @property
    def pid(self):
        return self.proc.pid

    def _u64(self, off):
        return struct.unpack_from("<Q", self.mem, off)[0]

    def _set(self, off, v):
        struct.pack_into("<Q", self.mem, off, v)

    def _wait(self, cond, timeout, what):
        end = time.monotonic() + timeout
        while not cond():
            if self.proc.poll() is not None:
                raise RuntimeError("target exited (%s) during %s" % (self.proc.returncode, what))
            if time.monotonic() > end:
                raise RuntimeError("target did not answer: %s" % what)
            time.sleep(0.001)

    def slot(self, i):
        return struct.unpack_from("<5Q", self.mem, cgen.HEADER + cgen.SLOT * i)

    def reset(self):
        """Every thread forgets its largest gap (each acknowledges the new generation)."""
        gen = self._u64(8) + 1
        self._set(8, gen)
        self._wait(lambda: all(self.slot(i)[0] == gen for i in range(self.nthreads)), 120, "reset")

    def worst(self, settle=0.05):
        """(largest gap in s, its start, its end) over all threads, after letting every thread run again."""
        time.sleep(settle)
        best = max((self.slot(i) for i in range(self.nthreads)), key=lambda s: s[1])
        return best[1] / 1e9, best[2] / 1e9, best[3] / 1e9

    def micro(self):
        """Run the call microbenchmark in the target; picoseconds per call {unpatched|patched, direct}."""
        req = self._u64(16) + 1
        self._set(16, req)
        self._wait(lambda: self._u64(24) == req, 60, "microbenchmark")
        return {"unpatched_ps": self._u64(32), "patched_ps": self._u64(40), "direct_ps": self._u64(48)}

    def alive(self):
        return self.proc.poll() is None


# ----------------------------------------------------------------------------- measuring

def timed(argv, timeout=300):
    t = time.monotonic()
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=timeout)
    return time.monotonic() - t, r


def measure(target, argv, kind):
    target.reset()
    latency, r = timed(argv)
    pause, gap_start, gap_end = target.worst()
    row = {"kind": kind, "pause_s": pause, "latency_s": latency}
    if kind != "floor":
        if r.returncode != 0:
            raise RuntimeError("%s failed (%d): %s %s" % (" ".join(argv), r.returncode, r.stdout[-2000:],
                                                          r.stderr[-2000:]))
        doc = json.loads(r.stdout)["processes"][0]
        timings = doc.get("timings", {})
        row["timings"] = timings
        done = timings.get("safe_point_done_at")
        if done is not None and gap_start <= done <= gap_end:
            row["ours_s"] = gap_end - done
    elif r.returncode != 0:
        raise RuntimeError("floor command failed: %s" % r.stderr[-2000:])
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


def run_scenario(name, built, nthreads, runs, with_micro=False):
    """Rounds of floor / patch / revert on one running target."""
    rows = {"floor": [], "patch": [], "revert": [], "noise": []}
    micro = {}
    patch = built["patch"]
    with Target(built["exe"], nthreads, os.path.dirname(built["exe"])) as t:
        time.sleep(0.2)
        if with_micro:
            micro.update(t.micro())
        for i in range(runs):
            rows["floor"].append(measure(t, ["gdb", "-batch", "-nx", "-p", str(t.pid), "-ex", "detach"], "floor"))
            rows["patch"].append(measure(t, [NSB, "patch", "-p", str(t.pid), "-f", patch, "--json"], "patch"))
            if with_micro and i == 0:
                m = t.micro()
                micro["patched_ps"], micro["patched_direct_ps"] = m["patched_ps"], m["direct_ps"]
            rows["revert"].append(measure(t, [NSB, "revert", "-p", str(t.pid), "-f", patch, "--json"], "revert"))
            rows["noise"].append(noise(t, rows["floor"][-1]["latency_s"]))
    out = {"name": name, "threads": nthreads, "runs": runs, "rows": rows, "micro": micro,
           "generate_s": built["generate_s"], "exe_bytes": built["exe_bytes"]}
    for kind in ("floor", "patch", "revert"):
        out[kind] = {"pause": summary([r["pause_s"] for r in rows[kind]]),
                     "latency": summary([r["latency_s"] for r in rows[kind]])}
        if kind != "floor":
            out[kind]["ours"] = summary([r.get("ours_s") for r in rows[kind]])
            for key in ("plan_s", "safe_point_s", "write_s", "command_s"):
                out[kind][key] = summary([r["timings"].get(key) for r in rows[kind]])
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


def table(results):
    head = ("scenario", "floor pause", "patch pause", "x", "revert pause", "x", "floor lat", "patch lat", "x",
            "revert lat", "ours patch", "ours revert", "noise", "gen s")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        fp, pp, rp = r["floor"]["pause"], r["patch"]["pause"], r["revert"]["pause"]
        fl, pl, rl = r["floor"]["latency"], r["patch"]["latency"], r["revert"]["latency"]
        ratio = (lambda a, b: "%.2f" % (a["median"] / b["median"]) if a and b else "-")
        lines.append("| " + " | ".join([
            r["name"], span(fp), span(pp), ratio(pp, fp), span(rp), ratio(rp, fp), span(fl), span(pl),
            ratio(pl, fl), span(rl), span(r["patch"].get("ours")), span(r["revert"].get("ours")),
            ms(r["noise"]), "%.2f" % r["generate_s"]]) + " |")
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
    ap.add_argument("--only", nargs="*", choices=("main", "funcs", "threads", "size", "realprog"), default=None,
                    help="scenarios (default: all but realprog, which builds Debian's sqlite3 and memcached "
                    "once, cached, and needs root)")
    ap.add_argument("--keep", action="store_true", help="keep the build directory")
    args = ap.parse_args(argv)
    runs = args.runs or (3 if args.quick else 7)
    only = set(args.only or ("main", "funcs", "threads", "size"))
    funcs = (1, 10, 100, 1000)
    threads = (1, 8, 64) if args.quick else (1, 8, 64, 256)
    filler = 10000
    workdir = tempfile.mkdtemp(prefix="nsb-bench-")
    results = []
    try:
        def scenario(name, nfuncs, nthreads, patched=1, fill=0, micro=False):
            built = build(workdir, name, nfuncs, nthreads, filler=fill, patched=patched)
            r = run_scenario(name, built, nthreads, runs, with_micro=micro)
            results.append(r)
            print(table([r]).splitlines()[-1], flush=True)

        print(table([]), flush=True)
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
        if "realprog" in only:
            real = realprog_generation(runs)
            print(realprog_table(real), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print("build directory kept: %s" % workdir)
    doc = {"machine": machine(), "runs": runs, "results": results}
    if "realprog" in only:
        doc["realprog_generation"] = real
    with open(args.json, "w") as f:
        json.dump(doc, f, indent=1)
    print()
    print(table(results))
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
