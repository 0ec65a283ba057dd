"""Does anything still point into a range?  Asked before a patch's memory is unmapped.

A register of any thread, or an aligned 64-bit word in any writable mapping,
holding an address inside the patch means code may still return or call
into it: unmapping then would crash the process later.  A thread's stack
below its stack pointer (past the ABI's 128-byte red zone) is dead memory:
stale return addresses of calls that already returned lie there, and
counting them kept every recently called patch mapped for no reason.
"""

import struct

from gdb_nsb import errors

CHUNK = 1 << 20
RED_ZONE = 128  # x86-64 SysV: the bytes below the stack pointer a leaf function may still use


def find_pointer_into(registers, mappings, memory, lo, hi, exclude=(), holes=()):
    """First register or writable word holding an address in [lo, hi), as a description; None if none.

    ``registers``: (thread number, {register name: value}) per thread, read
    lazily (an iterator stops at the first hit); ``mappings``: the process's
    ``Mapping`` list; ``memory``: a MemoryReader; ``exclude``: (start, length)
    of mappings not to scan (the patch itself, the registry); ``holes``: [lo, hi)
    ranges inside the patch that no pointer can mean (a replaced patch's copies of
    the functions it redirected: the program only ever holds the target's
    address of those, and a stale return address into one is dead once the safe
    point found no thread inside).  A writable
    mapping that cannot be read could hold such a word: BusyError naming it
    (the caller refuses the unmap)."""
    holes = sorted(holes)

    def inside(v):
        return lo <= v < hi and not any(a <= v < b for a, b in holes)

    sps = []
    for num, regs in registers:
        for name, value in regs.items():
            if isinstance(value, int) and inside(value):
                return "register %s of thread %d (%#x)" % (name, num, value)
        sp = regs.get("rsp") if hasattr(regs, "get") else None
        if isinstance(sp, int):
            sps.append(sp)
    high = struct.pack("<I", lo >> 32)
    same_high = (lo >> 32) == ((hi - 1) >> 32)
    for m in mappings:
        if not m.writable or any(a <= m.start < a + n for a, n in exclude):
            continue
        live_from = min([sp - RED_ZONE for sp in sps if m.start <= sp < m.end] or [m.start])
        pos = max(m.start, live_from) // 8 * 8
        while pos < m.end:
            size = min(CHUNK, m.end - pos)
            try:
                data = memory.read(pos, size)
            except (errors.NsbError, OSError) as e:
                raise errors.BusyError("the writable mapping %#x-%#x (%s) cannot be read at %#x, so it cannot be "
                                       "checked for pointers into the patch (%s)"
                                       % (m.start, m.end, m.objfile or "anonymous memory", pos, e)) from None
            if same_high:
                # Fast path: find the high half of the address, then check the aligned word around it.
                i = data.find(high, 4)
                while i != -1:
                    if (i - 4) % 8 == 0:
                        v = struct.unpack_from("<Q", data, i - 4)[0]
                        if inside(v):
                            return "the word at %#x (%s, %#x)" % (pos + i - 4, m.objfile or "anonymous memory", v)
                    i = data.find(high, i + 1)
            else:
                for off in range(0, len(data) - 7, 8):
                    v = struct.unpack_from("<Q", data, off)[0]
                    if inside(v):
                        return "the word at %#x (%s, %#x)" % (pos + off, m.objfile or "anonymous memory", v)
            pos += size
    return None
