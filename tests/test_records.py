"""The records vzp.h leaves in a patch: every macro, compiled for real, parsed back,
and each record mapped to its ``__vzp_rec_N`` array and its GOT-routed symbol."""

import pytest
from elftools.elf.elffile import ELFFile

import targets as T
from gdb_nsb.elf import records
from gdb_nsb.elf.records import VzpRecord, parse_records, read_records
from gdb_nsb.errors import PatchFileError

EVERY_MACRO = r'''#include "vzp.h"
VZP_FILE("src/main.c");
VZP_STATIC_VAR_REF(int, counter);
VZP_STATIC_VAR_REF(long, other, "src/other.c");
VZP_STATIC_FUNC_REF(int, helper, (int));
VZP_STATIC_FUNC_REF(int, helper2, (int, int), "src/b.c");
VZP_HIDDEN_VAR_REF(int, hid_v);
VZP_PROTECTED_VAR_REF(int, prot_v);
VZP_INTERNAL_VAR_REF(int, int_v);
VZP_HIDDEN_FUNC_REF(int, hid_f, (void));
VZP_PROTECTED_FUNC_REF(int, prot_f, (void));
VZP_INTERNAL_FUNC_REF(int, int_f, (void));
VZP_STATIC_SYM_ALIAS(helper2, helper);
int work(int x)
{
    VZP_STATIC_VAR_REF(int, calls);
    calls++;
    return counter + (int)other + helper(x) + helper2(x, 1) + hid_v + prot_v + int_v
           + hid_f() + prot_f() + int_f() + calls;
}
'''

# (kind, C name, target name, file, line) in source order.
EXPECTED = [
    ("file", None, "", "src/main.c", 2),
    ("static_var", "counter", "counter", "", 3),
    ("static_var", "other", "other", "src/other.c", 4),
    ("static_func", "helper", "helper", "", 5),
    ("static_func", "helper2", "helper2", "src/b.c", 6),
    ("hidden_var", "hid_v", "hid_v", "", 7),
    ("protected_var", "prot_v", "prot_v", "", 8),
    ("internal_var", "int_v", "int_v", "", 9),
    ("hidden_func", "hid_f", "hid_f", "", 10),
    ("protected_func", "prot_f", "prot_f", "", 11),
    ("internal_func", "int_f", "int_f", "", 12),
    ("alias", "helper2", "helper", "", 13),
    ("static_var", "calls", "calls", "", 16),
]


@pytest.fixture(scope="module")
def every_macro_patch():
    return T.build_patch([("fix.c", EVERY_MACRO)], "every.so")


def elf_facts(path):
    """(section address, {local symbol name: st_value} in .vzp.records, undefined .dynsym names)."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        sec_index = [i for i, s in enumerate(elf.iter_sections()) if s.name == records.SECTION_NAME][0]
        addr = elf.get_section(sec_index)["sh_addr"]
        recs = {s.name: s["st_value"] for s in elf.get_section_by_name(".symtab").iter_symbols()
                if s["st_shndx"] == sec_index}
        undef = {s.name for s in elf.get_section_by_name(".dynsym").iter_symbols()
                 if s["st_shndx"] == "SHN_UNDEF" and s.name}
    return addr, recs, undef


def test_every_macro_leaves_its_record(every_macro_patch):
    recs = read_records(every_macro_patch)
    assert [(r.kind, r.target_name, r.file, r.source_line) for r in recs] == \
        [(k, t, f, line) for k, _, t, f, line in EXPECTED]
    assert all(r.source_file == "fix.c" for r in recs)
    for r, (kind, cname, _, _, _) in zip(recs, EXPECTED):
        if kind == "file":
            assert r.patch_symbol == "" and r.scope is None
        elif kind == "alias":
            assert r.patch_symbol == cname and r.scope == "static"
        else:
            assert r.patch_symbol.startswith("__vzp_%s_" % cname)
            assert r.is_variable == kind.endswith("_var") and r.is_function == kind.endswith("_func")
            assert r.scope == kind.split("_")[0]
    assert recs[1].where == "fix.c:3"


def test_records_map_to_their_arrays_and_symbols(every_macro_patch):
    addr, rec_syms, undefined = elf_facts(every_macro_patch)
    recs = read_records(every_macro_patch)
    by_offset = {v - addr: name for name, v in rec_syms.items()}
    assert sorted(by_offset) == [r.offset for r in recs]
    for r in recs:
        array = by_offset[r.offset]  # __vzp_rec_N, or __vzp_rec_N.0 for a function-local one
        assert array.startswith("__vzp_rec_")
        n = array[len("__vzp_rec_"):].split(".")[0]
        if r.kind not in ("file", "alias"):
            # Every reference is an undefined symbol of the patch: a GOT/PLT slot to bind.
            assert r.patch_symbol == "__vzp_%s_%s_%s" % (r.target_name, r.source_file, n)
            assert r.patch_symbol in undefined
    # The function-local reference is a local static of work() (the generator's clue).
    local = [name for name in rec_syms if "." in name]
    calls = [r for r in recs if r.target_name == "calls"][0]
    assert len(local) == 1 and by_offset[calls.offset] == local[0]


def test_records_of_several_compile_units():
    a = '#include "vzp.h"\nVZP_FILE("a.c");\nVZP_STATIC_VAR_REF(int, alpha);\nint fa(void) { return alpha; }\n'
    b = '#include "vzp.h"\n\nVZP_HIDDEN_FUNC_REF(int, beta, (void));\nint fb(void) { return beta(); }\n'
    so = T.build_patch([("pa.c", a), ("pb.c", b)], "two.so")
    recs = read_records(so)
    assert [(r.kind, r.source_file, r.source_line) for r in recs] == \
        [("file", "pa.c", 2), ("static_var", "pa.c", 3), ("hidden_func", "pb.c", 3)]
    assert recs[0].offset == 0 and recs[1].offset > 0 and recs[2].offset > recs[1].offset


def test_same_name_in_two_compile_units_gets_two_symbols():
    # __COUNTER__ restarts per unit: the unit's file name keeps the symbols apart.
    a = '#include "vzp.h"\nVZP_FILE("a.c");\nVZP_STATIC_VAR_REF(int, counter);\nint fa(void) { return counter; }\n'
    b = '#include "vzp.h"\nVZP_FILE("b.c");\nVZP_STATIC_VAR_REF(int, counter);\nint fb(void) { return counter; }\n'
    so = T.build_patch([("qa.c", a), ("qb.c", b)], "clash.so")
    refs = [r for r in read_records(so) if r.kind == "static_var"]
    assert len(refs) == 2
    assert refs[0].patch_symbol != refs[1].patch_symbol
    dyn = {s.name for s in ELFFile(open(so, "rb")).get_section_by_name(".dynsym").iter_symbols()}
    assert {r.patch_symbol for r in refs} <= dyn


def test_patch_without_macros_has_no_records():
    so = T.build_patch([("plain.c", "int f(int x) { return x + 1; }\n")], "plain.so")
    assert read_records(so) == []


# ---------------------------------------------------------------- malformed


def rec(*fields):
    return b"VZP1\0" + b"".join(f.encode() + b"\0" for f in fields)


def bad(data, match):
    with pytest.raises(PatchFileError, match=match) as ei:
        parse_records(data)
    assert "\n" not in str(ei.value) and str(ei.value).startswith("malformed vzp.h record at offset")


def test_parse_plain_and_padding():
    first = rec("file", "", "", "x.c", "p.c", "1")
    data = first + b"\0\0\0" + rec("hidden_var", "__vzp_v_1", "v", "", "p.c", "2")
    assert parse_records(data) == [VzpRecord("file", "", "", "x.c", "p.c", 1, 0),
                                   VzpRecord("hidden_var", "__vzp_v_1", "v", "", "p.c", 2, len(first) + 3)]
    assert parse_records(b"") == [] and parse_records(b"\0\0") == []


def test_malformed_records():
    good = rec("static_var", "__vzp_x_1", "x", "", "p.c", "7")
    bad(b"VZP2\0" + good[5:], "does not start with 'VZP1'")
    bad(good + b"garbage", r"offset 0x%x.*does not start" % len(good))
    bad(good[:-1], "truncated: field source_line")
    bad(good[:12], "truncated: field kind")
    bad(good[:20], "truncated: field patch_symbol")
    bad(b"VZP1", "does not start")
    bad(rec("global_var", "__vzp_x_1", "x", "", "p.c", "7"), "unknown kind 'global_var'")
    bad(rec("static_var", "__vzp_x_1", "x", "", "p.c", "seven"), "source line 'seven' is not a number")
    bad(rec("static_var", "__vzp_x_1", "x", "", "p.c", ""), "source line '' is not a number")
    bad(rec("static_var", "", "x", "", "p.c", "7"), r"missing patch symbol \(static_var p.c:7\)")
    bad(rec("hidden_func", "__vzp_f_1", "", "", "p.c", "7"), "missing target name")
    bad(rec("file", "", "", "", "p.c", "3"), "VZP_FILE with an empty path")
    bad(rec("file", "sym", "", "a.c", "p.c", "3"), "file record names a symbol")
    bad(rec("alias", "a", "b", "a.c", "p.c", "3"), "alias record names a file")
