"""Broken live patches made from a good one (nothing binary is committed).

``make(good_patch, target, out_dir)`` writes one file per case and returns
[(case, path, exit code, message fragment)].  Every case must be refused by
``nsb patch`` with one clear line: exactly that exit code, a message holding
that fragment (the cause named), the target untouched.
"""

import os
import shutil
import struct

from gdb_nsb.elf import sections, vzpatch_pb2
from gdb_nsb.elf.livepatch import build_id_of

PATCH_FILE = 9      # missing, not ELF, corrupt vzpatch
MISMATCH = 4        # build-id, entry bytes
UNSUPPORTED = 13    # relocation type, function too short, unknown required feature


def _copy(good, out_dir, name):
    path = os.path.join(out_dir, name + ".so")
    shutil.copyfile(good, path)
    return path


def _edit_bytes(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _message(path):
    return vzpatch_pb2.BinPatch.FromString(sections.read_section(path, "vzpatch"))


def _put_message(path, msg):
    sections.write_section(path, "vzpatch", msg.SerializeToString())


def _section(path, name):
    """(file offset, size, entsize) of section ``name``."""
    from elftools.elf.elffile import ELFFile
    with open(path, "rb") as f:
        s = ELFFile(f).get_section_by_name(name)
        return s["sh_offset"], s["sh_size"], s["sh_entsize"]


def _rela(path):
    """File offset of the first RELA entry of .rela.dyn and its decoded (r_offset, type, sym, addend)."""
    off, size, ent = _section(path, ".rela.dyn")
    with open(path, "rb") as f:
        f.seek(off)
        r_offset, r_info, addend = struct.unpack("<QQq", f.read(24))
    return off, r_offset, r_info & 0xFFFFFFFF, r_info >> 32, addend


def _set_build_id(path, bid_hex):
    off, size, _ = _section(path, ".note.gnu.build-id")
    with open(path, "rb") as f:
        f.seek(off)
        namesz, descsz, _ = struct.unpack("<III", f.read(12))
    desc = off + 12 + ((namesz + 3) & ~3)
    new = bytes.fromhex(bid_hex)
    assert len(new) == descsz, "build-ids of different lengths"
    _edit_bytes(path, desc, new)


def make(good, target, out_dir):
    """Write the corpus; returns [(case, path, exit code, message fragment)]."""
    cases = []

    def add(name, code, fragment):
        path = _copy(good, out_dir, name)
        cases.append((name, path, code, fragment))
        return path

    data = open(good, "rb").read()
    # --- the ELF container
    with open(add("empty-file", PATCH_FILE, "not an ELF file"), "wb"):
        pass
    with open(add("truncated-elf-header", PATCH_FILE, "truncated ELF header (40 bytes)"), "wb") as f:
        f.write(data[:40])
    with open(add("truncated-elf-half", PATCH_FILE, "truncated ELF file"), "wb") as f:
        f.write(data[:len(data) // 2])
    with open(add("not-elf", PATCH_FILE, "not an ELF file"), "wb") as f:
        f.write(b"#!/bin/sh\necho hello\n" * 50)
    _edit_bytes(add("wrong-machine", PATCH_FILE, "wrong machine EM_AARCH64"), 18, struct.pack("<H", 183))  # EM_AARCH64
    _edit_bytes(add("elf32-class", PATCH_FILE, "32-bit ELF"), 4, b"\x01")
    _edit_bytes(add("big-endian", PATCH_FILE, "big-endian ELF"), 5, b"\x02")
    _edit_bytes(add("huge-phnum", PATCH_FILE, "program headers past end of file"), 56, struct.pack("<H", 0xFFFF))
    _edit_bytes(add("huge-shoff", PATCH_FILE, "section header table past end of file"), 40, struct.pack("<Q", 1 << 60))
    # --- the vzpatch section
    raw = sections.read_section(good, "vzpatch")
    sections.write_section(add("vzpatch-garbage", PATCH_FILE, "not a BinPatch protobuf"), "vzpatch",
                           bytes((i * 151 + 17) & 0xFF for i in range(len(raw))))
    sections.write_section(add("vzpatch-truncated", PATCH_FILE, "not a BinPatch protobuf"), "vzpatch",
                           raw[:len(raw) // 2])
    sections.write_section(add("vzpatch-empty", PATCH_FILE, "vzpatch section is corrupt: it is empty"), "vzpatch", b"")
    # a length-delimited field claiming 2 GiB
    sections.write_section(add("vzpatch-huge-length", PATCH_FILE, "not a BinPatch protobuf"), "vzpatch",
                           b"\x22\xff\xff\xff\xff\x07" + raw)

    def edit(name, code, fragment, fn):
        path = add(name, code, fragment)
        msg = _message(path)
        fn(msg)
        _put_message(path, msg)

    def many_jumps(m):
        fj = m.func_jumps[0]
        for _ in range(100000):
            m.func_jumps.add().CopyFrom(fj)
    edit("huge-count-func-jumps", PATCH_FILE, "both redirect the entry", many_jumps)

    def many_syms(m):
        for i in range(200000):
            s = m.manual_symbols.add()
            s.idx, s.addr = 1 + i % 7, i
    edit("huge-count-symbols", PATCH_FILE, "is bound twice", many_syms)

    def outside(m):
        m.func_jumps[0].func_value = 0x7FFF00000000
    edit("address-outside-target", PATCH_FILE, "no fragment holds its entry 0x7fff00000000", outside)

    def negative(m):
        m.func_jumps[0].func_value = (1 << 64) - 16
    edit("address-wraps", PATCH_FILE, "wraps around", negative)

    def patch_value_outside(m):
        m.func_jumps[0].patch_value = 0xFFFFFFF0
    edit("patch-value-outside-patch", PATCH_FILE, "lies outside the patch's executable segments", patch_value_outside)

    def sym_index(m):
        s = m.manual_symbols.add()
        s.idx, s.addr = 99999, 0x1000
    edit("symbol-index-out-of-range", PATCH_FILE, "names symbol index 99999", sym_index)

    def sym_negative(m):
        s = m.manual_symbols.add()
        s.idx, s.addr = -5, 0x1000
    edit("symbol-index-negative", PATCH_FILE, ".dynsym index -5 out of range", sym_negative)

    def overlap(m):
        a = m.func_jumps[0]
        b = m.func_jumps.add()
        b.CopyFrom(a)
        b.name = a.name + "_alias"
        b.func_value = a.func_value + 2
        # The right bytes for that address, so only the overlap itself can refuse it.
        b.entry_bytes = a.entry_bytes[2:]
    edit("overlapping-functions", PATCH_FILE, "overlap", overlap)

    def dup(m):
        m.func_jumps.add().CopyFrom(m.func_jumps[0])
    edit("duplicate-function", PATCH_FILE, "both redirect the entry", dup)

    def short(m):
        m.func_jumps[0].func_size = 2
    edit("function-too-short", UNSUPPORTED, "is 2 bytes, too short for the 5-byte rel32 jump", short)

    def static_outside(m):
        s = m.static_symbols.add()
        s.patch_size, s.patch_address, s.target_value = 8, 0x7FFFFFFF0000, 0
    edit("static-fixup-outside-patch", PATCH_FILE,
         "static fix-up at 0x7fffffff0000+8 lies outside the patch's segments", static_outside)

    def static_size(m):
        s = m.static_symbols.add()
        s.patch_size, s.patch_address, s.target_value = 3, m.func_jumps[0].patch_value, 0
    edit("static-fixup-bad-size", PATCH_FILE, "patch_size 3", static_size)

    def wrong_target(m):
        m.old_bid = "ab" * 20
    edit("wrong-target-build-id", MISMATCH, "build-id mismatch", wrong_target)

    def bad_entry(m):
        eb = bytearray(m.func_jumps[0].entry_bytes)
        eb[-1] ^= 0xFF
        m.func_jumps[0].entry_bytes = bytes(eb)
    edit("entry-bytes-differ", MISMATCH, "differ from the patch's entry_bytes", bad_entry)

    def unknown_feature(m):
        m.required_features.append("teleport")  # a field a newer writer relies on, which we would skip
    edit("required-feature-unknown", UNSUPPORTED, "teleport", unknown_feature)

    # --- relocations of the patch itself (build-id kept, so the identity check still passes)
    off, r_offset, rtype, sym, addend = _rela(good)
    _edit_bytes(add("relocation-outside-patch", PATCH_FILE,
                    "at 0x7fffffff0000 writes outside the patch's loaded segments"), off,
                struct.pack("<Q", 0x7FFF_FFFF_0000))
    _edit_bytes(add("relocation-unknown-type", UNSUPPORTED,
                    "R_X86_64_GNU_VTINHERIT at %#x is not supported" % r_offset), off + 8,
                struct.pack("<Q", (sym << 32) | 250))
    _edit_bytes(add("relocation-tls-type", UNSUPPORTED,
                    "R_X86_64_DTPMOD64 at %#x is not supported" % r_offset), off + 8,
                struct.pack("<Q", (sym << 32) | 16))  # R_X86_64_DTPMOD64
    _edit_bytes(add("relocation-symbol-out-of-range", PATCH_FILE,
                    "relocation names symbol index 16777215, not in its .dynsym"), off + 8,
                struct.pack("<Q", (0xFFFFFF << 32) | 1))  # R_X86_64_64 of symbol 16M

    # --- identity
    tbid = build_id_of(target)
    path = add("patch-build-id-equals-target", PATCH_FILE, "equals its target")
    _set_build_id(path, tbid)
    msg = _message(path)
    msg.new_bid = tbid
    _put_message(path, msg)
    return cases
