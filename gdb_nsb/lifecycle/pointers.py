"""Does anything still point into a range?  Asked before a patch's memory is unmapped.

A register of any thread, or an aligned 64-bit word in any writable mapping,
holding an address inside the patch means code may still return or call
into it: unmapping then would crash the process later.
"""

import struct

from gdb_nsb import errors

CHUNK = 1 << 20


def find_pointer_into(registers, mappings, memory, lo, hi, exclude=()):
    """First register or writable word holding an address in [lo, hi), as a description; None if none.

    ``registers``: (thread number, {register name: value}) per thread, read
    lazily (an iterator stops at the first hit); ``mappings``: the process's
    ``Mapping`` list; ``memory``: a MemoryReader; ``exclude``: (start, length)
    of mappings not to scan (the patch itself, the registry).  A writable
    mapping that cannot be read could hold such a word: BusyError naming it
    (the caller refuses the unmap)."""
    for num, regs in registers:
        for name, value in regs.items():
            if isinstance(value, int) and lo <= value < hi:
                return "register %s of thread %d (%#x)" % (name, num, value)
    high = struct.pack("<I", lo >> 32)
    same_high = (lo >> 32) == ((hi - 1) >> 32)
    for m in mappings:
        if not m.writable or any(a <= m.start < a + n for a, n in exclude):
            continue
        pos = m.start
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
                        if lo <= v < hi:
                            return "the word at %#x (%s)" % (pos + i - 4, m.objfile or "anonymous memory")
                    i = data.find(high, i + 1)
            else:
                for off in range(0, len(data) - 7, 8):
                    v = struct.unpack_from("<Q", data, off)[0]
                    if lo <= v < hi:
                        return "the word at %#x (%s)" % (pos + off, m.objfile or "anonymous memory")
            pos += size
    return None
