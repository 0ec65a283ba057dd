"""The generator's two inputs, checked and indexed.

:class:`Target` is the target binary with its DWARF (its own, or from a
separate debug file) and its symbol tables.  :class:`Patch` is the patch
``.so`` with its DWARF, its ``vzp.h`` records mapped to the patch functions
that enclose them, and the binding context (``VZP_FILE``) and aliases that
apply at any patch source line.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Dict

from gdb_nsb.elf import debuginfo, records
from gdb_nsb.elf.dwarf import DwarfIndex
from gdb_nsb.elf.image import ElfImage
from gdb_nsb.errors import DebugInfoError, GenerateError
from gdb_nsb.generator import nsb_records
from gdb_nsb.generator.paths import display, same_source

_REF_SYMBOL = re.compile(r"\A__vzp_.+_(\d+)\Z")


def _dwarf_of(image, search_dirs=None):
    """DwarfIndex over ``image``, with its dwz common file when it names one."""
    alt = debuginfo.find_alt_file(image, search_dirs=search_dirs)
    return DwarfIndex(image, ElfImage(alt, allow_relocatable=True) if alt else None)


class Target:
    """The target binary, its debug image, DWARF index and symbols."""

    def __init__(self, image: ElfImage, debug_image: ElfImage, debug_dirs=None):
        self.image = image
        self.debug_image = debug_image
        self.dwarf = _dwarf_of(debug_image, debug_dirs)
        # A stripped target keeps its full .symtab in the debug file.
        self._symimage = image if image.symtab else debug_image

    def functions(self, name, cu=None):
        return self.dwarf.functions(name, cu=cu)

    def variables(self, name, cu=None, function=None):
        return self.dwarf.variables(name, cu=cu, function=function)

    def cus_for(self, file):
        return self.dwarf.find_cus(file)

    @staticmethod
    def cu_path(cu):
        return cu.path or cu.name

    def symbols(self, name):
        """Symbols called ``name`` (.symtab, else .dynsym; of the debug file when stripped)."""
        out = self._symimage.symbols_named(name)
        if not out and self._symimage is not self.image:
            out = self.image.symbols_named(name)
        return out

    def all_symbols(self):
        """Every symbol of the target (.symtab, of the debug file when stripped; else .dynsym)."""
        return self._symimage.symtab or self.image.dynsyms

    def function_symbols_at(self, addr):
        """Defined FUNC / IFUNC symbols whose value is ``addr``."""
        if not hasattr(self, "_func_by_addr"):
            d = {}
            for s in self.all_symbols():
                if s.defined and s.type in ("STT_FUNC", "STT_GNU_IFUNC") and s.name:
                    d.setdefault(s.value, []).append(s)
            self._func_by_addr = d
        return list(self._func_by_addr.get(addr, ()))

    def function_symbol(self, name, addr):
        """The FUNC symbol at ``addr`` (named ``name`` if there is one)."""
        syms = [s for s in self.symbols(name) if s.value == addr and s.type in ("STT_FUNC", "STT_GNU_IFUNC")]
        return syms[0] if syms else None

    def variable_type(self, info):
        """The type DIE of a target VariableInfo (None: unknown)."""
        from gdb_nsb.generator.dwarf_types import type_of
        return type_of(self.dwarf.die(info.die_offset))

    def is_external_at(self, name, addr):
        """True when DWARF has a global (DW_AT_external) ``name`` at ``addr``."""
        for v in self.dwarf.variables(name):
            if v.address == addr and v.external:
                return True
        for f in self.dwarf.functions(name):
            if f.entry == addr and f.external:
                return True
        return False


def load_target(path, debug_file=None, debug_dirs=None) -> Target:
    """Open the target and find its debug information; refuse without a build-id or DWARF."""
    image = ElfImage(path)
    if not image.build_id:
        raise GenerateError("target %s has no GNU build-id (link it with -Wl,--build-id)" % path)
    found = debuginfo.find_debug_file(image, explicit=debug_file, search_dirs=debug_dirs)
    if found is None:
        raise DebugInfoError("target %s has no debug information (build-id %s): build it with -g, or give "
                             "--debug-file / --debug-dir" % (path, image.build_id))
    dbg = image if found == image.path else ElfImage(found)
    return Target(image, dbg, debug_dirs)


@dataclass(frozen=True)
class Ref:
    """A ``vzp.h`` record with where it sits in the patch.

    ``address``: link-time address of the record in the patch;
    ``function``: the patch FunctionInfo whose body holds the macro (a
    function-local reference), else None.
    """

    kind: str
    patch_symbol: str
    target_name: str
    file: str
    source_file: str
    source_line: int
    address: int
    function: object = None


#: Record kinds that declare no target entity: binding context, aliases, callbacks.
_NOT_REFERENCES = ("file", "alias") + records.CALLBACK_KINDS


class Patch:
    """The patch .so: image, DWARF, records and their scopes."""

    def __init__(self, image: ElfImage):
        self.image = image
        self.dwarf = _dwarf_of(image)
        sec = image.section_by_name(records.SECTION_NAME)
        data = image.section_data(records.SECTION_NAME) if sec is not None else None
        recs = records.parse_records(data) if data else []
        # Series declarations describe the patch itself, not a symbol: they never reach the binding.
        self.series_records = [r for r in recs if r.kind in records.SERIES_KINDS]
        recs = [r for r in recs if r.kind not in records.SERIES_KINDS]
        self._dynsym_index: Dict[str, int] = {}
        for s in image.dynsyms:
            if s.index and s.name and not s.defined:
                self._dynsym_index.setdefault(s.name, s.index)
        self._functions = self._all_functions()
        base = sec.addr if sec is not None else 0  # no section: no records
        self.records = [self._ref(r, base + r.offset) for r in recs]
        # Patches built with the original tool's vzp.h: its records, read as metadata.
        original = nsb_records.OriginalRecords(image, self._declaration_tag)
        self.record_addresses = set(original.addresses)
        for r, var, address in original.items:
            self.records.append(self._ref(r, address, var))

    # ---- functions and variables of the patch's own compile units ----

    def _all_functions(self):
        """Concrete functions of the patch's DWARF (crtstuff has none), by symbol names."""
        names = sorted({s.name for s in self.image.symtab if s.type == "STT_FUNC" and s.defined and s.name})
        out = {}
        for name in names:
            for f in self.dwarf.functions(name):
                out.setdefault(f.die_offset, f)
        return sorted(out.values(), key=lambda f: f.entry)

    def functions(self):
        return list(self._functions)

    def variable_at(self, symbol_name, addr):
        """The patch DWARF variable at ``addr`` (symbol ``x.N`` is C name ``x``)."""
        for name in dict.fromkeys((symbol_name, symbol_name.split(".")[0])):
            for v in self.dwarf.variables(name):
                if v.address == addr:
                    return v
        return None

    def own_source_names(self):
        """Basenames of the patch's compile units (for .symtab STT_FILE matching)."""
        return {os.path.basename(cu.name) for cu in self.dwarf.compile_units() if cu.name}

    def dynsym_index(self, name):
        """Index of the undefined .dynsym symbol ``name`` (None: not referenced)."""
        return self._dynsym_index.get(name)

    def is_reference_symbol(self, name):
        return any(r.patch_symbol == name for r in self.records if r.kind not in _NOT_REFERENCES)

    # ---- declarations (for type checks) ----

    def _declarations(self):
        """[(DIE, C name, linkage name, "file:line")] of every variable / function declaration in the patch."""
        if getattr(self, "_decls", None) is not None:
            return self._decls
        out = []
        di = self.image.elffile.get_dwarf_info(relocate_dwarf_sections=False, follow_links=False)
        for cu in di.iter_CUs():
            files = _line_files(di, cu)
            stack = [cu.get_top_DIE()]
            while stack:
                for d in stack.pop().iter_children():
                    if d.tag in ("DW_TAG_variable", "DW_TAG_subprogram") and "DW_AT_declaration" in d.attributes:
                        name = _attr_str(d, "DW_AT_name")
                        # gcc records an __asm__ name with its quotes.
                        link = (_attr_str(d, "DW_AT_linkage_name") or name or "").strip('"') or None
                        fidx = d.attributes.get("DW_AT_decl_file")
                        fname = files.get(fidx.value) if fidx is not None else None
                        line = d.attributes.get("DW_AT_decl_line")
                        where = "%s:%s" % (display(fname or cu.get_top_DIE().get_full_path()),
                                           line.value if line is not None else "?")
                        out.append((d, name, link, where))
                    if d.has_children and d.tag in ("DW_TAG_subprogram", "DW_TAG_lexical_block"):
                        stack.append(d)
        self._decls = out
        return out

    def declaration(self, linkage_name):
        """The declaration DIE whose assembler name is ``linkage_name`` (a vzp.h reference), or None."""
        return next((d for d, _n, link, _w in self._declarations() if link == linkage_name), None)

    def extern_declarations(self):
        """[(DIE, C name, "file:line")] of plain extern declarations (no vzp.h assembler name)."""
        return [(d, n, w) for d, n, link, w in self._declarations() if n and link == n]

    # ---- records ----

    def _ref(self, r, address, var_name=None):
        """The Ref of record ``r`` at ``address``; ``var_name``: the record's variable (else derived from
        our own records' naming, __vzp_rec_N)."""
        fn = None
        source_file, source_line = r.source_file, r.source_line
        if var_name is None and r.kind not in _NOT_REFERENCES:
            m = _REF_SYMBOL.match(r.patch_symbol)
            var_name = "__vzp_rec_" + m.group(1) if m else None
        if var_name is not None:
            for v in self.dwarf.variables(var_name.split(".")[0]):
                if v.address == address:
                    fn = self._enclosing(v) if v.function else None
                    if not source_file:  # the original's alias records carry no location
                        source_file, source_line = v.decl_file or "", v.decl_line or 0
                    break
        return Ref(r.kind, r.patch_symbol, r.target_name, r.file, source_file, source_line, address, fn)

    def _declaration_tag(self, name):
        """DWARF tag of the patch's declaration of ``name`` (DW_TAG_variable / DW_TAG_subprogram), or None."""
        return next((d.tag for d, n, link, _w in self._declarations() if n == name and link == name), None)

    def _enclosing(self, var):
        cands = [f for f in self._functions if f.name == var.function and f.cu.offset == var.cu.offset]
        if len(cands) != 1:
            raise GenerateError("record %s: cannot tell which patch function %s encloses it"
                                % (var.name, var.function))
        return cands[0]

    def references(self):
        return [r for r in self.records if r.kind not in _NOT_REFERENCES]

    def callbacks(self):
        """The callback records (VZP_PRE_PATCH ...), in source order."""
        return [r for r in self.records if r.kind in records.CALLBACK_KINDS]

    def context_before(self, source_file, line):
        """The VZP_FILE record in force at ``source_file:line`` (the last one before it), or None."""
        best = None
        for r in self.records:
            if r.kind == "file" and same_source(r.source_file, source_file) and r.source_line <= (line or 0):
                if best is None or r.source_line >= best.source_line:
                    best = r
        return best

    def _aliases(self, name, source_file):
        hits = [r for r in self.records if r.kind == "alias" and r.patch_symbol == name
                and same_source(r.source_file, source_file)]
        if len({h.target_name for h in hits}) > 1:
            raise GenerateError("%s has %d different aliases in %s (%s)"
                                % (name, len(hits), display(source_file),
                                   ", ".join("%s at line %d" % (h.target_name, h.source_line) for h in hits)))
        return hits[0] if hits else None

    def reference_alias(self, ref):
        """The VZP_STATIC_SYM_ALIAS that renames reference ``ref``, or None."""
        return self._aliases(ref.target_name, ref.source_file)

    def function_alias(self, fn):
        """The VZP_STATIC_SYM_ALIAS that names the target static a patch function replaces."""
        return self._aliases(fn.name, fn.decl_file)


def _attr_str(die, attr):
    a = die.attributes.get(attr)
    if a is None:
        return None
    return a.value.decode("utf-8", "replace") if isinstance(a.value, bytes) else a.value


def _line_files(di, cu):
    """DW_AT_decl_file index -> path, from the unit's line program header (DWARF 4 and 5 numbering)."""
    lp = di.line_program_for_CU(cu)
    if lp is None:
        return {}
    out = {}
    dirs = [d.decode() if isinstance(d, bytes) else d for d in lp.header.include_directory]
    base = 0 if cu.header.version >= 5 else 1
    for i, fe in enumerate(lp.header.file_entry):
        n = fe.name.decode() if isinstance(fe.name, bytes) else fe.name
        d = fe.dir_index
        if cu.header.version >= 5:
            dn = dirs[d] if d < len(dirs) else ""
        else:
            dn = dirs[d - 1] if 0 < d <= len(dirs) else ""
        out[i + base] = os.path.join(dn, n) if dn and not os.path.isabs(n) else n
    return out


def load_patch(path) -> Patch:
    """Open the patch; refuse anything but an x86_64 ET_DYN with a build-id and DWARF."""
    image = ElfImage(path)
    if image.elf_type != "ET_DYN" or image.is_pie:
        raise GenerateError("patch %s is not a shared object (build it with $(nsb cflags) -shared)" % path)
    if not image.build_id:
        raise GenerateError("patch %s has no GNU build-id (link it with -Wl,--build-id)" % path)
    if not image.has_debug_info:
        raise DebugInfoError("patch %s has no DWARF debug information (build it with $(nsb cflags), which has -g)"
                             % path)
    if not image.symtab:
        raise GenerateError("patch %s has no symbol table (do not strip patches)" % path)
    return Patch(image)
