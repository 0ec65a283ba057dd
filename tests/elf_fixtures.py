"""C programs shared by the ELF/DWARF model tests (test_elf_image, test_dwarf, test_debuginfo)."""

import os
import re
import shutil
import subprocess
import zlib

import targets as T

# Two files with the same base name in different directories, each with a
# file-scope static `counter`, a static function `helper` and a static
# function `tick` with a function-local static `hits`.
UTIL_TEMPLATE = r"""
static int counter = %(init)d;
__attribute__((noinline)) static int helper(int x) { counter += x; return counter * %(mul)d; }
__attribute__((noinline)) static int tick(int x)
{
    static int hits;
    hits += x;
    if (x > 3) {
        static int deep;   /* inside a lexical block */
        deep += hits;
        return deep;
    }
    return hits;
}
int %(entry)s(int x) { return helper(x) + tick(x); }
"""

MAIN_C = r"""
#include <stdio.h>
#include <stdlib.h>

extern int x_entry(int);
extern int y_entry(int);
extern int shared_global;
int shared_global = 42;
const char greeting[] = "hello, nsb";
char zeroes[256];

__attribute__((cold, noinline)) void report(const char *m, int v) { fprintf(stderr, "%s %d\n", m, v); }

int table[64];

/* gcc -O2 splits the cold path into f.cold */
__attribute__((noinline)) int f(int x)
{
    if (x < 0 || x >= 64) {
        report("out of range", x);
        table[0] += x;
        printf("recovering %d\n", x);
        return -1;
    }
    return table[x] * 3 + x;
}

/* inlined at one call site, and out of line because its address escapes */
static inline int twice(int v) { return v * 2 + shared_global; }
int (*volatile twice_ptr)(int) = twice;

int main(int argc, char **argv)
{
    (void)argv;
    zeroes[argc] = 1;
    printf("%s %d %d %d %d\n", greeting, f(argc), x_entry(argc), y_entry(argc), twice(argc) + twice_ptr(argc));
    return 0;
}
"""

SOURCES = [
    ("main.c", MAIN_C),
    ("src/x/util.c", UTIL_TEMPLATE % {"init": 1, "mul": 3, "entry": "x_entry"}),
    ("src/y/util.c", UTIL_TEMPLATE % {"init": 2, "mul": 5, "entry": "y_entry"}),
]

LIB_C = r"""
#include <stdio.h>
static int lib_counter;
int lib_value = 7;
__attribute__((noinline)) static int lib_helper(int x) { lib_counter += x; return lib_counter; }
int lib_entry(int x) { printf("%d\n", x); return lib_helper(x) + lib_value; }
int vfun_old(void) { return 1; }
int vfun_new(void) { return 2; }
__asm__(".symver vfun_old, vfun@V1");
__asm__(".symver vfun_new, vfun@@V2");
"""

LIB_MAP = "V1 { global: vfun; lib_entry; lib_value; local: *; };\nV2 { global: vfun; } V1;\n"

FLAVORS = ["pie", "nopie", "static", "static-pie"]


def dwz_pair(directory):
    """The PIE and the non-PIE program (DWARF 5) copied into ``directory`` and run through ``dwz -m``:
    (path a, path b, path of their common file ``common.debug``)."""
    a, b = os.path.join(str(directory), "a"), os.path.join(str(directory), "b")
    shutil.copy(build_prog("pie", 5), a)
    shutil.copy(build_prog("nopie", 5), b)
    subprocess.run(["dwz", "-m", "common.debug", "-M", "common.debug", a, b], check=True, timeout=120,
                   cwd=str(directory))
    return a, b, os.path.join(str(directory), "common.debug")


def build_prog(flavor="pie", dwarf=5, extra=()):
    """The three-file program, -O2 -g, in one of the build flavors (targets.FLAVOR_FLAGS)."""
    flags = ["-O2", "-gdwarf-%d" % dwarf] + T.FLAVOR_FLAGS[flavor] + list(extra)
    return T.build(SOURCES, flags, "prog-%s-%d" % (flavor, dwarf))


def build_lib(dwarf=5):
    """A shared library with a soname and versioned symbols (vfun@V1, vfun@@V2)."""
    os.makedirs(T.CACHE, exist_ok=True)
    vmap = os.path.join(T.CACHE, "nsbtest-%08x.map" % zlib.crc32(LIB_MAP.encode()))
    if not os.path.exists(vmap):
        with open(vmap + ".%d" % os.getpid(), "w") as f:
            f.write(LIB_MAP)
        os.replace(vmap + ".%d" % os.getpid(), vmap)
    return T.build([("lib.c", LIB_C)],
                        ["-O2", "-gdwarf-%d" % dwarf, "-fPIC", "-shared", "-Wl,-soname,libnsbtest.so.1",
                         "-Wl,--version-script=" + vmap], "libnsbtest.so")


def nm(path):
    """[(address, type letter, name, size or None)] of defined symbols, from `nm -S`."""
    out = []
    for line in T.tool("nm", "-S", "--defined-only", path).splitlines():
        parts = line.split()
        if len(parts) == 4:
            out.append((int(parts[0], 16), parts[2], parts[3], int(parts[1], 16)))
        elif len(parts) == 3:
            out.append((int(parts[0], 16), parts[1], parts[2], None))
    return out


def nm_named(path, name):
    rx = re.compile(re.escape(name) + r"(\.\d+)?")
    return [t for t in nm(path) if rx.fullmatch(t[2])]
