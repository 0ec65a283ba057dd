"""The acceptance matrix harness: scenario targets, their patches, the driver
process and the oracles (REFERENCE.md section 5).

A scenario is one C file under ``scenarios/``: without ``PATCH`` it is the
target code (it defines ``int scenario_value(void)``), with ``-DPATCH=N`` it is
patch variant N.  Comment lines ``//@ key: value`` declare what the test
expects: ``before`` / ``after`` (/ ``after2``) values, ``refuse CHECK OPT
FLAVORS`` (the generator's refusal by design for those cells, docs/IPA.md:
``refuse ipa_ra O2 pie,nopie: callers; passes`` names exactly the unreplaced
callers and the passes (``callers; passes; replace``: the advice followed is
"replace them too", the patch built with ``-DREPLACE_CALLERS`` defines them,
where the override would be wrong); ``refuse ipa_cp_callee O2 shlib: function`` the
specialised static the patch calls; the cell asserts it, then follows its
advice, the override, and runs in full),
``driver`` (extra driver arguments such as ``sig``), ``busy`` (a thread keeps
running old code: apply must have waited), ``strategy`` (the runner's
safe-point strategy).  The generic driver ``driver.c`` is linked into every
target; it runs the workers and answers the control lines on stdin.
"""

import os
import re
import shutil
import time

from elftools.elf.elffile import ELFFile

import targets as T

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SCENARIOS = os.path.join(HERE, "scenarios")
DRIVER = os.path.join(HERE, "driver.c")

FLAVORS = ("pie", "nopie", "static", "shlib", "dlopen")
OPT_FLAGS = {
    "O2ic": ["-O2", "-flive-patching=inline-clone"],
    "O2": ["-O2"],
    "O0": ["-O0"],
}
COMMON_FLAGS = ["-g", "-pthread"]
LIB_NAME = "libscen.so"

RUNNER_TIMEOUT = 120.0  # --timeout of every runner call (a hang bound, not a speed test); the runner adds its grace
STEP_TIMEOUT = 10.0  # one control line to the driver


class MatrixFailure(AssertionError):
    """An oracle of the matrix failed (one line, with the step)."""


# ------------------------------------------------------------------ scenarios


def scenario_text(name):
    with open(os.path.join(SCENARIOS, name + ".c")) as f:
        return f.read()


def scenario_meta(name):
    """The ``//@ key: value`` lines of a scenario, typed."""
    meta = {"refuse": {}, "driver": [], "busy": False, "strategy": None}
    for line in scenario_text(name).splitlines():
        if not line.startswith("//@"):
            continue
        key, _, value = line[3:].partition(":")
        key, value = key.strip(), value.strip()
        if key in ("before", "after", "after2"):
            meta[key] = int(value)
        elif key.startswith("refuse "):
            check, opt, flavors = key.split()[1:]
            if check not in REFUSALS or opt not in OPT_FLAGS:
                raise ValueError("scenario %s: unknown refusal %r" % (name, key))
            for flavor in flavors.split(","):
                if flavor not in FLAVORS:
                    raise ValueError("scenario %s: unknown flavor %r" % (name, flavor))
                meta["refuse"].setdefault((opt, flavor), {})[check] = _refusal_value(check, value)
        elif key == "driver":
            meta[key] = value.split()
        elif key == "busy":
            meta[key] = value == "yes"
        elif key == "strategy":
            meta[key] = value
        else:
            raise ValueError("scenario %s: unknown key %r" % (name, key))
    return meta


def _refusal_value(check, value):
    if check == "ipa_ra":
        callers, passes, follow = (value.split(";") + [""])[:3]
        if follow.strip() not in ("", "replace"):
            raise ValueError("unknown advice %r" % follow)
        return (sorted(v.strip() for v in callers.split(",") if v.strip()), sorted(passes.split())), follow.strip()
    return value.strip(), ""


def refusal_of(text):
    """(check, what it names) of a generator refusal text, or None: the two refusals by design
    whose advice is an override (manual.py _check_replacements, refuse_callee)."""
    m = re.search(r"has callers in its compile unit that the patch does not replace: ([^;]+); .* was compiled "
                  r"with (.+?) \(docs/IPA.md\).*; the safe route: replace those callers too .*"
                  r"--allow-ipa-ra forces it unsafely: ", text)
    if m:
        return "ipa_ra", (sorted(n.strip() for n in m.group(1).split(",")), sorted(m.group(2).split(" and ")))
    m = re.match(r"function (\S+) \(patch [^)]*\): static function \1 \(0x[0-9a-f]+\) of a unit built with "
                 r"-fipa-cp .*override with --allow-ipa-cp-callee$", text)
    if m:
        return "ipa_cp_callee", m.group(1)
    return None


REFUSALS = {"ipa_ra": "allow_ipa_ra", "ipa_cp_callee": "allow_ipa_cp_callee"}


def positive_scenarios():
    return sorted(n[:-2] for n in os.listdir(SCENARIOS) if n.endswith(".c") and n != "neg.c")


# ------------------------------------------------------------------ building


class Built:
    """A compiled target: ``exe`` to run, ``obj`` the target object (the
    executable, or libscen.so), ``argv_extra`` for the driver."""

    def __init__(self, exe, obj, flavor, argv_extra=()):
        self.exe = exe
        self.obj = obj
        self.flavor = flavor
        self.argv_extra = list(argv_extra)


def build_target(name, flavor, opt, defines=()):
    """Compile scenario ``name`` for ``flavor`` at optimisation ``opt`` (cached)."""
    text = scenario_text(name)
    with open(DRIVER) as f:
        driver = f.read()
    flags = OPT_FLAGS[opt] + COMMON_FLAGS + ["-D" + d for d in defines]
    if flavor in ("pie", "nopie", "static"):
        exe = T.build([("driver.c", driver), (name + ".c", text)], flags + T.FLAVOR_FLAGS[flavor],
                           "target")
        return Built(exe, exe, flavor)
    lib = T.build([(name + ".c", text)], flags + ["-fPIC", "-shared", "-Wl,-soname," + LIB_NAME], LIB_NAME)
    if flavor == "shlib":
        exe = T.build([("driver.c", driver)], flags + ["-Wl,-rpath," + os.path.dirname(lib)], "driver",
                           extra_inputs=[lib])
        return Built(exe, lib, flavor)
    if flavor == "dlopen":
        exe = T.build([("driver.c", driver)], OPT_FLAGS[opt] + COMMON_FLAGS + ["-DMATRIX_DLOPEN", "-ldl"],
                           "driver-dlopen")
        return Built(exe, lib, flavor, ["lib=" + lib])
    raise ValueError("unknown flavor %r" % flavor)


def build_patch(name, built, workdir, variant=1, defines=(), **options):
    """Build patch variant ``variant`` of scenario ``name`` and bind it to
    ``built.obj``; returns the generated patch path inside ``workdir``.
    GenerateError (and other NsbErrors) propagate."""
    from gdb_nsb.generator.manual import generate_file

    so = T.build_patch([("%s_patch.c" % name, scenario_text(name))], "patch.so",
                       extra=["-DPATCH=%d" % variant] + ["-D" + d for d in defines])
    out = os.path.join(workdir, "%s-%s-v%d.so" % (name, built.flavor, variant))
    shutil.copyfile(so, out)
    generate_file(built.obj, out, **options)
    return out


def raw_patch(name, workdir, variant=1):
    """The patch .so without a vzpatch section (a copy in ``workdir``)."""
    so = T.build_patch([("%s_patch.c" % name, scenario_text(name))], "patch.so",
                            extra=["-DPATCH=%d" % variant])
    out = os.path.join(workdir, "%s-raw-v%d.so" % (name, variant))
    shutil.copyfile(so, out)
    return out


# ------------------------------------------------------------------ the driver process


class Driver(T.Target):
    """A running target: the driver with its workers, every answer read under a step timeout;
    killed on exit.  A driver that does not answer fails the step (MatrixFailure)."""

    def __init__(self, built, workers, allow, extra=()):
        self.built = built
        argv = [built.exe, str(workers), "allow=" + ",".join(str(v) for v in allow)]
        super().__init__(argv + built.argv_extra + list(extra), timeout=STEP_TIMEOUT)
        self.workers = workers

    def __enter__(self):
        super().__enter__()
        line = self._readline("start")
        if not line.startswith("ready "):
            raise MatrixFailure("driver did not start: %r %s" % (line, self._stderr()))
        if self.built.flavor == "dlopen":
            self.command("load", expect="loaded")
        return self

    def _stderr(self):
        if self.proc.poll() is None:
            return ""
        return "(exit %s, stderr %r)" % (self.proc.returncode, self.proc.stderr.read()[-400:])

    def _readline(self, step, timeout=STEP_TIMEOUT):
        try:
            return self.readline(timeout).strip()
        except TimeoutError:
            raise MatrixFailure("%s: driver gave no answer within %.0f s; what it does:\n%s"
                                % (step, timeout, T.silence_report(self.pid)))
        except EOFError:
            raise MatrixFailure("%s: driver died %s" % (step, self._stderr()))

    def command(self, text, expect=None):
        if self.proc.poll() is not None:
            raise MatrixFailure("%s: driver is gone %s" % (text, self._stderr()))
        self.send(text)
        line = self._readline(text)
        if line.startswith("error"):
            raise MatrixFailure("driver: %s -> %s" % (text, line))
        if expect is not None and not line.startswith(expect):
            raise MatrixFailure("driver: %s -> %r, expected %r" % (text, line, expect))
        return line

    def values(self):
        """The latest value of every worker slot, each at least 2 calls fresh."""
        return [int(v) for v in self.command("value", expect="value").split()[1:]]

    def bad(self):
        words = self.command("bad", expect="bad").split()
        return [int(v) for v in words[1:-2]], int(words[-1])

    def allow(self, *values):
        self.command("allow " + " ".join(str(v) for v in values), expect="allowed")

    def release(self):
        self.command("release", expect="released")

    def alive(self):
        return self.proc.poll() is None

    # ---------------------------------------------------------------- oracles

    def expect_values(self, value, step, wait=3.0):
        """Every worker shows ``value`` (allowing ``wait`` seconds to settle)."""
        deadline = time.monotonic() + wait
        while True:
            vals = self.values()
            if all(v == value for v in vals):
                return
            if time.monotonic() > deadline:
                raise MatrixFailure("%s: workers show %s, expected all %d" % (step, vals, value))
            time.sleep(0.02)

    def expect_no_bad(self, step):
        counts, last = self.bad()
        if any(counts):
            raise MatrixFailure("%s: workers saw unexpected values: counts %s, last %d" % (step, counts, last))

    def maps(self):
        return T.maps(self.pid)

    def read_mem(self, addr, size):
        return T.read_mem(self.pid, addr, size)

    def write_mem(self, addr, data):
        T.write_mem(self.pid, addr, data)


# ------------------------------------------------------------------ target object bytes


def replaced_functions(patch_path):
    from gdb_nsb.elf.livepatch import LivePatch
    return LivePatch.read(patch_path).func_jumps


def entry_state(drv, patch_path):
    """{function: (bytes in memory, bytes in the file)} over each replaced function's whole size."""
    bias = T.load_bias(drv.pid, drv.built.obj)
    out = {}
    for j in replaced_functions(patch_path):
        out[j.name] = (drv.read_mem(bias + j.func_value, j.func_size), T.file_bytes(drv.built.obj, j.func_value,
                                                                                  j.func_size))
    return out


def expect_file_bytes(drv, patch_path, step):
    for name, (mem, disk) in entry_state(drv, patch_path).items():
        if mem != disk:
            raise MatrixFailure("%s: code of %s differs from the file: %s vs %s" % (step, name, mem[:16].hex(),
                                                                                     disk[:16].hex()))


def expect_jumps(drv, patch_path, step):
    """Each replaced entry holds a jump (after an endbr64 if there is one)."""
    for name, (mem, disk) in entry_state(drv, patch_path).items():
        at = 4 if disk[:4] == b"\xf3\x0f\x1e\xfa" else 0
        if mem[at:at + 1] != b"\xe9" and mem[at:at + 2] != b"\xff\x25":
            raise MatrixFailure("%s: no jump at the entry of %s: %s" % (step, name, mem[:16].hex()))


# ------------------------------------------------------------------ the runner


def nsb(command, pid, patch=None, *options):
    """``nsb COMMAND -p PID [-f PATCH] OPTIONS --json``: (exit code, the process's part of the document)."""
    args = [command, "-p", pid] + (["-f", patch] if patch is not None else []) + list(options)
    run = T.nsb(*args, "--json", "--timeout", "%g" % RUNNER_TIMEOUT)
    return run.returncode, run.process


def nsb_ok(command, pid, patch, *options, step):
    code, doc = nsb(command, pid, patch, *options)
    if code != 0:
        raise MatrixFailure("%s: nsb %s exit %d: %s" % (step, command, code, doc.get("message")))
    return doc


def nsb_fails(command, pid, patch, *options, code, contains, step):
    """The runner must fail with exit ``code`` and a message containing every string of ``contains``."""
    got, doc = nsb(command, pid, patch, *options)
    message = doc.get("message") or ""
    if got != code or any(c not in message for c in contains):
        raise MatrixFailure("%s: nsb %s: expected exit %d with %s, got exit %d: %s"
                            % (step, command, code, contains, got, message))
    print("%s: exit %d: %s" % (step, got, message))  # shown with -s and in failure reports
    return message


# ------------------------------------------------------------------ the positive cell


def patch_following_refusals(name, built, opt, workdir):
    """Generate the patch of scenario ``name`` for ``built``: every refusal must be one the scenario
    declares for this cell (``refuse`` keys: exactly those callers and passes, that function), and
    is then followed by its advice (the override it names); every declared refusal must come."""
    from gdb_nsb.errors import GenerateError

    expected = scenario_meta(name)["refuse"].get((opt, built.flavor), {})
    options, seen, defines = {}, set(), []
    while True:
        try:
            patch = build_patch(name, built, workdir, defines=defines, **options)
            break
        except GenerateError as e:
            found = refusal_of(str(e))
            if found is None or found[0] in seen or found[0] not in expected:
                raise MatrixFailure("generator refused (not declared for %s %s): %s" % (opt, built.flavor, e))
            check, named = found
            if named != expected[check][0]:
                raise MatrixFailure("generator refused %s naming %s, expected %s: %s" % (check, named,
                                                                                        expected[check][0], e))
            seen.add(check)
            if expected[check][1] == "replace":
                print("refused as declared, following the advice (replace the callers too): %s" % e)
                defines.append("REPLACE_CALLERS")
            else:
                print("refused as declared, following the advice (%s): %s" % (REFUSALS[check], e))
                options[REFUSALS[check]] = True
    missing = sorted(set(expected) - seen)
    if missing:
        raise MatrixFailure("generator accepted %s %s without the declared refusal %s (%s)"
                            % (opt, built.flavor, missing, {c: expected[c][0] for c in missing}))
    return patch


def run_positive(name, flavor, opt, workers, workdir):
    """Every step of a positive scenario in one target process (REFERENCE.md section 5), with the
    patch generated as the scenario declares for the cell (patch_following_refusals)."""
    meta = scenario_meta(name)
    before, after = meta["before"], meta["after"]
    assert before != after
    built = build_target(name, flavor, opt)
    patch = patch_following_refusals(name, built, opt, workdir)
    opts = ["--strategy", meta["strategy"]] if meta["strategy"] else []
    with Driver(built, workers, [before], meta["driver"]) as drv:
        drv.expect_values(before, "before")
        expect_file_bytes(drv, patch, "before")
        drv.expect_no_bad("before")

        drv.allow(before, after)
        doc = nsb_ok("patch", drv.pid, patch, *opts, step="apply")
        drv.expect_values(after, "after apply")
        drv.allow(after)
        expect_jumps(drv, patch, "after apply")
        maps_applied = drv.maps()
        drv.expect_no_bad("after apply")
        if meta["busy"] and "replan_s" not in doc.get("timings", {}):
            raise MatrixFailure("apply: a thread was inside the replaced function, yet the engine did not wait "
                                "(timings %s)" % doc.get("timings"))

        drv.allow(before, after)
        nsb_ok("revert", drv.pid, patch, *opts, step="revert")
        drv.expect_values(before, "after revert")
        drv.allow(before)
        expect_file_bytes(drv, patch, "after revert")
        drv.expect_no_bad("after revert")

        drv.allow(before, after)
        nsb_ok("patch", drv.pid, patch, *opts, step="re-apply")
        drv.expect_values(after, "after re-apply")
        drv.allow(after)
        expect_jumps(drv, patch, "after re-apply")
        maps_again = drv.maps()
        if maps_again != maps_applied:
            raise MatrixFailure("re-apply changed the mappings:\n%s"
                                % "\n".join(sorted(set(maps_again) ^ set(maps_applied))))
        drv.expect_no_bad("after re-apply")
        if not drv.alive():
            raise MatrixFailure("the target died")


# ------------------------------------------------------------------ the negative cells

NEGATIVE = ("wrong_buildid", "corrupt_section", "missing_section", "unresolvable", "too_short", "entry_changed",
            "applied_twice", "revert_not_applied", "parked", "seccomp", "stacked_out_of_order")


class _Untouched:
    """What a failed operation must leave as it was: mappings, code, values."""

    def __init__(self, drv, patch, value):
        self.drv, self.patch, self.value = drv, patch, value
        self.maps = drv.maps()
        self.code = {n: mem for n, (mem, _disk) in entry_state(drv, patch).items()}

    def check(self, step):
        drv = self.drv
        if not drv.alive():
            raise MatrixFailure("%s: the target died %s" % (step, drv._stderr()))
        now = drv.maps()
        if now != self.maps:
            raise MatrixFailure("%s: mappings changed:\n%s" % (step, "\n".join(sorted(set(now) ^ set(self.maps)))))
        code = {n: mem for n, (mem, _disk) in entry_state(drv, self.patch).items()}
        for name in code:
            if code[name] != self.code[name]:
                raise MatrixFailure("%s: code of %s changed: %s" % (step, name, code[name][:16].hex()))
        drv.expect_values(self.value, step)
        drv.expect_no_bad(step)


def _section_range(path, name):
    with open(path, "rb") as f:
        sec = ELFFile(f).get_section_by_name(name)
        return (sec["sh_offset"], sec["sh_size"]) if sec is not None else None


def _build_id(patch_path):
    from gdb_nsb.elf.livepatch import LivePatch
    return LivePatch.read(patch_path).new_bid


def _entry_offset(disk):
    return 4 if disk[:4] == b"\xf3\x0f\x1e\xfa" else 0


def run_negative(kind, flavor, workers, workdir):
    """One failure path on a live target: the exact error, an untouched process,
    and where there is one, the way out (the operation then succeeds)."""
    from gdb_nsb.errors import GenerateError

    meta = scenario_meta("neg")
    before, after, after2 = meta["before"], meta["after"], meta["after2"]
    built = build_target("neg", flavor, "O2ic")
    good = build_patch("neg", built, workdir)
    extra = ["seccomp"] if kind == "seccomp" else []

    if kind == "too_short":
        try:
            build_patch("neg", built, workdir, variant=4)
        except GenerateError as e:
            if "function scen_tiny" not in str(e) or "too short for a 5-byte jump" not in str(e):
                raise MatrixFailure("too_short: generator refused for another reason: %s" % e)
        else:
            raise MatrixFailure("too_short: the generator accepted a 1-byte function")

    with Driver(built, workers, [before], extra) as drv:
        drv.expect_values(before, "before")
        untouched = _Untouched(drv, good, before)

        if kind == "wrong_buildid":
            other_dir = os.path.join(workdir, "other")
            os.makedirs(other_dir)
            other = build_target("neg", flavor, "O2ic", defines=["NEG_OTHER_BUILD"])
            wrong = build_patch("neg", other, other_dir)
            from gdb_nsb.elf.livepatch import build_id_of
            nsb_fails("patch", drv.pid, wrong, code=4,
                      contains=["build-id mismatch: %s is mapped with build-id %s, the patch is for %s"
                                % (built.obj, build_id_of(built.obj), build_id_of(other.obj))],
                      step="wrong build-id")
            untouched.check("after wrong build-id")
        elif kind == "corrupt_section":
            bad = os.path.join(workdir, "corrupt.so")
            shutil.copyfile(good, bad)
            off, size = _section_range(bad, "vzpatch")
            with open(bad, "r+b") as f:
                f.seek(off)
                f.write(b"\xff" * size)
            nsb_fails("patch", drv.pid, bad, code=9,
                      contains=["vzpatch section is corrupt: not a BinPatch protobuf", "(in %s)" % bad],
                      step="corrupt section")
            untouched.check("after corrupt section")
        elif kind == "missing_section":
            raw = raw_patch("neg", workdir)
            nsb_fails("patch", drv.pid, raw, code=9,
                      contains=["no vzpatch section in %s: run `nsb generate` on it first" % raw],
                      step="missing section")
            untouched.check("after missing section")
        elif kind == "unresolvable":
            unres = build_patch("neg", built, workdir, variant=3)
            nsb_fails("patch", drv.pid, unres, code=4,
                      contains=["symbol scen_no_such_symbol needed by %s is defined nowhere in the process's "
                                "lookup scope" % os.path.basename(unres)],
                      step="unresolvable symbol")
            untouched.check("after unresolvable symbol")
        elif kind == "too_short":
            # The engine refuses too: a section claiming scen_spare is 4 bytes long.
            from gdb_nsb.elf.livepatch import LivePatch
            forged = os.path.join(workdir, "short.so")
            shutil.copyfile(good, forged)
            lp = LivePatch.read(forged)
            for j in lp.func_jumps:
                if j.name == "scen_spare":
                    j.func_size = _entry_offset(j.entry_bytes) + 4
                    j.entry_bytes = j.entry_bytes[:j.func_size]
                    j.fragments = [(j.func_value, j.func_value + j.func_size)]
            lp.write_into(forged)
            nsb_fails("patch", drv.pid, forged, code=13,
                      contains=["function scen_spare is 4 bytes, too short for the 5-byte rel32 jump"],
                      step="too short")
            untouched.check("after too short")
        elif kind == "entry_changed":
            bias = T.load_bias(drv.pid, built.obj)
            spare = next(j for j in replaced_functions(good) if j.name == "scen_spare")
            disk = T.file_bytes(built.obj, spare.func_value, spare.func_size)
            at = bias + spare.func_value + _entry_offset(disk)
            drv.write_mem(at, b"\xcc")  # someone else's breakpoint; no worker runs scen_spare
            untouched = _Untouched(drv, good, before)
            now = drv.read_mem(at, 5).hex()
            want = disk[_entry_offset(disk):_entry_offset(disk) + 5].hex()
            nsb_fails("patch", drv.pid, good, code=4,
                      contains=["bytes at %#x (jump over scen_spare) are %s, expected %s" % (at, now, want)],
                      step="entry bytes changed")
            untouched.check("after entry bytes changed")
            drv.write_mem(at, disk[_entry_offset(disk):_entry_offset(disk) + 1])
            drv.allow(before, after)
            nsb_ok("patch", drv.pid, good, step="apply once the bytes are back")
            drv.expect_values(after, "after apply")
        elif kind == "applied_twice":
            drv.allow(before, after)
            nsb_ok("patch", drv.pid, good, step="apply")
            drv.expect_values(after, "after apply")
            drv.allow(after)
            again = _Untouched(drv, good, after)
            nsb_fails("patch", drv.pid, good, code=5, contains=["patch %s is already applied" % _build_id(good)],
                      step="apply twice")
            again.check("after applying twice")
        elif kind == "revert_not_applied":
            nsb_fails("revert", drv.pid, good, code=2, contains=["no live patch is applied in process %d" % drv.pid],
                      step="revert with nothing applied")
            untouched.check("after revert of a patch not applied")
            # Another patch applied, this one not.
            second = build_patch("neg", built, workdir, variant=2)
            drv.allow(before, after2)
            nsb_ok("patch", drv.pid, second, step="apply another patch")
            drv.expect_values(after2, "after applying another patch")
            drv.allow(after2)
            other = _Untouched(drv, good, after2)
            bid = _build_id(good)
            nsb_fails("revert", drv.pid, good, code=2,
                      contains=["patch %s is not applied in process %d" % (bid, drv.pid)],
                      step="revert of a patch not applied")
            other.check("after revert of a patch not applied")
        elif kind == "parked":
            parked = build_patch("neg", built, workdir, variant=5)
            untouched = _Untouched(drv, parked, before)
            nsb_fails("patch", drv.pid, parked, "--retries", "3", code=3,
                      contains=["no safe point after 3 checks: not at a safe point: thread ", " in scen_parked (pc ",
                                "inside scen_parked, which the patch replaces"],
                      step="thread parked inside")
            untouched.check("after parked refusal")
            drv.release()
            nsb_ok("patch", drv.pid, parked, step="apply once the thread left")
            expect_jumps(drv, parked, "after apply")
            drv.expect_values(before, "after apply (workers never call scen_parked)")
            nsb_ok("revert", drv.pid, parked, step="revert")
            expect_file_bytes(drv, parked, "after revert")
        elif kind == "seccomp":
            nsb_fails("patch", drv.pid, good, code=14,
                      contains=["process has a seccomp filter (1 installed)",
                                "(allow it explicitly with --allow-seccomp)"],
                      step="seccomp filter")
            untouched.check("after seccomp refusal")
            drv.allow(before, after)
            nsb_ok("patch", drv.pid, good, "--allow-seccomp", step="apply with --allow-seccomp")
            drv.expect_values(after, "after apply")
            drv.allow(after)
        elif kind == "stacked_out_of_order":
            second = build_patch("neg", built, workdir, variant=2)
            drv.allow(before, after)
            nsb_ok("patch", drv.pid, good, step="apply layer 1")
            drv.expect_values(after, "after layer 1")
            drv.allow(after, after2)
            nsb_ok("patch", drv.pid, second, step="apply layer 2")
            drv.expect_values(after2, "after layer 2")
            drv.allow(after2)
            expect_jumps(drv, good, "after layer 2")
            nsb_ok("revert", drv.pid, good, step="revert layer 1 (below)")
            drv.expect_values(after2, "after reverting layer 1")
            # scen_spare was only in layer 1: back to the file's code.
            state = entry_state(drv, good)
            if state["scen_spare"][0] != state["scen_spare"][1]:
                raise MatrixFailure("after reverting layer 1: scen_spare is not the file's code")
            drv.allow(before, after2)
            nsb_ok("revert", drv.pid, second, step="revert layer 2")
            drv.expect_values(before, "after reverting layer 2")
            drv.allow(before)
            expect_file_bytes(drv, good, "after reverting both")
        else:
            raise ValueError("unknown negative scenario %r" % kind)
        drv.expect_no_bad("end")
        if not drv.alive():
            raise MatrixFailure("the target died")
