"""Apply a patch's dynamic relocations and code fix-ups to its segment images.

The patch is never loaded by the dynamic linker, so the binder does its
job: the segments' bytes are built here at the patch's chosen load bias and
written into the process by the executor.  Only the relocation types a
position-independent patch needs are applied; anything else (TLS, COPY,
IRELATIVE ...) is refused by name, because getting it half right would
corrupt the process silently.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Callable

from gdb_nsb.binder.errors import BadRelocation, OutOfReach, UnsupportedRelocation
from gdb_nsb.binder.process_view import PAGE_SIZE, page_down, page_up

R_X86_64_NONE = 0
R_X86_64_64 = 1
R_X86_64_GLOB_DAT = 6
R_X86_64_JUMP_SLOT = 7
R_X86_64_RELATIVE = 8

SUPPORTED = {R_X86_64_NONE: "R_X86_64_NONE", R_X86_64_64: "R_X86_64_64", R_X86_64_GLOB_DAT: "R_X86_64_GLOB_DAT",
             R_X86_64_JUMP_SLOT: "R_X86_64_JUMP_SLOT", R_X86_64_RELATIVE: "R_X86_64_RELATIVE"}

PF_X, PF_W, PF_R = 1, 2, 4
PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4


@dataclass
class SegmentImage:
    """The bytes of one PT_LOAD segment of the patch at its runtime address.

    ``vaddr``/``memsz`` are link-time; ``data`` is memsz bytes (.bss zeroed)
    with every relocation applied.  ``prot`` is the final protection: the
    segment's R and X, never W (the debugger writes through read-only pages,
    and a patch may not hold writable state).
    """

    vaddr: int
    memsz: int
    flags: int
    data: bytearray
    bias: int

    @property
    def start(self) -> int:
        return self.bias + self.vaddr

    @property
    def end(self) -> int:
        return self.start + self.memsz

    @property
    def prot(self) -> int:
        return (PROT_READ if self.flags & PF_R else 0) | (PROT_EXEC if self.flags & PF_X else 0)

    @property
    def page_start(self) -> int:
        return page_down(self.start)

    @property
    def page_end(self) -> int:
        return page_up(self.end)

    def covers(self, vaddr: int, size: int) -> bool:
        return self.vaddr <= vaddr and vaddr + size <= self.vaddr + self.memsz

    def put(self, vaddr: int, raw: bytes):
        off = vaddr - self.vaddr
        self.data[off:off + len(raw)] = raw


@dataclass
class AppliedRelocation:
    """What was written where, for --dry-run and for tests."""

    offset: int
    type_name: str
    symbol: str | None
    value: int


@dataclass
class RelocatedPatch:
    """The patch's segment images at load bias ``bias``."""

    bias: int
    segments: list[SegmentImage]
    applied: list[AppliedRelocation] = field(default_factory=list)

    def segment_for(self, vaddr: int, size: int) -> SegmentImage | None:
        return next((s for s in self.segments if s.covers(vaddr, size)), None)

    def read(self, vaddr: int, size: int) -> bytes:
        s = self.segment_for(vaddr, size)
        if s is None:
            raise BadRelocation("link-time address %#x+%d is outside the patch's segments" % (vaddr, size))
        off = vaddr - s.vaddr
        return bytes(s.data[off:off + size])


def segment_images(patch_image, bias: int) -> list[SegmentImage]:
    """The patch's PT_LOAD segments as file bytes (zero-filled past filesz)."""
    out = []
    for s in patch_image.segments:
        data = bytearray(patch_image.read_vaddr(s.vaddr, s.memsz)) if s.memsz else bytearray()
        out.append(SegmentImage(s.vaddr, s.memsz, s.flags, data, bias))
    return out


def check_relocation_types(patch_image):
    """Refuse, by name, the first relocation type the binder does not apply."""
    for r in patch_image.relocations:
        if r.type not in SUPPORTED:
            what = (" against %s" % r.symbol) if r.symbol else ""
            raise UnsupportedRelocation("%s: relocation %s%s at %#x is not supported in a live patch"
                                        % (patch_image.path, r.type_name, what, r.offset))


def relocate(patch_image, bias: int, resolve: Callable[[object], int]) -> RelocatedPatch:
    """Build the patch's segment images at ``bias`` with all dynamic relocations applied.

    ``resolve(relocation)`` returns S, the runtime address of the
    relocation's symbol (called only for relocations with a symbol).
    """
    check_relocation_types(patch_image)
    out = RelocatedPatch(bias, segment_images(patch_image, bias))
    for r in patch_image.relocations:
        if r.type == R_X86_64_NONE:
            continue  # a no-op by definition
        seg = out.segment_for(r.offset, 8)
        if seg is None:
            raise BadRelocation("%s: %s at %#x writes outside the patch's loaded segments"
                                % (patch_image.path, r.type_name, r.offset))
        if r.type == R_X86_64_RELATIVE:
            value = bias + r.addend
        else:
            s = resolve(r) if r.sym_index else 0
            value = s + r.addend if r.type == R_X86_64_64 else s
        value &= 0xFFFFFFFFFFFFFFFF
        seg.put(r.offset, struct.pack("<Q", value))
        out.applied.append(AppliedRelocation(r.offset, r.type_name, r.symbol, value))
    return out


def apply_static_fixups(relocated: RelocatedPatch, static_symbols, target_bias: int, patch_path: str = "patch"):
    """Auto mode's displacement fix-ups: the field gets target_value + bias(target) - bias(patch).

    A 4-byte field whose value does not fit a signed 32-bit integer means the
    patch was placed out of reach: refused (the planner prevents it).
    """
    for st in static_symbols:
        size = st.patch_size
        if size not in (4, 8):
            raise BadRelocation("%s: static fix-up at %#x has size %d (only 4 or 8)"
                                % (patch_path, st.patch_address, size))
        seg = relocated.segment_for(st.patch_address, size)
        if seg is None:
            raise BadRelocation("%s: static fix-up at %#x+%d lies outside the patch's segments"
                                % (patch_path, st.patch_address, size))
        # target_value is stored as uint64; wrap the sum as the signed 64-bit value it is.
        value = ((st.target_value + target_bias - relocated.bias + (1 << 63)) & 0xFFFFFFFFFFFFFFFF) - (1 << 63)
        if size == 4:
            if not -(1 << 31) <= value < (1 << 31):
                raise OutOfReach("%s: 4-byte fix-up at %#x needs %#x, out of +-2 GiB reach"
                                 % (patch_path, st.patch_address, value))
            raw = struct.pack("<i", value)
        else:
            raw = struct.pack("<Q", value & 0xFFFFFFFFFFFFFFFF)
        seg.put(st.patch_address, raw)
        relocated.applied.append(AppliedRelocation(st.patch_address, "static fix-up (%d)" % size, None,
                                                   value & 0xFFFFFFFFFFFFFFFF))
    return relocated


__all__ = ["SegmentImage", "RelocatedPatch", "AppliedRelocation", "relocate", "apply_static_fixups",
           "check_relocation_types", "segment_images", "PAGE_SIZE"]
