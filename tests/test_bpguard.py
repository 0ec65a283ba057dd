"""bpguard's choice of what to guard at a redirected entry (pure: a stand-in ``gdb`` module)."""

import struct

import pytest

import targets as T

from gdb_nsb.registry import FunctionRecord, MappedRange, PatchRecord, Registry

E = 0x401130
ORIG = bytes(range(16))


def jmp5(n):
    return b"\xe9" + struct.pack("<i", n)


def jmp14(addr):
    return b"\xff\x25\x00\x00\x00\x00" + struct.pack("<Q", addr)


@pytest.fixture
def bpguard(monkeypatch):
    with T.without_gdb(monkeypatch, "gdb_nsb.process.bpguard") as module:
        yield module


def patch(bid, name, jump, below=""):
    p = PatchRecord(bid, "t" * 40, "/bin/target", 0, 0x7f0000000000, [MappedRange(0x7f0000000000, 0x1000, 5)])
    p.functions.append(FunctionRecord(name, E, jump, ORIG, below))
    return p


def test_an_ordered_chain_guards_the_top_layer(bpguard):
    reg = Registry()
    reg.patches += [patch("a", "f_a", jmp14(1)), patch("b", "f_b", jmp5(2), below="a")]
    assert bpguard.entry_guard(reg, E) == ("f_b", 5)
    assert bpguard.entry_guard(reg, E + 1) is None


def test_a_forked_chain_still_guards_the_longest_jump(bpguard):
    # Two layers both claim to sit on the original code: the chain has no order (RegistryCorrupt),
    # but the entry is redirected all the same; it used to be left unguarded.
    reg = Registry()
    reg.patches += [patch("a", "f_a", jmp5(1)), patch("b", "f_b", jmp14(2))]
    with pytest.raises(Exception) as e:
        reg.stack(E)
    assert type(e.value).__name__ == "RegistryCorrupt"
    assert bpguard.entry_guard(reg, E) == ("f_b", 14)


def test_a_broken_chain_still_guards(bpguard):
    reg = Registry()
    reg.patches += [patch("a", "f_a", jmp5(1), below="gone")]
    assert bpguard.entry_guard(reg, E) == ("f_a", 5)
