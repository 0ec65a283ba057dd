"""The live-patching operations inside GDB: apply, revert, list, check.

Each operation reads what it can before touching the process (the patch
file, its vzpatch section, the ELF files of the mapped objects), plans every
byte with the binder, waits for a safe point, and executes the plan in the
same stop through an undo log: any failure, including the deadline passing,
restores bytes, mappings and registry and leaves the process as it was.

Write order of an apply (the visible switch last): patch segments, then the
registry record, then the jumps.  A revert restores the jumps first, then
stores the registry.  A tool killed in between leaves a state that
``nsb-check`` reports as partial and ``nsb-revert`` repairs.
"""

import copy
import os
import time
from dataclasses import dataclass, field

import gdb

from gdb_nsb import errors
from gdb_nsb.binder import plan as planmod
from gdb_nsb.binder.errors import IfuncNeedsResolver
from gdb_nsb.elf.image import ElfImage
from gdb_nsb.elf.livepatch import LivePatch
from gdb_nsb.lifecycle.busy import busy_for_apply, busy_for_revert
from gdb_nsb.lifecycle.guards import guard_apply_writes, guard_revert_writes
from gdb_nsb.process import bpguard, environment, faults, filecache, postmortem, snapshot as snap, symbols
from gdb_nsb.process.inferior import Inferior, ProcessAccessError
from gdb_nsb.process.registry_store import RegistryStore
from gdb_nsb.process.run_windows import ensure_all_stopped
from gdb_nsb.process.safepoint_wait import DEFAULT_TRIES, wait_for_safe_point
from gdb_nsb.process.stacks import collect_stacks
from gdb_nsb.process.syscalls import (MAP_ANONYMOUS, MAP_PRIVATE, PROT_NONE, SyscallInjector)
from gdb_nsb.process.undo import Deadline, UndoLog
from gdb_nsb.registry import STATE_ACTIVE, STATE_INACTIVE, Registry
from gdb_nsb.safepoint import SafePointCheck

STRATEGIES = ("retry", "runout")


@dataclass
class Options:
    dry_run: bool = False
    retries: int = DEFAULT_TRIES
    timeout: float = 60.0
    strategy: str = "retry"
    allow_seccomp: bool = False
    breakpoints: str = planmod.BREAKPOINTS_REFUSE
    unmap: bool = False
    verbose: int = 0


@dataclass
class Outcome:
    """What an operation did: lines for a human, fields for --json."""

    code: int = 0
    message: str = ""
    lines: list = field(default_factory=list)
    patch: dict = field(default_factory=dict)
    target: dict = field(default_factory=dict)
    functions: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    reasons: list = field(default_factory=list)
    state: str = ""
    patches: list | None = None  # set by list (also when empty, so --json always has the key)

    def as_dict(self):
        d = {"result": "ok" if self.code == 0 else "error", "code": self.code, "message": self.message,
             "lines": self.lines, "patch": self.patch, "target": self.target, "functions": self.functions,
             "timings": self.timings}
        if self.reasons:
            d["reasons"] = self.reasons
        if self.state:
            d["state"] = self.state
        if self.patches is not None:
            d["patches"] = self.patches
        return d


class _Clock:
    def __init__(self):
        self.t0 = time.monotonic()
        self.last = self.t0
        self.marks = {}

    def mark(self, name):
        now = time.monotonic()
        self.marks[name + "_s"] = round(now - self.last, 6)
        if name == "safe_point":
            # Absolute (CLOCK_MONOTONIC): bench/run.py measures from here to the target's resumption.
            self.marks["safe_point_done_at"] = now
        self.last = now

    def total(self):
        self.marks["command_s"] = round(time.monotonic() - self.t0, 6)
        return self.marks


def _read_patch(path):
    if not os.path.isfile(path):
        raise errors.PatchFileError("patch file not found: %s" % path)
    # Read before the stop by filecache.prefetch when the runner drives us: the same objects come back.
    lp, image = filecache.livepatch(path), filecache.image(path)
    if lp.new_bid == lp.old_bid:
        # Registry, symbols and safe-point ranges key patches and targets by build-id: they must differ.
        raise errors.PatchFileError("%s: the patch's build-id %s equals its target's; a live patch must be a "
                                    "build of its own" % (path, lp.new_bid))
    _check_symbol_indexes(lp, image)
    return lp, image


def _check_symbol_indexes(lp, image):
    """Every pre-resolved symbol of the section must name a real undefined .dynsym entry of the patch."""
    dynsyms = image.dynsyms
    for what, marked in (("manual_symbols", lp.manual_symbols), ("global_symbols", lp.global_symbols)):
        for m in marked:
            if not 0 < m.idx < len(dynsyms):
                raise errors.PatchFileError("vzpatch %s names symbol index %d, but the patch's .dynsym has %d entries"
                                            % (what, m.idx, len(dynsyms)))


def _context():
    inf = Inferior()
    if not inf.pid:
        raise errors.ProcessNotFoundError("no process: attach to the target first (attach PID)")
    inf.check_architecture()
    return inf


def _load_registry(store):
    reg = store.load()
    return reg if reg is not None else Registry()


def _patch_dict(lp, path):
    return {"path": path, "build_id": lp.new_bid, "target_build_id": lp.old_bid,
            "target_name": lp.target_name or ""}


def _target_dict(view, build_id):
    obj = view.object_by_build_id(build_id)
    if obj is None:
        return {"build_id": build_id, "mapped": False}
    return {"build_id": build_id, "mapped": True, "path": obj.path, "load_bias": obj.load_bias}


def absent_target_reason(view, lp, pid):
    """Why the patch's target (by build-id) is not in the process: a build-id mismatch when an
    object of the target's name (or, for an executable target, the main executable) is mapped."""
    named = [o for o in view.objects if not o.is_vdso and lp.target_name and
             (os.path.basename(o.path) == lp.target_name or o.soname == lp.target_name)]
    if not named and lp.target_is_executable:
        named = [o for o in view.objects if o.is_main_executable]
    if named:
        return ("build-id mismatch: %s is mapped with build-id %s, the patch is for %s (%s)"
                % (named[0].path, named[0].build_id, lp.old_bid, lp.target_name or "?"))
    return "target not mapped: no object with build-id %s (%s) in process %d" % (lp.old_bid, lp.target_name or "?",
                                                                               pid)


def target_unloaded(record, view):
    """The object ``record`` patched is gone: its build-id is not mapped, or mapped at another load bias
    (dlclose, then dlopen elsewhere).  Its recorded entries may be unmapped or hold other code now."""
    obj = view.object_by_build_id(record.target_build_id)
    return obj is None or obj.load_bias != record.target_load_bias


def _not_in_effect(record, inf):
    """An active record whose every entry holds the target's own code: no jump of any layer is there.

    Seen when the target was dlclosed and dlopened again at the same address
    (the loader maps fresh code), or when an apply or revert was cut short."""
    if record.state != STATE_ACTIVE or not record.functions:
        return False
    for f in record.functions:
        try:
            if inf.read(f.entry, len(f.original)) != f.original:
                return False
        except errors.NsbError:
            return False
    return True


def settle_gone_instances(registry, view, inf, target_build_id):
    """Before an apply to ``target_build_id``: records of an earlier instance of that object stop blocking it.

    A record whose target is unloaded, or whose jumps are all gone, becomes
    inactive (its layers leave the stacks; no byte is written: the recorded
    addresses are not the old code any more), and an inactive record is bound
    to the object's current load bias so a re-apply reuses its mapping.
    Returns (registry, [one line per record settled]); the input is not modified.
    """
    reg = registry
    lines = []
    obj = view.object_by_build_id(target_build_id)
    for rec in registry.patches:
        if rec.target_build_id != target_build_id:
            continue
        gone = target_unloaded(rec, view)
        if not gone and not _not_in_effect(rec, inf):
            continue
        if reg.patch(rec.patch_build_id).state == STATE_ACTIVE:
            reg = planmod.plan_revert(reg, rec.patch_build_id).registry_after  # its writes are dropped
        else:
            reg = copy.deepcopy(reg) if reg is registry else reg
        if obj is not None:
            reg.patch(rec.patch_build_id).target_load_bias = obj.load_bias
        lines.append("patch %s was made for an earlier instance of %s (%s): its record is inactive now, "
                     "nothing written at its old addresses" % (rec.patch_build_id[:16], rec.target_name,
                                                                "unloaded" if gone else "its jumps are gone"))
    return reg, lines


def _patch_images(registry, hints=()):
    """ElfImage of each registered patch whose file (hint or recorded path) has its build-id."""
    out = {}
    for rec in registry.patches:
        for path in list(hints) + [rec.patch_path]:
            if path and os.path.isfile(path):
                try:
                    img = filecache.image(path)
                except errors.NsbError:
                    continue
                if img.build_id == rec.patch_build_id:
                    out[rec.patch_build_id] = img
                    break
    return out


def _refuse_environment(findings, opts):
    for f in findings:
        if f.code.startswith("seccomp") and not opts.allow_seccomp:
            raise errors.EnvironmentRefusal("%s; applying could make the kernel kill the process "
                                            "(allow it explicitly with --allow-seccomp)" % f.message)


def _safe_point(busy, opts, deadline, entries=None):
    # Cold fragments may lie below the entry: name the entries, never guess them from the ranges.
    check = SafePointCheck(busy, entries or {name: set() for name in busy})
    calls = [0]

    def collect():
        calls[0] += 1
        return collect_stacks()

    # An exec in a run window replaces the whole image.  A catchpoint makes GDB stop right at it
    # (without one, GDB 13 was seen to die of an internal error when threads vanished mid-window);
    # the main executable's mapping then tells that it happened.
    before = _main_mapping()
    catch = _catch_exec()
    try:
        try:
            wait_for_safe_point(check, strategy=opts.strategy, tries=max(1, opts.retries),
                                deadline=deadline, collect=collect)
        except (errors.TargetExitedError, errors.TargetExecError):
            raise  # the run window told exactly what happened (and left GDB detached or the process gone)
        except (errors.NsbError, gdb.error):
            if before is not None and _main_mapping() != before:
                raise _exec_abort()
            raise
        finally:
            if catch is not None and catch.is_valid():
                catch.delete()
        if before is not None and _main_mapping() != before:
            raise _exec_abort()
    except errors.BusyError as e:
        # Still "busy" (3), not "timeout" (15): the cause is a thread inside the code, not us.
        if deadline is not None and deadline.expired():
            raise errors.BusyError("the deadline (--timeout) passed before a safe point: %s" % e)
        raise
    return calls[0]


def _plan_apply(view, lp, image, registry, opts):
    bps = snap.breakpoint_locations()
    plan = planmod.plan_load(view, lp, image, registry, bps, opts.breakpoints)
    ifunc = [p for p in plan.problems if isinstance(p, IfuncNeedsResolver)]
    if ifunc:
        raise errors.UnsupportedError("%s; no loaded object has a resolved slot for it" % ifunc[0])
    return plan


def apply(path, opts: Options) -> Outcome:
    """Apply the live patch in ``path`` to the current inferior."""
    clock = _Clock()
    deadline = Deadline(opts.timeout)
    path = os.path.abspath(path)
    lp, image = _read_patch(path)
    out = Outcome(patch=_patch_dict(lp, path))
    clock.mark("read_patch")
    inf = _context()
    ensure_all_stopped()
    injector = SyscallInjector(inf)
    store = RegistryStore(inf, injector)
    registry = _load_registry(store)
    files_by_bid = _patch_images(registry, [path])
    symbols.register_all(registry, [path])
    _refuse_environment(environment.collect(inf), opts)
    view = snap.snapshot(inf)
    out.target = _target_dict(view, lp.old_bid)
    if view.object_by_build_id(lp.old_bid) is None:
        raise errors.MismatchError(absent_target_reason(view, lp, inf.pid))
    registry, settled = settle_gone_instances(registry, view, inf, lp.old_bid)
    plan = _plan_apply(view, lp, image, registry, opts)
    plan.check()
    clock.mark("plan")
    if opts.dry_run:
        reasons = planmod.evaluate(plan, inf)
        out.lines = ["dry run: nothing written"] + plan.describe() + ["cannot apply now: " + r for r in reasons]
        out.reasons = reasons
        out.code = 0 if not reasons else errors.MismatchError.exit_code
        out.message = ("dry run: patch %s could be applied now" % lp.new_bid if not reasons
                       else "dry run: patch %s cannot be applied now: %s" % (lp.new_bid, reasons[0]))
        out.timings = clock.total()
        return out
    target_bias = plan.target_bias
    busy, entries = busy_for_apply(lp, target_bias, registry, files_by_bid)
    checks = _safe_point(busy, opts, deadline, entries)
    clock.mark("safe_point")
    if checks > 1:
        # The process ran between tries: take a fresh look before writing.
        before, view = view, snap.snapshot(inf)
        abort_if_exec(before, view, inf.pid)
        registry, settled = settle_gone_instances(_load_registry(store), view, inf, lp.old_bid)
        plan = _plan_apply(view, lp, image, registry, opts)
        plan.check()
        clock.mark("replan")
    _execute_apply(inf, injector, store, plan, deadline, view)
    clock.mark("write")
    out.timings = clock.total()
    rec = plan.registry_after.patch(lp.new_bid)
    symbols.register(rec, [path])
    bpguard.track(plan.registry_after)
    out.functions = [{"name": name, "entry": j.entry, "jump": j.kind, "destination": j.dest,
                      "layer": len(plan.registry_after.stack(j.at))} for name, j in plan.jumps]
    out.message = "patch %s applied to %s: %d function%s redirected (load base %#x)" % (
        lp.new_bid[:16], os.path.basename(plan.target_path), len(plan.jumps), "" if len(plan.jumps) == 1 else "s",
        plan.placement.bias)
    out.lines = settled + [out.message]
    return out


def _protections_to_restore(ranges, mappings):
    """(start, length, prot) of each recorded range whose pages the memory map shows with other
    permissions, or not wholly mapped (its mprotect then fails: ENOMEM), or unknown (old GDB)."""
    out = []
    for r in ranges:
        want = "".join((("r" if r.prot & 1 else "-"), ("w" if r.prot & 2 else "-"), ("x" if r.prot & 4 else "-")))
        end, covered, same = r.start + r.length, 0, True
        for m in mappings:
            if m.start < end and r.start < m.end:
                covered += min(m.end, end) - max(m.start, r.start)
                same = same and m.perms is not None and m.perms[:3] == want
        if not same or covered != r.length:
            out.append((r.start, r.length, r.prot))
    return out


def _execute_apply(inf, injector, store, plan, deadline, view):
    guard_apply_writes(plan, view)
    disabled = []
    try:
        with injector.session(), UndoLog(inf, injector, deadline) as undo:
            if plan.mapping is not None:
                m = plan.mapping
                # Reserve the planned range before anything else is mapped: the registry and its
                # scratch page are mmap(0) and the kernel puts them in the same kind of gap near
                # the target that placement chose (seen: EEXIST next to a shared library).
                undo.mmap(m.start, m.length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS)
                faults.point("after-mmap")
                if store.location is None:
                    # First patch of this process: the registry is created now.  Later patches
                    # find it in place, so recording their mapping is a plain memory write.
                    store.save(Registry(generation=plan.registry_after.generation), undo)
                # Record the new mapping (inactive, no jumps) at once: a tool killed from here on
                # leaves a registered, reusable mapping rather than an anonymous orphan.
                pending = _pending_registry(plan)
                store.save(pending, undo)
                plan.registry_after.generation = max(plan.registry_after.generation, pending.generation)
                for start, length, prot in m.protections:
                    injector.check("mprotect", 10, start, length, prot)
                    faults.point("after-mprotect", "%#x" % start)
            else:
                # Re-apply into the recorded mapping.  Its record is written before the mprotects
                # above, so an apply killed between them left pages PROT_NONE: our ptrace writes
                # still land there, but the first call into them killed the target (SIGSEGV).
                # Set every recorded run the memory map shows otherwise (normally none: a re-apply
                # then injects no system call).  Not undone: the record asks for these protections.
                rec = plan.registry_after.patch(plan.patch_build_id)
                for start, length, prot in _protections_to_restore(rec.ranges, view.mappings):
                    injector.check("mprotect of patch memory %#x..%#x" % (start, start + length), 10, start,
                                   length, prot)
            for w in plan.segment_writes:
                undo.write(w.addr, w.data, w.expected, w.what)
                faults.point("after-segment-write", "%#x" % w.addr)
            store.save(plan.registry_after, undo)
            faults.point("registry-save")
            for c in plan.breakpoints_to_disable:
                disabled += _disable_breakpoints_at(c.addr)
            undo.write_all(plan.jump_writes, after=lambda w: faults.point("after-jump", w.what))
            faults.point("before-commit")
            failed = undo.commit()
            if failed:
                gdb.write("nsb: warning: %s\n" % "; ".join(failed))
    except BaseException:
        for b in disabled:
            b.enabled = True
        raise


def _main_mapping():
    """(start, objfile) of the process's first mapping, or None: changes when the process execs."""
    try:
        inf = Inferior()
        ms = inf.mappings()
    except (errors.NsbError, gdb.error, ValueError):
        return None
    return (ms[0].start, ms[0].objfile) if ms else None


def _catch_exec():
    known = set(b.number for b in gdb.breakpoints() or ())
    try:
        gdb.execute("catch exec", to_string=True)
    except gdb.error:
        return None
    new = [b for b in gdb.breakpoints() or () if b.number not in known]
    return new[0] if new else None


def _exec_abort():
    inf = gdb.selected_inferior()
    return errors.TargetExecError("process %d executed a new program while it ran between safe-point tries; "
                                  "operation aborted, nothing written" % inf.pid)


def _program(view):
    m = view.main_executable
    return None if m is None else (m.path, m.build_id, m.load_bias)


def abort_if_exec(before, after, pid):
    """An exec during a run window replaces the whole image: abort (nothing was written yet)."""
    if _program(before) != _program(after):
        old, new = _program(before), _program(after)
        raise errors.TargetExecError("process %d executed a new program while it ran between safe-point tries "
                                     "(%s -> %s); operation aborted, nothing written"
                                     % (pid, old[0] if old else "?", new[0] if new else "?"))


def _pending_registry(plan):
    """The registry as it must be while the new mapping exists but nothing jumps into it."""
    reg = copy.deepcopy(plan.registry_after)
    rec = reg.patch(plan.patch_build_id)
    rec.state = STATE_INACTIVE
    rec.functions = []
    return reg


def _disable_breakpoints_at(addr):
    out = []
    for b in gdb.breakpoints() or ():
        locs = getattr(b, "locations", None) or []
        if b.enabled and any(loc.address == addr for loc in locs):
            b.enabled = False
            gdb.write("nsb: disabled breakpoint %d at %#x: it lies inside a jump being written\n" % (b.number, addr))
            out.append(b)
    return out


def resolve_patch_id(ident, registry):
    """A build-id (hex, prefix allowed) or a patch file → the registered record."""
    bid = None
    if os.path.isfile(ident):
        try:
            bid = LivePatch.read(ident, check_identity=False).new_bid
        except errors.PatchFileError:
            bid = ElfImage(ident).build_id
    else:
        cand = [p for p in registry.patches if p.patch_build_id.startswith(ident.lower())]
        if len(cand) > 1:
            raise errors.UsageError("build-id prefix %s is ambiguous (%d patches)" % (ident, len(cand)))
        if cand:
            bid = cand[0].patch_build_id
        elif all(c in "0123456789abcdef" for c in ident.lower()) and len(ident) >= 8:
            bid = ident.lower()
        else:
            raise errors.PatchFileError("no such patch file or build-id: %s" % ident)
    return bid


def revert(ident, opts: Options) -> Outcome:
    """Take patch ``ident`` (file or build-id) back out of the current inferior."""
    clock = _Clock()
    deadline = Deadline(opts.timeout)
    inf = _context()
    ensure_all_stopped()
    injector = SyscallInjector(inf)
    store = RegistryStore(inf, injector)
    registry = store.load()
    if registry is None:
        raise errors.NotAppliedError("no live patch is applied in process %d" % inf.pid)
    bid = resolve_patch_id(ident, registry)
    hints = [ident] if os.path.isfile(ident) else []
    rec = registry.patch(bid)
    if rec is None or (rec.state != STATE_ACTIVE and not opts.unmap):
        raise errors.NotAppliedError("patch %s is not applied in process %d" % (bid, inf.pid))
    was_active = rec.state == STATE_ACTIVE
    out = Outcome(patch={"build_id": bid, "path": rec.patch_path, "target_build_id": rec.target_build_id,
                         "target_name": rec.target_name})
    symbols.register_all(registry, hints)
    view = snap.snapshot(inf)
    out.target = _target_dict(view, rec.target_build_id)
    plan = planmod.plan_revert(registry, bid, unmap=opts.unmap) if was_active else _plan_unmap_inactive(registry, rec)
    unloaded = target_unloaded(rec, view)
    if unloaded:
        # The recorded entries are unmapped or belong to other code now: only the record changes.
        plan.writes = []
    plan.check()
    if not unloaded:
        _verify_saved_bytes(view, registry, rec, plan)
    clock.mark("plan")
    if opts.dry_run:
        reasons = planmod.evaluate(plan, inf)
        out.lines = ["dry run: nothing written"] + plan.describe() + ["cannot revert now: " + r for r in reasons]
        out.reasons = reasons
        out.code = 0 if not reasons else errors.PartialStateError.exit_code
        out.message = "dry run: patch %s %s" % (bid, "could be reverted now" if not reasons else
                                                 "cannot be reverted now: " + reasons[0])
        out.timings = clock.total()
        return out
    if _safe_point(busy_for_revert(rec), opts, deadline) > 1:
        before, view = view, snap.snapshot(inf)
        abort_if_exec(before, view, inf.pid)
        if _load_registry(store) != registry:
            raise errors.PartialStateError("the registry of process %d changed while it ran between safe-point "
                                           "tries; nothing written, run the revert again" % inf.pid)
    clock.mark("safe_point")
    guard_revert_writes(plan, rec, view)
    with injector.session(), UndoLog(inf, injector, deadline) as undo:
        # skip_done: already restored (a revert cut short) or never redirected (an apply cut short
        # after its registry write): finishing the job is the repair.
        undo.write_all(plan.writes, after=lambda w: faults.point("revert-after-jump", w.what), skip_done=True)
        store.save(plan.registry_after, undo)
        faults.point("revert-registry-save")
        if plan.unmap is not None:
            start, length = plan.unmap
            holder = find_pointer_into(inf, start, start + length, exclude=[(start, start + length)] +
                                       ([store.location] if store.location else []))
            if holder is not None:
                raise errors.BusyError("not unmapping patch %s: %s still points into it (the patch is reverted "
                                       "but must stay mapped; revert without --unmap)" % (bid[:16], holder))
            undo.defer(lambda: injector.check("munmap", 11, start, length), "unmap the patch at %#x" % start)
        faults.point("revert-before-commit")
        failed = undo.commit()
        if failed:
            raise errors.PartialStateError("patch reverted but: %s" % "; ".join(failed))
    clock.mark("write")
    if plan.unmap is not None:
        symbols.unregister(rec)
    bpguard.track(plan.registry_after)
    out.timings = clock.total()
    out.functions = [{"name": f.name, "entry": f.entry} for f in rec.functions]
    out.message = "patch %s reverted: %d function%s restored%s" % (
        bid[:16], len(rec.functions), "" if len(rec.functions) == 1 else "s",
        ", memory unmapped" if plan.unmap else " (memory kept, inactive)")
    if not was_active:
        out.message = "patch %s was reverted earlier: its memory is unmapped now" % bid[:16]
    elif unloaded:
        out.message = ("patch %s: its target %s (build-id %s) is unloaded, so nothing was restored and nothing "
                       "written at its old addresses; record %s" % (
                           bid[:16], rec.target_name, rec.target_build_id[:16],
                           "and memory removed" if plan.unmap else "kept inactive (memory kept)"))
    out.lines = [out.message]
    return out


def _plan_unmap_inactive(registry, rec):
    """``--unmap`` of a patch reverted earlier (kept mapped): no byte to restore; its record and mapping go.

    Without this a patch once reverted without --unmap could never be unmapped."""
    after = copy.deepcopy(registry)
    after.patches.remove(after.patch(rec.patch_build_id))
    span = None
    if rec.ranges:
        lo = min(r.start for r in rec.ranges)
        span = (lo, max(r.start + r.length for r in rec.ranges) - lo)
    return planmod.RevertPlan(rec.patch_build_id, [], after, [], span)


def _verify_saved_bytes(view, registry, rec, plan):
    """Original bytes about to be restored must equal the target file's (never restore garbage)."""
    target = view.object_by_build_id(rec.target_build_id)
    if target is None:
        return
    image = view.image(target)
    for f in rec.functions:
        if f.below:
            continue
        try:
            want = image.read_vaddr(f.entry - target.load_bias, len(f.original))
        except errors.NsbError:
            continue
        if want != f.original:
            raise errors.RegistryCorrupt("saved bytes of %s at %#x differ from the target file (%s vs %s); "
                                         "refusing to restore them" % (f.name, f.entry, f.original.hex(), want.hex()))


def find_pointer_into(inf, lo, hi, exclude=()):
    """First register or writable word holding an address in [lo, hi), as a description; None if none."""
    for t in inf.threads():
        regs = inf.save_registers(t)
        for name, value in regs.items():
            if isinstance(value, int) and lo <= value < hi:
                return "register %s of thread %d (%#x)" % (name, t.num, value)
    import struct
    high = struct.pack("<I", lo >> 32)
    same_high = (lo >> 32) == ((hi - 1) >> 32)
    for m in inf.mappings():
        if not m.writable or any(a <= m.start < a + n for a, n in exclude):
            continue
        pos = m.start
        while pos < m.end:
            size = min(1 << 20, m.end - pos)
            try:
                data = inf.read(pos, size)
            except errors.NsbError:
                break
            if same_high:
                i = data.find(high, 4)
                while i != -1:
                    if (i - 4) % 8 == 0:
                        v = struct.unpack_from("<Q", data, i - 4)[0]
                        if lo <= v < hi:
                            return "the word at %#x (%s)" % (pos + i - 4, m.objfile or "anonymous memory")
                    i = data.find(high, i + 1)
            else:
                for off in range(0, len(data) - 7, 8):
                    v = struct.unpack_from("<Q", data, off)[0]
                    if lo <= v < hi:
                        return "the word at %#x (%s)" % (pos + off, m.objfile or "anonymous memory")
            pos += size
    return None


# ----------------------------------------------------------------------------- list and check

def consistency(registry, inf, view=None):
    """Problems between registry and memory: entries whose bytes are not the top layer's jump.

    Records whose target is unloaded are left out: their addresses no longer hold the code they patched."""
    problems = []
    if view is not None and any(target_unloaded(rec, view) for rec in registry.patches):
        registry = copy.deepcopy(registry)
        registry.patches = [rec for rec in registry.patches if not target_unloaded(rec, view)]
    for entry in registry.entries():
        stack = registry.stack(entry)
        jump = stack[-1][1].jump
        try:
            now = inf.read(entry, len(jump))
        except errors.NsbError as e:
            problems.append("cannot read %#x: %s" % (entry, e))
            continue
        if now != jump:
            problems.append("%s at %#x holds %s, the registry expects the jump of patch %s (%s)"
                            % (stack[-1][1].name, entry, now.hex(), stack[-1][0][:16], jump.hex()))
    # Inactive patches whose jumps are still in memory (a revert cut short).
    for rec in registry.patches:
        if rec.state == STATE_ACTIVE:
            continue
        for f in rec.functions:
            try:
                now = inf.read(f.entry, len(f.jump))
            except errors.NsbError:
                continue
            if now == f.jump:
                problems.append("%s at %#x still jumps into inactive patch %s" % (f.name, f.entry, rec.patch_build_id[:16]))
    return problems


def list_patches(opts: Options) -> Outcome:
    inf = _context()
    ensure_all_stopped()
    store = RegistryStore(inf, None)
    out = Outcome()
    try:
        registry = store.load()
    except errors.RegistryCorrupt as e:
        out.code = e.exit_code
        out.message = str(e)
        out.lines = [out.message]
        return out
    except ProcessAccessError as e:
        raise postmortem.registry_read_error(inf, e) from None
    if registry is None or not registry.patches:
        out.message = "no live patches in process %d" % inf.pid
        out.lines = [out.message]
        out.patches = []
        return out
    missing = symbols.register_all(registry)
    view = snap.snapshot(inf)
    broken = consistency(registry, inf, view)
    patches = []
    for rec in registry.patches:
        state = rec.state
        if target_unloaded(rec, view):
            state = "target unloaded"
        elif any(rec.patch_build_id[:16] in p for p in broken) or any(
                f.name in p and ("%#x" % f.entry) in p for f in rec.functions for p in broken):
            state = "partial"
        lo = min((r.start for r in rec.ranges), default=rec.patch_load_base)
        hi = max((r.start + r.length for r in rec.ranges), default=rec.patch_load_base)
        funcs = []
        for f in rec.functions:
            try:
                stack = [b for b, _ in registry.stack(f.entry)] if rec.state == STATE_ACTIVE else []
            except errors.RegistryCorrupt:
                stack = []
            layer = stack.index(rec.patch_build_id) + 1 if rec.patch_build_id in stack else 0
            funcs.append({"name": f.name, "entry": f.entry, "layer": layer, "layers": len(stack),
                          "top": bool(stack) and stack[-1] == rec.patch_build_id})
        patches.append({"build_id": rec.patch_build_id, "file": rec.patch_path, "target": rec.target_name,
                        "target_build_id": rec.target_build_id, "load_base": rec.patch_load_base,
                        "range": [lo, hi], "state": state, "functions": funcs,
                        "symbols": rec.patch_build_id not in missing})
        out.lines.append("%s  %s  %s" % (rec.patch_build_id, state, rec.patch_path))
        out.lines.append("    target %s (build-id %s), mapped at %#x-%#x" % (rec.target_name, rec.target_build_id,
                                                                           lo, hi))
        if rec.patch_build_id in missing:
            out.lines.append("    patch file not found (recorded %s, build-id %s): no symbols for its frames; "
                             "set nsb patch-dir DIR" % (rec.patch_path or "no path", rec.patch_build_id[:16]))
        for f in funcs:
            if rec.state == STATE_ACTIVE:
                out.lines.append("    %-24s %#x  layer %d of %d%s" % (f["name"], f["entry"], f["layer"], f["layers"],
                                                                     " (top)" if f["top"] else ""))
            else:
                out.lines.append("    %-24s %#x" % (f["name"], f["entry"]))
    for p in broken:
        out.lines.append("partial state: " + p)
    out.patches = patches
    out.functions = [dict(f, patch=p["build_id"]) for p in patches for f in p["functions"]]
    out.message = "%d live patch%s in process %d" % (len(patches), "" if len(patches) == 1 else "es", inf.pid)
    if broken:
        out.code = errors.PartialStateError.exit_code
        out.message += "; partial state found: " + broken[0]
    return out


def check(path, opts: Options) -> Outcome:
    """Is the patch applied; could it be applied now; every reason it could not. Changes nothing."""
    clock = _Clock()
    path = os.path.abspath(path)
    lp, image = _read_patch(path)
    out = Outcome(patch=_patch_dict(lp, path))
    inf = _context()
    ensure_all_stopped()
    injector = SyscallInjector(inf)
    store = RegistryStore(inf, injector)
    try:
        registry = _load_registry(store)
    except errors.RegistryCorrupt as e:
        out.code, out.message = e.exit_code, str(e)
        out.lines = [out.message]
        return out
    symbols.register_all(registry, [path])
    view = snap.snapshot(inf)
    out.target = _target_dict(view, lp.old_bid)
    rec = registry.patch(lp.new_bid)
    broken = consistency(registry, inf, view)
    mine = [p for p in broken if lp.new_bid[:16] in p] or ([p for p in broken] if rec is not None else [])
    if rec is not None and rec.state == STATE_ACTIVE:
        out.state = "applied"
        if mine:
            out.state = "partial"
            out.code = errors.PartialStateError.exit_code
            out.reasons = mine
            out.message = "patch %s is partially applied: %s (nsb-revert repairs it)" % (lp.new_bid[:16], mine[0])
        else:
            out.message = "patch %s is applied (%d function%s)" % (lp.new_bid[:16], len(rec.functions),
                                                                   "" if len(rec.functions) == 1 else "s")
        out.lines = [out.message] + ["  " + r for r in out.reasons]
        out.timings = clock.total()
        return out
    if mine:
        out.state = "partial"
        out.code = errors.PartialStateError.exit_code
        out.reasons = mine
        out.message = "patch %s is not applied but left a partial state: %s" % (lp.new_bid[:16], mine[0])
        out.lines = [out.message]
        return out
    reasons, codes = [], []

    def add(reason, code):
        reasons.append(reason)
        codes.append(code)

    findings = environment.collect(inf, injector)
    for f in findings:
        if f.code.startswith("seccomp") and not opts.allow_seccomp:
            add("environment: %s (apply refuses without --allow-seccomp)" % f.message,
                errors.EnvironmentRefusal.exit_code)
        elif f.severity == "refuse":
            add("environment: %s" % f.message, errors.EnvironmentRefusal.exit_code)
        elif f.severity == "warning":
            out.lines.append("warning: %s" % f.message)
    target = view.object_by_build_id(lp.old_bid)
    if target is None:
        add(absent_target_reason(view, lp, inf.pid), errors.MismatchError.exit_code)
    else:
        try:
            plan = planmod.plan_load(view, lp, image, registry, snap.breakpoint_locations(), opts.breakpoints)
        except errors.NsbError as e:
            add(str(e), e.exit_code)
            plan = None
        if plan is not None:
            for r in planmod.evaluate(plan, inf):
                add(r, errors.MismatchError.exit_code)
            busy, entries = busy_for_apply(lp, target.load_bias, registry, _patch_images(registry, [path]))
            verdict = SafePointCheck(busy, entries).check(collect_stacks())
            if not verdict.safe:
                add("busy now: " + verdict.message(), errors.BusyError.exit_code)
    out.reasons = reasons
    out.state = "not applied"
    if not reasons:
        out.code = errors.NotAppliedError.exit_code
        out.message = "patch %s is not applied; it could be applied now" % lp.new_bid[:16]
    else:
        hard = [c for c in codes if c != errors.BusyError.exit_code]
        out.code = hard[0] if hard else errors.BusyError.exit_code
        out.message = "patch %s is not applied and cannot be applied now: %s" % (lp.new_bid[:16], reasons[0])
    out.lines = [out.message] + ["  - " + r for r in reasons[1:]] + out.lines
    out.timings = clock.total()
    return out
