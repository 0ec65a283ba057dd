"""The DWARF decoder on corrupt input: the regression corpus (tests/dwarf_corpus/, inputs the fuzzer
found or kept, one per kind of error) and a short fuzz run with a fixed seed.  Every input must decode
or raise a one-line DebugInfoError (tests/dwarffuzz.py).  The long run: tools/fuzz-dwarf COUNT [SEED]."""

import os
import shutil

import pytest

import dwarffuzz

pytestmark = [pytest.mark.timeout(600),
              pytest.mark.skipif(shutil.which("objcopy") is None or shutil.which("gcc") is None,
                                 reason="needs gcc and objcopy to build the seed files")]


@pytest.mark.parametrize("gz", dwarffuzz.corpus(), ids=os.path.basename)
def test_regression_corpus(gz, tmp_path):
    assert dwarffuzz.exercise_corpus_file(gz, str(tmp_path)) in ("ok", "DebugInfoError")


def test_corpus_is_there():
    assert len(dwarffuzz.corpus()) >= 8


def test_fuzz_fixed_seed():
    seed = int(os.environ.get("NSB_DWARF_FUZZ_SEED", "20261204"))
    count = int(os.environ.get("NSB_DWARF_FUZZ_COUNT", "150"))
    lines = []
    failures = dwarffuzz.run(seed, count, log=lines.append)
    print("\n".join(lines))
    assert not failures, [what for what, _e in failures]
    assert "%d inputs" % count in lines[-1]
