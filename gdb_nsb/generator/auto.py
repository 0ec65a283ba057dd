"""Auto mode: a patch that is whole compile units, rebound to the target's statics.

The patch's units are built ``-g -ffunction-sections -fdata-sections``
(plus the usual ``-O0 -fPIC``) and linked into the patch ``.so``; the
generator gets the ``.so`` and the object files.  In the ``.so`` the
linker resolved every PC-relative reference from a unit's code to its own
statics to the patch's private copies.  The object files still say which
fields those were: a relocation ``R_X86_64_PC32`` / ``PLT32`` (``PC64``)
in section ``.text.f`` against ``.data.x`` / ``.bss.x`` / ``.text.g`` (one
entity per section, thanks to the section flags) or against a local
symbol.  Each such field becomes a ``StaticSym`` that points it at the
target's existing entity instead:

    patch_address = link-time address of the field in the patch
                    (patch address of f - offset of f in .text.f + r_offset)
    target_value  = S_t + A - patch_address        (mod 2**64)

where ``S_t`` is the target's link-time address of what the relocation's
symbol stands for (the entity's target address minus its offset in its
object section, for a section symbol) and ``A`` the addend.  The engine
writes ``target_value + bias(target) - bias(patch)`` into the field (4
bytes: must fit a signed 32-bit value; 8 bytes: PC64), which is exactly
``S + A - P`` at run time (see docs/ARCHITECTURE.md).

Before trusting a field, the generator checks that the ``.so`` holds
there what the linker must have written for the patch's own copy; a
mismatch means the objects are not the ones the ``.so`` was linked from.

Only changed functions are redirected: given the unpatched unit's object
built the same way (``originals``), a function whose code bytes, with
relocation fields masked, and whose relocations (type, what they refer
to, addend) are the same in both is left alone.
"""

from __future__ import annotations

import bisect
import os
import struct

from elftools.common.exceptions import DWARFError, ELFError, ELFParseError
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection

from gdb_nsb.elf.livepatch import StaticSym
from gdb_nsb.errors import GenerateError
from gdb_nsb.generator import checks
from gdb_nsb.generator.paths import display

R_X86_64_64, R_X86_64_PC32, R_X86_64_PLT32, R_X86_64_32, R_X86_64_32S = 1, 2, 4, 10, 11
R_X86_64_PC64 = 24
_FIELD_SIZE = {1: 8, 2: 4, 3: 4, 4: 4, 9: 4, 10: 4, 11: 4, 24: 8, 26: 4, 41: 4, 42: 4}
_PC_RELATIVE = {R_X86_64_PC32: 4, R_X86_64_PLT32: 4, R_X86_64_PC64: 8}
_U64 = 1 << 64


class ObjectUnit:
    """One relocatable object file: its sections, symbols and code relocations."""

    def __init__(self, path):
        self.path = path
        try:
            with open(path, "rb") as f:
                self.data = f.read()
            import io
            self.elf = ELFFile(io.BytesIO(self.data))
        except OSError as e:
            raise GenerateError("cannot read object file %s: %s" % (path, e.strerror or e)) from e
        except (ELFError, ELFParseError) as e:
            raise GenerateError("object file %s is not an ELF file: %s" % (path, e)) from e
        if self.elf.header.e_type != "ET_REL" or self.elf.header.e_machine != "EM_X86_64":
            raise GenerateError("%s is not an x86_64 relocatable object (.o); give the patch's object files"
                                % path)
        self.sections = list(self.elf.iter_sections())
        symtab = self.elf.get_section_by_name(".symtab")
        if symtab is None:
            raise GenerateError("object file %s has no symbol table" % path)
        self.symbols = list(symtab.iter_symbols())
        self.file = next((s.name for s in self.symbols if s["st_info"]["type"] == "STT_FILE"), None)
        self.name = self._unit_name() or self.file
        if not self.name:
            raise GenerateError("object file %s names no source file (build it with -g)" % path)
        self.relocs = {}  # section index -> [relocation]
        for sec in self.sections:
            if isinstance(sec, RelocationSection) and sec["sh_info"]:
                self.relocs.setdefault(sec["sh_info"], []).extend(sec.iter_relocations())
        self.functions = {}  # name -> (symbol, section index)
        for s in self.symbols:
            if s["st_info"]["type"] == "STT_FUNC" and isinstance(s["st_shndx"], int):
                self.functions[s.name] = (s, s["st_shndx"])
        self._check_sections()

    def _unit_name(self):
        """The unit's DW_AT_name; None (then its STT_FILE names it) when the object has no DWARF.

        DWARF that cannot be read is refused: the name decides which target unit the object
        rebinds to, and a guess from another source could pick the wrong one."""
        if not self.elf.has_dwarf_info():
            return None
        try:
            di = self.elf.get_dwarf_info(relocate_dwarf_sections=False)
            for cu in di.iter_CUs():
                name = self._unrelocated_name(cu.get_top_DIE())
                if name is not None:
                    return name
                break
            # a form not read above: the sections relocated as a whole (slow on a large object)
            di = self.elf.get_dwarf_info()
            for cu in di.iter_CUs():
                a = cu.get_top_DIE().attributes.get("DW_AT_name")
                if a is not None:
                    return a.value.decode("utf-8", "replace") if isinstance(a.value, bytes) else a.value
        except (ELFError, ELFParseError, DWARFError, KeyError, IndexError, ValueError, struct.error) as e:
            raise GenerateError("object file %s: cannot read its DWARF (%s: %s); rebuild it with -g"
                                % (self.path, type(e).__name__, e)) from e
        return None

    def _unrelocated_name(self, top):
        """The unit DIE's DW_AT_name read with its one relocation (an object's string offsets are the
        addends of .rela.debug_info; relocating every debug section costs seconds on a large unit); None
        when its form is another."""
        a = top.attributes.get("DW_AT_name")
        if a is None or a.form == "DW_FORM_string":
            return None if a is None else (a.value.decode("utf-8", "replace") if isinstance(a.value, bytes)
                                           else a.value)
        strings = {"DW_FORM_strp": ".debug_str", "DW_FORM_line_strp": ".debug_line_str"}.get(a.form)
        rela = self.elf.get_section_by_name(".rela.debug_info")
        if strings is None or rela is None or self.elf.get_section_by_name(strings) is None:
            return None
        for r_offset, r_info, r_addend in struct.iter_unpack("<QQq", rela.data()):
            if r_offset == a.offset:
                sym = self.symbols[r_info >> 32]
                data = self.elf.get_section_by_name(strings).data()
                at = sym["st_value"] + r_addend
                return data[at:data.index(b"\0", at)].decode("utf-8", "replace")
        return None

    def _check_sections(self):
        for name, (_sym, shndx) in self.functions.items():
            sec = self.sections[shndx]
            if sec.name != ".text." + name and not sec.name.startswith(".text." + name + "."):
                raise GenerateError("object file %s: function %s is in section %s, not .text.%s: build the patch "
                                    "with -ffunction-sections -fdata-sections" % (self.path, name, sec.name, name))
        for s in self.symbols:
            if s["st_info"]["type"] == "STT_OBJECT" and isinstance(s["st_shndx"], int) and s["st_shndx"]:
                sec = self.sections[s["st_shndx"]].name
                if sec in (".data", ".bss", ".rodata", ".data.rel", ".data.rel.local", ".data.rel.ro",
                           ".data.rel.ro.local"):
                    raise GenerateError("object file %s: variable %s is in section %s: build the patch with "
                                        "-ffunction-sections -fdata-sections" % (self.path, s.name, sec))

    def section_symbols(self, shndx):
        """Named FUNC/OBJECT symbols defined in section ``shndx``."""
        return [s for s in self.symbols if s["st_shndx"] == shndx and s.name
                and s["st_info"]["type"] in ("STT_FUNC", "STT_OBJECT")]

    def section_bytes(self, shndx):
        sec = self.sections[shndx]
        if sec["sh_type"] == "SHT_NOBITS":
            return b"\0" * sec["sh_size"]
        return sec.data()

    def entity(self, rel):
        """(symbol, offset of the symbol in its section, section index) a relocation refers to, or None.

        A section symbol stands for the one named symbol of its section (-fdata-sections)."""
        sym = self.symbols[rel["r_info_sym"]]
        kind = sym["st_info"]["type"]
        shndx = sym["st_shndx"]
        if not isinstance(shndx, int) or shndx == 0:
            return None  # undefined: the binder's business (GOT / PLT slots)
        if kind == "STT_SECTION":
            named = self.section_symbols(shndx)
            if not named:
                return None  # string literals and other anonymous data: the patch's own
            if len(named) > 1:
                at = rel["r_addend"] + 4
                named = [s for s in named if s["st_value"] <= at < s["st_value"] + max(s["st_size"], 1)] or named
            s = named[0]
            return s, s["st_value"], shndx
        if kind in ("STT_FUNC", "STT_OBJECT"):
            return sym, 0, shndx
        return None

    def signature(self, func_name):
        """What makes a function's code what it is: bytes with relocation fields masked, and its relocations."""
        sym, shndx = self.functions[func_name]
        code = bytearray(self.section_bytes(shndx))
        rels = []
        for r in sorted(self.relocs.get(shndx, ()), key=lambda r: r["r_offset"]):
            size = _FIELD_SIZE.get(r["r_info_type"], 4)
            code[r["r_offset"]:r["r_offset"] + size] = b"\0" * size
            key = self._target_key(r)
            # Anonymous data is keyed by its content (its addend is where it lies, see _target_key).
            anonymous = isinstance(key, tuple) and len(key) == 2
            rels.append((r["r_offset"], r["r_info_type"], key, None if anonymous else r["r_addend"]))
        return bytes(code), rels

    def _anonymous_items(self, shndx):
        """Where the items of anonymous data section ``shndx`` start: every offset the object's code and
        data point at (string literals and constants of -O0 code have no symbols of their own)."""
        items = self.__dict__.setdefault("_items", {})
        if shndx not in items:
            starts = {0, len(self.section_bytes(shndx))}
            for owner, rels in self.relocs.items():
                if self.sections[owner]["sh_flags"] & 2:  # SHF_ALLOC: code and data, not DWARF
                    starts.update(r["r_addend"] + 4 for r in rels
                                  if self.symbols[r["r_info_sym"]]["st_shndx"] == shndx)
            items[shndx] = sorted(starts)
        return items[shndx]

    def _target_key(self, r):
        sym = self.symbols[r["r_info_sym"]]
        if sym["st_info"]["type"] != "STT_SECTION":
            return sym.name
        sec = self.sections[sym["st_shndx"]] if isinstance(sym["st_shndx"], int) else None
        if sec is None:
            return "?"
        if self.section_symbols(sym["st_shndx"]):
            return sec.name
        # Anonymous data (string literals, constants): what the code points at, up to the next item any
        # code points at, trailing padding left out; not where it lies, which moves when an earlier
        # item of the unit changes.
        data = self.section_bytes(sym["st_shndx"])
        at = r["r_addend"] + 4
        if 0 <= at < len(data):
            items = self._anonymous_items(sym["st_shndx"])
            end = items[bisect.bisect_right(items, at)] if at < items[-1] else len(data)
            return (sec.name, bytes(data[at:end]).rstrip(b"\0"))
        return (sec.name, "outside", r["r_addend"])


class AutoBinding:
    """The auto-mode decisions for a patch: functions to redirect and static fix-ups."""

    def __init__(self, target, patch, objects, originals=()):
        self.t = target
        self.p = patch
        self.units = [ObjectUnit(o) for o in objects]
        self.originals = {}
        for o in originals:
            u = ObjectUnit(o)
            key = os.path.basename(u.name)
            if key in self.originals:
                raise GenerateError("two unpatched objects for unit %s: %s and %s"
                                    % (u.name, self.originals[key].path, o))
            self.originals[key] = u
        names = [os.path.basename(u.name) for u in self.units]
        for key, u in self.originals.items():
            if key not in names:
                raise GenerateError("unpatched object %s (unit %s) matches none of the patch's objects (%s)"
                                    % (u.path, u.name, ", ".join(names)))
        self.rebound_data = set()  # patch link-time addresses of variables rebound to the target

    def defines(self, name):
        """True when one of the patch's units defines global ``name``."""
        return any(s.name == name and s["st_info"]["bind"] != "STB_LOCAL" and isinstance(s["st_shndx"], int)
                   and s["st_shndx"] for u in self.units for s in u.symbols)

    # ------------------------------------------------------------------ units

    def _target_cu(self, unit):
        cus = self.t.cus_for(unit.name)
        if len(cus) != 1:
            raise GenerateError("auto mode: unit %s (%s) %s in the target" % (
                unit.name, unit.path, "has no compile unit" if not cus else
                "matches %d compile units (%s)" % (len(cus), ", ".join(c.path for c in cus))))
        return cus[0]

    def _patch_cu(self, unit):
        cus = self.p.dwarf.find_cus(unit.name)
        if len(cus) != 1:
            raise GenerateError("auto mode: unit %s of %s %s in the patch %s" % (
                unit.name, unit.path, "is not" if not cus else "is %d times" % len(cus), self.p.image.path))
        return cus[0]

    def _patch_symbol(self, unit, name, kind, local=None):
        """The patch .so's symbol for object symbol ``name`` of ``unit``: a local one matched by
        file; a global one as a global, or as the local the linker made of a hidden one."""
        if local is None:
            local = any(s.name == name and s["st_info"]["bind"] == "STB_LOCAL" for s in unit.symbols)
        base = os.path.basename(unit.file or unit.name)
        hits = [s for s in self.p.image.symtab if s.name == name and s.defined and s.type == kind]
        if local:
            hits = [s for s in hits if s.is_local and s.file and os.path.basename(s.file) == base]
        else:
            hits = [s for s in hits if not s.is_local] or [s for s in hits if s.is_local]
        if len({s.value for s in hits}) != 1:
            raise GenerateError("auto mode: %s of %s is %s in the patch %s" % (
                name, unit.path, "not" if not hits else "%d times" % len(hits), self.p.image.path))
        return hits[0]

    # ------------------------------------------------------------------ bind

    def bind(self, binder):
        """Decide redirections (into ``binder.jumps``) and return the StaticSym fix-ups."""
        fixups = []
        pcus = {}  # target CU offset -> (ObjectUnit, patch CU)
        for unit in self.units:
            tcu, pcu = self._target_cu(unit), self._patch_cu(unit)
            pcus[tcu.offset] = (unit, pcu)
            binder.explain.append("unit %s: object %s, target compile unit %s" % (unit.name, unit.path,
                                                                                display(tcu.path)))
            self._bind_functions(binder, unit, tcu, pcu)
            fixups += self._fixups(binder, unit, tcu)
        self._follow_copies(binder, pcus)
        self._check_header_copies(binder, pcus)
        self._rebind_globals(binder)
        seen = {}
        for f in fixups:
            if seen.setdefault(f.patch_address, f) != f:
                raise GenerateError("auto mode: two fix-ups for the field at %#x" % f.patch_address)
        return sorted(seen.values(), key=lambda f: f.patch_address)

    def _rebind_globals(self, binder):
        """Global variables the units define that the target has: the binder binds the patch's
        references to the target's (global_symbols for an executable, the target's export for a
        library), so the patch's copies are not data of its own."""
        for unit in self.units:
            for s in unit.symbols:
                if s["st_info"]["type"] != "STT_OBJECT" or s["st_info"]["bind"] == "STB_LOCAL" \
                        or not isinstance(s["st_shndx"], int) or not s["st_shndx"]:
                    continue
                psym = self._patch_symbol(unit, s.name, "STT_OBJECT", False)
                if binder.target_global(s.name, "STT_OBJECT") is not None:
                    self.rebound_data.add(psym.value)
                    binder.explain.append("global %s (%s): the target's, bound by the binder"
                                          % (s.name, unit.name))

    def _bind_functions(self, binder, unit, tcu, pcu):
        orig = self.originals.get(os.path.basename(unit.name))
        if orig is None:
            binder.warn("auto mode: no unpatched object for unit %s (--original): every function of it that the "
                        "target has is redirected, changed or not" % unit.name)
        for pf in [f for f in self.p.functions() if f.cu.offset == pcu.offset]:
            where = "%s:%s" % (display(pf.decl_file), pf.decl_line) if pf.decl_line else display(pf.decl_file)
            tf = self._target_function(pf, tcu, where)
            changed = not (orig is not None and pf.name in orig.functions and pf.name in unit.functions
                           and orig.signature(pf.name) == unit.signature(pf.name))
            if tf is None and changed and not pf.external and binder.note_inlined_only(pf, tcu, where):
                continue  # its inlining callers are redirected by _follow_copies
            if tf is None:
                binder.explain.append("helper %s: new code at patch %#x (%s)" % (pf.name, pf.entry, where))
                continue
            binder._refuse_prototype_change(pf.name, pf, tf, where)
            if orig is not None and pf.name in orig.functions and pf.name in unit.functions \
                    and orig.signature(pf.name) == unit.signature(pf.name):
                binder.explain.append("unchanged %s (%s): same code as in %s; not redirected"
                                      % (pf.name, where, orig.path))
                continue
            jump = binder._jump(pf, tf, pf.name, where)
            binder.jumps[pf.die_offset] = (jump, tf)
            frags = " ".join("%#x-%#x" % r for r in jump.fragments)
            binder.explain.append("function %s: target %#x (%s, %d bytes, fragments %s) -> patch %s %#x (%s)%s"
                                  % (pf.name, jump.func_value, display(tcu.path), jump.func_size, frags, pf.name,
                                     pf.entry, where, "" if orig is not None else " [no --original]"))
        if not binder.jumps and orig is not None:
            binder.explain.append("unit %s: no function changed" % unit.name)

    def _follow_copies(self, binder, pcus):
        """Redirect, transitively, every function of a patched unit whose target code keeps old code
        of a redirected function (an inlined copy, a call to a clone): the patch's unit has its new
        code.  What cannot be redirected (main, noreturn, clones, functions the unit does not
        define) is left to the binder's check, which refuses it."""
        while True:
            added = False
            for uc, h in binder.stale_copies():
                if h.clone or h.never_returns or uc.unit.cu_info.offset not in pcus:
                    continue
                _unit, pcu = pcus[uc.unit.cu_info.offset]
                tf = uc.info(h.idx)
                pfs = [f for f in self.p.functions() if f.cu.offset == pcu.offset and f.name == h.name
                       and tf is not None and f.external == tf.external]
                if len(pfs) != 1 or pfs[0].die_offset in binder.jumps:
                    continue
                pf = pfs[0]
                where = "%s:%s" % (display(pf.decl_file), pf.decl_line) if pf.decl_line else display(pf.decl_file)
                binder._refuse_prototype_change(pf.name, pf, tf, where)
                jump = binder._jump(pf, tf, pf.name, where)
                binder.jumps[pf.die_offset] = (jump, tf)
                binder.explain[:] = [x for x in binder.explain if not x.startswith("unchanged %s (" % pf.name)]
                binder.explain.append("function %s: target %#x (%s) -> patch %s %#x (%s) [added: its target code "
                                      "%s]" % (pf.name, jump.func_value, h.where, pf.name, pf.entry, where,
                                               "; ".join(h.reasons)))
                added = True
            if not added:
                return

    def _check_header_copies(self, binder, pcus):
        """A redirected static function defined in a header (a static inline helper) has a copy in
        every target unit that includes it; the copies of the units the patch does not hold keep
        the old code: refuse, naming them, unless stale copies are accepted."""
        from gdb_nsb.generator.paths import same_source

        for _jump, tf in list(binder.jumps.values()):
            if tf.external or not tf.decl_file or same_source(tf.decl_file, tf.cu.path) \
                    or same_source(tf.decl_file, tf.cu.name):
                continue
            others = [f for f in self.t.functions(tf.name) if not f.external and f.cu.offset not in pcus
                      and f.decl_file and same_source(f.decl_file, tf.decl_file)]
            units = sorted({display(self.t.cu_path(f.cu)) for f in others})
            if not units:
                continue
            text = ("function %s (%s:%s) is defined in a header and changed: the copies in %s keep the old "
                    "code" % (tf.name, display(tf.decl_file), tf.decl_line, ", ".join(units)))
            if not binder.allow_stale_copies:
                raise GenerateError("%s; patch those units too (give their objects), or accept the stale copies "
                                    "with --allow-stale-copies" % text)
            binder.stale.extend("%s in %s (copy of %s:%s)" % (tf.name, u, display(tf.decl_file), tf.decl_line)
                                for u in units)
            binder.explain.append("stale (accepted by --allow-stale-copies): " + text)

    def _binder_not_clones(self, infos, name):
        own = [f for f in infos if any(s.name == name for s in self.t.function_symbols_at(f.entry))]
        return own if own else infos

    def _target_function(self, pf, tcu, where):
        if pf.external:
            cands = [f for f in self.t.functions(pf.name) if f.external]
        else:
            cands = [f for f in self.t.functions(pf.name, cu=tcu) if not f.external]
        by_entry = {f.entry: f for f in self._binder_not_clones(cands, pf.name)}
        if len(by_entry) > 1:
            raise GenerateError("function %s (%s): the target defines it %d times (%s)"
                                % (pf.name, where, len(by_entry), ", ".join("%#x" % e for e in by_entry)))
        return next(iter(by_entry.values()), None)

    # ------------------------------------------------------------------ fix-ups

    def _fixups(self, binder, unit, tcu):
        out = []
        resolved = {}  # (symbol name, kind) -> (target address | None, patch address)
        for fname, (fsym, shndx) in sorted(unit.functions.items()):
            base = self._patch_symbol(unit, fname, "STT_FUNC", fsym["st_info"]["bind"] == "STB_LOCAL").value \
                - fsym["st_value"]
            for r in sorted(unit.relocs.get(shndx, ()), key=lambda r: r["r_offset"]):
                size = _PC_RELATIVE.get(r["r_info_type"])
                if size is None:
                    continue
                ent = unit.entity(r)
                if ent is None:
                    continue
                sym, offset_in_section, _sec = ent
                kind = sym["st_info"]["type"]
                key = (sym.name, kind)
                if key not in resolved:
                    resolved[key] = self._rebind(binder, unit, tcu, sym, kind)
                t_addr, p_addr = resolved[key]
                if t_addr is None:
                    continue
                field = base + r["r_offset"]
                addend = r["r_addend"]
                # What the linker wrote for the patch's own copy: if the .so holds anything
                # else (a PLT stub, other objects), this field is not ours to rewrite.
                linked = (p_addr - offset_in_section + addend - field) % (1 << (8 * size))
                have = int.from_bytes(self.p.image.read_vaddr(field, size), "little")
                if have != linked:
                    if sym["st_info"]["bind"] == "STB_LOCAL":
                        raise GenerateError("auto mode: %s of %s does not match the patch %s (the field at %#x "
                                            "for %s holds %#x, the object implies %#x): give the objects the "
                                            "patch was linked from" % (fname, unit.path, self.p.image.path, field,
                                                                       sym.name, have, linked))
                    continue  # a global reached through the PLT: bound by the binder
                value = (t_addr - offset_in_section + addend - field) % _U64
                out.append(StaticSym(patch_size=size, patch_address=field, target_value=value))
                binder.explain.append("fix-up %#x (%d bytes, %s+%d in %s) -> target %s %#x"
                                      % (field, size, fname, r["r_offset"], unit.name, sym.name, t_addr))
        return out

    def _rebind(self, binder, unit, tcu, sym, kind):
        """(target address or None, patch address) of object symbol ``sym``."""
        local = sym["st_info"]["bind"] == "STB_LOCAL"
        psym = self._patch_symbol(unit, sym.name, kind, local)
        if kind == "STT_FUNC":
            cands = (self.t.functions(sym.name, cu=tcu) if local else self.t.functions(sym.name))
            cands = [f for f in cands if f.external != local]
            if len({f.entry for f in cands}) != 1:
                return None, psym.value  # new in the patch (or not the target's): keep the patch's copy
            found = checks.callee_problem(self.t, cands[0], sym.name, binder._unit)
            if found is not None:
                # The target's code is a clone or was specialised for its old callers' values: the
                # patch's own -O0 copy (its statics rebound like every function's) assumes nothing.
                binder.explain.append("function %s (%s): the patch keeps its own copy: %s"
                                      % (sym.name, unit.name, found[1]))
                return None, psym.value
            return cands[0].entry, psym.value
        v = self.p.variable_at(sym.name, psym.value)
        if v is None:
            return None, psym.value
        if local:
            cands = [x for x in self.t.variables(v.name, cu=tcu, function=v.function)
                     if x.function == v.function and not x.external]
        else:
            cands = [x for x in self.t.variables(v.name) if x.external and x.function is None]
        if len({x.address for x in cands}) != 1:
            return None, psym.value
        tv = cands[0]
        diff = binder._variable_type_difference(tv, v)
        if diff:
            raise GenerateError("variable %s (patch %s, target %s): type differs: %s"
                                % (v.name, "%s:%s" % (display(v.decl_file), v.decl_line), binder._twhere(tv), diff))
        self.rebound_data.add(psym.value)
        where = "in %s()" % v.function if v.function else "file scope"
        binder.explain.append("%s %s (%s, %s) -> target %#x" % ("static" if local else "variable", v.name, where,
                                                               unit.name, tv.address))
        return tv.address, psym.value


__all__ = ["AutoBinding", "ObjectUnit"]
