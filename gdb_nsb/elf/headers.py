"""The fixed layout of an x86_64 ELF64 little-endian file: file header, program and section headers.

Decoding only, from bytes the caller read: :class:`gdb_nsb.elf.image.ElfImage`
reads a file's headers through it (the header first, then only the tables it
is asked for), :mod:`gdb_nsb.elf.memnote` reads a mapped object's headers from
process memory, and :mod:`gdb_nsb.elf.sections` rewrites the section-header
table from the decoded fields.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

from gdb_nsb.elf.names import EM_X86_64, SECTION_TYPES
from gdb_nsb.errors import ElfError

ELF_MAGIC = b"\x7fELF"
EHDR = struct.Struct("<16sHHIQQQIHHHHHH")  # Elf64_Ehdr
PHDR = struct.Struct("<IIQQQQQQ")  # Elf64_Phdr
SHDR = struct.Struct("<IIQQQQIIQQ")  # Elf64_Shdr
SHN_XINDEX = 0xFFFF
PAGE_SIZE = 0x1000

_ET_NAMES = {0: "ET_NONE", 1: "ET_REL", 2: "ET_EXEC", 3: "ET_DYN", 4: "ET_CORE"}
_SHT_NAMES = SECTION_TYPES  # pyelftools' names (gdb_nsb/elf/names.py)


@dataclass(frozen=True)
class FileHeader:
    """Elf64_Ehdr past e_ident."""

    type: int
    machine: int
    version: int
    entry: int
    phoff: int
    shoff: int
    flags: int
    ehsize: int
    phentsize: int
    phnum: int
    shentsize: int
    shnum: int
    shstrndx: int

    @property
    def type_name(self) -> "str | int":
        """'ET_EXEC', 'ET_DYN', ... (the number for an unknown type, as pyelftools gives it)."""
        return _ET_NAMES.get(self.type, self.type)


class ProgramHeader(NamedTuple):
    type: int
    flags: int
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int
    align: int


class SectionHeader(NamedTuple):
    name: int  # offset in the section-name table
    type: int
    flags: int
    addr: int
    offset: int
    size: int
    link: int
    info: int
    addralign: int
    entsize: int


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


def parse_file_header(data: bytes, where: str) -> FileHeader:
    """The file header from the first 64 bytes; ElfError (one line, naming ``where``) unless ELF64 LE."""
    if len(data) < 4 or data[:4] != ELF_MAGIC:
        raise ElfError("%s: not an ELF file" % where)
    if len(data) < EHDR.size:
        raise ElfError("%s: truncated ELF header (%d bytes)" % (where, len(data)))
    if data[4] == 1:
        raise ElfError("%s: 32-bit ELF (only x86_64 ELF64 is supported)" % where)
    if data[4] != 2:
        raise ElfError("%s: corrupt ELF header (bad EI_CLASS %d)" % (where, data[4]))
    if data[5] == 2:
        raise ElfError("%s: big-endian ELF (only x86_64 little-endian is supported)" % where)
    if data[5] != 1:
        raise ElfError("%s: corrupt ELF header (bad EI_DATA %d)" % (where, data[5]))
    return FileHeader(*EHDR.unpack_from(data)[1:])


def require_x86_64(header: FileHeader, where: str) -> None:
    if header.machine != EM_X86_64:
        # pyelftools names the machine: imported on this refusal path only (gdb_nsb/elf/names.py).
        from elftools.elf.descriptions import describe_e_machine
        from elftools.elf.enums import ENUM_E_MACHINE
        name = next((k for k, v in ENUM_E_MACHINE.items() if v == header.machine and k != "_default_"),
                    "machine %d" % header.machine)
        raise ElfError("%s: wrong machine %s (%s), need EM_X86_64"
                       % (where, name, describe_e_machine(name) if name.startswith("EM_") else "?"))


def program_headers(data: bytes, count: int, entsize: int = PHDR.size) -> list[ProgramHeader]:
    """``count`` program headers laid out every ``entsize`` bytes in ``data``."""
    return [ProgramHeader(*PHDR.unpack_from(data, i * entsize)) for i in range(count)]


def section_headers(data: bytes, count: int) -> list[SectionHeader]:
    return [SectionHeader(*SHDR.unpack_from(data, i * SHDR.size)) for i in range(count)]


def section_type_name(sh_type: int):
    """'SHT_PROGBITS', ... as pyelftools names x86_64 section types (the number when unknown)."""
    return _SHT_NAMES.get(sh_type, sh_type)


def name_at(strtab: bytes, off: int) -> str:
    """The NUL-terminated name at ``off`` of a string table ('' when out of range)."""
    if off >= len(strtab):
        return ""
    end = strtab.find(b"\0", off)
    return strtab[off:end if end >= 0 else len(strtab)].decode("utf-8", "replace")


def is_elf_file(path: str) -> bool | None:
    """True for an ELF file, False for another readable file (data: a locale archive, a database),
    None when it cannot be read.  Reads four bytes."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == ELF_MAGIC
    except OSError:
        return None
