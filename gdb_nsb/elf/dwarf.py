"""Lazy index of the DWARF (4 and 5) debug information of one ELF file.

``DwarfIndex(image, alt_image=None)`` answers "which compile units are there",
"where is function/variable NAME" and "which function holds ADDRESS" without
parsing the whole of ``.debug_info``:

* listing compile units reads unit headers and the unit DIE only;
* a name is first narrowed to candidate units with the symbol table
  (address -> unit through ``.debug_aranges``; the ``STT_FILE`` of local
  symbols -> unit by file name); only those units are scanned, and a unit is
  scanned at its top level only (children are skipped through
  ``DW_AT_sibling``); a subprogram's subtree is scanned only to find its
  local statics;
* per-unit indexes are cached.

A small decoder of DIE attributes lives here because it is an order of
magnitude faster than building pyelftools DIE objects; pyelftools still
provides full DIEs through :meth:`DwarfIndex.die` for type checks, and the
line-program file tables for ``decl_file``.
"""

from __future__ import annotations

import bisect
import functools
import os
import re
import struct
from dataclasses import dataclass, field

from elftools.common.exceptions import DWARFError, ELFParseError
from elftools.construct.core import ConstructError

from gdb_nsb.errors import DebugInfoError
from gdb_nsb.elf.image import ElfImage

# Tags.
TAG_COMPILE_UNIT, TAG_PARTIAL_UNIT, TAG_SUBPROGRAM, TAG_VARIABLE = 0x11, 0x3C, 0x2E, 0x34
TAG_NAMESPACE, TAG_INLINED_SUBROUTINE = 0x39, 0x1D
# Attributes.
AT_SIBLING, AT_LOCATION, AT_NAME, AT_STMT_LIST, AT_LOW_PC, AT_HIGH_PC = 0x01, 0x02, 0x03, 0x10, 0x11, 0x12
AT_LANGUAGE, AT_COMP_DIR, AT_INLINE, AT_PRODUCER, AT_ABSTRACT_ORIGIN = 0x13, 0x1B, 0x20, 0x25, 0x31
AT_DECL_FILE, AT_DECL_LINE, AT_DECLARATION, AT_EXTERNAL, AT_SPECIFICATION = 0x3A, 0x3B, 0x3C, 0x3F, 0x47
AT_ENTRY_PC, AT_RANGES, AT_LINKAGE_NAME, AT_STR_OFFSETS_BASE, AT_ADDR_BASE = 0x52, 0x55, 0x6E, 0x72, 0x73
AT_RNGLISTS_BASE, AT_MIPS_LINKAGE_NAME = 0x74, 0x2007
_NAME_ATS = (AT_NAME, AT_LINKAGE_NAME, AT_MIPS_LINKAGE_NAME, AT_COMP_DIR, AT_PRODUCER)

# Forms.
F_ADDR, F_BLOCK2, F_BLOCK4, F_DATA2, F_DATA4, F_DATA8, F_STRING, F_BLOCK = 0x01, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09
F_BLOCK1, F_DATA1, F_FLAG, F_SDATA, F_STRP, F_UDATA, F_REF_ADDR = 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F, 0x10
F_REF1, F_REF2, F_REF4, F_REF8, F_REF_UDATA, F_INDIRECT = 0x11, 0x12, 0x13, 0x14, 0x15, 0x16
F_SEC_OFFSET, F_EXPRLOC, F_FLAG_PRESENT, F_STRX, F_ADDRX, F_REF_SUP4 = 0x17, 0x18, 0x19, 0x1A, 0x1B, 0x1C
F_STRP_SUP, F_DATA16, F_LINE_STRP, F_REF_SIG8, F_IMPLICIT_CONST = 0x1D, 0x1E, 0x1F, 0x20, 0x21
F_LOCLISTX, F_RNGLISTX, F_REF_SUP8 = 0x22, 0x23, 0x24
F_STRX1, F_STRX2, F_STRX3, F_STRX4, F_ADDRX1, F_ADDRX2, F_ADDRX3, F_ADDRX4 = range(0x25, 0x2D)
F_GNU_ADDR_INDEX, F_GNU_STR_INDEX, F_GNU_REF_ALT, F_GNU_STRP_ALT = 0x1F01, 0x1F02, 0x1F20, 0x1F21
_ADDRX_FORMS = (F_ADDRX, F_ADDRX1, F_ADDRX2, F_ADDRX3, F_ADDRX4, F_GNU_ADDR_INDEX)
_STRX_FORMS = (F_STRX, F_STRX1, F_STRX2, F_STRX3, F_STRX4, F_GNU_STR_INDEX)
_UNIT_REF_FORMS = (F_REF1, F_REF2, F_REF4, F_REF8, F_REF_UDATA)

DW_OP_addr, DW_OP_addrx, DW_OP_GNU_addr_index = 0x03, 0xA1, 0xFB
UT_COMPILE, UT_TYPE, UT_PARTIAL, UT_SKELETON, UT_SPLIT_COMPILE, UT_SPLIT_TYPE = 1, 2, 3, 4, 5, 6

DEBUG_SECTIONS = (".debug_info", ".debug_abbrev", ".debug_str", ".debug_line_str", ".debug_str_offsets",
                  ".debug_addr", ".debug_ranges", ".debug_rnglists", ".debug_aranges")


# ---- public records ----------------------------------------------------------------


@dataclass(frozen=True)
class CompileUnitInfo:
    """A compile unit: its source path (normalised, absolute when comp_dir is), producer, language."""

    name: str
    comp_dir: str | None
    path: str
    producer: str | None
    language: int | None  # DW_LANG_* code
    version: int  # DWARF version of the unit
    offset: int  # unit header offset in .debug_info


@dataclass(frozen=True)
class FunctionInfo:
    """A concrete function (it has code): every fragment of it, e.g. ``f`` and ``f.cold``."""

    name: str
    cu: CompileUnitInfo
    entry: int
    ranges: list = field(hash=False)  # [(lo, hi)] link-time, sorted
    external: bool
    decl_file: str | None
    decl_line: int | None
    die_offset: int
    linkage_name: str | None = None
    inline_instance: bool = False  # out-of-line copy of an (abstract) inline function


@dataclass(frozen=True)
class VariableInfo:
    """A variable with a static address (file scope or a function-local static)."""

    name: str
    cu: CompileUnitInfo
    address: int
    external: bool
    function: str | None  # enclosing subprogram's name, None at file scope
    decl_file: str | None
    decl_line: int | None
    die_offset: int
    linkage_name: str | None = None


# ---- raw decoding -----------------------------------------------------------------------


def _uleb(d, p):
    b = d[p]
    if b < 0x80:
        return b, p + 1
    v, s = b & 0x7F, 7
    while True:
        p += 1
        b = d[p]
        v |= (b & 0x7F) << s
        if b < 0x80:
            return v, p + 1
        s += 7


def _sleb(d, p):
    v, s = 0, 0
    while True:
        b = d[p]
        p += 1
        v |= (b & 0x7F) << s
        s += 7
        if b < 0x80:
            if b & 0x40:
                v -= 1 << s
            return v, p


_U16, _U32, _U64 = struct.Struct("<H"), struct.Struct("<I"), struct.Struct("<Q")


def _cstr(d, off):
    end = d.index(b"\0", off)
    return d[off:end].decode("utf-8", "replace")


class _Unit:
    """One unit of .debug_info (header fields plus unit-DIE bases)."""

    __slots__ = ("file", "offset", "end", "version", "unit_type", "addr_size", "off_size", "abbrev",
                 "die_offset", "tag", "str_offsets_base", "addr_base", "rnglists_base", "base_address",
                 "info", "top", "index", "ranges_cache")

    def __init__(self, dfile, offset):
        d = dfile.info
        self.file = dfile
        self.offset = offset
        length = _U32.unpack_from(d, offset)[0]
        p = offset + 4
        self.off_size = 4
        if length == 0xFFFFFFFF:
            length = _U64.unpack_from(d, p)[0]
            p += 8
            self.off_size = 8
        elif length >= 0xFFFFFFF0:
            raise DebugInfoError("%s: corrupt .debug_info unit at %#x" % (dfile.path, offset))
        self.end = p + length
        if self.end > len(d):
            raise DebugInfoError("%s: .debug_info unit at %#x runs past the section" % (dfile.path, offset))
        self.version = _U16.unpack_from(d, p)[0]
        p += 2
        if self.version not in (2, 3, 4, 5):
            raise DebugInfoError("%s: unsupported DWARF version %d (unit at %#x)" % (dfile.path, self.version, offset))
        rd = _U64.unpack_from if self.off_size == 8 else _U32.unpack_from
        if self.version >= 5:
            self.unit_type = d[p]
            self.addr_size = d[p + 1]
            abbrev_off = rd(d, p + 2)[0]
            p += 2 + self.off_size
            if self.unit_type in (UT_SKELETON, UT_SPLIT_COMPILE):
                p += 8
            elif self.unit_type in (UT_TYPE, UT_SPLIT_TYPE):
                p += 8 + self.off_size
        else:
            self.unit_type = UT_COMPILE
            abbrev_off = rd(d, p)[0]
            self.addr_size = d[p + self.off_size]
            p += self.off_size + 1
        self.abbrev = dfile.abbrev_table(abbrev_off)
        self.die_offset = p
        self.str_offsets_base = 8 if self.version >= 5 else 0  # header size of .debug_str_offsets v5
        self.addr_base = 8
        self.rnglists_base = 12
        self.base_address = 0
        self.info = None  # CompileUnitInfo (main file compile units)
        self.top = None
        self.index = None
        self.ranges_cache = None
        # The unit DIE supplies the bases for strx/addrx/rnglistx of every DIE below.
        _o, tag, _ch, attrs, _n = dfile.decode(self, p)
        self.tag = tag
        if AT_STR_OFFSETS_BASE in attrs:
            self.str_offsets_base = attrs[AT_STR_OFFSETS_BASE][1]
        if AT_ADDR_BASE in attrs:
            self.addr_base = attrs[AT_ADDR_BASE][1]
        if AT_RNGLISTS_BASE in attrs:
            self.rnglists_base = attrs[AT_RNGLISTS_BASE][1]
        if AT_LOW_PC in attrs:
            self.base_address = dfile.address(self, *attrs[AT_LOW_PC])
        self.top = attrs


class _DwarfFile:
    """Raw debug sections of one ELF file and its units (headers read on demand)."""

    def __init__(self, image: ElfImage, alt: "_DwarfFile | None" = None):
        self.image = image
        self.path = image.path
        self.alt = alt
        secs = {}
        for name in DEBUG_SECTIONS:
            s = image.section_by_name(name)
            if s is None or s.type == "SHT_NOBITS":
                secs[name] = b""
            elif s.flags & 0x800:  # SHF_COMPRESSED: let pyelftools inflate it
                secs[name] = image.elffile.get_section_by_name(name).data()
            else:
                secs[name] = image._section_bytes(s)
        self.info = secs[".debug_info"]
        self.abbrev_sec = secs[".debug_abbrev"]
        self.str = secs[".debug_str"]
        self.line_str = secs[".debug_line_str"]
        self.str_offsets = secs[".debug_str_offsets"]
        self.addr_sec = secs[".debug_addr"]
        self.ranges_sec = secs[".debug_ranges"]
        self.rnglists_sec = secs[".debug_rnglists"]
        self.aranges_sec = secs[".debug_aranges"]
        self._abbrevs = {}
        self._unit_offsets = None
        self._units = {}

    # -- units --

    def unit_offsets(self):
        """Offsets of every unit header (walks unit_length fields only)."""
        if self._unit_offsets is None:
            offs, p, d = [], 0, self.info
            while p + 11 <= len(d):
                offs.append(p)
                length = _U32.unpack_from(d, p)[0]
                p += 4 + length if length != 0xFFFFFFFF else 12 + _U64.unpack_from(d, p + 4)[0]
            self._unit_offsets = offs
        return self._unit_offsets

    def unit_at(self, offset) -> _Unit:
        u = self._units.get(offset)
        if u is None:
            u = self._units[offset] = _Unit(self, offset)
        return u

    def unit_containing(self, die_offset) -> _Unit:
        offs = self.unit_offsets()
        i = bisect.bisect_right(offs, die_offset) - 1
        if i < 0:
            raise DebugInfoError("%s: DIE offset %#x is outside .debug_info" % (self.path, die_offset))
        return self.unit_at(offs[i])

    def abbrev_table(self, off):
        t = self._abbrevs.get(off)
        if t is not None:
            return t
        d, p, t = self.abbrev_sec, off, {}
        while True:
            code, p = _uleb(d, p)
            if code == 0:
                break
            tag, p = _uleb(d, p)
            children = d[p]
            p += 1
            specs = []
            while True:
                at, p = _uleb(d, p)
                form, p = _uleb(d, p)
                ic = None
                if form == F_IMPLICIT_CONST:
                    ic, p = _sleb(d, p)
                if at == 0 and form == 0:
                    break
                specs.append((at, form, ic))
            t[code] = (tag, bool(children), tuple(specs))
        self._abbrevs[off] = t
        return t

    # -- DIEs --

    def decode(self, unit, off):
        """Decode the DIE at ``off``: (offset, tag, has_children, {at: (form, raw)}, next offset).

        References are made absolute (.debug_info offsets; GNU_ref_alt into the alt file).
        tag 0 means a null entry (end of a sibling list)."""
        d = self.info
        code, p = _uleb(d, off)
        if code == 0:
            return off, 0, False, None, p
        try:
            tag, children, specs = unit.abbrev[code]
        except KeyError:
            raise DebugInfoError("%s: bad abbreviation code %d at .debug_info %#x" % (self.path, code, off)) from None
        attrs = {}
        asz, osz = unit.addr_size, unit.off_size
        for at, form, ic in specs:
            if form == F_INDIRECT:
                form, p = _uleb(d, p)
            if form == F_STRP or form == F_LINE_STRP or form == F_SEC_OFFSET or form == F_GNU_STRP_ALT \
                    or form == F_STRP_SUP:
                v = int.from_bytes(d[p:p + osz], "little")
                p += osz
            elif form == F_DATA1 or form == F_REF1 or form == F_FLAG or form == F_STRX1 or form == F_ADDRX1:
                v = d[p]
                p += 1
            elif form == F_DATA2 or form == F_REF2 or form == F_STRX2 or form == F_ADDRX2:
                v = d[p] | d[p + 1] << 8
                p += 2
            elif form == F_DATA4 or form == F_REF4 or form == F_STRX4 or form == F_ADDRX4 or form == F_REF_SUP4:
                v = _U32.unpack_from(d, p)[0]
                p += 4
            elif form == F_FLAG_PRESENT:
                v = 1
            elif form == F_IMPLICIT_CONST:
                v = ic
            elif form == F_ADDR:
                v = int.from_bytes(d[p:p + asz], "little")
                p += asz
            elif form == F_EXPRLOC or form == F_BLOCK:
                n, p = _uleb(d, p)
                v = d[p:p + n]
                p += n
            elif form == F_UDATA or form == F_REF_UDATA or form == F_STRX or form == F_ADDRX \
                    or form == F_LOCLISTX or form == F_RNGLISTX or form == F_GNU_ADDR_INDEX or form == F_GNU_STR_INDEX:
                v, p = _uleb(d, p)
            elif form == F_SDATA:
                v, p = _sleb(d, p)
            elif form == F_DATA8 or form == F_REF8 or form == F_REF_SIG8 or form == F_REF_SUP8:
                v = _U64.unpack_from(d, p)[0]
                p += 8
            elif form == F_STRING:
                e = d.index(b"\0", p)
                v = d[p:e].decode("utf-8", "replace")
                p = e + 1
            elif form == F_REF_ADDR or form == F_GNU_REF_ALT:
                n = osz if unit.version >= 3 else asz
                v = int.from_bytes(d[p:p + n], "little")
                p += n
            elif form == F_BLOCK1:
                n = d[p]
                v = d[p + 1:p + 1 + n]
                p += 1 + n
            elif form == F_BLOCK2:
                n = d[p] | d[p + 1] << 8
                v = d[p + 2:p + 2 + n]
                p += 2 + n
            elif form == F_BLOCK4:
                n = _U32.unpack_from(d, p)[0]
                v = d[p + 4:p + 4 + n]
                p += 4 + n
            elif form == F_STRX3 or form == F_ADDRX3:
                v = d[p] | d[p + 1] << 8 | d[p + 2] << 16
                p += 3
            elif form == F_DATA16:
                v = d[p:p + 16]
                p += 16
            else:
                raise DebugInfoError("%s: unknown DWARF form %#x at .debug_info %#x" % (self.path, form, off))
            if form in _UNIT_REF_FORMS:
                v += unit.offset
            attrs[at] = (form, v)
        return off, tag, children, attrs, p

    def die_at(self, offset):
        return self.decode(self.unit_containing(offset), offset)

    def children(self, unit, die):
        """Decoded children of ``die`` (a decoded DIE with children), skipping grandchildren via DW_AT_sibling."""
        off, _tag, has_children, _attrs, p = die
        if not has_children:
            return
        while p < unit.end:
            child = self.decode(unit, p)
            if child[1] == 0:
                return
            yield child
            p = self.next_sibling(unit, child)

    def next_sibling(self, unit, die):
        off, _tag, has_children, attrs, p = die
        if not has_children:
            return p
        sib = attrs.get(AT_SIBLING)
        if sib is not None and sib[0] in _UNIT_REF_FORMS and sib[1] > off:
            return sib[1]
        # No sibling pointer: walk the subtree to its null terminator.
        depth = 1
        while depth and p < unit.end:
            _o, tag, ch, attrs, p2 = self.decode(unit, p)
            if tag == 0:
                depth -= 1
                p = p2
            elif ch:
                sib = attrs.get(AT_SIBLING)
                if sib is not None and sib[0] in _UNIT_REF_FORMS and sib[1] > p:
                    p = sib[1]
                else:
                    depth += 1
                    p = p2
            else:
                p = p2
        return p

    # -- attribute values --

    def string(self, unit, form, v):
        if form == F_STRING:
            return v
        if form == F_STRP:
            return _cstr(self.str, v)
        if form == F_LINE_STRP:
            return _cstr(self.line_str, v)
        if form in _STRX_FORMS:
            osz = unit.off_size
            o = unit.str_offsets_base + v * osz
            return _cstr(self.str, int.from_bytes(self.str_offsets[o:o + osz], "little"))
        if form in (F_GNU_STRP_ALT, F_STRP_SUP):
            if self.alt is None:
                raise DebugInfoError("%s: DWARF refers to a dwz alt file (.gnu_debugaltlink) that was not given"
                                     % self.path)
            return _cstr(self.alt.str, v)
        return None

    def address(self, unit, form, v):
        if form in _ADDRX_FORMS:
            o = unit.addr_base + v * unit.addr_size
            return int.from_bytes(self.addr_sec[o:o + unit.addr_size], "little")
        return v

    def location_address(self, unit, form, v):
        """The static address of a DW_AT_location that is exactly DW_OP_addr/addrx, else None."""
        if not isinstance(v, bytes) or not v:
            return None
        if v[0] == DW_OP_addr and len(v) == 1 + unit.addr_size:
            return int.from_bytes(v[1:], "little")
        if v[0] in (DW_OP_addrx, DW_OP_GNU_addr_index):
            idx, p = _uleb(v, 1)
            if p == len(v):
                return self.address(unit, F_ADDRX, idx)
        return None

    def ranges(self, unit, attrs):
        """[(lo, hi)] of a DIE from low_pc/high_pc or DW_AT_ranges ([] when it has no code)."""
        r = attrs.get(AT_RANGES)
        if r is not None:
            return self._range_list(unit, *r)
        lo = attrs.get(AT_LOW_PC)
        hi = attrs.get(AT_HIGH_PC)
        if lo is None or hi is None:
            return []
        lo = self.address(unit, *lo)
        form, hv = hi
        hi = self.address(unit, form, hv) if form == F_ADDR or form in _ADDRX_FORMS else lo + hv
        return [(lo, hi)] if hi > lo else []

    def _range_list(self, unit, form, v):
        out = []
        base = unit.base_address
        if unit.version < 5:
            d, p, asz = self.ranges_sec, v, unit.addr_size
            top = (1 << (8 * asz)) - 1
            while p + 2 * asz <= len(d):
                a = int.from_bytes(d[p:p + asz], "little")
                b = int.from_bytes(d[p + asz:p + 2 * asz], "little")
                p += 2 * asz
                if a == 0 and b == 0:
                    break
                if a == top:
                    base = b
                elif b > a:
                    out.append((base + a, base + b))
            return sorted(out)
        d = self.rnglists_sec
        if form == F_RNGLISTX:
            o = unit.rnglists_base + v * unit.off_size
            p = unit.rnglists_base + int.from_bytes(d[o:o + unit.off_size], "little")
        else:
            p = v
        addr = lambda i: self.address(unit, F_ADDRX, i)  # noqa: E731
        asz = unit.addr_size
        while p < len(d):
            kind = d[p]
            p += 1
            if kind == 0:  # DW_RLE_end_of_list
                break
            if kind == 1:  # base_addressx
                i, p = _uleb(d, p)
                base = addr(i)
            elif kind == 2:  # startx_endx
                i, p = _uleb(d, p)
                j, p = _uleb(d, p)
                out.append((addr(i), addr(j)))
            elif kind == 3:  # startx_length
                i, p = _uleb(d, p)
                n, p = _uleb(d, p)
                out.append((addr(i), addr(i) + n))
            elif kind == 4:  # offset_pair
                a, p = _uleb(d, p)
                b, p = _uleb(d, p)
                out.append((base + a, base + b))
            elif kind == 5:  # base_address
                base = int.from_bytes(d[p:p + asz], "little")
                p += asz
            elif kind == 6:  # start_end
                a = int.from_bytes(d[p:p + asz], "little")
                b = int.from_bytes(d[p + asz:p + 2 * asz], "little")
                p += 2 * asz
                out.append((a, b))
            elif kind == 7:  # start_length
                a = int.from_bytes(d[p:p + asz], "little")
                n, p = _uleb(d, p + asz)
                out.append((a, a + n))
            else:
                raise DebugInfoError("%s: bad .debug_rnglists entry kind %d at %#x" % (self.path, kind, p - 1))
        return sorted((a, b) for a, b in out if b > a)

    def aranges(self):
        """[(lo, hi, unit offset)] from .debug_aranges, sorted."""
        d, p, out = self.aranges_sec, 0, []
        while p + 16 <= len(d):
            start = p
            length = _U32.unpack_from(d, p)[0]
            p += 4
            osz = 4
            if length == 0xFFFFFFFF:
                length = _U64.unpack_from(d, p)[0]
                p += 8
                osz = 8
            end = p + length
            p += 2  # version
            cu_off = int.from_bytes(d[p:p + osz], "little")
            p += osz
            asz = d[p]
            p += 2  # address_size, segment_selector_size
            tup = 2 * asz
            p = start + -(-(p - start) // tup) * tup
            while p + tup <= end:
                a = int.from_bytes(d[p:p + asz], "little")
                n = int.from_bytes(d[p + asz:p + tup], "little")
                p += tup
                if a == 0 and n == 0:
                    break
                out.append((a, a + n, cu_off))
            p = end
        out.sort()
        return out


def _guarded(fn):
    """Public entry points: malformed DWARF becomes a one-line DebugInfoError."""

    @functools.wraps(fn)
    def wrapper(self, *a, **kw):
        try:
            return fn(self, *a, **kw)
        except (IndexError, struct.error, ValueError, KeyError, RecursionError, DWARFError, ELFParseError,
                ConstructError) as e:
            raise DebugInfoError("%s: corrupt DWARF (%s: %s)" % (self.image.path, fn.__name__, e)) from e

    return wrapper


class _Entry:
    """A subprogram or variable DIE seen in a unit scan, with names resolved through its origins."""

    __slots__ = ("unit", "offset", "tag", "attrs", "die", "merged", "name", "linkage_name", "external",
                 "declaration", "function")

    def __init__(self, unit, die):
        self.unit, self.die = unit, die
        self.offset, self.tag, self.attrs = die[0], die[1], die[3]
        self.merged = []  # [(file, unit, attrs)]: the DIE, then its specification/origin chain
        self.function = None


class DwarfIndex:
    """Lazy name and address index over the DWARF of ``image`` (an ElfImage or a path).

    ``alt_image`` is the dwz common file named by ``.gnu_debugaltlink`` (see
    :func:`gdb_nsb.elf.debuginfo.find_alt_file`), needed when the DWARF uses
    DW_FORM_GNU_strp_alt / DW_FORM_GNU_ref_alt.
    """

    def __init__(self, image, alt_image=None):
        if not isinstance(image, ElfImage):
            image = ElfImage(image)
        if alt_image is not None and not isinstance(alt_image, ElfImage):
            alt_image = ElfImage(alt_image, allow_relocatable=True)
        self.image, self.alt_image = image, alt_image
        if not image.has_debug_info:
            raise DebugInfoError("%s: no DWARF debug info (.debug_info)" % image.path)
        try:
            alt = _DwarfFile(alt_image) if alt_image is not None else None
            self._file = _DwarfFile(image, alt)
        except (IndexError, struct.error, ValueError) as e:
            raise DebugInfoError("%s: corrupt debug sections (%s)" % (image.path, e)) from e
        self._cus = None
        self._aranges = None
        self._lines = {}
        self._scanned_subtrees = {}
        self._pyelf = {}

    # ---- compile units ------------------------------------------------------------------

    @_guarded
    def compile_units(self) -> list[CompileUnitInfo]:
        """Every compile unit (partial and type units are not listed): header + unit DIE only."""
        if self._cus is None:
            cus = []
            for off in self._file.unit_offsets():
                u = self._file.unit_at(off)
                if u.tag != TAG_COMPILE_UNIT:
                    continue
                f, top = self._file, u.top
                name = f.string(u, *top[AT_NAME]) if AT_NAME in top else ""
                comp_dir = f.string(u, *top[AT_COMP_DIR]) if AT_COMP_DIR in top else None
                path = os.path.normpath(os.path.join(comp_dir, name)) if comp_dir else os.path.normpath(name or ".")
                producer = f.string(u, *top[AT_PRODUCER]) if AT_PRODUCER in top else None
                lang = top[AT_LANGUAGE][1] if AT_LANGUAGE in top else None
                u.info = CompileUnitInfo(name, comp_dir, path, producer, lang, u.version, off)
                cus.append(u.info)
            self._cus = cus
        return list(self._cus)

    @_guarded
    def find_cus(self, file: str) -> list[CompileUnitInfo]:
        """Units for a source path: the exact normalised path if one matches, else every unit
        whose path ends with the query's path components (more than one = ambiguous, for the
        caller to report)."""
        cus = self.compile_units()
        q = os.path.normpath(file)
        exact = [c for c in cus if c.path == q or (not os.path.isabs(q) and c.name == file)]
        if exact:
            return exact
        if os.path.isabs(q):
            return []
        parts = [p for p in q.split(os.sep) if p not in ("", ".")]
        return [c for c in cus if c.path.split(os.sep)[-len(parts):] == parts]

    def _units_for(self, cu):
        if isinstance(cu, str):
            cus = self.find_cus(cu)
        elif isinstance(cu, CompileUnitInfo):
            cus = [cu]
        else:
            cus = list(cu)
        self.compile_units()
        return [self._file.unit_at(c.offset) for c in cus]

    def _all_units(self):
        return [self._file.unit_at(c.offset) for c in self.compile_units()]

    # ---- narrowing by symbols ----------------------------------------------------------------

    def _arange_table(self):
        if self._aranges is None:
            tab = self._file.aranges()
            if not tab:  # no .debug_aranges: use each unit's own ranges
                for u in self._all_units():
                    tab.extend((lo, hi, u.offset) for lo, hi in self._file.ranges(u, u.top))
                tab.sort()
            self._aranges = (tab, [t[0] for t in tab])
        return self._aranges

    def _units_at(self, addr):
        tab, starts = self._arange_table()
        out = []
        i = bisect.bisect_right(starts, addr) - 1
        # Unit ranges do not overlap in practice; a few predecessors cover the odd exception.
        for j in range(i, max(i - 16, -1), -1):
            lo, hi, off = tab[j]
            if lo <= addr < hi and off not in out:
                out.append(off)
        self.compile_units()
        return [self._file.unit_at(o) for o in out]

    def _units_for_file_symbol(self, file_name):
        base = os.path.basename(file_name)
        return [self._file.unit_at(c.offset) for c in self.compile_units() if os.path.basename(c.name) == base]

    def _candidate_units(self, name, want_function):
        """Units that may define ``name``, from the symbol table; None when it cannot narrow.

        For variables, also whether a function-local static may be meant: gcc names
        those ``name.N`` (clang ``function.name``); a plain ``name`` is file scope."""
        symtab = self.image.symtab
        if not symtab:
            return None, True
        pat = re.compile(re.escape(name) + r"(\..*)?" + ("" if want_function else r"|[\w$]+\." + re.escape(name)))
        units = []
        found = False
        scan_locals = False
        for s in symtab:
            if s.type in ("STT_FILE", "STT_SECTION") or not s.defined or not pat.fullmatch(s.name):
                continue
            is_func = s.type in ("STT_FUNC", "STT_GNU_IFUNC")
            if is_func != want_function:
                continue
            found = True
            if want_function:
                cand = self._units_at(s.value)
            elif s.is_local and s.file:
                scan_locals = scan_locals or s.name != name
                cand = self._units_for_file_symbol(s.file)
            else:
                return None, True  # a global variable: no address->unit map for data
            for u in cand:
                if u not in units:
                    units.append(u)
        return (units if found else None), scan_locals

    # ---- per-unit top-level index -------------------------------------------------------------------

    def _top_index(self, unit):
        """name -> [_Entry] of the unit's top-level subprograms and variables (namespaces entered)."""
        if unit.index is not None:
            return unit.index
        f = self._file
        entries = []
        by_offset = {}
        stack = [f.decode(unit, unit.die_offset)]
        while stack:
            parent = stack.pop()
            for die in f.children(unit, parent):
                tag = die[1]
                if tag == TAG_SUBPROGRAM or tag == TAG_VARIABLE:
                    e = _Entry(unit, die)
                    entries.append(e)
                    by_offset[die[0]] = die[3]
                elif tag == TAG_NAMESPACE:
                    stack.append(die)
        index = {}
        for e in entries:
            self._resolve(e, by_offset)
            if e.name:
                index.setdefault(e.name, []).append(e)
            if e.linkage_name and e.linkage_name != e.name:
                index.setdefault(e.linkage_name, []).append(e)
        unit.index = index
        return index

    def _resolve(self, e, known=None):
        """Fill name/linkage_name/external/declaration from the DIE and its specification/origin chain."""
        f = self._file
        name = linkage = None
        external = declaration = False
        unit, attrs = e.unit, e.attrs
        chain = []
        dfile = f
        while attrs is not None and len(chain) < 8:
            chain.append((dfile, unit, attrs))
            if name is None and AT_NAME in attrs:
                name = dfile.string(unit, *attrs[AT_NAME])
            if linkage is None:
                for at in (AT_LINKAGE_NAME, AT_MIPS_LINKAGE_NAME):
                    if at in attrs:
                        linkage = dfile.string(unit, *attrs[at])
                        break
            if AT_EXTERNAL in attrs and attrs[AT_EXTERNAL][1]:
                external = True
            ref = attrs.get(AT_SPECIFICATION) or attrs.get(AT_ABSTRACT_ORIGIN)
            if ref is None:
                break
            form, target = ref
            if form == F_GNU_REF_ALT or form == F_REF_SUP4 or form == F_REF_SUP8:
                if f.alt is None:
                    raise DebugInfoError("%s: DWARF refers to a dwz alt file (.gnu_debugaltlink) that was not given"
                                         % f.path)
                dfile = f.alt
            if dfile is f and known is not None and target in known and f.unit_containing(target) is unit:
                attrs = known[target]
            else:
                unit = dfile.unit_containing(target)
                attrs = dfile.decode(unit, target)[3]
        declaration = bool(e.attrs.get(AT_DECLARATION, (0, 0))[1])
        e.name, e.linkage_name, e.external, e.declaration = name, linkage, external, declaration
        e.merged = chain

    # ---- functions ------------------------------------------------------------------------------------

    @_guarded
    def functions(self, name: str, cu=None) -> list[FunctionInfo]:
        """Concrete functions called ``name`` (DW_AT_name or linkage name), with every code fragment.

        ``cu``: a CompileUnitInfo, a list of them, or a source path (see find_cus)."""
        if cu is not None:
            units = self._units_for(cu)
        else:
            units = self._candidate_units(name, True)[0]
            if not units:
                units = self._all_units()
        out = self._functions_in(units, name)
        if not out and cu is None and units is not None and len(units) < len(self.compile_units()):
            out = self._functions_in(self._all_units(), name)
        return out

    def _functions_in(self, units, name):
        out = []
        for u in units:
            for e in self._top_index(u).get(name, ()):
                fi = self._function_info(e)
                if fi is not None:
                    out.append(fi)
        return out

    def _function_info(self, e):
        if e.tag != TAG_SUBPROGRAM or e.declaration:
            return None
        f, u, attrs = self._file, e.unit, e.attrs
        ranges = f.ranges(u, attrs)
        if not ranges:
            return None
        if AT_ENTRY_PC in attrs:
            form, v = attrs[AT_ENTRY_PC]
            entry = f.address(u, form, v) if form == F_ADDR or form in _ADDRX_FORMS else ranges[0][0] + v
        elif AT_LOW_PC in attrs:
            entry = f.address(u, *attrs[AT_LOW_PC])
        else:
            entry = self._first_range_entry(u, attrs, ranges)
        decl_file, decl_line = self._decl(e)
        return FunctionInfo(e.name, self._cu_info(u), entry, ranges, e.external, decl_file, decl_line, e.offset,
                            e.linkage_name, AT_ABSTRACT_ORIGIN in attrs)

    def _first_range_entry(self, u, attrs, ranges):
        # DW_AT_ranges lists the main part first (gcc); prefer a symbol at one of the range starts.
        r = attrs[AT_RANGES]
        raw = self._file._range_list(u, *r)
        starts = {lo for lo, _ in raw}
        by_addr = self._func_symbol_addrs()
        for lo in sorted(starts):
            names = by_addr.get(lo, ())
            if any(not n.endswith(".cold") and ".cold." not in n for n in names):
                return lo
        return ranges[0][0]

    def _func_symbol_addrs(self):
        if not hasattr(self, "_fsa"):
            d = {}
            for s in self.image.symtab:
                if s.type == "STT_FUNC" and s.defined:
                    d.setdefault(s.value, []).append(s.name)
            self._fsa = d
        return self._fsa

    @_guarded
    def function_at(self, addr: int) -> FunctionInfo | None:
        """The concrete function whose code (any fragment) contains ``addr``."""
        for u in self._units_at(addr) or self._all_units():
            for entries in self._top_index(u).values():
                for e in entries:
                    if e.tag != TAG_SUBPROGRAM or e.declaration:
                        continue
                    if any(lo <= addr < hi for lo, hi in self._file.ranges(u, e.attrs)):
                        return self._function_info(e)
        return None

    # ---- variables ----------------------------------------------------------------------------------

    @_guarded
    def variables(self, name: str, cu=None, function: str | None = None) -> list[VariableInfo]:
        """Variables called ``name`` with a static (DW_OP_addr) location.

        ``function``: only the local statics of that function (through lexical blocks);
        without it, file-scope variables and every function's local statics."""
        scan_locals = True
        if cu is not None:
            units = self._units_for(cu)
        elif function is not None:
            units = self._candidate_units(function, True)[0] or self._all_units()
        else:
            units, scan_locals = self._candidate_units(name, False)
            if not units:
                units, scan_locals = self._all_units(), True
        out = self._variables_in(units, name, function, scan_locals)
        if not out and cu is None and (len(units) < len(self.compile_units()) or not scan_locals):
            out = self._variables_in(self._all_units(), name, function, True)
        return out

    def _variables_in(self, units, name, function, scan_locals=True):
        out, seen = [], set()

        def add(vi):
            key = (vi.address, vi.name, vi.function)
            if key not in seen:
                seen.add(key)
                out.append(vi)

        for u in units:
            index = self._top_index(u)
            if function is None:
                for e in index.get(name, ()):
                    if e.tag == TAG_VARIABLE:
                        vi = self._variable_info(e, None)
                        if vi is not None:
                            add(vi)
                funcs = [e for es in index.values() for e in es if e.tag == TAG_SUBPROGRAM] if scan_locals else []
            else:
                funcs = [e for e in index.get(function, ()) if e.tag == TAG_SUBPROGRAM]
            done = set()
            for fe in funcs:
                if fe.offset in done:
                    continue
                done.add(fe.offset)
                for ve in self._locals(fe):
                    if ve.name == name or ve.linkage_name == name:
                        vi = self._variable_info(ve, ve.function)
                        if vi is not None:
                            add(vi)
        return out

    def _locals(self, fe):
        """Variable entries anywhere below subprogram entry ``fe`` (cached per subprogram)."""
        got = self._scanned_subtrees.get(fe.offset)
        if got is not None:
            return got
        f, u = self._file, fe.unit
        out = []
        die = fe.die
        # Walk the subtree; each frame carries the enclosing function's name.
        stack = [(die, fe.name)]
        while stack:
            parent, fname = stack.pop()
            for child in f.children(u, parent):
                tag = child[1]
                if tag == TAG_VARIABLE:
                    e = _Entry(u, child)
                    if AT_LOCATION in child[3]:
                        self._resolve(e)
                        e.function = fname
                        out.append(e)
                elif child[2]:
                    inner = fname
                    if tag in (TAG_SUBPROGRAM, TAG_INLINED_SUBROUTINE):
                        ie = _Entry(u, child)
                        self._resolve(ie)
                        inner = ie.name or fname
                    stack.append((child, inner))
        self._scanned_subtrees[fe.offset] = out
        return out

    def _variable_info(self, e, function):
        attrs = e.attrs
        loc = attrs.get(AT_LOCATION)
        if loc is None:
            return None
        addr = self._file.location_address(e.unit, *loc)
        if addr is None:
            return None
        decl_file, decl_line = self._decl(e)
        return VariableInfo(e.name, self._cu_info(e.unit), addr, e.external, function, decl_file, decl_line,
                            e.offset, e.linkage_name)

    # ---- decl_file / line ------------------------------------------------------------------------------

    def _decl(self, e):
        """(decl_file path, decl_line) from the DIE or the nearest of its origins that has them."""
        decl_file = decl_line = None
        for dfile, unit, attrs in e.merged:
            if decl_line is None and AT_DECL_LINE in attrs:
                decl_line = attrs[AT_DECL_LINE][1]
            if decl_file is None and AT_DECL_FILE in attrs:
                decl_file = self._file_name(dfile, unit, attrs[AT_DECL_FILE][1])
        return decl_file, decl_line

    def _file_name(self, dfile, unit, idx):
        key = (id(dfile), unit.offset)
        names = self._lines.get(key)
        if names is None:
            names = self._lines[key] = self._line_files(dfile, unit)
        if unit.version >= 5:
            return names[idx] if 0 <= idx < len(names) else None
        return names[idx - 1] if 1 <= idx <= len(names) else None

    def _line_files(self, dfile, unit):
        """File names of the unit's line-program header, normalised like unit paths."""
        di = self._pyelf_dwarf(dfile)
        cu = di.get_CU_at(unit.offset)
        lp = di.line_program_for_CU(cu)
        if lp is None:
            return []
        comp_dir = dfile.string(unit, *unit.top[AT_COMP_DIR]) if AT_COMP_DIR in unit.top else ""
        dirs = [d.decode() if isinstance(d, bytes) else d for d in lp.header.include_directory]
        out = []
        for fe in lp.header.file_entry:
            n = fe.name.decode() if isinstance(fe.name, bytes) else fe.name
            di_ = fe.dir_index
            if unit.version >= 5:
                base = dirs[di_] if di_ < len(dirs) else ""
            else:
                base = comp_dir if di_ == 0 else (dirs[di_ - 1] if di_ - 1 < len(dirs) else "")
            out.append(os.path.normpath(os.path.join(comp_dir or "", base or "", n)))
        return out

    def _pyelf_dwarf(self, dfile):
        di = self._pyelf.get(id(dfile))
        if di is None:
            di = self._pyelf[id(dfile)] = dfile.image.elffile.get_dwarf_info(relocate_dwarf_sections=False,
                                                                              follow_links=False)
            # References into a dwz common file (DW_FORM_GNU_ref_alt, strp_alt) resolve through it.
            alt = getattr(self._file, "alt", None)
            if alt is not None and dfile is not alt:
                di.supplementary_dwarfinfo = self._pyelf_dwarf(alt)
        return di

    def _cu_info(self, unit):
        if unit.info is None:
            self.compile_units()
        return unit.info

    # ---- raw DIE access -----------------------------------------------------------------------------

    @_guarded
    def die(self, offset: int, alt: bool = False):
        """The pyelftools DIE at ``offset`` of .debug_info (of the alt file with ``alt=True``)."""
        dfile = self._file.alt if alt else self._file
        if dfile is None:
            raise DebugInfoError("%s: no dwz alt file given" % self.image.path)
        return self._pyelf_dwarf(dfile).get_DIE_from_refaddr(offset)
