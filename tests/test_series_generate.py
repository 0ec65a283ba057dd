"""Patch series declared through vzp.h: the records, the generator's fields 20-23 and the features it
writes (field 19), and its refusals naming the macro's line."""

import pytest

import targets as T
from gdb_nsb.elf import records
from gdb_nsb.elf.livepatch import LivePatch, State
from gdb_nsb.errors import GenerateError
from gdb_nsb.generator import series

TARGET_C = r'''
int level = 5;
__attribute__((noinline)) int step(int x) { return x + level; }
int main(void) { return step(0) == 99; }
'''

NEEDS = "ab" * 20

SERIES_PATCH = r'''#include "vzp.h"
VZP_NEEDS_PATCH("%s");
VZP_NEEDS_STATE(7, 1);
VZP_PROVIDES_STATE(7, 2);
VZP_PROVIDES_STATE(0x10, 3);
VZP_CUMULATIVE;
extern int level;
int step(int x) { return x + level + 1; }
''' % NEEDS

PLAIN_PATCH = r'''extern int level;
int step(int x) { return x + level + 2; }
'''


@pytest.fixture(scope="module")
def target():
    return T.build([("t.c", TARGET_C)], ["-O2", "-flive-patching=inline-clone", "-g", "-fPIE", "-pie"],
                   "series-gen-target")


def test_records_of_the_series_macros():
    so = T.build_patch([("s.c", SERIES_PATCH)], "series-recs.so")
    got = [(r.kind, r.target_name, r.file, r.source_line) for r in records.read_records(so)]
    assert got == [("needs_patch", NEEDS, "", 2), ("needs_state", "7", "1", 3), ("provides_state", "7", "2", 4),
                   ("provides_state", "0x10", "3", 5), ("cumulative", "", "", 6)]


def test_generator_writes_the_series_fields_and_their_features(target, tmp_path):
    out = T.bind_patch(target, [("s.c", SERIES_PATCH)], "series.so", workdir=tmp_path)
    lp = LivePatch.read(out)
    assert lp.needs_patches == [NEEDS]
    assert lp.needs_states == [State(7, 1)]
    assert lp.provides_states == [State(7, 2), State(16, 3)]
    assert lp.cumulative is True
    assert lp.required_features() == ["cumulative", "dependencies", "states"]
    assert [j.name for j in lp.func_jumps] == ["step"]  # the declarations bind nothing


def test_a_plain_patch_requires_no_feature(target, tmp_path):
    lp = LivePatch.read(T.bind_patch(target, [("p.c", PLAIN_PATCH)], "plain.so", workdir=tmp_path))
    assert lp.required_features() == [] and not lp.cumulative and not lp.needs_patches


def rec(kind, tname="", file="", line=3):
    return records.VzpRecord(kind, "", tname, file, "fix.c", line, 0)


def test_declaration_refusals_name_the_line():
    with pytest.raises(GenerateError, match=r"fix.c:3: VZP_NEEDS_PATCH\('xyz'\) is not a GNU build-id"):
        series.declaration([rec("needs_patch", "xyz")])
    with pytest.raises(GenerateError, match="fix.c:4: state id 'FOO' of NEEDS_STATE is not an integer"):
        series.declaration([rec("needs_state", "FOO", "1", 4)])
    with pytest.raises(GenerateError, match="version -1 of PROVIDES_STATE"):
        series.declaration([rec("provides_state", "1", "-1")])
    with pytest.raises(GenerateError, match="state 5 is declared with versions 1 and 2"):
        series.declaration([rec("provides_state", "5", "1"), rec("provides_state", "5", "2")])
    with pytest.raises(GenerateError, match="needs itself"):
        series.declaration([rec("needs_patch", NEEDS)], own_build_id=NEEDS)


def test_declaration_merges_repeats():
    d = series.declaration([rec("needs_patch", NEEDS.upper()), rec("needs_patch", NEEDS),
                            rec("needs_state", "3", "1"), rec("needs_state", "3u", "1")])
    assert d.needs_patches == [NEEDS] and d.needs_states == [State(3, 1)] and not d.cumulative
