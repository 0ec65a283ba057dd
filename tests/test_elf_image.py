"""ElfImage on real ELF files, every fact compared with binutils (readelf, nm)."""

import os
import re
import shutil
import struct

import pytest

import elf_fixtures as E
import targets as T
from gdb_nsb.elf.image import PF_R, PF_W, PF_X, ElfImage
from gdb_nsb.errors import ElfError

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module", params=E.FLAVORS)
def prog(request):
    return request.param, E.build_prog(request.param)


@pytest.fixture(scope="module")
def lib():
    return E.build_lib()


def readelf(*args):
    return T.tool("readelf", "-W", *args)


def test_kind_of_object(prog, lib):
    flavor, path = prog
    im = ElfImage(path)
    expect = {  # flavor: (elf_type, is_pie, is_static)
        "pie": ("ET_DYN", True, False),
        "nopie": ("ET_EXEC", False, False),
        "static": ("ET_EXEC", False, True),
        "static-pie": ("ET_DYN", True, True),
    }[flavor]
    assert (im.elf_type, im.is_pie, im.is_static) == expect
    assert im.is_executable and not im.is_shared_library
    so = ElfImage(lib)
    assert so.elf_type == "ET_DYN" and so.is_shared_library
    assert not (so.is_pie or so.is_executable or so.is_static)


def test_build_id_matches_readelf(prog):
    _, path = prog
    m = re.search(r"Build ID: ([0-9a-f]+)", readelf("-n", path))
    assert ElfImage(path).build_id == m.group(1)


def test_segments_match_readelf(prog):
    _, path = prog
    im = ElfImage(path)
    rows = []
    for line in readelf("-l", path).splitlines():
        p = line.split()
        if p and p[0] == "LOAD":
            off, va, _pa, fsz, msz = (int(x, 16) for x in p[1:6])
            fl = (PF_R if "R" in p[6] else 0) | (PF_W if "W" in "".join(p[6:-1]) else 0) \
                | (PF_X if "E" in "".join(p[6:-1]) else 0)
            rows.append((va, msz, off, fsz, fl))
    assert rows and [(s.vaddr, s.memsz, s.offset, s.filesz, s.flags) for s in im.segments] == rows
    lo, hi = im.load_span()
    assert lo % 4096 == 0 and hi % 4096 == 0
    assert lo <= min(r[0] for r in rows) and hi >= max(r[0] + r[1] for r in rows)


def test_sections_match_readelf(prog):
    _, path = prog
    im = ElfImage(path)
    got = {s.name: (s.index, s.addr, s.offset, s.size) for s in im.sections}
    n = 0
    for line in readelf("-S", path).splitlines():
        m = re.match(r"\s*\[\s*(\d+)\]\s+(\S+)\s+\S+\s+([0-9a-f]+)\s+([0-9a-f]+)\s+([0-9a-f]+)", line)
        if m and m.group(2) != "NULL":
            name = m.group(2)
            assert got[name] == (int(m.group(1)), int(m.group(3), 16), int(m.group(4), 16), int(m.group(5), 16))
            n += 1
    assert n > 20
    text = im.section_by_name(".text")
    assert im.section_data(".text") == im.data[text.offset:text.offset + text.size]
    assert im.section_data(".bss") is None and im.section_by_name(".nope") is None


def test_symtab_matches_nm(prog):
    _, path = prog
    im = ElfImage(path)
    ours = {(s.name, s.value) for s in im.symtab if s.defined}
    theirs = [(a, name) for a, t, name, _sz in E.nm(path) if t not in "aANn"]
    assert len(theirs) > 20
    for a, name in theirs:
        assert (name, a) in ours or (name.split("@")[0], a) in ours, name
    # locals carry the STT_FILE that precedes them: two `counter`s, one per util.c
    counters = im.symbols_named("counter")
    assert len(counters) == 2 and {s.file for s in counters} == {"util.c"}
    assert {s.value for s in counters} == {a for a, _t, n, _s in E.nm(path) if n == "counter"}
    f = im.symbols_named("f")[0]
    assert f.type == "STT_FUNC" and f.bind == "STB_GLOBAL" and f.file is None
    assert im.section_for_addr(f.value).name == ".text"
    assert im.section_for_addr(_global(im, "zeroes").value).name == ".bss"


def _global(im, name):
    (s,) = [s for s in im.symbols_named(name) if not s.is_local]
    return s


def test_read_vaddr_data_and_bss(prog):
    _, path = prog
    im = ElfImage(path)
    g = im.symbols_named("greeting")[0]
    assert im.read_vaddr(g.value, g.size) == b"hello, nsb\0"
    z = _global(im, "zeroes")  # static glibc has a local `zeroes` too
    assert im.read_vaddr(z.value, 256) == bytes(256)
    sg = im.symbols_named("shared_global")[0]
    assert struct.unpack("<i", im.read_vaddr(sg.value, 4))[0] == 42
    with pytest.raises(ElfError, match="not inside one PT_LOAD"):
        im.read_vaddr(0xDEAD00000000, 4)


def test_dynamic_relocations_match_readelf(prog, lib):
    for path in (prog[1], lib):
        im = ElfImage(path)
        theirs = set()
        for line in readelf("-r", path).splitlines():
            m = re.match(r"([0-9a-f]{16})\s+[0-9a-f]+\s+(R_X86_64_\w+)", line)
            if m:
                theirs.add((int(m.group(1), 16), m.group(2)))
        ours = {(r.offset, r.type_name) for r in im.relocations}
        assert ours == theirs
    so = ElfImage(lib)
    plt = [r for r in so.relocations if r.section == ".rela.plt"]
    assert any(r.symbol == "printf" and r.type_name == "R_X86_64_JUMP_SLOT" for r in plt)
    assert all(r.section in (".rela.dyn", ".rela.plt") for r in so.relocations)


def test_dynamic_tags_and_versions(lib, prog):
    so = ElfImage(lib)
    assert so.soname == "libnsbtest.so.1" and so.needed == ["libc.so.6"]
    assert "GLIBC_2.2.5" in so.version_needs["libc.so.6"]
    vers = {(s.name, s.version, s.version_hidden) for s in so.dynsyms if s.name == "vfun"}
    assert vers == {("vfun", "V1", True), ("vfun", "V2", False)}
    printf = [s for s in so.dynsyms if s.name == "printf"][0]
    assert printf.version == "GLIBC_2.2.5" and not printf.defined
    # every versioned dynsym agrees with readelf's name@VER / name@@VER
    for line in readelf("--dyn-syms", lib).splitlines():
        m = re.match(r"\s*(\d+):.*\s(\S+?)(@@?)(\S+?)(\s+\(\d+\))?$", line)
        if m:
            s = so.dynsyms[int(m.group(1))]
            assert (s.name, s.version) == (m.group(2), m.group(4)), line
            if s.defined:  # readelf writes every reference as name@VER
                assert s.version_hidden == (m.group(3) == "@"), line
    flavor, path = prog
    im = ElfImage(path)
    assert im.needed == ([] if flavor.startswith("static") else ["libc.so.6"])
    assert im.soname is None
    if flavor in ("pie", "static-pie"):
        assert im.dt_flags_1 & 0x08000000  # DF_1_PIE


def test_debuglink_and_altlink(tmp_path):
    src = E.build_prog("pie")
    plain = ElfImage(src)
    assert plain.debuglink is None and plain.debugaltlink is None
    dbg = tmp_path / "prog.debug"
    linked = tmp_path / "prog"
    T.tool("objcopy", "--only-keep-debug", src, str(dbg))
    T.tool("objcopy", "--strip-debug", "--add-gnu-debuglink=" + str(dbg), src, str(linked))
    name, crc = ElfImage(str(linked)).debuglink
    import zlib

    assert name == "prog.debug" and crc == zlib.crc32(dbg.read_bytes())
    alt = tmp_path / "altlink"
    alt.write_bytes(b"../dwz/common.debug\0" + bytes.fromhex("00112233445566778899aabbccddeeff00112233"))
    with_alt = tmp_path / "prog.alt"
    T.tool("objcopy", "--add-section", ".gnu_debugaltlink=" + str(alt), src, str(with_alt))
    assert ElfImage(str(with_alt)).debugaltlink == ("../dwz/common.debug", "00112233445566778899aabbccddeeff00112233")


def test_opening_is_lazy():
    im = ElfImage(E.build_prog("static"))
    assert "symtab" not in im.__dict__ and "sections" not in im.__dict__
    assert im.symtab is im.symtab  # cached


# ---- bad input ------------------------------------------------------------------------------


def _write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def test_rejects_bad_files(tmp_path):
    good = open(E.build_prog("pie"), "rb").read()
    cases = {
        "text": (b"#!/bin/sh\necho hi\n" * 10, "not an ELF file"),
        "empty": (b"", "not an ELF file"),
        "short": (good[:40], "truncated ELF header"),
        # a 32-bit header, crafted: EI_CLASS=1, e_machine=EM_386
        "elf32": (b"\x7fELF\x01\x01\x01" + bytes(9) + struct.pack("<HHI", 2, 3, 1) + bytes(40), "32-bit ELF"),
        "bigendian": (good[:5] + b"\x02" + good[6:], "big-endian"),
        "i386": (good[:18] + struct.pack("<H", 3) + good[20:], "wrong machine EM_386"),
        "aarch64": (good[:18] + struct.pack("<H", 183) + good[20:], "wrong machine EM_AARCH64"),
        "cut": (good[:len(good) // 2], "truncated ELF file"),
        "relocatable": (good[:16] + struct.pack("<H", 1) + good[18:], "unsupported ELF type ET_REL"),
    }
    for name, (data, msg) in cases.items():
        with pytest.raises(ElfError, match=msg) as ei:
            ElfImage(_write(tmp_path, name, data))
        assert "\n" not in str(ei.value)
    with pytest.raises(ElfError, match="cannot read"):
        ElfImage(str(tmp_path / "missing"))


def test_corrupt_tables_give_elf_error(tmp_path):
    good = bytearray(open(E.build_prog("pie"), "rb").read())
    shoff, = struct.unpack_from("<Q", good, 0x28)
    shstrndx, = struct.unpack_from("<H", good, 0x3E)
    # point the section-name string table's offset far past the end of the file
    bad = bytearray(good)
    struct.pack_into("<Q", bad, shoff + 64 * shstrndx + 0x18, 1 << 40)
    im = ElfImage(_write(tmp_path, "badnames", bytes(bad)))
    with pytest.raises(ElfError) as ei:
        im.sections
    assert "\n" not in str(ei.value)
    # a .dynsym whose size runs past the end of the file
    im = ElfImage(E.build_prog("pie"))
    dynsym = im.section_by_name(".dynsym")
    bad = bytearray(good)
    struct.pack_into("<Q", bad, shoff + 64 * dynsym.index + 0x20, 1 << 30)
    with pytest.raises(ElfError, match="truncated|corrupt"):
        ElfImage(_write(tmp_path, "baddynsym", bytes(bad))).dynsyms


def test_object_copied_elsewhere_reads_the_same(tmp_path):
    src = E.build_prog("nopie")
    dst = tmp_path / "copy"
    shutil.copy(src, dst)
    a, b = ElfImage(src), ElfImage(str(dst))
    assert a.build_id == b.build_id and os.path.samefile(b.path, dst)
    assert [s.name for s in a.symtab] == [s.name for s in b.symtab]


def test_library_with_interpreter_is_a_library(tmp_path):
    """libc.so.6 has PT_INTERP (it runs as a program) and a soname: a shared library, not a PIE."""
    src = ("#include <stdio.h>\nint lib_fn(void) { return puts(\"x\"); }\n"
           "const char interp[] __attribute__((section(\".interp\"))) = \"/lib64/ld-linux-x86-64.so.2\";\n")
    so = T.build([("interp.c", src)], ["-O2", "-fPIC", "-shared", "-Wl,-soname,libinterp.so"], "libinterp.so")
    im = ElfImage(so)
    assert im.has_interp and im.soname == "libinterp.so"
    assert im.is_shared_library and not im.is_pie and not im.is_static
    old_pie = T.build([("oldpie.c", "int main(void) { return 0; }\n")],
                           ["-fPIE", "-pie", "-Wl,-z,nopack-relative-relocs"], "oldpie")
    data = bytearray(open(old_pie, "rb").read())
    img = ElfImage(old_pie)
    # clear DF_1_PIE, as linkers before binutils 2.32 did not set it
    dyn_off = [off for t, _f, off, *_ in img.program_headers if t == 2][0]
    for i, (tag, val) in enumerate(img.dynamic):
        if tag == 0x6FFFFFFB:
            data[dyn_off + 16 * i + 8:dyn_off + 16 * i + 16] = (val & ~0x08000000).to_bytes(8, "little")
    p = tmp_path / "oldpie"
    p.write_bytes(bytes(data))
    old = ElfImage(str(p))
    assert old.dt_flags_1 & 0x08000000 == 0 and old.is_pie and not old.is_shared_library
