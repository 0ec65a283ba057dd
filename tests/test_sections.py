"""Writing a non-allocated section into real ELF files: layout, idempotence,
the dynamic linker still loads the result, readelf finds nothing wrong."""

import os
import shutil
import stat
import struct
import subprocess
import sys

import pytest
from elftools.elf.elffile import ELFFile

import targets as T
from gdb_nsb.elf import sections
from gdb_nsb.errors import ElfError

LIB_SRC = r'''
static int base = 40;
int answer(int x) { return base + x; }
const char *greeting(void) { return "hello from lib"; }
'''

EXE_SRC = r'''
#include <stdio.h>
static int twice(int x) { return 2 * x; }
int main(void) { printf("result %d\n", twice(21)); return 0; }
'''


@pytest.fixture
def lib(tmp_path):
    src = T.build([("lib.c", LIB_SRC)], ["-O2", "-g", "-fPIC", "-shared"], "libanswer.so")
    path = tmp_path / "libanswer.so"
    shutil.copy(src, path)
    return str(path)


def readelf(*args):
    """readelf output; fails the test on any warning or error it prints."""
    r = subprocess.run(["readelf", "-W", *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", r.stderr
    assert "warning" not in r.stdout.lower() and "error" not in r.stdout.lower().replace("errno", "")
    return r.stdout


def load_in_child(path, code):
    """dlopen ``path`` with ctypes in a fresh Python and run ``code`` (lib is ``L``)."""
    prog = "import ctypes\nL = ctypes.CDLL(%r)\n%s" % (path, code)
    r = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def sections_by_pyelftools(path):
    with open(path, "rb") as f:
        elf = ELFFile(f)
        return {s.name: (s["sh_type"], s["sh_flags"], s.data() if s["sh_type"] != "SHT_NOBITS" else b"")
                for s in elf.iter_sections()}


def test_write_adds_nonalloc_progbits_section(lib, tmp_path):
    out = str(tmp_path / "out.so")
    payload = b"\x0a\x04abcd" + bytes(range(256))
    sections.write_section(lib, "vzpatch", payload, out_path=out)
    assert sections.read_section(out, "vzpatch") == payload
    assert sections.read_section(lib, "vzpatch") is None  # source untouched
    # An independent reader agrees, and every other section is unchanged.
    before, after = sections_by_pyelftools(lib), sections_by_pyelftools(out)
    assert after.pop("vzpatch") == ("SHT_PROGBITS", 0, payload)
    assert after.pop(".shstrtab")[2] == before.pop(".shstrtab")[2] + b"vzpatch\0"  # the new name
    assert after == before
    text = readelf("-a", out)
    line = [l for l in text.splitlines() if " vzpatch " in l]
    assert len(line) == 1 and "PROGBITS" in line[0]
    # Program headers are byte-identical: nothing the loader reads moved.
    assert readelf("-l", out) == readelf("-l", lib).replace(lib, out)
    assert sections.section_names(out)[-1] == "vzpatch"


def test_dynamic_linker_loads_rewritten_library(lib, tmp_path):
    out = str(tmp_path / "libanswer-patched.so")
    sections.write_section(lib, "vzpatch", b"x" * 1000, out_path=out)
    sections.write_section(out, "vzpatch", b"shorter")
    got = load_in_child(out, "L.greeting.restype = ctypes.c_char_p\nprint(L.answer(2), L.greeting().decode())")
    assert got.split() == ["42", "hello", "from", "lib"]


def test_rewritten_executable_still_runs(tmp_path):
    exe = T.build([("main.c", EXE_SRC)], ["-O2", "-g", "-fPIE", "-pie"], "prog")
    out = str(tmp_path / "prog")
    sections.write_section(exe, "vzpatch", b"payload", out_path=out)
    assert os.stat(out).st_mode & stat.S_IXUSR
    r = subprocess.run([out], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout == "result 42\n"
    readelf("-a", out)


def test_idempotent_and_replace_equals_write_once(lib, tmp_path):
    a, b, c, d, e = (str(tmp_path / n) for n in "abcde")
    sections.write_section(lib, "vzpatch", b"first", out_path=a)
    sections.write_section(a, "vzpatch", b"first", out_path=b)
    sections.write_section(a, "vzpatch", b"a different, longer payload", out_path=c)
    sections.write_section(c, "vzpatch", b"first", out_path=d)
    sections.write_section(lib, "vzpatch", b"a different, longer payload", out_path=e)
    data = {n: open(p, "rb").read() for n, p in zip("abcde", (a, b, c, d, e))}
    assert data["a"] == data["b"] == data["d"]
    assert data["c"] == data["e"]
    assert data["a"] != data["c"]
    # Only the payload changed: the size differs by its growth (plus alignment of the headers).
    grown = len(b"a different, longer payload") - len(b"first")
    assert grown <= len(data["c"]) - len(data["a"]) < grown + 8


def test_two_sections_and_an_empty_one(lib, tmp_path):
    out = str(tmp_path / "two.so")
    sections.write_section(lib, "vzpatch", b"one", out_path=out)
    sections.write_section(out, ".note.extra", b"two")
    sections.write_section(out, "vzpatch", b"")
    assert sections.read_section(out, "vzpatch") == b""
    assert sections.read_section(out, ".note.extra") == b"two"
    readelf("-a", out)
    load_in_child(out, "assert L.answer(1) == 41")


def test_in_place_write_keeps_mode_and_leaves_no_temp_file(lib, tmp_path):
    os.chmod(lib, 0o750)
    sections.write_section(lib, "vzpatch", b"data")
    assert stat.S_IMODE(os.stat(lib).st_mode) == 0o750
    assert sorted(os.listdir(tmp_path)) == ["libanswer.so"]
    assert sections.read_section(lib, "vzpatch") == b"data"


def test_symlink_destination_is_followed(lib, tmp_path):
    link = tmp_path / "current.so"
    link.symlink_to("libanswer.so")
    sections.write_section(str(link), "vzpatch", b"via link")
    assert link.is_symlink()
    assert sections.read_section(lib, "vzpatch") == b"via link"


def test_section_added_by_objcopy_is_read_and_replaced(lib, tmp_path):
    blob = tmp_path / "blob"
    blob.write_bytes(b"from objcopy")
    theirs = str(tmp_path / "theirs.so")
    subprocess.run(["objcopy", "--add-section", "vzpatch=%s" % blob, "--set-section-flags", "vzpatch=readonly",
                    lib, theirs], check=True, timeout=60)
    assert sections.read_section(theirs, "vzpatch") == b"from objcopy"
    sections.write_section(theirs, "vzpatch", b"ours now")
    assert sections.read_section(theirs, "vzpatch") == b"ours now"
    readelf("-a", theirs)
    load_in_child(theirs, "assert L.answer(0) == 40")


def test_file_without_section_headers(lib, tmp_path):
    """A file whose section-header table was dropped (sstrip) gets a new one."""
    bare = tmp_path / "bare.so"
    data = bytearray(open(lib, "rb").read())
    struct.pack_into("<Q", data, 40, 0)  # e_shoff
    struct.pack_into("<HH", data, 60, 0, 0)  # e_shnum, e_shstrndx
    bare.write_bytes(bytes(data))
    assert sections.read_section(str(bare), "vzpatch") is None
    sections.write_section(str(bare), "vzpatch", b"hello")
    assert sections.read_section(str(bare), "vzpatch") == b"hello"
    assert sections.section_names(str(bare)) == [".shstrtab", "vzpatch"]
    first = bare.read_bytes()
    sections.write_section(str(bare), "vzpatch", b"hello")
    assert bare.read_bytes() == first
    load_in_child(str(bare), "assert L.answer(2) == 42")


def test_refusals(lib, tmp_path):
    with pytest.raises(ElfError, match="file not found"):
        sections.write_section(str(tmp_path / "nope.so"), "vzpatch", b"")
    with pytest.raises(ElfError, match="file not found"):
        sections.read_section(str(tmp_path / "nope.so"), "vzpatch")
    junk = tmp_path / "junk"
    junk.write_bytes(b"#!/bin/sh\necho hi\n")
    with pytest.raises(ElfError, match="not an ELF file"):
        sections.write_section(str(junk), "vzpatch", b"")
    elf32 = tmp_path / "elf32"
    elf32.write_bytes(b"\x7fELF\x01\x01\x01" + b"\0" * 60)
    with pytest.raises(ElfError, match="32-bit ELF"):
        sections.read_section(str(elf32), "vzpatch")
    short = tmp_path / "short"
    short.write_bytes(open(lib, "rb").read()[:40])
    with pytest.raises(ElfError, match="truncated ELF header"):
        sections.read_section(str(short), "vzpatch")
    cut = tmp_path / "cut.so"
    cut.write_bytes(open(lib, "rb").read()[:-100])
    with pytest.raises(ElfError, match="section header table"):
        sections.write_section(str(cut), "vzpatch", b"")
    before = open(lib, "rb").read()
    with pytest.raises(ElfError, match="allocated"):
        sections.write_section(lib, ".text", b"\xcc")
    with pytest.raises(ElfError, match="invalid section name"):
        sections.write_section(lib, "", b"")
    assert open(lib, "rb").read() == before
    assert sorted(os.listdir(tmp_path)) == sorted(["libanswer.so", "junk", "elf32", "short", "cut.so"])
