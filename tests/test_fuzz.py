"""Fuzzing the decoders that read untrusted bytes: the vzpatch section (LivePatch.from_bytes), the ELF
reader (ElfImage) and the in-process registry (Registry.decode).

Every input must either decode or raise a typed one-line NsbError; anything else (IndexError,
struct.error, MemoryError, a hang) is a bug.  Inputs are mutations of valid seeds (byte flips, splices,
truncations, insertions) and raw bytes.  Bounded so ./run-tests stays fast; NSB_FUZZ_EXAMPLES=N runs N
examples per target (the long run).  The number of inputs tried is printed (pytest -s).
"""

import os
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from gdb_nsb import errors
from gdb_nsb.elf.image import ElfImage
from gdb_nsb.elf.livepatch import LivePatch
from gdb_nsb.elf import sections
from gdb_nsb.registry import HEADER_SIZE, FunctionRecord, MappedRange, PatchRecord, Registry

EXAMPLES = int(os.environ.get("NSB_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=not os.environ.get("NSB_FUZZ_EXAMPLES"),
                suppress_health_check=list(HealthCheck))
TRIED = {}


def _seed_patch():
    import reliability as R
    return R.patch("both")


@pytest.fixture(scope="module")
def seeds():
    path = _seed_patch()
    with open(path, "rb") as f:
        elf = f.read()
    vz = sections.read_section(path, "vzpatch")
    reg = Registry([PatchRecord("ab" * 20, "cd" * 20, "target", 0x555555554000, 0x7f0000000000,
                                [MappedRange(0x7f0000000000, 0x2000, 5), MappedRange(0x7f0000002000, 0x1000, 1)],
                                "/tmp/p.so", "active",
                                [FunctionRecord("compute", 0x555555555130, b"\xe9\x01\x02\x03\x04",
                                                b"\x8b\x05\x00\x00\x00", ""),
                                 FunctionRecord("scale", 0x555555555140, b"\xe9\x11\x12\x13\x14",
                                                b"\x8d\x04\x3f\x03\x05", "")])]).encode()
    return {"elf": elf, "vzpatch": vz, "registry": reg}


def mutate(data, draw):
    """A mutation of ``data`` chosen by hypothesis: flips, overwrites with edge values, splices, cuts."""
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            data += draw(st.binary(min_size=1, max_size=64))
            continue
        op = draw(st.sampled_from(["flip", "edge", "cut", "insert", "delete", "dup"]))
        at = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "edge":
            v = draw(st.sampled_from([b"\xff" * 8, b"\x00" * 8, b"\x7f\xff\xff\xff", b"\x80\x00\x00\x00",
                                      b"\xff\xff\xff\xff\x0f", struct.pack("<Q", 1 << 63)]))
            data[at:at + len(v)] = v
        elif op == "cut":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=32))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 64))]
        else:
            n = draw(st.integers(1, 64))
            data[at:at] = data[at:at + n]
    return bytes(data)


def _expect_clean(fn, what):
    TRIED[what] = TRIED.get(what, 0) + 1
    try:
        fn()
    except errors.NsbError as e:
        text = str(e)
        assert text and "\n" not in text, (what, text)


def _report(what):
    print("fuzz %s: %d inputs tried, all decoded or refused cleanly" % (what, TRIED.get(what, 0)))


def test_fuzz_vzpatch_decoder(seeds):
    @FUZZ
    @given(st.data())
    def run(data):
        raw = data.draw(st.one_of(st.binary(max_size=512), st.builds(lambda d: d, st.just(seeds["vzpatch"]))))
        blob = mutate(raw, data.draw) if data.draw(st.booleans()) or raw == seeds["vzpatch"] else raw
        _expect_clean(lambda: LivePatch.from_bytes(blob).to_bytes(), "vzpatch")
    run()
    _report("vzpatch")
    assert TRIED["vzpatch"] >= min(EXAMPLES, 50)


def test_fuzz_elf_reader(seeds, tmp_path):
    path = str(tmp_path / "fuzz.so")

    def touch_everything():
        img = ElfImage(path)
        img.segments
        img.load_span()
        img.sections
        img.build_id
        img.dynamic
        img.needed
        img.dynsyms
        img.symtab
        img.version_needs
        img.relocations
        img.section_data("vzpatch")
        LivePatch.read(path)

    @FUZZ
    @given(st.data())
    def run(data):
        # Most damage where the reader looks first: the ELF and program headers, then anywhere.
        elf = seeds["elf"]
        head = data.draw(st.booleans())
        if head:
            blob = mutate(elf[:256], data.draw) + elf[256:]
        else:
            blob = mutate(elf, data.draw)
        with open(path, "wb") as f:
            f.write(blob)
        _expect_clean(touch_everything, "elf")
    run()
    _report("elf")
    assert TRIED["elf"] >= min(EXAMPLES, 50)


def _recrc(blob):
    """Fix up the registry CRC so that mutations reach the payload parser, not only the CRC check."""
    if len(blob) < HEADER_SIZE:
        return blob
    magic, version, length, crc, reserved, gen = struct.unpack_from("<8sIIIIQ", blob)
    length = min(length, len(blob) - HEADER_SIZE)
    zeroed = struct.pack("<8sIIIIQ", magic, version, length, 0, reserved, gen)
    crc = zlib.crc32(zeroed + blob[HEADER_SIZE:HEADER_SIZE + length]) & 0xFFFFFFFF
    return struct.pack("<8sIIIIQ", magic, version, length, crc, reserved, gen) + blob[HEADER_SIZE:]


def test_fuzz_registry_decoder(seeds):
    @FUZZ
    @given(st.data())
    def run(data):
        blob = mutate(seeds["registry"], data.draw)
        if data.draw(st.booleans()):
            blob = _recrc(blob)

        def decode():
            reg = Registry.decode(blob, "fuzzed registry")
            for e in reg.entries():
                reg.stack(e)
            reg.encode()
        _expect_clean(decode, "registry")
    run()
    _report("registry")
    assert TRIED["registry"] >= min(EXAMPLES, 50)
