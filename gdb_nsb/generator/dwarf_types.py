"""Comparing C types and prototypes between two DWARF trees (pyelftools DIEs).

The generator refuses a patch whose view of a target object differs from
the target's: a variable's type (size, struct/union member order, offsets,
member types recursively, array lengths, enumerators, const-ness) or a
replaced function's prototype.  Typedefs are looked through: ``typedef int
count_t`` and ``int`` are the same type.  :func:`type_difference` and
:func:`prototype_difference` return the first difference as a phrase for an
error message, or None when the two agree.
"""

from __future__ import annotations

_STRIP = ("DW_TAG_typedef",)
_QUALIFIERS = ("DW_TAG_const_type", "DW_TAG_volatile_type", "DW_TAG_restrict_type", "DW_TAG_atomic_type")
_MAX_DEPTH = 64


def _ref(die, attr):
    """The DIE that ``attr`` of ``die`` refers to, or None."""
    if die is None or attr not in die.attributes:
        return None
    return die.get_DIE_from_attribute(attr)


def _name(die):
    a = die.attributes.get("DW_AT_name") if die is not None else None
    if a is None:
        return None
    v = a.value
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v


def _int(die, attr, default=None):
    a = die.attributes.get(attr)
    if a is None:
        return default
    v = a.value
    if isinstance(v, int):
        return v
    if isinstance(v, (list, bytes)) and v:
        # DW_OP_plus_uconst N (DWARF 2 member locations).
        raw = list(v)
        if raw[0] == 0x23:
            n, s = 0, 0
            for b in raw[1:]:
                n |= (b & 0x7F) << s
                s += 7
                if b < 0x80:
                    break
            return n
    return default


def origin(die):
    """Follow DW_AT_abstract_origin / DW_AT_specification to the declaring DIE."""
    seen = 0
    while die is not None and seen < 8:
        nxt = _ref(die, "DW_AT_abstract_origin") or _ref(die, "DW_AT_specification")
        if nxt is None:
            return die
        die, seen = nxt, seen + 1
    return die


def type_of(die):
    """The type DIE of a variable / function DIE (its declaration's, for a definition); None: void."""
    d = die
    for _ in range(8):
        if d is None:
            return None
        if "DW_AT_type" in d.attributes:
            return _ref(d, "DW_AT_type")
        d = _ref(d, "DW_AT_abstract_origin") or _ref(d, "DW_AT_specification")
    return None


def strip_typedefs(die):
    """``die`` with typedefs removed (None stays None: void)."""
    n = 0
    while die is not None and die.tag in _STRIP and n < _MAX_DEPTH:
        die, n = _ref(die, "DW_AT_type"), n + 1
    return die


def spell(die, depth=0):
    """A C-like spelling of a type DIE for messages (``const struct s *``, ``int[4]``)."""
    if die is None:
        return "void"
    if depth > 8:
        return "..."
    tag = die.tag
    if tag == "DW_TAG_base_type" or tag == "DW_TAG_typedef":
        return _name(die) or "?"
    if tag in ("DW_TAG_structure_type", "DW_TAG_union_type", "DW_TAG_enumeration_type", "DW_TAG_class_type"):
        kw = {"DW_TAG_structure_type": "struct", "DW_TAG_union_type": "union",
              "DW_TAG_enumeration_type": "enum", "DW_TAG_class_type": "class"}[tag]
        return "%s %s" % (kw, _name(die) or "<anonymous>")
    if tag in _QUALIFIERS:
        return "%s %s" % (tag[7:-5], spell(_ref(die, "DW_AT_type"), depth + 1))
    if tag == "DW_TAG_pointer_type":
        return spell(_ref(die, "DW_AT_type"), depth + 1) + " *"
    if tag == "DW_TAG_array_type":
        return spell(_ref(die, "DW_AT_type"), depth + 1) + "".join("[%s]" % ("" if n is None else n)
                                                                  for n in _dims(die))
    if tag == "DW_TAG_subroutine_type":
        return "%s (*)(%s)" % (spell(_ref(die, "DW_AT_type"), depth + 1),
                               ", ".join(spell(p, depth + 1) if p is not None else "..." for p in _params(die)))
    return tag[7:]


def _dims(die):
    out = []
    for c in die.iter_children():
        if c.tag == "DW_TAG_subrange_type":
            count = _int(c, "DW_AT_count")
            if count is None:
                ub = _int(c, "DW_AT_upper_bound")
                count = None if ub is None else ub - _int(c, "DW_AT_lower_bound", 0) + 1
            out.append(count)
        elif c.tag == "DW_TAG_enumeration_type":
            out.append(None)
    return out


def _params(die):
    """Parameter types of a subprogram or subroutine type; None stands for ``...``."""
    out = []
    for c in die.iter_children():
        if c.tag == "DW_TAG_formal_parameter":
            out.append(_ref(origin(c), "DW_AT_type"))
        elif c.tag == "DW_TAG_unspecified_parameters":
            out.append(None)
    return out


def _members(die):
    return [c for c in die.iter_children() if c.tag == "DW_TAG_member"]


def _member_offset(m):
    off = _int(m, "DW_AT_data_member_location", 0)
    bit = _int(m, "DW_AT_data_bit_offset")
    return off * 8 if bit is None else bit


def type_difference(target, patch):
    """First difference between type DIEs ``target`` and ``patch`` (None: same type)."""
    return Comparer().type_difference(target, patch)


def prototype_difference(target_fn, patch_fn):
    """First difference between two functions' prototypes (return and parameter types)."""
    return Comparer().prototype_difference(target_fn, patch_fn)


def _prototype_difference(c, target_fn, patch_fn):
    t, p = origin(target_fn), origin(patch_fn)
    d = c.diff(_ref(t, "DW_AT_type"), _ref(p, "DW_AT_type"), "return type")
    if d:
        return d
    tp, pp = _params(t), _params(p)
    if len(tp) != len(pp):
        return "%d parameters in the target (%s), %d in the patch (%s)" % (
            len(tp), _plist(tp), len(pp), _plist(pp))
    for i, (a, b) in enumerate(zip(tp, pp)):
        if (a is None) != (b is None):
            return "parameter %d: %s in the target, %s in the patch" % (
                i + 1, "..." if a is None else spell(a), "..." if b is None else spell(b))
        if a is not None:
            d = c.diff(a, b, "parameter %d" % (i + 1))
            if d:
                return d
    return None


def _plist(ps):
    return ", ".join("..." if p is None else spell(p) for p in ps) or "void"


class Comparer:
    """Type comparisons between one target's DWARF and one patch's, remembering the pairs of types found
    alike across comparisons (a generation compares the same structs for every function and variable)."""

    def __init__(self):
        self.assumed = set()  # type pairs under comparison: recursion through pointers
        # Pairs already found alike: without it a dense graph of structs pointing at each other (sqlite3's
        # connection, statement, parser ...) is walked once per path, exponentially.  Sound because the first
        # difference anywhere ends the comparison, whose new pairs are then forgotten (checked): a pair found
        # alike under an assumed ancestor that turns out different is never kept.
        self.alike = set()
        self._log = []  # pairs added to alike, in order (checked forgets a failed comparison's)
        self._deferred = []  # (target, patch, path) met deeper than _MAX_DEPTH: compared after, from the top

    def type_difference(self, target, patch):
        """First difference between type DIEs ``target`` and ``patch`` (None: same type)."""
        return self.checked(lambda: self.diff(target, patch, ""))

    def prototype_difference(self, target_fn, patch_fn):
        """First difference between two functions' prototypes (return and parameter types)."""
        return self.checked(lambda: _prototype_difference(self, target_fn, patch_fn))

    def checked(self, compare):
        before = len(self._log)
        d = compare()
        while d is None and self._deferred:
            t, p, path = self._deferred.pop()
            d = self.diff(t, p, path)
        if d is not None:
            self._deferred.clear()
            for key in self._log[before:]:
                self.alike.discard(key)
            del self._log[before:]
        return d

    def diff(self, t, p, path, depth=0):
        t, p = strip_typedefs(t), strip_typedefs(p)
        where = (path + ": ") if path else ""
        if t is None or p is None:
            if t is None and p is None:
                return None
            return "%s%s in the target, %s in the patch" % (where, spell(t), spell(p))
        if depth > _MAX_DEPTH:  # assumed alike for now, compared later: the recursion stays bounded
            self._deferred.append((t, p, path))
            return None
        key = (id(t.dwarfinfo), t.offset, id(p.dwarfinfo), p.offset)  # a dwz alt file has offsets of its own
        if key in self.assumed or key in self.alike:
            return None
        tc, pc = t.tag == "DW_TAG_const_type", p.tag == "DW_TAG_const_type"
        if tc != pc:
            return "%sconst-ness changed: %s in the target, %s in the patch" % (where, spell(t), spell(p))
        if t.tag != p.tag:
            return "%s%s in the target, %s in the patch" % (where, spell(t), spell(p))
        self.assumed.add(key)
        try:
            d = self._same_tag(t, p, path, where, depth)
        finally:
            self.assumed.discard(key)
        if d is None:
            self.alike.add(key)
            self._log.append(key)
        return d

    def _same_tag(self, t, p, path, where, depth):
        tag = t.tag
        sub = lambda a, b, what: self.diff(a, b, what, depth + 1)  # noqa: E731
        if tag in _QUALIFIERS or tag in ("DW_TAG_pointer_type", "DW_TAG_reference_type"):
            inner = path + ("[*]" if tag == "DW_TAG_pointer_type" else "")
            return sub(_ref(t, "DW_AT_type"), _ref(p, "DW_AT_type"), inner)
        if tag == "DW_TAG_base_type":
            ts, ps = _int(t, "DW_AT_byte_size"), _int(p, "DW_AT_byte_size")
            te, pe = _int(t, "DW_AT_encoding"), _int(p, "DW_AT_encoding")
            if ts != ps or te != pe:
                return "%s%s (%s bytes) in the target, %s (%s bytes) in the patch" % (where, spell(t), ts,
                                                                                    spell(p), ps)
            return None
        if tag == "DW_TAG_array_type":
            td, pd = _dims(t), _dims(p)
            if len(td) != len(pd) or any(a != b and b is not None for a, b in zip(td, pd)):
                return "%sarray %s in the target, %s in the patch" % (where, spell(t), spell(p))
            return sub(_ref(t, "DW_AT_type"), _ref(p, "DW_AT_type"), path + "[]")
        if tag in ("DW_TAG_structure_type", "DW_TAG_union_type", "DW_TAG_class_type"):
            return self._aggregate(t, p, path, where, depth)
        if tag == "DW_TAG_enumeration_type":
            if _int(t, "DW_AT_byte_size") != _int(p, "DW_AT_byte_size"):
                return "%s%s is %s bytes in the target, %s in the patch" % (
                    where, spell(t), _int(t, "DW_AT_byte_size"), _int(p, "DW_AT_byte_size"))
            te = [(_name(c), _int(c, "DW_AT_const_value")) for c in t.iter_children() if c.tag == "DW_TAG_enumerator"]
            pe = [(_name(c), _int(c, "DW_AT_const_value")) for c in p.iter_children() if c.tag == "DW_TAG_enumerator"]
            if te and pe and te != pe:
                return "%s%s has other enumerators in the target (%s) than in the patch (%s)" % (
                    where, spell(t), _enums(te), _enums(pe))
            return None
        if tag == "DW_TAG_subroutine_type":
            d = sub(_ref(t, "DW_AT_type"), _ref(p, "DW_AT_type"), path + "(return)")
            if d:
                return d
            tp, pp = _params(t), _params(p)
            if len(tp) != len(pp):
                return "%sfunction pointer %s in the target, %s in the patch" % (where, spell(t), spell(p))
            for i, (a, b) in enumerate(zip(tp, pp)):
                if (a is None) != (b is None):
                    return "%sfunction pointer %s in the target, %s in the patch" % (where, spell(t), spell(p))
                if a is not None:
                    d = sub(a, b, "%s(parameter %d)" % (path, i + 1))
                    if d:
                        return d
            return None
        return None

    def _aggregate(self, t, p, path, where, depth):
        if _name(t) != _name(p):
            return "%s%s in the target, %s in the patch" % (where, spell(t), spell(p))
        # An incomplete declaration (struct s;) on either side says nothing about the layout.
        if "DW_AT_declaration" in t.attributes or "DW_AT_declaration" in p.attributes:
            return None
        ts, ps = _int(t, "DW_AT_byte_size"), _int(p, "DW_AT_byte_size")
        if ts != ps:
            return "%s%s is %s bytes in the target, %s in the patch" % (where, spell(t), ts, ps)
        tm, pm = _members(t), _members(p)
        tn, pn = [_name(m) for m in tm], [_name(m) for m in pm]
        if tn != pn:
            if sorted(map(str, tn)) == sorted(map(str, pn)):
                return "%s%s member order differs: (%s) in the target, (%s) in the patch" % (
                    where, spell(t), ", ".join(map(str, tn)), ", ".join(map(str, pn)))
            return "%s%s members differ: (%s) in the target, (%s) in the patch" % (
                where, spell(t), ", ".join(map(str, tn)), ", ".join(map(str, pn)))
        for a, b in zip(tm, pm):
            mpath = "%s.%s" % (path or spell(t), _name(a) or "<anonymous>")
            oa, ob = _member_offset(a), _member_offset(b)
            if oa != ob:
                return "%s: offset %s in the target, %s in the patch" % (mpath, _bits(oa), _bits(ob))
            if _int(a, "DW_AT_bit_size") != _int(b, "DW_AT_bit_size"):
                return "%s: bit-field width %s in the target, %s in the patch" % (
                    mpath, _int(a, "DW_AT_bit_size"), _int(b, "DW_AT_bit_size"))
            d = self.diff(_ref(a, "DW_AT_type"), _ref(b, "DW_AT_type"), mpath, depth + 1)
            if d:
                return d
        return None


def _bits(n):
    return str(n // 8) if n % 8 == 0 else "%d bits" % n


def _enums(items):
    return ", ".join("%s=%s" % kv for kv in items[:6]) + (" ..." if len(items) > 6 else "")


__all__ = ["Comparer", "type_difference", "prototype_difference", "type_of", "spell", "origin", "strip_typedefs"]
