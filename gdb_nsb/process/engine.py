"""The live-patching operations inside GDB: apply, revert, list, check.

Each operation reads what it can before touching the process (the patch
file, its vzpatch section, the ELF files of the mapped objects), plans every
byte with the binder, waits for a safe point, and executes the plan in the
same stop through an undo log.  Every decision around the plan (busy ranges,
write guards, what became of an earlier target instance, the verdicts of list
and check) is made by the pure ``gdb_nsb.lifecycle``; this module only
observes the process and executes.  Any failure, including the deadline
passing, restores bytes, mappings and registry and leaves the process as it was.

Write order of an apply (the visible switch last): patch segments, then the
registry record, then the jumps.  A revert restores the jumps first, then
stores the registry.  A tool killed in between leaves a state that
``nsb-check`` reports as partial and ``nsb-revert`` repairs; killed before
the first jump, nothing of the patch is in effect: not applied, and the next
apply settles the record (``settle_gone_instances``).
"""

import dataclasses
import os
import time
from dataclasses import dataclass

import gdb

from gdb_nsb import errors, timeline
from gdb_nsb.binder import plan as planmod
from gdb_nsb.binder.replace import ReplacePlan
from gdb_nsb.lifecycle import apply_kind, outcome, series, verdicts
from gdb_nsb.lifecycle.busy import busy_for_revert
from gdb_nsb.lifecycle.consistency import consistency, verify_saved_bytes
from gdb_nsb.lifecycle.guards import guard_apply_writes, guard_revert_writes
from gdb_nsb.lifecycle.instances import (absent_target_reason, abort_if_exec, settle_gone_instances,
                                         target_unloaded)
from gdb_nsb.lifecycle.mapping import (mapping_to_restore, pending_registry, plan_unmap_inactive,
                                       protections_to_restore)
from gdb_nsb.lifecycle.outcome import Outcome, patch_dict, record_dict, target_dict
from gdb_nsb.lifecycle.patch_file import check_patch, resolve_patch_id
from gdb_nsb.lifecycle.pointers import find_pointer_into
from gdb_nsb.process import (apply_plan, bpguard, callbacks, environment, faults, filecache, postmortem,
                             shadow_store, snapshot as snap, symbols)
from gdb_nsb.process.inferior import Inferior, ProcessAccessError
from gdb_nsb.process.registry_store import RegistryStore
from gdb_nsb.process.remote_alarm import shared_alarm
from gdb_nsb.process.run_windows import RUN_WINDOWS_HINT, RunWindowsOff, ensure_all_stopped, run_window
from gdb_nsb.process.run_windows import policy as run_policy
from gdb_nsb.process.reattach import can_reattach, reattach_window
from gdb_nsb.process.safepoint_wait import DEFAULT_TRIES, default_delays, wait_for_safe_point
from gdb_nsb.process.stacks import collect_stacks
from gdb_nsb.process.sigstop import sigstop_handling
from gdb_nsb.process.syscalls import MAP_ANONYMOUS, MAP_PRIVATE, SignalsHeld, SyscallInjector
from gdb_nsb.process.undo import Deadline, UndoLog
from gdb_nsb.registry import STATE_ACTIVE, Registry
from gdb_nsb.safepoint import SafePointCheck


@dataclass
class Options:
    dry_run: bool = False
    retries: int = DEFAULT_TRIES
    timeout: float = 60.0
    strategy: str = "retry"
    allow_seccomp: bool = False
    breakpoints: str = planmod.BREAKPOINTS_REFUSE
    unmap: bool = False
    replace: bool = False
    verbose: int = 0
    callback_timeout: float = 10.0


class _Clock:
    def __init__(self):
        timeline.mark("command_start")
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
        timeline.mark("command_done")
        self.marks["command_s"] = round(time.monotonic() - self.t0, 6)
        return self.marks


def _read_patch(path):
    if not os.path.isfile(path):
        raise errors.PatchFileError("patch file not found: %s" % path)
    # Read before the stop by filecache.prefetch when the runner drives us: the same objects come back.
    lp, image = filecache.livepatch(path), filecache.image(path)
    check_patch(lp, image, path)
    return lp, image


def _context():
    inf = Inferior()
    if not inf.pid:
        raise errors.ProcessNotFoundError("no process: attach to the target first (attach PID)")
    inf.check_architecture()
    return inf


def _load_registry(store):
    reg = store.load()
    return reg if reg is not None else Registry()


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
            if _main_mapping() != before:
                raise _exec_abort()
            raise
        finally:
            if catch is not None and catch.is_valid():
                catch.delete()
        if _main_mapping() != before:
            raise _exec_abort()
    except errors.BusyError as e:
        # Still "busy" (3), not "timeout" (15): the cause is a thread inside the code, not us.
        if deadline is not None and deadline.expired():
            raise errors.BusyError("the deadline (--timeout) passed before a safe point: %s" % e)
        raise
    return calls[0]


def apply(path, opts: Options) -> Outcome:
    """Apply the live patch in ``path`` to the current inferior."""
    clock = _Clock()
    deadline = Deadline(opts.timeout)
    path = os.path.abspath(path)
    lp, image = _read_patch(path)
    out = Outcome(patch=patch_dict(lp, path))
    clock.mark("read_patch")
    inf = _context()
    ensure_all_stopped()
    injector = SyscallInjector(inf)
    store = RegistryStore(inf, injector)
    registry = _load_registry(store)
    files_by_bid = _patch_images(registry, [path])
    symbols.register_all(registry, [path])
    verdicts.refuse_environment(environment.collect(inf), opts.allow_seccomp)
    if lp.shadow_variables and not opts.dry_run:
        shadow_store.ensure(inf, injector, deadline)  # the plan binds the patch to it
    view = snap.snapshot(inf)
    view.shadow_planned = opts.dry_run
    out.target = target_dict(view, lp.old_bid)
    if view.object_by_build_id(lp.old_bid) is None:
        raise errors.MismatchError(absent_target_reason(view, lp, inf.pid))
    registry, settled = settle_gone_instances(registry, view, inf, lp.old_bid)
    plan = apply_plan.plan_apply(view, lp, image, registry, opts, inf)
    plan.check()
    clock.mark("plan")
    if opts.dry_run:
        outcome.apply_dry_run(out, plan, planmod.evaluate(plan, inf))
        out.lines += ["the IFUNC resolver of %s runs in the process at apply (nothing resolved it yet)" % name
                      for name in getattr(plan, "resolvers_to_run", ())]
        out.timings = clock.total()
        return out
    busy, entries = apply_kind.busy(plan, lp, registry, files_by_bid)
    cbs = callbacks.Runner(inf, injector, store, opts.callback_timeout, deadline,
                           "apply of patch %s" % lp.new_bid[:12]) if lp.callbacks else None
    loaded = None
    if cbs is not None and lp.callback("pre_patch") is not None:
        # Pre-patch runs with the patch's code loaded and bound but nothing redirected (the process
        # running); refused or failed, the load is rolled back (refused) or kept inactive (failed).
        loaded = _execute_apply(inf, injector, store, plan, deadline, view, load_only=True)
        loaded.deadline = Deadline(None)  # committed after the apply's own commit: never refused then
        cbs.pre_patch(plan.registry_after.patch(lp.new_bid), loaded)
    try:
        plan, settled = _apply_at_safe_point(inf, injector, store, lp, image, view, plan, settled, busy, entries,
                                             opts, deadline, clock, replan=loaded is not None,
                                             files_by_bid=files_by_bid)
    except BaseException as e:
        if loaded is not None:
            cbs.after_failed_apply(plan.registry_after.patch(lp.new_bid), loaded, e)
        raise
    if loaded is not None:
        loaded.commit()
    clock.mark("write")
    out.timings = clock.total()
    rec = plan.registry_after.patch(lp.new_bid)
    symbols.register(rec, [path])
    for old in getattr(plan, "replaced", ()):
        if old.patch_build_id in plan.retire:
            symbols.unregister(old)
    bpguard.track(plan.registry_after)
    if cbs is not None:
        cbs.post_patch(rec)
    outcome.applied(out, plan, settled)
    out.lines[-1:-1] = ["IFUNC %s resolved in the process: %#x" % r for r in getattr(plan, "resolvers_run", ())]
    return out


def _apply_at_safe_point(inf, injector, store, lp, image, view, plan, settled, busy, entries, opts, deadline, clock,
                         replan=False, files_by_bid=None):
    """Wait for a safe point and execute the apply there (planned again when the process ran, or when
    ``replan``: a pre-patch callback ran); (the plan executed, settled lines)."""
    for attempt in range(1, max(1, opts.retries) + 1):
        checks = _safe_point(busy, opts, deadline, entries)
        clock.mark("safe_point")
        if checks > 1 or attempt > 1 or replan:
            # The process ran between tries: take a fresh look before writing.
            before, view = view, snap.snapshot(inf)
            abort_if_exec(before, view, inf.pid)
            registry, settled = settle_gone_instances(_load_registry(store), view, inf, lp.old_bid)
            plan = apply_plan.plan_apply(view, lp, image, registry, opts, inf)
            plan.check()
            clock.mark("replan")
        try:
            if isinstance(plan, ReplacePlan):
                apply_plan.keep_pointed_to(plan, inf, store, files_by_bid or {})
            _execute_apply(inf, injector, store, plan, deadline, view)
            break
        except SignalsHeld as e:
            # Every thread holds a signal: nothing was written.  The process runs (its signals
            # delivered) and the next safe point tries again; busy (3) when the tries run out.
            if not run_policy.allowed:
                raise RunWindowsOff("%s; %s" % (e, RUN_WINDOWS_HINT))
            if attempt >= max(1, opts.retries) or deadline.expired():
                raise errors.BusyError("%s (%d tr%s)" % (e, attempt, "y" if attempt == 1 else "ies"))
            _let_run(_SIGNAL_WAIT * attempt, deadline)
    return plan, settled


_SIGNAL_WAIT = 0.005  # seconds the process runs before a try after every thread held a signal (grows)


def _let_run(seconds, deadline):
    """One run window, so that the signals the threads hold are delivered."""
    remaining = deadline.remaining()
    with sigstop_handling(), shared_alarm():
        run_window(seconds if remaining is None else min(seconds, remaining))


def _execute_apply(inf, injector, store, plan, deadline, view, load_only=False):
    """Execute ``plan`` in this stop.  ``load_only`` (a pre-patch callback runs next): the mapping, the
    segments and the inactive record only, and the UndoLog is returned open, for the caller to commit
    or roll back once the callback has run."""
    guard_apply_writes(plan, view)
    m = plan.mapping if plan.mapping is not None else mapping_to_restore(plan, view.mappings)
    restore = [] if m is not None else protections_to_restore(
        plan.registry_after.patch(plan.patch_build_id).ranges, view.mappings)
    if m is not None or restore:
        # Give up before the first change when no thread could run the first injected call.
        injector.require_clean_thread()
    disabled = []
    undo = UndoLog(inf, injector, deadline)
    try:
        with injector.session():
            if m is not None:
                # Reserve the planned range before anything else is mapped: the registry and its
                # scratch page are mmap(0) and the kernel puts them in the same kind of gap near
                # the target that placement chose (seen: EEXIST next to a shared library).
                # Mapped with the most any run gets, then only taken away: a process that set
                # PR_SET_MDWE may not gain PROT_EXEC (no run is ever writable, so never W+X).
                undo.mmap(m.start, m.length, m.initial_prot, MAP_PRIVATE | MAP_ANONYMOUS)
                faults.point("after-mmap")
                # Record the new mapping (inactive, no jumps) at once: a tool killed from here on
                # leaves a registered, reusable mapping rather than an anonymous orphan.  The first
                # patch of a process creates the registry here.
                pending = pending_registry(plan)
                store.save(pending, undo)
                plan.registry_after.generation = max(plan.registry_after.generation, pending.generation)
                for start, length, prot in m.protections_down():
                    injector.check("mprotect", 10, start, length, prot)
                    faults.point("after-mprotect", "%#x" % start)
            else:
                # Re-apply into the recorded mapping.  Its record is written before the mprotects
                # above, so an apply killed between them left pages without their final protection
                # (before MDWE-safe mapping: PROT_NONE, and the first call into them died of SIGSEGV).
                # Set every recorded run the memory map shows otherwise (normally none: a re-apply
                # then injects no system call).  Not undone: the record asks for these protections.
                for start, length, prot in restore:
                    injector.check("mprotect of patch memory %#x..%#x" % (start, start + length), 10, start,
                                   length, prot)
            for w in plan.segment_writes:
                undo.write(w.addr, w.data, w.expected, w.what)
                faults.point("after-segment-write", "%#x" % w.addr)
            if load_only:
                if m is None:
                    store.save(pending_registry(plan), undo)
                return undo
            for c in plan.breakpoints_to_disable:
                disabled += _disable_breakpoints_at(c.addr)
            _write_entries(plan, store, undo)
            for bid, (start, length) in getattr(plan, "retire", {}).items():
                # A replaced patch's memory goes once everything else holds (as revert --unmap's does).
                undo.defer(lambda s=start, n=length: injector.check("munmap", 11, s, n),
                           "unmap replaced patch %s at %#x" % (bid[:16], start))
            faults.point("before-commit")
            failed = undo.commit()
            if failed:
                gdb.write("nsb: warning: %s\n" % "; ".join(failed))
    except BaseException:
        if not undo.closed:
            undo.rollback()
        for loc in disabled:
            loc.enabled = True
        raise


def _write_entries(plan, store, undo):
    """Commit the registry that describes the entry writes about to be made, then make them.

    A replace goes through two registries (binder/replace.py): a kill between any two of its writes
    leaves a state an ordinary partial apply or revert describes, never a jump no record accounts for."""
    after_jump = lambda w: faults.point("after-jump", w.what)  # noqa: E731
    if isinstance(plan, ReplacePlan) and plan.replaced:
        restores = plan.restore_writes()
        store.save(plan.registry_stacked(), undo)
        faults.point("registry-save")
        undo.write_all(plan.switch_writes(), after=after_jump)
        if restores:
            store.save(plan.registry_reduced(), undo)
            undo.write_all(restores, after=after_jump)
        store.save(plan.registry_after, undo)
        return
    store.save(plan.registry_after, undo)
    faults.point("registry-save")
    undo.write_all(plan.jump_writes, after=after_jump)


def _main_mapping():
    """(start, objfile) of the process's first mapping: changes when the process execs.

    Exec detection rests on it, so a memory map that cannot be read refuses
    the operation (nothing is written yet) instead of turning detection off."""
    try:
        ms = Inferior().mappings()
    except errors.NsbError as e:
        raise errors.NsbError("cannot tell whether the process executed a new program while it ran between "
                              "safe-point tries (%s); nothing written" % e) from None
    if not ms:
        raise errors.NsbError("cannot tell whether the process executed a new program while it ran between "
                              "safe-point tries (its memory map is empty); nothing written")
    return ms[0].start, ms[0].objfile


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


def _disable_breakpoints_at(addr):
    """Disable each breakpoint location at ``addr`` (not its breakpoint: its other locations stay)."""
    out = []
    for b in gdb.breakpoints() or ():
        for i, loc in enumerate(getattr(b, "locations", None) or [], 1):
            if b.enabled and loc.enabled and loc.address == addr:
                loc.enabled = False
                gdb.write("nsb: disabled breakpoint location %d.%d at %#x: it lies inside a jump being written\n"
                          % (b.number, i, addr))
                out.append(loc)
    return out


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
    # Through the cache: the runner's decode, handed over before the attach, serves here (no protobuf
    # import inside the stop).
    bid = resolve_patch_id(ident, registry, read=lambda p: filecache.livepatch(p, check_identity=False))
    hints = [ident] if os.path.isfile(ident) else []
    rec = registry.patch(bid)
    if rec is None or (rec.state != STATE_ACTIVE and not opts.unmap):
        raise errors.NotAppliedError("patch %s is not applied in process %d" % (bid, inf.pid))
    was_active = rec.state == STATE_ACTIVE
    if was_active:
        series.refuse_revert(registry, bid)
    out = Outcome(patch=record_dict(rec))
    symbols.register_all(registry, hints)
    view = snap.snapshot(inf)
    out.target = target_dict(view, rec.target_build_id)
    plan = planmod.plan_revert(registry, bid, unmap=opts.unmap) if was_active else plan_unmap_inactive(registry, rec)
    unloaded = target_unloaded(rec, view)
    if unloaded:
        # The recorded entries are unmapped or belong to other code now: only the record changes.
        plan.writes = []
    plan.check()
    if not unloaded:
        verify_saved_bytes(view, rec)
    clock.mark("plan")
    if opts.dry_run:
        outcome.revert_dry_run(out, plan, planmod.evaluate(plan, inf))
        out.timings = clock.total()
        return out
    cbs = None
    if was_active and rec.callbacks and not unloaded:
        cbs = callbacks.Runner(inf, injector, store, opts.callback_timeout, deadline,
                               "revert of patch %s" % bid[:12])
        cbs.pre_unpatch(rec)
    # Post-unpatch is code in the memory --unmap takes away: revert, run it, then unmap.
    unmap_after = cbs is not None and plan.unmap is not None and any(k == "post_unpatch" for k, _a, _n in rec.callbacks)
    if unmap_after:
        plan = planmod.plan_revert(registry, bid, unmap=False)
    if _safe_point(busy_for_revert(rec), opts, deadline) > 1 or cbs is not None:
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
            registers = ((t.num, inf.save_registers(t)) for t in inf.threads())
            try:
                own = [(start, start + length)] + ([store.location] if store.location else [])
                holder = find_pointer_into(registers, inf.mappings(), inf, start, start + length, exclude=own)
            except errors.BusyError as e:
                raise errors.BusyError("not unmapping patch %s: %s (revert without --unmap)" % (bid[:16], e)) from None
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
    if cbs is not None:
        cbs.post_unpatch(rec)
    if unmap_after:
        plan.unmap = plan_unmap_inactive(plan.registry_after, plan.registry_after.patch(bid)).unmap
        # The record is inactive now: this pass unmaps it (no callback runs again), within what is left.
        remaining = deadline.remaining()
        revert(bid, dataclasses.replace(opts, timeout=None if remaining is None else max(0.001, remaining)))
    out.timings = clock.total()
    return outcome.reverted(out, rec, plan, was_active, unloaded)


# ----------------------------------------------------------------------------- list and check

def list_patches(opts: Options) -> Outcome:
    inf = _context()
    ensure_all_stopped()
    store = RegistryStore(inf, None)
    out = Outcome()
    try:
        registry = store.load()
    except errors.RegistryCorrupt as e:
        return out.fail(e)
    except ProcessAccessError as e:
        raise postmortem.registry_read_error(inf, e) from None
    if registry is None or not registry.patches:
        return verdicts.no_patches(out, inf.pid)
    missing = symbols.register_all(registry)
    view = snap.snapshot(inf)
    return verdicts.listing(out, registry, view, consistency(registry, inf, view), missing, inf.pid, inf)


def check(path, opts: Options) -> Outcome:
    """Is the patch applied; could it be applied now; every reason it could not. Changes nothing.

    When a thread inside the code is all that stands in the way, later looks
    follow (locally, the process runs untraced in between: ``reattach``), as
    an apply would retry, so "not applicable now" (3) means the apply would
    fail now.  Remotely, or at the GDB prompt without ``set nsb run-windows``,
    the answer is one look and says "busy at this instant"."""
    clock = _Clock()
    deadline = Deadline(opts.timeout)
    path = os.path.abspath(path)
    lp, image = _read_patch(path)
    tries = max(1, opts.retries)
    delays = default_delays(tries)
    looks, t0 = 1, time.monotonic()
    while True:
        later = looks < tries and run_policy.allowed and can_reattach() and not deadline.expired()
        label = "busy at this instant" if looks == 1 else "busy at each of %d looks over %.1f s" % (
            looks, time.monotonic() - t0)
        out, reasons = _check_once(path, lp, image, opts, label)
        if reasons is None or not verdicts.only_busy(reasons) or not later:
            break
        window = delays[min(looks - 1, len(delays) - 1)]
        remaining = deadline.remaining()
        reattach_window(window if remaining is None else min(window, remaining))
        looks += 1
    out.timings = clock.total()
    return out


def _check_once(path, lp, image, opts, busy_label):
    """One look: (Outcome, the reasons against applying, or None when the registry answered)."""
    out = Outcome(patch=patch_dict(lp, path))
    inf = _context()
    ensure_all_stopped()
    store = RegistryStore(inf, None)  # check is passive: reads only, never an injected system call
    try:
        registry = _load_registry(store)
    except errors.RegistryCorrupt as e:
        return out.fail(e), None
    symbols.register_all(registry, [path])
    view = snap.snapshot(inf)
    view.shadow_planned = True  # an apply maps the shadow region before it binds the patch
    out.target = target_dict(view, lp.old_bid)
    # As an apply sees it: records of an earlier instance of the target (unloaded, or none of their jumps
    # in place) do not count as applied; nothing is written.
    registry, _ = settle_gone_instances(registry, view, inf, lp.old_bid)
    rec = registry.patch(lp.new_bid)
    if verdicts.check_recorded(out, lp, rec, consistency(registry, inf, view)):
        return out, None
    reasons, warnings = verdicts.environment_reasons(environment.collect(inf), opts.allow_seccomp)
    # Judged on the plan an apply with these options makes: stacked, or a replace (cumulative, --replace).
    against, plan = verdicts.reasons_against_apply(view, lp, image, registry, inf, snap.breakpoint_locations(),
                                                   opts.breakpoints, opts.replace,
                                                   lambda: _patch_images(registry, [path]), collect_stacks,
                                                   inf.pid, busy_label)
    reasons += against
    verdicts.check_not_applied(out, lp, reasons, warnings, plan)
    return out, reasons
