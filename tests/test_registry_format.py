"""The registry's binary format and its layer stacks (pure)."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gdb_nsb.errors import RegistryCorrupt
from gdb_nsb.registry import (
    HEADER_SIZE,
    MAGIC,
    STATE_ACTIVE,
    STATE_INACTIVE,
    FunctionRecord,
    LayerError,
    MappedRange,
    PatchRecord,
    Registry,
)

ORIG = bytes.fromhex("554889e54883ec10897dfc8b45fc")  # 14 original bytes at the entry
E = 0x401130


def jmp5(n):
    return b"\xe9" + struct.pack("<i", n)


def jmp14(addr):
    return b"\xff\x25\x00\x00\x00\x00" + struct.pack("<Q", addr)


def record(bid, state=STATE_ACTIVE):
    return PatchRecord(bid, "t" * 40, "/bin/target", 0x400000, 0x7f0000000000,
                       [MappedRange(0x7f0000000000, 0x1000, 5), MappedRange(0x7f0000001000, 0x1000, 1)],
                       "/tmp/%s.so" % bid, state)


def test_round_trip_and_header():
    reg = Registry(generation=7)
    reg.patches.append(record("a"))
    reg.push_layer("a", "f", E, jmp5(0x100), ORIG)
    reg.patches.append(record("b", STATE_INACTIVE))
    data = reg.encode()
    assert data[:8] == MAGIC
    assert Registry.peek_header(data) == (1, len(data) - HEADER_SIZE, 7)
    back = Registry.decode(data + b"\0" * 100)  # trailing zeros of the mapping are ignored
    assert back == reg


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=20), st.integers(0, 2**64 - 1), st.binary(max_size=16),
                          st.sampled_from([STATE_ACTIVE, STATE_INACTIVE])), max_size=5))
def test_round_trip_property(items):
    reg = Registry(generation=3)
    for i, (name, addr, blob, state) in enumerate(items):
        p = PatchRecord("p%d" % i, name, name, addr, addr, [MappedRange(addr, len(blob), 3)], name, state)
        p.functions.append(FunctionRecord(name, addr, blob, blob + b"x", ""))
        reg.patches.append(p)
    assert Registry.decode(reg.encode()) == reg


def test_every_single_bit_flip_is_detected():
    reg = Registry()
    reg.patches.append(record("a"))
    reg.push_layer("a", "f", E, jmp5(1), ORIG)
    data = bytearray(reg.encode())
    for i in range(len(data)):
        for bit in (0, 7):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            with pytest.raises(RegistryCorrupt):
                Registry.decode(bytes(bad))


def test_corrupt_messages_are_one_line():
    data = Registry().encode()
    for bad, words in [(data[:10], "shorter"), (b"X" * 32, "magic"),
                       (data[:8] + struct.pack("<I", 99) + data[12:], "version 99"),
                       (data[:-1] + b"\x01", "CRC")]:
        with pytest.raises(RegistryCorrupt) as e:
            Registry.decode(bad, "registry at 0x1000")
        assert words in str(e.value) and "\n" not in str(e.value)


def test_truncated_mapping():
    reg = Registry()
    reg.patches.append(record("a"))
    data = reg.encode()
    with pytest.raises(RegistryCorrupt, match="only"):
        Registry.decode(data[:-3])


def test_stacking_and_out_of_order_revert():
    reg = Registry()
    for b in "abc":
        reg.patches.append(record(b))
    w = reg.push_layer("a", "f", E, jmp5(0xa), ORIG)
    assert (w.expected, w.new) == (ORIG[:5], jmp5(0xa))
    w = reg.push_layer("b", "f", E, jmp14(0xb), ORIG)   # longer jump over a shorter one
    assert w.expected == jmp5(0xa) + ORIG[5:14] and w.new == jmp14(0xb)
    w = reg.push_layer("c", "f", E, jmp5(0xc), ORIG)
    assert w.expected == jmp14(0xb) and w.new == jmp5(0xc) + ORIG[5:14]
    assert [bid for bid, _ in reg.stack(E)] == ["a", "b", "c"]
    assert reg.patch("b").function_at(E).below == "a"

    # Middle layer out: memory unchanged, chain relinked.
    w = reg.pop_layer("b", E)
    assert not w.changes_memory and w.expected == jmp5(0xc) + ORIG[5:14]
    assert [bid for bid, _ in reg.stack(E)] == ["a", "c"]
    assert reg.patch("c").function_at(E).below == "a"
    assert Registry.decode(reg.encode()).stack(E) == reg.stack(E)

    # Top out: the layer below comes back.
    w = reg.pop_layer("c", E)
    assert w.changes_memory and w.new[:5] == jmp5(0xa) and w.new[5:] == ORIG[5:len(w.new)]
    # Last out: original bytes.
    w = reg.pop_layer("a", E)
    assert w.new == ORIG[:len(w.new)] and reg.stack(E) == [] and reg.top(E) is None


def test_layer_errors():
    reg = Registry()
    reg.patches.append(record("a"))
    with pytest.raises(LayerError):
        reg.push_layer("zz", "f", E, jmp5(1), ORIG)
    reg.push_layer("a", "f", E, jmp5(1), ORIG)
    with pytest.raises(LayerError, match="already redirects"):
        reg.push_layer("a", "f", E, jmp5(1), ORIG)
    reg.patches.append(record("b"))
    with pytest.raises(LayerError, match="differ"):
        reg.push_layer("b", "f", E, jmp5(2), b"\x90" * 14)
    with pytest.raises(LayerError, match="no active layer"):
        reg.pop_layer("b", E)


def test_inactive_patches_are_not_layers():
    reg = Registry()
    reg.patches.append(record("a"))
    reg.push_layer("a", "f", E, jmp5(1), ORIG)
    reg.patch("a").state = STATE_INACTIVE
    assert reg.stack(E) == [] and reg.entries() == []


def test_broken_chain_is_corrupt():
    reg = Registry()
    reg.patches.append(record("a"))
    reg.patches.append(record("b"))
    reg.push_layer("a", "f", E, jmp5(1), ORIG)
    reg.push_layer("b", "f", E, jmp5(2), ORIG)
    reg.patch("b").function_at(E).below = "nope"
    with pytest.raises(RegistryCorrupt, match="broken"):
        reg.stack(E)
