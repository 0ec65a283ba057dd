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

DIEs are decoded by :mod:`gdb_nsb.elf.dwarf.reader`; pyelftools still provides
full DIEs through :meth:`DwarfIndex.die` for type checks, and the line-program
file tables for ``decl_file``.
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
from gdb_nsb.elf.dwarf.reader import (
    ADDRX_FORMS, AT_ABSTRACT_ORIGIN, AT_COMP_DIR, AT_DECL_FILE, AT_DECL_LINE, AT_DECLARATION, AT_ENTRY_PC,
    AT_EXTERNAL, AT_LANGUAGE, AT_LINKAGE_NAME, AT_LOCATION, AT_LOW_PC, AT_MIPS_LINKAGE_NAME, AT_NAME,
    AT_PRODUCER, AT_RANGES, AT_SPECIFICATION, F_ADDR, F_GNU_REF_ALT, F_REF_SUP4, F_REF_SUP8, TAG_COMPILE_UNIT,
    TAG_INLINED_SUBROUTINE, TAG_NAMESPACE, TAG_SUBPROGRAM, TAG_VARIABLE, DwarfFile,
)

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


# What decoding corrupt DWARF raises (a value of an unexpected form gives TypeError; a zero size,
# ZeroDivisionError); public entry points turn them into a one-line DebugInfoError.
_CORRUPT = (IndexError, struct.error, ValueError, KeyError, RecursionError, TypeError, OverflowError,
            ZeroDivisionError, DWARFError, ELFParseError, ConstructError)
# pyelftools also asserts, and misses attributes, on corrupt input (around its calls only).
_PYELF_CORRUPT = (AssertionError, AttributeError)


def _guarded(fn):
    """Public entry points: malformed DWARF becomes a one-line DebugInfoError."""

    @functools.wraps(fn)
    def wrapper(self, *a, **kw):
        try:
            return fn(self, *a, **kw)
        except _CORRUPT as e:
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
            alt = DwarfFile(alt_image) if alt_image is not None else None
            self._file = DwarfFile(image, alt)
        except _CORRUPT as e:
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
                # string() is None for a value of a non-string form (corrupt DWARF): no name then
                name = (f.string(u, *top[AT_NAME]) if AT_NAME in top else "") or ""
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

    @_guarded
    def codeless_units(self, name: str) -> list[CompileUnitInfo]:
        """Units whose top level defines a subprogram ``name`` with no code of its own (an abstract
        instance root: there the function exists only inlined, or not at all)."""
        out = []
        for u in self._all_units():
            if any(e.tag == TAG_SUBPROGRAM and not e.declaration and not self._file.ranges(u, e.attrs)
                   for e in self._top_index(u).get(name, ())):
                out.append(self._cu_info(u))
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
            entry = f.address(u, form, v) if form == F_ADDR or form in ADDRX_FORMS else ranges[0][0] + v
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
        raw = self._file.range_list(u, *r)
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
        try:
            lp = di.line_program_for_CU(di.get_CU_at(unit.offset))
            if lp is not None:
                lp.header.file_entry  # noqa: B018 - parses the header here, inside the guard
        except _PYELF_CORRUPT as e:
            raise DebugInfoError("%s: corrupt .debug_line header of the unit at %#x (%s)"
                                 % (dfile.path, unit.offset, e)) from e
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
        try:
            return self._pyelf_dwarf(dfile).get_DIE_from_refaddr(offset)
        except _PYELF_CORRUPT as e:
            raise DebugInfoError("%s: corrupt DWARF at .debug_info %#x (%s)" % (dfile.path, offset, e)) from e
