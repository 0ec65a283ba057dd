"""A patched library loaded by dlopen (RTLD_NOW|RTLD_LOCAL), then dlclosed (REFERENCE.md 2, Process life).

The patch replaces ``x_compute`` of libx.so and calls another function of
the library (``x_helper``) and a libc function (``strlen``).  After the
library is dlclosed while patched, ``nsb list`` shows "target unloaded" and
``nsb revert`` writes nothing at the old addresses (the test maps a page of
its own there and checks it is untouched); a new dlopen of the library can be
patched again, also when the old record was never reverted.
"""

import json

import pytest

import targets as T
from targets import live as lt

pytestmark = pytest.mark.timeout(600)
SECONDS = 240

LIB_SOURCE = r'''
int x_scale = 3;
__attribute__((noinline)) int x_helper(int x) { return x * x_scale; }
__attribute__((noinline)) int x_compute(int x) { return x_helper(x) + 1000; }
'''

PATCH_SOURCE = r'''
#include <string.h>
extern int x_helper(int);
static const char tag[] = "patched!";

int x_compute(int x)
{
    const char *volatile s = tag;
    return x_helper(x) + 1500 + (int)strlen(s);
}
'''

MAIN_SOURCE = r'''
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

int main(int argc, char **argv)
{
    void *h = NULL, *filled = NULL;
    int (*f)(int) = NULL;
    char line[128];
    unsigned long a;
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready\n");
    while (fgets(line, sizeof line, stdin)) {
        if (!strncmp(line, "open", 4)) {
            h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
            f = h ? (int (*)(int))dlsym(h, "x_compute") : NULL;
            printf("opened %p\n", (void *)f);
        } else if (!strncmp(line, "close", 5)) {
            printf("closed %d\n", h ? dlclose(h) : -1);
            h = NULL;
            f = NULL;
        } else if (!strcmp(line, "v\n")) {
            printf("v %d\n", f ? f(2) : -1);
        } else if (sscanf(line, "fill %lx", &a) == 1) {
            /* our own page where the library's code was: a revert must not write into it */
            filled = mmap((void *)(a & ~0xfffUL), 0x2000, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
            if (filled == MAP_FAILED) {
                printf("fill failed\n");
                continue;
            }
            memset(filled, 0xaa, 0x2000);
            printf("filled %p\n", filled);
        } else if (!strncmp(line, "check", 5)) {
            int ok = 1;
            for (int i = 0; i < 0x2000; i++)
                ok &= ((unsigned char *)filled)[i] == 0xaa;
            printf("check %d\n", ok);
        } else if (!strncmp(line, "unfill", 6)) {
            printf("unfilled %d\n", munmap(filled, 0x2000));
        } else
            printf("? %s", line);
    }
    return 0;
}
'''

LIB_FLAGS = ["-O2", "-g", "-fPIC", "-shared", "-flive-patching=inline-clone"]


def _build(tmp_path):
    lib = T.build([("libx.c", LIB_SOURCE)], LIB_FLAGS, "libx.so")
    main = T.build([("dlmain.c", MAIN_SOURCE)], ["-O2", "-g", "-fPIE", "-pie", "-ldl"], "dlmain")
    patch = lt.make_patch(lib, tmp_path, source=PATCH_SOURCE, name="xpatch.so")
    return lib, main, patch


def _value(tg):
    line = tg.ask("v")
    assert line.startswith("v "), line
    return int(line.split()[1])


def _lib_mapped(pid, lib):
    import os
    return any(l.split()[-1] == os.path.realpath(lib) for l in T.maps(pid) if len(l.split()) >= 6)


def _list(pid):
    r = T.nsb("list", "-p", pid, "--json", timeout=SECONDS + 60)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)["processes"][0]["patches"], r


def _ok(r):
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def test_dlopened_library_patch_dlclose_revert_and_repatch(tmp_path):
    lib, main, patch = _build(tmp_path)
    with T.Target([main, lib], ready_line="ready") as tg:
        assert tg.ask("open").startswith("opened 0x")
        assert _value(tg) == 1006
        addr, before, filebytes = T.memory_and_file(tg.pid, lib, "x_compute", 16)
        assert before == filebytes

        _ok(T.nsb("patch", "-p", tg.pid, "-f", patch, "--timeout", SECONDS, timeout=SECONDS + 60))
        assert _value(tg) == 6 + 1500 + 8  # x_helper and strlen bound in the patch
        _ok(T.nsb("revert", "-p", tg.pid, "-f", patch, "--timeout", SECONDS, timeout=SECONDS + 60))
        assert _value(tg) == 1006
        assert T.memory_and_file(tg.pid, lib, "x_compute", 16)[1] == filebytes
        _ok(T.nsb("patch", "-p", tg.pid, "-f", patch, "--timeout", SECONDS, timeout=SECONDS + 60))
        assert _value(tg) == 1514

        # dlclose while patched: the record's target is gone.
        assert tg.ask("close") == "closed 0"
        assert not _lib_mapped(tg.pid, lib)
        patches, r = _list(tg.pid)
        assert [p["state"] for p in patches] == ["target unloaded"], r.stdout
        r = _ok(T.nsb("list", "-p", tg.pid, timeout=SECONDS + 60))
        assert "target unloaded" in r.stdout

        # Our own memory where x_compute was: the revert must leave it alone.
        assert tg.ask("fill %x" % addr).startswith("filled ")
        r = _ok(T.nsb("revert", "-p", tg.pid, "-f", patch, "--timeout", SECONDS, timeout=SECONDS + 60))
        assert "unloaded" in r.stdout and "nothing written" in r.stdout, r.stdout
        assert tg.ask("check") == "check 1"
        assert tg.ask("unfill") == "unfilled 0"
        patches, r = _list(tg.pid)
        assert [p["state"] for p in patches] == ["target unloaded"], r.stdout

        # dlopen again: fresh code; the patch applies again.
        assert tg.ask("open").startswith("opened 0x")
        assert _value(tg) == 1006
        _ok(T.nsb("patch", "-p", tg.pid, "-f", patch, "--timeout", SECONDS, timeout=SECONDS + 60))
        assert _value(tg) == 1514
        patches, r = _list(tg.pid)
        assert [p["state"] for p in patches] == ["active"], r.stdout

        # dlclose + dlopen with the record never reverted: the new instance does not have the patch (it
        # was shown "partial" until re-patched), and the record does not block a new apply.
        assert tg.ask("close") == "closed 0"
        assert tg.ask("open").startswith("opened 0x")
        assert _value(tg) == 1006
        assert _lib_mapped(tg.pid, lib)
        patches, r = _list(tg.pid)
        assert [p["state"] for p in patches] == ["not applied"], r.stdout
        r = T.nsb("list", "-p", tg.pid, timeout=SECONDS + 60)
        assert r.returncode == 0 and "not applied" in r.stdout and "partial" not in r.stdout, r.stdout + r.stderr
        r = T.nsb("check", "-p", tg.pid, "-f", patch, "--timeout", SECONDS, timeout=SECONDS + 60)
        assert r.returncode == 2 and "could be applied now" in r.stdout, r.stdout + r.stderr
        hostwide = json.loads(T.nsb("list", "--json", "-f", patch, timeout=SECONDS + 60).stdout)
        assert [p["patches"][0]["state"] for p in hostwide["processes"] if p["pid"] == tg.pid] == ["not applied"]
        r = _ok(T.nsb("patch", "-p", tg.pid, "-f", patch, "--timeout", SECONDS, timeout=SECONDS + 60))
        assert _value(tg) == 1514
        patches, r = _list(tg.pid)
        assert [p["state"] for p in patches] == ["active"], r.stdout
        _ok(T.nsb("revert", "-p", tg.pid, "-f", patch, "--timeout", SECONDS, timeout=SECONDS + 60))
        assert _value(tg) == 1006
        now = T.memory_and_file(tg.pid, lib, "x_compute", 16)
        assert now[1] == now[2]
        assert T.wait_running(tg.pid, 10)
