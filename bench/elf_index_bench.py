"""Benchmark: DwarfIndex on one compile unit with 10,000 functions (+ statics).

Generates a C file with N static functions, each with a file-scope static and a
function-local static, compiles it -O2 -g (DWARF 5 and 4), then times
opening the image + DwarfIndex and looking up one static function and one
function-local static.  Target: under 2 s for open + one lookup.

    .venv/bin/python bench/elf_index_bench.py [N]
"""

import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from gdb_nsb.elf.dwarf import DwarfIndex  # noqa: E402
from gdb_nsb.elf.image import ElfImage  # noqa: E402


def generate(n):
    out = ["#include <stdio.h>"]
    for i in range(n):
        out.append(
            "static int s_%d = %d;\n"
            "__attribute__((noinline)) static int fn_%d(int x)\n"
            "{ static int calls; calls += x; if (x > %d) { s_%d += calls; } return s_%d + calls * x; }"
            % (i, i, i, i % 97, i, i))
    out.append("int (*volatile table[])(int) = {%s};" % ", ".join("fn_%d" % i for i in range(n)))
    out.append("int main(int c, char **v) { (void)v; int t = 0; for (int i = 0; i < %d; i++) t += table[i](c);"
               " printf(\"%%d\\n\", t); return 0; }" % n)
    return "\n".join(out) + "\n"


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    with tempfile.TemporaryDirectory(prefix="nsb-bench-") as d:
        src = os.path.join(d, "big.c")
        with open(src, "w") as f:
            f.write(generate(n))
        for dwarf in (5, 4):
            exe = os.path.join(d, "big%d" % dwarf)
            t = time.perf_counter()
            subprocess.run(["gcc", "-O2", "-gdwarf-%d" % dwarf, src, "-o", exe], check=True, timeout=600, cwd=d)
            compile_s = time.perf_counter() - t
            name = "fn_%d" % (n * 2 // 3)
            t0 = time.perf_counter()
            ix = DwarfIndex(ElfImage(exe))
            t1 = time.perf_counter()
            (fi,) = ix.functions(name)
            t2 = time.perf_counter()
            (var,) = ix.variables("calls", function=name)
            t3 = time.perf_counter()
            (svar,) = ix.variables("s_%d" % (n // 3))
            t4 = time.perf_counter()
            sym = [s for s in ElfImage(exe).symbols_named(name)][0]
            assert fi.entry == sym.value, (hex(fi.entry), hex(sym.value))
            print("DWARF %d, %d functions (%.1f MB ELF, gcc %.0f s): open %.3f s, function %.3f s, "
                  "local static %.3f s, file static %.3f s; open + one lookup %.3f s; total %.3f s"
                  % (dwarf, n, os.path.getsize(exe) / 1e6, compile_s, t1 - t0, t2 - t1, t3 - t2, t4 - t3,
                     t2 - t0, t4 - t0))
            print("  %s at %#x, %s in %s at %#x" % (fi.name, fi.entry, var.name, var.function, var.address))


if __name__ == "__main__":
    main()
