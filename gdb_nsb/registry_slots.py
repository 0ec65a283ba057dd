"""The registry mapping, format 3: two slots and one commit word (REFERENCE.md 2.6), pure.

The tool may die after any single write it makes into the target.  So an
update never rewrites the record in use: the new record goes into the other
slot, then one aligned 8-byte write of the commit sequence number makes it
current.  Killed before that write, the previous record is current; after
it, the new one.  The sequence number also tells a later call, in one 8-byte
read, whether the registry changed.

Layout of the mapping (little endian):

    superblock (32 bytes, offset 0)
      magic       8s   b"NSBREG\\0\\0" (as format 1)
      version     u32  3 (2: the same layout, records without the patch-series fields)
      slot_size   u32  bytes per slot, a multiple of 8
      seq         u64  the commit word: slot ``seq % 2`` is current; 0 = nothing committed yet
      generation  u64  grows with every move to a new mapping; the higher wins
    slot i at offset 32 + i * slot_size:
      crc32       u32  of the slot header (crc zeroed) + payload
      length      u32  payload bytes
      seq         u64  the commit that wrote this slot (must equal the commit word)
      generation  u64  as in the superblock
      reserved    u64  0
      payload          Registry.encode_payload()

A mapping still all zeros, or with seq 0, was created by a tool that died
before its first commit: it holds no registry (and is reused).  Format 1
mappings (``Registry.decode``) are read, and replaced by a format 3 mapping at
the next write; so are format 2 mappings, whose slots read as format 3 records
without the series fields.  Moving (rather than writing format 3 records into
a format 2 mapping) keeps an older tool from reading a new record as format 2:
it would skip the fields it does not know and drop them at its next write; it
finds a format 3 mapping, which it refuses (read-only) instead.
"""

import struct
import zlib
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

from gdb_nsb.errors import RegistryCorrupt
from gdb_nsb.registry import FORMAT_VERSION as FORMAT_1, HEADER_SIZE as HEADER_1, MAGIC, Registry

FORMAT_VERSION = 3
FORMAT_2 = 2  # read (the records lack the series fields) and moved to format 3 at the next write
_SUPER = struct.Struct("<8sIIQQ")
SUPER_SIZE = _SUPER.size  # 32
SEQ_OFFSET = 16
_SLOT = struct.Struct("<IIQQQ")
SLOT_HEADER = _SLOT.size  # 32
_MIN_SLOT = 1024


@dataclass
class Found:
    """What one registry mapping holds.

    ``registry`` is None when nothing was committed yet.  ``slot`` is the slot
    it was read from (-1: none); ``note`` says why the committed slot was not
    usable when the previous one was read instead.
    """

    registry: Optional[Registry]
    version: int
    generation: int
    seq: int = 0
    slot: int = -1
    slot_size: int = 0
    note: str = ""

    @property
    def formatted(self) -> bool:
        """The superblock is written (a format 2 mapping whose slots can be filled)."""
        return self.version == FORMAT_VERSION and self.slot_size > 0


def slot_size_for(mapping_size: int) -> int:
    return (mapping_size - SUPER_SIZE) // 2 // 8 * 8


def slot_offset(index: int, slot_size: int) -> int:
    return SUPER_SIZE + index * slot_size


def capacity(slot_size: int) -> int:
    """Payload bytes one slot holds."""
    return slot_size - SLOT_HEADER


def mapping_size_for(payload_len: int, page: int = 4096) -> int:
    """A mapping whose slots hold twice ``payload_len`` (room to grow before the next move)."""
    slot = max(_MIN_SLOT, 2 * (SLOT_HEADER + payload_len))
    slot = (slot + 7) // 8 * 8
    return (SUPER_SIZE + 2 * slot + page - 1) // page * page


def superblock(slot_size: int, generation: int, seq: int = 0) -> bytes:
    return _SUPER.pack(MAGIC, FORMAT_VERSION, slot_size, seq, generation)


def commit_word(seq: int) -> bytes:
    return struct.pack("<Q", seq)


def slot_bytes(payload: bytes, seq: int, generation: int) -> bytes:
    crc = zlib.crc32(_SLOT.pack(0, len(payload), seq, generation, 0) + payload) & 0xFFFFFFFF
    return _SLOT.pack(crc, len(payload), seq, generation, 0) + payload


def next_seq(seq: int, read_slot: int) -> int:
    """The commit after ``seq``, chosen so that it writes the slot the registry was NOT read from."""
    n = seq + 1
    return n + 1 if n % 2 == read_slot else n


def commit_writes(found: Found, registry: Registry, mapping_size: int) -> Optional[List[Tuple[int, bytes, str]]]:
    """The writes (offset, bytes, what) that store ``registry`` in this mapping, the commit word last;
    None when it does not fit (or the mapping is format 1): the caller moves to a new mapping."""
    payload = registry.encode_payload()
    if found.version != FORMAT_VERSION:
        return None
    slot_size = found.slot_size or slot_size_for(mapping_size)
    if slot_size < _MIN_SLOT or len(payload) > capacity(slot_size):
        return None
    out = []
    generation = found.generation if found.formatted else registry.generation
    if not found.formatted:
        out.append((0, superblock(slot_size, generation), "registry superblock"))
    seq = next_seq(found.seq, found.slot)
    out.append((slot_offset(seq % 2, slot_size), slot_bytes(payload, seq, generation),
                "registry slot %d (commit %d)" % (seq % 2, seq)))
    out.append((SEQ_OFFSET, commit_word(seq), "registry commit %d" % seq))
    return out


def after_commit(found: Found, registry: Registry, mapping_size: int) -> Found:
    """The Found that describes the mapping once ``commit_writes`` were made."""
    slot_size = found.slot_size or slot_size_for(mapping_size)
    generation = found.generation if found.formatted else registry.generation
    seq = next_seq(found.seq, found.slot)
    return Found(registry, FORMAT_VERSION, generation, seq, seq % 2, slot_size)


def _read_slot(read, index, slot_size, generation, where):
    off = slot_offset(index, slot_size)
    head = read(off, SLOT_HEADER)
    crc, length, seq, gen, reserved = _SLOT.unpack_from(head)
    name = "%s slot %d" % (where, index)
    if length > capacity(slot_size):
        raise RegistryCorrupt("%s claims %d payload bytes but holds %d" % (name, length, capacity(slot_size)))
    payload = read(off + SLOT_HEADER, length) if length else b""
    actual = zlib.crc32(_SLOT.pack(0, length, seq, gen, reserved) + payload) & 0xFFFFFFFF
    if actual != crc:
        raise RegistryCorrupt("%s fails its CRC check (stored %08x, computed %08x)" % (name, crc, actual))
    if gen != generation:
        raise RegistryCorrupt("%s has generation %d, its mapping %d" % (name, gen, generation))
    return Registry.decode_payload(payload, generation), seq


def decode(read: Callable[[int, int], bytes], size: int, where: str = "registry") -> Found:
    """Read one registry mapping of ``size`` bytes through ``read(offset, length)``.

    RegistryCorrupt (one line) when it holds no valid record: a bad superblock,
    or no slot both valid and committed."""
    if size < SUPER_SIZE:
        raise RegistryCorrupt("%s is shorter than its header (%d bytes)" % (where, size))
    head = bytes(read(0, SUPER_SIZE))
    if head == bytes(SUPER_SIZE):
        return Found(None, FORMAT_VERSION, 0)  # created, never written: a tool died at once
    magic, version, slot_size, seq, generation = _SUPER.unpack(head)
    if magic != MAGIC:
        raise RegistryCorrupt("%s has a bad magic number %r: read-only mode" % (where, magic))
    if version == FORMAT_1:
        peeked = Registry.peek_header(head)
        if peeked is None:
            raise RegistryCorrupt("%s has a format 1 header that cannot be read: read-only mode" % where)
        length = peeked[1]
        reg = Registry.decode(bytes(read(0, min(size, HEADER_1 + length))), where)
        return Found(reg, FORMAT_1, reg.generation)
    if version not in (FORMAT_2, FORMAT_VERSION):
        raise RegistryCorrupt("%s has format version %d; this tool reads versions %d to %d: read-only mode"
                              % (where, version, FORMAT_1, FORMAT_VERSION))
    if slot_size < _MIN_SLOT or slot_size % 8 or SUPER_SIZE + 2 * slot_size > size:
        raise RegistryCorrupt("%s has a bad slot size %d for %d bytes: read-only mode" % (where, slot_size, size))
    if seq == 0:
        return Found(None, version, generation, 0, -1, slot_size)
    problems = []
    for index, current in ((seq % 2, True), (1 - seq % 2, False)):
        try:
            reg, got = _read_slot(read, index, slot_size, generation, where)
        except RegistryCorrupt as e:
            problems.append(str(e))
            continue
        if current and got != seq:
            problems.append("%s slot %d holds commit %d, the commit word says %d" % (where, index, got, seq))
            continue
        if not current and got >= seq:
            problems.append("%s slot %d holds commit %d, newer than the commit word %d" % (where, index, got, seq))
            continue
        return Found(reg, version, generation, seq, index, slot_size, "; ".join(problems))
    raise RegistryCorrupt("%s has no valid slot (%s): read-only mode" % (where, "; ".join(problems)))
