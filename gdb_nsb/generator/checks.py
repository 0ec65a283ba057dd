"""The generator's safety checks (REFERENCE.md section 4).

Everything here reads the target's and the patch's DWARF and symbols and
says what would make a patch unsafe:

* :func:`language_problem`, :func:`lto_problem`: units the generator cannot
  reason about (not C; LTO/GIMPLE, whose DWARF does not describe the code);
* :func:`folded_with`: identical code folding (another function symbol at
  the replaced function's entry: patching one patches both);
* :func:`ipa_verdict`: the caller-side assumptions (docs/IPA.md, :mod:`ipa`)
  that callers of a replaced function in its unit may depend on, and those
  callers; :func:`callee_problem`: why the patch may not call a target function
  (it exists only as a clone, or its code was specialised for its callers);
* :class:`UnitCode`: per target compile unit, its concrete functions, their
  call sites (``DW_TAG_call_site`` / ``DW_TAG_GNU_call_site``), their calls and
  jumps (:mod:`codescan`: direct, tail, conditional, PLT and GOT) and inlined
  copies (``DW_TAG_inlined_subroutine``) -- who calls or holds a copy of what;
* :func:`clone_symbols`: compiler clones of a function (``f.isra.0``,
  ``f.constprop.0``, ``f.part.0``, ``f.cold`` outside f's own ranges).
"""

from __future__ import annotations

import os
import re

from gdb_nsb.errors import DebugInfoError, GenerateError
from gdb_nsb.generator import ipa
from gdb_nsb.generator.codescan import CodeScanner

# DW_LANG_* codes that are C.
C_LANGUAGES = {0x01: "C89", 0x02: "C", 0x0C: "C99", 0x1D: "C11", 0x2C: "C17"}
LANGUAGE_NAMES = {0x04: "C++", 0x1A: "C++11", 0x21: "C++14", 0x2B: "C++17", 0x2A: "C++20", 0x1C: "Rust",
                  0x16: "Go", 0x0E: "Fortran90", 0x22: "Fortran03", 0x23: "Fortran08", 0x0D: "Ada95",
                  0x10: "ObjC", 0x11: "ObjC++", 0x12: "UPC", 0x13: "D", 0x1E: "Swift", 0x08: "Fortran77",
                  0x09: "Fortran90", 0x05: "Cobol74", 0x15: "Python", 0x1B: "OpenCL", 0x1F: "Julia",
                  0x24: "RenderScript", 0x27: "Zig", 0x8001: "Mips assembler", 0x0B: "Java"}

_CLONE_SUFFIX = r"(?:\.(?:isra|constprop|part|cold)(?:\.\d+)?)+"
_CALL_SITE_TAGS = ("DW_TAG_call_site", "DW_TAG_GNU_call_site")


def language_name(code):
    if code in C_LANGUAGES:
        return C_LANGUAGES[code]
    return LANGUAGE_NAMES.get(code, "language %#x" % code if code is not None else "unknown language")


def language_problem(cu, what):
    """Why compile unit ``cu`` of ``what`` ('target'/'patch') cannot be handled, or None (it is C)."""
    if cu.language is None or cu.language in C_LANGUAGES:
        return None
    return "%s compile unit %s is written in %s: only C is supported" % (what, cu.path or cu.name,
                                                                         language_name(cu.language))


def is_lto_producer(producer):
    """True for a unit compiled from GIMPLE (an LTO link) or with -flto."""
    if not producer:
        return False
    if "GNU GIMPLE" in producer:
        return True
    lto = False
    for w in producer.split():
        if w == "-flto" or (w.startswith("-flto=") and w != "-flto=none"):
            lto = True
        elif w == "-fno-lto":
            lto = False
    return lto


def lto_sections(image):
    """Names of LTO (GIMPLE bytecode) sections of an ELF image."""
    return [s.name for s in image.sections if s.name.startswith((".gnu.lto_", ".gnu.debuglto_"))]


def lto_problem(image, dwarf, what):
    """Why ``image`` (built with LTO) is refused, or None."""
    secs = lto_sections(image)
    if secs:
        return "%s %s was built with LTO (section %s): its code is not described by its DWARF; rebuild " \
               "without -flto" % (what, image.path, secs[0])
    for cu in dwarf.compile_units():
        if is_lto_producer(cu.producer):
            return "%s %s was built with LTO (compile unit %s, producer \"%s\"); rebuild without -flto" % (
                what, image.path, cu.path or cu.name, cu.producer)
    return None


def ipa_assumptions(producer, has_call_sites=False):
    """The caller-side IPA assumptions in effect for a unit, from its producer string (GCC; [] for
    other compilers, whose units :func:`ipa.unmodelled_problem` refuses when optimised)."""
    return ipa.caller_side(producer, has_call_sites)


class IpaVerdict:
    """What replacing one function means for its callers in its unit (docs/IPA.md)."""

    def __init__(self, flags=(), callers=(), note=None):
        self.flags = list(flags)  # caller-side passes the callers may depend on
        self.callers = list(callers)  # their names (not replaced by the patch)
        self.note = note  # one line for --explain, or None


def ipa_verdict(target, tf, name, replaced, unit_for):
    """The :class:`IpaVerdict` for replacing target function ``tf`` (symbol ``name``), given the
    entries of every replaced function; ``unit_for(tf)`` gives the :class:`UnitCode` (walked only
    when needed: big units take long).  A unit optimised by an unmodelled compiler is refused."""
    prod = ipa.parse_producer(tf.cu.producer)
    if prod.compiler == "as" or (prod.modelled() and not ipa.caller_side(prod, False)
                                 and not ipa.caller_side(prod, True)):
        return IpaVerdict()
    unit = unit_for(tf)
    problem = ipa.unmodelled_problem(prod, unit.has_call_sites)
    if problem:
        raise GenerateError(problem)
    flags = ipa.caller_side(prod, unit.has_call_sites)
    if not flags:
        return IpaVerdict()
    direct = [i for i, branches in enumerate(unit.branches())
              if any(b.via == "direct" and b.target == tf.entry for b in branches)]
    sym = target.function_symbol(name, tf.entry)
    if ipa.interposable(prod, sym, unit.declared_inline(tf.die_offset, tf.entry), direct, True):
        return IpaVerdict(note="function %s: interposable (-fpic unit, default visibility, not inline, called only "
                               "through the PLT%s): its callers assume nothing (%s do not apply)"
                               % (name, " by %s" % ", ".join(unit.function_name(i) for i in unit.plt_callers(name))
                                  if unit.plt_callers(name) else "", ", ".join(flags)))
    if unit.calls_out(tf.entry):
        # A call out of the unit clobbers, as far as GCC knew, every call-clobbered register and
        # needs the ABI's alignment: its callers assumed no less (measured: docs/IPA.md).
        flags = [f for f in flags if f not in ("-fipa-ra", "-fipa-stack-alignment")]
    callers = [i for i in unit.callers(tf.die_offset, tf.entry) if unit.entry_of(i) not in replaced]
    if not flags or not callers:
        return IpaVerdict(flags)
    return IpaVerdict(flags, sorted({unit.function_name(i) for i in callers}))


def callee_problem(target, info, name, unit_for):
    """Why the patch may not call (or take the address of) target function ``info`` as ``name``:
    ``("clone", text)`` when the code at its entry is a compiler clone with another calling
    convention, ``("specialised", text)`` when it is a static whose code GCC rewrote in place for
    the values its callers pass (overridable), or None."""
    syms = [s.name for s in target.function_symbols_at(info.entry)]
    if syms and name not in syms:
        clones = [n for n in syms if re.fullmatch(re.escape(name) + _CLONE_SUFFIX, n)]
        if clones:
            return "clone", ("the target has %s only as the compiler clone %s (at %#x), whose parameters and "
                             "result may differ from %s's; the patch cannot call it as %s: copy %s into the "
                             "patch as a static function of another name" % (name, clones[0], info.entry, name,
                                                                             name, name))
    if info.external:
        return None
    prod = ipa.parse_producer(info.cu.producer)
    if prod.compiler == "as" or (prod.modelled() and not ipa.in_place_callee(prod, False)
                                 and not ipa.in_place_callee(prod, True)):
        return None
    unit = unit_for(info)
    problem = ipa.unmodelled_problem(prod, unit.has_call_sites)
    if problem:
        return "specialised", "its unit %s" % problem
    flags = ipa.in_place_callee(prod, unit.has_call_sites)
    if not flags or unit.takes_address(info.entry):
        return None
    return "specialised", ("static function %s (%#x) of a unit built with -fipa-cp and %s, and its address is "
                           "never taken: GCC may have rewritten its code for the values its callers pass (value "
                           "ranges, known bits), so a call with other values can misbehave"
                           % (name, info.entry, " and ".join(flags)))


def folded_with(target, name, entry):
    """Other function symbols at ``entry`` (identical code folding, aliases), without f's own aliases."""
    out = []
    for s in target.function_symbols_at(entry):
        if s.name == name or s.name.startswith(name + ".localalias"):
            continue
        out.append(s.name)
    return sorted(set(out))


def clone_symbols(target, name, fragments, cu_file=None):
    """Symbols of compiler clones of ``name`` (f.isra.0, f.constprop.0, f.part.0, f.cold ...)
    that are not fragments of the function itself."""
    pat = re.compile(re.escape(name) + _CLONE_SUFFIX)
    base = os.path.basename(cu_file) if cu_file else None
    out = []
    for s in target.all_symbols():
        if s.type != "STT_FUNC" or not s.defined or not pat.fullmatch(s.name):
            continue
        if base and s.file and os.path.basename(s.file) != base:
            continue
        if any(lo <= s.value < hi for lo, hi in fragments):
            continue  # f.cold inside f's own DW_AT_ranges: part of f, not a copy
        out.append(s.name)
    return sorted(set(out))


class UnitCode:
    """Who calls whom in one target compile unit, and where functions were inlined.

    Built from one walk of the unit's DIE tree (pyelftools) plus, for
    direct calls without call-site DIEs, a capstone disassembly of the
    unit's functions.
    """

    def __init__(self, target, cu_info, any_die_offset):
        self.t = target
        self.cu_info = cu_info
        die = target.dwarf.die(any_die_offset)
        self.cu = die.cu
        self.functions = []  # [(die offset, name, entry, ranges)]
        self.call_sites = []  # [(origin offset, caller index)]
        self.inlined = []  # [(origin offset, caller index)]
        self._calls = None
        self.scanner = CodeScanner(target.image)
        self._walk()

    @property
    def has_call_sites(self):
        return bool(self.call_sites)

    # ---- DIE walk ----

    def _walk(self):
        top = self.cu.get_top_DIE()
        dwarf = self.t.dwarf
        infos = {}
        for child in top.iter_children():
            if child.tag != "DW_TAG_subprogram":
                continue
            if "DW_AT_low_pc" not in child.attributes and "DW_AT_ranges" not in child.attributes:
                continue
            idx = len(self.functions)
            name = _die_name(child)
            if name not in infos:
                infos[name] = {f.die_offset: f for f in dwarf.functions(name, cu=self.cu_info)} if name else {}
            fi = infos[name].get(child.offset)
            if fi is None:
                continue
            self.functions.append((child.offset, name, fi.entry, list(fi.ranges)))
            self._scan(child, idx)

    def _scan(self, die, idx):
        stack = [die]
        while stack:
            d = stack.pop()
            for c in d.iter_children():
                tag = c.tag
                if tag in _CALL_SITE_TAGS:
                    o = _ref_offset(c, "DW_AT_call_origin") or _ref_offset(c, "DW_AT_abstract_origin")
                    if o is not None:
                        self.call_sites.append((o, idx))
                elif tag == "DW_TAG_inlined_subroutine":
                    o = _ref_offset(c, "DW_AT_abstract_origin")
                    if o is not None:
                        self.inlined.append((o, idx))
                if c.has_children and tag != "DW_TAG_subprogram":
                    stack.append(c)

    # ---- questions ----

    def origins_of(self, die_offset):
        """The DIE offsets that stand for the function at ``die_offset`` (itself and its origins)."""
        out = {die_offset}
        d = self.t.dwarf.die(die_offset)
        for _ in range(8):
            nxt = None
            for attr in ("DW_AT_abstract_origin", "DW_AT_specification"):
                if attr in d.attributes:
                    nxt = d.get_DIE_from_attribute(attr)
                    break
            if nxt is None:
                break
            out.add(nxt.offset)
            d = nxt
        return out

    def callers(self, die_offset, entry):
        """Indexes (into ``functions``) of the unit's functions that call or jump to the function's
        entry directly (call sites, and direct calls, tail jumps and conditional tail jumps)."""
        origins = self.origins_of(die_offset)
        out = {idx for o, idx in self.call_sites if o in origins}
        return sorted(out | set(self.direct_callers(entry)))

    def direct_callers(self, entry):
        """Indexes of the unit's functions whose code calls or jumps to ``entry`` directly (a call, a
        tail jump or a conditional tail jump)."""
        return sorted(idx for idx, branches in enumerate(self.branches())
                      if any(b.via == "direct" and b.target == entry for b in branches))

    def inlined_into(self, die_offset):
        origins = self.origins_of(die_offset)
        return sorted({idx for o, idx in self.inlined if o in origins})

    def plt_callers(self, name):
        """Indexes of the unit's functions that call ``name`` through the PLT or the GOT."""
        return sorted(idx for idx, branches in enumerate(self.branches())
                      if any(b.via in ("plt", "got") and b.symbol == name for b in branches))

    def branches(self):
        """Per function (index into ``functions``): its calls and jumps (:class:`codescan.Branch`)."""
        if self._calls is None:
            self._calls = [[b for lo, hi in ranges for b in self.scanner.branches(lo, hi, name or "%#x" % entry)]
                           for _off, name, entry, ranges in self.functions]
        return self._calls

    def index_at(self, entry):
        return next((i for i, f in enumerate(self.functions) if f[2] == entry), None)

    def calls_out(self, entry, _seen=None):
        """True when the code at ``entry`` calls or tail-calls (on any path) something whose code
        GCC did not see: through the PLT or the GOT, indirectly, outside the unit, or a function of
        the unit that does.  Then GCC counted every call-clobbered register as clobbered by it
        (-fipa-ra) and kept the 16-byte stack alignment at calls to it (-fipa-stack-alignment)."""
        seen = _seen if _seen is not None else set()
        if entry in seen:
            return False
        seen.add(entry)
        idx = self.index_at(entry)
        if idx is None:
            return True  # not code of this unit: its needs are unknown
        ranges = self.functions[idx][3]
        for b in self.branches()[idx]:
            if b.kind == "call" or not any(lo <= (b.target or -1) < hi for lo, hi in ranges):
                if b.via != "direct" or self.calls_out(b.target, seen):
                    return True
        return False

    def declared_inline(self, die_offset, entry):
        """True when GCC could treat the function as not interposable because of ``inline``: its
        abstract origin says DW_INL_declared_not_inlined / DW_INL_declared_inlined, or
        DW_INL_inlined with a copy inlined into another function (GCC never inlines what it
        considers interposable).  A copy inside the function itself (GCC 12 -O2 -fPIC leaves one in
        a function that returns early, such as Debian libsqlite3's sqlite3_free) says nothing."""
        for o in self.origins_of(die_offset):
            a = self.t.dwarf.die(o).attributes.get("DW_AT_inline")
            if a is None or not a.value:
                continue
            if a.value in (2, 3):
                return True
            if any(self.entry_of(i) != entry for i in self.inlined_into(die_offset)):
                return True
        return False

    def takes_address(self, entry):
        """True when the unit's code or the image's data take the address ``entry``."""
        if self.scanner.address_in_data(entry):
            return True
        for _off, name, e, ranges in self.functions:
            for lo, hi in ranges:
                if entry in self.scanner.taken_addresses(lo, hi, name or "%#x" % e):
                    return True
        return False

    def function_name(self, idx):
        """The caller's symbol name (clones keep their suffix), else its DWARF name."""
        _off, name, entry, _r = self.functions[idx]
        syms = [s.name for s in self.t.function_symbols_at(entry) if s.name]
        pref = [s for s in syms if s == name] or [s for s in syms if name and s.startswith(name)] or syms
        return pref[0] if pref else (name or "%#x" % entry)

    def entry_of(self, idx):
        return self.functions[idx][2]


def origin_chain(die, depth=8):
    """``die``, then the DIEs its DW_AT_abstract_origin / DW_AT_specification lead to (at most ``depth``):
    where an inlined or out-of-line instance keeps its name, noreturn flag and other declared facts."""
    d = die
    for _ in range(depth):
        yield d
        nxt = None
        for attr in ("DW_AT_abstract_origin", "DW_AT_specification"):
            if attr in d.attributes:
                try:
                    nxt = d.get_DIE_from_attribute(attr)
                except Exception as e:  # noqa: BLE001 - pyelftools raises bare errors on alt refs
                    raise DebugInfoError("%s: cannot follow %s at DIE %#x: %s"
                                         % (die.cu.dwarfinfo.config, attr, d.offset, e)) from e
                break
        if nxt is None:
            return
        d = nxt


def _die_name(die):
    for d in origin_chain(die):
        a = d.attributes.get("DW_AT_name")
        if a is not None:
            v = a.value
            return v.decode("utf-8", "replace") if isinstance(v, bytes) else v
    return None


def _ref_offset(die, attr):
    a = die.attributes.get(attr)
    if a is None:
        return None
    if a.form in ("DW_FORM_ref1", "DW_FORM_ref2", "DW_FORM_ref4", "DW_FORM_ref8", "DW_FORM_ref_udata"):
        return a.value + die.cu.cu_offset
    if a.form == "DW_FORM_ref_addr":
        return a.value
    return None


__all__ = ["origin_chain", "language_problem", "lto_problem", "is_lto_producer", "ipa_assumptions", "ipa_verdict",
           "IpaVerdict", "callee_problem", "folded_with", "clone_symbols", "UnitCode", "language_name"]


def refuse_lto_and_languages(target, patch):
    """GenerateError when the target or the patch holds LTO bytecode, or the patch's own code is in a
    language the generator does not model (``target``/``patch``: generator.inputs Target and Patch)."""
    for image, dwarf, what in ((target.debug_image, target.dwarf, "target"), (patch.image, patch.dwarf, "patch")):
        problem = lto_problem(image, dwarf, what)
        if problem:
            raise GenerateError(problem)
    if target.debug_image is not target.image and lto_sections(target.image):
        raise GenerateError(lto_problem(target.image, target.dwarf, "target"))
    for cu in patch.dwarf.compile_units():
        if cu.name and os.path.basename(cu.name) in patch.own_source_names() and cu.language is not None:
            problem = language_problem(cu, "patch")
            if problem and any(f.cu.offset == cu.offset for f in patch.functions()):
                raise GenerateError(problem)
