"""Parsing `info proc mappings` text (GDB 13 format, with and without the Perms column)."""

import pytest

from gdb_nsb import mappings as M

GDB13 = """process 4592
Mapped address spaces:

          Start Addr           End Addr       Size     Offset  Perms  objfile
      0x561c88660000     0x561c8868f000    0x2f000        0x0  r--p   /usr/bin/bash
      0x561c8868f000     0x561c88750000    0xc1000    0x2f000  r-xp   /usr/bin/bash
      0x561c88795000     0x561c887a0000     0xb000        0x0  rw-p   
      0x561c91525000     0x561c91566000    0x41000        0x0  rw-p   [heap]
      0x7f91829a7000     0x7f91829a8000     0x1000        0x0  r--p   /usr/lib/locale/C.utf8/LC_MESSAGES/SYS_LC_MESSAGES
      0x7f9182bc5000     0x7f9182bcc000     0x7000        0x0  r--s   /usr/lib/x86_64-linux-gnu/gconv/gconv-modules.cache
      0x7f9182bd0000     0x7f9182bd1000     0x1000        0x0  r--p   /memfd:nsb-registry (deleted)
      0x7f9182bd5000     0x7f9182bd7000     0x2000        0x0  r-xp   [vdso]
      0x7f9182bd8000     0x7f9182bfe000    0x26000     0x1000  r-xp   /opt/my dir/lib x.so
  0xffffffffff600000 0xffffffffff601000     0x1000        0x0  --xp   [vsyscall]
"""

OLD = """Mapped address spaces:

          Start Addr           End Addr       Size     Offset objfile
            0x400000           0x401000     0x1000        0x0 /tmp/a.out
            0x601000           0x602000     0x1000     0x1000 /tmp/a.out
"""


def test_gdb13_format():
    ms = M.parse_mappings(GDB13)
    assert len(ms) == 10
    text = ms[1]
    assert (text.start, text.end, text.size, text.offset) == (0x561c8868f000, 0x561c88750000, 0xc1000, 0x2f000)
    assert text.perms == "r-xp" and text.executable and text.readable and not text.writable and text.private
    assert text.objfile == "/usr/bin/bash"
    anon = ms[2]
    assert anon.is_anonymous and anon.writable and anon.objfile == ""
    assert ms[3].is_special and ms[3].objfile == "[heap]"
    assert not ms[5].private
    reg = ms[6]
    assert reg.deleted and reg.name == "/memfd:nsb-registry" and reg.objfile.endswith("(deleted)")
    assert ms[8].objfile == "/opt/my dir/lib x.so"
    assert ms[9].start == 0xffffffffff600000


def test_without_perms_column():
    ms = M.parse_mappings(OLD)
    assert [m.perms for m in ms] == [None, None]
    assert ms[1].offset == 0x1000 and ms[1].objfile == "/tmp/a.out"
    assert not ms[0].executable


def test_errors():
    with pytest.raises(ValueError):
        M.parse_mappings("No current process: you must name one.")
    with pytest.raises(ValueError):
        M.parse_mappings("  0x1000 0x3000 0x1000 0x0 r--p x\n")


def test_queries():
    ms = M.parse_mappings(GDB13)
    assert M.mapping_at(ms, 0x561c8868f000 + 5).perms == "r-xp"
    assert M.mapping_at(ms, 0x561c88750000) is None
    assert [m.start for m in M.named(ms, "/memfd:nsb-registry")] == [0x7f9182bd0000]
    assert M.is_free(ms, 0x561c88750000, 0x561c88795000)
    assert not M.is_free(ms, 0x561c88750000, 0x561c88795001)
    gaps = M.gaps(ms, 0x561c88660000, 0x561c91566000)
    assert gaps == [(0x561c88750000, 0x561c88795000), (0x561c887a0000, 0x561c91525000)]


def test_parses_real_gdb_output_of_this_process():
    # pytest's own map, laid out the way GDB prints it (real GDB text is parsed in the GDB tests).
    lines = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            lines.append("  0x%x 0x%x 0x%x 0x%x %s %s" % (lo, hi, hi - lo, int(parts[2], 16), parts[1],
                                                         parts[5].strip() if len(parts) > 5 else ""))
    ms = M.parse_mappings("\n".join(lines))
    assert len(ms) == len(lines)
    assert any(m.objfile == "[stack]" for m in ms)


def test_range_index_matches_a_linear_scan():
    """RangeIndex.contains agrees with "any range contains [lo, hi)" on random, overlapping ranges."""
    import random

    from gdb_nsb.mappings import RangeIndex
    rnd = random.Random(7)
    for _ in range(200):
        ranges = []
        for _ in range(rnd.randrange(0, 12)):
            s = rnd.randrange(0, 200)
            ranges.append((s, s + rnd.randrange(1, 40)))
        idx = RangeIndex(ranges)
        assert len(idx) == len(ranges)
        for _ in range(50):
            lo = rnd.randrange(0, 250)
            hi = lo + rnd.randrange(1, 30)
            assert idx.contains(lo, hi) == any(s <= lo and hi <= e for s, e in ranges), (ranges, lo, hi)
    assert not RangeIndex([]).contains(0, 1)
    assert RangeIndex([(10, 20), (0, 30)]).contains(25, 30) and not RangeIndex([(10, 20), (0, 30)]).contains(25, 31)


def test_function_at_follows_changes_of_the_function_list():
    from gdb_nsb.registry import FunctionRecord, PatchRecord
    p = PatchRecord("aa", "bb", "t", 0, 0)
    assert p.function_at(0x10) is None
    f1 = FunctionRecord("f", 0x10, b"j", b"o")
    p.functions.append(f1)
    assert p.function_at(0x10) is f1
    f2 = FunctionRecord("g", 0x20, b"j", b"o")
    p.functions.append(f2)
    assert p.function_at(0x20) is f2
    p.functions.remove(f1)
    assert p.function_at(0x10) is None and p.function_at(0x20) is f2
    p.functions = [f1]
    assert p.function_at(0x10) is f1 and p.function_at(0x20) is None


def test_function_at_with_duplicates_and_removals():
    from gdb_nsb.registry import FunctionRecord, PatchRecord
    p = PatchRecord("aa", "bb", "t", 0, 0)
    a, b, c = (FunctionRecord(n, e, b"j", b"o") for n, e in (("a", 1), ("b", 1), ("c", 3)))
    p.functions += [a, b, c]  # a corrupt registry may repeat an entry: the first one answers
    assert p.function_at(1) is a
    p.remove_function(a)
    assert p.function_at(1) is b and p.function_at(3) is c
    p.remove_function(c)
    assert p.function_at(3) is None and p.function_at(1) is b
    p.functions.append(c)
    assert p.function_at(3) is c


def test_registry_deepcopy_is_a_full_independent_copy():
    import copy

    from gdb_nsb.registry import FunctionRecord, MappedRange, PatchRecord, Registry
    p = PatchRecord("aa", "bb", "t", 0x1000, 0x2000, [MappedRange(0x2000, 0x1000, 5)], "/p.so", "active",
                    [FunctionRecord("f", 0x10, b"\xe9abcd", b"orig!", "")])
    reg = Registry([p], 7)
    c = copy.deepcopy(reg)
    assert c == reg and c.encode() == reg.encode()
    c.patches[0].functions[0].below = "zz"
    c.patches[0].ranges[0].prot = 7
    c.patches[0].functions.append(FunctionRecord("g", 0x20, b"j", b"o"))
    assert reg.patches[0].functions[0].below == "" and reg.patches[0].ranges[0].prot == 5
    assert len(reg.patches[0].functions) == 1 and c.patches[0].function_at(0x20) is not None
    assert reg.patches[0].function_at(0x20) is None
