"""What an operation tells: the ``Outcome`` (lines for a human, fields for ``--json``), and how
apply and revert fill it once their plan was executed or, with ``--dry-run``, only evaluated."""

import os
from dataclasses import dataclass, field
from typing import Optional

from gdb_nsb import errors


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
    patches: Optional[list] = None  # set by list (also when empty, so --json always has the key)
    replaced: Optional[list] = None  # set by a replace: the patches it took out
    plan: Optional[dict] = None  # set by check and patch --dry-run: what the apply does (plan_dict)

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
        if self.replaced is not None:
            d["replaced"] = self.replaced
        if self.plan is not None:
            d["plan"] = self.plan
        return d

    def fail(self, error):
        """Report ``error`` (an NsbError) as the answer: its exit code and its one line."""
        self.code, self.message = error.exit_code, str(error)
        self.lines = [self.message]
        return self


def patch_dict(lp, path):
    return {"path": path, "build_id": lp.new_bid, "target_build_id": lp.old_bid,
            "target_name": lp.target_name or ""}


def record_dict(record):
    return {"build_id": record.patch_build_id, "path": record.patch_path, "target_build_id": record.target_build_id,
            "target_name": record.target_name}


def target_dict(view, build_id):
    obj = view.object_by_build_id(build_id)
    if obj is None:
        return {"build_id": build_id, "mapped": False}
    return {"build_id": build_id, "mapped": True, "path": obj.path, "load_bias": obj.load_bias}


def _plural(n, word, suffix="s"):
    return "%d %s%s" % (n, word, "" if n == 1 else suffix)


def _dry_run(out, plan, reasons, verb, done, code):
    """``--dry-run``: the plan's lines and every reason it could not be executed now (``code`` if any)."""
    out.lines = ["dry run: nothing written"] + plan.describe() + ["cannot %s now: %s" % (verb, r) for r in reasons]
    out.reasons = reasons
    out.code = 0 if not reasons else code
    out.message = "dry run: patch %s %s" % (plan.patch_build_id, "could be %s now" % done if not reasons else
                                             "cannot be %s now: %s" % (done, reasons[0]))
    return out


def apply_dry_run(out, plan, reasons):
    out.plan = plan_dict(plan)
    return _dry_run(out, plan, reasons, "apply", "applied", errors.MismatchError.exit_code)


def plan_dict(plan):
    """What applying ``plan`` does, for ``--json``: ``check`` and ``patch --dry-run`` give the same.

    ``kind``: stack (on the layers there) or replace; ``functions`` it redirects; ``replaces``: the
    build-ids of the patches a replace takes out; ``restores``: functions given their original code back."""
    replace = hasattr(plan, "replaced")
    return {"kind": "replace" if replace else "stack", "functions": [name for name, _ in plan.jumps],
            "replaces": [r.patch_build_id for r in plan.replaced] if replace else [],
            "restores": list(plan.restored) if replace else []}


def plan_lines(plan):
    """``check``'s words for a replace: which patches the apply takes out, which functions get their code back."""
    if not hasattr(plan, "replaced"):
        return []
    ids = ", ".join(r.patch_build_id[:16] for r in plan.replaced)
    out = ["an apply replaces %s in the same stop" % (
        ("patch%s %s" % ("" if len(plan.replaced) == 1 else "es", ids)) if ids
        else "nothing (no patch of its target is applied)")]
    if plan.restored:
        out.append("and restores the original code of %s (only the replaced patches changed it)"
                   % ", ".join(plan.restored))
    return out


def applied(out, plan, settled):
    """An executed load plan: the functions redirected, each with its jump and layer."""
    reg = plan.registry_after
    out.functions = [{"name": name, "entry": j.entry, "jump": j.kind, "destination": j.dest,
                      "layer": len(reg.stack(j.at))} for name, j in plan.jumps]
    out.message = "patch %s applied to %s: %s redirected (load base %#x)" % (
        plan.patch_build_id[:16], os.path.basename(plan.target_path), _plural(len(plan.jumps), "function"),
        plan.placement.bias)
    out.lines = settled + [out.message]
    if hasattr(plan, "replaced"):
        _replaced(out, plan)
    return out


def _replaced(out, plan):
    """A replace: which patches it took out, what became of their memory, which functions got their code back."""
    out.replaced = []
    for rec in plan.replaced:
        bid = rec.patch_build_id
        kept = plan.kept.get(bid)
        out.replaced.append({"build_id": bid, "path": rec.patch_path, "unmapped": bid in plan.retire,
                             **({"kept_mapped_because": kept} if kept else {})})
        out.lines.append("replaced patch %s (%s): %s" % (
            bid[:16], os.path.basename(rec.patch_path) or "?",
            "memory unmapped" if bid in plan.retire else
            "memory kept mapped, inactive: %s points into it" % kept if kept else "memory kept"))
    if plan.restored:
        out.lines.append("original code restored: %s" % ", ".join(plan.restored))
    if plan.replaced:
        out.message += "; replaced %s" % ", ".join(r.patch_build_id[:16] for r in plan.replaced)


def revert_dry_run(out, plan, reasons):
    return _dry_run(out, plan, reasons, "revert", "reverted", errors.PartialStateError.exit_code)


def reverted(out, record, plan, was_active, unloaded):
    """An executed revert plan: what was restored, and what became of the patch's memory and record."""
    bid = record.patch_build_id
    out.functions = [{"name": f.name, "entry": f.entry} for f in record.functions]
    out.message = "patch %s reverted: %s restored%s" % (
        bid[:16], _plural(len(record.functions), "function"),
        ", memory unmapped" if plan.unmap else " (memory kept, inactive)")
    if not was_active:
        out.message = "patch %s was reverted earlier: its memory is unmapped now" % bid[:16]
    elif unloaded:
        out.message = ("patch %s: its target %s (build-id %s) is unloaded, so nothing was restored and nothing "
                       "written at its old addresses; record %s" % (
                           bid[:16], record.target_name, record.target_build_id[:16],
                           "and memory removed" if plan.unmap else "kept inactive (memory kept)"))
    out.lines = [out.message]
    return out
