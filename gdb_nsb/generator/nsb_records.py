"""Records of patches built with the original nsb tool's own ``vzp.h``.

The original header (virtuozzo/nsb, ``include/vzp.h``) leaves, per macro, a
``static const`` struct in section ``VZP`` (writable in a ``-fPIC`` object,
because its string pointers need relocation), named by its kind::

    vzpatch_file_N   { char *filename; unsigned line; char *target_filename; }          VZP_FILE
    vzpatch_sym_N    { char *filename; unsigned line; char *target_filename;
                       char *symbol; int visibility; }        *_VAR_REF / *_FUNC_REF
    vzpatch_alias_N  { char *patch_symbol; char *target_symbol; }            VZP_STATIC_SYM_ALIAS

(visibility 1 static, 2 internal, 3 hidden, 4 protected; a null
``target_filename`` when the macro names no file), and declares the
reference under the target's own name: ``extern long counter;``.  This
module reads them as :class:`gdb_nsb.elf.records.VzpRecord` (our own
records' model), so the generator binds such patches like ours.  Whether a
reference means a variable or a function is not in the record: the patch's
declaration of the name says it.
"""

from __future__ import annotations

import re
import struct

from gdb_nsb.elf.records import VzpRecord
from gdb_nsb.errors import PatchFileError

SECTION_NAME = "VZP"
_RECORD = re.compile(r"\A\w*?(?P<kind>file|sym|alias)_\d+(?:\.\d+)?\Z")
_SIZES = {"file": 24, "sym": 40, "alias": 16}
_SCOPES = {1: "static", 2: "internal", 3: "hidden", 4: "protected"}
R_X86_64_RELATIVE = 8


class OriginalRecords:
    """The ``VZP`` records of a patch image: [(VzpRecord, record variable name, its address)]."""

    def __init__(self, image, declarations):
        """``declarations``: callable name -> DWARF tag of the patch's declaration of ``name`` (or None)."""
        self.image = image
        self.items = []
        self.addresses = set()
        sec = image.section_by_name(SECTION_NAME)
        if sec is None:
            return
        self._relative = {r.offset: r.addend for r in image.relocations if r.type == R_X86_64_RELATIVE}
        lo, hi = sec.addr, sec.addr + sec.size
        syms = sorted((s for s in image.symtab if s.defined and s.type == "STT_OBJECT" and lo <= s.value < hi),
                      key=lambda s: s.value)
        for s in syms:
            m = _RECORD.match(s.name)
            if m is None or s.size != _SIZES[m.group("kind")]:
                raise PatchFileError("section %s of %s holds %s (%d bytes), which is no record of the original "
                                     "vzp.h" % (SECTION_NAME, image.path, s.name, s.size))
            rec = self._record(m.group("kind"), s, sec, declarations)
            self.items.append((rec, s.name, s.value))
            self.addresses.add(s.value)

    def _pointer(self, addr):
        if addr in self._relative:
            return self._relative[addr]
        return struct.unpack("<Q", self.image.read_vaddr(addr, 8))[0]

    def _string(self, addr, what):
        p = self._pointer(addr)
        if p == 0:
            return ""
        out = bytearray()
        while len(out) < 4096:
            chunk = self.image.read_vaddr(p + len(out), 64)
            end = chunk.find(b"\0")
            if end >= 0:
                out += chunk[:end]
                return out.decode("utf-8", "surrogateescape")
            out += chunk
        raise PatchFileError("%s: %s of the original vzp.h record at %#x is not a string" % (self.image.path, what,
                                                                                             addr))

    def _record(self, kind, sym, sec, declarations):
        a = sym.value
        offset = a - sec.addr
        if kind == "alias":
            psym, tsym = self._string(a, "patch_symbol"), self._string(a + 8, "target_symbol")
            if not psym or not tsym:
                raise PatchFileError("%s: alias record %s names no symbol" % (self.image.path, sym.name))
            return VzpRecord("alias", psym, tsym, "", "", 0, offset)
        filename = self._string(a, "filename")
        line = struct.unpack("<I", self.image.read_vaddr(a + 8, 4))[0]
        target_file = self._string(a + 16, "target_filename")
        if kind == "file":
            if not target_file:
                raise PatchFileError("%s: VZP_FILE at %s:%d names no file" % (self.image.path, filename, line))
            return VzpRecord("file", "", "", target_file, filename, line, offset)
        name = self._string(a + 24, "symbol")
        vis = struct.unpack("<i", self.image.read_vaddr(a + 32, 4))[0]
        scope = _SCOPES.get(vis)
        if scope is None or not name:
            raise PatchFileError("%s: record %s at %s:%d has visibility %d and symbol %r, which the original "
                                 "vzp.h never writes" % (self.image.path, sym.name, filename, line, vis, name))
        entity = "func" if declarations(name) == "DW_TAG_subprogram" else "var"
        return VzpRecord("%s_%s" % (scope, entity), name, name, target_file, filename, line, offset)


__all__ = ["OriginalRecords", "SECTION_NAME"]
