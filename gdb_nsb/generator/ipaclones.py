"""GCC's ``-fdump-ipa-clones`` file: what the compiler says it inlined and cloned.

``gcc -fdump-ipa-clones -c unit.c -o unit.o`` writes ``unit.c.000i.ipa-clones`` (the
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
        self.inlined = []  # [(function, {basenames of the two declaring files}, holder)]
        self.clones = []  # [(function, {basenames}, clone name, reason)]
        self.removed = []  # [(function, {basename})]
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
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            parts = line.split(";")
            if parts[0] == "Callgraph clone" and len(parts) == _CLONE_FIELDS:
                orig, clone, reason = parts[1], parts[6], parts[11]
                files = {os.path.basename(parts[3]), os.path.basename(parts[8])}
                if reason == "inlining to":
                    self.inlined.append((orig, files, clone))
                else:
                    self.clones.append((orig, files, clone, reason))
            elif parts[0] == "Callgraph removal" and len(parts) == _REMOVAL_FIELDS:
                self.removed.append((parts[1], {os.path.basename(parts[3])}))
            else:
                raise GenerateError("%s:%d is not a -fdump-ipa-clones line: %r" % (path, n, line[:80]))

    @staticmethod
    def _same_file(files, unit_file):
        # The dump's file name follows -o, not the unit: an entry belongs to the unit when the
        # original or the clone / the function it was inlined into is declared in the unit's file
        # (a static inline helper from a header is inlined into the unit's functions).
        return not unit_file or unit_file in files

    def inlined_into(self, name, unit_file=None):
        """Names of the functions ``name`` was inlined into."""
        return sorted({h for o, f, h in self.inlined if o == name and self._same_file(f, unit_file)})

    def clones_of(self, name, unit_file=None):
        """Names of the clones GCC made of ``name`` (constprop, isra, part ...)."""
        return sorted({c for o, f, c, _r in self.clones if o == name and self._same_file(f, unit_file)})


__all__ = ["IpaClones"]
