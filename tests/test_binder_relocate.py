"""Relocations and symbol scope on real ELF files compiled here, checked against readelf/nm."""

import re
import struct

import pytest

import targets as T
from binder_fakes import FakeMemory, fake_object, load, make_view
from gdb_nsb.binder.errors import BadRelocation, IfuncNeedsResolver, UnresolvedSymbol, UnsupportedRelocation
from gdb_nsb.binder.process_view import MappedObject
from gdb_nsb.binder.relocate import apply_static_fixups, relocate
from gdb_nsb.binder.scope import BY_PATCH, BY_TARGET_FUNCTION, BY_WEAK_ZERO, SymbolResolver
from gdb_nsb.elf.livepatch import FuncJump, LivePatch, MarkedSym, StaticSym
from gdb_nsb.errors import NsbError
from gdb_nsb.mappings import Mapping

LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
EXE_BIAS = 0x555555554000
LIBC_BIAS = 0x7FFFF7C00000
PATCH_BIAS = 0x555500000000

TARGET_C = r"""
#include <string.h>
#include <stdio.h>
int target_counter = 5;
int f(int x) { return x + target_counter + (int)strlen("abc"); }
int main(int argc, char **argv) { printf("%d %zu\n", f(argc), strlen(argv[0])); return 0; }
"""

PATCH_C = r"""
#include <string.h>
extern int target_counter;
static const char *const names[] = {"alpha", "beta"};
int *const counter_ptr = &target_counter;
int helper(int y) { return y * 2; }
int f(int x) { return target_counter + (int)strlen(names[x & 1]) + helper(x); }
int (*const fp)(int) = f;
int (*const hp)(int) = helper;
"""


def readelf_relocs(path):
    """(offset, type, symbol-or-None, addend) from readelf -rW, independent of ElfImage."""
    out = []
    for line in T.tool("readelf", "-rW", path).splitlines():
        m = re.match(r"^([0-9a-f]{16})\s+[0-9a-f]{16}\s+(R_X86_64_\w+)\s+(.*)$", line)
        if not m:
            continue
        off, typ, rest = int(m.group(1), 16), m.group(2), m.group(3).strip()
        if re.fullmatch(r"[0-9a-f]+", rest):
            out.append((off, typ, None, int(rest, 16)))
        else:
            m2 = re.match(r"^[0-9a-f]{16}\s+(\S+)\s*([+-])\s*([0-9a-f]+)$", rest)
            name = m2.group(1).split("@")[0]
            add = int(m2.group(3), 16) * (-1 if m2.group(2) == "-" else 1)
            out.append((off, typ, name, add))
    return out


def nm_value(path, name):
    for line in T.tool("nm", path).splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == name:
            return int(parts[0], 16)
    raise KeyError(name)


def dynsym_index(image, name):
    return next(s.index for s in image.dynsyms if s.name == name)


@pytest.fixture(scope="module")
def built():
    target = T.build([("target.c", TARGET_C)], ["-O0", "-g", "-fPIE", "-pie"], "target")
    patch = T.build_patch([("patch.c", PATCH_C)], "patch.so")
    return target, patch


def livepatch_for(target_img, patch_img, globals_=True):
    f_t = next(s for s in target_img.symtab if s.name == "f")
    f_p = next(s for s in patch_img.dynsyms if s.name == "f")
    gs = [MarkedSym(dynsym_index(patch_img, "target_counter"), nm_value(target_img.path, "target_counter"))]
    return LivePatch(old_bid=target_img.build_id, new_bid=patch_img.build_id,
                     func_jumps=[FuncJump("f", f_t.value, f_t.size, f_p.value, f_t.shndx,
                                          entry_bytes=target_img.read_vaddr(f_t.value, 16))],
                     global_symbols=gs if globals_ else [], target_is_executable=True)


def process_with_libc(target_img, impl_offset=0x1000):
    """Main executable + libc; the executable's strlen JUMP_SLOT holds libc's implementation."""
    libc = load(LIBC)
    main = fake_object(target_img, EXE_BIAS, is_main_executable=True)
    libc_obj = fake_object(libc, LIBC_BIAS)
    mem = FakeMemory()
    mem.load_image(target_img, EXE_BIAS)
    text = next(s for s in libc.segments if s.flags & 1)
    impl = LIBC_BIAS + text.vaddr + impl_offset
    slot = next(r.offset for r in target_img.relocations if r.symbol == "strlen")
    mem.write(EXE_BIAS + slot, struct.pack("<Q", impl))
    return make_view([main, libc_obj], memory=mem), main, impl


def test_relocations_match_readelf_and_nm(built):
    target_path, patch_path = built
    t, p = load(target_path), load(patch_path)
    view, main, impl = process_with_libc(t)
    lp = livepatch_for(t, p)
    res = SymbolResolver(view, main, p, lp)
    table, problems = res.resolve_all()
    assert problems == []
    rel = relocate(p, PATCH_BIAS, lambda r: table[r.sym_index].runtime(PATCH_BIAS))

    counter = EXE_BIAS + nm_value(t.path, "target_counter")
    f_target = EXE_BIAS + nm_value(t.path, "f")
    helper_own = PATCH_BIAS + nm_value(p.path, "helper")
    expected_sym = {"target_counter": counter, "strlen": impl, "f": f_target, "helper": helper_own,
                    "__gmon_start__": 0, "_ITM_deregisterTMCloneTable": 0, "_ITM_registerTMCloneTable": 0}
    seen = set()
    for off, typ, name, addend in readelf_relocs(p.path):
        got = struct.unpack("<Q", rel.read(off, 8))[0]
        if typ == "R_X86_64_RELATIVE":
            want = PATCH_BIAS + addend
        elif name == "__cxa_finalize":
            want = LIBC_BIAS + next(s.value for s in load(LIBC).dynsyms if s.name == "__cxa_finalize")
        elif typ == "R_X86_64_64":
            want = expected_sym[name] + addend
        else:
            want = expected_sym[name]
        assert got == want, (hex(off), typ, name, hex(got), hex(want))
        seen.add((typ, name))
    assert ("R_X86_64_RELATIVE", None) in seen and ("R_X86_64_GLOB_DAT", "target_counter") in seen
    assert ("R_X86_64_JUMP_SLOT", "strlen") in seen and ("R_X86_64_64", "f") in seen
    # The RELATIVE pointers of names[] point at the patch's own string literals.
    for off, typ, _n, addend in readelf_relocs(p.path):
        if typ == "R_X86_64_RELATIVE" and p.read_vaddr(addend, 5) in (b"alpha", b"beta\0"):
            assert struct.unpack("<Q", rel.read(off, 8))[0] - PATCH_BIAS == addend
    how = {r.name: r.how for r in table.values()}
    assert how["f"] == BY_TARGET_FUNCTION and how["helper"] == BY_PATCH and how["__gmon_start__"] == BY_WEAK_ZERO
    strlen_resolver = LIBC_BIAS + next(s.value for s in load(LIBC).dynsyms if s.name == "strlen")
    assert table[dynsym_index(p, "strlen")].ifunc_resolver == strlen_resolver


def test_target_global_found_in_scope_when_exported(built):
    # Without pre-resolved globals, -rdynamic exports target_counter: the scope finds it in the target.
    _, patch_path = built
    target_path = T.build([("target.c", TARGET_C)], ["-O0", "-g", "-fPIE", "-pie", "-rdynamic"], "target")
    t, p = load(target_path), load(patch_path)
    view, main, _ = process_with_libc(t)
    r = SymbolResolver(view, main, p, livepatch_for(t, p, globals_=False)).resolve_index(
        dynsym_index(p, "target_counter"))
    assert r.value == EXE_BIAS + nm_value(t.path, "target_counter") and r.provider == "target"


def test_strong_unresolved_symbol_named(built):
    target_path, _ = built
    t = load(target_path)
    p = load(T.build_patch([("u.c", "extern int nowhere_sym; int f(int x) { return x + nowhere_sym; }")],
                                "u.so"))
    view, main, _ = process_with_libc(t)
    res = SymbolResolver(view, main, p, LivePatch(old_bid=t.build_id, new_bid=p.build_id))
    with pytest.raises(UnresolvedSymbol, match="nowhere_sym"):
        res.resolve_index(dynsym_index(p, "nowhere_sym"))
    _, problems = res.resolve_all()
    assert [e.symbol for e in problems] == ["nowhere_sym"]


def test_executable_global_from_symtab_when_not_pre_resolved(built):
    target_path, patch_path = built
    t, p = load(target_path), load(patch_path)
    view, main, _ = process_with_libc(t)
    r = SymbolResolver(view, main, p, livepatch_for(t, p, globals_=False)).resolve_index(
        dynsym_index(p, "target_counter"))
    assert r.value == EXE_BIAS + nm_value(t.path, "target_counter")


def test_ifunc_lazy_slot_needs_resolver_then_hook(built):
    target_path, patch_path = built
    t, p = load(target_path), load(patch_path)
    view, main, _ = process_with_libc(t)
    # A lazily bound slot still points into the executable's PLT: not an implementation.
    slot = next(r.offset for r in t.relocations if r.symbol == "strlen")
    plt = EXE_BIAS + t.section_by_name(".plt").addr + 0x10
    view.memory.write(EXE_BIAS + slot, struct.pack("<Q", plt))
    resolver = LIBC_BIAS + next(s.value for s in load(LIBC).dynsyms if s.name == "strlen")
    lp = livepatch_for(t, p)
    with pytest.raises(IfuncNeedsResolver) as e:
        SymbolResolver(view, main, p, lp).resolve_index(dynsym_index(p, "strlen"))
    assert e.value.symbol == "strlen" and e.value.resolver_addr == resolver
    assert isinstance(e.value, NsbError) and "must run" in str(e.value)
    r = SymbolResolver(view, main, p, lp, ifunc_results={resolver: 0x7FFFF7C12340}).resolve_index(
        dynsym_index(p, "strlen"))
    assert r.value == 0x7FFFF7C12340


def test_ifunc_resolved_to_the_vdso():
    # Found on Debian's memcached: glibc's gettimeofday is an IFUNC whose resolver returns the kernel's
    # __vdso_gettimeofday, so the executable's bound slot points into the vDSO, not into libc.
    target = T.build([("tod.c", "#include <sys/time.h>\nint main(void) { struct timeval tv; "
                                      "return gettimeofday(&tv, 0); }\n")], ["-O2", "-fPIE", "-pie"], "tod")
    patch = T.build_patch([("tod_patch.c", "#include <sys/time.h>\nlong f(void) { struct timeval tv; "
                                                "gettimeofday(&tv, 0); return tv.tv_sec; }\n")], "tod_patch.so")
    t, p, libc = load(target), load(patch), load(LIBC)
    assert any(s.name == "gettimeofday" and s.type == "STT_GNU_IFUNC" for s in libc.dynsyms)
    vdso_at = 0x7FFFF7FC1000
    vdso = MappedObject(path="[vdso]", build_id=None, load_bias=vdso_at, is_vdso=True,
                        ranges=[Mapping(vdso_at, vdso_at + 0x2000, 0, "r-xp", "[vdso]")])
    main = fake_object(t, EXE_BIAS, is_main_executable=True)
    mem = FakeMemory()
    mem.load_image(t, EXE_BIAS)
    slot = next(r.offset for r in t.relocations if r.symbol == "gettimeofday")
    mem.write(EXE_BIAS + slot, struct.pack("<Q", vdso_at + 0xA40))
    view = make_view([main, fake_object(libc, LIBC_BIAS), vdso], memory=mem)
    lp = LivePatch(old_bid=t.build_id, new_bid=p.build_id)
    r = SymbolResolver(view, main, p, lp).resolve_index(dynsym_index(p, "gettimeofday"))
    assert r.value == vdso_at + 0xA40
    mem.write(EXE_BIAS + slot, struct.pack("<Q", 0x7FFFF0000000))  # nowhere: not an implementation
    with pytest.raises(IfuncNeedsResolver):
        SymbolResolver(view, main, p, lp).resolve_index(dynsym_index(p, "gettimeofday"))


def test_static_target_ifunc_via_irelative_slot():
    static = T.build([("target.c", TARGET_C)], ["-O0", "-g", "-static"], "target-static")
    patch = T.build_patch([("patch.c", PATCH_C)], "patch.so")
    t, p = load(static), load(patch)
    strlen_val = nm_value(t.path, "strlen")
    assert any(s.name == "strlen" and s.type == "STT_GNU_IFUNC" for s in t.symtab)
    irel = [r for r in t.relocations if r.type_name == "R_X86_64_IRELATIVE" and r.addend == strlen_val]
    assert len(irel) == 1
    main = fake_object(t, 0, is_main_executable=True)
    mem = FakeMemory()
    mem.load_image(t, 0)
    text = next(s for s in t.segments if s.flags & 1)
    impl = text.vaddr + 0x40
    mem.write(irel[0].offset, struct.pack("<Q", impl))
    view = make_view([main], memory=mem)
    lp = livepatch_for(t, p)
    # The generator leaves IFUNC globals to run time: found in the static executable's .symtab.
    r = SymbolResolver(view, main, p, lp).resolve_index(dynsym_index(p, "strlen"))
    assert r.value == impl and r.ifunc_resolver == strlen_val
    lp.global_symbols.append(MarkedSym(dynsym_index(p, "strlen"), strlen_val))
    r = SymbolResolver(view, main, p, lp).resolve_index(dynsym_index(p, "strlen"))
    assert r.value == impl and r.ifunc_resolver == strlen_val


def test_tls_relocation_refused_by_name():
    p = load(T.build_patch([("tls.c", "extern __thread int tv; int g(void) { return tv; }")], "tls.so"))
    names = {r.type_name for r in p.relocations}
    tls = sorted(n for n in names if "TPOFF" in n or "DTP" in n)
    assert tls
    with pytest.raises(UnsupportedRelocation) as e:
        relocate(p, PATCH_BIAS, lambda r: 0)
    assert tls[0] in str(e.value) or any(n in str(e.value) for n in tls)
    assert "tv" in str(e.value) and "\n" not in str(e.value)


def test_static_fixups_sizes_and_reach(built):
    _, patch_path = built
    p = load(patch_path)
    rel = relocate(p, PATCH_BIAS, lambda r: 0)
    f_p = nm_value(p.path, "f")
    target_bias = PATCH_BIAS + 0x10000000
    apply_static_fixups(rel, [StaticSym(4, f_p + 1, (-0x20) & 0xFFFFFFFFFFFFFFFF),
                              StaticSym(8, f_p + 8, 0x1234)], target_bias)
    assert struct.unpack("<i", rel.read(f_p + 1, 4))[0] == -0x20 + 0x10000000
    assert struct.unpack("<Q", rel.read(f_p + 8, 8))[0] == 0x1234 + 0x10000000
    from gdb_nsb.binder.errors import OutOfReach
    with pytest.raises(OutOfReach):
        apply_static_fixups(rel, [StaticSym(4, f_p + 1, 0)], PATCH_BIAS + (1 << 32))
    with pytest.raises(BadRelocation):
        apply_static_fixups(rel, [StaticSym(4, 0x7FFFFFFF, 0)], target_bias)


def test_relocation_outside_segments_refused(built):
    _, patch_path = built
    p = load(patch_path)
    from gdb_nsb.elf.image import Relocation

    class Shifted:
        path, segments, read_vaddr = p.path, p.segments, p.read_vaddr
        relocations = [Relocation(0x7FFF0000, 8, "R_X86_64_RELATIVE", 0, 0, ".rela.dyn")]
    with pytest.raises(BadRelocation, match="outside"):
        relocate(Shifted, PATCH_BIAS, lambda r: 0)


LIBM = "/lib/x86_64-linux-gnu/libm.so.6"
LIBM_BIAS = 0x7FFFF7800000


@pytest.mark.parametrize("const", [True, False], ids=["relro", "writable"])
def test_ifunc_resolved_in_a_data_function_pointer(const):
    # Found on Debian's libsqlite3: libm's trunc (an IFUNC) is referenced only from a table of function
    # pointers in writable data (R_X86_64_64), no GOT slot.  ld.so stored the implementation there; in
    # RELRO it is still that; in writable data the program may have re-aimed it: taken unless it now
    # points at an exported function of libm.
    target = T.build([("fp.c", "#include <math.h>\ndouble (*%s tp)(double) = trunc;\nint main(int c, char **v) "
                               "{ (void)v; return (int)tp(c + 0.5); }\n" % ("const" if const else ""))],
                     ["-O2", "-fPIE", "-pie", "-Wl,-z,relro,-z,now", "-lm"], "ifunc-fp-%s" % const)
    patch = T.build_patch([("fp_patch.c", "#include <math.h>\ndouble f(double x) { return trunc(x); }\n")],
                          "fp_patch.so")
    t, p, libm = load(target), load(patch), load(LIBM)
    assert any(s.name == "trunc" and s.type == "STT_GNU_IFUNC" for s in libm.dynsyms)
    slot = next(r for r in t.relocations if r.symbol == "trunc")
    assert slot.type_name == "R_X86_64_64", slot.type_name
    main = fake_object(t, EXE_BIAS, is_main_executable=True)
    mem = FakeMemory()
    mem.load_image(t, EXE_BIAS)
    impl = LIBM_BIAS + next(s for s in libm.segments if s.flags & 1).vaddr + 0x80
    mem.write(EXE_BIAS + slot.offset, struct.pack("<Q", impl))
    view = make_view([main, fake_object(libm, LIBM_BIAS)], memory=mem)
    lp = LivePatch(old_bid=t.build_id, new_bid=p.build_id)
    assert SymbolResolver(view, main, p, lp).resolve_index(dynsym_index(p, "trunc")).value == impl
    other = LIBM_BIAS + next(s.value for s in libm.dynsyms if s.name == "fabs" and s.type == "STT_FUNC")
    mem.write(EXE_BIAS + slot.offset, struct.pack("<Q", other))  # re-aimed at another libm function
    if const:  # RELRO: cannot have been re-aimed, the value is what ld.so stored
        assert SymbolResolver(view, main, p, lp).resolve_index(dynsym_index(p, "trunc")).value == other
    else:
        with pytest.raises(IfuncNeedsResolver):
            SymbolResolver(view, main, p, lp).resolve_index(dynsym_index(p, "trunc"))
