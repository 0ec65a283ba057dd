"""The hand-written DWARF decoder (gdb_nsb.elf.dwarf.reader) against pyelftools, entry for entry.

For every DIE of the compared units: the offset, tag, children flag and every attribute (number,
form, raw value; unit-relative references made absolute as the decoder does), the strings the decoder
resolves (strp, line_strp, strx, and the dwz alt file's strp_alt), the range lists of DW_AT_ranges
and .debug_aranges.  Files: the test programs (DWARF 4 and 5, PIE, non-PIE, static, a library),
their dwz output with a common file, and libc's separate debug file when libc6-dbg is installed
(a seeded sample of its units; .ci/run installs it).
"""

import os
import random
import shutil

import pytest
from elftools.dwarf.enums import ENUM_DW_AT, ENUM_DW_FORM, ENUM_DW_TAG
from elftools.dwarf.ranges import BaseAddressEntry

import elf_fixtures as E
from gdb_nsb.elf.debuginfo import find_debug_file
from gdb_nsb.elf.dwarf import reader as R
from gdb_nsb.elf.dwarf.index import DwarfIndex
from gdb_nsb.elf.image import ElfImage

pytestmark = pytest.mark.timeout(900)

_REL_FORMS = {ENUM_DW_FORM[n] for n in ("DW_FORM_ref1", "DW_FORM_ref2", "DW_FORM_ref4", "DW_FORM_ref8",
                                        "DW_FORM_ref_udata")}
_ALT_STR = {R.F_GNU_STRP_ALT, R.F_STRP_SUP}
_TAG_IMPORTED_UNIT, _AT_IMPORT = ENUM_DW_TAG["DW_TAG_imported_unit"], ENUM_DW_AT["DW_AT_import"]


def _num(enum, v):
    return enum[v] if isinstance(v, str) else v


def _theirs(attr, cu_offset):
    form = _num(ENUM_DW_FORM, attr.form)
    raw = attr.raw_value
    if form in _REL_FORMS:
        raw += cu_offset
    elif isinstance(raw, list):
        raw = bytes(raw)
    elif form == R.F_STRING:
        raw = raw.decode("utf-8", "replace")
    elif form == R.F_FLAG_PRESENT:
        raw = 1
    return _num(ENUM_DW_AT, attr.name), form, raw


def _their_ranges(rl, cu, offset, base):
    out = []
    for e in rl.get_range_list_at_offset(offset, cu=cu):
        if isinstance(e, BaseAddressEntry):
            base = e.base_address
        elif e.is_absolute:
            out.append((e.begin_offset, e.end_offset))
        else:
            out.append((base + e.begin_offset, base + e.end_offset))
    return sorted((a, b) for a, b in out if b > a)


def compare(path, alt=None, sample=None, seed=0):
    """Compare every DIE of the units of ``path`` (``sample`` of them, seeded); returns the DIE count."""
    ix = DwarfIndex(path, alt)
    ours = ix._file
    di = ix._pyelf_dwarf(ours)
    rl = di.range_lists()
    cus = list(di.iter_CUs())
    assert [cu.cu_offset for cu in cus] == ours.unit_offsets()
    if sample is not None and len(cus) > sample:
        cus = random.Random(seed).sample(cus, sample)
    dies = 0
    for cu in cus:
        unit = ours.unit_at(cu.cu_offset)
        assert (unit.version, unit.addr_size, unit.end) == \
            (cu.header.version, cu.header.address_size, cu.cu_offset + cu.size)
        # pyelftools walks into the units a DW_TAG_imported_unit names (dwz): only this unit's own DIEs
        theirs = [d for d in cu.iter_DIEs() if not d.is_null() and d.cu is cu]
        mine, p = [], unit.die_offset
        while p < unit.end:
            die = ours.decode(unit, p)
            if die[1] == _TAG_IMPORTED_UNIT:  # pyelftools yields the imported unit's DIEs in its place
                assert die[3][_AT_IMPORT][0] in (R.F_REF_ADDR, R.F_GNU_REF_ALT), (path, hex(p))
            elif die[1]:
                mine.append(die)
            p = die[4]
        assert len(mine) == len(theirs), (path, hex(cu.cu_offset))
        for (off, tag, children, attrs, _n), d in zip(mine, theirs):
            where = (path, hex(off))
            assert (off, tag, children) == (d.offset, _num(ENUM_DW_TAG, d.tag), d.has_children), where
            assert [(at, form, v) for at, (form, v) in attrs.items()] == \
                [_theirs(a, cu.cu_offset) for a in d.attributes.values()], where
            for at, (form, v) in attrs.items():
                s = ours.string(unit, form, v)
                if s is not None and (form not in _ALT_STR or alt is not None):
                    assert s == d.attributes[_name(at)].value.decode("utf-8", "replace"), where
            r = attrs.get(R.AT_RANGES)
            if r is not None and r[0] == R.F_SEC_OFFSET:
                assert ours.ranges(unit, attrs) == _their_ranges(rl, cu, r[1], unit.base_address), where
            dies += 1
    aranges = di.get_aranges()
    if aranges is not None:
        assert ours.aranges() == sorted((e.begin_addr, e.begin_addr + e.length, e.info_offset)
                                        for e in aranges.entries if e.begin_addr or e.length)
    return dies


def _name(at):
    return next((k for k, v in ENUM_DW_AT.items() if v == at), at)


@pytest.mark.parametrize("flavor,dwarf", [(f, d) for f in E.FLAVORS for d in (4, 5)])
def test_test_programs(flavor, dwarf):
    assert compare(E.build_prog(flavor, dwarf)) > 50


@pytest.mark.parametrize("dwarf", [4, 5])
def test_shared_library(dwarf):
    assert compare(E.build_lib(dwarf)) > 10


@pytest.mark.skipif(shutil.which("dwz") is None, reason="dwz is not installed")
def test_dwz_output_and_common_file(tmp_path):
    a, b, common_path = E.dwz_pair(tmp_path)
    common = ElfImage(common_path, allow_relocatable=True)
    assert compare(str(a), common) > 20
    assert compare(str(b), common) > 20


def test_libc_debug_file():
    libc = next((p for p in ("/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6")
                 if os.path.exists(p)), None)
    dbg = find_debug_file(ElfImage(libc)) if libc else None
    if dbg is None or dbg == libc:
        pytest.skip("libc's separate debug file is not installed (libc6-dbg)")
    seed = int(os.environ.get("NSB_DWARF_SAMPLE_SEED", "17"))
    print("libc DWARF sample seed", seed)
    assert compare(dbg, sample=40, seed=seed) > 1000
