"""ELF names of x86_64 section and relocation types, as pyelftools gives them (the last name of a value wins,
as in its decoder), without importing pyelftools: it costs tens of milliseconds of CPU in every GDB session
and the hot path (the runner's prefetch, the stop) reads ELF files without it.  tests/test_elf_names.py
checks these tables against pyelftools' own.
"""

EM_X86_64 = 62

# sh_type -> name (x86_64)
SECTION_TYPES = {
    0: 'SHT_NULL', 1: 'SHT_PROGBITS', 2: 'SHT_SYMTAB', 3: 'SHT_STRTAB', 4: 'SHT_RELA', 5: 'SHT_HASH',
    6: 'SHT_DYNAMIC', 7: 'SHT_NOTE', 8: 'SHT_NOBITS', 9: 'SHT_REL', 10: 'SHT_SHLIB', 11: 'SHT_DYNSYM',
    14: 'SHT_INIT_ARRAY', 15: 'SHT_FINI_ARRAY', 16: 'SHT_PREINIT_ARRAY', 17: 'SHT_GROUP', 18: 'SHT_SYMTAB_SHNDX',
    19: 'SHT_RELR', 20: 'SHT_NUM', 0x60000000: 'SHT_LOOS', 0x6ffffff3: 'SHT_SUNW_LDYNSYM',
    0x6ffffff5: 'SHT_GNU_ATTRIBUTES', 0x6ffffff6: 'SHT_GNU_HASH', 0x6ffffff7: 'SHT_GNU_LIBLIST',
    0x6ffffffc: 'SHT_SUNW_syminfo', 0x6ffffffd: 'SHT_GNU_verdef', 0x6ffffffe: 'SHT_GNU_verneed',
    0x6fffffff: 'SHT_GNU_versym', 0x70000001: 'SHT_AMD64_UNWIND', 0x80000000: 'SHT_LOUSER',
    0xffffffff: 'SHT_HIUSER',
}

# r_type -> name (R_X86_64_*)
RELOCATION_TYPES = {
    0: 'R_X86_64_NONE', 1: 'R_X86_64_64', 2: 'R_X86_64_PC32', 3: 'R_X86_64_GOT32', 4: 'R_X86_64_PLT32',
    5: 'R_X86_64_COPY', 6: 'R_X86_64_GLOB_DAT', 7: 'R_X86_64_JUMP_SLOT', 8: 'R_X86_64_RELATIVE',
    9: 'R_X86_64_GOTPCREL', 10: 'R_X86_64_32', 11: 'R_X86_64_32S', 12: 'R_X86_64_16', 13: 'R_X86_64_PC16',
    14: 'R_X86_64_8', 15: 'R_X86_64_PC8', 16: 'R_X86_64_DTPMOD64', 17: 'R_X86_64_DTPOFF64', 18: 'R_X86_64_TPOFF64',
    19: 'R_X86_64_TLSGD', 20: 'R_X86_64_TLSLD', 21: 'R_X86_64_DTPOFF32', 22: 'R_X86_64_GOTTPOFF',
    23: 'R_X86_64_TPOFF32', 24: 'R_X86_64_PC64', 25: 'R_X86_64_GOTOFF64', 26: 'R_X86_64_GOTPC32',
    27: 'R_X86_64_GOT64', 28: 'R_X86_64_GOTPCREL64', 29: 'R_X86_64_GOTPC64', 30: 'R_X86_64_GOTPLT64',
    31: 'R_X86_64_PLTOFF64', 34: 'R_X86_64_GOTPC32_TLSDESC', 35: 'R_X86_64_TLSDESC_CALL', 36: 'R_X86_64_TLSDESC',
    37: 'R_X86_64_IRELATIVE', 42: 'R_X86_64_REX_GOTPCRELX', 250: 'R_X86_64_GNU_VTINHERIT',
    251: 'R_X86_64_GNU_VTENTRY',
}
