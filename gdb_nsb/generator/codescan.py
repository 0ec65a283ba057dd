"""Code scans of a target image with capstone: who branches where, who takes which address.

Capstone runs in detail mode (one pass per code range; about 7 us an instruction here) and the
scan reads the instruction groups (``CS_GRP_CALL``, ``CS_GRP_JUMP``) and the operands:

* an immediate operand of a call or jump is a direct branch: a ``call``, a ``jmp`` (a tail call
  when it leaves the function), a conditional jump (a conditional tail call when it leaves it);
  a destination inside ``.plt`` / ``.plt.sec`` / ``.plt.got`` / ``.iplt`` is a call through the
  PLT, resolved to its symbol by the GOT slot its stub jumps through;
* a ``[rip + disp]`` memory operand of a call or jump is a call through the GOT (``-fno-plt``),
  resolved by the slot's dynamic relocation; any other memory or register operand is indirect;
* immediate and ``[rip + disp]`` operands of other instructions are addresses the code takes.

A scan that cannot decide (code that cannot be read, bytes capstone cannot decode) raises a
:class:`GenerateError` naming the function and the reason: a safety check never guesses.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import capstone
from capstone import x86

from gdb_nsb.elf.image import ElfError
from gdb_nsb.errors import GenerateError

_PLT_SECTIONS = (".plt", ".plt.sec", ".plt.got", ".iplt")
_SLOT_RELOCS = ("R_X86_64_JUMP_SLOT", "R_X86_64_GLOB_DAT", "R_X86_64_IRELATIVE", "R_X86_64_64")


@dataclass(frozen=True)
class Branch:
    """One call or jump: ``kind`` 'call' | 'jmp' | 'jcc'; ``via`` 'direct' | 'plt' | 'got' |
    'indirect'; ``target`` the destination (direct), ``symbol`` the PLT/GOT slot's symbol."""

    addr: int
    kind: str
    via: str
    target: int | None = None
    symbol: str | None = None


class CodeScanner:
    """Scans code of one ELF image (its link-time addresses)."""

    def __init__(self, image):
        self.image = image
        self._md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        self._md.detail = True
        self._plt = [(s.addr, s.addr + s.size) for s in image.sections if s.name in _PLT_SECTIONS and s.size]
        self._slots = None
        self._plt_cache = {}
        self._data_words = None

    # ------------------------------------------------------------------ reading

    def code(self, lo, hi, what):
        try:
            return self.image.read_vaddr(lo, hi - lo)
        except ElfError as e:
            raise GenerateError("cannot scan the code of %s (%#x-%#x): %s; the safety checks cannot decide "
                                "who calls it" % (what, lo, hi, e)) from e

    def instructions(self, lo, hi, what, refs=False):
        """Detail-mode instructions of [lo, hi) that branch (and, with ``refs``, every other one with
        an operand, for the addresses it takes).  Bytes capstone cannot decode are refused."""
        code = self.code(lo, hi, what)
        out = []
        end = lo
        for insn in self._md.disasm(code, lo):
            end = insn.address + insn.size
            if refs or capstone.CS_GRP_JUMP in insn.groups or capstone.CS_GRP_CALL in insn.groups:
                out.append(insn)
        if end < hi and code[end - lo:].strip(b"\x00\x90\xcc"):
            raise GenerateError("capstone cannot decode the bytes at %#x in %s (%s...): the code scan cannot "
                                "decide what it calls" % (end, what, code[end - lo:end - lo + 8].hex()))
        return out

    # ------------------------------------------------------------------ branches

    def branches(self, lo, hi, what):
        """Every call and jump of [lo, hi)."""
        out = []
        for insn in self.instructions(lo, hi, what):
            groups = insn.groups
            if capstone.CS_GRP_CALL in groups:
                kind = "call"
            elif capstone.CS_GRP_JUMP in groups:
                kind = "jmp" if insn.mnemonic.split()[-1] == "jmp" else "jcc"
            else:
                continue
            out.append(self._branch(insn, kind, what))
        return out

    def _branch(self, insn, kind, what):
        ops = insn.operands
        if len(ops) != 1:
            raise GenerateError("%s at %#x in %s has %d operands: the code scan cannot decide where it goes"
                                % (insn.mnemonic, insn.address, what, len(ops)))
        op = ops[0]
        if op.type == x86.X86_OP_IMM:
            dest = op.imm & 0xFFFFFFFFFFFFFFFF
            sym = self.plt_symbol(dest)
            if sym is not None:
                return Branch(insn.address, kind, "plt", dest, sym)
            return Branch(insn.address, kind, "direct", dest)
        if op.type == x86.X86_OP_MEM and op.mem.base == x86.X86_REG_RIP and op.mem.index == 0:
            slot = insn.address + insn.size + op.mem.disp
            return Branch(insn.address, kind, "got", None, self.slot_symbol(slot))
        return Branch(insn.address, kind, "indirect")

    def taken_addresses(self, lo, hi, what):
        """Addresses the code of [lo, hi) takes: immediates and RIP-relative operands of
        instructions that do not branch (``lea f(%rip)``, ``mov $f, %eax``)."""
        out = set()
        for insn in self.instructions(lo, hi, what, refs=True):
            if capstone.CS_GRP_CALL in insn.groups or capstone.CS_GRP_JUMP in insn.groups:
                continue
            for op in insn.operands:
                if op.type == x86.X86_OP_IMM:
                    out.add(op.imm & 0xFFFFFFFFFFFFFFFF)
                elif op.type == x86.X86_OP_MEM and op.mem.base == x86.X86_REG_RIP:
                    out.add(insn.address + insn.size + op.mem.disp)
        return out

    # ------------------------------------------------------------------ PLT / GOT

    def plt_symbol(self, addr):
        """The symbol a PLT stub at ``addr`` jumps to ('?' when its slot has no symbol), or None
        when ``addr`` is not in a PLT section."""
        sec = next(((lo, hi) for lo, hi in self._plt if lo <= addr < hi), None)
        if sec is None:
            return None
        if addr not in self._plt_cache:
            code = self.code(addr, min(addr + 16, sec[1]), "the PLT stub at %#x" % addr)
            sym = None
            for insn in self._md.disasm(code, addr):
                if capstone.CS_GRP_JUMP in insn.groups:
                    op = insn.operands[0] if insn.operands else None
                    if op is not None and op.type == x86.X86_OP_MEM and op.mem.base == x86.X86_REG_RIP:
                        sym = self.slot_symbol(insn.address + insn.size + op.mem.disp)
                    break
            if sym is None:
                raise GenerateError("the PLT stub at %#x of %s does not jump through a GOT slot: the code scan "
                                    "cannot decide what a call to it reaches" % (addr, self.image.path))
            self._plt_cache[addr] = sym
        return self._plt_cache[addr]

    def slot_symbol(self, slot):
        """The symbol of the dynamic relocation that fills GOT slot ``slot`` ('?' if none names one)."""
        if self._slots is None:
            self._slots = {}
            for r in self.image.relocations:
                if r.type_name in _SLOT_RELOCS:
                    self._slots[r.offset] = r.symbol or "?"
        return self._slots.get(slot, "?")

    # ------------------------------------------------------------------ data

    def address_in_data(self, addr):
        """True when a data section holds ``addr`` as a pointer (an 8-byte word, or the addend of a
        relative relocation in a position-independent image): the address is taken."""
        if self._data_words is None:
            words = set()
            for s in self.image.sections:
                if s.type != "SHT_PROGBITS" or not s.flags & 0x2 or s.flags & 0x4 or not s.size:
                    continue  # allocated, not executable
                data = self.image.section_data(s.name) or b""
                start = (-s.addr) % 8
                n = (len(data) - start) // 8
                words.update(struct.unpack_from("<%dQ" % n, data, start))
            for r in self.image.relocations:
                if r.type_name in ("R_X86_64_RELATIVE", "R_X86_64_64", "R_X86_64_IRELATIVE"):
                    words.add(r.addend & 0xFFFFFFFFFFFFFFFF)
            self._data_words = words
        return addr in self._data_words


__all__ = ["Branch", "CodeScanner"]
