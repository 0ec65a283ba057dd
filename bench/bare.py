"""The bare-ptrace floor (issue 15): bench/bare_floor.c, built here, run on a benchmark target.

It seizes and interrupts every thread, rewrites the 8 bytes at the entry of
``f_0`` with their own value (what a jump write does, minus the new bytes),
and detaches: no GDB, no symbols, no unwinding.  Any live patcher pays at
least this; the pause goals of the issue are multiples of it.
"""

import os
import subprocess

from gdb_nsb.binder.process_view import compute_load_bias
from gdb_nsb.elf.image import ElfImage
from gdb_nsb.mappings import parse_proc_maps

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bare_floor.c")


def build(workdir):
    """Compile the probe into ``workdir``; its path."""
    out = os.path.join(workdir, "bare_floor")
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", SOURCE, "-o", out], check=True, timeout=120)
    return out


def entry_address(exe, pid, function="f_0"):
    """Where ``function`` of ``exe`` starts in running process ``pid``."""
    img = ElfImage(exe)
    syms = [s for s in img.symbols_named(function) if s.defined]
    if not syms:
        raise RuntimeError("%s has no symbol %s" % (exe, function))
    with open("/proc/%d/maps" % pid) as f:
        own = [m for m in parse_proc_maps(f.read()) if m.name == os.path.realpath(exe)]
    return compute_load_bias(img, own) + syms[0].value


def argv(probe, exe, pid):
    return [probe, str(pid), "%#x" % entry_address(exe, pid)]
