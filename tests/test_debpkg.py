"""tests/debpkg.py's pure parts: the deb-src entry derived from a machine's apt sources, and a unit's
compile flags read back from a package's build log (no apt, no build)."""

import json
import os

import pytest

import debpkg

pytestmark = pytest.mark.timeout(60)

MIRROR = "http://mirror.invalid/debian"


def _etc(tmp_path, sources=None, lists=None, old=None):
    d = tmp_path / "apt"
    (d / "sources.list.d").mkdir(parents=True)
    if old is not None:
        (d / "sources.list").write_text(old)
    for name, text in (sources or {}).items():
        (d / "sources.list.d" / name).write_text(text)
    for name, text in (lists or {}).items():
        (d / "sources.list.d" / name).write_text(text)
    return str(d)


def test_mirror_from_deb822_sources(tmp_path):
    etc = _etc(tmp_path, sources={"debian.sources": (
        "Types: deb\n# a comment\nURIs: %s\nSuites: bookworm bookworm-updates\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb\nURIs: http://security.invalid/debian-security\nSuites: bookworm-security\n"
        "Components: main\n" % MIRROR)})
    entries = debpkg.apt_entries(etc)
    assert debpkg.mirror(entries) == (MIRROR, "/usr/share/keyrings/debian-archive-keyring.gpg")
    stanza = debpkg.deb_src_stanza(entries)
    assert stanza.splitlines() == ["Types: deb-src", "URIs: " + MIRROR, "Suites: bookworm", "Components: main",
                                   "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"]


def test_mirror_from_one_line_lists_and_disabled_stanzas(tmp_path):
    etc = _etc(tmp_path, old="# nothing\ndeb-src http://src.invalid/debian bookworm main\n",
               sources={"off.sources": "Enabled: no\nTypes: deb\nURIs: http://off.invalid/\nSuites: bookworm\n"
                                       "Components: main\n"},
               lists={"x.list": "deb [arch=amd64 signed-by=/k.gpg] %s bookworm main contrib\n" % MIRROR})
    assert debpkg.mirror(debpkg.apt_entries(etc)) == (MIRROR, "/k.gpg")


def test_no_mirror_is_unavailable(tmp_path):
    etc = _etc(tmp_path, old="deb http://x.invalid/ubuntu jammy main\n")
    with pytest.raises(debpkg.Unavailable):
        debpkg.mirror(debpkg.apt_entries(etc))


def test_unit_flags_from_the_build_log(tmp_path):
    (tmp_path / "build" / "pkg-1").mkdir(parents=True)
    (tmp_path / "done.json").write_text(json.dumps({"package": "pkg", "version": "1-1", "source_dir": "pkg-1",
                                                    "build_seconds": 1}))
    (tmp_path / "build.log").write_text(
        "gcc -DHAVE_CONFIG_H -I.  -DNDEBUG -Wdate-time -D_FORTIFY_SOURCE=2 -g -O2 -Wall -c -o pkg-a.o "
        "`test -f 'a.c' || echo './'`a.c\n"
        "libtool: compile:  gcc -D_FORTIFY_SOURCE=2 -g -O2 -DX=1 -I. -I/abs/src -include cfg.h "
        "-std=c99 -c /abs/src/b.c  -fPIC -DPIC -o .libs/b.o\n")
    pkg = debpkg.Package(str(tmp_path), json.loads((tmp_path / "done.json").read_text()))
    src = os.path.join(str(tmp_path), "build", "pkg-1")
    assert pkg.unit_flags("a.c") == ["-DHAVE_CONFIG_H", "-I" + src, "-DNDEBUG"]
    assert pkg.unit_flags("src/b.c") == ["-DX=1", "-I" + src, "-I/abs/src", "-include", "cfg.h", "-std=c99",
                                         "-DPIC"]
    with pytest.raises(LookupError):
        pkg.unit_flags("c.c")
