"""Read-only model of an x86_64 ELF64 little-endian file.

``ElfImage(path)`` keeps the file's bytes and exposes what the rest of
gdb-nsb needs (segments, sections, symbols with versions, dynamic
relocations, dynamic tags, build-id, debug links).  Everything beyond the
ELF header is parsed lazily on first access and cached, so opening a large
file is cheap.  Any parse failure becomes a one-line :class:`ElfError`.

Addresses are link-time addresses (``st_value``; for ``ET_DYN`` an offset
from the load bias).
"""

from __future__ import annotations

import functools
import io
import struct
from dataclasses import dataclass
from functools import cached_property

from elftools.common.exceptions import ELFError as _PyElfError
from elftools.common.exceptions import ELFParseError as _PyElfParseError
from elftools.construct.core import ConstructError as _ConstructError
from elftools.elf.descriptions import describe_e_machine
from elftools.elf.elffile import ELFFile
from elftools.elf.enums import ENUM_E_MACHINE, ENUM_RELOC_TYPE_x64

from gdb_nsb.elf.notes import gnu_build_id
from gdb_nsb.errors import ElfError

PAGE_SIZE = 0x1000

# Segment flags.
PF_X, PF_W, PF_R = 1, 2, 4
# Section types/flags we test for.
SHT_NOBITS = 8
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 1, 2, 4
# Special section indices.
SHN_UNDEF, SHN_ABS, SHN_COMMON = 0, 0xFFF1, 0xFFF2

PT_LOAD, PT_DYNAMIC, PT_INTERP, PT_NOTE = 1, 2, 3, 4

DT_NULL, DT_NEEDED, DT_PLTRELSZ, DT_STRTAB, DT_SYMTAB = 0, 1, 2, 5, 6
DT_RELA, DT_RELASZ, DT_RELAENT, DT_STRSZ, DT_SONAME = 7, 8, 9, 10, 14
DT_JMPREL, DT_FLAGS, DT_RELRSZ, DT_RELR = 23, 30, 35, 36
DT_FLAGS_1 = 0x6FFFFFFB
DF_1_PIE = 0x08000000

_STT = {0: "STT_NOTYPE", 1: "STT_OBJECT", 2: "STT_FUNC", 3: "STT_SECTION", 4: "STT_FILE",
        5: "STT_COMMON", 6: "STT_TLS", 10: "STT_GNU_IFUNC"}
_STB = {0: "STB_LOCAL", 1: "STB_GLOBAL", 2: "STB_WEAK", 10: "STB_GNU_UNIQUE"}
_STV = {0: "STV_DEFAULT", 1: "STV_INTERNAL", 2: "STV_HIDDEN", 3: "STV_PROTECTED"}
_RELOC_NAMES = {v: k for k, v in ENUM_RELOC_TYPE_x64.items() if not k.startswith("_")}
R_X86_64_RELATIVE = ENUM_RELOC_TYPE_x64["R_X86_64_RELATIVE"]

_SYM = struct.Struct("<IBBHQQ")
_RELA = struct.Struct("<QQq")
_DYN = struct.Struct("<qQ")

# pyelftools and struct raise these on malformed input.
_PARSE_ERRORS = (_PyElfError, _PyElfParseError, _ConstructError, struct.error, ValueError,
                 IndexError, KeyError, UnicodeDecodeError, AssertionError, TypeError, OverflowError)


@dataclass(frozen=True)
class Segment:
    """One PT_LOAD program header."""

    vaddr: int
    memsz: int
    offset: int
    filesz: int
    flags: int  # PF_R | PF_W | PF_X
    align: int = PAGE_SIZE

    @property
    def end(self) -> int:
        return self.vaddr + self.memsz


@dataclass(frozen=True)
class Section:
    """One section header."""

    index: int
    name: str
    type: str  # pyelftools name, e.g. 'SHT_PROGBITS'
    flags: int
    addr: int
    offset: int
    size: int
    entsize: int = 0
    link: int = 0
    info: int = 0


@dataclass
class Symbol:
    """A symbol of .symtab or .dynsym."""

    index: int
    name: str
    value: int
    size: int
    type: str  # 'STT_FUNC', 'STT_OBJECT', ...
    bind: str  # 'STB_LOCAL', 'STB_GLOBAL', 'STB_WEAK', ...
    visibility: str  # 'STV_DEFAULT', 'STV_HIDDEN', ...
    shndx: int
    version: str | None = None  # symbol version name (dynsym only)
    version_hidden: bool = False  # True for 'name@VER', False for default 'name@@VER'
    file: str | None = None  # for local .symtab symbols: the preceding STT_FILE name

    @property
    def defined(self) -> bool:
        return self.shndx != SHN_UNDEF

    @property
    def is_local(self) -> bool:
        return self.bind == "STB_LOCAL"


@dataclass(frozen=True)
class Relocation:
    """A dynamic relocation (RELA or RELR)."""

    offset: int
    type: int
    type_name: str
    sym_index: int
    addend: int
    section: str  # '.rela.dyn', '.rela.plt', '.relr.dyn'
    symbol: str | None = None  # dynsym name, None for sym_index 0


def _guarded(fn):
    """Turn parser exceptions inside ``fn`` into a one-line ElfError."""

    @functools.wraps(fn)
    def wrapper(self, *a, **kw):
        try:
            return fn(self, *a, **kw)
        except ElfError:
            raise
        except _PARSE_ERRORS as e:
            raise ElfError("%s: corrupt ELF file (%s: %s)" % (self.path, fn.__name__, e)) from e

    return wrapper


def _guarded_property(fn):
    return cached_property(_guarded(fn))


def _cstr(data: bytes, off: int) -> str:
    end = data.index(b"\0", off)
    return data[off:end].decode("utf-8", "replace")


class ElfImage:
    """An x86_64 ELF64 little-endian file, read once into memory."""

    def __init__(self, path: str, allow_relocatable: bool = False):
        """``allow_relocatable`` admits ET_REL files: a dwz common debug file is one."""
        self.path = str(path)
        try:
            with open(self.path, "rb") as f:
                # The header first: a mapped data file (a database, a locale archive) is refused
                # without reading it whole.
                self.data = f.read(64)
                self._check_ident()
                self.data += f.read()
        except OSError as e:
            raise ElfError("%s: cannot read: %s" % (self.path, e.strerror or e)) from e
        try:
            self.elffile = ELFFile(io.BytesIO(self.data))
            hdr = self.elffile.header
            self.elf_type = hdr["e_type"]
            self._phoff, self._phnum = hdr["e_phoff"], hdr["e_phnum"]
            self._shoff, self._shnum = hdr["e_shoff"], hdr["e_shnum"]
        except _PARSE_ERRORS as e:
            raise ElfError("%s: corrupt ELF header (%s)" % (self.path, e)) from e
        if self.elf_type not in ("ET_EXEC", "ET_DYN") and not (allow_relocatable and self.elf_type == "ET_REL"):
            raise ElfError("%s: unsupported ELF type %s (need an executable or shared object)"
                           % (self.path, self.elf_type))
        if self._phoff + self._phnum * 56 > len(self.data):
            raise ElfError("%s: truncated ELF file (program headers past end of file)" % self.path)
        if self._shnum and self._shoff + self._shnum * 64 > len(self.data):
            raise ElfError("%s: truncated ELF file (section headers past end of file)" % self.path)

    def _check_ident(self):
        d, p = self.data, self.path
        if len(d) < 4 or d[:4] != b"\x7fELF":
            raise ElfError("%s: not an ELF file" % p)
        if len(d) < 64:
            raise ElfError("%s: truncated ELF header (%d bytes)" % (p, len(d)))
        if d[4] == 1:
            raise ElfError("%s: 32-bit ELF (only x86_64 ELF64 is supported)" % p)
        if d[4] != 2:
            raise ElfError("%s: corrupt ELF header (bad EI_CLASS %d)" % (p, d[4]))
        if d[5] == 2:
            raise ElfError("%s: big-endian ELF (only x86_64 little-endian is supported)" % p)
        if d[5] != 1:
            raise ElfError("%s: corrupt ELF header (bad EI_DATA %d)" % (p, d[5]))
        machine = struct.unpack_from("<H", d, 18)[0]
        if machine != ENUM_E_MACHINE["EM_X86_64"]:
            name = next((k for k, v in ENUM_E_MACHINE.items() if v == machine and k != "_default_"),
                        "machine %d" % machine)
            raise ElfError("%s: wrong machine %s (%s), need EM_X86_64"
                           % (p, name, describe_e_machine(name) if name.startswith("EM_") else "?"))

    def __repr__(self):
        return "ElfImage(%r)" % self.path

    # ---- kind of object ---------------------------------------------------

    @property
    def is_executable(self) -> bool:
        return self.elf_type == "ET_EXEC" or self.is_pie

    @cached_property
    def has_interp(self) -> bool:
        return any(t == PT_INTERP for t, *_ in self._phdrs)

    @cached_property
    def is_pie(self) -> bool:
        """ET_DYN marked DF_1_PIE, or ET_DYN with an interpreter and no soname (old linkers).

        A library with PT_INTERP and a soname (libc.so.6 runs as a program too) stays a library."""
        if self.elf_type != "ET_DYN":
            return False
        return bool(self.dt_flags_1 & DF_1_PIE) or (self.has_interp and self.soname is None)

    @property
    def is_shared_library(self) -> bool:
        return self.elf_type == "ET_DYN" and not self.is_pie

    @cached_property
    def is_static(self) -> bool:
        """No interpreter and no needed libraries (covers -static and -static-pie)."""
        return not self.has_interp and not self.needed and not self.is_shared_library

    # ---- program headers ----------------------------------------------------

    @_guarded_property
    def _phdrs(self):
        """Raw program headers: (type, flags, offset, vaddr, filesz, memsz, align)."""
        out = []
        for i in range(self._phnum):
            t, fl, off, va, _pa, fsz, msz, al = struct.unpack_from("<IIQQQQQQ", self.data, self._phoff + 56 * i)
            out.append((t, fl, off, va, fsz, msz, al))
        return out

    @cached_property
    def segments(self) -> list[Segment]:
        return [Segment(va, msz, off, fsz, fl, al or 1)
                for t, fl, off, va, fsz, msz, al in self._phdrs if t == PT_LOAD]

    def load_span(self) -> tuple[int, int]:
        """Page-aligned link-time [lo, hi) covering every PT_LOAD."""
        if not self.segments:
            raise ElfError("%s: no PT_LOAD segment" % self.path)
        lo = min(s.vaddr for s in self.segments) & ~(PAGE_SIZE - 1)
        hi = max(s.end for s in self.segments)
        return lo, (hi + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)

    def read_vaddr(self, vaddr: int, size: int) -> bytes:
        """File bytes at link-time ``vaddr``; zeros where memsz exceeds filesz (.bss)."""
        for s in self.segments:
            if s.vaddr <= vaddr and vaddr + size <= s.end:
                rel = vaddr - s.vaddr
                avail = max(0, min(size, s.filesz - rel))
                if s.offset + rel + avail > len(self.data):
                    raise ElfError("%s: truncated ELF file (segment data past end of file)" % self.path)
                return self.data[s.offset + rel:s.offset + rel + avail] + bytes(size - avail)
        raise ElfError("%s: address %#x+%d is not inside one PT_LOAD segment" % (self.path, vaddr, size))

    def vaddr_to_offset(self, vaddr: int) -> int | None:
        """File offset holding link-time ``vaddr`` (None if not file-backed)."""
        for s in self.segments:
            if s.vaddr <= vaddr < s.vaddr + s.filesz:
                return s.offset + vaddr - s.vaddr
        return None

    # ---- sections ---------------------------------------------------------------

    @_guarded_property
    def sections(self) -> list[Section]:
        out = []
        shstrndx = self.elffile.header["e_shstrndx"]
        if self._shnum and shstrndx < self._shnum:
            h = self.elffile.get_section(shstrndx).header
            if h["sh_offset"] + h["sh_size"] > len(self.data):
                raise ElfError("%s: truncated ELF file (section name table past end of file)" % self.path)
        for i, sec in enumerate(self.elffile.iter_sections()):
            h = sec.header
            out.append(Section(i, sec.name, h["sh_type"], h["sh_flags"], h["sh_addr"], h["sh_offset"],
                               h["sh_size"], h["sh_entsize"], h["sh_link"], h["sh_info"]))
        return out

    @cached_property
    def _sections_by_name(self):
        d = {}
        for s in self.sections:
            d.setdefault(s.name, s)
        return d

    def section_by_name(self, name: str) -> Section | None:
        return self._sections_by_name.get(name)

    def section_for_addr(self, addr: int) -> Section | None:
        """The allocated section containing link-time ``addr`` (.tbss, which overlaps others, last)."""
        hit = None
        for s in self.sections:
            if s.flags & SHF_ALLOC and s.addr <= addr < s.addr + s.size:
                if not s.name.startswith(".tbss"):
                    return s
                hit = s
        return hit

    def section_data(self, name: str) -> bytes | None:
        """Raw bytes of a section in the file (None if missing or SHT_NOBITS)."""
        s = self.section_by_name(name)
        if s is None or s.type == "SHT_NOBITS":
            return None
        return self.section_bytes(s)

    def section_bytes(self, s: Section) -> bytes:
        if s.offset + s.size > len(self.data):
            raise ElfError("%s: truncated ELF file (section %s past end of file)" % (self.path, s.name))
        return self.data[s.offset:s.offset + s.size]

    @property
    def has_debug_info(self) -> bool:
        s = self.section_by_name(".debug_info")
        return s is not None and s.type != "SHT_NOBITS" and s.size > 0

    # ---- notes --------------------------------------------------------------

    @_guarded_property
    def build_id(self) -> str | None:
        """Lowercase hex of the NT_GNU_BUILD_ID note (from PT_NOTE or any SHT_NOTE)."""
        ranges = [(off, fsz) for t, _fl, off, _va, fsz, _m, _a in self._phdrs if t == PT_NOTE]
        ranges += [(s.offset, s.size) for s in self.sections if s.type == "SHT_NOTE"]
        for off, size in ranges:
            bid = self._scan_notes(off, size)
            if bid is not None:
                return bid
        return None

    def _scan_notes(self, off, size):
        return gnu_build_id(self.data, off, off + size)

    @_guarded_property
    def debuglink(self) -> tuple[str, int] | None:
        """(.gnu_debuglink file name, CRC32) or None."""
        d = self.section_data(".gnu_debuglink")
        if not d:
            return None
        end = d.index(b"\0")
        crc_off = (end + 4) & ~3
        return d[:end].decode("utf-8", "replace"), struct.unpack_from("<I", d, crc_off)[0]

    @_guarded_property
    def debugaltlink(self) -> tuple[str, str] | None:
        """(.gnu_debugaltlink path, build-id hex) or None (dwz common file)."""
        d = self.section_data(".gnu_debugaltlink")
        if not d:
            return None
        end = d.index(b"\0")
        return d[:end].decode("utf-8", "replace"), d[end + 1:].hex()

    # ---- dynamic section ------------------------------------------------------

    @_guarded_property
    def dynamic(self) -> list[tuple[int, int]]:
        """(tag, value) pairs of PT_DYNAMIC up to DT_NULL ([] when absent)."""
        for t, _fl, off, _va, fsz, _m, _a in self._phdrs:
            if t == PT_DYNAMIC:
                out = []
                end = min(off + fsz, len(self.data))
                while off + 16 <= end:
                    tag, val = _DYN.unpack_from(self.data, off)
                    if tag == DT_NULL:
                        break
                    out.append((tag, val))
                    off += 16
                return out
        return []

    def _dyn_value(self, tag, default=None):
        for t, v in self.dynamic:
            if t == tag:
                return v
        return default

    @_guarded_property
    def _dynstr(self) -> bytes:
        va, size = self._dyn_value(DT_STRTAB), self._dyn_value(DT_STRSZ)
        if va is not None and size is not None:
            off = self.vaddr_to_offset(va)
            if off is not None:
                return self.data[off:off + size]
        return self.section_data(".dynstr") or b""

    @_guarded_property
    def needed(self) -> list[str]:
        return [_cstr(self._dynstr, v) for t, v in self.dynamic if t == DT_NEEDED]

    @_guarded_property
    def soname(self) -> str | None:
        v = self._dyn_value(DT_SONAME)
        return None if v is None else _cstr(self._dynstr, v)

    @property
    def dt_flags(self) -> int:
        return self._dyn_value(DT_FLAGS, 0)

    @property
    def dt_flags_1(self) -> int:
        return self._dyn_value(DT_FLAGS_1, 0)

    # ---- symbols ---------------------------------------------------------------

    def _read_symbols(self, sec: Section, strtab: bytes, track_files: bool) -> list[Symbol]:
        data = self.section_bytes(sec)
        out = []
        cur_file = None
        for i, (nm, info, other, shndx, value, size) in enumerate(_SYM.iter_unpack(data[:len(data) // 24 * 24])):
            name = _cstr(strtab, nm) if nm else ""
            typ, bind = info & 0xF, info >> 4
            sym = Symbol(i, name, value, size, _STT.get(typ, "STT_%d" % typ), _STB.get(bind, "STB_%d" % bind),
                         _STV[other & 3], shndx)
            if track_files:
                if typ == 4:
                    cur_file = name
                elif bind == 0 and i:
                    sym.file = cur_file
            out.append(sym)
        return out

    @_guarded_property
    def symtab(self) -> list[Symbol]:
        """.symtab symbols ([] when stripped); locals carry .file."""
        sec = self.section_by_name(".symtab")
        if sec is None or sec.type == "SHT_NOBITS":
            return []
        strtab = self.section_bytes(self.sections[sec.link])
        return self._read_symbols(sec, strtab, True)

    @_guarded_property
    def dynsyms(self) -> list[Symbol]:
        """.dynsym symbols with their GNU symbol versions."""
        sec = self.section_by_name(".dynsym")
        if sec is None or sec.type == "SHT_NOBITS":
            return []
        syms = self._read_symbols(sec, self.section_bytes(self.sections[sec.link]), False)
        versym = self.section_data(".gnu.version")
        if versym:
            names = self._version_index_names
            for sym, (v,) in zip(syms, struct.iter_unpack("<H", versym[:len(versym) // 2 * 2])):
                idx = v & 0x7FFF
                if idx >= 2:  # 0 local, 1 global (unversioned)
                    sym.version = names.get(idx)
                    sym.version_hidden = bool(v & 0x8000)
        return syms

    @cached_property
    def _version_index_names(self) -> dict[int, str]:
        """Version index -> name, from .gnu.version_d and .gnu.version_r."""
        names = {}
        for sec in self.elffile.iter_sections():
            if sec.header["sh_type"] == "SHT_GNU_verdef":
                for ver, auxs in sec.iter_versions():
                    aux = next(iter(auxs), None)
                    if aux is not None and not ver["vd_flags"] & 1:  # skip VER_FLG_BASE
                        names[ver["vd_ndx"]] = aux.name
            elif sec.header["sh_type"] == "SHT_GNU_verneed":
                for _ver, auxs in sec.iter_versions():
                    for aux in auxs:
                        names[aux["vna_other"]] = aux.name
        return names

    @_guarded_property
    def version_needs(self) -> dict[str, list[str]]:
        """.gnu.version_r: needed file -> version names it must provide."""
        out = {}
        for sec in self.elffile.iter_sections():
            if sec.header["sh_type"] == "SHT_GNU_verneed":
                for ver, auxs in sec.iter_versions():
                    out.setdefault(ver.name, []).extend(a.name for a in auxs)
        return out

    @cached_property
    def _symbols_by_name(self):
        d = {}
        for s in self.symtab:
            if s.name and s.type not in ("STT_FILE", "STT_SECTION"):
                d.setdefault(s.name, []).append(s)
        dyn = {}
        for s in self.dynsyms:
            if s.name:
                dyn.setdefault(s.name, []).append(s)
        return d, dyn

    def symbols_named(self, name: str) -> list[Symbol]:
        """Symbols called ``name``: from .symtab, then (if none) from .dynsym."""
        d, dyn = self._symbols_by_name
        return list(d.get(name) or dyn.get(name) or [])

    # ---- dynamic relocations ------------------------------------------------------

    @_guarded_property
    def relocations(self) -> list[Relocation]:
        """Dynamic relocations: DT_RELA (.rela.dyn), DT_JMPREL (.rela.plt), DT_RELR."""
        tables = []
        rela, relasz = self._dyn_value(DT_RELA), self._dyn_value(DT_RELASZ, 0)
        jmprel, pltsz = self._dyn_value(DT_JMPREL), self._dyn_value(DT_PLTRELSZ, 0)
        if rela is not None or jmprel is not None:
            if rela is not None and jmprel is not None and rela <= jmprel < rela + relasz:
                relasz = jmprel - rela  # some linkers make DT_RELASZ cover .rela.plt too
            if rela is not None and relasz:
                tables.append((rela, relasz))
            if jmprel is not None and pltsz:
                tables.append((jmprel, pltsz))
            spans = []
            for va, size in tables:
                off = self.vaddr_to_offset(va)
                if off is None:
                    raise ElfError("%s: dynamic relocation table at %#x is not in the file" % (self.path, va))
                spans.append((off, size, self._section_name_at_offset(off)))
        else:
            spans = [(s.offset, s.size, s.name) for s in self.sections
                     if s.type == "SHT_RELA" and s.flags & SHF_ALLOC]
        dynsyms = self.dynsyms
        out = []
        for off, size, secname in spans:
            if off + size > len(self.data):
                raise ElfError("%s: truncated ELF file (relocations past end of file)" % self.path)
            for r_off, info, addend in _RELA.iter_unpack(self.data[off:off + size // 24 * 24]):
                typ, si = info & 0xFFFFFFFF, info >> 32
                name = dynsyms[si].name if 0 < si < len(dynsyms) else None
                out.append(Relocation(r_off, typ, _RELOC_NAMES.get(typ, "R_X86_64_%d" % typ), si, addend,
                                      secname, name))
        out.extend(self._relr_relocations())
        return out

    def _section_name_at_offset(self, off):
        for s in self.sections:
            if s.offset <= off < s.offset + s.size and s.type != "SHT_NOBITS":
                return s.name
        return ""

    def _relr_relocations(self):
        va, size = self._dyn_value(DT_RELR), self._dyn_value(DT_RELRSZ, 0)
        if va is None or not size:
            return []
        off = self.vaddr_to_offset(va)
        if off is None:
            raise ElfError("%s: DT_RELR table at %#x is not in the file" % (self.path, va))
        secname = self._section_name_at_offset(off) or ".relr.dyn"
        where = []
        base = 0
        for (entry,) in struct.iter_unpack("<Q", self.data[off:off + size // 8 * 8]):
            if not entry & 1:
                where.append(entry)
                base = entry + 8
            else:
                bits, a = entry >> 1, base
                while bits:
                    if bits & 1:
                        where.append(a)
                    bits >>= 1
                    a += 8
                base += 63 * 8
        return [Relocation(w, R_X86_64_RELATIVE, "R_X86_64_RELATIVE", 0,
                           struct.unpack("<q", self.read_vaddr(w, 8))[0], secname, None) for w in where]


__all__ = ["ElfImage", "Segment", "Section", "Symbol", "Relocation", "PF_R", "PF_W", "PF_X", "PAGE_SIZE",
           "SHN_UNDEF", "SHN_ABS", "SHN_COMMON"]
