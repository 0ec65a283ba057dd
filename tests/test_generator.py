"""nsb generate, manual mode: every address the generator writes is compared
with what nm / readelf report for the target and the patch, on PIE, non-PIE,
static executables and a shared library, with DWARF 4 and 5."""

import pytest

import gen_oracle as G
from gdb_nsb.elf.livepatch import LivePatch
from gdb_nsb.elf.records import read_records
from gdb_nsb.generator import generate_file

pytestmark = pytest.mark.timeout(300)

PATCH_SOURCES = ["patch_all.c", "patch_statics.c"]


@pytest.fixture(scope="module", params=[(f, d) for f in G.FLAVORS for d in (5, 4)],
                ids=lambda p: "%s-dwarf%d" % p)
def bound(request, tmp_path_factory):
    """(flavor, target path, patch path, LivePatch read back, explain lines)."""
    flavor, dwarf = request.param
    target = G.build_target(flavor, dwarf)
    patch = G.copy(G.build_patch(PATCH_SOURCES, "patch-all.so", extra=["-gdwarf-%d" % dwarf]),
                   tmp_path_factory.mktemp("gen"))
    gen = generate_file(target, patch)
    return flavor, target, patch, LivePatch.read(patch), gen.explain


def _jumps(lp):
    return {(j.name, j.func_value): j for j in lp.func_jumps}


def test_identity(bound):
    _flavor, target, patch, lp, _ = bound
    from gdb_nsb.elf.image import ElfImage
    t, p = ElfImage(target), ElfImage(patch)
    assert lp.old_bid == t.build_id and len(lp.old_bid) == 40
    assert lp.new_bid == p.build_id
    assert lp.new_path == patch
    assert lp.target_is_executable == (_flavor != "shared")


def test_function_jumps_match_nm(bound):
    flavor, target, patch, lp, _ = bound
    tsyms, psyms = G.nm(target), G.nm(patch)
    expect = {
        # (target name, target file) -> (patch symbol, patch file)
        ("compute", "alpha.c"): ("compute", "patch_all.c"),
        ("tick_alpha", "alpha.c"): ("tick_alpha", "patch_all.c"),
        ("tick_common", "alpha.c"): ("tick_common", "patch_all.c"),
        ("bump", "alpha.c"): ("alpha_bump_v2", "patch_statics.c"),  # through VZP_STATIC_SYM_ALIAS
        ("bump", "beta.c"): ("bump", "patch_statics.c"),  # through VZP_FILE("beta.c")
        ("tick_beta", "beta.c"): ("tick_beta", "patch_statics.c"),
    }
    jumps = _jumps(lp)
    assert len(lp.func_jumps) == len(expect)
    for (tname, tfile), (pname, pfile) in expect.items():
        ts = G.nm_one(tsyms, tname, tfile)
        j = jumps[(tname, ts.addr)]
        assert j.func_size == ts.size
        assert j.patch_value == G.nm_one(psyms, pname, pfile).addr
        assert j.shndx == G.symtab_ndx(target, tname, ts.addr)
        assert j.entry_bytes == G.file_bytes_at(target, ts.addr, min(ts.size, 14))
        assert (ts.addr, ts.addr + ts.size) in j.fragments
    # compute has a cold part: both fragments, exactly as nm sizes them.
    c, cold = G.nm_one(tsyms, "compute", "alpha.c"), G.nm_one(tsyms, "compute.cold")
    assert sorted(jumps[("compute", c.addr)].fragments) == sorted(
        [(c.addr, c.addr + c.size), (cold.addr, cold.addr + cold.size)])


def test_helper_is_not_redirected(bound):
    _flavor, _target, _patch, lp, explain = bound
    assert "new_helper" not in {j.name for j in lp.func_jumps}
    assert any(line.startswith("helper new_helper: new code") for line in explain)


def test_references_match_nm(bound):
    flavor, target, patch, lp, _ = bound
    tsyms = G.nm(target)
    names = G.dynsym_names(patch)
    bound_to = {names[m.idx]: m.addr for m in lp.manual_symbols}
    # The C name each reference symbol stands for, from the patch's own records.
    cname_of = {r.patch_symbol: r.target_name for r in read_records(patch) if r.kind not in ("file", "alias")}
    by_cname = {}
    for sym, addr in bound_to.items():
        by_cname.setdefault(cname_of[sym], []).append(addr)
    alpha_calls = G.line_of("alpha.c", "static int calls = 0;")
    common_calls = G.line_of("alpha.c", "static int calls = 500;")
    beta_calls = G.line_of("beta.c", "static int calls = 10;")
    expect = {
        "counter": [G.nm_one(tsyms, "counter", "alpha.c").addr],
        "bump": [G.nm_one(tsyms, "bump", "alpha.c").addr],
        "counter_b": [G.nm_one(tsyms, "counter", "beta.c").addr],
        "bump_b": [G.nm_one(tsyms, "bump", "beta.c").addr],
        "hidden_count": [G.nm_one(tsyms, "hidden_count").addr],
        "protected_count": [G.nm_one(tsyms, "protected_count").addr],
        "internal_count": [G.nm_one(tsyms, "internal_count").addr],
        "hidden_twice": [G.nm_one(tsyms, "hidden_twice").addr],
        "protected_thrice": [G.nm_one(tsyms, "protected_thrice").addr],
        "internal_quad": [G.nm_one(tsyms, "internal_quad").addr],
        # tick_alpha's and tick_beta's local statics are both `calls` in the patch.
        "calls": sorted([G.nm_one(tsyms, "calls", "alpha.c", alpha_calls).addr,
                         G.nm_one(tsyms, "calls", "beta.c", beta_calls).addr]),
        "common_calls": [G.nm_one(tsyms, "calls", "alpha.c", common_calls).addr],
    }
    assert {k: sorted(v) for k, v in by_cname.items()} == expect


def test_globals(bound):
    flavor, target, patch, lp, explain = bound
    names = G.dynsym_names(patch)
    got = {names[m.idx]: m.addr for m in lp.global_symbols}
    if flavor == "shared":
        assert got == {}  # interposable: bound at run time
        assert any("shared library" in line for line in explain)
        return
    tsyms = G.nm(target)
    assert got.get("shared_total") == G.nm_one(tsyms, "shared_total").addr
    assert got.get("beta_entry") == G.nm_one(tsyms, "beta_entry").addr
    # strlen: not in a dynamic target; an IFUNC in a static one, resolved at run time.
    assert "strlen" not in got
    # Weak undefined runtime symbols (__gmon_start__, _ITM_*) never bind to something absent.
    for name, addr in got.items():
        assert any(s.name == name and s.addr == addr and s.kind in "TDBRVW" for s in tsyms), name


def test_no_manual_symbol_is_also_global(bound):
    _f, _t, _p, lp, _ = bound
    assert not {m.idx for m in lp.manual_symbols} & {m.idx for m in lp.global_symbols}


def test_explain_names_every_binding(bound):
    _f, _t, _p, lp, explain = bound
    assert sum(line.startswith("function ") for line in explain) == len(lp.func_jumps)
    assert sum(line.startswith("reference ") for line in explain) == len(lp.manual_symbols)
    assert sum(line.startswith("global ") for line in explain) == len(lp.global_symbols)
    line = next(line for line in explain if line.startswith("function compute:"))
    assert "alpha.c" in line and "patch_all.c:" in line
