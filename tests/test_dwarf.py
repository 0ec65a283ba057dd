"""DwarfIndex on real -O2 programs (DWARF 4 and 5), every address compared with nm."""

import os
import shutil

import pytest

import elf_fixtures as E
import targets as T
from gdb_nsb.elf.dwarf import DwarfIndex
from gdb_nsb.elf.image import ElfImage
from gdb_nsb.errors import DebugInfoError

pytestmark = pytest.mark.timeout(180)

DW_LANG_C = {0x1, 0x2, 0xC, 0x1D, 0x2C}  # C89, C, C99, C11, C17


@pytest.fixture(scope="module", params=[(f, v) for f in E.FLAVORS for v in (4, 5)],
                ids=lambda p: "%s-dwarf%d" % p)
def prog(request):
    flavor, version = request.param
    path = E.build_prog(flavor, version)
    return path, DwarfIndex(ElfImage(path)), version


def util_cu(ix, which):
    (cu,) = ix.find_cus("%s/util.c" % which)
    return cu


def nm_by_file(path, name):
    """{file of the STT_FILE before it: address} for local symbols name / name.N."""
    im = ElfImage(path)
    out = {}
    for s in im.symtab:
        base = s.name.split(".")[0]
        if base == name and s.defined and s.file:
            out.setdefault(s.file, []).append(s.value)
    return out


def test_compile_units(prog):
    path, ix, version = prog
    mine = [c for c in ix.compile_units() if c.name in ("main.c", "src/x/util.c", "src/y/util.c")]
    assert len(mine) == 3
    outdir = os.path.dirname(path)
    for c in mine:
        assert c.path == os.path.join(outdir, c.name) and c.comp_dir == outdir
        assert c.version == version and c.language in DW_LANG_C and c.producer.startswith("GNU C")


def test_find_cus_by_path(prog):
    path, ix, _ = prog
    outdir = os.path.dirname(path)
    (x,) = ix.find_cus(os.path.join(outdir, "src/x/util.c"))
    assert x.name == "src/x/util.c"
    assert ix.find_cus("x/util.c") == [x] and ix.find_cus("src/x/../x/util.c") == [x]
    assert len(ix.find_cus("util.c")) == 2  # ambiguous: the caller reports it
    assert ix.find_cus("c/x/util.c") == [] and ix.find_cus("/x/util.c") == []
    assert ix.find_cus("til.c") == []  # component boundary, not substring
    assert [c.name for c in ix.find_cus("main.c")] == ["main.c"]


def test_every_function_matches_nm(prog):
    """Each local/global function of our sources: entry = nm address, a range = [addr, addr+size)."""
    path, ix, _ = prog
    ours = {"main", "f", "report", "x_entry", "y_entry", "helper", "tick", "twice"}
    checked = 0
    for addr, _t, name, size in E.nm(path):
        if name not in ours:
            continue
        found = [fi for fi in ix.functions(name) if fi.entry == addr]
        assert len(found) == 1, name
        assert any(lo == addr and hi == addr + size for lo, hi in found[0].ranges), (name, found[0].ranges)
        assert ix.function_at(addr + size - 1).die_offset == found[0].die_offset
        checked += 1
    assert checked == 10  # helper and tick twice


def test_static_functions_of_the_same_name_by_file(prog):
    path, ix, _ = prog
    by_file = {}
    for a, _t, n, _s in E.nm(path):
        if n == "helper":
            by_file.setdefault(ix.function_at(a).cu.name, a)
    assert len(by_file) == 2
    for which in ("x", "y"):
        cu = util_cu(ix, which)
        (fi,) = ix.functions("helper", cu=cu)
        assert fi.entry == by_file["src/%s/util.c" % which] and not fi.external
        assert fi.cu == cu and fi.decl_file == cu.path and fi.decl_line == 3
        assert ix.functions("helper", cu="%s/util.c" % which) == [fi]
    assert len(ix.functions("helper")) == 2
    (main,) = ix.functions("main")
    assert main.external and main.cu.name == "main.c"


def test_file_statics_of_the_same_name(prog):
    path, ix, _ = prog
    nm_addrs = nm_by_file(path, "counter")["util.c"]
    got = ix.variables("counter")
    assert sorted(v.address for v in got) == sorted(nm_addrs)
    for which in ("x", "y"):
        (v,) = ix.variables("counter", cu=util_cu(ix, which))
        assert v.function is None and not v.external and v.decl_line == 2
        assert v.cu.name == "src/%s/util.c" % which
        # the ELF symbol of that address comes from the same file
        (sym,) = [s for s in ElfImage(path).symbols_named("counter") if s.value == v.address]


def test_function_local_statics(prog):
    path, ix, _ = prog
    hits = sorted(nm_by_file(path, "hits")["util.c"])
    deep = sorted(nm_by_file(path, "deep")["util.c"])
    assert len(hits) == 2 and len(deep) == 2
    got = ix.variables("hits", function="tick")
    assert sorted(v.address for v in got) == hits
    assert all(v.function == "tick" and not v.external for v in got)
    # through a lexical block
    got = ix.variables("deep", function="tick")
    assert sorted(v.address for v in got) == deep
    (one,) = ix.variables("deep", cu=util_cu(ix, "y"), function="tick")
    assert one.function == "tick" and one.decl_line == 9
    # without `function`: every function's local statics too
    assert sorted(v.address for v in ix.variables("hits")) == hits
    assert ix.variables("hits", function="helper") == []


def test_globals_and_declarations(prog):
    path, ix, _ = prog
    im = ElfImage(path)
    # `extern int shared_global;` then its definition: name and external-ness from the declaration
    (g,) = ix.variables("shared_global")
    (sym,) = [s for s in im.symbols_named("shared_global") if not s.is_local]
    assert g.address == sym.value and g.external and g.function is None
    assert g.decl_file.endswith("main.c")
    (t,) = ix.variables("table")
    assert t.address == [s for s in im.symbols_named("table") if not s.is_local][0].value
    assert ix.variables("no_such_variable") == [] and ix.functions("no_such_function") == []


def test_cold_fragment_in_ranges(prog):
    path, ix, _ = prog
    syms = {n: (a, s) for a, _t, n, s in E.nm(path) if n in ("f", "f.cold")}
    assert "f.cold" in syms, "gcc did not split f: fixture broken"
    (fi,) = ix.functions("f")
    (a, s), (ca, cs) = syms["f"], syms["f.cold"]
    assert fi.entry == a
    assert sorted(fi.ranges) == sorted([(a, a + s), (ca, ca + cs)])
    assert ix.function_at(ca + 1).name == "f" and ix.function_at(a).name == "f"
    assert ix.functions("f.cold") == []


def test_inline_function_with_out_of_line_copy(prog):
    path, ix, _ = prog
    (addr,) = [a for a, _t, n, _s in E.nm(path) if n == "twice"]
    (fi,) = ix.functions("twice")
    assert fi.entry == addr and fi.inline_instance and not fi.external
    die = ix.die(fi.die_offset)
    assert die.tag == "DW_TAG_subprogram" and "DW_AT_abstract_origin" in die.attributes
    origin = die.get_DIE_from_attribute("DW_AT_abstract_origin")
    assert origin.attributes["DW_AT_name"].value == b"twice" and "DW_AT_inline" in origin.attributes


def test_die_access(prog):
    path, ix, _ = prog
    (v,) = ix.variables("counter", cu=util_cu(ix, "x"))
    die = ix.die(v.die_offset)
    assert die.tag == "DW_TAG_variable" and die.attributes["DW_AT_name"].value == b"counter"


def test_lazy_units():
    """Listing units decodes no DIE below the unit DIE; a cu= lookup indexes only that unit."""
    ix = DwarfIndex(E.build_prog("pie", 5))
    ix.compile_units()
    f = ix._file
    assert all(u.index is None for u in f._units.values())
    ix.functions("helper", cu=util_cu(ix, "y"))
    indexed = [u.offset for u in f._units.values() if u.index is not None]
    assert indexed == [util_cu(ix, "y").offset]
    # a global function is narrowed through the symbol table and .debug_aranges
    ix2 = DwarfIndex(E.build_prog("static", 5))
    ix2.functions("x_entry")
    assert [u.offset for u in ix2._file._units.values() if u.index is not None] == [util_cu(ix2, "x").offset]


def test_shared_library():
    path = E.build_lib(5)
    ix = DwarfIndex(path)
    (lh,) = ix.functions("lib_helper")
    (addr,) = [a for a, _t, n, _s in E.nm(path) if n == "lib_helper"]
    assert lh.entry == addr and not lh.external
    (c,) = ix.variables("lib_counter")
    assert c.address == [a for a, _t, n, _s in E.nm(path) if n == "lib_counter"][0]


def test_no_debug_info_is_an_error(tmp_path):
    stripped = tmp_path / "stripped"
    T.tool("objcopy", "--strip-debug", E.build_prog("pie"), str(stripped))
    with pytest.raises(DebugInfoError, match="no DWARF"):
        DwarfIndex(str(stripped))


@pytest.mark.skipif(shutil.which("dwz") is None, reason="dwz is not installed")
def test_dwz_alt_file(tmp_path):
    a, _b, _common = E.dwz_pair(tmp_path)
    from gdb_nsb.elf.debuginfo import open_dwarf

    ix = open_dwarf(str(a))
    assert ix.alt_image is not None
    assert sorted(v.address for v in ix.variables("hits", function="tick")) == \
        sorted(nm_by_file(str(a), "hits")["util.c"])
    (fi,) = ix.functions("f")
    assert len(fi.ranges) == 2


def test_corrupt_dwarf_is_one_line_error(tmp_path):
    src = E.build_prog("pie", 5)
    data = bytearray(open(src, "rb").read())
    info = ElfImage(src).section_by_name(".debug_info")
    ix0 = DwarfIndex(src)
    (x,) = ix0.find_cus("x/util.c")
    # garbage over the DIEs of one unit (its header and unit DIE stay intact)
    unit = ix0._file.unit_at(x.offset)
    first_child = ix0._file.decode(unit, unit.die_offset)[4]
    start = info.offset + first_child
    data[start:start + 64] = b"\xff" * 64
    bad = tmp_path / "bad"
    bad.write_bytes(bytes(data))
    ix = DwarfIndex(str(bad))
    assert len(ix.compile_units()) == len(ix0.compile_units())
    with pytest.raises(DebugInfoError, match="corrupt DWARF|bad abbreviation") as ei:
        ix.functions("helper", cu=x)
    assert "\n" not in str(ei.value)
    # a truncated .debug_info section
    data = bytearray(open(src, "rb").read())
    shoff = int.from_bytes(data[0x28:0x30], "little")
    data[shoff + 64 * info.index + 0x20:shoff + 64 * info.index + 0x28] = (info.size // 2).to_bytes(8, "little")
    bad.write_bytes(bytes(data))
    with pytest.raises(DebugInfoError, match="past the section|corrupt"):
        ix = DwarfIndex(str(bad))
        ix.compile_units()
        ix.functions("helper")
