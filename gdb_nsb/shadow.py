"""The shadow region of a process: where patches keep shadow variables (pure: no gdb).

A shadow variable is data a patch attaches to an existing object, found again
by (object address, id) (``vzp.h`` -> ``vzp_shadow.h``, modelled on the
kernel's klp_shadow_*).  Patches define no writable data, so the variables
live in one region per process that the tool maps (``process/shadow_store``:
a memfd named ``nsb-shadow``, MAP_PRIVATE, read-write) and that outlives every
patch: reverts and replaces leave it alone; a patch frees its variables
itself (``vzp_shadow_free_all`` in its post-unpatch callback).

The tool writes only the header, once, when it creates the region; the C code
in the patch does the rest under the region's lock.  This module is the
tool's side of that layout (``vzp_shadow.h`` is the other): the header bytes,
where the region is in a memory map, and reading the variables back (for
``list`` and the tests).

Layout (little endian, offsets from the region's start):

    header (256 bytes)
      magic        u64   MAGIC
      size         u64   region bytes
      lock         u32   0 free, 1 held (the patches' spin lock)
      bucket_bits  u32   the table has 1 << bucket_bits buckets
      buckets      u64   offset of the bucket table (u64 block offsets, 0 = empty)
      heap         u64   offset of the first block
      top          u64   offset of the first never-used byte
      live         u64   variables allocated now
      free_lists   24 x u64   first free block of class k (16 << k data bytes)
    bucket table, then blocks:
      next u64 (bucket chain or free list), obj u64, id u64, cls u32, size u32, data (16-byte aligned)
"""

import struct
from dataclasses import dataclass
from typing import Callable, List, Optional

from gdb_nsb import mappings as _mappings

SHADOW_NAME = "nsb-shadow"
SHADOW_OBJFILE = "/memfd:" + SHADOW_NAME
#: The undefined symbol through which a patch reaches the region (bound by the binder).
SHADOW_SYMBOL = "__vzp_shadow_region"
MAGIC = 0x3157444853425350  # b"PSBSHDW1"
CLASSES = 24
_HEADER = struct.Struct("<QQIIQQQQ%dQ" % CLASSES)
HEADER_SIZE = 256
_BLOCK = struct.Struct("<QQQII")
BLOCK_HEADER = _BLOCK.size  # 32

DEFAULT_SIZE = 16 << 20     # virtual: pages are materialised only as variables use them
DEFAULT_BUCKET_BITS = 14

assert _HEADER.size <= HEADER_SIZE


@dataclass(frozen=True)
class Layout:
    """Where the parts of a region of ``size`` bytes go."""

    size: int
    bucket_bits: int

    @property
    def buckets(self) -> int:
        return HEADER_SIZE

    @property
    def heap(self) -> int:
        return (self.buckets + 8 * (1 << self.bucket_bits) + 15) // 16 * 16

    def header(self) -> bytes:
        """The bytes the tool writes when it creates the region (everything after them is zero)."""
        raw = _HEADER.pack(MAGIC, self.size, 0, self.bucket_bits, self.buckets, self.heap, self.heap, 0,
                           *([0] * CLASSES))
        return raw + bytes(HEADER_SIZE - len(raw))


def layout(size: int = DEFAULT_SIZE, bucket_bits: int = DEFAULT_BUCKET_BITS) -> Layout:
    """The layout of a new region; ValueError when the table leaves no room for variables."""
    lay = Layout(size, bucket_bits)
    if size % 4096 or lay.heap + 4096 > size:
        raise ValueError("a shadow region of %d bytes cannot hold %d buckets" % (size, 1 << bucket_bits))
    return lay


def region_in(mappings) -> Optional[tuple]:
    """(start, size) of the process's shadow region in ``mappings`` (gdb_nsb.mappings.Mapping), or None.

    One region per process: should a memory map show several (nothing makes
    one), the first is the one patches are bound to."""
    runs = _mappings.contiguous_runs(mappings, SHADOW_OBJFILE)
    return runs[0] if runs else None


@dataclass(frozen=True)
class Variable:
    obj: int
    id: int
    size: int
    data_addr: int


@dataclass(frozen=True)
class Header:
    magic: int
    size: int
    lock: int
    bucket_bits: int
    buckets: int
    heap: int
    top: int
    live: int

    @property
    def valid(self) -> bool:
        return self.magic == MAGIC and self.heap <= self.top <= self.size


def read_header(read: Callable[[int, int], bytes], start: int) -> Header:
    raw = read(start, _HEADER.size)
    return Header(*_HEADER.unpack(raw)[:8])


def variables(read: Callable[[int, int], bytes], start: int, max_count: int = 1 << 20) -> List[Variable]:
    """Every live variable of the region at ``start``, walking the bucket table (read while the process is
    stopped: the table is only consistent when no thread is inside a shadow call)."""
    h = read_header(read, start)
    if not h.valid:
        raise ValueError("no shadow region header at %#x" % start)
    table = read(start + h.buckets, 8 << h.bucket_bits)
    out: List[Variable] = []
    for (off,) in struct.iter_unpack("<Q", table):
        seen = 0
        while off:
            if not h.heap <= off < h.top or seen > max_count:
                raise ValueError("shadow bucket chain leaves the heap at offset %#x" % off)
            nxt, obj, vid, _cls, size = _BLOCK.unpack(read(start + off, BLOCK_HEADER))
            out.append(Variable(obj, vid, size, start + off + BLOCK_HEADER))
            off, seen = nxt, seen + 1
    return out
