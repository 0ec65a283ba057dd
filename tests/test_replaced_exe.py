"""A process whose executable was replaced on disk after it started (REFERENCE.md 2, Process life).

The path now names another build; the running process maps the old inode
("(deleted)").  A patch made for the running build is applied (its object is
found by build-id through /proc/PID/map_files), listed and reverted to the
old build's bytes; a patch made for the new file is refused as a build-id
mismatch (exit 4), naming both build-ids.
"""

import os
import shutil

import pytest

import targets as T
from targets import live as lt

pytestmark = pytest.mark.timeout(600)
SECONDS = 240


def test_replaced_executable(tmp_path):
    v1 = lt.build_target(variant="\nint build_variant = 1;\n")
    v2 = lt.build_target(variant="\nint build_variant = 2;\n")
    p1 = lt.make_patch(v1, tmp_path, name="p1.so")
    p2 = lt.make_patch(v2, tmp_path, name="p2.so")
    prog = str(tmp_path / "prog")
    shutil.copy(v1, prog)
    with lt.start_target(prog) as tg:
        tmp = prog + ".new"
        shutil.copy(v2, tmp)
        os.rename(tmp, prog)  # a package upgrade: new inode at the old path
        assert any(prog + " (deleted)" in l for l in T.maps(tg.pid))

        r = T.nsb("patch", "-p", tg.pid, "-f", p2, "--timeout", SECONDS, timeout=SECONDS + 60)
        assert r.returncode == 4, r.stdout + r.stderr
        assert "build-id mismatch" in r.stderr, r.stderr
        from gdb_nsb.elf.livepatch import build_id_of
        assert build_id_of(v1) in r.stderr and build_id_of(v2) in r.stderr, r.stderr
        assert lt.value(tg) == 1002

        r = T.nsb("patch", "-p", tg.pid, "-f", p1, "--timeout", SECONDS, timeout=SECONDS + 60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert lt.value(tg) == 1502
        r = T.nsb("list", "-p", tg.pid, timeout=SECONDS + 60)
        assert r.returncode == 0 and "active" in r.stdout and "compute" in r.stdout, r.stdout + r.stderr
        r = T.nsb("revert", "-p", tg.pid, "-f", p1, "--timeout", SECONDS, timeout=SECONDS + 60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert lt.value(tg) == 1002
        _, now, want = T.memory_and_file(tg.pid, v1, "compute", 16, mapped_as=prog)
        assert now == want
        lt.assert_no_bad_values(tg)
        assert T.wait_running(tg.pid, 10)
