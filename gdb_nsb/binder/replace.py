"""The atomic replace plan: a cumulative patch takes the place of every patch of its target object.

One plan, executed in one stop at one safe point: the new patch's mapping and
segments as for an apply, then per function entry of the old set and the new
one a single write from what is there now (the top jump) to what must be
there after: the new patch's jump, or the original bytes for a function only
the old patches changed.  No entry ever shows an intermediate layer, so no
thread can run an old and a new function in one call chain.  The replaced
records leave the registry; their mappings are unmapped at commit, unless a
pointer into them is found then (``keep_mapped``): the record stays, inactive.

The tool may be killed between any two writes, so the registry passes through
two states a plain apply and revert already know, each committed before the
writes it describes: first the new patch *stacked* over the old ones
(``registry_stacked``) while entries switch to the new jumps, a kill leaving a
partial stacked apply that ``revert`` of the new patch finishes back to the
old set; then the old records *reduced* to the entries only they changed
(``registry_reduced``) while those get their original code back, a kill
leaving those records partly reverted, which their ``revert`` finishes.  No
jump is ever left in memory that no record accounts for.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from gdb_nsb.binder.errors import EntryMismatch
from gdb_nsb.binder.plan import LoadPlan, Write, _find_target, plan_load
from gdb_nsb.registry import STATE_ACTIVE, STATE_INACTIVE, LayerError, PatchRecord, Registry


def replaced_set(registry: Registry, livepatch, target_bias: int) -> list[PatchRecord]:
    """The active records a replace by ``livepatch`` takes out: every patch of the same target object."""
    return [r for r in registry.patches
            if r.state == STATE_ACTIVE and r.patch_build_id != livepatch.new_bid
            and r.target_build_id == livepatch.old_bid and r.target_load_bias == target_bias]


def _record(registry: Registry, build_id: str) -> PatchRecord:
    rec = registry.patch(build_id)
    assert rec is not None, build_id  # planned from this very registry
    return rec


def _span(record):
    if not record.ranges:
        return None
    lo = min(r.start for r in record.ranges)
    return lo, max(r.start + r.length for r in record.ranges) - lo


@dataclass
class ReplacePlan(LoadPlan):
    """A LoadPlan whose ``jump_writes`` switch every entry of the old and new sets at once.

    ``replaced``: the records taken out (as they were); ``retire``: {build-id: (start, length)} of
    their mappings, unmapped at commit; ``kept``: {build-id: why} of those kept mapped instead.
    """

    replaced: list[PatchRecord] = field(default_factory=list)
    retire: dict[str, tuple[int, int]] = field(default_factory=dict)
    kept: dict[str, str] = field(default_factory=dict)
    restored: list[str] = field(default_factory=list)  # functions given back their original code
    tops_before: dict[int, str] = field(default_factory=dict)  # entry -> the old top layer's build-id

    def switch_writes(self) -> list[Write]:
        """The writes of entries the new patch takes (each from an old jump or the original to its jump)."""
        new_entries = self._new_entries()
        return [w for w in self.jump_writes if w.addr in new_entries]

    def restore_writes(self) -> list[Write]:
        """The writes giving back original code at entries only the replaced patches changed."""
        new_entries = self._new_entries()
        return [w for w in self.jump_writes if w.addr not in new_entries]

    def _new_entries(self) -> set[int]:
        return {f.entry for f in _record(self.registry_after, self.patch_build_id).functions}

    def registry_stacked(self) -> Registry:
        """The registry while entries switch: the replaced records as they were, the new one on top of them
        (no ``replaced`` yet: reverting it gives back the old set)."""
        reg = copy.deepcopy(self.registry_after)
        reg.patches = [r for r in reg.patches if r.patch_build_id not in self._replaced_ids()]
        reg.patches[:0] = copy.deepcopy(Registry(self.replaced)).patches
        rec = _record(reg, self.patch_build_id)
        rec.replaced = []
        for f in rec.functions:
            f.below = self.tops_before.get(f.entry, "")
        return reg

    def registry_reduced(self) -> Registry:
        """The registry while old-only entries are restored: the new patch as it ends, each replaced record
        kept active with only the entries no new layer covers (records left with none are gone)."""
        reg = copy.deepcopy(self.registry_after)
        new_entries = self._new_entries()
        for old in copy.deepcopy(Registry(self.replaced)).patches:
            old.functions = [f for f in old.functions if f.entry not in new_entries]
            if not old.functions:
                continue
            # A record kept mapped (inactive, no layers) is the same patch: its reduced form stands in.
            reg.patches = [r for r in reg.patches if r.patch_build_id != old.patch_build_id]
            reg.patches.insert(0, old)
        return reg

    def _replaced_ids(self) -> set[str]:
        return {r.patch_build_id for r in self.replaced}

    def keep_mapped(self, build_id: str, why: str) -> None:
        """Keep a replaced patch's memory (something points into it): its record stays, inactive, no layers."""
        old = next(r for r in self.replaced if r.patch_build_id == build_id)
        rec = copy.deepcopy(Registry([old])).patches[0]
        rec.state, rec.functions = STATE_INACTIVE, []
        self.registry_after.patches.insert(0, rec)
        self.retire.pop(build_id, None)
        self.kept[build_id] = why

    def describe(self) -> list[str]:
        lines = super().describe()
        head = ["replace %s (every patch of %s) in the same stop" % (
            ", ".join(r.patch_build_id[:16] for r in self.replaced) or "nothing (no patch applied)",
            self.target_path)]
        if self.restored:
            head.append("restore the original code of %s (only the replaced patches changed it)"
                        % ", ".join(self.restored))
        for bid, (start, length) in self.retire.items():
            head.append("unmap %#x..%#x of replaced patch %s (kept, inactive, if a pointer into it is found)"
                        % (start, start + length, bid[:16]))
        return lines[:1] + head + lines[1:]


def plan_replace(view, livepatch, patch_image, registry: Registry, breakpoints=(), breakpoint_policy="refuse",
                 target_image=None, ifunc_results=None) -> ReplacePlan:
    """Plan applying ``livepatch`` in place of every active patch of its target object (see the module)."""
    target = _find_target(view, livepatch)
    replaced = replaced_set(registry, livepatch, target.load_bias)
    problems: list = []
    without = copy.deepcopy(registry)
    for old in replaced:
        mine = _record(without, old.patch_build_id)
        for f in list(mine.functions):
            try:
                without.pop_layer(old.patch_build_id, f.entry)
            except LayerError as e:
                problems.append(EntryMismatch(str(e)))
        without.patches.remove(mine)
    load = plan_load(view, livepatch, patch_image, without, breakpoints, breakpoint_policy, target_image,
                     ifunc_results)
    after = load.registry_after
    rec = _record(after, livepatch.new_bid)
    stands_for = []
    for old in replaced:
        for bid in [old.patch_build_id] + list(old.replaced):
            if bid not in stands_for and bid != livepatch.new_bid:
                stands_for.append(bid)
    rec.replaced = stands_for

    names: dict[int, str] = {}
    for old in replaced:
        for f in old.functions:
            names.setdefault(f.entry, f.name)
    new_entries = {f.entry for f in rec.functions}
    for f in rec.functions:
        names.setdefault(f.entry, f.name)
    writes, restored = [], []
    for entry in sorted(names):
        length = max(registry._covered(entry), after._covered(entry))
        original = registry.original_bytes(entry, length) or after.original_bytes(entry, length)
        try:
            now = registry.expected_bytes(entry, length, original)
            then = after.expected_bytes(entry, length, original)
        except LayerError as e:
            problems.append(EntryMismatch(str(e)))
            continue
        if entry not in new_entries:
            restored.append(names[entry])
        if now != then:
            what = "jump over %s" % names[entry] if entry in new_entries else "restore %s" % names[entry]
            writes.append(Write(entry, then, now, what))
    retire = {}
    for old in replaced:
        span = _span(old)
        if span is not None:
            retire[old.patch_build_id] = span
    fields = {k: getattr(load, k) for k in LoadPlan.__dataclass_fields__}
    fields.update(jump_writes=writes, problems=problems + load.problems)
    tops = {}
    for entry in new_entries:
        top = registry.top(entry)
        if top is not None:
            tops[entry] = top
    return ReplacePlan(**fields, replaced=replaced, retire=retire, restored=restored, tops_before=tops)
