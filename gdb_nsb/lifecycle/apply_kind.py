"""Stacked or replace: what an apply of a patch does, decided once for ``patch`` and for ``check``.

An apply replaces every patch of its target object (binder/replace.py) when asked to (``--replace``)
or when the patch is cumulative (``VZP_CUMULATIVE``); otherwise it stacks the patch on the layers
there (binder/plan.py).  The plan, the series rules it must meet (lifecycle/series.py) and the code
no thread may be inside (lifecycle/busy.py) all follow from that one choice.  process/apply_plan.py
(apply, dry run) and lifecycle/verdicts.py (check) both take them from here, so check judges exactly
what the apply would do.
"""

from gdb_nsb.binder.plan import plan_load
from gdb_nsb.binder.replace import ReplacePlan, plan_replace
from gdb_nsb.lifecycle import series
from gdb_nsb.lifecycle.busy import busy_for_apply, busy_for_replace


def replaces(livepatch, replace_option):
    """Whether applying ``livepatch`` replaces the patches of its target (else it stacks)."""
    return bool(replace_option or livepatch.cumulative)


def plan(view, livepatch, image, registry, breakpoints, breakpoint_policy, replace_option, ifunc_results=None):
    """The LoadPlan (stacked) or ReplacePlan of applying ``livepatch``; the binder's refusals raise."""
    make = plan_replace if replaces(livepatch, replace_option) else plan_load
    return make(view, livepatch, image, registry, breakpoints, breakpoint_policy, ifunc_results=ifunc_results)


def replaced(plan_):
    """The records ``plan_`` takes out: those of a replace, none for a stacked apply."""
    return plan_.replaced if isinstance(plan_, ReplacePlan) else []


def refuse_series(livepatch, registry, plan_):
    """DependencyError (20) unless ``livepatch`` may join the applied patches once ``plan_``'s replaced ones left."""
    series.refuse_apply(livepatch, registry, replaced(plan_))


def busy(plan_, livepatch, registry, images_by_bid):
    """({name: busy ranges}, {name: safe entry pcs}) of ``plan_``: a replace also covers the replaced
    patches' code (``images_by_bid``: the registered patches' ElfImages, for their functions' names)."""
    if isinstance(plan_, ReplacePlan):
        return busy_for_replace(livepatch, plan_.target_bias, registry, images_by_bid, plan_.replaced)
    return busy_for_apply(livepatch, plan_.target_bias, registry, images_by_bid)
