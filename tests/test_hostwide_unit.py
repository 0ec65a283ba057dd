"""Pure pieces of the host-wide list and the post-mortem file search (no GDB, no process)."""

import io
import os
import shutil

import pytest

from gdb_nsb import mappings, patchfiles, registry_scan
from gdb_nsb.elf.livepatch import build_id_of
from gdb_nsb.errors import RegistryCorrupt
from gdb_nsb.registry import PatchRecord, Registry
from gdb_nsb.standalone import progress

MAPS = """\
55d0c0000000-55d0c0001000 r--p 00000000 08:01 123 /usr/bin/prog
55d0c0001000-55d0c0002000 r-xp 00001000 08:01 123 /usr/bin/prog
7f0000000000-7f0000001000 r--p 00000000 00:01 77 /memfd:nsb-registry (deleted)
7f0000001000-7f0000002000 r--p 00001000 00:01 77 /memfd:nsb-registry (deleted)
7f0000010000-7f0000011000 r--p 00000000 00:01 78 /memfd:nsb-registry (deleted)
7f0000020000-7f0000021000 rw-p 00000000 00:00 0
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
"""


def test_proc_maps_parsed_and_registry_runs_merged():
    maps = mappings.parse_proc_maps(MAPS)
    assert len(maps) == 7 and maps[1].executable and maps[1].name == "/usr/bin/prog"
    assert maps[2].deleted and maps[2].name == "/memfd:nsb-registry" and maps[5].is_anonymous
    assert registry_scan.registry_ranges(maps) == [(0x7f0000000000, 0x2000), (0x7f0000010000, 0x1000)]


def _memory(blobs):
    def read(addr, size):
        base = max(b for b in blobs if b <= addr)
        data = blobs[base] + bytes(0x1000)
        return data[addr - base:addr - base + size]
    return read


def _registry(gen, name):
    return Registry([PatchRecord("aa" * 20, "bb" * 20, name, 0, 0x1000)], generation=gen)


def test_highest_valid_generation_wins_and_corrupt_only_raises():
    ranges = [(0x1000, 0x1000), (0x3000, 0x1000), (0x5000, 0x1000)]
    blobs = {0x1000: _registry(1, "old").encode(), 0x3000: _registry(2, "new").encode(), 0x5000: b"garbage"}
    reg = registry_scan.read_registry(ranges, _memory(blobs))
    assert reg.generation == 2 and reg.patches[0].target_name == "new"
    assert registry_scan.read_registry([], _memory({})) is None
    with pytest.raises(RegistryCorrupt, match="registry at 0x5000"):
        registry_scan.read_registry([(0x5000, 0x1000)], _memory(blobs))


def _format2(reg, seq=3, size=4096):
    from gdb_nsb import registry_slots as slots
    slot_size = slots.slot_size_for(size)
    data = bytearray(size)
    data[:slots.SUPER_SIZE] = slots.superblock(slot_size, reg.generation, seq)
    off = slots.slot_offset(seq % 2, slot_size)
    blob = slots.slot_bytes(reg.encode_payload(), seq, reg.generation)
    data[off:off + len(blob)] = blob
    return bytes(data)


def test_format_2_and_uncommitted_mappings():
    ranges = [(0x1000, 0x1000), (0x3000, 0x1000)]
    blobs = {0x1000: _format2(_registry(4, "two")), 0x3000: bytes(4096)}  # the second: created, never committed
    reg = registry_scan.read_registry(ranges, _memory(blobs))
    assert reg.generation == 4 and reg.patches[0].target_name == "two"
    assert registry_scan.read_registry([(0x3000, 0x1000)], _memory(blobs)) is None


def test_patch_file_found_by_build_id(tmp_path):
    elf = "/bin/true"
    bid = build_id_of(elf)
    assert bid
    store = tmp_path / "store"
    os.makedirs(store / ".build-id" / bid[:2])
    shutil.copy(elf, store / ".build-id" / bid[:2] / (bid[2:] + ".debug"))
    assert patchfiles.find(bid, "/nonexistent/fix.so", (), [str(store)]) == str(
        store / ".build-id" / bid[:2] / (bid[2:] + ".debug"))
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(elf, other / "whatever-name")
    (other / "not-elf").write_text("x")
    assert patchfiles.find(bid, "/nonexistent/fix.so", (), [str(tmp_path / "empty"), str(other)]) == str(
        other / "whatever-name")
    assert patchfiles.find("00" * 20, "/nonexistent/fix.so", (), [str(other)]) is None
    assert patchfiles.split_dirs("a::b") == ["a", "b"]


def test_progress_line_and_when_it_shows():
    out = io.StringIO()
    p = progress.Progress(3, show=True, stream=out)
    p.finished(11, 0.5, True)
    p.finished(12, 2.0, False)
    assert p.line() == "nsb: 2/3 processes done, 1 failed, slowest pid 12 (2.0 s)"
    p.close()
    assert out.getvalue().startswith("\rnsb: 1/3 processes done, 0 failed") and out.getvalue().endswith("\r")
    quiet = io.StringIO()
    q = progress.Progress(1, show=True, stream=quiet)  # one process: nothing to follow
    q.finished(1, 0.1, True)
    q.close()
    assert quiet.getvalue() == ""
    assert progress.wanted(False, io.StringIO(), io.StringIO()) is False
