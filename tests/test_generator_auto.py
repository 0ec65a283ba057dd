"""nsb generate --mode auto: a whole edited compile unit, rebound to the target's statics.

Every fix-up of the decoded section is recomputed from readelf -r of the object file and nm of
the patch and the target: the field's address is the patch function's address plus the
relocation offset, and its value is S_t + A - P, where S_t is nm's address of the target's
entity (a static variable, a function-local static, a static function)."""

import re

import pytest

import gen_oracle as G
import targets as T
from gdb_nsb.elf.livepatch import LivePatch
from gdb_nsb.errors import GenerateError
from gdb_nsb.generator import generate, generate_file
from gdb_nsb.standalone import cli

pytestmark = pytest.mark.timeout(300)

AUTO_FLAGS = ["-O0", "-g", "-fPIC", "-ffunction-sections", "-fdata-sections", "-c"]
ALPHA = open(G.fixture("alpha.c")).read()
# Two changed functions: one using a static function and a static variable, one a local static.
PATCHED = (ALPHA.replace("return bump(x) * 3 + shared_total;", "return bump(x) * 4 + shared_total;")
           .replace("return ++calls + counter;", "return ++calls + counter + 1000;"))
assert PATCHED != ALPHA


def _obj(text, tag):
    return T.build([("alpha.c", text)], AUTO_FLAGS + ["-DNSB_TAG_%s" % tag], "alpha.o")


def _so(obj, name="alpha-fix.so"):
    return T.build([], ["-shared"], name, extra_inputs=[obj])


@pytest.fixture(scope="module")
def objects():
    return _obj(PATCHED, "patched"), _obj(ALPHA, "orig")


@pytest.fixture(scope="module", params=["pie", "nopie", "static", "shared"])
def auto(request, objects, tmp_path_factory):
    flavor = request.param
    target = G.build_target(flavor)
    patched, orig = objects
    patch = G.copy(_so(patched), tmp_path_factory.mktemp("auto"))
    gen = generate_file(target, patch, mode="auto", objects=[patched], originals=[orig])
    return flavor, target, patch, patched, LivePatch.read(patch), gen


class Rel:
    def __init__(self, section, offset, type_, symbol, addend):
        self.section, self.offset, self.type, self.symbol, self.addend = section, offset, type_, symbol, addend


def object_relocations(obj):
    """Relocations of the object's .text.* sections, from readelf -rW."""
    out, section = [], None
    for line in T.tool("readelf", "-rW", obj).splitlines():
        m = re.match(r"Relocation section '\.rela(\.text\.\S+)'", line)
        if m:
            section = m.group(1)
            continue
        if line.startswith("Relocation section"):
            section = None
            continue
        m = re.match(r"([0-9a-f]+)\s+[0-9a-f]+\s+(R_X86_64_\w+)\s+[0-9a-f]+\s+(\S+)\s*([+-])\s*([0-9a-f]+)", line)
        if m and section:
            addend = int(m.group(5), 16) * (-1 if m.group(4) == "-" else 1)
            out.append(Rel(section, int(m.group(1), 16), m.group(2), m.group(3), addend))
    return out


def _entity_in_target(tsyms, symbol):
    """nm's target address for what an object relocation symbol stands for, or None (not a target static)."""
    name = symbol
    for prefix in (".text.", ".data.", ".bss.", ".rodata."):
        if symbol.startswith(prefix):
            name = symbol[len(prefix):]
    # The unit's function-local statics are calls.N in both; tell them apart by their initial value line.
    if name.startswith("calls."):
        return None  # checked separately (which calls is which comes from DWARF, not names)
    hits = [s for s in tsyms if s.name == name and (s.file or "").endswith("/alpha.c") and s.kind in "tTdDbBrR"]
    return hits[0].addr if len(hits) == 1 else None


def test_section_identity_and_jumps(auto):
    flavor, target, patch, _obj_path, lp, gen = auto
    from gdb_nsb.elf.image import ElfImage
    assert lp.old_bid == ElfImage(target).build_id and lp.new_bid == ElfImage(patch).build_id
    tsyms, psyms = G.nm(target), G.nm(patch)
    jumps = {j.name: j for j in lp.func_jumps}
    assert sorted(jumps) == ["compute", "tick_alpha"]  # only the changed ones
    for name in jumps:
        ts = G.nm_one(tsyms, name, "alpha.c")
        assert jumps[name].func_value == ts.addr and jumps[name].func_size == ts.size
        assert jumps[name].patch_value == G.nm_one(psyms, name).addr
    unchanged = {line.split()[1] for line in gen.explain if line.startswith("unchanged ")}
    assert unchanged == {"bump", "alpha_reset", "hidden_twice", "protected_thrice", "internal_quad",
                         "tick_common", "report_bad_input", "tiny", "alpha_entry"}
    assert gen.warnings == []


def test_every_fixup_matches_readelf_and_nm(auto):
    flavor, target, patch, obj, lp, _gen = auto
    tsyms, psyms = G.nm(target), G.nm(patch)
    fix = {s.patch_address: s for s in lp.static_symbols}
    assert len(fix) == len(lp.static_symbols) and all(s.patch_size == 4 for s in lp.static_symbols)
    calls_alpha = G.nm_one(tsyms, "calls", "alpha.c", G.line_of("alpha.c", "static int calls = 0;")).addr
    calls_common = G.nm_one(tsyms, "calls", "alpha.c", G.line_of("alpha.c", "static int calls = 500;")).addr
    expected = {}
    for r in object_relocations(obj):
        if r.type not in ("R_X86_64_PC32", "R_X86_64_PLT32"):
            continue
        func = r.section[len(".text."):]
        field = G.nm_one(psyms, func).addr + r.offset
        if r.symbol.startswith(".bss.calls.") or r.symbol.startswith(".data.calls."):
            # The local static of the function that refers to it.
            s_t = calls_alpha if func == "tick_alpha" else calls_common
        else:
            s_t = _entity_in_target(tsyms, r.symbol)
        if s_t is None:
            continue  # string literals: not fix-ups
        # Only fields the linker resolved to the patch's own copy are rebound; a call to a
        # global through the patch's PLT is the binder's business.
        disp = int.from_bytes(G.file_bytes_at(patch, field, 4), "little", signed=True)
        own = re.sub(r"\A\.(text|data|bss|rodata)\.", "", r.symbol)
        own_addrs = {x.addr for x in psyms if x.name == own or x.name.startswith(own + ".")}
        if field + 4 + disp - (r.addend + 4) not in own_addrs:
            assert r.type == "R_X86_64_PLT32", (r.symbol, func)
            continue
        expected[field] = (s_t + r.addend - field) % (1 << 64)
    assert expected, "the unit has static references"
    assert {a: s.target_value for a, s in fix.items()} == expected
    # The statics the changed functions use are among them.
    counter = G.nm_one(tsyms, "counter", "alpha.c").addr
    bump = G.nm_one(tsyms, "bump", "alpha.c").addr
    assert any((v - (counter - a - 4)) % (1 << 64) in (0,) for a, v in expected.items())
    assert any((v - (bump - a - 4)) % (1 << 64) == 0 for a, v in expected.items())
    assert any((v - (calls_alpha - a - 4)) % (1 << 64) == 0 for a, v in expected.items())


def test_engine_formula_gives_the_target_address(auto):
    # What the binder writes (relocate.apply_static_fixups) lands on the target's entity at any biases.
    from gdb_nsb.binder.relocate import RelocatedPatch, SegmentImage, apply_static_fixups
    from gdb_nsb.elf.image import ElfImage
    flavor, target, patch, _obj_path, lp, _gen = auto
    img = ElfImage(patch)
    t_bias = 0 if flavor in ("nopie", "static") else 0x555555554000
    p_bias = t_bias + 0x10000000
    segs = [SegmentImage(s.vaddr, s.memsz, s.flags, bytearray(img.read_vaddr(s.vaddr, s.memsz)), p_bias)
            for s in img.segments]
    rp = apply_static_fixups(RelocatedPatch(p_bias, segs), lp.static_symbols, t_bias)
    counter = G.nm_one(G.nm(target), "counter", "alpha.c").addr
    hits = 0
    for s in lp.static_symbols:
        disp = int.from_bytes(rp.read(s.patch_address, 4), "little", signed=True)
        dest = p_bias + s.patch_address + 4 + disp
        if dest == t_bias + counter:
            hits += 1
    assert hits >= 2  # bump and alpha_reset read counter (and tick_alpha)


BETA = open(G.fixture("beta.c")).read()


def _beta_obj(text, tag):
    return T.build([("beta.c", text)], AUTO_FLAGS + ["-DNSB_TAG_%s" % tag], "beta.o")


def test_without_original_every_function_is_redirected():
    obj = _beta_obj(BETA.replace("return x - counter;", "return x - counter - 1;"), "b1")
    gen = generate(G.build_target("pie"), _so(obj, "beta-fix.so"), mode="auto", objects=[obj])
    assert sorted(j.name for j in gen.livepatch.func_jumps) == ["beta_entry", "beta_reset", "bump", "tick_beta"]
    assert len(gen.warnings) == 1 and "--original" in gen.warnings[0] and "beta.c" in gen.warnings[0]
    with pytest.raises(GenerateError) as ei:
        generate(G.build_target("pie"), _so(obj, "beta-fix.so"), mode="auto", objects=[obj], strict=True)
    assert "--original" in str(ei.value)


def test_without_original_a_too_short_function_is_refused(objects):
    # alpha.c's tiny() cannot take a jump; only --original can say it did not change.
    patched, _orig = objects
    with pytest.raises(GenerateError) as ei:
        generate(G.build_target("pie"), _so(patched), mode="auto", objects=[patched])
    assert "tiny" in str(ei.value) and "too short" in str(ei.value)


def test_auto_refuses_new_writable_static(tmp_path):
    text = ALPHA.replace("static int counter = 100;", "static int counter = 100;\nstatic int brand_new_state;") \
        .replace("return bump(x) * 3 + shared_total;", "return bump(x) * 3 + shared_total + brand_new_state++;")
    obj = _obj(text, "newstate")
    with pytest.raises(GenerateError) as ei:
        generate(G.build_target("pie"), _so(obj, "newstate.so"), mode="auto", objects=[obj],
                 originals=[_obj(ALPHA, "orig")])
    assert "writable data" in str(ei.value) and "brand_new_state" in str(ei.value)


def test_auto_refuses_changed_static_type():
    text = ALPHA.replace("static int counter = 100;", "static long counter = 100;")
    obj = _obj(text, "longcounter")
    with pytest.raises(GenerateError) as ei:
        generate(G.build_target("pie"), _so(obj, "long.so"), mode="auto", objects=[obj],
                 originals=[_obj(ALPHA, "orig")])
    msg = str(ei.value)
    assert "variable counter" in msg and "type differs" in msg and "alpha.c:9" in msg


def test_auto_needs_function_sections():
    obj = T.build([("alpha.c", PATCHED)], ["-O0", "-g", "-fPIC", "-c"], "alpha.o")
    with pytest.raises(GenerateError) as ei:
        generate(G.build_target("pie"), _so(obj, "nosections.so"), mode="auto", objects=[obj])
    assert "-ffunction-sections" in str(ei.value)


def test_auto_objects_must_match_the_patch(objects):
    obj = _beta_obj(BETA.replace("return x - counter;", "return x - counter - 1;"), "b1")
    other = _beta_obj(BETA.replace("KEEP void beta_reset(int v) { counter = v; }",
                                   "KEEP void beta_reset(int v) { counter = v + 1; v++; counter += v; }"), "b2")
    with pytest.raises(GenerateError) as ei:
        generate(G.build_target("pie"), _so(obj, "beta-fix.so"), mode="auto", objects=[other])
    assert "does not match the patch" in str(ei.value) and "beta_" in str(ei.value)


def test_cli_auto_explain(objects, tmp_path, capsys):
    patched, orig = objects
    patch = G.copy(_so(patched), tmp_path)
    target = G.build_target("nopie")
    assert cli.main(["generate", "--explain", target, patch, patched, "--mode", "auto", "--original", orig]) == 0
    out = capsys.readouterr()
    assert any(line.startswith("unchanged alpha_entry") for line in out.out.splitlines())
    assert any(line.startswith("fix-up ") for line in out.out.splitlines())
    assert "fix-ups" in out.err
    assert len(LivePatch.read(patch).static_symbols) > 0
    assert cli.main(["generate", target, patch, patched]) == GenerateError.exit_code  # objects need --mode auto


def test_auto_object_with_unreadable_dwarf_is_refused(objects, tmp_path):
    # The unit name decides which target unit the object rebinds to: DWARF that cannot be read
    # is a refusal naming the object and the cause, never a silent fall-back to another name.
    from elftools.elf.elffile import ELFFile

    patched, _orig = objects
    with open(patched, "rb") as f:
        raw = bytearray(f.read())
    with open(patched, "rb") as f:
        info = ELFFile(f).get_section_by_name(".debug_info")["sh_offset"]
    raw[info + 4:info + 6] = (9).to_bytes(2, "little")  # DWARF version 9
    bad = tmp_path / "bad.o"
    bad.write_bytes(bytes(raw))
    with pytest.raises(GenerateError) as ei:
        generate(G.build_target("pie"), _so(patched), mode="auto", objects=[str(bad)])
    assert "bad.o" in str(ei.value) and "cannot read its DWARF" in str(ei.value) and "version" in str(ei.value)


STRINGS = r'''
#include <stdio.h>
const char *first(void) { return "first reply"; }
const char *second(void) { return "second reply"; }
void third(void) { puts("third reply"); }
double fourth(double x) { return x * 1.0; }
const char *fifth(void) { return ""; }
double sixth(double x) { return x * 0.2; }
'''
FUNCS = ("first", "second", "third", "fourth", "fifth", "sixth")


def _strings_obj(text, tag):
    return T.build([("strings.c", text)], AUTO_FLAGS + ["-DNSB_TAG_%s" % tag], "strings.o")


def test_a_longer_literal_changes_only_its_function():
    # Found on Debian's memcached (proto_text.c): one reply string made longer moved every later literal
    # of the unit in .rodata, and auto mode took every function using one for changed.
    from gdb_nsb.generator.auto import ObjectUnit
    orig = ObjectUnit(_strings_obj(STRINGS, "s-orig"))
    longer = ObjectUnit(_strings_obj(STRINGS.replace('"first reply"', '"first reply, longer"'), "s-longer"))
    other = ObjectUnit(_strings_obj(STRINGS.replace('"third reply"', '"third answer"'), "s-other"))
    # -O0 keeps literals and floating constants together in .rodata: a constant whose bytes start
    # with NUL (1.0) changing to another (2.0) is a change, an empty string or 0.2 that moved is not.
    constant = ObjectUnit(_strings_obj(STRINGS.replace("x * 1.0", "x * 2.0"), "s-constant"))

    def changed(new):
        return [f for f in FUNCS if orig.signature(f) != new.signature(f)]
    assert changed(longer) == ["first"]
    assert changed(other) == ["third"]
    assert changed(constant) == ["fourth"]
