"""The hot-path ELF reading without pyelftools (issue 15 item 2): symbol versions decoded by
gdb_nsb/elf/versions.py and the type names of gdb_nsb/elf/names.py must equal pyelftools' own."""

import glob
import io
import os

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.enums import ENUM_RELOC_TYPE_x64, ENUM_SH_TYPE_AMD64

from gdb_nsb.elf import names
from gdb_nsb.elf.image import ElfImage

LIBS = [p for p in ["/lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/libm.so.6",
                    "/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/libstdc++.so.6", "/usr/bin/gdb",
                    "/usr/bin/python3"] if os.path.exists(p)]
LIBS += sorted(glob.glob("/lib/x86_64-linux-gnu/libpthread.so.0"))


def _pyelftools_versions(path):
    with open(path, "rb") as f:
        elf = ELFFile(io.BytesIO(f.read()))
        index, needs = {}, {}
        for sec in elf.iter_sections():
            if sec.header["sh_type"] == "SHT_GNU_verdef":
                for ver, auxs in sec.iter_versions():
                    aux = next(iter(auxs), None)
                    if aux is not None and not ver["vd_flags"] & 1:
                        index[ver["vd_ndx"]] = aux.name
            elif sec.header["sh_type"] == "SHT_GNU_verneed":
                for ver, auxs in sec.iter_versions():
                    auxs = list(auxs)
                    needs.setdefault(ver.name, []).extend(a.name for a in auxs)
                    for a in auxs:
                        index[a["vna_other"]] = a.name
        return index, needs


@pytest.mark.parametrize("path", LIBS)
def test_versions_equal_pyelftools(path):
    img = ElfImage(path)
    index, needs = _pyelftools_versions(path)
    assert img._version_index_names == index
    assert img.version_needs == needs
    assert index  # every file listed is versioned: the comparison is not vacuous
    assert any(s.version for s in img.dynsyms)


def test_type_names_equal_pyelftools():
    assert names.SECTION_TYPES == {v: k for k, v in ENUM_SH_TYPE_AMD64.items() if k != "_default_"}
    assert names.RELOCATION_TYPES == {v: k for k, v in ENUM_RELOC_TYPE_x64.items() if not k.startswith("_")}


def test_a_corrupt_version_table_is_one_line_elf_error(tmp_path):
    src = "/lib/x86_64-linux-gnu/libm.so.6"
    img = ElfImage(src)
    sec = next(s for s in img.sections if s.type == "SHT_GNU_verneed")
    data = bytearray(open(src, "rb").read())
    data[sec.offset + 8:sec.offset + 12] = (0x7FFFFFF0).to_bytes(4, "little")  # vn_aux far past the section
    bad = tmp_path / "libm.so"
    bad.write_bytes(bytes(data))
    from gdb_nsb.errors import ElfError
    with pytest.raises(ElfError, match="corrupt ELF file"):
        ElfImage(str(bad)).version_needs
