"""The patch file's identity checks and naming a registered patch by file or build-id."""

import dataclasses
import shutil

import pytest

from binder_fakes import build_world
from gdb_nsb import errors
from gdb_nsb.elf.livepatch import MarkedSym
from gdb_nsb.lifecycle.patch_file import check_patch, resolve_patch_id
from gdb_nsb.registry import PatchRecord, Registry


@pytest.fixture(scope="module")
def world():
    return build_world("plain")


def test_check_patch(world):
    _, _, patches = world
    lp, img = patches["A"]
    check_patch(lp, img, "p.so")
    with pytest.raises(errors.PatchFileError, match="build-id %s equals its target's" % lp.new_bid):
        check_patch(dataclasses.replace(lp, old_bid=lp.new_bid), img, "p.so")
    n = len(img.dynsyms)
    check_patch(dataclasses.replace(lp, manual_symbols=[MarkedSym(n - 1, 0x10)]), img, "p.so")
    for field in ("manual_symbols", "global_symbols"):
        for idx in (0, n, n + 100):
            bad = dataclasses.replace(lp, **{field: [MarkedSym(idx, 0x10)]})
            with pytest.raises(errors.PatchFileError, match="vzpatch %s names symbol index %d, but the patch's "
                                                            "\\.dynsym has %d entries" % (field, idx, n)):
                check_patch(bad, img, "p.so")


def record(bid):
    return PatchRecord(bid, "cd" * 20, "t", 0, 0x7f0000000000)


def test_resolve_by_file(world, tmp_path):
    _, _, patches = world
    lp, img = patches["A"]
    reg = Registry()
    with_section = lp.write_into(img.path, str(tmp_path / "with.so"))
    assert resolve_patch_id(with_section, reg) == lp.new_bid
    plain = shutil.copy(img.path, tmp_path / "plain.so")  # no vzpatch section: its ELF build-id
    assert resolve_patch_id(str(plain), reg) == img.build_id


def test_resolve_by_build_id():
    reg = Registry(patches=[record("abcd1" + "0" * 35), record("abcd2" + "0" * 35), record("ef" * 20)])
    assert resolve_patch_id("ABCD1", reg) == "abcd1" + "0" * 35
    assert resolve_patch_id("efef", reg) == "ef" * 20
    with pytest.raises(errors.UsageError, match="build-id prefix abcd is ambiguous \\(2 patches\\)"):
        resolve_patch_id("abcd", reg)
    # Not registered: a long enough hex string is taken as a build-id (the caller says "not applied").
    assert resolve_patch_id("0123456789ABCDEF", reg) == "0123456789abcdef"
    for name in ("0123456", "no-such-file.so"):
        with pytest.raises(errors.PatchFileError, match="no such patch file or build-id: %s" % name):
            resolve_patch_id(name, reg)
