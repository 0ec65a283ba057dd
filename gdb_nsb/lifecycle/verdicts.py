"""What ``nsb-list`` and ``nsb-check`` conclude from what they observed, and what refuses an apply outright.

List: the state of each record (its own, "target unloaded", "not applied" when
none of its jumps is in place, or "partial" when memory disagrees with the
registry) and the layer of each function.  Check:
applied, partial, or not applied with every reason it could not be applied
now, each reason with the exit code of its cause.
"""

from gdb_nsb import errors
from gdb_nsb.binder import plan as planmod
from gdb_nsb.binder.errors import IfuncNeedsResolver
from gdb_nsb.lifecycle import apply_kind, outcome
from gdb_nsb.lifecycle.instances import absent_target_reason, not_in_effect, target_unloaded
from gdb_nsb.registry import STATE_ACTIVE
from gdb_nsb.safepoint import SafePointCheck

NOT_IN_EFFECT = "not applied"  # list's state of an active record none of whose jumps is in place


def _seccomp_refused(finding, allow_seccomp):
    """A seccomp filter may make the kernel kill the process at our injected system calls."""
    return finding.code.startswith("seccomp") and not allow_seccomp


def refuse_environment(findings, allow_seccomp):
    """Raise EnvironmentRefusal for the first seccomp finding an apply must not ignore."""
    for f in findings:
        if _seccomp_refused(f, allow_seccomp):
            raise errors.EnvironmentRefusal("%s; applying could make the kernel kill the process "
                                            "(allow it explicitly with --allow-seccomp)" % f.message)


def pending_resolvers(plan):
    """The IFUNC resolvers a plan waits for (its IfuncNeedsResolver problems), one per resolver: an
    apply runs each in the process (process/ifunc.py) and plans again with their results."""
    seen, out = set(), []
    for p in plan.problems:
        if isinstance(p, IfuncNeedsResolver) and p.resolver_addr not in seen:
            seen.add(p.resolver_addr)
            out.append(p)
    return out


def resolver_stand_ins(pending):
    """Results for planning without running the resolvers (check, dry run): each resolver's own
    address stands for the implementation it will return, so everything else can be judged."""
    return {p.resolver_addr: p.resolver_addr for p in pending}


def refuse_unresolved_ifunc(plan):
    """Raise UnsupportedError when the plan needs an IFUNC resolver run (no loaded object resolved it)."""
    ifunc = [p for p in plan.problems if isinstance(p, IfuncNeedsResolver)]
    if ifunc:
        raise errors.UnsupportedError("%s; no loaded object has a resolved slot for it" % ifunc[0])


# ----------------------------------------------------------------------------- list

def no_patches(out, pid):
    out.message = "no live patches in process %d" % pid
    out.lines = [out.message]
    out.patches = []
    return out


def record_state(record, view, broken, memory=None):
    """The state ``nsb-list`` shows: the record's own, unless its target is gone, none of its jumps is in
    place (``not applied``: the target was loaded again, or an apply was cut short), or memory disagrees."""
    if target_unloaded(record, view):
        return "target unloaded"
    if memory is not None and not_in_effect(record, memory):
        return NOT_IN_EFFECT
    if any(record.patch_build_id[:16] in p for p in broken) or any(
            f.name in p and ("%#x" % f.entry) in p for f in record.functions for p in broken):
        return "partial"
    return record.state


def _functions(registry, record):
    funcs = []
    for f in record.functions:
        try:
            stack = [b for b, _ in registry.stack(f.entry)] if record.state == STATE_ACTIVE else []
        except errors.RegistryCorrupt:
            stack = []  # the stacks disagree: shown without a layer, ``broken`` names the problem
        layer = stack.index(record.patch_build_id) + 1 if record.patch_build_id in stack else 0
        funcs.append({"name": f.name, "entry": f.entry, "layer": layer, "layers": len(stack),
                      "top": bool(stack) and stack[-1] == record.patch_build_id})
    return funcs


def _relations(registry, rec):
    """The record's place in a series, for ``list``: what it needs and provides, whom it replaced (or who
    replaced it, when its memory was kept mapped)."""
    by = [p.patch_build_id for p in registry.active() if rec.patch_build_id in p.replaced]
    return {"needs": list(rec.needs), "needs_states": [{"id": i, "version": v} for i, v in rec.needs_states],
            "states": [{"id": i, "version": v} for i, v in rec.states], "replaced": list(rec.replaced),
            "replaced_by": by[0] if by and rec.state != STATE_ACTIVE else None}


def _relation_lines(p):
    out = []
    if p["needs"] or p["needs_states"]:
        out.append("    needs %s" % ", ".join(["patch %s" % b[:16] for b in p["needs"]]
                                             + ["state %d version %d" % (s["id"], s["version"])
                                                for s in p["needs_states"]]))
    if p["states"]:
        out.append("    provides %s" % ", ".join("state %d version %d" % (s["id"], s["version"]) for s in p["states"]))
    if p["replaced"]:
        out.append("    replaced %s" % ", ".join(b[:16] for b in p["replaced"]))
    if p["replaced_by"]:
        out.append("    replaced by %s; its memory stays mapped (the program pointed into it)" % p["replaced_by"][:16])
    return out


def listing(out, registry, view, broken, missing, pid, memory=None):
    """``nsb-list`` of a non-empty registry; ``broken`` is ``consistency``'s answer, ``missing`` the
    build-ids whose symbols could not be registered, ``memory`` reads the process (entries)."""
    patches = []
    for rec in registry.patches:
        state = record_state(rec, view, broken, memory)
        lo = min((r.start for r in rec.ranges), default=rec.patch_load_base)
        hi = max((r.start + r.length for r in rec.ranges), default=rec.patch_load_base)
        funcs = _functions(registry, rec)
        patches.append({"build_id": rec.patch_build_id, "file": rec.patch_path, "target": rec.target_name,
                        "target_build_id": rec.target_build_id, "load_base": rec.patch_load_base,
                        "range": [lo, hi], "state": state, "functions": funcs,
                        "symbols": rec.patch_build_id not in missing,
                        "callbacks": [{"kind": k, "address": a, "name": n} for k, a, n in rec.callbacks],
                        "callback_state": rec.callback_state or "ok"})
        failed = ", callback failed" if rec.callback_state else ""
        out.lines.append("%s  %s%s  %s" % (rec.patch_build_id, state, failed, rec.patch_path))
        if rec.callback_state:
            out.lines.append("    callback failed: %s" % rec.callback_state.split(": ", 1)[-1])
        out.lines.append("    target %s (build-id %s), mapped at %#x-%#x" % (rec.target_name, rec.target_build_id,
                                                                           lo, hi))
        patches[-1].update(_relations(registry, rec))
        out.lines += _relation_lines(patches[-1])
        if rec.patch_build_id in missing:
            out.lines.append("    patch file not found (recorded %s, build-id %s): no symbols for its frames; "
                             "set nsb patch-dir DIR" % (rec.patch_path or "no path", rec.patch_build_id[:16]))
        if state == NOT_IN_EFFECT:
            out.lines.append("    none of its jumps is in place (the target was loaded again, or an apply was cut "
                             "short): the code is the target's own; nsb-patch applies it afresh")
        for f in funcs:
            if state == STATE_ACTIVE:
                out.lines.append("    %-24s %#x  layer %d of %d%s" % (f["name"], f["entry"], f["layer"], f["layers"],
                                                                     " (top)" if f["top"] else ""))
            else:
                out.lines.append("    %-24s %#x" % (f["name"], f["entry"]))
    for p in broken:
        out.lines.append("partial state: " + p)
    out.patches = patches
    out.functions = [dict(f, patch=p["build_id"]) for p in patches for f in p["functions"]]
    out.message = "%d live patch%s in process %d" % (len(patches), "" if len(patches) == 1 else "es", pid)
    if broken:
        out.code = errors.PartialStateError.exit_code
        out.message += "; partial state found: " + broken[0]
    return out


# ----------------------------------------------------------------------------- check

def check_recorded(out, lp, record, broken):
    """Answer ``nsb-check`` from registry and memory alone when the patch is applied, or it left a
    partial state.  Returns True when ``out`` holds the answer; False: planning must tell."""
    bid = lp.new_bid[:16]
    mine = [p for p in broken if lp.new_bid[:16] in p] or ([p for p in broken] if record is not None else [])
    if record is not None and record.state == STATE_ACTIVE:
        out.state = "applied"
        if mine:
            out.state = "partial"
            out.code = errors.PartialStateError.exit_code
            out.reasons = mine
            out.message = "patch %s is partially applied: %s (nsb-revert repairs it)" % (bid, mine[0])
        else:
            out.message = "patch %s is applied (%d function%s)" % (bid, len(record.functions),
                                                                   "" if len(record.functions) == 1 else "s")
        out.lines = [out.message] + ["  " + r for r in out.reasons]
        return True
    if mine:
        out.state = "partial"
        out.code = errors.PartialStateError.exit_code
        out.reasons = mine
        out.message = "patch %s is not applied but left a partial state: %s" % (bid, mine[0])
        out.lines = [out.message]
        return True
    return False


def environment_reasons(findings, allow_seccomp):
    """([(reason, exit code)] that keep an apply from running, [warning lines]) of the environment findings."""
    reasons, warnings = [], []
    for f in findings:
        if _seccomp_refused(f, allow_seccomp):
            reasons.append(("environment: %s (apply refuses without --allow-seccomp)" % f.message,
                            errors.EnvironmentRefusal.exit_code))
        elif f.severity == "refuse":
            reasons.append(("environment: %s" % f.message, errors.EnvironmentRefusal.exit_code))
        elif f.severity == "warning":
            warnings.append("warning: %s" % f.message)
    return reasons, warnings


def only_busy(reasons):
    """Whether a thread inside the code is all that keeps the patch from being applied (a later look may pass)."""
    return bool(reasons) and all(c == errors.BusyError.exit_code for _, c in reasons)


def check_not_applied(out, lp, reasons, warnings, plan=None):
    """The patch is not applied: could it be now?  ``reasons`` are (reason, exit code), in the order found;
    ``plan`` the apply's plan they were judged on (None: planning refused).

    The exit code is the first reason's that is not "busy" (a thread in the code passes; a mismatch
    does not), else busy; NotAppliedError's when nothing stands in the way."""
    out.reasons = [r for r, _ in reasons]
    out.state = "not applied"
    if not reasons:
        out.code = errors.NotAppliedError.exit_code
        out.message = "patch %s is not applied; it could be applied now" % lp.new_bid[:16]
    else:
        hard = [c for _, c in reasons if c != errors.BusyError.exit_code]
        out.code = hard[0] if hard else errors.BusyError.exit_code
        out.message = "patch %s is not applied and cannot be applied now: %s" % (lp.new_bid[:16], out.reasons[0])
    out.lines = [out.message] + ["  - " + r for r in out.reasons[1:]] + warnings
    if plan is not None:
        out.plan = outcome.plan_dict(plan)
        out.lines += outcome.plan_lines(plan)
    return out


def reasons_against_apply(view, lp, image, registry, memory, breakpoints, breakpoint_policy, replace_option,
                          patch_images, stacks, pid, busy_label="busy now"):
    """([(reason, exit code)] of everything in the process that keeps ``lp`` from being applied now, the plan
    or None when planning refused).

    Judged on the very plan an apply with the same options makes (lifecycle/apply_kind.py: stacked, or a
    replace for a cumulative patch or ``replace_option``): the target not mapped, a refusal of planning or
    of the series rules, a plan whose expected bytes are not there, a thread inside the code (for a
    replace, the replaced patches' code too).  ``patch_images()`` gives the registered patches' ElfImages
    by build-id and ``stacks()`` the threads' stacks; both are asked for only once a plan exists.
    ``busy_label`` starts the reason of a thread inside the code (it says how often the stacks were looked at)."""
    target = view.object_by_build_id(lp.old_bid)
    if target is None:
        return [(absent_target_reason(view, lp, pid), errors.MismatchError.exit_code)], None
    try:
        plan = apply_kind.plan(view, lp, image, registry, breakpoints, breakpoint_policy, replace_option)
        pending = pending_resolvers(plan)
        if pending:  # an apply runs them; judged with stand-ins, as a dry run does
            plan = apply_kind.plan(view, lp, image, registry, breakpoints, breakpoint_policy, replace_option,
                                   resolver_stand_ins(pending))
    except errors.NsbError as e:
        return [(str(e), e.exit_code)], None
    reasons = []
    try:
        apply_kind.refuse_series(lp, registry, plan)
    except errors.DependencyError as e:
        reasons.append((str(e), e.exit_code))
    reasons += [(r, errors.MismatchError.exit_code) for r in planmod.evaluate(plan, memory)]
    busy, entries = apply_kind.busy(plan, lp, registry, patch_images())
    verdict = SafePointCheck(busy, entries).check(stacks())
    if not verdict.safe:
        reasons.append(("%s: %s" % (busy_label, verdict.message()), errors.BusyError.exit_code))
    return reasons, plan
