"""Manual-mode generator: bind a patch built with ``vzp.h`` to its target.

Input: the target ELF (with its debug information, in itself or in a
separate debug file) and the patch ``.so`` (built ``-O0 -g -fPIC -shared``).
Output: a :class:`~gdb_nsb.elf.livepatch.LivePatch` whose

* ``func_jumps`` redirect every target function the patch redefines,
* ``manual_symbols`` pre-resolve every ``vzp.h`` reference (statics,
  function-local statics, hidden / protected / internal symbols),
* ``global_symbols`` pre-resolve the patch's plain ``extern`` references
  to globals an executable target defines (a shared library target leaves
  them to run-time lookup, which honours interposition),

plus one line per decision for ``--explain``.  Every refusal is a
:class:`GenerateError` (or :class:`DebugInfoError`) naming the symbol, the
patch source line and the candidates.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from gdb_nsb.elf.image import SHF_WRITE
from gdb_nsb.elf.livepatch import FORMAT_VERSION, FuncJump, LivePatch, MarkedSym
from gdb_nsb.errors import GenerateError
from gdb_nsb.generator import checks, dwarf_types, inputs
from gdb_nsb.generator.paths import display

ENDBR64 = b"\xf3\x0f\x1e\xfa"
JMP_REL32_SIZE = 5  # E9 rel32
JMP_ABS_SIZE = 14  # FF 25 00000000 imm64

VAR_KINDS = ("static_var", "hidden_var", "protected_var", "internal_var")
FUNC_KINDS = ("static_func", "hidden_func", "protected_func", "internal_func")
VISIBILITY_OF = {"hidden": "STV_HIDDEN", "protected": "STV_PROTECTED", "internal": "STV_INTERNAL"}

# Sections that are writable only while the dynamic linker relocates them
# (RELRO); data there is read-only for the program, so a patch may have it.
_RELRO_SECTIONS = (".data.rel.ro", ".init_array", ".fini_array", ".got", ".dynamic", ".preinit_array")


@dataclass
class Generation:
    """The result of binding: the section contents and the audit trail."""

    livepatch: LivePatch
    explain: list = field(default_factory=list)  # one line per decision
    warnings: list = field(default_factory=list)  # one line each; errors with strict=True


def generate(target_path, patch_path, debug_file=None, debug_dirs=None, strict=False, allow_ipa_ra=False,
             mode="manual", objects=(), originals=()) -> Generation:
    """Bind the patch at ``patch_path`` to the target at ``target_path``.

    ``debug_file`` names the target's separate debug file; otherwise the
    target's own DWARF, then its build-id / debuglink files under
    ``debug_dirs`` (default: the system's debug directories) are used.

    ``strict``: warnings (inlined copies, clones) become a GenerateError.
    ``allow_ipa_ra``: replace functions whose unpatched same-unit callers
    were compiled with -fipa-ra / -fipa-pure-const anyway (a warning).
    ``mode="auto"``: the patch is whole compile units whose object files
    are ``objects`` (see :mod:`gdb_nsb.generator.auto`); ``originals`` are
    the unpatched units' objects, to redirect only changed functions.
    """
    if mode not in ("manual", "auto"):
        raise GenerateError("unknown generator mode %r (manual or auto)" % (mode,))
    if mode == "manual" and (objects or originals):
        raise GenerateError("object files are for --mode auto only")
    if mode == "auto" and not objects:
        raise GenerateError("--mode auto needs the patch's object files (built -g -ffunction-sections "
                            "-fdata-sections)")
    target = inputs.load_target(target_path, debug_file=debug_file, debug_dirs=debug_dirs)
    patch = inputs.load_patch(patch_path)
    auto_units = None
    if mode == "auto":
        from gdb_nsb.generator import auto
        auto_units = auto.AutoBinding(target, patch, objects, originals)
    return _Binder(target, patch, strict=strict, allow_ipa_ra=allow_ipa_ra, auto_units=auto_units).run()


def generate_file(target_path, patch_path, out=None, debug_file=None, debug_dirs=None, **options) -> Generation:
    """Generate and write: into ``patch_path`` itself (a ``vzpatch`` section,
    temporary file + rename), or, with ``out``, the raw section bytes to ``out``.
    ``options`` are those of :func:`generate`."""
    gen = generate(target_path, patch_path, debug_file=debug_file, debug_dirs=debug_dirs, **options)
    if out is None:
        gen.livepatch.write_into(patch_path)
    else:
        _write_atomically(out, gen.livepatch.to_bytes())
    return gen


def _write_atomically(path, data):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise GenerateError("cannot write %s: %s" % (path, e.strerror or e)) from e


def _where(file, line):
    return "%s:%s" % (display(file), line) if line else display(file)


def _hex(v):
    return "%#x" % v


class _Binder:
    """One generation run: everything it decides, with the reasons."""

    def __init__(self, target: inputs.Target, patch: inputs.Patch, strict=False, allow_ipa_ra=False,
                 auto_units=None):
        self.t = target
        self.p = patch
        self.strict = strict
        self.allow_ipa_ra = allow_ipa_ra
        self.auto = auto_units
        self.explain = []
        self.warnings = []
        self.jumps = {}  # patch function die_offset -> (FuncJump, target FunctionInfo)
        self._units = {}  # target CU offset -> checks.UnitCode

    # ------------------------------------------------------------------ run

    def run(self) -> Generation:
        self._refuse_lto_and_languages()
        static_fixups = []
        if self.auto is not None:
            static_fixups = self.auto.bind(self)
        self._refuse_writable_data()
        if self.auto is None:
            self._bind_functions()
        self._check_replacements()
        manual = self._bind_references()
        globals_ = self._bind_globals({m.idx for m in manual})
        self._check_extern_variables()
        if self.warnings and self.strict:
            raise GenerateError("refused with --strict: %s" % "; ".join(self.warnings))
        t = self.t.image
        lp = LivePatch(
            old_bid=t.build_id,
            new_bid=self.p.image.build_id,
            new_path=os.path.abspath(self.p.image.path),
            func_jumps=[j for j, _ in sorted(self.jumps.values(), key=lambda x: x[0].func_value)],
            manual_symbols=sorted(manual, key=lambda m: m.idx),
            static_symbols=static_fixups,
            global_symbols=sorted(globals_, key=lambda m: m.idx),
            format_version=FORMAT_VERSION,
            target_name=t.soname or os.path.basename(t.path),
            target_is_executable=t.is_executable,
        )
        problem = lp.problem()
        if problem:  # a bug of ours, never the user's input
            raise GenerateError("generated an invalid vzpatch section: %s" % problem)
        return Generation(lp, self.explain, self.warnings)

    def warn(self, text):
        self.warnings.append(text)
        self.explain.append("warning: " + text)

    # ---------------------------------------------------------- functions

    def _bind_functions(self):
        any_replaced = False
        for pf in self.p.functions():
            alias = self.p.function_alias(pf)
            name = alias.target_name if alias else pf.name
            where = _where(pf.decl_file, pf.decl_line)
            ctx = self.p.context_before(pf.decl_file, pf.decl_line)
            if alias and not ctx:
                ctx = self.p.context_before(alias.source_file, alias.source_line)
            tf = self._target_function(name, ctx, pf, where, static_only=alias is not None)
            if tf is None:
                self.explain.append("helper %s: new code at patch %s (%s)" % (pf.name, _hex(pf.entry), where))
                continue
            self._refuse_prototype_change(name, pf, tf, where)
            jump = self._jump(pf, tf, name, where)
            self.jumps[pf.die_offset] = (jump, tf)
            any_replaced = True
            frags = " ".join("%s-%s" % (_hex(lo), _hex(hi)) for lo, hi in jump.fragments)
            self.explain.append("function %s: target %s (%s, %d bytes, fragments %s) -> patch %s %s (%s)"
                                % (name, _hex(jump.func_value), display(self.t.cu_path(tf.cu)), jump.func_size,
                                   frags, pf.name, _hex(pf.entry), where))
        if not any_replaced:
            raise GenerateError("no functions to patch: none of the functions %s defines exists in %s"
                                % (self.p.image.path, self.t.image.path))

    def _target_function(self, name, ctx, pf, where, static_only):
        """The target function a patch function replaces, or None (new helper)."""
        cands = self._not_clones(self.t.functions(name), name)
        globals_ = [f for f in cands if f.external]
        statics = [f for f in cands if not f.external]
        if not pf.external and not static_only and statics:
            # A patch static is new code, not a replacement, when the target's
            # static of that name has another prototype (an unrelated function).
            keep = []
            for f in statics:
                diff = self._prototype_difference(f, pf)
                if diff is None:
                    keep.append(f)
                else:
                    self.explain.append("helper %s (%s): not a replacement of target static %s (%s): prototype "
                                        "differs: %s" % (pf.name, where, name, self._twhere(f), diff))
            statics = keep
            if not statics and not globals_:
                return None
        if ctx is not None and (static_only or not pf.external):
            in_ctx = self._in_file(statics, ctx.file)
            if len(in_ctx) == 1:
                return in_ctx[0]
            if len(in_ctx) > 1:
                raise GenerateError("function %s (%s): %d static functions of that name in %s"
                                    % (name, where, len(in_ctx), display(ctx.file)))
        if globals_ and not static_only:
            if len(globals_) > 1:
                raise GenerateError("function %s (%s): defined globally %d times in the target (%s)"
                                    % (name, where, len(globals_), self._cu_list(globals_)))
            return globals_[0]
        if not statics:
            if static_only:
                raise GenerateError("function %s (%s): alias names target static %s, which the target does "
                                    "not have" % (pf.name, where, name))
            return None
        if ctx is not None:
            in_ctx = self._in_file(statics, ctx.file)
            if not in_ctx:
                raise GenerateError("function %s (%s): binding context %s (VZP_FILE at %s) has no static %s; "
                                    "the target has it in %s" % (name, where, display(ctx.file),
                                                                 _where(ctx.source_file, ctx.source_line),
                                                                 name, self._cu_list(statics)))
            return in_ctx[0]
        if len(statics) > 1:
            raise GenerateError("function %s (%s) is ambiguous: static in %s; say which with VZP_FILE(\"file\") "
                                "before it" % (name, where, self._cu_list(statics)))
        return statics[0]

    def _jump(self, pf, tf, name, where):
        t = self.t
        entry = tf.entry
        sym = t.function_symbol(name, entry)
        size = sym.size if sym is not None and sym.size else next(
            (hi - lo for lo, hi in tf.ranges if lo <= entry < hi), 0)
        sec = t.image.section_for_addr(entry)
        if sec is None or not size:
            raise GenerateError("function %s (%s): target entry %s is not inside a section of %s"
                                % (name, where, _hex(entry), t.image.path))
        head = t.image.read_vaddr(entry, min(size, len(ENDBR64)))
        prefix = len(ENDBR64) if head == ENDBR64 else 0
        if size - prefix < JMP_REL32_SIZE:
            raise GenerateError("function %s (%s): target function is %d bytes%s, too short for a %d-byte jump"
                                % (name, where, size, " after endbr64" if prefix else "", JMP_REL32_SIZE))
        fragments = sorted(set((lo, hi) for lo, hi in tf.ranges if hi > lo))
        if not any(lo <= entry < hi for lo, hi in fragments):
            fragments = sorted(fragments + [(entry, entry + size)])
        # The bytes a jump may overwrite, never past the function's own end:
        # beyond it lies another function that may be patched independently.
        entry_bytes = t.image.read_vaddr(entry, min(size, prefix + JMP_ABS_SIZE))
        return FuncJump(name=name, func_value=entry, func_size=size, patch_value=pf.entry, shndx=sec.index,
                        fragments=fragments, entry_bytes=entry_bytes)

    # ------------------------------------------------------------- checks

    def _twhere(self, info):
        """The target definition of a FunctionInfo / VariableInfo as file:line."""
        return _where(info.decl_file or self.t.cu_path(info.cu), info.decl_line)

    def _prototype_difference(self, tf, pf):
        return dwarf_types.prototype_difference(self.t.dwarf.die(tf.die_offset), self.p.dwarf.die(pf.die_offset))

    def _refuse_prototype_change(self, name, pf, tf, where):
        diff = self._prototype_difference(tf, pf)
        if diff:
            raise GenerateError("function %s (patch %s, target %s): prototype differs: %s"
                                % (name, where, self._twhere(tf), diff))

    def _refuse_lto_and_languages(self):
        for image, dwarf, what in ((self.t.debug_image, self.t.dwarf, "target"),
                                   (self.p.image, self.p.dwarf, "patch")):
            problem = checks.lto_problem(image, dwarf, what)
            if problem:
                raise GenerateError(problem)
        if self.t.debug_image is not self.t.image and checks.lto_sections(self.t.image):
            raise GenerateError(checks.lto_problem(self.t.image, self.t.dwarf, "target"))
        for cu in self.p.dwarf.compile_units():
            if cu.name and os.path.basename(cu.name) in self.p.own_source_names() and cu.language is not None:
                problem = checks.language_problem(cu, "patch")
                if problem and self._cu_has_code(cu):
                    raise GenerateError(problem)

    def _cu_has_code(self, cu):
        return any(f.cu.offset == cu.offset for f in self.p.functions())

    def _unit(self, tf):
        u = self._units.get(tf.cu.offset)
        if u is None:
            u = self._units[tf.cu.offset] = checks.UnitCode(self.t, tf.cu, tf.die_offset)
        return u

    def _check_replacements(self):
        """Language, identical code folding, IPA callers, inlined copies and clones of every replaced function."""
        replaced = {j.func_value for j, _tf in self.jumps.values()}
        for pf_off, (jump, tf) in sorted(self.jumps.items(), key=lambda kv: kv[1][0].func_value):
            pf = next(f for f in self.p.functions() if f.die_offset == pf_off)
            where = _where(pf.decl_file, pf.decl_line)
            head = "function %s (patch %s, target %s)" % (jump.name, where, self._twhere(tf))
            problem = checks.language_problem(tf.cu, "target")
            if problem:
                raise GenerateError("%s: %s" % (head, problem))
            folded = checks.folded_with(self.t, jump.name, jump.func_value)
            if folded:
                raise GenerateError("%s shares its code at %s with %s (identical code folding or an alias): "
                                    "redirecting it would redirect %s too; rebuild the target with -fno-ipa-icf "
                                    "(and no --icf link option)" % (head, _hex(jump.func_value), ", ".join(folded),
                                                                    "them" if len(folded) > 1 else "it"))
            # Walking the whole unit's DIEs is slow on big units (10,000 functions: minutes); skip it
            # when neither check can find anything: no IPA assumptions whatever the call sites say,
            # and a function never inlined (gcc gives every inlined function an abstract origin).
            quiet = (not checks.ipa_assumptions(tf.cu.producer, False) and
                     not checks.ipa_assumptions(tf.cu.producer, True) and
                     "DW_AT_abstract_origin" not in self.t.dwarf.die(tf.die_offset).attributes)
            unit = None if quiet else self._unit(tf)
            assumed = checks.ipa_assumptions(tf.cu.producer, unit.has_call_sites) if unit is not None else []
            if assumed:
                callers = [i for i in unit.callers(tf.die_offset, tf.entry) if unit.entry_of(i) not in replaced]
                if callers:
                    names = ", ".join(sorted({unit.function_name(i) for i in callers}))
                    text = ("%s has callers in its compile unit that the patch does not replace: %s; %s was "
                            "compiled with %s (no -flive-patching=inline-clone), so they may rely on the old "
                            "code's register use or purity" % (head, names, display(self.t.cu_path(tf.cu)),
                                                                " and ".join(assumed)))
                    if not self.allow_ipa_ra:
                        raise GenerateError(text + "; replace them too, or override with --allow-ipa-ra")
                    self.warn(text + " (allowed by --allow-ipa-ra)")
            inl = [i for i in unit.inlined_into(tf.die_offset) if unit.entry_of(i) not in replaced] if unit else []
            if inl:
                self.warn("%s is also inlined into %s, which the patch does not replace: those copies keep the "
                          "old code" % (head, ", ".join(sorted({unit.function_name(i) for i in inl}))))
            clones = checks.clone_symbols(self.t, jump.name, tf.ranges, self.t.cu_path(tf.cu))
            clones = [c for c in clones if not any(s.value in replaced for s in self.t.symbols(c))]
            if clones:
                self.warn("%s also exists as compiler clones %s, which keep the old code"
                          % (head, ", ".join(clones)))

    def _variable_type_difference(self, tinfo, pinfo):
        """Type difference between a target and a patch VariableInfo (None: same)."""
        return dwarf_types.type_difference(self.t.variable_type(tinfo),
                                           dwarf_types.type_of(self.p.dwarf.die(pinfo.die_offset)))

    def target_global(self, name, kind):
        """The target's global definition of ``name`` the binder will bind a patch definition to, or None:
        for an executable its .symtab global (pre-resolved in global_symbols), for a library its export."""
        if self.t.image.is_executable:
            defs = [s for s in self.t.symbols(name) if s.defined and not s.is_local
                    and s.bind in ("STB_GLOBAL", "STB_WEAK") and s.type == kind]
        else:
            defs = [s for s in self.t.image.dynsyms if s.name == name and s.defined and s.type == kind
                    and s.bind in ("STB_GLOBAL", "STB_WEAK") and s.visibility in ("STV_DEFAULT", "STV_PROTECTED")]
        strong = [s for s in defs if s.bind == "STB_GLOBAL"] or defs
        return strong[0] if strong else None

    def _check_reference_type(self, rec, name, addr):
        """A vzp.h reference's declared type against the target object it binds to."""
        pdie = self.p.declaration(rec.patch_symbol)
        if pdie is None:
            return
        where = _where(rec.source_file, rec.source_line)
        if rec.kind.endswith("_var"):
            tinfo = next((v for v in self.t.variables(name) if v.address == addr), None)
            if tinfo is None:
                return
            diff = dwarf_types.type_difference(self.t.variable_type(tinfo), dwarf_types.type_of(pdie))
            if diff:
                raise GenerateError("variable %s (patch %s, target %s): type differs: %s"
                                    % (name, where, self._twhere(tinfo), diff))
        else:
            tinfo = next((f for f in self.t.functions(name) if f.entry == addr), None)
            if tinfo is None:
                return
            diff = dwarf_types.prototype_difference(self.t.dwarf.die(tinfo.die_offset), pdie)
            if diff:
                raise GenerateError("function %s (patch %s, target %s): prototype differs: %s"
                                    % (name, where, self._twhere(tinfo), diff))

    def _check_extern_variables(self):
        """Plain extern declarations of target globals: same type as the target's definition."""
        refs = {r.patch_symbol for r in self.p.references()}
        for pdie, cname, pwhere in self.p.extern_declarations():
            if cname in refs or pdie.tag != "DW_TAG_variable":
                continue
            defs = [v for v in self.t.variables(cname) if v.external and v.function is None]
            if len({v.address for v in defs}) != 1:
                continue
            diff = dwarf_types.type_difference(self.t.variable_type(defs[0]), dwarf_types.type_of(pdie))
            if diff:
                raise GenerateError("variable %s (patch %s, target %s): type differs: %s"
                                    % (cname, pwhere, self._twhere(defs[0]), diff))

    def _not_clones(self, infos, name):
        """Drop compiler clones (f.constprop.0: DWARF calls them f too) when f itself is there."""
        own = [f for f in infos if any(s.name == name for s in self.t.function_symbols_at(f.entry))]
        return own if own else infos

    def _in_file(self, infos, file):
        cus = self.t.cus_for(file)
        offs = {cu.offset for cu in cus}
        return [i for i in infos if i.cu.offset in offs]

    def _cu_list(self, infos):
        return ", ".join(sorted({display(self.t.cu_path(i.cu)) for i in infos}))

    # --------------------------------------------------------- references

    def _bind_references(self):
        resolved = {}  # patch symbol -> (addr, record)
        for rec in self.p.references():
            name = rec.target_name
            alias = self.p.reference_alias(rec)
            if alias is not None:
                name = alias.target_name
            addr, what = self._resolve(rec, name)
            self._check_reference_type(rec, name, addr)
            prev = resolved.get(rec.patch_symbol)
            if prev is not None and prev[0] != addr:
                raise GenerateError("patch symbol %s means two things: %s (%s) and %s (%s); rename one of them"
                                    % (rec.patch_symbol, prev[1].target_name, _where(prev[1].source_file,
                                                                                    prev[1].source_line),
                                       rec.target_name, _where(rec.source_file, rec.source_line)))
            resolved[rec.patch_symbol] = (addr, rec)
            idx = self.p.dynsym_index(rec.patch_symbol)
            self.explain.append("reference %s (%s, %s) -> target %s %s%s"
                                % (rec.target_name, rec.kind, _where(rec.source_file, rec.source_line),
                                   _hex(addr), what,
                                   " [patch .dynsym %d %s]" % (idx, rec.patch_symbol) if idx is not None
                                   else " [unused by the patch code]"))
        self._refuse_shadowed_references(resolved)
        out = []
        for sym, (addr, _rec) in sorted(resolved.items()):
            idx = self.p.dynsym_index(sym)
            if idx is not None:
                out.append(MarkedSym(idx=idx, addr=addr))
        return out

    def _refuse_shadowed_references(self, resolved):
        """Two macros declaring one C name in a patch file are one object for C
        (block-scope externs share the file's linkage; gcc keeps the first
        assembler name and warns "asm declaration ignored").  If they mean
        different target objects, every use binds to the first: refuse."""
        groups = {}
        for sym, (addr, rec) in resolved.items():
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
        entry = self.jumps.get(rec.function.die_offset)
        if entry is None:
            raise GenerateError("local static %s (%s): enclosing patch function %s replaces no target function, "
                                "so it has no local statics to refer to" % (name, where, rec.function.name))
        jump, tf = entry
        cands = [v for v in self.t.variables(name, cu=tf.cu, function=tf.name)
                 if v.function == tf.name]
        cands = _unique_by_address(cands)
        if len(cands) != 1:
            raise GenerateError("local static %s (%s): target function %s (%s) has %s"
                                % (name, where, tf.name, display(self.t.cu_path(tf.cu)),
                                   "no local static of that name" if not cands else
                                   "%d local statics of that name (%s)" % (len(cands), ", ".join(
                                       _hex(v.address) for v in cands))))
        v = cands[0]
        return v.address, "%s in %s() of %s" % (name, tf.name, display(self.t.cu_path(tf.cu)))

    def _resolve_static(self, rec, name, where):
        file = rec.file or None
        ctx = None
        if not file:
            ctx = self.p.context_before(rec.source_file, rec.source_line)
            file = ctx.file if ctx else None
        cus = None
        if file:
            cus = self.t.cus_for(file)
            if not cus:
                how = (" (binding context from VZP_FILE at %s)" % _where(ctx.source_file, ctx.source_line)
                       if ctx else "")
                raise GenerateError("%s %s (%s): the target has no compile unit %s%s"
                                    % (rec.kind, name, where, display(file), how))
        is_var = rec.kind == "static_var"
        cands = []
        for cu in (cus or [None]):
            if is_var:
                cands += [v for v in self.t.variables(name, cu=cu) if v.function is None]
            else:
                cands += self.t.functions(name, cu=cu)
        cands = _unique_by_address(cands)
        # Statics first; a global of that name is what the user means only
        # when there is no static.
        statics = [c for c in cands if not c.external]
        cands = statics or cands
        what = "variable" if is_var else "function"
        if not cands:
            others = self.t.variables(name) if is_var else self.t.functions(name)
            hint = (" (the target has one in %s)" % self._cu_list(others)) if others and file else ""
            raise GenerateError("static %s %s (%s) not found in the target%s%s"
                                % (what, name, where, " compile unit " + display(file) if file else "", hint))
        if len(cands) > 1:
            raise GenerateError("static %s %s (%s) is ambiguous: defined in %s; name the file (VZP_FILE or the "
                                "macro's last argument)" % (what, name, where, self._cu_list(cands)))
        c = cands[0]
        addr = c.address if is_var else c.entry
        return addr, "%s in %s" % (name, display(self.t.cu_path(c.cu)))

    def _resolve_visibility(self, rec, name, where, visibility):
        want_type = "STT_OBJECT" if rec.kind.endswith("_var") else "STT_FUNC"
        syms = [s for s in self.t.symbols(name) if s.defined and s.type in (want_type, "STT_GNU_IFUNC")
                and (s.type == want_type or want_type == "STT_FUNC")]
        exact = _unique_by_value([s for s in syms if s.visibility == visibility])
        if not exact:
            # The static linker turns hidden and internal symbols into
            # STB_LOCAL and may reset their visibility; DWARF still calls
            # them external, which a true static is not.
            exact = _unique_by_value([s for s in syms if s.is_local and self.t.is_external_at(name, s.value)])
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

    # ------------------------------------------------------------ globals

    def _bind_globals(self, taken):
        if not self.t.image.is_executable:
            self.explain.append("globals: target is a shared library; plain externs bind at run time")
            return []
        out = []
        jumped = {j.patch_value for j, _tf in self.jumps.values()}
        for sym in self.p.image.dynsyms:
            if not sym.index or sym.index in taken or not sym.name:
                continue
            if sym.defined:
                # Auto mode: the units' own globals that the target has mean the target's
                # (redirected functions are bound through their jump by the binder).
                if self.auto is None or sym.type not in ("STT_OBJECT", "STT_FUNC") or sym.value in jumped \
                        or not self.auto.defines(sym.name):
                    continue
                s = self.target_global(sym.name, sym.type)
                if s is not None:
                    out.append(MarkedSym(idx=sym.index, addr=s.value))
                    self.explain.append("global %s (defined by the patch unit) -> target %s [patch .dynsym %d]"
                                        % (sym.name, _hex(s.value), sym.index))
                continue
            if self.p.is_reference_symbol(sym.name):
                continue
            defs = [s for s in self.t.symbols(sym.name) if s.defined and not s.is_local
                    and s.bind in ("STB_GLOBAL", "STB_WEAK") and s.type in ("STT_OBJECT", "STT_FUNC")]
            if not defs:
                continue
            strong = [s for s in defs if s.bind == "STB_GLOBAL"] or defs
            s = strong[0]
            out.append(MarkedSym(idx=sym.index, addr=s.value))
            self.explain.append("global %s -> target %s [patch .dynsym %d]" % (sym.name, _hex(s.value), sym.index))
        return out

    # ---------------------------------------------------- writable data

    def _refuse_writable_data(self):
        bad = []
        img = self.p.image
        own = self.p.own_source_names()
        for s in img.symtab:
            if not s.defined or s.type not in ("STT_OBJECT", "STT_TLS", "STT_COMMON") or s.shndx >= 0xFF00:
                continue
            if s.is_local and (s.file is None or os.path.basename(s.file) not in own):
                continue  # the C runtime's own (crtstuff.c, linker-made symbols)
            if s.name.startswith("__vzp_rec_"):
                continue
            if self.auto is not None and s.value in self.auto.rebound_data:
                continue  # every use was rebound to the target's variable
            sec = img.sections[s.shndx] if s.shndx < len(img.sections) else None
            if sec is None or not sec.flags & SHF_WRITE or sec.name.startswith(_RELRO_SECTIONS):
                continue
            v = self.p.variable_at(s.name, s.value)
            bad.append("%s (%s)" % (s.name.split(".")[0] if v is None else v.name,
                                    _where(v.decl_file, v.decl_line) if v is not None else display(s.file or "?")))
        if bad:
            raise GenerateError("patch defines writable data: %s; state must stay in the target (declare it "
                                "extern or with VZP_*_VAR_REF)" % ", ".join(bad))


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


__all__ = ["Generation", "generate", "generate_file"]
