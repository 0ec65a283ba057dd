"""The records that the ``vzp.h`` macros leave in a patch (section ``.vzp.records``).

Each macro of ``gdb_nsb/data/vzp.h`` emits one record, a ``static const
char`` array named ``__vzp_rec_N`` placed in ``.vzp.records``.  A record is
six NUL-terminated strings after the magic::

    "VZP1" kind patch_symbol target_name file source_file source_line

The linker concatenates the records of all compile units of the patch.  The
generator maps a record to its array (and so to the enclosing function, for a
function-local static) through :attr:`VzpRecord.offset`, the record's position
in the section: the array's link-time address minus the section's address.
"""

from dataclasses import dataclass

from gdb_nsb.elf import livepatch, sections
from gdb_nsb.errors import PatchFileError

__all__ = ["SECTION_NAME", "KINDS", "SERIES_KINDS", "CALLBACK_KINDS", "VzpRecord", "parse_records", "read_records"]

SECTION_NAME = ".vzp.records"
MAGIC = b"VZP1"

#: Every record kind and what it declares: (entity, ELF visibility / scope).
KINDS = {
    "file": (None, None),
    "alias": (None, "static"),
    "static_var": ("var", "static"),
    "static_func": ("func", "static"),
    "hidden_var": ("var", "hidden"),
    "hidden_func": ("func", "hidden"),
    "protected_var": ("var", "protected"),
    "protected_func": ("func", "protected"),
    "internal_var": ("var", "internal"),
    "internal_func": ("func", "internal"),
    # patch series: declarations about the patch itself, never a symbol
    "needs_patch": (None, None),
    "needs_state": (None, None),
    "provides_state": (None, None),
    "cumulative": (None, None),
    # Callbacks: patch_symbol and target_name are the patch's function (docs/CALLBACKS.md).
    "pre_patch": ("callback", None),
    "post_patch": ("callback", None),
    "pre_unpatch": ("callback", None),
    "post_unpatch": ("callback", None),
}
#: The kinds that declare the patch's place in a series (gdb_nsb.generator.series reads them).
SERIES_KINDS = ("needs_patch", "needs_state", "provides_state", "cumulative")
CALLBACK_KINDS = livepatch.CALLBACK_KINDS

_FIELDS = ("kind", "patch_symbol", "target_name", "file", "source_file", "source_line")


@dataclass(frozen=True)
class VzpRecord:
    """One ``vzp.h`` record.

    ``kind``: a key of :data:`KINDS`.  ``patch_symbol``: the patch's undefined
    symbol standing for the target entity (``__vzp_NAME_N``; for ``alias``
    the C name used in the patch; "" for ``file``).  ``target_name``: the
    target's name of the entity ("" for ``file``).  ``file``: the target
    compile unit given to the macro ("" when not given; for ``file`` records
    the binding context).  ``source_file`` / ``source_line``: where in the
    patch source the macro was used.  ``offset``: position of the record in
    the section.
    """

    kind: str
    patch_symbol: str
    target_name: str
    file: str
    source_file: str
    source_line: int
    offset: int

    @property
    def is_variable(self):
        """True for the ``*_var`` kinds."""
        return KINDS[self.kind][0] == "var"

    @property
    def is_function(self):
        """True for the ``*_func`` kinds."""
        return KINDS[self.kind][0] == "func"

    @property
    def is_callback(self):
        """True for the callback kinds (``VZP_PRE_PATCH`` ...)."""
        return KINDS[self.kind][0] == "callback"

    @property
    def scope(self):
        """'static', 'hidden', 'protected' or 'internal' (None for ``file`` and callbacks)."""
        return KINDS[self.kind][1]

    @property
    def where(self):
        """``source_file:source_line`` of the macro, for messages."""
        return "%s:%d" % (self.source_file, self.source_line)


def _bad(offset, what):
    raise PatchFileError("malformed vzp.h record at offset %#x of %s: %s" % (offset, SECTION_NAME, what))


def parse_records(data):
    """Parse the contents of a ``.vzp.records`` section into VzpRecords, in order.

    NUL bytes between records (alignment padding between compile units) are
    skipped.  PatchFileError (one line) on a wrong magic, a truncated record,
    an unknown kind, a bad line number or fields that contradict the kind.
    """
    data = bytes(data)
    records = []
    pos = 0
    n = len(data)
    while pos < n:
        if data[pos] == 0:
            pos += 1
            continue
        start = pos
        if data[pos:pos + len(MAGIC) + 1] != MAGIC + b"\0":
            _bad(start, "does not start with %r (a record of another vzp.h version?)" % MAGIC.decode())
        pos += len(MAGIC) + 1
        values = []
        for name in _FIELDS:
            end = data.find(b"\0", pos)
            if end < 0:
                _bad(start, "truncated: field %s is missing" % name)
            values.append(data[pos:end].decode("utf-8", "surrogateescape"))
            pos = end + 1
        kind, psym, tname, file, source_file, line = values
        if kind not in KINDS:
            _bad(start, "unknown kind %r" % kind)
        if not line.isdigit() or not line.isascii():
            _bad(start, "source line %r is not a number" % line)
        rec = VzpRecord(kind, psym, tname, file, source_file, int(line), start)
        where = "(%s %s)" % (kind, rec.where)
        if kind in SERIES_KINDS:
            if psym or (kind == "cumulative" and (tname or file)) or (kind == "needs_patch" and file):
                _bad(start, "%s record with fields it does not have %s" % (kind, where))
        elif kind == "file":
            if psym or tname:
                _bad(start, "file record names a symbol %s" % where)
            if not file:
                _bad(start, "VZP_FILE with an empty path %s" % where)
        else:
            if not psym:
                _bad(start, "missing patch symbol %s" % where)
            if not tname:
                _bad(start, "missing target name %s" % where)
            if kind == "alias" and file:
                _bad(start, "alias record names a file %s" % where)
            if rec.is_callback and (file or psym != tname):
                _bad(start, "callback record names a file or two functions %s" % where)
        records.append(rec)
    return records


def read_records(patch_path):
    """The records of the patch ``.so`` at ``patch_path`` ([] when it uses no macro)."""
    data = sections.read_section(patch_path, SECTION_NAME)
    if data is None:
        return []
    return parse_records(data)
