"""GCC's ``-fdump-ipa-clones`` file: what the compiler says it inlined and cloned.

``gcc -fdump-ipa-clones -c unit.c`` writes ``unit.c.000i.ipa-clones`` (the
input SUSE's userspace live patching tools read too), one line per
transformation::

    Callgraph clone;f;11;t.c;2;5;g;12;t.c;3;5;inlining to
    Callgraph clone;k;0;w.c;1;38;k.constprop.0;3;w.c;1;38;constprop
    Callgraph removal;k;0;u.c;1;12

(original name, order, file, line, column; clone name -- for ``inlining to``
the function the original was inlined into --, order, file, line, column;
reason).  The generator uses it, when given, besides the DWARF: a copy the
DWARF does not describe (``-g1``, dropped inline records) is still found.
"""

from __future__ import annotations

import os

from gdb_nsb.errors import GenerateError

_CLONE_FIELDS = 12
_REMOVAL_FIELDS = 6


class IpaClones:
    """The transformations of one or more dump files."""

    def __init__(self):
        self.inlined = []  # [(function, dump's unit, holder)]
        self.clones = []  # [(function, dump's unit, clone name, reason)]
        self.removed = []  # [(function, dump's unit)]
        self.paths = []

    @classmethod
    def read(cls, paths):
        out = cls()
        for path in paths:
            out.add_file(path)
        return out

    def add_file(self, path):
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except OSError as e:
            raise GenerateError("cannot read the ipa-clones file %s: %s" % (path, e.strerror or e)) from e
        self.paths.append(path)
        unit = _unit_of(path)
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            parts = line.split(";")
            if parts[0] == "Callgraph clone" and len(parts) == _CLONE_FIELDS:
                orig, ofile, clone, reason = parts[1], parts[3], parts[6], parts[11]
                if reason == "inlining to":
                    self.inlined.append((orig, unit, clone))
                else:
                    self.clones.append((orig, unit, clone, reason))
            elif parts[0] == "Callgraph removal" and len(parts) == _REMOVAL_FIELDS:
                self.removed.append((parts[1], unit))
            else:
                raise GenerateError("%s:%d is not a -fdump-ipa-clones line: %r" % (path, n, line[:80]))

    @staticmethod
    def _same_file(dump_unit, unit_file):
        # A dump names its unit in its file name (unit.c.000i.ipa-clones); one that does not
        # (renamed by the user) counts for every unit; gcc -o out.o names it out-unit.c...
        return (not unit_file or not dump_unit or dump_unit == unit_file
                or dump_unit.endswith("-" + unit_file))

    def inlined_into(self, name, unit_file=None):
        """Names of the functions ``name`` was inlined into."""
        return sorted({h for o, f, h in self.inlined if o == name and self._same_file(f, unit_file)})

    def clones_of(self, name, unit_file=None):
        """Names of the clones GCC made of ``name`` (constprop, isra, part ...)."""
        return sorted({c for o, f, c, _r in self.clones if o == name and self._same_file(f, unit_file)})


def _unit_of(path):
    """``unit.c`` for a dump called ``.../unit.c.000i.ipa-clones``, else None."""
    base = os.path.basename(path)
    head, sep, _tail = base.partition(".000i.ipa-clones")
    return head if sep and head else None


__all__ = ["IpaClones"]
