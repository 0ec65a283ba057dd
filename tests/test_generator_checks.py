"""The generator's safety checks: each fires on a crafted mismatch, naming the symbol, the patch
file:line and the target's definition file:line, and stays silent on a correct patch."""

import re
import pytest

import gen_oracle as G
import targets as T
from gdb_nsb.errors import GenerateError
from gdb_nsb.generator import generate
from gdb_nsb.generator.checks import ipa_assumptions, is_lto_producer
from gdb_nsb.standalone import cli

pytestmark = pytest.mark.timeout(300)

HEAD = '#include "vzp.h"\n'
LP = "-flive-patching=inline-clone"

TYPES_TARGET = r"""
#define KEEP __attribute__((noipa, used))
typedef int count_t;
struct pair { int a; long b; };
struct nest { struct pair p; char tag[4]; };
union u { int i; float f; };
static struct pair spair = {1, 2};
static struct nest snest;
static union u suni;
static int arr[8];
static const int limit = 9;
static count_t counted = 3;
long wide = 5;
KEEP int reader(int x) { return x + spair.a + snest.tag[0] + suni.i + arr[1] + limit + counted + (int)wide; }
KEEP int twice(int x) { return x * x + 2 * x + 7 + arr[x & 7]; }
static KEEP int helper(int x) { return x * x + arr[x & 3]; }
KEEP int use_helper(int x) { return helper(x); }
void *volatile addrs[] = {&spair, &snest, &suni, arr, (void *)&limit, &counted};
int main(void) { return reader(1) + twice(2) + use_helper(3); }
"""


@pytest.fixture(scope="module")
def types_target():
    return T.build([("types.c", TYPES_TARGET)], ["-O2", "-g", LP], "types-target")


def _patch(name, text, extra=()):
    return G.build_patch([(name, HEAD + text)], name.replace(".c", ".so"), extra=extra)


DECLS = ("struct pair { int a; long b; };\nstruct nest { struct pair p; char tag[4]; };\n"
         "union u { int i; float f; };\ntypedef int count_t;\n")


@pytest.mark.parametrize("case,decl,use,needle", [
    ("size", "VZP_STATIC_VAR_REF(long, counted);", "(int)counted", "int (4 bytes) in the target, long int (8 bytes) in the patch"),
    ("order", "struct pair2 { long b; int a; };\nVZP_STATIC_VAR_REF(struct pair, spair);", "spair.a", None),
    ("offset", None, None, "offset"),
    ("member-type", None, None, "struct nest.p.b"),
    ("array", "typedef int four[4];\nVZP_STATIC_VAR_REF(four, arr);", "arr[1]",
     "array int[8] in the target, int[4] in the patch"),
    ("union", None, None, "union u"),
    ("const", "VZP_STATIC_VAR_REF(int, limit);", "limit", "const-ness changed"),
    ("global", "extern int wide;", "wide", "wide"),
])
def test_variable_type_mismatch(types_target, case, decl, use, needle):
    if case == "order":
        decls = DECLS.replace("struct pair { int a; long b; };", "struct pair { long b; int a; };")
        text, vname = 'VZP_FILE("types.c");\n' + decls + "VZP_STATIC_VAR_REF(struct pair, spair);\n", "spair"
        use, needle = "(int)spair.a", "member order differs: (a, b) in the target, (b, a) in the patch"
    elif case == "offset":
        decls = DECLS.replace("struct pair { int a; long b; };", "struct pair { int a; int b; };")
        text, vname = 'VZP_FILE("types.c");\n' + decls + "VZP_STATIC_VAR_REF(struct pair, spair);\n", "spair"
        use, needle = "spair.a", "struct pair is 16 bytes in the target, 8 in the patch"
    elif case == "member-type":
        decls = DECLS.replace("struct nest { struct pair p; char tag[4]; };",
                              "struct nest { struct { int a; unsigned long b; } p; char tag[4]; };")
        text, vname = 'VZP_FILE("types.c");\n' + decls + "VZP_STATIC_VAR_REF(struct nest, snest);\n", "snest"
        use, needle = "snest.tag[0]", "struct nest.p: struct pair in the target, struct <anonymous> in the patch"
    elif case == "union":
        decls = DECLS.replace("union u { int i; float f; };", "union u { int i; double f; };")
        text, vname = 'VZP_FILE("types.c");\n' + decls + "VZP_STATIC_VAR_REF(union u, suni);\n", "suni"
        use, needle = "suni.i", "union u is 4 bytes in the target, 8 in the patch"
    else:
        text = 'VZP_FILE("types.c");\n' + DECLS + decl + "\n"
        vname = {"size": "counted", "array": "arr", "const": "limit", "global": "wide"}[case]
    line = (HEAD + text).count("\n")
    p = _patch("var_%s.c" % case.replace("-", "_"), text + "int reader(int x) { return x + %s; }\n" % use)
    msg = G.refused(types_target, p)
    assert "variable %s" % vname in msg and "type differs" in msg, msg
    assert "var_%s.c:%d" % (case.replace("-", "_"), line) in msg, msg
    assert "types.c:%d" % G_line(vname) in msg, msg
    assert needle in msg, msg


def G_line(vname):
    """Line of the target's definition of ``vname`` in TYPES_TARGET."""
    for i, line in enumerate(TYPES_TARGET.splitlines()):
        if line.startswith("KEEP int %s(" % vname) or line.startswith("static KEEP int %s(" % vname):
            return i + 1
        if (" %s " % vname in line or " %s[" % vname in line or " %s;" % vname in line) \
                and not line.lstrip().startswith(("KEEP", "int main", "void")):
            return i + 1
    raise AssertionError(vname)


def test_variable_types_that_match(types_target):
    # Typedefs are looked through (count_t vs int); every other declaration is exact.
    text = ('VZP_FILE("types.c");\n' + DECLS
            + "VZP_STATIC_VAR_REF(struct pair, spair);\nVZP_STATIC_VAR_REF(struct nest, snest);\n"
              "VZP_STATIC_VAR_REF(union u, suni);\ntypedef int eight[8];\nVZP_STATIC_VAR_REF(eight, arr);\n"
              "VZP_STATIC_VAR_REF(const int, limit);\nVZP_STATIC_VAR_REF(int, counted);\nextern long wide;\n"
              "int reader(int x) { return x + spair.a + snest.tag[0] + suni.i + arr[1] + limit + counted"
              " + (int)wide; }\n")
    gen = generate(types_target, _patch("var_ok.c", text))
    assert [j.name for j in gen.livepatch.func_jumps] == ["reader"]
    assert len(gen.livepatch.manual_symbols) == 6


def test_prototype_mismatch(types_target):
    p = _patch("proto.c", "long twice(long x) { return 2 * x; }\n")
    msg = G.refused(types_target, p)
    assert "function twice" in msg and "proto.c:2" in msg and "types.c:%d" % G_line("twice") in msg
    assert "prototype differs" in msg and "return type: int" in msg
    p = _patch("proto2.c", "int twice(int x, int y) { return 2 * x + y; }\n")
    msg = G.refused(types_target, p)
    assert "1 parameters in the target (int), 2 in the patch (int, int)" in msg and "proto2.c:2" in msg
    ok = generate(types_target, _patch("proto_ok.c", "int twice(int x) { return 3 * x; }\n"))
    assert [j.name for j in ok.livepatch.func_jumps] == ["twice"]


def _struct_graph(last):
    """A chain of 80 structs (deeper than the comparison's recursion bound) whose last member is ``last``,
    and 16 structs each pointing at every other (once walked once per path: 16! paths)."""
    chain, dense = 80, 16
    text = "".join("struct c%d;\nstruct d%d;\n" % (i, i) for i in range(chain))
    for i in range(chain - 1):
        text += "struct c%d { struct c%d *next; struct d0 *d; int v; };\n" % (i, i + 1)
    text += "struct c%d { %s v; struct c0 *back; };\n" % (chain - 1, last)
    for i in range(dense):
        text += "struct d%d { %s struct c0 *c; };\n" % (i, " ".join("struct d%d *p%d;" % (j, j) for j in range(dense)))
    return text


def test_prototype_through_a_dense_struct_graph():
    """Real programs (sqlite3) have struct graphs where every struct reaches every other: the comparison
    remembers pairs found alike (it used to take minutes per prototype), and a difference deeper than its
    recursion bound is still found."""
    body = "int walk(struct c0 *p) { return p ? p->v : 0; }\n"
    t = T.build([("graph.c", "#define KEEP __attribute__((noipa, used))\n" + _struct_graph("int") + "KEEP " + body +
                  "int main(void) { return walk(0); }\n")], ["-O2", "-g", LP], "graph-target")
    ok = generate(t, _patch("graph_ok.c", _struct_graph("int") + body.replace("p->v :", "p->v + 1 :")))
    assert [j.name for j in ok.livepatch.func_jumps] == ["walk"]
    msg = G.refused(t, _patch("graph_bad.c", _struct_graph("long") + body.replace("p->v :", "p->v + 1 :")))
    assert "prototype differs" in msg and ".next[*].v: int (4 bytes) in the target, long int (8 bytes)" in msg, msg


def test_static_with_other_prototype_is_a_new_helper(types_target):
    p = _patch("newhelper.c", "static __attribute__((used)) int helper(const char *s) { return s[0]; }\n"
                              "int twice(int x) { return helper(\"a\") + x; }\n")
    gen = generate(types_target, p)
    assert [j.name for j in gen.livepatch.func_jumps] == ["twice"]
    line = next(line for line in gen.explain if line.startswith("helper helper (") and "newhelper.c:2)" in line)
    assert "not a replacement of target static helper (" in line and "types.c:%d)" % G_line("helper") in line
    assert "prototype differs: parameter 1: int in the target, const char * in the patch" in line
    # With the same prototype it replaces the target's static.
    same = generate(types_target, _patch("samehelper.c", "static __attribute__((used)) int helper(int x) "
                                                         "{ return x + 2; }\nint twice(int x) { return 3 * x; }\n"))
    assert sorted(j.name for j in same.livepatch.func_jumps) == ["helper", "twice"]


def test_static_func_reference_prototype(types_target):
    p = _patch("fref.c", 'VZP_FILE("types.c");\nVZP_STATIC_FUNC_REF(int, helper, (long, long));\n'
                         "int twice(int x) { return helper(x, 1) + x * x + 3; }\n")
    msg = G.refused(types_target, p)
    assert "function helper" in msg and "fref.c:3" in msg and "prototype" in msg
    assert "types.c:%d" % G_line("helper") in msg


# ---- LTO -------------------------------------------------------------------------------------


def test_lto_target_refused():
    t = T.build([("types.c", TYPES_TARGET)], ["-O2", "-g", "-flto"], "types-lto")
    msg = G.refused(t, _patch("proto_ok.c", "int twice(int x) { return 3 * x; }\n"))
    assert "LTO" in msg and "types-lto" in msg and "-flto" in msg


def test_lto_patch_refused(types_target):
    p = _patch("ltopatch.c", "int twice(int x) { return 3 * x; }\n", extra=["-flto"])
    msg = G.refused(types_target, p)
    assert "patch" in msg and "LTO" in msg and "ltopatch.so" in msg


def test_lto_producer_strings():
    assert is_lto_producer("GNU GIMPLE 12.2.0 -mtune=generic -O2 -flto")
    assert is_lto_producer("GNU C17 12.2.0 -O2 -flto=auto")
    assert not is_lto_producer("GNU C17 12.2.0 -O2 -flto -fno-lto")
    assert not is_lto_producer("GNU C17 12.2.0 -O2 -flto-partition=one")
    assert not is_lto_producer("GNU C17 12.2.0 -O2")


# ---- language ---------------------------------------------------------------------------------

CXX_UNIT = 'extern "C" __attribute__((noipa)) int twice(int x) { return x * x + 2 * x + 7; }\n'


def test_cplusplus_target_unit_refused():
    t = T.build([("main.c", "int twice(int);\nint main(void) { return twice(1); }\n"), ("cxx.cc", CXX_UNIT)],
                     ["-O2", "-g", LP], "cxx-target")
    msg = G.refused(t, _patch("proto_ok.c", "int twice(int x) { return 3 * x; }\n"))
    assert "function twice" in msg and "C++" in msg and "cxx.cc" in msg and "only C" in msg


# ---- identical code folding -----------------------------------------------------------------

ICF_TARGET = r"""
int sink;
__attribute__((noinline)) int twin_a(int x) { sink += x; return x * 3 + 1; }
__attribute__((noinline)) int twin_b(int x) { sink += x; return x * 3 + 1; }
__attribute__((noinline)) int single(int x) { sink -= x; return x * 5 + 2; }
int main(int c, char **v) { (void)v; return twin_a(c) + twin_b(c) + single(c); }
"""


def test_identical_code_folding():
    t = T.build([("icf.c", ICF_TARGET)], ["-O2", "-g", LP, "-ffunction-sections", "-fuse-ld=gold",
                                              "-Wl,--icf=all"], "icf-target")
    syms = G.nm(t)
    assert G.nm_one(syms, "twin_a").addr == G.nm_one(syms, "twin_b").addr  # folded by the linker
    msg = G.refused(t, _patch("icf_a.c", "extern int sink;\nint twin_a(int x) { return x * 3 + 2; }\n"))
    assert "function twin_a" in msg and "icf_a.c:3" in msg and "icf.c:3" in msg
    assert "twin_b" in msg and "identical code folding" in msg
    ok = generate(t, _patch("icf_ok.c", "int single(int x) { return x * 5 + 3; }\n"))
    assert [j.name for j in ok.livepatch.func_jumps] == ["single"]


# ---- -fipa-ra callers -----------------------------------------------------------------------


def test_ipa_ra_callers_refused_on_plain_O2():
    t = G.build_target("pie", live_patching=False)
    msg = G.refused(t, _patch("ipa.c", "int tick_common(void) { return 1; }\n"))
    assert "function tick_common" in msg and "ipa.c:2" in msg and "alpha.c:28" in msg
    assert "alpha_entry" in msg and "-fipa-ra" in msg and "--allow-ipa-ra" in msg
    # the safe route is offered first; the override is named with what it risks
    assert msg.index("replace those callers too") < msg.index("--allow-ipa-ra"), msg
    assert re.search(r"--allow-ipa-ra forces it unsafely: the callers not replaced keep code compiled against the "
                     r"old function's register usage and assumptions .*wrong values or a crash", msg), msg


def test_ipa_ra_callers_replaced_too_is_fine():
    t = G.build_target("pie", live_patching=False)
    p = _patch("ipa_both.c", "int tick_common(void) { return 1; }\nint alpha_entry(int x) { return x; }\n")
    gen = generate(t, p)
    assert sorted(j.name for j in gen.livepatch.func_jumps) == ["alpha_entry", "tick_common"]


def test_ipa_ra_override_warns_and_live_patching_build_is_silent():
    p = _patch("ipa.c", "int tick_common(void) { return 1; }\n")
    gen = generate(G.build_target("pie", live_patching=False), p, allow_ipa_ra=True)
    assert len(gen.warnings) == 1 and "alpha_entry" in gen.warnings[0] and "--allow-ipa-ra" in gen.warnings[0]
    assert "wrong values or a crash" in gen.warnings[0], gen.warnings[0]  # the warning keeps the risk
    assert generate(G.build_target("pie"), p).warnings == []


def test_ipa_ra_callers_found_by_disassembly_without_call_sites():
    # Strict DWARF 4 has no call-site DIEs: the callers come from the code itself.
    t = G.build_target("nopie", dwarf=4, extra=["-gstrict-dwarf"], live_patching=False)
    assert "call_site" not in T.tool("readelf", "--debug-dump=info", t)
    msg = G.refused(t, _patch("ipa4.c", "int tick_common(void) { return 1; }\n"))
    assert "alpha_entry" in msg and "tick_common" in msg


def test_ipa_assumptions_from_producer():
    o2 = ["-fipa-ra", "-fipa-pure-const", "-fipa-modref", "-fipa-reference", "-fipa-stack-alignment"]
    assert ipa_assumptions("GNU C17 12.2.0 -mtune=generic -O2") == o2
    assert ipa_assumptions("GNU C17 12.2.0 -O2 -flive-patching=inline-clone") == []
    assert ipa_assumptions("GNU C17 12.2.0 -O1") == ["-fipa-pure-const", "-fipa-modref", "-fipa-reference",
                                                     "-fipa-stack-alignment"]
    assert ipa_assumptions("GNU C17 12.2.0 -O2 -fno-ipa-ra -fno-ipa-pure-const") == o2[2:]
    assert ipa_assumptions("GNU C17 12.2.0 -g") == ["-fipa-stack-alignment"]  # on at -O0 too
    assert ipa_assumptions("GNU C17 12.2.0 -g -fno-ipa-stack-alignment") == []
    assert ipa_assumptions("GNU C17 12.2.0", has_call_sites=True) == o2
    assert ipa_assumptions("clang version 14.0.6") == []


# ---- inlined copies and clones: refused naming the callers; --allow-stale-copies accepts -----------

INLINE_TARGET = r"""
int glob = 3;
static int inl(int x) { return x * 11 + glob; }
__attribute__((noinline)) int caller_in(int x) { return inl(x) + 2; }
int (*keep2)(int) = inl;
static int __attribute__((noinline)) scale(int x, int k) { int r = 0; for (int i = 0; i < k; i++) r += x * i + glob; return r; }
int use1(int x) { return scale(x, 7); }
int use3(int x, int y) { return scale(x, y) + 2; }
int main(int c, char **v) { (void)v; return caller_in(c) + keep2(c) + use1(c) + use3(c, c); }
"""


@pytest.fixture(scope="module")
def inline_target():
    t = T.build([("inl.c", INLINE_TARGET)], ["-O3", "-g", LP], "inline-target")
    names = {s.name for s in G.nm(t)}
    assert "inl" in names and "scale" in names and "scale.constprop.0" in names
    return t


INL_FIX = ('VZP_FILE("inl.c");\nextern int glob;\n'
           "static __attribute__((used)) int inl(int x) { return x * 12 + glob; }\n")


def test_inlined_copy_refused_naming_the_caller(inline_target):
    p = _patch("inl_fix.c", INL_FIX)
    msg = G.refused(inline_target, p)
    assert "caller_in (" in msg and "inl.c:4: holds an inlined copy of inl)" in msg, msg
    assert "replace caller_in too" in msg and "--allow-stale-copies" in msg, msg
    # Accepted on request, and the result says what stays old.
    gen = generate(inline_target, p, allow_stale_copies=True)
    assert [j.name for j in gen.livepatch.func_jumps] == ["inl"]
    (stale,) = gen.stale
    assert stale.startswith("caller_in (") and "holds an inlined copy of inl" in stale
    # Following the advice: replacing the caller too leaves no old copy behind.
    both = _patch("inl_both.c", INL_FIX + "int caller_in(int x) { return inl(x) + 2; }\n")
    gen = generate(inline_target, both)
    assert sorted(j.name for j in gen.livepatch.func_jumps) == ["caller_in", "inl"] and gen.stale == []


def test_clone_callers_refused_transitively(inline_target):
    # scale exists as scale.constprop.0, called by use1, which main inlined: main keeps old code
    # through its inlined use1, and main is entered once: no jump can fix that.
    p = _patch("scale_fix.c", 'VZP_FILE("inl.c");\nextern int glob;\n'
                              "static __attribute__((used)) int scale(int x, int k) { return x * k; }\n")
    msg = G.refused(inline_target, p)
    assert "use1 (" in msg and "inl.c:7: calls scale.constprop.0)" in msg, msg
    assert "main (" in msg and "calls scale.constprop.0; holds an inlined copy of use1" in msg, msg
    assert "main is entered once and left only at exit" in msg and "replace use1 too" in msg, msg
    gen = generate(inline_target, p, allow_stale_copies=True)
    assert sorted(s.split()[0] for s in gen.stale) == ["main", "use1"]


def test_cold_fragment_is_not_a_clone():
    # compute.cold is part of compute itself (its DW_AT_ranges): no warning.
    gen = generate(G.build_target("pie"), _patch("ok.c", "int compute(int x) { return x + 1; }\n"), strict=True)
    assert gen.warnings == [] and gen.stale == []


def test_cli_allow_stale_copies_and_allow_ipa_ra(inline_target, tmp_path, capsys):
    p = G.copy(_patch("inl_fix.c", INL_FIX), tmp_path)
    assert cli.main(["generate", inline_target, p]) == GenerateError.exit_code == 12
    assert "caller_in" in capsys.readouterr().err
    assert cli.main(["generate", "--allow-stale-copies", inline_target, p]) == 0
    err = capsys.readouterr().err
    assert "stays old (--allow-stale-copies): caller_in (" in err, err
    t = G.build_target("pie", live_patching=False)
    q = G.copy(_patch("ipa.c", "int tick_common(void) { return 1; }\n"), tmp_path)
    assert cli.main(["generate", t, q]) == GenerateError.exit_code
    assert cli.main(["generate", "--allow-ipa-ra", t, q]) == 0
