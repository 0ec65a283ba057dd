"""Decoder of DWARF (2 to 5) debug sections: unit headers, abbreviations, DIE attributes.

A hand-written decoder because it is an order of magnitude faster than building
pyelftools DIE objects.  :class:`DwarfFile` holds the raw debug sections of one
ELF file; a DIE is decoded on demand into a plain tuple

    (offset, tag, has_children, {attribute: (form, raw value)}, next offset)

with references made absolute (.debug_info offsets; GNU_ref_alt into the alt
file).  Attribute values are interpreted by :meth:`DwarfFile.string`,
:meth:`DwarfFile.address`, :meth:`DwarfFile.location_address` and
:meth:`DwarfFile.ranges`; :meth:`DwarfFile.aranges` reads ``.debug_aranges``.
Malformed input raises DebugInfoError or, deep inside, IndexError/ValueError/
struct.error, which the index's public entry points turn into DebugInfoError.
"""

from __future__ import annotations

import bisect
import struct

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

# Forms.
F_ADDR, F_BLOCK2, F_BLOCK4, F_DATA2 = 0x01, 0x03, 0x04, 0x05
F_DATA4, F_DATA8, F_STRING, F_BLOCK = 0x06, 0x07, 0x08, 0x09
F_BLOCK1, F_DATA1, F_FLAG, F_SDATA, F_STRP, F_UDATA, F_REF_ADDR = 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F, 0x10
F_REF1, F_REF2, F_REF4, F_REF8, F_REF_UDATA, F_INDIRECT = 0x11, 0x12, 0x13, 0x14, 0x15, 0x16
F_SEC_OFFSET, F_EXPRLOC, F_FLAG_PRESENT, F_STRX, F_ADDRX, F_REF_SUP4 = 0x17, 0x18, 0x19, 0x1A, 0x1B, 0x1C
F_STRP_SUP, F_DATA16, F_LINE_STRP, F_REF_SIG8, F_IMPLICIT_CONST = 0x1D, 0x1E, 0x1F, 0x20, 0x21
F_LOCLISTX, F_RNGLISTX, F_REF_SUP8 = 0x22, 0x23, 0x24
F_STRX1, F_STRX2, F_STRX3, F_STRX4, F_ADDRX1, F_ADDRX2, F_ADDRX3, F_ADDRX4 = range(0x25, 0x2D)
F_GNU_ADDR_INDEX, F_GNU_STR_INDEX, F_GNU_REF_ALT, F_GNU_STRP_ALT = 0x1F01, 0x1F02, 0x1F20, 0x1F21
ADDRX_FORMS = (F_ADDRX, F_ADDRX1, F_ADDRX2, F_ADDRX3, F_ADDRX4, F_GNU_ADDR_INDEX)
STRX_FORMS = (F_STRX, F_STRX1, F_STRX2, F_STRX3, F_STRX4, F_GNU_STR_INDEX)
UNIT_REF_FORMS = (F_REF1, F_REF2, F_REF4, F_REF8, F_REF_UDATA)

DW_OP_addr, DW_OP_addrx, DW_OP_GNU_addr_index = 0x03, 0xA1, 0xFB
UT_COMPILE, UT_TYPE, UT_PARTIAL, UT_SKELETON, UT_SPLIT_COMPILE, UT_SPLIT_TYPE = 1, 2, 3, 4, 5, 6

DEBUG_SECTIONS = (".debug_info", ".debug_abbrev", ".debug_str", ".debug_line_str", ".debug_str_offsets",
                  ".debug_addr", ".debug_ranges", ".debug_rnglists", ".debug_aranges")


# ---- raw decoding -----------------------------------------------------------------------


def uleb(d, p):
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


def sleb(d, p):
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


def cstr(d, off):
    end = d.index(b"\0", off)
    return d[off:end].decode("utf-8", "replace")


class Unit:
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


class DwarfFile:
    """Raw debug sections of one ELF file and its units (headers read on demand)."""

    def __init__(self, image: ElfImage, alt: "DwarfFile | None" = None):
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
                secs[name] = image.section_bytes(s)
        self.info = secs[".debug_info"]
        self.abbrev_sec = secs[".debug_abbrev"]
        self.str = secs[".debug_str"]
        self.line_str = secs[".debug_line_str"]
        self.str_offsets = secs[".debug_str_offsets"]
        self.addr_sec = secs[".debug_addr"]
        self.ranges_sec = secs[".debug_ranges"]
        self.rnglists_sec = secs[".debug_rnglists"]
        self.aranges_sec = secs[".debug_aranges"]
        self._abbrevs: dict = {}
        self._unit_offsets = None
        self._units: dict = {}

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

    def unit_at(self, offset) -> Unit:
        u = self._units.get(offset)
        if u is None:
            u = self._units[offset] = Unit(self, offset)
        return u

    def unit_containing(self, die_offset) -> Unit:
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
            code, p = uleb(d, p)
            if code == 0:
                break
            tag, p = uleb(d, p)
            children = d[p]
            p += 1
            specs = []
            while True:
                at, p = uleb(d, p)
                form, p = uleb(d, p)
                ic = None
                if form == F_IMPLICIT_CONST:
                    ic, p = sleb(d, p)
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
        code, p = uleb(d, off)
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
                form, p = uleb(d, p)
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
                n, p = uleb(d, p)
                v = d[p:p + n]
                p += n
            elif form == F_UDATA or form == F_REF_UDATA or form == F_STRX or form == F_ADDRX \
                    or form == F_LOCLISTX or form == F_RNGLISTX or form == F_GNU_ADDR_INDEX or form == F_GNU_STR_INDEX:
                v, p = uleb(d, p)
            elif form == F_SDATA:
                v, p = sleb(d, p)
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
            if form in UNIT_REF_FORMS:
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
        if sib is not None and sib[0] in UNIT_REF_FORMS and sib[1] > off:
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
                if sib is not None and sib[0] in UNIT_REF_FORMS and sib[1] > p:
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
            return cstr(self.str, v)
        if form == F_LINE_STRP:
            return cstr(self.line_str, v)
        if form in STRX_FORMS:
            osz = unit.off_size
            o = unit.str_offsets_base + v * osz
            return cstr(self.str, int.from_bytes(self.str_offsets[o:o + osz], "little"))
        if form in (F_GNU_STRP_ALT, F_STRP_SUP):
            if self.alt is None:
                raise DebugInfoError("%s: DWARF refers to a dwz alt file (.gnu_debugaltlink) that was not given"
                                     % self.path)
            return cstr(self.alt.str, v)
        return None

    def address(self, unit, form, v):
        if form in ADDRX_FORMS:
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
            idx, p = uleb(v, 1)
            if p == len(v):
                return self.address(unit, F_ADDRX, idx)
        return None

    def ranges(self, unit, attrs):
        """[(lo, hi)] of a DIE from low_pc/high_pc or DW_AT_ranges ([] when it has no code)."""
        r = attrs.get(AT_RANGES)
        if r is not None:
            return self.range_list(unit, *r)
        lo = attrs.get(AT_LOW_PC)
        hi = attrs.get(AT_HIGH_PC)
        if lo is None or hi is None:
            return []
        lo = self.address(unit, *lo)
        form, hv = hi
        hi = self.address(unit, form, hv) if form == F_ADDR or form in ADDRX_FORMS else lo + hv
        return [(lo, hi)] if hi > lo else []

    def range_list(self, unit, form, v):
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
                i, p = uleb(d, p)
                base = addr(i)
            elif kind == 2:  # startx_endx
                i, p = uleb(d, p)
                j, p = uleb(d, p)
                out.append((addr(i), addr(j)))
            elif kind == 3:  # startx_length
                i, p = uleb(d, p)
                n, p = uleb(d, p)
                out.append((addr(i), addr(i) + n))
            elif kind == 4:  # offset_pair
                a, p = uleb(d, p)
                b, p = uleb(d, p)
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
                n, p = uleb(d, p + asz)
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
