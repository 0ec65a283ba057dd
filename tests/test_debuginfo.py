"""Separate debug files found the way GDB finds them (build-id directory, debuglink, explicit)."""

import os
import shutil

import pytest

import elf_fixtures as E
import targets as T
from gdb_nsb.elf.debuginfo import build_id_path, find_alt_file, find_debug_file, open_dwarf
from gdb_nsb.elf.dwarf import DwarfIndex
from gdb_nsb.elf.image import ElfImage
from gdb_nsb.errors import DebugInfoError

pytestmark = pytest.mark.timeout(120)


def objcopy(*args):
    T.tool("objcopy", *[str(a) for a in args])


@pytest.fixture
def split(tmp_path):
    """(original, stripped copy, its build-id) in tmp_path/bin; nothing else yet."""
    orig = E.build_prog("pie", 5)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    stripped = bindir / "prog"
    objcopy("--strip-all", orig, stripped)
    return orig, stripped, ElfImage(orig).build_id


def same_answers(orig, debug_path):
    a, b = DwarfIndex(orig), DwarfIndex(debug_path)
    for name in ("f", "helper", "tick", "twice"):
        assert [(x.entry, x.ranges) for x in a.functions(name)] == [(x.entry, x.ranges) for x in b.functions(name)]
    assert sorted(v.address for v in a.variables("hits", function="tick")) == \
        sorted(v.address for v in b.variables("hits", function="tick"))


def test_image_with_debug_info_is_its_own_debug_file():
    orig = E.build_prog("nopie", 4)
    assert find_debug_file(orig) == orig


def test_found_by_build_id(tmp_path, split):
    orig, stripped, bid = split
    debugdir = tmp_path / "debug"
    target = build_id_path(str(debugdir), bid)
    os.makedirs(os.path.dirname(target))
    objcopy("--only-keep-debug", orig, target)
    assert target.endswith(".build-id/%s/%s.debug" % (bid[:2], bid[2:]))
    assert find_debug_file(str(stripped), search_dirs=[str(tmp_path / "elsewhere"), str(debugdir)]) == target
    same_answers(orig, target)
    assert open_dwarf(str(stripped), search_dirs=[str(debugdir)]).image.path == target


def test_build_id_file_of_another_build_is_ignored(tmp_path, split):
    _orig, stripped, bid = split
    debugdir = tmp_path / "debug"
    target = build_id_path(str(debugdir), bid)
    os.makedirs(os.path.dirname(target))
    objcopy("--only-keep-debug", E.build_prog("pie", 4), target)  # another build-id under our name
    assert find_debug_file(str(stripped), search_dirs=[str(debugdir)]) is None
    with pytest.raises(DebugInfoError, match="no debug info"):
        open_dwarf(str(stripped), search_dirs=[str(debugdir)])


@pytest.mark.parametrize("where", ["beside", "dot-debug", "global"])
def test_found_by_debuglink(tmp_path, split, where):
    orig, stripped, _ = split
    bindir = os.path.dirname(str(stripped))
    debugdir = tmp_path / "debug"
    made = tmp_path / "prog.debug"
    objcopy("--only-keep-debug", orig, made)
    objcopy("--add-gnu-debuglink=%s" % made, stripped)
    place = {
        "beside": os.path.join(bindir, "prog.debug"),
        "dot-debug": os.path.join(bindir, ".debug", "prog.debug"),
        "global": os.path.join(str(debugdir), os.path.realpath(bindir).lstrip("/"), "prog.debug"),
    }[where]
    os.makedirs(os.path.dirname(place), exist_ok=True)
    shutil.move(made, place)
    assert find_debug_file(str(stripped), search_dirs=[str(debugdir)]) == place
    same_answers(orig, place)


def test_debuglink_crc_mismatch_is_ignored(tmp_path, split):
    orig, stripped, _ = split
    dbg = os.path.join(os.path.dirname(str(stripped)), "prog.debug")
    objcopy("--only-keep-debug", orig, dbg)
    objcopy("--add-gnu-debuglink=%s" % dbg, stripped)
    with open(dbg, "ab") as f:
        f.write(b"\0")  # changes the CRC32
    assert find_debug_file(str(stripped), search_dirs=[str(tmp_path / "none")]) is None


def test_explicit_debug_file(tmp_path, split):
    orig, stripped, _ = split
    good = tmp_path / "good.debug"
    objcopy("--only-keep-debug", orig, good)
    assert find_debug_file(str(stripped), explicit=str(good)) == str(good)
    bad = tmp_path / "bad.debug"
    objcopy("--only-keep-debug", E.build_prog("nopie", 5), bad)
    with pytest.raises(DebugInfoError, match="build-id"):
        find_debug_file(str(stripped), explicit=str(bad))
    nodebug = tmp_path / "nodebug"
    objcopy("--strip-debug", orig, nodebug)
    with pytest.raises(DebugInfoError, match="no .debug_info"):
        find_debug_file(str(stripped), explicit=str(nodebug))
    with pytest.raises(DebugInfoError, match="not an ELF"):
        find_debug_file(str(stripped), explicit=__file__)


def test_alt_file_by_relative_path_and_build_id(tmp_path):
    common = E.build_prog("nopie", 5)  # stands in for a dwz common file: any ELF with that build-id
    common_bid = ElfImage(common).build_id
    (tmp_path / "dwz").mkdir()
    shutil.copy(common, tmp_path / "dwz" / "common.debug")
    (tmp_path / "dbg").mkdir()
    link = tmp_path / "link"
    link.write_bytes(b"../dwz/common.debug\0" + bytes.fromhex(common_bid))
    dbg = tmp_path / "dbg" / "prog.debug"
    objcopy("--add-section", ".gnu_debugaltlink=%s" % link, E.build_prog("pie", 5), dbg)
    assert find_alt_file(str(dbg)) == str(tmp_path / "dbg" / "../dwz/common.debug")
    # moved away: found through the build-id directory instead
    os.remove(tmp_path / "dwz" / "common.debug")
    target = build_id_path(str(tmp_path / "debug"), common_bid)
    os.makedirs(os.path.dirname(target))
    shutil.copy(common, target)
    assert find_alt_file(str(dbg), search_dirs=[str(tmp_path / "debug")]) == target
    os.remove(target)
    with pytest.raises(DebugInfoError, match="dwz alt file .*not found"):
        find_alt_file(str(dbg), search_dirs=[str(tmp_path / "debug")])
    assert find_alt_file(E.build_prog("pie", 5)) is None
