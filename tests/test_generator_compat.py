"""nsb source compatibility and helpers from headers (issue 13, items 1 and 5).

* every vzp.h macro is a complete declaration: patches compile with and without a ';' after it,
  under -Wall -Werror (and -pedantic in the original's style), with `$(nsb cflags)` and the
  original's include path <include/vzp.h>;
* a patch built with the original tool's own vzp.h (its records in section VZP, written the way
  tests/fixtures/nsb_original/include/vzp.h does) binds like ours, every address checked with nm;
* a static function the patch gets from the program's header is a new helper, never an ambiguous
  replacement; refusals that give advice are followed and the advised patch then generates.
"""

import os
import subprocess

import pytest

import gen_oracle as G
import targets as T
from gdb_nsb.errors import GenerateError
from gdb_nsb.generator import generate
from gdb_nsb.standalone.cflags import patch_cflags

pytestmark = pytest.mark.timeout(300)

ORIGINAL_INCLUDE = os.path.join(T.FIXTURES, "nsb_original")

# Every macro, at file scope and inside a function, {semi} after each.
ALL_MACROS = r"""
#include <include/vzp.h>
VZP_FILE("alpha.c"){semi}
VZP_STATIC_VAR_REF(int, counter){semi}
VZP_STATIC_VAR_REF(int, counter2, "beta.c"){semi}
VZP_STATIC_FUNC_REF(int, bump, (int)){semi}
VZP_STATIC_FUNC_REF(long, bump2, (int), "beta.c"){semi}
VZP_HIDDEN_VAR_REF(int, hidden_count){semi}
VZP_PROTECTED_VAR_REF(int, protected_count){semi}
VZP_INTERNAL_VAR_REF(int, internal_count){semi}
VZP_HIDDEN_FUNC_REF(int, hidden_twice, (int)){semi}
VZP_PROTECTED_FUNC_REF(int, protected_thrice, (int)){semi}
VZP_INTERNAL_FUNC_REF(int, internal_quad, (int)){semi}
VZP_STATIC_SYM_ALIAS(counter2, counter){semi}
int tick_alpha(void)
{{
    VZP_STATIC_VAR_REF(int, calls){semi}
    return ++calls + counter + counter2 + bump(1) + (int)bump2(2) + hidden_count + protected_count
        + internal_count + hidden_twice(1) + protected_thrice(1) + internal_quad(1);
}}
"""


def _compile(text, flags, tmp_path, name="p.c"):
    src = tmp_path / name
    src.write_text(text)
    r = subprocess.run(["gcc"] + flags + ["-c", str(src), "-o", str(tmp_path / "p.o")], capture_output=True,
                       text=True, timeout=60)
    return r.returncode, r.stderr


@pytest.mark.parametrize("header", ["ours", "original"])
@pytest.mark.parametrize("semi", ["", ";"])
def test_every_macro_with_and_without_semicolon(header, semi, tmp_path):
    flags = patch_cflags() if header == "ours" else ["-I" + ORIGINAL_INCLUDE, "-O0", "-g", "-fPIC"]
    text = ALL_MACROS.format(semi=semi)
    rc, err = _compile(text, flags + ["-Wall", "-Werror"], tmp_path)
    assert rc == 0, err
    if not semi:
        # The original's style (no ';') is clean even under -pedantic.
        rc, err = _compile(text, flags + ["-Wall", "-Werror", "-pedantic"], tmp_path)
        assert rc == 0, err


def test_semicolon_inside_a_function_is_pedantic_clean(tmp_path):
    text = ('#include "vzp.h"\nVZP_FILE("alpha.c")\nint tick_alpha(void)\n{\n    VZP_STATIC_VAR_REF(int, calls);\n'
            "    return ++calls;\n}\n")
    rc, err = _compile(text, patch_cflags() + ["-Wall", "-Werror", "-pedantic"], tmp_path)
    assert rc == 0, err


def test_the_old_header_failed_without_semicolon(tmp_path):
    """The failure of issue 13: `VZP_STATIC_FUNC_REF(long, name, (int))` and then a declaration."""
    text = '#include "vzp.h"\nVZP_STATIC_FUNC_REF(long, bump2, (int))\nlong use(int x) { return bump2(x); }\n'
    rc, err = _compile(text, patch_cflags() + ["-Wall", "-Werror"], tmp_path)
    assert rc == 0, err


# ---- the original tool's records -------------------------------------------------------------

ORIGINAL_PATCH = r"""#include <include/vzp.h>
VZP_FILE("alpha.c")
VZP_STATIC_VAR_REF(int, counter)
VZP_STATIC_FUNC_REF(int, bump, (int))
VZP_STATIC_VAR_REF(int, counter2, "beta.c")
VZP_HIDDEN_VAR_REF(int, hidden_count)
VZP_STATIC_SYM_ALIAS(counter2, counter)
int tick_alpha(void)
{
    VZP_STATIC_VAR_REF(int, calls)
    return ++calls + counter + counter2 + bump(1) + hidden_count;
}
"""


@pytest.mark.parametrize("flavor", ["pie", "nopie", "shared"])
def test_patch_built_with_the_original_header(flavor):
    target = G.build_target(flavor)
    patch = T.build([("orig_style.c", ORIGINAL_PATCH)], ["-O0", "-g", "-fPIC", "-shared", "-Wall", "-Werror",
                                                              "-I" + ORIGINAL_INCLUDE], "orig_style.so")
    sections = T.tool("readelf", "-SW", patch)
    assert " VZP " in sections and " WA " in sections.split(" VZP ")[1].splitlines()[0]  # writable records
    gen = generate(target, patch)
    assert [j.name for j in gen.livepatch.func_jumps] == ["tick_alpha"]
    syms = G.nm(target)
    dyn = G.dynsym_names(patch)
    got = {dyn[m.idx]: m.addr for m in gen.livepatch.manual_symbols}
    assert got == {
        "counter": G.nm_one(syms, "counter", "alpha.c").addr,
        "counter2": G.nm_one(syms, "counter", "beta.c").addr,
        "bump": G.nm_one(syms, "bump", "alpha.c").addr,
        "hidden_count": G.nm_one(syms, "hidden_count").addr,
        "calls": G.nm_one(syms, "calls", "alpha.c", G.line_of("alpha.c", "static int calls = 0;")).addr,
    }, gen.explain


def test_original_records_still_refuse_real_writable_data():
    target = G.build_target("pie")
    text = ORIGINAL_PATCH.replace("int tick_alpha(void)", "int mine = 3;\nint tick_alpha(void)")
    patch = T.build([("orig_data.c", text)], ["-O0", "-g", "-fPIC", "-shared", "-I" + ORIGINAL_INCLUDE],
                         "orig_data.so")
    with pytest.raises(GenerateError) as ei:
        generate(target, patch)
    assert "writable data: mine (" in str(ei.value) and "vzpatch" not in str(ei.value)


# ---- static helpers from the program's headers -----------------------------------------------

STR_H = r"""#include <stddef.h>
static inline size_t str_len(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}
"""
UNIT_A = ('#include "str.h"\nsize_t (*volatile a_len)(const char *) = str_len;\n'
          '__attribute__((noinline)) int a_func(const char *s) { return (int)str_len(s) + 1; }\n')
UNIT_B = ('#include "str.h"\nsize_t (*volatile b_len)(const char *) = str_len;\n'
          '__attribute__((noinline)) int b_func(const char *s) { return (int)str_len(s) + 2; }\n'
          "static __attribute__((noinline)) int twin(int x) { return x * x + 2 * x + 7; }\nint b_twin(int x) { return twin(x); }\n")
UNIT_MAIN = ("int a_func(const char *);\nint b_func(const char *);\nint b_twin(int);\nint a_twin(int);\n"
             'int main(void) { return a_func("x") + b_func("y") + b_twin(1) + a_twin(2); }\n')
UNIT_A2 = "static __attribute__((noinline)) int twin(int x) { return x * x + 3 * x + 9; }\nint a_twin(int x) { return twin(x); }\n"


@pytest.fixture(scope="module")
def helper_target():
    t = T.build([("str.h", STR_H), ("a.c", UNIT_A), ("b.c", UNIT_B), ("a2.c", UNIT_A2), ("main.c", UNIT_MAIN)],
                     ["-O2", "-g", "-flive-patching=inline-clone", "-no-pie", "-fno-pie"], "helper-target")
    assert len([s for s in G.nm(t) if s.name == "str_len"]) == 2  # a leftover copy in a.c and in b.c
    return t


def _patch(name, text):
    return T.build([("str.h", STR_H), (name, text)], T.PATCH_FLAGS, name.replace(".c", ".so"))


def test_static_helper_from_a_header_is_new_code(helper_target):
    # Before issue 13: "function str_len (str.h:2) is ambiguous: static in a.c, b.c".
    p = _patch("fix_a.c", '#include "str.h"\nint a_func(const char *s) { return (int)str_len(s) + 10; }\n')
    gen = generate(helper_target, p)
    assert [j.name for j in gen.livepatch.func_jumps] == ["a_func"]
    line = next(x for x in gen.explain if x.startswith("helper str_len"))
    assert "str.h:2" in line and "from a header, never a replacement" in line


def test_ambiguous_static_advice_is_followed(helper_target):
    p = _patch("twin.c", "static __attribute__((used)) int twin(int x) { return x + 5; }\n")
    with pytest.raises(GenerateError) as ei:
        generate(helper_target, p)
    msg = str(ei.value)
    assert "function twin (" in msg and "is ambiguous" in msg and 'VZP_FILE("file") before it' in msg, msg
    advised = _patch("twin_ctx.c", '#include "vzp.h"\nVZP_FILE("a2.c");\n'
                                   "static __attribute__((used)) int twin(int x) { return x + 5; }\n")
    gen = generate(helper_target, advised)
    assert [j.name for j in gen.livepatch.func_jumps] == ["twin"]
    assert gen.livepatch.func_jumps[0].func_value == G.nm_one(G.nm(helper_target), "twin", "a2.c").addr


def _local_in_file(path, name, file):
    """Address of local symbol ``name`` that follows STT_FILE ``file`` in readelf's .symtab listing."""
    current, hits = None, []
    for line in T.tool("readelf", "-sW", path).splitlines():
        parts = line.split()
        if len(parts) >= 8 and parts[3] == "FILE":
            current = parts[7]
        elif len(parts) >= 8 and parts[7] == name and parts[4] == "LOCAL" and current == file:
            hits.append(int(parts[1], 16))
    assert len(hits) == 1, (name, file, hits)
    return hits[0]


def test_replacing_a_target_static_from_the_patch_c_file(helper_target):
    # Replacing the leftover copy of a.c stays possible: defined in the patch's own .c, VZP_FILE says which.
    text = ('#include <stddef.h>\n#include "vzp.h"\nVZP_FILE("a.c");\n'
            "static __attribute__((used)) size_t str_len(const char *s) { return 99 + !s; }\n")
    with pytest.raises(GenerateError) as ei:
        generate(helper_target, _patch("len_a.c", text))
    msg = str(ei.value)  # a_func holds an inlined copy of the old str_len
    assert "a_func (" in msg and "a.c:3: holds an inlined copy of str_len" in msg and "replace a_func too" in msg
    gen = generate(helper_target, _patch("len_a2.c", text + "int a_func(const char *s) { return (int)str_len(s); }\n"))
    j = next(j for j in gen.livepatch.func_jumps if j.name == "str_len")
    assert j.func_value == _local_in_file(helper_target, "str_len", "a.c")
    assert sorted(j.name for j in gen.livepatch.func_jumps) == ["a_func", "str_len"]


def test_auto_mode_header_change_needs_every_unit_with_a_copy(helper_target, tmp_path):
    """A changed static inline helper of a header: the units the patch does not hold keep old copies."""
    flags = ["-O0", "-g", "-fPIC", "-ffunction-sections", "-fdata-sections", "-c"]
    new_h = STR_H.replace("return n;", "return n + 1000;")

    def obj(unit, text, header):
        inc = tmp_path / ("inc%d" % (abs(hash(header)) % 1000))
        inc.mkdir(exist_ok=True)
        (inc / "str.h").write_text(header)
        return T.build([(unit, text.replace('"str.h"', '"%s/str.h"' % inc))], flags, unit.replace(".c", ".o"))

    new_a, old_a = obj("a.c", UNIT_A, new_h), obj("a.c", UNIT_A, STR_H)
    so = G.copy(T.build([], ["-shared"], "hdr-a.so", extra_inputs=[new_a]), tmp_path)
    with pytest.raises(GenerateError) as ei:
        generate(helper_target, so, mode="auto", objects=[new_a], originals=[old_a])
    msg = str(ei.value)
    assert "function str_len (" in msg and "str.h:2) is defined in a header and changed" in msg, msg
    assert "the copies in " in msg and "b.c keep the old code" in msg and "patch those units too" in msg, msg
    gen = generate(helper_target, so, mode="auto", objects=[new_a], originals=[old_a], allow_stale_copies=True)
    assert any(s.startswith("str_len in ") and "b.c" in s for s in gen.stale), gen.stale
    # The advice followed: both units patched.
    new_b, old_b = obj("b.c", UNIT_B, new_h), obj("b.c", UNIT_B, STR_H)
    so2 = G.copy(T.build([], ["-shared"], "hdr-ab.so", extra_inputs=[new_a, new_b]), tmp_path)
    gen = generate(helper_target, so2, mode="auto", objects=[new_a, new_b], originals=[old_a, old_b])
    names = sorted(j.name for j in gen.livepatch.func_jumps)
    assert names == ["a_func", "b_func", "str_len", "str_len"], gen.explain
    assert gen.stale == []
