"""The IPA decision table (docs/IPA.md): each caller-side pass has a target in tests/fixtures/ipa
whose naive patch misbehaves when applied live, and the generator refuses it; the same source
built -flive-patching=inline-clone is patched and behaves.  Interposable functions are accepted;
unmodelled compilers refused; the patch may not call clones or specialised statics."""

import os
import re

import pytest

import gen_oracle as G
import targets as T
from gdb_nsb.errors import GenerateError
from gdb_nsb.generator import generate, ipa
from gdb_nsb.standalone import cli

pytestmark = pytest.mark.timeout(300)

IPA_DIR = os.path.join(T.FIXTURES, "ipa")
# Every pass of the table that can change the fixtures' code; a fixture keeps only its own.
ALL_PASSES = ("ipa-ra", "ipa-pure-const", "ipa-modref", "ipa-reference", "ipa-reference-addressable",
              "ipa-stack-alignment", "ipa-icf", "ipa-cp", "ipa-vrp", "ipa-bit-cp", "ipa-sra")
EXE = ["-g", "-fno-pie", "-no-pie"]
CONTROL = ["-O2", "-flive-patching=inline-clone"] + EXE
# pass -> (value of probe() unpatched, value a correct patch gives); the caller is probe().
CALLER_SIDE = {
    "ipa-ra": (82, 83),
    "ipa-pure-const": (100, 155),
    "ipa-modref": (510, 710),
    "ipa-reference": (310, 910),
    "ipa-stack-alignment": (8, 10),
}


def only(pass_):
    """-O2 with every other pass of the table off: what goes wrong is this pass's doing."""
    return ["-O2"] + ["-fno-" + q for q in ALL_PASSES if q != pass_] + EXE


def build_target(pass_, flags):
    unit = pass_.replace("-", "_")
    return T.build([os.path.join(IPA_DIR, unit + ".c"), os.path.join(IPA_DIR, "main.c")], flags,
                        "ipa-" + unit)


def naive_patch(pass_):
    unit = pass_.replace("-", "_")
    return T.build_patch([os.path.join(IPA_DIR, unit + "_patch.c")], "ipa-%s-patch.so" % unit)


# ---- the table, from producer strings ------------------------------------------------------------


def test_table_from_producers():
    debian = ("GNU C17 12.2.0 -mtune=generic -march=x86-64 -g -O2 -ffile-prefix-map=/build/x=. "
              "-fstack-protector-strong -fstack-clash-protection -fcf-protection")
    assert ipa.caller_side(debian) == ["-fipa-ra", "-fipa-pure-const", "-fipa-modref", "-fipa-reference",
                                       "-fipa-stack-alignment"]
    assert ipa.in_place_callee(debian) == ["-fipa-vrp", "-fipa-bit-cp"]
    assert ipa.in_place_callee("GNU C17 12.2.0 -O2 -fno-ipa-cp") == []  # both run inside ipa-cp
    assert ipa.in_place_callee("GNU C17 12.2.0 -O2 -flive-patching=inline-clone") == []
    assert ipa.caller_side("GNU C17 12.2.0 -O2 -flive-patching=inline-only-static") == []
    assert ipa.caller_side("GNU C17 12.2.0 -Og") == ["-fipa-pure-const", "-fipa-reference",
                                                     "-fipa-stack-alignment"]
    assert ipa.caller_side("GNU C17 12.2.0 -O -fipa-pta") == ["-fipa-pure-const", "-fipa-modref", "-fipa-reference",
                                                              "-fipa-stack-alignment", "-fipa-pta"]
    p = ipa.parse_producer("GNU C17 12.2.0 -O2 -fPIC -fno-semantic-interposition")
    assert p.pic and not p.semantic_interposition and p.major == 12
    assert not ipa.parse_producer("GNU C17 12.2.0 -O2 -fPIC -fPIE").pic
    for prod in ("GNU C17 12.2.0 -O2", "GNU C17 12.2.0 -O0", "GNU AS 2.40", "clang version 14.0.6", ""):
        assert ipa.unmodelled_problem(prod, optimised_hint=False) is None, prod
    msg = ipa.unmodelled_problem("GNU C17 13.2.0 -O2", optimised_hint=False)
    assert "GNU C17 13.2.0 -O2" in msg and "GCC 13" in msg and "docs/IPA.md" in msg
    assert ipa.unmodelled_problem("GNU C17 13.2.0 -O0", optimised_hint=True) is None
    msg = ipa.unmodelled_problem("Debian clang version 14.0.6", optimised_hint=True)
    assert "Debian clang version 14.0.6" in msg and "does not model" in msg


# ---- caller-side passes: each fixture refused; the live-patching build accepted ---------------------


@pytest.mark.parametrize("pass_", sorted(CALLER_SIDE))
def test_caller_side_pass_refused(pass_):
    msg = G.refused(build_target(pass_, only(pass_)), naive_patch(pass_))
    assert "function leaf" in msg and "probe" in msg and "-f" + pass_ in msg and "--allow-ipa-ra" in msg
    assert "docs/IPA.md" in msg
    gen = generate(build_target(pass_, CONTROL), naive_patch(pass_), strict=True)
    assert [j.name for j in gen.livepatch.func_jumps] == ["leaf"] and gen.warnings == []


def test_stack_alignment_of_a_callee_that_calls_out_is_not_assumed():
    # A callee that itself calls a function made GCC keep the caller's alignment: no assumption.
    src = ("#include <stdio.h>\n__attribute__((noinline)) int leaf(int *p) { return printf(\"%d\", *p); }\n"
           "long probe(void) { int v = 3; return leaf(&v); }\nint main(void) { return (int)probe(); }\n")
    t = T.build([("calls_out.c", src)], only("ipa-stack-alignment"), "ipa-calls-out")
    p = G.build_patch([("co.c", "int leaf(int *p) { return *p + 1; }\n")], "co.so")
    gen = generate(t, p)
    assert [j.name for j in gen.livepatch.func_jumps] == ["leaf"]


def test_ipa_ra_of_a_callee_that_calls_out_is_not_assumed():
    # leaf calls an external function on a cold path: GCC counts every call-clobbered register as
    # clobbered by it, and probe keeps its values in callee-saved registers (measured).
    src = open(os.path.join(IPA_DIR, "ipa_ra.c")).read().replace(
        "NOINL int leaf(int x) { return x * x + 1; }",
        "int ext(int);\nNOINL int leaf(int x) { if (x > 1000) return ext(x); return x * x + 1; }")
    ext = "int ext(int x) { return x; }\n"
    t = T.build([("ipa_ra.c", src), ("ext.c", ext), os.path.join(IPA_DIR, "main.c")], only("ipa-ra"),
                     "ipa-ra-calls-out")
    gen = generate(t, naive_patch("ipa-ra"), strict=True)
    assert [j.name for j in gen.livepatch.func_jumps] == ["leaf"]
    # At plain -O2 the memory passes still apply (their summaries can be precise across calls).
    t2 = T.build([("ipa_ra.c", src), ("ext.c", ext), os.path.join(IPA_DIR, "main.c")], ["-O2"] + EXE,
                      "ipa-ra-calls-out-O2")
    msg = G.refused(t2, naive_patch("ipa-ra"))
    assert "-fipa-pure-const" in msg and "-fipa-ra" not in msg and "-fipa-stack-alignment" not in msg


def test_o0_target_has_the_stack_alignment_assumption():
    # -fipa-stack-alignment is on at -O0: measured, probe calls leaf with the stack at 8 mod 16.
    t = build_target("ipa-stack-alignment", ["-O0"] + EXE)
    msg = G.refused(t, naive_patch("ipa-stack-alignment"))
    assert "-fipa-stack-alignment" in msg and "probe" in msg and "-fipa-ra" not in msg
    assert generate(t, naive_patch("ipa-stack-alignment"), allow_ipa_ra=True).warnings
    t2 = build_target("ipa-stack-alignment", ["-O0", "-fno-ipa-stack-alignment"] + EXE)
    assert generate(t2, naive_patch("ipa-stack-alignment")).warnings == []


# ---- interposable functions ---------------------------------------------------------------------

LIB = r"""
#define NOINL __attribute__((noinline))
volatile int seed = 3;
NOINL int leaf(int x) { return x * x + 1; }
__attribute__((visibility("hidden"))) NOINL int hleaf(int x) { return x * x + 2; }
static inline int ileaf(int x) { return x * seed; }
NOINL inline int dleaf(int x) { return x * x + seed; }
extern int dleaf(int x);
int probe(void) { int a = seed, b = seed * 5, c = seed * 7; return leaf(a) + hleaf(b) + ileaf(c) + dleaf(a) + a + b + c; }
/* Shaped like Debian libsqlite3's sqlite3_free: GCC 12 gives it DW_AT_inline (inlined), with a
 * copy inlined into itself only. */
typedef struct { int stats; void (*release)(void *); void *lock; } Cfg;
Cfg cfg;
void lock_enter(void *);
void lock_leave(void *);
void sfree(void *p)
{
    if (p == 0) return;
    if (cfg.stats) { lock_enter(cfg.lock); cfg.release(p); lock_leave(cfg.lock); }
    else cfg.release(p);
}
void user(void *a, void *b) { sfree(a); sfree(b); }
"""


@pytest.fixture(scope="module")
def pic_libs():
    return {
        "pic": T.build([("lib.c", LIB)], ["-O2", "-g", "-fPIC", "-shared"], "libipa-pic.so"),
        "nosi": T.build([("lib.c", LIB)], ["-O2", "-g", "-fPIC", "-fno-semantic-interposition", "-shared"],
                             "libipa-nosi.so"),
        "bsym": T.build([("lib.c", LIB)], ["-O2", "-g", "-fPIC", "-shared", "-Wl,-Bsymbolic"],
                             "libipa-bsym.so"),
    }


def test_default_visibility_global_in_pic_code_is_interposable(pic_libs):
    # The false positive: its callers call it through the PLT and assume nothing.
    p = G.build_patch([("leaf_fix.c", "int leaf(int x) { return x + 10; }\n")], "leaf_fix.so")
    gen = generate(pic_libs["pic"], p, strict=True)
    assert [j.name for j in gen.livepatch.func_jumps] == ["leaf"] and gen.warnings == []
    assert any("interposable" in line and "probe" in line for line in gen.explain), gen.explain


def test_self_inlined_global_in_pic_code_is_interposable(pic_libs):
    # DW_AT_inline 1 with the only inlined copy inside sfree itself: not a sign of inlining elsewhere.
    info = T.tool("readelf", "--debug-dump=info", pic_libs["pic"])
    assert "DW_AT_inline      : 1" in info
    p = G.build_patch([("sfree_fix.c", "void sfree(void *p) { (void)p; }\n")], "sfree_fix.so")
    gen = generate(pic_libs["pic"], p, strict=True)
    assert [j.name for j in gen.livepatch.func_jumps] == ["sfree"]
    assert any("interposable" in line and "user" in line for line in gen.explain), gen.explain


def test_no_semantic_interposition_is_not_interposable(pic_libs):
    p = G.build_patch([("leaf_fix.c", "int leaf(int x) { return x + 10; }\n")], "leaf_fix.so")
    msg = G.refused(pic_libs["nosi"], p)
    assert "function leaf" in msg and "probe" in msg and "-fipa-ra" in msg


def test_hidden_function_in_pic_code_is_not_interposable(pic_libs):
    p = G.build_patch([("hleaf_fix.c", "#include \"vzp.h\"\nint hleaf(int x) { return x + 20; }\n")], "hleaf.so")
    msg = G.refused(pic_libs["pic"], p)
    assert "function hleaf" in msg and "probe" in msg and "-fipa-ra" in msg


def test_inline_function_in_pic_code_is_not_interposable(pic_libs):
    p = G.build_patch([("dleaf_fix.c", "int dleaf(int x) { return x + 30; }\n")], "dleaf.so")
    msg = G.refused(pic_libs["pic"], p)
    assert "function dleaf" in msg and "probe" in msg


def test_direct_call_in_pic_code_is_not_interposable(pic_libs):
    # -Bsymbolic: the linker resolved probe's PLT call to a direct one; the rule asks for PLT calls only.
    p = G.build_patch([("leaf_fix.c", "int leaf(int x) { return x + 10; }\n")], "leaf_fix.so")
    msg = G.refused(pic_libs["bsym"], p)
    assert "function leaf" in msg and "probe" in msg


# ---- the patch calls a target function --------------------------------------------------------

CP_TARGET = r"""
#define NOINL __attribute__((noinline))
volatile int seed = 3;
static NOINL int k(int n, int mode) { if (mode == 3) return n * 7 + seed; return n - mode * seed; }
static NOINL int h(int x) { if (x > 100) return -1; return x * 2 + seed; }
static NOINL int t(int x) { if (x > 100) return -1; return x * 3 + seed; }
int (*volatile keep_t)(int) = t;
int use(int a) { return k(a, 3) + k(a + 1, 3) + h(a & 15) + h(7) + t(a & 15); }
int main(void) { return use(seed); }
"""


@pytest.fixture(scope="module")
def cp_targets():
    return {"-O2": T.build([("cp.c", CP_TARGET)], ["-O2", "-g"], "ipa-cp-O2"),
            "lp": T.build([("cp.c", CP_TARGET)], ["-O2", "-g", "-flive-patching=inline-clone"], "ipa-cp-lp")}


def _caller_patch(ref, call, name):
    src = ('#include "vzp.h"\nVZP_FILE("cp.c");\n%s\nint use(int a) { return %s; }\n' % (ref, call))
    return G.build_patch([(name + ".c", src)], name + ".so")


@pytest.mark.parametrize("flavor", ["-O2", "lp"])
def test_reference_to_a_clone_only_function_is_refused(cp_targets, flavor):
    names = {s.name for s in G.nm(cp_targets[flavor])}
    assert "k.constprop.0" in names and "k" not in names
    p = _caller_patch("VZP_STATIC_FUNC_REF(int, k, (int, int));", "k(a, 5)", "callk")
    msg = G.refused(cp_targets[flavor], p, allow_ipa_cp_callee=True, allow_ipa_ra=True)
    assert "function k" in msg and "callk.c:3" in msg and "k.constprop.0" in msg and "clone" in msg
    # The advice: a copy of k under another name is new patch code.
    ok = _caller_patch("static int my_k(int n, int mode) { return mode == 3 ? n * 7 : n - mode; }",
                       "my_k(a, 5)", "callk2")
    gen = generate(cp_targets[flavor], ok, allow_ipa_ra=True)
    assert [j.name for j in gen.livepatch.func_jumps] == ["use"]


def test_call_to_a_specialised_static_is_refused_unless_allowed(cp_targets):
    p = _caller_patch("VZP_STATIC_FUNC_REF(int, h, (int));", "h(200)", "callh")
    msg = G.refused(cp_targets["-O2"], p, allow_ipa_ra=True)
    assert "function h" in msg and "callh.c:3" in msg and "-fipa-vrp" in msg and "-fipa-bit-cp" in msg
    assert "--allow-ipa-cp-callee" in msg
    gen = generate(cp_targets["-O2"], p, allow_ipa_ra=True, allow_ipa_cp_callee=True)
    assert any("--allow-ipa-cp-callee" in w and "function h" in w for w in gen.warnings)
    # The advice: an own copy under another name.
    ok = _caller_patch("static int my_h(int x) { if (x > 100) return -1; return x * 2; }", "my_h(200)", "callh2")
    assert generate(cp_targets["-O2"], ok, allow_ipa_ra=True).livepatch.func_jumps
    # The live-patching build does not rewrite h in place: accepted.
    assert not generate(cp_targets["lp"], p).warnings


def test_call_to_an_address_taken_static_is_accepted(cp_targets):
    p = _caller_patch("VZP_STATIC_FUNC_REF(int, t, (int));", "t(200)", "callt")
    gen = generate(cp_targets["-O2"], p, allow_ipa_ra=True)
    assert not any("function t" in w for w in gen.warnings)


def test_cli_allow_ipa_cp_callee(cp_targets, tmp_path):
    p = G.copy(_caller_patch("VZP_STATIC_FUNC_REF(int, h, (int));", "h(200)", "callh"), tmp_path)
    assert cli.main(["generate", "--allow-ipa-ra", cp_targets["-O2"], p]) == GenerateError.exit_code
    assert cli.main(["generate", "--allow-ipa-ra", "--allow-ipa-cp-callee", cp_targets["-O2"], p]) == 0


# ---- code scans (capstone, detail mode) ---------------------------------------------------------

SCAN_UNIT = r"""
#define NOINL __attribute__((noinline))
volatile int seed = 3;
NOINL int leaf(int x) { return x * x + seed; }
NOINL int tail(int x) { return leaf(x + seed); }
__attribute__((naked)) int cjump(int x)
{
    __asm__("test %edi, %edi\n\tjne leaf\n\txor %eax, %eax\n\tret\n");
}
int main(void) { return tail(seed) + cjump(seed); }
"""


@pytest.mark.parametrize("caller", ["tail", "cjump"])
def test_tail_jumps_are_calls(caller):
    # tail: `jmp leaf`; cjump: `jne leaf` -- both reach leaf's entry, both are callers.  Strict
    # DWARF 4 has no call-site DIEs: only the code scan can find them.
    t = T.build([("scan.c", SCAN_UNIT)], ["-O2", "-gdwarf-4", "-gstrict-dwarf"] + EXE, "ipa-scan")
    assert "call_site" not in T.tool("readelf", "--debug-dump=info", t)
    assert re.search(r"jmp\s+[0-9a-f]+ <leaf>", T.tool("objdump", "-d", "--no-show-raw-insn", t))
    keep = {"tail": "int cjump(int x) { return x ? leaf(x) : 0; }\n", "cjump": "int tail(int x) { return 0; }\n"}
    src = "extern volatile int seed;\nint leaf(int x) { return x * x + seed + 1; }\n"
    p = G.build_patch([("scan_fix.c", src + "int leaf(int);\n" + keep[caller])], "scan-%s.so" % caller)
    msg = G.refused(t, p)
    assert "function leaf" in msg and caller in msg.split("does not replace:")[1].split(";")[0]


def test_plt_and_got_calls_are_found(pic_libs):
    from gdb_nsb.generator.checks import UnitCode
    from gdb_nsb.generator.inputs import load_target

    nosi = T.build([("lib.c", LIB)], ["-O2", "-g", "-fPIC", "-fno-plt", "-shared"], "libipa-noplt.so")
    for path, via in ((pic_libs["pic"], "plt"), (nosi, "got")):
        t = load_target(path)
        (leaf,) = t.functions("leaf")
        unit = UnitCode(t, leaf.cu, leaf.die_offset)
        (probe,) = [i for i, f in enumerate(unit.functions) if f[1] == "probe"]
        hits = [b for b in unit.branches()[probe] if b.symbol == "leaf"]
        assert [b.via for b in hits] == [via] and hits[0].kind == "call", (path, unit.branches()[probe])
        assert unit.plt_callers("leaf") == [probe] and unit.direct_callers(leaf.entry) == []


class _Image:
    """An image whose code is given bytes (or cannot be read)."""

    def __init__(self, code=None):
        self.path, self.code, self.sections, self.relocations = "fake.so", code, [], []

    def read_vaddr(self, lo, size):
        from gdb_nsb.elf.image import ElfError
        if self.code is None:
            raise ElfError("fake.so: address %#x+%d is not inside one PT_LOAD segment" % (lo, size))
        return self.code[:size]


def test_a_scan_that_cannot_decide_refuses():
    from gdb_nsb.generator.codescan import CodeScanner

    with pytest.raises(GenerateError) as ei:
        CodeScanner(_Image()).branches(0x1000, 0x1010, "f")
    assert "cannot scan the code of f" in str(ei.value) and "PT_LOAD" in str(ei.value)
    # 0x06 (push es) does not exist in 64-bit mode: capstone stops there.
    with pytest.raises(GenerateError) as ei:
        CodeScanner(_Image(b"\x90\xe8\x00\x00\x00\x00\x06\x06\xc3")).branches(0x1000, 0x1009, "f")
    assert "capstone cannot decode the bytes at 0x1006 in f" in str(ei.value)
    # Padding after the last instruction is not a failure to decide.
    scan = CodeScanner(_Image(b"\xe8\x0b\x00\x00\x00\x0f\x85\x05\x00\x00\x00\xc3\x90\x90"))
    assert [(b.kind, b.via, b.target) for b in scan.branches(0x1000, 0x100e, "f")] == [
        ("call", "direct", 0x1010), ("jcc", "direct", 0x1010)]


# ---- auto mode: calls to specialised statics and clones stay on the patch's own copy -----------------

AUTO = ["-O0", "-g", "-fPIC", "-ffunction-sections", "-fdata-sections", "-c"]


@pytest.mark.parametrize("flavor", ["-O2", "lp"])
def test_auto_keeps_its_own_copy_of_specialised_statics(cp_targets, flavor):
    changed = CP_TARGET.replace("h(a & 15) + h(7)", "h(a & 15) + h(200)")
    patched = T.build([("cp.c", changed)], AUTO + ["-DNSB_TAG_ipa_auto"], "cp.o")
    orig = T.build([("cp.c", CP_TARGET)], AUTO + ["-DNSB_TAG_ipa_orig"], "cp.o")
    so = T.build([], ["-shared"], "cp-fix.so", extra_inputs=[patched])
    gen = generate(cp_targets[flavor], so, mode="auto", objects=[patched], originals=[orig], allow_ipa_ra=True)
    assert [j.name for j in gen.livepatch.func_jumps] == ["use"]
    kept = {line.split()[1] for line in gen.explain if "the patch keeps its own copy" in line}
    # k exists only as k.constprop.0 in both builds; h was rewritten in place only without
    # -flive-patching (ipa-vrp / ipa-bit-cp); t's address is taken, so it is never specialised.
    assert kept == ({"k", "h"} if flavor == "-O2" else {"k"}), gen.explain


# ---- -fipa-reference-addressable: variable-side, refused as a missing variable ----------------------

RA_UNIT = r"""
#define NOINL __attribute__((noinline))
volatile int seed = 3;
static int wonly;          /* written, never read: its stores are deleted */
static int ronly = 42;     /* read, never written: its reads become the constant */
NOINL int f(int x) { wonly = x; return x * x + ronly + seed; }
int main(void) { return f(seed); }
"""


def test_reference_addressable_variables_vanish_and_are_refused():
    t = T.build([("ra.c", RA_UNIT)], ["-O2"] + EXE, "ipa-ra-vars")
    assert not {"ronly", "wonly"} & {s.name for s in G.nm(t)}
    for var in ("ronly", "wonly"):
        p = G.build_patch([("ra_%s.c" % var, '#include "vzp.h"\nVZP_FILE("ra.c");\nVZP_STATIC_VAR_REF(int, %s);\n'
                            "int f(int x) { return x * x + %s + 1; }\n" % (var, var))], "ra-%s.so" % var)
        msg = G.refused(t, p, allow_ipa_ra=True)
        assert "static variable %s" % var in msg and "not found" in msg
    kept = T.build([("ra.c", RA_UNIT)], CONTROL, "ipa-ra-vars-lp")
    assert {"ronly", "wonly"} <= {s.name for s in G.nm(kept)}


# ---- units from a compiler the table does not model ------------------------------------------------


def _reproduced(path, tmp_path, producer):
    """A copy of ``path`` whose DW_AT_producer strings say ``producer`` instead of GCC 12's."""
    with open(path, "rb") as f:
        data = f.read()
    old = b"GNU C17 12.2.0"
    assert old in data and len(producer) == len(old)
    out = tmp_path / (os.path.basename(path) + "-" + producer.split()[0].decode())
    out.write_bytes(data.replace(old, producer))
    return str(out)


@pytest.mark.parametrize("producer,named", [(b"GNU C17 13.2.0", "GCC 13"), (b"clang version ", "clang version")])
def test_unmodelled_compiler_refused_when_optimised(tmp_path, producer, named):
    t = _reproduced(build_target("ipa-ra", CONTROL), tmp_path, producer)
    msg = G.refused(t, naive_patch("ipa-ra"))
    assert "function leaf" in msg and named in msg and "does not model" in msg and "docs/IPA.md" in msg
    # Unoptimised (-O0 recorded for GCC; no call-site DIEs for clang): nothing to model.
    t0 = _reproduced(build_target("ipa-ra", ["-O0", "-fno-ipa-stack-alignment"] + EXE), tmp_path, producer)
    assert [j.name for j in generate(t0, naive_patch("ipa-ra")).livepatch.func_jumps] == ["leaf"]
