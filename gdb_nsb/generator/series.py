"""A patch's declared place in a series, from its ``vzp.h`` records.

``VZP_NEEDS_PATCH``, ``VZP_NEEDS_STATE``, ``VZP_PROVIDES_STATE`` and
``VZP_CUMULATIVE`` leave records (``gdb_nsb.elf.records.SERIES_KINDS``);
this turns them into the ``vzpatch`` fields 20-23, refusing, with the macro's
file and line, what cannot be meant: a build-id that is not one, a state id
or version that is not an integer, one state declared twice with two versions.
"""

import re
from dataclasses import dataclass, field
from typing import Dict, List

from gdb_nsb.elf.livepatch import MAX_BUILD_ID_BYTES, State
from gdb_nsb.errors import GenerateError

_HEX = re.compile(r"\A(?:[0-9a-f]{2})+\Z")
_U64 = 1 << 64
_U32 = 1 << 32


@dataclass
class SeriesDeclaration:
    needs_patches: List[str] = field(default_factory=list)
    needs_states: List[State] = field(default_factory=list)
    provides_states: List[State] = field(default_factory=list)
    cumulative: bool = False


def _integer(text, what, rec, limit):
    t = text.strip().lower().rstrip("ul")
    try:
        v = int(t, 0)
    except ValueError:
        raise GenerateError("%s: %s %r of %s is not an integer constant"
                            % (rec.where, what, text, rec.kind.upper())) from None
    if not 0 <= v < limit:
        raise GenerateError("%s: %s %d of %s is out of range" % (rec.where, what, v, rec.kind.upper()))
    return v


def declaration(records, own_build_id=None) -> SeriesDeclaration:
    """The series fields declared by ``records`` (any VzpRecords; other kinds are ignored)."""
    out = SeriesDeclaration()
    states: Dict[str, Dict[int, int]] = {"needs_state": {}, "provides_state": {}}
    for r in records:
        if r.kind == "cumulative":
            out.cumulative = True
        elif r.kind == "needs_patch":
            bid = r.target_name.strip().lower()
            if not _HEX.match(bid) or len(bid) > 2 * MAX_BUILD_ID_BYTES:
                raise GenerateError("%s: VZP_NEEDS_PATCH(%r) is not a GNU build-id (hex, as `nsb list` shows it)"
                                    % (r.where, r.target_name))
            if bid == own_build_id:
                raise GenerateError("%s: the patch needs itself (VZP_NEEDS_PATCH of its own build-id)" % r.where)
            if bid not in out.needs_patches:
                out.needs_patches.append(bid)
        elif r.kind in states:
            sid = _integer(r.target_name, "state id", r, _U64)
            ver = _integer(r.file, "version", r, _U32)
            seen = states[r.kind]
            if seen.get(sid, ver) != ver:
                raise GenerateError("%s: state %d is declared with versions %d and %d"
                                    % (r.where, sid, seen[sid], ver))
            seen[sid] = ver
    out.needs_states = [State(i, v) for i, v in sorted(states["needs_state"].items())]
    out.provides_states = [State(i, v) for i, v in sorted(states["provides_state"].items())]
    return out
