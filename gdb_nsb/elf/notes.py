"""ELF note parsing shared by the file reader, the in-memory reader and the codec."""

import struct

NT_GNU_BUILD_ID = 3


def gnu_build_id(data, start=0, end=None):
    """Lowercase hex of the first NT_GNU_BUILD_ID note in ``data[start:end]``, or None.

    A note running past ``end`` ends the walk (a truncated or corrupt note
    area never yields a build-id)."""
    end = len(data) if end is None else min(end, len(data))
    pos = start
    while pos + 12 <= end:
        namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
        name_at = pos + 12
        desc_at = name_at + ((namesz + 3) & ~3)
        if desc_at + descsz > end:
            return None
        if ntype == NT_GNU_BUILD_ID and descsz and bytes(data[name_at:name_at + namesz]).rstrip(b"\0") == b"GNU":
            return bytes(data[desc_at:desc_at + descsz]).hex()
        pos = desc_at + ((descsz + 3) & ~3)
    return None
