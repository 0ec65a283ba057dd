"""GNU symbol versions (.gnu.version_d and .gnu.version_r) decoded from their fixed-size records.

These are read for every mapped library's dynamic symbols on the hot path (the
runner's prefetch before the attach), where pyelftools cost its import and a
read of the whole file.  The records: Elf64_Verdef (20 bytes) with its
Elf64_Verdaux (8), Elf64_Verneed (16) with its Elf64_Vernaux (16); each
section holds ``sh_info`` entries chained by their ``next`` offsets, names in
the string table ``sh_link`` names.  tests/test_elf_versions.py compares the
result with pyelftools' on the system's libraries.
"""

from __future__ import annotations

import struct

VERDEF = struct.Struct("<HHHHIII")   # vd_version, vd_flags, vd_ndx, vd_cnt, vd_hash, vd_aux, vd_next
VERDAUX = struct.Struct("<II")       # vda_name, vda_next
VERNEED = struct.Struct("<HHIII")    # vn_version, vn_cnt, vn_file, vn_aux, vn_next
VERNAUX = struct.Struct("<IHHII")    # vna_hash, vna_flags, vna_other, vna_name, vna_next
VER_FLG_BASE = 1


def _name(strtab: bytes, off: int) -> str:
    end = strtab.index(b"\0", off)  # ValueError past the table: the caller's corrupt-file error
    return strtab[off:end].decode("utf-8", "replace")


def _chain(data: bytes, count: int, record: struct.Struct, next_field: int):
    """Offsets of ``count`` records chained by their ``next`` field (0 ends the chain early)."""
    off = 0
    for _ in range(count):
        fields = record.unpack_from(data, off)
        yield off, fields
        if not fields[next_field]:
            return
        off += fields[next_field]


def definitions(data: bytes, count: int, strtab: bytes) -> list[tuple[int, int, list[str]]]:
    """[(vd_ndx, vd_flags, [names])] of a .gnu.version_d section (the first name is the version's own)."""
    out = []
    for off, (_v, flags, ndx, cnt, _h, aux, _n) in _chain(data, count, VERDEF, 6):
        names = [_name(strtab, name) for _o, (name, _next) in _chain(data[off + aux:], cnt, VERDAUX, 1)]
        out.append((ndx, flags, names))
    return out


def needs(data: bytes, count: int, strtab: bytes) -> list[tuple[str, list[tuple[int, str]]]]:
    """[(file, [(vna_other, name)])] of a .gnu.version_r section."""
    out = []
    for off, (_v, cnt, file, aux, _n) in _chain(data, count, VERNEED, 4):
        auxs = [(other, _name(strtab, name))
                for _o, (_h, _f, other, name, _next) in _chain(data[off + aux:], cnt, VERNAUX, 4)]
        out.append((_name(strtab, file), auxs))
    return out


def index_names(defs, reqs) -> dict[int, str]:
    """Version index -> name, as the .gnu.version entries refer to them (the base definition left out)."""
    names = {}
    for ndx, flags, vnames in defs:
        if vnames and not flags & VER_FLG_BASE:
            names[ndx] = vnames[0]
    for _file, auxs in reqs:
        for other, name in auxs:
            names[other] = name
    return names
