"""Lookup-scope order and symbol versions on real compiled libraries in a synthetic process."""

import os

import pytest

import targets as T
from binder_fakes import fake_object, load, make_view
from gdb_nsb.binder.errors import UnresolvedSymbol
from gdb_nsb.binder.process_view import (
    LOADED_DLOPEN_GLOBAL,
    LOADED_DLOPEN_LOCAL,
    LOADED_PRELOAD,
    MappedObject,
    compute_load_bias,
)
from gdb_nsb.binder.scope import SymbolResolver
from gdb_nsb.elf.livepatch import LivePatch
from gdb_nsb.mappings import Mapping

SO = ["-O0", "-fPIC", "-shared"]


def lib(name, text, extra=()):
    # --no-as-needed: keep DT_NEEDED even where the library uses nothing of its dependency.
    return T.build([(name + ".c", text)], SO + ["-Wl,-soname," + name + ".so", "-Wl,--no-as-needed"],
                        name + ".so", extra_inputs=list(extra))


@pytest.fixture(scope="module")
def libs():
    three = lib("libthree", "int bfs_sym(void) { return 3; } int deep_only(void) { return 33; }")
    one = lib("libone", "int shared_sym(void) { return 1; }", [three])
    two = lib("libtwo", "int shared_sym(void) { return 2; } int bfs_sym(void) { return 2; }")
    pre = lib("libpre", "int pre_sym(void) { return 7; } int shared_sym(void) { return 70; }")
    glob = lib("libglob", "int glob_sym(void) { return 8; }")
    ver = T.build([("libver.c", "int vsym_v1(void) { return 1; } int vsym_v2(void) { return 2; }\n"
                        '__asm__(".symver vsym_v1,vsym@VER_1");\n__asm__(".symver vsym_v2,vsym@@VER_2");\n'),
                       ("ver.lds", "VERSION { VER_1 { global: vsym; local: *; }; VER_2 { global: vsym; } VER_1; }")],
                      SO + ["-Wl,-soname,libver.so"], "libver.so")
    main = T.build([("main.c", "int shared_sym(void); int bfs_sym(void);\n"
                          "int main(void) { return shared_sym() + bfs_sym(); }")],
                        ["-O0", "-fPIE", "-pie", "-Wl,--no-as-needed"], "main", extra_inputs=[one, two])
    return dict(three=three, one=one, two=two, pre=pre, glob=glob, ver=ver, main=main)


def patch_using(names, extra=(), src=None):
    decls = "".join("extern int %s(void);\n" % n for n in names)
    body = " + ".join("%s()" % n for n in names)
    text = src or (decls + "int patch_fn(void) { return %s; }\n" % body)
    return load(T.build_patch([("p.c", text)], "p.so", extra=list(extra)))


def view_of(libs, order, how=None):
    """Objects in link-map order at distinct biases; returns (view, objects by key)."""
    how = how or {}
    objs = {}
    for i, key in enumerate(order):
        img = load(libs[key])
        objs[key] = fake_object(img, 0x7F0000000000 + i * 0x1000000 if key != "main" else 0x555555554000,
                                is_main_executable=(key == "main"), how_loaded=how.get(key))
    return make_view([objs[k] for k in order]), objs


def resolver(view, target, patch):
    return SymbolResolver(view, target, patch, LivePatch(old_bid="x", new_bid="y"))


def provider(res, patch, name):
    return res.resolve_index(next(s.index for s in patch.dynsyms if s.name == name)).provider


def test_bfs_order_first_definition_wins(libs):
    # Link map (load) order: main, libone, libtwo, libthree (BFS); libthree is libone's dependency.
    view, objs = view_of(libs, ["main", "one", "two", "three"])
    p = patch_using(["shared_sym", "bfs_sym", "deep_only"])
    r = resolver(view, objs["main"], p)
    assert [os.path.basename(o.path) for o in r.scope] == ["main", "libone.so", "libtwo.so", "libthree.so"]
    assert provider(r, p, "shared_sym") == "libone.so"
    assert provider(r, p, "bfs_sym") == "libtwo.so"  # depth 1 beats libone's dependency at depth 2
    assert provider(r, p, "deep_only") == "libthree.so"
    v = r.resolve_index(next(s.index for s in p.dynsyms if s.name == "bfs_sym")).value
    two = objs["two"]
    assert v == two.load_bias + next(s.value for s in load(libs["two"]).dynsyms if s.name == "bfs_sym")


def test_bfs_order_is_computed_not_taken_from_object_list(libs):
    # Even if the snapshot lists libthree before libtwo, the scope is breadth-first over DT_NEEDED.
    view, objs = view_of(libs, ["main", "one", "three", "two"])
    r = resolver(view, objs["main"], patch_using(["bfs_sym"]))
    assert [os.path.basename(o.path) for o in r.scope][1:] == ["libone.so", "libtwo.so", "libthree.so"]


def test_preload_comes_before_needed(libs):
    view, objs = view_of(libs, ["main", "pre", "one", "two", "three"], {"pre": LOADED_PRELOAD})
    p = patch_using(["shared_sym", "pre_sym"])
    r = resolver(view, objs["main"], p)
    assert provider(r, p, "shared_sym") == "libpre.so"


def test_dlopen_global_in_scope_local_only_for_its_own_target(libs):
    how = {"glob": LOADED_DLOPEN_GLOBAL, "pre": LOADED_DLOPEN_LOCAL}
    view, objs = view_of(libs, ["main", "one", "two", "three", "glob", "pre"], how)
    p = patch_using(["glob_sym", "pre_sym"])
    r = resolver(view, objs["main"], p)
    assert provider(r, p, "glob_sym") == "libglob.so"
    with pytest.raises(UnresolvedSymbol, match="pre_sym"):
        r.resolve_index(next(s.index for s in p.dynsyms if s.name == "pre_sym"))
    # A patch for the locally dlopened library sees the library's own closure after the global scope.
    r2 = resolver(view, objs["pre"], p)
    assert provider(r2, p, "pre_sym") == "libpre.so"
    assert [os.path.basename(o.path) for o in r2.scope][-1] == "libpre.so"
    # ... but the global definition of shared_sym still wins over its own.
    p2 = patch_using(["shared_sym"])
    assert provider(resolver(view, objs["pre"], p2), p2, "shared_sym") == "libone.so"


def test_vdso_never_in_scope(libs):
    view, objs = view_of(libs, ["main", "one", "two", "three"])
    vdso = MappedObject(path="[vdso]", build_id="v", load_bias=0x7FFFF7FC4000, is_vdso=True,
                        ranges=[Mapping(0x7FFFF7FC4000, 0x7FFFF7FC6000, 0, "r-xp", "[vdso]")])
    view.objects.insert(1, vdso)
    r = resolver(view, objs["main"], patch_using(["shared_sym"]))
    assert all(not o.is_vdso for o in r.scope)


def vsym_values(path):
    out = {}
    for line in T.tool("readelf", "--dyn-syms", "-W", path).splitlines():
        parts = line.split()
        if len(parts) >= 8 and parts[7].startswith("vsym@"):
            out[parts[7]] = int(parts[1], 16)
    return out


def test_symbol_versions(libs):
    vals = vsym_values(libs["ver"])
    assert set(vals) == {"vsym@VER_1", "vsym@@VER_2"}
    view, objs = view_of(libs, ["main", "one", "two", "three", "ver"], {"ver": LOADED_DLOPEN_GLOBAL})
    bias = objs["ver"].load_bias
    src = ("extern int vsym(void); extern int vsym_old(void);\n"
           '__asm__(".symver vsym_old,vsym@VER_1");\n'
           "int patch_fn(void) { return vsym() * 10 + vsym_old(); }\n")
    p = patch_using([], extra=[libs["ver"]], src=src)
    refs = [s for s in p.dynsyms if s.name == "vsym"]
    assert sorted(s.version for s in refs) == ["VER_1", "VER_2"]
    r = resolver(view, objs["main"], p)
    got = {s.version: r.resolve_index(s.index).value for s in refs}
    assert got == {"VER_1": bias + vals["vsym@VER_1"], "VER_2": bias + vals["vsym@@VER_2"]}
    # An unversioned reference takes the default (@@) version.
    p2 = patch_using(["vsym"])
    assert [s.version for s in p2.dynsyms if s.name == "vsym"] == [None]
    assert resolver(view, objs["main"], p2).resolve_index(
        next(s.index for s in p2.dynsyms if s.name == "vsym")).value == bias + vals["vsym@@VER_2"]


def test_versioned_reference_not_satisfied_by_other_version(libs):
    # libtwo's bfs_sym is unversioned in a file with no version info: a versioned reference accepts it
    # (the dynamic linker does), but libver's vsym cannot satisfy vsym@VER_9.
    view, objs = view_of(libs, ["main", "one", "two", "three", "ver"], {"ver": LOADED_DLOPEN_GLOBAL})
    r = resolver(view, objs["main"], patch_using(["vsym"]))
    assert r.find_definition(objs["ver"], "vsym", "VER_9") is None
    assert r.find_definition(objs["ver"], "vsym", "VER_1").version == "VER_1"
    assert r.find_definition(objs["two"], "bfs_sym", "ANY_1") is not None


def test_load_bias_from_mappings_not_first_executable_mapping(libs):
    img = load(libs["one"])
    bias = 0x7F1234560000
    maps = fake_object(img, bias).ranges
    assert compute_load_bias(img, maps) == bias
    first_x = next(m for m in maps if m.executable)
    assert first_x.start != bias  # the classic bug would have returned this
    # Without the offset-0 mapping (e.g. unreadable first page) another segment gives the same bias.
    assert compute_load_bias(img, [m for m in maps if m.offset != 0]) == bias
    exe = load(T.build([("e.c", "int main(void){return 0;}")], ["-O0", "-no-pie", "-fno-pie"], "e"))
    assert compute_load_bias(exe, fake_object(exe, 0).ranges) == 0


def test_the_shadow_region_symbol_binds_to_the_region_in_the_memory_map(libs):
    view, objs = view_of(libs, ["main", "one", "two", "three"])
    patch = patch_using([], src='#include "vzp.h"\nint patch_fn(void *o) { return vzp_shadow_get(o, 1) != 0; }\n')
    idx = next(s.index for s in patch.dynsyms if s.name == "__vzp_shadow_region")
    with pytest.raises(UnresolvedSymbol, match="no shadow region"):
        resolver(view, objs["main"], patch).resolve_index(idx)
    view.shadow_planned = True  # dry run, check: the apply maps it first
    assert resolver(view, objs["main"], patch).resolve_index(idx).value == 0
    view.mappings = sorted(view.mappings + [Mapping(0x7E0000000000, 0x7E0001000000, 0, "rw-p",
                                                    "/memfd:nsb-shadow (deleted)")], key=lambda m: m.start)
    res = resolver(view, objs["main"], patch).resolve_index(idx)
    assert (res.value, res.how) == (0x7E0000000000, "process's shadow region")
