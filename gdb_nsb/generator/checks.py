"""The generator's safety checks (REFERENCE.md section 4).

Everything here reads the target's and the patch's DWARF and symbols and
says what would make a patch unsafe:

* :func:`language_problem`, :func:`lto_problem`: units the generator cannot
  reason about (not C; LTO/GIMPLE, whose DWARF does not describe the code);
* :func:`folded_with`: identical code folding (another function symbol at
  the replaced function's entry: patching one patches both);
* :func:`ipa_assumptions`: what a unit's ``DW_AT_producer`` says the
  compiler assumed about local callees (``-fipa-ra``, ``-fipa-pure-const``);
* :class:`UnitCode`: per target compile unit, its concrete functions, their
  call sites (``DW_TAG_call_site`` / ``DW_TAG_GNU_call_site``), their direct
  ``call``/``jmp`` instructions (capstone) and inlined copies
  (``DW_TAG_inlined_subroutine``) -- who calls or holds a copy of what;
* :func:`clone_symbols`: compiler clones of a function (``f.isra.0``,
  ``f.constprop.0``, ``f.part.0``, ``f.cold`` outside f's own ranges).
"""

from __future__ import annotations

import os
import re

from gdb_nsb.errors import DebugInfoError

# DW_LANG_* codes that are C.
C_LANGUAGES = {0x01: "C89", 0x02: "C", 0x0C: "C99", 0x1D: "C11", 0x2C: "C17"}
LANGUAGE_NAMES = {0x04: "C++", 0x1A: "C++11", 0x21: "C++14", 0x2B: "C++17", 0x2A: "C++20", 0x1C: "Rust",
                  0x16: "Go", 0x0E: "Fortran90", 0x22: "Fortran03", 0x23: "Fortran08", 0x0D: "Ada95",
                  0x10: "ObjC", 0x11: "ObjC++", 0x12: "UPC", 0x13: "D", 0x1E: "Swift", 0x08: "Fortran77",
                  0x09: "Fortran90", 0x05: "Cobol74", 0x15: "Python", 0x1B: "OpenCL", 0x1F: "Julia",
                  0x24: "RenderScript", 0x27: "Zig", 0x8001: "Mips assembler", 0x0B: "Java"}

LIVE_PATCHING_SAFE = ("-flive-patching=inline-clone", "-flive-patching=inline-only-static")
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


def _flag_state(words, name, default):
    on = default
    for w in words:
        if w == "-f" + name:
            on = True
        elif w == "-fno-" + name:
            on = False
    return on


def ipa_assumptions(producer, has_call_sites=False):
    """The IPA options in effect for a unit compiled by gcc, from its producer string.

    Returns the list of assumptions a caller in the unit may make about a
    local callee (``["-fipa-ra", "-fipa-pure-const"]`` at -O2), [] when
    none (-O0, clang, ``-flive-patching=inline-clone``).  A gcc producer
    without recorded options (-gno-record-gcc-switches) counts as optimised
    when the unit has call-site DIEs, which gcc emits only when optimising.
    """
    if not producer or not producer.startswith("GNU "):
        return []
    words = producer.split()
    if any(w in LIVE_PATCHING_SAFE for w in words):
        return []
    levels = [w[2:] for w in words if w.startswith("-O")]
    if levels:
        level = levels[-1]
    else:
        level = "2" if has_call_sites else "0"
    ra_default = level in ("2", "3", "s", "z", "fast")
    pure_default = level not in ("0",)
    out = []
    if _flag_state(words, "ipa-ra", ra_default):
        out.append("-fipa-ra")
    if _flag_state(words, "ipa-pure-const", pure_default):
        out.append("-fipa-pure-const")
    return out


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
        """Indexes (into ``functions``) of the unit's functions that call the function directly."""
        origins = self.origins_of(die_offset)
        out = {idx for o, idx in self.call_sites if o in origins}
        out |= self._direct_calls().get(entry, set())
        return sorted(out)

    def direct_callers(self, entry):
        """Indexes of the unit's functions whose code calls or jumps to ``entry`` directly."""
        return sorted(self._direct_calls().get(entry, set()))

    def inlined_into(self, die_offset):
        origins = self.origins_of(die_offset)
        return sorted({idx for o, idx in self.inlined if o in origins})

    def _direct_calls(self):
        """entry -> {caller index}: direct call/jmp instructions of the unit's code."""
        if self._calls is not None:
            return self._calls
        import capstone  # only needed here; a dependency of the package

        md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        out = {}
        img = self.t.image
        for idx, (_off, _name, _entry, ranges) in enumerate(self.functions):
            for lo, hi in ranges:
                try:
                    code = img.read_vaddr(lo, hi - lo)
                except Exception:  # noqa: BLE001 - code outside the file (NOBITS): nothing to read
                    continue
                for insn in md.disasm_lite(code, lo):
                    _addr, _size, mnemonic, op = insn
                    if (mnemonic == "call" or mnemonic == "jmp") and op.startswith("0x"):
                        try:
                            dest = int(op, 16)
                        except ValueError:
                            continue
                        out.setdefault(dest, set()).add(idx)
        self._calls = out
        return out

    def function_name(self, idx):
        """The caller's symbol name (clones keep their suffix), else its DWARF name."""
        _off, name, entry, _r = self.functions[idx]
        syms = [s.name for s in self.t.function_symbols_at(entry) if s.name]
        pref = [s for s in syms if s == name] or [s for s in syms if name and s.startswith(name)] or syms
        return pref[0] if pref else (name or "%#x" % entry)

    def entry_of(self, idx):
        return self.functions[idx][2]


def _die_name(die):
    d = die
    for _ in range(8):
        a = d.attributes.get("DW_AT_name")
        if a is not None:
            v = a.value
            return v.decode("utf-8", "replace") if isinstance(v, bytes) else v
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
            return None
        d = nxt
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


__all__ = ["language_problem", "lto_problem", "is_lto_producer", "ipa_assumptions", "folded_with",
           "clone_symbols", "UnitCode", "language_name"]
