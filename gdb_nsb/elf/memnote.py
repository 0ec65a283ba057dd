"""The GNU build-id of an ELF object as mapped in a process, read through a memory reader.

A remote target's file paths name files in another filesystem (a mount
namespace, another machine): a local file of the same name proves nothing.
The build-id note lies in the object's first PT_LOAD, so reading it from the
process's memory identifies the running build without any file.
"""

import struct

from gdb_nsb.elf import headers
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
        h = headers.parse_file_header(read(base, headers.EHDR.size), "memory at %#x" % base)
        if h.phentsize < headers.PHDR.size or not 0 < h.phnum <= _MAX_PHNUM:
            return None
        phdrs = headers.program_headers(read(base + h.phoff, h.phentsize * h.phnum), h.phnum, h.phentsize)
        loads = [(p.offset, p.vaddr) for p in phdrs if p.type == PT_LOAD]
        notes = [(p.vaddr, p.filesz) for p in phdrs if p.type == PT_NOTE]
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
