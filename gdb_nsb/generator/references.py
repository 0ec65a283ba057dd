"""Binding the ``vzp.h`` references of a patch to the target (REFERENCE.md section 4).

Each record (``VZP_STATIC_VAR_REF``, ``VZP_HIDDEN_FUNC_REF`` ...) names a
target object by name, compile unit (``VZP_FILE`` or the macro's file),
enclosing function (a function-local static) and visibility; this module
finds its link-time address in the target, checks the declared type against
the target's, and turns the patch's undefined symbol for it into a
``MarkedSym`` (``manual_symbols``).  Plain ``extern`` declarations of target
globals get their type checked here too.
"""

from __future__ import annotations

import os

from gdb_nsb.elf.livepatch import MarkedSym
from gdb_nsb.errors import GenerateError
from gdb_nsb.generator import dwarf_types
from gdb_nsb.generator.paths import display, where as _where

VISIBILITY_OF = {"hidden": "STV_HIDDEN", "protected": "STV_PROTECTED", "internal": "STV_INTERNAL"}


def _hex(v):
    return "%#x" % v


class References:
    """The vzp.h references of the patch a binder (manual._Binder) works on."""

    def __init__(self, binder):
        self.b = binder

    def _check_reference_type(self, rec, name, addr):
        """A vzp.h reference's declared type against the target object it binds to."""
        pdie = self.b.p.declaration(rec.patch_symbol)
        if pdie is None:
            return
        where = _where(rec.source_file, rec.source_line)
        if rec.kind.endswith("_var"):
            tinfo = next((v for v in self.b.t.variables(name) if v.address == addr), None)
            if tinfo is None:
                return
            diff = self.b.types.type_difference(self.b.t.variable_type(tinfo), dwarf_types.type_of(pdie))
            if diff:
                raise GenerateError("variable %s (patch %s, target %s): type differs: %s"
                                    % (name, where, self.b._twhere(tinfo), diff))
        else:
            tinfo = next((f for f in self.b.t.functions(name) if f.entry == addr), None)
            if tinfo is None:
                return
            diff = self.b.types.prototype_difference(self.b.t.dwarf.die(tinfo.die_offset), pdie)
            if diff:
                raise GenerateError("function %s (patch %s, target %s): prototype differs: %s"
                                    % (name, where, self.b._twhere(tinfo), diff))

    def check_extern_variables(self):
        """Plain extern declarations of target globals: same type as the target's definition."""
        refs = {r.patch_symbol for r in self.b.p.references()}
        for pdie, cname, pwhere in self.b.p.extern_declarations():
            if cname in refs or pdie.tag != "DW_TAG_variable":
                continue
            defs = [v for v in self.b.t.variables(cname) if v.external and v.function is None]
            if len({v.address for v in defs}) != 1:
                continue
            diff = self.b.types.type_difference(self.b.t.variable_type(defs[0]), dwarf_types.type_of(pdie))
            if diff:
                raise GenerateError("variable %s (patch %s, target %s): type differs: %s"
                                    % (cname, pwhere, self.b._twhere(defs[0]), diff))


    def bind(self):
        resolved = {}  # patch symbol -> (addr, record)
        for rec in self.b.p.references():
            name = rec.target_name
            alias = self.b.p.reference_alias(rec)
            if alias is not None:
                name = alias.target_name
            addr, what = self._resolve(rec, name)
            self._check_reference_type(rec, name, addr)
            if rec.kind == "static_func":
                self.b.refuse_callee(rec, name, addr)
            prev = resolved.get(rec.patch_symbol)
            if prev is not None and prev[0] != addr:
                raise GenerateError("patch symbol %s means two things: %s (%s) and %s (%s); rename one of them"
                                    % (rec.patch_symbol, prev[1].target_name, _where(prev[1].source_file,
                                                                                    prev[1].source_line),
                                       rec.target_name, _where(rec.source_file, rec.source_line)))
            resolved[rec.patch_symbol] = (addr, rec)
            idx = self.b.p.dynsym_index(rec.patch_symbol)
            self.b.explain.append("reference %s (%s, %s) -> target %s %s%s"
                                % (rec.target_name, rec.kind, _where(rec.source_file, rec.source_line),
                                   _hex(addr), what,
                                   " [patch .dynsym %d %s]" % (idx, rec.patch_symbol) if idx is not None
                                   else " [unused by the patch code]"))
        self._refuse_shadowed_references(resolved)
        out = []
        for sym, (addr, _rec) in sorted(resolved.items()):
            idx = self.b.p.dynsym_index(sym)
            if idx is not None:
                out.append(MarkedSym(idx=idx, addr=addr))
        return out

    def _refuse_shadowed_references(self, resolved):
        """Two macros declaring one C name in a patch file are one object for C
        (block-scope externs share the file's linkage; gcc keeps the first
        assembler name and warns "asm declaration ignored").  If they mean
        different target objects, every use binds to the first: refuse."""
        groups = {}
        for _sym, (addr, rec) in resolved.items():
            key = (os.path.normpath(rec.source_file), rec.target_name)
            groups.setdefault(key, []).append((rec.source_line, addr, rec))
        for (_file, cname), items in groups.items():
            if len({addr for _l, addr, _r in items}) < 2:
                continue
            items.sort(key=lambda x: x[0])
            first, other = items[0][2], next(r for _l, a, r in items if a != items[0][1])
            raise GenerateError("%s at %s and at line %d mean different target objects, but C makes them one "
                                "symbol in a file; give the second its own name and a VZP_STATIC_SYM_ALIAS"
                                % (cname, _where(first.source_file, first.source_line), other.source_line))

    def _resolve(self, rec, name):
        """(target address, description) of what the record means."""
        where = _where(rec.source_file, rec.source_line)
        scope = rec.kind.split("_")[0]
        if scope == "static":
            if rec.kind == "static_var" and rec.function is not None:
                return self._resolve_local_static(rec, name, where)
            return self._resolve_static(rec, name, where)
        return self._resolve_visibility(rec, name, where, VISIBILITY_OF[scope])

    def _resolve_local_static(self, rec, name, where):
        entry = self.b.jumps.get(rec.function.die_offset)
        if entry is None:
            raise GenerateError("local static %s (%s): enclosing patch function %s replaces no target function, "
                                "so it has no local statics to refer to" % (name, where, rec.function.name))
        jump, tf = entry
        cands = [v for v in self.b.t.variables(name, cu=tf.cu, function=tf.name)
                 if v.function == tf.name]
        cands = _unique_by_address(cands)
        if len(cands) != 1:
            raise GenerateError("local static %s (%s): target function %s (%s) has %s"
                                % (name, where, tf.name, display(self.b.t.cu_path(tf.cu)),
                                   "no local static of that name" if not cands else
                                   "%d local statics of that name (%s)" % (len(cands), ", ".join(
                                       _hex(v.address) for v in cands))))
        v = cands[0]
        return v.address, "%s in %s() of %s" % (name, tf.name, display(self.b.t.cu_path(tf.cu)))

    def _resolve_static(self, rec, name, where):
        file = rec.file or None
        ctx = None
        if not file:
            ctx = self.b.p.context_before(rec.source_file, rec.source_line)
            file = ctx.file if ctx else None
        cus = None
        if file:
            cus = self.b.t.cus_for(file)
            if not cus:
                how = (" (binding context from VZP_FILE at %s)" % _where(ctx.source_file, ctx.source_line)
                       if ctx else "")
                raise GenerateError("%s %s (%s): the target has no compile unit %s%s"
                                    % (rec.kind, name, where, display(file), how))
        is_var = rec.kind == "static_var"
        cands = []
        for cu in (cus or [None]):
            if is_var:
                cands += [v for v in self.b.t.variables(name, cu=cu) if v.function is None]
            else:
                cands += self.b.t.functions(name, cu=cu)
        cands = _unique_by_address(cands)
        # Statics first; a global of that name is what the user means only
        # when there is no static.
        statics = [c for c in cands if not c.external]
        cands = statics or cands
        what = "variable" if is_var else "function"
        if not cands:
            others = self.b.t.variables(name) if is_var else self.b.t.functions(name)
            hint = (" (the target has one in %s)" % self.b._cu_list(others)) if others and file else ""
            raise GenerateError("static %s %s (%s) not found in the target%s%s"
                                % (what, name, where, " compile unit " + display(file) if file else "", hint))
        if len(cands) > 1:
            raise GenerateError("static %s %s (%s) is ambiguous: defined in %s; name the file (VZP_FILE or the "
                                "macro's last argument)" % (what, name, where, self.b._cu_list(cands)))
        c = cands[0]
        addr = c.address if is_var else c.entry
        return addr, "%s in %s" % (name, display(self.b.t.cu_path(c.cu)))

    def _resolve_visibility(self, rec, name, where, visibility):
        want_type = "STT_OBJECT" if rec.kind.endswith("_var") else "STT_FUNC"
        syms = [s for s in self.b.t.symbols(name) if s.defined and s.type in (want_type, "STT_GNU_IFUNC")
                and (s.type == want_type or want_type == "STT_FUNC")]
        exact = _unique_by_value([s for s in syms if s.visibility == visibility])
        if not exact:
            # The static linker turns hidden and internal symbols into
            # STB_LOCAL and may reset their visibility; DWARF still calls
            # them external, which a true static is not.
            exact = _unique_by_value([s for s in syms if s.is_local and self.b.t.is_external_at(name, s.value)])
        kind_word = visibility[4:].lower()
        if len(exact) == 1:
            s = exact[0]
            return s.value, "%s (%s %s)" % (name, kind_word, "variable" if want_type == "STT_OBJECT" else "function")
        if not exact:
            other = ", ".join("%s %s at %s" % (s.visibility[4:].lower(), s.bind[4:].lower(), _hex(s.value))
                              for s in syms)
            raise GenerateError("%s %s (%s) not found in the target's symbol table%s"
                                % (kind_word, name, where, " (it has: %s)" % other if other else ""))
        raise GenerateError("%s %s (%s) is ambiguous: the target has it at %s"
                            % (kind_word, name, where, ", ".join(_hex(s.value) for s in exact)))



def _unique_by_address(infos):
    seen = {}
    for i in infos:
        key = getattr(i, "address", None)
        if key is None:
            key = i.entry
        seen.setdefault(key, i)
    return list(seen.values())


def _unique_by_value(syms):
    seen = {}
    for s in syms:
        seen.setdefault(s.value, s)
    return list(seen.values())


__all__ = ["References", "VISIBILITY_OF"]
