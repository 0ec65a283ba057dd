"""Read and write non-allocated sections of an ELF64 file, in pure Python.

The generator stores the ``vzpatch`` section in a patch ``.so`` with
:func:`write_section`.  Nothing that the dynamic linker or a debugger reads is
moved: the file's contents stay where they are, and the section's data, the
section-name table and a new section-header table are laid out at the end of
the file.  The layout is canonical (whatever we appended before is dropped and
laid out again), so writing a section twice, or replacing it, gives the same
bytes as writing it once into the original file.

Files are never edited in place: the result is written to a temporary file in
the destination's directory, synced, given the source's mode, and renamed over
the destination.

The file is read through :class:`gdb_nsb.elf.image.ElfImage` (the header,
then the tables); the section-header table is rewritten from its decoded fields.
"""

import os
import stat
import struct

from gdb_nsb.elf import headers
from gdb_nsb.elf.image import ElfImage
from gdb_nsb.errors import ElfError

__all__ = ["read_section", "write_section", "section_names"]

_PHDR, _SHDR = headers.PHDR, headers.SHDR
_SHT_NULL = 0
_SHT_PROGBITS = 1
_SHT_STRTAB = 3
_SHT_NOBITS = 8
_SHF_ALLOC = 0x2
_SHN_LORESERVE = 0xFF00
_SHSTRTAB_NAME = b".shstrtab"


class _Section:
    __slots__ = ("name_off", "type", "flags", "addr", "offset", "size", "link", "info", "addralign", "entsize")

    def __init__(self, fields):
        (self.name_off, self.type, self.flags, self.addr, self.offset, self.size,
         self.link, self.info, self.addralign, self.entsize) = fields

    def pack(self):
        return _SHDR.pack(self.name_off, self.type, self.flags, self.addr, self.offset, self.size,
                          self.link, self.info, self.addralign, self.entsize)

    def file_end(self):
        """End of the section's bytes in the file, or None when it has none."""
        if self.type in (_SHT_NULL, _SHT_NOBITS) or self.size == 0:
            return None
        return self.offset + self.size


class _Elf:
    """What rewriting the section-header table needs of an ELF file, read through ElfImage."""

    def __init__(self, path):
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise ElfError("file not found: %s" % path) from None
        except OSError as e:
            raise ElfError("cannot read %s: %s" % (path, e.strerror or e)) from None
        if stat.S_ISDIR(st.st_mode):
            raise ElfError("not a file: %s" % path)
        self.image = img = ElfImage(path, allow_relocatable=True)
        self.path = path
        h = img.header
        self.ehsize, self.phoff, self.phnum, self.shstrndx = h.ehsize, h.phoff, h.phnum, h.shstrndx
        if self.phnum and h.phentsize != headers.PHDR.size:
            raise ElfError("bad program header table: %s" % path)
        self.segments = [(p.offset, p.filesz) for p in img.program_headers]
        self.sections = []
        if h.shoff:
            if h.shnum == 0 or h.shstrndx == headers.SHN_XINDEX:
                raise ElfError("extended section numbering is not supported: %s" % path)
            if h.shentsize != _SHDR.size:
                raise ElfError("bad section header table: %s" % path)
            for i, sh in enumerate(img.section_headers):
                if sh.type != _SHT_NOBITS and sh.offset + sh.size > img.size:
                    raise ElfError("section %d lies past the end of the file: %s" % (i, path))
            self.sections = [_Section(sh) for sh in img.section_headers]
        if self.sections and self.shstrndx >= len(self.sections):
            raise ElfError("bad section name table index %d: %s" % (self.shstrndx, path))

    @property
    def data(self):
        return self.image.data

    def shstrtab(self):
        """Contents of the section-name table, or None when there is none."""
        if not self.sections or self.shstrndx == 0:
            return None
        s = self.sections[self.shstrndx]
        if s.type != _SHT_STRTAB:
            raise ElfError("section name table is not a string table: %s" % self.path)
        return self.image.section_bytes(self.image.sections[self.shstrndx])

    def name_of(self, sec, strtab):
        if strtab is None or sec.name_off >= len(strtab):
            return None
        end = strtab.find(b"\0", sec.name_off)
        return strtab[sec.name_off:end if end >= 0 else len(strtab)]

    def index_of(self, name):
        """Index of the (first) section named ``name`` (bytes), or None."""
        strtab = self.shstrtab()
        for i, s in enumerate(self.sections):
            if i and self.name_of(s, strtab) == name:
                return i
        return None


def _encode_name(name):
    if isinstance(name, str):
        name = name.encode()
    if not name or b"\0" in name:
        raise ElfError("invalid section name %r" % name)
    return name


def section_names(path):
    """Names of all sections of the ELF file at ``path``, in index order (index 0 excluded)."""
    elf = _Elf(path)
    strtab = elf.shstrtab()
    return [(elf.name_of(s, strtab) or b"").decode(errors="replace") for s in elf.sections[1:]]


def read_section(path, name):
    """Contents of the section ``name`` of the ELF file at ``path``, or None if absent.

    Raises ElfError when the file is missing or not a readable ELF64 file.
    A SHT_NOBITS section reads as b"" (it has no bytes in the file).
    """
    elf = _Elf(path)
    idx = elf.index_of(_encode_name(name))
    if idx is None:
        return None
    s = elf.sections[idx]
    if s.type == _SHT_NOBITS:
        return b""
    return elf.image.section_bytes(elf.image.sections[idx])


def _align(n, a):
    return (n + a - 1) & -a


def _rebuild(elf, name, payload):
    """The bytes of ``elf`` with section ``name`` holding ``payload`` (canonical layout)."""
    data = elf.data
    sections = [_Section((s.name_off, s.type, s.flags, s.addr, s.offset, s.size,
                          s.link, s.info, s.addralign, s.entsize)) for s in elf.sections]
    shstrndx = elf.shstrndx
    strtab = elf.shstrtab()
    if not sections:
        sections = [_Section((0,) * 10)]
        shstrndx = 0
    if shstrndx == 0:
        # No section-name table: create one (named by itself).
        strtab = b"\0" + _SHSTRTAB_NAME + b"\0"
        sections.append(_Section((1, _SHT_STRTAB, 0, 0, 0, len(strtab), 0, 0, 1, 0)))
        shstrndx = len(sections) - 1

    idx = elf.index_of(name) if elf.sections and elf.shstrndx else None
    if idx is not None:
        old = sections[idx]
        if old.flags & _SHF_ALLOC or old.type == _SHT_NOBITS:
            raise ElfError("section %s of %s is allocated; refusing to replace it"
                           % (name.decode(errors="replace"), elf.path))
        for off, filesz in elf.segments:
            if old.size and old.offset < off + filesz and off < old.offset + old.size:
                raise ElfError("section %s of %s lies inside a segment; refusing to replace it"
                               % (name.decode(errors="replace"), elf.path))
    name_off = strtab.find(name + b"\0")
    if name_off < 0:
        name_off = len(strtab)
        strtab = strtab + name + b"\0"
    if idx is None:
        sections.append(_Section((name_off, _SHT_PROGBITS, 0, 0, 0, 0, 0, 0, 1, 0)))
        idx = len(sections) - 1
    target = sections[idx]
    target.name_off, target.type, target.flags, target.addr = name_off, _SHT_PROGBITS, 0, 0
    target.link = target.info = target.entsize = 0
    target.addralign = 1

    # Everything the file holds, except the section-header table, this
    # section and the name table (which are laid out again at the end).
    keep = max([elf.ehsize, elf.phoff + elf.phnum * _PHDR.size]
               + [off + filesz for off, filesz in elf.segments]
               + [s.file_end() or 0 for i, s in enumerate(sections[:len(elf.sections)])
                  if i not in (idx, shstrndx)])
    out = bytearray(data[:keep])
    target.offset, target.size = len(out), len(payload)
    out += payload
    names = sections[shstrndx]
    names.offset, names.size = len(out), len(strtab)
    out += strtab
    shoff = _align(len(out), 8)
    out += b"\0" * (shoff - len(out))
    if len(sections) >= _SHN_LORESERVE:
        raise ElfError("too many sections in %s" % elf.path)
    for s in sections:
        out += s.pack()
    # e_shoff (offset 40), e_shentsize/e_shnum/e_shstrndx (offsets 58..63).
    struct.pack_into("<Q", out, 40, shoff)
    struct.pack_into("<HHH", out, 58, _SHDR.size, len(sections), shstrndx)
    return bytes(out)


def replace_file(dest, data, mode=0o644):
    """Write ``data`` to a temporary file next to ``dest``, sync it, rename it over ``dest`` (OSError)."""
    directory = os.path.dirname(os.path.abspath(dest)) or "."
    import tempfile  # here: only writers need it, and every GDB session imports this module
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(dest) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def write_section(path, name, data, out_path=None):
    """Add or replace the non-allocated SHT_PROGBITS section ``name`` holding ``data``.

    Reads the ELF64 file at ``path`` and writes the result to ``out_path``
    (default: ``path`` itself), always through a temporary file in the
    destination's directory renamed over it, with the mode of ``path``.  A
    symlink as destination is followed (the file it names is replaced).
    Idempotent: the result is the same whether ``path`` already had the
    section (with any contents) or not.  Raises ElfError on a bad file or when
    an existing section of that name is allocated.
    """
    name = _encode_name(name)
    data = bytes(data)
    elf = _Elf(path)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError as e:
        raise ElfError("cannot stat %s: %s" % (path, e.strerror or e)) from None
    result = _rebuild(elf, name, data)
    dest = os.path.realpath(out_path if out_path is not None else path)
    try:
        replace_file(dest, result, mode)
    except OSError as e:
        raise ElfError("cannot write %s: %s" % (dest, e.strerror or e)) from None
    return dest
