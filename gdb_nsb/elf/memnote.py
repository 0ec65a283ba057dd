"""The GNU build-id of an ELF object as mapped in a process, read through a memory reader.

A remote target's file paths name files in another filesystem (a mount
namespace, another machine): a local file of the same name proves nothing.
The build-id note lies in the object's first PT_LOAD, so reading it from the
process's memory identifies the running build without any file.
"""

import struct

from gdb_nsb.elf.notes import gnu_build_id
from gdb_nsb import errors

PT_LOAD, PT_NOTE = 1, 4
PAGE = 0x1000
_MAX_PHNUM = 256
_MAX_NOTES = 1 << 16


def build_id_in_memory(read, base):
    """Lowercase hex build-id of the object whose offset-0 page is mapped at ``base``, or None.

    ``read(addr, size) -> bytes`` may raise; any unreadable or malformed header gives None.
    """
    try:
        ehdr = read(base, 64)
        if len(ehdr) < 64 or ehdr[:4] != b"\x7fELF" or ehdr[4] != 2 or ehdr[5] != 1:
            return None
        phoff, = struct.unpack_from("<Q", ehdr, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", ehdr, 0x36)
        if phentsize < 56 or not 0 < phnum <= _MAX_PHNUM:
            return None
        phdrs = read(base + phoff, phentsize * phnum)
        loads, notes = [], []
        for i in range(phnum):
            p_type, _, p_offset, p_vaddr, _, p_filesz, _, _ = struct.unpack_from("<IIQQQQQQ", phdrs, i * phentsize)
            if p_type == PT_LOAD:
                loads.append((p_offset, p_vaddr))
            elif p_type == PT_NOTE:
                notes.append((p_vaddr, p_filesz))
        first = next((v for off, v in sorted(loads) if off < PAGE), None)
        if first is None:
            return None
        bias = base - (first & ~(PAGE - 1))
        for vaddr, size in notes:
            if not 0 < size <= _MAX_NOTES:
                continue
            data = read(bias + vaddr, size)
            bid = _gnu_build_id(data)
            if bid is not None:
                return bid
    except (errors.NsbError, struct.error, OSError, ValueError):  # unreadable or short: unknown, never wrong
        return None
    return None


def _gnu_build_id(data):
    return gnu_build_id(data)
