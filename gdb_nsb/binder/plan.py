"""Load and revert plans: every mapping to create and every byte to write, as data.

A plan is computed before the process is stopped for good, printed by
``--dry-run``, evaluated without side effects by ``nsb-check``, and executed
by the GDB layer, the only place that writes to the inferior.  Every write
carries the bytes expected there now, so the executor (and ``evaluate``)
refuse a target that changed under us.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field

from gdb_nsb.binder import jumps as jumps_mod
from gdb_nsb.binder.errors import (BreakpointInJump, EntryMismatch, FunctionTooShort, OutOfReach)
from gdb_nsb.binder.placement import Placement, choose_placement
from gdb_nsb.binder.process_view import PAGE_SIZE, ProcessView, page_down, page_up
from gdb_nsb.binder.relocate import PROT_EXEC, PROT_READ, apply_static_fixups, relocate, check_relocation_types
from gdb_nsb.binder.scope import Resolution, SymbolResolver
from gdb_nsb.errors import AlreadyAppliedError, MismatchError, NotAppliedError, NsbError
from gdb_nsb.registry import (STATE_ACTIVE, STATE_INACTIVE, LayerError, MappedRange, PatchRecord, Registry)

BREAKPOINTS_REFUSE = "refuse"
BREAKPOINTS_DISABLE = "disable"


def _prot_name(prot: int) -> str:
    return ("r" if prot & PROT_READ else "-") + "-" + ("x" if prot & PROT_EXEC else "-")


@dataclass
class Write:
    """Write ``data`` at ``addr``; ``expected`` is what must be there now (None: our own fresh memory)."""

    addr: int
    data: bytes
    expected: bytes | None
    what: str

    @property
    def end(self) -> int:
        return self.addr + len(self.data)

    def describe(self) -> str:
        exp = "" if self.expected is None else ", expecting %s" % self.expected.hex()
        shown = self.data.hex() if len(self.data) <= 16 else "%d bytes" % len(self.data)
        return "write %#x..%#x %s: %s%s" % (self.addr, self.end, self.what, shown, exp)


@dataclass
class MappingPlan:
    """Map [start, start+length) with MAP_FIXED_NOREPLACE, then set each range's protection.

    ``protections`` are (start, length, PROT_*) page runs; pages not listed
    end PROT_NONE.  No run is ever writable.
    """

    start: int
    length: int
    protections: list[tuple[int, int, int]]

    @property
    def end(self) -> int:
        return self.start + self.length

    @property
    def initial_prot(self) -> int:
        """What the whole range is mapped with: the union of its runs.  MDWE (PR_SET_MDWE) refuses to
        *gain* PROT_EXEC, so afterwards protections are only ever taken away (``protections_down``)."""
        prot = 0
        for _, _, p in self.protections:
            prot |= p
        return prot

    def protections_down(self) -> list[tuple[int, int, int]]:
        """(start, length, PROT_*) to mprotect after mapping with ``initial_prot``: each run with less,
        and each gap between runs (PROT_NONE), in address order."""
        out, pos, initial = [], self.start, self.initial_prot
        for s, n, p in sorted(self.protections):
            if s > pos:
                out.append((pos, s - pos, 0))
            if p != initial:
                out.append((s, n, p))
            pos = max(pos, s + n)
        if pos < self.end:
            out.append((pos, self.end - pos, 0))
        return out


@dataclass
class BreakpointConflict:
    """A debugger breakpoint location inside bytes a jump overwrites."""

    addr: int
    function: str
    write_start: int
    write_end: int

    def describe(self) -> str:
        return "breakpoint at %#x lies inside the jump written over %s (%#x..%#x)" % (
            self.addr, self.function, self.write_start, self.write_end)


@dataclass
class LoadPlan:
    """Everything an apply does; ``problems`` non-empty means it must not be executed."""

    patch_build_id: str
    patch_path: str
    target_build_id: str
    target_path: str
    target_bias: int
    placement: Placement
    mapping: MappingPlan | None  # None: re-apply into the existing (inactive) mapping
    segment_writes: list[Write]
    jump_writes: list[Write]
    resolutions: list[Resolution]
    registry_after: Registry
    breakpoints_to_disable: list[BreakpointConflict] = field(default_factory=list)
    problems: list[NsbError] = field(default_factory=list)
    jumps: list[tuple[str, jumps_mod.JumpEncoding]] = field(default_factory=list)

    @property
    def writes(self) -> list[Write]:
        """Segment contents first, then the jumps that make them reachable."""
        return self.segment_writes + self.jump_writes

    def check(self):
        """Raise the first problem (a typed NsbError), if any."""
        if self.problems:
            raise self.problems[0]

    def describe(self) -> list[str]:
        """Human-readable lines for --dry-run."""
        lines = ["apply patch %s (%s) to %s (build-id %s, load bias %#x)" % (
            self.patch_build_id, self.patch_path, self.target_path, self.target_build_id, self.target_bias)]
        if self.mapping is None:
            lines.append("reuse existing mapping %#x..%#x (patch load bias %#x)" % (
                self.placement.start, self.placement.end, self.placement.bias))
        else:
            lines.append("map %#x..%#x (%d KiB, %s, patch load bias %#x)" % (
                self.mapping.start, self.mapping.end, self.mapping.length // 1024,
                "rel32 jumps" if self.placement.near else "absolute jumps: out of rel32 reach",
                self.placement.bias))
            for s, n, p in self.mapping.protections:
                lines.append("  protect %#x..%#x %s" % (s, s + n, _prot_name(p)))
        for r in self.resolutions:
            lines.append("bind " + r.describe())
        for w in self.writes:
            lines.append(w.describe())
        for name, j in self.jumps:
            lines.append("redirect %s: %s" % (name, j.describe()))
        for b in self.breakpoints_to_disable:
            lines.append("disable " + b.describe())
        for problem in self.problems:
            lines.append("PROBLEM: %s" % problem)
        return lines


@dataclass
class RevertPlan:
    """Restore the layer below for each function of one patch; the mapping stays (inactive)."""

    patch_build_id: str
    writes: list[Write]
    registry_after: Registry
    problems: list[NsbError] = field(default_factory=list)
    unmap: tuple[int, int] | None = None  # (start, length) only when --unmap was asked

    def check(self):
        if self.problems:
            raise self.problems[0]

    def describe(self) -> list[str]:
        lines = ["revert patch %s" % self.patch_build_id]
        if not self.writes:
            lines.append("no bytes change (the patch is under other layers everywhere)")
        lines += [w.describe() for w in self.writes]
        if self.unmap:
            lines.append("unmap %#x..%#x" % (self.unmap[0], self.unmap[0] + self.unmap[1]))
        else:
            lines.append("the patch's memory stays mapped, inactive")
        lines += ["PROBLEM: %s" % p for p in self.problems]
        return lines


# ---- building plans ------------------------------------------------------------------------


def protections(segments, bias: int) -> list[tuple[int, int, int]]:
    """Per-page protection runs of the patch's segments (union where they share a page; never W)."""
    pages: dict[int, int] = {}
    for s in segments:
        prot = (PROT_READ if s.flags & 4 else 0) | (PROT_EXEC if s.flags & 1 else 0)
        for p in range(page_down(bias + s.vaddr), page_up(bias + s.vaddr + s.memsz), PAGE_SIZE):
            pages[p] = pages.get(p, 0) | prot
    runs: list[list[int]] = []
    for p in sorted(pages):
        if runs and runs[-1][0] + runs[-1][1] == p and runs[-1][2] == pages[p]:
            runs[-1][1] += PAGE_SIZE
        else:
            runs.append([p, PAGE_SIZE, pages[p]])
    return [(r[0], r[1], r[2]) for r in runs]


def _original_entry_bytes(fj, target_image, length: int) -> bytes:
    """The target's own bytes at the function entry: entry_bytes of the patch, completed from the file."""
    b = bytes(fj.entry_bytes or b"")
    if fj.func_size:
        # No jump writes past the function's end (encode_jump refuses it); a function that ends
        # its segment has no file bytes after it to read.
        length = min(length, fj.func_size)
    if len(b) < length and target_image is not None:
        try:
            from_file = target_image.read_vaddr(fj.func_value, length)
        except NsbError:
            from_file = b""
        if b and from_file and from_file[:len(b)] != b:
            raise MismatchError("%s: the target file's bytes at %s (%#x) differ from the patch's entry_bytes"
                                % (target_image.path, fj.name, fj.func_value))
        b = from_file or b
    return b


def _find_target(view: ProcessView, livepatch):
    target = view.object_by_build_id(livepatch.old_bid)
    if target is None:
        raise MismatchError("target with build-id %s (%s) is not mapped in the process"
                            % (livepatch.old_bid, livepatch.target_name or "?"))
    return target


def _target_extent(view, target, target_image) -> tuple[int, int]:
    lo, hi = target_image.load_span()
    lo, hi = lo + target.load_bias, hi + target.load_bias
    if target.ranges:
        lo, hi = min(lo, target.low), max(hi, target.high)
    return lo, hi


def plan_load(view: ProcessView, livepatch, patch_image, registry: Registry, breakpoints=(),
              breakpoint_policy: str = BREAKPOINTS_REFUSE, target_image=None,
              ifunc_results: dict[int, int] | None = None) -> LoadPlan:
    """Plan applying ``livepatch`` (whose ELF is ``patch_image``) to the process in ``view``.

    Fatal mismatches (target not mapped, patch already applied, unsupported
    relocation) raise; everything else that makes the plan unexecutable is
    collected in ``plan.problems`` so that ``nsb-check`` can list all reasons.
    ``registry`` is not modified; ``plan.registry_after`` is the new one.
    """
    if patch_image.build_id and patch_image.build_id != livepatch.new_bid:
        raise MismatchError("%s: build-id %s differs from the vzpatch section's new_bid %s"
                            % (patch_image.path, patch_image.build_id, livepatch.new_bid))
    target = _find_target(view, livepatch)
    if target_image is None:
        target_image = view.image(target)
    check_relocation_types(patch_image)
    reg = copy.deepcopy(registry)
    old = reg.patch(livepatch.new_bid)
    if old is not None and old.state == STATE_ACTIVE:
        raise AlreadyAppliedError("patch %s is already applied (load base %#x)"
                                  % (livepatch.new_bid, old.patch_load_base))
    problems: list[NsbError] = []

    span = patch_image.load_span()
    align = max([s.align for s in patch_image.segments] + [PAGE_SIZE])
    if old is not None:
        # Re-apply: the inactive mapping is still there; reuse it.
        if old.target_build_id != livepatch.old_bid or old.target_load_bias != target.load_bias:
            raise MismatchError("inactive mapping of patch %s belongs to another target instance (bias %#x, now %#x)"
                                % (livepatch.new_bid, old.target_load_bias, target.load_bias))
        start = min(r.start for r in old.ranges) if old.ranges else old.patch_load_base + span[0]
        end = max(r.start + r.length for r in old.ranges) if old.ranges else old.patch_load_base + span[1]
        extent = _target_extent(view, target, target_image)
        near = max(end, extent[1]) - min(start, extent[0]) <= (1 << 31) - 64
        placement = Placement(old.patch_load_base, start, end, near)
        mapping = None
    else:
        main = view.main_executable
        extent = _target_extent(view, target, target_image)
        need_near = any(st.patch_size == 4 for st in livepatch.static_symbols)
        placement = choose_placement(span, align, extent, view.mappings, view.program_break,
                                     main.high if main is not None and main.ranges else None,
                                     need_near, os.path.basename(patch_image.path))
        mapping = MappingPlan(placement.start, placement.length, protections(patch_image.segments, placement.bias))

    resolver = SymbolResolver(view, target, patch_image, livepatch, target_image, ifunc_results)
    resolutions, sym_problems = resolver.resolve_all()
    problems += sym_problems

    def value_of(rel):
        res = resolutions.get(rel.sym_index)
        return res.runtime(placement.bias) if res is not None else 0

    relocated = relocate(patch_image, placement.bias, value_of)
    try:
        apply_static_fixups(relocated, livepatch.static_symbols, target.load_bias, patch_image.path)
    except OutOfReach as e:
        problems.append(e)
    seg_writes = [Write(s.start, bytes(s.data), None, "segment %#x+%#x (%s)" % (
        s.vaddr, s.memsz, _prot_name(s.prot))) for s in relocated.segments if s.memsz]

    # Redirect: push one layer per function onto the registry's stacks.
    ranges = [MappedRange(s, n, p) for s, n, p in protections(patch_image.segments, placement.bias)]
    if old is None:
        rec = PatchRecord(livepatch.new_bid, livepatch.old_bid, livepatch.target_name or
                          os.path.basename(target.path), target.load_bias, placement.bias, ranges,
                          livepatch.path or patch_image.path)
        reg.patches.append(rec)
    else:
        rec = old
        rec.state = STATE_ACTIVE
        rec.functions = []
    # Callbacks at their run-time addresses: a revert needs no patch file to run them.  A re-apply
    # is a fresh start for them.
    rec.callbacks = [(c.kind, placement.bias + c.patch_value, c.name) for c in livepatch.callbacks]
    rec.callback_state = ""
    # The patch's place in a series, for later applies, reverts and `list` (lifecycle/series.py).
    rec.needs = list(livepatch.needs_patches)
    rec.needs_states = [(s.id, s.version) for s in livepatch.needs_states]
    rec.states = [(s.id, s.version) for s in livepatch.provides_states]
    rec.replaced = []
    jump_writes, encodings, conflicts = [], [], []
    bps = sorted(set(breakpoints))
    for fj in livepatch.func_jumps:
        entry = target.load_bias + fj.func_value
        dest = placement.bias + fj.patch_value
        try:
            head = _original_entry_bytes(fj, target_image, 4)
            j = jumps_mod.encode_jump(fj.name, entry, dest, fj.func_size, head, allow_rel32=placement.near)
            original = _original_entry_bytes(fj, target_image, j.at - entry + jumps_mod.MAX_JUMP_LEN)
            original = original[j.at - entry:]
            if len(original) < j.length:
                raise MismatchError("no original bytes known for %d bytes of %s at %#x" % (j.length, fj.name, j.at))
            lw = reg.push_layer(livepatch.new_bid, fj.name, j.at, j.code, original)
        except (FunctionTooShort, MismatchError) as e:
            problems.append(e)
            continue
        except LayerError as e:
            problems.append(EntryMismatch(str(e)))
            continue
        encodings.append((fj.name, j))
        if lw.changes_memory:
            jump_writes.append(Write(lw.entry, lw.new, lw.expected, "jump over %s" % fj.name))
            lo, hi = lw.entry, lw.entry + len(lw.new)
            for bp in bps:
                if lo <= bp < hi and bp != entry:
                    c = BreakpointConflict(bp, fj.name, lo, hi)
                    if breakpoint_policy == BREAKPOINTS_DISABLE:
                        conflicts.append(c)
                    else:
                        problems.append(BreakpointInJump(c.describe() + "; delete or disable it first"))

    return LoadPlan(livepatch.new_bid, patch_image.path, livepatch.old_bid, target.path, target.load_bias,
                    placement, mapping, seg_writes, jump_writes,
                    [resolutions[k] for k in sorted(resolutions)], reg, conflicts, problems, encodings)


def plan_revert(registry: Registry, patch_build_id: str, unmap: bool = False) -> RevertPlan:
    """Plan taking patch ``patch_build_id`` out of every function stack it is in.

    Where the patch is on top, the layer below comes back (the original
    bytes, or the jump of the patch under it); where it is not on top it only
    leaves the stack and no byte is written.  The record stays, inactive,
    with its mapping, so that a re-apply reuses it.
    """
    reg = copy.deepcopy(registry)
    rec = reg.patch(patch_build_id)
    if rec is None or rec.state != STATE_ACTIVE:
        raise NotAppliedError("patch %s is not applied" % patch_build_id)
    writes: list[Write] = []
    problems: list[NsbError] = []
    for f in list(rec.functions):
        try:
            lw = reg.pop_layer(patch_build_id, f.entry)
        except LayerError as e:
            problems.append(EntryMismatch(str(e)))
            continue
        if lw.changes_memory:
            writes.append(Write(lw.entry, lw.new, lw.expected, "restore %s" % f.name))
    rec.state = STATE_INACTIVE
    span = None
    if unmap:
        if rec.ranges:
            lo = min(r.start for r in rec.ranges)
            hi = max(r.start + r.length for r in rec.ranges)
            span = (lo, hi - lo)
        reg.patches.remove(rec)
    return RevertPlan(patch_build_id, writes, reg, problems, span)


def identify_jump(registry: Registry, at: int, data: bytes) -> str | None:
    """Build-id of the patch whose jump is in ``data`` (read at the jump start ``at``), or None.

    None means the bytes are not one of our jumps into a patch the registry
    knows (the original code, or something foreign: compare with the file).
    """
    j = jumps_mod.decode_jump(at, data)
    if j is None:
        return None
    for p in registry.patches:
        if any(r.start <= j.dest < r.start + r.length for r in p.ranges):
            return p.patch_build_id
    return None


def check_load(view: ProcessView, livepatch, patch_image, registry: Registry, memory=None, **kw) -> list[str]:
    """``nsb-check``'s answer to "could it be applied right now?": every reason it cannot (empty: it can).

    Fatal refusals of planning (target not mapped, already applied,
    unsupported relocation, no address space) are reasons too.
    """
    try:
        plan = plan_load(view, livepatch, patch_image, registry, **kw)
    except NsbError as e:
        return [str(e)]
    return evaluate(plan, memory if memory is not None else view.memory)


def evaluate(plan, memory) -> list[str]:
    """Reasons ``plan`` cannot be executed now (empty: it can); reads memory, writes nothing."""
    reasons = [str(p) for p in plan.problems]
    for w in plan.writes:
        if w.expected is None:
            continue
        try:
            now = bytes(memory.read(w.addr, len(w.expected)))
        except (NsbError, OSError) as e:
            reasons.append("cannot read %d bytes at %#x (%s): %s" % (len(w.expected), w.addr, w.what, e))
            continue
        if now != w.expected:
            reasons.append("bytes at %#x (%s) are %s, expected %s" % (w.addr, w.what, now.hex(), w.expected.hex()))
    return reasons
