"""Shared helpers of the generator tests: build targets and patches from
tests/fixtures/gen, and read what binutils (nm, readelf) say about them, which
is the oracle every generated address is compared with."""

import os
import re
import shutil

import pytest

import targets as T
from gdb_nsb.errors import GenerateError

GEN = os.path.join(T.FIXTURES, "gen")
TARGET_SOURCES = ["alpha.c", "beta.c"]
FLAVORS = ["pie", "nopie", "static", "static-pie", "shared"]


def fixture(name):
    return os.path.join(GEN, name)


def build_target(flavor, dwarf=5, extra=(), debug=True, live_patching=True):
    """The two-unit target as a PIE / non-PIE / static executable or a shared library, at -O2.

    ``live_patching``: with -flive-patching=inline-clone, so that the generator's -fipa-ra check
    accepts replacing functions that have callers in their unit (tests of that check pass False)."""
    flags = ["-O2", "-gdwarf-%d" % dwarf if debug else "-g0"] + list(extra)
    if live_patching:
        flags.append("-flive-patching=inline-clone")
    if flavor == "shared":
        return T.build([fixture(s) for s in TARGET_SOURCES], flags + ["-fPIC", "-shared"], "libgen.so")
    return T.build([fixture(s) for s in TARGET_SOURCES + ["main.c"]], flags + T.FLAVOR_FLAGS[flavor],
                        "gen-" + flavor)


def build_patch(sources, name="patch.so", extra=()):
    """A patch from fixture files or (name, text) pairs, built the way users do."""
    srcs = [s if isinstance(s, tuple) else fixture(s) for s in sources]
    return T.build_patch(srcs, name, extra=extra)


def copy(path, tmp_path, name=None):
    """A private copy (cached build outputs are shared and must stay untouched)."""
    dst = os.path.join(str(tmp_path), name or os.path.basename(path))
    shutil.copyfile(path, dst)
    os.chmod(dst, 0o755)
    return dst


def line_of(source, text, occurrence=0):
    """1-based line number of the ``occurrence``-th line of fixture ``source`` containing ``text``."""
    with open(fixture(source)) as f:
        hits = [i + 1 for i, line in enumerate(f) if text in line]
    return hits[occurrence]


_TOOL_OUTPUT = {}


def tool_output(*args):
    """cbuild.tool(*args) for a file (the last argument), run once per file version: a test that asks
    about every relocation would otherwise run readelf or nm hundreds of times on the same file."""
    st = os.stat(args[-1])
    key = (args, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    out = _TOOL_OUTPUT.get(key)
    if out is None:
        out = _TOOL_OUTPUT[key] = T.tool(*args)
    return out


class NmSym:
    def __init__(self, addr, size, kind, name, file, line):
        self.addr, self.size, self.kind, self.name, self.file, self.line = addr, size, kind, name, file, line

    def __repr__(self):
        return "NmSym(%#x %s %s %s:%s)" % (self.addr, self.kind, self.name, self.file, self.line)


def nm(path):
    """Every defined symbol as nm -S -l reports it (file:line from DWARF)."""
    out = []
    for line in tool_output("nm", "-S", "-l", "--defined-only", path).splitlines():
        parts = line.split("\t")
        head = parts[0].split()
        if len(head) == 4:
            addr, size, kind, name = head
        elif len(head) == 3:
            addr, kind, name = head
            size = "0"
        else:
            continue
        file = lno = None
        if len(parts) > 1 and ":" in parts[1]:
            file, _, l = parts[1].rpartition(":")
            lno = int(l) if l.isdigit() else None
        out.append(NmSym(int(addr, 16), int(size, 16), kind, name, file, lno))
    return out


def nm_one(syms, name, file=None, line=None):
    """The one symbol called ``name`` (``name`` or ``name.N`` for local statics), narrowed by file/line."""
    hits = [s for s in syms if (s.name == name or re.fullmatch(re.escape(name) + r"\.\d+", s.name))
            and (file is None or (s.file or "").endswith("/" + file))
            and (line is None or s.line == line)]
    assert len(hits) == 1, (name, file, line, hits)
    return hits[0]


def dynsym_names(path):
    """.dynsym index -> name (version suffix stripped), from readelf."""
    out = {}
    for line in tool_output("readelf", "--dyn-syms", "-W", path).splitlines():
        m = re.match(r"\s*(\d+):\s+[0-9a-f]+\s+\d+\s+\S+\s+\S+\s+\S+\s+\S+\s+(\S+)", line)
        if m:
            out[int(m.group(1))] = m.group(2).split("@")[0]
    return out


def symtab_ndx(path, name, addr):
    """Section index of .symtab symbol ``name`` at ``addr``, from readelf -s."""
    for line in tool_output("readelf", "-sW", path).splitlines():
        m = re.match(r"\s*\d+:\s+([0-9a-f]+)\s+\d+\s+FUNC\s+\S+\s+\S+\s+(\d+)\s+(\S+)$", line)
        if m and m.group(3) == name and int(m.group(1), 16) == addr:
            return int(m.group(2))
    raise AssertionError("no FUNC %s at %#x in readelf -s %s" % (name, addr, path))


def file_bytes_at(path, addr, size):
    """Bytes of the file at link-time ``addr``, located with readelf -S."""
    for line in tool_output("readelf", "-SW", path).splitlines():
        m = re.match(r"\s*\[\s*\d+\]\s+(\S+)\s+(\S+)\s+([0-9a-f]+)\s+([0-9a-f]+)\s+([0-9a-f]+)", line)
        if not m or m.group(2) == "NOBITS":
            continue
        sa, so, ss = int(m.group(3), 16), int(m.group(4), 16), int(m.group(5), 16)
        if sa and sa <= addr < sa + ss:
            with open(path, "rb") as f:
                f.seek(so + addr - sa)
                return f.read(size)
    raise AssertionError("%#x not in a section of %s" % (addr, path))


def refused(target, patch, cls=GenerateError, **kw):
    """The one-line message with which ``generate(target, patch, **kw)`` refuses (raising ``cls``)."""
    from gdb_nsb.generator import generate
    with pytest.raises(cls) as ei:
        generate(target, patch, **kw)
    msg = str(ei.value)
    assert "\n" not in msg
    return msg
