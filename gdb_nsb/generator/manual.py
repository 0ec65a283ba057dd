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
from typing import Any, Dict, List

from gdb_nsb.elf import sections
from gdb_nsb.elf.image import SHF_WRITE
from gdb_nsb.elf.livepatch import FORMAT_VERSION, FuncJump, LivePatch, MarkedSym
from gdb_nsb.errors import GenerateError
from gdb_nsb.generator import callbacks, checks, copies, dwarf_types, inputs, ipaclones
from gdb_nsb.generator import series as series_mod
from gdb_nsb.generator.paths import display, same_source, where as _where
from gdb_nsb.generator.references import References
from gdb_nsb.shadow import SHADOW_SYMBOL

ENDBR64 = b"\xf3\x0f\x1e\xfa"
JMP_REL32_SIZE = 5  # E9 rel32
JMP_ABS_SIZE = 14  # FF 25 00000000 imm64

# The advice of an IPA refusal: the safe route first, then what the override risks (measured on the
# acceptance matrix's alias scenario: forced, the unreplaced caller returned 4010 instead of 2075).
IPA_RA_RISK = ("the callers not replaced keep code compiled against the old function's register usage and "
               "assumptions (registers it left intact, memory it did not touch, results it made pure); the new "
               "code may break them: wrong values or a crash")
IPA_RA_ADVICE = ("the safe route: replace those callers too (define them in the patch); --allow-ipa-ra forces "
                 "it unsafely: " + IPA_RA_RISK)

VAR_KINDS = ("static_var", "hidden_var", "protected_var", "internal_var")
FUNC_KINDS = ("static_func", "hidden_func", "protected_func", "internal_func")

# Sections that are writable only while the dynamic linker relocates them
# (RELRO); data there is read-only for the program, so a patch may have it.
_RELRO_SECTIONS = (".data.rel.ro", ".init_array", ".fini_array", ".got", ".dynamic", ".preinit_array")


@dataclass
class Generation:
    """The result of binding: the section contents and the audit trail."""

    livepatch: LivePatch
    explain: list = field(default_factory=list)  # one line per decision
    warnings: list = field(default_factory=list)  # one line each; errors with strict=True
    stale: list = field(default_factory=list)  # what keeps old code (accepted with allow_stale_copies)


def generate(target_path, patch_path, debug_file=None, debug_dirs=None, strict=False, allow_ipa_ra=False,
             mode="manual", objects=(), originals=(), allow_stale_copies=False, ipa_clones=(),
             allow_ipa_cp_callee=False) -> Generation:
    """Bind the patch at ``patch_path`` to the target at ``target_path``.

    ``debug_file`` names the target's separate debug file; otherwise the
    target's own DWARF, then its build-id / debuglink files under
    ``debug_dirs`` (default: the system's debug directories) are used.

    ``strict``: warnings (no --original, allowed -fipa-ra callers) become a GenerateError.
    ``allow_stale_copies``: accept functions that keep old code of a replaced
    function (inlined copies, callers of clones) instead of refusing; the
    result's ``stale`` names them.  ``ipa_clones``: paths of GCC
    ``-fdump-ipa-clones`` files of target units, used besides the DWARF.
    ``allow_ipa_ra``: replace functions whose unpatched same-unit callers
    were compiled with caller-side IPA passes anyway (a warning; docs/IPA.md).
    ``allow_ipa_cp_callee``: let the patch call a target static that -fipa-vrp / -fipa-bit-cp may
    have specialised for its callers' values (a warning).
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
    ipa = ipaclones.IpaClones.read(ipa_clones) if ipa_clones else None
    auto_units = None
    if mode == "auto":
        from gdb_nsb.generator import auto
        auto_units = auto.AutoBinding(target, patch, objects, originals)
    return _Binder(target, patch, strict=strict, allow_ipa_ra=allow_ipa_ra, auto_units=auto_units,
                   allow_stale_copies=allow_stale_copies, ipa_clones=ipa,
                   allow_ipa_cp_callee=allow_ipa_cp_callee).run()


def generate_file(target_path, patch_path, out=None, debug_file=None, debug_dirs=None, **options) -> Generation:
    """Generate and write: into ``patch_path`` itself (a ``vzpatch`` section,
    temporary file + rename), or, with ``out``, the raw section bytes to ``out``.
    ``options`` are those of :func:`generate`."""
    gen = generate(target_path, patch_path, debug_file=debug_file, debug_dirs=debug_dirs, **options)
    if out is None:
        gen.livepatch.write_into(patch_path)
    else:
        try:
            sections.replace_file(out, gen.livepatch.to_bytes())
        except OSError as e:
            raise GenerateError("cannot write %s: %s" % (out, e.strerror or e)) from e
    return gen


def _hex(v):
    return "%#x" % v


class _Binder:
    """One generation run: everything it decides, with the reasons."""

    def __init__(self, target: inputs.Target, patch: inputs.Patch, strict=False, allow_ipa_ra=False,
                 auto_units=None, allow_stale_copies=False, ipa_clones=None, allow_ipa_cp_callee=False):
        self.t = target
        self.p = patch
        self.strict = strict
        self.allow_ipa_ra = allow_ipa_ra
        self.allow_ipa_cp_callee = allow_ipa_cp_callee
        self.auto = auto_units
        self.allow_stale_copies = allow_stale_copies
        self.ipa_clones = ipa_clones
        self.types = dwarf_types.Comparer()  # every type comparison of the run shares what it found alike
        self.stale: List[Any] = []
        self._copies_of: Dict[int, Any] = {}  # target CU offset -> copies.UnitCopies
        # [(UnitCopies, abstract DIE offsets)]: replaced functions the target only inlined
        self.inlined_only: List[Any] = []
        self.explain: List[str] = []
        self.warnings: List[str] = []
        self.jumps: Dict[int, Any] = {}  # patch function die_offset -> (FuncJump, target FunctionInfo)
        self._units: Dict[int, Any] = {}  # target CU offset -> checks.UnitCode

    # ------------------------------------------------------------------ run

    def run(self) -> Generation:
        checks.refuse_lto_and_languages(self.t, self.p)
        static_fixups = []
        if self.auto is not None:
            static_fixups = self.auto.bind(self)
        self._refuse_writable_data()
        if self.auto is None:
            self._bind_functions()
        self._check_replacements()
        refs = References(self)
        manual = refs.bind()
        globals_ = self._bind_globals({m.idx for m in manual})
        refs.check_extern_variables()
        cbs = callbacks.bind_callbacks(self.p, {j.patch_value for j, _tf in self.jumps.values()}, self.explain)
        shadow = callbacks.uses_shadow(self.p.image)
        if shadow:
            self.explain.append("shadow variables: the patch reaches the process's shadow region through %s"
                                % SHADOW_SYMBOL)
        if self.warnings and self.strict:
            raise GenerateError("refused with --strict: %s" % "; ".join(self.warnings))
        t = self.t.image
        series = series_mod.declaration(self.p.series_records, self.p.image.build_id)
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
            needs_patches=series.needs_patches,
            needs_states=series.needs_states,
            provides_states=series.provides_states,
            cumulative=series.cumulative,
            callbacks=cbs,
            shadow_variables=shadow,
        )
        for what, items in (("needs patch", lp.needs_patches), ("needs state", lp.needs_states),
                            ("provides state", lp.provides_states)):
            for it in items:
                self.explain.append("series: %s %s" % (what, it if isinstance(it, str) else
                                                         "%d version %d" % (it.id, it.version)))
        if lp.cumulative:
            self.explain.append("series: cumulative (applying it replaces every patch of %s)" % lp.target_name)
        problem = lp.problem()
        if problem:  # a bug of ours, never the user's input
            raise GenerateError("generated an invalid vzpatch section: %s" % problem)
        return Generation(lp, self.explain, self.warnings, self.stale)

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
            if not pf.external and alias is None and self._from_header(pf):
                # The program's static inline helpers, emitted into the patch at -O0: new code.
                self.explain.append("helper %s: new code at patch %s (%s): a static function from a header, "
                                    "never a replacement" % (pf.name, _hex(pf.entry), where))
                continue
            ctx = self.p.context_before(pf.decl_file, pf.decl_line)
            if alias and not ctx:
                ctx = self.p.context_before(alias.source_file, alias.source_line)
            tf = self._target_function(name, ctx, pf, where, static_only=alias is not None)
            if tf is None and not pf.external and ctx is not None:
                cus = self.t.cus_for(ctx.file)
                if len(cus) == 1 and self.note_inlined_only(pf, cus[0], where):
                    any_replaced = True
                    continue
            if tf is None and not pf.external and ctx is None:
                self._refuse_inlined_only_helper(pf, where)
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

    @staticmethod
    def _from_header(pf):
        """True when patch function ``pf`` is defined outside its unit's own .c (in a header)."""
        return bool(pf.decl_file) and not same_source(pf.decl_file, pf.cu.path) \
            and not same_source(pf.decl_file, pf.cu.name)

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
        return self.types.prototype_difference(self.t.dwarf.die(tf.die_offset), self.p.dwarf.die(pf.die_offset))

    def _refuse_prototype_change(self, name, pf, tf, where):
        diff = self._prototype_difference(tf, pf)
        if diff:
            raise GenerateError("function %s (patch %s, target %s): prototype differs: %s"
                                % (name, where, self._twhere(tf), diff))

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
            verdict = self._ipa_verdict(head, tf, jump.name, replaced)
            if verdict.note:
                self.explain.append(verdict.note)
            if verdict.callers:
                text = ("%s has callers in its compile unit that the patch does not replace: %s; %s was compiled "
                        "with %s (docs/IPA.md), so they may rely on what the old code does (registers, memory, "
                        "purity, stack alignment)" % (head, ", ".join(verdict.callers),
                                                      display(self.t.cu_path(tf.cu)), " and ".join(verdict.flags)))
                if not self.allow_ipa_ra:
                    raise GenerateError(text + "; " + IPA_RA_ADVICE)
                self.warn(text + " (allowed by --allow-ipa-ra: " + IPA_RA_RISK + ")")
        self._check_old_copies()

    # ------------------------------------------------------- old copies

    def _copies(self, tf):
        u = self._copies_of.get(tf.cu.offset)
        if u is None:
            u = self._copies_of[tf.cu.offset] = copies.UnitCopies(self.t, self._unit(tf), self.ipa_clones)
        return u

    def copies_of_cu(self, cu):
        """UnitCopies of target CompileUnitInfo ``cu`` (its unit DIE follows the unit header)."""
        u = self._copies_of.get(cu.offset)
        if u is None:
            top = cu.offset + (12 if cu.version >= 5 else 11)
            unit = self._units.get(cu.offset) or checks.UnitCode(self.t, cu, top)
            self._units[cu.offset] = unit
            u = self._copies_of[cu.offset] = copies.UnitCopies(self.t, unit, self.ipa_clones)
        return u

    def note_inlined_only(self, pf, cu, where):
        """Patch function ``pf`` has no out-of-line target function in ``cu``: if the target has it only
        inlined there (same prototype), remember it, so that the functions holding those copies must be
        redirected (auto mode does; manual mode refuses otherwise).  True when it does."""
        uc = self.copies_of_cu(cu)
        offs = [o for o in uc.inlined_only(pf.name)
                if self.types.prototype_difference(self.t.dwarf.die(o), self.p.dwarf.die(pf.die_offset)) is None]
        if not offs:
            return False
        self.inlined_only.append((uc, offs))
        self.explain.append("function %s (%s): the target has it only inlined in %s; the functions holding "
                            "those copies must run new code" % (pf.name, where, display(self.t.cu_path(cu))))
        return True

    def _refuse_inlined_only_helper(self, pf, where):
        """A patch static outside any VZP_FILE is new code; when the target has a static of that name
        only inlined (same prototype), its old copies would keep running unnoticed: refused, naming them."""
        found = []
        for cu in self.t.dwarf.codeless_units(pf.name):
            uc = self.copies_of_cu(cu)
            offs = [o for o in uc.inlined_only(pf.name)
                    if self.types.prototype_difference(self.t.dwarf.die(o), self.p.dwarf.die(pf.die_offset)) is None]
            if offs:
                holders = sorted(uc.follow((), offs).values(), key=lambda h: h.entry)
                found.append("%s (into %s)" % (display(self.t.cu_path(cu)),
                                               ", ".join("%s (%s)" % (h.symbol, h.where) for h in holders)))
        if found:
            raise GenerateError(
                "function %s (%s): the target has a static %s only inlined, in %s; outside VZP_FILE the patch's "
                "%s is new code and those copies would keep the old code: to replace it, put VZP_FILE(\"file\") "
                "before it and replace the functions holding the copies too (or accept them with "
                "--allow-stale-copies); if it is new code, give it another name"
                % (pf.name, where, pf.name, "; ".join(found), pf.name))

    def _may_have_copies(self, tf):
        """False when no inlined copy or clone of ``tf`` can exist: gcc gives every function it
        inlined or cloned an abstract origin, and clones have symbols (skips slow unit walks)."""
        return (self.ipa_clones is not None
                or "DW_AT_abstract_origin" in self.t.dwarf.die(tf.die_offset).attributes
                or bool(checks.clone_symbols(self.t, tf.name, tf.ranges, self.t.cu_path(tf.cu))))

    def stale_copies(self):
        """[(UnitCopies, Holder)]: every function that keeps old code of a redirected function and is
        not redirected itself (see :mod:`gdb_nsb.generator.copies`)."""
        redirected = {j.func_value for j, _tf in self.jumps.values()}
        by_unit = {}
        for _jump, tf in self.jumps.values():
            by_unit.setdefault(tf.cu.offset, []).append(tf)
        origins = {}
        for uc, offs in self.inlined_only:
            origins.setdefault(uc.unit.cu_info.offset, (uc, []))[1].extend(offs)
        out = []
        for cu_off, tfs in by_unit.items():
            if cu_off in origins or not any(self._may_have_copies(tf) for tf in tfs):
                continue
            uc = self._copies(tfs[0])
            start = [i for i in (uc.index_of_entry(tf.entry) for tf in tfs) if i is not None]
            out += [(uc, h) for h in uc.stale(uc.follow(start), redirected)]
        for cu_off, (uc, offs) in origins.items():
            tfs = by_unit.get(cu_off, [])
            start = [i for i in (uc.index_of_entry(tf.entry) for tf in tfs) if i is not None]
            out += [(uc, h) for h in uc.stale(uc.follow(start, offs), redirected)]
        return out

    def _check_old_copies(self):
        """Refuse (or, with allow_stale_copies, state) every place old code keeps running."""
        stale = self.stale_copies()
        if not stale:
            return
        holders = [h for _uc, h in stale]
        advice = []
        fixable = [h for h in holders if not h.clone and not h.never_returns]
        if fixable:
            advice.append("replace %s too (define %s in the patch)" % (
                ", ".join(h.name for h in fixable), "it" if len(fixable) == 1 else "them"))
        stuck = [h for h in holders if h.never_returns]
        if stuck:
            advice.append("%s %s entered once and left only at exit (main or noreturn), so a jump at %s entry "
                          "never takes effect: rebuild the target with that code not inlined there"
                          % (", ".join(h.symbol for h in stuck), "is" if len(stuck) == 1 else "are",
                             "its" if len(stuck) == 1 else "their"))
        lone = [h for h in holders if h.clone]
        if lone:
            advice.append("%s ha%s no direct caller in the code (reached through a pointer?) and cannot be "
                          "redirected" % (", ".join(h.symbol for h in lone), "s" if len(lone) == 1 else "ve"))
        text = "old code keeps running where the patch does not redirect it: %s" % copies.stale_summary(holders)
        if not self.allow_stale_copies:
            raise GenerateError("%s; %s; or accept the stale copies with --allow-stale-copies"
                                % (text, "; ".join(advice)))
        for h in holders:
            self.stale.append(h.describe())
        self.explain.append("stale (accepted by --allow-stale-copies): %s" % copies.stale_summary(holders))

    def _ipa_verdict(self, head, tf, name, replaced):
        """checks.ipa_verdict, its refusals headed by the function (unit walks only when needed)."""
        try:
            return checks.ipa_verdict(self.t, tf, name, replaced, self._unit)
        except GenerateError as e:
            raise GenerateError("%s: %s" % (head, e)) from e

    def refuse_callee(self, rec, name, addr):
        """A vzp.h function reference the patch may not call (docs/IPA.md, callee side)."""
        info = next((f for f in self.t.functions(name) if f.entry == addr), None)
        if info is None:
            return
        found = checks.callee_problem(self.t, info, name, self._unit)
        if found is None:
            return
        kind, text = found
        head = "function %s (patch %s)" % (name, _where(rec.source_file, rec.source_line))
        if kind == "clone":
            raise GenerateError("%s: %s" % (head, text))
        if not self.allow_ipa_cp_callee:
            raise GenerateError("%s: %s; copy it into the patch as a static function of another name (an -O0 "
                                "copy assumes nothing), or override with --allow-ipa-cp-callee" % (head, text))
        self.warn("%s: %s (allowed by --allow-ipa-cp-callee)" % (head, text))

    def _variable_type_difference(self, tinfo, pinfo):
        """Type difference between a target and a patch VariableInfo (None: same)."""
        return self.types.type_difference(self.t.variable_type(tinfo),
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
            if s.name.startswith("__vzp_rec_") or s.value in self.p.record_addresses:
                continue  # vzp.h records (ours, or the original tool's in section VZP): metadata
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


__all__ = ["Generation", "generate", "generate_file"]
