import struct

import capstone
import keystone
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gdb_nsb.binder.errors import FunctionTooShort
from gdb_nsb.binder.jumps import ENDBR64, KIND_ABS, KIND_REL32, decode_jump, encode_jump

CS = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
KS = keystone.Ks(keystone.KS_ARCH_X86, keystone.KS_MODE_64)
PLAIN = bytes.fromhex("554889e5")  # push rbp; mov rbp,rsp


def disasm_one(code, addr):
    insns = list(CS.disasm(code, addr))
    return insns


def test_rel32_forward_matches_keystone_and_capstone():
    entry, dest = 0x555555555139, 0x7FFF0000 + 0x555555555139
    j = encode_jump("f", entry, dest, 100, PLAIN)
    assert j.kind == KIND_REL32 and j.at == entry and j.length == 5
    ks_code, _ = KS.asm("jmp %#x" % dest, entry)
    assert bytes(ks_code) == j.code
    (insn,) = disasm_one(j.code, entry)
    assert insn.mnemonic == "jmp" and int(insn.op_str, 16) == dest


def test_rel32_backward_and_decode():
    entry, dest = 0x7F0000001000, 0x7F0000001000 - 0x7FFFF000
    j = encode_jump("f", entry, dest, 5, PLAIN)
    assert j.kind == KIND_REL32
    d = decode_jump(entry, j.code + b"\xcc" * 9)
    assert d.dest == dest and d.kind == KIND_REL32 and d.code == j.code


def test_out_of_reach_uses_absolute_jump_without_register():
    entry, dest = 0x400000, 0x7F1234567000
    j = encode_jump("f", entry, dest, 64, PLAIN)
    assert j.kind == KIND_ABS and j.length == 14
    assert j.code == bytes.fromhex("ff2500000000") + struct.pack("<Q", dest)
    (insn,) = disasm_one(j.code[:6], entry)
    assert insn.mnemonic == "jmp" and insn.op_str == "qword ptr [rip]"
    assert decode_jump(entry, j.code).dest == dest


def test_endbr64_is_kept_and_jump_follows_it():
    entry, dest = 0x401000, 0x402000
    j = encode_jump("g", entry, dest, 16, ENDBR64 + PLAIN)
    assert j.at == entry + 4 and j.keeps_endbr
    mem = ENDBR64 + j.code
    insns = disasm_one(mem, entry)
    assert [i.mnemonic for i in insns] == ["endbr64", "jmp"] and int(insns[1].op_str, 16) == dest
    d = decode_jump(entry, mem + bytes(10))
    assert d.at == entry + 4 and d.dest == dest


def test_allow_rel32_false_forces_absolute():
    j = encode_jump("f", 0x1000, 0x2000, 14, PLAIN, allow_rel32=False)
    assert j.kind == KIND_ABS and decode_jump(0x1000, j.code).dest == 0x2000


@pytest.mark.parametrize("size,head,far,need", [(4, PLAIN, False, 5), (8, ENDBR64, False, 9),
                                                 (13, PLAIN, True, 14), (17, ENDBR64, True, 18)])
def test_too_short_is_refused_naming_function_and_sizes(size, head, far, need):
    dest = 0x7F0000000000 if far else 0x2000
    with pytest.raises(FunctionTooShort) as e:
        encode_jump("tiny_fn", 0x1000, dest, size, head)
    msg = str(e.value)
    assert "tiny_fn" in msg and str(size) in msg and str(need) in msg


def test_decode_rejects_other_code():
    assert decode_jump(0x1000, PLAIN + bytes(20)) is None
    assert decode_jump(0x1000, ENDBR64 + PLAIN + bytes(20)) is None
    assert decode_jump(0x1000, bytes.fromhex("ff25000000")) is None  # truncated


@settings(max_examples=300, deadline=None)
@given(entry=st.integers(0x10000, (1 << 47) - 0x1000), dest=st.integers(0x10000, (1 << 47) - 0x1000),
       endbr=st.booleans())
def test_round_trip_any_addresses(entry, dest, endbr):
    head = (ENDBR64 if endbr else b"") + PLAIN
    j = encode_jump("f", entry, dest, 64, head)
    mem = (ENDBR64 if endbr else b"") + j.code
    d = decode_jump(entry, mem + bytes(16))
    assert d.dest == dest and d.kind == j.kind
    insns = disasm_one(j.code, j.at)
    assert insns[0].mnemonic == "jmp"
    if j.kind == KIND_REL32:
        assert int(insns[0].op_str, 16) == dest
        assert abs(dest - (j.at + 5)) < (1 << 31) + 1
