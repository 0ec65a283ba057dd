"""Post-mortem: nsb-list and backtraces on core files of patched processes (issue 16, item 2).

A core from `gcore` and one the kernel wrote when the process crashed inside
patch code; the patch file found by build-id in a patch directory (a core
carried to another machine); a core whose dump filter left the registry out.
"""

import os
import re
import shutil
import signal
import subprocess
import time

import pytest

import targets as T

pytestmark = [pytest.mark.gdb, pytest.mark.timeout(300)]

TARGET_SOURCE = r'''
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static volatile int calls;

__attribute__((noinline)) int handle(int x)
{
    calls++;
    return x + calls - calls + 1;
}

int main(void)
{
    char line[64];
    struct rlimit core;
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* Core dumps as far as the hard limit allows (the test skips when that is 0). */
    getrlimit(RLIMIT_CORE, &core);
    core.rlim_cur = core.rlim_max;
    setrlimit(RLIMIT_CORE, &core);
    printf("ready %d %d\n", (int)getpid(), core.rlim_cur != 0);
    while (fgets(line, sizeof line, stdin)) {
        int x;
        if (sscanf(line, "h %d", &x) == 1)
            printf("h %d\n", handle(x));          /* CALLER */
        else
            printf("? %s", line);
    }
    return 0;
}
'''

PATCH_SOURCE = r'''
#include "vzp.h"

VZP_FILE("target.c");

int handle(int x)
{
    volatile int *nowhere = 0;
    if (x == 42)
        return *nowhere;                       /* CRASH */
    return x + 1000;
}
'''


def _line_of(source, marker):
    return next(i for i, l in enumerate(source.splitlines(), 1) if marker in l)


CRASH_LINE = _line_of(PATCH_SOURCE, "CRASH")
CALLER_LINE = _line_of(TARGET_SOURCE, "CALLER")


@pytest.fixture(scope="module")
def built():
    target = T.build([("target.c", TARGET_SOURCE)], ["-O2", "-flive-patching=inline-clone", "-g", "-fPIE", "-pie"],
                     "pm-target")
    patch = T.build_patch([("patch.c", PATCH_SOURCE)], output_name="pm-patch.so")
    return target, patch


def _bound_patch(built, workdir):
    from gdb_nsb.generator.manual import generate_file
    target, built_patch = built
    out = os.path.join(str(workdir), "fix.so")
    shutil.copyfile(built_patch, out)
    generate_file(target, out)
    return out


def _start(target, cwd):
    t = T.Target([target], ready_line="ready", cwd=str(cwd))
    t.__enter__()
    return t


def _patched(t, patch):
    r = T.nsb("patch", "-p", t.pid, "-f", patch)
    assert r.returncode == 0, r.stderr
    assert t.ask("h 1") == "h 1001"


def _gdb_core(target, core, commands, timeout=120):
    return T.run_gdb(commands=commands, extra_args=[target, core], timeout=timeout)


def _gcore(pid, prefix):
    r = subprocess.run(["gcore", "-o", prefix, str(pid)], capture_output=True, text=True, timeout=120)
    core = "%s.%d" % (prefix, pid)
    assert r.returncode == 0 and os.path.exists(core), r.stderr
    return core


def _kernel_core_path(cwd, pid, comm):
    """Where the kernel writes the core of ``pid``, or (None, why not) when this host sends cores elsewhere."""
    with open("/proc/sys/kernel/core_pattern") as f:
        pattern = f.read().strip()
    if pattern.startswith("|"):
        return None, "kernel.core_pattern pipes cores to a handler (%s): the kernel writes no file here" % pattern
    unknown = set(re.findall(r"%(.)", pattern)) - {"p", "e", "%"}
    if unknown:
        return None, "kernel.core_pattern %r uses %s, which this test does not expand" % (
            pattern, ", ".join("%" + u for u in sorted(unknown)))
    path = pattern.replace("%%", "\0").replace("%p", str(pid)).replace("%e", comm[:15]).replace("\0", "%")
    with open("/proc/sys/kernel/core_uses_pid") as f:
        if f.read().strip() == "1" and "%p" not in pattern:
            path += ".%d" % pid
    return os.path.join(str(cwd), path), None


def test_gcore_lists_patches_and_finds_the_file_by_build_id(built, tmp_path):
    target, _ = built
    applied_from = tmp_path / "applied"
    applied_from.mkdir()
    patch = _bound_patch(built, applied_from)
    t = _start(target, tmp_path)
    try:
        _patched(t, patch)
        core = _gcore(t.pid, str(tmp_path / "core"))
    finally:
        t.__exit__(None, None, None)
    from gdb_nsb.elf.livepatch import build_id_of
    bid = build_id_of(patch)

    r = _gdb_core(target, core, ["nsb-list", "info line handle"])
    assert "%s  active  %s" % (bid, patch) in r.stdout, r
    assert re.search(r"handle\s+0x[0-9a-f]+  layer 1 of 1 \(top\)", r.stdout), r
    assert "patch file not found" not in r.stdout, r
    assert re.search(r'Line \d+ of "patch.c"', r.stdout), r

    # Another machine: the patch is not where it was applied from, only in a patch directory
    # under its build-id (GDB's .build-id layout).
    store = tmp_path / "patches"
    os.makedirs(store / ".build-id" / bid[:2])
    shutil.move(patch, str(store / ".build-id" / bid[:2] / bid[2:]))
    r = _gdb_core(target, core, ["nsb-list"])
    assert "patch file not found (recorded %s" % patch in r.stdout and "set nsb patch-dir" in r.stdout, r
    # The setting in effect before the core is read (as from ~/.gdbinit): found at once.
    r = T.run_gdb(commands=["nsb-list", "info line handle"], timeout=120,
                           extra_args=["-iex", "set nsb patch-dir /nonexistent:%s" % store, target, core])
    assert "patch file not found" not in r.stdout and re.search(r'Line \d+ of "patch.c"', r.stdout), r
    # Given to nsb-list after the core is read: the listing finds it and registers its symbols.
    r = _gdb_core(target, core, ["nsb-list --patch-dir %s" % store, "info line handle"])
    assert "patch file not found (recorded" not in r.stdout and "%s  active" % bid in r.stdout, r
    assert re.search(r'Line \d+ of "patch.c"', r.stdout), r


def test_kernel_core_of_a_crash_inside_patch_code(built, tmp_path):
    target, _ = built
    patch = _bound_patch(built, tmp_path)
    t = _start(target, tmp_path)
    try:
        core, why = _kernel_core_path(tmp_path, t.pid, os.path.basename(target))
        if core is None:
            pytest.skip(why)
        _patched(t, patch)
        t.send("h 42")
        deadline = time.monotonic() + 60
        while t.proc.poll() is None:
            assert time.monotonic() < deadline, "the patched process did not crash"
            time.sleep(0.05)
    finally:
        t.__exit__(None, None, None)
    assert t.proc.returncode == -signal.SIGSEGV, t.proc.returncode
    if not os.path.exists(core):
        pytest.skip("no core file at %s (RLIMIT_CORE hard limit 0, or the kernel refused)" % core)
    # No nsb-* command first: opening the core registers the patch's symbols (GDB's own crash
    # frame line already names the patch function), then a plain `bt` unwinds through it.
    r = _gdb_core(target, core, ["bt", "nsb-list"])
    frames = [l for l in r.stdout.splitlines() if re.match(r"#\d+ ", l)]
    assert frames and all(re.search(r"handle \(x=42\) at patch.c:%d$" % CRASH_LINE, f)
                          for f in frames if f.startswith("#0 ")), r
    assert re.search(r"^#1 .* in main \(\) at target.c:%d$" % CALLER_LINE, frames[-1]), r
    assert "active  %s" % patch in r.stdout, r


def test_core_without_registry_pages_says_so(built, tmp_path):
    target, _ = built
    patch = _bound_patch(built, tmp_path)
    t = _start(target, tmp_path)
    try:
        _patched(t, patch)
        # Private anonymous pages (bit 0) are where the registry's written pages are.
        with open("/proc/%d/coredump_filter" % t.pid, "w") as f:
            f.write("0x32")
        core = _gcore(t.pid, str(tmp_path / "core"))
    finally:
        t.__exit__(None, None, None)
    r = _gdb_core(target, core, ["nsb-list"])
    assert "no live patches" not in r.stdout + r.stderr, r
    assert "does not hold the registry" in r.stdout + r.stderr and "coredump_filter" in r.stdout + r.stderr, r
