"""Patch series: what a patch needs, what it provides, what a cumulative patch replaces (issue 18).

A patch may need other patches (by build-id) and states (id, version) that an
earlier patch introduced (the kernel's ``klp_state``); it may provide states.
A cumulative patch replaces every active patch of its target object and then
stands for them: a need of a replaced patch's build-id is met by it.  These
functions decide, from the registry alone, whether an apply, a replace or a
revert keeps every applied patch's needs met; each refusal is a
``DependencyError`` (exit 20) naming what is missing or who depends.
"""

from gdb_nsb.errors import DependencyError
from gdb_nsb.registry import STATE_ACTIVE


def _short(bid):
    return bid[:16]


def _active(registry, without=()):
    return [r for r in registry.patches if r.state == STATE_ACTIVE and r.patch_build_id not in without]


def _provided(records):
    """{state id: highest version} the records provide."""
    out = {}
    for r in records:
        for sid, version in r.states:
            out[sid] = max(version, out.get(sid, version))
    return out


def _unmet(needs, needs_states, records):
    """What of ``needs`` / ``needs_states`` the active ``records`` do not meet, as words."""
    present = set()
    for r in records:
        present.add(r.patch_build_id)
        present.update(r.replaced)
    provided = _provided(records)
    out = ["patch %s" % _short(b) for b in needs if b not in present]
    for sid, version in needs_states:
        have = provided.get(sid)
        if have is None:
            out.append("state %d (version %d or later)" % (sid, version))
        elif have < version:
            out.append("state %d version %d (version %d is applied)" % (sid, version, have))
    return out


def missing_dependencies(livepatch, registry, replacing=()):
    """What ``livepatch`` needs that the process lacks once the records ``replacing`` are gone."""
    gone = {r.patch_build_id for r in replacing}
    return _unmet(livepatch.needs_patches, [(s.id, s.version) for s in livepatch.needs_states],
                  _active(registry, gone | {livepatch.new_bid}))


def refuse_apply(livepatch, registry, replacing=()):
    """DependencyError unless ``livepatch`` can join the applied patches (``replacing`` leaving)."""
    missing = missing_dependencies(livepatch, registry, replacing)
    if missing:
        raise DependencyError("patch %s needs %s, which %s not applied: apply %s first"
                              % (_short(livepatch.new_bid), ", ".join(missing),
                                 "is" if len(missing) == 1 else "are", "it" if len(missing) == 1 else "them"))
    gone = {r.patch_build_id for r in replacing}
    others = _active(registry, gone | {livepatch.new_bid})
    mine = {s.id: s.version for s in livepatch.provides_states}
    # A cumulative patch must take over every state of the patches it replaces (the kernel's rule):
    # code that does not know a state would undo what the state promises.
    for r in replacing:
        for sid, version in r.states:
            if mine.get(sid, -1) < version:
                raise DependencyError("patch %s replaces %s, which provides state %d version %d, but does not "
                                      "provide it (at that version or later)"
                                      % (_short(livepatch.new_bid), _short(r.patch_build_id), sid, version))
    for sid, have in _provided(others).items():
        if sid in mine and mine[sid] < have:
            holder = next(r for r in others if (sid, have) in r.states)
            raise DependencyError("patch %s provides state %d version %d, older than version %d of applied "
                                  "patch %s" % (_short(livepatch.new_bid), sid, mine[sid], have,
                                                _short(holder.patch_build_id)))


def dependents(registry, build_id):
    """[(record, what it would lack)] of the active patches whose needs break when ``build_id`` goes."""
    rest = _active(registry, (build_id,))
    out = []
    for r in rest:
        lack = _unmet(r.needs, r.needs_states, [x for x in rest if x is not r])
        if lack and not _unmet(r.needs, r.needs_states, [x for x in _active(registry) if x is not r]):
            out.append((r, lack))
    return out


def refuse_revert(registry, build_id):
    """DependencyError while an applied patch depends on ``build_id``, naming it and what it needs."""
    deps = dependents(registry, build_id)
    if deps:
        raise DependencyError("patch %s cannot be reverted: %s" % (_short(build_id), "; ".join(
            "applied patch %s needs %s" % (_short(r.patch_build_id), ", ".join(lack)) for r, lack in deps)
            + ": revert %s first" % ("it" if len(deps) == 1 else "them")))
