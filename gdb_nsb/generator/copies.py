"""Where the old code of a replaced function still runs (REFERENCE.md section 4).

A jump at the entry of ``f`` redirects the calls that reach ``f``'s entry.
The compiler may have left ``f``'s code in other places of its compile
unit, which the jump does not touch:

* inlined copies: ``g`` holds ``DW_TAG_inlined_subroutine`` whose abstract
  origin is ``f`` (or ``-fdump-ipa-clones`` says "f ... g ... inlining to");
* clones: ``f.constprop.0``, ``f.isra.0``, ``f.part.0`` (a ``f.cold`` outside
  ``f``'s own ranges counts too); they have another calling convention, so
  they cannot be redirected themselves: their callers must be.

Every function holding such a copy keeps running old code unless it is
redirected as well, and then the same holds for the functions that inline
*it* or call *its* clones: :func:`follow` computes that closure for one
unit.  A holder that never returns (``main``, ``DW_AT_noreturn``) cannot be
made to run new code by a jump at its entry: it is marked, for the caller
to refuse.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from gdb_nsb.generator import checks
from gdb_nsb.generator.paths import display

_CLONE_NAME = re.compile(r"\A(?P<base>[^.]+)(?P<suffix>(?:\.(?:isra|constprop|part|cold)(?:\.\d+)?)+)\Z")


@dataclass
class Holder:
    """A function of the unit whose code keeps old code of a replaced function."""

    idx: int  # index into UnitCode.functions
    name: str  # its C name (DWARF)
    symbol: str  # its symbol (clones keep their suffix)
    entry: int
    where: str  # file:line of its definition
    reasons: list = field(default_factory=list)  # one phrase per way it holds old code
    clone: bool = False  # a compiler clone: cannot be redirected (other calling convention)
    callers: set = field(default_factory=set)  # clones: unit indexes of the functions calling it
    never_returns: bool = False  # main or DW_AT_noreturn: a jump at its entry never takes effect

    def describe(self):
        return "%s (%s: %s)" % (self.symbol, self.where, "; ".join(self.reasons))


def clone_base(symbol):
    """``f`` for ``f.constprop.0`` / ``f.isra.0`` / ``f.part.0`` / ``f.cold``, else None."""
    m = _CLONE_NAME.match(symbol or "")
    return m.group("base") if m else None


class UnitCopies:
    """The old-copy facts of one target compile unit: DWARF (through checks.UnitCode), clone symbols,
    and optionally GCC's -fdump-ipa-clones for that unit."""

    def __init__(self, target, unit, ipa_clones=None):
        self.t = target
        self.unit = unit
        self.ipa = ipa_clones
        self._by_symbol = {}
        for idx in range(len(unit.functions)):
            self._by_symbol.setdefault(unit.function_name(idx), idx)
        self._infos = {}

    # ---- facts about one function of the unit ----

    def info(self, idx):
        """The FunctionInfo of unit function ``idx`` (for decl_file / decl_line), or None."""
        if idx not in self._infos:
            off, name, _entry, _r = self.unit.functions[idx]
            hit = None
            if name:
                hit = next((f for f in self.t.functions(name, cu=self.unit.cu_info) if f.die_offset == off), None)
            self._infos[idx] = hit
        return self._infos[idx]

    def where(self, idx):
        fi = self.info(idx)
        if fi is None or not (fi.decl_file or fi.cu):
            return "?"
        f = fi.decl_file or self.t.cu_path(fi.cu)
        return "%s:%s" % (display(f), fi.decl_line) if fi.decl_line else display(f)

    def never_returns(self, idx):
        off, name, _e, _r = self.unit.functions[idx]
        if name == "main":
            return True
        return any("DW_AT_noreturn" in d.attributes for d in checks.origin_chain(self.t.dwarf.die(off)))

    def is_clone(self, idx):
        sym = self.unit.function_name(idx)
        base = clone_base(sym)
        return base is not None and base == self.unit.functions[idx][1]

    def index_of_entry(self, entry):
        return next((i for i, f in enumerate(self.unit.functions) if f[2] == entry), None)

    def _direct_callers(self, idx):
        """Functions of the unit that call function ``idx`` itself (its concrete DIE or its entry)."""
        off, _n, entry, _r = self.unit.functions[idx]
        out = {i for o, i in self.unit.call_sites if o == off}
        out |= set(self.unit.direct_callers(entry))
        out.discard(idx)
        return out

    def _clones_of(self, idx):
        """Unit indexes of the clones of function ``idx`` (not its own fragments)."""
        off, name, _entry, ranges = self.unit.functions[idx]
        fi = self.info(idx)
        cu_path = self.t.cu_path(fi.cu) if fi is not None else None
        out = set()
        for sym in checks.clone_symbols(self.t, name, ranges, cu_path):
            ci = self._by_symbol.get(sym)
            if ci is not None and ci != idx:
                out.add(ci)
        if self.ipa is not None:
            for sym in self.ipa.clones_of(name, self._unit_file()):
                ci = self._by_symbol.get(sym)
                if ci is not None and ci != idx:
                    out.add(ci)
        return out

    def _unit_file(self):
        return os.path.basename(self.t.cu_path(self.unit.cu_info))

    def _inliners(self, idx):
        """Unit indexes of the functions holding an inlined copy of function ``idx``."""
        off, name, _e, _r = self.unit.functions[idx]
        out = set(self.unit.inlined_into(off))
        if self.ipa is not None:
            for holder in self.ipa.inlined_into(name, self._unit_file()):
                hi = self._by_symbol.get(holder)
                if hi is not None:
                    out.add(hi)
        out.discard(idx)
        return out

    # ---- the closure ----

    def inlined_only(self, name):
        """Offsets of the abstract DIEs called ``name`` that the unit has only as inlined copies (no
        out-of-line instance): that function's code runs nowhere but inside the functions holding
        them, so no jump can replace it; those functions must be redirected instead."""
        concrete = set()
        for off, _n, _e, _r in self.unit.functions:
            concrete |= self.unit.origins_of(off)
        out = set()
        for o, _idx in self.unit.inlined:
            if o not in concrete and o not in out and _die_name(self.t.dwarf.die(o)) == name:
                out.add(o)
        return sorted(out)

    def follow(self, start, origins=()):
        """Every function of the unit that keeps old code of the functions at unit indexes ``start``
        (and of the inlined-only functions whose abstract DIEs are ``origins``), transitively (a
        holder's own inlined copies and clones hold old code too), as {idx: Holder}."""
        holders = {}
        queue = list(start)
        seen = set(queue)

        def add(hidx, reason):
            h = holders.get(hidx)
            if h is None:
                off, name, entry, _r = self.unit.functions[hidx]
                h = holders[hidx] = Holder(hidx, name, self.unit.function_name(hidx), entry, self.where(hidx),
                                           clone=self.is_clone(hidx), never_returns=self.never_returns(hidx))
            if reason not in h.reasons:
                h.reasons.append(reason)
            if hidx not in seen:
                seen.add(hidx)
                queue.append(hidx)

        for o in origins:
            name = _die_name(self.t.dwarf.die(o))
            for hidx in sorted({i for oo, i in self.unit.inlined if oo == o}):
                add(hidx, "holds an inlined copy of %s" % name)
        while queue:
            idx = queue.pop(0)
            sym = self.unit.function_name(idx)
            for hidx in sorted(self._inliners(idx)):
                add(hidx, "holds an inlined copy of %s" % self.unit.functions[idx][1])
            for cidx in sorted(self._clones_of(idx)):
                add(cidx, "clone of %s" % self.unit.functions[idx][1])
            if self.is_clone(idx):
                callers = self._direct_callers(idx)
                if idx in holders:
                    holders[idx].callers = callers
                for hidx in sorted(callers):
                    add(hidx, "calls %s" % sym)
        return holders

    def stale(self, holders, redirected):
        """The Holders that keep old code running although the patch redirects ``redirected`` (entries):
        every holder that is not redirected and not a clone (its callers are holders themselves), and
        clones no code of the unit calls directly (reached through pointers: nothing can redirect them)."""
        redirected = set(redirected)
        out = [h for h in holders.values() if not h.clone and h.entry not in redirected]
        out += [h for h in holders.values() if h.clone and not h.callers]
        return sorted(out, key=lambda h: h.entry)


def _die_name(die):
    a = die.attributes.get("DW_AT_name")
    if a is None:
        return None
    return a.value.decode("utf-8", "replace") if isinstance(a.value, bytes) else a.value


def stale_summary(holders):
    """One phrase for a list of Holders, for messages."""
    return ", ".join(h.describe() for h in holders)


__all__ = ["Holder", "UnitCopies", "clone_base", "stale_summary"]
