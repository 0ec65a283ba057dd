"""The in-process record of applied patches (REFERENCE.md 2.6), pure.

The registry lives in the target's memory so that any later GDB session can
list, check and revert.  Its records are encoded here (``encode_payload``);
the mapping that holds them, two slots and a commit word, is
``gdb_nsb.registry_slots`` (format 3: format 2 plus the patch-series fields at
the end of each record; a format 2 record reads with them empty).  Format 1, still read here to migrate
registries written by older versions, was one header and payload rewritten
in place (little endian):

    header (32 bytes)
      magic       8s   b"NSBREG\\0\\0"
      version     u32  FORMAT_VERSION
      length      u32  payload bytes following the header
      crc32       u32  zlib.crc32 of header (crc field zeroed) + payload
      reserved    u32  0
      generation  u64  grows on every move to a new mapping; the higher wins
    payload
      u32 patch count, then per patch: u32 record length + record bytes.
      A record's known fields are read in order and any trailing bytes are
      skipped, so later minor versions can append fields.

Layer model: for each function entry, an ordered stack of layers.  The
bottom is the target's original code (saved in every function record);
each applied patch redirecting that entry is one layer whose record names
the patch directly below it (``below``; "" = the original code).
"""

import struct
import zlib
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from gdb_nsb.errors import NsbError, RegistryCorrupt

MAGIC = b"NSBREG\0\0"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sIIIIQ")
HEADER_SIZE = _HEADER.size  # 32

STATE_ACTIVE = "active"
STATE_INACTIVE = "inactive"
_STATES = {STATE_ACTIVE: 1, STATE_INACTIVE: 2}
_STATE_NAMES = {v: k for k, v in _STATES.items()}


class LayerError(NsbError):
    """A layer operation contradicts the registry (not applied, applied twice ...)."""


@dataclass
class MappedRange:
    """One range of a patch's memory: start address, length, PROT_* bits."""

    start: int
    length: int
    prot: int


@dataclass
class FunctionRecord:
    """One redirected function entry of one patch (one layer at ``entry``).

    ``entry`` is where the jump starts (after an ``endbr64``); ``jump`` the
    bytes this layer wrote; ``original`` the target's own bytes there, at
    least as long as ``jump``; ``below`` the build-id of the patch whose layer
    lies directly below ("" = original code).
    """

    name: str
    entry: int
    jump: bytes
    original: bytes
    below: str = ""


@dataclass
class PatchRecord:
    """What the registry knows about one applied (or inactive) patch."""

    patch_build_id: str
    target_build_id: str
    target_name: str
    target_load_bias: int
    patch_load_base: int
    ranges: List[MappedRange] = field(default_factory=list)
    patch_path: str = ""
    state: str = STATE_ACTIVE
    functions: List[FunctionRecord] = field(default_factory=list)
    # Patch series (registry format 3; empty when read from format 2): the build-ids this patch
    # needs, the states (id, version) it needs and those it provides, the build-ids of the
    # patches it replaced (a cumulative patch stands for them).
    needs: List[str] = field(default_factory=list)
    needs_states: List[Tuple[int, int]] = field(default_factory=list)
    states: List[Tuple[int, int]] = field(default_factory=list)
    replaced: List[str] = field(default_factory=list)
    # Its callbacks as (kind, run-time address, function name), and "" or "failed: WHY" once one failed
    # (docs/CALLBACKS.md: nothing is rolled back silently; ``list`` shows it).
    callbacks: List[Tuple[str, int, str]] = field(default_factory=list)
    callback_state: str = ""

    def function_at(self, entry: int) -> Optional[FunctionRecord]:
        f = self._entry_index().get(entry)
        return f if f is not None and f.entry == entry else None

    def remove_function(self, f: FunctionRecord) -> None:
        """Take ``f`` out of ``functions`` (keeps the entry index current)."""
        self.functions.remove(f)
        idx = self.__dict__.get("_index")
        if idx is None or idx["list"] is not self.functions or idx["dups"] or idx["map"].get(f.entry) is not f:
            self.__dict__.pop("_index", None)
            return
        del idx["map"][f.entry]
        idx["n"] = len(self.functions)
        idx["last"] = self.functions[-1] if self.functions else None

    def _entry_index(self):
        # Functions by entry, kept up to date as the list grows: a linear scan per lookup, or a
        # rebuild per append, made planning 1000 functions quadratic inside the stop.
        fl = self.functions
        idx = self.__dict__.get("_index")
        if idx is None or idx["list"] is not fl or len(fl) < idx["n"] \
                or (idx["n"] and fl[idx["n"] - 1] is not idx["last"]):
            idx = {"list": fl, "n": 0, "last": None, "map": {}, "dups": False}
            self.__dict__["_index"] = idx
        if len(fl) > idx["n"]:
            m = idx["map"]
            for f in fl[idx["n"]:]:
                if m.setdefault(f.entry, f) is not f:
                    idx["dups"] = True
            idx["n"], idx["last"] = len(fl), fl[-1]
        return idx["map"]


@dataclass
class LayerWrite:
    """The memory change a layer operation needs at one function entry.

    ``expected`` is what must be there now (verified before writing),
    ``new`` what to write; equal when the change is hidden under another layer.
    """

    entry: int
    expected: bytes
    new: bytes

    @property
    def changes_memory(self) -> bool:
        return self.expected != self.new


# --- encoding helpers -------------------------------------------------------

class _Writer:
    def __init__(self):
        self.parts = []

    def u8(self, v):
        self.parts.append(struct.pack("<B", v))

    def u32(self, v):
        self.parts.append(struct.pack("<I", v))

    def u64(self, v):
        self.parts.append(struct.pack("<Q", v & 0xFFFFFFFFFFFFFFFF))

    def blob(self, b):
        self.u32(len(b))
        self.parts.append(bytes(b))

    def text(self, s):
        self.blob(s.encode("utf-8"))

    def getvalue(self):
        return b"".join(self.parts)


class _Reader:
    def __init__(self, data, what):
        self.data = data
        self.pos = 0
        self.what = what

    def _take(self, n):
        if n < 0 or self.pos + n > len(self.data):
            raise RegistryCorrupt("registry %s is truncated at byte %d" % (self.what, self.pos))
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def u8(self):
        return self._take(1)[0]

    def u32(self):
        return struct.unpack("<I", self._take(4))[0]

    def u64(self):
        return struct.unpack("<Q", self._take(8))[0]

    def blob(self):
        return bytes(self._take(self.u32()))

    def text(self):
        try:
            return self.blob().decode("utf-8")
        except UnicodeDecodeError:
            raise RegistryCorrupt("registry %s holds a string that is not UTF-8" % self.what) from None


def _encode_patch(p: PatchRecord) -> bytes:
    w = _Writer()
    w.text(p.patch_build_id)
    w.text(p.target_build_id)
    w.text(p.target_name)
    w.u64(p.target_load_bias)
    w.u64(p.patch_load_base)
    w.text(p.patch_path)
    if p.state not in _STATES:
        raise ValueError("unknown patch state %r" % p.state)
    w.u8(_STATES[p.state])
    w.u32(len(p.ranges))
    for r in p.ranges:
        w.u64(r.start)
        w.u64(r.length)
        w.u32(r.prot)
    w.u32(len(p.functions))
    for f in p.functions:
        w.text(f.name)
        w.u64(f.entry)
        w.blob(f.jump)
        w.blob(f.original)
        w.text(f.below)
    # Format 3: the series fields, after everything format 2 has.
    w.u32(len(p.needs))
    for bid in p.needs:
        w.text(bid)
    for states in (p.needs_states, p.states):
        w.u32(len(states))
        for sid, version in states:
            w.u64(sid)
            w.u32(version)
    w.u32(len(p.replaced))
    for bid in p.replaced:
        w.text(bid)
    # Format 3, callbacks (issue 19): after the series fields.
    w.u32(len(p.callbacks))
    for kind, addr, name in p.callbacks:
        w.text(kind)
        w.u64(addr)
        w.text(name)
    w.text(p.callback_state)
    return w.getvalue()


def _decode_patch(data: bytes, index: int) -> PatchRecord:
    r = _Reader(data, "record %d" % index)
    p = PatchRecord(r.text(), r.text(), r.text(), r.u64(), r.u64())
    p.patch_path = r.text()
    code = r.u8()
    if code not in _STATE_NAMES:
        raise RegistryCorrupt("registry record %d has unknown state %d" % (index, code))
    p.state = _STATE_NAMES[code]
    for _ in range(r.u32()):
        p.ranges.append(MappedRange(r.u64(), r.u64(), r.u32()))
    for _ in range(r.u32()):
        p.functions.append(FunctionRecord(r.text(), r.u64(), r.blob(), r.blob(), r.text()))
    if r.pos < len(data):  # format 3 (a format 2 record ends here)
        p.needs = [r.text() for _ in range(r.u32())]
        p.needs_states = [(r.u64(), r.u32()) for _ in range(r.u32())]
        p.states = [(r.u64(), r.u32()) for _ in range(r.u32())]
        p.replaced = [r.text() for _ in range(r.u32())]
    if r.pos < len(data):  # a format 3 record written before callbacks ends here
        p.callbacks = [(r.text(), r.u64(), r.text()) for _ in range(r.u32())]
        p.callback_state = r.text()
    return p


# --- the registry -----------------------------------------------------------

@dataclass
class Registry:
    """All patch records of one process plus the generation of its mapping."""

    patches: List[PatchRecord] = field(default_factory=list)
    generation: int = 1

    def __deepcopy__(self, memo):
        # Plans work on copies; the generic deepcopy walked every bytes object of 1000 records
        # (tens of milliseconds inside the stop).  Records are copied, immutable fields shared.
        return Registry([PatchRecord(p.patch_build_id, p.target_build_id, p.target_name, p.target_load_bias,
                                     p.patch_load_base, [MappedRange(r.start, r.length, r.prot) for r in p.ranges],
                                     p.patch_path, p.state,
                                     [FunctionRecord(f.name, f.entry, f.jump, f.original, f.below)
                                      for f in p.functions], list(p.needs), list(p.needs_states), list(p.states),
                                     list(p.replaced), list(p.callbacks), p.callback_state)
                         for p in self.patches], self.generation)

    # encoding

    def encode_payload(self) -> bytes:
        """The records alone (what a registry slot holds after its header)."""
        w = _Writer()
        w.u32(len(self.patches))
        for p in self.patches:
            w.blob(_encode_patch(p))
        return w.getvalue()

    @classmethod
    def decode_payload(cls, payload: bytes, generation: int) -> "Registry":
        r = _Reader(payload, "payload")
        reg = cls(generation=generation)
        for i in range(r.u32()):
            reg.patches.append(_decode_patch(r.blob(), i))
        return reg

    def encode(self) -> bytes:
        """Format 1 (one header + payload, rewritten in place): kept to read and migrate old registries."""
        payload = self.encode_payload()
        header = _HEADER.pack(MAGIC, FORMAT_VERSION, len(payload), 0, 0, self.generation)
        crc = zlib.crc32(header + payload) & 0xFFFFFFFF
        return _HEADER.pack(MAGIC, FORMAT_VERSION, len(payload), crc, 0, self.generation) + payload

    @staticmethod
    def peek_header(data: bytes) -> Optional[Tuple[int, int, int]]:
        """(version, payload length, generation) if ``data`` starts with our magic, else None (format 1)."""
        if len(data) < HEADER_SIZE or data[:8] != MAGIC:
            return None
        _, version, length, _, _, generation = _HEADER.unpack_from(data)
        return version, length, generation

    @classmethod
    def decode(cls, data: bytes, where: str = "registry") -> "Registry":
        """Parse and verify format 1; RegistryCorrupt (one line, naming ``where``) on any defect."""
        if len(data) < HEADER_SIZE:
            raise RegistryCorrupt("%s is shorter than its header (%d bytes)" % (where, len(data)))
        magic, version, length, crc, reserved, generation = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise RegistryCorrupt("%s has a bad magic number %r" % (where, magic))
        if version != FORMAT_VERSION:
            raise RegistryCorrupt("%s has format version %d; this tool reads version %d only"
                                  % (where, version, FORMAT_VERSION))
        if HEADER_SIZE + length > len(data):
            raise RegistryCorrupt("%s claims %d payload bytes but only %d are mapped"
                                  % (where, length, len(data) - HEADER_SIZE))
        payload = bytes(data[HEADER_SIZE:HEADER_SIZE + length])
        zeroed = _HEADER.pack(magic, version, length, 0, reserved, generation)
        actual = zlib.crc32(zeroed + payload) & 0xFFFFFFFF
        if actual != crc:
            raise RegistryCorrupt("%s fails its CRC check (stored %08x, computed %08x): read-only mode"
                                  % (where, crc, actual))
        return cls.decode_payload(payload, generation)

    # queries

    def patch(self, build_id: str) -> Optional[PatchRecord]:
        for p in self.patches:
            if p.patch_build_id == build_id:
                return p
        return None

    def active(self) -> List[PatchRecord]:
        return [p for p in self.patches if p.state == STATE_ACTIVE]

    def entries(self) -> List[int]:
        """Every function entry redirected by an active patch, sorted."""
        return sorted({f.entry for p in self.active() for f in p.functions})

    def stack(self, entry: int) -> List[Tuple[str, FunctionRecord]]:
        """Layers at ``entry``, bottom (just above the original) to top: (patch build-id, record)."""
        layers: Dict[str, FunctionRecord] = {}
        for p in self.active():
            f = p.function_at(entry)
            if f is not None:
                layers[p.patch_build_id] = f
        by_below = {}
        for bid, f in layers.items():
            if f.below in by_below:
                raise RegistryCorrupt("registry layer chain at 0x%x forks below %s"
                                      % (entry, f.below or "the original code"))
            by_below[f.below] = bid
        order = []
        cur = ""
        while cur in by_below:
            cur = by_below[cur]
            order.append((cur, layers[cur]))
        if len(order) != len(layers):
            raise RegistryCorrupt("registry layer chain at 0x%x is broken (%d of %d layers reachable)"
                                  % (entry, len(order), len(layers)))
        return order

    def top(self, entry: int) -> Optional[str]:
        """Build-id of the patch on top at ``entry``, or None when the original code is there."""
        s = self.stack(entry)
        return s[-1][0] if s else None

    def original_bytes(self, entry: int, length: int) -> Optional[bytes]:
        """The target's own bytes at ``entry`` as saved by any layer (None if not ``length`` long)."""
        best = b""
        for p in self.patches:
            f = p.function_at(entry)
            if f is not None and len(f.original) > len(best):
                best = f.original
        return best[:length] if len(best) >= length else None

    def expected_bytes(self, entry: int, length: int, original: Optional[bytes] = None) -> bytes:
        """What memory at [entry, entry+length) holds now: the original overlaid with the top jump."""
        saved = self.original_bytes(entry, length)
        base = saved if saved is not None else original
        if base is None or len(base) < length:
            raise LayerError("no saved original bytes for %d bytes at 0x%x" % (length, entry))
        s = self.stack(entry)
        if not s:
            return bytes(base[:length])
        jump = s[-1][1].jump
        n = min(len(jump), length)
        return bytes(jump[:n]) + bytes(base[n:length])

    # layer operations (callers execute the returned LayerWrite, then store the registry)

    def push_layer(self, patch_build_id: str, name: str, entry: int, jump: bytes,
                   original: bytes) -> LayerWrite:
        """Put ``patch_build_id``'s ``jump`` on top at ``entry``.

        The patch record must exist (state active).  ``original`` is the
        target's bytes at ``entry`` from the file, at least ``len(jump)`` long.
        """
        p = self.patch(patch_build_id)
        if p is None:
            raise LayerError("patch %s has no registry record" % patch_build_id)
        if p.function_at(entry) is not None:
            raise LayerError("patch %s already redirects 0x%x (%s)" % (patch_build_id, entry, name))
        if len(original) < len(jump):
            raise LayerError("saved original bytes at 0x%x are shorter than the jump" % entry)
        saved = self.original_bytes(entry, len(jump))
        if saved is not None and saved != bytes(original[:len(jump)]):
            raise LayerError("original bytes at 0x%x (%s) differ from those saved by another layer"
                             % (entry, name))
        below = self.top(entry) or ""
        length = max(len(jump), self._covered(entry))
        expected = self.expected_bytes(entry, length, original)
        p.functions.append(FunctionRecord(name, entry, bytes(jump), bytes(original), below))
        new = self.expected_bytes(entry, length, original)
        return LayerWrite(entry, expected, new)

    def pop_layer(self, patch_build_id: str, entry: int) -> LayerWrite:
        """Take ``patch_build_id``'s layer out at ``entry``, wherever it is in the stack."""
        p = self.patch(patch_build_id)
        f = p.function_at(entry) if p is not None else None
        if p is None or f is None or p.state != STATE_ACTIVE:
            raise LayerError("patch %s has no active layer at 0x%x" % (patch_build_id, entry))
        length = self._covered(entry)
        expected = self.expected_bytes(entry, length)
        original = self.original_bytes(entry, length)
        for _, g in self.stack(entry):
            if g.below == patch_build_id:
                g.below = f.below
        p.remove_function(f)
        new = self.expected_bytes(entry, length, original)
        return LayerWrite(entry, expected, new)

    def _covered(self, entry: int) -> int:
        """Bytes at ``entry`` touched by any active layer."""
        return max([len(f.jump) for _, f in self.stack(entry)] or [0])
