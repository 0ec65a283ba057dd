"""Load bias from a real process's mappings, checked against the kernel's auxiliary vector."""

import os
import struct
import subprocess
import time

import targets as T
from binder_fakes import load
from gdb_nsb.binder.process_view import compute_load_bias, object_from_mappings

AT_BASE, AT_ENTRY = 7, 9


def auxv(pid):
    with open("/proc/%d/auxv" % pid, "rb") as f:
        data = f.read()
    return dict(struct.iter_unpack("<QQ", data))


def test_bias_of_running_pie_and_its_interpreter():
    exe = T.build([("w.c", "#include <unistd.h>\nint main(void){char c; return (int)read(0, &c, 1);}")],
                       ["-O0", "-fPIE", "-pie"], "waiter")
    proc = subprocess.Popen([exe], stdin=subprocess.PIPE)
    try:
        maps = None
        deadline = time.monotonic() + 30  # until the executable is mapped (by time: the machine may be loaded)
        while time.monotonic() < deadline:
            maps = T.mappings(proc.pid)
            # The interpreter too: read during the exec, the maps held the executable without it (CI).
            if any(m.name == os.path.realpath(exe) for m in maps) and any("ld-linux" in m.name for m in maps) \
                    and AT_ENTRY in auxv(proc.pid):
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
