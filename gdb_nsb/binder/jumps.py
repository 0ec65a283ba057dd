"""Entry jumps: encode the redirect written over a function's entry, and decode it back.

Two forms, neither touches a register:
  * ``E9 rel32``                       (5 bytes) when the destination is within +-2 GiB;
  * ``FF 25 00 00 00 00`` + imm64      (14 bytes: ``jmp *0(%rip)`` reading the next 8 bytes).
An entry starting with ``endbr64`` keeps it (indirect calls through function
pointers land there under CET) and the jump goes right after it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from gdb_nsb.binder.errors import FunctionTooShort

ENDBR64 = bytes.fromhex("f30f1efa")
JMP_REL32 = b"\xe9"
JMP_ABS_PREFIX = bytes.fromhex("ff2500000000")
REL32_LEN = 5
ABS_LEN = 14
MAX_JUMP_LEN = len(ENDBR64) + ABS_LEN

KIND_REL32 = "rel32"
KIND_ABS = "abs64"


def rel32_reaches(src_next: int, dest: int) -> bool:
    """True when ``dest - src_next`` fits a signed 32-bit displacement."""
    return -(1 << 31) <= dest - src_next < (1 << 31)


@dataclass(frozen=True)
class JumpEncoding:
    """A jump written at ``at`` (the entry, or entry+4 after endbr64) to ``dest``."""

    entry: int
    at: int
    dest: int
    kind: str
    code: bytes

    @property
    def length(self) -> int:
        return len(self.code)

    @property
    def end(self) -> int:
        return self.at + len(self.code)

    @property
    def keeps_endbr(self) -> bool:
        return self.at != self.entry

    def describe(self) -> str:
        return "%s jump at %#x -> %#x (%d bytes%s)" % (
            self.kind, self.at, self.dest, self.length, ", after endbr64" if self.keeps_endbr else "")


def encode_jump(name: str, entry: int, dest: int, func_size: int, entry_bytes: bytes,
                allow_rel32: bool = True) -> JumpEncoding:
    """The jump redirecting function ``name`` at runtime ``entry`` to ``dest``.

    ``entry_bytes`` are the function's original first bytes (at least 4, to
    see an endbr64).  Raises FunctionTooShort (naming the function and sizes)
    when the function cannot hold the jump.
    """
    at = entry + len(ENDBR64) if entry_bytes[:4] == ENDBR64 else entry
    if allow_rel32 and rel32_reaches(at + REL32_LEN, dest):
        code = JMP_REL32 + struct.pack("<i", dest - (at + REL32_LEN))
        kind = KIND_REL32
    else:
        code = JMP_ABS_PREFIX + struct.pack("<Q", dest & 0xFFFFFFFFFFFFFFFF)
        kind = KIND_ABS
    need = at - entry + len(code)
    if need > func_size:
        raise FunctionTooShort("function %s is %d bytes, too short for the %d-byte %s jump%s"
                               % (name, func_size, need, kind, " after endbr64" if at != entry else ""))
    return JumpEncoding(entry, at, dest, kind, code)


def decode_jump(entry: int, data: bytes) -> JumpEncoding | None:
    """Recognise one of our jumps in ``data`` read at ``entry``; None if it is not one.

    ``data`` should hold at least MAX_JUMP_LEN bytes (fewer only decode the
    forms that fit).
    """
    at, body = entry, data
    if body[:4] == ENDBR64:
        at, body = entry + 4, body[4:]
    if body[:1] == JMP_REL32 and len(body) >= REL32_LEN:
        disp = struct.unpack_from("<i", body, 1)[0]
        return JumpEncoding(entry, at, at + REL32_LEN + disp, KIND_REL32, bytes(body[:REL32_LEN]))
    if body[:6] == JMP_ABS_PREFIX and len(body) >= ABS_LEN:
        dest = struct.unpack_from("<Q", body, 6)[0]
        return JumpEncoding(entry, at, dest, KIND_ABS, bytes(body[:ABS_LEN]))
    return None
