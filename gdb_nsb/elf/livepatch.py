"""The ``vzpatch`` section as typed Python values, and its codec.

A live patch is an ELF shared object carrying one serialized ``BinPatch``
protobuf (``vzpatch.proto``) in a non-allocated section named ``vzpatch``.
This module turns those bytes into plain dataclasses and back, and refuses,
with one line, anything that is not a well-formed section: garbage,
truncation, missing required fields, and values no generator produces.

It reads ELF files only through :mod:`gdb_nsb.elf.sections` (no dependency on
the ELF model in :mod:`gdb_nsb.elf.image`).
"""

import os
import re
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from gdb_nsb.elf.notes import gnu_build_id
from gdb_nsb.elf import sections
from gdb_nsb.errors import ElfError, PatchFileError, UnsupportedError

__all__ = ["SECTION_NAME", "FORMAT_VERSION", "MAX_SECTION_SIZE", "FEATURES", "FuncJump", "MarkedSym", "StaticSym",
           "State", "Callback", "CALLBACK_KINDS", "LivePatch"]

#: Name of the section holding the serialized BinPatch.
SECTION_NAME = "vzpatch"
#: Extensions version we write (``BinPatch.format_version``); 0 = original tool.
FORMAT_VERSION = 1
#: Larger sections are refused before parsing: no real patch comes near it.
MAX_SECTION_SIZE = 64 << 20
#: Entry bytes longer than this are not a function entry (the longest jump we
#: write is endbr64 + 14 bytes).
MAX_ENTRY_BYTES = 64
#: A GNU build-id is at most this many bytes (sha1 is 20; allow room).
MAX_BUILD_ID_BYTES = 64

#: Longest feature name a reader accepts (they are short words).
MAX_FEATURE_NAME = 64

def _pb():
    """The generated protobuf module, imported at the first decode or encode: the import costs
    ~14 ms of CPU, and GDB in the runner's session gets the patch already decoded (fastattach)."""
    from gdb_nsb.elf import vzpatch_pb2
    return vzpatch_pb2


_U32 = 1 << 32
_U64 = 1 << 64
_HEX = re.compile(r"\A(?:[0-9a-f]{2})+\Z")


@dataclass
class FuncJump:
    """A target function whose entry is redirected to new code in the patch.

    ``func_value``/``patch_value`` are link-time addresses in the target and
    the patch; ``fragments`` are every half-open range of the function in the
    target (``f``, ``f.cold`` ...); ``entry_bytes`` are the bytes expected at
    the entry before the first layer is applied (b"" when unknown).
    """

    name: str
    func_value: int
    func_size: int
    patch_value: int
    shndx: int
    fragments: List[Tuple[int, int]] = field(default_factory=list)
    entry_bytes: bytes = b""

    def busy_ranges(self):
        """Ranges of the target function for the safe-point check.

        The fragments when the generator recorded them, else the symbol's
        ``[func_value, func_value + func_size)`` (patches of the original tool).
        """
        if self.fragments:
            return list(self.fragments)
        return [(self.func_value, self.func_value + self.func_size)]


@dataclass
class MarkedSym:
    """A pre-resolved symbol: relocations against ``.dynsym[idx]`` of the patch
    get ``bias(target) + addr``."""

    idx: int
    addr: int


@dataclass
class StaticSym:
    """A code fix-up (auto mode): the ``patch_size``-byte field at
    ``patch_address`` gets ``target_value + base(target) - base(patch)``."""

    patch_size: int
    patch_address: int
    target_value: int


@dataclass(frozen=True)
class State:
    """A system state (the kernel's ``klp_state``): an id the patch author chose
    and a version that grows whenever the state's meaning changes."""

    id: int
    version: int


#: Every feature this reader understands, and when a patch uses it.  A patch
#: names the features it uses in ``required_features`` (written from this
#: table, so the writer never forgets one); a reader refuses a patch naming a
#: feature it does not know, because protobuf would silently skip the fields
#: that carry it and apply the patch without it.  A new feature adds its row.
FEATURES = {
    "cumulative": lambda p: bool(p.cumulative),
    "dependencies": lambda p: bool(p.needs_patches or p.needs_states),
    "states": lambda p: bool(p.provides_states),
    "callbacks": lambda p: bool(p.callbacks),
    "shadow": lambda p: bool(p.shadow_variables),
}
#: The kinds of callback, in the order an apply and a revert run them.
CALLBACK_KINDS = ("pre_patch", "post_patch", "pre_unpatch", "post_unpatch")


@dataclass
class Callback:
    """A function of the patch the tool calls in the target (``vzp.h`` VZP_PRE_PATCH ...).

    ``patch_value`` is its link-time address in the patch; ``name`` is for messages."""

    kind: str
    name: str
    patch_value: int


@dataclass
class LivePatch:
    """The contents of a ``vzpatch`` section.

    ``old_bid`` is the target's build-id, ``new_bid`` the patch's own.
    ``format_version`` is 0 for sections written by the original tool.
    ``target_name`` / ``target_is_executable`` are None when not recorded.
    ``path`` is the file the patch was read from (not serialized).
    Patch series: ``needs_patches`` are build-ids of patches that must be
    applied first, ``needs_states`` states (at least at that version) an
    earlier patch introduced, ``provides_states`` those this patch introduces;
    a ``cumulative`` patch replaces every patch of its target object.
    ``required_features`` is derived from these (see :data:`FEATURES`).
    """

    old_bid: str
    new_bid: str
    new_path: Optional[str] = None
    func_jumps: List[FuncJump] = field(default_factory=list)
    manual_symbols: List[MarkedSym] = field(default_factory=list)
    static_symbols: List[StaticSym] = field(default_factory=list)
    global_symbols: List[MarkedSym] = field(default_factory=list)
    format_version: int = FORMAT_VERSION
    target_name: Optional[str] = None
    target_is_executable: Optional[bool] = None
    needs_patches: List[str] = field(default_factory=list)
    needs_states: List[State] = field(default_factory=list)
    provides_states: List[State] = field(default_factory=list)
    cumulative: bool = False
    callbacks: List[Callback] = field(default_factory=list)
    shadow_variables: bool = False
    path: Optional[str] = field(default=None, compare=False)

    def required_features(self):
        """The features a reader must understand to apply this patch, sorted."""
        return sorted(name for name, uses in FEATURES.items() if uses(self))

    def callback(self, kind):
        """The callback of ``kind`` (a CALLBACK_KINDS name), or None."""
        return next((c for c in self.callbacks if c.kind == kind), None)

    # ----------------------------------------------------------- decoding

    @classmethod
    def from_bytes(cls, data):
        """Decode a serialized BinPatch; PatchFileError if it is not a valid one."""
        data = bytes(data)
        if len(data) > MAX_SECTION_SIZE:
            _corrupt("%d bytes, more than the %d MiB limit" % (len(data), MAX_SECTION_SIZE >> 20))
        if not data:
            _corrupt("it is empty")
        from google.protobuf.message import DecodeError
        msg = _pb().BinPatch()
        try:
            msg.ParseFromString(data)
        except (DecodeError, RuntimeError, ValueError) as e:
            _corrupt("not a BinPatch protobuf (%s)" % _one_line(e))
        missing = msg.FindInitializationErrors()
        if missing:
            _corrupt("missing required field%s %s" % ("s" if len(missing) > 1 else "", ", ".join(missing)))
        _refuse_unknown_features(msg.required_features)
        try:
            patch = cls(
                old_bid=_text(msg.old_bid, "old_bid"),
                new_bid=_text(msg.new_bid, "new_bid"),
                new_path=_text(msg.new_path, "new_path") if msg.HasField("new_path") else None,
                func_jumps=[
                    FuncJump(
                        name=_text(j.name, "func_jumps.name"),
                        func_value=j.func_value,
                        func_size=j.func_size,
                        patch_value=j.patch_value,
                        shndx=j.shndx,
                        fragments=[(r.start, r.end) for r in j.fragments],
                        entry_bytes=bytes(j.entry_bytes),
                    )
                    for j in msg.func_jumps
                ],
                manual_symbols=[MarkedSym(s.idx, s.addr) for s in msg.manual_symbols],
                static_symbols=[StaticSym(s.patch_size, s.patch_address, s.target_value)
                                for s in msg.static_symbols],
                global_symbols=[MarkedSym(s.idx, s.addr) for s in msg.global_symbols],
                format_version=msg.format_version if msg.HasField("format_version") else 0,
                target_name=_text(msg.target_name, "target_name") if msg.HasField("target_name") else None,
                target_is_executable=(msg.target_is_executable
                                      if msg.HasField("target_is_executable") else None),
                needs_patches=[_text(b, "needs_patches") for b in msg.needs_patches],
                needs_states=[State(s.id, s.version) for s in msg.needs_states],
                provides_states=[State(s.id, s.version) for s in msg.provides_states],
                cumulative=msg.cumulative,
                callbacks=[Callback(_text(c.kind, "callbacks.kind"), _text(c.name, "callbacks.name"), c.patch_value)
                           for c in msg.callbacks],
                shadow_variables=msg.shadow_variables,
            )
        except UnicodeDecodeError as e:  # other protobuf runtimes raise on access
            _corrupt("a string field is not valid UTF-8 (%s)" % _one_line(e))
        problem = patch.problem()
        if problem:
            _corrupt(problem)
        return patch

    @classmethod
    def read(cls, elf_path, check_identity=True):
        """Read and decode the ``vzpatch`` section of the patch file ``elf_path``.

        PatchFileError (one line) when the file is missing, not ELF, has no
        ``vzpatch`` section, or the section is corrupt.  With
        ``check_identity``, also when the section's ``new_bid`` is not the
        file's own build-id (a section copied from another patch).
        """
        if not os.path.exists(elf_path):
            raise PatchFileError("patch file not found: %s" % elf_path)
        data = sections.read_section(elf_path, SECTION_NAME)
        if data is None:
            raise PatchFileError("no vzpatch section in %s: run `nsb generate` on it first" % elf_path)
        try:
            patch = cls.from_bytes(data)
        except PatchFileError as e:
            raise PatchFileError("%s (in %s)" % (e, elf_path)) from None
        if check_identity:
            own = build_id_of(elf_path)
            if own is not None and own != patch.new_bid:
                raise PatchFileError(
                    "vzpatch section of %s names patch build-id %s but the file's build-id is %s: "
                    "regenerate it with `nsb generate`" % (elf_path, patch.new_bid, own))
        patch.path = elf_path
        return patch

    # ----------------------------------------------------------- encoding

    def to_message(self):
        """This patch as a ``vzpatch_pb2.BinPatch`` (PatchFileError if invalid)."""
        problem = self.problem()
        if problem:
            raise PatchFileError("cannot encode vzpatch section: %s" % problem)
        msg = _pb().BinPatch(old_bid=self.old_bid, new_bid=self.new_bid)
        if self.new_path is not None:
            msg.new_path = self.new_path
        for j in self.func_jumps:
            m = msg.func_jumps.add(name=j.name, func_value=j.func_value, func_size=j.func_size,
                                   patch_value=j.patch_value, shndx=j.shndx)
            for lo, hi in j.fragments:
                m.fragments.add(start=lo, end=hi)
            if j.entry_bytes:
                m.entry_bytes = bytes(j.entry_bytes)
        for s in self.manual_symbols:
            msg.manual_symbols.add(idx=s.idx, addr=s.addr)
        for s in self.static_symbols:
            msg.static_symbols.add(patch_size=s.patch_size, patch_address=s.patch_address,
                                   target_value=s.target_value)
        for s in self.global_symbols:
            msg.global_symbols.add(idx=s.idx, addr=s.addr)
        if self.format_version:
            msg.format_version = self.format_version
        if self.target_name is not None:
            msg.target_name = self.target_name
        if self.target_is_executable is not None:
            msg.target_is_executable = bool(self.target_is_executable)
        msg.required_features.extend(self.required_features())
        msg.needs_patches.extend(self.needs_patches)
        for s in self.needs_states:
            msg.needs_states.add(id=s.id, version=s.version)
        for s in self.provides_states:
            msg.provides_states.add(id=s.id, version=s.version)
        if self.cumulative:
            msg.cumulative = True
        for c in self.callbacks:
            msg.callbacks.add(kind=c.kind, name=c.name, patch_value=c.patch_value)
        if self.shadow_variables:
            msg.shadow_variables = True
        return msg

    def to_bytes(self):
        """Serialize deterministically (fields in number order)."""
        return self.to_message().SerializeToString(deterministic=True)

    def write_into(self, elf_path, out_path=None):
        """Store this patch as the ``vzpatch`` section of ``elf_path``.

        Writes ``out_path`` (default ``elf_path``) through a temporary file
        renamed over it; replaces an existing section (idempotent).  Returns
        the path written.
        """
        return sections.write_section(elf_path, SECTION_NAME, self.to_bytes(), out_path)

    # --------------------------------------------------------- validation

    def problem(self):
        """The first reason this is not a valid patch description, or None."""
        for what, bid in (("target build-id (old_bid)", self.old_bid), ("patch build-id (new_bid)", self.new_bid)):
            if not isinstance(bid, str) or not _HEX.match(bid):
                return "%s %r is not lowercase hex of even length" % (what, bid)
            if len(bid) > 2 * MAX_BUILD_ID_BYTES:
                return "%s is %d bytes long, more than %d" % (what, len(bid) // 2, MAX_BUILD_ID_BYTES)
        for what, text in (("new_path", self.new_path), ("target_name", self.target_name)):
            if text is not None and not _is_utf8(text):
                return "%s %r is not a UTF-8 string" % (what, text)
        if self.format_version < 0 or self.format_version >= _U32:
            return "format_version %r out of range" % self.format_version
        seen = {}
        for j in self.func_jumps:
            p = _jump_problem(j)
            if p:
                return p
            if j.func_value in seen:
                return "functions %s and %s both redirect the entry at %#x" % (seen[j.func_value], j.name, j.func_value)
            seen[j.func_value] = j.name
        p = _overlap_problem(self.func_jumps)
        if p:
            return p
        for what, syms in (("manual_symbols", self.manual_symbols), ("global_symbols", self.global_symbols)):
            addrs = {}
            for s in syms:
                if not 1 <= s.idx < (1 << 31):
                    return "%s: .dynsym index %r out of range" % (what, s.idx)
                if not -(1 << 63) <= s.addr < (1 << 63):
                    return "%s: address %r of symbol %d out of range" % (what, s.addr, s.idx)
                if addrs.setdefault(s.idx, s.addr) != s.addr:
                    return "%s: symbol %d is bound twice (%#x and %#x)" % (what, s.idx, addrs[s.idx], s.addr)
        for s in self.static_symbols:
            if s.patch_size not in (4, 8):
                return "static_symbols: patch_size %r at %r is not 4 or 8" % (s.patch_size, s.patch_address)
            if not 0 <= s.patch_address < _U64 or not 0 <= s.target_value < _U64:
                return "static_symbols: address out of range at %r" % (s.patch_address,)
        kinds = set()
        for c in self.callbacks:
            if c.kind not in CALLBACK_KINDS:
                return "callbacks: unknown kind %r" % (c.kind,)
            if c.kind in kinds:
                return "callbacks: two %s callbacks" % c.kind
            kinds.add(c.kind)
            if not isinstance(c.name, str) or not c.name or not _is_utf8(c.name):
                return "callbacks: invalid function name %r" % (c.name,)
            if not 0 <= c.patch_value < _U64:
                return "callbacks: %s: address %r out of range" % (c.name, c.patch_value)
        return _series_problem(self)


def _series_problem(p):
    for bid in p.needs_patches:
        if not isinstance(bid, str) or not _HEX.match(bid) or len(bid) > 2 * MAX_BUILD_ID_BYTES:
            return "needs_patches: %r is not a build-id (lowercase hex)" % (bid,)
        if bid == p.new_bid:
            return "needs_patches: the patch needs itself (%s)" % bid
    if len(set(p.needs_patches)) != len(p.needs_patches):
        return "needs_patches: a build-id is listed twice"
    for what, states in (("needs_states", p.needs_states), ("provides_states", p.provides_states)):
        ids = set()
        for s in states:
            if not 0 <= s.id < _U64 or not 0 <= s.version < _U32:
                return "%s: state %r version %r out of range" % (what, s.id, s.version)
            if s.id in ids:
                return "%s: state %d is listed twice" % (what, s.id)
            ids.add(s.id)
    return None


def _refuse_unknown_features(names):
    for name in names:
        if name not in FEATURES:
            shown = name if isinstance(name, str) and len(name) <= MAX_FEATURE_NAME else repr(name)[:MAX_FEATURE_NAME]
            raise UnsupportedError("the patch requires feature %r, which this version of gdb-nsb does not "
                                   "understand: use a newer gdb-nsb (known features: %s)"
                                   % (shown, ", ".join(sorted(FEATURES)) or "none"))


def _overlap_problem(jumps):
    """Two replaced functions whose bodies overlap: the second jump would land inside the first
    function (or its jump), so neither the old nor the new code would run intact."""
    ordered = sorted(jumps, key=lambda j: j.func_value)
    for a, b in zip(ordered, ordered[1:]):
        if a.func_value + a.func_size > b.func_value:
            return "functions %s [%#x, +%#x) and %s at %#x overlap" % (a.name, a.func_value, a.func_size,
                                                                      b.name, b.func_value)
    return None


def _jump_problem(j):
    if not isinstance(j.name, str) or not j.name or "\0" in j.name or not _is_utf8(j.name):
        return "func_jumps: invalid function name %r" % (j.name,)
    if not 0 <= j.func_value < _U64:
        return "func_jumps: %s: address %r out of range" % (j.name, j.func_value)
    if not 0 < j.func_size < _U32:
        return "func_jumps: %s: size %r is not positive" % (j.name, j.func_size)
    if j.func_value + j.func_size > _U64:
        return "func_jumps: %s: [%#x, +%#x) wraps around" % (j.name, j.func_value, j.func_size)
    if not 0 <= j.patch_value < _U32:
        return "func_jumps: %s: patch address %r out of range" % (j.name, j.patch_value)
    if not 0 <= j.shndx < _U32:
        return "func_jumps: %s: section index %r out of range" % (j.name, j.shndx)
    for lo, hi in j.fragments:
        if not 0 <= lo < hi <= _U64:
            return "func_jumps: %s: fragment [%#x, %#x) is empty or out of range" % (j.name, lo, hi)
    if j.fragments and not any(lo <= j.func_value < hi for lo, hi in j.fragments):
        return "func_jumps: %s: no fragment holds its entry %#x" % (j.name, j.func_value)
    if len(j.entry_bytes) > MAX_ENTRY_BYTES:
        return "func_jumps: %s: %d entry bytes, more than %d" % (j.name, len(j.entry_bytes), MAX_ENTRY_BYTES)
    return None


def _is_utf8(text):
    if not isinstance(text, str):
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return False
    return True


def _text(value, what):
    # upb hands back bytes for a proto2 string that is not valid UTF-8.
    if not isinstance(value, str):
        _corrupt("string field %s is not valid UTF-8" % what)
    return value


def _corrupt(detail):
    raise PatchFileError("vzpatch section is corrupt: %s" % detail)


def _one_line(e):
    return " ".join(str(e).split()) or type(e).__name__


def build_id_of(elf_path):
    """The GNU build-id of an ELF file as lowercase hex, or None when it has none.

    Reads the ``.note.gnu.build-id`` section (every linker that writes a
    build-id names the section so).
    """
    data = sections.read_section(elf_path, ".note.gnu.build-id")
    if not data:
        return None
    return _parse_build_id_note(data, elf_path)


def _parse_build_id_note(data, elf_path):
    bid = gnu_build_id(data)
    if bid is None:
        raise ElfError("malformed .note.gnu.build-id in %s" % elf_path)
    return bid
