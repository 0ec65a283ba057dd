"""Auto-mode live patches applied to running processes on every target flavor (issue 9).

Each scenario is a compile unit ``unit.c`` (tests/fixtures/auto_live/<scenario>/) built into the
target with ``-g -ffunction-sections -fdata-sections -O2 -flive-patching=inline-clone``; its edited
version ``unit_patched.c`` is built the same way (plus -fPIC) as an object and linked ``-shared``
into the patch, and the unedited unit's object is the ``--original``.  ``unit_value()`` is
``base + 0`` in the target and ``base + 100`` patched, where ``base`` is a static variable of the
unit set at start from the pid: a patch whose references were left on its own copies of the
statics reads 0 there and the workers count a wrong value.  Scenarios:

* static_function: the changed function calls a static function (which reads the statics);
* static_variable: the changed function reads ``base`` and increments the static ``ticks``;
* both: the two in one unit.

Besides the values, the patch's code in the process is disassembled: every PC-relative reference
and direct branch it makes to the unit's statics lands on the target's entity.  Unchanged
functions keep their file bytes while the patch is applied.
"""

import os
import subprocess

import pytest

import targets as T
from targets import load_bias, maps, nsb, read_mem
from targets.autolive import Running, copy_to, fixture_text

pytestmark = [pytest.mark.gdb, pytest.mark.timeout(300)]

UNIT_FLAGS = ["-g", "-ffunction-sections", "-fdata-sections", "-O2", "-flive-patching=inline-clone"]
SCENARIOS = ("static_function", "static_variable", "both")
FLAVORS = ("pie", "nopie", "static", "shlib")
# What the changed function must reach in the target, per scenario.
REFERENCES = {"static_function": {"mix"}, "static_variable": {"base", "ticks"}, "both": {"base", "ticks", "mix"}}
UNCHANGED = {"static_function": {"mix", "unit_init", "unit_base", "unit_ticks"},
             "static_variable": {"unit_init", "unit_base", "unit_ticks"},
             "both": {"mix", "unit_init", "unit_base", "unit_ticks"}}


class Built:
    """One scenario on one flavor: ``exe`` runs, ``target`` (exe or libunit.so) is patched."""

    def __init__(self, scenario, flavor):
        self.scenario, self.flavor = scenario, flavor
        unit, main = fixture_text(scenario, "unit.c"), fixture_text("main.c")
        if flavor == "shlib":
            self.target = T.build([("unit.c", unit)], UNIT_FLAGS + ["-fPIC", "-shared"], "libunit.so")
            self.exe = T.build([("main.c", main)], ["-O2", "-g", "-pthread"] + T.FLAVOR_FLAGS["pie"] +
                                    ["-Wl,-rpath," + os.path.dirname(self.target)], "auto-live-shlib",
                                    extra_inputs=[self.target])
        else:
            self.exe = self.target = T.build([("unit.c", unit), ("main.c", main)],
                                                  UNIT_FLAGS + ["-pthread"] + T.FLAVOR_FLAGS[flavor],
                                                  "auto-live-" + flavor)
        obj_flags = UNIT_FLAGS + ["-fPIC", "-c"]
        self.patch_obj = T.build([("unit.c", fixture_text(scenario, "unit_patched.c"))], obj_flags, "unit.o")
        self.orig_obj = T.build([("unit.c", unit)], obj_flags, "unit.o")
        self.so = T.build([], ["-shared"], "unit-patch.so", extra_inputs=[self.patch_obj])


def _generate_api(built, tmp_path):
    from gdb_nsb.generator import generate_file
    out = copy_to(built.so, tmp_path, "auto-%s-%s.so" % (built.scenario, built.flavor))
    gen = generate_file(built.target, out, mode="auto", objects=[built.patch_obj], originals=[built.orig_obj])
    return out, gen


def _generate_cli(built, tmp_path):
    out = copy_to(built.so, tmp_path, "auto-cli-%s-%s.so" % (built.scenario, built.flavor))
    r = subprocess.run([os.path.join(T.ROOT, "nsb"), "generate", "--explain", built.target, out,
                        built.patch_obj, "--mode", "auto", "--original", built.orig_obj],
                       capture_output=True, text=True, timeout=120, cwd=T.ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    return out, r.stdout.splitlines()


def _unit_symbols(path):
    """{name: Symbol} of unit.c's functions and variables in ``path`` (statics told apart by file)."""
    from gdb_nsb.elf.image import ElfImage
    out = {}
    for s in ElfImage(path).symtab:
        if s.defined and s.type in ("STT_FUNC", "STT_OBJECT") and s.name in ("base", "ticks", "scale", "mix",
                                                                           "unit_init", "unit_base",
                                                                           "unit_ticks", "unit_value"):
            if s.is_local and os.path.basename(s.file or "") != "unit.c":
                continue
            assert s.name not in out, "%s twice in %s" % (s.name, path)
            out[s.name] = s
    return out


def _file_bytes(path, sym):
    from gdb_nsb.elf.image import ElfImage
    return ElfImage(path).read_vaddr(sym.value, sym.size)


def _references(code, at):
    """Addresses the code at runtime address ``at`` reaches: RIP-relative operands and direct branches."""
    from capstone import CS_ARCH_X86, CS_MODE_64, Cs
    from capstone.x86 import X86_OP_IMM, X86_OP_MEM, X86_REG_RIP
    md = Cs(CS_ARCH_X86, CS_MODE_64)
    md.detail = True
    out = set()
    for insn in md.disasm(code, at):
        for op in insn.operands:
            if op.type == X86_OP_MEM and op.mem.base == X86_REG_RIP:
                out.add(insn.address + insn.size + op.mem.disp)
            elif op.type == X86_OP_IMM and (insn.group(1) or insn.group(2)):  # CS_GRP_JUMP, CS_GRP_CALL
                out.add(op.imm)
        if insn.mnemonic == "ret":
            break
    return out


def _check_unchanged_in_memory(t, built, syms, bias):
    for name in UNCHANGED[built.scenario] - {"base", "ticks"}:
        s = syms[name]
        assert read_mem(t.pid, bias + s.value, s.size) == _file_bytes(built.target, s), \
            "%s was modified in memory although unchanged" % name


def _check_patch_code(t, built, syms, bias, dest):
    """The patch's unit_value in memory reaches the target's statics, never copies."""
    code = read_mem(t.pid, dest, 256)
    refs = _references(code, dest)
    want = {bias + syms[n].value: n for n in REFERENCES[built.scenario]}
    missing = [n for a, n in want.items() if a not in refs]
    assert not missing, "patch code at %#x does not reach the target's %s (reaches %s)" % (
        dest, missing, sorted(hex(r) for r in refs))


def _live_cycle(built, patch, reserve_below=False):
    """Apply, revert, re-apply, revert in the running target, checking each step.

    ``reserve_below``: the target first takes the address space below the executable, so the
    patch lands above the target (negative displacements in its fix-ups); otherwise the
    placement usually puts it below (positive ones)."""
    syms = _unit_symbols(built.target)
    with Running(built, reserve_below) as t:
        bias = load_bias(t.pid, built.target)
        entry = bias + syms["unit_value"].value
        original = _file_bytes(built.target, syms["unit_value"])
        assert t.get()[0] == 0
        assert read_mem(t.pid, entry, len(original)) == original
        t.wait_calls()

        run = nsb("patch", "-p", t.pid, "-f", patch, "--json", "--timeout", 90)
        rc, doc = run.returncode, run.process
        assert rc == 0, doc
        assert [f["name"] for f in doc["functions"]] == ["unit_value"], doc["functions"]
        f = doc["functions"][0]
        assert f["entry"] == entry and f["jump"] == "rel32", f
        if reserve_below:
            assert f["destination"] > entry, "patch at %#x, target entry %#x" % (f["destination"], entry)
        delta, base, ticks0 = t.get()
        assert delta == 100, "patched unit_value gives base%+d (base %d)" % (delta, base)
        s = t.wait_calls()
        assert s["seen"][100] > 0, s
        _d, _b, ticks1 = t.get()
        # The workers' calls count in the target's own static (a copy would leave it still).
        assert ticks1 >= ticks0 + 150, (ticks0, ticks1)
        _check_patch_code(t, built, syms, bias, f["destination"])
        _check_unchanged_in_memory(t, built, syms, bias)
        maps_applied = maps(t.pid)

        run = nsb("list", "-p", t.pid, "--json", "--timeout", 90)
        rc, doc = run.returncode, run.process
        assert rc == 0, doc
        assert [(g["name"], g["entry"], g["top"]) for g in doc["functions"]] == [("unit_value", entry, True)], doc

        run = nsb("revert", "-p", t.pid, "-f", patch, "--json", "--timeout", 90)
        rc, doc = run.returncode, run.process
        assert rc == 0, doc
        assert t.get()[0] == 0
        assert read_mem(t.pid, entry, len(original)) == original
        assert t.workers_see(0)

        run = nsb("patch", "-p", t.pid, "-f", patch, "--json", "--timeout", 90)
        rc, doc = run.returncode, run.process
        assert rc == 0, doc
        assert t.get()[0] == 100
        assert t.workers_see(100)
        maps_reapplied = maps(t.pid)
        assert sorted(maps_reapplied) == sorted(maps_applied), sorted(set(maps_reapplied) ^ set(maps_applied))

        run = nsb("revert", "-p", t.pid, "-f", patch, "--json", "--timeout", 90)
        rc, doc = run.returncode, run.process
        assert rc == 0, doc
        assert t.get()[0] == 0
        assert read_mem(t.pid, entry, len(original)) == original
        s = t.stats()
        assert s["unexpected"] == 0, s
        assert t.alive()


@pytest.mark.parametrize("flavor", FLAVORS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_auto_patch_live(scenario, flavor, tmp_path):
    built = Built(scenario, flavor)
    patch, gen = _generate_api(built, tmp_path)
    lp = gen.livepatch
    assert [j.name for j in lp.func_jumps] == ["unit_value"]
    assert lp.static_symbols, "no static fix-ups"
    unchanged = {line.split()[1] for line in gen.explain if line.startswith("unchanged ")}
    assert unchanged == UNCHANGED[scenario], gen.explain
    assert gen.warnings == []
    _live_cycle(built, patch)


@pytest.mark.parametrize("flavor", ["pie", "nopie", "static"])
def test_auto_patch_live_above_target(flavor, tmp_path):
    """The patch mapped above the target: every fix-up is a negative displacement."""
    built = Built("both", flavor)
    patch, _gen = _generate_api(built, tmp_path)
    _live_cycle(built, patch, reserve_below=True)


def test_auto_patch_live_generated_by_cli(tmp_path):
    """``nsb generate TARGET PATCH OBJ --mode auto --original ORIG`` makes the same section as the API."""
    from gdb_nsb.elf.livepatch import LivePatch
    built = Built("both", "pie")
    patch, explain = _generate_cli(built, tmp_path)
    api_patch, _gen = _generate_api(built, tmp_path)
    cli_lp, api_lp = LivePatch.read(patch), LivePatch.read(api_patch)
    assert [(j.name, j.func_value, j.patch_value) for j in cli_lp.func_jumps] == \
        [(j.name, j.func_value, j.patch_value) for j in api_lp.func_jumps]
    assert [(s.patch_address, s.patch_size, s.target_value) for s in cli_lp.static_symbols] == \
        [(s.patch_address, s.patch_size, s.target_value) for s in api_lp.static_symbols]
    assert {line.split()[1] for line in explain if line.startswith("unchanged ")} == UNCHANGED["both"]
    _live_cycle(built, patch)
