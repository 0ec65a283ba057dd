"""Read-only model of an x86_64 ELF64 little-endian file.

``ElfImage(path)`` exposes what the rest of gdb-nsb needs (segments,
sections, symbols with versions, dynamic relocations, dynamic tags, build-id,
debug links).  Opening reads the 64-byte file header only; every table is read
and parsed on first access and cached, reading just its own bytes, so a
multi-GiB file costs nothing until its contents are asked for.  The whole file
(``data``) is read only for pyelftools (symbol versions, DWARF).  Any parse
failure becomes a one-line :class:`ElfError`.  The fixed header layouts are
decoded by :mod:`gdb_nsb.elf.headers`.

Addresses are link-time addresses (``st_value``; for ``ET_DYN`` an offset
from the load bias).
"""

from __future__ import annotations

import functools
import io
import os
import struct
import sys
import weakref
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from gdb_nsb.elf import headers, versions
from gdb_nsb.elf.names import RELOCATION_TYPES
from gdb_nsb.elf.headers import PAGE_SIZE, Section, Segment
from gdb_nsb.elf.notes import gnu_build_id
from gdb_nsb.errors import ElfError

if TYPE_CHECKING:
    from elftools.elf.elffile import ELFFile

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
_RELOC_NAMES = RELOCATION_TYPES
R_X86_64_RELATIVE = 8

_SYM = struct.Struct("<IBBHQQ")
_RELA = struct.Struct("<QQq")
_DYN = struct.Struct("<qQ")

# struct and our decoders raise these on malformed input; pyelftools' own (below) once it is imported.
_BASE_PARSE_ERRORS = (struct.error, ValueError, IndexError, KeyError, UnicodeDecodeError, AssertionError,
                      TypeError, OverflowError)


def _parse_errors():
    """The exceptions that mean a malformed file.  pyelftools is imported only where its parser runs
    (``elffile``: DWARF, the generator); until then none of its exceptions can be raised."""
    if "elftools" not in sys.modules:
        return _BASE_PARSE_ERRORS
    from elftools.common.exceptions import ELFError, ELFParseError
    from elftools.construct.core import ConstructError
    return _BASE_PARSE_ERRORS + (ELFError, ELFParseError, ConstructError)


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
        except _parse_errors() as e:
            raise ElfError("%s: corrupt ELF file (%s: %s)" % (self.path, fn.__name__, e)) from e

    return wrapper


def _guarded_property(fn):
    return cached_property(_guarded(fn))


def _cstr(data: bytes, off: int) -> str:
    end = data.index(b"\0", off)
    return data[off:end].decode("utf-8", "replace")


class ElfImage:
    """An x86_64 ELF64 little-endian file, read a table at a time as it is asked for."""

    def __init__(self, path: str, allow_relocatable: bool = False):
        """``allow_relocatable`` admits ET_REL files: a dwz common debug file is one."""
        self.path = str(path)
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise ElfError("%s: cannot read: %s" % (self.path, e.strerror or e)) from e
        # The descriptor keeps the very file opened here (a file replaced on disk later is
        # another file); it is closed once ``data`` holds the whole file, or with the image.
        self._fd = fd
        self._close = weakref.finalize(self, os.close, fd)
        try:
            self.size = os.fstat(fd).st_size
            head = os.pread(fd, 64, 0)
        except OSError as e:
            self._close()
            raise ElfError("%s: cannot read: %s" % (self.path, e.strerror or e)) from e
        # The header first: a mapped data file (a database, a locale archive) is refused
        # without reading it whole.
        self.header = h = headers.parse_file_header(head, self.path)
        headers.require_x86_64(h, self.path)
        self.elf_type = h.type_name
        if self.elf_type not in ("ET_EXEC", "ET_DYN") and not (allow_relocatable and self.elf_type == "ET_REL"):
            raise ElfError("%s: unsupported ELF type %s (need an executable or shared object)"
                           % (self.path, self.elf_type))
        if h.phoff + h.phnum * headers.PHDR.size > self.size:
            raise ElfError("%s: truncated ELF file (program headers past end of file)" % self.path)
        if h.shoff and h.shnum and h.shoff + h.shnum * headers.SHDR.size > self.size:
            raise ElfError("%s: truncated ELF file (section header table past end of file)" % self.path)

    def _read(self, off: int, size: int) -> bytes:
        """``size`` bytes at file offset ``off`` (from ``data`` once it is read)."""
        if size == 0:
            return b""
        if off < 0 or size < 0 or off + size > self.size:
            raise ElfError("%s: truncated ELF file (%d bytes at %#x past end of file)" % (self.path, size, off))
        data = self.__dict__.get("data")
        if data is not None:
            return data[off:off + size]
        parts = []
        while size > 0:
            try:
                chunk = os.pread(self._fd, min(size, 1 << 30), off)
            except OSError as e:
                raise ElfError("%s: cannot read: %s" % (self.path, e.strerror or e)) from e
            if not chunk:
                raise ElfError("%s: truncated ELF file (it shrank while open)" % self.path)
            parts.append(chunk)
            off += len(chunk)
            size -= len(chunk)
        return b"".join(parts)

    @cached_property
    def data(self) -> bytes:
        """The whole file (read on first use)."""
        data = self._read(0, self.size)
        self.__dict__["data"] = data
        self._close()
        return data

    @_guarded_property
    def elffile(self) -> ELFFile:
        """pyelftools' view of the file (reads it whole; imported here, off the hot path)."""
        from elftools.elf.elffile import ELFFile
        return ELFFile(io.BytesIO(self.data))

    def __repr__(self):
        return "ElfImage(%r)" % self.path

    # ---- kind of object ---------------------------------------------------

    @property
    def is_executable(self) -> bool:
        return self.elf_type == "ET_EXEC" or self.is_pie

    @cached_property
    def has_interp(self) -> bool:
        return any(p.type == PT_INTERP for p in self.program_headers)

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
    def program_headers(self) -> list[headers.ProgramHeader]:
        """Every program header, whatever its type."""
        h = self.header
        return headers.program_headers(self._read(h.phoff, h.phnum * headers.PHDR.size), h.phnum)

    @cached_property
    def segments(self) -> list[Segment]:
        return [Segment(p.vaddr, p.memsz, p.offset, p.filesz, p.flags, p.align or 1)
                for p in self.program_headers if p.type == PT_LOAD]

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
                if s.offset + rel + avail > self.size:
                    raise ElfError("%s: truncated ELF file (segment data past end of file)" % self.path)
                return self._read(s.offset + rel, avail) + bytes(size - avail)
        raise ElfError("%s: address %#x+%d is not inside one PT_LOAD segment" % (self.path, vaddr, size))

    def vaddr_to_offset(self, vaddr: int) -> int | None:
        """File offset holding link-time ``vaddr`` (None if not file-backed)."""
        for s in self.segments:
            if s.vaddr <= vaddr < s.vaddr + s.filesz:
                return s.offset + vaddr - s.vaddr
        return None

    # ---- sections ---------------------------------------------------------------

    @_guarded_property
    def section_headers(self) -> list[headers.SectionHeader]:
        """Every section header (index 0 included; extended section numbering followed)."""
        h = self.header
        if not h.shoff:
            return []
        count = h.shnum
        if count == 0:  # extended numbering: the count is section 0's sh_size
            count = headers.section_headers(self._read(h.shoff, headers.SHDR.size), 1)[0].size
        if h.shoff + count * headers.SHDR.size > self.size:
            raise ElfError("%s: truncated ELF file (section header table past end of file)" % self.path)
        return headers.section_headers(self._read(h.shoff, count * headers.SHDR.size), count)

    @_guarded_property
    def shstrndx(self) -> int:
        """Index of the section-name table (0: none)."""
        idx = self.header.shstrndx
        if idx == headers.SHN_XINDEX and self.section_headers:
            idx = self.section_headers[0].link
        return idx

    @_guarded_property
    def sections(self) -> list[Section]:
        shdrs = self.section_headers
        names = b""
        if 0 < self.shstrndx < len(shdrs):
            st = shdrs[self.shstrndx]
            if st.offset + st.size > self.size:
                raise ElfError("%s: truncated ELF file (section name table past end of file)" % self.path)
            names = self._read(st.offset, st.size)
        return [Section(i, headers.name_at(names, sh.name), headers.section_type_name(sh.type), sh.flags, sh.addr,
                        sh.offset, sh.size, sh.entsize, sh.link, sh.info) for i, sh in enumerate(shdrs)]

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
        if s.offset + s.size > self.size:
            raise ElfError("%s: truncated ELF file (section %s past end of file)" % (self.path, s.name))
        return self._read(s.offset, s.size)

    @property
    def has_debug_info(self) -> bool:
        s = self.section_by_name(".debug_info")
        return s is not None and s.type != "SHT_NOBITS" and s.size > 0

    # ---- notes --------------------------------------------------------------

    @_guarded_property
    def build_id(self) -> str | None:
        """Lowercase hex of the NT_GNU_BUILD_ID note (from PT_NOTE or any SHT_NOTE)."""
        ranges = [(p.offset, p.filesz) for p in self.program_headers if p.type == PT_NOTE]
        ranges += [(s.offset, s.size) for s in self.sections if s.type == "SHT_NOTE"]
        for off, size in ranges:
            bid = self._scan_notes(off, size)
            if bid is not None:
                return bid
        return None

    def _scan_notes(self, off, size):
        size = max(0, min(size, self.size - off))
        return gnu_build_id(self._read(off, size))

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
        for p in self.program_headers:
            if p.type == PT_DYNAMIC:
                out = []
                size = max(0, min(p.filesz, self.size - p.offset))
                for tag, val in _DYN.iter_unpack(self._read(p.offset, size // 16 * 16)):
                    if tag == DT_NULL:
                        break
                    out.append((tag, val))
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
                return self._read(off, max(0, min(size, self.size - off)))
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

    def _version_sections(self, type_name):
        """(section bytes, entry count, linked string table) of each section of ``type_name``."""
        for sec in self.sections:
            if sec.type == type_name and 0 < sec.link < len(self.sections):
                yield self.section_bytes(sec), sec.info, self.section_bytes(self.sections[sec.link])

    @_guarded_property
    def _version_index_names(self) -> dict[int, str]:
        """Version index -> name, from .gnu.version_d and .gnu.version_r."""
        defs = [d for args in self._version_sections("SHT_GNU_verdef") for d in versions.definitions(*args)]
        reqs = [r for args in self._version_sections("SHT_GNU_verneed") for r in versions.needs(*args)]
        return versions.index_names(defs, reqs)

    @_guarded_property
    def version_needs(self) -> dict[str, list[str]]:
        """.gnu.version_r: needed file -> version names it must provide."""
        out: dict[str, list[str]] = {}
        for args in self._version_sections("SHT_GNU_verneed"):
            for file, auxs in versions.needs(*args):
                out.setdefault(file, []).extend(name for _other, name in auxs)
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
            if off + size > self.size:
                raise ElfError("%s: truncated ELF file (relocations past end of file)" % self.path)
            for r_off, info, addend in _RELA.iter_unpack(self._read(off, size // 24 * 24)):
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
        for (entry,) in struct.iter_unpack("<Q", self._read(off, max(0, min(size, self.size - off)) // 8 * 8)):
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
