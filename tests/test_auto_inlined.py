"""Inlined copies are followed (issue 13, item 2): a patch that applies must change the behaviour.

The target (tests/fixtures/auto_live/inlined/unit.c with the auto_live driver main.c) is a non-PIE
executable at -O2: the global function ``delta`` is inlined into ``unit_value``, its only caller.
The patched unit changes ``delta`` alone (0 -> 100).  Before issue 13 auto mode redirected ``delta``
only, ``patch`` succeeded and the program kept the old value, since every call goes through
``unit_value``'s inlined copy.  Now auto mode redirects ``unit_value`` too (``--explain`` says
why), and the value seen from outside (the driver's "get" and its workers' counts) is the new one
after ``nsb patch`` and the old one after ``nsb revert``.  The same with
``-flive-patching=inline-clone``, which still allows inlining.  Manual mode refuses the patch of
``delta`` alone, naming ``unit_value`` with its file:line; the advised patch generates and works.
"""

import re
import subprocess

import pytest

import targets as T
from gdb_nsb.errors import GenerateError
from gdb_nsb.generator import generate, generate_file
from gdb_nsb.generator.ipaclones import IpaClones
from targets import nsb
from targets.autolive import Running, copy_to, fixture_text

pytestmark = pytest.mark.timeout(300)

OPTS = {"O2": ["-O2"], "O2-inline-clone": ["-O2", "-flive-patching=inline-clone"]}
OBJ_FLAGS = ["-O0", "-g", "-fPIC", "-ffunction-sections", "-fdata-sections", "-c"]


class Built:
    def __init__(self, opt, static=False):
        """``static``: delta is a static function, which -O2 then has only inlined (no out-of-line copy)."""
        edit = (lambda t: t.replace("\nint delta(void)", "\nstatic int delta(void)")) if static else (lambda t: t)
        unit, main = edit(fixture_text("inlined", "unit.c")), fixture_text("main.c")
        flags = OPTS[opt] + ["-g", "-pthread"] + T.FLAVOR_FLAGS["nopie"]
        self.exe = self.target = T.build([("unit.c", unit), ("main.c", main)], flags,
                                              "inlined-%s%s" % (opt, "-static" if static else ""))
        self.patch_obj = T.build([("unit.c", edit(fixture_text("inlined", "unit_patched.c")))], OBJ_FLAGS, "unit.o")
        self.orig_obj = T.build([("unit.c", unit)], OBJ_FLAGS, "unit.o")
        self.so = T.build([], ["-shared"], "inlined-patch.so", extra_inputs=[self.patch_obj])


def _disassembly_has_no_call_to_delta(exe):
    text = T.tool("objdump", "-d", "--no-show-raw-insn", exe)
    body = text.split("<unit_value>:")[1].split("\n\n")[0]
    assert "<delta>" not in body, body  # the premise: delta is inlined into unit_value


def _live(built, patch, expect_functions):
    with Running(built) as t:
        assert t.get()[0] == 0
        t.wait_calls()
        run = nsb("patch", "-p", t.pid, "-f", patch, "--json", "--timeout", 90)
        rc, doc = run.returncode, run.process
        assert rc == 0, doc
        assert sorted(f["name"] for f in doc["functions"]) == expect_functions, doc["functions"]
        assert t.get()[0] == 100, "the patch applied but the program still shows the old value"
        assert t.workers_see(100)  # the workers see the new code too
        run = nsb("revert", "-p", t.pid, "-f", patch, "--json", "--timeout", 90)
        rc, doc = run.returncode, run.process
        assert rc == 0, doc
        assert t.get()[0] == 0
        assert t.workers_see(0)
        s = t.stats()
        assert s["unexpected"] == 0, s
        assert t.alive()


@pytest.mark.gdb
@pytest.mark.parametrize("opt", sorted(OPTS))
def test_auto_mode_redirects_the_inlining_caller_live(opt, tmp_path):
    built = Built(opt)
    _disassembly_has_no_call_to_delta(built.exe)
    patch = copy_to(built.so, tmp_path, "auto-inlined.so")
    gen = generate_file(built.target, patch, mode="auto", objects=[built.patch_obj], originals=[built.orig_obj])
    assert sorted(j.name for j in gen.livepatch.func_jumps) == ["delta", "unit_value"], gen.explain
    added = next(x for x in gen.explain if x.startswith("function unit_value:"))
    assert "[added: its target code holds an inlined copy of delta]" in added and "unit.c:14" in added, added
    assert not any(x.startswith("unchanged unit_value ") for x in gen.explain), gen.explain
    assert gen.stale == [] and gen.warnings == []
    _live(built, patch, ["delta", "unit_value"])


@pytest.mark.gdb
def test_auto_mode_static_function_only_inlined_live(tmp_path):
    # No out-of-line delta at all: before, auto mode took the changed delta for a new helper and
    # redirected nothing; now its inlining caller runs the new code.
    built = Built("O2", static=True)
    assert "delta" not in {s.name for s in __import__("gen_oracle").nm(built.exe)}
    patch = copy_to(built.so, tmp_path, "auto-static.so")
    gen = generate_file(built.target, patch, mode="auto", objects=[built.patch_obj], originals=[built.orig_obj])
    assert [j.name for j in gen.livepatch.func_jumps] == ["unit_value"], gen.explain
    assert any(x.startswith("function delta (") and "only inlined" in x for x in gen.explain), gen.explain
    _live(built, patch, ["unit_value"])


def test_manual_mode_static_function_only_inlined():
    built = Built("O2", static=True)
    text = ('#include "vzp.h"\nVZP_FILE("unit.c");\nextern int delta_scale;\n'
            "static __attribute__((used)) int delta(void) { return delta_scale * 3 + 100; }\n")
    with pytest.raises(GenerateError) as ei:
        generate(built.target, T.build_patch([("sdelta.c", text)], "sdelta.so"))
    msg = str(ei.value)
    assert "unit_value (" in msg and "unit.c:14: holds an inlined copy of delta)" in msg, msg
    advised = text + "VZP_STATIC_VAR_REF(int, base);\nVZP_STATIC_VAR_REF(long, ticks);\n" \
                     "int unit_value(void) { ticks++; return base + delta(); }\n"
    gen = generate(built.target, T.build_patch([("sdelta2.c", advised)], "sdelta2.so"))
    assert [j.name for j in gen.livepatch.func_jumps] == ["unit_value"] and gen.stale == []


def test_manual_mode_static_only_inlined_without_vzp_file_refused():
    # Outside VZP_FILE a patch static is new code: delta was taken for a helper and generated, while the
    # target's inlined copy in unit_value kept the old code.  Now refused, naming the unit and the holder;
    # the advice followed (VZP_FILE before it, the holder replaced too) generates.
    built = Built("O2", static=True)
    text = ('#include "vzp.h"\nextern int delta_scale;\n'
            "static __attribute__((used)) int delta(void) { return delta_scale * 3 + 100; }\n")
    with pytest.raises(GenerateError) as ei:
        generate(built.target, T.build_patch([("sdelta0.c", text)], "sdelta0.so"))
    msg = str(ei.value)
    assert re.match(r"function delta \(\S*sdelta0\.c:3\): the target has a static delta only inlined, in \S*unit\.c "
                    r"\(into unit_value \(\S*unit\.c:14\)\)", msg), msg
    assert 'put VZP_FILE("file") before it and replace the functions holding the copies too' in msg, msg
    advised = ('#include "vzp.h"\nextern int delta_scale;\nVZP_FILE("unit.c");\n'
               "static __attribute__((used)) int delta(void) { return delta_scale * 3 + 100; }\n"
               "VZP_STATIC_VAR_REF(int, base);\nVZP_STATIC_VAR_REF(long, ticks);\n"
               "int unit_value(void) { ticks++; return base + delta(); }\n")
    gen = generate(built.target, T.build_patch([("sdelta3.c", advised)], "sdelta3.so"))
    assert [j.name for j in gen.livepatch.func_jumps] == ["unit_value"] and gen.stale == []
    # new code under a name of its own stays a helper
    renamed = advised.replace("delta(void)", "delta2(void)").replace("base + delta()", "base + delta2()")
    gen = generate(built.target, T.build_patch([("sdelta4.c", renamed)], "sdelta4.so"))
    assert any(x.startswith("helper delta2:") for x in gen.explain), gen.explain


MANUAL_DELTA = '#include "vzp.h"\nextern int delta_scale;\nint delta(void) { return delta_scale * 3 + 100; }\n'
MANUAL_BOTH = (MANUAL_DELTA + 'VZP_FILE("unit.c");\nVZP_STATIC_VAR_REF(int, base);\nVZP_STATIC_VAR_REF(long, ticks);\n'
               "int unit_value(void) { ticks++; return base + delta(); }\n")


@pytest.mark.gdb
def test_manual_mode_refuses_then_the_advised_patch_works_live(tmp_path):
    built = Built("O2")
    alone = T.build_patch([("fix_delta.c", MANUAL_DELTA)], "fix_delta.so")
    with pytest.raises(GenerateError) as ei:
        generate(built.target, alone)
    msg = str(ei.value)
    assert "unit_value (" in msg and "unit.c:14: holds an inlined copy of delta)" in msg, msg
    assert "replace unit_value too" in msg and "--allow-stale-copies" in msg, msg
    # Accepted on request: the result names what stays old.
    gen = generate(built.target, alone, allow_stale_copies=True)
    assert [j.name for j in gen.livepatch.func_jumps] == ["delta"]
    assert len(gen.stale) == 1 and gen.stale[0].startswith("unit_value (")
    # The advice followed: the patch replaces unit_value too, and it takes effect.
    both = copy_to(T.build_patch([("fix_both.c", MANUAL_BOTH)], "fix_both.so"), tmp_path, "fix_both.so")
    gen = generate_file(built.target, both)
    assert sorted(j.name for j in gen.livepatch.func_jumps) == ["delta", "unit_value"] and gen.stale == []
    _live(built, both, ["delta", "unit_value"])


MAIN_UNIT = r"""
#include <stdio.h>
int f(int x) { return x * 3 + 1; }
int g(int x) { return f(x) + 100; }
int main(int c, char **v) { (void)v; printf("%d\n", g(c)); return 0; }
"""


def test_auto_mode_refuses_when_main_holds_the_old_code(tmp_path):
    # -O2 inlines f into g and g into main: redirecting callers would need main, entered once.
    exe = T.build([("mainunit.c", MAIN_UNIT)], ["-O2", "-g"] + T.FLAVOR_FLAGS["nopie"], "mainunit")
    new = T.build([("mainunit.c", MAIN_UNIT.replace("x * 3 + 1", "x * 3 + 2"))], OBJ_FLAGS, "mainunit.o")
    old = T.build([("mainunit.c", MAIN_UNIT)], OBJ_FLAGS, "mainunit.o")
    so = copy_to(T.build([], ["-shared"], "mainunit.so", extra_inputs=[new]), tmp_path, "mainunit.so")
    with pytest.raises(GenerateError) as ei:
        generate(exe, so, mode="auto", objects=[new], originals=[old])
    msg = str(ei.value)
    assert "main (" in msg and "holds an inlined copy of" in msg and "main is entered once" in msg, msg
    assert "--allow-stale-copies" in msg
    gen = generate(exe, so, mode="auto", objects=[new], originals=[old], allow_stale_copies=True)
    assert {j.name for j in gen.livepatch.func_jumps} == {"f", "g"}  # g added, main cannot be
    assert [s.split()[0] for s in gen.stale] == ["main"]


def test_ipa_clones_file(tmp_path):
    """GCC's -fdump-ipa-clones of the target unit is read and used besides the DWARF."""
    src = tmp_path / "unit.c"
    src.write_text(fixture_text("inlined", "unit.c") + "__attribute__((noinline)) static int k(int n, int m) "
                   "{ int r = 0; for (int i = 0; i < n; i++) r += i * m + n; return r; }\n"
                   "int use_k(int n) { return k(n, 3) + k(n + 1, 3); }\n")
    subprocess.run(["gcc", "-O2", "-g", "-fdump-ipa-clones", "-c", str(src), "-o", str(tmp_path / "unit.o")],
                   cwd=str(tmp_path), check=True, timeout=60)
    (dump,) = [str(p) for p in tmp_path.iterdir() if p.name.endswith(".ipa-clones")]
    ipa = IpaClones.read([dump])
    assert ipa.inlined_into("delta", "unit.c") == ["unit_value"]
    assert ipa.clones_of("k", "unit.c") == ["k.constprop.0"]
    assert ipa.inlined_into("delta", "other.c") == []
    built = Built("O2")
    patch = copy_to(built.so, tmp_path, "ipa.so")
    gen = generate(built.target, patch, mode="auto", objects=[built.patch_obj], originals=[built.orig_obj],
                   ipa_clones=[dump])
    assert sorted(j.name for j in gen.livepatch.func_jumps) == ["delta", "unit_value"]
    bad = tmp_path / "bad.ipa-clones"
    bad.write_text("Callgraph clone;f;1\n")
    with pytest.raises(GenerateError) as ei:
        generate(built.target, patch, mode="auto", objects=[built.patch_obj], ipa_clones=[str(bad)])
    assert "bad.ipa-clones:1 is not a -fdump-ipa-clones line" in str(ei.value)


NORETURN_UNIT = r"""
#include <stdio.h>
#include <stdlib.h>
int f(int x) { return x * 3 + 1; }
__attribute__((noreturn, noinline)) void serve(int x)
{
    for (;;) {
        if (printf("%d\n", f(x)) < 0)
            exit(1);
    }
}
"""


def test_auto_mode_refuses_a_noreturn_holder(tmp_path):
    # f is inlined into serve(), an event loop that never returns: a jump at serve's entry would
    # never take effect, so the old f keeps running there.
    main = "void serve(int);\nint main(int c, char **v) { (void)v; serve(c); }\n"
    exe = T.build([("loop.c", NORETURN_UNIT), ("main.c", main)], ["-O2", "-g"] + T.FLAVOR_FLAGS["nopie"],
                       "noreturn-loop")
    new = T.build([("loop.c", NORETURN_UNIT.replace("x * 3 + 1", "x * 3 + 2"))], OBJ_FLAGS, "loop.o")
    old = T.build([("loop.c", NORETURN_UNIT)], OBJ_FLAGS, "loop.o")
    so = copy_to(T.build([], ["-shared"], "loop.so", extra_inputs=[new]), tmp_path, "loop.so")
    with pytest.raises(GenerateError) as ei:
        generate(exe, so, mode="auto", objects=[new], originals=[old])
    msg = str(ei.value)
    assert "serve (" in msg and "loop.c:5: holds an inlined copy of f)" in msg, msg
    assert "serve is entered once and left only at exit (main or noreturn)" in msg, msg
