"""The generator on a dwz-compressed target (.gnu_debugaltlink followed, DW_FORM_GNU_ref_alt types)."""

import os
import shutil
import subprocess

import pytest

import targets as T
from gdb_nsb.elf.image import ElfImage
from gdb_nsb.elf.livepatch import LivePatch
from gdb_nsb.generator.manual import generate_file

DEMO = os.path.join(T.ROOT, "gdb_nsb", "data", "demo")

pytestmark = pytest.mark.skipif(shutil.which("dwz") is None, reason="dwz is not installed")


def test_dwz_target_binds_like_the_plain_one(tmp_path):
    server = T.build([os.path.join(DEMO, "server.c")], ["-O2", "-flive-patching=inline-clone", "-g", "-pthread"],
                          "server")
    fix = T.build_patch([os.path.join(DEMO, "fix.c")], "fix.so")
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copy(server, a)
    shutil.copy(server, b)
    subprocess.run(["dwz", "-m", "common.debug", "-M", "common.debug", "a", "b"], cwd=tmp_path, check=True,
                   timeout=120)
    assert ElfImage(str(a)).debugaltlink is not None
    plain, packed = tmp_path / "plain.so", tmp_path / "packed.so"
    shutil.copy(fix, plain)
    shutil.copy(fix, packed)
    generate_file(server, str(plain))
    generate_file(str(a), str(packed))
    p, q = LivePatch.read(str(plain)), LivePatch.read(str(packed))
    assert q.old_bid == ElfImage(str(a)).build_id
    assert q.func_jumps == p.func_jumps
    assert q.manual_symbols == p.manual_symbols and q.manual_symbols
