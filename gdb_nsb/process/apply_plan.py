"""What an apply executes, decided inside the stop: the plan (stacked, or an atomic replace, as
lifecycle/apply_kind.py chooses for apply and check alike; IFUNC resolvers nothing in the process ran
yet are run first), its busy ranges, and which replaced patches stay mapped because the program still
points into them.  ``engine.apply`` calls these once per safe point try."""

from gdb_nsb import errors
from gdb_nsb.lifecycle import apply_kind, verdicts
from gdb_nsb.lifecycle.busy import copy_range
from gdb_nsb.lifecycle.pointers import find_pointer_into
from gdb_nsb.process import snapshot as snap


def plan_apply(view, lp, image, registry, opts, inf):
    plan = _plan_once(view, lp, image, registry, opts)
    waiting = verdicts.pending_resolvers(plan)
    if waiting:
        # IFUNCs nothing in the process resolved: their resolvers run now, inside the stop, as lazy
        # binding would run them.  A dry run writes nothing: it plans with stand-ins, and says so.
        # Imported here: only a plan with unresolved IFUNCs needs it (inferior calls, run windows).
        from gdb_nsb.process import ifunc
        results = verdicts.resolver_stand_ins(waiting) if opts.dry_run else ifunc.run_resolvers(inf, waiting)
        plan = _plan_once(view, lp, image, registry, opts, results)
        plan.resolvers_run = [] if opts.dry_run else [(p.symbol, results[p.resolver_addr]) for p in waiting]
        plan.resolvers_to_run = [p.symbol for p in waiting] if opts.dry_run else []
    verdicts.refuse_unresolved_ifunc(plan)
    return plan


def _plan_once(view, lp, image, registry, opts, ifunc_results=None):
    plan = apply_kind.plan(view, lp, image, registry, snap.breakpoint_locations(), opts.breakpoints, opts.replace,
                           ifunc_results)
    apply_kind.refuse_series(lp, registry, plan)  # before any resolver runs in the process
    return plan


def keep_pointed_to(plan, inf, store, files_by_bid):
    """A replace: keep mapped (inactive) each replaced patch that a register or writable word points into.

    Asked inside the stop, after the safe point, as ``revert --unmap`` asks; a mapping that cannot be
    scanned is kept too (unmapping it could crash the program later).  Only the code only that patch
    had (its helpers) and its data count: see ``find_pointer_into``'s holes."""
    registers = [(t.num, inf.save_registers(t)) for t in inf.threads()] if plan.retire else []
    mappings = inf.mappings() if plan.retire else []
    for bid, (start, length) in list(plan.retire.items()):
        old = next(r for r in plan.replaced if r.patch_build_id == bid)
        copies = [copy_range(old, f, files_by_bid.get(bid)) for f in old.functions]
        own = [(start, length)] + ([store.location] if store.location else [])
        try:
            holder = find_pointer_into(iter(registers), mappings, inf, start, start + length, exclude=own,
                                       holes=[c for c in copies if c is not None])
        except errors.BusyError as e:
            holder = str(e)
        if holder is not None:
            plan.keep_mapped(bid, holder)
