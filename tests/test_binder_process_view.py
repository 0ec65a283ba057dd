"""Load bias from a real process's mappings, checked against the kernel's auxiliary vector."""

import os
import struct
import subprocess
import time

import cbuild
from binder_fakes import load
from gdb_nsb.binder.process_view import compute_load_bias, object_from_mappings
from gdb_nsb.mappings import Mapping

AT_BASE, AT_ENTRY = 7, 9


def proc_maps(pid):
    out = []
    with open("/proc/%d/maps" % pid) as f:
        for line in f:
            parts = line.split(None, 5)
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            out.append(Mapping(lo, hi, int(parts[2], 16), parts[1], parts[5].strip() if len(parts) > 5 else ""))
    return out


def auxv(pid):
    with open("/proc/%d/auxv" % pid, "rb") as f:
        data = f.read()
    return dict(struct.iter_unpack("<QQ", data))


def test_bias_of_running_pie_and_its_interpreter():
    exe = cbuild.build([("w.c", "#include <unistd.h>\nint main(void){char c; return (int)read(0, &c, 1);}")],
                       ["-O0", "-fPIE", "-pie"], "waiter")
    proc = subprocess.Popen([exe], stdin=subprocess.PIPE)
    try:
        maps = None
        for _ in range(200):  # wait (bounded) until the executable is mapped
            maps = proc_maps(proc.pid)
            if any(m.name == os.path.realpath(exe) for m in maps) and auxv(proc.pid):
                break
            time.sleep(0.01)
        aux = auxv(proc.pid)
        img = load(os.path.realpath(exe))
        main = object_from_mappings(img, maps, is_main_executable=True)
        assert main.load_bias == aux[AT_ENTRY] - img.header.entry
        interp = next(m.name for m in maps if "ld-linux" in m.name)
        ld = load(interp)
        assert compute_load_bias(ld, [m for m in maps if m.name == interp]) == aux[AT_BASE]
    finally:
        proc.kill()
        proc.wait(timeout=10)
