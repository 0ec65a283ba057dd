"""DWARF debug information: the DIE decoder (:mod:`.reader`) and the lazy name/address index (:mod:`.index`)."""

from gdb_nsb.elf.dwarf.index import CompileUnitInfo, DwarfIndex, FunctionInfo, VariableInfo

__all__ = ["CompileUnitInfo", "DwarfIndex", "FunctionInfo", "VariableInfo"]
