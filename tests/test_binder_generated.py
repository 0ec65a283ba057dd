"""The binder on a patch bound by the generator: static variable, static function, new helper."""

import struct

import pytest

import targets as T
from binder_fakes import FakeMemory, fake_object, load, make_view
from gdb_nsb.binder.jumps import decode_jump
from gdb_nsb.binder.plan import evaluate, plan_load
from gdb_nsb.generator import generate
from gdb_nsb.registry import Registry

BIAS = 0x555555554000

TARGET = r"""
#include <stdio.h>
static int counter = 41;
static int bump(int d) { counter += d; return counter; }
int visible = 7;
int work(int x) { int r = bump(x) + visible; if (r > 1000) r = 0; printf("%d\n", r); return r * 2; }
int main(int argc, char **argv) { (void)argv; return work(argc) & 1; }
"""

PATCH = r"""
#include "vzp.h"
VZP_FILE("target.c");
VZP_STATIC_VAR_REF(int, counter);
VZP_STATIC_FUNC_REF(int, bump, (int));
extern int visible;
int helper(int v) { return v + 1000; }
int work(int x) { return helper(bump(x) + counter + visible); }
"""


@pytest.mark.parametrize("flavor", [["-fPIE", "-pie"], ["-fno-pie", "-no-pie"]])
def test_generated_patch_binds_to_target_entities(flavor):
    target = T.build([("target.c", TARGET)], ["-O0", "-g"] + flavor, "target")
    patch = T.build_patch([("fix.c", PATCH)], "fix.so")
    gen = generate(target, patch)
    lp = gen.livepatch
    t, p = load(target), load(patch)
    bias = BIAS if t.elf_type == "ET_DYN" else 0
    main = fake_object(t, bias, is_main_executable=True)
    mem = FakeMemory()
    mem.load_image(t, bias)
    view = make_view([main], memory=mem)
    plan = plan_load(view, lp, p, Registry())
    assert plan.problems == [] and evaluate(plan, mem) == []
    by_name = {r.name: r for r in plan.resolutions}

    def nm(path, name):
        for line in T.tool("nm", path).splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[2] == name:
                return int(parts[0], 16)
        raise KeyError(name)

    counter = next(r for n, r in by_name.items() if "counter" in n)
    bump = next(r for n, r in by_name.items() if "bump" in n)
    assert counter.value == bias + nm(target, "counter")
    assert bump.value == bias + nm(target, "bump")
    assert by_name["visible"].value == bias + nm(target, "visible")
    assert by_name["helper"].patch_relative  # exists only in the patch: its own copy
    assert by_name["helper"].runtime(plan.placement.bias) == plan.placement.bias + nm(patch, "helper")
    # The GOT slots of the patch hold those addresses in the planned segment bytes.
    segs = {w.addr: w.data for w in plan.segment_writes}

    def word(runtime):
        for a, d in segs.items():
            if a <= runtime < a + len(d):
                return struct.unpack_from("<Q", d, runtime - a)[0]
        raise KeyError(hex(runtime))
    for r in p.relocations:
        if r.symbol and ("counter" in r.symbol or "bump" in r.symbol or r.symbol == "visible"):
            assert word(plan.placement.bias + r.offset) == by_name[r.symbol].value
    # work's entry jumps to the patch's work.
    (name, j), = plan.jumps
    assert name == "work" and j.dest == plan.placement.bias + nm(patch, "work")
    (w,) = plan.jump_writes
    assert decode_jump(w.addr, w.data).dest == j.dest
